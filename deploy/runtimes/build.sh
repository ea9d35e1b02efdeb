#!/usr/bin/env bash
# Builds the Souq sandbox runtime images without any container registry.
#
#   build.sh               build whatever is missing, then print the tags
#   build.sh --print-tags  only print the tags (no docker needed, nothing built)
#
# Output of both modes ends with exactly these three lines (the agent parses them):
#   python=souq/runtime-python:<hash>
#   node=souq/runtime-node:<hash>
#   go=souq/runtime-go:<hash>
# Progress goes to stderr, so stdout carries only those lines.
#
# Base image souq/base:<hash>: a Debian rootfs made with debootstrap from the
# machine's apt mirror, then `docker import`. <hash> covers the recipe below, so
# changing the package list rebuilds it. Runtime images souq/runtime-<rt>:<hash>
# are `docker build`s of ./<rt>/ on that base; <hash> covers the base tag and
# every file in ./<rt>/. Each image is built only when its tag is missing.
# Only paths relative to this script are used, so the directory may be copied.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUNTIMES=(python node go)

BASE_SUITE=bookworm
BASE_VARIANT=minbase
BASE_PACKAGES=python3,nodejs,golang-go,ca-certificates
BASE_RECIPE_VERSION=1

sha12() { sha256sum | cut -c1-12; }

base_tag() {
    printf 'suite=%s\nvariant=%s\npackages=%s\nrecipe=%s\n' \
        "$BASE_SUITE" "$BASE_VARIANT" "$BASE_PACKAGES" "$BASE_RECIPE_VERSION" |
        { printf 'souq/base:'; sha12; }
}

# Hash of the base tag plus every file of ./<rt>/ (name and contents), in sorted order.
runtime_tag() {
    local rt="$1" base="$2" f
    local dir="$SCRIPT_DIR/$rt"
    [[ -d "$dir" ]] || { echo "build.sh: missing directory $dir" >&2; exit 1; }
    {
        printf 'base=%s\n' "$base"
        while IFS= read -r -d '' f; do
            printf 'file=%s size=%s\n' "$f" "$(wc -c <"$dir/$f")"
            cat "$dir/$f"
        done < <(cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z)
    } | { printf 'souq/runtime-%s:' "$rt"; sha12; }
}

print_tags() {
    local base rt
    base="$(base_tag)"
    for rt in "${RUNTIMES[@]}"; do
        printf '%s=%s\n' "$rt" "$(runtime_tag "$rt" "$base")"
    done
}

if [[ "${1:-}" == "--print-tags" ]]; then
    print_tags
    exit 0
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--print-tags]" >&2
    exit 2
fi

say() { echo "==> [+${SECONDS}s] $*" >&2; }
die() { echo "build.sh: $*" >&2; exit 1; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# The mirror already configured for this machine's apt, else deb.debian.org.
apt_mirror() {
    local uri=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        uri="$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
            /etc/apt/sources.list.d/debian.sources)"
    fi
    if [[ -z "$uri" && -r /etc/apt/sources.list ]]; then
        uri="$(awk '$1 == "deb" && !/security/ {
                for (i = 2; i <= NF; i++) if ($i ~ /^(https?|ftp|file):/) { print $i; exit } }' \
            /etc/apt/sources.list)"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

# Keeps debootstrap readable: per-package lines become a counter every 25 packages.
debootstrap_filter() {
    awk '
        function flush() { if (n) printf "   %s: %d packages\n", phase, n; n = 0; phase = "" }
        /^I: Validating / { next }
        # "I: Retrieving <pkg> <version>", "I: Extracting|Unpacking|Configuring <pkg>..."
        /^I: Retrieving [^ ]+ [^ ]+$/ || /^I: (Extracting|Unpacking|Configuring) [^ ]+\.\.\.$/ {
            if ($2 != phase) { flush(); phase = $2 }
            if (++n % 25 == 0) printf "   %s: %d packages...\n", phase, n
            fflush(); next
        }
        { flush(); print "   " $0; fflush() }
        END { flush() }
    '
}

ROOTFS=""
cleanup() {
    if [[ -n "$ROOTFS" && -d "$ROOTFS" ]]; then
        # debootstrap mounts proc/sys inside the target; never rm through a mount.
        awk -v d="$ROOTFS" 'index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r |
            while read -r m; do umount -l "$m" || true; done
        rm -rf --one-file-system "$ROOTFS"
    fi
}

build_base() {
    local tag="$1" mirror started
    [[ "$(id -u)" == 0 ]] || die "building $tag needs root (debootstrap); run as root"
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends debootstrap >&2
    fi
    mirror="$(apt_mirror)"
    ROOTFS="$(mktemp -d /var/tmp/souq-base.XXXXXX)"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    say "debootstrap $BASE_SUITE ($BASE_VARIANT, $BASE_PACKAGES) from $mirror into $ROOTFS"
    started=$SECONDS
    debootstrap --variant="$BASE_VARIANT" --include="$BASE_PACKAGES" \
        "$BASE_SUITE" "$ROOTFS" "$mirror" 2>&1 | debootstrap_filter >&2
    say "debootstrap done in $((SECONDS - started)) s; trimming caches"
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/debootstrap
    say "docker import -> $tag"
    tar -C "$ROOTFS" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        - "$tag" >/dev/null
    cleanup
    ROOTFS=""
}

build_runtime() {
    local rt="$1" base="$2" tag="$3"
    say "docker build $tag (from $base)"
    DOCKER_BUILDKIT=0 docker build --pull=false --force-rm \
        --build-arg "BASE=$base" \
        --label "souq.runtime=$rt" --label "souq.base=$base" \
        -t "$tag" "$SCRIPT_DIR/$rt" 2>&1 |
        sed -u -e '/^DEPRECATED: The legacy builder/,/^ *$/d' -e 's/^/   /' >&2
}

command -v docker >/dev/null 2>&1 || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "Docker Engine not reachable (docker info failed)"

# One build at a time per machine; a second caller waits, then finds the tags present.
LOCK=/var/lock/souq-runtimes-build.lock
[[ -w /var/lock ]] || LOCK="/tmp/souq-runtimes-build.$(id -u).lock"
exec 9>"$LOCK"
flock 9

BASE="$(base_tag)"
if image_exists "$BASE"; then
    say "$BASE present"
else
    build_base "$BASE"
fi
for rt in "${RUNTIMES[@]}"; do
    tag="$(runtime_tag "$rt" "$BASE")"
    if image_exists "$tag"; then
        say "$tag present"
    else
        build_runtime "$rt" "$BASE" "$tag"
        image_exists "$tag" || die "docker build of $tag did not produce the image"
    fi
done
print_tags
