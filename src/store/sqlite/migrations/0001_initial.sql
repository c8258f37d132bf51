-- Times are INTEGER unix milliseconds (UTC). JSON columns hold serde_json text.

CREATE TABLE orders (
    order_id             TEXT    PRIMARY KEY NOT NULL,
    user_id              TEXT,
    state                TEXT    NOT NULL CHECK (state IN ('watching', 'not_found', 'expired', 'stopped')),
    fallback             TEXT,
    created_at           INTEGER NOT NULL,
    next_poll_at         INTEGER,
    last_polled_at       INTEGER,
    last_error           TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    not_found_count      INTEGER NOT NULL DEFAULT 0
);
-- The scheduler's hot query: watched orders by due time.
CREATE INDEX orders_due ON orders (state, next_poll_at);

-- The differ's memory. `read` only matters for chat messages.
CREATE TABLE seen_items (
    order_id    TEXT    NOT NULL REFERENCES orders (order_id),
    kind        TEXT    NOT NULL CHECK (kind IN ('chat', 'lifecycle')),
    upstream_id INTEGER NOT NULL,
    read        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, kind, upstream_id)
) WITHOUT ROWID;

CREATE TABLE events (
    id         TEXT    PRIMARY KEY NOT NULL,
    order_id   TEXT    NOT NULL REFERENCES orders (order_id),
    type       TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX events_by_order ON events (order_id);

CREATE TABLE subscribers (
    id              TEXT    PRIMARY KEY NOT NULL,
    config          TEXT    NOT NULL, -- JSON `Channel`
    event_types     TEXT,             -- JSON array, NULL = all
    order_ids       TEXT,             -- JSON array, NULL = all
    description     TEXT,
    status          TEXT    NOT NULL CHECK (status IN ('active', 'disabled')),
    disabled_reason TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- Secrets go with their subscriber: nothing should keep key material of a deleted subscriber.
CREATE TABLE subscriber_secrets (
    seq           INTEGER PRIMARY KEY,
    subscriber_id TEXT    NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    secret        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER
);
CREATE INDEX subscriber_secrets_by_subscriber ON subscriber_secrets (subscriber_id);

-- No foreign key to subscribers on purpose: deliveries and their attempts are the history an
-- operator reads after a subscriber is deleted, so they outlive it (parked as failed).
-- `seq` is the insertion order (stable across VACUUM, unlike an implicit rowid): listings are
-- newest first by it, and the secondary indexes below carry it for free.
CREATE TABLE deliveries (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    event_id        TEXT    NOT NULL REFERENCES events (id),
    subscriber_id   TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempt_count   INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
-- The dispatcher's hot query: pending deliveries by due time.
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_by_subscriber ON deliveries (subscriber_id);
CREATE INDEX deliveries_by_event ON deliveries (event_id);

CREATE TABLE attempts (
    seq              INTEGER PRIMARY KEY,
    delivery_id      TEXT    NOT NULL REFERENCES deliveries (id),
    at               INTEGER NOT NULL,
    outcome          TEXT    NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
    status_code      INTEGER,
    response_excerpt TEXT,
    error            TEXT
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id);
