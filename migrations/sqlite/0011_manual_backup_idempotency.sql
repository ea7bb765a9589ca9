-- POST /api/v1/backups accepts an Idempotency-Key: a request repeating a key within the time a
-- key is remembered answers with the backup the first one started (kept here, so it holds
-- across replicas).
ALTER TABLE manual_backups ADD COLUMN idempotency_key TEXT;
CREATE INDEX manual_backups_idempotency ON manual_backups (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX manual_backups_started ON manual_backups (started_at);
