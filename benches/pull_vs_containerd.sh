#!/usr/bin/env bash
# The CRI daemon against Debian's containerd 1.6 (CRI plugin, overlayfs
# snapshotter), both driven over their CRI sockets by the same client
# (examples/cri_bench_client.rs), pulling the same images from the same
# loopback registry in one run (issue 5's Performance section; workloads of
# ../shared/bench/WORKLOADS.md). The script runs its own containerd with its
# own root, state, socket and generated config; a system containerd is never
# touched.
#
# What is measured, each tool in turn, A/B interleaved (the order flips every
# round):
#   1. PullImage of each --images workload from an EMPTY root: stop the
#      daemon, start it on a new root, wait until it answers ListImages, then
#      time the pull (as the client sees it). Only the daemon under test runs.
#      Also: its VmRSS after start (idle), its VmHWM after the pull (peak RSS
#      of the daemon over its life, i.e. during the pull), its CPU time over
#      the pull (utime + stime of the daemon and its reaped children, such as
#      containerd's unpigz, from /proc).
#   2. After each pull of `large` (of each --reclaim-images workload), once
#      the root's filesystem is synced (`sync -f`: the state in which the
#      kubelet removes an image pulled long before; --remove-before-writeback
#      skips it): RemoveImage, then the time from the call
#      until the bytes under the daemon's root (apparent size, polled every
#      5 ms by the client that made the call) have dropped by at least 90% of
#      what the pull added, or "not reclaimed" after --reclaim-timeout seconds.
#   3. With both daemons running, each with the --fleet tiny images pulled:
#      ImageStatus latency (p50/p90/p99 over --status-count calls) and
#      ListImages latency (--list-count calls), and each daemon's VmRSS once
#      idle after those pulls; ImageStatus p50 also over 300 calls 10 ms
#      apart. ImageStatus and Version p50 are also measured
#      through grpc-go (benches/grpc_go_client, the kubelet's gRPC stack,
#      built from Debian's golang-go and golang-google-grpc-dev). Two
#      diagnostic ImageStatus rows: client and daemon pinned to one CPU, and,
#      where the guest's haltpoll driver has polling off (this VM image boots
#      with guest_halt_poll_ns=0), with it at the kernel's default for the
#      duration of those calls only.
#   4. ListImages with --many-images distinct images (pushed straight through
#      the registry API by benches/push_synthetic_images.py, then pulled by 8
#      clients at once): ours always, containerd with --containerd-many-images;
#      through our client, and through grpc-go without decoding the answer.
# Then a summary table: each metric's median for both tools, the ratio
# ours/containerd, and the target of issue 5 beside it.
#
# Usage, from the repo root:
#   bash benches/pull_vs_containerd.sh [--rounds N] [--tmpfs] [--images large,many-files,tiny]
#                                      [--fleet N] [--many-images N] [--containerd-many-images]
#                                      [--status-count N] [--list-count N] [--reclaim-timeout S]
#                                      [--reclaim-images large] [--remove-before-writeback]
#                                      [--oci-dir DIR] [--results FILE] [--keep-logs DIR]
# Environment:
#   SHARED_DIR        where bench/make_images.py lives (default: REPO/../shared)
#   CARGO_TARGET_DIR  honoured by the build (cargo metadata tells where it is)
#   BENCH_TMPDIR      parent of the on-disk work directory (default: $TMPDIR or /tmp)
#
# --tmpfs puts both daemons' roots on /dev/shm (CPU comparison without the
# disk); without it they are on the disk, in the work directory.
# --fleet 0 skips phase 3 and --many-images 0 phase 4; --images '' skips 1-2.
# --oci-dir keeps the generated OCI layouts between runs (they are
# deterministic, so a layout that is present is pushed as it is, without
# rebuilding); without it they are built into the work directory and removed.
# --keep-logs DIR copies both daemons' logs there at the end.
# Must run as root (containerd's overlayfs snapshotter mounts).

set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared_dir=${SHARED_DIR:-$repo_root/../shared}
make_images=$shared_dir/bench/make_images.py
push_synthetic=$repo_root/benches/push_synthetic_images.py

rounds=5
use_tmpfs=0
images=large,many-files,tiny
fleet=200
many_images=10000
containerd_many_images=0
status_count=2000
paced_count=300
list_count=100
reclaim_timeout_s=30
reclaim_images=large
writeback_before_remove=1
oci_dir=
results_file=
keep_logs=

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --tmpfs) use_tmpfs=1; shift ;;
        --images) images=$2; shift 2 ;;
        --fleet) fleet=$2; shift 2 ;;
        --many-images) many_images=$2; shift 2 ;;
        --containerd-many-images) containerd_many_images=1; shift ;;
        --status-count) status_count=$2; shift 2 ;;
        --list-count) list_count=$2; shift 2 ;;
        --reclaim-timeout) reclaim_timeout_s=$2; shift 2 ;;
        --reclaim-images) reclaim_images=$2; shift 2 ;;
        --remove-before-writeback) writeback_before_remove=0; shift ;;
        --oci-dir) oci_dir=$2; shift 2 ;;
        --results) results_file=$2; shift 2 ;;
        --keep-logs) keep_logs=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
for value in "$rounds" "$status_count" "$list_count" "$reclaim_timeout_s"; do
    [[ $value =~ ^[1-9][0-9]*$ ]] || { echo "--rounds, --status-count, --list-count and --reclaim-timeout must be positive integers" >&2; exit 2; }
done
for value in "$fleet" "$many_images"; do
    [[ $value =~ ^[0-9]+$ ]] || { echo "--fleet and --many-images must be integers" >&2; exit 2; }
done
((fleet <= 200)) || { echo "--fleet is at most 200 (make_images.py's fleet)" >&2; exit 2; }
[[ -f $make_images ]] || { echo "no $make_images (set SHARED_DIR)" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "run as root: containerd's overlayfs snapshotter mounts" >&2; exit 2; }

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---------------------------------------------------------------------------
# (a) tools
# ---------------------------------------------------------------------------
registry_binary=${CRI_IMAGED_TEST_REGISTRY_BINARY:-/usr/bin/docker-registry}
missing=()
[[ -x $registry_binary ]] || missing+=(docker-registry)
command -v skopeo >/dev/null || missing+=(skopeo)
command -v python3 >/dev/null || missing+=(python3)
command -v containerd >/dev/null || missing+=(containerd)
# The grpc-go client (benches/grpc_go_client), built offline from Debian's packages.
command -v go >/dev/null || missing+=(golang-go)
[[ -d /usr/share/gocode/src/google.golang.org/grpc ]] || missing+=(golang-google-grpc-dev)
if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Installing containerd may register a system service; this script never
    # starts or stops it, and runs its own instance below.
    apt-get install -y -q "${missing[@]}" >&2 \
        || { apt-get update -q >&2 && apt-get install -y -q "${missing[@]}" >&2; }
fi
containerd_version=$(containerd --version | awk '{ print $3 }')
unpigz_note=$(command -v unpigz >/dev/null && echo "unpigz present: containerd decompresses with it" || echo "no unpigz: containerd decompresses in Go")
skopeo_policy=()
# skopeo refuses to run without a signature policy; a container-less machine may lack one.
[[ -f /etc/containers/policy.json || -f ${HOME:-/root}/.config/containers/policy.json ]] \
    || skopeo_policy=(--insecure-policy)
clock_ticks=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------
# work directories and cleanup
# ---------------------------------------------------------------------------
work_dir=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/pull-vs-containerd.XXXXXX")
store_base=$work_dir/stores
if [[ $use_tmpfs -eq 1 ]]; then
    [[ -d /dev/shm && -w /dev/shm ]] || { echo "/dev/shm is not writable" >&2; exit 2; }
    store_base=$(mktemp -d /dev/shm/pull-vs-containerd.XXXXXX)
fi
mkdir -p "$store_base" "$work_dir/logs"
registry_pid=
declare -A daemon_pid=([ours]="" [containerd]="")
declare -A daemon_root=([ours]=$store_base/ours-root [containerd]=$store_base/containerd-root)
declare -A daemon_socket=([ours]=$work_dir/ours.sock [containerd]=$work_dir/containerd.sock)
declare -A daemon_log=([ours]=$work_dir/logs/ours.log [containerd]=$work_dir/logs/containerd.log)
containerd_state=$work_dir/containerd-state

cleanup() {
    local status=$? tool
    if [[ -n ${halt_poll_saved:-} ]]; then echo "$halt_poll_saved" >"$halt_poll_knob" || true; fi
    for tool in ours containerd; do
        stop_daemon "$tool" || true
    done
    if [[ -n $registry_pid ]]; then
        kill "$registry_pid" 2>/dev/null || true
        wait "$registry_pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && $status -ne 130 && $status -ne 143 ]]; then
        for log_file in "$work_dir/registry/registry.log" "${daemon_log[ours]}" "${daemon_log[containerd]}"; do
            [[ -s $log_file ]] || continue
            echo "----- last lines of $(basename "$log_file") -----" >&2
            tail -n 15 "$log_file" >&2 || true
        done
    fi
    if [[ -n $keep_logs ]]; then
        { mkdir -p "$keep_logs" && cp "$work_dir"/logs/*.log "$keep_logs"/; } 2>/dev/null || true
    fi
    unmount_below "$store_base" || true
    [[ $store_base == "$work_dir"/* ]] || rm -rf "$store_base"
    rm -rf "$work_dir"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# unmount_below DIR: containerd unmounts its temporary mounts itself; this
# only guards the rm -rf of a root against one left by a crash.
unmount_below() {
    local mount_point
    while read -r mount_point; do
        umount -l "$mount_point" 2>/dev/null || true
    done < <(awk -v base="$1/" 'index($2, base) == 1 { print $2 }' /proc/self/mounts | sort -r)
}

# ---------------------------------------------------------------------------
# (b) the registry: anonymous, plain http, 127.0.0.1, a free port
# ---------------------------------------------------------------------------
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

registry_ready() { # host
    python3 - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(f"http://{sys.argv[1]}/v2/", timeout=1)
except urllib.error.HTTPError:
    pass  # any HTTP answer means a listener is serving
except Exception:
    sys.exit(1)
EOF
}

start_registry() {
    local directory=$work_dir/registry attempt port deadline name
    # distribution lets REGISTRY_* variables override the config; ours must be the whole truth.
    local registry_env_unset=()
    while read -r name; do
        if [[ $name == REGISTRY_* ]]; then registry_env_unset+=(-u "$name"); fi
    done < <(compgen -e)
    mkdir -p "$directory/storage"
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        registry_host=127.0.0.1:$port
        # Access logs are off: they would cost the registry the same per request
        # for both daemons, and only add noise.
        cat >"$directory/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: "$directory/storage"
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $registry_host
  secret: pull-vs-containerd-bench-secret
EOF
        : >"$directory/registry.log"
        env "${registry_env_unset[@]}" \
            "$registry_binary" serve "$directory/config.yml" \
            >>"$directory/registry.log" 2>&1 </dev/null &
        registry_pid=$!
        deadline=$((SECONDS + 15))
        while ((SECONDS < deadline)); do
            if ! kill -0 "$registry_pid" 2>/dev/null; then
                wait "$registry_pid" 2>/dev/null || true
                registry_pid=
                break
            fi
            if grep -q "listening on $registry_host" "$directory/registry.log" \
                && registry_ready "$registry_host"; then
                log "registry on $registry_host (pid $registry_pid)"
                return 0
            fi
            sleep 0.05
        done
        if [[ -n $registry_pid ]]; then
            kill "$registry_pid" 2>/dev/null || true
            wait "$registry_pid" 2>/dev/null || true
            registry_pid=
        fi
        grep -q "address already in use" "$directory/registry.log" || break
        log "port $port was taken, retrying ($attempt)"
    done
    echo "docker-registry did not start; its log:" >&2
    cat "$directory/registry.log" >&2
    return 1
}
start_registry

# ---------------------------------------------------------------------------
# (c) workload images, built deterministically and pushed
# ---------------------------------------------------------------------------
if [[ -z $oci_dir ]]; then
    oci_dir=$work_dir/oci
fi
mkdir -p "$oci_dir"

# push_workload NAME: pushes bench/NAME:v1, from its layout when present.
push_workload() {
    local name=$1 layout=$oci_dir/bench-$1 all=()
    # An index (multiarch) is pushed whole, every platform's manifest with it.
    [[ $name != multiarch ]] || all=(--all)
    if [[ -f $layout/index.json ]]; then
        skopeo "${skopeo_policy[@]}" copy --quiet "${all[@]}" --dest-tls-verify=false \
            "oci:$layout:v1" "docker://$registry_host/bench/$name:v1"
    else
        python3 "$make_images" --out "$oci_dir" --push --registry "$registry_host" --only "$name" >&2
    fi
}

IFS=, read -r -a image_names <<<"$images"
for name in "${image_names[@]}"; do
    log "pushing bench/$name:v1 (building it first takes minutes for large)"
    push_workload "$name"
done
fleet_references=$work_dir/fleet.txt
: >"$fleet_references"
if ((fleet > 0)); then
    fleet_layouts=0
    for ((n = 0; n < fleet; n++)); do
        [[ ! -f $oci_dir/$(printf 'bench-fleet-%03d' "$n")/index.json ]] || fleet_layouts=$((fleet_layouts + 1))
    done
    if ((fleet_layouts == fleet)); then
        log "pushing $fleet fleet images from their layouts"
        for ((n = 0; n < fleet; n++)); do
            push_workload "$(printf 'fleet-%03d' "$n")"
        done
    else
        log "building and pushing $fleet fleet images"
        python3 "$make_images" --out "$oci_dir" --push --registry "$registry_host" \
            --only fleet --fleet "$fleet" >&2
    fi
    for ((n = 0; n < fleet; n++)); do
        printf '%s/bench/fleet-%03d:v1\n' "$registry_host" "$n" >>"$fleet_references"
    done
fi
many_references=$work_dir/many.txt
if ((many_images > 0)); then
    log "pushing $many_images synthetic images through the registry API"
    python3 "$push_synthetic" --registry "$registry_host" --count "$many_images" \
        --references-out "$many_references" >&2
fi

# ---------------------------------------------------------------------------
# (d) binaries, release build; the hosts directory both daemons read
# ---------------------------------------------------------------------------
log "building cri-imaged and examples/cri_bench_client.rs (release)"
(cd "$repo_root" && cargo build --release --quiet --bin cri-imaged --example cri_bench_client)
target_dir=$(cd "$repo_root" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
cri_imaged=$target_dir/release/cri-imaged
bench_client=$target_dir/release/examples/cri_bench_client
log "building benches/grpc_go_client (Debian's golang-go and grpc-go, GOPATH mode)"
go_client=$work_dir/grpc_go_client
mkdir -p "$work_dir/gopath/src"
ln -s "$repo_root/benches/grpc_go_client" "$work_dir/gopath/src/grpc_go_client"
(cd "$work_dir" && GO111MODULE=off GOPATH=$work_dir/gopath:/usr/share/gocode GOCACHE=$work_dir/gocache \
    go build -o "$go_client" grpc_go_client)
for binary in "$cri_imaged" "$bench_client" "$go_client"; do
    [[ -x $binary ]] || { echo "no binary at $binary" >&2; exit 1; }
done

# containerd's certs.d layout, which ours reads too: plain http for the
# loopback registry (ours would default to it anyway). containerd 1.6 refuses
# a hosts.toml without a [host] table ("invalid `host` tree") and falls back
# to its defaults, so the registry is also listed as a host: both daemons
# then try it first and never need the server line.
hosts_dir=$work_dir/certs.d
mkdir -p "$hosts_dir/$registry_host"
cat >"$hosts_dir/$registry_host/hosts.toml" <<EOF
server = "http://$registry_host"

[host."http://$registry_host"]
  capabilities = ["pull", "resolve"]
EOF

# containerd's config: version 2, its own everything, the CRI plugin on with
# what it needs for containers (cgroups, AppArmor, CNI, OOM score) turned off
# or pointed at empty directories, and the overlayfs snapshotter.
mkdir -p "$work_dir/cni/bin" "$work_dir/cni/conf"
containerd_config=$work_dir/containerd-config.toml
cat >"$containerd_config" <<EOF
version = 2
root = "${daemon_root[containerd]}"
state = "$containerd_state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "${daemon_socket[containerd]}"

[ttrpc]
  address = "${daemon_socket[containerd]}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$work_dir/containerd-opt"

  [plugins."io.containerd.grpc.v1.cri"]
    disable_cgroup = true
    disable_apparmor = true
    restrict_oom_score_adj = true
    disable_tcp_service = true
    disable_hugetlb_controller = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$work_dir/cni/bin"
      conf_dir = "$work_dir/cni/conf"

    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "$hosts_dir"
EOF

# ---------------------------------------------------------------------------
# (e) daemons
# ---------------------------------------------------------------------------
# proc_kib PID FIELD: VmRSS or VmHWM of PID, in KiB.
proc_kib() {
    awk -v field="$2:" '$1 == field { print $2 }' "/proc/$1/status"
}

# proc_cpu_s PID: user + system CPU seconds of PID and its reaped children.
proc_cpu_s() {
    # The command name (field 2) may hold spaces; fields are counted after it.
    sed -e 's/^.*) //' "/proc/$1/stat" \
        | awk -v ticks="$clock_ticks" '{ printf "%.3f\n", ($12 + $13 + $14 + $15) / ticks }'
}

# The bytes under a daemon's root, counted by the bench client (like du -sb,
# hard-linked files once) both here and in its reclaim poller, so that the
# bytes before and after a RemoveImage are counted the same way.
tree_bytes() { # DIR
    "$bench_client" --socket /dev/null tree-bytes "$1" | json_field bytes
}

start_daemon() {
    local tool=$1 root=${daemon_root[$1]} socket=${daemon_socket[$1]} log_file=${daemon_log[$1]}
    mkdir -p "$root"
    rm -f "$socket"
    echo "----- start $(date -u +%FT%T.%NZ)" >>"$log_file"
    case $tool in
        ours)
            "$cri_imaged" serve --root "$root" --socket "$socket" --hosts-dir "$hosts_dir" \
                >>"$log_file" 2>&1 </dev/null &
            ;;
        containerd)
            containerd --config "$containerd_config" --root "$root" --state "$containerd_state" \
                --address "$socket" >>"$log_file" 2>&1 </dev/null &
            ;;
    esac
    daemon_pid[$tool]=$!
    if ! "$bench_client" --socket "$socket" wait-ready --timeout-s 60 >/dev/null; then
        echo "$tool did not start serving CRI on $socket" >&2
        return 1
    fi
    if [[ $tool == containerd ]] && ! grep -q 'Start cri plugin' "$log_file"; then
        echo "containerd answered without its CRI plugin" >&2
        return 1
    fi
}

stop_daemon() {
    local tool=$1 pid=${daemon_pid[$1]} waited=0
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((waited < 300)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$tool (pid $pid) ignored SIGTERM for 30 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    daemon_pid[$tool]=
}

# fresh_daemon TOOL: stopped, then started again and serving on a new, empty
# root (containerd's state is wiped). Old roots stay until the script ends,
# because deleting them would slow down what comes next and charge it to the
# next daemon: right after tens of thousands of files are deleted on ext4,
# creating files in the same block groups is several times slower for a
# minute or more (its inode allocator skips inodes deleted within the last
# 60 s, looking up each one's inode table block; perf shows
# recently_deleted and find_get_block_common on top). Wiping the root before
# each round made many-files take 1, 2, then 3.5 s for us and 2.4, 3.8, then
# 5.7 s for containerd over three rounds.
root_generation=0
fresh_daemon() {
    local tool=$1
    stop_daemon "$tool"
    unmount_below "${daemon_root[$tool]}"
    root_generation=$((root_generation + 1))
    daemon_root[$tool]=$store_base/$tool-root-$root_generation
    [[ $tool != containerd ]] || rm -rf "$containerd_state"
    sync
    start_daemon "$tool"
}

# check_containerd_log: a containerd that could not read the hosts
# directory still pulls (with its defaults), which would compare a different
# configuration; refuse that.
check_containerd_log() {
    if grep -q 'failed to decode hosts.toml' "${daemon_log[containerd]}"; then
        echo "containerd could not read $hosts_dir (see its log)" >&2
        return 1
    fi
}

client() { # TOOL ARGUMENT...
    local tool=$1
    shift
    timeout 900 "$bench_client" --socket "${daemon_socket[$tool]}" "$@"
}

json_field() { # FIELD.PATH < JSON
    python3 -c '
import json, sys
value = json.loads(sys.stdin.read())
for key in sys.argv[1].split("."):
    value = value[key]
print(value)' "$1"
}

results=$work_dir/results.tsv
printf 'section\ttool\tround\tmetric\tvalue\n' >"$results"
record() { # SECTION TOOL ROUND METRIC VALUE
    printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"
}

if [[ $use_tmpfs -eq 1 ]]; then storage=tmpfs; else storage=disk; fi
log "daemon roots on $(df --output=source,fstype "$store_base" | tail -n 1 | tr -s ' ') ($store_base); containerd $containerd_version ($unpigz_note)"

# ---------------------------------------------------------------------------
# (f) phases 1-2: pulls from an empty root, and RemoveImage of large
# ---------------------------------------------------------------------------
# measure_reclaim TOOL NAME ROUND BYTES_EMPTY: RemoveImage of bench/NAME:v1, then polls
# the root until it has dropped by 90% of what the pull added (the image's
# compressed and unpacked bytes, plus whatever metadata grew).
measure_reclaim() {
    local tool=$1 name=$2 round=$3 bytes_empty=$4
    local reference=$registry_host/bench/$2:v1 root=${daemon_root[$1]}
    local figures remove_s reclaim dropped added
    # The client measures the root just before its call and then polls it
    # every 5 ms, so neither a process start nor an interpreter start lies
    # between the call and the first look.
    figures=$(client "$tool" remove "$reference" --reclaim-root "$root" \
        --empty-bytes "$bytes_empty" --timeout-s "$reclaim_timeout_s")
    remove_s=$(json_field wall_s <<<"$figures")
    reclaim=$(json_field reclaim_s <<<"$figures")
    dropped=$(json_field dropped_bytes <<<"$figures")
    added=$(json_field added_bytes <<<"$figures")
    record "remove-$name" "$tool" "$round" call_s "$remove_s"
    if [[ $reclaim == None || $reclaim == null ]]; then
        record "remove-$name" "$tool" "$round" reclaim_s timeout
        log "$reference round $round: $tool RemoveImage ${remove_s}s; space NOT reclaimed within ${reclaim_timeout_s}s (dropped $dropped of $added bytes)"
    else
        record "remove-$name" "$tool" "$round" reclaim_s "$reclaim"
        log "$reference round $round: $tool RemoveImage ${remove_s}s; 90% of $added bytes reclaimed after ${reclaim}s"
    fi
}

# run_pull TOOL NAME ROUND: one pull of bench/NAME:v1 from an empty root.
run_pull() {
    local tool=$1 name=$2 round=$3
    local reference=$registry_host/bench/$name:v1 pid
    local idle_kib cpu_before cpu_after wall peak_kib after_kib bytes_empty
    fresh_daemon "$tool"
    pid=${daemon_pid[$tool]}
    idle_kib=$(proc_kib "$pid" VmRSS)
    bytes_empty=$(tree_bytes "${daemon_root[$tool]}")
    cpu_before=$(proc_cpu_s "$pid")
    wall=$(client "$tool" pull "$reference" | json_field wall_s)
    cpu_after=$(proc_cpu_s "$pid")
    peak_kib=$(proc_kib "$pid" VmHWM)
    after_kib=$(proc_kib "$pid" VmRSS)
    [[ $tool != containerd ]] || check_containerd_log
    local cpu
    cpu=$(awk -v a="$cpu_before" -v b="$cpu_after" 'BEGIN { printf "%.2f", b - a }')
    record pull "$tool" "$round" "idle_rss_after_start_kib" "$idle_kib"
    record "pull-$name" "$tool" "$round" wall_s "$wall"
    record "pull-$name" "$tool" "$round" cpu_s "$cpu"
    record "pull-$name" "$tool" "$round" peak_rss_kib "$peak_kib"
    record "pull-$name" "$tool" "$round" rss_after_kib "$after_kib"
    log "$reference round $round: $tool ${wall}s cpu ${cpu}s idle ${idle_kib} KiB peak ${peak_kib} KiB"
    if [[ ,$reclaim_images, == *,$name,* ]]; then
        if ((writeback_before_remove)); then
            # The kubelet removes images pulled long before, whose data the
            # kernel has written back since. Freeing blocks on disk costs
            # more than dropping dirty pages that never got any (a daemon
            # that does not sync its unpacked files leaves them dirty).
            sync -f "${daemon_root[$tool]}"
        fi
        measure_reclaim "$tool" "$name" "$round" "$bytes_empty"
    fi
    stop_daemon "$tool"
}

for name in "${image_names[@]}"; do
    [[ -n $name ]] || continue
    for ((round = 1; round <= rounds; round++)); do
        if ((round % 2 == 1)); then
            run_pull ours "$name" "$round"
            run_pull containerd "$name" "$round"
        else
            run_pull containerd "$name" "$round"
            run_pull ours "$name" "$round"
        fi
    done
done

# ---------------------------------------------------------------------------
# (g) phase 3: latency with the fleet pulled, both daemons running
# ---------------------------------------------------------------------------
if ((fleet > 0)); then
    for tool in ours containerd; do
        fresh_daemon "$tool"
        record idle "$tool" 0 idle_rss_after_start_kib "$(proc_kib "${daemon_pid[$tool]}" VmRSS)"
        figures=$(client "$tool" pull-many --parallel 4 "$fleet_references")
        log "$tool: pulled the fleet: $figures"
        [[ $tool != containerd ]] || check_containerd_log
    done
    # Idle means no call in flight for a moment: give a Go runtime's
    # background work after the pulls a little time to settle.
    sleep 2
    for tool in ours containerd; do
        record idle "$tool" 0 idle_rss_after_pulls_kib "$(proc_kib "${daemon_pid[$tool]}" VmRSS)"
    done
    status_reference=$registry_host/bench/fleet-000:v1
    halt_poll_knob=/sys/module/haltpoll/parameters/guest_halt_poll_ns
    halt_poll_saved=
    if [[ -w $halt_poll_knob ]]; then halt_poll_saved=$(<"$halt_poll_knob"); fi
    for ((round = 1; round <= rounds; round++)); do
        if ((round % 2 == 1)); then order=(ours containerd); else order=(containerd ours); fi
        for tool in "${order[@]}"; do
            figures=$(client "$tool" status-latency "$status_reference" --count "$status_count")
            for quantile in p50 p90 p99; do
                record status "$tool" "$round" "${quantile}_us" "$(json_field "latency.${quantile}_us" <<<"$figures")"
            done
            status_p50=$(json_field latency.p50_us <<<"$figures")
            # The same calls with the client and every thread of the daemon
            # on CPU 0: no wakeup crosses CPUs. On a VM whose idle vCPUs halt
            # at once (haltpoll without polling, as here), each cross-CPU
            # wakeup costs tens of microseconds, which the unpinned p50 pays
            # twice per call; the pinned one shows what the two processes'
            # own work costs. Diagnostic only: no node pins the kubelet so.
            if command -v taskset >/dev/null && (($(nproc) > 1)); then
                taskset -a -p -c 0 "${daemon_pid[$tool]}" >/dev/null
                figures=$(taskset -c 0 timeout 900 "$bench_client" --socket "${daemon_socket[$tool]}" \
                    status-latency "$status_reference" --count "$status_count")
                taskset -a -p -c "0-$(($(nproc) - 1))" "${daemon_pid[$tool]}" >/dev/null
                record status-one-cpu "$tool" "$round" p50_us "$(json_field latency.p50_us <<<"$figures")"
            fi
            # Calls 10 ms apart, as the kubelet's occasional calls come: both
            # processes idle, their CPUs halted and their caches gone
            # before each call.
            figures=$(client "$tool" status-latency "$status_reference" --count "$paced_count" --pause-ms 10)
            record status-paced "$tool" "$round" p50_us "$(json_field latency.p50_us <<<"$figures")"
            # The same calls with the guest kernel's own default halt
            # polling (200 us) instead of this VM image's 0: an idle vCPU
            # polls a moment before it halts, as on a host that keeps the
            # default. Diagnostic only, restored at once (and by cleanup).
            if [[ $halt_poll_saved == 0 ]]; then
                echo 200000 >"$halt_poll_knob"
                figures=$(client "$tool" status-latency "$status_reference" --count "$status_count")
                echo "$halt_poll_saved" >"$halt_poll_knob"
                record status-halt-poll "$tool" "$round" p50_us "$(json_field latency.p50_us <<<"$figures")"
            fi
            # The same call through grpc-go (the kubelet's stack), and the
            # cheapest call there is (Version: no store, no lookup), which
            # shows what the socket, h2 and the two processes' wakeups cost
            # on this machine whatever the daemon does.
            figures=$(timeout 300 "$go_client" -socket "${daemon_socket[$tool]}" -method status \
                -image "$status_reference" -count "$status_count")
            record status-go "$tool" "$round" p50_us "$(json_field latency.p50_us <<<"$figures")"
            figures=$(timeout 300 "$go_client" -socket "${daemon_socket[$tool]}" -method version \
                -count "$status_count")
            record version-go "$tool" "$round" p50_us "$(json_field latency.p50_us <<<"$figures")"
            figures=$(client "$tool" list-latency --count "$list_count")
            record list "$tool" "$round" p50_us "$(json_field latency.p50_us <<<"$figures")"
            record list "$tool" "$round" images "$(json_field images <<<"$figures")"
            log "round $round: $tool ImageStatus p50 ${status_p50} us; ListImages p50 $(json_field latency.p50_us <<<"$figures") us of $(json_field images <<<"$figures") images"
        done
    done
fi

# ---------------------------------------------------------------------------
# (h) phase 4: ListImages of --many-images images
# ---------------------------------------------------------------------------
if ((many_images > 0)); then
    many_tools=(ours)
    [[ $containerd_many_images -eq 0 ]] || many_tools+=(containerd)
    for tool in "${many_tools[@]}"; do
        [[ -n ${daemon_pid[$tool]} ]] || fresh_daemon "$tool"
        log "$tool: pulling $many_images synthetic images with 8 clients"
        figures=$(client "$tool" pull-many --parallel 8 "$many_references")
        log "$tool: $figures"
        record many "$tool" 0 pulls_per_s "$(json_field pulls_per_s <<<"$figures")"
        record many "$tool" 0 rss_after_pulls_kib "$(proc_kib "${daemon_pid[$tool]}" VmRSS)"
    done
    for ((round = 1; round <= rounds; round++)); do
        order=("${many_tools[@]}")
        if ((round % 2 == 0 && ${#many_tools[@]} == 2)); then order=(containerd ours); fi
        for tool in "${order[@]}"; do
            figures=$(client "$tool" list-latency --count 20 --warmup 2)
            record many "$tool" "$round" p50_us "$(json_field latency.p50_us <<<"$figures")"
            record many "$tool" "$round" images "$(json_field images <<<"$figures")"
            log "round $round: $tool ListImages p50 $(json_field latency.p50_us <<<"$figures") us of $(json_field images <<<"$figures") images"
            # Through grpc-go, the answer received but not decoded: the
            # daemon's part of the call, as the kubelet's stack meets it.
            figures=$(timeout 300 "$go_client" -socket "${daemon_socket[$tool]}" -method list \
                -count 20 -warmup 2)
            record many-go "$tool" "$round" p50_us "$(json_field latency.p50_us <<<"$figures")"
            record many-go "$tool" "$round" answer_bytes "$(json_field answer_bytes <<<"$figures")"
        done
    done
fi
for tool in ours containerd; do
    stop_daemon "$tool"
done

# ---------------------------------------------------------------------------
# (i) the table
# ---------------------------------------------------------------------------
python3 - "$results" "$storage" "$containerd_version" "$reclaim_timeout_s" <<'EOF'
import csv, statistics, sys
path, storage, containerd_version, reclaim_timeout = sys.argv[1:5]
rows = list(csv.DictReader(open(path), delimiter="\t"))
values = {}
for row in rows:
    values.setdefault((row["section"], row["metric"], row["tool"]), []).append(row["value"])

def median(section, metric, tool):
    """(median or None, text): a reclaim that timed out in some round counts
    as the timeout, and the text says how many rounds did."""
    raw = values.get((section, metric, tool))
    if not raw:
        return None, 0
    timeouts = sum(1 for v in raw if v == "timeout")
    numbers = [float(reclaim_timeout) if v == "timeout" else float(v) for v in raw]
    m = statistics.median(numbers)
    return m, timeouts

MiB = 1 / 1024
# (label, section, metric, scale, unit format, target text, target check on (ours, containerd))
specs = []
for image in dict.fromkeys(r["section"][5:] for r in rows if r["section"].startswith("pull-")):
    target = {"large": ("<= 0.30x containerd", lambda o, c: o <= 0.30 * c),
              "many-files": ("<= 0.25x containerd", lambda o, c: o <= 0.25 * c)}.get(image, ("", None))
    specs.append((f"PullImage {image} (s)", f"pull-{image}", "wall_s", 1, "{:.3f}", *target))
    specs.append((f"  cpu during the pull (s)", f"pull-{image}", "cpu_s", 1, "{:.2f}", "", None))
    rss_target = ("ours <= 40 MiB", lambda o, c: o <= 40) if image == "large" else ("", None)
    specs.append((f"  peak RSS, pull {image} (MiB)", f"pull-{image}", "peak_rss_kib", MiB, "{:.1f}", *rss_target))
for image in dict.fromkeys(r["section"][7:] for r in rows if r["section"].startswith("remove-")):
    target = ("ours <= 0.2 s (containerd ~0.6)", lambda o, c: o <= 0.2) if image == "large" else ("", None)
    specs.append((f"RemoveImage {image}, the call (s)", f"remove-{image}", "call_s", 1, "{:.3f}", "", None))
    specs.append((f"RemoveImage {image} until 90% reclaimed (s)", f"remove-{image}", "reclaim_s", 1,
                  "{:.3f}", *target))
specs += [
    ("idle RSS after start (MiB)", "pull", "idle_rss_after_start_kib", MiB, "{:.1f}",
     "ours <= 15 MiB (containerd ~39)", lambda o, c: o <= 15),
    ("idle RSS after start, phase 3 (MiB)", "idle", "idle_rss_after_start_kib", MiB, "{:.1f}", "", None),
    ("idle RSS after the fleet pulls (MiB)", "idle", "idle_rss_after_pulls_kib", MiB, "{:.1f}",
     "ours <= 15 MiB", lambda o, c: o <= 15),
    ("ImageStatus p50 (us)", "status", "p50_us", 1, "{:.0f}", "ours <= 100 us (containerd ~240)",
     lambda o, c: o <= 100),
    ("ImageStatus p90 (us)", "status", "p90_us", 1, "{:.0f}", "", None),
    ("  p50, one call every 10 ms (us)", "status-paced", "p50_us", 1, "{:.0f}", "", None),
    ("  p50, client and daemon on one CPU (us)", "status-one-cpu", "p50_us", 1, "{:.0f}", "", None),
    ("  p50, guest halt polling at the kernel's default (us)", "status-halt-poll", "p50_us", 1, "{:.0f}",
     "", None),
    ("ImageStatus p50, grpc-go client (us)", "status-go", "p50_us", 1, "{:.0f}", "", None),
    ("Version p50, grpc-go client (us)", "version-go", "p50_us", 1, "{:.0f}", "", None),
    ("ImageStatus p99 (us)", "status", "p99_us", 1, "{:.0f}", "", None),
    ("ListImages p50, fleet (us)", "list", "p50_us", 1, "{:.0f}", "", None),
    ("  images listed", "list", "images", 1, "{:.0f}", "", None),
    ("ListImages p50, many images (ms)", "many", "p50_us", 1 / 1000, "{:.1f}", "ours <= 30 ms",
     lambda o, c: o <= 30),
    ("  images listed", "many", "images", 1, "{:.0f}", "", None),
    ("  grpc-go client, answer not decoded (ms)", "many-go", "p50_us", 1 / 1000, "{:.1f}", "", None),
    ("  answer size (MiB)", "many-go", "answer_bytes", 1 / 1048576, "{:.2f}", "", None),
    ("  pulls/s of those images (8 clients)", "many", "pulls_per_s", 1, "{:.0f}", "", None),
    ("  RSS after pulling them (MiB)", "many", "rss_after_pulls_kib", MiB, "{:.1f}", "", None),
]

header = ("metric", "ours", f"containerd {containerd_version}", "ours/containerd", "target", "met")
table = [header]
notes = []
for label, section, metric, scale, fmt, target_text, check in specs:
    ours, ours_timeouts = median(section, metric, "ours")
    theirs, theirs_timeouts = median(section, metric, "containerd")
    if ours is None and theirs is None:
        continue
    def cell(m, timeouts):
        if m is None:
            return "-"
        text = fmt.format(m * scale)
        if timeouts:
            text += f" ({timeouts} timed out)"
            notes.append(f"{label}: a round that timed out counts as {reclaim_timeout} s")
        return text
    # A timed-out round has no figure, only a bound: no ratio then.
    comparable = ours is not None and theirs not in (None, 0) and not ours_timeouts and not theirs_timeouts
    ratio = f"{ours / theirs:.2f}" if comparable else "-"
    met = ""
    if check is not None and ours is not None:
        try:
            met = "yes" if check(ours * scale, (theirs or 0) * scale) else "NO"
        except TypeError:
            met = "?"
        if ours_timeouts:
            met = "NO"
    table.append((label, cell(ours, ours_timeouts), cell(theirs, theirs_timeouts), ratio,
                  target_text, met))

rounds = max((int(r["round"]) for r in rows), default=0)
print()
print(f"CRI daemons over their sockets, roots on {storage}, medians of {rounds} interleaved "
      f"round(s); each pull from an empty root; MiB = 1024 KiB")
widths = [max(len(row[i]) for row in table) for i in range(len(header))]
for n, row in enumerate(table):
    print("  ".join(cell.ljust(w) if i in (0, 4) else cell.rjust(w)
                    for i, (cell, w) in enumerate(zip(row, widths))))
    if n == 0:
        print("  ".join("-" * w for w in widths))
for note in dict.fromkeys(notes):
    print(f"note: {note}")
print()
pulls = {}
for row in rows:
    if row["section"].startswith("pull-") and row["metric"] == "wall_s":
        pulls.setdefault((row["section"][5:], row["tool"]), []).append(row["value"])
print("per run (pull wall s): " + "; ".join(
    f"{image} {tool}: " + " ".join(runs) for (image, tool), runs in pulls.items()))
EOF
if [[ -n $results_file ]]; then
    cp "$results" "$results_file"
    log "raw results in $results_file"
fi
