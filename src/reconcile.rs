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
//! - Snapshots committed but not yet synced (`snapshot_store::sync`): under
//!   the same kernel boot their pages are still in the page cache, so one
//!   `syncfs` makes them durable; under an earlier kernel boot the machine
//!   went down and may have lost those pages, so each such snapshot, and
//!   every snapshot above it, loses its record, and the images using them
//!   become `gc_pending` (pulled, and unpacked, again).
//!
//! Files that no record names (a crash between a rename and its record) are
//! removed by the gc pass the daemon runs right after, before it listens.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::fsck::{FsckError, StoreLayout, broken_ready_images};
use crate::image_service::mount::is_mount_lease;
use crate::metadata::{
    ImageState, Lease, LeaseResource, MetadataError, MetadataStore, SnapshotState,
};
use crate::reference::Digest;
use crate::snapshot_store::{SnapshotError, SnapshotStore};

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
    /// Unsynced snapshots of this kernel boot, synced now.
    pub unsynced_snapshots_synced: u64,
    /// Unsynced snapshots of an earlier kernel boot, and those above them:
    /// records removed, to be unpacked again.
    pub unsynced_snapshots_lost: u64,
    /// Images that used a lost snapshot.
    pub images_of_lost_snapshots_marked_gc_pending: u64,
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
            ("unsynced_snapshots_synced", self.unsynced_snapshots_synced),
            ("unsynced_snapshots_lost", self.unsynced_snapshots_lost),
            (
                "images_of_lost_snapshots_marked_gc_pending",
                self.images_of_lost_snapshots_marked_gc_pending,
            ),
        ]
    }

    /// The line `cri-imaged status` shows.
    pub fn one_line(&self) -> String {
        format!(
            "ended {} leases of earlier boots (kept {} resources for the grace period), \
             marked {} interrupted and {} broken images gc_pending, removed {} extracting \
             snapshots and {} extracting directories, synced {} snapshots, dropped {} \
             snapshots unsynced before a reboot ({} images gc_pending) in {} ms",
            self.leases_ended,
            self.resources_kept_for_grace,
            self.images_marked_gc_pending,
            self.broken_images_marked_gc_pending,
            self.extracting_snapshots_removed,
            self.extracting_directories_removed,
            self.unsynced_snapshots_synced,
            self.unsynced_snapshots_lost,
            self.images_of_lost_snapshots_marked_gc_pending,
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
    #[error("cannot sync the snapshots committed before the restart: {0}")]
    SyncSnapshots(#[source] SnapshotError),
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
    // First, so that nothing below (the grace lease) keeps a lost snapshot.
    drop_snapshots_lost_in_a_reboot(metadata, snapshots, &mut summary)?;
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
        unsynced_snapshots_synced = summary.unsynced_snapshots_synced,
        unsynced_snapshots_lost = summary.unsynced_snapshots_lost,
        images_of_lost_snapshots_marked_gc_pending =
            summary.images_of_lost_snapshots_marked_gc_pending,
        elapsed_ms = summary.elapsed_ms,
        "reconciled the store"
    );
    Ok(summary)
}

/// Drops the snapshots left unsynced by an earlier kernel boot (with every
/// snapshot above them, whose parent chain they break) and marks the images
/// using them `gc_pending`, in one transaction; then syncs what this kernel
/// boot left unsynced, whose pages are still in the page cache.
fn drop_snapshots_lost_in_a_reboot(
    metadata: &MetadataStore,
    snapshots: &SnapshotStore,
    summary: &mut ReconcileSummary,
) -> Result<(), ReconcileError> {
    let read = metadata.read()?;
    let unsynced = read.unsynced_snapshots()?;
    let mut lost: BTreeSet<Digest> = unsynced
        .iter()
        .filter(|mark| mark.kernel_boot_id != snapshots.kernel_boot_id())
        .map(|mark| mark.chain_id.clone())
        .collect();
    let kept_unsynced = unsynced.len() - lost.len();
    if !lost.is_empty() {
        let parents: BTreeMap<Digest, Option<Digest>> = read
            .snapshots()?
            .into_iter()
            .map(|snapshot| (snapshot.chain_id, snapshot.parent))
            .collect();
        // A snapshot is lost if any snapshot below it is (bounded by the
        // number of snapshots, so a damaged cycle cannot loop forever).
        let lost_below = |top: &Digest, lost: &BTreeSet<Digest>| {
            let mut next = Some(top.clone());
            for _ in 0..=parents.len() {
                let Some(chain_id) = next.take() else { break };
                if lost.contains(&chain_id) {
                    return true;
                }
                next = parents.get(&chain_id).cloned().flatten();
            }
            false
        };
        let above: Vec<Digest> = parents
            .keys()
            .filter(|chain_id| !lost.contains(*chain_id) && lost_below(chain_id, &lost))
            .cloned()
            .collect();
        lost.extend(above);
        let images: Vec<Digest> = read
            .list_images()?
            .into_iter()
            .filter(|named| named.image.state != ImageState::GcPending)
            .filter(|named| {
                named
                    .image
                    .top_chain_id
                    .as_ref()
                    .is_some_and(|top| lost_below(top, &lost))
            })
            .map(|named| named.image.id().clone())
            .collect();
        drop(read);
        metadata.write(|txn| {
            for image_id in &images {
                txn.set_image_state(image_id, ImageState::GcPending)?;
            }
            for chain_id in &lost {
                txn.remove_snapshot(chain_id)?;
            }
            Ok(())
        })?;
        for image_id in &images {
            tracing::warn!(image = %image_id, "image used snapshots not yet synced when the machine went down; marked gc_pending so it is pulled again");
        }
        summary.unsynced_snapshots_lost = lost.len() as u64;
        summary.images_of_lost_snapshots_marked_gc_pending = images.len() as u64;
    }
    if kept_unsynced > 0 {
        summary.unsynced_snapshots_synced = snapshots
            .sync_committed()
            .map_err(ReconcileError::SyncSnapshots)?
            as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gc::tests::{Fixture, digest};

    fn state_of(fixture: &Fixture, image_id: &Digest) -> ImageState {
        fixture
            .metadata
            .read()
            .unwrap()
            .image(image_id)
            .unwrap()
            .unwrap()
            .state
    }

    /// Base `s1` synced long ago; `s2` on it left unsynced by the kernel boot
    /// before a crash, and `s3` on `s2` synced later (a sync after a failed
    /// one); `s4` on `s1` left unsynced by the running kernel boot.
    #[test]
    fn snapshots_unsynced_before_a_reboot_go_with_what_stands_on_them_and_the_rest_is_synced() {
        let fixture = Fixture::new();
        let [s1, s2, s3, s4] = [1, 2, 3, 4].map(|number| digest(0x5a, number));
        let layer = |number| digest(0x1a, number);
        let on_lost = fixture.image(
            1,
            ImageState::Ready,
            &[layer(1), layer(2)],
            &[s1.clone(), s2.clone()],
        );
        let above_lost = fixture.image(
            2,
            ImageState::Ready,
            &[layer(1), layer(2), layer(3)],
            &[s1.clone(), s2.clone(), s3.clone()],
        );
        let base_only = fixture.image(3, ImageState::Ready, &[layer(1)], std::slice::from_ref(&s1));
        let this_boot = fixture.image(
            4,
            ImageState::Ready,
            &[layer(1), layer(4)],
            &[s1.clone(), s4.clone()],
        );
        fixture.mark_unsynced(&s2, "boot-before-the-crash");
        fixture.mark_unsynced(&s4, "boot-now");
        fixture.assert_consistent();

        let snapshots = SnapshotStore::open_for_kernel_boot(
            fixture.root.join("snapshots"),
            fixture.metadata.clone(),
            "boot-now".to_owned(),
        )
        .unwrap();
        let summary = reconcile(
            &fixture.metadata,
            &snapshots,
            &StoreLayout::under_root(&fixture.root),
            "daemon-boot",
            600_000,
        )
        .unwrap();

        assert_eq!(summary.unsynced_snapshots_lost, 2, "{summary:?}");
        assert_eq!(summary.images_of_lost_snapshots_marked_gc_pending, 2);
        assert_eq!(summary.unsynced_snapshots_synced, 1);
        assert_eq!(summary.broken_images_marked_gc_pending, 0);
        assert_eq!(state_of(&fixture, &on_lost), ImageState::GcPending);
        assert_eq!(state_of(&fixture, &above_lost), ImageState::GcPending);
        assert_eq!(state_of(&fixture, &base_only), ImageState::Ready);
        assert_eq!(state_of(&fixture, &this_boot), ImageState::Ready);
        assert_eq!(
            fixture
                .metadata
                .read()
                .unwrap()
                .unsynced_snapshots()
                .unwrap(),
            vec![]
        );
        fixture.assert_consistent();
        // The lost snapshots' directories are named by no record: gc takes them.
        fixture.collect();
        for lost in [&s2, &s3] {
            assert_eq!(fixture.has_snapshot(lost), (false, false), "{lost}");
        }
        for kept in [&s1, &s4] {
            assert_eq!(fixture.has_snapshot(kept), (true, true), "{kept}");
        }
    }
}
