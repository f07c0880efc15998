//! ListLeases: what currently protects content from collection.

use crate::api::proto::cri_imaged::admin::v1 as admin;
use crate::api::status::to_status;
use crate::image_service::ImageService;

pub async fn list_leases(
    service: &ImageService,
    _request: admin::ListLeasesRequest,
) -> Result<tonic::Response<admin::ListLeasesResponse>, tonic::Status> {
    let leases = service.leases().map_err(|error| to_status(&error))?;
    Ok(tonic::Response::new(admin::ListLeasesResponse {
        leases: leases
            .into_iter()
            .map(|view| admin::Lease {
                id: view.lease.id,
                created_unix_ms: clamp_to_i64(view.lease.created_unix_ms),
                expires_unix_ms: clamp_to_i64(view.lease.expires_unix_ms),
                boot_id: view.lease.boot_id,
                labels: view.lease.labels.into_iter().collect(),
                resource_count: view.resource_count,
            })
            .collect(),
    }))
}

fn clamp_to_i64(unix_ms: u64) -> i64 {
    i64::try_from(unix_ms).unwrap_or(i64::MAX)
}
