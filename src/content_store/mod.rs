//! The content store: verified blobs on disk, named by digest.
//!
//! Bytes enter only through [`ContentStore::ingest`], which writes them into a
//! partial file tracked in the metadata store, hashes them on the way, and only
//! after the size and digest check out renames the file into place and records
//! the blob (attached to the caller's lease) in one transaction. So a blob file
//! under `blobs/` has always been verified, and nothing unverified is ever
//! visible as content. An interrupted ingest keeps its partial file and its
//! recorded offset, and the next ingest of the same digest resumes from there.

mod blob_paths;
mod ingest;
mod tap;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

pub use blob_paths::BlobPaths;
pub use ingest::{BlobSource, IngestError, IngestOutcome, IngestRequest, OpenedBlob};
pub use tap::{BlobTap, TapReader, TapWaitHook};

use crate::metadata::{Blob, BlobState, LeaseResource, MetadataError, MetadataStore};
use crate::reference::{Digest, DigestHasher};

/// Tunables of the content store, with units in their names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentLimits {
    /// How many bytes an ingest writes between two recorded (synced) offsets;
    /// a resume after a crash repeats at most this much.
    pub progress_record_interval_bytes: u64,
    /// Bytes gathered before each write to the partial file.
    pub write_batch_bytes: usize,
}

impl Default for ContentLimits {
    fn default() -> Self {
        ContentLimits {
            progress_record_interval_bytes: 64 * 1024 * 1024,
            write_batch_bytes: 1024 * 1024,
        }
    }
}

/// Failures of the content store itself (the source's own errors travel in
/// [`IngestError::Source`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    #[error("content store i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(
        "blob {digest}: expected {expected_size_bytes} bytes, received {received_size_bytes} bytes"
    )]
    SizeMismatch {
        digest: Digest,
        expected_size_bytes: u64,
        received_size_bytes: u64,
    },
    #[error("blob {digest}: content hashes to {received}, not the expected digest")]
    DigestMismatch { digest: Digest, received: Digest },
    #[error("blob {digest} is not in the content store")]
    NotFound { digest: Digest },
    #[error("blob {digest} is {size_bytes} bytes, over the {limit_bytes}-byte limit for this read")]
    TooLarge {
        digest: Digest,
        size_bytes: u64,
        limit_bytes: u64,
    },
    #[error("fail point {name} fired")]
    FailPoint { name: &'static str },
}

impl ContentError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ContentError + '_ {
        move |source| ContentError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub struct ContentStore {
    paths: BlobPaths,
    metadata: Arc<MetadataStore>,
    limits: ContentLimits,
    /// One lock per digest being ingested, so that two ingests of the same blob
    /// never write the same partial file: the second waits, then reuses.
    ingest_locks: Mutex<HashMap<Digest, Weak<tokio::sync::Mutex<()>>>>,
    /// Readers following blobs while they download (see `tap`).
    taps: Arc<tap::BlobTaps>,
}

impl ContentStore {
    /// Opens the store under `content_directory`, creating its directories.
    pub fn open(
        content_directory: PathBuf,
        metadata: Arc<MetadataStore>,
        limits: ContentLimits,
    ) -> Result<ContentStore, ContentError> {
        let paths = BlobPaths::new(content_directory);
        for directory in [
            paths.ingest_directory(),
            paths.content_directory().join("blobs/sha256"),
            paths.content_directory().join("blobs/sha512"),
        ] {
            std::fs::create_dir_all(&directory).map_err(ContentError::io(&directory))?;
        }
        Ok(ContentStore {
            paths,
            metadata,
            limits,
            ingest_locks: Mutex::new(HashMap::new()),
            taps: Arc::default(),
        })
    }

    pub fn paths(&self) -> &BlobPaths {
        &self.paths
    }

    pub fn metadata(&self) -> &Arc<MetadataStore> {
        &self.metadata
    }

    /// The recorded blob when its file is in place with the recorded size.
    pub fn present_blob(&self, digest: &Digest) -> Result<Option<Blob>, ContentError> {
        let Some(blob) = self.metadata.read()?.blob(digest)? else {
            return Ok(None);
        };
        if blob.state != BlobState::Present {
            return Ok(None);
        }
        match std::fs::metadata(self.paths.blob(digest)) {
            Ok(file) if file.len() == blob.size_bytes => Ok(Some(blob)),
            _ => Ok(None),
        }
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<std::fs::File, ContentError> {
        let path = self.paths.blob(digest);
        std::fs::File::open(&path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => ContentError::NotFound {
                digest: digest.clone(),
            },
            _ => ContentError::Io {
                path: path.clone(),
                source: error,
            },
        })
    }

    /// Reads a small stored blob (manifest, config) whole and checks it against
    /// its digest again: what is parsed is exactly what was verified.
    pub fn read_verified(
        &self,
        digest: &Digest,
        limit_bytes: u64,
    ) -> Result<Vec<u8>, ContentError> {
        let path = self.paths.blob(digest);
        let file = self.open_blob(digest)?;
        let size_bytes = file.metadata().map_err(ContentError::io(&path))?.len();
        if size_bytes > limit_bytes {
            return Err(ContentError::TooLarge {
                digest: digest.clone(),
                size_bytes,
                limit_bytes,
            });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size_bytes).unwrap_or(0));
        file.take(limit_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(ContentError::io(&path))?;
        let mut hasher = DigestHasher::new(digest.algorithm());
        hasher.update(&bytes);
        let received = hasher.finish();
        if received != *digest {
            return Err(ContentError::DigestMismatch {
                digest: digest.clone(),
                received,
            });
        }
        Ok(bytes)
    }

    /// Protects an already present blob with `lease_id` (used when a pull
    /// finds what it needs already stored). Returns the blob if present.
    pub fn attach_if_present(
        &self,
        digest: &Digest,
        lease_id: &str,
    ) -> Result<Option<Blob>, ContentError> {
        let Some(blob) = self.present_blob(digest)? else {
            return Ok(None);
        };
        // Checked again in the transaction: gc may have removed the record
        // since the read, and the caller then downloads the blob again.
        let attached = self.metadata.write(|txn| {
            txn.attach_existing_to_lease(lease_id, &LeaseResource::Blob(digest.clone()))
        })?;
        Ok(attached.then_some(blob))
    }

    /// Opens a tap on `digest`: a reader of its bytes as the next ingest of
    /// it writes them (or of the stored blob, if it is already present).
    pub fn tap(&self, digest: &Digest) -> BlobTap {
        self.taps.open(digest)
    }

    fn ingest_lock(&self, digest: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .ingest_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(lock) = locks.get(digest).and_then(Weak::upgrade) {
            return lock;
        }
        locks.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(digest.clone(), Arc::downgrade(&lock));
        lock
    }
}
