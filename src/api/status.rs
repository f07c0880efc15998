//! The one place where errors become gRPC status codes. Messages name the
//! reference and the cause; no error type carries a secret, so none reaches
//! a client or a log through here.

use crate::content_store::ContentError;
use crate::image_service::ServiceError;
use crate::image_service::fetch::FetchError;
use crate::metadata::MetadataError;
use crate::registry::RegistryError;

pub fn to_status(error: &ServiceError) -> tonic::Status {
    let message = error.to_string();
    let code = match error {
        ServiceError::InvalidReference { .. } => tonic::Code::InvalidArgument,
        ServiceError::InvalidAuth(_) => tonic::Code::InvalidArgument,
        ServiceError::UnknownRuntimeHandler { .. } => tonic::Code::InvalidArgument,
        ServiceError::Metadata(error) => metadata_code(error),
        ServiceError::Content(error) => content_code(error),
        ServiceError::Registry(error) => registry_code(error),
        ServiceError::Fetch(error) => match error {
            FetchError::Registry(error) => registry_code(error),
            FetchError::Content(error) => content_code(error),
            FetchError::NoMatchingPlatform { .. } => tonic::Code::NotFound,
            _ => tonic::Code::FailedPrecondition,
        },
        ServiceError::Unpack { .. } => tonic::Code::FailedPrecondition,
        ServiceError::ShuttingDown => tonic::Code::Unavailable,
        ServiceError::TooManyPulls { .. } => tonic::Code::ResourceExhausted,
        ServiceError::ImageNotFound { .. } => tonic::Code::NotFound,
        ServiceError::NoLayers { .. } => tonic::Code::FailedPrecondition,
        ServiceError::InvalidMountTarget { .. } => tonic::Code::InvalidArgument,
        ServiceError::PullDeadlineExceeded { .. } => tonic::Code::DeadlineExceeded,
        ServiceError::Gc(crate::gc::GcError::StoreInconsistent { .. }) => {
            tonic::Code::FailedPrecondition
        }
        _ => tonic::Code::Internal,
    };
    tonic::Status::new(code, message)
}

fn registry_code(error: &RegistryError) -> tonic::Code {
    match error {
        RegistryError::Credentials(_) => tonic::Code::InvalidArgument,
        RegistryError::Unauthorized { .. } => tonic::Code::Unauthenticated,
        RegistryError::Denied { .. } => tonic::Code::PermissionDenied,
        RegistryError::ManifestNotFound { .. } | RegistryError::BlobNotFound { .. } => {
            tonic::Code::NotFound
        }
        RegistryError::Unreachable { .. } | RegistryError::RateLimited { .. } => {
            tonic::Code::Unavailable
        }
        RegistryError::Stalled { .. } | RegistryError::TooSlow { .. } => {
            tonic::Code::DeadlineExceeded
        }
        RegistryError::UnexpectedStatus { status, .. } if *status >= 500 => {
            tonic::Code::Unavailable
        }
        _ => tonic::Code::FailedPrecondition,
    }
}

fn content_code(error: &ContentError) -> tonic::Code {
    match error {
        ContentError::Io { source, .. } if is_disk_full(source) => tonic::Code::ResourceExhausted,
        ContentError::Metadata(error) => metadata_code(error),
        ContentError::SizeMismatch { .. } | ContentError::DigestMismatch { .. } => {
            tonic::Code::DataLoss
        }
        _ => tonic::Code::Internal,
    }
}

fn metadata_code(error: &MetadataError) -> tonic::Code {
    match error {
        error if error.is_disk_full() => tonic::Code::ResourceExhausted,
        MetadataError::ImageNotFound { .. } => tonic::Code::NotFound,
        _ => tonic::Code::Internal,
    }
}

fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}
