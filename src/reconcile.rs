//! Startup reconciliation, run after the metadata store opens and before the
//! socket does: it turns whatever a crash left behind into a consistent state
//! in which nothing half-pulled is visible.
//!
//! - Leases of earlier boots end. What they protected that was stored safely
//!   (verified blobs, partial ingests with their offsets, committed snapshots)
//!   moves under one grace lease of this boot, so the kubelet's retry resumes
//!   instead of starting over; gc reclaims it once the grace period ends (the
//!   gc worker wakes when the grace lease expires).
//! - Images left `pulling` become `gc_pending`: never shown, reclaimed by gc.
//! - Snapshots left `extracting` lose their record, and every directory under
//!   `snapshots/extracting/` is removed.
//! - Ready images whose blobs or snapshots are missing or the wrong size on
//!   disk become `gc_pending` (logged), so they are pulled again rather than
//!   served broken.
//!
//! Files that no record names (a crash between a rename and its record) are
//! removed by the gc pass the daemon runs right after, before it listens.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::fsck::{FsckError, StoreLayout, broken_ready_images};
use crate::image_service::mount::is_mount_lease;
use crate::metadata::{
    ImageState, Lease, LeaseResource, MetadataError, MetadataStore, SnapshotState,
};
use crate::snapshot_store::SnapshotStore;

/// What reconciliation found and did, for its one summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileSummary {
    pub leases_ended: u64,
    pub resources_kept_for_grace: u64,
    pub images_marked_gc_pending: u64,
    /// Ready images whose files were missing or the wrong size on disk.
    pub broken_images_marked_gc_pending: u64,
    pub extracting_snapshots_removed: u64,
    pub extracting_directories_removed: u64,
    pub elapsed_ms: u64,
}

impl ReconcileSummary {
    /// What was found, by kind, for the `reconcile_problems` metric.
    pub fn problems_by_kind(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("leases_ended", self.leases_ended),
            ("resources_kept_for_grace", self.resources_kept_for_grace),
            ("images_marked_gc_pending", self.images_marked_gc_pending),
            (
                "broken_images_marked_gc_pending",
                self.broken_images_marked_gc_pending,
            ),
            (
                "extracting_snapshots_removed",
                self.extracting_snapshots_removed,
            ),
            (
                "extracting_directories_removed",
                self.extracting_directories_removed,
            ),
        ]
    }

    /// The line `cri-imaged status` shows.
    pub fn one_line(&self) -> String {
        format!(
            "ended {} leases of earlier boots (kept {} resources for the grace period), \
             marked {} interrupted and {} broken images gc_pending, removed {} extracting \
             snapshots and {} extracting directories in {} ms",
            self.leases_ended,
            self.resources_kept_for_grace,
            self.images_marked_gc_pending,
            self.broken_images_marked_gc_pending,
            self.extracting_snapshots_removed,
            self.extracting_directories_removed,
            self.elapsed_ms
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("cannot clean {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reconciles the store for boot `boot_id`; `grace_period_ms` is how long what
/// interrupted pulls stored stays protected.
pub fn reconcile(
    metadata: &MetadataStore,
    snapshots: &SnapshotStore,
    layout: &StoreLayout,
    boot_id: &str,
    grace_period_ms: u64,
) -> Result<ReconcileSummary, ReconcileError> {
    let started = Instant::now();
    let mut summary = ReconcileSummary::default();
    metadata.write(|txn| {
        let now = txn.now_unix_ms();
        let read_leases: Vec<Lease> = txn
            .leases()?
            .into_iter()
            // A mount lease outlives the daemon run that took it, as the
            // kernel mount does; `cri-imaged unmount` ends it.
            .filter(|lease| lease.boot_id != boot_id && !is_mount_lease(lease))
            .collect();
        let mut kept: Vec<LeaseResource> = Vec::new();
        for lease in &read_leases {
            if let Some(resources) = txn.remove_lease(&lease.id)? {
                kept.extend(resources.into_iter().filter(|resource| {
                    // An image record of an interrupted pull is not kept: it
                    // becomes gc_pending below. Its content is.
                    !matches!(resource, LeaseResource::Image(_))
                }));
            }
            summary.leases_ended += 1;
        }
        if !kept.is_empty() {
            let grace = Lease {
                id: format!("grace-{boot_id}"),
                created_unix_ms: now,
                expires_unix_ms: now + grace_period_ms,
                boot_id: boot_id.to_owned(),
                labels: BTreeMap::from([
                    (
                        "cri-imaged/purpose".to_owned(),
                        "content of pulls interrupted by a restart".to_owned(),
                    ),
                    // An operator's `cri-imaged gc` ends it early.
                    (crate::gc::GRACE_LEASE_LABEL.to_owned(), "true".to_owned()),
                ]),
            };
            txn.put_lease(&grace)?;
            kept.sort();
            kept.dedup();
            // Only what is still recorded: a lease naming nothing protects nothing.
            for resource in &kept {
                if txn.attach_existing_to_lease(&grace.id, resource)? {
                    summary.resources_kept_for_grace += 1;
                }
            }
        }
        Ok(())
    })?;

    let read = metadata.read()?;
    let pulling = read.list_images_in_state(ImageState::Pulling)?;
    let extracting: Vec<_> = read
        .snapshots()?
        .into_iter()
        .filter(|snapshot| snapshot.state == SnapshotState::Extracting)
        .collect();
    drop(read);
    metadata.write(|txn| {
        for image in &pulling {
            txn.set_image_state(image.id(), ImageState::GcPending)?;
        }
        for snapshot in &extracting {
            txn.remove_snapshot(&snapshot.chain_id)?;
        }
        Ok(())
    })?;
    summary.images_marked_gc_pending = pulling.len() as u64;
    summary.extracting_snapshots_removed = extracting.len() as u64;

    // Files deleted or truncated behind our back: such an image would be
    // served broken. Not ready any more, it is pulled again (what is intact
    // is reused; the damaged records are replaced by the new pull).
    let broken = broken_ready_images(metadata, layout).map_err(|error| match error {
        FsckError::Metadata(error) => ReconcileError::Metadata(error),
        FsckError::Io { path, source } => ReconcileError::Io { path, source },
    })?;
    if !broken.is_empty() {
        metadata.write(|txn| {
            for (image_id, _) in &broken {
                txn.set_image_state(image_id, ImageState::GcPending)?;
            }
            Ok(())
        })?;
        for (image_id, cause) in &broken {
            tracing::warn!(image = %image_id, %cause, "ready image is broken on disk; marked gc_pending so it is pulled again");
        }
    }
    summary.broken_images_marked_gc_pending = broken.len() as u64;

    let extracting_directory = snapshots.extracting_directory();
    let io = |source| ReconcileError::Io {
        path: extracting_directory.clone(),
        source,
    };
    for entry in std::fs::read_dir(&extracting_directory).map_err(io)? {
        let path = entry.map_err(io)?.path();
        std::fs::remove_dir_all(&path).map_err(|source| ReconcileError::Io {
            path: path.clone(),
            source,
        })?;
        summary.extracting_directories_removed += 1;
    }
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        leases_ended = summary.leases_ended,
        resources_kept_for_grace = summary.resources_kept_for_grace,
        images_marked_gc_pending = summary.images_marked_gc_pending,
        broken_images_marked_gc_pending = summary.broken_images_marked_gc_pending,
        extracting_snapshots_removed = summary.extracting_snapshots_removed,
        extracting_directories_removed = summary.extracting_directories_removed,
        elapsed_ms = summary.elapsed_ms,
        "reconciled the store"
    );
    Ok(summary)
}
