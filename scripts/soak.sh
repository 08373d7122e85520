#!/usr/bin/env bash
# Soak test (not in CI): mixed streaming / non-streaming load through two data-plane
# processes that are SIGKILLed and restarted at random, one control-plane restart, then
# the books checked (tests/tests/soak.rs explains every check). Report: docs/soak.md.
#
#   scripts/soak.sh            # 30 minutes (the default)
#   SOAK_MINUTES=5 scripts/soak.sh
#   SOAK_WORKERS=16 scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
cargo build -p tollgate-data-plane --bin tollgate-data-plane
export SOAK_DATA_PLANE_BIN="$PWD/target/debug/tollgate-data-plane"
export SOAK_MINUTES="${SOAK_MINUTES:-30}"
export SOAK_REPORT="${SOAK_REPORT:-$PWD/target/soak-report.txt}"
cargo test -p tollgate-tests --test soak -- --ignored --nocapture
echo "report: $SOAK_REPORT"
