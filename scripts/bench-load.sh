#!/usr/bin/env bash
# Loading many proxies: one gateway file with N proxies (default 1,000),
# each with a key, with and without the four built-ins (token-rate-limit,
# pii-masking, guardrails, cache). Prints, per variant, one JSON line:
# `--validate` time, start-to-ready time, resident memory idle and after
# one request to each proxy, and how the requests were answered.
#
#   scripts/bench-load.sh                 # builds --release first
#   N=200 scripts/bench-load.sh
#   BIN=target/release/portcullis scripts/bench-load.sh
#   PERF=1 scripts/bench-load.sh          # perf record the guarded --validate (/tmp/perf-load.data)
#   PAR=1 scripts/bench-load.sh           # the requests one at a time (default 16 in parallel)
#   COMPILED=off scripts/bench-load.sh    # no compiled-module store: the gateway compiles at start too
#   SMAPS=/tmp/smaps scripts/bench-load.sh # keep each variant's smaps and /metrics, idle and after the requests (where memory goes)
#
# By default compiled modules are kept in a fresh directory: `--validate`
# compiles (a first start) and the gateway started after it maps them
# (every later start).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p portcullis
  cargo build-policies -q
fi
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=${BIN:-$TARGET/release/portcullis}
WASM=${WASM:-$TARGET/wasm32-wasip2/release}
N=${N:-1000}
DIR=$(mktemp -d); MOCK_PORT=18299; GW_PORT=18280; OPS_PORT=18281
cleanup() { kill $MOCK ${GW:-} 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
COMPILED=$([ "${COMPILED:-}" = off ] || echo "$DIR/compiled")
"$BIN" mock-llm --port $MOCK_PORT 2>/dev/null & MOCK=$!
for p in token-rate-limit pii-masking guardrails cache; do
  mkdir -p "$DIR/policies/$p"
  cp "$WASM/portcullis_policy_${p//-/_}.wasm" "$DIR/policies/$p/policy.wasm"
  cp "policies/$p/policy.json" "$DIR/policies/$p/manifest.json"
done

write_config() { # $1: file, $2: with policies (1/0)
  {
    echo "listen: 127.0.0.1:$GW_PORT"
    echo "ops_listen: 127.0.0.1:$OPS_PORT"
    echo "policy_engine: { dirs: [\"$DIR/policies\"], compiled_dir: \"$COMPILED\" }"
    echo "providers:"
    echo "  - { name: mock, type: openai, base_url: \"http://127.0.0.1:$MOCK_PORT/v1\", api_key: sk-mock, models: [gpt-5-mini] }"
    echo "proxies:"
    for i in $(seq 1 "$N"); do
      echo "  - name: p$i"
      echo "    routes: [{ provider: mock }]"
      echo "    keys: [{ name: k$i, sha256: $(printf 'key-%s' "$i" | sha256sum | cut -d' ' -f1) }]"
      if [ "$2" = 1 ]; then
        echo "    policies:"
        echo "      - { name: token-rate-limit, settings: { limits: [{ metric: total_tokens, limit: 1000000000, window: minute }] } }"
        echo "      - { name: pii-masking }"
        echo "      - { name: guardrails }"
        echo "      - { name: cache }"
      fi
    done
  } > "$1"
}

rss_kb() { awk '/^VmRSS/ {print $2}' /proc/$1/status; }
now() { date +%s.%N; }
calc() { awk "BEGIN { print $1 }"; }

for variant in none four; do
  cfg="$DIR/$variant.yaml"
  write_config "$cfg" $([ $variant = four ] && echo 1 || echo 0)
  t0=$(now)
  if [ -n "${PERF:-}" ] && [ $variant = four ]; then
    perf record -F 999 -g -o /tmp/perf-load.data -- "$BIN" gateway --config "$cfg" --validate >/dev/null 2>&1
  else
    "$BIN" gateway --config "$cfg" --validate >/dev/null
  fi
  t1=$(now)
  "$BIN" gateway --config "$cfg" 2>"$DIR/gw.log" & GW=$!
  for _ in $(seq 6000); do curl -sf "http://127.0.0.1:$OPS_PORT/readyz" >/dev/null && break; sleep 0.005; done
  t2=$(now)
  sleep "${IDLE_WAIT:-1}"
  idle=$(rss_kb $GW)
  if [ -n "${SMAPS:-}" ]; then
    mkdir -p "$SMAPS"; cp /proc/$GW/smaps "$SMAPS/$variant-idle.smaps"
    curl -s "http://127.0.0.1:$OPS_PORT/metrics" > "$SMAPS/$variant-idle.metrics"
  fi
  for i in $(seq 1 "$N"); do
    [ "$i" = 1 ] || echo "next"
    echo "url = \"http://127.0.0.1:$GW_PORT/p$i/chat/completions\""
    echo "header = \"authorization: Bearer key-$i\""
    echo "header = \"content-type: application/json\""
    echo "data = \"{\\\"model\\\":\\\"gpt-5-mini\\\",\\\"messages\\\":[{\\\"role\\\":\\\"user\\\",\\\"content\\\":\\\"hello $i\\\"}]}\""
    echo "output = ${OUT:-/dev/null}"
    echo "write-out = \"%{http_code}\\\\n\""
  done > "$DIR/curl.cfg"
  codes=$(curl -s --no-progress-meter --parallel --parallel-max ${PAR:-16} -K "$DIR/curl.cfg" | sort | uniq -c | tr -s ' ' | tr '\n' ';')
  after=$(rss_kb $GW)
  if [ -n "${SMAPS:-}" ]; then
    cp /proc/$GW/smaps "$SMAPS/$variant-after.smaps"
    curl -s "http://127.0.0.1:$OPS_PORT/metrics" > "$SMAPS/$variant-after.metrics"
  fi
  kill $GW; wait $GW 2>/dev/null || true; GW=
  printf '{"variant":"%s","proxies":%s,"validate_s":%.3f,"ready_s":%.3f,"rss_idle_mb":%.1f,"rss_after_requests_mb":%.1f,"statuses":"%s"}\n' \
    $variant "$N" "$(calc "$t1 - $t0")" "$(calc "$t2 - $t1")" \
    "$(calc "$idle / 1024")" "$(calc "$after / 1024")" "$codes"
done
