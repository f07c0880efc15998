//! Pull orchestration and the image queries the CRI API answers. This module
//! knows no tonic, redb or HTTP types: it drives the metadata store, the
//! registry client, the content store and the unpacker, and speaks in domain
//! types ([`ImageView`], [`ServiceError`]).
//!
//! - `fetch`: the content half of a pull (resolve, platform choice, verified
//!   blobs into the content store).
//! - `listing_memo`: an answer made from the listing of every image (the
//!   encoded ListImages answer), kept until an image or a name changes.
//! - `lookup`: what a CRI `ImageSpec.image` names (a name, an id, an id prefix).
//! - `pull_progress`: the live per-layer progress table of one pull.
//! - `pull_result`: the metrics' `result` label of a failed pull, from the
//!   error enums in one function.
//! - `status_memo`: ImageStatus answers, kept until an image or a name
//!   changes.
//! - `store_stats`: the store's counts and sizes for metrics and `status`.

mod extraction_slots;
pub mod fetch;
mod inflight_pulls;
mod listing_memo;
mod lookup;
pub mod mount;
pub mod pull;
pub mod pull_progress;
mod pull_result;
mod status_memo;
mod store_stats;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::content_store::{ContentError, ContentStore};
use crate::gc::{GarbageCollector, GcError, GcReport};
use crate::metadata::{Image, ImageState, Lease, MetadataError, MetadataStore, NamedImage};
use crate::reference::{Digest, ReferenceError};
use crate::registry::credentials::CredentialsError;
use crate::registry::{RegistryClient, RegistryError};
use crate::snapshot_store::{SnapshotError, SnapshotStore};

pub use inflight_pulls::PullLimits;
pub use listing_memo::ListingMemo;
pub use lookup::ImageSelector;
pub use pull::{PullRequest, PullSettings, StartedPull};

/// An image as the CRI API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageView {
    pub id: Digest,
    /// Full names with a tag (`docker.io/library/busybox:1.36`), sorted.
    pub repo_tags: Vec<String>,
    /// Full names with a digest (`docker.io/library/busybox@sha256:…`), sorted.
    pub repo_digests: Vec<String>,
    pub size_bytes: u64,
    /// The config's user when numeric (before any `:`).
    pub uid: Option<i64>,
    /// The config's user when not numeric; empty otherwise.
    pub username: String,
    pub pinned: bool,
    pub annotations: BTreeMap<String, String>,
}

impl ImageView {
    fn new(image: &Image, names: &[String], pinned_by_config: bool) -> ImageView {
        let (repo_digests, repo_tags): (Vec<String>, Vec<String>) =
            names.iter().cloned().partition(|name| name.contains('@'));
        let user = image.config_user.split(':').next().unwrap_or_default();
        let uid = user.parse::<i64>().ok();
        ImageView {
            id: image.id().clone(),
            repo_tags,
            repo_digests,
            size_bytes: image.size_bytes,
            uid,
            username: if uid.is_none() {
                user.to_owned()
            } else {
                String::new()
            },
            pinned: image.pinned || pinned_by_config,
            annotations: image.annotations.clone(),
        }
    }
}

/// Disk used by images, for ImageFsInfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsUsage {
    pub timestamp_unix_ns: i64,
    /// The daemon's root directory, where content and snapshots live.
    pub mountpoint: std::path::PathBuf,
    pub used_bytes: u64,
    pub inodes_used: u64,
}

/// How long a computed [`FsUsage`] is served before it is computed again.
const FS_USAGE_CACHE_DURATION: std::time::Duration = std::time::Duration::from_secs(2);

/// Why an image operation failed, in terms a client can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    #[error("invalid image reference {input:?}: {source}")]
    InvalidReference {
        input: String,
        #[source]
        source: ReferenceError,
    },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    #[error("invalid registry credentials: {0}")]
    InvalidAuth(#[source] CredentialsError),
    #[error("unknown runtime handler {name:?}")]
    UnknownRuntimeHandler { name: String },
    #[error("cannot unpack layer {chain_id}: {source}")]
    Unpack {
        chain_id: Digest,
        #[source]
        source: Box<pull::LayerError>,
    },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error("too many pulls are waiting ({queued}); try again later")]
    TooManyPulls { queued: usize },
    #[error("pull of {reference} did not finish within its {deadline_ms} ms deadline")]
    PullDeadlineExceeded { reference: String, deadline_ms: u64 },
    #[error("the pull failed unexpectedly: {detail}")]
    PullTaskFailed { detail: String },
    #[error("no ready image named {image:?}")]
    ImageNotFound { image: String },
    #[error("image {image} has no layers to mount")]
    NoLayers { image: Digest },
    #[error("invalid mount target {target:?}: {reason}")]
    InvalidMountTarget {
        target: String,
        reason: &'static str,
    },
    #[error(transparent)]
    Gc(#[from] GcError),
}

/// A lease with the number of resources it protects, for ListLeases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    pub lease: Lease,
    pub resource_count: u64,
}

/// Names that are pinned by configuration: exact names and `prefix*` patterns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinnedImages {
    patterns: Vec<String>,
}

impl PinnedImages {
    pub fn new(patterns: Vec<String>) -> PinnedImages {
        PinnedImages { patterns }
    }

    pub fn matches_any(&self, names: &[String]) -> bool {
        names.iter().any(|name| {
            self.patterns
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => name == pattern,
                })
        })
    }
}

pub struct ImageService {
    metadata: Arc<MetadataStore>,
    content: Arc<ContentStore>,
    snapshots: Arc<SnapshotStore>,
    registry: RegistryClient,
    pinned: PinnedImages,
    settings: PullSettings,
    /// This daemon boot's id, recorded on every lease it takes.
    boot_id: String,
    fs_usage_cache: std::sync::Mutex<Option<(std::time::Instant, FsUsage)>>,
    gc: Arc<GarbageCollector>,
    inflight: Arc<inflight_pulls::InflightPulls<ServiceError>>,
    metrics: Arc<crate::metrics::Metrics>,
    status_memo: status_memo::StatusMemo,
}

/// What an [`ImageService`] works with.
pub struct ImageServiceParts {
    pub metadata: Arc<MetadataStore>,
    pub content: Arc<ContentStore>,
    pub snapshots: Arc<SnapshotStore>,
    pub registry: RegistryClient,
    pub pinned: PinnedImages,
    pub settings: PullSettings,
    pub boot_id: String,
    /// Woken after removals; runs passes on demand.
    pub gc: Arc<GarbageCollector>,
    /// Where pulls are counted; `Metrics::new()` for a service of its own.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl ImageService {
    pub fn new(parts: ImageServiceParts) -> ImageService {
        ImageService {
            metadata: parts.metadata,
            content: parts.content,
            snapshots: parts.snapshots,
            registry: parts.registry,
            pinned: parts.pinned,
            boot_id: parts.boot_id,
            fs_usage_cache: std::sync::Mutex::new(None),
            gc: parts.gc,
            inflight: Arc::new(inflight_pulls::InflightPulls::new(parts.settings.limits)),
            settings: parts.settings,
            metrics: parts.metrics,
            status_memo: status_memo::StatusMemo::new(),
        }
    }

    /// The metrics this service records into (the daemon serves them).
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// Every ready image, or only the one `filter` names.
    pub fn list_images(&self, filter: Option<&str>) -> Result<Vec<ImageView>, ServiceError> {
        if let Some(filter) = filter.filter(|filter| !filter.is_empty()) {
            return Ok(self.image_status(filter)?.into_iter().collect());
        }
        let listing = self.metadata.list_images()?;
        Ok(self.ready_views(&listing))
    }

    /// Every ready image as `render` makes them into an answer, from `memo`
    /// unless an image or a name changed since it last rendered.
    pub fn render_ready_images<T: Clone>(
        &self,
        memo: &ListingMemo<T>,
        render: impl FnOnce(Vec<ImageView>) -> T,
    ) -> Result<T, ServiceError> {
        let listing = self.metadata.list_images()?;
        memo.get_or_render(&listing, |images| {
            Ok::<_, ServiceError>(render(self.ready_views(images)))
        })
    }

    fn ready_views(&self, listing: &[NamedImage]) -> Vec<ImageView> {
        listing
            .iter()
            .filter(|named| named.image.state == ImageState::Ready)
            .map(|named| self.view(named))
            .collect()
    }

    /// The ready image `image` names, if any (absence is not an error).
    pub fn image_status(&self, image: &str) -> Result<Option<ImageView>, ServiceError> {
        // Read before the store is: see `status_memo`.
        let generation = self.metadata.image_generation();
        if let Some(answer) = self.status_memo.get(generation, image) {
            return Ok(answer);
        }
        let answer = self.image_status_from_store(image)?;
        self.status_memo.insert(generation, image, &answer);
        Ok(answer)
    }

    fn image_status_from_store(&self, image: &str) -> Result<Option<ImageView>, ServiceError> {
        let selector = ImageSelector::parse(image)?;
        let snapshot = self.metadata.read()?;
        let Some(found) = lookup::find_image(&snapshot, &selector)? else {
            return Ok(None);
        };
        if found.state != ImageState::Ready {
            return Ok(None);
        }
        let names = snapshot.names_of(found.id())?;
        Ok(Some(self.view(&NamedImage {
            image: found,
            names,
        })))
    }

    /// Removes the image `image` names, with all its names, in one transaction.
    /// Removing what is not there succeeds. Returns the id removed.
    pub fn remove_image(&self, image: &str) -> Result<Option<Digest>, ServiceError> {
        let selector = ImageSelector::parse(image)?;
        let snapshot = self.metadata.read()?;
        let removed = self.metadata.write(|txn| {
            let Some(id) = lookup::find_image_id_in_txn(txn, &selector, &snapshot)? else {
                return Ok(None);
            };
            Ok(txn.remove_image(&id)?.map(|names| (id, names)))
        })?;
        if let Some((id, names)) = &removed {
            tracing::info!(image = %id, names = ?names, "image removed");
            self.usage_changed();
            // Reclaims its content within seconds, without making the caller wait.
            self.gc.request_pass();
        }
        Ok(removed.map(|(id, _)| id))
    }

    /// Runs a gc pass now (after any pass in progress) and reports what it
    /// removed. A store failing its consistency check is an error here: the
    /// operator asked to reclaim space and none was (no file is deleted then).
    pub async fn collect_garbage(&self) -> Result<GcReport, ServiceError> {
        let report = self
            .gc
            .collect_now(crate::gc::PassTrigger::Requested)
            .await?;
        self.usage_changed();
        if !report.file_phase_skipped_for.is_empty() {
            return Err(ServiceError::Gc(GcError::StoreInconsistent {
                problems: report.file_phase_skipped_for,
            }));
        }
        Ok(report)
    }

    /// The report of the last gc pass that completed, if any (for DaemonStatus).
    pub fn last_gc_report(&self) -> Option<GcReport> {
        self.gc.last_report()
    }

    /// Every lease with the number of resources attached to it, in id order.
    pub fn leases(&self) -> Result<Vec<LeaseView>, ServiceError> {
        let read = self.metadata.read()?;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for (lease_id, _) in read.all_lease_resources()? {
            *counts.entry(lease_id).or_default() += 1;
        }
        Ok(read
            .leases()?
            .into_iter()
            .map(|lease| LeaseView {
                resource_count: counts.get(&lease.id).copied().unwrap_or(0),
                lease,
            })
            .collect())
    }

    /// The `info` map of a verbose ImageStatus: JSON values, as containerd
    /// gives them (its chain id, config, size and state).
    pub fn verbose_info(&self, id: &Digest) -> Result<BTreeMap<String, String>, ServiceError> {
        let Some(image) = self.metadata.read()?.image(id)? else {
            return Ok(BTreeMap::new());
        };
        let config = self
            .content
            .read_verified(&image.config.digest, 8 * 1024 * 1024)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .unwrap_or(serde_json::Value::Null);
        let info = serde_json::json!({
            "imageId": image.id().to_string(),
            "chainId": image.top_chain_id.as_ref().map(ToString::to_string),
            "size": image.size_bytes,
            "state": image.state.as_str(),
            "target": {
                "mediaType": image.target.media_type,
                "digest": image.target.digest.to_string(),
                "size": image.target.size_bytes,
            },
            "manifest": image.manifest.digest.to_string(),
            "imageSpec": config,
        });
        Ok(BTreeMap::from([("info".to_owned(), info.to_string())]))
    }

    /// Bytes and inodes used by content, ingests and snapshots, from the
    /// records (no tree walk). Cached briefly: the kubelet polls it.
    pub fn fs_usage(&self) -> Result<FsUsage, ServiceError> {
        let mut cache = self
            .fs_usage_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((taken, usage)) = cache.as_ref()
            && taken.elapsed() < FS_USAGE_CACHE_DURATION
        {
            return Ok(usage.clone());
        }
        let read = self.metadata.read()?;
        let mut used_bytes = 0u64;
        let mut inodes_used = 0u64;
        for blob in read.blobs()? {
            used_bytes += blob.size_bytes;
            inodes_used += 1;
        }
        for ingest in read.ingests()? {
            used_bytes += ingest.offset_bytes;
            inodes_used += 1;
        }
        for snapshot in read.snapshots()? {
            used_bytes += snapshot.size_bytes;
            inodes_used += snapshot.inodes.max(1);
        }
        let usage = FsUsage {
            timestamp_unix_ns: i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |elapsed| elapsed.as_nanos()),
            )
            .unwrap_or(i64::MAX)
            .max(1),
            mountpoint: self
                .content
                .paths()
                .content_directory()
                .parent()
                .map_or_else(
                    || self.content.paths().content_directory().to_path_buf(),
                    std::path::Path::to_path_buf,
                ),
            used_bytes,
            inodes_used,
        };
        *cache = Some((std::time::Instant::now(), usage.clone()));
        Ok(usage)
    }

    /// Drops the cached usage after a change that moves it.
    fn usage_changed(&self) {
        *self
            .fs_usage_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }

    fn view(&self, named: &NamedImage) -> ImageView {
        ImageView::new(
            &named.image,
            &named.names,
            self.pinned.matches_any(&named.names),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_patterns_match_exact_names_and_prefixes() {
        let pinned = PinnedImages::new(vec![
            "registry.k8s.io/pause:3.10".to_owned(),
            "docker.io/library/busybox*".to_owned(),
        ]);
        assert!(pinned.matches_any(&["registry.k8s.io/pause:3.10".to_owned()]));
        assert!(!pinned.matches_any(&["registry.k8s.io/pause:3.9".to_owned()]));
        assert!(pinned.matches_any(&["docker.io/library/busybox:1.36".to_owned()]));
        assert!(!pinned.matches_any(&[]));
    }
}
