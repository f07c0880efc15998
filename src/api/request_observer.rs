//! A tower layer around the whole gRPC server (CRI and admin services): each
//! request gets a request id (the client's `x-request-id` if it is sane, a
//! new UUID otherwise), runs inside an `rpc` span carrying it, so every log
//! line of the request (and of tasks it spawns with the span) shows it, and
//! is counted by method and status code with its latency once the answer's
//! body has ended. The id is echoed in the `x-request-id` response header.
//!
//! The status code is read where gRPC puts it: in the response headers for
//! a "trailers-only" answer (every error a unary handler returns), otherwise
//! in the trailers after the last message. An answer whose body is dropped
//! before it ends counts as `CANCELLED` (the client went away).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tracing::Instrument as _;

use crate::metrics::Metrics;

/// The metadata key (an HTTP/2 header) of the request id.
const REQUEST_ID_HEADER: &str = "x-request-id";
/// The longest client-chosen request id kept; a longer one is replaced.
const REQUEST_ID_BYTES_MAX: usize = 64;

#[derive(Clone)]
pub struct ObserveRequestsLayer {
    metrics: Arc<Metrics>,
}

impl ObserveRequestsLayer {
    pub fn new(metrics: Arc<Metrics>) -> ObserveRequestsLayer {
        ObserveRequestsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for ObserveRequestsLayer {
    type Service = ObserveRequests<S>;

    fn layer(&self, inner: S) -> ObserveRequests<S> {
        ObserveRequests {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ObserveRequests<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>> for ObserveRequests<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    RequestBody: Send + 'static,
{
    type Response = http::Response<ObservedBody<ResponseBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let started = Instant::now();
        let method = request.uri().path().to_owned();
        let request_id = request_id_of(request.headers());
        let span = tracing::info_span!("rpc", method = %method, request_id = %request_id);
        // The service that was made ready is the one to call; a clone takes
        // its place for the next request (tower's usual exchange).
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let recorder = RpcRecorder {
            metrics: self.metrics.clone(),
            method,
            started,
            span: span.clone(),
        };
        Box::pin(
            async move {
                let response = match inner.call(request).await {
                    Ok(response) => response,
                    Err(error) => {
                        recorder.record("INTERNAL");
                        return Err(error);
                    }
                };
                let (mut parts, body) = response.into_parts();
                if let Ok(value) = http::HeaderValue::from_str(&request_id) {
                    parts.headers.insert(REQUEST_ID_HEADER, value);
                }
                let recorder = match grpc_status_in(&parts.headers) {
                    Some(code) => {
                        recorder.record(code);
                        None
                    }
                    None => Some(recorder),
                };
                Ok(http::Response::from_parts(
                    parts,
                    ObservedBody {
                        inner: body,
                        recorder,
                    },
                ))
            }
            .instrument(span),
        )
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the RPC when its trailers arrive, when it
    /// ends, or when it is dropped unfinished.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        recorder: Option<RpcRecorder>,
    }

    impl<B> PinnedDrop for ObservedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(recorder) = this.project().recorder.take() {
                recorder.record("CANCELLED");
            }
        }
    }
}

impl<B: http_body::Body> http_body::Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(context);
        if let Poll::Ready(frame) = &polled {
            let code = match frame {
                Some(Ok(frame)) => frame
                    .trailers_ref()
                    .map(|trailers| grpc_status_in(trailers).unwrap_or("UNKNOWN")),
                Some(Err(_)) => Some("INTERNAL"),
                // A gRPC answer ends with trailers; one that ends without
                // them has no status.
                None => Some("UNKNOWN"),
            };
            if let Some(code) = code
                && let Some(recorder) = this.recorder.take()
            {
                recorder.record(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What is needed to count one RPC once its status is known.
pub struct RpcRecorder {
    metrics: Arc<Metrics>,
    method: String,
    started: Instant,
    span: tracing::Span,
}

impl RpcRecorder {
    fn record(self, code: &str) {
        let elapsed = self.started.elapsed();
        self.metrics.record_rpc(&self.method, code, elapsed);
        self.span.in_scope(|| {
            tracing::debug!(
                code,
                elapsed_ms = elapsed.as_millis() as u64,
                "rpc finished"
            );
        });
    }
}

/// The client's request id if it is short and plain (letters, digits,
/// `-`, `_`, `.`, `:`), so it can go into logs and headers as is; a new
/// UUID otherwise.
fn request_id_of(headers: &http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| is_sane_request_id(value))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

fn is_sane_request_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= REQUEST_ID_BYTES_MAX
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b':'))
}

/// The canonical name of the `grpc-status` in `headers`, if there is one.
fn grpc_status_in(headers: &http::HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|text| text.parse::<u8>().ok())
            .map_or("UNKNOWN", grpc_code_name),
    )
}

fn grpc_code_name(code: u8) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_client_request_id_is_kept_and_anything_else_replaced() {
        let mut headers = http::HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, "kubelet-1234:abc".parse().unwrap());
        assert_eq!(request_id_of(&headers), "kubelet-1234:abc");
        for insane in [
            "has space".to_owned(),
            "quote\"d".to_owned(),
            "x".repeat(65),
            String::new(),
        ] {
            headers.insert(REQUEST_ID_HEADER, insane.parse().unwrap());
            let generated = request_id_of(&headers);
            assert_ne!(generated, insane);
            assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
        }
        assert!(uuid::Uuid::parse_str(&request_id_of(&http::HeaderMap::new())).is_ok());
    }

    #[test]
    fn grpc_status_codes_are_named_canonically() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_status_in(&headers), None);
        headers.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(grpc_status_in(&headers), Some("NOT_FOUND"));
        headers.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(grpc_status_in(&headers), Some("OK"));
        headers.insert("grpc-status", "99".parse().unwrap());
        assert_eq!(grpc_status_in(&headers), Some("UNKNOWN"));
    }
}
