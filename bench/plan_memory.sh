#!/usr/bin/env bash
# Peak RSS and wall time of `xaas plan` over a generated 1,000,000-row CSV (issue 5 targets:
# RSS < 256 MB, < 10 s). Usage: bench/plan_memory.sh [ROWS]   (default 1000000)
#
# Builds the release binary, generates the file once into target/bench/ (the seed's columns,
# unique ids, 10 % leavers), then runs `xaas plan` under GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
dir=target/bench
mkdir -p "$dir"
cargo build --release --locked --bin xaas >&2
csv="$dir/users-$rows.csv"
if ! [ -f "$csv" ]; then
  python3 - "$csv" "$rows" <<'PY'
import sys
path, rows = sys.argv[1], int(sys.argv[2])
with open(path, "w", newline="") as f:
    f.write("id,active,title,first_name,last_name,street_number,street_name,city,state,country,postcode,email,phone,cell,dob\r\n")
    for i in range(rows):
        active = "false" if i % 10 == 3 else "true"
        f.write(f"emp{i:07d}@example.com,{active},Ms,Ana{i%97},García,{1+i%9000},Calle del Arenal,Las Palmas,Andalucía,ES,{i%100000:05d},emp{i:07d}@example.com,973-{i%1000:03d}-{(i//1000)%1000:03d},630-{(i*7)%1000:03d}-000,1990-01-01\r\n")
PY
fi
cat > "$dir/xaas.yaml" <<YAML
okta:
  org_url: http://127.0.0.1:9
  auth:
    type: api_token
    token: unused-by-plan
jobs:
  - name: bench
    identity_source_id: 0oabench000000000000
    source:
      type: csv
      path: users-$rows.csv
    mapping: ../../mappings/seed-dynamodb.yaml
YAML
bench/machine
echo "xaas plan over $rows rows ($(du -h "$csv" | cut -f1)):" >&2
/usr/bin/time -f "peak_rss_kb=%M wall_s=%e" "${CARGO_TARGET_DIR:-target}/release/xaas" plan --config "$dir/xaas.yaml" \
  > "$dir/plan.txt" 2> "$dir/time.txt" || true
grep -E "read|would" "$dir/plan.txt" | head -3 >&2
tail -1 "$dir/time.txt" | awk -F'[ =]' '{printf "peak RSS: %.1f MB\nwall time: %s s\n", $2/1024, $4}'
