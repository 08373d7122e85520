#!/usr/bin/env bash
# One-command start on the embedded default: builds Tollgate, starts a control plane on
# SQLite (data under $TOLLGATE_DATA_DIR, default ./.tollgate) and one data plane on
# localhost, talking mutual TLS with a development CA the control plane generates; prints
# the admin token, the proxy URL and the next steps, and runs until Ctrl-C (both processes
# then drain and stop). No Postgres, no etcd, no certificate work by hand.
set -euo pipefail
cd "$(dirname "$0")"

DATA_DIR=${TOLLGATE_DATA_DIR:-.tollgate}
CP_ADDR=${TOLLGATE_LISTEN:-127.0.0.1:7600}
DP_ADDR=${TOLLGATE_DP_LISTEN:-127.0.0.1:8080}
DP_ADMIN_ADDR=${TOLLGATE_DP_ADMIN_LISTEN:-127.0.0.1:8081}
PROFILE=${TOLLGATE_PROFILE:-release}

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi

# The control plane's etcd client (leadership, used only when etcd is configured) is
# generated at build time by protoc.
if ! command -v protoc >/dev/null 2>&1 && [ -z "${PROTOC:-}" ]; then
  echo "protoc not found: install it first (Debian/Ubuntu: apt-get install -y protobuf-compiler; macOS: brew install protobuf)" >&2
  exit 1
fi

echo "==> building ($PROFILE)…"
if [ "$PROFILE" = release ]; then
  cargo build --release --locked --bin tollgate-control-plane --bin tollgate-data-plane --bin tollgate-admin
else
  cargo build --locked --bin tollgate-control-plane --bin tollgate-data-plane --bin tollgate-admin
fi
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE
mkdir -p "$DATA_DIR"

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "==> stopping (draining in-flight requests)…"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  exit 0
}
trap stop INT TERM EXIT

wait_http() { # url timeout-seconds
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then echo "timed out waiting for $1" >&2; return 1; fi
    sleep 0.2
  done
}

echo "==> starting control plane on $CP_ADDR (SQLite in $DATA_DIR)"
"$BIN/tollgate-control-plane" --listen "$CP_ADDR" --data-dir "$DATA_DIR" >"$DATA_DIR/control-plane.log" 2>&1 &
pids+=($!)

# The admin token and the development PKI (a local CA, the control plane's server
# certificate and the data plane's client certificate, in $DATA_DIR/tls) appear once the
# control plane has resolved its configuration; later starts reuse them.
TLS_DIR=$DATA_DIR/tls
for _ in $(seq 1 100); do [ -s "$DATA_DIR/admin-token" ] && [ -s "$TLS_DIR/data-plane.key" ] && break; sleep 0.1; done
if [ ! -s "$DATA_DIR/admin-token" ] || [ ! -s "$TLS_DIR/data-plane.key" ]; then
  echo "control plane did not start; see $DATA_DIR/control-plane.log" >&2
  tail -20 "$DATA_DIR/control-plane.log" >&2
  exit 1
fi

echo "==> starting data plane on $DP_ADDR (health on $DP_ADMIN_ADDR)"
"$BIN/tollgate-data-plane" --listen "$DP_ADDR" --admin-listen "$DP_ADMIN_ADDR" \
  --control-plane-url "https://$CP_ADDR" --control-plane-ca "$TLS_DIR/ca.crt" \
  --client-cert "$TLS_DIR/data-plane.crt" --client-key "$TLS_DIR/data-plane.key" \
  >"$DATA_DIR/data-plane.log" 2>&1 &
pids+=($!)
if ! wait_http "http://$DP_ADMIN_ADDR/readyz" 30; then
  echo "data plane not ready; see $DATA_DIR/data-plane.log" >&2
  tail -20 "$DATA_DIR/data-plane.log" >&2
  exit 1
fi

TOKEN_FILE=$(cd "$DATA_DIR" && pwd)/admin-token
CA_FILE=$(cd "$TLS_DIR" && pwd)/ca.crt
cat <<MSG

Tollgate is running.
  proxy (OpenAI base URL):  http://$DP_ADDR/v1
  control plane (gRPC):     https://$CP_ADDR (mutual TLS with the data plane)
  admin token:              $TOKEN_FILE
  development CA:           $CA_FILE
  logs:                     $DATA_DIR/control-plane.log, $DATA_DIR/data-plane.log

Next steps (another terminal, in this directory):
  export TOLLGATE_ADMIN_ENDPOINT=https://$CP_ADDR TOLLGATE_ADMIN_TOKEN_FILE=$TOKEN_FILE TOLLGATE_ADMIN_CA_CERT=$CA_FILE
  $BIN/tollgate-admin user create --email you@example.com --balance 10
  $BIN/tollgate-admin group create --name default
  $BIN/tollgate-admin account create --name main --api-key "\$OPENAI_API_KEY" --group 1
  $BIN/tollgate-admin key create --user 1 --group 1 --name laptop
  curl http://$DP_ADDR/v1/responses -H "Authorization: Bearer <the key>" \\
       -H 'Content-Type: application/json' -d '{"model":"gpt-5.1","input":"hello"}'

Ctrl-C stops both.
MSG
wait -n "${pids[@]}"
echo "a process exited; see the logs in $DATA_DIR" >&2
