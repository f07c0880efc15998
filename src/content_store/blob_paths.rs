//! The one place that turns a digest into a path.
//!
//! ```text
//! <root>/content/blobs/<algorithm>/<hex>          verified blobs, named by digest
//! <root>/content/ingest/<algorithm>-<hex>.partial  downloads in progress
//! ```
//!
//! The ingest key is derived from the digest alone, so a pull restarted after a
//! crash (under a new lease) finds and resumes the partial file of the pull it
//! replaces, and two ingests of one digest always meet on the same lock.

use std::path::{Path, PathBuf};

use crate::reference::Digest;

#[derive(Clone, Debug)]
pub struct BlobPaths {
    content_directory: PathBuf,
}

impl BlobPaths {
    pub fn new(content_directory: PathBuf) -> BlobPaths {
        BlobPaths { content_directory }
    }

    pub fn content_directory(&self) -> &Path {
        &self.content_directory
    }

    pub fn blobs_directory(&self, digest: &Digest) -> PathBuf {
        self.content_directory
            .join("blobs")
            .join(digest.algorithm().name())
    }

    pub fn blob(&self, digest: &Digest) -> PathBuf {
        self.blobs_directory(digest).join(digest.hex())
    }

    pub fn ingest_directory(&self) -> PathBuf {
        self.content_directory.join("ingest")
    }

    /// The ingest key of a digest: also the partial file's stem.
    pub fn ingest_key(digest: &Digest) -> String {
        format!("{}-{}", digest.algorithm().name(), digest.hex())
    }

    pub fn partial(&self, digest: &Digest) -> PathBuf {
        self.ingest_directory()
            .join(format!("{}.partial", Self::ingest_key(digest)))
    }
}
