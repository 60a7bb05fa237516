#!/bin/sh
# Run every fuzz target for SECONDS (default 600) each, all at once, and print libFuzzer's
# final figures (executions, coverage) per target. Crashes land in fuzz/artifacts/<target>/.
# Usage: bench/fuzz.sh [SECONDS]
set -eu
cd "$(dirname "$0")/../fuzz"
seconds=${1:-600}
# Its own build directory: fuzz builds use other flags than the main crate's.
export CARGO_TARGET_DIR=${XAAS_FUZZ_TARGET_DIR:-$(pwd)/target}
RUSTC_BOOTSTRAP=1 cargo fuzz build -O
bin=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release
../bench/machine
echo "inputs: $seconds s per target, the four targets in parallel"
pids=""
for t in csv mapping webhook config; do
  mkdir -p "corpus/$t" "artifacts/$t"
  "$bin/$t" "corpus/$t" "seeds/$t" -max_total_time="$seconds" -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"artifacts/$t.log" 2>&1 &
  pids="$pids $!"
done
status=0
for p in $pids; do wait "$p" || status=1; done
for t in csv mapping webhook config; do
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "artifacts/$t.log")
  cov=$(grep -o 'cov: [0-9]*' "artifacts/$t.log" | tail -1)
  crashes=$(find "artifacts/$t" -type f | wc -l)
  echo "$t: $runs executions in $seconds s, $cov, $crashes crash file(s)"
done
exit $status
