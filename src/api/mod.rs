//! The gRPC edge: the only module that knows tonic and prost. It serves
//! `runtime.v1.ImageService` and `runtime.v1.RuntimeService` (Version and
//! Status) on a unix socket, translates requests into `image_service` calls and
//! the answers back, and maps errors to status codes in one place (`status`).
//! `request_observer` wraps every request: request id, `rpc` span, metrics.

mod admin;
mod authority_rewrite;
mod busy_poll;
pub mod client;
pub mod codec;
mod connection_io;
mod convert;
mod http2_frame;
mod image_service;
mod list_images_response;
pub mod proto;
mod request_observer;
mod runtime_service;
mod status;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;

use crate::image_service::ImageService;

pub use busy_poll::{
    DEFAULT_WINDOW as DEFAULT_BUSY_POLL_WINDOW, WINDOW_MAX as BUSY_POLL_WINDOW_MAX,
};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("another process is serving on socket {path}; refusing to replace it")]
    SocketInUse { path: PathBuf },
    #[error("cannot prepare socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("grpc server failed: {0}")]
    Serve(String),
}

/// Binds the socket at `path` (mode 0660), replacing a stale socket left by a
/// crash only after checking that nothing answers on it.
pub fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, ApiError> {
    let socket_error = |source| ApiError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(socket_error)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ApiError::SocketInUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(socket_error)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(socket_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(socket_error)?;
    Ok(listener)
}

/// Serves the CRI services on `listener` until `shutdown` completes; then stops
/// accepting and waits for the calls in flight. `busy_poll_window`: how long
/// a connection whose client sends calls back to back is polled after an
/// answer (see `busy_poll`); zero for never.
pub async fn serve(
    listener: tokio::net::UnixListener,
    service: Arc<ImageService>,
    busy_poll_window: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ApiError> {
    let images = proto::runtime::v1::image_service_server::ImageServiceServer::new(
        image_service::CriImageService::new(service.clone()),
    )
    .max_decoding_message_size(16 * 1024 * 1024)
    .max_encoding_message_size(16 * 1024 * 1024);
    let admin = proto::cri_imaged::admin::v1::admin_service_server::AdminServiceServer::new(
        admin::AdminApi::new(service.clone()),
    );
    let observe = request_observer::ObserveRequestsLayer::new(service.metrics().clone());
    let metrics = service.metrics().clone();
    let incoming = UnixListenerStream::new(listener).map(move |accepted| {
        accepted.and_then(|stream| {
            let busy_poll = busy_poll::BusyPoll::new(busy_poll_window, Some(metrics.clone()));
            connection_io::AcceptedConnection::new(stream, busy_poll)
        })
    });
    tonic::transport::Server::builder()
        .layer(observe)
        .add_service(images)
        .add_service(admin)
        .add_service(runtime_service::RuntimeServiceRouter::new())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|error| ApiError::Serve(error.to_string()))
}
