-- Deliveries point at their event by the event's integer key instead of its id. Event ids are
-- hashes (stable across re-detection), so an index on deliveries' event id sent every new
-- delivery to a random page of it: a burst rewrote most of that index in every commit. Integer
-- keys are handed out in insertion order, so the index only grows at its end.
-- The store runs migrations with foreign-key enforcement off (as SQLite's table-rebuild recipe
-- requires) and checks every reference afterwards.
CREATE TABLE events_keyed (
    seq        INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    order_id   TEXT    NOT NULL REFERENCES orders (order_id),
    type       TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
INSERT INTO events_keyed (id, order_id, type, payload, created_at)
SELECT id, order_id, type, payload, created_at FROM events ORDER BY rowid;

CREATE TABLE deliveries_keyed (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    event_seq       INTEGER NOT NULL REFERENCES events_keyed (seq),
    subscriber_id   TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempt_count   INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    claim           TEXT,
    claimed_until   INTEGER
);
INSERT INTO deliveries_keyed
SELECT d.seq, d.id, e.seq, d.subscriber_id, d.status, d.attempt_count, d.next_attempt_at,
       d.created_at, d.updated_at, d.claim, d.claimed_until
FROM deliveries d JOIN events_keyed e ON e.id = d.event_id;

DROP TABLE deliveries;
DROP TABLE events;
-- Renaming also rewrites the references to the renamed tables.
ALTER TABLE events_keyed RENAME TO events;
ALTER TABLE deliveries_keyed RENAME TO deliveries;

CREATE INDEX events_by_order ON events (order_id);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_by_subscriber ON deliveries (subscriber_id);
CREATE INDEX deliveries_by_event ON deliveries (event_seq);
