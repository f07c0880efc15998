//! The one function that turns a pull's error into the metrics' `result`
//! label. The matches on `ServiceError`, `FetchError` and `RegistryError` are
//! exhaustive on purpose: a new variant does not compile until someone
//! decides how operators should see it.

use crate::content_store::ContentError;
use crate::image_service::ServiceError;
use crate::image_service::fetch::FetchError;
use crate::image_service::pull::LayerError;
use crate::metadata::MetadataError;
use crate::metrics::PullResult;
use crate::registry::RegistryError;
use crate::snapshot_store::SnapshotError;
use crate::unpack::UnpackError;

impl ServiceError {
    /// How operators group this failure of a pull.
    pub fn pull_result(&self) -> PullResult {
        match self {
            ServiceError::InvalidReference { .. }
            | ServiceError::InvalidAuth(_)
            | ServiceError::UnknownRuntimeHandler { .. } => PullResult::Invalid,
            ServiceError::Metadata(error) => metadata_result(error),
            ServiceError::Content(error) => content_result(error),
            ServiceError::Registry(error) => registry_result(error),
            ServiceError::Fetch(error) => match error {
                FetchError::Registry(error) => registry_result(error),
                FetchError::Content(error) => content_result(error),
                FetchError::NoMatchingPlatform { .. } => PullResult::NotFound,
                FetchError::Manifest { .. }
                | FetchError::NestedIndex { .. }
                | FetchError::LayerCountMismatch { .. } => PullResult::Other,
            },
            ServiceError::Unpack { source, .. } => match source.as_ref() {
                LayerError::Unpack(UnpackError::DiffIdMismatch { .. }) => {
                    PullResult::DigestMismatch
                }
                LayerError::Unpack(error) if unpack_disk_full(error) => PullResult::DiskFull,
                // The layer's download failed under it: that error is the
                // pull's (reported first), this one only follows from it.
                LayerError::Unpack(_) | LayerError::MediaType(_) | LayerError::BlobStream(_) => {
                    PullResult::Other
                }
            },
            ServiceError::Snapshot(error) => match error {
                SnapshotError::Io { source, .. } if is_disk_full(source) => PullResult::DiskFull,
                SnapshotError::Metadata(error) => metadata_result(error),
                _ => PullResult::Other,
            },
            ServiceError::ShuttingDown => PullResult::Cancelled,
            ServiceError::TooManyPulls { .. } => PullResult::Unavailable,
            ServiceError::PullTaskFailed { .. } => PullResult::Other,
            ServiceError::PullDeadlineExceeded { .. } => PullResult::Stalled,
            ServiceError::Gc(_)
            | ServiceError::ImageNotFound { .. }
            | ServiceError::NoLayers { .. }
            | ServiceError::InvalidMountTarget { .. } => PullResult::Other,
        }
    }
}

fn registry_result(error: &RegistryError) -> PullResult {
    match error {
        RegistryError::Credentials(_) => PullResult::Invalid,
        RegistryError::Unauthorized { .. } | RegistryError::Denied { .. } => PullResult::Auth,
        RegistryError::ManifestNotFound { .. } | RegistryError::BlobNotFound { .. } => {
            PullResult::NotFound
        }
        RegistryError::Stalled { .. } | RegistryError::TooSlow { .. } => PullResult::Stalled,
        RegistryError::DigestMismatch { .. } => PullResult::DigestMismatch,
        RegistryError::Unreachable { .. } | RegistryError::RateLimited { .. } => {
            PullResult::Unavailable
        }
        RegistryError::UnexpectedStatus { status, .. } => match status {
            401 | 403 => PullResult::Auth,
            404 => PullResult::NotFound,
            500.. => PullResult::Unavailable,
            _ => PullResult::Other,
        },
        RegistryError::TooLarge { .. }
        | RegistryError::TooManyRedirects { .. }
        | RegistryError::TokenResponseInvalid { .. }
        | RegistryError::InvalidChallenge { .. }
        | RegistryError::InvalidResponse { .. }
        | RegistryError::ClientSetup { .. } => PullResult::Other,
    }
}

fn content_result(error: &ContentError) -> PullResult {
    match error {
        ContentError::Io { source, .. } if is_disk_full(source) => PullResult::DiskFull,
        ContentError::Metadata(error) => metadata_result(error),
        ContentError::SizeMismatch { .. } | ContentError::DigestMismatch { .. } => {
            PullResult::DigestMismatch
        }
        _ => PullResult::Other,
    }
}

fn metadata_result(error: &MetadataError) -> PullResult {
    if error.is_disk_full() {
        PullResult::DiskFull
    } else {
        PullResult::Other
    }
}

fn unpack_disk_full(error: &UnpackError) -> bool {
    use std::error::Error as _;
    // Unpack errors wrap the io::Error of the entry that failed; a full disk
    // shows as ENOSPC/EDQUOT there.
    error
        .source()
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(is_disk_full)
}

fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Digest;

    fn digest(byte: char) -> Digest {
        Digest::parse(&format!("sha256:{}", byte.to_string().repeat(64))).unwrap()
    }

    fn registry(error: RegistryError) -> ServiceError {
        ServiceError::Fetch(FetchError::Registry(error))
    }

    #[test]
    fn registry_failures_get_the_result_an_operator_acts_on() {
        let host = || "registry.example".to_owned();
        let cases = [
            (
                registry(RegistryError::Unauthorized {
                    registry: host(),
                    repository: "app".into(),
                    detail: "the credentials were rejected".into(),
                }),
                PullResult::Auth,
            ),
            (
                registry(RegistryError::Denied {
                    registry: host(),
                    repository: "app".into(),
                }),
                PullResult::Auth,
            ),
            (
                registry(RegistryError::ManifestNotFound {
                    registry: host(),
                    reference: "app:missing".into(),
                }),
                PullResult::NotFound,
            ),
            (
                registry(RegistryError::BlobNotFound {
                    registry: host(),
                    repository: "app".into(),
                    digest: digest('a'),
                }),
                PullResult::NotFound,
            ),
            (
                registry(RegistryError::Stalled {
                    registry: host(),
                    what: "blob".into(),
                    timeout_ms: 1,
                }),
                PullResult::Stalled,
            ),
            (
                registry(RegistryError::DigestMismatch {
                    registry: host(),
                    what: "manifest".into(),
                    expected: digest('a'),
                    received: digest('b'),
                }),
                PullResult::DigestMismatch,
            ),
            (
                registry(RegistryError::Unreachable {
                    registry: host(),
                    detail: "connection refused".into(),
                }),
                PullResult::Unavailable,
            ),
            (
                ServiceError::Registry(RegistryError::UnexpectedStatus {
                    registry: host(),
                    method: "GET",
                    path: "/v2/".into(),
                    status: 503,
                    code: None,
                    message: None,
                }),
                PullResult::Unavailable,
            ),
            (
                registry(RegistryError::InvalidResponse {
                    registry: host(),
                    detail: "odd".into(),
                }),
                PullResult::Other,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.pull_result(), expected, "{error}");
        }
    }

    #[test]
    fn local_failures_are_invalid_cancelled_unavailable_digest_mismatch_or_disk_full() {
        let disk_full = || std::io::Error::from(std::io::ErrorKind::StorageFull);
        let cases = [
            (
                ServiceError::UnknownRuntimeHandler {
                    name: "kata".into(),
                },
                PullResult::Invalid,
            ),
            (ServiceError::ShuttingDown, PullResult::Cancelled),
            (
                ServiceError::TooManyPulls { queued: 256 },
                PullResult::Unavailable,
            ),
            (
                ServiceError::Content(ContentError::DigestMismatch {
                    digest: digest('a'),
                    received: digest('b'),
                }),
                PullResult::DigestMismatch,
            ),
            (
                ServiceError::Content(ContentError::Io {
                    path: "/var/lib/cri-imaged/content".into(),
                    source: disk_full(),
                }),
                PullResult::DiskFull,
            ),
            (
                ServiceError::Snapshot(SnapshotError::Io {
                    path: "/var/lib/cri-imaged/snapshots".into(),
                    source: disk_full(),
                }),
                PullResult::DiskFull,
            ),
            (
                ServiceError::Unpack {
                    chain_id: digest('c'),
                    source: Box::new(LayerError::Unpack(UnpackError::DiffIdMismatch {
                        expected: digest('a'),
                        received: digest('b'),
                    })),
                },
                PullResult::DigestMismatch,
            ),
            (
                ServiceError::PullTaskFailed {
                    detail: "panicked".into(),
                },
                PullResult::Other,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.pull_result(), expected, "{error}");
        }
    }
}
