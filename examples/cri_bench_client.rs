//! A CRI image client for benchmarks: the one client that
//! `benches/pull_vs_containerd.sh` drives both daemons with (ours and
//! containerd's CRI plugin), so that neither side is measured through a
//! different client stack. It talks `runtime.v1.ImageService` over any unix
//! socket with the generated client of `cri_imaged::api::client`, makes its
//! calls one after another on one connection (except `pull-many`), and prints
//! one JSON line of figures per command on stdout.
//!
//! ```text
//! cri_bench_client --socket S pull REF                   wall time of one PullImage
//! cri_bench_client --socket S pull-many [--parallel N] FILE
//!                                                        PullImage of every reference in FILE
//!                                                        (one a line; - for stdin), N at once
//! cri_bench_client --socket S status-latency REF --count N
//!                                                        p50/p90/p99 of ImageStatus
//! cri_bench_client --socket S list-latency --count N     p50/p90/p99 of ListImages, image count
//! cri_bench_client --socket S remove REF [--reclaim-root DIR --empty-bytes N]
//!                                                        wall time of one RemoveImage, and
//!                                                        the time until DIR shrank by 90% of
//!                                                        what it holds above N
//! cri_bench_client --socket S tree-bytes DIR             apparent bytes under DIR
//! cri_bench_client --socket S wait-ready [--timeout-s T] until ListImages answers
//! ```
//!
//! Latencies are measured around each call as the client sees it (encode,
//! socket round trip, decode), after `--warmup` untimed calls, so that the
//! connection setup and first-call allocations are not in the figures.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use cri_imaged::api::client::image_client;
use cri_imaged::api::proto::runtime::v1::{
    ImageSpec, ImageStatusRequest, ListImagesRequest, PullImageRequest, RemoveImageRequest,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Drives a CRI ImageService over a unix socket and prints one JSON line.
#[derive(Parser, Debug)]
struct Arguments {
    /// The daemon's CRI socket (ours or containerd's).
    #[arg(long)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pulls one image and prints the wall time of the PullImage call.
    Pull { reference: String },
    /// Pulls every reference listed in FILE (one a line, `-` for stdin),
    /// `--parallel` at a time, each on its own connection.
    PullMany {
        #[arg(long, default_value_t = 8)]
        parallel: usize,
        file: PathBuf,
    },
    /// Times `--count` ImageStatus calls of REF (which must be present).
    StatusLatency {
        reference: String,
        #[arg(long, default_value_t = 2000)]
        count: usize,
        #[arg(long, default_value_t = 50)]
        warmup: usize,
        /// Sleep between timed calls, in milliseconds: 0 times them back to
        /// back; more leaves both processes idle (and their CPUs halted)
        /// before each call, as the kubelet's occasional calls find them.
        #[arg(long = "pause-ms", default_value_t = 0)]
        pause_ms: u64,
    },
    /// Times `--count` ListImages calls (no filter) and reports the image count.
    ListLatency {
        #[arg(long, default_value_t = 200)]
        count: usize,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
    },
    /// Removes one image and prints the wall time of the RemoveImage call.
    /// With `--reclaim-root`: also the time from the call until the bytes
    /// under that directory (see `tree-bytes`), measured just before the
    /// call, have dropped by `--fraction` of their excess over
    /// `--empty-bytes` (what the root held before the image was pulled),
    /// polled every `--poll-ms`.
    Remove {
        reference: String,
        #[arg(long, requires = "empty_bytes")]
        reclaim_root: Option<PathBuf>,
        #[arg(long)]
        empty_bytes: Option<u64>,
        #[arg(long, default_value_t = 0.9)]
        fraction: f64,
        #[arg(long, default_value_t = 5)]
        poll_ms: u64,
        #[arg(long = "timeout-s", default_value_t = 30.0)]
        timeout_seconds: f64,
    },
    /// Prints the apparent bytes under DIR, like `du -sb`: every entry's
    /// size (directories and symlinks too), hard-linked files once, entries
    /// vanishing during the walk skipped. (The socket is not used.)
    TreeBytes { directory: PathBuf },
    /// Waits until the socket answers ListImages (the daemon is serving CRI).
    WaitReady {
        #[arg(long = "timeout-s", default_value_t = 30.0)]
        timeout_seconds: f64,
    },
}

fn main() -> Result<(), BoxError> {
    let arguments = Arguments::parse();
    // One thread: the client's own scheduling must not compete with the
    // daemon under test for the two cores more than a kubelet would.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let figures = runtime.block_on(run(arguments))?;
    println!("{figures}");
    Ok(())
}

async fn run(arguments: Arguments) -> Result<serde_json::Value, BoxError> {
    let socket = arguments.socket;
    match arguments.command {
        Command::Pull { reference } => {
            let mut client = image_client(&socket).await?;
            let started = Instant::now();
            let response = client.pull_image(pull_request(&reference)).await?;
            let wall_seconds = started.elapsed().as_secs_f64();
            Ok(serde_json::json!({
                "reference": reference,
                "image_ref": response.into_inner().image_ref,
                "wall_s": round_micros(wall_seconds),
            }))
        }
        Command::PullMany { parallel, file } => pull_many(&socket, parallel.max(1), &file).await,
        Command::StatusLatency {
            reference,
            count,
            warmup,
            pause_ms,
        } => {
            let mut client = image_client(&socket).await?;
            let request = ImageStatusRequest {
                image: Some(image_spec(&reference)),
                verbose: false,
            };
            let first = client.image_status(request.clone()).await?.into_inner();
            if first.image.is_none() {
                return Err(format!("image {reference} is not present: nothing to time").into());
            }
            for _ in 0..warmup {
                client.image_status(request.clone()).await?;
            }
            let mut latencies = Vec::with_capacity(count);
            for _ in 0..count {
                if pause_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                }
                let started = Instant::now();
                client.image_status(request.clone()).await?;
                latencies.push(started.elapsed());
            }
            Ok(serde_json::json!({
                "reference": reference,
                "latency": percentiles(&mut latencies),
            }))
        }
        Command::ListLatency { count, warmup } => {
            let mut client = image_client(&socket).await?;
            let mut images = 0;
            for _ in 0..warmup {
                images = client
                    .list_images(ListImagesRequest::default())
                    .await?
                    .into_inner()
                    .images
                    .len();
            }
            let mut latencies = Vec::with_capacity(count);
            for _ in 0..count {
                let started = Instant::now();
                let response = client.list_images(ListImagesRequest::default()).await?;
                latencies.push(started.elapsed());
                images = response.into_inner().images.len();
            }
            Ok(serde_json::json!({
                "images": images,
                "latency": percentiles(&mut latencies),
            }))
        }
        Command::Remove {
            reference,
            reclaim_root,
            empty_bytes,
            fraction,
            poll_ms,
            timeout_seconds,
        } => {
            let mut client = image_client(&socket).await?;
            let full_bytes = reclaim_root.as_deref().map(tree_bytes);
            let started = Instant::now();
            client
                .remove_image(RemoveImageRequest {
                    image: Some(image_spec(&reference)),
                })
                .await?;
            let call_seconds = started.elapsed().as_secs_f64();
            let mut figures = serde_json::json!({
                "reference": reference,
                "wall_s": round_micros(call_seconds),
            });
            if let (Some(root), Some(full), Some(empty)) = (reclaim_root, full_bytes, empty_bytes) {
                let added = full.saturating_sub(empty);
                let timeout = Duration::from_secs_f64(timeout_seconds);
                let (reclaimed_after, dropped) = loop {
                    let dropped = full.saturating_sub(tree_bytes(&root));
                    let elapsed = started.elapsed();
                    if dropped as f64 >= fraction * added as f64 {
                        break (Some(elapsed), dropped);
                    }
                    if elapsed >= timeout {
                        break (None, dropped);
                    }
                    tokio::time::sleep(Duration::from_millis(poll_ms)).await;
                };
                figures["reclaim_s"] = reclaimed_after.map_or(serde_json::Value::Null, |elapsed| {
                    round_micros(elapsed.as_secs_f64()).into()
                });
                figures["dropped_bytes"] = dropped.into();
                figures["added_bytes"] = added.into();
            }
            Ok(figures)
        }
        Command::TreeBytes { directory } => Ok(serde_json::json!({
            "bytes": tree_bytes(&directory),
        })),
        Command::WaitReady { timeout_seconds } => {
            wait_ready(&socket, Duration::from_secs_f64(timeout_seconds)).await
        }
    }
}

/// Pulls every listed reference with `parallel` workers, each holding its own
/// connection, as several kubelet pulls would.
async fn pull_many(
    socket: &std::path::Path,
    parallel: usize,
    file: &std::path::Path,
) -> Result<serde_json::Value, BoxError> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).map_err(|error| format!("{}: {error}", file.display()))?
    };
    let references: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let references = std::sync::Arc::new(references);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..parallel {
        let next = next.clone();
        let references = references.clone();
        let socket = socket.to_owned();
        workers.spawn(async move {
            let mut client = image_client(&socket).await?;
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(reference) = references.get(index) else {
                    return Ok::<(), BoxError>(());
                };
                client
                    .pull_image(pull_request(reference))
                    .await
                    .map_err(|status| format!("pull {reference}: {status}"))?;
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined??;
    }
    let wall_seconds = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "pulled": references.len(),
        "parallel": parallel,
        "wall_s": round_micros(wall_seconds),
        "pulls_per_s": (references.len() as f64 / wall_seconds).round(),
    }))
}

/// Polls with ListImages until the daemon answers. A socket file is not
/// enough: it may be a stale one from the previous run until the daemon
/// replaces it, and containerd serves its socket before its CRI plugin has
/// initialized (calls fail until then), so only an answered call says the
/// daemon is ready.
async fn wait_ready(
    socket: &std::path::Path,
    timeout: Duration,
) -> Result<serde_json::Value, BoxError> {
    let started = Instant::now();
    loop {
        let attempt = async {
            let mut client = image_client(socket).await?;
            client.list_images(ListImagesRequest::default()).await?;
            Ok::<(), BoxError>(())
        };
        match attempt.await {
            Ok(()) => {
                return Ok(serde_json::json!({
                    "ready_after_s": round_micros(started.elapsed().as_secs_f64()),
                }));
            }
            Err(error) if started.elapsed() >= timeout => {
                return Err(format!(
                    "{} did not answer ListImages within {timeout:?}: {error}",
                    socket.display()
                )
                .into());
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Apparent bytes under `root` (see the `tree-bytes` command).
fn tree_bytes(root: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut to_visit = vec![root.to_path_buf()];
    while let Some(directory) = to_visit.pop() {
        let Ok(listing) = std::fs::read_dir(&directory) else {
            continue;
        };
        for entry in listing.flatten() {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.is_dir() {
                to_visit.push(entry.path());
            } else if metadata.nlink() > 1 && !seen.insert((metadata.dev(), metadata.ino())) {
                continue;
            }
            total += metadata.len();
        }
    }
    total
}

fn image_spec(reference: &str) -> ImageSpec {
    ImageSpec {
        image: reference.to_owned(),
        ..ImageSpec::default()
    }
}

fn pull_request(reference: &str) -> PullImageRequest {
    PullImageRequest {
        image: Some(image_spec(reference)),
        ..PullImageRequest::default()
    }
}

/// p50, p90, p99, min and max in microseconds (nearest rank).
fn percentiles(latencies: &mut [Duration]) -> serde_json::Value {
    latencies.sort_unstable();
    let at = |fraction: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((fraction * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        round_tenth(latencies[rank - 1].as_secs_f64() * 1e6)
    };
    serde_json::json!({
        "count": latencies.len(),
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "min_us": at(0.0),
        "max_us": at(1.0),
    })
}

fn round_micros(seconds: f64) -> f64 {
    (seconds * 1e6).round() / 1e6
}

fn round_tenth(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}
