#!/usr/bin/env bash
# The benchmark against the peers, in one command (see bench/README.md):
#   ./bench/run.sh            full run (10 s series, 1,000 and 10,000 open streams), writes
#                             target/bench/report-*.md and docs/benchmarks.md
#   ./bench/run.sh --short    a quick check (3 s series, 1,000 streams), report only
# BENCH_LOAD_TOOL=wrk uses wrk (apt) instead of oha. Other flags go to bench/run.py (--duration, --rounds, --no-litellm, --open-streams, ...).
# Builds the release binaries; installs oha (cargo install --locked), nginx-light (apt) and
# LiteLLM (pinned, its own venv under $BENCH_WORK) when missing. Never run by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_WORK=${BENCH_WORK:-$PWD/target/bench}
LITELLM_VERSION=${LITELLM_VERSION:-1.108.7} # not 1.82.7 / 1.82.8 (compromised releases)
LITELLM_VENV=$BENCH_WORK/litellm-venv
mkdir -p "$BENCH_WORK"

short=0; micro=1; litellm=1
for a in "$@"; do
  case $a in
    --short) short=1; micro=0 ;;
    --no-micro) micro=0 ;;
    --no-litellm) litellm=0 ;;
  esac
done
args=()
for a in "$@"; do [ "$a" = --no-micro ] || args+=("$a"); done

echo "==> building release binaries"
cargo build --release --locked --bin tollgate-control-plane --bin tollgate-data-plane \
  --bin tollgate-admin --bin fake-upstream --bin stream-probe

LOAD_TOOL=${BENCH_LOAD_TOOL:-oha} # oha, or wrk (apt) where compiling oha is not an option
if [ "$LOAD_TOOL" = oha ] && ! command -v oha >/dev/null 2>&1; then
  echo "==> installing oha (cargo install --locked oha; several minutes)"
  cargo install --locked oha
fi
if [ "$LOAD_TOOL" = wrk ] && ! command -v wrk >/dev/null 2>&1; then
  apt-get install -y wrk
fi
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "==> installing nginx-light"
  apt-get install -y nginx-light
fi
if [ $litellm = 1 ] && [ ! -x "$LITELLM_VENV/bin/litellm" ]; then
  echo "==> installing litellm[proxy]==$LITELLM_VERSION into $LITELLM_VENV"
  python3 -m venv "$LITELLM_VENV"
  "$LITELLM_VENV/bin/pip" install --quiet "litellm[proxy]==$LITELLM_VERSION"
fi
if [ $micro = 1 ]; then
  echo "==> criterion micro-benchmarks"
  cargo bench --locked -p tollgate-tests --bench hot_path
fi

publish=()
[ $short = 1 ] || publish=(--publish)
if [ $short = 0 ] && command -v perf >/dev/null 2>&1; then publish+=(--perf); fi
exec python3 bench/run.py --load-tool "$LOAD_TOOL" --work-dir "$BENCH_WORK" --litellm-venv "$LITELLM_VENV" \
  --litellm-version "$LITELLM_VERSION" "${publish[@]}" "${args[@]}"
