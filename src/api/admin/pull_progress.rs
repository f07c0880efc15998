//! PullWithProgress: a pull like CRI PullImage, streaming layer progress.

use std::pin::Pin;

use crate::api::proto::cri_imaged::admin::v1 as admin;
use crate::image_service::ImageService;

pub type ProgressStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<admin::PullProgress, tonic::Status>> + Send>>;

pub async fn pull_with_progress(
    _service: &ImageService,
    _request: admin::PullWithProgressRequest,
) -> Result<tonic::Response<ProgressStream>, tonic::Status> {
    Err(tonic::Status::unimplemented(
        "PullWithProgress is not served yet",
    ))
}
