-- Request ids in usage records and the owners of upstream response ids (sqlite).
-- Keep in step with migrations/postgres/0006_request_ids_response_owners.sql.

-- The client's own x-request-id (sanitised by the data plane; '' = none) and the
-- upstream's x-request-id of the billed answer. `request_id` stays the gateway's id.
ALTER TABLE usage_logs ADD COLUMN client_request_id TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_logs ADD COLUMN upstream_request_id TEXT NOT NULL DEFAULT '';

-- Response-id affinity: which account (and for which user) an upstream response id was
-- created through, so `previous_response_id` and /v1/responses/{id} reach that account.
-- Rows older than the TTL are pruned by the control plane.
CREATE TABLE response_owners (
    response_id    TEXT   PRIMARY KEY,
    account_id     INTEGER NOT NULL,
    user_id        INTEGER NOT NULL,
    created_at_ms  INTEGER NOT NULL
);
CREATE INDEX response_owners_created ON response_owners (created_at_ms);
