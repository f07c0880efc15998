//! The content digest, `algorithm ":" encoded`, as used for blobs, manifests and
//! image ids. Only SHA-256 and SHA-512 are accepted, because those are the only
//! hashes this daemon can verify; a digest naming any other algorithm is
//! rejected at parse time instead of failing later at verification.

use std::fmt;
use std::str::FromStr;

use super::bounded_echo;

/// A hash algorithm that this daemon can compute and therefore verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestAlgorithm {
    Sha256,
    Sha512,
}

/// A validated digest such as `sha256:<64 lowercase hex>`.
///
/// The only ways to build one are [`Digest::parse`] (and [`FromStr`], which
/// calls it) and the `from_*_bytes` constructors for hash output, so every
/// value has a supported algorithm and an encoded part of exactly the right
/// length in lowercase hex.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    // `text` comes first so that the derived ordering is the ordering of the
    // printed form. `algorithm` is redundant with the prefix of `text`; it is
    // kept so that `algorithm()` and `hex()` need no re-parsing.
    text: String,
    algorithm: DigestAlgorithm,
}

/// Why a string is not a valid [`Digest`]. Every variant carries the offending
/// part, cut to a bounded length.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestError {
    #[error("empty digest")]
    Empty,
    #[error("digest {input:?} has no ':' between algorithm and encoded part")]
    MissingAlgorithmSeparator { input: String },
    #[error("invalid digest algorithm {algorithm:?}")]
    InvalidAlgorithm { algorithm: String },
    #[error("unsupported digest algorithm {algorithm:?}: only sha256 and sha512 are supported")]
    UnsupportedAlgorithm { algorithm: String },
    #[error("{algorithm} digest encoded part {encoded:?} is not lowercase hex")]
    InvalidHex {
        algorithm: DigestAlgorithm,
        encoded: String,
    },
    #[error("{algorithm} digest must have {expected} hex characters, found {actual}")]
    WrongLength {
        algorithm: DigestAlgorithm,
        expected: usize,
        actual: usize,
    },
}

impl DigestAlgorithm {
    /// The algorithm's name as written before the `:` of a digest.
    pub fn name(&self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Sha512 => "sha512",
        }
    }

    /// The number of hex characters in the encoded part: two per output byte.
    pub fn hex_len(&self) -> usize {
        match self {
            DigestAlgorithm::Sha256 => 64,
            DigestAlgorithm::Sha512 => 128,
        }
    }

    fn from_name(name: &str) -> Option<DigestAlgorithm> {
        match name {
            "sha256" => Some(DigestAlgorithm::Sha256),
            "sha512" => Some(DigestAlgorithm::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Digest {
    /// Parses `algorithm ":" encoded` (OCI image-spec digest grammar) and accepts
    /// it only for sha256 (64 lowercase hex) and sha512 (128 lowercase hex).
    ///
    /// The checks run in this order, and the first failure is reported: a `:`
    /// is present, the algorithm matches `[a-z0-9]+([+._-][a-z0-9]+)*`, the
    /// algorithm is supported, the encoded part is lowercase hex, and it has
    /// the algorithm's length. Uppercase hex is rejected rather than folded,
    /// because the digest string is also a storage key and must have one
    /// spelling.
    pub fn parse(input: &str) -> Result<Digest, DigestError> {
        if input.is_empty() {
            return Err(DigestError::Empty);
        }
        let Some((algorithm_text, encoded)) = input.split_once(':') else {
            return Err(DigestError::MissingAlgorithmSeparator {
                input: bounded_echo(input),
            });
        };
        if !is_algorithm_grammar(algorithm_text) {
            return Err(DigestError::InvalidAlgorithm {
                algorithm: bounded_echo(algorithm_text),
            });
        }
        let Some(algorithm) = DigestAlgorithm::from_name(algorithm_text) else {
            return Err(DigestError::UnsupportedAlgorithm {
                algorithm: bounded_echo(algorithm_text),
            });
        };
        if !encoded.bytes().all(is_lowercase_hex_byte) {
            return Err(DigestError::InvalidHex {
                algorithm,
                encoded: bounded_echo(encoded),
            });
        }
        // Every byte is ASCII at this point, so the byte length is the
        // character count.
        if encoded.len() != algorithm.hex_len() {
            return Err(DigestError::WrongLength {
                algorithm,
                expected: algorithm.hex_len(),
                actual: encoded.len(),
            });
        }
        Ok(Digest {
            text: input.to_owned(),
            algorithm,
        })
    }

    /// Builds the digest of a SHA-256 hash output; valid by construction.
    pub fn from_sha256_bytes(bytes: [u8; 32]) -> Digest {
        Digest::from_hash_output(DigestAlgorithm::Sha256, &bytes)
    }

    /// Builds the digest of a SHA-512 hash output; valid by construction.
    pub fn from_sha512_bytes(bytes: [u8; 64]) -> Digest {
        Digest::from_hash_output(DigestAlgorithm::Sha512, &bytes)
    }

    pub fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    /// The encoded part after the `:`, in lowercase hex.
    pub fn hex(&self) -> &str {
        // The algorithm name is ASCII and is followed by exactly one ':'.
        &self.text[self.algorithm.name().len() + 1..]
    }

    /// The whole digest, `"<algorithm>:<hex>"`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn from_hash_output(algorithm: DigestAlgorithm, bytes: &[u8]) -> Digest {
        const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(algorithm.name().len() + 1 + algorithm.hex_len());
        text.push_str(algorithm.name());
        text.push(':');
        for byte in bytes {
            text.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            text.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
        }
        Digest { text, algorithm }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Digest").field(&self.text).finish()
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(input: &str) -> Result<Digest, DigestError> {
        Digest::parse(input)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

fn is_lowercase_hex_byte(byte: u8) -> bool {
    matches!(byte, b'0'..=b'9' | b'a'..=b'f')
}

/// `[a-z0-9]+([+._-][a-z0-9]+)*`: components of lowercase letters and digits
/// joined by single separators, never starting or ending with one.
fn is_algorithm_grammar(algorithm: &str) -> bool {
    let mut previous_was_separator = true;
    for byte in algorithm.bytes() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' => previous_was_separator = false,
            b'+' | b'.' | b'_' | b'-' if !previous_was_separator => previous_was_separator = true,
            _ => return false,
        }
    }
    // An empty algorithm also ends here with `previous_was_separator` still set.
    !previous_was_separator
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    enum Expect {
        Valid(DigestAlgorithm),
        Invalid(DigestError),
    }

    fn hex_of_len(len: usize) -> String {
        "0123456789abcdef".chars().cycle().take(len).collect()
    }

    fn cases() -> Vec<(String, Expect)> {
        use DigestAlgorithm::{Sha256, Sha512};
        use Expect::{Invalid, Valid};
        let hex_128 = hex_of_len(128);
        let huge = format!("sha256:{}", "g".repeat(1 << 20));
        vec![
            (format!("sha256:{HEX_64}"), Valid(Sha256)),
            (format!("sha512:{hex_128}"), Valid(Sha512)),
            (format!("sha256:{}", "0".repeat(64)), Valid(Sha256)),
            (String::new(), Invalid(DigestError::Empty)),
            (
                HEX_64.to_owned(),
                Invalid(DigestError::MissingAlgorithmSeparator {
                    input: HEX_64.to_owned(),
                }),
            ),
            (
                format!(":{HEX_64}"),
                Invalid(DigestError::InvalidAlgorithm {
                    algorithm: String::new(),
                }),
            ),
            (
                format!("SHA256:{HEX_64}"),
                Invalid(DigestError::InvalidAlgorithm {
                    algorithm: "SHA256".into(),
                }),
            ),
            (
                format!("sha256+:{HEX_64}"),
                Invalid(DigestError::InvalidAlgorithm {
                    algorithm: "sha256+".into(),
                }),
            ),
            (
                format!("sha..256:{HEX_64}"),
                Invalid(DigestError::InvalidAlgorithm {
                    algorithm: "sha..256".into(),
                }),
            ),
            (
                format!(" sha256:{HEX_64}"),
                Invalid(DigestError::InvalidAlgorithm {
                    algorithm: " sha256".into(),
                }),
            ),
            (
                format!("blake3:{HEX_64}"),
                Invalid(DigestError::UnsupportedAlgorithm {
                    algorithm: "blake3".into(),
                }),
            ),
            (
                "md5:d41d8cd98f00b204e9800998ecf8427e".into(),
                Invalid(DigestError::UnsupportedAlgorithm {
                    algorithm: "md5".into(),
                }),
            ),
            (
                format!("sha256+b64u:{HEX_64}"),
                Invalid(DigestError::UnsupportedAlgorithm {
                    algorithm: "sha256+b64u".into(),
                }),
            ),
            (
                format!("sha256:{}", HEX_64.to_uppercase()),
                Invalid(DigestError::InvalidHex {
                    algorithm: Sha256,
                    encoded: HEX_64.to_uppercase(),
                }),
            ),
            (
                format!("sha256:{}", "g".repeat(64)),
                Invalid(DigestError::InvalidHex {
                    algorithm: Sha256,
                    encoded: "g".repeat(64),
                }),
            ),
            (
                format!("sha256:{}:", &HEX_64[..63]),
                Invalid(DigestError::InvalidHex {
                    algorithm: Sha256,
                    encoded: format!("{}:", &HEX_64[..63]),
                }),
            ),
            (
                format!("sha256:{HEX_64}\n"),
                Invalid(DigestError::InvalidHex {
                    algorithm: Sha256,
                    encoded: format!("{HEX_64}\n"),
                }),
            ),
            (
                format!("sha256:{}é", &HEX_64[..63]),
                Invalid(DigestError::InvalidHex {
                    algorithm: Sha256,
                    encoded: format!("{}é", &HEX_64[..63]),
                }),
            ),
            (
                "sha256:".into(),
                Invalid(DigestError::WrongLength {
                    algorithm: Sha256,
                    expected: 64,
                    actual: 0,
                }),
            ),
            (
                format!("sha256:{}", hex_of_len(63)),
                Invalid(DigestError::WrongLength {
                    algorithm: Sha256,
                    expected: 64,
                    actual: 63,
                }),
            ),
            (
                format!("sha256:{}", hex_of_len(65)),
                Invalid(DigestError::WrongLength {
                    algorithm: Sha256,
                    expected: 64,
                    actual: 65,
                }),
            ),
            (
                format!("sha512:{HEX_64}"),
                Invalid(DigestError::WrongLength {
                    algorithm: Sha512,
                    expected: 128,
                    actual: 64,
                }),
            ),
            (
                format!("sha256:{hex_128}"),
                Invalid(DigestError::WrongLength {
                    algorithm: Sha256,
                    expected: 64,
                    actual: 128,
                }),
            ),
            (
                huge,
                Invalid(DigestError::InvalidHex {
                    algorithm: Sha256,
                    encoded: format!("{}…", "g".repeat(100)),
                }),
            ),
        ]
    }

    #[test]
    fn parse_table() {
        for (input, expect) in cases() {
            let parsed = Digest::parse(&input);
            match expect {
                Expect::Valid(algorithm) => {
                    let digest = parsed.unwrap_or_else(|error| panic!("{input:?}: {error}"));
                    assert_eq!(digest.algorithm(), algorithm, "{input:?}");
                    assert_eq!(digest.as_str(), input);
                    assert_eq!(digest.to_string(), input);
                    assert_eq!(
                        format!("{}:{}", algorithm.name(), digest.hex()),
                        input,
                        "hex() must be the part after the separator"
                    );
                    assert_eq!(digest.hex().len(), algorithm.hex_len());
                    assert_eq!(Digest::parse(digest.as_str()), Ok(digest.clone()));
                    assert_eq!(input.parse::<Digest>(), Ok(digest));
                }
                Expect::Invalid(expected_error) => {
                    assert_eq!(parsed, Err(expected_error), "{:?}", bounded_echo(&input));
                }
            }
        }
    }

    #[test]
    fn constructors_from_hash_output_match_parse() {
        let mut sha256_bytes = [0u8; 32];
        for (index, byte) in sha256_bytes.iter_mut().enumerate() {
            *byte = u8::try_from(index).unwrap_or(u8::MAX);
        }
        let digest = Digest::from_sha256_bytes(sha256_bytes);
        let expected = "sha256:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        assert_eq!(digest.as_str(), expected);
        assert_eq!(Digest::parse(expected), Ok(digest.clone()));
        assert_eq!(digest.algorithm(), DigestAlgorithm::Sha256);

        let digest = Digest::from_sha512_bytes([0xff; 64]);
        assert_eq!(digest.hex(), "f".repeat(128));
        assert_eq!(Digest::parse(digest.as_str()), Ok(digest));
    }

    #[test]
    fn debug_and_display_forms() {
        let digest = Digest::parse(&format!("sha256:{HEX_64}")).expect("valid digest");
        assert_eq!(
            format!("{digest:?}"),
            format!("Digest(\"sha256:{HEX_64}\")")
        );
        assert_eq!(format!("{digest}"), format!("sha256:{HEX_64}"));
        assert_eq!(digest.as_ref(), digest.as_str());
    }

    #[test]
    fn error_messages_are_lowercase_and_bounded() {
        let huge = "x".repeat(1 << 20);
        let error = Digest::parse(&huge).expect_err("no separator");
        let message = error.to_string();
        assert!(message.len() < 300, "message is {} bytes", message.len());
        assert!(message.starts_with("digest \"xxx"), "{message}");
        assert!(!message.ends_with('.'));

        let message = Digest::parse("sha256:ab").expect_err("short").to_string();
        assert_eq!(
            message,
            "sha256 digest must have 64 hex characters, found 2"
        );
    }
}
