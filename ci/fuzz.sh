#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) with cargo-fuzz (libFuzzer) for
# SECONDS_PER_TARGET seconds each (default 180), starting from the committed
# seeds (fuzz/seeds/<target>/) plus the corpus earlier runs grew on this
# machine. Prints executions and corpus size per target; any crash, panic or
# hang (an input running longer than 10 s) fails the run, and the input that
# did it is printed (hex) and kept under fuzz/artifacts/<target>/.
#
#   [FUZZ_BUILD=dev] [FUZZ_SEED=N] ci/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# FUZZ_SEED fixes libFuzzer's random seed. CI sets it so that a run is
# repeatable (same seeds, same mutations; only how far a slower machine gets
# in the time differs) and a finding lands as a committed seed and a fix, not
# as a dice roll on somebody else's commit; longer runs leave it unset to
# explore.
#
# Installs cargo-fuzz from crates.io on first use. Builds are cached outside
# the checkout (FUZZ_CACHE, default /var/cache/harvester-csi-fuzz), so CI on a
# fresh clone only rebuilds what changed. Stable Rust is enough: no sanitizer
# is asked for (the project has no unsafe code), so cargo-fuzz passes no -Z
# flag; debug assertions and overflow checks are on.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-180}
shift || true
cargo_fuzz_version=0.13.2
cache=${FUZZ_CACHE:-/var/cache/harvester-csi-fuzz}
mkdir -p "$cache"
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$cache/target}
export PATH="$cache/bin:$PATH"

if ! cargo fuzz --version 2>/dev/null | grep -qF "$cargo_fuzz_version"; then
  echo "== installing cargo-fuzz $cargo_fuzz_version into $cache/bin"
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked --root "$cache" >/dev/null
fi

# Same flags for build and run, or `run` rebuilds. FUZZ_BUILD=dev builds
# without optimisation: fewer executions per second, but a build in a few
# minutes instead of a quarter of an hour on 2 cores; CI's brief runs use it.
case ${FUZZ_BUILD:-release} in
  release) flags=(--sanitizer none --debug-assertions --codegen-units 16) ;;
  dev) flags=(--sanitizer none --dev) ;;
  *) echo "FUZZ_BUILD must be release or dev, not ${FUZZ_BUILD}" >&2; exit 2 ;;
esac
seed_flag=()
if [ -n "${FUZZ_SEED:-}" ]; then
  [[ $FUZZ_SEED =~ ^[0-9]+$ ]] || { echo "FUZZ_SEED must be a number, not ${FUZZ_SEED}" >&2; exit 2; }
  seed_flag=(-seed="$FUZZ_SEED")
fi
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

echo "== building ${#targets[@]} fuzz targets"
(cd fuzz && cargo fuzz build "${flags[@]}")

declare -a rows=()
passed=0
failed=0
for t in "${targets[@]}"; do
  corpus="$cache/corpus/$t"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  log="$cache/$t.log"
  echo "== $t: ${seconds}s"
  started=$(date +%s)
  set +e
  (cd fuzz && cargo fuzz run "${flags[@]}" "$t" "$corpus" "seeds/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
    -print_final_stats=1 "${seed_flag[@]}") >"$log" 2>&1
  rc=$?
  set -e
  took=$(( $(date +%s) - started ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  units=$(find "$corpus" -type f | wc -l)
  if [ $rc -eq 0 ]; then
    passed=$((passed + 1))
    rows+=("$(printf '%-16s %6ss %12s execs %6s corpus  ok' "$t" "$took" "${execs:-?}" "$units")")
  else
    failed=$((failed + 1))
    rows+=("$(printf '%-16s %6ss %12s execs %6s corpus  FAILED' "$t" "$took" "${execs:-?}" "$units")")
    echo "-- $t failed (exit $rc); what panicked:"
    grep -a -A4 "panicked at" "$log" | head -40 || true
    echo "-- the end of its log:"
    grep -a -v '^ *at \|^ *[0-9]*: ' "$log" | tail -30
    for a in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
      [ -f "fuzz/$a" ] && a="fuzz/$a"
      echo "-- input $a:"
      od -A d -c "$a" | head -40
    done
  fi
done

echo "== fuzzing summary (${seconds}s per target)"
printf '%s\n' "${rows[@]}"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
