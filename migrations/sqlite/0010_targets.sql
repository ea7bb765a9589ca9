-- Targets: the backup stream an incident's alert was routed to (config `[[targets]]`). NULL when
-- no target matched the alert's labels (or more than one did): such an incident is escalated and
-- never acted on.
ALTER TABLE incidents ADD COLUMN target TEXT;
CREATE INDEX incidents_target_id ON incidents (target, id DESC);
-- The target a restore test or a manual backup was for (NULL: recorded before targets).
ALTER TABLE restore_tests ADD COLUMN target TEXT;
ALTER TABLE manual_backups ADD COLUMN target TEXT;
