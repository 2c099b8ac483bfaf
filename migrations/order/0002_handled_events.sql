-- The ids (`ce-id`) of the events this service has applied, recorded in the same
-- transaction as the writes each caused: a redelivered event changes nothing, on any
-- platform that delivers it.
CREATE TABLE handled_events (
    event_id   TEXT PRIMARY KEY,
    handled_at TEXT NOT NULL
);
-- Ids older than a week are forgotten (redeliveries come far sooner).
CREATE INDEX handled_events_by_time ON handled_events (handled_at);
