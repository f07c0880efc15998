#!/usr/bin/env bash
# Download of an image from a loopback registry: our content fetch
# (examples/fetch_image.rs: registry session -> verified, durable ingest into
# the content store) against Debian's `skopeo copy docker://... oci:DIR`
# (containers/image), side by side in one run, on the workloads of
# ../shared/bench/WORKLOADS.md. Neither side unpacks anything.
#
# Rounds are interleaved A/B (the order flips every round), each run writes
# into a fresh directory, and both tools write to the same filesystem: the
# disk by default, /dev/shm with --tmpfs. Prints the median wall time of
# each tool, the ratio ours/skopeo, CPU time (user + sys) and peak RSS
# (GNU time's maxrss).
#
# Usage, from the repo root:
#   bash benches/pull_vs_skopeo.sh [--rounds N] [--tmpfs] [--images large,many-files]
#                                  [--layer-downloads N] [--oci-dir DIR] [--results FILE]
#                                  [--no-warmup] [--perf DIR]
# Environment:
#   SHARED_DIR        where bench/make_images.py lives (default: REPO/../shared)
#   CARGO_TARGET_DIR  honoured by the build (cargo metadata tells where it is)
#   BENCH_TMPDIR      parent of the on-disk work directory (default: $TMPDIR or /tmp)
#
# --oci-dir keeps the generated OCI layouts between runs (they are
# deterministic, so a layout that is present is pushed as it is, without
# rebuilding); without it they are built into the work directory and removed.
#
# --perf DIR adds, after the timed rounds of each image, one untimed run of
# ours under `perf record --call-graph dwarf`, saved as DIR/<image>.perf.data.

set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared_dir=${SHARED_DIR:-$repo_root/../shared}
make_images=$shared_dir/bench/make_images.py

rounds=5
use_tmpfs=0
images=large,many-files
layer_downloads=3
oci_dir=
results_file=
warmup=1
perf_dir=

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --tmpfs) use_tmpfs=1; shift ;;
        --images) images=$2; shift 2 ;;
        --layer-downloads) layer_downloads=$2; shift 2 ;;
        --oci-dir) oci_dir=$2; shift 2 ;;
        --results) results_file=$2; shift 2 ;;
        --no-warmup) warmup=0; shift ;;
        --perf) perf_dir=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive integer" >&2; exit 2; }
[[ $layer_downloads =~ ^[1-9][0-9]*$ ]] || { echo "--layer-downloads must be a positive integer" >&2; exit 2; }
[[ -f $make_images ]] || { echo "no $make_images (set SHARED_DIR)" >&2; exit 2; }

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---------------------------------------------------------------------------
# (a) tools
# ---------------------------------------------------------------------------
registry_binary=${CRI_IMAGED_TEST_REGISTRY_BINARY:-/usr/bin/docker-registry}
missing=()
[[ -x $registry_binary ]] || missing+=(docker-registry)
command -v skopeo >/dev/null || missing+=(skopeo)
[[ -x /usr/bin/time ]] || missing+=(time)
command -v python3 >/dev/null || missing+=(python3)
[[ -z $perf_dir ]] || command -v perf >/dev/null || missing+=(linux-perf)
if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]}"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y -q "${missing[@]}" >&2 \
        || { "${sudo[@]}" apt-get update -q >&2 && "${sudo[@]}" apt-get install -y -q "${missing[@]}" >&2; }
fi
skopeo_policy=()
# skopeo refuses to run without a signature policy; a container-less machine may lack one.
[[ -f /etc/containers/policy.json || -f ${HOME:-/root}/.config/containers/policy.json ]] \
    || skopeo_policy=(--insecure-policy)

# ---------------------------------------------------------------------------
# work directories and cleanup
# ---------------------------------------------------------------------------
work_dir=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/pull-vs-skopeo.XXXXXX")
out_base=$work_dir/out
if [[ $use_tmpfs -eq 1 ]]; then
    [[ -d /dev/shm && -w /dev/shm ]] || { echo "/dev/shm is not writable" >&2; exit 2; }
    out_base=$(mktemp -d /dev/shm/pull-vs-skopeo.XXXXXX)
fi
mkdir -p "$out_base"
registry_pid=

cleanup() {
    local status=$?
    if [[ -n $registry_pid ]]; then
        kill "$registry_pid" 2>/dev/null || true
        wait "$registry_pid" 2>/dev/null || true
    fi
    # A failure is often explained by the registry; an interrupt is not a failure.
    if [[ $status -ne 0 && $status -ne 130 && $status -ne 143 && -f $work_dir/registry/registry.log ]]; then
        echo "----- last lines of the registry log -----" >&2
        tail -n 20 "$work_dir/registry/registry.log" >&2 || true
    fi
    [[ $out_base == "$work_dir"/* ]] || rm -rf "$out_base"
    rm -rf "$work_dir"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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
        # for both tools, and only add noise.
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
  secret: pull-vs-skopeo-bench-secret
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
references=()
IFS=, read -r -a image_names <<<"$images"
for name in "${image_names[@]}"; do
    reference=bench/$name:v1
    layout=$oci_dir/bench-$name
    if [[ -f $layout/index.json ]]; then
        log "pushing the existing layout $layout"
        skopeo "${skopeo_policy[@]}" copy --quiet --dest-tls-verify=false \
            "oci:$layout:v1" "docker://$registry_host/$reference"
    else
        log "building and pushing $reference into $oci_dir (the large image takes minutes)"
        python3 "$make_images" --out "$oci_dir" --push --registry "$registry_host" --only "$name" >&2
    fi
    references+=("$reference")
done

# ---------------------------------------------------------------------------
# (d) our example, release build
# ---------------------------------------------------------------------------
log "building examples/fetch_image.rs (release)"
(cd "$repo_root" && cargo build --release --quiet --example fetch_image)
target_dir=$(cd "$repo_root" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
fetch_image=$target_dir/release/examples/fetch_image
[[ -x $fetch_image ]] || { echo "no binary at $fetch_image" >&2; exit 1; }

# ---------------------------------------------------------------------------
# (e) interleaved rounds
# ---------------------------------------------------------------------------
results=$work_dir/results.tsv
printf 'image\ttool\tround\twall_s\tcpu_s\tmaxrss_kib\tdownloaded_bytes\n' >"$results"

# run_one TOOL REFERENCE ROUND: times one download into a fresh directory on
# $out_base and appends a row (round 0 is a warm-up and is not recorded).
run_one() {
    local tool=$1 reference=$2 round=$3
    local destination=$out_base/$tool-run time_file=$work_dir/time.out stdout_file=$work_dir/stdout.out
    local started finished wall cpu maxrss downloaded=
    rm -rf "$destination"
    sync
    started=$(date +%s.%N)
    case $tool in
        ours)
            /usr/bin/time -f '%M %U %S' -o "$time_file" \
                "$fetch_image" --root "$destination" --layer-downloads "$layer_downloads" \
                "$registry_host/$reference" >"$stdout_file"
            ;;
        skopeo)
            /usr/bin/time -f '%M %U %S' -o "$time_file" \
                skopeo "${skopeo_policy[@]}" copy --quiet --src-tls-verify=false \
                "docker://$registry_host/$reference" "oci:$destination" >"$stdout_file"
            ;;
    esac
    finished=$(date +%s.%N)
    wall=$(awk -v a="$started" -v b="$finished" 'BEGIN { printf "%.3f", b - a }')
    read -r maxrss cpu < <(tail -n 1 "$time_file" | awk '{ printf "%s %.2f\n", $1, $2 + $3 }')
    if [[ $tool == ours ]]; then
        downloaded=$(python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["downloaded_bytes"])' <"$stdout_file")
    else
        # Every blob (manifest and config too), so a few KB more than ours' layer bytes.
        downloaded=$(find "$destination/blobs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
    fi
    rm -rf "$destination"
    if [[ $round -gt 0 ]]; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$reference" "$tool" "$round" "$wall" "$cpu" "$maxrss" "$downloaded" >>"$results"
        log "$reference round $round: $tool ${wall}s cpu ${cpu}s maxrss ${maxrss} KiB"
    else
        log "$reference warm-up: $tool ${wall}s"
    fi
}

log "output on $(df --output=source,fstype "$out_base" | tail -n 1 | tr -s ' ') ($out_base); $rounds rounds; ours with --layer-downloads $layer_downloads"
for reference in "${references[@]}"; do
    if [[ $warmup -eq 1 ]]; then
        run_one ours "$reference" 0
        run_one skopeo "$reference" 0
    fi
    for ((round = 1; round <= rounds; round++)); do
        if ((round % 2 == 1)); then
            run_one ours "$reference" "$round"
            run_one skopeo "$reference" "$round"
        else
            run_one skopeo "$reference" "$round"
            run_one ours "$reference" "$round"
        fi
    done
    if [[ -n $perf_dir ]]; then
        mkdir -p "$perf_dir"
        perf_data=$perf_dir/$(basename "${reference%%:*}").perf.data
        rm -rf "$out_base/ours-perf"
        perf record -q -F 999 --call-graph dwarf,32768 -o "$perf_data" -- \
            "$fetch_image" --root "$out_base/ours-perf" --layer-downloads "$layer_downloads" \
            "$registry_host/$reference" >/dev/null
        rm -rf "$out_base/ours-perf"
        log "profile in $perf_data (perf report -i $perf_data --no-children --sort symbol)"
    fi
done

# ---------------------------------------------------------------------------
# (f) the table
# ---------------------------------------------------------------------------
if [[ $use_tmpfs -eq 1 ]]; then storage=tmpfs; else storage=disk; fi
python3 - "$results" "$storage" "$layer_downloads" <<'EOF'
import csv, statistics, sys
path, storage, layer_downloads = sys.argv[1:4]
rows = list(csv.DictReader(open(path), delimiter="\t"))
by = {}
for row in rows:
    by.setdefault((row["image"], row["tool"]), []).append(row)
print()
print(f"pull (download only) from a loopback registry, output on {storage}, "
      f"ours with --layer-downloads {layer_downloads}; medians of "
      f"{len(by.get((rows[0]['image'], 'ours'), []))} interleaved rounds")
header = ("image", "ours s", "skopeo s", "ours/skopeo", "ours MiB/s", "ours cpu s", "skopeo cpu s",
          "ours peak RSS MiB (max)", "skopeo peak RSS MiB")
table = [header]
for image in dict.fromkeys(row["image"] for row in rows):
    ours, skopeo = by[(image, "ours")], by[(image, "skopeo")]
    ours_s = statistics.median(float(r["wall_s"]) for r in ours)
    skopeo_s = statistics.median(float(r["wall_s"]) for r in skopeo)
    downloaded = statistics.median(int(r["downloaded_bytes"]) for r in ours)
    ours_rss = [int(r["maxrss_kib"]) / 1024 for r in ours]
    skopeo_rss = statistics.median(int(r["maxrss_kib"]) / 1024 for r in skopeo)
    table.append((image, f"{ours_s:.3f}", f"{skopeo_s:.3f}", f"{ours_s / skopeo_s:.2f}",
                  f"{downloaded / 1048576 / ours_s:.0f}",
                  f"{statistics.median(float(r['cpu_s']) for r in ours):.2f}",
                  f"{statistics.median(float(r['cpu_s']) for r in skopeo):.2f}",
                  f"{statistics.median(ours_rss):.1f} ({max(ours_rss):.1f})",
                  f"{skopeo_rss:.1f}"))
widths = [max(len(row[i]) for row in table) for i in range(len(header))]
for n, row in enumerate(table):
    print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                    for i, (cell, w) in enumerate(zip(row, widths))))
    if n == 0:
        print("  ".join("-" * w for w in widths))
print()
print("per run (wall s): " + "; ".join(
    f"{image} {tool}: " + " ".join(r["wall_s"] for r in runs)
    for (image, tool), runs in by.items()))
EOF
if [[ -n $results_file ]]; then
    cp "$results" "$results_file"
    log "raw results in $results_file"
fi
