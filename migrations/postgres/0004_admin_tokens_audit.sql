-- Scoped admin credentials and the audit log of Admin writes (Postgres).
-- Keep in step with migrations/sqlite/0004_admin_tokens_audit.sql.

-- Named admin tokens. Only the SHA-256 of the secret is stored; the secret is shown once.
CREATE TABLE admin_tokens (
    id               BIGSERIAL PRIMARY KEY,
    name             TEXT   NOT NULL,
    token_hash       TEXT   NOT NULL UNIQUE,
    token_hint       TEXT   NOT NULL,
    scope            TEXT   NOT NULL,
    created_by       TEXT   NOT NULL,
    expires_at_ms    BIGINT,
    last_used_at_ms  BIGINT,
    revoked_at_ms    BIGINT,
    created_at_ms    BIGINT NOT NULL
);
-- A name names one live token; a revoked token's name may be reused.
CREATE UNIQUE INDEX admin_tokens_name_live ON admin_tokens (name) WHERE revoked_at_ms IS NULL;

-- One row per successful Admin write. `details` is JSON of allow-listed request fields:
-- never a credential, API key, token or proxy URL.
CREATE TABLE audit_log (
    id           BIGSERIAL PRIMARY KEY,
    at_ms        BIGINT NOT NULL,
    actor_kind   TEXT   NOT NULL,
    actor        TEXT   NOT NULL,
    action       TEXT   NOT NULL,
    target       TEXT   NOT NULL DEFAULT '',
    details      TEXT   NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_at ON audit_log (at_ms);
