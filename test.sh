#!/usr/bin/env bash
# The whole test suite: unit tests, the storage conformance suite on SQLite and Postgres,
# the Admin API and CLI tests, and the system tests in tests/. Needs Postgres at
# 127.0.0.1:5432 (override with TOLLGATE_TEST_PG_URL).
set -euo pipefail
cd "$(dirname "$0")"
exec cargo test --workspace --locked "$@"
