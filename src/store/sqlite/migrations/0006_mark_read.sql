-- Whether delivering a shopper's message to a subscriber marks the order's messages read
-- upstream (issue 5, mark-read policy).
ALTER TABLE subscribers ADD COLUMN mark_read TEXT NOT NULL DEFAULT 'never'
    CHECK (mark_read IN ('never', 'on_delivery'));

-- The chat messages seen unread when a subscriber's delivery had the order marked read: their
-- reading is that subscriber's doing and is not announced back to it. A row is dropped once the
-- message's reading has been seen.
CREATE TABLE read_requests (
    order_id      TEXT    NOT NULL,
    message_id    INTEGER NOT NULL,
    subscriber_id TEXT    NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    requested_at  INTEGER NOT NULL,
    PRIMARY KEY (order_id, message_id, subscriber_id)
) WITHOUT ROWID;
-- For the cascade when a subscriber is deleted.
CREATE INDEX read_requests_by_subscriber ON read_requests (subscriber_id);
