#!/bin/sh
# The daemon end to end on loopback: `xaas serve` (release) in front of the emulator.
#  1. termination latency with the daemon idle: push `active: false` for a seeded user, time
#     until the emulator shows it DEACTIVATED (no session spacing pending);
#  2. webhook throughput and durable ack latency under load (examples/webhook_load.rs: unique
#     signed single-record pushes, N connections) while the daemon imports what it accepts;
#  3. termination latency right after the load, with the backlog still importing.
# Emulator: --clock-scale 300 (Okta's 5 minutes = 1 s; the client's spacing is 1 s),
# --latency-ms 100 per call, --processing-ms 1000 per session, 600 requests/min.
# Usage: bench/daemon.sh [CONNECTIONS] [SECONDS]     (default 64 connections, 10 s)
set -eu
cd "$(dirname "$0")/.."
connections=${1:-64}
seconds=${2:-10}
cargo build --release --quiet --bin xaas --example webhook_load --example termination_probe
target=${CARGO_TARGET_DIR:-target}/release
dir=$(mktemp -d)
pids=""
trap 'for p in $pids; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sim_port=$(free_port)
serve_port=$(free_port)
"$target/xaas" sim --listen "127.0.0.1:$sim_port" --clock-scale 300 --latency-ms 100 \
  --processing-ms 1000 >"$dir/sim.log" 2>&1 &
pids="$pids $!"
echo "id" >"$dir/hr.csv"
cat >"$dir/xaas.yaml" <<YAML
okta:
  org_url: http://127.0.0.1:$sim_port
  auth: { type: api_token, token: sim-token }
  session_spacing_secs: 1
  poll_initial_ms: 50
  poll_max_secs: 1
serve:
  listen: 127.0.0.1:$serve_port
  webhook:
    auth:
      type: hmac
      secrets: [ { env: XAAS_WEBHOOK_SECRET } ]
    # The load generator is a single client.
    rate_limit_per_second: 1000000
    rate_limit_burst: 1000000
jobs:
  - name: hr
    identity_source_id: 0oasim0000000000000
    source: { type: csv, path: hr.csv }
    mapping: $(pwd)/mappings/csv-hr-export.yaml
YAML
export XAAS_WEBHOOK_SECRET=bench-secret
XAAS_LOG=${XAAS_LOG:-xaas=warn} "$target/xaas" serve --config "$dir/xaas.yaml" >"$dir/serve.log" 2>&1 &
serve=$!
pids="$pids $serve"
for _ in $(seq 100); do
  "$target/xaas" healthcheck --url "http://127.0.0.1:$serve_port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
bench/machine
echo "== termination latency, daemon idle"
"$target/examples/termination_probe" "http://127.0.0.1:$serve_port" "http://127.0.0.1:$sim_port" 5 1 idle
echo "== webhook load: $connections connections, $seconds s, into xaas serve (durable before 202)"
"$target/examples/webhook_load" "http://127.0.0.1:$serve_port" "$connections" "$seconds"
echo "== termination latency, right after the load (backlog importing)"
"$target/examples/termination_probe" "http://127.0.0.1:$serve_port" "http://127.0.0.1:$sim_port" 1 1 busy
kill -TERM "$serve"
wait "$serve" && echo "xaas serve stopped cleanly (exit 0)"
[ -z "${KEEP_LOG:-}" ] || cp "$dir/serve.log" "$KEEP_LOG"
