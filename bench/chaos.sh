#!/usr/bin/env bash
# The fault-injection suite at full length: TRIALS randomised trials (default 50) of
# tests/chaos.rs against a fresh dynalite, printing each trial's seed, faults and time, and the
# seed to replay a failure with. CI runs the same test with 5 trials (tests/run).
# Usage: bench/chaos.sh [TRIALS] [FIRST_SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-50}
seed=${2:-$(date +%s)}
DYNALITE_DIR=target/dynalite
if ! [ -f "$DYNALITE_DIR/node_modules/dynalite/cli.js" ]; then
  mkdir -p "$DYNALITE_DIR"
  npm install --no-save --no-audit --no-fund --prefix "$DYNALITE_DIR" dynalite@4.0.0 >&2
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
node "$DYNALITE_DIR/node_modules/dynalite/cli.js" --host 127.0.0.1 --port "$port" \
  --createTableMs 0 --deleteTableMs 0 --updateTableMs 0 >/dev/null 2>&1 &
dynalite=$!
trap 'kill "$dynalite" 2>/dev/null || true' EXIT
sleep 1
bench/machine
echo "inputs: $trials trials from seed $seed (the test profile CI builds)"
XAAS_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$port" XAAS_CHAOS_TRIALS="$trials" \
  XAAS_CHAOS_SEED="$seed" cargo test --test chaos -- --nocapture 2>&1 | grep -E '^chaos:|panicked|FAILED'
