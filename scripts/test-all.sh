#!/usr/bin/env bash
# Runs every vmkit check: formatting, clippy (warnings denied), all tests, and the docs.
# Sets up what a fresh machine lacks first (toolchain components, the test kernel). KVM tests run when /dev/kvm works; with
# VMKIT_REQUIRE_KVM=1 (as CI sets) an unusable /dev/kvm fails them instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

# Toolchain components (no-ops when present).
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi

# Debian packages the tests use: SeaBIOS (the firmware QEMU boots; the chipset test boots it),
# QEMU's option ROMs (linuxboot_dma.bin, with which SeaBIOS boots -kernel) and gdb (the
# gdbstub tests drive it).
need_packages=()
[[ -f /usr/share/seabios/bios.bin ]] || need_packages+=(seabios)
[[ -f /usr/share/qemu/linuxboot_dma.bin ]] || need_packages+=(qemu-system-data)
command -v gdb >/dev/null || need_packages+=(gdb)
if ((${#need_packages[@]})); then
    echo "== apt-get install ${need_packages[*]}"
    as_root=()
    [[ "$(id -u)" == 0 ]] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "${need_packages[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# The real Linux kernel the Linux boot test boots (Debian's cloud kernel, cached outside the
# tree; nothing is downloaded once it is there). VMKIT_TEST_KERNEL set by the caller wins.
echo "== scripts/fetch-kernel.sh"
if [[ -z "${VMKIT_TEST_KERNEL:-}" ]]; then
    if kernel="$(./scripts/fetch-kernel.sh)"; then
        export VMKIT_TEST_KERNEL="$kernel"
    elif [[ "${VMKIT_REQUIRE_KVM:-0}" == 1 ]]; then
        echo "scripts/fetch-kernel.sh failed: the real-kernel boot test needs its kernel" >&2
        exit 1
    else
        echo "warning: no test kernel: the real-kernel boot test will be skipped" >&2
    fi
fi
echo "VMKIT_TEST_KERNEL=${VMKIT_TEST_KERNEL:-}"

echo "== cargo test --workspace"
cargo test --workspace

echo "== cargo doc --workspace --no-deps (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

echo "== all checks passed"
