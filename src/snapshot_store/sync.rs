//! The background sync of committed snapshots.
//!
//! A pull commits its snapshots without waiting for the disk: each commit
//! records the snapshot in `unsynced_snapshots` with the kernel boot that
//! wrote it and wakes this worker, which waits `delay` for more commits to
//! gather, reads the marks, runs one `syncfs` on the snapshot filesystem and
//! then removes the marks it read. A mark read before the `syncfs` began
//! names files written before it began (the mark commits after its files),
//! so the sync covers them. A mark that changed meanwhile (the snapshot was
//! removed and committed again) stays for the next round.
//!
//! Why not sync inside the pull, as schema v2 did: `syncfs` writes back every
//! dirty page of the filesystem, the pull's and any container's, and the
//! kubelet waits for the pull. The pages are safe in the kernel while it
//! runs; only a machine crash loses them, and then the kernel boot id
//! changes, which is how startup reconciliation knows which snapshots to
//! distrust.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{SnapshotError, SnapshotStore};

/// Where Linux publishes the id of the running kernel boot.
pub const KERNEL_BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// The kernel boot id read from `path`. When it cannot be read, a new random
/// id stands in (logged): every start then counts as a new kernel boot, so
/// what was left unsynced is distrusted rather than trusted wrongly.
pub fn kernel_boot_id(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
        outcome => {
            let id = format!("unknown-{}", uuid::Uuid::new_v4());
            let error = match outcome {
                Ok(_) => "empty".to_owned(),
                Err(error) => error.to_string(),
            };
            tracing::warn!(
                path = %path.display(),
                %error,
                stand_in = %id,
                "cannot read the kernel boot id; snapshots left unsynced by earlier runs will be \
                 unpacked again"
            );
            id
        }
    }
}

/// The running kernel's boot id, from [`KERNEL_BOOT_ID_PATH`].
pub fn running_kernel_boot_id() -> String {
    kernel_boot_id(Path::new(KERNEL_BOOT_ID_PATH))
}

impl SnapshotStore {
    /// Makes every committed snapshot durable: one `syncfs`, then the marks
    /// read before it are removed in one transaction. Returns how many marks
    /// it cleared. Blocking.
    pub fn sync_committed(&self) -> Result<usize, SnapshotError> {
        let marked = self.metadata.read()?.unsynced_snapshots()?;
        if marked.is_empty() {
            return Ok(0);
        }
        crate::durable_fs::sync_filesystem(&self.directory).map_err(|source| {
            SnapshotError::Io {
                path: self.directory.clone(),
                source,
            }
        })?;
        let cleared = self.metadata.write(|txn| {
            let mut cleared = 0;
            for unsynced in &marked {
                if txn.remove_unsynced_snapshot_if_unchanged(unsynced)? {
                    cleared += 1;
                }
            }
            Ok(cleared)
        })?;
        Ok(cleared)
    }
}

/// Runs [`SnapshotStore::sync_committed`] after commits, `delay` after the
/// first of a burst, until `stop` turns true; then once more, so that a clean
/// shutdown leaves nothing unsynced. A failed sync is retried with a backoff
/// (1 s doubling to 1 min); its marks stay until one succeeds.
pub fn spawn_sync_worker(
    store: Arc<SnapshotStore>,
    delay: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let wanted = store.sync_wanted.clone();
        let mut failures: u32 = 0;
        loop {
            tokio::select! {
                () = wanted.notified() => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
            if !delay.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|stopped| *stopped) => break,
                }
            }
            if sync_and_log(&store).await {
                failures = 0;
                continue;
            }
            failures = failures.saturating_add(1);
            let backoff =
                Duration::from_secs(1 << (failures.min(7) - 1)).min(Duration::from_secs(60));
            wanted.notify_one();
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
        }
        sync_and_log(&store).await;
    })
}

/// One sync on a blocking thread; whether it succeeded.
async fn sync_and_log(store: &Arc<SnapshotStore>) -> bool {
    let started = Instant::now();
    let blocking = store.clone();
    let outcome = tokio::task::spawn_blocking(move || blocking.sync_committed()).await;
    match outcome {
        Ok(Ok(0)) => true,
        Ok(Ok(cleared)) => {
            tracing::info!(
                snapshots = cleared,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "committed snapshots synced"
            );
            true
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot sync committed snapshots; retrying");
            false
        }
        Err(join_error) => {
            tracing::warn!(error = %join_error, "the snapshot sync task failed; retrying");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::metadata::{Lease, MetadataStore, UnsyncedSnapshot};
    use crate::reference::Digest;
    use crate::snapshot_store::{LayerSnapshot, UnpackedSize};

    fn chain_id(number: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", format!("{number:02x}").repeat(32))).unwrap()
    }

    struct Store {
        _directory: tempfile::TempDir,
        metadata: Arc<MetadataStore>,
        snapshots: Arc<SnapshotStore>,
    }

    fn store() -> Store {
        let directory = tempfile::tempdir().unwrap();
        let (metadata, _) = MetadataStore::open(&directory.path().join("metadata.redb")).unwrap();
        let metadata = Arc::new(metadata);
        let snapshots = Arc::new(
            SnapshotStore::open_for_kernel_boot(
                directory.path().join("snapshots"),
                metadata.clone(),
                "boot-a".to_owned(),
            )
            .unwrap(),
        );
        let lease = Lease {
            id: "pull".to_owned(),
            created_unix_ms: 1,
            expires_unix_ms: u64::MAX,
            boot_id: "daemon".to_owned(),
            labels: BTreeMap::new(),
        };
        metadata.write(|txn| txn.put_lease(&lease)).unwrap();
        Store {
            _directory: directory,
            metadata,
            snapshots,
        }
    }

    async fn commit(store: &Store, number: u8) {
        let layer = LayerSnapshot {
            chain_id: chain_id(number),
            parent: None,
            diff_id: chain_id(number),
        };
        let prepared = store
            .snapshots
            .prepare(layer, "pull", |directory| {
                std::fs::write(directory.join("file"), b"contents")?;
                Ok::<_, std::io::Error>(UnpackedSize {
                    size_bytes: 8,
                    inodes: 2,
                })
            })
            .await
            .ok()
            .unwrap();
        store.snapshots.commit(prepared).unwrap();
    }

    fn marks(store: &Store) -> Vec<UnsyncedSnapshot> {
        store.metadata.read().unwrap().unsynced_snapshots().unwrap()
    }

    #[tokio::test]
    async fn a_commit_is_marked_unsynced_until_a_sync_covers_it() {
        let store = store();
        commit(&store, 1).await;
        commit(&store, 2).await;
        let marked = marks(&store);
        assert_eq!(
            marked.iter().map(|mark| &mark.chain_id).collect::<Vec<_>>(),
            [&chain_id(1), &chain_id(2)]
        );
        assert!(marked.iter().all(|mark| mark.kernel_boot_id == "boot-a"));
        assert_eq!(store.snapshots.sync_committed().unwrap(), 2);
        assert_eq!(marks(&store), vec![]);
        assert_eq!(store.snapshots.sync_committed().unwrap(), 0);
    }

    #[tokio::test]
    async fn a_mark_written_again_after_the_sync_read_it_is_kept() {
        let store = store();
        commit(&store, 1).await;
        let read_before_the_sync = marks(&store).remove(0);
        // The snapshot is removed and committed again while that sync runs.
        let newer = UnsyncedSnapshot {
            committed_unix_ms: read_before_the_sync.committed_unix_ms + 1,
            ..read_before_the_sync.clone()
        };
        store
            .metadata
            .write(|txn| txn.put_unsynced_snapshot(&newer))
            .unwrap();
        let removed = store
            .metadata
            .write(|txn| txn.remove_unsynced_snapshot_if_unchanged(&read_before_the_sync))
            .unwrap();
        assert!(!removed);
        assert_eq!(marks(&store), vec![newer]);
    }

    #[tokio::test]
    async fn a_removed_snapshot_takes_its_mark_and_a_mark_alone_is_inconsistent() {
        use crate::metadata::{ConsistencyProblem, check_consistency};
        let store = store();
        commit(&store, 1).await;
        store
            .metadata
            .write(|txn| txn.remove_snapshot(&chain_id(1)))
            .unwrap();
        assert_eq!(marks(&store), vec![]);
        let stray = UnsyncedSnapshot {
            chain_id: chain_id(9),
            kernel_boot_id: "boot-a".to_owned(),
            committed_unix_ms: 1,
        };
        store
            .metadata
            .write(|txn| txn.put_unsynced_snapshot(&stray))
            .unwrap();
        assert_eq!(
            check_consistency(&store.metadata.read().unwrap()).unwrap(),
            vec![ConsistencyProblem::UnsyncedMarkOfMissingSnapshot {
                chain_id: chain_id(9)
            }]
        );
    }

    #[tokio::test]
    async fn the_worker_syncs_after_commits_and_once_more_when_stopped() {
        let store = store();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let worker = spawn_sync_worker(store.snapshots.clone(), Duration::ZERO, stopped);
        commit(&store, 1).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !marks(&store).is_empty() {
            assert!(Instant::now() < deadline, "the worker never synced");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.send(true).unwrap();
        worker.await.unwrap();

        // Held back by its delay, the worker still syncs on its way out.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let worker = spawn_sync_worker(store.snapshots.clone(), Duration::from_secs(3600), stopped);
        commit(&store, 2).await;
        tokio::task::yield_now().await;
        assert_eq!(marks(&store).len(), 1);
        stop.send(true).unwrap();
        worker.await.unwrap();
        assert_eq!(marks(&store), vec![]);
    }

    #[test]
    fn an_unreadable_boot_id_stands_in_as_a_new_boot_every_time() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("boot_id");
        std::fs::write(&path, "3c1f\n").unwrap();
        assert_eq!(kernel_boot_id(&path), "3c1f");
        let missing = directory.path().join("missing");
        let first = kernel_boot_id(&missing);
        assert!(first.starts_with("unknown-"), "{first}");
        assert_ne!(kernel_boot_id(&missing), first);
    }
}
