//! ListLeases: what currently protects content from collection.

use crate::api::proto::cri_imaged::admin::v1 as admin;
use crate::image_service::ImageService;

pub async fn list_leases(
    _service: &ImageService,
    _request: admin::ListLeasesRequest,
) -> Result<tonic::Response<admin::ListLeasesResponse>, tonic::Status> {
    Err(tonic::Status::unimplemented("ListLeases is not served yet"))
}
