//! DaemonStatus: version, uptime, store counters, limits, last summaries.

use crate::api::proto::cri_imaged::admin::v1 as admin;
use crate::api::status::to_status;
use crate::image_service::ImageService;

pub async fn daemon_status(
    service: &ImageService,
    _request: admin::DaemonStatusRequest,
) -> Result<tonic::Response<admin::DaemonStatusResponse>, tonic::Status> {
    let stats = service.store_stats().map_err(|error| to_status(&error))?;
    let state = service.metrics().state();
    Ok(tonic::Response::new(admin::DaemonStatusResponse {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.uptime().as_secs(),
        schema_version: u32::try_from(stats.schema_version).unwrap_or(u32::MAX),
        images: stats.images,
        blobs: stats.blobs,
        snapshots: stats.snapshots,
        leases: stats.leases,
        content_bytes: stats.content_bytes,
        ingest_bytes: stats.ingest_bytes,
        snapshot_bytes: stats.snapshot_bytes,
        unsynced_snapshots: stats.unsynced_snapshots,
        limits: service.limits_in_force().into_iter().collect(),
        last_gc_summary: state.last_gc_summary().unwrap_or_default(),
        last_reconcile_summary: state.last_reconcile_summary().unwrap_or_default(),
    }))
}
