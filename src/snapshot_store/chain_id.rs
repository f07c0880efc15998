//! Chain ids: the identity of a layer together with everything below it.
//!
//! `ChainID(L0) = DiffID(L0)`, and `ChainID(L0..Ln)` is the sha256 of
//! `ChainID(L0..Ln-1)`, a space and `DiffID(Ln)`, written `sha256:<hex>` (OCI
//! image spec, config.md). Snapshots are keyed by chain id, so two images that
//! share a base share its snapshots.

use crate::reference::{Digest, DigestHasher};

/// The chain id of every prefix of `diff_ids`, base first.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut chain: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => DigestHasher::sha256_of(format!("{parent} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = DigestHasher::sha256_of(b"layer a");
        let b = DigestHasher::sha256_of(b"layer b");
        let c = DigestHasher::sha256_of(b"layer c");
        let chain = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(chain[0], a);
        let ab = DigestHasher::sha256_of(format!("{a} {b}").as_bytes());
        assert_eq!(chain[1], ab);
        assert_eq!(
            chain[2],
            DigestHasher::sha256_of(format!("{ab} {c}").as_bytes())
        );
        assert!(chain_ids(&[]).is_empty());
        // Known answer: sha256("sha256:aaa…a sha256:bbb…b").
        let known = chain_ids(&[
            Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap(),
            Digest::parse(&format!("sha256:{}", "b".repeat(64))).unwrap(),
        ]);
        let mut hasher = DigestHasher::new(crate::reference::DigestAlgorithm::Sha256);
        hasher.update(format!("sha256:{} sha256:{}", "a".repeat(64), "b".repeat(64)).as_bytes());
        assert_eq!(known[1], hasher.finish());
    }
}
