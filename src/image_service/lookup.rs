//! What a CRI `ImageSpec.image` names, and finding it.
//!
//! Clients name an image by reference (`busybox`, `quay.io/x/y:1`,
//! `x@sha256:…`), by id (`sha256:<hex>` or bare 64-hex), or, like crictl users,
//! by a short id prefix. A short hex string is also a valid Docker Hub name
//! (`cafe`), so as in containerd the name is tried first and the id prefix
//! second.

use crate::image_service::ServiceError;
use crate::metadata::{Image, MetadataError, ReadSnapshot, WriteTxn, resolve_image_id_prefix};
use crate::reference::{AnyReference, Digest, ReferenceError};

/// The shortest id prefix accepted, as crictl users type them.
const ID_PREFIX_HEX_MIN: usize = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSelector {
    /// A full normalized name (`docker.io/library/busybox:latest`, `…@sha256:…`).
    Name(String),
    /// An image id.
    Id(Digest),
    /// A name that is also hex: tried as a name, then as an id prefix.
    NameOrIdPrefix { name: String, id_prefix: String },
    /// An id prefix (hex, optionally after `sha256:`) that is not a valid name.
    IdPrefix(String),
}

impl ImageSelector {
    pub fn parse(input: &str) -> Result<ImageSelector, ServiceError> {
        let invalid = |source: ReferenceError| ServiceError::InvalidReference {
            input: crate::reference::bounded_echo(input),
            source,
        };
        let id_prefix = id_prefix_of(input);
        // `sha256:abc` is a repository "sha256" with tag "abc" to the reference
        // grammar, but to a person it is an id prefix.
        if input.starts_with("sha256:")
            && input.len() < "sha256:".len() + 64
            && let Some(id_prefix) = id_prefix
        {
            return Ok(ImageSelector::IdPrefix(id_prefix));
        }
        match AnyReference::parse(input) {
            Ok(AnyReference::Digest(digest)) => Ok(ImageSelector::Id(digest)),
            Ok(AnyReference::Named(reference)) => {
                let name = reference.normalized().to_string();
                Ok(match id_prefix {
                    Some(id_prefix) => ImageSelector::NameOrIdPrefix { name, id_prefix },
                    None => ImageSelector::Name(name),
                })
            }
            Err(error) => match id_prefix {
                Some(id_prefix) => Ok(ImageSelector::IdPrefix(id_prefix)),
                None => Err(invalid(error)),
            },
        }
    }
}

/// `abc123` or `sha256:abc123` -> `sha256:abc123` when it is lowercase hex of
/// a plausible prefix length.
fn id_prefix_of(input: &str) -> Option<String> {
    let hex = input.strip_prefix("sha256:").unwrap_or(input);
    let plausible = (ID_PREFIX_HEX_MIN..=64).contains(&hex.len())
        && hex
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
    plausible.then(|| format!("sha256:{hex}"))
}

pub(crate) fn find_image(
    snapshot: &ReadSnapshot,
    selector: &ImageSelector,
) -> Result<Option<Image>, MetadataError> {
    match selector {
        ImageSelector::Name(name) => snapshot.image_by_name(name),
        ImageSelector::Id(id) => snapshot.image(id),
        ImageSelector::NameOrIdPrefix { name, id_prefix } => match snapshot.image_by_name(name)? {
            Some(image) => Ok(Some(image)),
            None => by_prefix(snapshot, id_prefix),
        },
        ImageSelector::IdPrefix(id_prefix) => by_prefix(snapshot, id_prefix),
    }
}

fn by_prefix(snapshot: &ReadSnapshot, id_prefix: &str) -> Result<Option<Image>, MetadataError> {
    match resolve_image_id_prefix(snapshot, id_prefix)? {
        Some(id) => snapshot.image(&id),
        None => Ok(None),
    }
}

/// The id `selector` names, resolved inside a write transaction so that a
/// removal acts on what the name points at when it commits. Id prefixes are
/// resolved on the latest snapshot (ids never change what they name).
pub(crate) fn find_image_id_in_txn(
    txn: &WriteTxn,
    selector: &ImageSelector,
    snapshot: &ReadSnapshot,
) -> Result<Option<Digest>, MetadataError> {
    let by_prefix = |id_prefix: &str| resolve_image_id_prefix(snapshot, id_prefix);
    match selector {
        ImageSelector::Name(name) => txn.image_id_by_name(name),
        ImageSelector::Id(id) => Ok(txn.image(id)?.map(|image| image.id().clone())),
        ImageSelector::NameOrIdPrefix { name, id_prefix } => match txn.image_id_by_name(name)? {
            Some(id) => Ok(Some(id)),
            None => by_prefix(id_prefix),
        },
        ImageSelector::IdPrefix(id_prefix) => by_prefix(id_prefix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_follow_containerd_resolution_order() {
        let hex = "a".repeat(64);
        let id = Digest::parse(&format!("sha256:{hex}")).unwrap();
        let cases: Vec<(String, ImageSelector)> = vec![
            (
                "busybox".into(),
                ImageSelector::Name("docker.io/library/busybox:latest".into()),
            ),
            (
                "quay.io/x/y:1".into(),
                ImageSelector::Name("quay.io/x/y:1".into()),
            ),
            (
                format!("busybox:1@{id}"),
                ImageSelector::Name(format!("docker.io/library/busybox@{id}")),
            ),
            (
                "cafe".into(),
                ImageSelector::NameOrIdPrefix {
                    name: "docker.io/library/cafe:latest".into(),
                    id_prefix: "sha256:cafe".into(),
                },
            ),
            (format!("sha256:{hex}"), ImageSelector::Id(id.clone())),
            (hex.clone(), ImageSelector::Id(id)),
            (
                "sha256:abc12".into(),
                ImageSelector::IdPrefix("sha256:abc12".into()),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(ImageSelector::parse(&input).unwrap(), expected, "{input}");
        }
        for invalid in ["", "Not Valid!", "library/UPPER", "ab"] {
            let error = ImageSelector::parse(invalid).err();
            let is_name = invalid == "ab";
            // "ab" is a valid Docker Hub name, just too short to be an id prefix.
            assert_eq!(error.is_none(), is_name, "{invalid}");
        }
        let error = ImageSelector::parse("Not Valid!").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("invalid image reference \"Not Valid!\""),
            "{error}"
        );
    }
}
