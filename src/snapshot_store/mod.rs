//! Snapshots: unpacked layers in the overlayfs layout that containerd's
//! default snapshotter uses, one directory per layer holding only that
//! layer's changes, keyed by chain id and usable as an overlay lower dir.
//!
//! ```text
//! <root>/snapshots/<algorithm>-<hex>/          committed: a lower dir
//! <root>/snapshots/extracting/<…>-<nonce>/     being unpacked (removed at startup)
//! ```
//!
//! Because each directory holds only its own layer, every layer of an image
//! can be unpacked at the same time ([`SnapshotStore::prepare`]); commits then
//! follow the chain, base first ([`SnapshotStore::commit`]), so a committed
//! snapshot's parent is always committed. One lock per chain id makes two
//! pulls that share a layer unpack it once: the second waits, then reuses.
//!
//! A commit does not wait for the disk: it records the snapshot unsynced,
//! with the kernel boot that wrote it, and the background sync ([`sync`])
//! makes the files durable with one `syncfs` for every commit since the last
//! one, then clears the marks. A process crash loses no page (the kernel
//! keeps them); a machine crash can, and the next kernel boot drops what was
//! not synced (`reconcile`).

mod chain_id;
pub mod sync;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

pub use chain_id::chain_ids;

use crate::metadata::{
    LeaseResource, MetadataError, MetadataStore, Snapshot, SnapshotState, UnsyncedSnapshot,
};
use crate::reference::Digest;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("snapshot store i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("snapshot {chain_id} cannot be committed before its parent {parent}")]
    ParentNotCommitted { chain_id: Digest, parent: Digest },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One layer to turn into a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerSnapshot {
    pub chain_id: Digest,
    pub parent: Option<Digest>,
    pub diff_id: Digest,
}

/// What unpacking wrote, recorded on the snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackedSize {
    pub size_bytes: u64,
    pub inodes: u64,
}

/// A layer made ready for its commit: either already committed (reused) or
/// unpacked into a temporary directory, holding the chain id's lock until it
/// is committed or dropped. Dropping it uncommitted removes what it unpacked.
pub struct PreparedSnapshot {
    layer: LayerSnapshot,
    unpacked: Option<(PathBuf, UnpackedSize)>,
    _lock: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for PreparedSnapshot {
    fn drop(&mut self) {
        if let Some((directory, _)) = self.unpacked.take()
            && let Err(error) = std::fs::remove_dir_all(&directory)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(directory = %directory.display(), %error, "cannot remove an abandoned snapshot directory; startup reconciliation will");
        }
    }
}

pub struct SnapshotStore {
    directory: PathBuf,
    metadata: Arc<MetadataStore>,
    locks: Mutex<HashMap<Digest, Weak<tokio::sync::Mutex<()>>>>,
    /// Recorded on every unsynced mark this store writes.
    kernel_boot_id: String,
    /// Told after every commit that left a snapshot unsynced.
    sync_wanted: Arc<tokio::sync::Notify>,
}

impl SnapshotStore {
    /// Opens the store, marking what it commits with this kernel boot
    /// ([`sync::kernel_boot_id`]).
    pub fn open(
        directory: PathBuf,
        metadata: Arc<MetadataStore>,
    ) -> Result<SnapshotStore, SnapshotError> {
        SnapshotStore::open_for_kernel_boot(directory, metadata, sync::running_kernel_boot_id())
    }

    /// Opens the store for the kernel boot `kernel_boot_id`.
    pub fn open_for_kernel_boot(
        directory: PathBuf,
        metadata: Arc<MetadataStore>,
        kernel_boot_id: String,
    ) -> Result<SnapshotStore, SnapshotError> {
        let extracting = directory.join("extracting");
        std::fs::create_dir_all(&extracting).map_err(io_error(&extracting))?;
        Ok(SnapshotStore {
            directory,
            metadata,
            locks: Mutex::new(HashMap::new()),
            kernel_boot_id,
            sync_wanted: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// The kernel boot this store's unsynced marks name.
    pub fn kernel_boot_id(&self) -> &str {
        &self.kernel_boot_id
    }

    /// The directory of a committed snapshot (an overlay lower dir).
    pub fn snapshot_directory(&self, chain_id: &Digest) -> PathBuf {
        self.directory.join(format!(
            "{}-{}",
            chain_id.algorithm().name(),
            chain_id.hex()
        ))
    }

    pub fn extracting_directory(&self) -> PathBuf {
        self.directory.join("extracting")
    }

    /// The committed snapshot with its directory in place, if any.
    pub fn committed(&self, chain_id: &Digest) -> Result<Option<Snapshot>, SnapshotError> {
        let snapshot = self.metadata.read()?.snapshot(chain_id)?;
        Ok(snapshot.filter(|snapshot| {
            snapshot.state == SnapshotState::Committed && self.snapshot_directory(chain_id).is_dir()
        }))
    }

    /// Makes `layer` ready to commit under `lease_id`: reuses a committed
    /// snapshot, or waits for another pull unpacking the same chain id, or calls
    /// `unpack` (blocking work, run off the async runtime) on a fresh empty
    /// directory. The snapshot is recorded `extracting` while it unpacks.
    pub async fn prepare<F, E>(
        &self,
        layer: LayerSnapshot,
        lease_id: &str,
        unpack: F,
    ) -> Result<PreparedSnapshot, PrepareError<E>>
    where
        F: FnOnce(&Path) -> Result<UnpackedSize, E> + Send + 'static,
        E: Send + 'static,
    {
        let lock = self.lock_for(&layer.chain_id).lock_owned().await;
        // The attach checks the record again, in its transaction: gc may have
        // removed it since the read, and the layer is then unpacked again.
        // Only a committed record is attached; under the chain lock no other
        // pull writes this record, but the check does not rest on that.
        if self.committed(&layer.chain_id)?.is_some()
            && self.metadata.write(|txn| {
                let still_committed = txn
                    .snapshot(&layer.chain_id)?
                    .is_some_and(|snapshot| snapshot.state == SnapshotState::Committed);
                if still_committed {
                    txn.attach_to_lease(
                        lease_id,
                        &LeaseResource::Snapshot(layer.chain_id.clone()),
                    )?;
                }
                Ok(still_committed)
            })?
        {
            return Ok(PreparedSnapshot {
                layer,
                unpacked: None,
                _lock: lock,
            });
        }
        let record = Snapshot {
            chain_id: layer.chain_id.clone(),
            parent: layer.parent.clone(),
            diff_id: layer.diff_id.clone(),
            size_bytes: 0,
            inodes: 0,
            state: SnapshotState::Extracting,
            created_unix_ms: crate::metadata::unix_millis_now(),
        };
        self.metadata.write(|txn| {
            txn.put_snapshot(&record)?;
            txn.attach_to_lease(lease_id, &LeaseResource::Snapshot(layer.chain_id.clone()))
        })?;
        let temporary = self.extracting_directory().join(format!(
            "{}-{}-{}",
            layer.chain_id.algorithm().name(),
            layer.chain_id.hex(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&temporary).map_err(|source| {
            PrepareError::Snapshot(SnapshotError::Io {
                path: temporary.clone(),
                source,
            })
        })?;
        let target = temporary.clone();
        let unpacked = tokio::task::spawn_blocking(move || unpack(&target)).await;
        let outcome = match unpacked {
            Ok(Ok(size)) => size,
            failed => {
                let _ = std::fs::remove_dir_all(&temporary);
                self.metadata.write(|txn| {
                    txn.remove_snapshot(&layer.chain_id)?;
                    txn.detach_from_lease(
                        lease_id,
                        &LeaseResource::Snapshot(layer.chain_id.clone()),
                    )
                })?;
                return Err(match failed {
                    Ok(Err(error)) => PrepareError::Unpack(error),
                    Err(join_error) => PrepareError::Snapshot(SnapshotError::Io {
                        path: temporary,
                        source: std::io::Error::other(format!("unpack task failed: {join_error}")),
                    }),
                    Ok(Ok(_)) => unreachable!("handled above"),
                });
            }
        };
        Ok(PreparedSnapshot {
            layer,
            unpacked: Some((temporary, outcome)),
            _lock: lock,
        })
    }

    /// Commits a prepared snapshot: renames its directory into place and
    /// records it committed. Its parent must already be committed.
    pub fn commit(&self, mut prepared: PreparedSnapshot) -> Result<Snapshot, SnapshotError> {
        let chain_id = prepared.layer.chain_id.clone();
        if let Some(parent) = &prepared.layer.parent
            && self.committed(parent)?.is_none()
        {
            return Err(SnapshotError::ParentNotCommitted {
                chain_id,
                parent: parent.clone(),
            });
        }
        let Some((temporary, size)) = prepared.unpacked.take() else {
            return Ok(self
                .metadata
                .read()?
                .snapshot(&chain_id)?
                .expect("a reused snapshot is committed"));
        };
        let destination = self.snapshot_directory(&chain_id);
        // A directory left by a crash between rename and record: replace it.
        if destination.exists() {
            std::fs::remove_dir_all(&destination).map_err(io_error(&destination))?;
        }
        // Not synced: the background sync covers the rename with the files.
        if let Err(error) = std::fs::rename(&temporary, &destination) {
            prepared.unpacked = Some((temporary, size));
            return Err(SnapshotError::Io {
                path: destination,
                source: error,
            });
        }
        crate::fail_point!(
            "snapshot::after_rename_before_record",
            SnapshotError::Io {
                path: destination.clone(),
                source: std::io::Error::other("fail point snapshot::after_rename_before_record"),
            }
        );
        let snapshot = self.metadata.write(|txn| {
            let mut snapshot = txn.snapshot(&chain_id)?.unwrap_or(Snapshot {
                chain_id: chain_id.clone(),
                parent: prepared.layer.parent.clone(),
                diff_id: prepared.layer.diff_id.clone(),
                size_bytes: 0,
                inodes: 0,
                state: SnapshotState::Extracting,
                created_unix_ms: txn.now_unix_ms(),
            });
            snapshot.state = SnapshotState::Committed;
            snapshot.size_bytes = size.size_bytes;
            snapshot.inodes = size.inodes;
            txn.put_snapshot(&snapshot)?;
            txn.put_unsynced_snapshot(&UnsyncedSnapshot {
                chain_id: chain_id.clone(),
                kernel_boot_id: self.kernel_boot_id.clone(),
                committed_unix_ms: txn.now_unix_ms(),
            })?;
            Ok(snapshot)
        })?;
        self.sync_wanted.notify_one();
        Ok(snapshot)
    }

    fn lock_for(&self, chain_id: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(lock) = locks.get(chain_id).and_then(Weak::upgrade) {
            return lock;
        }
        locks.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(chain_id.clone(), Arc::downgrade(&lock));
        lock
    }

    /// The chain ids from `top` down to the base layer, all committed: the
    /// overlay lower dirs of a read-only mount, top first.
    pub fn committed_chain(&self, top: &Digest) -> Result<Vec<Digest>, SnapshotError> {
        let read = self.metadata.read()?;
        let mut chain = Vec::new();
        let mut next = Some(top.clone());
        while let Some(chain_id) = next {
            let snapshot = read
                .snapshot(&chain_id)?
                .filter(|snapshot| snapshot.state == SnapshotState::Committed)
                .ok_or_else(|| SnapshotError::Io {
                    path: self.snapshot_directory(&chain_id),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "snapshot is not committed",
                    ),
                })?;
            chain.push(chain_id);
            next = snapshot.parent;
        }
        Ok(chain)
    }
}

/// A failed prepare: the unpack function's own error, or the store's.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError<E> {
    #[error("unpack failed")]
    Unpack(E),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

impl<E> From<MetadataError> for PrepareError<E> {
    fn from(error: MetadataError) -> Self {
        PrepareError::Snapshot(SnapshotError::Metadata(error))
    }
}
