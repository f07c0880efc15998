//! The opt-in `/metrics` endpoint: plain HTTP/1.1 on a TCP address
//! (`127.0.0.1:9464`) or a unix socket path, answering `GET /metrics` with
//! [`Metrics::encode`]. Off unless `serve --metrics-addr` is given.
//!
//! Bounded like everything else: at most `CONNECTIONS_MAX` connections at
//! once (more are closed at once) and `CONNECTION_TIME_MAX_MS` per connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use crate::metrics::{CONTENT_TYPE, Metrics};

/// Scrapers connected at once; Prometheus uses one.
const CONNECTIONS_MAX: usize = 16;
/// A connection that has not finished by then is closed (a stuck or slow
/// client must not hold a slot).
const CONNECTION_TIME_MAX_MS: u64 = 30_000;

/// Where the endpoint listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsAddress {
    Tcp(SocketAddr),
    /// An absolute path.
    Unix(PathBuf),
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsAddressError {
    #[error("metrics address {given:?} is neither HOST:PORT (an IP address) nor an absolute path")]
    Invalid { given: String },
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsServerError {
    #[error("cannot listen for metrics on {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("another process is serving on metrics socket {path}; refusing to replace it")]
    SocketInUse { path: PathBuf },
}

impl std::str::FromStr for MetricsAddress {
    type Err = MetricsAddressError;

    fn from_str(given: &str) -> Result<MetricsAddress, MetricsAddressError> {
        if given.starts_with('/') {
            return Ok(MetricsAddress::Unix(PathBuf::from(given)));
        }
        given
            .parse::<SocketAddr>()
            .map(MetricsAddress::Tcp)
            .map_err(|_| MetricsAddressError::Invalid {
                given: crate::reference::bounded_echo(given),
            })
    }
}

impl std::fmt::Display for MetricsAddress {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAddress::Tcp(address) => write!(formatter, "{address}"),
            MetricsAddress::Unix(path) => write!(formatter, "{}", path.display()),
        }
    }
}

/// A bound, not yet serving, metrics listener.
pub enum MetricsListener {
    Tcp(tokio::net::TcpListener),
    Unix {
        listener: tokio::net::UnixListener,
        path: PathBuf,
    },
}

impl MetricsListener {
    /// Binds `address`. A unix socket left by a crash is replaced only if
    /// nothing answers on it. Must run inside a tokio runtime.
    pub fn bind(address: &MetricsAddress) -> Result<MetricsListener, MetricsServerError> {
        let bind_error = |source| MetricsServerError::Bind {
            address: address.to_string(),
            source,
        };
        match address {
            MetricsAddress::Tcp(socket_address) => {
                let listener = std::net::TcpListener::bind(socket_address).map_err(bind_error)?;
                listener.set_nonblocking(true).map_err(bind_error)?;
                Ok(MetricsListener::Tcp(
                    tokio::net::TcpListener::from_std(listener).map_err(bind_error)?,
                ))
            }
            MetricsAddress::Unix(path) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(bind_error)?;
                }
                if path.exists() {
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        return Err(MetricsServerError::SocketInUse { path: path.clone() });
                    }
                    std::fs::remove_file(path).map_err(bind_error)?;
                }
                let listener = tokio::net::UnixListener::bind(path).map_err(bind_error)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                    .map_err(bind_error)?;
                Ok(MetricsListener::Unix {
                    listener,
                    path: path.clone(),
                })
            }
        }
    }

    /// The address actually bound (a TCP port 0 becomes the port chosen).
    pub fn local_address(&self) -> String {
        match self {
            MetricsListener::Tcp(listener) => listener
                .local_addr()
                .map_or_else(|error| error.to_string(), |address| address.to_string()),
            MetricsListener::Unix { path, .. } => path.display().to_string(),
        }
    }

    /// Serves `/metrics` until `shutdown` completes; a unix socket file is
    /// removed afterwards.
    pub async fn serve(self, metrics: Arc<Metrics>, shutdown: impl Future<Output = ()>) {
        let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.accept() => accepted,
            };
            let stream = match accepted {
                Ok(stream) => stream,
                Err(error) => {
                    // Accept errors (EMFILE, a reset before accept) are per
                    // connection; back off briefly so a persistent one does
                    // not spin.
                    tracing::warn!(%error, "cannot accept a metrics connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |request| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, Infallible>(answer(&metrics, &request)) }
                });
                let connection =
                    hyper::server::conn::http1::Builder::new().serve_connection(stream, service);
                if let Ok(Err(error)) =
                    tokio::time::timeout(Duration::from_millis(CONNECTION_TIME_MAX_MS), connection)
                        .await
                {
                    tracing::debug!(%error, "metrics connection ended with an error");
                }
            });
        }
        if let MetricsListener::Unix { path, .. } = &self
            && let Err(error) = std::fs::remove_file(path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(socket = %path.display(), %error, "cannot remove the metrics socket");
        }
    }

    async fn accept(&self) -> std::io::Result<TokioIo<AnyStream>> {
        Ok(TokioIo::new(match self {
            MetricsListener::Tcp(listener) => AnyStream::Tcp(listener.accept().await?.0),
            MetricsListener::Unix { listener, .. } => AnyStream::Unix(listener.accept().await?.0),
        }))
    }
}

fn answer(
    metrics: &Metrics,
    request: &http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    let builder = http::Response::builder();
    let response = match (request.method(), request.uri().path()) {
        (&http::Method::GET, "/metrics") => builder
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(Full::new(Bytes::from(metrics.encode()))),
        (_, "/metrics") => builder
            .status(http::StatusCode::METHOD_NOT_ALLOWED)
            .header(http::header::ALLOW, "GET")
            .body(Full::new(Bytes::new())),
        _ => builder
            .status(http::StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"metrics are at /metrics\n"))),
    };
    // Every header above is a valid constant, so building cannot fail.
    response.unwrap_or_default()
}

/// A TCP or unix stream, for one hyper connection type.
enum AnyStream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl tokio::io::AsyncRead for AnyStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            AnyStream::Tcp(stream) => std::pin::Pin::new(stream).poll_read(context, buffer),
            AnyStream::Unix(stream) => std::pin::Pin::new(stream).poll_read(context, buffer),
        }
    }
}

impl tokio::io::AsyncWrite for AnyStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            AnyStream::Tcp(stream) => std::pin::Pin::new(stream).poll_write(context, buffer),
            AnyStream::Unix(stream) => std::pin::Pin::new(stream).poll_write(context, buffer),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            AnyStream::Tcp(stream) => std::pin::Pin::new(stream).poll_flush(context),
            AnyStream::Unix(stream) => std::pin::Pin::new(stream).poll_flush(context),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            AnyStream::Tcp(stream) => std::pin::Pin::new(stream).poll_shutdown(context),
            AnyStream::Unix(stream) => std::pin::Pin::new(stream).poll_shutdown(context),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_tcp_socket_addresses_or_absolute_paths() {
        assert_eq!(
            "127.0.0.1:9464".parse::<MetricsAddress>().unwrap(),
            MetricsAddress::Tcp("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(
            "[::1]:0".parse::<MetricsAddress>().unwrap(),
            MetricsAddress::Tcp("[::1]:0".parse().unwrap())
        );
        assert_eq!(
            "/run/cri-imaged/metrics.sock"
                .parse::<MetricsAddress>()
                .unwrap(),
            MetricsAddress::Unix(PathBuf::from("/run/cri-imaged/metrics.sock"))
        );
        for invalid in ["metrics.sock", "localhost:9464", "9464", ""] {
            let error = invalid.parse::<MetricsAddress>().unwrap_err();
            assert!(error.to_string().contains("neither HOST:PORT"), "{error}");
        }
    }
}
