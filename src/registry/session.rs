//! One repository at one registry, with one set of credentials: every request
//! of a pull goes through [`RepositorySession::send`], which adds
//! authentication (answering 401 challenges once), retries transient failures
//! with capped exponential backoff (honouring `Retry-After`), and maps
//! answers to typed errors. Operations try each endpoint in order, mirrors
//! first, and fall back to the next when one fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::oci::Descriptor;
use crate::reference::{Digest, DigestHasher, ImageReference};
use crate::registry::auth::{self, BoundedReadError};
use crate::registry::credentials::{Credentials, RegistryCredentials};
use crate::registry::error::RegistryError;
use crate::registry::{ClientInner, Endpoint, MinThroughput};

/// Every manifest type we can use, in the order we prefer them.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A manifest or index as received, already checked against its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedManifest {
    /// Media type (from `Content-Type`, parameters dropped; empty if absent),
    /// digest and size of the bytes.
    pub descriptor: Descriptor,
    pub bytes: Vec<u8>,
    /// The endpoint that answered (host), for logs.
    pub endpoint: String,
}

/// A blob's bytes from `offset_bytes` on.
pub struct BlobStream {
    pub offset_bytes: u64,
    pub stream: BoxStream<'static, Result<Bytes, RegistryError>>,
}

pub struct RepositorySession {
    client: Arc<ClientInner>,
    registry: String,
    repository: String,
    credentials: RegistryCredentials,
    endpoints: Vec<Endpoint>,
    /// The `Authorization` header that last worked, per endpoint index.
    authorization: Mutex<Vec<Option<String>>>,
    /// Body bytes received (manifests, configs, blob streams), for metrics.
    /// Shared with blob streams, which outlive the call that opened them.
    received_bytes: Arc<AtomicU64>,
    /// Requests that failed at one endpoint and went on to the next.
    endpoint_fallbacks: AtomicU64,
}

impl RepositorySession {
    pub(crate) fn new(
        client: Arc<ClientInner>,
        registry: String,
        repository: String,
        credentials: RegistryCredentials,
        endpoints: Vec<Endpoint>,
    ) -> RepositorySession {
        let authorization = Mutex::new(vec![None; endpoints.len()]);
        RepositorySession {
            client,
            registry,
            repository,
            credentials,
            endpoints,
            authorization,
            received_bytes: Arc::new(AtomicU64::new(0)),
            endpoint_fallbacks: AtomicU64::new(0),
        }
    }

    /// Body bytes received from the registry so far by this session,
    /// including those of failed attempts.
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes.load(Ordering::Relaxed)
    }

    /// How many times a request went on to the next endpoint (mirror
    /// fallback) in this session.
    pub fn endpoint_fallbacks(&self) -> u64 {
        self.endpoint_fallbacks.load(Ordering::Relaxed)
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// How many endpoints (mirrors and upstream) this session may use.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// Resolves a tag or digest reference to its manifest (or index). A digest
    /// reference is checked against the bytes; a tag's digest comes from the
    /// bytes too, and a `Docker-Content-Digest` header must agree with them.
    pub async fn resolve(
        &self,
        reference: &ImageReference,
    ) -> Result<FetchedManifest, RegistryError> {
        let (target, expected) = match (reference.digest(), reference.tag()) {
            (Some(digest), _) => (digest.to_string(), Some(digest.clone())),
            (None, Some(tag)) => (tag.to_owned(), None),
            (None, None) => ("latest".to_owned(), None),
        };
        let by_digest = expected.is_some();
        let reference_text = reference.to_string();
        self.on_each_endpoint(
            |endpoint| {
                if by_digest {
                    endpoint.can_pull
                } else {
                    endpoint.can_resolve
                }
            },
            |index| self.get_manifest(index, &target, expected.as_ref(), &reference_text),
        )
        .await
    }

    /// Fetches a manifest by digest (a platform manifest out of an index).
    pub async fn fetch_manifest(
        &self,
        descriptor: &Descriptor,
    ) -> Result<FetchedManifest, RegistryError> {
        let target = descriptor.digest.to_string();
        let what = format!(
            "{}/{}@{}",
            self.registry, self.repository, descriptor.digest
        );
        self.on_each_endpoint(
            |endpoint| endpoint.can_pull,
            |index| self.get_manifest(index, &target, Some(&descriptor.digest), &what),
        )
        .await
    }

    /// Fetches a small blob (an image config) whole and verifies it.
    pub async fn fetch_blob_bytes(
        &self,
        descriptor: &Descriptor,
        limit_bytes: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        if descriptor.size_bytes > limit_bytes {
            return Err(RegistryError::TooLarge {
                registry: self.registry.clone(),
                what: format!("blob {}", descriptor.digest),
                limit_bytes,
            });
        }
        self.on_each_endpoint(
            |endpoint| endpoint.can_pull,
            |index| async move {
                let response = self.get_blob_response(index, &descriptor.digest, 0).await?;
                let registry = self.endpoints[index].host();
                let bytes = auth::read_bounded(response, limit_bytes)
                    .await
                    .map_err(|error| self.body_error(&registry, error, "blob", limit_bytes))?;
                self.received_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                verify(
                    &registry,
                    &format!("blob {}", descriptor.digest),
                    &descriptor.digest,
                    &bytes,
                )?;
                Ok(bytes)
            },
        )
        .await
    }

    /// Opens a blob stream at `offset_bytes` (a `Range` request). A server that
    /// ignores the range answers with the whole blob, and `offset_bytes` of the
    /// result is then 0. The bytes are not verified here: the content store
    /// hashes them as it writes.
    pub async fn open_blob(
        &self,
        descriptor: &Descriptor,
        offset_bytes: u64,
    ) -> Result<BlobStream, RegistryError> {
        self.open_blob_from_endpoint(descriptor, offset_bytes, 0)
            .await
    }

    /// [`RepositorySession::open_blob`], trying endpoint `first_endpoint`
    /// first. A download whose stream failed resumes from the next endpoint,
    /// so a mirror that stalls mid-blob gives way to the others.
    pub async fn open_blob_from_endpoint(
        &self,
        descriptor: &Descriptor,
        offset_bytes: u64,
        first_endpoint: usize,
    ) -> Result<BlobStream, RegistryError> {
        self.on_each_endpoint_from(
            first_endpoint,
            |endpoint| endpoint.can_pull,
            |index| async move {
                let response = self
                    .get_blob_response(index, &descriptor.digest, offset_bytes)
                    .await?;
                let registry = self.endpoints[index].host();
                let served_from = if response.status().as_u16() == 206 {
                    content_range_start(&response).ok_or_else(|| RegistryError::InvalidResponse {
                        registry: registry.clone(),
                        detail: format!(
                            "a partial answer for blob {} without a valid Content-Range",
                            descriptor.digest
                        ),
                    })?
                } else {
                    0
                };
                if served_from != offset_bytes && served_from != 0 {
                    return Err(RegistryError::InvalidResponse {
                        registry,
                        detail: format!(
                            "asked for blob {} from byte {offset_bytes}, got bytes from {served_from}",
                            descriptor.digest
                        ),
                    });
                }
                let what = format!("blob {}", descriptor.digest);
                let timeout_ms = self.client.config.progress_timeout_ms;
                let mut window = self
                    .client
                    .config
                    .min_throughput
                    .map(ThroughputWindow::new);
                let received_bytes = self.received_bytes.clone();
                let stream = response
                    .bytes_stream()
                    .map(move |chunk| {
                        if let Ok(bytes) = &chunk {
                            received_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        }
                        let chunk = chunk
                            .map_err(|error| stream_error(&registry, &what, timeout_ms, &error))?;
                        if let Some(window) = window.as_mut() {
                            window.check(chunk.len() as u64, &registry, &what)?;
                        }
                        Ok(chunk)
                    })
                    .boxed();
                Ok(BlobStream {
                    offset_bytes: served_from,
                    stream,
                })
            },
        )
        .await
    }

    /// Runs `operation` on each endpoint that `usable` accepts, in order, until
    /// one succeeds; returns the last failure otherwise.
    async fn on_each_endpoint<T, F, Fut>(
        &self,
        usable: impl Fn(&Endpoint) -> bool,
        operation: F,
    ) -> Result<T, RegistryError>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        self.on_each_endpoint_from(0, usable, operation).await
    }

    /// Like `on_each_endpoint`, starting at endpoint `first` and wrapping
    /// around: a resumed download starts after the endpoint that failed it.
    async fn on_each_endpoint_from<T, F, Fut>(
        &self,
        first: usize,
        usable: impl Fn(&Endpoint) -> bool,
        operation: F,
    ) -> Result<T, RegistryError>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let count = self.endpoints.len();
        let mut last_error = None;
        for step in 0..count {
            let index = (first + step) % count;
            let endpoint = &self.endpoints[index];
            if !usable(endpoint) {
                continue;
            }
            match operation(index).await {
                Ok(value) => return Ok(value),
                Err(error) => {
                    let last_endpoint = step + 1 == count;
                    if last_endpoint || !error.worth_trying_elsewhere() {
                        return Err(error);
                    }
                    tracing::warn!(
                        endpoint = %endpoint.host(),
                        registry = %self.registry,
                        repository = %self.repository,
                        error = %error,
                        "endpoint failed, trying the next one"
                    );
                    self.endpoint_fallbacks.fetch_add(1, Ordering::Relaxed);
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| RegistryError::Unreachable {
            registry: self.registry.clone(),
            detail: "no configured endpoint may serve this request".to_owned(),
        }))
    }

    async fn get_manifest(
        &self,
        index: usize,
        target: &str,
        expected: Option<&Digest>,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let endpoint = &self.endpoints[index];
        let registry = endpoint.host();
        let path = format!("{}/manifests/{target}", self.repository);
        let response = self
            .send(
                index,
                reqwest::Method::GET,
                &path,
                Some(MANIFEST_ACCEPT),
                None,
            )
            .await?;
        match response.status().as_u16() {
            200 => {}
            404 => {
                return Err(RegistryError::ManifestNotFound {
                    registry,
                    reference: reference.to_owned(),
                });
            }
            _ => return Err(self.unexpected(index, "GET", &path, response).await),
        }
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default();
        let header_digest = response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let limit = self.client.config.manifest_bytes_max;
        let bytes = auth::read_bounded(response, limit)
            .await
            .map_err(|error| self.body_error(&registry, error, "manifest", limit))?;
        self.received_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let what = format!("manifest {reference}");
        let digest = match (expected, header_digest) {
            (Some(expected), _) => {
                verify(&registry, &what, expected, &bytes)?;
                expected.clone()
            }
            (None, Some(header)) => {
                let claimed =
                    Digest::parse(&header).map_err(|error| RegistryError::InvalidResponse {
                        registry: registry.clone(),
                        detail: format!("invalid Docker-Content-Digest for {reference}: {error}"),
                    })?;
                verify(&registry, &what, &claimed, &bytes)?;
                claimed
            }
            (None, None) => DigestHasher::sha256_of(&bytes),
        };
        Ok(FetchedManifest {
            descriptor: Descriptor::new(media_type, digest, bytes.len() as u64),
            bytes,
            endpoint: registry,
        })
    }

    async fn get_blob_response(
        &self,
        index: usize,
        digest: &Digest,
        offset_bytes: u64,
    ) -> Result<reqwest::Response, RegistryError> {
        let path = format!("{}/blobs/{digest}", self.repository);
        let response = self
            .send(
                index,
                reqwest::Method::GET,
                &path,
                None,
                Some(offset_bytes).filter(|o| *o > 0),
            )
            .await?;
        match response.status().as_u16() {
            200 | 206 => Ok(response),
            404 => Err(RegistryError::BlobNotFound {
                registry: self.endpoints[index].host(),
                repository: self.repository.clone(),
                digest: digest.clone(),
            }),
            // A range past the end: the server has fewer bytes than we do.
            416 => Err(RegistryError::InvalidResponse {
                registry: self.endpoints[index].host(),
                detail: format!("blob {digest} has no bytes from {offset_bytes} on"),
            }),
            _ => Err(self.unexpected(index, "GET", &path, response).await),
        }
    }

    /// Sends one request to endpoint `index` with authentication and retries.
    async fn send(
        &self,
        index: usize,
        method: reqwest::Method,
        path: &str,
        accept: Option<&str>,
        range_from: Option<u64>,
    ) -> Result<reqwest::Response, RegistryError> {
        let endpoint = &self.endpoints[index];
        let registry = endpoint.host();
        let http = self.client.http_for(endpoint)?;
        let url = endpoint
            .api_root
            .join(path)
            .map_err(|error| RegistryError::InvalidResponse {
                registry: registry.clone(),
                detail: format!("cannot build a url for {path}: {error}"),
            })?;
        let credentials = self.credentials.for_host(&registry);
        let scope = format!("repository:{}:pull", self.repository);
        let mut authorization = self.initial_authorization(index, &registry, &scope, credentials);
        let mut answered_challenge = false;
        let config = &self.client.config;
        let mut attempt: u32 = 0;
        loop {
            let mut request = http.request(method.clone(), url.clone());
            for (name, values) in &endpoint.headers {
                for value in values {
                    request = request.header(name.as_str(), value.as_str());
                }
            }
            if let Some(accept) = accept {
                request = request.header(reqwest::header::ACCEPT, accept);
            }
            if let Some(from) = range_from {
                request = request.header(reqwest::header::RANGE, format!("bytes={from}-"));
            }
            if let Some(value) = &authorization {
                request = request.header(reqwest::header::AUTHORIZATION, value.as_str());
            }
            let retry_in = match request.send().await {
                Err(error) if error.is_redirect() => {
                    return Err(RegistryError::TooManyRedirects {
                        registry,
                        path: url.path().to_owned(),
                        redirects_max: config.redirects_max,
                    });
                }
                Err(error) => {
                    let failure =
                        stream_error(&registry, path, config.progress_timeout_ms / 1000, &error);
                    if attempt >= config.retries_max {
                        return Err(failure);
                    }
                    tracing::debug!(registry = %registry, path, error = %failure, "retrying request");
                    self.backoff(attempt)
                }
                Ok(response) => match response.status().as_u16() {
                    401 if !answered_challenge => {
                        answered_challenge = true;
                        let challenge = response
                            .headers()
                            .get(reqwest::header::WWW_AUTHENTICATE)
                            .and_then(|value| value.to_str().ok())
                            .map(str::to_owned);
                        let context = auth::ChallengeContext {
                            http: &http,
                            tokens: &self.client.tokens,
                            registry_host: &registry,
                            repository: &self.repository,
                            scope: &scope,
                            credentials,
                            token_response_bytes_max: config.token_response_bytes_max,
                        };
                        let header = auth::answer_challenge(&context, challenge.as_deref()).await?;
                        self.lock_authorization()[index] = Some(header.clone());
                        authorization = Some(header);
                        continue;
                    }
                    401 => {
                        return Err(RegistryError::Unauthorized {
                            registry,
                            repository: self.repository.clone(),
                            detail: match credentials {
                                Credentials::Anonymous => "authentication is required".to_owned(),
                                _ => "the credentials were rejected".to_owned(),
                            },
                        });
                    }
                    403 => {
                        return Err(RegistryError::Denied {
                            registry,
                            repository: self.repository.clone(),
                        });
                    }
                    status @ (429 | 500 | 502 | 503 | 504) => {
                        if attempt >= config.retries_max {
                            if status == 429 {
                                return Err(RegistryError::RateLimited {
                                    registry,
                                    path: url.path().to_owned(),
                                });
                            }
                            return Ok(response);
                        }
                        retry_after(&response)
                            .map(|delay| {
                                delay.min(Duration::from_millis(config.retry_backoff_max_ms))
                            })
                            .unwrap_or_else(|| self.backoff(attempt))
                    }
                    _ => return Ok(response),
                },
            };
            attempt += 1;
            tokio::time::sleep(retry_in).await;
        }
    }

    /// A header to send before any challenge: a registry token as is, or a
    /// cached bearer token for this scope, or what worked last time here.
    fn initial_authorization(
        &self,
        index: usize,
        registry: &str,
        scope: &str,
        credentials: &Credentials,
    ) -> Option<String> {
        if let Credentials::RegistryToken(token) = credentials {
            return Some(format!("Bearer {}", token.expose()));
        }
        if let Some(token) = self.client.tokens.get(registry, scope, credentials) {
            return Some(format!("Bearer {}", token.expose()));
        }
        self.lock_authorization()[index].clone()
    }

    fn lock_authorization(&self) -> std::sync::MutexGuard<'_, Vec<Option<String>>> {
        self.authorization
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Exponential backoff from the initial delay, capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let config = &self.client.config;
        let delay = config
            .retry_backoff_initial_ms
            .saturating_mul(1u64 << attempt.min(20));
        Duration::from_millis(delay.min(config.retry_backoff_max_ms))
    }

    fn body_error(
        &self,
        registry: &str,
        error: BoundedReadError,
        what: &str,
        limit_bytes: u64,
    ) -> RegistryError {
        match error {
            BoundedReadError::TooLarge => RegistryError::TooLarge {
                registry: registry.to_owned(),
                what: what.to_owned(),
                limit_bytes,
            },
            BoundedReadError::Transport(detail) => RegistryError::Unreachable {
                registry: registry.to_owned(),
                detail,
            },
        }
    }

    /// An answer we did not expect, with the registry's own error code and
    /// message when its body carries them.
    async fn unexpected(
        &self,
        index: usize,
        method: &'static str,
        path: &str,
        response: reqwest::Response,
    ) -> RegistryError {
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            errors: Vec<ErrorEntry>,
        }
        #[derive(serde::Deserialize)]
        struct ErrorEntry {
            code: Option<String>,
            message: Option<String>,
        }
        let status = response.status().as_u16();
        let body = auth::read_bounded(response, self.client.config.error_body_bytes_max)
            .await
            .unwrap_or_default();
        let first = serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .and_then(|body| body.errors.into_iter().next());
        let bound = |text: String| text.chars().take(300).collect::<String>();
        RegistryError::UnexpectedStatus {
            registry: self.endpoints[index].host(),
            method,
            path: format!("/v2/{path}"),
            status,
            code: first
                .as_ref()
                .and_then(|entry| entry.code.clone())
                .map(bound),
            message: first.and_then(|entry| entry.message).map(bound),
        }
    }
}

fn verify(
    registry: &str,
    what: &str,
    expected: &Digest,
    bytes: &[u8],
) -> Result<(), RegistryError> {
    let mut hasher = DigestHasher::new(expected.algorithm());
    hasher.update(bytes);
    let received = hasher.finish();
    if received != *expected {
        return Err(RegistryError::DigestMismatch {
            registry: registry.to_owned(),
            what: what.to_owned(),
            expected: expected.clone(),
            received,
        });
    }
    Ok(())
}

/// Bytes received in the current window of a [`MinThroughput`] check. A
/// stream that sends nothing at all is caught by the read timeout (a stall);
/// this catches one that trickles. It is checked as chunks arrive, so a
/// trickle is noticed at its first chunk after a window closes.
struct ThroughputWindow {
    minimum: MinThroughput,
    started: std::time::Instant,
    received_bytes: u64,
}

impl ThroughputWindow {
    fn new(minimum: MinThroughput) -> ThroughputWindow {
        ThroughputWindow {
            minimum,
            started: std::time::Instant::now(),
            received_bytes: 0,
        }
    }

    fn check(&mut self, chunk_bytes: u64, registry: &str, what: &str) -> Result<(), RegistryError> {
        self.received_bytes += chunk_bytes;
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        if elapsed_ms < self.minimum.window_ms.max(1) {
            return Ok(());
        }
        let wanted_bytes =
            u128::from(self.minimum.bytes_per_second) * u128::from(elapsed_ms) / 1000;
        if u128::from(self.received_bytes) < wanted_bytes {
            return Err(RegistryError::TooSlow {
                registry: registry.to_owned(),
                what: what.to_owned(),
                received_bytes: self.received_bytes,
                window_ms: elapsed_ms,
                bytes_per_second: self.minimum.bytes_per_second,
            });
        }
        self.started = std::time::Instant::now();
        self.received_bytes = 0;
        Ok(())
    }
}

/// A transport failure while sending or streaming, as a typed error.
fn stream_error(
    registry: &str,
    what: &str,
    timeout_ms: u64,
    error: &reqwest::Error,
) -> RegistryError {
    if error.is_timeout() {
        RegistryError::Stalled {
            registry: registry.to_owned(),
            what: what.to_owned(),
            timeout_ms,
        }
    } else {
        RegistryError::Unreachable {
            registry: registry.to_owned(),
            detail: auth::describe_reqwest(error),
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare for registries and is
/// treated as absent).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The first byte of a `Content-Range: bytes <start>-<end>/<total>` answer.
fn content_range_start(response: &reqwest::Response) -> Option<u64> {
    let value = response
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let range = value.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}
