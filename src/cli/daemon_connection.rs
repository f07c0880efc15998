//! The client end of the socket: connects with the generated CRI clients of
//! `api::client`, puts a time limit on every wait, and turns transport
//! failures and gRPC statuses into [`CliError`]. The only file of `cli/` that
//! calls tonic; the subcommands see request and response messages, and
//! `CliError` keeps the status code and the transport error as they came.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::client;
use crate::api::proto::cri_imaged::admin::v1 as admin;
use crate::api::proto::cri_imaged::admin::v1::admin_service_client::AdminServiceClient;
use crate::api::proto::runtime::v1 as cri;
use crate::api::proto::runtime::v1::image_service_client::ImageServiceClient;
use crate::cli::error::CliError;

/// Connecting to a local socket is immediate when the daemon is up; waiting
/// longer only hides a wedged daemon.
const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Every call but PullImage answers from the metadata store, in milliseconds
/// when the daemon is healthy.
const REQUEST_TIMEOUT_MS: u64 = 120_000;
/// The kubelet runtime API version sent in VersionRequest, as crictl sends it.
const KUBELET_API_VERSION: &str = "v1";

/// A connection to the daemon's `runtime.v1.ImageService`.
pub struct ImageServiceConnection {
    socket: PathBuf,
    client: ImageServiceClient<tonic::transport::Channel>,
}

impl ImageServiceConnection {
    pub async fn open(socket: &Path) -> Result<ImageServiceConnection, CliError> {
        let client = connect_within_limit(socket, client::image_client(socket)).await?;
        Ok(ImageServiceConnection {
            socket: socket.to_path_buf(),
            client,
        })
    }

    /// No client-side time limit: a large image may take long, and the daemon
    /// itself fails a pull whose registry stalls.
    pub async fn pull_image(
        &mut self,
        request: cri::PullImageRequest,
    ) -> Result<cri::PullImageResponse, CliError> {
        self.client
            .pull_image(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| rpc_error("PullImage", status))
    }

    pub async fn list_images(&mut self) -> Result<Vec<cri::Image>, CliError> {
        let request = cri::ListImagesRequest { filter: None };
        let response =
            call_within_limit("ListImages", &self.socket, self.client.list_images(request)).await?;
        Ok(response.images)
    }

    pub async fn image_status(
        &mut self,
        image: &str,
        verbose: bool,
    ) -> Result<cri::ImageStatusResponse, CliError> {
        let request = cri::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose,
        };
        call_within_limit(
            "ImageStatus",
            &self.socket,
            self.client.image_status(request),
        )
        .await
    }

    pub async fn remove_image(&mut self, image: &str) -> Result<(), CliError> {
        let request = cri::RemoveImageRequest {
            image: Some(image_spec(image)),
        };
        call_within_limit(
            "RemoveImage",
            &self.socket,
            self.client.remove_image(request),
        )
        .await?;
        Ok(())
    }

    pub async fn image_fs_info(&mut self) -> Result<cri::ImageFsInfoResponse, CliError> {
        let request = cri::ImageFsInfoRequest {};
        call_within_limit(
            "ImageFsInfo",
            &self.socket,
            self.client.image_fs_info(request),
        )
        .await
    }
}

/// A connection to the daemon's own `cri_imaged.admin.v1.AdminService`.
pub struct AdminConnection {
    socket: PathBuf,
    client: AdminServiceClient<tonic::transport::Channel>,
}

impl AdminConnection {
    pub async fn open(socket: &Path) -> Result<AdminConnection, CliError> {
        let channel = connect_within_limit(socket, client::connect(socket)).await?;
        Ok(AdminConnection {
            socket: socket.to_path_buf(),
            client: AdminServiceClient::new(channel),
        })
    }

    pub async fn prepare_mount(
        &mut self,
        image: &str,
        target: &Path,
    ) -> Result<admin::PrepareMountResponse, CliError> {
        let request = admin::PrepareMountRequest {
            image: Some(image_spec(image)),
            target: target.display().to_string(),
        };
        call_within_limit(
            "PrepareMount",
            &self.socket,
            self.client.prepare_mount(request),
        )
        .await
    }

    pub async fn release_mount(
        &mut self,
        target: &Path,
    ) -> Result<admin::ReleaseMountResponse, CliError> {
        let request = admin::ReleaseMountRequest {
            target: target.display().to_string(),
        };
        call_within_limit(
            "ReleaseMount",
            &self.socket,
            self.client.release_mount(request),
        )
        .await
    }

    pub async fn collect_garbage(&mut self) -> Result<admin::CollectGarbageResponse, CliError> {
        call_within_limit(
            "CollectGarbage",
            &self.socket,
            self.client.collect_garbage(admin::CollectGarbageRequest {}),
        )
        .await
    }

    pub async fn list_leases(&mut self) -> Result<admin::ListLeasesResponse, CliError> {
        call_within_limit(
            "ListLeases",
            &self.socket,
            self.client.list_leases(admin::ListLeasesRequest {}),
        )
        .await
    }
}

/// `runtime.v1.RuntimeService/Version`, on a connection of its own.
pub async fn runtime_version(socket: &Path) -> Result<cri::VersionResponse, CliError> {
    let mut runtime = connect_within_limit(socket, client::runtime_client(socket)).await?;
    let request = cri::VersionRequest {
        version: KUBELET_API_VERSION.to_owned(),
    };
    call_within_limit("Version", socket, runtime.version(request)).await
}

/// `cri_imaged.admin.v1.AdminService/DaemonStatus`, on a connection of its own.
pub async fn daemon_status(socket: &Path) -> Result<admin::DaemonStatusResponse, CliError> {
    let mut admin = connect_within_limit(socket, client::admin_client(socket)).await?;
    call_within_limit(
        "DaemonStatus",
        socket,
        admin.daemon_status(admin::DaemonStatusRequest {}),
    )
    .await
}

/// An `ImageSpec` naming `image` (a reference, an id or an id prefix) as the
/// user typed it.
pub fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_owned(),
        user_specified_image: image.to_owned(),
        ..cri::ImageSpec::default()
    }
}

async fn connect_within_limit<T>(
    socket: &Path,
    connecting: impl Future<Output = Result<T, tonic::transport::Error>>,
) -> Result<T, CliError> {
    match tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(source)) => Err(CliError::Connect {
            socket: socket.to_path_buf(),
            source,
        }),
        Err(_elapsed) => Err(CliError::ConnectTimeout {
            socket: socket.to_path_buf(),
            timeout_ms: CONNECT_TIMEOUT_MS,
        }),
    }
}

async fn call_within_limit<T>(
    rpc: &'static str,
    socket: &Path,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CliError> {
    match tokio::time::timeout(Duration::from_millis(REQUEST_TIMEOUT_MS), call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(rpc_error(rpc, status)),
        Err(_elapsed) => Err(CliError::RpcTimeout {
            rpc,
            socket: socket.to_path_buf(),
            timeout_ms: REQUEST_TIMEOUT_MS,
        }),
    }
}

fn rpc_error(rpc: &'static str, status: tonic::Status) -> CliError {
    CliError::Rpc {
        rpc,
        code: status.code(),
        message: status.message().to_owned(),
    }
}

/// The events of one `cri_imaged.admin.v1.AdminService/PullWithProgress`
/// call. No time limit: a pull may take long, and the daemon fails one whose
/// registry stalls.
pub struct PullProgressEvents {
    stream: tonic::Streaming<admin::PullProgress>,
}

/// Starts PullWithProgress on a connection of its own. A daemon without the
/// admin API answers `CliError::Rpc` with `tonic::Code::Unimplemented`, here
/// or as the stream's first item.
pub async fn pull_with_progress(
    socket: &Path,
    request: admin::PullWithProgressRequest,
) -> Result<PullProgressEvents, CliError> {
    let channel = connect_within_limit(socket, client::connect(socket)).await?;
    let mut admin = AdminServiceClient::new(channel);
    let response = admin
        .pull_with_progress(request)
        .await
        .map_err(|status| rpc_error("PullWithProgress", status))?;
    Ok(PullProgressEvents {
        stream: response.into_inner(),
    })
}

impl PullProgressEvents {
    /// The next event; `None` once the stream ended cleanly.
    pub async fn next(&mut self) -> Result<Option<admin::pull_progress::Event>, CliError> {
        loop {
            match self.stream.message().await {
                Ok(Some(admin::PullProgress { event: Some(event) })) => return Ok(Some(event)),
                // An empty message carries nothing to show; a newer daemon
                // may send events this client does not know.
                Ok(Some(admin::PullProgress { event: None })) => continue,
                Ok(None) => return Ok(None),
                Err(status) => return Err(rpc_error("PullWithProgress", status)),
            }
        }
    }
}
