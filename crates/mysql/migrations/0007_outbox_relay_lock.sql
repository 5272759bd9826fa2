-- One row that a relay locks (FOR UPDATE NOWAIT) for the length of its round, so that one relay
-- sends at a time and the catalog topic keeps the outbox's order; the lock goes with the round's
-- transaction, or with its connection if the relay dies.
CREATE TABLE IF NOT EXISTS outbox_relay (
    id TINYINT UNSIGNED NOT NULL PRIMARY KEY
) ENGINE = InnoDB;

INSERT IGNORE INTO outbox_relay (id) VALUES (1);
