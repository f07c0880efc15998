//! CollectGarbage: a mark-and-sweep pass on demand (after any pass in
//! progress), answered with what it removed.

use crate::api::proto::cri_imaged::admin::v1 as admin;
use crate::api::status::to_status;
use crate::image_service::ImageService;

pub async fn collect_garbage(
    service: &ImageService,
    _request: admin::CollectGarbageRequest,
) -> Result<tonic::Response<admin::CollectGarbageResponse>, tonic::Status> {
    let report = service
        .collect_garbage()
        .await
        .map_err(|error| to_status(&error))?;
    Ok(tonic::Response::new(admin::CollectGarbageResponse {
        blobs_removed: report.blobs_removed,
        snapshots_removed: report.snapshots_removed,
        ingests_removed: report.ingests_removed,
        bytes_freed: report.bytes_freed,
        duration_ms: report.duration_ms,
    }))
}
