-- Notifications: a cursor per incident (the newest timeline event already turned into
-- deliveries, the Slack message to update, whether PagerDuty was paged) and the outbox of
-- deliveries, kept until Slack or PagerDuty took them, across restarts.
CREATE TABLE notify_state (
    incident_id   BIGINT PRIMARY KEY REFERENCES incidents (id),
    last_event_id BIGINT      NOT NULL DEFAULT 0,
    slack_channel TEXT,
    slack_ts      TEXT,
    -- '' (never paged), 'triggered', 'resolved'
    pagerduty     TEXT        NOT NULL DEFAULT ''
);

CREATE TABLE notify_outbox (
    id              BIGSERIAL PRIMARY KEY,
    incident_id     BIGINT      NOT NULL REFERENCES incidents (id),
    -- slack | pagerduty
    channel         TEXT        NOT NULL,
    -- slack_api (post, then update in place) | slack_webhook | trigger | resolve
    kind            TEXT        NOT NULL,
    payload         JSONB       NOT NULL,
    -- bumped when a pending Slack message is replaced by a newer rendering
    version         INTEGER     NOT NULL DEFAULT 1,
    -- pending | sent | failed
    state           TEXT        NOT NULL DEFAULT 'pending',
    attempts        INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    sent_at         TIMESTAMPTZ,
    last_error      TEXT        NOT NULL DEFAULT ''
);
CREATE INDEX notify_outbox_pending ON notify_outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notify_outbox_incident ON notify_outbox (incident_id, channel, id);
