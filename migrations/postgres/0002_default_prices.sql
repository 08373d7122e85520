-- Default price table (spec/billing.md "Prices"), nano-USD per million tokens:
-- 1.25 USD per million = 1250000000. Operators edit these through the admin API;
-- updated_at_ms is the day these list prices were taken (2025-11-26 UTC).
INSERT INTO prices (model, input_per_mtok_nanos, output_per_mtok_nanos, cached_input_per_mtok_nanos, updated_at_ms) VALUES
    ('gpt-5',              1250000000, 10000000000, 125000000, 1764115200000),
    ('gpt-5.1',            1250000000, 10000000000, 125000000, 1764115200000),
    ('gpt-5.1-codex',      1250000000, 10000000000, 125000000, 1764115200000),
    ('gpt-5.1-codex-max',  1250000000, 10000000000, 125000000, 1764115200000),
    ('gpt-5.2',            1750000000, 14000000000, 175000000, 1764115200000),
    ('gpt-5.1-codex-mini',  250000000,  2000000000,  25000000, 1764115200000),
    ('gpt-5-mini',          250000000,  2000000000,  25000000, 1764115200000)
ON CONFLICT (model) DO NOTHING;
