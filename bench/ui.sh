#!/bin/sh
# The monitoring pages with a large history: 100 runs × 100,000 per-record decisions in the
# SQLite state (about 0.9 GB, seeded once into target/ui-bench/ and reused), then the jobs
# page, a run page, an externalId search, a deep page and a filtered page, each fetched
# N times over HTTP. Prints p50/p99 of the server time (Server-Timing) and of the client.
# Usage: bench/ui.sh [RUNS] [RECORDS] [REQUESTS] [sqlite|dynamodb]   (default 100 100000 200 sqlite)
# With `dynamodb`, dynalite (npm, installed into target/dynalite as tests/run does) is started
# on a free port and the history is seeded into fresh tables there; the daemon serves from it.
set -eu
cd "$(dirname "$0")/.."
runs=${1:-100}
records=${2:-100000}
requests=${3:-200}
backend=${4:-sqlite}
cargo build --release --quiet --example ui_bench
target=${CARGO_TARGET_DIR:-target}/release
dir=target/ui-bench/${runs}x${records}
mkdir -p "$dir"
bench/machine
echo "inputs: $runs runs x $records decisions in the history, $requests requests per page"
if [ "$backend" = dynamodb ]; then
  if ! [ -f target/dynalite/node_modules/dynalite/cli.js ]; then
    mkdir -p target/dynalite
    npm install --no-save --no-audit --no-fund --prefix target/dynalite dynalite@4.0.0 >&2
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  node target/dynalite/node_modules/dynalite/cli.js --host 127.0.0.1 --port "$port" \
    --createTableMs 0 --deleteTableMs 0 --updateTableMs 0 >"$dir/dynalite.log" 2>&1 &
  dynalite=$!
  trap 'kill "$dynalite" 2>/dev/null || true' EXIT
  sleep 1
  echo "state: dynalite on port $port"
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true \
    "$target/examples/ui_bench" --runs "$runs" --records "$records" --requests "$requests" \
    --dir "$dir" --dynamodb "http://127.0.0.1:$port"
else
  "$target/examples/ui_bench" --runs "$runs" --records "$records" --requests "$requests" --dir "$dir"
fi
