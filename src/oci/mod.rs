//! OCI value types shared by every layer: content descriptors now, manifests and
//! platforms as the registry client grows. Like `reference`, this module does no
//! I/O, and its types can only hold validated values.

pub mod manifest;
pub mod platform;

use crate::reference::Digest;

/// A pointer to content: what it is, its digest, and its exact size.
///
/// The size is part of the identity: a blob whose bytes hash to `digest` but whose
/// length differs from `size_bytes` is refused (the OCI descriptor rules check the
/// size first, then the hash).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size_bytes: u64,
}

impl Descriptor {
    pub fn new(media_type: impl Into<String>, digest: Digest, size_bytes: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size_bytes,
        }
    }
}
