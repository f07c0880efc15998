//! Everything that can go wrong talking to a registry. Each variant names the
//! registry, repository, reference or digest concerned; none carries a
//! credential, a token, or a URL query string (signed blob URLs carry tokens).

use crate::reference::Digest;
use crate::registry::credentials::CredentialsError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("invalid credentials: {0}")]
    Credentials(#[from] CredentialsError),
    #[error("registry {registry} refused the credentials for {repository}: {detail}")]
    Unauthorized {
        registry: String,
        repository: String,
        detail: String,
    },
    #[error("registry {registry} denied access to {repository}")]
    Denied {
        registry: String,
        repository: String,
    },
    #[error("manifest {reference} not found at registry {registry}")]
    ManifestNotFound { registry: String, reference: String },
    #[error("blob {digest} of {repository} not found at registry {registry}")]
    BlobNotFound {
        registry: String,
        repository: String,
        digest: Digest,
    },
    #[error("registry {registry} is unreachable: {detail}")]
    Unreachable { registry: String, detail: String },
    #[error("registry {registry} sent no bytes of {what} for {timeout_ms} ms")]
    Stalled {
        registry: String,
        what: String,
        timeout_ms: u64,
    },
    #[error(
        "registry {registry} sent {received_bytes} bytes of {what} in {window_ms} ms, under the minimum of {bytes_per_second} bytes/s"
    )]
    TooSlow {
        registry: String,
        what: String,
        received_bytes: u64,
        window_ms: u64,
        bytes_per_second: u64,
    },
    #[error("{what} from registry {registry} has digest {received}, expected {expected}")]
    DigestMismatch {
        registry: String,
        what: String,
        expected: Digest,
        received: Digest,
    },
    #[error("{what} from registry {registry} is over the {limit_bytes}-byte limit")]
    TooLarge {
        registry: String,
        what: String,
        limit_bytes: u64,
    },
    #[error("registry {registry} answered {status} to {method} {path}{}", registry_error_suffix(.code, .message))]
    UnexpectedStatus {
        registry: String,
        method: &'static str,
        path: String,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    #[error("registry {registry} is rate limiting requests for {path} (429) and retries ran out")]
    RateLimited { registry: String, path: String },
    #[error("registry {registry} redirected {path} more than {redirects_max} times")]
    TooManyRedirects {
        registry: String,
        path: String,
        redirects_max: usize,
    },
    #[error("token endpoint {realm} sent an unusable answer: {detail}")]
    TokenResponseInvalid { realm: String, detail: String },
    #[error("registry {registry} sent an invalid authentication challenge: {detail}")]
    InvalidChallenge { registry: String, detail: String },
    #[error("registry {registry}: {detail}")]
    InvalidResponse { registry: String, detail: String },
    #[error("cannot set up the http client for registry {registry}: {detail}")]
    ClientSetup { registry: String, detail: String },
}

impl RegistryError {
    /// Whether trying the next endpoint (mirror, then upstream) may succeed
    /// where this one failed. Authorization and "not found" answers from the
    /// last endpoint are final; from a mirror they are not, since a mirror may
    /// simply not have the content.
    pub fn worth_trying_elsewhere(&self) -> bool {
        !matches!(self, RegistryError::Credentials(_))
    }

    /// A failure that may pass on a retry of the same request.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RegistryError::Unreachable { .. }
                | RegistryError::Stalled { .. }
                | RegistryError::TooSlow { .. }
                | RegistryError::RateLimited { .. }
        ) || matches!(self, RegistryError::UnexpectedStatus { status, .. } if *status >= 500)
    }
}

fn registry_error_suffix(code: &Option<String>, message: &Option<String>) -> String {
    match (code, message) {
        (Some(code), Some(message)) => format!(" ({code}: {message})"),
        (Some(code), None) => format!(" ({code})"),
        (None, Some(message)) => format!(" ({message})"),
        (None, None) => String::new(),
    }
}
