//! Every table of the metadata database, in one place.
//!
//! Keys are the natural identifiers as strings (`sha256:<hex>` digests, full
//! normalized names, lease ids); values are versioned records (`records.rs`).
//! Tables marked "index" are derived from another table and are only ever written
//! in the same transaction as the table they index.

use redb::{MultimapTableDefinition, TableDefinition};

/// Schema version, boot id and other single values (`meta_keys`).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// image id (config digest) -> `ImageRecord`.
pub(crate) const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");

/// Index (schema v2): image state name -> image ids in that state.
pub(crate) const IMAGES_BY_STATE: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("images_by_state");

/// Full normalized name -> `ReferenceRecord` (which image the name points at).
pub(crate) const REFERENCES: TableDefinition<&str, &[u8]> = TableDefinition::new("references");

/// Index: image id -> every name that points at it (the reverse of `REFERENCES`).
pub(crate) const IMAGE_NAMES: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("image_names");

/// Blob digest -> `BlobRecord`.
pub(crate) const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");

/// Chain id -> `SnapshotRecord`.
pub(crate) const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");

/// Schema v3: chain id -> `UnsyncedSnapshotRecord`, for every committed
/// snapshot not yet covered by a `syncfs` (written in the snapshot's commit,
/// removed by the sync that covers it or with the snapshot record).
pub(crate) const UNSYNCED_SNAPSHOTS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("unsynced_snapshots");

/// Lease id -> `LeaseRecord`.
pub(crate) const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");

/// Lease id -> `kind:value` keys of the resources it protects.
pub(crate) const LEASE_RESOURCES: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("lease_resources");

/// Ingest key -> `IngestRecord`.
pub(crate) const INGESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("ingests");

pub(crate) mod meta_keys {
    /// u64, little endian: the schema the file is written in.
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// UTF-8: the id of the daemon boot that last opened the store for serving.
    pub const BOOT_ID: &str = "boot_id";
}
