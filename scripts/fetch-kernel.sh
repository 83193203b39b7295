#!/usr/bin/env bash
# Fetches a real Linux kernel for vmkit's Linux boot test without building one: Debian's
# linux-image-cloud-amd64 (a bzImage with the 8250 UART built in), downloaded with
# `apt-get download` and unpacked with `dpkg-deb -x` into a cache outside the source tree:
#
#   ${VMKIT_CACHE:-$HOME/.cache/vmkit}/kernels/<package>/boot/vmlinuz-<version>
#
# Prints that vmlinuz path on stdout (progress goes to stderr). Idempotent: a kernel already
# unpacked is reused without touching the network. VMKIT_KERNEL_REFRESH=1 resolves the
# metapackage again (and fetches a newer kernel if Debian has one).
set -euo pipefail

metapackage=linux-image-cloud-amd64
cache="${VMKIT_CACHE:-$HOME/.cache/vmkit}/kernels"
latest="$cache/latest"

log() { echo "fetch-kernel: $*" >&2; }

# A previous run recorded the vmlinuz it unpacked: reuse it.
if [[ "${VMKIT_KERNEL_REFRESH:-0}" != 1 && -f "$latest" ]]; then
    path="$(cat "$latest")"
    if [[ -f "$path" ]]; then
        echo "$path"
        exit 0
    fi
fi

for tool in apt-get apt-cache dpkg-deb; do
    if ! command -v "$tool" >/dev/null; then
        log "$tool not found: this script needs a Debian or Ubuntu host (or set VMKIT_TEST_KERNEL to a bzImage yourself)"
        exit 1
    fi
done

as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        log "cannot run '$*': not root and no sudo"
        return 1
    fi
}

# The metapackage depends on the versioned image package, e.g. linux-image-6.1.0-56-cloud-amd64.
resolve() {
    apt-cache depends "$metapackage" 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-.*-cloud-amd64$/ { print $2; exit }'
}
package="$(resolve || true)"
if [[ -z "$package" ]]; then
    log "package lists lack $metapackage: running apt-get update"
    as_root apt-get update >&2
    package="$(resolve || true)"
fi
if [[ -z "$package" ]]; then
    log "cannot resolve $metapackage to a versioned linux-image package (is this Debian?)"
    exit 1
fi

target="$cache/$package"
if [[ ! -f "$target/.complete" ]]; then
    mkdir -p "$cache"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    log "downloading $package"
    # apt-get download writes into the current directory. As root it would hand the
    # download to the unprivileged _apt user, who cannot write to a private temporary
    # directory: download as root outright instead.
    sandbox=()
    if [[ "$(id -u)" == 0 ]]; then
        sandbox=(-o APT::Sandbox::User=root)
    fi
    (cd "$work" && apt-get "${sandbox[@]}" download "$package" >&2)
    deb="$(find "$work" -maxdepth 1 -name '*.deb' | head -n 1)"
    if [[ -z "$deb" ]]; then
        log "apt-get download produced no .deb for $package"
        exit 1
    fi
    log "unpacking $(basename "$deb")"
    dpkg-deb -x "$deb" "$work/root"
    rm -rf "$target"
    mv "$work/root" "$target"
    touch "$target/.complete"
fi

vmlinuz="$(find "$target/boot" -maxdepth 1 -name 'vmlinuz-*' | sort | tail -n 1)"
if [[ -z "$vmlinuz" ]]; then
    log "$package has no boot/vmlinuz-*"
    exit 1
fi
echo "$vmlinuz" >"$latest"
echo "$vmlinuz"
