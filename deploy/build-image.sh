#!/usr/bin/env bash
# Build the Baton container image FROM scratch (see deploy/Dockerfile).
#
#   deploy/build-image.sh [TAG]          default tag: baton:local
#
# Environment:
#   BATON_SKIP_BUILD=1    use the existing target/x86_64-unknown-linux-gnu/release/baton
#
# Needs: cargo, a container engine (docker), and /bin/busybox from Debian's
# busybox-static (installed with apt-get when missing and we are root).
set -euo pipefail

tag=${1:-baton:local}
repo=$(cd "$(dirname "$0")/.." && pwd)
target=x86_64-unknown-linux-gnu
binary=$repo/target/$target/release/baton

say() { printf '== build-image: %s\n' "$*"; }
die() { printf 'build-image: error: %s\n' "$*" >&2; exit 1; }
# True for a statically linked executable (ldd says "statically linked" for static-pie
# and "not a dynamic executable" for plain static); without ldd, assume it is.
is_static() {
    command -v ldd >/dev/null 2>&1 || return 0
    local out
    out=$(ldd "$1" 2>&1 || true)
    [[ $out == *"statically linked"* || $out == *"not a dynamic executable"* ]]
}

# A static shell for role commands.
busybox=/bin/busybox
if [[ ! -x $busybox ]] || ! is_static "$busybox"; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        say "installing busybox-static"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
    fi
fi
[[ -x $busybox ]] || die "$busybox is missing: apt-get install busybox-static"
if ! is_static "$busybox"; then
    die "$busybox is dynamically linked; install Debian's busybox-static (it replaces busybox)"
fi

if [[ ${BATON_SKIP_BUILD:-0} != 1 ]]; then
    say "building the static binary (release; the first build takes minutes)"
    start=$SECONDS
    (cd "$repo" && RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release --locked -p baton --target "$target")
    say "binary built in $((SECONDS - start)) s"
fi
[[ -x $binary ]] || die "$binary is missing (build it, or unset BATON_SKIP_BUILD)"
if ! is_static "$binary"; then
    die "$binary is dynamically linked; build it with RUSTFLAGS='-C target-feature=+crt-static'"
fi

# A build context with just the files the image needs.
ctx=$(mktemp -d "${TMPDIR:-/tmp}/baton-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root/usr/local/bin" "$root/bin" "$root/etc" "$root/tmp" "$ctx/data" "$ctx/tls"
chmod 1777 "$root/tmp"
cp "$binary" "$root/usr/local/bin/baton"
if command -v strip >/dev/null; then strip "$root/usr/local/bin/baton"; fi
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/:/bin/sh\nbaton:x:10001:10001:baton:/data:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nbaton:x:10001:\n' >"$root/etc/group"
cp "$repo/deploy/Dockerfile" "$ctx/Dockerfile"

say "building image $tag (context $(du -sh "$ctx" | cut -f1))"
if ! docker build -q -t "$tag" "$ctx" >"$ctx.log" 2>&1; then
    cat "$ctx.log" >&2
    rm -f "$ctx.log"
    die "docker build failed"
fi
rm -f "$ctx.log"
say "image $tag: $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.1f MB", $1/1e6}')"
