//! Garbage collection: mark and sweep over the metadata store, then over the
//! files.
//!
//! A pass has two phases, always in this order:
//! 1. Records (`mark`): in ONE write transaction, find what no root reaches
//!    and delete it: images (gc_pending ones and any no root keeps), blobs,
//!    snapshots, ingest records, and ended leases with their resource lists.
//!    The transaction commits durably before anything else happens.
//! 2. Files (`file_sweep`): after checking the store's invariants
//!    (`metadata::check_consistency`), delete every file under the content
//!    and snapshot directories that no record names. A store that fails the
//!    check loses no file: the pass logs the problems and stops there.
//!
//! Never the other way round: a crash between the phases leaves files that no
//! record names, which the next pass removes; never a record naming a missing
//! file. Readers are never blocked (redb MVCC); pulls are protected by their
//! leases, and `file_sweep` explains why a pull running during the file phase
//! never loses a file it is writing.
//!
//! One pass runs at a time. [`worker`] runs passes in the background: soon
//! after an image is removed, on a schedule, and when the earliest lease
//! expires; [`GarbageCollector::collect`] runs one on demand.

mod file_sweep;
pub mod lease_renewal;
mod mark;
pub mod worker;

#[cfg(test)]
pub(crate) mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use mark::{GRACE_LEASE_LABEL, is_grace_lease, lease_is_live};

use crate::content_store::BlobPaths;
use crate::metadata::{ConsistencyProblem, MetadataError, MetadataStore, check_consistency};

/// When background passes run, with units in the names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcSettings {
    /// A pass runs this long after the last pass even if nothing asked for one.
    pub schedule_interval_ms: u64,
    /// How often the worker re-reads the leases to learn of a new earliest
    /// expiry (a lease taken after it last looked).
    pub lease_check_interval_ms: u64,
}

impl Default for GcSettings {
    fn default() -> Self {
        GcSettings {
            schedule_interval_ms: 60 * 60 * 1000,
            lease_check_interval_ms: 60 * 1000,
        }
    }
}

/// Why a pass runs. An operator's request also ends grace leases: what
/// pulls interrupted by a restart stored is kept for the kubelet's retry, but
/// an explicit `cri-imaged gc` reclaims it at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassTrigger {
    /// CollectGarbage (`cri-imaged gc`).
    Requested,
    ImageRemoved,
    Schedule,
    LeaseExpired,
    /// Right after startup reconciliation, before the socket opens.
    Startup,
}

impl PassTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            PassTrigger::Requested => "requested",
            PassTrigger::ImageRemoved => "image removed",
            PassTrigger::Schedule => "schedule",
            PassTrigger::LeaseExpired => "lease expired",
            PassTrigger::Startup => "startup",
        }
    }

    fn ends_grace_leases(self) -> bool {
        self == PassTrigger::Requested
    }
}

/// What one pass removed and how long it took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub images_removed: u64,
    /// Blobs whose record, file or both were deleted (each digest counts once).
    pub blobs_removed: u64,
    pub snapshots_removed: u64,
    /// Ingests whose record, partial file or both were deleted.
    pub ingests_removed: u64,
    /// Ended leases removed with their resource lists.
    pub leases_removed: u64,
    /// Entries under the swept directories whose names are not ours.
    pub unknown_files_removed: u64,
    /// Bytes of the files deleted.
    pub bytes_freed: u64,
    /// The consistency problems that made the pass skip its file phase
    /// (empty when the file phase ran).
    pub file_phase_skipped_for: Vec<ConsistencyProblem>,
    /// How long the file phase held the metadata write lock (pulls' commits
    /// wait meanwhile; readers do not).
    pub writers_held_ms: u64,
    pub duration_ms: u64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcError {
    #[error("gc: {0}")]
    Metadata(#[from] MetadataError),
    #[error("gc cannot delete or list {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gc pass failed unexpectedly: {detail}")]
    TaskFailed { detail: String },
    #[error("fail point {name} fired")]
    FailPoint { name: &'static str },
    #[error(
        "gc deleted no file: the store fails its consistency check with {} problem(s), \
         the first: {}; run fsck",
        problems.len(),
        problems.first().map_or_else(String::new, ToString::to_string)
    )]
    StoreInconsistent { problems: Vec<ConsistencyProblem> },
}

impl GcError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GcError + '_ {
        move |source| GcError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where the collected content lives.
#[derive(Clone, Debug)]
pub struct GcPaths {
    /// `<root>/content` (holds `blobs/` and `ingest/`).
    pub content_directory: PathBuf,
    /// `<root>/snapshots`.
    pub snapshots_directory: PathBuf,
    /// A directory on the same filesystem as the snapshots, outside the swept
    /// directories (`<root>/gc-trash`).
    pub trash_directory: PathBuf,
}

impl GcPaths {
    /// The layout under a daemon root.
    pub fn under_root(root: &Path) -> GcPaths {
        GcPaths {
            content_directory: root.join("content"),
            snapshots_directory: root.join("snapshots"),
            trash_directory: root.join("gc-trash"),
        }
    }
}

pub struct GarbageCollector {
    metadata: Arc<MetadataStore>,
    directories: file_sweep::SweptDirectories,
    settings: GcSettings,
    /// Held for a whole pass: passes never overlap.
    pass: Mutex<()>,
    /// Set by [`GarbageCollector::request_pass`], cleared by the worker when it
    /// starts the pass that answers it.
    pass_requested: AtomicBool,
    wake: tokio::sync::Notify,
    last_report: Mutex<Option<GcReport>>,
    /// Where each pass is counted, once the daemon has metrics.
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

impl GarbageCollector {
    pub fn new(
        metadata: Arc<MetadataStore>,
        paths: GcPaths,
        settings: GcSettings,
    ) -> GarbageCollector {
        GarbageCollector {
            metadata,
            directories: file_sweep::SweptDirectories {
                blob_paths: BlobPaths::new(paths.content_directory),
                extracting_directory: paths.snapshots_directory.join("extracting"),
                snapshots_directory: paths.snapshots_directory,
                trash_directory: paths.trash_directory,
            },
            settings,
            pass: Mutex::new(()),
            pass_requested: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            last_report: Mutex::new(None),
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// Counts every pass from now on in `metrics` (and `cri-imaged status`).
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn record(&self, outcome: &Result<GcReport, GcError>, duration_ms: u64) {
        let Some(metrics) = self.metrics.get() else {
            return;
        };
        let summary = match outcome {
            Ok(report) => crate::metrics::GcRunSummary {
                duration_ms,
                images_removed: report.images_removed,
                blobs_removed: report.blobs_removed,
                snapshots_removed: report.snapshots_removed,
                ingests_removed: report.ingests_removed,
                leases_expired: report.leases_removed,
                bytes_freed: report.bytes_freed,
                error: (!report.file_phase_skipped_for.is_empty()).then(|| {
                    format!(
                        "file phase skipped: {} consistency problems (run fsck)",
                        report.file_phase_skipped_for.len()
                    )
                }),
            },
            Err(error) => crate::metrics::GcRunSummary {
                duration_ms,
                error: Some(error.to_string()),
                ..crate::metrics::GcRunSummary::default()
            },
        };
        metrics.record_gc(&summary);
    }

    pub fn settings(&self) -> &GcSettings {
        &self.settings
    }

    /// Asks the background worker for a pass now (after any pass in
    /// progress); returns at once.
    pub fn request_pass(&self) {
        self.pass_requested.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The report of the last pass that completed, if any.
    pub fn last_report(&self) -> Option<GcReport> {
        self.last_report
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Runs one pass off the async runtime, after any pass in progress.
    pub async fn collect_now(self: &Arc<Self>, trigger: PassTrigger) -> Result<GcReport, GcError> {
        let collector = self.clone();
        tokio::task::spawn_blocking(move || collector.collect(trigger))
            .await
            .map_err(|join_error| GcError::TaskFailed {
                detail: join_error.to_string(),
            })?
    }

    /// Runs one pass (blocking), after any pass in progress; logs one line.
    pub fn collect(&self, trigger: PassTrigger) -> Result<GcReport, GcError> {
        let reason = trigger.as_str();
        let _pass = self
            .pass
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let started = Instant::now();
        let outcome = self.collect_locked(trigger);
        // A pass reads every record: give back what that took.
        crate::memory::release_free_heap();
        self.record(&outcome, started.elapsed().as_millis() as u64);
        match &outcome {
            Ok(report) => {
                let mut report = report.clone();
                report.duration_ms = started.elapsed().as_millis() as u64;
                if report.file_phase_skipped_for.is_empty() {
                    tracing::info!(
                        reason,
                        images_removed = report.images_removed,
                        blobs_removed = report.blobs_removed,
                        snapshots_removed = report.snapshots_removed,
                        ingests_removed = report.ingests_removed,
                        leases_removed = report.leases_removed,
                        unknown_files_removed = report.unknown_files_removed,
                        bytes_freed = report.bytes_freed,
                        writers_held_ms = report.writers_held_ms,
                        duration_ms = report.duration_ms,
                        "gc pass done"
                    );
                } else {
                    tracing::error!(
                        reason,
                        problems = ?report.file_phase_skipped_for,
                        images_removed = report.images_removed,
                        leases_removed = report.leases_removed,
                        duration_ms = report.duration_ms,
                        "gc pass deleted no file: the store fails its consistency check \
                         (run fsck)"
                    );
                }
                *self
                    .last_report
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(report.clone());
                Ok(report)
            }
            Err(error) => {
                tracing::error!(reason, %error, "gc pass failed");
                outcome
            }
        }
    }

    fn collect_locked(&self, trigger: PassTrigger) -> Result<GcReport, GcError> {
        let records_removed = self.remove_unreachable_records(trigger)?;
        crate::fail_point!(
            "gc::between_record_and_file_phase",
            GcError::FailPoint {
                name: "gc::between_record_and_file_phase"
            }
        );
        let mut report = GcReport {
            images_removed: records_removed.images.len() as u64,
            leases_removed: records_removed.leases_removed,
            ..GcReport::default()
        };
        let problems = check_consistency(&self.metadata.read()?)?;
        if !problems.is_empty() {
            report.blobs_removed = records_removed.blobs.len() as u64;
            report.snapshots_removed = records_removed.snapshots.len() as u64;
            report.ingests_removed = records_removed.ingests.len() as u64;
            report.file_phase_skipped_for = problems;
            return Ok(report);
        }
        let files = file_sweep::sweep_files(&self.metadata, &self.directories)?;
        report.blobs_removed = union_count(&records_removed.blobs, &files.blobs);
        report.snapshots_removed = union_count(&records_removed.snapshots, &files.snapshots);
        report.ingests_removed = union_count(&records_removed.ingests, &files.ingests);
        report.unknown_files_removed = files.unknown.len() as u64;
        report.bytes_freed = files.bytes_freed;
        report.writers_held_ms = files.writers_held_ms;
        Ok(report)
    }

    /// The record phase: one durable write transaction that reads every record,
    /// marks, and deletes what is unreachable.
    fn remove_unreachable_records(&self, trigger: PassTrigger) -> Result<RecordsRemoved, GcError> {
        Ok(self.metadata.write(|txn| {
            let records = mark::StoreRecords {
                images: txn.images()?,
                blobs: txn.blobs()?,
                snapshots: txn.snapshots()?,
                ingests: txn.ingests()?,
                leases: txn.leases()?,
                lease_resources: txn.all_lease_resources()?,
            };
            let unreachable =
                mark::find_unreachable(&records, txn.now_unix_ms(), trigger.ends_grace_leases());
            let mut leases_removed = 0;
            for lease_id in &unreachable.leases {
                if txn.remove_lease(lease_id)?.is_some() {
                    leases_removed += 1;
                }
            }
            for id in &unreachable.images {
                txn.remove_image(id)?;
            }
            for digest in &unreachable.blobs {
                txn.remove_blob(digest)?;
            }
            for chain_id in &unreachable.snapshots {
                txn.remove_snapshot(chain_id)?;
            }
            for key in &unreachable.ingests {
                txn.remove_ingest(key)?;
            }
            Ok(RecordsRemoved {
                images: unreachable.images,
                blobs: unreachable.blobs,
                snapshots: unreachable.snapshots,
                ingests: unreachable.ingests,
                leases_removed,
            })
        })?)
    }

    /// The earliest expiry among live leases (unix ms), for the worker's timer.
    fn earliest_lease_expiry_unix_ms(&self) -> Result<Option<u64>, GcError> {
        let now = crate::metadata::unix_millis_now();
        Ok(self
            .metadata
            .read()?
            .leases()?
            .iter()
            .filter(|lease| lease.expires_unix_ms != 0)
            .map(|lease| lease.expires_unix_ms)
            .filter(|expires| *expires > now)
            .min())
    }

    /// Whether some lease has expired and still awaits collection.
    fn has_expired_lease(&self) -> Result<bool, GcError> {
        let now = crate::metadata::unix_millis_now();
        Ok(self
            .metadata
            .read()?
            .leases()?
            .iter()
            .any(|lease| !lease_is_live(lease, now)))
    }
}

struct RecordsRemoved {
    images: Vec<crate::reference::Digest>,
    blobs: Vec<crate::reference::Digest>,
    snapshots: Vec<crate::reference::Digest>,
    ingests: Vec<String>,
    leases_removed: u64,
}

fn union_count<T: Ord + Clone>(records: &[T], files: &[T]) -> u64 {
    let mut all: std::collections::BTreeSet<T> = records.iter().cloned().collect();
    all.extend(files.iter().cloned());
    all.len() as u64
}
