#!/usr/bin/env bash
# Gateway overhead benchmark: the same load sent straight to the mock LLM
# and through the gateway, streamed and not, at concurrency 1, 8 and 64;
# then through a proxy carrying the demo's policy chain (token-rate-limit
# + pii-masking). Prints two markdown tables (paste them into
# docs/benchmarks.md).
#
# Then the same comparison in an open loop: 64 connections sending a
# fixed number of requests per second that both the mock and the gateway
# sustain, so the added latency is the gateway's cost rather than queueing
# for the two shared cores.
#
#   scripts/bench.sh [seconds-per-run] [tables]
#
# tables: any of `overhead policies open` (default: all three).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
TABLES=${2:-overhead policies open}
want() { [[ " $TABLES " == *" $1 "* ]]; }
cargo build --release -q -p portcullis
cargo build-policies -q
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=$TARGET/release/portcullis

DIR=$(mktemp -d)
MOCK_PORT=18099; GW_PORT=18080; OPS_PORT=18081
cleanup() { kill "$MOCK" "$GW" 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT

"$BIN" mock-llm --port $MOCK_PORT 2>/dev/null & MOCK=$!
for p in token-rate-limit pii-masking; do
  mkdir -p "$DIR/policies/$p"
  cp "$TARGET/wasm32-wasip2/release/portcullis_policy_${p//-/_}.wasm" "$DIR/policies/$p/policy.wasm"
  cp "policies/$p/policy.json" "$DIR/policies/$p/manifest.json"
done
cat > "$DIR/gw.yaml" <<YAML
listen: 127.0.0.1:$GW_PORT
ops_listen: 127.0.0.1:$OPS_PORT
policy_engine: { dirs: ["$DIR/policies"] }
providers:
  - { name: mock, type: openai, base_url: "http://127.0.0.1:$MOCK_PORT/v1", api_key: sk-mock, models: [gpt-5-mini] }
proxies:
  - { name: bench, routes: [{ provider: mock }], keys: [{ name: bench, env: BENCH_KEY }] }
  - name: policies
    routes: [{ provider: mock }]
    keys: [{ name: bench, env: BENCH_KEY }]
    policies:
      - { name: token-rate-limit, settings: { limits: [{ metric: total_tokens, limit: 1000000000000, window: minute }] } }
      - { name: pii-masking }
YAML
BENCH_KEY=bench-key "$BIN" gateway --config "$DIR/gw.yaml" 2>/dev/null & GW=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$OPS_PORT/readyz" >/dev/null && break; sleep 0.1; done

run() { "$BIN" bench --url "$1" --concurrency "$2" --seconds "$SECS" $3; }
MOCK_URL="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
GW_URL="http://127.0.0.1:$GW_PORT/bench/chat/completions"
POLICIES_URL="http://127.0.0.1:$GW_PORT/policies/chat/completions"

# One table row comparing two runs (JSON lines from `portcullis bench`):
#   row MODE LOAD BASE OTHER [target-rate]
row() {
  python3 - "$@" <<'PY'
import json, sys
mode, load, a, b = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
r = lambda x: f"{x:.3f}"
target = [f"{int(sys.argv[5]):,}"] if len(sys.argv) > 5 else []
cells = [mode, load, *target, f"{a['rps']:,.0f}", f"{b['rps']:,.0f}",
         f"{r(a['p50_ms'])} / {r(a['p99_ms'])}", f"{r(b['p50_ms'])} / {r(b['p99_ms'])}",
         r(b['p50_ms'] - a['p50_ms']), r(b['p99_ms'] - a['p99_ms']),
         r(b['ttfb_p50_ms'] - a['ttfb_p50_ms'])]
print("| " + " | ".join(cells) + " |")
PY
}
name() { local n=${1:+stream}; echo "${n:-non-stream}"; }

# A closed-loop table: BASE_URL vs OTHER_URL, streamed and not, at
# concurrency 1, 8 and 64.
closed_table() {
  echo "| mode | concurrency | $3 req/s | $4 req/s | $3 p50 / p99 ms | $4 p50 / p99 ms | added p50 ms | added p99 ms | added TTFB p50 ms |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for mode in "" "--stream"; do
    for c in 1 8 64; do
      row "$(name "$mode")" "$c" "$(run "$1" $c "$mode")" "$(run "$2" $c "$mode")"
    done
  done
  echo
}
if want overhead; then closed_table "$MOCK_URL" "$GW_URL" direct gateway; fi
if want policies; then closed_table "$GW_URL" "$POLICIES_URL" "no policies" "2 policies"; fi

if want open; then
  echo "| mode | connections | target req/s | direct req/s | gateway req/s | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 ms | added p99 ms | added TTFB p50 ms |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for spec in ":1000" ":2000" ":4000" "--stream:100" "--stream:400"; do
    mode=${spec%%:*}; rate=${spec##*:}
    row "$(name "$mode")" 64 "$(run "$MOCK_URL" 64 "$mode --rate $rate")" "$(run "$GW_URL" 64 "$mode --rate $rate")" "$rate"
  done
fi
