//! Incremental hashing that ends in a [`Digest`] of the same algorithm as the
//! one expected, so verifying a stream is "feed every byte, then compare".

use sha2::Digest as _;

use crate::reference::{Digest, DigestAlgorithm};

/// Hashes bytes with one of the supported digest algorithms.
#[derive(Clone)]
pub enum DigestHasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl DigestHasher {
    pub fn new(algorithm: DigestAlgorithm) -> DigestHasher {
        match algorithm {
            DigestAlgorithm::Sha256 => DigestHasher::Sha256(sha2::Sha256::new()),
            DigestAlgorithm::Sha512 => DigestHasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> DigestAlgorithm {
        match self {
            DigestHasher::Sha256(_) => DigestAlgorithm::Sha256,
            DigestHasher::Sha512(_) => DigestAlgorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            DigestHasher::Sha256(hasher) => hasher.update(bytes),
            DigestHasher::Sha512(hasher) => hasher.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            DigestHasher::Sha256(hasher) => Digest::from_sha256_bytes(hasher.finalize().into()),
            DigestHasher::Sha512(hasher) => Digest::from_sha512_bytes(hasher.finalize().into()),
        }
    }

    /// The sha256 digest of `bytes` in one call.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        let mut hasher = DigestHasher::new(DigestAlgorithm::Sha256);
        hasher.update(bytes);
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        assert_eq!(
            DigestHasher::sha256_of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut hasher = DigestHasher::new(DigestAlgorithm::Sha512);
        hasher.update(b"a");
        hasher.update(b"bc");
        assert_eq!(
            hasher.finish().as_str(),
            "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }
}
