-- Tollgate schema (Postgres). Keep in step with migrations/sqlite/0001_initial.sql:
-- same tables, same columns, same names. Conventions:
--   money       BIGINT nano-USD (*_nanos)            never floating point
--   multipliers BIGINT millionths (*_ppm)
--   times       BIGINT unix milliseconds (*_ms)
--   flags       BIGINT 0/1 (one representation on both dialects)
--   lists/maps  TEXT holding JSON
--   soft delete deleted_at_ms IS NOT NULL

CREATE TABLE users (
    id             BIGSERIAL PRIMARY KEY,
    email          TEXT   NOT NULL,
    name           TEXT   NOT NULL DEFAULT '',
    role           TEXT   NOT NULL DEFAULT 'user',
    status         TEXT   NOT NULL DEFAULT 'active',
    balance_nanos  BIGINT NOT NULL DEFAULT 0,
    concurrency    BIGINT NOT NULL DEFAULT 5,
    notes          TEXT   NOT NULL DEFAULT '',
    deleted_at_ms  BIGINT,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_email_live ON users (email) WHERE deleted_at_ms IS NULL;

CREATE TABLE balance_ledger (
    id                   BIGSERIAL PRIMARY KEY,
    user_id              BIGINT NOT NULL REFERENCES users (id),
    kind                 TEXT   NOT NULL,
    delta_nanos          BIGINT NOT NULL,
    balance_after_nanos  BIGINT NOT NULL,
    reason               TEXT   NOT NULL,
    created_at_ms        BIGINT NOT NULL
);
CREATE INDEX balance_ledger_user ON balance_ledger (user_id, id);

CREATE TABLE groups (
    id                   BIGSERIAL PRIMARY KEY,
    name                 TEXT   NOT NULL,
    platform             TEXT   NOT NULL DEFAULT 'openai',
    rate_multiplier_ppm  BIGINT NOT NULL DEFAULT 1000000,
    kind                 TEXT   NOT NULL DEFAULT 'standard',
    daily_limit_nanos    BIGINT NOT NULL DEFAULT 0,
    weekly_limit_nanos   BIGINT NOT NULL DEFAULT 0,
    monthly_limit_nanos  BIGINT NOT NULL DEFAULT 0,
    status               TEXT   NOT NULL DEFAULT 'active',
    exclusive            BIGINT NOT NULL DEFAULT 0,
    description          TEXT   NOT NULL DEFAULT '',
    deleted_at_ms        BIGINT,
    created_at_ms        BIGINT NOT NULL,
    updated_at_ms        BIGINT NOT NULL
);
CREATE UNIQUE INDEX groups_name_live ON groups (name) WHERE deleted_at_ms IS NULL;

CREATE TABLE api_keys (
    id                BIGSERIAL PRIMARY KEY,
    user_id           BIGINT NOT NULL REFERENCES users (id),
    name              TEXT   NOT NULL DEFAULT '',
    key_hash          TEXT   NOT NULL UNIQUE,
    key_hint          TEXT   NOT NULL,
    group_id          BIGINT REFERENCES groups (id),
    status            TEXT   NOT NULL DEFAULT 'active',
    ip_allow          TEXT   NOT NULL DEFAULT '[]',
    ip_deny           TEXT   NOT NULL DEFAULT '[]',
    quota_nanos       BIGINT NOT NULL DEFAULT 0,
    quota_used_nanos  BIGINT NOT NULL DEFAULT 0,
    expires_at_ms     BIGINT,
    last_used_at_ms   BIGINT,
    deleted_at_ms     BIGINT,
    created_at_ms     BIGINT NOT NULL,
    updated_at_ms     BIGINT NOT NULL
);
CREATE INDEX api_keys_user ON api_keys (user_id);
CREATE INDEX api_keys_group ON api_keys (group_id);

CREATE TABLE accounts (
    id                           BIGSERIAL PRIMARY KEY,
    name                         TEXT   NOT NULL,
    platform                     TEXT   NOT NULL DEFAULT 'openai',
    kind                         TEXT   NOT NULL,
    base_url                     TEXT   NOT NULL DEFAULT '',
    -- Encrypted JSON of the credential (api key, or OAuth tokens); see crypto.rs.
    credential_enc               TEXT   NOT NULL,
    concurrency                  BIGINT NOT NULL DEFAULT 3,
    priority                     BIGINT NOT NULL DEFAULT 50,
    status                       TEXT   NOT NULL DEFAULT 'active',
    error_message                TEXT   NOT NULL DEFAULT '',
    schedulable                  BIGINT NOT NULL DEFAULT 1,
    model_mapping                TEXT   NOT NULL DEFAULT '{}',
    -- Encrypted: a proxy URL may carry credentials. Empty = no proxy.
    proxy_url_enc                TEXT   NOT NULL DEFAULT '',
    user_agent                   TEXT   NOT NULL DEFAULT '',
    rate_limited_until_ms        BIGINT,
    overloaded_until_ms          BIGINT,
    temp_unschedulable_until_ms  BIGINT,
    temp_unschedulable_reason    TEXT   NOT NULL DEFAULT '',
    expires_at_ms                BIGINT,
    chatgpt_account_id           TEXT   NOT NULL DEFAULT '',
    codex_usage                  TEXT   NOT NULL DEFAULT '{}',
    cost_multiplier_ppm          BIGINT NOT NULL DEFAULT 1000000,
    notes                        TEXT   NOT NULL DEFAULT '',
    last_used_at_ms              BIGINT,
    deleted_at_ms                BIGINT,
    created_at_ms                BIGINT NOT NULL,
    updated_at_ms                BIGINT NOT NULL
);

CREATE TABLE account_groups (
    account_id  BIGINT NOT NULL REFERENCES accounts (id),
    group_id    BIGINT NOT NULL REFERENCES groups (id),
    priority    BIGINT NOT NULL DEFAULT 50,
    PRIMARY KEY (account_id, group_id)
);
CREATE INDEX account_groups_group ON account_groups (group_id);

CREATE TABLE subscriptions (
    id                        BIGSERIAL PRIMARY KEY,
    user_id                   BIGINT NOT NULL REFERENCES users (id),
    group_id                  BIGINT NOT NULL REFERENCES groups (id),
    starts_at_ms              BIGINT NOT NULL,
    expires_at_ms             BIGINT NOT NULL,
    status                    TEXT   NOT NULL DEFAULT 'active',
    daily_usage_nanos         BIGINT NOT NULL DEFAULT 0,
    weekly_usage_nanos        BIGINT NOT NULL DEFAULT 0,
    monthly_usage_nanos       BIGINT NOT NULL DEFAULT 0,
    daily_window_start_ms     BIGINT,
    weekly_window_start_ms    BIGINT,
    monthly_window_start_ms   BIGINT,
    notes                     TEXT   NOT NULL DEFAULT '',
    created_at_ms             BIGINT NOT NULL,
    updated_at_ms             BIGINT NOT NULL
);
CREATE INDEX subscriptions_user_group ON subscriptions (user_id, group_id);

CREATE TABLE prices (
    model                        TEXT PRIMARY KEY,
    input_per_mtok_nanos         BIGINT NOT NULL,
    output_per_mtok_nanos        BIGINT NOT NULL,
    cached_input_per_mtok_nanos  BIGINT NOT NULL,
    updated_at_ms                BIGINT NOT NULL
);

CREATE TABLE usage_logs (
    id                           BIGSERIAL PRIMARY KEY,
    request_id                   TEXT   NOT NULL UNIQUE,
    key_id                       BIGINT NOT NULL,
    user_id                      BIGINT NOT NULL,
    group_id                     BIGINT,
    subscription_id              BIGINT,
    account_id                   BIGINT NOT NULL,
    model                        TEXT   NOT NULL,
    upstream_model               TEXT   NOT NULL DEFAULT '',
    input_tokens                 BIGINT NOT NULL DEFAULT 0,
    output_tokens                BIGINT NOT NULL DEFAULT 0,
    cached_tokens                BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens             BIGINT NOT NULL DEFAULT 0,
    input_cost_nanos             BIGINT NOT NULL DEFAULT 0,
    output_cost_nanos            BIGINT NOT NULL DEFAULT 0,
    cached_cost_nanos            BIGINT NOT NULL DEFAULT 0,
    total_cost_nanos             BIGINT NOT NULL DEFAULT 0,
    actual_cost_nanos            BIGINT NOT NULL DEFAULT 0,
    rate_multiplier_ppm          BIGINT NOT NULL DEFAULT 1000000,
    account_cost_multiplier_ppm  BIGINT NOT NULL DEFAULT 1000000,
    billing_mode                 TEXT   NOT NULL DEFAULT 'balance',
    stream                       BIGINT NOT NULL DEFAULT 0,
    duration_ms                  BIGINT NOT NULL DEFAULT 0,
    first_token_ms               BIGINT,
    user_agent                   TEXT   NOT NULL DEFAULT '',
    client_ip                    TEXT   NOT NULL DEFAULT '',
    reasoning_effort             TEXT   NOT NULL DEFAULT '',
    estimated                    BIGINT NOT NULL DEFAULT 0,
    created_at_ms                BIGINT NOT NULL
);
CREATE INDEX usage_logs_created ON usage_logs (created_at_ms);
CREATE INDEX usage_logs_key ON usage_logs (key_id, created_at_ms);
CREATE INDEX usage_logs_user ON usage_logs (user_id, created_at_ms);
CREATE INDEX usage_logs_account ON usage_logs (account_id, created_at_ms);
CREATE INDEX usage_logs_group ON usage_logs (group_id, created_at_ms);
