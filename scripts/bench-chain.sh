#!/usr/bin/env bash
# The policy chain over HTTP: a proxy without policies beside one with the
# four built-ins (token-rate-limit, pii-masking, guardrails, cache), at
# concurrency 1, 16 and 64, every request different so the cache misses
# (`portcullis bench --unique`). Prints one JSON line per run, then the
# gateway's per-policy durations.
#
#   scripts/bench-chain.sh                    # builds --release first
#   SECS=10 CONC="16 64" scripts/bench-chain.sh
#   PERF=64 scripts/bench-chain.sh            # also `perf record` the gateway at 64 (/tmp/perf-PROXY-64.data)
#   PERF_CALL_GRAPH="--call-graph dwarf" ...  # unwind with DWARF (the release build has no frame pointers)
#   PORTCULLIS_WASM_PERFMAP=1 ...             # name policy (JIT) code in the profile
#   GWBIN=/path/to/other/portcullis ...       # another gateway build, same mock and load generator
#   PROXIES="bench limit four" ...            # also token-rate-limit alone (answers pass through unparsed)
#   PROXIES="bench limit pii guard cache four" # each built-in alone, then the four
#   ENGINE="max_instances: 16" ...       # extra policy_engine settings
#   WHOLE=1 ...                               # every policy treated as reading whole answers
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p portcullis
  cargo build-policies -q
fi
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=${BIN:-$TARGET/release/portcullis}
WASM=${WASM:-$TARGET/wasm32-wasip2/release}
SECS=${SECS:-5}
DIR=$(mktemp -d); MOCK_PORT=18199; GW_PORT=18180; OPS_PORT=18181
cleanup() { kill $MOCK $GW 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
"${MOCKBIN:-$BIN}" mock-llm --port $MOCK_PORT 2>/dev/null & MOCK=$!
for p in token-rate-limit pii-masking guardrails cache; do
  mkdir -p "$DIR/policies/$p"
  cp "$WASM/portcullis_policy_${p//-/_}.wasm" "$DIR/policies/$p/policy.wasm"
  cp "policies/$p/policy.json" "$DIR/policies/$p/manifest.json"
  # WHOLE=1: as if no policy declared `complete_reads: usage` (every answer parsed).
  if [ -n "${WHOLE:-}" ]; then sed -i '/"complete_reads"/d' "$DIR/policies/$p/manifest.json"; fi
done
cat > "$DIR/gw.yaml" <<YAML
listen: 127.0.0.1:$GW_PORT
ops_listen: 127.0.0.1:$OPS_PORT
policy_engine: { dirs: ["$DIR/policies"]${ENGINE:+, $ENGINE} }
providers:
  - { name: mock, type: openai, base_url: "http://127.0.0.1:$MOCK_PORT/v1", api_key: sk-mock, models: [gpt-5-mini] }
proxies:
  - { name: bench, routes: [{ provider: mock }], keys: [{ name: bench, env: BENCH_KEY }] }
  - name: limit
    routes: [{ provider: mock }]
    keys: [{ name: bench, env: BENCH_KEY }]
    policies:
      - { name: token-rate-limit, settings: { limits: [{ metric: total_tokens, limit: 1000000000000, window: minute }] } }
  - { name: pii, routes: [{ provider: mock }], keys: [{ name: bench, env: BENCH_KEY }], policies: [{ name: pii-masking }] }
  - { name: guard, routes: [{ provider: mock }], keys: [{ name: bench, env: BENCH_KEY }], policies: [{ name: guardrails }] }
  - { name: cache, routes: [{ provider: mock }], keys: [{ name: bench, env: BENCH_KEY }], policies: [{ name: cache }] }
  - name: four
    routes: [{ provider: mock }]
    keys: [{ name: bench, env: BENCH_KEY }]
    policies:
      - { name: token-rate-limit, settings: { limits: [{ metric: total_tokens, limit: 1000000000000, window: minute }] } }
      - { name: pii-masking }
      - { name: guardrails }
      - { name: cache }
YAML
BENCH_KEY=bench-key "${GWBIN:-$BIN}" gateway --config "$DIR/gw.yaml" 2>$DIR/gw.log & GW=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$OPS_PORT/readyz" >/dev/null && break; sleep 0.1; done
echo "gateway pid $GW"
TICKS=$(getconf CLK_TCK)
# utime + stime of the gateway process, in clock ticks.
gw_cpu_ticks() { awk '{print $14 + $15}' /proc/$GW/stat; }
# Requests the gateway answered, all proxies.
gw_requests() {
  curl -s http://127.0.0.1:$OPS_PORT/metrics \
    | awk '/^portcullis_requests_total\{/ {n += $NF} END {printf "%d\n", n}'
}
for proxy in ${PROXIES:-bench four}; do
  for c in ${CONC:-1 16 64}; do
    if [ -n "${PERF:-}" ] && [ "$c" = "$PERF" ]; then
      perf record -F 999 ${PERF_CALL_GRAPH:--g} -p $GW -o /tmp/perf-$proxy-$c.data -- sleep $((SECS)) >/dev/null 2>&1 & PERFPID=$!
    fi
    cpu0=$(gw_cpu_ticks); n0=$(gw_requests)
    out=$("$BIN" bench --url http://127.0.0.1:$GW_PORT/$proxy/chat/completions --key bench-key --concurrency $c --seconds $SECS --warmup 1 --unique)
    cpu1=$(gw_cpu_ticks); n1=$(gw_requests)
    # The gateway's own CPU time per request it answered (user + system,
    # warmup included), steadier than req/s on a machine the mock and the
    # load generator share.
    cpu_us=$(( (cpu1 - cpu0) * 1000000 / TICKS / (n1 - n0) ))
    echo "$proxy c=$c gateway_cpu_us_per_request=$cpu_us $out"
    if [ -n "${PERFPID:-}" ]; then wait $PERFPID || true; PERFPID=; fi
  done
done
curl -s http://127.0.0.1:$OPS_PORT/metrics | grep -E '^portcullis_policy_(duration_seconds_(sum|count)|instances_created_total)' | head -24
