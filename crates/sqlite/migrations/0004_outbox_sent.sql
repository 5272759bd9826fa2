-- The relay deletes the rows sent longer ago than `events.outbox_retention_hours`, oldest first:
-- this index lets it read only those.
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
