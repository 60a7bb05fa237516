#!/bin/sh
# Webhook throughput and ack latency on loopback: the real router with a durable event store
# (examples/webhook_server.rs) driven by unique signed single-record pushes
# (examples/webhook_load.rs). Release build. Server and load generator share the machine.
# Usage: bench/webhook.sh [CONNECTIONS] [SECONDS]     (default 64 connections, 10 s)
set -eu
cd "$(dirname "$0")/.."
connections=${1:-64}
seconds=${2:-10}
cargo build --release --quiet --example webhook_server --example webhook_load
bin=${CARGO_TARGET_DIR:-target}/release/examples
out=$(mktemp)
"$bin/webhook_server" 127.0.0.1:0 >"$out" &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do
  grep -q '^listening on' "$out" && break
  sleep 0.1
done
addr=$(sed -n 's/^listening on //p' "$out")
[ -n "$addr" ] || { echo "the server did not start" >&2; exit 1; }
bench/machine
echo "inputs: $connections connections, $seconds s of unique signed one-record pushes"
"$bin/webhook_load" "http://$addr" "$connections" "$seconds"
kill -TERM "$server"
wait "$server" || true
sed -n 's/^stored/server: stored/p' "$out"
