#!/usr/bin/env bash
# Gateway overhead benchmark: the same load sent straight to the mock LLM
# and through the gateway, streamed and not, at concurrency 1, 8 and 64;
# then through a proxy carrying the demo's policy chain (token-rate-limit
# + pii-masking). Prints two markdown tables (paste them into
# docs/benchmarks.md).
#
#   scripts/bench.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
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

echo "| mode | concurrency | direct req/s | gateway req/s | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 ms | added p99 ms | added TTFB p50 ms |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for mode in "" "--stream"; do
  for c in 1 8 64; do
    d=$(run "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" $c "$mode")
    g=$(run "http://127.0.0.1:$GW_PORT/bench/chat/completions" $c "$mode")
    name=${mode:+stream}; name=${name:-non-stream}
    python3 - "$name" "$c" "$d" "$g" <<'PY'
import json, sys
name, c, d, g = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
r = lambda x: f"{x:.3f}"
print(f"| {name} | {c} | {d['rps']:.0f} | {g['rps']:.0f} | {r(d['p50_ms'])} / {r(d['p99_ms'])} | {r(g['p50_ms'])} / {r(g['p99_ms'])} "
      f"| {r(g['p50_ms'] - d['p50_ms'])} | {r(g['p99_ms'] - d['p99_ms'])} | {r(g['ttfb_p50_ms'] - d['ttfb_p50_ms'])} |")
PY
  done
done

echo
echo "| mode | concurrency | no policies req/s | 2 policies req/s | no policies p50 / p99 ms | 2 policies p50 / p99 ms | policies add p50 ms | policies add p99 ms |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for mode in "" "--stream"; do
  for c in 1 8 64; do
    g=$(run "http://127.0.0.1:$GW_PORT/bench/chat/completions" $c "$mode")
    p=$(run "http://127.0.0.1:$GW_PORT/policies/chat/completions" $c "$mode")
    name=${mode:+stream}; name=${name:-non-stream}
    python3 - "$name" "$c" "$g" "$p" <<'PY'
import json, sys
name, c, g, p = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
r = lambda x: f"{x:.3f}"
print(f"| {name} | {c} | {g['rps']:.0f} | {p['rps']:.0f} | {r(g['p50_ms'])} / {r(g['p99_ms'])} | {r(p['p50_ms'])} / {r(p['p99_ms'])} "
      f"| {r(p['p50_ms'] - g['p50_ms'])} | {r(p['p99_ms'] - g['p99_ms'])} |")
PY
  done
done
