//! [`FaultProxy`]: a fault-injecting HTTP/1.1 reverse proxy on `127.0.0.1`,
//! put in front of a real [`TestRegistry`](super::registry::TestRegistry) or
//! [`TokenServer`](super::registry::TokenServer) when a test needs a server
//! that misbehaves in a way the real one cannot be made to.
//!
//! Every request is forwarded unchanged (the `Range` header included, and a
//! `206` answer comes back untouched) unless a [`FaultRule`] matches it: the
//! first rule whose method and path substring match, and which has not used
//! up its [`Occurrences`], decides the [`Fault`]. Rules match the path without
//! its query string. Every request is recorded (method, path, `Range`
//! header, and the fault applied) for the test's assertions.
//!
//! The proxy speaks just enough HTTP/1.1 for a registry client: it keeps the
//! client's connection alive between requests, opens one upstream
//! connection per request (`Connection: close`), and reads each upstream
//! answer whole before sending it on, which makes faults at a byte offset
//! exact. Plain HTTP only. It runs on its own thread with its own tokio
//! runtime, so sync tests and `#[tokio::test]`s (paused time included) can
//! use it alike; dropping it stops the thread and closes every connection.

// Each test uses its own subset of the API.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Bounds that keep a misbehaving client or upstream from tying up a test.
const REQUEST_HEAD_BYTES_MAX: usize = 64 * 1024;
const REQUEST_BODY_BYTES_MAX: usize = 1024 * 1024;
const RESPONSE_HEAD_BYTES_MAX: usize = 64 * 1024;
const RESPONSE_BODY_BYTES_MAX: usize = 256 * 1024 * 1024;
const UPSTREAM_TIMEOUT_MS: u64 = 30_000;
/// The pause between the last byte sent and a reset: closing with
/// `SO_LINGER` 0 discards whatever the client has not yet taken from the
/// proxy's send buffer, and a fault at byte N must deliver exactly N bytes.
const RESET_DELAY_MS: u64 = 200;
/// The query parameter a redirect loop counts its hops in.
pub const REDIRECT_HOP_PARAMETER: &str = "fault_proxy_hop";

/// A running proxy. Dropping it stops it.
pub struct FaultProxy {
    address: SocketAddr,
    upstream: SocketAddr,
    state: Arc<ProxyState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Which requests a fault applies to, and what it does to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    /// `None` matches every method.
    pub method: Option<String>,
    /// Matched against the request path without its query string.
    pub path_contains: String,
    pub occurrences: Occurrences,
    pub fault: Fault,
}

/// How many matching requests a rule applies to; later ones pass through
/// (or fall to the next matching rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occurrences {
    First(u32),
    All,
}

/// What the proxy does to a matching request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers with this status, headers and body without asking upstream.
    /// `Content-Length` is added.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Forwards, then replaces or removes headers of the answer (names are
    /// case-insensitive) and, when `body` is set, its body (`Content-Length`
    /// follows the new body).
    Rewrite {
        set_headers: Vec<(String, String)>,
        remove_headers: Vec<String>,
        body: Option<Vec<u8>>,
    },
    /// Forwards a clean answer cut to its first `length_bytes` bytes, with a
    /// `Content-Length` that says so.
    ShortBody { length_bytes: usize },
    /// Forwards a clean answer with `bytes` appended, with a `Content-Length`
    /// that says so.
    AppendBytes { bytes: Vec<u8> },
    /// Forwards with the byte at `offset_bytes` inverted (no change when the
    /// body is shorter).
    CorruptByte { offset_bytes: usize },
    /// Forwards the answer, its body replaced by `body` when set, without
    /// `Content-Length`: the body ends when the connection closes.
    CloseDelimitedBody { body: Option<Vec<u8>> },
    /// Sends the headers (the real `Content-Length`) and the first
    /// `after_bytes` bytes, then closes the connection (FIN).
    CloseMidBody { after_bytes: usize },
    /// Sends the headers (the real `Content-Length`) and the first
    /// `after_bytes` bytes, then resets the connection (RST).
    ResetMidBody { after_bytes: usize },
    /// Sends the headers and the first `after_bytes` bytes, sends nothing for
    /// `duration`, then the rest (if the client is still there).
    StallBody {
        after_bytes: usize,
        duration: Duration,
    },
    /// Sends nothing for `duration` before forwarding.
    StallBeforeHeaders { duration: Duration },
    /// Answers `307` pointing at the same path on this proxy, with a hop
    /// counter in the query so each hop is a new URL: a loop that never ends.
    RedirectLoop,
    /// Answers `307` pointing at the same path and query under `base_url`
    /// (`http://host:port`, no trailing slash).
    RedirectTo { base_url: String },
}

/// One request the proxy received, in arrival order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// Without the query string.
    pub path: String,
    /// The `Range` header as received.
    pub range: Option<String>,
    /// Debug name of the fault applied, if any.
    pub fault: Option<String>,
}

struct ProxyState {
    rules: Mutex<Vec<ActiveRule>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

struct ActiveRule {
    rule: FaultRule,
    applied: u32,
}

impl FaultRule {
    /// Applies to every `method` request whose path contains `path_contains`.
    pub fn new(method: &str, path_contains: &str, fault: Fault) -> FaultRule {
        FaultRule {
            method: Some(method.to_owned()),
            path_contains: path_contains.to_owned(),
            occurrences: Occurrences::All,
            fault,
        }
    }

    /// Applies to requests of any method.
    pub fn any_method(path_contains: &str, fault: Fault) -> FaultRule {
        FaultRule {
            method: None,
            ..FaultRule::new("", path_contains, fault)
        }
    }

    /// Applies to the first `count` matching requests only.
    pub fn first(mut self, count: u32) -> FaultRule {
        self.occurrences = Occurrences::First(count);
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|wanted| wanted.eq_ignore_ascii_case(method))
            && path.contains(&self.path_contains)
    }
}

impl Fault {
    /// A bare status with an empty body.
    pub fn status(status: u16) -> Fault {
        Fault::Respond {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `429 Too Many Requests` with `Retry-After: <seconds>`.
    pub fn too_many_requests(retry_after_seconds: u64) -> Fault {
        Fault::Respond {
            status: 429,
            headers: vec![("Retry-After".to_owned(), retry_after_seconds.to_string())],
            body: Vec::new(),
        }
    }

    /// `status` with a `Content-Type` and a body.
    pub fn respond_with(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Fault {
        Fault::Respond {
            status,
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
            body: body.into(),
        }
    }

    /// Forwards with one header replaced.
    pub fn set_header(name: &str, value: &str) -> Fault {
        Fault::Rewrite {
            set_headers: vec![(name.to_owned(), value.to_owned())],
            remove_headers: Vec::new(),
            body: None,
        }
    }

    fn name(&self) -> String {
        let text = format!("{self:?}");
        // The variant name, without the (possibly huge) fields.
        text.split([' ', '{', '('])
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

impl FaultProxy {
    /// A proxy forwarding to `upstream` (a plain HTTP server on loopback).
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        listener
            .set_nonblocking(true)
            .expect("make the fault proxy listener non-blocking");
        let address = listener.local_addr().expect("fault proxy address");
        let state = Arc::new(ProxyState {
            rules: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
        });
        let (shutdown, shutdown_received) = tokio::sync::oneshot::channel::<()>();
        let thread = {
            let state = Arc::clone(&state);
            std::thread::Builder::new()
                .name("fault-proxy".to_owned())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("build the fault proxy runtime");
                    runtime.block_on(accept_connections(
                        listener,
                        address,
                        upstream,
                        state,
                        shutdown_received,
                    ));
                    // Dropping the runtime cancels every connection task, which
                    // closes their sockets (stalled ones included).
                })
                .expect("spawn the fault proxy thread")
        };
        FaultProxy {
            address,
            upstream,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// A proxy in front of a plain HTTP [`TestRegistry`](super::registry::TestRegistry).
    pub fn in_front_of(registry: &super::registry::TestRegistry) -> FaultProxy {
        assert_eq!(
            registry.scheme(),
            "http",
            "the fault proxy speaks plain HTTP only"
        );
        FaultProxy::start(
            registry
                .host()
                .parse()
                .expect("the registry host is an address"),
        )
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// `127.0.0.1:PORT`, usable as the registry part of an image reference.
    pub fn host(&self) -> String {
        self.address.to_string()
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Adds a rule after the existing ones (earlier rules win).
    pub fn add_rule(&self, rule: FaultRule) {
        lock(&self.state.rules).push(ActiveRule { rule, applied: 0 });
    }

    /// Removes every rule: from now on every request passes through.
    pub fn clear_rules(&self) {
        lock(&self.state.rules).clear();
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// Forgets the recorded requests (rules keep their counts).
    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }

    /// Requests received per (method, path).
    pub fn counts(&self) -> BTreeMap<(String, String), usize> {
        let mut counts = BTreeMap::new();
        for request in lock(&self.state.requests).iter() {
            *counts
                .entry((request.method.clone(), request.path.clone()))
                .or_insert(0) += 1;
        }
        counts
    }

    /// Requests received with this method and exactly this path.
    pub fn count(&self, method: &str, path: &str) -> usize {
        lock(&self.state.requests)
            .iter()
            .filter(|request| request.method == method && request.path == path)
            .count()
    }

    /// Requests received with this method and a path containing `path_contains`.
    pub fn count_matching(&self, method: &str, path_contains: &str) -> usize {
        self.matching(method, path_contains).len()
    }

    /// The `Range` header of each request with this method and a path
    /// containing `path_contains`, in arrival order.
    pub fn ranges(&self, method: &str, path_contains: &str) -> Vec<Option<String>> {
        self.matching(method, path_contains)
            .into_iter()
            .map(|request| request.range)
            .collect()
    }

    fn matching(&self, method: &str, path_contains: &str) -> Vec<RecordedRequest> {
        lock(&self.state.requests)
            .iter()
            .filter(|request| request.method == method && request.path.contains(path_contains))
            .cloned()
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl ProxyState {
    /// Records the request and picks the fault of the first live matching rule.
    fn admit(&self, request: &Request) -> Option<Fault> {
        let fault = {
            let mut rules = lock(&self.rules);
            rules
                .iter_mut()
                .find(|active| {
                    active.rule.matches(&request.method, &request.path)
                        && match active.rule.occurrences {
                            Occurrences::All => true,
                            Occurrences::First(count) => active.applied < count,
                        }
                })
                .map(|active| {
                    active.applied += 1;
                    active.rule.fault.clone()
                })
        };
        lock(&self.requests).push(RecordedRequest {
            method: request.method.clone(),
            path: request.path.clone(),
            range: request.header("range").map(str::to_owned),
            fault: fault.as_ref().map(Fault::name),
        });
        fault
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn accept_connections(
    listener: std::net::TcpListener,
    address: SocketAddr,
    upstream: SocketAddr,
    state: Arc<ProxyState>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(listener).expect("register the fault proxy listener");
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = Arc::clone(&state);
                    tokio::spawn(serve_connection(stream, address, upstream, state));
                }
                // Out of file descriptors and the like: wait, then go on.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// A request as received from the client.
struct Request {
    method: String,
    /// Path and query, as sent.
    target: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"))
    }
}

/// An upstream answer, read whole.
struct Response {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    /// `None` for answers without a body (to `HEAD`, `204`, `304`), whose
    /// `Content-Length` header is then passed on as it is.
    body: Option<Vec<u8>>,
}

/// What to do with the client connection after an answer.
enum After {
    KeepOpen,
    Close,
    Reset,
}

async fn serve_connection(
    stream: TcpStream,
    address: SocketAddr,
    upstream: SocketAddr,
    state: Arc<ProxyState>,
) {
    let _ = stream.set_nodelay(true);
    let mut client = BufReader::new(stream);
    loop {
        let request = match read_request(&mut client).await {
            Ok(Some(request)) => request,
            Ok(None) | Err(_) => return,
        };
        let fault = state.admit(&request);
        let after = match handle(&mut client, &request, fault, address, upstream).await {
            Ok(after) => after,
            Err(_) => return,
        };
        match after {
            After::KeepOpen if !request.wants_close() => {}
            After::KeepOpen | After::Close => {
                let _ = client.get_mut().shutdown().await;
                return;
            }
            After::Reset => {
                // SO_LINGER 0: closing sends RST instead of FIN.
                let _ = client.get_ref().set_zero_linger();
                return;
            }
        }
    }
}

async fn handle(
    client: &mut BufReader<TcpStream>,
    request: &Request,
    fault: Option<Fault>,
    address: SocketAddr,
    upstream: SocketAddr,
) -> io::Result<After> {
    let client = client.get_mut();
    let fault = match fault {
        None => {
            let Some(response) = forward(request, upstream).await else {
                return Ok(After::Close);
            };
            write_response(client, &response).await?;
            return Ok(After::KeepOpen);
        }
        Some(fault) => fault,
    };
    match fault {
        Fault::Respond {
            status,
            headers,
            body,
        } => {
            let response = Response {
                status,
                reason: reason_phrase(status).to_owned(),
                headers,
                body: Some(body),
            };
            write_response(client, &response).await?;
            return Ok(After::KeepOpen);
        }
        Fault::RedirectLoop => {
            let hop = request
                .query
                .as_deref()
                .and_then(|query| {
                    query.split('&').find_map(|pair| {
                        pair.strip_prefix(REDIRECT_HOP_PARAMETER)?
                            .strip_prefix('=')?
                            .parse::<u64>()
                            .ok()
                    })
                })
                .unwrap_or(0);
            let mut query: Vec<&str> = request
                .query
                .as_deref()
                .unwrap_or_default()
                .split('&')
                .filter(|pair| !pair.is_empty() && !pair.starts_with(REDIRECT_HOP_PARAMETER))
                .collect();
            let hop_pair = format!("{REDIRECT_HOP_PARAMETER}={}", hop + 1);
            query.push(&hop_pair);
            let location = format!("http://{address}{}?{}", request.path, query.join("&"));
            write_response(client, &redirect(&location)).await?;
            return Ok(After::KeepOpen);
        }
        Fault::RedirectTo { base_url } => {
            let location = format!("{base_url}{}", request.target);
            write_response(client, &redirect(&location)).await?;
            return Ok(After::KeepOpen);
        }
        Fault::StallBeforeHeaders { duration } => {
            tokio::time::sleep(duration).await;
            let Some(response) = forward(request, upstream).await else {
                return Ok(After::Close);
            };
            write_response(client, &response).await?;
            return Ok(After::KeepOpen);
        }
        _ => {}
    }

    let Some(mut response) = forward(request, upstream).await else {
        return Ok(After::Close);
    };
    match fault {
        Fault::Rewrite {
            set_headers,
            remove_headers,
            body,
        } => {
            response.headers.retain(|(name, _)| {
                !remove_headers
                    .iter()
                    .chain(set_headers.iter().map(|(set, _)| set))
                    .any(|removed| removed.eq_ignore_ascii_case(name))
            });
            response.headers.extend(set_headers);
            if let Some(body) = body {
                response.body = Some(body);
            }
            write_response(client, &response).await?;
            Ok(After::KeepOpen)
        }
        Fault::ShortBody { length_bytes } => {
            if let Some(body) = response.body.as_mut() {
                body.truncate(length_bytes);
            }
            write_response(client, &response).await?;
            Ok(After::KeepOpen)
        }
        Fault::AppendBytes { bytes } => {
            if let Some(body) = response.body.as_mut() {
                body.extend_from_slice(&bytes);
            }
            write_response(client, &response).await?;
            Ok(After::KeepOpen)
        }
        Fault::CorruptByte { offset_bytes } => {
            if let Some(byte) = response
                .body
                .as_mut()
                .and_then(|body| body.get_mut(offset_bytes))
            {
                *byte ^= 0xff;
            }
            write_response(client, &response).await?;
            Ok(After::KeepOpen)
        }
        Fault::CloseDelimitedBody { body } => {
            let body = body.or(response.body.take()).unwrap_or_default();
            let mut head = response_head(&response, LengthHeader::Omit);
            head.push_str("Connection: close\r\n\r\n");
            client.write_all(head.as_bytes()).await?;
            client.write_all(&body).await?;
            client.flush().await?;
            Ok(After::Close)
        }
        Fault::CloseMidBody { after_bytes } | Fault::ResetMidBody { after_bytes } => {
            let body = response.body.take().unwrap_or_default();
            let mut head = response_head(&response, LengthHeader::Set(body.len()));
            head.push_str("\r\n");
            client.write_all(head.as_bytes()).await?;
            client
                .write_all(&body[..after_bytes.min(body.len())])
                .await?;
            client.flush().await?;
            if matches!(fault, Fault::ResetMidBody { .. }) {
                tokio::time::sleep(Duration::from_millis(RESET_DELAY_MS)).await;
                Ok(After::Reset)
            } else {
                // A FIN follows every byte sent; no pause is needed.
                Ok(After::Close)
            }
        }
        Fault::StallBody {
            after_bytes,
            duration,
        } => {
            let body = response.body.take().unwrap_or_default();
            let cut = after_bytes.min(body.len());
            let mut head = response_head(&response, LengthHeader::Set(body.len()));
            head.push_str("\r\n");
            client.write_all(head.as_bytes()).await?;
            client.write_all(&body[..cut]).await?;
            client.flush().await?;
            tokio::time::sleep(duration).await;
            client.write_all(&body[cut..]).await?;
            client.flush().await?;
            Ok(After::KeepOpen)
        }
        Fault::Respond { .. }
        | Fault::RedirectLoop
        | Fault::RedirectTo { .. }
        | Fault::StallBeforeHeaders { .. } => unreachable!("answered before forwarding"),
    }
}

fn redirect(location: &str) -> Response {
    Response {
        status: 307,
        reason: reason_phrase(307).to_owned(),
        headers: vec![("Location".to_owned(), location.to_owned())],
        body: Some(Vec::new()),
    }
}

/// Sends `request` upstream on a new connection and reads the answer whole;
/// `None` when the upstream cannot be reached or answers garbage (the client
/// connection is then closed, as the upstream's would be).
async fn forward(request: &Request, upstream: SocketAddr) -> Option<Response> {
    let exchange = async {
        let mut stream = BufReader::new(TcpStream::connect(upstream).await?);
        let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.target);
        for (name, value) in &request.headers {
            if !is_hop_by_hop(name) && !name.eq_ignore_ascii_case("content-length") {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        if !request.body.is_empty() || request.header("content-length").is_some() {
            head.push_str(&format!("Content-Length: {}\r\n", request.body.len()));
        }
        head.push_str("Connection: close\r\n\r\n");
        stream.get_mut().write_all(head.as_bytes()).await?;
        stream.get_mut().write_all(&request.body).await?;
        stream.get_mut().flush().await?;
        read_response(&mut stream, request.method.eq_ignore_ascii_case("HEAD")).await
    };
    tokio::time::timeout(Duration::from_millis(UPSTREAM_TIMEOUT_MS), exchange)
        .await
        .ok()?
        .ok()
}

async fn read_request(client: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let Some(lines) = read_head(client, REQUEST_HEAD_BYTES_MAX).await? else {
        return Ok(None);
    };
    let (request_line, header_lines) = lines.split_first().ok_or_else(|| invalid("empty head"))?;
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    if method.is_empty() || !target.starts_with('/') {
        return Err(invalid("bad request line"));
    }
    let headers = parse_headers(header_lines)?;
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.clone(), None),
    };
    let body = read_body(client, &headers, REQUEST_BODY_BYTES_MAX, false).await?;
    Ok(Some(Request {
        method,
        target,
        path,
        query,
        headers,
        body: body.unwrap_or_default(),
    }))
}

async fn read_response<R: AsyncRead + Unpin>(
    upstream: &mut BufReader<R>,
    to_head_request: bool,
) -> io::Result<Response> {
    let lines = read_head(upstream, RESPONSE_HEAD_BYTES_MAX)
        .await?
        .ok_or_else(|| invalid("upstream closed without answering"))?;
    let (status_line, header_lines) = lines.split_first().ok_or_else(|| invalid("empty head"))?;
    let mut parts = status_line.splitn(3, ' ');
    let _version = parts.next();
    let status: u16 = parts
        .next()
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let reason = parts.next().unwrap_or_default().to_owned();
    let headers = parse_headers(header_lines)?;
    let bodiless = to_head_request || status == 204 || status == 304 || status < 200;
    let body = if bodiless {
        None
    } else {
        read_body(upstream, &headers, RESPONSE_BODY_BYTES_MAX, true).await?
    };
    Ok(Response {
        status,
        reason,
        headers,
        body,
    })
}

/// Reads a head up to its empty line; `None` at a clean end of stream
/// before the first byte.
async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    bytes_max: usize,
) -> io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let read = (&mut *reader)
            .take((bytes_max - total + 1) as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return if lines.is_empty() && total == 0 {
                Ok(None)
            } else {
                Err(invalid("head cut short"))
            };
        }
        total += read;
        if total > bytes_max {
            return Err(invalid("head too large"));
        }
        let line = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        if line.is_empty() {
            if lines.is_empty() {
                // Tolerate a stray CRLF between requests.
                continue;
            }
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn parse_headers(lines: &[String]) -> io::Result<Vec<(String, String)>> {
    lines
        .iter()
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid("header without a colon"))?;
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// Reads a body framed by `Transfer-Encoding: chunked`, `Content-Length`, or
/// (for responses only) the end of the stream.
async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    headers: &[(String, String)],
    bytes_max: usize,
    until_close_allowed: bool,
) -> io::Result<Option<Vec<u8>>> {
    let chunked = header(headers, "transfer-encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return read_chunked(reader, bytes_max).await.map(Some);
    }
    if let Some(length) = header(headers, "content-length") {
        let length: usize = length.parse().map_err(|_| invalid("bad content-length"))?;
        if length > bytes_max {
            return Err(invalid("body too large"));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        return Ok(Some(body));
    }
    if !until_close_allowed {
        return Ok(None);
    }
    let mut body = Vec::new();
    (&mut *reader)
        .take(bytes_max as u64 + 1)
        .read_to_end(&mut body)
        .await?;
    if body.len() > bytes_max {
        return Err(invalid("body too large"));
    }
    Ok(Some(body))
}

async fn read_chunked<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    bytes_max: usize,
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = Vec::new();
        (&mut *reader)
            .take(1024)
            .read_until(b'\n', &mut line)
            .await?;
        let line = String::from_utf8_lossy(&line);
        let size_text = line.trim().split(';').next().unwrap_or_default();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size line"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut trailer = Vec::new();
                let read = (&mut *reader)
                    .take(8 * 1024)
                    .read_until(b'\n', &mut trailer)
                    .await?;
                if read == 0 || trailer == b"\r\n" || trailer == b"\n" {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > bytes_max {
            return Err(invalid("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).await?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).await?;
    }
}

/// Writes a whole answer with a `Content-Length` that matches its body.
async fn write_response(client: &mut TcpStream, response: &Response) -> io::Result<()> {
    let length = match &response.body {
        Some(body) => LengthHeader::Set(body.len()),
        None => LengthHeader::Keep,
    };
    let mut head = response_head(response, length);
    head.push_str("\r\n");
    client.write_all(head.as_bytes()).await?;
    if let Some(body) = &response.body {
        client.write_all(body).await?;
    }
    client.flush().await
}

/// What a head says about the body's length.
enum LengthHeader {
    /// `Content-Length` with this value, replacing the upstream one.
    Set(usize),
    /// The upstream `Content-Length`, if any (bodiless answers).
    Keep,
    /// No `Content-Length`: the body ends when the connection closes.
    Omit,
}

/// The status line and headers, without the final empty line.
fn response_head(response: &Response, length: LengthHeader) -> String {
    let mut head = format!("HTTP/1.1 {} {}\r\n", response.status, response.reason);
    for (name, value) in &response.headers {
        let is_length = name.eq_ignore_ascii_case("content-length");
        if is_hop_by_hop(name) || (is_length && !matches!(length, LengthHeader::Keep)) {
            continue;
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let LengthHeader::Set(length) = length {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    head
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
    ]
    .iter()
    .any(|hop| hop.eq_ignore_ascii_case(name))
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Fault Proxy",
    }
}

fn invalid(detail: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail.to_owned())
}
