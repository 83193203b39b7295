#!/usr/bin/env bash
# Builds vmkit's libFuzzer targets (fuzz/) with the STABLE toolchain and runs each one for
# SECONDS (default 60), one at a time, then prints a table: target, executions, coverage
# (libFuzzer's cov / ft), crashes. Exits nonzero if any target crashed; crash inputs stay in
# fuzz/artifacts/<target>/. See fuzz/README.md for why this does not use `cargo fuzz`.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#   FUZZ_BUILD_ONLY=1 scripts/fuzz.sh   # build only
set -euo pipefail

SECONDS_PER_TARGET="${1:-60}"
shift || true
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FUZZ="$ROOT/fuzz"
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"

# libfuzzer-sys compiles libFuzzer's C++ sources: it needs a C++ compiler.
if ! command -v c++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
    echo "fuzz.sh: no C++ compiler; installing g++" >&2
    if command -v sudo >/dev/null 2>&1 && [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq g++
fi

# What cargo-fuzz passes, minus the sanitizer (-Zsanitizer needs nightly): LLVM's
# SanitizerCoverage pass with libFuzzer's counters, PC table and comparison tracing, and
# the checks of a debug build. An explicit --target keeps these flags off build scripts
# and proc macros.
export RUSTFLAGS="${RUSTFLAGS:-} -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks --cfg fuzzing"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

cd "$FUZZ"
cargo build --release --target "$TRIPLE" --bins
BIN="$FUZZ/target/$TRIPLE/release"
[ "${FUZZ_BUILD_ONLY:-0}" = 1 ] && exit 0

if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(ls "$FUZZ/fuzz_targets" | sed -n 's/\.rs$//p' | sort)
fi

LOGS="$FUZZ/logs"
mkdir -p "$LOGS"
ROWS=()
FAILED=0
for t in "${TARGETS[@]}"; do
    seeds="$FUZZ/corpus/$t"
    work="$FUZZ/work/$t" # the evolving corpus (not checked in); seeds are read too
    mkdir -p "$seeds" "$work" "$FUZZ/artifacts/$t"
    log="$LOGS/$t.log"
    # A migration stream holds 4 KiB pages and vCPU sections of ~7 KiB: a real one needs room.
    max_len=4096
    case "$t" in migration_stream) max_len=32768 ;; esac
    echo "== $t: ${SECONDS_PER_TARGET}s" >&2
    set +e
    "$BIN/$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -max_len="$max_len" -print_final_stats=1 \
        -artifact_prefix="$FUZZ/artifacts/$t/" "$work" "$seeds" >"$log" 2>&1
    rc=$?
    set -e
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    last="$(grep -E '^#[0-9]+' "$log" | tail -1 || true)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
    crashes="$(grep -cE '^(==[0-9]+== ERROR: libFuzzer|SUMMARY: libFuzzer)' "$log" || true)"
    if [ "$rc" -ne 0 ] && [ "$crashes" = 0 ]; then crashes=1; fi
    if [ "$crashes" != 0 ]; then
        FAILED=1
        grep -E -A1 'panicked|Test unit written' "$log" >&2 || true
    fi
    ROWS+=("$(printf '%-20s %12s %8s %8s %8s' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$crashes")")
done

printf '\n%-20s %12s %8s %8s %8s\n' target executions cov ft crashes
printf '%s\n' "${ROWS[@]}"
exit "$FAILED"
