-- Billing integrity (issue 9). Keep in step with the other dialect's 0003.
--
-- 1. The shipped price table: every OpenAI model the Responses API serves, nano-USD per
--    million tokens (1.25 USD / M = 1250000000). Taken from LiteLLM's
--    model_prices_and_context_window.json (litellm 1.110.2; `openai` provider, chat and
--    responses modes) plus codex-mini-latest from OpenAI's price page. A model without a
--    cached-input discount (the -pro models, computer-use-preview, gpt-4o-2024-05-13) has
--    its input price as cached price. Dated snapshots are priced by their base through
--    the strict date-suffix rule; a snapshot priced differently from its base has its
--    own row. Rows an operator already set are left alone. updated_at_ms: 2026-05-01 UTC.
INSERT INTO prices (model, input_per_mtok_nanos, output_per_mtok_nanos, cached_input_per_mtok_nanos, updated_at_ms) VALUES
    ('codex-mini-latest',       1500000000,   6000000000,    375000000, 1777593600000),
    ('computer-use-preview',    3000000000,  12000000000,   3000000000, 1777593600000),
    ('gpt-4.1',                 2000000000,   8000000000,    500000000, 1777593600000),
    ('gpt-4.1-mini',             400000000,   1600000000,    100000000, 1777593600000),
    ('gpt-4.1-nano',             100000000,    400000000,     25000000, 1777593600000),
    ('gpt-4o',                  2500000000,  10000000000,   1250000000, 1777593600000),
    ('gpt-4o-2024-05-13',       5000000000,  15000000000,   5000000000, 1777593600000),
    ('gpt-4o-mini',              150000000,    600000000,     75000000, 1777593600000),
    ('gpt-5',                   1250000000,  10000000000,    125000000, 1777593600000),
    ('gpt-5-chat',              1250000000,  10000000000,    125000000, 1777593600000),
    ('gpt-5-chat-latest',       1250000000,  10000000000,    125000000, 1777593600000),
    ('gpt-5-codex',             1250000000,  10000000000,    125000000, 1777593600000),
    ('gpt-5-mini',               250000000,   2000000000,     25000000, 1777593600000),
    ('gpt-5-nano',                50000000,    400000000,      5000000, 1777593600000),
    ('gpt-5-pro',              15000000000, 120000000000,  15000000000, 1777593600000),
    ('gpt-5.1',                 1250000000,  10000000000,    125000000, 1777593600000),
    ('gpt-5.1-chat-latest',     1250000000,  10000000000,    125000000, 1777593600000),
    ('gpt-5.1-codex',           1250000000,  10000000000,    125000000, 1777593600000),
    ('gpt-5.1-codex-max',       1250000000,  10000000000,    125000000, 1777593600000),
    ('gpt-5.1-codex-mini',       250000000,   2000000000,     25000000, 1777593600000),
    ('gpt-5.2',                 1750000000,  14000000000,    175000000, 1777593600000),
    ('gpt-5.2-chat-latest',     1750000000,  14000000000,    175000000, 1777593600000),
    ('gpt-5.2-codex',           1750000000,  14000000000,    175000000, 1777593600000),
    ('gpt-5.2-pro',            21000000000, 168000000000,  21000000000, 1777593600000),
    ('gpt-5.3-chat-latest',     1750000000,  14000000000,    175000000, 1777593600000),
    ('gpt-5.3-codex',           1750000000,  14000000000,    175000000, 1777593600000),
    ('gpt-5.4',                 2500000000,  15000000000,    250000000, 1777593600000),
    ('gpt-5.4-mini',             750000000,   4500000000,     75000000, 1777593600000),
    ('gpt-5.4-nano',             200000000,   1250000000,     20000000, 1777593600000),
    ('gpt-5.4-pro',            30000000000, 180000000000,  30000000000, 1777593600000),
    ('gpt-5.5',                 5000000000,  30000000000,    500000000, 1777593600000),
    ('gpt-5.5-pro',            30000000000, 180000000000,  30000000000, 1777593600000),
    ('gpt-5.6',                 4000000000,  20000000000,    400000000, 1777593600000),
    ('gpt-5.6-luna',             200000000,   1200000000,     20000000, 1777593600000),
    ('gpt-5.6-sol',             4000000000,  20000000000,    400000000, 1777593600000),
    ('gpt-5.6-terra',           2000000000,  12000000000,    200000000, 1777593600000),
    ('o1',                     15000000000,  60000000000,   7500000000, 1777593600000),
    ('o1-pro',                150000000000, 600000000000, 150000000000, 1777593600000),
    ('o3',                      2000000000,   8000000000,    500000000, 1777593600000),
    ('o3-deep-research',       10000000000,  40000000000,   2500000000, 1777593600000),
    ('o3-mini',                 1100000000,   4400000000,    550000000, 1777593600000),
    ('o3-pro',                 20000000000,  80000000000,  20000000000, 1777593600000),
    ('o4-mini',                 1100000000,   4400000000,    275000000, 1777593600000),
    ('o4-mini-deep-research',   2000000000,   8000000000,    500000000, 1777593600000)
ON CONFLICT (model) DO NOTHING;

-- 2. Explicit aliases: a name priced as another model. Looked up after the exact name,
--    its undated form and its effort-less form; never a prefix match (which priced
--    gpt-5-pro as gpt-5). The target must have a price, else the name has none.
CREATE TABLE price_aliases (
    alias          TEXT PRIMARY KEY,
    model          TEXT   NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);
INSERT INTO price_aliases (alias, model, updated_at_ms) VALUES
    ('gpt-5-codex-mini',   'gpt-5.1-codex-mini', 1777593600000),
    ('chatgpt-4o-latest',  'gpt-4o-2024-05-13',  1777593600000);

-- 3. Usage records the control plane can never store as they are: kept with the reason
--    and the record as the data plane sent it (JSON), acknowledged to the data plane as
--    dead-lettered, re-charged by an operator at most once (recharged_at_ms).
--    request_id is the record's own id when it is a valid one, else "invalid:" + the
--    SHA-256 of the raw record, so a replay of the same record is recognised.
CREATE TABLE usage_dead_letters (
    id               BIGSERIAL PRIMARY KEY,
    request_id       TEXT   NOT NULL UNIQUE,
    reason           TEXT   NOT NULL,
    record           TEXT   NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    recharged_at_ms  BIGINT,
    recharged_model  TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX usage_dead_letters_pending ON usage_dead_letters (recharged_at_ms, created_at_ms);

-- 4. The audit's key invariant: quota_used equals the sum of actual_cost of the key's
--    usage rows with an id above this one (the largest usage id when the quota was last
--    reset or turned on).
ALTER TABLE api_keys ADD COLUMN quota_baseline_usage_id BIGINT NOT NULL DEFAULT 0;
