//! A Docker token server for registry tests (the "Bearer token flow" of the
//! spec, section 5.5), listening on `127.0.0.1`.
//!
//! It answers `GET /token?service=…&scope=…` (anonymous or with Basic
//! credentials) and the OAuth2 form `POST /token` (`grant_type=password` or
//! `grant_type=refresh_token`). Tokens are ES256 JWTs whose header carries the
//! signing certificate in `x5c`; the registry checks that chain against its
//! `rootcertbundle`, which holds the token CA from [`TokenServer::root_certificate_bundle_path`].
//!
//! Policy, in one place so tests can reason about it:
//! - wrong or unknown credentials get `401` and no token;
//! - a `service` that is missing or differs from [`TokenServer::service`] gets `400`;
//! - a known caller (or anonymous) asking for a scope it may not use still gets a
//!   token, whose `access` entry lists only the granted actions (possibly none), as
//!   Docker Hub does; the registry then answers `401` with `error="insufficient_scope"`.
//!
//! Only `pull` is ever granted through HTTP. Harness code that needs `push`
//! mints tokens directly with [`TokenServer::mint_token`], which the request
//! counters do not see.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{ExtendedKeyUsagePurpose, Issuer, KeyPair};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::json;
use tempfile::TempDir;

use super::certificates::{certificate_authority_params, leaf_params};

pub const DEFAULT_TOKEN_SERVICE: &str = "cri-imaged-test-registry";
pub const DEFAULT_TOKEN_ISSUER: &str = "cri-imaged-test-token-issuer";
pub const DEFAULT_TOKEN_LIFETIME_SECONDS: u64 = 300;

/// A repository name that every user (but not anonymous callers) may pull
/// when it appears in a user's `pull_repositories`.
pub const ANY_REPOSITORY: &str = "*";

/// Bounds that keep a misbehaving client from tying up a test.
const REQUEST_HEAD_BYTES_MAX: usize = 64 * 1024;
const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;
const CONNECTION_TIMEOUT_MS: u64 = 5_000;

/// A running token server. Dropping it stops the listener.
pub struct TokenServer {
    state: Arc<TokenServerState>,
    address: SocketAddr,
    stopping: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
    directory: TempDir,
}

/// Configures a [`TokenServer`] before it starts.
pub struct TokenServerBuilder {
    service: String,
    issuer: String,
    policy: TokenPolicy,
}

/// Who may do what. Tests may change it while the server runs with
/// [`TokenServer::update_policy`].
#[derive(Clone, Debug, Default)]
pub struct TokenPolicy {
    /// User name to user.
    pub users: BTreeMap<String, TokenUser>,
    /// Identity (refresh) token to the user name it authenticates.
    pub identity_tokens: BTreeMap<String, String>,
    /// Repositories that anonymous callers may pull.
    pub anonymous_pull_repositories: BTreeSet<String>,
    pub token_lifetime_seconds: u64,
}

#[derive(Clone, Debug)]
pub struct TokenUser {
    pub password: String,
    /// Repositories this user may pull; [`ANY_REPOSITORY`] allows all.
    pub pull_repositories: BTreeSet<String>,
}

/// One entry of a token's `access` claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositoryAccess {
    pub repository: String,
    pub actions: Vec<String>,
}

/// A cheap handle that signs tokens with the server's key, for pushers.
#[derive(Clone)]
pub struct TokenMinter {
    state: Arc<TokenServerState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRequestMethod {
    Get,
    Post,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRequestOutcome {
    /// A token with every requested action.
    Granted,
    /// A token that lacks at least one requested action.
    Reduced,
    /// `401`: wrong credentials or unknown identity token.
    Unauthorized,
    /// `400` or `404`: malformed request, wrong service, unknown grant type or path.
    BadRequest,
}

/// One request the server answered, in arrival order.
#[derive(Clone, Debug)]
pub struct TokenRequestRecord {
    pub method: TokenRequestMethod,
    /// `grant_type` of a POST; `None` for GET.
    pub grant_type: Option<String>,
    /// The authenticated user; `None` for anonymous or rejected callers.
    pub user: Option<String>,
    /// Requested scopes as sent, for example `repository:library/busybox:pull`.
    pub scopes: Vec<String>,
    /// Whether a refresh token was asked for (`offline_token=true` or `access_type=offline`).
    pub offline: bool,
    pub outcome: TokenRequestOutcome,
}

/// Request counters by method and outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenRequestCounts {
    pub get_granted: u64,
    pub get_reduced: u64,
    pub get_unauthorized: u64,
    pub post_granted: u64,
    pub post_reduced: u64,
    pub post_unauthorized: u64,
    pub bad_requests: u64,
}

impl TokenRequestCounts {
    pub fn get_total(&self) -> u64 {
        self.get_granted + self.get_reduced + self.get_unauthorized
    }

    pub fn post_total(&self) -> u64 {
        self.post_granted + self.post_reduced + self.post_unauthorized
    }

    pub fn total(&self) -> u64 {
        self.get_total() + self.post_total() + self.bad_requests
    }
}

impl TokenServer {
    pub fn builder() -> TokenServerBuilder {
        TokenServerBuilder {
            service: DEFAULT_TOKEN_SERVICE.to_owned(),
            issuer: DEFAULT_TOKEN_ISSUER.to_owned(),
            policy: TokenPolicy {
                token_lifetime_seconds: DEFAULT_TOKEN_LIFETIME_SECONDS,
                ..TokenPolicy::default()
            },
        }
    }

    /// The token endpoint, as the registry advertises it in its challenge.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.address)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn service(&self) -> &str {
        &self.state.service
    }

    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    /// The PEM bundle the registry's `auth.token.rootcertbundle` must point at.
    pub fn root_certificate_bundle_pem(&self) -> &str {
        &self.state.signer.root_certificate_pem
    }

    pub fn root_certificate_bundle_path(&self) -> PathBuf {
        self.directory.path().join("token-root.pem")
    }

    pub fn minter(&self) -> TokenMinter {
        TokenMinter {
            state: Arc::clone(&self.state),
        }
    }

    /// Signs a token for `subject` directly, bypassing HTTP and the counters.
    pub fn mint_token(&self, subject: &str, access: &[RepositoryAccess]) -> String {
        self.state.mint_token(subject, access)
    }

    pub fn update_policy(&self, change: impl FnOnce(&mut TokenPolicy)) {
        change(&mut lock(&self.state.policy));
    }

    pub fn policy(&self) -> TokenPolicy {
        lock(&self.state.policy).clone()
    }

    pub fn requests(&self) -> Vec<TokenRequestRecord> {
        lock(&self.state.requests).clone()
    }

    pub fn counts(&self) -> TokenRequestCounts {
        let mut counts = TokenRequestCounts::default();
        for record in lock(&self.state.requests).iter() {
            let counter = match (record.method, record.outcome) {
                (_, TokenRequestOutcome::BadRequest) => &mut counts.bad_requests,
                (TokenRequestMethod::Get, TokenRequestOutcome::Granted) => &mut counts.get_granted,
                (TokenRequestMethod::Get, TokenRequestOutcome::Reduced) => &mut counts.get_reduced,
                (TokenRequestMethod::Get, TokenRequestOutcome::Unauthorized) => {
                    &mut counts.get_unauthorized
                }
                (TokenRequestMethod::Post, TokenRequestOutcome::Granted) => {
                    &mut counts.post_granted
                }
                (TokenRequestMethod::Post, TokenRequestOutcome::Reduced) => {
                    &mut counts.post_reduced
                }
                (TokenRequestMethod::Post, TokenRequestOutcome::Unauthorized) => {
                    &mut counts.post_unauthorized
                }
            };
            *counter += 1;
        }
        counts
    }

    pub fn reset_counts(&self) {
        lock(&self.state.requests).clear();
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(accept_thread) = self.accept_thread.take() {
            let _ = accept_thread.join();
        }
    }
}

impl TokenServerBuilder {
    pub fn user(mut self, name: &str, password: &str, pull_repositories: &[&str]) -> Self {
        self.policy.users.insert(
            name.to_owned(),
            TokenUser {
                password: password.to_owned(),
                pull_repositories: pull_repositories.iter().map(ToString::to_string).collect(),
            },
        );
        self
    }

    /// Accepts `identity_token` as a refresh token for `user`.
    pub fn identity_token(mut self, identity_token: &str, user: &str) -> Self {
        self.policy
            .identity_tokens
            .insert(identity_token.to_owned(), user.to_owned());
        self
    }

    pub fn anonymous_pull(mut self, repositories: &[&str]) -> Self {
        self.policy
            .anonymous_pull_repositories
            .extend(repositories.iter().map(ToString::to_string));
        self
    }

    /// Note: distribution accepts a token until 60 s after its `exp`.
    pub fn token_lifetime_seconds(mut self, seconds: u64) -> Self {
        self.policy.token_lifetime_seconds = seconds;
        self
    }

    pub fn service(mut self, service: &str) -> Self {
        self.service = service.to_owned();
        self
    }

    pub fn issuer(mut self, issuer: &str) -> Self {
        self.issuer = issuer.to_owned();
        self
    }

    pub fn start(self) -> TokenServer {
        let directory = TempDir::new().expect("create the token server directory");
        let signer = TokenSigner::generate();
        let bundle_path = directory.path().join("token-root.pem");
        std::fs::write(&bundle_path, &signer.root_certificate_pem)
            .unwrap_or_else(|error| panic!("write {}: {error}", bundle_path.display()));

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token server");
        let address = listener.local_addr().expect("token server address");
        let state = Arc::new(TokenServerState {
            service: self.service,
            issuer: self.issuer,
            signer,
            policy: Mutex::new(self.policy),
            requests: Mutex::new(Vec::new()),
            next_token_number: AtomicU64::new(1),
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let accept_thread = {
            let state = Arc::clone(&state);
            let stopping = Arc::clone(&stopping);
            std::thread::Builder::new()
                .name("token-server".to_owned())
                .spawn(move || accept_connections(listener, state, stopping))
                .expect("spawn the token server thread")
        };
        TokenServer {
            state,
            address,
            stopping,
            accept_thread: Some(accept_thread),
            directory,
        }
    }
}

impl TokenMinter {
    pub fn mint_token(&self, subject: &str, access: &[RepositoryAccess]) -> String {
        self.state.mint_token(subject, access)
    }
}

impl RepositoryAccess {
    pub fn new(repository: &str, actions: &[&str]) -> RepositoryAccess {
        RepositoryAccess {
            repository: repository.to_owned(),
            actions: actions.iter().map(ToString::to_string).collect(),
        }
    }
}

struct TokenServerState {
    service: String,
    issuer: String,
    signer: TokenSigner,
    policy: Mutex<TokenPolicy>,
    requests: Mutex<Vec<TokenRequestRecord>>,
    next_token_number: AtomicU64,
}

/// The token CA (trusted by the registry) and the ES256 key whose certificate,
/// signed by that CA, goes into every token's `x5c` header.
struct TokenSigner {
    root_certificate_pem: String,
    signing_certificate_der: Vec<u8>,
    signing_key: EcdsaKeyPair,
    random: SystemRandom,
}

impl TokenSigner {
    fn generate() -> TokenSigner {
        let ca_key = KeyPair::generate().expect("generate the token CA key");
        let ca_params = certificate_authority_params("cri-imaged test token CA");
        let ca_certificate = ca_params
            .self_signed(&ca_key)
            .expect("self-sign the token CA");
        let issuer = Issuer::new(ca_params, ca_key);

        // rcgen's default algorithm is ECDSA P-256 with SHA-256, that is ES256.
        let signing_key_pair = KeyPair::generate().expect("generate the token signing key");
        let signing_certificate = leaf_params(
            "cri-imaged test token signer",
            &[],
            ExtendedKeyUsagePurpose::Any,
        )
        .signed_by(&signing_key_pair, &issuer)
        .expect("sign the token signing certificate");

        let random = SystemRandom::new();
        let signing_key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            signing_key_pair.serialized_der(),
            &random,
        )
        .expect("load the token signing key into ring");
        TokenSigner {
            root_certificate_pem: ca_certificate.pem(),
            signing_certificate_der: signing_certificate.der().to_vec(),
            signing_key,
            random,
        }
    }

    /// A compact JWS: base64url(header) "." base64url(claims) "." base64url(r || s).
    fn sign(&self, claims: &serde_json::Value) -> String {
        let header = json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [STANDARD.encode(&self.signing_certificate_der)],
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .signing_key
            .sign(&self.random, signing_input.as_bytes())
            .expect("sign the token");
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }
}

impl TokenServerState {
    fn mint_token(&self, subject: &str, access: &[RepositoryAccess]) -> String {
        let lifetime_seconds = lock(&self.policy).token_lifetime_seconds;
        self.mint_token_with_lifetime(subject, access, lifetime_seconds)
            .0
    }

    /// Returns the token and its issue time in Unix seconds.
    fn mint_token_with_lifetime(
        &self,
        subject: &str,
        access: &[RepositoryAccess],
        lifetime_seconds: u64,
    ) -> (String, u64) {
        let issued_at = unix_seconds_now();
        let token_number = self.next_token_number.fetch_add(1, Ordering::Relaxed);
        let access: Vec<serde_json::Value> = access
            .iter()
            .map(|entry| {
                json!({
                    "type": "repository",
                    "name": entry.repository,
                    "actions": entry.actions,
                })
            })
            .collect();
        let claims = json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": issued_at + lifetime_seconds,
            "nbf": issued_at,
            "iat": issued_at,
            "jti": format!("cri-imaged-test-token-{token_number}"),
            "access": access,
        });
        (self.signer.sign(&claims), issued_at)
    }

    fn record(&self, record: TokenRequestRecord) {
        lock(&self.requests).push(record);
    }
}

fn accept_connections(
    listener: TcpListener,
    state: Arc<TokenServerState>,
    stopping: Arc<AtomicBool>,
) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let state = Arc::clone(&state);
        // One short-lived thread per connection: every response closes the
        // connection, so a slow client never blocks another one.
        let _ = std::thread::Builder::new()
            .name("token-server-connection".to_owned())
            .spawn(move || {
                let _ = serve_connection(stream, &state);
            });
    }
}

struct HttpRequest {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

fn serve_connection(mut stream: TcpStream, state: &TokenServerState) -> io::Result<()> {
    let timeout = Some(Duration::from_millis(CONNECTION_TIMEOUT_MS));
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)?;
    let response = match read_request(&mut stream)? {
        Some(request) => handle_request(&request, state),
        None => error_response(400, "malformed HTTP request"),
    };
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Unknown",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(response.body.as_bytes())?;
    stream.flush()?;
    stream.shutdown(Shutdown::Write)
}

/// Reads one HTTP/1.1 request; `None` when it is malformed or over the limits.
fn read_request(stream: &mut TcpStream) -> io::Result<Option<HttpRequest>> {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 4096];
    let head_end = loop {
        if let Some(position) = find(&buffer, b"\r\n\r\n") {
            break position;
        }
        if buffer.len() > REQUEST_HEAD_BYTES_MAX {
            return Ok(None);
        }
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let Ok(head) = std::str::from_utf8(&buffer[..head_end]) else {
        return Ok(None);
    };
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target)) = (request_line.next(), request_line.next()) else {
        return Ok(None);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Ok(None);
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let content_length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map(|(_, value)| value.parse::<usize>());
    let content_length = match content_length {
        None => 0,
        Some(Ok(length)) if length <= REQUEST_BODY_BYTES_MAX => length,
        Some(_) => return Ok(None),
    };
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < content_length {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Ok(None);
        }
        body.extend_from_slice(&chunk[..read]);
    }
    body.truncate(content_length);
    Ok(Some(HttpRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body,
    }))
}

/// What a token request asks for, after parsing GET or POST.
struct TokenRequest {
    grant_type: Option<String>,
    service: Option<String>,
    scopes: Vec<String>,
    offline: bool,
    credentials: Credentials,
}

enum Credentials {
    Anonymous,
    Password { user: String, password: String },
    IdentityToken(String),
    Malformed,
}

fn handle_request(request: &HttpRequest, state: &TokenServerState) -> HttpResponse {
    let method = match request.method.as_str() {
        "GET" => TokenRequestMethod::Get,
        "POST" => TokenRequestMethod::Post,
        _ => return error_response(405, "only GET and POST are supported"),
    };
    let token_request = match method {
        TokenRequestMethod::Get => parse_get(request),
        TokenRequestMethod::Post => parse_post(request),
    };
    let mut record = TokenRequestRecord {
        method,
        grant_type: token_request.grant_type.clone(),
        user: None,
        scopes: token_request.scopes.clone(),
        offline: token_request.offline,
        outcome: TokenRequestOutcome::BadRequest,
    };
    if request.path != "/token" {
        state.record(record);
        return error_response(404, "unknown path");
    }
    if token_request.service.as_deref() != Some(state.service.as_str()) {
        state.record(record);
        return error_response(400, "missing or unknown service");
    }
    if method == TokenRequestMethod::Post
        && !matches!(
            token_request.grant_type.as_deref(),
            Some("password" | "refresh_token")
        )
    {
        state.record(record);
        return error_response(400, "unsupported grant_type");
    }

    let policy = lock(&state.policy).clone();
    let user = match authenticate(&token_request.credentials, &policy) {
        Ok(user) => user,
        Err(()) => {
            record.outcome = TokenRequestOutcome::Unauthorized;
            state.record(record);
            let mut response = error_response(401, "invalid credentials");
            response.headers.push((
                "WWW-Authenticate".to_owned(),
                format!("Basic realm=\"{}\"", state.service),
            ));
            return response;
        }
    };

    let (access, all_granted) = grant(&token_request.scopes, user.as_deref(), &policy);
    let subject = user.clone().unwrap_or_default();
    let (token, issued_at) =
        state.mint_token_with_lifetime(&subject, &access, policy.token_lifetime_seconds);
    let mut body = json!({
        "token": token,
        "access_token": token,
        "expires_in": policy.token_lifetime_seconds,
        "issued_at": rfc3339_utc(issued_at),
    });
    let wants_refresh_token =
        token_request.offline && matches!(token_request.credentials, Credentials::Password { .. });
    if let (true, Some(user)) = (wants_refresh_token, user.as_deref()) {
        let number = state.next_token_number.fetch_add(1, Ordering::Relaxed);
        let refresh_token = format!("cri-imaged-test-identity-token-{user}-{number}");
        lock(&state.policy)
            .identity_tokens
            .insert(refresh_token.clone(), user.to_owned());
        body["refresh_token"] = json!(refresh_token);
    }
    if method == TokenRequestMethod::Post {
        body["scope"] = json!(token_request.scopes.join(" "));
    }
    record.user = user;
    record.outcome = if all_granted {
        TokenRequestOutcome::Granted
    } else {
        TokenRequestOutcome::Reduced
    };
    state.record(record);
    HttpResponse {
        status: 200,
        headers: Vec::new(),
        body: body.to_string(),
    }
}

fn parse_get(request: &HttpRequest) -> TokenRequest {
    let mut token_request = TokenRequest {
        grant_type: None,
        service: None,
        scopes: Vec::new(),
        offline: false,
        credentials: basic_credentials(request),
    };
    for (name, value) in form_urlencoded::parse(request.query.as_bytes()) {
        match name.as_ref() {
            "service" => token_request.service = Some(value.into_owned()),
            // Each `scope` parameter may itself hold several space-separated scopes.
            "scope" => token_request.scopes.extend(
                value
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            ),
            "offline_token" => token_request.offline = value == "true",
            _ => {}
        }
    }
    token_request
}

fn parse_post(request: &HttpRequest) -> TokenRequest {
    let mut token_request = TokenRequest {
        grant_type: None,
        service: None,
        scopes: Vec::new(),
        offline: false,
        credentials: Credentials::Anonymous,
    };
    let mut user = None;
    let mut password = None;
    let mut refresh_token = None;
    for (name, value) in form_urlencoded::parse(&request.body) {
        match name.as_ref() {
            "grant_type" => token_request.grant_type = Some(value.into_owned()),
            "service" => token_request.service = Some(value.into_owned()),
            "scope" => token_request.scopes.extend(
                value
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            ),
            "access_type" => token_request.offline = value == "offline",
            "username" => user = Some(value.into_owned()),
            "password" => password = Some(value.into_owned()),
            "refresh_token" => refresh_token = Some(value.into_owned()),
            _ => {}
        }
    }
    token_request.credentials = match token_request.grant_type.as_deref() {
        Some("password") => match (user, password) {
            (Some(user), Some(password)) => Credentials::Password { user, password },
            _ => Credentials::Malformed,
        },
        Some("refresh_token") => match refresh_token {
            Some(token) => Credentials::IdentityToken(token),
            None => Credentials::Malformed,
        },
        _ => Credentials::Malformed,
    };
    token_request
}

fn basic_credentials(request: &HttpRequest) -> Credentials {
    let Some((_, value)) = request
        .headers
        .iter()
        .find(|(name, _)| name == "authorization")
    else {
        return Credentials::Anonymous;
    };
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Credentials::Malformed;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Credentials::Malformed;
    }
    let Some(decoded) = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
    else {
        return Credentials::Malformed;
    };
    match decoded.split_once(':') {
        Some((user, password)) => Credentials::Password {
            user: user.to_owned(),
            password: password.to_owned(),
        },
        None => Credentials::Malformed,
    }
}

/// The authenticated user name, `None` for anonymous, or `Err` for a rejection.
fn authenticate(credentials: &Credentials, policy: &TokenPolicy) -> Result<Option<String>, ()> {
    match credentials {
        Credentials::Anonymous => Ok(None),
        Credentials::Password { user, password } => match policy.users.get(user) {
            Some(known) if known.password == *password => Ok(Some(user.clone())),
            _ => Err(()),
        },
        Credentials::IdentityToken(token) => match policy.identity_tokens.get(token) {
            Some(user) if policy.users.contains_key(user) => Ok(Some(user.clone())),
            _ => Err(()),
        },
        Credentials::Malformed => Err(()),
    }
}

/// The access claim for `scopes`, and whether every requested action was granted.
fn grant(
    scopes: &[String],
    user: Option<&str>,
    policy: &TokenPolicy,
) -> (Vec<RepositoryAccess>, bool) {
    let mut access = Vec::new();
    let mut all_granted = true;
    for scope in scopes {
        // `type:name:actions`, where the name may itself contain `:` (a port).
        let parsed = scope
            .split_once(':')
            .and_then(|(kind, rest)| Some((kind, rest.rsplit_once(':')?)));
        let Some((kind, (repository, actions))) = parsed else {
            all_granted = false;
            continue;
        };
        let may_pull = kind == "repository"
            && match user {
                None => policy.anonymous_pull_repositories.contains(repository),
                Some(user) => policy.users.get(user).is_some_and(|user| {
                    user.pull_repositories.contains(repository)
                        || user.pull_repositories.contains(ANY_REPOSITORY)
                }),
            };
        let mut granted = Vec::new();
        for action in actions.split(',').filter(|action| !action.is_empty()) {
            if action == "pull" && may_pull {
                granted.push(action.to_owned());
            } else {
                all_granted = false;
            }
        }
        if kind == "repository" {
            access.push(RepositoryAccess {
                repository: repository.to_owned(),
                actions: granted,
            });
        }
    }
    (access, all_granted)
}

fn error_response(status: u16, message: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: Vec::new(),
        body: json!({ "details": message }).to_string(),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the state from the next assertion.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unix_seconds_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (Howard Hinnant's
/// days-to-civil algorithm), to avoid a date crate for one field.
fn rfc3339_utc(unix_seconds: u64) -> String {
    let days = i64::try_from(unix_seconds / 86_400).expect("a date before year 292277026596");
    let seconds_of_day = unix_seconds % 86_400;
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds_of_day / 3_600,
        seconds_of_day % 3_600 / 60,
        seconds_of_day % 60
    )
}
