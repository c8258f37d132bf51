-- The thread each subscriber's messages about one order go into: the first e-mail's
-- Message-ID, or the Slack message ts that started the order's thread.
CREATE TABLE threads (
    subscriber_id TEXT NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    order_id      TEXT NOT NULL,
    thread_ref    TEXT NOT NULL,
    PRIMARY KEY (subscriber_id, order_id)
);
