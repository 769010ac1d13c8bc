#!/usr/bin/env bash
# A private containerd for the demo and the end-to-end tests.
#
#   containerd.sh install                 containerd, ctr, runc, libseccomp-dev and protoc from apt, if missing
#   containerd.sh start DIR SHIM_BINARY   run a containerd whose every path is under DIR
#   containerd.sh stop DIR                kill its tasks, itself, its shims; unmount what is left
#   containerd.sh ctr DIR ARGS...         ctr against that containerd
#
# Environment: CONTAINERD and CTR override the binaries (e.g. a containerd 1.7 unpacked
# elsewhere); CONTAINERD_LOG_LEVEL (default info; "debug" also makes containerd pass -debug to
# shims); CONTAINERD_START_TIMEOUT in seconds (default 10).
#
# Needs root. Never touches the system containerd: every process and mount it acts on is
# recognised by DIR in its command line or mount point.
set -euo pipefail

readonly SHIM_NAME=containerd-shim-wasm-v1
readonly RUNTIME_TYPE=io.containerd.wasm.v1
# The shipped snippet, found relative to this script so it works from any cwd.
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
readonly REPO_ROOT
readonly SNIPPET="$REPO_ROOT/config/containerd/wasm-runtime-v2.toml"
readonly SNIPPET_V3="$REPO_ROOT/config/containerd/wasm-runtime-v3.toml"
CONTAINERD=${CONTAINERD:-containerd}
CTR=${CTR:-ctr}

log() { printf 'containerd.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# Absolute path without requiring it to exist: DIR appears verbatim in command lines and mount
# points, so every comparison below needs one canonical spelling.
abspath() { realpath -m -- "$1"; }

# Zombies count as dead: PID 1 here reaps slowly and `kill -0` succeeds on a zombie.
alive() {
    local pid=$1 state
    [[ -r /proc/$pid/stat ]] || return 1
    state=$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# PIDs of live processes whose argv contains the given arguments, consecutively.
pids_with_args() {
    local needle pid f argv
    needle=$'\n'$(printf '%s\n' "$@")$'\n'
    for f in /proc/[0-9]*/cmdline; do
        pid=${f#/proc/}; pid=${pid%/cmdline}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        # One argument per line; an unreadable file just means the process is gone.
        argv=$'\n'$(tr '\0' '\n' 2>/dev/null <"$f")$'\n' || continue
        if [[ $argv == *"$needle"* ]] && alive "$pid"; then
            echo "$pid"
        fi
    done
}

containerd_pids() { pids_with_args --config "$1/config.toml"; }
shim_pids() { pids_with_args -address "$1/containerd.sock"; }

# A buggy shim can make any task call hang; a teardown must still finish.
ctr_t() {
    local secs=$1 dir=$2; shift 2
    timeout --kill-after=2 "$secs" "$CTR" --address "$dir/containerd.sock" "$@"
}

answers() { ctr_t 3 "$1" version >/dev/null 2>&1; }

cmd_install() {
    local missing=()
    command -v containerd >/dev/null || missing+=(containerd)
    command -v ctr >/dev/null || missing+=(containerd)
    command -v runc >/dev/null || missing+=(runc)
    # libseccomp's headers and static archive: the shim applies the spec's seccomp profile.
    [[ -e /usr/include/seccomp.h ]] || missing+=(libseccomp-dev)
    # The shim is linked static (build.rs): the C library's static archive.
    [[ $(cc -print-file-name=libc.a 2>/dev/null) == /* ]] || missing+=(libc6-dev)
    # nsenter (util-linux) is in the base system; pkg-config finds libseccomp for the build.
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    # protoc: the CRI tests' client (the k8s-cri crate) compiles Kubernetes' CRI protos.
    command -v protoc >/dev/null || missing+=(protobuf-compiler)
    # Images as users make them (tests/registry.rs): a real registry (distribution 2.8),
    # skopeo to push an OCI layout to it, buildah to build config/Dockerfile.
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    command -v skopeo >/dev/null || missing+=(skopeo)
    command -v buildah >/dev/null || missing+=(buildah)
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || die "must run as root to install ${missing[*]}"
    log "installing ${missing[*]} from apt"
    apt-get update -qq </dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
    local bin
    for bin in containerd ctr runc; do
        command -v "$bin" >/dev/null || die "apt-get install finished but $bin is still missing"
    done
    log "installed: $(containerd --version)"
}

# The major version of $CONTAINERD: 1 (config version 2) or 2 (config version 3).
containerd_major() {
    local v
    # "containerd github.com/containerd/containerd[/v2] 2.1.9+unknown ..."
    v=$("$CONTAINERD" --version | awk '{print $3}') || die "$CONTAINERD --version failed"
    [[ $v =~ ^([0-9]+)\. ]] || die "cannot read a version from \`$CONTAINERD --version\`: $v"
    echo "${BASH_REMATCH[1]}"
}

write_config() {
    local dir=$1 major
    major=$(containerd_major)
    case $major in
        1) write_config_v2 "$dir" ;;
        2) write_config_v3 "$dir" ;;
        *) die "containerd $major.x: only 1.x and 2.x are known" ;;
    esac
}

# containerd 1.6 and 1.7.
write_config_v2() {
    local dir=$1
    # containerd 1.6/1.7 `imports` replace a whole plugin section instead of merging it
    # (measured on 1.6.20: importing the snippet drops every other CRI setting, including the runc
    # handler and restrict_oom_score_adj). So the shipped snippet's tables are inlined here,
    # byte for byte, minus its `version` line: what is tested is exactly what users paste.
    cat >"$dir/config.toml" <<EOF
# Generated by tests/harness/containerd.sh; rewritten at every start.
version = 2
root = "$dir/root"
state = "$dir/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$dir/containerd.sock"

[ttrpc]
  address = "$dir/containerd.sock.ttrpc"

[debug]
  level = "${CONTAINERD_LOG_LEVEL:-info}"

[plugins."io.containerd.internal.v1.opt"]
  # containerd puts <path>/bin first on the PATH it gives shims: that is where the shim under
  # test is linked, so it wins over any installed copy.
  path = "$dir/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.6"
  # Root here lacks CAP_SYS_RESOURCE: without this every CRI sandbox fails to start.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    # Empty on purpose: pods must use host networking.
    conf_dir = "$dir/cni/net.d"
    bin_dir = "$dir/cni/bin"

# ---- from $SNIPPET ----
EOF
    sed -E '/^[[:space:]]*version[[:space:]]*=/d' "$SNIPPET" >>"$dir/config.toml"
}

# containerd 2.x: the shipped v3 snippet is imported, as its header tells users to do (2.x
# merges imported plugin sections key by key; check_config proves nothing was lost).
write_config_v3() {
    local dir=$1
    cat >"$dir/config.toml" <<EOF
# Generated by tests/harness/containerd.sh; rewritten at every start.
version = 3
root = '$dir/root'
state = '$dir/state'
oom_score = 0
disabled_plugins = ['io.containerd.snapshotter.v1.devmapper']
imports = ['$SNIPPET_V3']

[grpc]
  address = '$dir/containerd.sock'

[ttrpc]
  address = '$dir/containerd.sock.ttrpc'

[debug]
  level = '${CONTAINERD_LOG_LEVEL:-info}'

[plugins.'io.containerd.internal.v1.opt']
  # containerd puts <path>/bin first on the PATH it gives shims: that is where the shim under
  # test is linked, so it wins over any installed copy.
  path = '$dir/opt'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = 'registry.k8s.io/pause:3.6'

[plugins.'io.containerd.cri.v1.runtime']
  # Root here lacks CAP_SYS_RESOURCE: without this every CRI sandbox fails to start.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    # Empty on purpose: pods must use host networking.
    conf_dir = '$dir/cni/net.d'
    bin_dirs = ['$dir/cni/bin']

# 2.x turns NRI on by default with a socket in the system's /var/run/nri, and reads image
# verifiers from /opt/containerd: neither may touch the host outside DIR.
[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.image-verifier.v1.bindir']
  bin_dir = '$dir/image-verifier/bin'
EOF
}

check_config() {
    local dir=$1 dump
    dump=$("$CONTAINERD" --config "$dir/config.toml" config dump 2>&1) \
        || die "containerd rejects $dir/config.toml: $dump"
    # 1.x dumps strings in double quotes, 2.x in single quotes.
    grep -qE "runtime_type = [\"']$RUNTIME_TYPE[\"']" <<<"$dump" \
        || die "the wasm runtime from the snippet is missing from containerd's effective config"
    grep -qE "runtime_type = [\"']io.containerd.runc.v2[\"']" <<<"$dump" \
        || die "the runc runtime got lost from containerd's effective config"
    grep -qF 'restrict_oom_score_adj = true' <<<"$dump" \
        || die "restrict_oom_score_adj got lost from containerd's effective config"
}

cmd_start() {
    (($# == 2)) || usage
    local dir shim pid i tries
    dir=$(abspath "$1")
    shim=$(abspath "$2")
    [[ -f $shim && -x $shim ]] || die "shim binary $shim is not an executable file"
    [[ -f $SNIPPET && -f $SNIPPET_V3 ]] || die "missing $SNIPPET or $SNIPPET_V3"
    command -v "$CONTAINERD" >/dev/null || die "$CONTAINERD not found (run: $0 install)"

    mkdir -p "$dir"/{root,state,opt/bin,cni/net.d,cni/bin,image-verifier/bin}
    # A symlink, so a rebuilt shim is picked up without restarting containerd.
    ln -sfn "$shim" "$dir/opt/bin/$SHIM_NAME"

    pid=$(containerd_pids "$dir" | head -n1)
    if [[ -n $pid ]]; then
        if answers "$dir"; then
            log "containerd already running from $dir (pid $pid)"
            echo "$pid" >"$dir/containerd.pid"
            return 0
        fi
        die "containerd pid $pid runs from $dir but does not answer; run: $0 stop $dir"
    fi

    write_config "$dir"
    check_config "$dir"
    rm -f "$dir/containerd.sock" "$dir/containerd.sock.ttrpc"

    # setsid: containerd and its shims must not get the caller's SIGINT/SIGHUP (e.g. ^C on make).
    # Its stdio goes to the log so it never holds the caller's pipes open.
    {
        echo "==== $(date -Is) start: $CONTAINERD --config $dir/config.toml"
    } >>"$dir/containerd.log"
    setsid "$CONTAINERD" --config "$dir/config.toml" </dev/null >>"$dir/containerd.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/containerd.pid"

    tries=$((${CONTAINERD_START_TIMEOUT:-10} * 10))
    for ((i = 0; i < tries; i++)); do
        if [[ -S $dir/containerd.sock ]] && answers "$dir"; then
            log "containerd $("$CONTAINERD" --version | awk '{print $3}') running from $dir (pid $pid)"
            return 0
        fi
        alive "$pid" || break
        sleep 0.1
    done
    log "containerd did not answer on $dir/containerd.sock; last lines of $dir/containerd.log:"
    tail -n 30 "$dir/containerd.log" >&2 || true
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    exit 1
}

# Mount points (unescaped) at or below any of the given prefixes, deepest first.
mounts_under() {
    local p
    # Field 5 of mountinfo is the mount point with space, tab, newline and backslash octal-escaped.
    awk '{print $5}' /proc/self/mountinfo | while IFS= read -r p; do
        p=$(printf '%b' "$p")
        local prefix
        for prefix in "$@"; do
            if [[ $p == "$prefix" || $p == "$prefix"/* ]]; then
                printf '%s\n' "$p"
                break
            fi
        done
    done | awk '{print length($0) "\t" $0}' | sort -rn | cut -f2-
}

kill_all_tasks() {
    local dir=$1 ns id left i
    local -a namespaces tasks
    mapfile -t namespaces < <(ctr_t 5 "$dir" namespaces ls -q 2>/dev/null || true)
    for ns in "${namespaces[@]}"; do
        [[ -n $ns ]] || continue
        mapfile -t tasks < <(ctr_t 5 "$dir" -n "$ns" tasks ls -q 2>/dev/null || true)
        for id in "${tasks[@]}"; do
            [[ -n $id ]] || continue
            ctr_t 5 "$dir" -n "$ns" tasks kill --all --signal SIGKILL "$id" >/dev/null 2>&1 \
                || ctr_t 5 "$dir" -n "$ns" tasks kill --signal SIGKILL "$id" >/dev/null 2>&1 || true
        done
        for ((i = 0; i < 30; i++)); do
            left=$(ctr_t 5 "$dir" -n "$ns" tasks ls 2>/dev/null | awk 'NR > 1 && $3 != "STOPPED"' || true)
            [[ -z $left ]] && break
            sleep 0.1
        done
        for id in "${tasks[@]}"; do
            [[ -n $id ]] || continue
            ctr_t 10 "$dir" -n "$ns" tasks delete --force "$id" >/dev/null 2>&1 || true
        done
        while read -r id; do
            [[ -n $id ]] || continue
            # Also removes the container's snapshot: a stopped demo leaves no rootfs behind.
            ctr_t 10 "$dir" -n "$ns" containers delete "$id" >/dev/null 2>&1 || true
        done < <(ctr_t 5 "$dir" -n "$ns" containers ls -q 2>/dev/null || true)
    done
}

# Waits until none of the pids is alive; SIGKILLs them after $2 tenths of a second.
reap() {
    local tenths=$1 pid i any; shift
    for ((i = 0; i < tenths; i++)); do
        any=
        for pid in "$@"; do alive "$pid" && any=1; done
        [[ -z $any ]] && return 0
        sleep 0.1
    done
    for pid in "$@"; do if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi; done
    for ((i = 0; i < 30; i++)); do
        any=
        for pid in "$@"; do alive "$pid" && any=1; done
        [[ -z $any ]] && return 0
        sleep 0.1
    done
    return 1
}

cmd_stop() {
    (($# == 1)) || usage
    local dir pid bundle ns id rstate
    local -a pids bundles
    dir=$(abspath "$1")
    [[ -d $dir ]] || { log "nothing to stop: $dir does not exist"; return 0; }

    mapfile -t pids < <(containerd_pids "$dir")
    if ((${#pids[@]})) && answers "$dir"; then
        kill_all_tasks "$dir"
    fi

    if ((${#pids[@]})); then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        reap 50 "${pids[@]}" || log "warning: containerd ${pids[*]} survived SIGKILL"
    fi
    rm -f "$dir/containerd.pid" "$dir/containerd.sock" "$dir/containerd.sock.ttrpc"

    # Shims (and, under them, containers) outlive containerd. Ours carry our socket in argv.
    mapfile -t pids < <(shim_pids "$dir")
    if ((${#pids[@]})); then
        log "killing leftover shims: ${pids[*]}"
        kill -KILL "${pids[@]}" 2>/dev/null || true
        reap 30 "${pids[@]}" || log "warning: shims ${pids[*]} survived SIGKILL"
    fi

    # A runc container whose shim died is still alive; runc keeps its state in the hard-coded
    # /run/containerd/runc/<ns>/<id>, and the bundle dir under our state names ns and id.
    mapfile -t bundles < <(find "$dir/state/io.containerd.runtime.v2.task" -mindepth 2 -maxdepth 2 -type d 2>/dev/null || true)
    for bundle in "${bundles[@]}"; do
        id=${bundle##*/}; ns=${bundle%/*}; ns=${ns##*/}
        rstate=/run/containerd/runc/$ns/$id/state.json
        # Only if runc's record points at our bundle: the same ns/id could belong to another containerd.
        if [[ -f $rstate ]] && grep -qF "\"bundle=$bundle\"" "$rstate" && command -v runc >/dev/null; then
            log "deleting leftover runc container $ns/$id"
            runc --root "/run/containerd/runc/$ns" delete --force "$id" >/dev/null 2>&1 || true
        fi
    done

    # A SIGKILLed shim leaves its socket in the hard-coded /run/containerd/s; the bundle's
    # `address` file names the one that was ours.
    local addr
    for bundle in "${bundles[@]}"; do
        [[ -f $bundle/address ]] || continue
        addr=$(<"$bundle/address")
        addr=${addr#unix://}
        if [[ $addr == /run/containerd/s/* && -S $addr ]]; then
            rm -f "$addr"
        fi
    done

    local m
    # With a private state dir bundles (and their rootfs mounts) are under $dir/state; the
    # /run path is where a default-state containerd keeps them, matched only for our own ns/id.
    local -a prefixes=("$dir")
    for bundle in "${bundles[@]}"; do
        id=${bundle##*/}; ns=${bundle%/*}; ns=${ns##*/}
        prefixes+=("/run/containerd/io.containerd.runtime.v2.task/$ns/$id")
    done
    while IFS= read -r m; do
        [[ -n $m ]] || continue
        if ! umount "$m" 2>/dev/null; then
            log "lazy-unmounting busy $m"
            umount -l "$m" 2>/dev/null || log "warning: cannot unmount $m"
        fi
    done < <(mounts_under "${prefixes[@]}")

    # ctr's FIFOs live in the hard-coded /run/containerd/fifo/<random>/<id>-std*; remove the
    # directories of our containers only.
    local f d
    for bundle in "${bundles[@]}"; do
        id=${bundle##*/}
        for f in /run/containerd/fifo/*/"$id"-std{in,out,err}; do
            [[ -p $f ]] || continue
            d=${f%/*}
            rm -f "$f"
            rmdir "$d" 2>/dev/null || true
        done
    done

    # Fail loudly if anything survived: callers `rm -rf` DIR next, and a bind mount still in
    # place under it would let that delete host files.
    local -a leftovers
    mapfile -t leftovers < <(mounts_under "$dir"; containerd_pids "$dir"; shim_pids "$dir")
    if ((${#leftovers[@]})); then
        log "error: still mounted or running for $dir (do not delete it):"
        printf '  %s\n' "${leftovers[@]}" >&2
        exit 1
    fi
    log "stopped containerd of $dir"
}

main() {
    (($# >= 1)) || usage
    local cmd=$1; shift
    case $cmd in
        install) (($# == 0)) || usage; cmd_install ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        ctr)
            (($# >= 1)) || usage
            local dir
            dir=$(abspath "$1"); shift
            exec "$CTR" --address "$dir/containerd.sock" "$@"
            ;;
        -h | --help | help) usage ;;
        *) usage ;;
    esac
}

main "$@"
