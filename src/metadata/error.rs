//! Errors of the metadata store: one enum for opening (which decides whether the
//! daemon may start at all), one for everything after.

use std::path::PathBuf;

use crate::metadata::records::RecordError;
use crate::reference::Digest;

/// Why the metadata database could not be opened. Every variant names the file,
/// and none of them is produced after anything was deleted: a store that cannot be
/// opened is left exactly as it was found (apart from redb's own crash repair).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("cannot open metadata database {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "metadata database {path} is in use by another process (is another cri-imaged running with the same root?)"
    )]
    AlreadyOpen { path: PathBuf },
    #[error(
        "metadata database {path} is corrupted ({detail}); nothing was deleted. Stop here and either restore the file from a backup, or move it aside (mv {path} {path}.corrupt) and start again with an empty store, after which images are pulled again"
    )]
    Corrupted { path: PathBuf, detail: String },
    #[error(
        "metadata database {path} has schema version {found}, newer than the {supported} this build supports; run a newer cri-imaged (the file was not modified)"
    )]
    NewerSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("metadata database {path} is in a redb file format ({format}) this build cannot read")]
    UnsupportedFileFormat { path: PathBuf, format: u8 },
    #[error("migrating metadata database {path} from schema {from} to {to} failed: {source}")]
    Migration {
        path: PathBuf,
        from: u64,
        to: u64,
        #[source]
        source: Box<MetadataError>,
    },
    #[error("metadata database {path}: {source}")]
    Metadata {
        path: PathBuf,
        #[source]
        source: Box<MetadataError>,
    },
}

/// Why a read or write of an open store failed. A failed write transaction has
/// written nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The database itself failed (I/O, a full disk, a latched earlier I/O error).
    /// After a failed commit redb keeps returning the error until the daemon restarts.
    #[error("metadata {operation} failed: {source}")]
    Storage {
        operation: &'static str,
        #[source]
        source: redb::Error,
    },
    #[error("corrupt record in table {table} under key {key:?}: {source}")]
    CorruptRecord {
        table: &'static str,
        key: String,
        #[source]
        source: RecordError,
    },
    #[error("image {id} does not exist")]
    ImageNotFound { id: Digest },
    #[error("lease {id} does not exist")]
    LeaseNotFound { id: String },
    #[error(
        "reference {name} is not in normalized form (expected a full name with exactly one of a tag or a digest)"
    )]
    NotNormalized { name: String },
    #[error("schema version {found} has no migration step to {target}")]
    NoMigrationPath { found: u64, target: u64 },
    #[error("fail point {name} fired")]
    FailPoint { name: &'static str },
}

impl MetadataError {
    /// The filesystem under the database is full (or over quota).
    pub fn is_disk_full(&self) -> bool {
        match self {
            MetadataError::Storage {
                source: redb::Error::Io(error),
                ..
            } => matches!(
                error.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            _ => false,
        }
    }

    pub(crate) fn storage<E: Into<redb::Error>>(operation: &'static str) -> impl FnOnce(E) -> Self {
        move |error| MetadataError::Storage {
            operation,
            source: error.into(),
        }
    }

    pub(crate) fn corrupt<'key>(
        table: &'static str,
        key: &'key str,
    ) -> impl FnOnce(RecordError) -> MetadataError + 'key {
        move |source| MetadataError::CorruptRecord {
            table,
            key: key.to_owned(),
            source,
        }
    }
}
