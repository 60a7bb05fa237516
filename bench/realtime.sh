#!/bin/sh
# Termination latency under Okta's 5-minute rule (issue 17): before each push the emulator
# records a session created that instant, as when a scheduled import has just started, and
# `examples/termination_probe` times each pushed `active: false` until the emulator shows
# the user DEACTIVATED.
#  1. `realtime: terminations` (the default): the direct DELETE, no session;
#  2. `realtime: off`: the termination waits for the spacing, then goes in a session.
# Emulator: --clock-scale 60 (Okta's 5 minutes = 5 s), --latency-ms 100 per call,
# --processing-ms 1000 per session.
# Usage: bench/realtime.sh [DIRECT_PROBES] [SESSION_PROBES]     (default 20 and 5)
set -eu
cd "$(dirname "$0")/.."
direct=${1:-20}
session=${2:-5}
cargo build --release --quiet --bin xaas --example termination_probe
target=${CARGO_TARGET_DIR:-target}/release
dir=$(mktemp -d)
pids=""
trap 'for p in $pids; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sim_port=$(free_port)
"$target/xaas" sim --listen "127.0.0.1:$sim_port" --clock-scale 60 --latency-ms 100 \
  --processing-ms 1000 >"$dir/sim.log" 2>&1 &
pids="$pids $!"
echo "id" >"$dir/hr.csv"
export XAAS_WEBHOOK_SECRET=bench-secret
serve() { # $1: realtime mode
  serve_port=$(free_port)
  cat >"$dir/xaas.yaml" <<YAML
okta:
  org_url: http://127.0.0.1:$sim_port
  auth: { type: api_token, token: sim-token }
  session_spacing_secs: 5.1
  poll_initial_ms: 50
  poll_max_secs: 1
state: { path: $dir/state-$1.db }
serve:
  listen: 127.0.0.1:$serve_port
  batch_window_ms: 0
  webhook:
    auth: { type: hmac, secrets: [ { env: XAAS_WEBHOOK_SECRET } ] }
jobs:
  - name: hr
    identity_source_id: 0oasim0000000000000
    source: { type: csv, path: hr.csv }
    mapping: $(pwd)/mappings/csv-hr-export.yaml
    realtime: $1
YAML
  XAAS_LOG=${XAAS_LOG:-xaas=warn} "$target/xaas" serve --config "$dir/xaas.yaml" >"$dir/serve-$1.log" 2>&1 &
  serve_pid=$!
  pids="$pids $serve_pid"
  for _ in $(seq 100); do
    "$target/xaas" healthcheck --url "http://127.0.0.1:$serve_port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
}
bench/machine
serve terminations
echo "== realtime: terminations (direct DELETE), $direct probes"
XAAS_PROBE_UNDER_SPACING=1 "$target/examples/termination_probe" "http://127.0.0.1:$serve_port" \
  "http://127.0.0.1:$sim_port" "$direct" 0 direct
kill -TERM "$serve_pid"; wait "$serve_pid" || true
serve off
echo "== realtime: off (a session, after the spacing), $session probes"
XAAS_PROBE_UNDER_SPACING=1 "$target/examples/termination_probe" "http://127.0.0.1:$serve_port" \
  "http://127.0.0.1:$sim_port" "$session" 0 session
kill -TERM "$serve_pid"; wait "$serve_pid" || true
