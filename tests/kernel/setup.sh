#!/usr/bin/env bash
# Prepares what the kernel test tier (tests/kernel.rs) needs: QEMU,
# busybox, dmsetup, lvm2 and depmod from Debian (installed when run as
# root), and Debian's own kernel image package, downloaded and unpacked
# (never installed) into the cache folder the tier reads:
#   ${DMPD_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dmpd-kernel}
# Safe to run again: it does only what is missing. Exits 0 even when it
# cannot get everything; the tier then prints what is missing and skips.
set -uo pipefail

cache="${DMPD_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dmpd-kernel}"
updated=0
apt_update() {
    if [ "$updated" = 0 ]; then
        apt-get update -qq >/dev/null 2>&1 || true
        updated=1
    fi
}

# Commands the tier uses, and the Debian package that brings each.
need=()
for pair in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static \
    dmsetup:dmsetup depmod:kmod lvm:lvm2; do
    cmd="${pair%%:*}"
    pkg="${pair#*:}"
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/sbin/$cmd" ]; then
        need+=("$pkg")
    fi
done
# busybox must be the static build: the guest has no libc of its own for it.
if command -v busybox >/dev/null 2>&1 && ! busybox 2>&1 | head -1 | grep -q .; then
    need+=(busybox-static)
fi
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt_update
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${need[@]}" >/dev/null 2>&1 ||
            echo "kernel tier setup: could not install ${need[*]}" >&2
    else
        echo "kernel tier setup: not root, cannot install ${need[*]}" >&2
    fi
fi

# The kernel uncompressed, as an ELF file QEMU boots through its PVH entry
# point: under TCG that saves the guest's own xz decompression, about
# half of a boot.
unpack_vmlinux() {
    local z="$1/boot/vmlinuz-$2" off
    off="$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$z" | head -1 | cut -d: -f1)"
    # (tail ends on SIGPIPE when xz stops after the stream: judge the result)
    [ -n "$off" ] && tail -c +$((off + 1)) "$z" | xz -dc --single-stream \
        >"$1/boot/vmlinux-$2.tmp" 2>/dev/null
    if [ "$(head -c 4 "$1/boot/vmlinux-$2.tmp" | od -An -c | tr -d ' ')" = '177ELF' ]; then
        mv "$1/boot/vmlinux-$2.tmp" "$1/boot/vmlinux-$2"
    else
        rm -f "$1/boot/vmlinux-$2.tmp"
    fi
}

if [ -f "$cache/READY" ]; then
    v="$(cat "$cache/READY")"
    [ -f "$cache/boot/vmlinux-$v" ] || unpack_vmlinux "$cache" "$v"
    exit 0
fi
command -v dpkg-deb >/dev/null 2>&1 || { echo "kernel tier setup: no dpkg-deb" >&2; exit 0; }
apt_update
# The image package linux-image-amd64 depends on (6.1.0-NN-amd64 in bookworm).
pkg="$(apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -1)"
if [ -z "$pkg" ]; then
    echo "kernel tier setup: apt-cache names no image package for linux-image-amd64" >&2
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download -qq "$pkg" >/dev/null 2>&1); then
    echo "kernel tier setup: apt-get download $pkg failed" >&2
    exit 0
fi
mkdir -p "$work/root"
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/root" || exit 0
version="${pkg#linux-image-}"
if [ ! -f "$work/root/lib/modules/$version/modules.dep" ]; then
    depmod -b "$work/root" "$version" 2>/dev/null ||
        /usr/sbin/depmod -b "$work/root" "$version" || exit 0
fi
unpack_vmlinux "$work/root" "$version"
rm -rf "$cache"
mkdir -p "$(dirname "$cache")"
mv "$work/root" "$cache"
echo "$version" >"$cache/READY"
echo "kernel tier setup: $pkg unpacked into $cache"
