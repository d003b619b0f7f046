#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS each
# (default 60) from its committed corpus, and fails if any target crashed,
# panicked, hung or ran out of memory. docs/fuzzing.md says what each target
# feeds and how to reproduce a finding.
#
#   scripts/fuzz.sh                       # every target, 60 s each
#   FUZZ_SECONDS=20 scripts/fuzz.sh       # what CI runs
#   scripts/fuzz.sh sse eventstream       # some targets
#
# The toolchain is the pinned stable one: RUSTC_BOOTSTRAP=1 lets it take
# the sanitizer flags cargo-fuzz passes. New inputs a run finds go to a
# scratch directory, so the committed corpus changes only on purpose.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi

echo "== building ${#targets[@]} fuzz targets (AddressSanitizer, debug assertions)"
start=$SECONDS
# cargo-fuzz has no --locked: refuse a fuzz/Cargo.lock that would change.
cargo metadata --locked --format-version 1 >/dev/null
cargo fuzz build
echo "built in $((SECONDS - start)) s"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target" "corpus/$target"
  log="$scratch/$target.log"
  start=$SECONDS
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: a blow-up.
  if cargo fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$target")
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  echo "$target: $status, ${runs:-?} runs in $((SECONDS - start)) s"
  if [ "$status" = FAILED ]; then
    # The finding and how to reproduce it (cargo-fuzz prints the command).
    tail -n 60 "$log"
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found a crash in: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, no crash"
