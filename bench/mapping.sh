#!/bin/sh
# Mapping throughput on one core: records/s for an example mapping (default: the seed's
# DynamoDB mapping), release build, pinned to CPU 0 when taskset exists.
# Usage: bench/mapping.sh [MAPPING] [RECORDS]
set -eu
cd "$(dirname "$0")/.."
cargo build --release --quiet --example mapping_bench
bin=${CARGO_TARGET_DIR:-target}/release/examples/mapping_bench
bench/machine
echo "inputs: mapping ${1:-mappings/seed-dynamodb.yaml}, ${2:-2000000} records${3:+ $3}, one core"
if command -v taskset >/dev/null 2>&1; then
  exec taskset -c 0 "$bin" "$@"
fi
exec "$bin" "$@"
