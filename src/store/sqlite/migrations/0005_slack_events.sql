-- Slack Events API deliveries already acted on, by their envelope's `event_id`: Slack retries an
-- event it thinks went unacknowledged, and a reply must not reach the shopper twice. Slack
-- retries within minutes, so old rows are pruned as new ones arrive.
CREATE TABLE slack_events (
    event_id    TEXT    PRIMARY KEY NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX slack_events_by_time ON slack_events (received_at);
