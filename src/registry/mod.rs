//! The registry client: the only module that touches the network.
//!
//! [`RegistryClient`] holds what outlives a pull (HTTP clients per TLS setup,
//! the token cache, limits). [`RegistryClient::session`] gives a
//! [`RepositorySession`] for one repository and one set of credentials, which
//! resolves references, fetches manifests and opens blob streams, trying each
//! endpoint in turn (mirrors first, then upstream) and verifying every manifest
//! against its digest. Blob bytes are verified by the content store as they
//! are written.

mod auth;
pub mod credentials;
mod error;
pub mod hosts;
mod session;
pub mod www_authenticate;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use credentials::{AuthConfigFields, Credentials, RegistryCredentials, Secret};
pub use error::RegistryError;
pub use session::{BlobStream, FetchedManifest, RepositorySession};

use crate::reference::ImageReference;

/// Limits and timeouts, with units in their names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryConfig {
    pub manifest_bytes_max: u64,
    pub config_bytes_max: u64,
    pub token_response_bytes_max: u64,
    pub error_body_bytes_max: u64,
    /// Headers in one response; a registry that sends more is refused (hyper
    /// also bounds the bytes of a response head, 400 KiB).
    pub response_headers_max: usize,
    pub redirects_max: usize,
    /// Retries of one request after a transient failure (connection error, 429, 5xx).
    pub retries_max: u32,
    pub retry_backoff_initial_ms: u64,
    pub retry_backoff_max_ms: u64,
    pub connect_timeout_ms: u64,
    /// A response that sends no byte for this long has stalled.
    pub progress_timeout_ms: u64,
    /// A blob stream slower than this over a whole window fails (and resumes
    /// from the next endpoint); `None` means no minimum.
    pub min_throughput: Option<MinThroughput>,
    pub user_agent: String,
}

/// The slowest blob download tolerated, measured over consecutive windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinThroughput {
    pub bytes_per_second: u64,
    pub window_ms: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            manifest_bytes_max: 4 * 1024 * 1024,
            config_bytes_max: 8 * 1024 * 1024,
            token_response_bytes_max: 1024 * 1024,
            error_body_bytes_max: 64 * 1024,
            response_headers_max: 100,
            redirects_max: 10,
            retries_max: 4,
            retry_backoff_initial_ms: 200,
            retry_backoff_max_ms: 10_000,
            connect_timeout_ms: 30_000,
            progress_timeout_ms: 5 * 60 * 1000,
            min_throughput: None,
            user_agent: format!("cri-imaged/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// TLS settings of an endpoint; endpoints with equal settings share an HTTP client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    pub ca_files: Vec<PathBuf>,
    /// Client certificate and key files (the key may be inside the cert file).
    pub client_certificates: Vec<(PathBuf, Option<PathBuf>)>,
    pub skip_verify: bool,
}

/// One place to talk to a registry: a mirror or the upstream itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The API root, ending in `/` (normally `https://host/v2/`).
    pub api_root: url::Url,
    pub is_mirror: bool,
    pub can_resolve: bool,
    pub can_pull: bool,
    pub tls: TlsSettings,
    pub headers: Vec<(String, Vec<String>)>,
}

impl Endpoint {
    /// The endpoint a registry gets when nothing is configured for it: https,
    /// except for loopback registries, which are plain http (as Docker and
    /// containerd treat localhost registries); Docker Hub's API lives at
    /// `registry-1.docker.io`.
    pub fn default_for(registry: &str) -> Result<Endpoint, RegistryError> {
        let host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let scheme = if is_loopback(host) { "http" } else { "https" };
        let api_root = url::Url::parse(&format!("{scheme}://{host}/v2/")).map_err(|error| {
            RegistryError::ClientSetup {
                registry: registry.to_owned(),
                detail: format!("invalid registry host: {error}"),
            }
        })?;
        Ok(Endpoint {
            api_root,
            is_mirror: false,
            can_resolve: true,
            can_pull: true,
            tls: TlsSettings::default(),
            headers: Vec::new(),
        })
    }

    /// host[:port] as printed in messages and matched against credentials.
    pub fn host(&self) -> String {
        match (self.api_root.host_str(), self.api_root.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => String::new(),
        }
    }
}

fn is_loopback(host_and_port: &str) -> bool {
    let host = if let Some(rest) = host_and_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host_and_port.split(':').next().unwrap_or_default()
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// How to find the endpoints of a registry.
pub trait EndpointResolver: Send + Sync {
    fn endpoints_for(&self, registry: &str) -> Result<Vec<Endpoint>, RegistryError>;
}

/// No configuration: every registry has its default endpoint.
pub struct DefaultEndpoints;

impl EndpointResolver for DefaultEndpoints {
    fn endpoints_for(&self, registry: &str) -> Result<Vec<Endpoint>, RegistryError> {
        Ok(vec![Endpoint::default_for(registry)?])
    }
}

/// Endpoints from a containerd-compatible `certs.d` directory: mirrors in file
/// order, then the upstream.
impl EndpointResolver for hosts::HostsDirectory {
    fn endpoints_for(&self, registry: &str) -> Result<Vec<Endpoint>, RegistryError> {
        let configured = hosts::HostsDirectory::endpoints_for(self, registry).map_err(|error| {
            RegistryError::ClientSetup {
                registry: registry.to_owned(),
                detail: error.to_string(),
            }
        })?;
        Ok(configured
            .into_iter()
            .map(|endpoint| {
                let mut api_root = endpoint.url.clone();
                // `join` treats the last path segment as a file unless the path ends in '/'.
                if !api_root.path().ends_with('/') {
                    let path = format!("{}/", api_root.path());
                    api_root.set_path(&path);
                }
                Endpoint {
                    can_resolve: endpoint.can_resolve(),
                    can_pull: endpoint.can_pull(),
                    api_root,
                    is_mirror: endpoint.is_mirror,
                    tls: TlsSettings {
                        ca_files: endpoint.ca_files,
                        client_certificates: endpoint
                            .client_certs
                            .into_iter()
                            .map(|certificate| (certificate.cert, certificate.key))
                            .collect(),
                        skip_verify: endpoint.skip_verify,
                    },
                    headers: endpoint.headers,
                }
            })
            .collect())
    }
}

/// The long-lived registry client. Cheap to clone.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    pub(crate) config: RegistryConfig,
    resolver: Box<dyn EndpointResolver>,
    http_clients: Mutex<HashMap<TlsSettings, reqwest::Client>>,
    pub(crate) tokens: auth::TokenCache,
}

impl RegistryClient {
    pub fn new(config: RegistryConfig, resolver: Box<dyn EndpointResolver>) -> RegistryClient {
        // reqwest is built without a bundled crypto provider; ring is ours. A
        // second install (another client in the same process) is harmless.
        // rustls 0.23.48 deprecates ring's provider because it has no
        // post-quantum key exchange; aws-lc-rs has one but compiles a large C
        // library into every build. Kept, knowingly: what we fetch is
        // verified by digest whatever the transport, and the choice is
        // revisited when ring gains X25519MLKEM768 (rustls issue 2801).
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        RegistryClient {
            inner: Arc::new(ClientInner {
                config,
                resolver,
                http_clients: Mutex::new(HashMap::new()),
                tokens: auth::TokenCache::default(),
            }),
        }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// A session for the repository of `reference`, authenticating with `credentials`.
    pub fn session(
        &self,
        reference: &ImageReference,
        credentials: RegistryCredentials,
    ) -> Result<RepositorySession, RegistryError> {
        let endpoints = self.inner.resolver.endpoints_for(reference.domain())?;
        Ok(RepositorySession::new(
            self.inner.clone(),
            reference.domain().to_owned(),
            reference.path().to_owned(),
            credentials,
            endpoints,
        ))
    }
}

impl ClientInner {
    /// The HTTP client for an endpoint's TLS settings, built once.
    pub(crate) fn http_for(&self, endpoint: &Endpoint) -> Result<reqwest::Client, RegistryError> {
        let mut clients = self
            .http_clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(&endpoint.tls) {
            return Ok(client.clone());
        }
        let client = self.build_http_client(endpoint)?;
        clients.insert(endpoint.tls.clone(), client.clone());
        Ok(client)
    }

    fn build_http_client(&self, endpoint: &Endpoint) -> Result<reqwest::Client, RegistryError> {
        let setup_error = |detail: String| RegistryError::ClientSetup {
            registry: endpoint.host(),
            detail,
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(self.config.user_agent.clone())
            .redirect(reqwest::redirect::Policy::limited(
                self.config.redirects_max,
            ))
            .connect_timeout(Duration::from_millis(self.config.connect_timeout_ms))
            .read_timeout(Duration::from_millis(self.config.progress_timeout_ms))
            .http1_max_headers(self.config.response_headers_max)
            .no_proxy();
        for ca_file in &endpoint.tls.ca_files {
            let pem = std::fs::read(ca_file).map_err(|error| {
                setup_error(format!("cannot read ca {}: {error}", ca_file.display()))
            })?;
            for certificate in reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| {
                setup_error(format!("invalid ca {}: {error}", ca_file.display()))
            })? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some((certificate, key)) = endpoint.tls.client_certificates.first() {
            let mut pem = std::fs::read(certificate).map_err(|error| {
                setup_error(format!(
                    "cannot read client certificate {}: {error}",
                    certificate.display()
                ))
            })?;
            if let Some(key) = key {
                pem.push(b'\n');
                pem.extend(std::fs::read(key).map_err(|error| {
                    setup_error(format!("cannot read client key {}: {error}", key.display()))
                })?);
            }
            let identity = reqwest::Identity::from_pem(&pem).map_err(|error| {
                setup_error(format!(
                    "invalid client certificate {}: {error}",
                    certificate.display()
                ))
            })?;
            builder = builder.identity(identity);
        }
        if endpoint.tls.skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        builder
            .build()
            .map_err(|error| setup_error(auth::describe_reqwest(&error)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_endpoints_follow_docker_conventions() {
        let cases = [
            ("docker.io", "https://registry-1.docker.io/v2/"),
            ("quay.io", "https://quay.io/v2/"),
            ("localhost:5000", "http://localhost:5000/v2/"),
            ("127.0.0.1:35123", "http://127.0.0.1:35123/v2/"),
            ("[::1]:5000", "http://[::1]:5000/v2/"),
            ("registry.local:5000", "https://registry.local:5000/v2/"),
        ];
        for (registry, expected) in cases {
            assert_eq!(
                Endpoint::default_for(registry).unwrap().api_root.as_str(),
                expected
            );
        }
        assert_eq!(
            Endpoint::default_for("[::1]:5000").unwrap().host(),
            "[::1]:5000"
        );
    }
}
