//! Image references (`[domain/]path[:tag][@digest]`) parsed and normalized the
//! way distribution/reference does it (`ParseNormalizedNamed`, `ParseDockerRef`,
//! `ParseAnyReference`), so that names given to us by the kubelet and names we
//! store and report back in `repo_tags`/`repo_digests` agree with containerd's.
//!
//! The parser is hand-written and works on bytes: it runs in time linear in
//! the input, allocates only for the parts it keeps, and never panics. Every
//! [`ImageReference`] it returns is fully qualified (`docker.io/library/...`
//! for Docker Hub) and prints back to text that parses to the same value.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use super::bounded_echo;
use super::digest::{Digest, DigestError};

/// A fully qualified, validated image reference.
///
/// `domain` is never empty, `path` is one or more lowercase path components,
/// and on `docker.io` the path always has at least two components (a single
/// component gets the `library/` prefix while parsing).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ImageReference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// What a CRI `ImageSpec.image` may hold: a reference to pull or look up, or
/// an image id given as a digest.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AnyReference {
    Named(ImageReference),
    Digest(Digest),
}

/// Why a string is not a valid image reference. Every variant carries the
/// offending part, cut to a bounded length.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReferenceError {
    #[error("empty image reference")]
    Empty,
    /// Text that has no repository name before its tag or digest, like
    /// `:latest` or `@sha256:...`.
    #[error("invalid reference format {input:?}: no repository name")]
    InvalidFormat { input: String },
    #[error("repository path is {length} characters long, the maximum is {max}")]
    NameTooLong { length: usize, max: usize },
    #[error("invalid registry domain {domain:?}")]
    InvalidDomain { domain: String },
    #[error("invalid port in registry domain {domain:?}")]
    InvalidPort { domain: String },
    #[error("invalid repository path component {component:?}")]
    InvalidPathComponent { component: String },
    #[error("repository path {name:?} has an empty component")]
    EmptyPathComponent { name: String },
    #[error("repository name {name:?} must be lowercase")]
    UppercaseRepository { name: String },
    #[error("invalid tag {tag:?}")]
    InvalidTag { tag: String },
    #[error("invalid digest {digest:?} in image reference")]
    InvalidDigest {
        digest: String,
        #[source]
        source: DigestError,
    },
    #[error("invalid repository name {input:?}: cannot specify 64-byte hexadecimal strings")]
    HexIdentifierAsName { input: String },
}

/// The registry that names without a domain refer to.
const DEFAULT_DOMAIN: &str = "docker.io";
/// An old name of [`DEFAULT_DOMAIN`], rewritten to it while parsing.
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The Docker Hub namespace of official images (`ubuntu` is `library/ubuntu`).
const OFFICIAL_REPOSITORY_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
/// distribution/reference limits the path, without the domain, to 255 bytes.
/// A valid path is ASCII, so bytes and characters are the same count.
const PATH_BYTES_MAX: usize = 255;
const TAG_BYTES_MAX: usize = 128;
/// A bare image id: 64 lowercase hex characters, the hex of a sha256 digest.
const HEX_IDENTIFIER_BYTES: usize = 64;

impl ImageReference {
    /// Parses a reference like distribution/reference's `ParseNormalizedNamed`:
    /// a name without a domain goes to `docker.io`, `index.docker.io` becomes
    /// `docker.io`, and a single-component `docker.io` path gets `library/`.
    /// The tag and digest are kept as given (both may be present) and no
    /// default tag is added.
    ///
    /// The text before the first `/` is a domain only if it is `localhost` or
    /// contains a `.`, a `:` or an uppercase letter; otherwise it is the first
    /// path component on Docker Hub. The digest starts at the first `@`, and
    /// the tag at the first `:` after the last `/` before that.
    ///
    /// One deliberate difference from distribution: when the first segment is
    /// taken as a domain but is not a valid one (for example `a_b.com/x`),
    /// distribution's regular expression falls back to reading the whole name
    /// as a path with an empty domain. That value has no registry to pull
    /// from, so it is rejected here as [`ReferenceError::InvalidDomain`].
    pub fn parse_normalized(input: &str) -> Result<ImageReference, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        // Only the whole input is checked, as distribution does:
        // `<64 hex>:tag` and `docker.io/library/<64 hex>` are valid names.
        if is_hex_identifier(input) {
            return Err(ReferenceError::HexIdentifierAsName {
                input: bounded_echo(input),
            });
        }
        // Neither the name nor the tag may contain '@', so the first '@'
        // starts the digest. Neither the tag nor the digest may contain '/',
        // so a tag separator can only follow the last '/'.
        let (name_and_tag, digest_text) = match input.split_once('@') {
            Some((name_and_tag, digest_text)) => (name_and_tag, Some(digest_text)),
            None => (input, None),
        };
        let last_segment_start = name_and_tag.rfind('/').map_or(0, |slash| slash + 1);
        let (name, tag_text) = match name_and_tag[last_segment_start..].find(':') {
            Some(offset) => {
                let colon = last_segment_start + offset;
                (&name_and_tag[..colon], Some(&name_and_tag[colon + 1..]))
            }
            None => (name_and_tag, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::InvalidFormat {
                input: bounded_echo(input),
            });
        }

        let (domain, path) = split_docker_domain(name);
        // Checked before anything else about the path so that `Ubuntu` gets
        // the helpful "must be lowercase" rather than "invalid component".
        if path.chars().any(char::is_uppercase) {
            return Err(ReferenceError::UppercaseRepository {
                name: bounded_echo(&path),
            });
        }
        validate_domain(domain)?;
        if path.len() > PATH_BYTES_MAX {
            return Err(ReferenceError::NameTooLong {
                length: path.len(),
                max: PATH_BYTES_MAX,
            });
        }
        validate_path(&path)?;
        let tag = match tag_text {
            Some(tag_text) => {
                validate_tag(tag_text)?;
                Some(tag_text.to_owned())
            }
            None => None,
        };
        let digest = match digest_text {
            Some(digest_text) => Some(parse_reference_digest(digest_text)?),
            None => None,
        };
        Ok(ImageReference {
            domain: domain.to_owned(),
            path,
            tag,
            digest,
        })
    }

    /// Parses like distribution/reference's `ParseDockerRef`: the result of
    /// [`parse_normalized`](Self::parse_normalized) without its tag when a
    /// digest is present (the digest decides what is pulled), and with tag
    /// `latest` when neither is present. Pulls and stored names use this form.
    pub fn parse_docker_ref(input: &str) -> Result<ImageReference, ReferenceError> {
        ImageReference::parse_normalized(input).map(|reference| reference.normalized())
    }

    /// The form [`parse_docker_ref`](Self::parse_docker_ref) gives for this
    /// reference's printed form: the tag dropped when there is a digest,
    /// `latest` added when there is neither. Idempotent.
    pub fn normalized(&self) -> ImageReference {
        let mut normalized = self.clone();
        if normalized.digest.is_some() {
            normalized.tag = None;
        } else if normalized.tag.is_none() {
            normalized.tag = Some(DEFAULT_TAG.to_owned());
        }
        normalized
    }

    /// The registry, for example `docker.io`, `localhost:5000` or `[::1]:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry, for example `library/ubuntu`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The full repository name, `domain/path`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The short name people type: `ubuntu` for `docker.io/library/ubuntu`,
    /// `foo/bar` for `docker.io/foo/bar`, and the full name for any other
    /// domain.
    ///
    /// Unlike distribution's `FamiliarName`, this never shortens a name into
    /// text that would parse to a different one: `docker.io/localhost/x` and
    /// `docker.io/foo.bar/x` keep their domain (the short forms would read as
    /// registries), and `docker.io/library/<64 hex>` keeps `library/` (the
    /// bare hex is refused as a name). So `parse_normalized` of
    /// [`familiar_string`](Self::familiar_string) always gives `self` back.
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.name();
        }
        if let Some(official_name) = self.path.strip_prefix(OFFICIAL_REPOSITORY_PREFIX)
            && !official_name.contains('/')
            && !is_hex_identifier(official_name)
        {
            return official_name.to_owned();
        }
        let first_component = self.path.split('/').next().unwrap_or_default();
        if looks_like_domain(first_component) {
            return self.name();
        }
        self.path.clone()
    }

    /// [`familiar_name`](Self::familiar_name) followed by `:tag` and
    /// `@digest` when present, for showing to people.
    pub fn familiar_string(&self) -> String {
        let mut text = self.familiar_name();
        self.push_tag_and_digest(&mut text);
        text
    }

    /// This reference with `tag` instead of its tag; the digest is kept, as
    /// in distribution's `WithTag`.
    pub fn with_tag(&self, tag: &str) -> Result<ImageReference, ReferenceError> {
        validate_tag(tag)?;
        Ok(ImageReference {
            tag: Some(tag.to_owned()),
            ..self.clone()
        })
    }

    /// `name@digest`: this repository pinned to `digest`, without a tag.
    pub fn with_digest(&self, digest: Digest) -> ImageReference {
        ImageReference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// `domain/path:tag` when there is a tag, the form of a CRI `repo_tags`
    /// entry.
    pub fn tagged_name(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|tag| format!("{}:{}", self.name(), tag))
    }

    /// `domain/path@digest` when there is a digest, the form of a CRI
    /// `repo_digests` entry.
    pub fn digested_name(&self) -> Option<String> {
        self.digest
            .as_ref()
            .map(|digest| format!("{}@{}", self.name(), digest))
    }

    fn push_tag_and_digest(&self, text: &mut String) {
        if let Some(tag) = &self.tag {
            text.push(':');
            text.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            text.push('@');
            text.push_str(digest.as_str());
        }
    }
}

impl fmt::Display for ImageReference {
    /// The full form, `domain/path[:tag][@digest]`, printing both the tag and
    /// the digest when both are present, like distribution's `String()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.name();
        self.push_tag_and_digest(&mut text);
        f.write_str(&text)
    }
}

impl FromStr for ImageReference {
    type Err = ReferenceError;

    /// Same as [`ImageReference::parse_normalized`].
    fn from_str(input: &str) -> Result<ImageReference, ReferenceError> {
        ImageReference::parse_normalized(input)
    }
}

impl AnyReference {
    /// Parses like distribution/reference's `ParseAnyReference`: 64 lowercase
    /// hex characters are the sha256 digest with that hex, a valid
    /// `algorithm:hex` digest is that digest, and anything else goes to
    /// [`ImageReference::parse_normalized`].
    ///
    /// As in distribution, text that looks like a digest but is not a valid
    /// one is *not* an error here: `sha256:abc` parses as the Docker Hub name
    /// `docker.io/library/sha256` with tag `abc`, and `blake3:<hex>` as
    /// `docker.io/library/blake3` with the hex as its tag. Callers that
    /// expect an image id must check for [`AnyReference::Digest`].
    pub fn parse(input: &str) -> Result<AnyReference, ReferenceError> {
        if is_hex_identifier(input) {
            let digest_text = format!("sha256:{input}");
            // Cannot fail: the text is "sha256:" and 64 lowercase hex.
            return parse_reference_digest(&digest_text).map(AnyReference::Digest);
        }
        if let Ok(digest) = Digest::parse(input) {
            return Ok(AnyReference::Digest(digest));
        }
        ImageReference::parse_normalized(input).map(AnyReference::Named)
    }
}

impl fmt::Display for AnyReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyReference::Named(reference) => fmt::Display::fmt(reference, f),
            AnyReference::Digest(digest) => fmt::Display::fmt(digest, f),
        }
    }
}

/// distribution's `splitDockerDomain`: picks the domain and the path (with the
/// `library/` prefix applied) out of a name that has no tag or digest.
fn split_docker_domain(name: &str) -> (&str, String) {
    let (domain, remainder) = match name.split_once('/') {
        Some((first_segment, rest)) if looks_like_domain(first_segment) => {
            if first_segment == LEGACY_DEFAULT_DOMAIN {
                (DEFAULT_DOMAIN, rest)
            } else {
                (first_segment, rest)
            }
        }
        // Without a '/', even `localhost:5000` is a Docker Hub name with a
        // tag; it must not be read as a host and port.
        _ => (DEFAULT_DOMAIN, name),
    };
    let path = if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        format!("{OFFICIAL_REPOSITORY_PREFIX}{remainder}")
    } else {
        remainder.to_owned()
    };
    (domain, path)
}

/// Whether the text before the first '/' names a registry rather than a
/// Docker Hub namespace. Docker Hub namespaces are lowercase and have no '.'
/// or ':', so anything else must be a host, and `localhost` is reserved.
fn looks_like_domain(first_segment: &str) -> bool {
    first_segment == "localhost"
        || first_segment.contains(['.', ':'])
        || first_segment.chars().any(char::is_uppercase)
}

/// `host [":" port]`, where host is dotted domain components or a bracketed
/// IPv6 address and port is one or more digits. Port numbers are not range
/// checked, as in distribution.
fn validate_domain(domain: &str) -> Result<(), ReferenceError> {
    let invalid_domain = || ReferenceError::InvalidDomain {
        domain: bounded_echo(domain),
    };
    let port = if let Some(bracketed) = domain.strip_prefix('[') {
        let (address, after_address) = bracketed.split_once(']').ok_or_else(invalid_domain)?;
        // The character check keeps out what the grammar forbids but
        // `Ipv6Addr` accepts (embedded IPv4 dots); the parse rejects what the
        // grammar's loose `[a-fA-F0-9:]+` lets through (`[:::]`). Zones
        // (`%eth0`) fail both.
        let is_grammar = !address.is_empty()
            && address
                .bytes()
                .all(|byte| byte.is_ascii_hexdigit() || byte == b':');
        if !is_grammar || address.parse::<Ipv6Addr>().is_err() {
            return Err(invalid_domain());
        }
        if after_address.is_empty() {
            None
        } else {
            Some(after_address.strip_prefix(':').ok_or_else(invalid_domain)?)
        }
    } else {
        let (host, port) = match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        };
        if !host.split('.').all(is_domain_component) {
            return Err(invalid_domain());
        }
        port
    };
    match port {
        Some(port) if port.is_empty() || !port.bytes().all(|byte| byte.is_ascii_digit()) => {
            Err(ReferenceError::InvalidPort {
                domain: bounded_echo(domain),
            })
        }
        _ => Ok(()),
    }
}

/// `[a-zA-Z0-9]` or `[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'-')
        }
        _ => false,
    }
}

fn validate_path(path: &str) -> Result<(), ReferenceError> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err(ReferenceError::EmptyPathComponent {
                name: bounded_echo(path),
            });
        }
        if !is_path_component(component) {
            return Err(ReferenceError::InvalidPathComponent {
                component: bounded_echo(component),
            });
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: runs of lowercase letters and digits
/// joined by exactly one of `.`, `_`, `__` or a run of `-`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let mut index = 0;
    loop {
        let run_start = index;
        while bytes
            .get(index)
            .is_some_and(|byte| is_lowercase_alphanumeric(*byte))
        {
            index += 1;
        }
        // An empty run means a leading or trailing separator, two separators
        // in a row, or a byte outside the grammar.
        if index == run_start {
            return false;
        }
        if index == bytes.len() {
            return true;
        }
        let separator_start = index;
        while bytes
            .get(index)
            .is_some_and(|byte| matches!(byte, b'.' | b'_' | b'-'))
        {
            index += 1;
        }
        let separator = &bytes[separator_start..index];
        let is_separator = matches!(separator, b"." | b"_" | b"__")
            || (!separator.is_empty() && separator.iter().all(|byte| *byte == b'-'));
        if !is_separator {
            return false;
        }
    }
}

fn is_lowercase_alphanumeric(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit()
}

/// `[\w][\w.-]{0,127}` with `\w` = `[A-Za-z0-9_]`.
fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let bytes = tag.as_bytes();
    let is_word = |byte: &u8| byte.is_ascii_alphanumeric() || *byte == b'_';
    let is_valid = match bytes.split_first() {
        Some((first, rest)) => {
            bytes.len() <= TAG_BYTES_MAX
                && is_word(first)
                && rest
                    .iter()
                    .all(|byte| is_word(byte) || *byte == b'.' || *byte == b'-')
        }
        None => false,
    };
    if is_valid {
        Ok(())
    } else {
        Err(ReferenceError::InvalidTag {
            tag: bounded_echo(tag),
        })
    }
}

fn parse_reference_digest(digest_text: &str) -> Result<Digest, ReferenceError> {
    Digest::parse(digest_text).map_err(|source| ReferenceError::InvalidDigest {
        digest: bounded_echo(digest_text),
        source,
    })
}

/// `[a-f0-9]{64}`: a bare image id.
fn is_hex_identifier(text: &str) -> bool {
    text.len() == HEX_IDENTIFIER_BYTES
        && text
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::DigestAlgorithm;

    const HEX_64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    enum Expect {
        /// What `parse_normalized` prints, what `parse_docker_ref` prints, and
        /// the familiar string of the `parse_normalized` result.
        Valid {
            display: String,
            docker_ref: String,
            familiar: String,
        },
        Invalid(ReferenceError),
    }

    fn valid(
        display: impl Into<String>,
        docker_ref: impl Into<String>,
        familiar: impl Into<String>,
    ) -> Expect {
        Expect::Valid {
            display: display.into(),
            docker_ref: docker_ref.into(),
            familiar: familiar.into(),
        }
    }

    fn invalid_component(component: &str) -> Expect {
        Expect::Invalid(ReferenceError::InvalidPathComponent {
            component: component.to_owned(),
        })
    }

    fn empty_component(name: &str) -> Expect {
        Expect::Invalid(ReferenceError::EmptyPathComponent {
            name: name.to_owned(),
        })
    }

    fn invalid_domain(domain: &str) -> Expect {
        Expect::Invalid(ReferenceError::InvalidDomain {
            domain: domain.to_owned(),
        })
    }

    fn invalid_port(domain: &str) -> Expect {
        Expect::Invalid(ReferenceError::InvalidPort {
            domain: domain.to_owned(),
        })
    }

    fn invalid_tag(tag: &str) -> Expect {
        Expect::Invalid(ReferenceError::InvalidTag {
            tag: bounded_echo(tag),
        })
    }

    fn uppercase(name: &str) -> Expect {
        Expect::Invalid(ReferenceError::UppercaseRepository {
            name: name.to_owned(),
        })
    }

    fn invalid_digest(digest: &str) -> Expect {
        let source = Digest::parse(digest).expect_err("the test case must hold an invalid digest");
        Expect::Invalid(ReferenceError::InvalidDigest {
            digest: bounded_echo(digest),
            source,
        })
    }

    fn too_long(length: usize) -> Expect {
        Expect::Invalid(ReferenceError::NameTooLong {
            length,
            max: PATH_BYTES_MAX,
        })
    }

    /// Every reference case: input, then the expected outcome.
    fn cases() -> Vec<(String, Expect)> {
        use Expect::Invalid;
        let d = format!("sha256:{HEX_64}");
        let hex_128: String = "0123456789abcdef".repeat(8);
        let d512 = format!("sha512:{hex_128}");
        let path_255 = "a".repeat(255);
        let path_256 = "a".repeat(256);
        let long_domain = format!("{0}.{0}.{0}.com", "d".repeat(63));
        let tag_128 = format!("t{}", "x".repeat(127));
        let tag_129 = format!("t{}", "x".repeat(128));
        let hub_247 = "h".repeat(247);
        let hub_248 = "h".repeat(248);
        let huge = "a".repeat(1 << 20);

        let mut cases: Vec<(String, Expect)> = vec![
            // Docker Hub normalization.
            (
                "busybox".into(),
                valid(
                    "docker.io/library/busybox",
                    "docker.io/library/busybox:latest",
                    "busybox",
                ),
            ),
            (
                "ubuntu:22.04".into(),
                valid(
                    "docker.io/library/ubuntu:22.04",
                    "docker.io/library/ubuntu:22.04",
                    "ubuntu:22.04",
                ),
            ),
            (
                "docker.io/ubuntu".into(),
                valid(
                    "docker.io/library/ubuntu",
                    "docker.io/library/ubuntu:latest",
                    "ubuntu",
                ),
            ),
            (
                "docker.io/library/ubuntu".into(),
                valid(
                    "docker.io/library/ubuntu",
                    "docker.io/library/ubuntu:latest",
                    "ubuntu",
                ),
            ),
            (
                "index.docker.io/library/ubuntu".into(),
                valid(
                    "docker.io/library/ubuntu",
                    "docker.io/library/ubuntu:latest",
                    "ubuntu",
                ),
            ),
            (
                "index.docker.io/ubuntu:1".into(),
                valid(
                    "docker.io/library/ubuntu:1",
                    "docker.io/library/ubuntu:1",
                    "ubuntu:1",
                ),
            ),
            (
                "library/ubuntu".into(),
                valid(
                    "docker.io/library/ubuntu",
                    "docker.io/library/ubuntu:latest",
                    "ubuntu",
                ),
            ),
            (
                "foo/bar".into(),
                valid("docker.io/foo/bar", "docker.io/foo/bar:latest", "foo/bar"),
            ),
            (
                "docker.io/foo/bar".into(),
                valid("docker.io/foo/bar", "docker.io/foo/bar:latest", "foo/bar"),
            ),
            (
                "a/b/c/d/e".into(),
                valid(
                    "docker.io/a/b/c/d/e",
                    "docker.io/a/b/c/d/e:latest",
                    "a/b/c/d/e",
                ),
            ),
            (
                "library/a/b".into(),
                valid(
                    "docker.io/library/a/b",
                    "docker.io/library/a/b:latest",
                    "library/a/b",
                ),
            ),
            (
                "registry-1.docker.io/x".into(),
                valid(
                    "registry-1.docker.io/x",
                    "registry-1.docker.io/x:latest",
                    "registry-1.docker.io/x",
                ),
            ),
            (
                "Docker.io/x".into(),
                valid("Docker.io/x", "Docker.io/x:latest", "Docker.io/x"),
            ),
            (
                "docker.io".into(),
                valid(
                    "docker.io/library/docker.io",
                    "docker.io/library/docker.io:latest",
                    "docker.io",
                ),
            ),
            (
                "index.docker.io".into(),
                valid(
                    "docker.io/library/index.docker.io",
                    "docker.io/library/index.docker.io:latest",
                    "index.docker.io",
                ),
            ),
            (
                "quay.io/a/b".into(),
                valid("quay.io/a/b", "quay.io/a/b:latest", "quay.io/a/b"),
            ),
            // Domain detection.
            (
                "localhost/a".into(),
                valid("localhost/a", "localhost/a:latest", "localhost/a"),
            ),
            (
                "localhost:5000/a".into(),
                valid(
                    "localhost:5000/a",
                    "localhost:5000/a:latest",
                    "localhost:5000/a",
                ),
            ),
            (
                "localhost:5000".into(),
                valid(
                    "docker.io/library/localhost:5000",
                    "docker.io/library/localhost:5000",
                    "localhost:5000",
                ),
            ),
            (
                "localhost".into(),
                valid(
                    "docker.io/library/localhost",
                    "docker.io/library/localhost:latest",
                    "localhost",
                ),
            ),
            (
                "Foo/bar".into(),
                valid("Foo/bar", "Foo/bar:latest", "Foo/bar"),
            ),
            (
                "FOO.COM:443/a".into(),
                valid("FOO.COM:443/a", "FOO.COM:443/a:latest", "FOO.COM:443/a"),
            ),
            (
                "127.0.0.1:5000/a/b:v1".into(),
                valid(
                    "127.0.0.1:5000/a/b:v1",
                    "127.0.0.1:5000/a/b:v1",
                    "127.0.0.1:5000/a/b:v1",
                ),
            ),
            (
                "f-o.com/a".into(),
                valid("f-o.com/a", "f-o.com/a:latest", "f-o.com/a"),
            ),
            (
                "example:5000/a".into(),
                valid("example:5000/a", "example:5000/a:latest", "example:5000/a"),
            ),
            (
                "[::1]:5000/a".into(),
                valid("[::1]:5000/a", "[::1]:5000/a:latest", "[::1]:5000/a"),
            ),
            (
                "[2001:DB8::1]/a".into(),
                valid(
                    "[2001:DB8::1]/a",
                    "[2001:DB8::1]/a:latest",
                    "[2001:DB8::1]/a",
                ),
            ),
            // Names that shortening must not turn into a different reference.
            (
                "docker.io/localhost/bar".into(),
                valid(
                    "docker.io/localhost/bar",
                    "docker.io/localhost/bar:latest",
                    "docker.io/localhost/bar",
                ),
            ),
            (
                "docker.io/foo.bar/baz".into(),
                valid(
                    "docker.io/foo.bar/baz",
                    "docker.io/foo.bar/baz:latest",
                    "docker.io/foo.bar/baz",
                ),
            ),
            (
                format!("docker.io/library/{HEX_64}"),
                valid(
                    format!("docker.io/library/{HEX_64}"),
                    format!("docker.io/library/{HEX_64}:latest"),
                    format!("library/{HEX_64}"),
                ),
            ),
            (
                format!("{HEX_64}:tag"),
                valid(
                    format!("docker.io/library/{HEX_64}:tag"),
                    format!("docker.io/library/{HEX_64}:tag"),
                    format!("library/{HEX_64}:tag"),
                ),
            ),
            (
                HEX_64.into(),
                Invalid(ReferenceError::HexIdentifierAsName {
                    input: HEX_64.into(),
                }),
            ),
            // Tags and digests.
            (
                format!("a/b:tag@{d}"),
                valid(
                    format!("docker.io/a/b:tag@{d}"),
                    format!("docker.io/a/b@{d}"),
                    format!("a/b:tag@{d}"),
                ),
            ),
            (
                format!("a/b@{d}"),
                valid(
                    format!("docker.io/a/b@{d}"),
                    format!("docker.io/a/b@{d}"),
                    format!("a/b@{d}"),
                ),
            ),
            (
                format!("example.com/a:1.0@{d}"),
                valid(
                    format!("example.com/a:1.0@{d}"),
                    format!("example.com/a@{d}"),
                    format!("example.com/a:1.0@{d}"),
                ),
            ),
            (
                format!("a@{d512}"),
                valid(
                    format!("docker.io/library/a@{d512}"),
                    format!("docker.io/library/a@{d512}"),
                    format!("a@{d512}"),
                ),
            ),
            (
                "sha256:abc".into(),
                valid(
                    "docker.io/library/sha256:abc",
                    "docker.io/library/sha256:abc",
                    "sha256:abc",
                ),
            ),
            (
                "a:Latest".into(),
                valid(
                    "docker.io/library/a:Latest",
                    "docker.io/library/a:Latest",
                    "a:Latest",
                ),
            ),
            (
                "a:_x".into(),
                valid("docker.io/library/a:_x", "docker.io/library/a:_x", "a:_x"),
            ),
            (
                "a:x.y-z_1".into(),
                valid(
                    "docker.io/library/a:x.y-z_1",
                    "docker.io/library/a:x.y-z_1",
                    "a:x.y-z_1",
                ),
            ),
            (
                format!("a:{tag_128}"),
                valid(
                    format!("docker.io/library/a:{tag_128}"),
                    format!("docker.io/library/a:{tag_128}"),
                    format!("a:{tag_128}"),
                ),
            ),
            (format!("a:{tag_129}"), invalid_tag(&tag_129)),
            ("a:b:c".into(), invalid_tag("b:c")),
            ("a:".into(), invalid_tag("")),
            ("a:.x".into(), invalid_tag(".x")),
            ("a:-x".into(), invalid_tag("-x")),
            ("busybox:la test".into(), invalid_tag("la test")),
            ("a:tag/b".into(), invalid_port("a:tag")),
            (
                format!("a@sha256:{}", &HEX_64[..63]),
                invalid_digest(&format!("sha256:{}", &HEX_64[..63])),
            ),
            (
                format!("a@sha256:{HEX_64}0"),
                invalid_digest(&format!("sha256:{HEX_64}0")),
            ),
            (
                format!("a@sha256:{}", HEX_64.to_uppercase()),
                invalid_digest(&format!("sha256:{}", HEX_64.to_uppercase())),
            ),
            (
                format!("a@blake3:{HEX_64}"),
                invalid_digest(&format!("blake3:{HEX_64}")),
            ),
            (
                "a@md5:d41d8cd98f00b204e9800998ecf8427e".into(),
                invalid_digest("md5:d41d8cd98f00b204e9800998ecf8427e"),
            ),
            ("a@".into(), invalid_digest("")),
            (format!("a:tag@@{d}"), invalid_digest(&format!("@{d}"))),
            (format!("a@{d}@{d}"), invalid_digest(&format!("{d}@{d}"))),
            // No name at all.
            (String::new(), Invalid(ReferenceError::Empty)),
            (
                ":tag".into(),
                Invalid(ReferenceError::InvalidFormat {
                    input: ":tag".into(),
                }),
            ),
            (
                format!("@{d}"),
                Invalid(ReferenceError::InvalidFormat {
                    input: format!("@{d}"),
                }),
            ),
            // Path components.
            (
                "a__b".into(),
                valid(
                    "docker.io/library/a__b",
                    "docker.io/library/a__b:latest",
                    "a__b",
                ),
            ),
            ("a___b".into(), invalid_component("a___b")),
            (
                "a--b".into(),
                valid(
                    "docker.io/library/a--b",
                    "docker.io/library/a--b:latest",
                    "a--b",
                ),
            ),
            (
                "a---b.c_d".into(),
                valid(
                    "docker.io/library/a---b.c_d",
                    "docker.io/library/a---b.c_d:latest",
                    "a---b.c_d",
                ),
            ),
            ("a-".into(), invalid_component("a-")),
            ("-a".into(), invalid_component("-a")),
            ("a..b".into(), invalid_component("a..b")),
            ("a._b".into(), invalid_component("a._b")),
            ("_a".into(), invalid_component("_a")),
            ("a/".into(), empty_component("a/")),
            ("/a".into(), empty_component("/a")),
            ("//".into(), empty_component("//")),
            ("a//b".into(), empty_component("a//b")),
            ("example.com/".into(), empty_component("")),
            ("docker.io/".into(), empty_component("library/")),
            // Case.
            ("foo/Bar".into(), uppercase("foo/Bar")),
            ("UPPER".into(), uppercase("library/UPPER")),
            (
                HEX_64.to_uppercase(),
                uppercase(&format!("library/{}", HEX_64.to_uppercase())),
            ),
            ("foo/Äb".into(), uppercase("foo/Äb")),
            ("ÄBC/x".into(), invalid_domain("ÄBC")),
            // Unicode, whitespace and control characters.
            ("ubüntu".into(), invalid_component("ubüntu")),
            ("例え/a".into(), invalid_component("例え")),
            ("\u{fffd}".into(), invalid_component("\u{fffd}")),
            (" busybox".into(), invalid_component(" busybox")),
            ("busybox ".into(), invalid_component("busybox ")),
            ("busybox\n".into(), invalid_component("busybox\n")),
            ("a\tb".into(), invalid_component("a\tb")),
            ("a\0b".into(), invalid_component("a\0b")),
            // Domains and ports.
            ("[fe80::1%eth0]/a".into(), invalid_domain("[fe80::1%eth0]")),
            (
                "[fe80::1%eth0]:5000/a".into(),
                invalid_domain("[fe80::1%eth0]:5000"),
            ),
            (
                "[::ffff:1.2.3.4]/a".into(),
                invalid_domain("[::ffff:1.2.3.4]"),
            ),
            ("[:::]/a".into(), invalid_domain("[:::]")),
            ("[::1/a".into(), invalid_domain("[::1")),
            ("[::1]x/a".into(), invalid_domain("[::1]x")),
            ("[]/a".into(), invalid_component("[]")),
            ("[::1]:5000".into(), invalid_component("[")),
            ("[::1]:/a".into(), invalid_port("[::1]:")),
            ("localhost:/a".into(), invalid_port("localhost:")),
            ("localhost:abc/a".into(), invalid_port("localhost:abc")),
            (
                "localhost:5000:1/a".into(),
                invalid_port("localhost:5000:1"),
            ),
            ("a_b.com/x".into(), invalid_domain("a_b.com")),
            ("-foo.com/a".into(), invalid_domain("-foo.com")),
            ("foo-.com/a".into(), invalid_domain("foo-.com")),
            ("foo.com./a".into(), invalid_domain("foo.com.")),
            ("foo..com/a".into(), invalid_domain("foo..com")),
            (":5000/a".into(), invalid_domain(":5000")),
            // Length: 255 bytes of path, the domain not counted.
            (
                format!("example.com/{path_255}"),
                valid(
                    format!("example.com/{path_255}"),
                    format!("example.com/{path_255}:latest"),
                    format!("example.com/{path_255}"),
                ),
            ),
            (format!("example.com/{path_256}"), too_long(256)),
            (
                format!("{long_domain}/{path_255}"),
                valid(
                    format!("{long_domain}/{path_255}"),
                    format!("{long_domain}/{path_255}:latest"),
                    format!("{long_domain}/{path_255}"),
                ),
            ),
            // `library/` counts towards the limit.
            (
                hub_247.clone(),
                valid(
                    format!("docker.io/library/{hub_247}"),
                    format!("docker.io/library/{hub_247}:latest"),
                    hub_247.clone(),
                ),
            ),
            (hub_248, too_long(256)),
            (huge, too_long((1 << 20) + OFFICIAL_REPOSITORY_PREFIX.len())),
        ];
        cases.shrink_to_fit();
        cases
    }

    /// Inputs whose `parse_normalized` result must satisfy the round-trip
    /// invariants: every valid case of the table.
    fn valid_inputs() -> Vec<String> {
        cases()
            .into_iter()
            .filter(|(_, expect)| matches!(expect, Expect::Valid { .. }))
            .map(|(input, _)| input)
            .collect()
    }

    fn assert_round_trips(reference: &ImageReference) {
        let normalized = reference.normalized();
        assert_eq!(normalized.normalized(), normalized, "{reference}");
        assert_eq!(
            ImageReference::parse_normalized(&reference.to_string()).as_ref(),
            Ok(reference),
            "display of {reference:?}"
        );
        assert_eq!(
            ImageReference::parse_normalized(&reference.familiar_string()).as_ref(),
            Ok(reference),
            "familiar string of {reference:?}"
        );
        assert_eq!(
            ImageReference::parse_docker_ref(&reference.to_string()),
            Ok(normalized.clone()),
            "{reference}"
        );
        assert_eq!(
            ImageReference::parse_normalized(&normalized.to_string()),
            Ok(normalized),
            "{reference}"
        );
    }

    #[test]
    fn parse_table() {
        let cases = cases();
        for (input, expect) in &cases {
            let parsed = ImageReference::parse_normalized(input);
            let shown_input = bounded_echo(input);
            match expect {
                Expect::Valid {
                    display,
                    docker_ref,
                    familiar,
                } => {
                    let reference =
                        parsed.unwrap_or_else(|error| panic!("{shown_input:?}: {error}"));
                    assert_eq!(&reference.to_string(), display, "{shown_input:?}");
                    assert_eq!(&reference.familiar_string(), familiar, "{shown_input:?}");
                    let docker = ImageReference::parse_docker_ref(input)
                        .expect("parse_normalized succeeded");
                    assert_eq!(&docker.to_string(), docker_ref, "{shown_input:?}");
                    assert_eq!(input.parse::<ImageReference>().as_ref(), Ok(&reference));
                    assert_round_trips(&reference);
                }
                Expect::Invalid(expected_error) => {
                    assert_eq!(parsed.as_ref(), Err(expected_error), "{shown_input:?}");
                    assert_eq!(
                        ImageReference::parse_docker_ref(input).as_ref(),
                        Err(expected_error),
                        "{shown_input:?}"
                    );
                }
            }
        }
        assert!(cases.len() >= 100, "{} cases", cases.len());
    }

    #[test]
    fn accessors_split_the_reference() {
        let digest = Digest::parse(&format!("sha256:{HEX_64}")).expect("valid digest");
        let reference =
            ImageReference::parse_normalized(&format!("localhost:5000/a/b:v1@{digest}"))
                .expect("valid");
        assert_eq!(reference.domain(), "localhost:5000");
        assert_eq!(reference.path(), "a/b");
        assert_eq!(reference.tag(), Some("v1"));
        assert_eq!(reference.digest(), Some(&digest));
        assert_eq!(reference.name(), "localhost:5000/a/b");
        assert_eq!(reference.familiar_name(), "localhost:5000/a/b");
        assert_eq!(
            reference.tagged_name().as_deref(),
            Some("localhost:5000/a/b:v1")
        );
        assert_eq!(
            reference.digested_name(),
            Some(format!("localhost:5000/a/b@{digest}"))
        );

        let reference = ImageReference::parse_normalized("ubuntu").expect("valid");
        assert_eq!(reference.domain(), "docker.io");
        assert_eq!(reference.path(), "library/ubuntu");
        assert_eq!(reference.tag(), None);
        assert_eq!(reference.digest(), None);
        assert_eq!(reference.tagged_name(), None);
        assert_eq!(reference.digested_name(), None);
        assert_eq!(
            reference.normalized().tagged_name().as_deref(),
            Some("docker.io/library/ubuntu:latest")
        );
    }

    #[test]
    fn with_tag_and_with_digest() {
        let digest = Digest::parse(&format!("sha256:{HEX_64}")).expect("valid digest");
        let reference = ImageReference::parse_normalized("ubuntu:22.04").expect("valid");

        let retagged = reference.with_tag("24.04").expect("valid tag");
        assert_eq!(retagged.to_string(), "docker.io/library/ubuntu:24.04");
        assert_eq!(
            reference.with_tag("bad tag"),
            Err(ReferenceError::InvalidTag {
                tag: "bad tag".into()
            })
        );
        assert_eq!(
            reference.with_tag(""),
            Err(ReferenceError::InvalidTag { tag: String::new() })
        );

        let pinned = reference.with_digest(digest.clone());
        assert_eq!(
            pinned.to_string(),
            format!("docker.io/library/ubuntu@{digest}")
        );
        assert_eq!(pinned.tag(), None);
        assert_eq!(pinned.normalized(), pinned);

        // `with_tag` keeps the digest, as distribution's `WithTag` does.
        let both = pinned.with_tag("x").expect("valid tag");
        assert_eq!(
            both.to_string(),
            format!("docker.io/library/ubuntu:x@{digest}")
        );
        assert_eq!(both.normalized(), pinned);
    }

    #[test]
    fn any_reference_table() {
        let d = format!("sha256:{HEX_64}");
        let d512 = format!("sha512:{}", "0123456789abcdef".repeat(8));
        let digest = |text: &str| {
            Ok(AnyReference::Digest(
                Digest::parse(text).expect("valid digest"),
            ))
        };
        let named = |text: &str| {
            Ok(AnyReference::Named(
                ImageReference::parse_normalized(text).expect("valid reference"),
            ))
        };
        let cases: Vec<(String, Result<AnyReference, ReferenceError>)> = vec![
            (d.clone(), digest(&d)),
            (HEX_64.into(), digest(&d)),
            (d512.clone(), digest(&d512)),
            ("busybox".into(), named("docker.io/library/busybox")),
            (
                format!("busybox@{d}"),
                named(&format!("docker.io/library/busybox@{d}")),
            ),
            // Not a valid digest, so, as in distribution, a Docker Hub name.
            ("sha256:abc".into(), named("docker.io/library/sha256:abc")),
            (
                format!("blake3:{HEX_64}"),
                named(&format!("docker.io/library/blake3:{HEX_64}")),
            ),
            (
                format!("{HEX_64}:tag"),
                named(&format!("docker.io/library/{HEX_64}:tag")),
            ),
            (String::new(), Err(ReferenceError::Empty)),
            (
                format!("sha256:{}", HEX_64.to_uppercase()),
                named(&format!(
                    "docker.io/library/sha256:{}",
                    HEX_64.to_uppercase()
                )),
            ),
            (
                HEX_64.to_uppercase(),
                Err(ReferenceError::UppercaseRepository {
                    name: format!("library/{}", HEX_64.to_uppercase()),
                }),
            ),
            (
                format!("@{d}"),
                Err(ReferenceError::InvalidFormat {
                    input: format!("@{d}"),
                }),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(AnyReference::parse(&input), expected, "{input:?}");
        }
        let parsed = AnyReference::parse(HEX_64).expect("bare id");
        assert_eq!(parsed.to_string(), d);
        match parsed {
            AnyReference::Digest(digest) => assert_eq!(digest.algorithm(), DigestAlgorithm::Sha256),
            AnyReference::Named(reference) => panic!("expected a digest, got {reference}"),
        }
    }

    /// A small deterministic stand-in for the fuzz target: every single-byte
    /// insertion and deletion around the valid cases must either fail cleanly
    /// or satisfy the round-trip invariants.
    #[test]
    fn mutations_of_valid_inputs_keep_invariants() {
        const INSERTED: [char; 14] = [
            '/', ':', '@', '.', '_', '-', 'A', 'a', '0', '[', ']', 'é', ' ', '%',
        ];
        let mut checked = 0usize;
        for seed in valid_inputs().into_iter().filter(|seed| seed.len() <= 300) {
            let boundaries: Vec<usize> = seed
                .char_indices()
                .map(|(index, _)| index)
                .chain(std::iter::once(seed.len()))
                .collect();
            let mut mutants = Vec::new();
            for &at in &boundaries {
                for inserted in INSERTED {
                    let mut mutant = seed.clone();
                    mutant.insert(at, inserted);
                    mutants.push(mutant);
                }
                if at < seed.len() {
                    let mut mutant = seed.clone();
                    mutant.remove(at);
                    mutants.push(mutant);
                }
            }
            for mutant in mutants {
                if let Ok(reference) = ImageReference::parse_normalized(&mutant) {
                    assert_round_trips(&reference);
                    checked += 1;
                }
                let _ = AnyReference::parse(&mutant);
            }
        }
        assert!(checked > 1000, "only {checked} mutants parsed");
    }

    #[test]
    fn error_messages_are_lowercase_bounded_and_unpunctuated() {
        let huge_tag = format!("a:{}", "!".repeat(1 << 20));
        let inputs = [
            String::new(),
            huge_tag,
            "foo/Bar".into(),
            "a_b.com/x".into(),
            "localhost:x/a".into(),
            format!("a@sha256:{}", "0".repeat(1 << 20)),
            HEX_64.into(),
            ":x".into(),
            "a//b".into(),
            "a-".into(),
            "a".repeat(300),
        ];
        for input in inputs {
            let error = ImageReference::parse_normalized(&input).expect_err("invalid input");
            let message = error.to_string();
            assert!(message.len() < 400, "{} byte message", message.len());
            assert!(!message.ends_with('.'), "{message}");
            let first = message.chars().next().expect("non-empty message");
            assert!(first.is_lowercase(), "{message}");
        }
        let error = ImageReference::parse_normalized("a@sha256:00").expect_err("short digest");
        let source = std::error::Error::source(&error).expect("digest error as source");
        assert_eq!(
            source.to_string(),
            "sha256 digest must have 64 hex characters, found 2"
        );
    }
}
