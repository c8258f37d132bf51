-- A disabled subscriber's pending deliveries are paused: `next_attempt_at` is NULL until it is
-- enabled again. So a pending delivery with a due time always belongs to an active subscriber,
-- and claiming needs no look at subscribers.
UPDATE deliveries SET next_attempt_at = NULL
WHERE status = 'pending'
  AND subscriber_id IN (SELECT id FROM subscribers WHERE status = 'disabled');

-- Each claim of a batch carries a token; an attempt is recorded only under the claim it was made
-- under, so the late answer of an expired claim cannot overwrite a newer result. While
-- `claimed_until` lies ahead the attempt is in flight, and a manual retry is refused.
ALTER TABLE deliveries ADD COLUMN claim TEXT;
ALTER TABLE deliveries ADD COLUMN claimed_until INTEGER;

-- When an order's current watch started (its registration, or the restart of an order no longer
-- watched): `poller.max_watch` counts from here.
ALTER TABLE orders ADD COLUMN watched_since INTEGER;
UPDATE orders SET watched_since = created_at;
