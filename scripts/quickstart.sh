#!/usr/bin/env bash
# The README's quick start, checked the way a new user meets it: a
# toolchain without the wasm32-wasip2 target and no policy built yet,
# then `cargo run -- up --demo` and the curl line it prints. The build
# cache of everything else is reused. `.ci/run` runs this last.
#
#   scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

rustup target remove wasm32-wasip2 >/dev/null 2>&1 || true
rm -rf "${CARGO_TARGET_DIR:-target}/policy-build"
# The build script builds the policies again only when their sources
# change: make it.
touch policies/*/policy.json

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); ops=$(free_port); mock=$(free_port); admin=$(free_port); hub=$(free_port)
data=$(mktemp -d)
log=$data/up.log
cleanup() { [ -n "${pid:-}" ] && kill -- -"$pid" 2>/dev/null; rm -rf "$data"; }
trap cleanup EXIT

# Its own process group, so the cleanup stops cargo and the binary alike.
setsid cargo run -q -- up --demo --port "$port" --ops-port "$ops" --mock-port "$mock" \
  --admin-port "$admin" --hub-port "$hub" --data-dir "$data" >"$log" 2>&1 &
pid=$!

# A cold build of the policies and a relink: minutes, not seconds.
for _ in $(seq 1 1200); do
  grep -q '^ *curl ' "$log" && break
  kill -0 "$pid" 2>/dev/null || { echo "quick start: up --demo exited"; cat "$log"; exit 1; }
  sleep 1
done
line=$(grep -m1 '^ *curl ' "$log") || { echo "quick start: no curl line"; cat "$log"; exit 1; }
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$ops/readyz" >/dev/null && break
  sleep 0.2
done
out=$(cd "$data" && eval "${line} -s -i")
status=$(printf '%s' "$out" | head -1)
case "$status" in
  *" 200"*) ;;
  *) echo "quick start: the curl line answered: $out"; exit 1 ;;
esac
printf '%s' "$out" | grep -qi '^x-ratelimit-remaining-tokens:' \
  || { echo "quick start: no rate-limit header (the demo's policies): $out"; exit 1; }
# The web console, built by npm into the binary, at the URL `up` prints.
console=$(grep -m1 '^ *console ' "$log" | awk '{print $2}')
curl -fs "$console" | grep -q '<div id="root">' \
  || { echo "quick start: $console does not serve the built console (is npm installed?)"; exit 1; }
rustup target list --installed | grep -qx wasm32-wasip2 \
  || { echo "quick start: the build did not add the wasm target"; exit 1; }
echo "quick start: ok (${status%$'\r'}; wasm target added by the build; run from $root)"
