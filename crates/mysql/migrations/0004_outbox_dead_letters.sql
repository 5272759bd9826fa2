-- A row the log can never take (its payload is not an event, or the log refuses the message for
-- good) no longer holds up the rows after it: each refusal counts an attempt and keeps the reason;
-- after `events.outbox_max_attempts` the row is dead-lettered (dead_at set) and never relayed
-- again. An operator finds such rows with `WHERE dead_at IS NOT NULL` and replays one by setting
-- dead_at back to NULL (and attempts to 0).
--
-- The relay reads the rows waiting (dead_at and sent_at NULL) in id order, and the pruning reads
-- the sent rows (dead_at NULL) in (sent_at, id) order: both along one key. The dead letters are
-- counted along its first column.
ALTER TABLE outbox
    ADD COLUMN attempts   INT NOT NULL DEFAULT 0,
    ADD COLUMN last_error TEXT NULL,
    ADD COLUMN dead_at    DATETIME(6) NULL,
    DROP KEY outbox_unsent,
    ADD KEY outbox_waiting (dead_at, sent_at, id);
