//! Unpacks every layer of an OCI image layout (as `make_images.py` writes
//! them) with `cri_imaged::unpack` and prints one JSON line of figures: the
//! benchmark half of `benches/unpack_vs_tar.sh`, which times it against
//! `gzip -dc LAYER | tar -x` of the same layers one after another.
//!
//! It does what a daemon pull does once the blobs are stored
//! (`image_service::pull`'s `unpack_blob`): the daemon's unpack options
//! (`PullSettings::default().unpack`: privileged whiteouts and owners as
//! root, the same limits), the diff id of every layer checked against the
//! image config, each layer into its own empty directory, up to `--jobs`
//! layers at once (the daemon's `extractions_max`, default one per core),
//! each followed by `syncfs` of its filesystem. The layers are read from the
//! layout through a 1 MiB buffer, as the daemon reads them from its content
//! store; nothing is held in memory beyond that and the decoder's state.
//!
//! ```text
//! cargo run --release --example unpack_layers -- \
//!     --layout /tmp/bench/oci/bench-large --out /tmp/unpacked --jobs 2
//! ```
//!
//! The output directory must not exist or must be empty; it receives one
//! directory per layer, `layer-00` (the base) upwards, and is left in place.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::Parser;

use cri_imaged::image_service::PullSettings;
use cri_imaged::oci::Descriptor;
use cri_imaged::oci::manifest::{
    Manifest, ManifestLimits, decode_config, decode_manifest, layer_compression,
};
use cri_imaged::reference::Digest;
use cri_imaged::unpack::{UnpackOptions, UnpackOutcome, sync_filesystem_of, unpack_layer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One unpacked layer: its outcome and the seconds it took, syncfs included.
type LayerResult = Result<(UnpackOutcome, f64), BoxError>;

/// Unpacks every layer of an OCI image layout and prints one JSON line.
#[derive(Parser, Debug)]
struct Arguments {
    /// An OCI image layout directory (oci-layout, index.json, blobs/).
    #[arg(long)]
    layout: PathBuf,
    /// Where the layers go, one directory each; must not exist or be empty.
    #[arg(long)]
    out: PathBuf,
    /// Layers unpacked at once (the daemon's extractions_max; default one per core).
    #[arg(long, default_value_t = PullSettings::default().limits.extractions_max)]
    jobs: usize,
    /// Which manifest of index.json, by its `org.opencontainers.image.ref.name`
    /// annotation; default: the only one.
    #[arg(long)]
    tag: Option<String>,
}

/// One layer to unpack: its blob, the diff id the config promises, and where.
struct LayerJob {
    blob: Descriptor,
    blob_path: PathBuf,
    diff_id: Digest,
    directory: PathBuf,
}

fn main() -> Result<(), BoxError> {
    let arguments = Arguments::parse();
    let started = Instant::now();
    let jobs = read_layers(&arguments)?;
    ensure_fresh_directory(&arguments.out)?;
    for job in &jobs {
        std::fs::create_dir(&job.directory)
            .map_err(|error| format!("{}: {error}", job.directory.display()))?;
    }
    let options = PullSettings::default().unpack;
    let unpack_started = Instant::now();
    let outcomes = unpack_all(&jobs, &options, arguments.jobs.max(1))?;
    let unpack_seconds = unpack_started.elapsed().as_secs_f64();

    let compressed_bytes: u64 = jobs.iter().map(|job| job.blob.size_bytes).sum();
    let uncompressed_bytes: u64 = outcomes
        .iter()
        .map(|(outcome, _)| outcome.uncompressed_bytes)
        .sum();
    let figures = serde_json::json!({
        "layout": arguments.layout,
        "layers": jobs.len(),
        "jobs": arguments.jobs.max(1),
        "privileged_whiteouts": options.privileged_whiteouts,
        "compressed_bytes": compressed_bytes,
        "uncompressed_bytes": uncompressed_bytes,
        "entries": outcomes.iter().map(|(outcome, _)| outcome.entries).sum::<u64>(),
        "inodes": outcomes.iter().map(|(outcome, _)| outcome.inodes).sum::<u64>(),
        "file_bytes": outcomes.iter().map(|(outcome, _)| outcome.size_bytes).sum::<u64>(),
        // Every layer (unpack and syncfs), and everything from process start.
        "unpack_s": round_millis(unpack_seconds),
        "wall_s": round_millis(started.elapsed().as_secs_f64()),
        "layer_s": outcomes.iter().map(|(_, seconds)| round_millis(*seconds)).collect::<Vec<_>>(),
        "uncompressed_mib_s": round_millis(uncompressed_bytes as f64 / 1048576.0 / unpack_seconds),
        "peak_rss_kib": peak_rss_kibibytes(),
    });
    println!("{figures}");
    Ok(())
}

/// Reads index.json, the image manifest and its config, and pairs every
/// layer blob with its diff id and target directory.
fn read_layers(arguments: &Arguments) -> Result<Vec<LayerJob>, BoxError> {
    let layout = &arguments.layout;
    let index_path = layout.join("index.json");
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&index_path)
            .map_err(|error| format!("{}: {error}", index_path.display()))?,
    )?;
    let entries = index["manifests"]
        .as_array()
        .ok_or_else(|| format!("{} has no manifests array", index_path.display()))?;
    let chosen: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|entry| match &arguments.tag {
            None => true,
            Some(tag) => {
                entry["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag)
            }
        })
        .collect();
    let [entry] = chosen.as_slice() else {
        return Err(format!(
            "{} has {} matching manifests, not one (use --tag)",
            index_path.display(),
            chosen.len()
        )
        .into());
    };
    let manifest_digest = Digest::parse(entry["digest"].as_str().unwrap_or_default())?;
    let limits = ManifestLimits::default();
    let manifest_bytes = read_blob(layout, &manifest_digest)?;
    let media_type = entry["mediaType"].as_str();
    let manifest = match decode_manifest(&manifest_bytes, media_type, &limits)? {
        Manifest::Image(manifest) => manifest,
        Manifest::Index(_) => {
            return Err(
                format!("{manifest_digest} is an index; this example unpacks one image").into(),
            );
        }
    };
    let config = decode_config(&read_blob(layout, &manifest.config.digest)?, &limits)?;
    if config.diff_ids.len() != manifest.layers.len() {
        return Err(format!(
            "manifest {manifest_digest} has {} layers but its config {} diff ids",
            manifest.layers.len(),
            config.diff_ids.len()
        )
        .into());
    }
    Ok(manifest
        .layers
        .into_iter()
        .zip(config.diff_ids)
        .enumerate()
        .map(|(index, (blob, diff_id))| LayerJob {
            blob_path: blob_path(layout, &blob.digest),
            blob,
            diff_id,
            directory: arguments.out.join(format!("layer-{index:02}")),
        })
        .collect())
}

/// Unpacks the layers with `threads` workers taking them base first, as the
/// daemon's bounded parallel preparation does. Returns each layer's outcome
/// and seconds, in layer order, or the first error.
fn unpack_all(
    jobs: &[LayerJob],
    options: &UnpackOptions,
    threads: usize,
) -> Result<Vec<(UnpackOutcome, f64)>, BoxError> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<LayerResult>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.min(jobs.len()) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(index) else { return };
                    let started = Instant::now();
                    let result = unpack_one(job, options)
                        .map(|outcome| (outcome, started.elapsed().as_secs_f64()));
                    results.lock().expect("no worker panics while holding it")[index] =
                        Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("every worker has finished")
        .into_iter()
        .map(|result| result.expect("every layer was taken by a worker"))
        .collect()
}

/// One layer, as `image_service::pull::unpack_blob` does it: buffered read of
/// the blob, unpack with the diff id checked, then `syncfs`.
fn unpack_one(job: &LayerJob, options: &UnpackOptions) -> Result<UnpackOutcome, BoxError> {
    let compression = layer_compression(&job.blob.media_type).ok_or_else(|| {
        format!(
            "layer media type {:?} cannot be unpacked",
            job.blob.media_type
        )
    })?;
    let file = std::fs::File::open(&job.blob_path)
        .map_err(|error| format!("{}: {error}", job.blob_path.display()))?;
    let reader = std::io::BufReader::with_capacity(1024 * 1024, file);
    let options = UnpackOptions {
        expected_diff_id: Some(job.diff_id.clone()),
        ..options.clone()
    };
    let outcome = unpack_layer(reader, compression, &job.directory, &options)
        .map_err(|error| format!("layer {}: {}", job.blob.digest, error_chain(&error)))?;
    sync_filesystem_of(&job.directory)?;
    Ok(outcome)
}

fn read_blob(layout: &Path, digest: &Digest) -> Result<Vec<u8>, BoxError> {
    let path = blob_path(layout, digest);
    Ok(std::fs::read(&path).map_err(|error| format!("{}: {error}", path.display()))?)
}

/// `blobs/<algorithm>/<hex>`, the OCI image layout's only blob path.
fn blob_path(layout: &Path, digest: &Digest) -> PathBuf {
    layout
        .join("blobs")
        .join(digest.algorithm().name())
        .join(digest.hex())
}

/// Refuses an output directory that holds anything: unpacking needs empty
/// layer directories, and leftovers would make the figures lie.
fn ensure_fresh_directory(directory: &Path) -> Result<(), BoxError> {
    match std::fs::read_dir(directory) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(
                    format!("output directory {} is not empty", directory.display()).into(),
                );
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(directory)?;
            Ok(())
        }
        Err(error) => Err(format!("output directory {}: {error}", directory.display()).into()),
    }
}

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
