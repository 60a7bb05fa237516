#!/bin/sh
# The monitoring pages with a large history: 100 runs × 100,000 per-record decisions in the
# SQLite state (about 0.9 GB, seeded once into target/ui-bench/ and reused), then the jobs
# page, a run page, an externalId search, a deep page and a filtered page, each fetched
# N times over HTTP. Prints p50/p99 of the server time (Server-Timing) and of the client.
# Usage: bench/ui.sh [RUNS] [RECORDS] [REQUESTS]     (default 100 100000 200)
set -eu
cd "$(dirname "$0")/.."
runs=${1:-100}
records=${2:-100000}
requests=${3:-200}
cargo build --release --quiet --example ui_bench
target=${CARGO_TARGET_DIR:-target}/release
dir=target/ui-bench/${runs}x${records}
mkdir -p "$dir"
bench/machine
echo "inputs: $runs runs x $records decisions in the history, $requests requests per page"
"$target/examples/ui_bench" --runs "$runs" --records "$records" --requests "$requests" --dir "$dir"
