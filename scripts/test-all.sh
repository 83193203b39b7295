#!/usr/bin/env bash
# Runs every vmkit check: formatting, clippy (warnings denied), all tests, and the docs.
# Sets up what a fresh machine lacks first. KVM tests run when /dev/kvm works; with
# VMKIT_REQUIRE_KVM=1 (as CI sets) an unusable /dev/kvm fails them instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

# Toolchain components (no-ops when present).
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test --workspace"
cargo test --workspace

echo "== cargo doc --workspace --no-deps (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

echo "== all checks passed"
