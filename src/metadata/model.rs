//! The domain types the metadata store reads and writes.
//!
//! These are what the rest of the daemon sees. They hold validated values
//! (`Digest`, typed states) and are never serialized directly: `records.rs` maps
//! each one to a versioned, stored record, so the on-disk format can evolve
//! without the domain types dragging their history along.

use std::collections::BTreeMap;
use std::fmt;

use crate::oci::Descriptor;
use crate::reference::Digest;

/// Where an image is in its life. Only `Ready` images are ever shown to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageState {
    /// A pull is fetching or unpacking it under a lease; invisible to clients.
    Pulling,
    /// Fully pulled and unpacked; visible through every read API.
    Ready,
    /// Left behind by an interrupted pull or found broken; invisible, reclaimed by gc.
    GcPending,
}

impl ImageState {
    pub const ALL: [ImageState; 3] = [
        ImageState::Pulling,
        ImageState::Ready,
        ImageState::GcPending,
    ];

    /// The stable name used in the state index and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageState::Pulling => "pulling",
            ImageState::Ready => "ready",
            ImageState::GcPending => "gc_pending",
        }
    }

    pub fn from_name(name: &str) -> Option<ImageState> {
        ImageState::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
    }
}

impl fmt::Display for ImageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An image, identified by the digest of its config (the CRI image id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// What the reference resolved to: an index or a manifest. GC walks from here.
    pub target: Descriptor,
    /// The platform manifest chosen from `target` (equal to it for single manifests).
    pub manifest: Descriptor,
    /// The image config; its digest is the image id.
    pub config: Descriptor,
    /// The snapshot holding the top layer, once unpacked (absent for images without layers).
    pub top_chain_id: Option<Digest>,
    /// Bytes the image accounts for: its manifest, config and compressed layers.
    pub size_bytes: u64,
    pub state: ImageState,
    pub pinned: bool,
    /// The config's `User` as written (empty when unset), kept here so status calls need no config read.
    pub config_user: String,
    /// Manifest annotations, echoed in the CRI `Image.spec`.
    pub annotations: BTreeMap<String, String>,
    pub created_unix_ms: u64,
    pub updated_unix_ms: u64,
}

impl Image {
    /// The image id: the config digest.
    pub fn id(&self) -> &Digest {
        &self.config.digest
    }
}

/// An image together with every name that points at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedImage {
    pub image: Image,
    /// Full normalized names (`docker.io/library/busybox:latest`, `…@sha256:…`), sorted.
    pub names: Vec<String>,
}

/// Whether a recorded blob's file was found on disk by the last check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobState {
    /// Verified and renamed into place; the normal state.
    Present,
    /// Its file was missing or had the wrong size at the last reconciliation.
    Missing,
}

/// A verified, content-addressed blob (manifest, index, config or layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub digest: Digest,
    pub media_type: String,
    pub size_bytes: u64,
    pub state: BlobState,
    /// Blobs this one references (an index's manifests; a manifest's config and layers).
    /// These are gc's edges.
    pub children: Vec<Digest>,
    pub created_unix_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotState {
    /// A layer is being unpacked into it; never a parent of anything committed.
    Extracting,
    /// Complete and verified against its diff id.
    Committed,
}

/// An unpacked layer, keyed by chain id, holding only that layer's changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub chain_id: Digest,
    pub parent: Option<Digest>,
    pub diff_id: Digest,
    pub size_bytes: u64,
    pub inodes: u64,
    pub state: SnapshotState,
    pub created_unix_ms: u64,
}

/// A committed snapshot whose files may still be only in the page cache:
/// written since the last `syncfs` of the snapshot filesystem. Kept, with the
/// kernel boot that wrote it, until a sync covers it; a later kernel boot
/// (the machine rebooted, possibly losing those pages) treats the snapshot as
/// lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsyncedSnapshot {
    pub chain_id: Digest,
    /// `/proc/sys/kernel/random/boot_id` when the snapshot was committed.
    pub kernel_boot_id: String,
    pub committed_unix_ms: u64,
}

/// A lease: protection from gc for the resources attached to it, until it
/// expires, is released, or its daemon boot ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub created_unix_ms: u64,
    pub expires_unix_ms: u64,
    /// The daemon boot that took the lease; reconciliation ends leases of earlier boots.
    pub boot_id: String,
    pub labels: BTreeMap<String, String>,
}

/// Something a lease protects.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeaseResource {
    Image(Digest),
    Blob(Digest),
    Snapshot(Digest),
    Ingest(String),
}

/// An interrupted or running download into a partial file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingest {
    pub key: String,
    pub expected_digest: Digest,
    pub expected_size_bytes: u64,
    /// Bytes written and synced to the partial file so far; a resume starts here.
    pub offset_bytes: u64,
    pub started_unix_ms: u64,
    pub updated_unix_ms: u64,
}

/// Counts of every kind of record, for status reports and leak checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordCounts {
    pub images: u64,
    pub references: u64,
    pub blobs: u64,
    pub snapshots: u64,
    pub leases: u64,
    pub lease_resources: u64,
    pub ingests: u64,
}

impl RecordCounts {
    pub fn total(&self) -> u64 {
        self.images
            + self.references
            + self.blobs
            + self.snapshots
            + self.leases
            + self.lease_resources
            + self.ingests
    }
}
