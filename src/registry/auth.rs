//! The bearer token flow and the token cache.
//!
//! A registry that wants a token answers 401 with a `Bearer` challenge naming a
//! token endpoint (realm), a service and a scope. We ask the endpoint for a
//! token (GET with Basic credentials or anonymously, or the OAuth2 POST form
//! when we hold an identity token), then retry with `Authorization: Bearer`.
//! Tokens are cached per (registry host, scope, credentials) until shortly
//! before they expire, so one pull's dozens of requests cost one token fetch.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::StreamExt;

use crate::registry::credentials::{Credentials, Secret};
use crate::registry::error::RegistryError;
use crate::registry::www_authenticate;

/// What the token endpoint is told we are.
const CLIENT_ID: &str = "cri-imaged";
/// A token with no `expires_in` is valid for 60 s (Docker token spec).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are dropped this long before they expire, so none expires in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TokenKey {
    registry_host: String,
    scope: String,
    credentials: Credentials,
}

struct CachedToken {
    token: Secret,
    expires_at: Instant,
}

/// Bearer tokens by (registry host, scope, credentials).
#[derive(Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<TokenKey, CachedToken>>,
}

impl TokenCache {
    pub(crate) fn get(
        &self,
        registry_host: &str,
        scope: &str,
        credentials: &Credentials,
    ) -> Option<Secret> {
        let tokens = self.lock();
        let key = TokenKey {
            registry_host: registry_host.to_owned(),
            scope: scope.to_owned(),
            credentials: credentials.clone(),
        };
        tokens
            .get(&key)
            .filter(|cached| cached.expires_at > Instant::now())
            .map(|cached| cached.token.clone())
    }

    fn put(
        &self,
        registry_host: &str,
        scope: &str,
        credentials: &Credentials,
        token: Secret,
        lifetime: Duration,
    ) {
        let mut tokens = self.lock();
        let now = Instant::now();
        // Bounded by dropping what has expired whenever a token is added.
        tokens.retain(|_, cached| cached.expires_at > now);
        tokens.insert(
            TokenKey {
                registry_host: registry_host.to_owned(),
                scope: scope.to_owned(),
                credentials: credentials.clone(),
            },
            CachedToken {
                token,
                expires_at: now + lifetime.saturating_sub(EXPIRY_MARGIN),
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenKey, CachedToken>> {
        self.tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The `Authorization` header value for Basic credentials.
pub(crate) fn basic_header(username: &str, password: &Secret) -> String {
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{}", password.expose()));
    format!("Basic {encoded}")
}

/// Who is asking, for what, when a registry challenges a request.
pub(crate) struct ChallengeContext<'a> {
    pub http: &'a reqwest::Client,
    pub tokens: &'a TokenCache,
    pub registry_host: &'a str,
    pub repository: &'a str,
    pub scope: &'a str,
    pub credentials: &'a Credentials,
    pub token_response_bytes_max: u64,
}

/// Answers a 401 challenge: returns the `Authorization` header to retry with.
pub(crate) async fn answer_challenge(
    context: &ChallengeContext<'_>,
    challenge_header: Option<&str>,
) -> Result<String, RegistryError> {
    let ChallengeContext {
        http,
        tokens,
        registry_host,
        repository,
        scope,
        credentials,
        token_response_bytes_max,
    } = *context;
    let unauthorized = |detail: &str| RegistryError::Unauthorized {
        registry: registry_host.to_owned(),
        repository: repository.to_owned(),
        detail: detail.to_owned(),
    };
    let Some(header) = challenge_header else {
        return Err(unauthorized(
            "it answered 401 without a WWW-Authenticate challenge",
        ));
    };
    let challenges = www_authenticate::parse_www_authenticate(header).map_err(|error| {
        RegistryError::InvalidChallenge {
            registry: registry_host.to_owned(),
            detail: error.to_string(),
        }
    })?;
    let bearer = challenges.iter().find_map(|challenge| match challenge {
        www_authenticate::Challenge::Bearer {
            realm,
            service,
            scope: challenge_scope,
            ..
        } => Some((realm.clone(), service.clone(), challenge_scope.clone())),
        _ => None,
    });
    let has_basic = challenges
        .iter()
        .any(|challenge| matches!(challenge, www_authenticate::Challenge::Basic { .. }));

    if let Some((realm, service, challenge_scope)) = bearer {
        if let Credentials::RegistryToken(_) = credentials {
            return Err(unauthorized("the registry token was rejected"));
        }
        // The registry's own scope wins when it names one (it may ask for more
        // than pull); ours is the fallback.
        let scope = challenge_scope.unwrap_or_else(|| scope.to_owned());
        let (token, lifetime) = fetch_token(
            http,
            &realm,
            service.as_deref(),
            &scope,
            credentials,
            token_response_bytes_max,
        )
        .await
        .map_err(|error| match error {
            TokenFetchError::Refused => unauthorized(match credentials {
                Credentials::Anonymous => "anonymous access is not allowed",
                _ => "the token endpoint refused the credentials",
            }),
            TokenFetchError::Registry(error) => error,
        })?;
        tokens.put(registry_host, &scope, credentials, token.clone(), lifetime);
        return Ok(format!("Bearer {}", token.expose()));
    }
    if has_basic {
        return match credentials {
            Credentials::UsernamePassword { username, password } => {
                Ok(basic_header(username, password))
            }
            Credentials::IdentityToken { username, token } => Ok(basic_header(username, token)),
            Credentials::RegistryToken(_) => Err(unauthorized(
                "the registry wants basic credentials, not a bearer token",
            )),
            Credentials::Anonymous => Err(unauthorized("authentication is required")),
        };
    }
    Err(unauthorized(
        "it offered no authentication scheme this client supports",
    ))
}

enum TokenFetchError {
    /// 401/403 from the token endpoint: the credentials are not good enough.
    Refused,
    Registry(RegistryError),
}

/// Fetches a token: the OAuth2 POST form for identity tokens (falling back to
/// GET when the endpoint does not speak it, as Docker does), GET otherwise.
async fn fetch_token(
    http: &reqwest::Client,
    realm: &str,
    service: Option<&str>,
    scope: &str,
    credentials: &Credentials,
    token_response_bytes_max: u64,
) -> Result<(Secret, Duration), TokenFetchError> {
    let invalid = |detail: String| {
        TokenFetchError::Registry(RegistryError::TokenResponseInvalid {
            realm: strip_query(realm),
            detail,
        })
    };
    if let Credentials::IdentityToken { token, .. } = credentials {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", token.expose()),
            ("client_id", CLIENT_ID),
            ("scope", scope),
        ];
        if let Some(service) = service {
            form.push(("service", service));
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = http
            .post(realm)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|error| invalid(format!("request failed: {}", describe_reqwest(&error))))?;
        match response.status().as_u16() {
            // Endpoints without the OAuth2 form answer 404 or 405: fall back to GET.
            404 | 405 => {}
            401 | 403 => return Err(TokenFetchError::Refused),
            status if (200..300).contains(&status) => {
                return parse_token_response(response, token_response_bytes_max)
                    .await
                    .map_err(invalid);
            }
            status => return Err(invalid(format!("status {status}"))),
        }
    }
    let url = www_authenticate::token_request_url(realm, service, &[scope.to_owned()])
        .map_err(|error| invalid(error.to_string()))?;
    let mut request = http.get(url);
    match credentials {
        Credentials::UsernamePassword { username, password } => {
            request = request.header("Authorization", basic_header(username, password));
        }
        Credentials::IdentityToken { username, token } => {
            request = request.header("Authorization", basic_header(username, token));
        }
        Credentials::Anonymous | Credentials::RegistryToken(_) => {}
    }
    let response = request
        .send()
        .await
        .map_err(|error| invalid(format!("request failed: {}", describe_reqwest(&error))))?;
    match response.status().as_u16() {
        401 | 403 => Err(TokenFetchError::Refused),
        status if (200..300).contains(&status) => {
            parse_token_response(response, token_response_bytes_max)
                .await
                .map_err(invalid)
        }
        status => Err(invalid(format!("status {status}"))),
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

async fn parse_token_response(
    response: reqwest::Response,
    token_response_bytes_max: u64,
) -> Result<(Secret, Duration), String> {
    let body = read_bounded(response, token_response_bytes_max)
        .await
        .map_err(|error| match error {
            BoundedReadError::TooLarge => {
                format!("over the {token_response_bytes_max}-byte limit")
            }
            BoundedReadError::Transport(detail) => detail,
        })?;
    let parsed: TokenResponse = serde_json::from_slice(&body)
        .map_err(|error| format!("not the expected JSON ({error})"))?;
    let token = parsed
        .token
        .filter(|token| !token.is_empty())
        .or(parsed.access_token.filter(|token| !token.is_empty()))
        .ok_or_else(|| "no token or access_token in it".to_owned())?;
    let lifetime = parsed
        .expires_in
        .filter(|seconds| *seconds > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    Ok((Secret::new(token), lifetime))
}

pub(crate) enum BoundedReadError {
    TooLarge,
    Transport(String),
}

/// Reads a response body, failing as soon as it passes `limit_bytes`.
pub(crate) async fn read_bounded(
    response: reqwest::Response,
    limit_bytes: u64,
) -> Result<Vec<u8>, BoundedReadError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit_bytes)
    {
        return Err(BoundedReadError::TooLarge);
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| BoundedReadError::Transport(describe_reqwest(&error)))?;
        if body.len() as u64 + chunk.len() as u64 > limit_bytes {
            return Err(BoundedReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error as text without its URL (whose query may carry a token):
/// its kind, then its causes.
pub(crate) fn describe_reqwest(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_redirect() {
        "redirect failed"
    } else if error.is_body() || error.is_decode() {
        "reading the response failed"
    } else if error.is_request() {
        "request failed"
    } else {
        "http error"
    }
    .to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A URL without its query string and fragment, safe to print.
pub(crate) fn strip_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or_default().to_owned()
}
