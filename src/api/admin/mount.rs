//! PrepareMount / ReleaseMount: a lease on an image's snapshot chain while a
//! client has it mounted for inspection.

use crate::api::proto::cri_imaged::admin::v1 as admin;
use crate::image_service::ImageService;

pub async fn prepare_mount(
    _service: &ImageService,
    _request: admin::PrepareMountRequest,
) -> Result<tonic::Response<admin::PrepareMountResponse>, tonic::Status> {
    Err(tonic::Status::unimplemented(
        "PrepareMount is not served yet",
    ))
}

pub async fn release_mount(
    _service: &ImageService,
    _request: admin::ReleaseMountRequest,
) -> Result<tonic::Response<admin::ReleaseMountResponse>, tonic::Status> {
    Err(tonic::Status::unimplemented(
        "ReleaseMount is not served yet",
    ))
}
