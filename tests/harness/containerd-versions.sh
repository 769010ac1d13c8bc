#!/usr/bin/env bash
# Other containerd releases for the end-to-end tests, fetched from Debian without touching the
# system's apt setup or installing anything: containerd 1.7 from trixie and 2.x from sid (both
# run on bookworm; their runc does not, so bookworm's runc serves every version).
#
#   containerd-versions.sh fetch DIR   download and unpack into DIR (reused when present);
#                                      prints one line per release: VERSION BINDIR
#
# BINDIR holds that release's `containerd` and `ctr`; tests/harness/containerd.sh takes them as
# CONTAINERD=BINDIR/containerd CTR=BINDIR/ctr. SUITES overrides the Debian suites ("trixie sid").
set -euo pipefail

log() { printf 'containerd-versions.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The mirror the system already uses (deb822 or one-line format), so a machine with a local
# mirror keeps using it.
mirror() {
    local uri
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [[ -z $uri ]]; then
        uri=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

# apt-get or apt-cache with a private sources list, lists and cache under DIR/apt.
private_apt() {
    local dir=$1 tool=$2; shift 2
    "$tool" -qq \
        -o Dir::Etc::sourcelist="$dir/apt/sources.list" \
        -o Dir::Etc::sourceparts=/dev/null \
        -o Dir::State::Lists="$dir/apt/lists" \
        -o Dir::Cache="$dir/apt/cache" \
        -o Debug::NoLocking=1 -o APT::Sandbox::User=root \
        "$@"
}

cmd_fetch() {
    (($# == 1)) || die "usage: $0 fetch DIR"
    local dir suites suite deb version bindir
    dir=$(realpath -m -- "$1")
    suites=${SUITES:-trixie sid}
    mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial"
    : >"$dir/apt/sources.list"
    for suite in $suites; do
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(mirror) $suite main" \
            >>"$dir/apt/sources.list"
    done
    private_apt "$dir" apt-get update </dev/null >&2 || die "apt-get update of $suites from $(mirror) failed"
    for suite in $suites; do
        version=$(private_apt "$dir" apt-cache show "containerd/$suite" 2>/dev/null \
            | awk '/^Version:/ {print $2; exit}') || true
        [[ -n $version ]] || die "no containerd package in Debian $suite"
        bindir=$dir/$version/usr/bin
        if [[ ! -x $bindir/containerd || ! -x $bindir/ctr ]]; then
            log "downloading containerd $version from $suite"
            rm -rf "$dir/debs" "$dir/$version.tmp" && mkdir -p "$dir/debs"
            (cd "$dir/debs" && private_apt "$dir" apt-get download "containerd=$version" </dev/null >&2) \
                || die "apt-get download containerd=$version failed"
            deb=$(find "$dir/debs" -name 'containerd_*.deb' | head -n1)
            [[ -n $deb ]] || die "apt-get download left no containerd .deb in $dir/debs"
            dpkg-deb -x "$deb" "$dir/$version.tmp"
            mv -T "$dir/$version.tmp" "$dir/$version"
        fi
        "$bindir/containerd" --version >/dev/null || die "$bindir/containerd does not run here"
        echo "$version $bindir"
    done
}

case ${1:-} in
    fetch) shift; cmd_fetch "$@" ;;
    *) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
