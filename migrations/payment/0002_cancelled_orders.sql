-- Orders cancelled before their charge was recorded: a charge that completes later for one
-- of them is refunded at once, so no charge for a cancelled order survives.
CREATE TABLE cancelled_orders (
    order_id     TEXT PRIMARY KEY,
    cancelled_at TEXT NOT NULL
);
