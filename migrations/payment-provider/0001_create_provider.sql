-- The provider simulator's books: payment intents (declined ones too, as Stripe keeps them),
-- their refunds, and the responses remembered per Idempotency-Key.
CREATE TABLE payment_intents (
    id             TEXT PRIMARY KEY,
    amount         INTEGER NOT NULL CHECK (amount > 0),
    currency       TEXT NOT NULL,
    payment_method TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('succeeded', 'requires_payment_method')),
    metadata       TEXT NOT NULL,
    created        INTEGER NOT NULL
);

-- Partial refunds add up; their sum never exceeds the intent's amount.
CREATE TABLE refunds (
    id             TEXT PRIMARY KEY,
    payment_intent TEXT NOT NULL REFERENCES payment_intents (id),
    amount         INTEGER NOT NULL CHECK (amount > 0),
    currency       TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('succeeded')),
    created        INTEGER NOT NULL
);

CREATE INDEX refunds_by_intent ON refunds (payment_intent);

-- A retried POST with the same key gets `response` back with `status`; `request` (route and
-- canonical body) tells a retry from a different request reusing the key.
CREATE TABLE idempotency_keys (
    key      TEXT PRIMARY KEY,
    request  TEXT NOT NULL,
    status   INTEGER NOT NULL,
    response TEXT NOT NULL,
    created  INTEGER NOT NULL
);
