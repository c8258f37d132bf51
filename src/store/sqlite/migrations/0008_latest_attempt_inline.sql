-- A delivery row carries its latest attempt; `attempts` keeps the earlier ones (and, for
-- deliveries attempted before this migration, all of theirs). Most deliveries succeed at the
-- first try, which then costs one row update instead of an update and an insert.
ALTER TABLE deliveries ADD COLUMN last_attempt_at INTEGER;
ALTER TABLE deliveries ADD COLUMN last_outcome TEXT
    CHECK (last_outcome IN ('delivered', 'retry', 'failed'));
ALTER TABLE deliveries ADD COLUMN last_status_code INTEGER;
ALTER TABLE deliveries ADD COLUMN last_response_excerpt TEXT;
ALTER TABLE deliveries ADD COLUMN last_error TEXT;
