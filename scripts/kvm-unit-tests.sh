#!/usr/bin/env bash
# Runs kvm-unit-tests x86 binaries under QEMU and under vmkit the same way, and prints a
# side-by-side table of outcomes (exit status, SUMMARY line, time).
#
#   scripts/kvm-unit-tests.sh [DIR] [TEST...]
#
# DIR holds the .flat binaries built from kvm-unit-tests (default: $KVM_UNIT_TESTS_DIR; one
# of the two is required); TEST names restrict the
# run (default: every .flat in DIR). Both VMMs get kvm-unit-tests' own command line:
#   -kernel X.flat -device pc-testdev -device isa-debug-exit,iobase=0xf4,iosize=0x4
#   -serial stdio -smp 2 -m 256
# Exit status convention (isa-debug-exit): 1 = PASS, 3 = FAIL, 77 = SKIP; 124 = timed out.
# Environment: TIMEOUT (seconds per run, default 90), QEMU (default qemu-system-x86_64),
# VMKIT (default target/release/vmkit, built if missing), LOGDIR (default target/kut).
set -u
cd "$(dirname "$0")/.."
dir=${1:-${KVM_UNIT_TESTS_DIR:-}}
if [[ -z "$dir" || ! -d "$dir" ]]; then
    echo "usage: scripts/kvm-unit-tests.sh DIR [TEST...] (DIR: kvm-unit-tests x86 .flat binaries, or set KVM_UNIT_TESTS_DIR)" >&2
    exit 2
fi
shift || true
timeout=${TIMEOUT:-90}
qemu=${QEMU:-qemu-system-x86_64}
vmkit=${VMKIT:-target/release/vmkit}
logdir=${LOGDIR:-target/kut}
mkdir -p "$logdir"
if [ ! -x "$vmkit" ]; then
    cargo build --release -p vmkit-vmm --bin vmkit >&2 || exit 1
fi
if [ $# -gt 0 ]; then
    tests=("$@")
else
    tests=()
    for f in "$dir"/*.flat; do tests+=("$(basename "$f" .flat)"); done
fi

common=(-device pc-testdev -device isa-debug-exit,iobase=0xf4,iosize=0x4 -serial stdio -smp 2 -m 256)

outcome() {
    case $1 in
        1) echo PASS ;;
        3) echo FAIL ;;
        77) echo SKIP ;;
        124) echo TIMEOUT ;;
        *) echo "exit $1" ;;
    esac
}

# run NAME VMM-LABEL COMMAND...: prints "outcome|summary|seconds"
run() {
    local name=$1 label=$2
    shift 2
    local log="$logdir/$name.$label.log" err="$logdir/$name.$label.err"
    local start end status summary result
    start=$(date +%s.%N)
    timeout "$timeout" "$@" >"$log" 2>"$err" </dev/null
    status=$?
    end=$(date +%s.%N)
    summary=$(grep -a '^SUMMARY:' "$log" | tail -1 | sed 's/^SUMMARY: //')
    result=$(outcome $status)
    # Both VMMs also exit 1 on their own errors: an error message (not a warning) on
    # stderr means the test never ran.
    if [ "$status" = 1 ] && grep -v -i 'warning' "$err" | grep -q .; then
        result="ERROR: $(grep -v -i warning "$err" | head -1 | cut -c1-80)"
    fi
    printf '%s|%s|%.1f\n' "$result" "${summary:--}" "$(echo "$end - $start" | bc)"
}

printf '| test | QEMU | QEMU SUMMARY | s | vmkit | vmkit SUMMARY | s |\n|---|---|---|---:|---|---|---:|\n'
for t in "${tests[@]}"; do
    flat="$dir/$t.flat"
    extra=()
    case $t in
        vmexit) extra=(-append "inl_from_qemu inl_from_pmtimer ipi") ;;
    esac
    q=$(run "$t" qemu "$qemu" -nodefaults -display none -machine accel=kvm -kernel "$flat" "${common[@]}" "${extra[@]}")
    v=$(run "$t" vmkit "$vmkit" -kernel "$flat" "${common[@]}" "${extra[@]}")
    IFS='|' read -r qo qs qt <<<"$q"
    IFS='|' read -r vo vs vt <<<"$v"
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$qo" "$qs" "$qt" "$vo" "$vs" "$vt"
done
echo
echo "Logs: $logdir/<test>.<qemu|vmkit>.log"
