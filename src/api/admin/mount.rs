//! PrepareMount / ReleaseMount: a lease on an image's snapshot chain while a
//! client has it mounted for inspection.

use std::path::Path;

use crate::api::proto::cri_imaged::admin::v1 as admin;
use crate::api::status::to_status;
use crate::image_service::ImageService;
use crate::image_service::mount::ImageMount;

pub async fn prepare_mount(
    service: &ImageService,
    request: admin::PrepareMountRequest,
) -> Result<tonic::Response<admin::PrepareMountResponse>, tonic::Status> {
    let image = request.image.map(|spec| spec.image).unwrap_or_default();
    if image.is_empty() {
        return Err(tonic::Status::invalid_argument(
            "PrepareMount needs an image",
        ));
    }
    let prepared = service
        .prepare_mount(&image, Path::new(&request.target))
        .map_err(|error| to_status(&error))?;
    let options = match &prepared.mount {
        ImageMount::Overlay { options, .. } => options.clone(),
        ImageMount::Bind { .. } => "bind,ro".to_owned(),
    };
    Ok(tonic::Response::new(admin::PrepareMountResponse {
        lower_dirs: prepared
            .mount
            .lower_dirs()
            .iter()
            .map(|directory| directory.display().to_string())
            .collect(),
        options,
        lease_id: prepared.lease_id,
        image_id: prepared.image_id.to_string(),
    }))
}

pub async fn release_mount(
    service: &ImageService,
    request: admin::ReleaseMountRequest,
) -> Result<tonic::Response<admin::ReleaseMountResponse>, tonic::Status> {
    let released = service
        .release_mount(Path::new(&request.target))
        .map_err(|error| to_status(&error))?;
    Ok(tonic::Response::new(admin::ReleaseMountResponse {
        released,
    }))
}
