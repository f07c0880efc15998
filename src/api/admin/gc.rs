//! CollectGarbage: a mark-and-sweep pass on demand.

use crate::api::proto::cri_imaged::admin::v1 as admin;
use crate::image_service::ImageService;

pub async fn collect_garbage(
    _service: &ImageService,
    _request: admin::CollectGarbageRequest,
) -> Result<tonic::Response<admin::CollectGarbageResponse>, tonic::Status> {
    Err(tonic::Status::unimplemented(
        "CollectGarbage is not served yet",
    ))
}
