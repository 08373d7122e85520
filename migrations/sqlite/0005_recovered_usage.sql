-- Usage the control plane recorded itself for a lease that ended without a usage record
-- (its data plane died): an estimate, flagged, superseded when the real record arrives
-- (ARCHITECTURE.md "Every lease ends in one usage record").
-- Keep in step with migrations/postgres/0005_recovered_usage.sql.
ALTER TABLE usage_logs ADD COLUMN recovered INTEGER NOT NULL DEFAULT 0;
