-- The transactional outbox: each catalog change writes its event here in the same transaction as
-- the change; the relay publishes the rows in id order and marks them sent once delivered.
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type TEXT NOT NULL,
    event_key  TEXT NOT NULL,
    payload    BLOB NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    sent_at    TEXT,
    -- A relay holds the rows it is delivering until then (Unix ms); after, another may take them.
    claimed_until INTEGER
);

-- The relay reads the unsent rows, oldest first.
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
