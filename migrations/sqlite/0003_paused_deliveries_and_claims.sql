-- A disabled subscriber's pending deliveries are paused: `next_attempt_at` is NULL until it is
-- enabled again. So a pending delivery with a due time always belongs to an active subscriber,
-- and claiming needs no look at subscribers.
UPDATE deliveries SET next_attempt_at = NULL
WHERE status = 'pending'
  AND subscriber_id IN (SELECT id FROM subscribers WHERE status = 'disabled');
