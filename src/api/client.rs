//! Connecting to the daemon's socket: the CLI and the tests use the same
//! generated clients the kubelet's CRI client mirrors.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;

use crate::api::proto::cri_imaged::admin::v1::admin_service_client::AdminServiceClient;
use crate::api::proto::runtime::v1::image_service_client::ImageServiceClient;
use crate::api::proto::runtime::v1::runtime_service_client::RuntimeServiceClient;

/// A channel to the daemon listening on `socket`.
pub async fn connect(socket: &Path) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let socket: PathBuf = socket.to_path_buf();
    // The URI is required by the API but unused: every connection goes to the socket.
    tonic::transport::Endpoint::from_static("http://cri-imaged.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
}

pub async fn image_client(
    socket: &Path,
) -> Result<ImageServiceClient<tonic::transport::Channel>, tonic::transport::Error> {
    Ok(ImageServiceClient::new(connect(socket).await?).max_decoding_message_size(16 * 1024 * 1024))
}

pub async fn runtime_client(
    socket: &Path,
) -> Result<RuntimeServiceClient<tonic::transport::Channel>, tonic::transport::Error> {
    Ok(RuntimeServiceClient::new(connect(socket).await?))
}

pub async fn admin_client(
    socket: &Path,
) -> Result<AdminServiceClient<tonic::transport::Channel>, tonic::transport::Error> {
    Ok(AdminServiceClient::new(connect(socket).await?))
}
