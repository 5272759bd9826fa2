-- A row the log can never take (its payload is not an event, or the log refuses the message for
-- good) no longer holds up the rows after it: each refusal counts an attempt and keeps the reason;
-- after `events.outbox_max_attempts` the row is dead-lettered (dead_at set) and never relayed
-- again. An operator finds such rows with `WHERE dead_at IS NOT NULL` and replays one by setting
-- dead_at back to NULL (and attempts to 0).
ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN last_error TEXT;
ALTER TABLE outbox ADD COLUMN dead_at TEXT;

-- The relay reads the rows waiting (neither sent nor dead), oldest first.
DROP INDEX outbox_unsent;
CREATE INDEX outbox_waiting ON outbox (id) WHERE sent_at IS NULL AND dead_at IS NULL;
-- The dead letters, for the count the relay reports and for operators.
CREATE INDEX outbox_dead ON outbox (dead_at) WHERE dead_at IS NOT NULL;
