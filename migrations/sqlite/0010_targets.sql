-- Targets: the backup stream an incident's alert was routed to (config `[[targets]]`). NULL when
-- no target matched the alert's labels (or more than one did): such an incident is escalated and
-- never acted on.
ALTER TABLE incidents ADD COLUMN target TEXT;
CREATE INDEX incidents_target_id ON incidents (target, id DESC);
