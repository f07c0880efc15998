//! Registry credentials from a Docker `config.json` style file (also what
//! podman and skopeo call `auth.json`):
//!
//! ```json
//! {"auths": {"https://index.docker.io/v1/": {"auth": "<base64 user:password>"},
//!            "registry.example:5000": {"identitytoken": "…", "auth": "<base64 user:>"}}}
//! ```
//!
//! The entry is chosen by the registry host of the image reference. Keys may
//! carry a scheme and a path (`https://host/v1/`), which are ignored, and
//! Docker Hub answers to `docker.io`, `index.docker.io` and
//! `registry-1.docker.io` alike. Credential helpers (`credsStore`,
//! `credHelpers`) are not run.
//!
//! Errors name the file and the entry, never a value read from it.

use std::fmt;
use std::io::Read;
use std::path::Path;

use base64::Engine as _;

use crate::cli::error::AuthFileError;

/// Docker config files are a few kilobytes; anything far larger is not one.
const AUTH_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// The names Docker Hub answers to; a credential for one is good for all.
const DOCKER_HUB_HOSTS: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// The credentials of one `auths` entry, decoded. `Debug` hides the secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthEntry {
    /// The key of the entry, as written in the file.
    pub server_key: String,
    pub username: String,
    pub password: String,
    pub identity_token: String,
    pub registry_token: String,
}

impl fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let present = |value: &str| if value.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("AuthEntry")
            .field("server_key", &self.server_key)
            .field("username", &self.username)
            .field("password", &present(&self.password))
            .field("identity_token", &present(&self.identity_token))
            .field("registry_token", &present(&self.registry_token))
            .finish()
    }
}

/// Reads the file at `path` and returns the entry for `registry_host` (a
/// host[:port], such as an image reference's domain), or `None` when the file
/// has no entry for it.
pub fn read_auth_entry(
    path: &Path,
    registry_host: &str,
) -> Result<Option<AuthEntry>, AuthFileError> {
    let document = read_document(path)?;
    find_auth_entry(path, &document, registry_host)
}

/// The entry for `registry_host` in an already parsed file. An entry whose
/// key normalizes to exactly the host wins over a Docker Hub alias; among
/// aliases, the first key in sorted order wins, so the choice is stable.
pub fn find_auth_entry(
    path: &Path,
    document: &serde_json::Value,
    registry_host: &str,
) -> Result<Option<AuthEntry>, AuthFileError> {
    let wrong_type = |location: String, expected| AuthFileError::WrongType {
        path: path.to_path_buf(),
        location,
        expected,
    };
    let top = document
        .as_object()
        .ok_or_else(|| wrong_type("the top level".to_owned(), "an object"))?;
    let Some(auths) = top.get("auths") else {
        return Ok(None);
    };
    let auths = auths
        .as_object()
        .ok_or_else(|| wrong_type("\"auths\"".to_owned(), "an object"))?;
    let wanted_host = registry_host.to_ascii_lowercase();
    let mut candidates: Vec<(&String, &serde_json::Value)> = auths
        .iter()
        .filter(|(key, _)| same_registry(&registry_host_of_key(key), &wanted_host))
        .collect();
    candidates.sort_by_key(|(key, _)| (registry_host_of_key(key) != wanted_host, key.as_str()));
    let Some((key, entry)) = candidates.first() else {
        return Ok(None);
    };
    decode_entry(path, key, entry).map(Some)
}

/// `https://index.docker.io/v1/` -> `index.docker.io`;
/// `http://LOCALHOST:5000/v2/` -> `localhost:5000`. As Docker's
/// `ConvertToHostname`, plus lowercasing: host names are case-insensitive.
pub fn registry_host_of_key(key: &str) -> String {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    without_scheme
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn same_registry(left: &str, right: &str) -> bool {
    left == right || (DOCKER_HUB_HOSTS.contains(&left) && DOCKER_HUB_HOSTS.contains(&right))
}

fn read_document(path: &Path) -> Result<serde_json::Value, AuthFileError> {
    let read_error = |source| AuthFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(AUTH_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > AUTH_FILE_BYTES_MAX {
        return Err(AuthFileError::TooLarge {
            path: path.to_path_buf(),
            size_bytes_max: AUTH_FILE_BYTES_MAX,
        });
    }
    // Parsing into a `Value` first keeps value-quoting type errors out of
    // the messages: only syntax errors, by line and column, can happen here.
    serde_json::from_slice(&bytes).map_err(|source| AuthFileError::NotJson {
        path: path.to_path_buf(),
        source,
    })
}

fn decode_entry(
    path: &Path,
    key: &str,
    entry: &serde_json::Value,
) -> Result<AuthEntry, AuthFileError> {
    let entry_location = format!("\"auths\".{key:?}");
    let entry = entry.as_object().ok_or_else(|| AuthFileError::WrongType {
        path: path.to_path_buf(),
        location: entry_location.clone(),
        expected: "an object",
    })?;
    let string_field = |name: &str| -> Result<String, AuthFileError> {
        match entry.get(name) {
            None | Some(serde_json::Value::Null) => Ok(String::new()),
            Some(serde_json::Value::String(value)) => Ok(value.clone()),
            Some(_) => Err(AuthFileError::WrongType {
                path: path.to_path_buf(),
                location: format!("{entry_location}.{name:?}"),
                expected: "a string",
            }),
        }
    };
    let mut decoded = AuthEntry {
        server_key: key.to_owned(),
        identity_token: string_field("identitytoken")?,
        registry_token: string_field("registrytoken")?,
        ..AuthEntry::default()
    };
    let auth = string_field("auth")?;
    if !auth.trim().is_empty() {
        let malformed = |problem| AuthFileError::MalformedAuth {
            path: path.to_path_buf(),
            host: key.to_owned(),
            problem,
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| malformed("is not valid base64"))?;
        let text = String::from_utf8(bytes).map_err(|_| malformed("is not UTF-8 text"))?;
        // With an identity token Docker writes "username:" (no password).
        let (username, password) = text
            .split_once(':')
            .ok_or_else(|| malformed("does not decode to \"username:password\""))?;
        decoded.username = username.to_owned();
        decoded.password = password.trim_end_matches('\0').to_owned();
    }
    // The older explicit fields, when present, take precedence over "auth".
    let username = string_field("username")?;
    if !username.is_empty() {
        decoded.username = username;
    }
    let password = string_field("password")?;
    if !password.is_empty() {
        decoded.password = password;
    }
    let has_credentials = !decoded.password.is_empty()
        || !decoded.identity_token.is_empty()
        || !decoded.registry_token.is_empty();
    if !has_credentials {
        return Err(AuthFileError::EmptyEntry {
            path: path.to_path_buf(),
            host: key.to_owned(),
        });
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/etc/test/config.json";

    fn base64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn find(document: serde_json::Value, host: &str) -> Result<Option<AuthEntry>, AuthFileError> {
        find_auth_entry(Path::new(PATH), &document, host)
    }

    #[test]
    fn entries_are_chosen_by_registry_host_with_docker_hub_aliases() {
        let document = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": base64("hub-user:hub-password")},
            "registry-1.docker.io": {"auth": base64("other-hub-user:pw")},
            "http://Registry.Example:5000/v2/": {"auth": base64("alice:s3cret\0")},
            "quay.io": {"registrytoken": "bearer-token"},
            "ghcr.io": {"auth": base64("bob:"), "identitytoken": "refresh-token"},
            "old.example": {"username": "carol", "password": "pw", "auth": base64("x:y")},
        }});
        let cases = [
            (
                "docker.io",
                "https://index.docker.io/v1/",
                "hub-user",
                "hub-password",
                "",
                "",
            ),
            (
                "registry-1.docker.io",
                "registry-1.docker.io",
                "other-hub-user",
                "pw",
                "",
                "",
            ),
            (
                "registry.example:5000",
                "http://Registry.Example:5000/v2/",
                "alice",
                "s3cret",
                "",
                "",
            ),
            ("quay.io", "quay.io", "", "", "", "bearer-token"),
            ("ghcr.io", "ghcr.io", "bob", "", "refresh-token", ""),
            ("old.example", "old.example", "carol", "pw", "", ""),
        ];
        for (host, key, username, password, identity_token, registry_token) in cases {
            let entry = find(document.clone(), host).unwrap().unwrap();
            assert_eq!(
                entry,
                AuthEntry {
                    server_key: key.to_owned(),
                    username: username.to_owned(),
                    password: password.to_owned(),
                    identity_token: identity_token.to_owned(),
                    registry_token: registry_token.to_owned(),
                },
                "{host}"
            );
        }
        for host in ["registry.example", "registry.example:5001", "example.com"] {
            assert_eq!(find(document.clone(), host).unwrap(), None, "{host}");
        }
        assert_eq!(find(serde_json::json!({}), "docker.io").unwrap(), None);
    }

    #[test]
    fn bad_entries_name_the_file_and_the_entry_but_never_a_value() {
        let secret = "do-not-print-me";
        let cases = [
            (
                serde_json::json!([secret]),
                "the top level must be an object",
            ),
            (
                serde_json::json!({"auths": secret}),
                "\"auths\" must be an object",
            ),
            (
                serde_json::json!({"auths": {"h.example": secret}}),
                "\"auths\".\"h.example\" must be an object",
            ),
            (
                serde_json::json!({"auths": {"h.example": {"auth": [secret]}}}),
                "\"auths\".\"h.example\".\"auth\" must be a string",
            ),
            (
                serde_json::json!({"auths": {"h.example": {"auth": format!("%{secret}")}}}),
                "is not valid base64",
            ),
            (
                serde_json::json!({"auths": {"h.example": {"auth": base64(secret)}}}),
                "does not decode to \"username:password\"",
            ),
            (
                serde_json::json!({"auths": {"h.example": {"auth": base64("user:")}}}),
                "holds no credentials",
            ),
        ];
        for (document, expected) in cases {
            let message = find(document, "h.example").unwrap_err().to_string();
            assert!(message.contains(PATH), "{message}");
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains(secret), "{message}");
        }
    }

    #[test]
    fn the_debug_form_hides_secrets() {
        let entry = AuthEntry {
            server_key: "h.example".into(),
            username: "alice".into(),
            password: "pw-secret".into(),
            identity_token: "token-secret".into(),
            registry_token: String::new(),
        };
        let printed = format!("{entry:?}");
        assert!(printed.contains("alice") && printed.contains("<redacted>"));
        assert!(!printed.contains("secret"), "{printed}");
    }

    #[test]
    fn files_that_are_not_json_or_too_large_are_refused_by_name() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("config.json");
        std::fs::write(&path, "{\"auths\": {\"h\": {\"auth\": \"do-not-print-me").unwrap();
        let message = read_auth_entry(&path, "h").unwrap_err().to_string();
        assert!(message.contains("is not valid JSON"), "{message}");
        assert!(message.contains(path.to_str().unwrap()), "{message}");
        assert!(!message.contains("do-not-print-me"), "{message}");

        let missing = directory.path().join("absent.json");
        let message = read_auth_entry(&missing, "h").unwrap_err().to_string();
        assert!(message.starts_with("cannot read auth file"), "{message}");
        assert!(message.contains("absent.json"), "{message}");
    }
}
