-- The transactional outbox: each catalog change writes its event here in the same transaction as
-- the change; the relay publishes the rows in id order and marks them sent once delivered.
CREATE TABLE outbox (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event_type VARCHAR(64) NOT NULL,
    event_key  VARCHAR(255) NOT NULL,
    payload    MEDIUMBLOB NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    sent_at    DATETIME(6) NULL,
    KEY outbox_unsent (sent_at, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
