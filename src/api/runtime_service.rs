//! `runtime.v1.RuntimeService`: Version and Status, the two methods the kubelet
//! and `crictl` call on any CRI endpoint. Every other method is answered
//! `Unimplemented` with a message saying this daemon serves images only.

use std::convert::Infallible;
use std::task::{Context, Poll};

use crate::api::proto::runtime::v1 as cri;

/// The CRI API version this daemon speaks.
const RUNTIME_API_VERSION: &str = "v1";
/// The kubelet runtime API version, as containerd reports it.
const KUBELET_API_VERSION: &str = "0.1.0";

pub struct CriRuntimeService;

#[tonic::async_trait]
impl cri::runtime_service_server::RuntimeService for CriRuntimeService {
    async fn version(
        &self,
        _request: tonic::Request<cri::VersionRequest>,
    ) -> Result<tonic::Response<cri::VersionResponse>, tonic::Status> {
        Ok(tonic::Response::new(cri::VersionResponse {
            version: KUBELET_API_VERSION.to_owned(),
            runtime_name: "cri-imaged".to_owned(),
            runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
            runtime_api_version: RUNTIME_API_VERSION.to_owned(),
        }))
    }

    async fn status(
        &self,
        request: tonic::Request<cri::StatusRequest>,
    ) -> Result<tonic::Response<cri::StatusResponse>, tonic::Status> {
        let verbose = request.into_inner().verbose;
        // Honest for an image-only service: it runs no containers and sets up
        // no pod network, so neither condition holds here.
        let conditions = vec![
            cri::RuntimeCondition {
                r#type: "RuntimeReady".to_owned(),
                status: false,
                reason: "ImageServiceOnly".to_owned(),
                message: "cri-imaged serves images only and runs no containers".to_owned(),
            },
            cri::RuntimeCondition {
                r#type: "NetworkReady".to_owned(),
                status: false,
                reason: "ImageServiceOnly".to_owned(),
                message: "cri-imaged serves images only and sets up no pod network".to_owned(),
            },
        ];
        let info = if verbose {
            [(
                "config".to_owned(),
                format!(
                    "{{\"runtime\":\"cri-imaged\",\"version\":\"{}\",\"serves\":\"images\"}}",
                    env!("CARGO_PKG_VERSION")
                ),
            )]
            .into_iter()
            .collect()
        } else {
            Default::default()
        };
        Ok(tonic::Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info,
            runtime_handlers: vec![cri::RuntimeHandler {
                name: String::new(),
                features: Some(cri::RuntimeHandlerFeatures::default()),
            }],
            features: Some(cri::RuntimeFeatures::default()),
        }))
    }
}

/// Serves `runtime.v1.RuntimeService`: Version and Status through the
/// generated server, every other method with an explanatory `Unimplemented`.
#[derive(Clone)]
pub struct RuntimeServiceRouter {
    inner: cri::runtime_service_server::RuntimeServiceServer<CriRuntimeService>,
}

impl RuntimeServiceRouter {
    pub fn new() -> RuntimeServiceRouter {
        RuntimeServiceRouter {
            inner: cri::runtime_service_server::RuntimeServiceServer::new(CriRuntimeService),
        }
    }
}

impl Default for RuntimeServiceRouter {
    fn default() -> Self {
        Self::new()
    }
}

impl tonic::server::NamedService for RuntimeServiceRouter {
    const NAME: &'static str = "runtime.v1.RuntimeService";
}

impl tower_service::Service<http::Request<tonic::body::Body>> for RuntimeServiceRouter {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        if method == "Version" || method == "Status" {
            let mut inner = self.inner.clone();
            return Box::pin(
                async move { tower_service::Service::call(&mut inner, request).await },
            );
        }
        Box::pin(async move {
            Ok(tonic::Status::unimplemented(format!(
                "cri-imaged serves images only: runtime.v1.RuntimeService/{method} is not implemented"
            ))
            .into_http())
        })
    }
}
