#!/usr/bin/env bash
# Two gateway builds alternated through scripts/bench-chain.sh in one
# sitting, ROUNDS times: this machine drifts by 20-40% over an hour, so
# builds are only compared run against run (docs/benchmarks.md).
#
#   A_TREE=/path/to/old/checkout A_BIN=/path/to/old/portcullis \
#   A_WASM=/path/to/old/wasm32-wasip2/release scripts/bench-compare.sh
#
# A_TREE is a checkout of the older commit (its scripts and the policies'
# manifests, which an older gateway may not accept from a newer tree);
# B defaults to this tree's release build. The mock and the load
# generator are A_BIN for both, so only the gateway differs.
# ROUNDS (default 3), SECS, CONC, PROXIES are passed on.
set -euo pipefail
cd "$(dirname "$0")/.."
B_TREE=${B_TREE:-$PWD}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
B_BIN=${B_BIN:-$TARGET/release/portcullis}
B_WASM=${B_WASM:-$TARGET/wasm32-wasip2/release}
: "${A_TREE:?a checkout of the build to compare with}" "${A_BIN:?its gateway binary}" "${A_WASM:?its policy components}"
run() { # label tree gateway wasm
  echo "### $1"
  (cd "$2" && BIN=$A_BIN GWBIN=$3 WASM=$4 SECS=${SECS:-5} CONC="${CONC:-1 16 64}" \
    PROXIES="${PROXIES:-bench four}" scripts/bench-chain.sh 2>&1 | grep -E "c=[0-9]+ ")
}
for r in $(seq "${ROUNDS:-3}"); do
  run "A round $r" "$A_TREE" "$A_BIN" "$A_WASM"
  run "B round $r" "$B_TREE" "$B_BIN" "$B_WASM"
done
