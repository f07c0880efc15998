//! DaemonStatus: version, uptime, store counters, limits, last summaries.

use crate::api::proto::cri_imaged::admin::v1 as admin;
use crate::image_service::ImageService;

pub async fn daemon_status(
    _service: &ImageService,
    _request: admin::DaemonStatusRequest,
) -> Result<tonic::Response<admin::DaemonStatusResponse>, tonic::Status> {
    Err(tonic::Status::unimplemented(
        "DaemonStatus is not served yet",
    ))
}
