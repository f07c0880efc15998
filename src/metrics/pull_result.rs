//! The `result` label of finished pulls: a small closed set, so dashboards and
//! alerts can name every value. `image_service` derives it from its error
//! enums in one function (`ServiceError::pull_result`).

/// How a pull ended, as an operator groups failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PullResult {
    Ok,
    /// The registry refused the credentials, or asked for some.
    Auth,
    /// The reference, a blob, or a manifest for the platform does not exist.
    NotFound,
    /// The registry stopped sending bytes.
    Stalled,
    /// Received bytes do not hash to the digest that names them.
    DigestMismatch,
    /// The caller went away, or the daemon is shutting down.
    Cancelled,
    /// The request itself is invalid (reference, credentials form, handler).
    Invalid,
    /// The registry is unreachable, overloaded, or rate limiting; or the
    /// daemon's pull queue is full.
    Unavailable,
    /// The disk under the store is full.
    DiskFull,
    Other,
}

impl PullResult {
    pub const ALL: [PullResult; 10] = [
        PullResult::Ok,
        PullResult::Auth,
        PullResult::NotFound,
        PullResult::Stalled,
        PullResult::DigestMismatch,
        PullResult::Cancelled,
        PullResult::Invalid,
        PullResult::Unavailable,
        PullResult::DiskFull,
        PullResult::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PullResult::Ok => "ok",
            PullResult::Auth => "auth",
            PullResult::NotFound => "not_found",
            PullResult::Stalled => "stalled",
            PullResult::DigestMismatch => "digest_mismatch",
            PullResult::Cancelled => "cancelled",
            PullResult::Invalid => "invalid",
            PullResult::Unavailable => "unavailable",
            PullResult::DiskFull => "disk_full",
            PullResult::Other => "other",
        }
    }
}

impl prometheus_client::encoding::EncodeLabelValue for PullResult {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(self.as_str())
    }
}
