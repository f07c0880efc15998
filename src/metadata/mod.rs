//! The metadata store: every image, name, blob, snapshot, lease and ingest the
//! daemon knows about, in one redb database file. This is the only module that
//! imports redb.
//!
//! Why one ACID database: a name's create-or-update, an image's removal with all
//! its names, and a pull's final "ready" step are each one transaction, so a crash
//! at any instant leaves either the old state or the new one, never a mix.
//!
//! Reads go through [`ReadSnapshot`] (a consistent MVCC view that never waits for
//! a writer); writes go through [`MetadataStore::write`], whose closure gets a
//! typed [`WriteTxn`] and commits only if it returns `Ok`. Commits are durable
//! (`fsync` before returning) unless made with [`MetadataStore::write_relaxed`],
//! which is for progress notes that may be lost in a crash (ingest offsets).

mod consistency_check;
mod error;
mod index_repair;
pub mod migrations;
mod model;
mod read;
mod records;
mod tables;
mod write;
mod write_scans;

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub use consistency_check::{ConsistencyProblem, check_consistency};
pub use error::{MetadataError, OpenError};
pub use migrations::SCHEMA_VERSION;
pub use model::{
    Blob, BlobState, Image, ImageState, Ingest, Lease, LeaseResource, NamedImage, RecordCounts,
    Snapshot, SnapshotState, UnsyncedSnapshot,
};
pub use read::ReadSnapshot;
pub use records::RecordError;
pub use write::WriteTxn;
pub use write_scans::FileNamingKeys;

use redb::ReadableDatabase;

use crate::reference::Digest;

/// The open metadata database.
pub struct MetadataStore {
    db: redb::Database,
    path: PathBuf,
    image_list: Mutex<ImageListCache>,
    /// Commits that changed an image or a name since opening. Bumped only
    /// with `image_list` locked, so a reader holding that lock sees it still;
    /// an atomic so that ImageStatus reads it without waiting for a listing
    /// being patched.
    image_generation: AtomicU64,
}

/// The last full image listing, kept until a commit changes an image or a name.
///
/// Listing decodes every image record (about 2 µs each), while the kubelet
/// lists far more often than images change. Correctness: a listing is cached
/// only if no image-changing commit finished while it was computed (the image
/// generation unchanged), and every such commit clears the cache before
/// `write` returns, so a client never lists a state older than one it was told
/// about.
#[derive(Default)]
struct ImageListCache {
    listing: Option<Arc<Vec<NamedImage>>>,
    /// Images patched into `listing` since it was last laid out whole.
    patched_images: usize,
}

/// A listing patched with more images than this fraction of its length is
/// copied whole (see [`MetadataStore::update_image_list`]).
const PATCHED_FRACTION_BEFORE_COMPACTION: usize = 4;

/// What opening found, for the startup summary line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// The file did not exist or was empty and was initialized at the current schema.
    pub created: bool,
    /// Schema version found in the file before any migration.
    pub found_schema_version: u64,
    /// Migration steps applied by this open.
    pub migration_steps_applied: u64,
    /// redb found the file was not closed cleanly and repaired its allocator state.
    pub repaired_after_unclean_shutdown: bool,
}

/// The most memory redb keeps of the database file (its read cache and write
/// buffer together). redb's default is 1 GiB, which keeps the whole file in
/// the daemon's heap: 35 MiB of RSS for 10,000 images. Lookups touch a few
/// pages, whose upper levels stay cached; a page that is not comes from the
/// kernel's page cache with one `pread`. Full scans (startup, gc, a listing
/// after a change) read the file through this window.
const PAGE_CACHE_BYTES: usize = 8 * 1024 * 1024;

impl MetadataStore {
    /// Opens (creating if absent) the database at `path`, checks its integrity,
    /// and migrates it to [`SCHEMA_VERSION`].
    ///
    /// A file written by a newer schema is refused before anything is written to
    /// it. A file that fails redb's integrity check is refused with
    /// [`OpenError::Corrupted`]; nothing is ever deleted or reset.
    pub fn open(path: &Path) -> Result<(MetadataStore, OpenReport), OpenError> {
        Self::open_with_steps(path, migrations::STEPS, SCHEMA_VERSION)
    }

    pub(crate) fn open_with_steps(
        path: &Path,
        steps: &[migrations::MigrationStep],
        target_version: u64,
    ) -> Result<(MetadataStore, OpenReport), OpenError> {
        let path = path.to_path_buf();
        refuse_newer_schema_without_writing(&path, target_version)?;

        let repaired = std::rc::Rc::new(std::cell::Cell::new(false));
        let repaired_in_callback = repaired.clone();
        // The integrity check verifies the checksum of every committed page, so a
        // file altered behind redb's back is refused instead of trusted. It reads
        // the whole file, which for our record sizes costs milliseconds.
        let db = catch_unwind(AssertUnwindSafe(|| {
            redb::Builder::new()
                .set_cache_size(PAGE_CACHE_BYTES)
                .set_check_integrity_on_open(true)
                .set_repair_callback(move |_session| repaired_in_callback.set(true))
                .create(&path)
        }))
        .map_err(|panic| OpenError::Corrupted {
            path: path.clone(),
            detail: format!("redb panicked while opening it: {}", panic_message(&panic)),
        })?
        .map_err(|error| database_open_error(&path, error))?;
        let store = MetadataStore {
            db,
            path,
            image_list: Mutex::default(),
            image_generation: AtomicU64::new(0),
        };

        let has_tables = store
            .has_any_table()
            .map_err(|error| store.metadata_error(error))?;
        let found = if has_tables {
            store
                .read()
                .and_then(|snapshot| snapshot.schema_version())
                .map_err(|error| store.metadata_error(error))?
        } else {
            None
        };
        let mut report = OpenReport {
            created: false,
            found_schema_version: found.unwrap_or(target_version),
            migration_steps_applied: 0,
            repaired_after_unclean_shutdown: repaired.get(),
        };
        match found {
            None if !has_tables => {
                migrations::initialize(&store.db, target_version)
                    .map_err(|error| store.metadata_error(error))?;
                report.created = true;
            }
            None => {
                return Err(OpenError::Corrupted {
                    path: store.path.clone(),
                    detail: "it has tables but no schema version".to_owned(),
                });
            }
            Some(found) if found > target_version => {
                return Err(OpenError::NewerSchema {
                    path: store.path.clone(),
                    found,
                    supported: target_version,
                });
            }
            Some(found) => {
                report.migration_steps_applied =
                    migrations::migrate(&store.db, &store.path, found, steps, target_version)?;
            }
        }
        Ok((store, report))
    }

    /// The schema version of the file at `path` (`None` for a file with no
    /// version yet), without migrating it. The file is opened read-only when it
    /// was closed cleanly; after a crash redb's own repair runs first, as it would
    /// on any open. For offline tools and tests.
    pub fn schema_version_of(path: &Path) -> Result<Option<u64>, OpenError> {
        let wrap = |error: MetadataError| OpenError::Metadata {
            path: path.to_path_buf(),
            source: Box::new(error),
        };
        let read_only = catch_unwind(|| redb::ReadOnlyDatabase::open(path)).map_err(|panic| {
            OpenError::Corrupted {
                path: path.to_path_buf(),
                detail: format!("redb panicked while opening it: {}", panic_message(&panic)),
            }
        })?;
        let read_version = |txn: Result<redb::ReadTransaction, redb::TransactionError>| {
            let txn = txn.map_err(|error| wrap(MetadataError::storage("begin read")(error)))?;
            match txn.open_table(tables::META) {
                Ok(meta) => read::fetch_schema_version(&meta).map_err(wrap),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
                Err(error) => Err(wrap(MetadataError::storage("open meta table")(error))),
            }
        };
        match read_only {
            Ok(db) => read_version(db.begin_read()),
            Err(redb::DatabaseError::RepairAborted) => {
                let db =
                    redb::Database::open(path).map_err(|error| database_open_error(path, error))?;
                read_version(db.begin_read())
            }
            Err(error) => Err(database_open_error(path, error)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A consistent view of the store as of the last commit.
    pub fn read(&self) -> Result<ReadSnapshot, MetadataError> {
        let txn = self
            .db
            .begin_read()
            .map_err(MetadataError::storage("begin read"))?;
        Ok(ReadSnapshot::new(txn))
    }

    /// Runs `change` in one write transaction and commits it durably if it
    /// returns `Ok`; on `Err` nothing is written.
    pub fn write<T>(
        &self,
        change: impl FnOnce(&mut WriteTxn) -> Result<T, MetadataError>,
    ) -> Result<T, MetadataError> {
        self.write_with(redb::Durability::Immediate, change)
    }

    /// Like [`MetadataStore::write`], but the commit is made durable only by the
    /// next durable commit: a crash may lose it (never half of it). For progress
    /// notes only, never for anything acknowledged to a client.
    pub fn write_relaxed<T>(
        &self,
        change: impl FnOnce(&mut WriteTxn) -> Result<T, MetadataError>,
    ) -> Result<T, MetadataError> {
        self.write_with(redb::Durability::None, change)
    }

    fn write_with<T>(
        &self,
        durability: redb::Durability,
        change: impl FnOnce(&mut WriteTxn) -> Result<T, MetadataError>,
    ) -> Result<T, MetadataError> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(MetadataError::storage("begin write"))?;
        txn.set_durability(durability)
            .map_err(|error| MetadataError::Storage {
                operation: "set durability",
                source: redb::Error::from(redb::StorageError::Backend(Box::new(error))),
            })?;
        let mut writer = WriteTxn::new(txn, unix_millis_now());
        match change(&mut writer) {
            Ok(value) => {
                let changed_images = std::mem::take(&mut writer.changed_images);
                let changed_all_images = writer.changed_all_images;
                let committed = writer
                    .into_inner()
                    .commit()
                    .map_err(MetadataError::storage("commit"));
                if changed_all_images || !changed_images.is_empty() {
                    // A failed commit did something unknown: drop the listing.
                    let patchable = committed.is_ok() && !changed_all_images;
                    self.update_image_list(patchable.then_some(&changed_images));
                }
                committed?;
                Ok(value)
            }
            Err(error) => {
                // Dropping the transaction aborts it; an abort failure changes nothing
                // on disk, so the original error is the one worth reporting.
                let _ = writer.into_inner().abort();
                Err(error)
            }
        }
    }

    /// Runs `work` holding the write lock and commits nothing: no other commit
    /// can land while it runs, and readers go on undisturbed. Gc's file phase
    /// runs here, so that no record naming a file can be committed between its
    /// decision that the file is unnamed and the file's deletion. `work` sees the
    /// store as of the last commit.
    pub fn with_writers_held<T>(
        &self,
        work: impl FnOnce(&WriteTxn) -> Result<T, MetadataError>,
    ) -> Result<T, MetadataError> {
        let txn = self
            .db
            .begin_write()
            .map_err(MetadataError::storage("begin write"))?;
        let writer = WriteTxn::new(txn, unix_millis_now());
        let outcome = work(&writer);
        // Nothing was changed: aborting only releases the lock.
        let _ = writer.into_inner().abort();
        outcome
    }

    /// Every image with its names, in id order, whatever its state: the same as
    /// [`ReadSnapshot::list_images`], served from memory. The first call reads
    /// the store; after that every commit that changes images or names patches
    /// the listing with just those images.
    pub fn list_images(&self) -> Result<Arc<Vec<NamedImage>>, MetadataError> {
        let generation = {
            let cache = self.lock_image_list();
            if let Some(listing) = &cache.listing {
                return Ok(listing.clone());
            }
            self.image_generation.load(Ordering::Acquire)
        };
        let listing = Arc::new(self.read()?.list_images()?);
        let mut cache = self.lock_image_list();
        if self.image_generation.load(Ordering::Acquire) == generation {
            cache.listing = Some(listing.clone());
            cache.patched_images = 0;
        }
        Ok(listing)
    }

    /// After an image-changing commit: patches the cached listing with the
    /// current records of `changed` images (`None`: drops it instead). Every
    /// call bumps the generation, so a listing read before it is not cached.
    ///
    /// Why patching under the lock is correct: the images are read after the
    /// commit, while the lock is held; a later commit patches after this one
    /// releases it, with reads at least as new. So the listing always ends as
    /// new as the last commit that patched it, for every image it touched.
    fn update_image_list(&self, changed: Option<&BTreeSet<Digest>>) {
        let mut cache = self.lock_image_list();
        self.image_generation.fetch_add(1, Ordering::Release);
        let (Some(listing), Some(changed)) = (cache.listing.take(), changed) else {
            return;
        };
        // A failed read leaves no listing: the next call reads the store.
        let Ok(mut patched) = self.patched_image_list(listing, changed) else {
            return;
        };
        cache.patched_images += changed.len();
        // Patched images live wherever the heap had room when they were
        // read, scattered among what the pulls allocated meanwhile: after
        // 10,000 pulls, serving the listing took 33-36 ms instead of 20-23.
        // Copied whole, the records lie in order again.
        if cache.patched_images > patched.len() / PATCHED_FRACTION_BEFORE_COMPACTION {
            patched = patched.clone();
            cache.patched_images = 0;
        }
        cache.listing = Some(Arc::new(patched));
    }

    fn patched_image_list(
        &self,
        listing: Arc<Vec<NamedImage>>,
        changed: &BTreeSet<Digest>,
    ) -> Result<Vec<NamedImage>, MetadataError> {
        let read = self.read()?;
        // Unshared unless a ListImages answer is being built from it right now.
        let mut listing = Arc::unwrap_or_clone(listing);
        for id in changed {
            let position =
                listing.binary_search_by(|listed| listed.image.id().as_str().cmp(id.as_str()));
            match (read.image(id)?, position) {
                (Some(image), found) => {
                    let named = NamedImage {
                        names: read.names_of(id)?,
                        image,
                    };
                    match found {
                        Ok(index) => listing[index] = named,
                        Err(index) => listing.insert(index, named),
                    }
                }
                (None, Ok(index)) => {
                    listing.remove(index);
                }
                (None, Err(_)) => {}
            }
        }
        Ok(listing)
    }

    /// How many commits changed an image or a name since the store was
    /// opened. Every such commit counts before its `write` returns, so a
    /// snapshot taken after reading a generation holds every change it counts.
    pub fn image_generation(&self) -> u64 {
        // Acquire: pairs with the bump, which follows the commit it counts.
        self.image_generation.load(Ordering::Acquire)
    }

    fn lock_image_list(&self) -> std::sync::MutexGuard<'_, ImageListCache> {
        // The cache holds no invariant a panic could break halfway: recover it.
        self.image_list
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a new daemon boot: records and returns a fresh boot id. Leases
    /// carry the boot id that took them, which is how reconciliation recognises
    /// leases left by an earlier boot.
    pub fn begin_boot(&self) -> Result<String, MetadataError> {
        let boot_id = uuid::Uuid::new_v4().to_string();
        self.write(|txn| txn.write_meta(tables::meta_keys::BOOT_ID, boot_id.as_bytes()))?;
        Ok(boot_id)
    }

    /// Size of the database file in bytes.
    pub fn file_size_bytes(&self) -> std::io::Result<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    fn has_any_table(&self) -> Result<bool, MetadataError> {
        let txn = self
            .db
            .begin_read()
            .map_err(MetadataError::storage("begin read"))?;
        let mut tables = txn
            .list_tables()
            .map_err(MetadataError::storage("list tables"))?;
        let mut multimaps = txn
            .list_multimap_tables()
            .map_err(MetadataError::storage("list tables"))?;
        Ok(tables.next().is_some() || multimaps.next().is_some())
    }

    fn metadata_error(&self, error: MetadataError) -> OpenError {
        OpenError::Metadata {
            path: self.path.clone(),
            source: Box::new(error),
        }
    }
}

/// Reads the schema version through a read-only open, so that a file from a
/// newer schema is refused without a single byte written to it. A file that
/// cannot be opened read-only (it needs crash repair, or does not exist yet) is
/// left to the read-write open, which checks the version again.
fn refuse_newer_schema_without_writing(path: &Path, supported: u64) -> Result<(), OpenError> {
    if std::fs::metadata(path)
        .map(|m| m.len() == 0)
        .unwrap_or(true)
    {
        return Ok(());
    }
    let Ok(Ok(db)) = catch_unwind(|| redb::ReadOnlyDatabase::open(path)) else {
        return Ok(());
    };
    let found = db
        .begin_read()
        .ok()
        .and_then(|txn| txn.open_table(tables::META).ok())
        .and_then(|meta| read::fetch_schema_version(&meta).ok().flatten());
    drop(db);
    match found {
        Some(found) if found > supported => Err(OpenError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported,
        }),
        _ => Ok(()),
    }
}

fn database_open_error(path: &Path, error: redb::DatabaseError) -> OpenError {
    let path = path.to_path_buf();
    match error {
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            OpenError::AlreadyOpen { path }
        }
        redb::DatabaseError::UpgradeRequired(format) => {
            OpenError::UnsupportedFileFormat { path, format }
        }
        // redb reports a file that is not a redb database (wrong magic number) as
        // invalid data: that is a damaged store, not an I/O failure.
        redb::DatabaseError::Storage(redb::StorageError::Io(source))
            if source.kind() != std::io::ErrorKind::InvalidData =>
        {
            OpenError::Io { path, source }
        }
        other => OpenError::Corrupted {
            path,
            detail: other.to_string(),
        },
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "unknown panic".to_owned()
    }
}

pub(crate) fn unix_millis_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Returns the image id for `name` when `name` is an image id or a unique id
/// prefix of at least 3 hex digits, as `crictl` users type them.
pub fn resolve_image_id_prefix(
    snapshot: &ReadSnapshot,
    prefix: &str,
) -> Result<Option<Digest>, MetadataError> {
    let normalized = if prefix.contains(':') {
        prefix.to_owned()
    } else {
        format!("sha256:{prefix}")
    };
    let hex = normalized.split_once(':').map(|(_, hex)| hex).unwrap_or("");
    if hex.len() < 3 || !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let matches = snapshot.images_by_id_prefix(&normalized)?;
    Ok(match matches.as_slice() {
        [only] => Some(only.id().clone()),
        _ => None,
    })
}
