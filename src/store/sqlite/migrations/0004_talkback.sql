-- Messages the bridge sent to the shopper on the retailer's behalf, and the subscriber each came
-- from (NULL: the admin API), so the poller does not echo them back to their origin.
CREATE TABLE sent_messages (
    order_id             TEXT    NOT NULL,
    message_id           INTEGER NOT NULL,
    origin_subscriber_id TEXT,
    sent_at              INTEGER NOT NULL,
    PRIMARY KEY (order_id, message_id)
);

-- A reply in a Slack thread is routed to its order by the thread's ts.
CREATE INDEX threads_by_ref ON threads (subscriber_id, thread_ref);
