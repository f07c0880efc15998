//! The `WWW-Authenticate` header of a registry's `401` reply, parsed by the
//! RFC 7235 grammar, and the token request URL of the Docker token flow built
//! from a `Bearer` challenge. Pure functions over strings: sending the
//! request is the registry client's job.
//!
//! containerd's `parseValueAndParams` reads one challenge per header and stops
//! quietly at the first thing it does not understand. This parser reads every
//! challenge in the header (`Basic realm="x", Bearer realm="…"`), honours
//! commas and escaped quotes inside quoted strings, and refuses a malformed
//! header with an error that says where, because a half-read challenge could
//! send credentials to the wrong realm.

use crate::reference::bounded_echo;
use std::collections::BTreeMap;

/// One challenge of a `WWW-Authenticate` header. Scheme and parameter names
/// are case-insensitive on the wire and are compared lowercased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// Send `Authorization: Basic …` directly (some registries, e.g. ECR).
    Basic { realm: Option<String> },
    /// Fetch a token from `realm` (see [`token_request_url`]), then send
    /// `Authorization: Bearer <token>`. `realm` is never empty; empty optional
    /// parameters are `None`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
        error: Option<String>,
    },
    /// Any other scheme (`negotiate`, `digest`, …), lowercased; this daemon
    /// cannot answer it, but its presence is not an error.
    Other { scheme: String },
}

/// Why a `WWW-Authenticate` header or a token realm was refused. Header text
/// inside an error is cut to a bounded length.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChallengeError {
    #[error("www-authenticate header is {length_bytes} bytes long, the maximum is {max_bytes}")]
    HeaderTooLong {
        length_bytes: usize,
        max_bytes: usize,
    },
    #[error("www-authenticate header {header:?} has no challenge")]
    NoChallenge { header: String },
    #[error("malformed www-authenticate header {header:?} at byte {position}: {problem}")]
    Malformed {
        header: String,
        position: usize,
        problem: &'static str,
    },
    #[error(
        "challenge {scheme:?} repeats parameter {parameter:?} in www-authenticate header {header:?}"
    )]
    DuplicateParameter {
        header: String,
        scheme: String,
        parameter: String,
    },
    #[error("bearer challenge without a realm in www-authenticate header {header:?}")]
    BearerWithoutRealm { header: String },
    #[error("token realm {realm:?} is not a valid url: {reason}")]
    InvalidRealm { realm: String, reason: String },
    #[error("token realm {realm:?} is not an http or https url")]
    RealmNotHttp { realm: String },
}

/// The longest header this parser reads. Real challenges are a few hundred
/// bytes; a registry sending more is broken or hostile.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;

/// Parses one `WWW-Authenticate` header value into its challenges, in order.
///
/// Grammar (RFC 7235 §4.1 and §2.1, with RFC 7230's list rule):
/// `1#challenge`, `challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]`,
/// `auth-param = token BWS "=" BWS ( token / quoted-string )`. Empty list
/// elements and optional whitespace are allowed. After a comma, `token "="`
/// continues the current challenge's parameters and anything else starts a
/// new challenge. Quoted strings may hold commas and `\`-escaped characters.
///
/// Refused: a header longer than [`HEADER_BYTES_MAX`], one without any
/// challenge, any syntax error, a parameter repeated within a challenge
/// (RFC 7235 says each name occurs once; which realm would we trust?), and a
/// `Bearer` challenge without a non-empty `realm`. A reply with several
/// `WWW-Authenticate` headers is parsed one header at a time.
pub fn parse_www_authenticate(header: &str) -> Result<Vec<Challenge>, ChallengeError> {
    if header.len() > HEADER_BYTES_MAX {
        return Err(ChallengeError::HeaderTooLong {
            length_bytes: header.len(),
            max_bytes: HEADER_BYTES_MAX,
        });
    }
    let raw_challenges = Parser::new(header).challenges()?;
    if raw_challenges.is_empty() {
        return Err(ChallengeError::NoChallenge {
            header: bounded_echo(header),
        });
    }
    raw_challenges
        .into_iter()
        .map(|raw| challenge_from_raw(header, raw))
        .collect()
}

/// The URL of the token request for a `Bearer` challenge:
/// `realm?service=…&scope=…&scope=…`, each value form-encoded
/// (`repository:library/ubuntu:pull` becomes
/// `repository%3Alibrary%2Fubuntu%3Apull`), one `scope` per item in order,
/// appended after any query the realm already has.
///
/// The realm must be an absolute `http` or `https` URL. Whether an `http`
/// realm is acceptable for an `https` registry is the caller's policy. A
/// fragment is dropped, since it is never sent anyway.
pub fn token_request_url(
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
) -> Result<String, ChallengeError> {
    let mut url = url::Url::parse(realm).map_err(|error| ChallengeError::InvalidRealm {
        realm: bounded_echo(realm),
        reason: error.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ChallengeError::RealmNotHttp {
            realm: bounded_echo(realm),
        });
    }
    url.set_fragment(None);
    // `query_pairs_mut` adds a `?` even when nothing is appended, so it is
    // only called when there is something to append.
    if service.is_some() || !scopes.is_empty() {
        let mut query = url.query_pairs_mut();
        if let Some(service) = service {
            query.append_pair("service", service);
        }
        for scope in scopes {
            query.append_pair("scope", scope);
        }
    }
    Ok(url.into())
}

/// A challenge as written: scheme and parameter names lowercased, values
/// unescaped, before any scheme-specific rule is applied.
struct RawChallenge {
    scheme: String,
    parameters: Vec<(String, String)>,
}

/// A cursor over the header bytes. Everything the grammar treats specially is
/// ASCII, so working on bytes is exact; non-ASCII bytes can only appear
/// inside quoted strings, where they are copied through unchanged.
struct Parser<'a> {
    header: &'a str,
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Parser<'a> {
    fn new(header: &'a str) -> Parser<'a> {
        Parser {
            header,
            bytes: header.as_bytes(),
            position: 0,
        }
    }

    fn challenges(mut self) -> Result<Vec<RawChallenge>, ChallengeError> {
        let mut challenges = Vec::new();
        loop {
            self.skip_list_separators();
            if self.at_end() {
                return Ok(challenges);
            }
            challenges.push(self.challenge()?);
        }
    }

    /// One challenge, starting at its scheme and ending before the comma (or
    /// end) that follows it.
    fn challenge(&mut self) -> Result<RawChallenge, ChallengeError> {
        let Some(scheme) = self.token() else {
            return Err(self.malformed("expected an auth scheme"));
        };
        let mut challenge = RawChallenge {
            scheme: scheme.to_ascii_lowercase(),
            parameters: Vec::new(),
        };
        let spaces = self.skip_whitespace();
        if self.at_end() || self.peek() == Some(b',') {
            return Ok(challenge);
        }
        if spaces == 0 {
            return Err(self.malformed("expected a space after the auth scheme"));
        }

        // A token68 stands alone; otherwise a list of auth-params follows.
        let start = self.position;
        if self.token68().is_some() {
            self.skip_whitespace();
            if self.at_end() || self.peek() == Some(b',') {
                self.skip_list_separators();
                if !self.at_end() && self.parameter_follows() {
                    return Err(self.malformed("auth-param after a token68"));
                }
                // The token68 itself (credentials-like data for schemes such
                // as Negotiate) is of no use to a registry client.
                return Ok(challenge);
            }
            self.position = start;
        }
        loop {
            let (name, value) = self.parameter()?;
            if challenge
                .parameters
                .iter()
                .any(|(existing, _)| *existing == name)
            {
                return Err(ChallengeError::DuplicateParameter {
                    header: bounded_echo(self.header),
                    scheme: challenge.scheme,
                    parameter: name,
                });
            }
            challenge.parameters.push((name, value));
            self.skip_whitespace();
            if self.at_end() {
                return Ok(challenge);
            }
            if self.peek() != Some(b',') {
                return Err(self.malformed("expected ',' after an auth-param"));
            }
            let before_separators = self.position;
            self.skip_list_separators();
            if self.at_end() || !self.parameter_follows() {
                // The next element is a new challenge; leave it to the caller.
                self.position = before_separators;
                return Ok(challenge);
            }
        }
    }

    /// `token BWS "=" BWS ( token / quoted-string )`, with the name lowercased.
    fn parameter(&mut self) -> Result<(String, String), ChallengeError> {
        let Some(name) = self.token() else {
            return Err(self.malformed("expected an auth-param name"));
        };
        let name = name.to_ascii_lowercase();
        self.skip_whitespace();
        if self.peek() != Some(b'=') {
            return Err(self.malformed("expected '=' after an auth-param name"));
        }
        self.position += 1;
        self.skip_whitespace();
        let value = if self.peek() == Some(b'"') {
            self.quoted_string()?
        } else {
            match self.token() {
                Some(token) => token.to_owned(),
                None => return Err(self.malformed("expected an auth-param value")),
            }
        };
        Ok((name, value))
    }

    /// Whether the input at the cursor is `token BWS "="`, the start of an
    /// auth-param rather than of a new challenge. Does not move the cursor.
    fn parameter_follows(&mut self) -> bool {
        let start = self.position;
        let follows = self.token().is_some() && {
            self.skip_whitespace();
            self.peek() == Some(b'=')
        };
        self.position = start;
        follows
    }

    /// A quoted string with its quotes removed and its quoted-pairs
    /// unescaped. The cursor is on the opening quote.
    fn quoted_string(&mut self) -> Result<String, ChallengeError> {
        let opening_quote = self.position;
        self.position += 1;
        let mut value = Vec::new();
        while let Some(byte) = self.peek() {
            match byte {
                b'"' => {
                    self.position += 1;
                    // Only ASCII bytes were removed from valid UTF-8, so this
                    // is still valid UTF-8; the lossy form cannot lose anything.
                    return Ok(String::from_utf8_lossy(&value).into_owned());
                }
                b'\\' => {
                    self.position += 1;
                    match self.peek() {
                        Some(escaped)
                            if is_quoted_text_byte(escaped)
                                || escaped == b'"'
                                || escaped == b'\\' =>
                        {
                            value.push(escaped);
                            self.position += 1;
                        }
                        Some(_) => {
                            return Err(self.malformed("control character in a quoted string"));
                        }
                        None => break,
                    }
                }
                _ if is_quoted_text_byte(byte) => {
                    value.push(byte);
                    self.position += 1;
                }
                _ => return Err(self.malformed("control character in a quoted string")),
            }
        }
        Err(ChallengeError::Malformed {
            header: bounded_echo(self.header),
            position: opening_quote,
            problem: "unterminated quoted string",
        })
    }

    /// `1*tchar`, or `None` (cursor unmoved) when there is none.
    fn token(&mut self) -> Option<&'a str> {
        let start = self.position;
        while self.peek().is_some_and(is_token_byte) {
            self.position += 1;
        }
        // Token bytes are ASCII, so both ends are character boundaries; `get`
        // keeps that an assumption rather than a possible panic.
        if self.position > start {
            self.header.get(start..self.position)
        } else {
            None
        }
    }

    /// `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
    fn token68(&mut self) -> Option<&'a str> {
        let start = self.position;
        while self.peek().is_some_and(is_token68_byte) {
            self.position += 1;
        }
        if self.position == start {
            return None;
        }
        while self.peek() == Some(b'=') {
            self.position += 1;
        }
        self.header.get(start..self.position)
    }

    /// Skips OWS (spaces and tabs) and returns how many bytes it skipped.
    fn skip_whitespace(&mut self) -> usize {
        let start = self.position;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.position += 1;
        }
        self.position - start
    }

    /// Skips commas and whitespace: the list rule allows empty elements.
    fn skip_list_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.position += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn at_end(&self) -> bool {
        self.position >= self.bytes.len()
    }

    fn malformed(&self, problem: &'static str) -> ChallengeError {
        ChallengeError::Malformed {
            header: bounded_echo(self.header),
            position: self.position,
            problem,
        }
    }
}

/// Applies the per-scheme rules to a parsed challenge.
fn challenge_from_raw(header: &str, raw: RawChallenge) -> Result<Challenge, ChallengeError> {
    let mut parameters: BTreeMap<String, String> = raw.parameters.into_iter().collect();
    let mut take = |name: &str| parameters.remove(name).filter(|value| !value.is_empty());
    match raw.scheme.as_str() {
        "basic" => Ok(Challenge::Basic {
            realm: take("realm"),
        }),
        "bearer" => {
            let Some(realm) = take("realm") else {
                return Err(ChallengeError::BearerWithoutRealm {
                    header: bounded_echo(header),
                });
            };
            Ok(Challenge::Bearer {
                realm,
                service: take("service"),
                scope: take("scope"),
                error: take("error"),
            })
        }
        _ => Ok(Challenge::Other { scheme: raw.scheme }),
    }
}

/// RFC 7230 `tchar`.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn is_token68_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

/// RFC 7230 `qdtext` without the quote and backslash, which the caller
/// handles: HTAB, SP, visible ASCII, and obs-text (any non-ASCII byte).
fn is_quoted_text_byte(byte: u8) -> bool {
    byte == b'\t'
        || ((b' '..=b'~').contains(&byte) && byte != b'"' && byte != b'\\')
        || byte >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_HUB: &str = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull""#;

    fn bearer(
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        error: Option<&str>,
    ) -> Challenge {
        Challenge::Bearer {
            realm: realm.to_owned(),
            service: service.map(str::to_owned),
            scope: scope.map(str::to_owned),
            error: error.map(str::to_owned),
        }
    }

    fn basic(realm: Option<&str>) -> Challenge {
        Challenge::Basic {
            realm: realm.map(str::to_owned),
        }
    }

    fn other(scheme: &str) -> Challenge {
        Challenge::Other {
            scheme: scheme.to_owned(),
        }
    }

    fn malformed(header: &str, position: usize, problem: &'static str) -> ChallengeError {
        ChallengeError::Malformed {
            header: header.to_owned(),
            position,
            problem,
        }
    }

    #[test]
    fn parse_table() {
        let cases: Vec<(&str, Result<Vec<Challenge>, ChallengeError>)> = vec![
            (
                DOCKER_HUB,
                Ok(vec![bearer(
                    "https://auth.docker.io/token",
                    Some("registry.docker.io"),
                    Some("repository:library/ubuntu:pull"),
                    None,
                )]),
            ),
            (
                // The Docker token spec's insufficient_scope example: a comma
                // inside the quoted scope.
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push",error="insufficient_scope""#,
                Ok(vec![bearer(
                    "https://auth.docker.io/token",
                    Some("registry.docker.io"),
                    Some("repository:samalba/my-app:pull,push"),
                    Some("insufficient_scope"),
                )]),
            ),
            (
                r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:user/image:pull""#,
                Ok(vec![bearer(
                    "https://ghcr.io/token",
                    Some("ghcr.io"),
                    Some("repository:user/image:pull"),
                    None,
                )]),
            ),
            (
                r#"Basic realm="https://123456789012.dkr.ecr.us-east-1.amazonaws.com/",service="ecr.amazonaws.com""#,
                Ok(vec![basic(Some(
                    "https://123456789012.dkr.ecr.us-east-1.amazonaws.com/",
                ))]),
            ),
            (r#"Basic realm="x""#, Ok(vec![basic(Some("x"))])),
            ("Basic", Ok(vec![basic(None)])),
            (r#"basic REALM="Registry Realm""#, Ok(vec![basic(Some("Registry Realm"))])),
            (
                r#"Basic realm="say \"hi\" \\ back""#,
                Ok(vec![basic(Some(r#"say "hi" \ back"#))]),
            ),
            (
                r#"Basic realm="a, b", charset="UTF-8""#,
                Ok(vec![basic(Some("a, b"))]),
            ),
            (
                r#"Negotiate, Basic realm="x", Bearer realm="https://a.example/token",service="s""#,
                Ok(vec![
                    other("negotiate"),
                    basic(Some("x")),
                    bearer("https://a.example/token", Some("s"), None, None),
                ]),
            ),
            (
                r#"Basic realm="x",Bearer realm="https://a.example/t""#,
                Ok(vec![basic(Some("x")), bearer("https://a.example/t", None, None, None)]),
            ),
            (
                "Negotiate YIIBOQYGKwYBBQUCoII=, Basic realm=simple",
                Ok(vec![other("negotiate"), basic(Some("simple"))]),
            ),
            ("NTLM TlRMTVNTUAABAAAAB4IIog==", Ok(vec![other("ntlm")])),
            ("Basic dXNlcjpwYXNz", Ok(vec![basic(None)])),
            (
                r#"BEARER REALM="https://a.example/t", SERVICE=reg"#,
                Ok(vec![bearer("https://a.example/t", Some("reg"), None, None)]),
            ),
            (
                "Bearer  realm = \"https://a.example/t\" ,\tservice = reg , scope=\"\"",
                Ok(vec![bearer("https://a.example/t", Some("reg"), None, None)]),
            ),
            (
                r#" , Basic realm="x" ,, "#,
                Ok(vec![basic(Some("x"))]),
            ),
            (
                r#"Digest realm="r", qop="auth,auth-int", nonce="n", opaque="o""#,
                Ok(vec![other("digest")]),
            ),
            (
                r#"Bearer realm="https://a.example/t",service="caf\u00e9 ☕""#,
                Ok(vec![bearer("https://a.example/t", Some("cafu00e9 ☕"), None, None)]),
            ),
            (
                r#"Bearer realm="https://a.example/t",service="café""#,
                Ok(vec![bearer("https://a.example/t", Some("café"), None, None)]),
            ),
            // --- refused ---
            (
                r#"Bearer service="registry.docker.io",scope="repository:library/ubuntu:pull""#,
                Err(ChallengeError::BearerWithoutRealm {
                    header: r#"Bearer service="registry.docker.io",scope="repository:library/ubuntu:pull""#
                        .into(),
                }),
            ),
            (
                "Bearer",
                Err(ChallengeError::BearerWithoutRealm {
                    header: "Bearer".into(),
                }),
            ),
            (
                r#"Bearer realm="""#,
                Err(ChallengeError::BearerWithoutRealm {
                    header: r#"Bearer realm="""#.into(),
                }),
            ),
            (
                "Bearer abcdef",
                Err(ChallengeError::BearerWithoutRealm {
                    header: "Bearer abcdef".into(),
                }),
            ),
            (
                "",
                Err(ChallengeError::NoChallenge { header: "".into() }),
            ),
            (
                " ,\t, ",
                Err(ChallengeError::NoChallenge {
                    header: " ,\t, ".into(),
                }),
            ),
            (
                r#"Bearer realm="https://a.example/t"#,
                Err(malformed(r#"Bearer realm="https://a.example/t"#, 13, "unterminated quoted string")),
            ),
            (
                r#"Basic realm="x\"#,
                Err(malformed(r#"Basic realm="x\"#, 12, "unterminated quoted string")),
            ),
            (
                // "realm=" is a valid token68, so this is a bearer challenge
                // with a token68 and no realm.
                "Bearer realm=",
                Err(ChallengeError::BearerWithoutRealm {
                    header: "Bearer realm=".into(),
                }),
            ),
            (
                "Bearer realm=,",
                Err(ChallengeError::BearerWithoutRealm {
                    header: "Bearer realm=,".into(),
                }),
            ),
            (
                "Bearer scope=x, realm=",
                Err(malformed("Bearer scope=x, realm=", 22, "expected an auth-param value")),
            ),
            (
                r#"Bearer realm="https://a.example/t" junk"#,
                Err(malformed(
                    r#"Bearer realm="https://a.example/t" junk"#,
                    35,
                    "expected ',' after an auth-param",
                )),
            ),
            (
                "Bearer realm=https://a.example/t",
                Err(malformed(
                    "Bearer realm=https://a.example/t",
                    18,
                    "expected ',' after an auth-param",
                )),
            ),
            (
                r#"="x""#,
                Err(malformed(r#"="x""#, 0, "expected an auth scheme")),
            ),
            (
                r#"Basic"realm""#,
                Err(malformed(r#"Basic"realm""#, 5, "expected a space after the auth scheme")),
            ),
            (
                "Basic abc==, realm=x",
                Err(malformed("Basic abc==, realm=x", 13, "auth-param after a token68")),
            ),
            (
                "Basic realm=\"a\u{1}b\"",
                Err(malformed("Basic realm=\"a\u{1}b\"", 14, "control character in a quoted string")),
            ),
            (
                "Basic realm=\"a\\\nb\"",
                Err(malformed("Basic realm=\"a\\\nb\"", 15, "control character in a quoted string")),
            ),
            (
                "Basic realm=x;y",
                Err(malformed("Basic realm=x;y", 13, "expected ',' after an auth-param")),
            ),
            (
                r#"Bearer realm="https://a.example/t",Realm="https://evil.example/t""#,
                Err(ChallengeError::DuplicateParameter {
                    header: r#"Bearer realm="https://a.example/t",Realm="https://evil.example/t""#.into(),
                    scheme: "bearer".into(),
                    parameter: "realm".into(),
                }),
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(parse_www_authenticate(header), expected, "{header:?}");
        }
    }

    #[test]
    fn header_length_is_bounded() {
        let at_limit = format!("Basic realm=\"{}\"", "r".repeat(HEADER_BYTES_MAX - 14));
        assert_eq!(at_limit.len(), HEADER_BYTES_MAX);
        assert!(parse_www_authenticate(&at_limit).is_ok());
        let over = format!("{at_limit} ");
        assert_eq!(
            parse_www_authenticate(&over),
            Err(ChallengeError::HeaderTooLong {
                length_bytes: HEADER_BYTES_MAX + 1,
                max_bytes: HEADER_BYTES_MAX,
            })
        );
        // Many tiny challenges are fine within the limit.
        let many = vec!["Basic"; 2000].join(",");
        assert_eq!(parse_www_authenticate(&many).map(|all| all.len()), Ok(2000));
    }

    /// Realm, service, scopes, and the expected URL.
    type TokenUrlCase = (
        &'static str,
        Option<&'static str>,
        Vec<String>,
        Result<String, ChallengeError>,
    );

    #[test]
    fn token_request_url_table() {
        let scopes = |items: &[&str]| -> Vec<String> {
            items.iter().map(|item| (*item).to_owned()).collect()
        };
        let cases: Vec<TokenUrlCase> = vec![
            (
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                scopes(&["repository:library/ubuntu:pull"]),
                Ok("https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%2Fubuntu%3Apull".into()),
            ),
            (
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                scopes(&["repository:library/ubuntu:pull", "repository:library/busybox:pull,push"]),
                Ok("https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%2Fubuntu%3Apull&scope=repository%3Alibrary%2Fbusybox%3Apull%2Cpush".into()),
            ),
            (
                "https://registry.example:5001/auth?client=cri&x=1",
                None,
                scopes(&["repository:localhost:5000/a b&c=d:pull"]),
                Ok("https://registry.example:5001/auth?client=cri&x=1&scope=repository%3Alocalhost%3A5000%2Fa+b%26c%3Dd%3Apull".into()),
            ),
            (
                "https://auth.example/token",
                None,
                Vec::new(),
                Ok("https://auth.example/token".into()),
            ),
            (
                "http://[::1]:8080/token#fragment",
                Some("local"),
                Vec::new(),
                Ok("http://[::1]:8080/token?service=local".into()),
            ),
            (
                "HTTPS://Auth.Example/token",
                Some("s"),
                Vec::new(),
                Ok("https://auth.example/token?service=s".into()),
            ),
            (
                "ftp://auth.example/token",
                Some("s"),
                Vec::new(),
                Err(ChallengeError::RealmNotHttp {
                    realm: "ftp://auth.example/token".into(),
                }),
            ),
            (
                "file:///etc/passwd",
                None,
                Vec::new(),
                Err(ChallengeError::RealmNotHttp {
                    realm: "file:///etc/passwd".into(),
                }),
            ),
            (
                "/token",
                None,
                Vec::new(),
                Err(ChallengeError::InvalidRealm {
                    realm: "/token".into(),
                    reason: "relative URL without a base".into(),
                }),
            ),
            (
                "https://",
                None,
                Vec::new(),
                Err(ChallengeError::InvalidRealm {
                    realm: "https://".into(),
                    reason: "empty host".into(),
                }),
            ),
        ];
        for (realm, service, scopes, expected) in cases {
            assert_eq!(
                token_request_url(realm, service, &scopes),
                expected,
                "{realm}"
            );
        }
    }

    #[test]
    fn docker_hub_challenge_to_token_url() {
        let challenges = parse_www_authenticate(DOCKER_HUB).expect("docker hub challenge parses");
        let [
            Challenge::Bearer {
                realm,
                service,
                scope,
                ..
            },
        ] = challenges.as_slice()
        else {
            panic!("one bearer challenge: {challenges:?}");
        };
        let scopes: Vec<String> = scope.iter().cloned().collect();
        assert_eq!(
            token_request_url(realm, service.as_deref(), &scopes).as_deref(),
            Ok(
                "https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%2Fubuntu%3Apull"
            )
        );
    }

    #[test]
    fn error_messages_are_lowercase_and_bounded() {
        let long = format!("Bearer service=\"{}\"", "s".repeat(10_000));
        let error = parse_www_authenticate(&long).expect_err("no realm");
        let message = error.to_string();
        assert!(message.len() < 400, "{} bytes", message.len());
        assert!(
            message.starts_with("bearer challenge without a realm"),
            "{message}"
        );
        for message in [
            message,
            parse_www_authenticate("=").expect_err("bad").to_string(),
            token_request_url("ftp://x", None, &[])
                .expect_err("ftp")
                .to_string(),
        ] {
            assert!(!message.ends_with('.'), "{message}");
            assert!(
                message
                    .chars()
                    .next()
                    .is_some_and(|first| !first.is_uppercase()),
                "{message}"
            );
        }
    }
}
