-- Books stored before the outbox existed have no `book.created` event. At start the service writes
-- theirs, in id order and in batches, for the ids from next_id up to (not including) end_id.
-- A new catalog, or one whose outbox already has rows, has nothing to backfill.
CREATE TABLE outbox_backfill (
    next_id BIGINT NOT NULL,
    end_id  BIGINT NOT NULL
) ENGINE = InnoDB;

INSERT INTO outbox_backfill (next_id, end_id)
SELECT 0, CASE WHEN EXISTS (SELECT 1 FROM outbox) THEN 0
               ELSE COALESCE((SELECT MAX(id) FROM books), -1) + 1 END;
