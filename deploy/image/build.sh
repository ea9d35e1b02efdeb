#!/usr/bin/env bash
# Builds Souq's own image, souq/souq:<version>, with no registry. One image serves every
# role: `souq control-plane | agent | edge | migrate` (the chart passes the role as args).
#
#   build.sh [--binary PATH] [--tag IMAGE] [--no-runtimes]
#
#   --binary PATH   the souq binary to put in (default: the release build,
#                   ${CARGO_TARGET_DIR:-<repo>/target}/release/souq); it is stripped.
#   --tag IMAGE     the image name (default souq/souq:<workspace version>).
#   --no-runtimes   leave out the runtime images bundle (a smaller image for the
#                   control plane and edge only; an agent then builds them on its node).
#
# Layers:
#   souq/image-base:<hash>  a Debian minbase root filesystem (debootstrap from the
#                           machine's apt mirror, then `docker import`) with CA
#                           certificates and tini; <hash> covers the recipe below.
#   souq/souq:<version>     that base + the binary + user 10001 + the runtime images
#                           (`docker save` of deploy/runtimes, built when missing) under
#                           /usr/share/souq/runtimes, which the agent loads into its
#                           node's Engine on start when they are missing.
# ENTRYPOINT is `tini -- souq`; USER is 10001:10001 (the agent's pod runs it as root for
# the Docker socket). Progress goes to stderr; stdout ends with the image name.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

BASE_SUITE=bookworm
BASE_PACKAGES=ca-certificates,tini
BASE_RECIPE_VERSION=2
UID_GID=10001
CACHE="${SOUQ_CACHE_DIR:-/var/cache/souq}/image"

say() { echo "==> [+${SECONDS}s] $*" >&2; }
die() { echo "deploy/image/build.sh: $*" >&2; exit 1; }
usage() { sed -n '4,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

binary="${CARGO_TARGET_DIR:-$ROOT/target}/release/souq"
tag=""
runtimes=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --binary) [[ $# -ge 2 ]] || usage; binary="$2"; shift 2 ;;
        --tag) [[ $# -ge 2 ]] || usage; tag="$2"; shift 2 ;;
        --no-runtimes) runtimes=0; shift ;;
        -h|--help) usage ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
done
if [[ -z "$tag" ]]; then
    version="$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/Cargo.toml" | head -1)"
    [[ -n "$version" ]] || die "no [workspace.package] version in $ROOT/Cargo.toml"
    tag="souq/souq:$version"
fi
[[ -x "$binary" ]] || die "no souq binary at $binary (cargo build --release --locked -p souq-cli, or pass --binary)"
command -v docker >/dev/null 2>&1 || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "Docker Engine not reachable (docker info failed)"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

base_tag() {
    printf 'suite=%s\nvariant=minbase\npackages=%s\nuid=%s\nrecipe=%s\n' \
        "$BASE_SUITE" "$BASE_PACKAGES" "$UID_GID" "$BASE_RECIPE_VERSION" |
        { printf 'souq/image-base:'; sha256sum | cut -c1-12; }
}

# The mirror this machine's apt uses, else deb.debian.org (as deploy/runtimes/build.sh).
apt_mirror() {
    local uri=""
    [[ -r /etc/apt/sources.list.d/debian.sources ]] && uri="$(awk '/^URIs:/ { for (i = 2; i <= NF; i++)
        if ($i !~ /security/) { print $i; exit } }' /etc/apt/sources.list.d/debian.sources)"
    [[ -z "$uri" && -r /etc/apt/sources.list ]] && uri="$(awk '$1 == "deb" && !/security/ {
        for (i = 2; i <= NF; i++) if ($i ~ /^(https?|ftp|file):/) { print $i; exit } }' /etc/apt/sources.list)"
    echo "${uri:-http://deb.debian.org/debian}"
}

WORK=""
ROOTFS=""
cleanup() {
    if [[ -n "$ROOTFS" && -d "$ROOTFS" ]]; then
        awk -v d="$ROOTFS" 'index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r |
            while read -r m; do umount -l "$m" || true; done
        rm -rf --one-file-system "$ROOTFS"
    fi
    [[ -n "$WORK" ]] && rm -rf "$WORK"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_base() {
    local base="$1" mirror
    [[ "$(id -u)" == 0 ]] || die "building $base needs root (debootstrap)"
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found (apt-get install debootstrap)"
    mirror="$(apt_mirror)"
    ROOTFS="$(mktemp -d /var/tmp/souq-image-base.XXXXXX)"
    say "debootstrap $BASE_SUITE (minbase, $BASE_PACKAGES) from $mirror"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$BASE_SUITE" "$ROOTFS" "$mirror" 2>&1 |
        grep -E '^(E|W): |Base system installed' >&2 || true
    [[ -x "$ROOTFS/usr/bin/tini" ]] || die "debootstrap did not install tini"
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/debootstrap \
        "$ROOTFS"/usr/share/{doc,man,info,locale}/* "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/log/*.log
    # The non-root user every role but the agent runs as, and its data dir.
    echo "souq:x:$UID_GID:$UID_GID:Souq:/var/lib/souq:/usr/sbin/nologin" >>"$ROOTFS/etc/passwd"
    echo "souq:x:$UID_GID:" >>"$ROOTFS/etc/group"
    install -d -o "$UID_GID" -g "$UID_GID" -m 0750 "$ROOTFS/var/lib/souq"
    say "docker import -> $base"
    tar -C "$ROOTFS" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' - "$base" >/dev/null
    cleanup
    ROOTFS=""
}

# One build at a time per machine.
exec 9>"${TMPDIR:-/tmp}/souq-image-build.lock"
flock 9

BASE="$(base_tag)"
if image_exists "$BASE"; then say "$BASE present"; else build_base "$BASE"; fi

WORK="$(mktemp -d /var/tmp/souq-image.XXXXXX)"
mkdir -p "$WORK/runtimes"
cp "$binary" "$WORK/souq"
chmod 0755 "$WORK/souq"
if command -v strip >/dev/null 2>&1; then strip --strip-debug "$WORK/souq"; fi
say "binary: $binary ($(du -h "$WORK/souq" | cut -f1) stripped)"

if [[ "$runtimes" == 1 ]]; then
    # The runtime images the binary's embedded deploy/runtimes sources name (same tree).
    tags="$(bash "$ROOT/deploy/runtimes/build.sh")"
    images="$(cut -d= -f2 <<<"$tags" | tr '\n' ' ')"
    bundle="$CACHE/runtimes-$(sha256sum <<<"$tags" | cut -c1-12).tar"
    if [[ ! -s "$bundle" ]]; then
        mkdir -p "$CACHE"
        say "docker save $images-> $bundle"
        # shellcheck disable=SC2086
        docker save -o "$bundle.part" $images
        mv "$bundle.part" "$bundle"
    else
        say "runtime bundle $bundle cached"
    fi
    chmod 0644 "$bundle"
    ln "$bundle" "$WORK/runtimes/images.tar" 2>/dev/null || cp "$bundle" "$WORK/runtimes/images.tar"
    printf '%s\n' "$tags" >"$WORK/runtimes/tags"
fi

cat >"$WORK/Dockerfile" <<DOCKERFILE
ARG BASE
FROM \${BASE}
COPY runtimes/ /usr/share/souq/runtimes/
COPY souq /usr/local/bin/souq
USER $UID_GID:$UID_GID
WORKDIR /var/lib/souq
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/souq"]
CMD ["--help"]
DOCKERFILE

say "docker build $tag"
DOCKER_BUILDKIT=0 docker build --pull=false --force-rm -q --build-arg "BASE=$BASE" \
    --label "souq.version=${tag##*:}" --label "souq.runtimes=$runtimes" -t "$tag" "$WORK" 2>&1 >/dev/null | sed -e "/^DEPRECATED: The legacy builder/,/^ *$/d" >&2
size="$(docker image inspect -f '{{.Size}}' "$tag")"
say "$tag: $((size / 1000000)) MB ($(docker run --rm "$tag" --version 2>/dev/null || echo "souq --version failed"))"
echo "$tag"
