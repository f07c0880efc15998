//! `runtime.v1.ImageService`: each RPC translates its request, delegates to
//! [`crate::image_service::ImageService`], and translates the answer back.

use std::sync::Arc;

use bytes::Bytes;
use tokio_stream::wrappers::ReceiverStream;

use crate::api::convert;
use crate::api::proto::runtime::v1 as cri;
use crate::api::status::to_status;
use crate::image_service::{ImageService, ListingMemo, PullRequest};

/// Images per `StreamImagesResponse`, well under gRPC's message size limits.
const STREAM_IMAGES_BATCH: usize = 256;

pub struct CriImageService {
    service: Arc<ImageService>,
    /// The unfiltered answer, encoded, until an image or a name changes.
    encoded_listing: ListingMemo<Bytes>,
}

impl CriImageService {
    pub fn new(service: Arc<ImageService>) -> CriImageService {
        CriImageService {
            service,
            encoded_listing: ListingMemo::new(),
        }
    }
}

fn image_name(spec: &Option<cri::ImageSpec>) -> &str {
    spec.as_ref().map_or("", |spec| spec.image.as_str())
}

type Reply<T> = Result<tonic::Response<T>, tonic::Status>;

#[tonic::async_trait]
impl cri::image_service_server::ImageService for CriImageService {
    async fn list_images(
        &self,
        request: tonic::Request<cri::ListImagesRequest>,
    ) -> Reply<cri::ListImagesResponse> {
        let filter = request
            .into_inner()
            .filter
            .and_then(|filter| filter.image)
            .map(|spec| spec.image)
            .filter(|image| !image.is_empty());
        let response = match filter {
            Some(image) => cri::ListImagesResponse {
                images: self
                    .service
                    .list_images(Some(&image))
                    .map_err(|error| to_status(&error))?
                    .into_iter()
                    .map(convert::into_image)
                    .collect(),
                encoded_images: Bytes::new(),
            },
            None => cri::ListImagesResponse {
                images: Vec::new(),
                encoded_images: self
                    .service
                    .render_ready_images(&self.encoded_listing, |views| {
                        cri::ListImagesResponse::encode_images(
                            views.into_iter().map(convert::into_image).collect(),
                        )
                    })
                    .map_err(|error| to_status(&error))?,
            },
        };
        Ok(tonic::Response::new(response))
    }

    type StreamImagesStream = ReceiverStream<Result<cri::StreamImagesResponse, tonic::Status>>;

    async fn stream_images(
        &self,
        request: tonic::Request<cri::StreamImagesRequest>,
    ) -> Reply<Self::StreamImagesStream> {
        let filter = request
            .into_inner()
            .filter
            .and_then(|filter| filter.image)
            .map(|spec| spec.image);
        let images = self
            .service
            .list_images(filter.as_deref())
            .map_err(|error| to_status(&error))?;
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut images = images.into_iter().peekable();
            while images.peek().is_some() {
                let message = cri::StreamImagesResponse {
                    images: images
                        .by_ref()
                        .take(STREAM_IMAGES_BATCH)
                        .map(convert::into_image)
                        .collect(),
                };
                if sender.send(Ok(message)).await.is_err() {
                    break;
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(receiver)))
    }

    async fn image_status(
        &self,
        request: tonic::Request<cri::ImageStatusRequest>,
    ) -> Reply<cri::ImageStatusResponse> {
        let request = request.into_inner();
        let found = self
            .service
            .image_status(image_name(&request.image))
            .map_err(|error| to_status(&error))?;
        let info = match (&found, request.verbose) {
            (Some(view), true) => self
                .service
                .verbose_info(&view.id)
                .map_err(|error| to_status(&error))?,
            _ => Default::default(),
        };
        Ok(tonic::Response::new(cri::ImageStatusResponse {
            image: found.as_ref().map(convert::image),
            info: info.into_iter().collect(),
        }))
    }

    async fn pull_image(
        &self,
        request: tonic::Request<cri::PullImageRequest>,
    ) -> Reply<cri::PullImageResponse> {
        let request = request.into_inner();
        let spec = request.image.unwrap_or_default();
        let pull = PullRequest {
            image: spec.image,
            auth: convert::auth(request.auth),
            runtime_handler: spec.runtime_handler,
        };
        let id = self
            .service
            .pull_image(&pull)
            .await
            .map_err(|error| to_status(&error))?;
        Ok(tonic::Response::new(cri::PullImageResponse {
            image_ref: id.to_string(),
        }))
    }

    async fn remove_image(
        &self,
        request: tonic::Request<cri::RemoveImageRequest>,
    ) -> Reply<cri::RemoveImageResponse> {
        let request = request.into_inner();
        self.service
            .remove_image(image_name(&request.image))
            .map_err(|error| to_status(&error))?;
        Ok(tonic::Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: tonic::Request<cri::ImageFsInfoRequest>,
    ) -> Reply<cri::ImageFsInfoResponse> {
        let usage = self.service.fs_usage().map_err(|error| to_status(&error))?;
        Ok(tonic::Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![convert::filesystem_usage(&usage)],
            container_filesystems: Vec::new(),
        }))
    }
}
