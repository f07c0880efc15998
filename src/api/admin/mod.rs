//! `cri_imaged.admin.v1.AdminService`: our own API next to CRI, for operators
//! and the CLI. Each group of RPCs lives in its own file; this one only
//! dispatches.

mod gc;
mod leases;
mod mount;
mod pull_progress;
mod status;

use std::sync::Arc;

use crate::api::proto::cri_imaged::admin::v1 as admin;
use crate::image_service::ImageService;

type Reply<T> = Result<tonic::Response<T>, tonic::Status>;

pub struct AdminApi {
    service: Arc<ImageService>,
}

impl AdminApi {
    pub fn new(service: Arc<ImageService>) -> AdminApi {
        AdminApi { service }
    }
}

#[tonic::async_trait]
impl admin::admin_service_server::AdminService for AdminApi {
    type PullWithProgressStream = pull_progress::ProgressStream;

    async fn pull_with_progress(
        &self,
        request: tonic::Request<admin::PullWithProgressRequest>,
    ) -> Reply<Self::PullWithProgressStream> {
        pull_progress::pull_with_progress(&self.service, request.into_inner()).await
    }

    async fn collect_garbage(
        &self,
        request: tonic::Request<admin::CollectGarbageRequest>,
    ) -> Reply<admin::CollectGarbageResponse> {
        gc::collect_garbage(&self.service, request.into_inner()).await
    }

    async fn list_leases(
        &self,
        request: tonic::Request<admin::ListLeasesRequest>,
    ) -> Reply<admin::ListLeasesResponse> {
        leases::list_leases(&self.service, request.into_inner()).await
    }

    async fn daemon_status(
        &self,
        request: tonic::Request<admin::DaemonStatusRequest>,
    ) -> Reply<admin::DaemonStatusResponse> {
        status::daemon_status(&self.service, request.into_inner()).await
    }

    async fn prepare_mount(
        &self,
        request: tonic::Request<admin::PrepareMountRequest>,
    ) -> Reply<admin::PrepareMountResponse> {
        mount::prepare_mount(&self.service, request.into_inner()).await
    }

    async fn release_mount(
        &self,
        request: tonic::Request<admin::ReleaseMountRequest>,
    ) -> Reply<admin::ReleaseMountResponse> {
        mount::release_mount(&self.service, request.into_inner()).await
    }
}
