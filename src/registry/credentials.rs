//! Registry credentials, from every form a CRI `AuthConfig` can take.
//!
//! Secrets live in [`Secret`], whose `Debug` and `Display` never show the
//! value, so a credential cannot reach a log line, an error message or a debug
//! print by accident.

use std::fmt;

use base64::Engine as _;

/// A secret string: passwords, identity tokens, registry tokens, bearer tokens.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How to authenticate to one registry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Credentials {
    Anonymous,
    /// Sent as HTTP Basic, or to the token endpoint as Basic.
    UsernamePassword {
        username: String,
        password: Secret,
    },
    /// An OAuth2 refresh token, exchanged at the token endpoint (POST form).
    IdentityToken {
        username: String,
        token: Secret,
    },
    /// A bearer token sent to the registry as is, with no token exchange.
    RegistryToken(Secret),
}

impl Credentials {
    pub fn is_anonymous(&self) -> bool {
        matches!(self, Credentials::Anonymous)
    }
}

/// Credentials plus the registry they belong to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RegistryCredentials {
    credentials: Credentials,
    /// The registry host the credentials were issued for (`server_address`),
    /// normalized to a host[:port]; `None` means "whatever registry is asked".
    server_host: Option<String>,
}

/// A malformed `AuthConfig`. Variants name the field, never its value.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialsError {
    #[error("auth config field \"auth\" is not valid base64")]
    AuthNotBase64,
    #[error("auth config field \"auth\" does not decode to \"username:password\"")]
    AuthWithoutColon,
    #[error("auth config field \"auth\" does not decode to UTF-8 text")]
    AuthNotUtf8,
    #[error("auth config has a password but no username")]
    PasswordWithoutUsername,
}

/// The fields of a CRI `AuthConfig`, as the client sent them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthConfigFields {
    pub username: String,
    pub password: String,
    pub auth: String,
    pub server_address: String,
    pub identity_token: String,
    pub registry_token: String,
}

impl fmt::Debug for AuthConfigFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let present = |value: &str| if value.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("AuthConfigFields")
            .field("username", &self.username)
            .field("password", &present(&self.password))
            .field("auth", &present(&self.auth))
            .field("server_address", &self.server_address)
            .field("identity_token", &present(&self.identity_token))
            .field("registry_token", &present(&self.registry_token))
            .finish()
    }
}

impl RegistryCredentials {
    pub fn anonymous() -> RegistryCredentials {
        RegistryCredentials {
            credentials: Credentials::Anonymous,
            server_host: None,
        }
    }

    pub fn new(credentials: Credentials, server_address: Option<&str>) -> RegistryCredentials {
        RegistryCredentials {
            credentials,
            server_host: server_address
                .filter(|address| !address.is_empty())
                .map(normalize_server_address),
        }
    }

    /// Reads a CRI `AuthConfig`. Precedence: `registry_token` (a bearer token
    /// used as is, as Docker does), then `username`/`password`, then
    /// `identity_token` (an OAuth2 refresh token), then `auth`
    /// (base64 `user:password`, trailing NULs trimmed from the password), as
    /// containerd's `ParseAuth` orders the last three.
    pub fn from_auth_config(
        fields: &AuthConfigFields,
    ) -> Result<RegistryCredentials, CredentialsError> {
        let server_address = Some(fields.server_address.as_str());
        if !fields.registry_token.is_empty() {
            return Ok(Self::new(
                Credentials::RegistryToken(Secret::new(fields.registry_token.clone())),
                server_address,
            ));
        }
        if !fields.username.is_empty() && !fields.password.is_empty() {
            return Ok(Self::new(
                Credentials::UsernamePassword {
                    username: fields.username.clone(),
                    password: Secret::new(fields.password.clone()),
                },
                server_address,
            ));
        }
        if !fields.identity_token.is_empty() {
            return Ok(Self::new(
                Credentials::IdentityToken {
                    username: fields.username.clone(),
                    token: Secret::new(fields.identity_token.clone()),
                },
                server_address,
            ));
        }
        if !fields.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(fields.auth.trim())
                .map_err(|_| CredentialsError::AuthNotBase64)?;
            let decoded = String::from_utf8(decoded).map_err(|_| CredentialsError::AuthNotUtf8)?;
            let (username, password) = decoded
                .split_once(':')
                .ok_or(CredentialsError::AuthWithoutColon)?;
            return Ok(Self::new(
                Credentials::UsernamePassword {
                    username: username.to_owned(),
                    password: Secret::new(password.trim_end_matches('\0')),
                },
                server_address,
            ));
        }
        if !fields.password.is_empty() {
            return Err(CredentialsError::PasswordWithoutUsername);
        }
        Ok(Self::new(Credentials::Anonymous, server_address))
    }

    /// The credentials to present to `registry_host` (a host[:port]): none when
    /// they were issued for another registry, so a secret for one registry is
    /// never sent to another.
    pub fn for_host(&self, registry_host: &str) -> &Credentials {
        match &self.server_host {
            Some(server_host) if !same_registry(server_host, registry_host) => {
                &Credentials::Anonymous
            }
            _ => &self.credentials,
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }
}

/// `https://index.docker.io/v1/` -> `index.docker.io`; `quay.io:443/x` -> `quay.io:443`.
fn normalize_server_address(address: &str) -> String {
    let without_scheme = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    without_scheme
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Docker Hub answers under several names; everything else must match exactly.
fn same_registry(left: &str, right: &str) -> bool {
    const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
    let left = left.to_ascii_lowercase();
    let right = right.to_ascii_lowercase();
    left == right || (DOCKER_HUB.contains(&left.as_str()) && DOCKER_HUB.contains(&right.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> AuthConfigFields {
        AuthConfigFields::default()
    }

    #[test]
    fn every_auth_config_form_is_read_with_the_documented_precedence() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("alice:s3cret\0\0");
        let cases: Vec<(AuthConfigFields, Credentials)> = vec![
            (fields(), Credentials::Anonymous),
            (
                AuthConfigFields {
                    username: "alice".into(),
                    password: "pw".into(),
                    ..fields()
                },
                Credentials::UsernamePassword {
                    username: "alice".into(),
                    password: Secret::new("pw"),
                },
            ),
            (
                AuthConfigFields {
                    auth: encoded.clone(),
                    ..fields()
                },
                Credentials::UsernamePassword {
                    username: "alice".into(),
                    password: Secret::new("s3cret"),
                },
            ),
            (
                AuthConfigFields {
                    identity_token: "refresh".into(),
                    username: "bob".into(),
                    ..fields()
                },
                Credentials::IdentityToken {
                    username: "bob".into(),
                    token: Secret::new("refresh"),
                },
            ),
            (
                AuthConfigFields {
                    registry_token: "bearer".into(),
                    username: "x".into(),
                    password: "y".into(),
                    ..fields()
                },
                Credentials::RegistryToken(Secret::new("bearer")),
            ),
            (
                AuthConfigFields {
                    username: "alice".into(),
                    password: "pw".into(),
                    auth: encoded,
                    ..fields()
                },
                Credentials::UsernamePassword {
                    username: "alice".into(),
                    password: Secret::new("pw"),
                },
            ),
        ];
        for (input, expected) in cases {
            let parsed = RegistryCredentials::from_auth_config(&input).unwrap();
            assert_eq!(parsed.credentials(), &expected, "{input:?}");
        }
    }

    #[test]
    fn malformed_auth_is_an_error_that_does_not_echo_the_value() {
        let secret_looking = "c2VjcmV0LXdpdGhvdXQtY29sb24="; // "secret-without-colon"
        for (auth, expected) in [
            ("!!!not base64!!!", CredentialsError::AuthNotBase64),
            (secret_looking, CredentialsError::AuthWithoutColon),
        ] {
            let error = RegistryCredentials::from_auth_config(&AuthConfigFields {
                auth: auth.into(),
                ..fields()
            })
            .unwrap_err();
            assert_eq!(error, expected);
            assert!(!error.to_string().contains(auth));
        }
        assert_eq!(
            RegistryCredentials::from_auth_config(&AuthConfigFields {
                password: "pw".into(),
                ..fields()
            })
            .unwrap_err(),
            CredentialsError::PasswordWithoutUsername
        );
    }

    #[test]
    fn credentials_are_dropped_for_other_registries() {
        let credentials = RegistryCredentials::from_auth_config(&AuthConfigFields {
            username: "alice".into(),
            password: "pw".into(),
            server_address: "https://index.docker.io/v1/".into(),
            ..fields()
        })
        .unwrap();
        assert!(!credentials.for_host("docker.io").is_anonymous());
        assert!(!credentials.for_host("registry-1.docker.io").is_anonymous());
        assert!(credentials.for_host("quay.io").is_anonymous());
        let local = RegistryCredentials::new(
            Credentials::RegistryToken(Secret::new("t")),
            Some("127.0.0.1:5000"),
        );
        assert!(!local.for_host("127.0.0.1:5000").is_anonymous());
        assert!(local.for_host("127.0.0.1:5001").is_anonymous());
        let anywhere = RegistryCredentials::new(Credentials::RegistryToken(Secret::new("t")), None);
        assert!(!anywhere.for_host("mirror.local").is_anonymous());
    }

    #[test]
    fn no_debug_print_shows_a_secret() {
        let input = AuthConfigFields {
            username: "alice".into(),
            password: "hunter2-password".into(),
            auth: "YWxpY2U6aHVudGVyMg==".into(),
            identity_token: "identity-token-value".into(),
            registry_token: "registry-token-value".into(),
            server_address: "quay.io".into(),
        };
        let credentials = RegistryCredentials::from_auth_config(&input).unwrap();
        let printed = format!(
            "{input:?} {credentials:?} {}",
            Secret::new("hunter2-password")
        );
        for secret in [
            "hunter2",
            "YWxpY2U6aHVudGVyMg",
            "identity-token-value",
            "registry-token-value",
        ] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("alice"));
    }
}
