//! Pushes built images to a [`TestRegistry`] through the distribution push
//! API, the way `docker push` does, and deletes blobs and manifests for tests
//! that need a registry to lose something.
//!
//! Blobs are uploaded monolithically (`POST …/blobs/uploads/`, then `PUT
//! <location>&digest=…`), after a `HEAD` that skips blobs the repository
//! already has. Manifests are `PUT` with their media type as `Content-Type`;
//! an index is pushed after every manifest it lists, since distribution 2.8
//! refuses an index whose children are missing.
//!
//! The HTTP client is ureq (blocking, no async runtime), so the pusher also
//! works when called from inside a `#[tokio::test]`.

use std::fmt;

use super::image_builder::{BuiltImage, BuiltIndex, IndexChild, sha256_digest};
use super::server::TestRegistry;
use super::token_server::{RepositoryAccess, TokenMinter};

/// How a [`Pusher`] authenticates.
#[derive(Clone)]
pub enum PushAuth {
    Anonymous,
    Basic {
        user: String,
        password: String,
    },
    Bearer {
        token: String,
    },
    /// Mints a `pull,push` token for each repository, outside the token
    /// server's request counters.
    MintedToken {
        minter: TokenMinter,
    },
}

/// A failed push or delete, with the request that failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PushError {
    Transport {
        method: &'static str,
        url: String,
        source: ureq::Error,
    },
    UnexpectedStatus {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    MissingUploadLocation {
        url: String,
    },
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
    },
}

/// Pushes to one registry.
pub struct Pusher {
    agent: ureq::Agent,
    base_url: String,
    auth: PushAuth,
}

impl Pusher {
    /// A pusher that authenticates the way `registry` expects: anonymous,
    /// its htpasswd user, or tokens minted by its token server.
    pub fn new(registry: &TestRegistry) -> Pusher {
        let auth = match &registry.options().auth {
            super::server::RegistryAuth::Anonymous => PushAuth::Anonymous,
            super::server::RegistryAuth::Htpasswd { user, password } => PushAuth::Basic {
                user: user.clone(),
                password: password.clone(),
            },
            super::server::RegistryAuth::Token { minter, .. } => PushAuth::MintedToken {
                minter: minter.clone(),
            },
        };
        Pusher {
            agent: registry.http_agent(),
            base_url: registry.base_url(),
            auth,
        }
    }

    pub fn with_auth(mut self, auth: PushAuth) -> Pusher {
        self.auth = auth;
        self
    }

    pub fn with_basic_auth(self, user: &str, password: &str) -> Pusher {
        self.with_auth(PushAuth::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    pub fn with_bearer_token(self, token: &str) -> Pusher {
        self.with_auth(PushAuth::Bearer {
            token: token.to_owned(),
        })
    }

    /// Pushes the config, the layers and the manifest, tagged `tag`.
    pub fn push_image(
        &self,
        repository: &str,
        image: &BuiltImage,
        tag: &str,
    ) -> Result<(), PushError> {
        self.push_image_blobs(repository, image)?;
        self.push_manifest(
            repository,
            tag,
            &image.manifest_media_type,
            &image.manifest_bytes,
        )
        .map(drop)
    }

    /// Pushes the image with its manifest addressed only by digest (no tag).
    pub fn push_image_by_digest(
        &self,
        repository: &str,
        image: &BuiltImage,
    ) -> Result<(), PushError> {
        self.push_image_blobs(repository, image)?;
        self.push_manifest(
            repository,
            &image.manifest_digest,
            &image.manifest_media_type,
            &image.manifest_bytes,
        )
        .map(drop)
    }

    /// Pushes every image and nested index by digest, then the index, tagged `tag`.
    pub fn push_index(
        &self,
        repository: &str,
        index: &BuiltIndex,
        tag: &str,
    ) -> Result<(), PushError> {
        self.push_index_children(repository, index)?;
        self.push_manifest(repository, tag, &index.media_type, &index.bytes)
            .map(drop)
    }

    pub fn push_index_by_digest(
        &self,
        repository: &str,
        index: &BuiltIndex,
    ) -> Result<(), PushError> {
        self.push_index_children(repository, index)?;
        self.push_manifest(repository, &index.digest, &index.media_type, &index.bytes)
            .map(drop)
    }

    /// Uploads `bytes` unless the repository already has them; returns the digest.
    pub fn push_blob(&self, repository: &str, bytes: &[u8]) -> Result<String, PushError> {
        let digest = sha256_digest(bytes);
        if self.blob_exists(repository, &digest)? {
            return Ok(digest);
        }
        let start_url = format!("{}/v2/{repository}/blobs/uploads/", self.base_url);
        let response = self
            .authorized(self.agent.post(&start_url), repository)
            .send_empty()
            .map_err(|source| transport("POST", &start_url, source))?;
        let response = expect_status("POST", &start_url, response, &[202])?;
        let location = response
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| PushError::MissingUploadLocation {
                url: start_url.clone(),
            })?;
        // The location carries upload state in its query; the digest is appended.
        let location = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base_url)
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let finish_url = format!("{location}{separator}digest={digest}");
        let response = self
            .authorized(self.agent.put(&finish_url), repository)
            .header("Content-Type", "application/octet-stream")
            .send(bytes)
            .map_err(|source| transport("PUT", &finish_url, source))?;
        expect_status("PUT", &finish_url, response, &[201])?;
        Ok(digest)
    }

    pub fn blob_exists(&self, repository: &str, digest: &str) -> Result<bool, PushError> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base_url);
        let response = self
            .authorized(self.agent.head(&url), repository)
            .call()
            .map_err(|source| transport("HEAD", &url, source))?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => expect_status("HEAD", &url, response, &[200, 404]).map(|_| false),
        }
    }

    /// `PUT /v2/<repository>/manifests/<reference>`; returns the
    /// `Docker-Content-Digest` the registry answered, after checking it.
    pub fn push_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, PushError> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base_url);
        let response = self
            .authorized(self.agent.put(&url), repository)
            .header("Content-Type", media_type)
            .send(bytes)
            .map_err(|source| transport("PUT", &url, source))?;
        let response = expect_status("PUT", &url, response, &[201])?;
        let expected = sha256_digest(bytes);
        let actual = response
            .headers()
            .get("docker-content-digest")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if actual != expected {
            return Err(PushError::DigestMismatch {
                url,
                expected,
                actual,
            });
        }
        Ok(actual)
    }

    /// Removes the blob from `repository`: later `GET`/`HEAD` of it there
    /// answer `404 BLOB_UNKNOWN`. The registry keeps the bytes on disk until a
    /// garbage collection, but no repository serves them any more.
    pub fn delete_blob(&self, repository: &str, digest: &str) -> Result<(), PushError> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base_url);
        self.delete(&url, repository)
    }

    /// Removes a manifest by digest, and with it every tag that points at it.
    pub fn delete_manifest(&self, repository: &str, digest: &str) -> Result<(), PushError> {
        let url = format!("{}/v2/{repository}/manifests/{digest}", self.base_url);
        self.delete(&url, repository)
    }

    fn delete(&self, url: &str, repository: &str) -> Result<(), PushError> {
        let response = self
            .authorized(self.agent.delete(url), repository)
            .call()
            .map_err(|source| transport("DELETE", url, source))?;
        expect_status("DELETE", url, response, &[202]).map(drop)
    }

    fn push_image_blobs(&self, repository: &str, image: &BuiltImage) -> Result<(), PushError> {
        for layer in &image.layers {
            self.push_blob(repository, &layer.bytes)?;
        }
        self.push_blob(repository, &image.config_bytes)?;
        Ok(())
    }

    fn push_index_children(&self, repository: &str, index: &BuiltIndex) -> Result<(), PushError> {
        for child in &index.children {
            match child {
                IndexChild::Image(image) => self.push_image_by_digest(repository, image)?,
                IndexChild::Index(nested) => self.push_index_by_digest(repository, nested)?,
            }
        }
        Ok(())
    }

    fn authorized<B>(
        &self,
        request: ureq::RequestBuilder<B>,
        repository: &str,
    ) -> ureq::RequestBuilder<B> {
        match &self.auth {
            PushAuth::Anonymous => request,
            PushAuth::Basic { user, password } => {
                use base64::Engine as _;
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                request.header("Authorization", format!("Basic {encoded}"))
            }
            PushAuth::Bearer { token } => {
                request.header("Authorization", format!("Bearer {token}"))
            }
            PushAuth::MintedToken { minter } => {
                let token = minter.mint_token(
                    "cri-imaged-test-pusher",
                    &[RepositoryAccess::new(
                        repository,
                        &["pull", "push", "delete"],
                    )],
                );
                request.header("Authorization", format!("Bearer {token}"))
            }
        }
    }
}

impl fmt::Display for PushError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Transport {
                method,
                url,
                source,
            } => write!(formatter, "{method} {url} failed: {source}"),
            PushError::UnexpectedStatus {
                method,
                url,
                status,
                body,
            } => write!(formatter, "{method} {url} answered {status}: {body}"),
            PushError::MissingUploadLocation { url } => {
                write!(formatter, "POST {url} answered without a Location header")
            }
            PushError::DigestMismatch {
                url,
                expected,
                actual,
            } => write!(
                formatter,
                "PUT {url} answered Docker-Content-Digest {actual:?}, expected {expected}"
            ),
        }
    }
}

impl std::error::Error for PushError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PushError::Transport { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn transport(method: &'static str, url: &str, source: ureq::Error) -> PushError {
    PushError::Transport {
        method,
        url: url.to_owned(),
        source,
    }
}

fn expect_status(
    method: &'static str,
    url: &str,
    mut response: ureq::http::Response<ureq::Body>,
    expected: &[u16],
) -> Result<ureq::http::Response<ureq::Body>, PushError> {
    let status = response.status().as_u16();
    if expected.contains(&status) {
        return Ok(response);
    }
    let body = response.body_mut().read_to_string().unwrap_or_default();
    Err(PushError::UnexpectedStatus {
        method,
        url: url.to_owned(),
        status,
        body,
    })
}
