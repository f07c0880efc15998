#!/usr/bin/env bash
# Unpacking every layer of an image: ours (examples/unpack_layers.rs:
# cri_imaged::unpack with the daemon's options, diff ids verified, each layer
# into its own empty directory, --jobs layers at once, syncfs after each, as a
# daemon pull does once its blobs are stored) against the naive baseline
# `gzip -dc LAYER | tar -x -C DIR` of the same layers one after another,
# followed by one `sync -f` of the same filesystem, side by side in one run,
# on the workloads of ../shared/bench/WORKLOADS.md (issue 4).
#
# Both read the compressed layers from the same OCI image layouts (no
# registry, no download: only decompression, hashing and file creation are
# measured) and write to the same filesystem: the disk by default, /dev/shm
# with --tmpfs. Rounds are interleaved A/B (the order flips every round) and
# every run writes into fresh directories; the previous run's tree is removed
# and the filesystem synced before the clock starts. The untimed warm-up
# round also checks that both sides unpacked the same file bytes. Prints the median wall
# time of each side, the ratio ours/tar, CPU time (user + sys, children
# included) and peak RSS (GNU time's maxrss; for the baseline, the largest
# of gzip, tar and the shell), beside the largest uncompressed layer, so
# that "no whole layer in memory" can be read off the table.
#
# Usage, from the repo root:
#   bash benches/unpack_vs_tar.sh [--rounds N] [--tmpfs] [--images large,many-files]
#                                 [--jobs N] [--oci-dir DIR] [--results FILE] [--no-warmup]
# Environment:
#   SHARED_DIR        where bench/make_images.py lives (default: REPO/../shared)
#   CARGO_TARGET_DIR  honoured by the build (cargo metadata tells where it is)
#   BENCH_TMPDIR      parent of the on-disk work directory (default: $TMPDIR or /tmp)
#
# --jobs is ours' number of layers unpacked at once (the daemon's
# extractions_max); the default is the number of cores, like the daemon's.
# --oci-dir keeps the generated OCI layouts between runs (they are
# deterministic, so a layout that is present is used as it is); without it
# they are built into the work directory and removed (`large` takes minutes).

set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared_dir=${SHARED_DIR:-$repo_root/../shared}
make_images=$shared_dir/bench/make_images.py

rounds=5
use_tmpfs=0
images=large,many-files
jobs=$(nproc)
oci_dir=
results_file=
warmup=1

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --tmpfs) use_tmpfs=1; shift ;;
        --images) images=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --oci-dir) oci_dir=$2; shift 2 ;;
        --results) results_file=$2; shift 2 ;;
        --no-warmup) warmup=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive integer" >&2; exit 2; }
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "--jobs must be a positive integer" >&2; exit 2; }
[[ -f $make_images ]] || { echo "no $make_images (set SHARED_DIR)" >&2; exit 2; }

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---------------------------------------------------------------------------
# (a) tools
# ---------------------------------------------------------------------------
missing=()
command -v gzip >/dev/null || missing+=(gzip)
command -v tar >/dev/null || missing+=(tar)
[[ -x /usr/bin/time ]] || missing+=(time)
command -v python3 >/dev/null || missing+=(python3)
if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]}"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y -q "${missing[@]}" >&2 \
        || { "${sudo[@]}" apt-get update -q >&2 && "${sudo[@]}" apt-get install -y -q "${missing[@]}" >&2; }
fi

# ---------------------------------------------------------------------------
# work directories and cleanup
# ---------------------------------------------------------------------------
work_dir=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/unpack-vs-tar.XXXXXX")
out_base=$work_dir/out
if [[ $use_tmpfs -eq 1 ]]; then
    [[ -d /dev/shm && -w /dev/shm ]] || { echo "/dev/shm is not writable" >&2; exit 2; }
    out_base=$(mktemp -d /dev/shm/unpack-vs-tar.XXXXXX)
fi
mkdir -p "$out_base"

cleanup() {
    local status=$?
    [[ $out_base == "$work_dir"/* ]] || rm -rf "$out_base"
    rm -rf "$work_dir"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# (b) workload layouts, built deterministically (no registry needed)
# ---------------------------------------------------------------------------
if [[ -z $oci_dir ]]; then
    oci_dir=$work_dir/oci
fi
mkdir -p "$oci_dir"
IFS=, read -r -a image_names <<<"$images"
for name in "${image_names[@]}"; do
    layout=$oci_dir/bench-$name
    if [[ -f $layout/index.json ]]; then
        log "using the existing layout $layout"
    else
        log "building bench/$name:v1 into $oci_dir (the large image takes minutes)"
        python3 "$make_images" --out "$oci_dir" --only "$name" >&2
    fi
done

# layer_files LAYOUT: the layer blob paths of the layout's only image, base
# first, one a line, each followed by a tab and its media type.
layer_files() {
    python3 - "$1" <<'EOF'
import json, os, sys
layout = sys.argv[1]
def blob(digest):
    algorithm, hex_digest = digest.split(":", 1)
    return os.path.join(layout, "blobs", algorithm, hex_digest)
index = json.load(open(os.path.join(layout, "index.json")))
manifest = json.load(open(blob(index["manifests"][0]["digest"])))
for layer in manifest["layers"]:
    print(f"{blob(layer['digest'])}\t{layer['mediaType']}")
EOF
}

# ---------------------------------------------------------------------------
# (c) our example, release build
# ---------------------------------------------------------------------------
log "building examples/unpack_layers.rs (release)"
(cd "$repo_root" && cargo build --release --quiet --example unpack_layers)
target_dir=$(cd "$repo_root" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
unpack_layers=$target_dir/release/examples/unpack_layers
[[ -x $unpack_layers ]] || { echo "no binary at $unpack_layers" >&2; exit 1; }

# The baseline as one shell script, so that GNU time sees the whole of it
# (gzip and tar are its children): every layer, one after another, each into
# its own fresh directory, then one syncfs of the target filesystem.
baseline_script=$work_dir/baseline.sh
cat >"$baseline_script" <<'EOF'
#!/usr/bin/env bash
# baseline.sh DESTINATION LAYER_FILE...
set -euo pipefail
destination=$1
shift
index=0
for layer in "$@"; do
    directory=$destination/$(printf 'layer-%02d' "$index")
    mkdir -p "$directory"
    gzip -dc "$layer" | tar -x -C "$directory"
    index=$((index + 1))
done
sync -f "$destination"
EOF

# ---------------------------------------------------------------------------
# (d) interleaved rounds
# ---------------------------------------------------------------------------
results=$work_dir/results.tsv
printf 'image\ttool\tround\twall_s\tcpu_s\tmaxrss_kib\tuncompressed_bytes\tlargest_layer_bytes\n' >"$results"

# run_one TOOL IMAGE ROUND: times one unpack of every layer of IMAGE into a
# fresh directory on $out_base and appends a row (round 0 is a warm-up and
# is not recorded).
run_one() {
    local tool=$1 name=$2 round=$3
    local layout=$oci_dir/bench-$name
    local destination=$out_base/$tool-run time_file=$work_dir/time.out stdout_file=$work_dir/stdout.out
    local started finished wall cpu maxrss uncompressed largest
    local -a layers=()
    local file media_type
    while IFS=$'\t' read -r file media_type; do
        [[ $media_type == *gzip ]] || { echo "bench/$name: layer $file is $media_type, not gzip" >&2; exit 1; }
        layers+=("$file")
    done < <(layer_files "$layout")
    rm -rf "$destination"
    sync
    started=$(date +%s.%N)
    case $tool in
        ours)
            /usr/bin/time -f '%M %U %S' -o "$time_file" \
                "$unpack_layers" --layout "$layout" --out "$destination" --jobs "$jobs" >"$stdout_file"
            ;;
        tar)
            /usr/bin/time -f '%M %U %S' -o "$time_file" \
                bash "$baseline_script" "$destination" "${layers[@]}" >"$stdout_file"
            ;;
    esac
    finished=$(date +%s.%N)
    wall=$(awk -v a="$started" -v b="$finished" 'BEGIN { printf "%.3f", b - a }')
    read -r maxrss cpu < <(tail -n 1 "$time_file" | awk '{ printf "%s %.2f\n", $1, $2 + $3 }')
    read -r uncompressed largest <<<"${layer_sizes[$name]}"
    if [[ $round -eq 0 ]]; then
        # Untimed: the bytes of every regular file (hard links once), which
        # both sides must agree on: whiteouts and opaque markers are empty
        # files for tar and devices, xattrs or empty files for ours, so a
        # difference means an unpack went wrong.
        tree_bytes[$tool]=$(find "$destination" -type f -printf '%i %s\n' | sort -u \
            | awk '{ total += $2 } END { print total + 0 }')
    fi
    rm -rf "$destination"
    if [[ $round -gt 0 ]]; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "bench/$name" "$tool" "$round" "$wall" "$cpu" "$maxrss" \
            "$uncompressed" "$largest" >>"$results"
        log "bench/$name round $round: $tool ${wall}s cpu ${cpu}s maxrss ${maxrss} KiB"
    else
        log "bench/$name warm-up: $tool ${wall}s"
    fi
}

# "TOTAL LARGEST": the uncompressed bytes of all layers and of the largest
# one (what "a whole layer in memory" would cost), from the gzip trailers
# (ISIZE, exact below 4 GiB a layer, which these layers are far below).
declare -A layer_sizes=() tree_bytes=()
for name in "${image_names[@]}"; do
    layer_sizes[$name]=$(layer_files "$oci_dir/bench-$name" | cut -f 1 | python3 -c '
import struct, sys
sizes = []
for path in sys.stdin.read().split():
    with open(path, "rb") as f:
        f.seek(-4, 2)
        sizes.append(struct.unpack("<I", f.read(4))[0])
print(sum(sizes), max(sizes))')
done

log "output on $(df --output=source,fstype "$out_base" | tail -n 1 | tr -s ' ') ($out_base); $rounds rounds; ours with --jobs $jobs"
for name in "${image_names[@]}"; do
    if [[ $warmup -eq 1 ]]; then
        run_one ours "$name" 0
        run_one tar "$name" 0
        if [[ ${tree_bytes[ours]} == "${tree_bytes[tar]}" ]]; then
            log "bench/$name: both sides unpacked ${tree_bytes[ours]} bytes of files"
        else
            log "WARNING bench/$name: ours unpacked ${tree_bytes[ours]} bytes of files, tar ${tree_bytes[tar]}"
        fi
    fi
    for ((round = 1; round <= rounds; round++)); do
        if ((round % 2 == 1)); then
            run_one ours "$name" "$round"
            run_one tar "$name" "$round"
        else
            run_one tar "$name" "$round"
            run_one ours "$name" "$round"
        fi
    done
done

# ---------------------------------------------------------------------------
# (e) the table
# ---------------------------------------------------------------------------
if [[ $use_tmpfs -eq 1 ]]; then storage=tmpfs; else storage=disk; fi
python3 - "$results" "$storage" "$jobs" <<'EOF'
import csv, statistics, sys
path, storage, jobs = sys.argv[1:4]
rows = list(csv.DictReader(open(path), delimiter="\t"))
by = {}
for row in rows:
    by.setdefault((row["image"], row["tool"]), []).append(row)
print()
print(f"unpack every layer, output on {storage}, ours with --jobs {jobs} vs "
      f"gzip -dc | tar -x one layer after another; medians of "
      f"{len(by.get((rows[0]['image'], 'ours'), []))} interleaved rounds")
header = ("image", "ours s", "tar s", "ours/tar", "ours MiB/s", "ours cpu s", "tar cpu s",
          "ours peak RSS MiB (max)", "tar peak RSS MiB", "largest layer MiB")
table = [header]
for image in dict.fromkeys(row["image"] for row in rows):
    ours, tar = by[(image, "ours")], by[(image, "tar")]
    ours_s = statistics.median(float(r["wall_s"]) for r in ours)
    tar_s = statistics.median(float(r["wall_s"]) for r in tar)
    uncompressed = statistics.median(int(r["uncompressed_bytes"]) for r in ours)
    ours_rss = [int(r["maxrss_kib"]) / 1024 for r in ours]
    table.append((image, f"{ours_s:.3f}", f"{tar_s:.3f}", f"{ours_s / tar_s:.2f}",
                  f"{uncompressed / 1048576 / ours_s:.0f}",
                  f"{statistics.median(float(r['cpu_s']) for r in ours):.2f}",
                  f"{statistics.median(float(r['cpu_s']) for r in tar):.2f}",
                  f"{statistics.median(ours_rss):.1f} ({max(ours_rss):.1f})",
                  f"{statistics.median(int(r['maxrss_kib']) / 1024 for r in tar):.1f}",
                  f"{int(ours[0]['largest_layer_bytes']) / 1048576:.0f}"))
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
