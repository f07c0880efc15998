//! Stored record types and their encoding.
//!
//! Every value in a table is one byte of record version followed by the record's
//! postcard encoding (postcard's wire format is documented and stable across its
//! 1.x releases). The version byte lets a later schema read records written by an
//! earlier one: when a record's shape changes, the old struct stays here under its
//! version, `decode` learns to upgrade it, and a migration step rewrites the
//! table. Records hold plain strings and integers; conversion to the domain types
//! in `model.rs` validates every digest, so a damaged record surfaces as a typed
//! error instead of a wrong answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metadata::model::{
    Blob, BlobState, Image, ImageState, Ingest, Lease, LeaseResource, Snapshot, SnapshotState,
    UnsyncedSnapshot,
};
use crate::oci::Descriptor;
use crate::reference::Digest;

/// Why a stored value could not be turned back into a domain value.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    #[error("empty record")]
    Empty,
    #[error("record version {found} is not known to this build (it knows version {known})")]
    UnknownVersion { found: u8, known: u8 },
    #[error("undecodable record: {detail}")]
    Undecodable { detail: String },
    #[error("invalid {field} {value:?} in record")]
    InvalidField { field: &'static str, value: String },
}

/// A type stored as a table value, with the version its encoding carries.
pub(crate) trait Record: Serialize {
    const VERSION: u8;
}

pub(crate) fn encode<R: Record>(record: &R) -> Vec<u8> {
    let mut bytes = vec![R::VERSION];
    // Serializing plain structs of strings, integers and maps into a Vec cannot fail.
    bytes.extend(postcard::to_stdvec(record).expect("postcard encoding into a Vec is infallible"));
    bytes
}

/// Decodes a record; string fields of hot records borrow from `bytes`.
pub(crate) fn decode<'a, R: Record + Deserialize<'a>>(bytes: &'a [u8]) -> Result<R, RecordError> {
    let (&version, body) = bytes.split_first().ok_or(RecordError::Empty)?;
    if version != R::VERSION {
        return Err(RecordError::UnknownVersion {
            found: version,
            known: R::VERSION,
        });
    }
    postcard::from_bytes(body).map_err(|error| RecordError::Undecodable {
        detail: error.to_string(),
    })
}

fn parse_digest(field: &'static str, value: &str) -> Result<Digest, RecordError> {
    Digest::parse(value).map_err(|_| RecordError::InvalidField {
        field,
        value: value.to_owned(),
    })
}

fn parse_optional_digest(
    field: &'static str,
    value: &Option<String>,
) -> Result<Option<Digest>, RecordError> {
    value
        .as_deref()
        .map(|value| parse_digest(field, value))
        .transpose()
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct DescriptorRecord<'a> {
    pub media_type: &'a str,
    pub digest: &'a str,
    pub size_bytes: u64,
}

impl<'a> DescriptorRecord<'a> {
    fn from_domain(descriptor: &'a Descriptor) -> Self {
        DescriptorRecord {
            media_type: &descriptor.media_type,
            digest: descriptor.digest.as_str(),
            size_bytes: descriptor.size_bytes,
        }
    }

    fn to_domain(&self, field: &'static str) -> Result<Descriptor, RecordError> {
        Ok(Descriptor::new(
            self.media_type,
            parse_digest(field, self.digest)?,
            self.size_bytes,
        ))
    }
}

/// `images` value (key: image id). Version 1, unchanged since schema v1.
/// Strings borrow from the stored bytes: listing decodes thousands of these.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRecord<'a> {
    #[serde(borrow)]
    pub target: DescriptorRecord<'a>,
    #[serde(borrow)]
    pub manifest: DescriptorRecord<'a>,
    #[serde(borrow)]
    pub config: DescriptorRecord<'a>,
    pub top_chain_id: Option<&'a str>,
    pub size_bytes: u64,
    pub state: u8,
    pub pinned: bool,
    pub config_user: String,
    pub annotations: BTreeMap<String, String>,
    pub created_unix_ms: u64,
    pub updated_unix_ms: u64,
}

impl Record for ImageRecord<'_> {
    const VERSION: u8 = 1;
}

pub(crate) fn image_state_code(state: ImageState) -> u8 {
    match state {
        ImageState::Pulling => 0,
        ImageState::Ready => 1,
        ImageState::GcPending => 2,
    }
}

fn image_state_from_code(code: u8) -> Result<ImageState, RecordError> {
    match code {
        0 => Ok(ImageState::Pulling),
        1 => Ok(ImageState::Ready),
        2 => Ok(ImageState::GcPending),
        other => Err(RecordError::InvalidField {
            field: "image state",
            value: other.to_string(),
        }),
    }
}

impl<'a> ImageRecord<'a> {
    pub fn from_domain(image: &'a Image) -> Self {
        ImageRecord {
            target: DescriptorRecord::from_domain(&image.target),
            manifest: DescriptorRecord::from_domain(&image.manifest),
            config: DescriptorRecord::from_domain(&image.config),
            top_chain_id: image.top_chain_id.as_ref().map(Digest::as_str),
            size_bytes: image.size_bytes,
            state: image_state_code(image.state),
            pinned: image.pinned,
            config_user: image.config_user.clone(),
            annotations: image.annotations.clone(),
            created_unix_ms: image.created_unix_ms,
            updated_unix_ms: image.updated_unix_ms,
        }
    }

    pub fn into_domain(self) -> Result<Image, RecordError> {
        Ok(Image {
            target: self.target.to_domain("image target digest")?,
            manifest: self.manifest.to_domain("image manifest digest")?,
            config: self.config.to_domain("image config digest")?,
            top_chain_id: self
                .top_chain_id
                .map(|chain_id| parse_digest("image top chain id", chain_id))
                .transpose()?,
            size_bytes: self.size_bytes,
            state: image_state_from_code(self.state)?,
            pinned: self.pinned,
            config_user: self.config_user,
            annotations: self.annotations,
            created_unix_ms: self.created_unix_ms,
            updated_unix_ms: self.updated_unix_ms,
        })
    }
}

/// `references` value (key: full normalized name).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReferenceRecord {
    pub image_id: String,
    pub updated_unix_ms: u64,
}

impl Record for ReferenceRecord {
    const VERSION: u8 = 1;
}

/// `blobs` value (key: digest).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobRecord {
    pub media_type: String,
    pub size_bytes: u64,
    /// 0 = present, 1 = missing.
    pub state: u8,
    pub children: Vec<String>,
    pub created_unix_ms: u64,
}

impl Record for BlobRecord {
    const VERSION: u8 = 1;
}

impl BlobRecord {
    pub fn from_domain(blob: &Blob) -> Self {
        BlobRecord {
            media_type: blob.media_type.clone(),
            size_bytes: blob.size_bytes,
            state: match blob.state {
                BlobState::Present => 0,
                BlobState::Missing => 1,
            },
            children: blob.children.iter().map(Digest::to_string).collect(),
            created_unix_ms: blob.created_unix_ms,
        }
    }

    pub fn into_domain(self, digest: &str) -> Result<Blob, RecordError> {
        Ok(Blob {
            digest: parse_digest("blob digest", digest)?,
            media_type: self.media_type,
            size_bytes: self.size_bytes,
            state: match self.state {
                0 => BlobState::Present,
                1 => BlobState::Missing,
                other => {
                    return Err(RecordError::InvalidField {
                        field: "blob state",
                        value: other.to_string(),
                    });
                }
            },
            children: self
                .children
                .iter()
                .map(|child| parse_digest("blob child digest", child))
                .collect::<Result<_, _>>()?,
            created_unix_ms: self.created_unix_ms,
        })
    }
}

/// `snapshots` value (key: chain id).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotRecord {
    pub parent: Option<String>,
    pub diff_id: String,
    pub size_bytes: u64,
    pub inodes: u64,
    /// 0 = extracting, 1 = committed.
    pub state: u8,
    pub created_unix_ms: u64,
}

impl Record for SnapshotRecord {
    const VERSION: u8 = 1;
}

impl SnapshotRecord {
    pub fn from_domain(snapshot: &Snapshot) -> Self {
        SnapshotRecord {
            parent: snapshot.parent.as_ref().map(Digest::to_string),
            diff_id: snapshot.diff_id.to_string(),
            size_bytes: snapshot.size_bytes,
            inodes: snapshot.inodes,
            state: match snapshot.state {
                SnapshotState::Extracting => 0,
                SnapshotState::Committed => 1,
            },
            created_unix_ms: snapshot.created_unix_ms,
        }
    }

    pub fn into_domain(self, chain_id: &str) -> Result<Snapshot, RecordError> {
        Ok(Snapshot {
            chain_id: parse_digest("snapshot chain id", chain_id)?,
            parent: parse_optional_digest("snapshot parent", &self.parent)?,
            diff_id: parse_digest("snapshot diff id", &self.diff_id)?,
            size_bytes: self.size_bytes,
            inodes: self.inodes,
            state: match self.state {
                0 => SnapshotState::Extracting,
                1 => SnapshotState::Committed,
                other => {
                    return Err(RecordError::InvalidField {
                        field: "snapshot state",
                        value: other.to_string(),
                    });
                }
            },
            created_unix_ms: self.created_unix_ms,
        })
    }
}

/// `unsynced_snapshots` value (key: chain id), schema v3.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnsyncedSnapshotRecord {
    pub kernel_boot_id: String,
    pub committed_unix_ms: u64,
}

impl Record for UnsyncedSnapshotRecord {
    const VERSION: u8 = 1;
}

impl UnsyncedSnapshotRecord {
    pub fn from_domain(unsynced: &UnsyncedSnapshot) -> Self {
        UnsyncedSnapshotRecord {
            kernel_boot_id: unsynced.kernel_boot_id.clone(),
            committed_unix_ms: unsynced.committed_unix_ms,
        }
    }

    pub fn into_domain(self, chain_id: &str) -> Result<UnsyncedSnapshot, RecordError> {
        Ok(UnsyncedSnapshot {
            chain_id: parse_digest("unsynced snapshot chain id", chain_id)?,
            kernel_boot_id: self.kernel_boot_id,
            committed_unix_ms: self.committed_unix_ms,
        })
    }
}

/// `leases` value (key: lease id).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseRecord {
    pub created_unix_ms: u64,
    pub expires_unix_ms: u64,
    pub boot_id: String,
    pub labels: BTreeMap<String, String>,
}

impl Record for LeaseRecord {
    const VERSION: u8 = 1;
}

impl LeaseRecord {
    pub fn from_domain(lease: &Lease) -> Self {
        LeaseRecord {
            created_unix_ms: lease.created_unix_ms,
            expires_unix_ms: lease.expires_unix_ms,
            boot_id: lease.boot_id.clone(),
            labels: lease.labels.clone(),
        }
    }

    pub fn into_domain(self, id: &str) -> Lease {
        Lease {
            id: id.to_owned(),
            created_unix_ms: self.created_unix_ms,
            expires_unix_ms: self.expires_unix_ms,
            boot_id: self.boot_id,
            labels: self.labels,
        }
    }
}

/// `ingests` value (key: ingest key).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct IngestRecord {
    pub expected_digest: String,
    pub expected_size_bytes: u64,
    pub offset_bytes: u64,
    pub started_unix_ms: u64,
    pub updated_unix_ms: u64,
}

impl Record for IngestRecord {
    const VERSION: u8 = 1;
}

impl IngestRecord {
    pub fn from_domain(ingest: &Ingest) -> Self {
        IngestRecord {
            expected_digest: ingest.expected_digest.to_string(),
            expected_size_bytes: ingest.expected_size_bytes,
            offset_bytes: ingest.offset_bytes,
            started_unix_ms: ingest.started_unix_ms,
            updated_unix_ms: ingest.updated_unix_ms,
        }
    }

    pub fn into_domain(self, key: &str) -> Result<Ingest, RecordError> {
        Ok(Ingest {
            key: key.to_owned(),
            expected_digest: parse_digest("ingest expected digest", &self.expected_digest)?,
            expected_size_bytes: self.expected_size_bytes,
            offset_bytes: self.offset_bytes,
            started_unix_ms: self.started_unix_ms,
            updated_unix_ms: self.updated_unix_ms,
        })
    }
}

/// Lease resources are stored as `kind:value` strings in a multimap, so that
/// "everything this lease holds" is one range read.
pub(crate) fn lease_resource_key(resource: &LeaseResource) -> String {
    match resource {
        LeaseResource::Image(digest) => format!("image:{digest}"),
        LeaseResource::Blob(digest) => format!("blob:{digest}"),
        LeaseResource::Snapshot(digest) => format!("snapshot:{digest}"),
        LeaseResource::Ingest(key) => format!("ingest:{key}"),
    }
}

pub(crate) fn lease_resource_from_key(key: &str) -> Result<LeaseResource, RecordError> {
    let invalid = || RecordError::InvalidField {
        field: "lease resource",
        value: key.to_owned(),
    };
    let (kind, value) = key.split_once(':').ok_or_else(invalid)?;
    match kind {
        "image" => Ok(LeaseResource::Image(
            Digest::parse(value).map_err(|_| invalid())?,
        )),
        "blob" => Ok(LeaseResource::Blob(
            Digest::parse(value).map_err(|_| invalid())?,
        )),
        "snapshot" => Ok(LeaseResource::Snapshot(
            Digest::parse(value).map_err(|_| invalid())?,
        )),
        "ingest" if !value.is_empty() => Ok(LeaseResource::Ingest(value.to_owned())),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_carries_the_record_version_and_round_trips() {
        let record = ReferenceRecord {
            image_id: "sha256:".to_owned() + &"a".repeat(64),
            updated_unix_ms: 42,
        };
        let bytes = encode(&record);
        assert_eq!(bytes[0], ReferenceRecord::VERSION);
        assert_eq!(decode::<ReferenceRecord>(&bytes), Ok(record));
    }

    #[test]
    fn decoding_refuses_unknown_versions_and_garbage() {
        assert_eq!(decode::<ReferenceRecord>(&[]), Err(RecordError::Empty));
        assert_eq!(
            decode::<ReferenceRecord>(&[9, 1, 2]),
            Err(RecordError::UnknownVersion { found: 9, known: 1 })
        );
        assert!(matches!(
            decode::<ReferenceRecord>(&[1, 0xff]),
            Err(RecordError::Undecodable { .. })
        ));
    }

    #[test]
    fn lease_resource_keys_round_trip_and_reject_garbage() {
        let digest = Digest::parse(&("sha256:".to_owned() + &"b".repeat(64))).unwrap();
        for resource in [
            LeaseResource::Image(digest.clone()),
            LeaseResource::Blob(digest.clone()),
            LeaseResource::Snapshot(digest),
            LeaseResource::Ingest("pull-1/layer".to_owned()),
        ] {
            let key = lease_resource_key(&resource);
            assert_eq!(lease_resource_from_key(&key), Ok(resource));
        }
        for bad in ["", "blob", "blob:sha256:zz", "ingest:", "volume:x"] {
            assert!(lease_resource_from_key(bad).is_err(), "{bad} accepted");
        }
    }
}
