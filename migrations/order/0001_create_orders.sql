-- Orders: an aggregate, so its items and address are stored with it as JSON.
CREATE TABLE orders (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'cancelled', 'refunded')),
    items             TEXT NOT NULL,
    total_cents       INTEGER NOT NULL CHECK (total_cents >= 0),
    currency          TEXT NOT NULL,
    payment_method_id TEXT NOT NULL,
    shipping_address  TEXT NOT NULL,
    payment_id        TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

-- Listing a user's orders newest first, and the cursor comparison on (created_at, id).
CREATE INDEX orders_by_user ON orders (user_id, created_at DESC, id DESC);

-- A retried POST with the same Idempotency-Key returns the order the first one created.
CREATE TABLE idempotency_keys (
    user_id     TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    order_id    TEXT NOT NULL REFERENCES orders (id),
    created_at  TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
);
