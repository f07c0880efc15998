//! Pulls the content of one image (index, manifest, config, layers) into a
//! fresh store and prints one JSON line of figures: the benchmark half of
//! `benches/pull_vs_skopeo.sh`, which times it against `skopeo copy`.
//!
//! It goes through the same library path as a daemon pull (metadata store,
//! content store under a lease, registry session, `fetch_image`), so what it
//! measures is the download, verification and durable commit of every blob;
//! nothing is unpacked. The root must not exist or must be empty, so that
//! every run downloads everything.
//!
//! ```text
//! cargo run --release --example fetch_image -- \
//!     --root /tmp/store --layer-downloads 3 127.0.0.1:5000/bench/large:v1
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;

use cri_imaged::content_store::{ContentLimits, ContentStore};
use cri_imaged::image_service::fetch::{FetchLimits, fetch_image};
use cri_imaged::metadata::{Lease, MetadataStore};
use cri_imaged::oci::platform::Platform;
use cri_imaged::reference::ImageReference;
use cri_imaged::registry::{DefaultEndpoints, RegistryClient, RegistryConfig, RegistryCredentials};

const LEASE_ID: &str = "fetch-image-example";

/// Pulls the content of one image into a fresh store and prints one JSON line.
#[derive(Parser, Debug)]
struct Arguments {
    /// Store root (metadata.redb and content/ go here); must not exist or be empty.
    #[arg(long)]
    root: PathBuf,
    /// Layers downloaded at once (FetchLimits.layer_downloads_max).
    #[arg(long = "layer-downloads", default_value_t = FetchLimits::default().layer_downloads_max)]
    layer_downloads_max: usize,
    /// The platform to choose out of an index.
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// Tokio worker threads; 0 means one per core (the tokio default).
    #[arg(long = "worker-threads", default_value_t = 0)]
    worker_threads: usize,
    /// Image reference, e.g. 127.0.0.1:5000/bench/large:v1.
    reference: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arguments = Arguments::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if arguments.worker_threads > 0 {
        runtime.worker_threads(arguments.worker_threads);
    }
    let runtime = runtime.build()?;
    let started = Instant::now();
    runtime.block_on(run(&arguments, started))
}

async fn run(arguments: &Arguments, started: Instant) -> Result<(), Box<dyn std::error::Error>> {
    ensure_fresh_root(&arguments.root)?;
    let reference = ImageReference::parse_docker_ref(&arguments.reference)?;
    let platform = Platform::parse(&arguments.platform)?;

    let (metadata, _) = MetadataStore::open(&arguments.root.join("metadata.redb"))?;
    let metadata = Arc::new(metadata);
    let lease = Lease {
        id: LEASE_ID.to_owned(),
        created_unix_ms: 0,
        expires_unix_ms: u64::MAX,
        boot_id: "fetch-image-example".to_owned(),
        labels: Default::default(),
    };
    metadata.write(|txn| txn.put_lease(&lease))?;
    let content = ContentStore::open(
        arguments.root.join("content"),
        metadata.clone(),
        ContentLimits::default(),
    )?;
    let client = RegistryClient::new(RegistryConfig::default(), Box::new(DefaultEndpoints));
    let session = client.session(&reference, RegistryCredentials::anonymous())?;
    let limits = FetchLimits {
        layer_downloads_max: arguments.layer_downloads_max,
        ..FetchLimits::default()
    };

    let fetch_started = Instant::now();
    let fetched = fetch_image(&session, &content, &reference, &platform, LEASE_ID, &limits).await?;
    let fetch_seconds = fetch_started.elapsed().as_secs_f64();
    let total_seconds = started.elapsed().as_secs_f64();

    let stored_bytes: u64 = fetched
        .layers
        .iter()
        .map(|layer| layer.blob.size_bytes)
        .sum();
    let figures = serde_json::json!({
        "reference": arguments.reference,
        "manifest_digest": fetched.manifest.digest.to_string(),
        "layers": fetched.layers.len(),
        "layer_downloads_max": arguments.layer_downloads_max,
        "downloaded_bytes": fetched.downloaded_bytes(),
        "layer_bytes": stored_bytes,
        // fetch_image alone, and everything from runtime start (store open included).
        "fetch_s": round_millis(fetch_seconds),
        "wall_s": round_millis(total_seconds),
        "throughput_mib_s": round_millis(fetched.downloaded_bytes() as f64 / 1048576.0 / fetch_seconds),
        "peak_rss_kib": peak_rss_kibibytes(),
    });
    println!("{figures}");
    Ok(())
}

/// Refuses a root that holds anything: a leftover blob would be reused, not
/// downloaded, and the figures would lie.
fn ensure_fresh_root(root: &Path) -> Result<(), Box<dyn std::error::Error>> {
    match std::fs::read_dir(root) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!("store root {} is not empty", root.display()).into());
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(root)?;
            Ok(())
        }
        Err(error) => Err(format!("store root {}: {error}", root.display()).into()),
    }
}

/// The process's high-water resident set (`VmHWM`), in KiB; None off Linux.
fn peak_rss_kibibytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

fn round_millis(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
