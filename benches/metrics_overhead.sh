#!/usr/bin/env bash
# Overhead of metrics on ImageStatus latency over the unix socket: the same
# release daemon started without --metrics-addr ("off"), with it ("on"), and
# with it while a scraper polls /metrics every 100 ms ("scraped", 150x
# Prometheus' usual rate, to make the cost of encoding visible). Requests
# are counted and timed by the observe layer in every mode (recording is not
# optional); the endpoint and its scrapes are what differ.
#
# Rounds are interleaved (off, on, scraped, then the next round), each on a
# fresh daemon and root. The client is examples/image_status_latency.rs: one
# call at a time, warm-up calls first, then --calls timed ones. Prints, per
# mode, the median over rounds of mean, p50 and p99 latency, and the change
# of each against "off".
#
# Usage, from the repo root:
#   bash benches/metrics_overhead.sh [--rounds N] [--calls N]
# Environment:
#   CARGO_TARGET_DIR  honoured by the build (cargo metadata tells where it is)

set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=5
calls=20000

while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --calls) calls=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$repo_root"
echo "== building (release)" >&2
cargo build --release --quiet --bin cri-imaged --example image_status_latency
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
daemon_bin=$target_dir/release/cri-imaged
client_bin=$target_dir/release/examples/image_status_latency

work=$(mktemp -d)
daemon_pid=
cleanup() {
    if [[ -n $daemon_pid ]]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Starts a daemon in $work/$1 with the remaining flags; sets daemon_pid.
start_daemon() {
    local directory=$work/$1; shift
    mkdir -p "$directory"
    CRI_IMAGED_LOG=warn,cri_imaged::daemon=info "$daemon_bin" --log-format json serve \
        --root "$directory/state" --socket "$directory/cri-imaged.sock" \
        --hosts-dir "$directory/certs.d" "$@" 2>"$directory/daemon.log" &
    daemon_pid=$!
    for _ in $(seq 1 400); do
        [[ -S $directory/cri-imaged.sock ]] && return 0
        sleep 0.025
    done
    echo "daemon did not start:" >&2; cat "$directory/daemon.log" >&2; exit 1
}

stop_daemon() {
    kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true; daemon_pid=
}

results=$work/results.jsonl
for round in $(seq 1 "$rounds"); do
    for mode in off on scraped; do
        directory=$work/$mode-$round
        scrape=()
        case $mode in
            off) start_daemon "$mode-$round" ;;
            on|scraped)
                start_daemon "$mode-$round" --metrics-addr 127.0.0.1:0
                address=$(python3 -c 'import json,sys
for line in open(sys.argv[1]):
    fields = json.loads(line).get("fields", {})
    if fields.get("message") == "serving metrics": print(fields["address"])' "$directory/daemon.log")
                [[ $mode == scraped ]] && scrape=(--scrape-url "http://$address/metrics" --scrape-interval-ms 100)
                ;;
        esac
        line=$("$client_bin" --socket "$directory/cri-imaged.sock" --calls "$calls" "${scrape[@]}")
        stop_daemon
        echo "{\"mode\": \"$mode\", \"round\": $round, \"figures\": $line}" >> "$results"
        echo "round $round $mode: $line" >&2
    done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
by_mode = {}
for row in rows:
    by_mode.setdefault(row["mode"], []).append(row["figures"])
def median(mode, key):
    return statistics.median(figures[key] for figures in by_mode[mode])
print(f"{'mode':<8} {'mean us':>9} {'p50 us':>9} {'p99 us':>9} {'calls/s':>9}   vs off (mean, p50, p99)")
for mode in ("off", "on", "scraped"):
    figures = [median(mode, key) for key in ("mean_us", "p50_us", "p99_us", "calls_per_second")]
    change = [
        f"{(median(mode, key) / median('off', key) - 1) * 100:+.1f}%"
        for key in ("mean_us", "p50_us", "p99_us")
    ]
    print(f"{mode:<8} {figures[0]:>9.1f} {figures[1]:>9.1f} {figures[2]:>9.1f} {figures[3]:>9.0f}   {', '.join(change)}")
PY
