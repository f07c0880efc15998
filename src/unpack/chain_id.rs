//! Chain ids: the key of an unpacked layer stack, from its diff ids.

use crate::reference::{Digest, DigestHasher};

/// The chain id of each prefix of `diff_ids` (base layer first), by the OCI
/// rule: `ChainID(L0) = DiffID(L0)` and
/// `ChainID(L0|…|Ln) = sha256(ChainID(L0|…|Ln-1) + " " + DiffID(Ln))`, the
/// two digests in their `algorithm:hex` text form.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut chain_ids: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let chain_id = match chain_ids.last() {
            None => diff_id.clone(),
            Some(parent) => DigestHasher::sha256_of(format!("{parent} {diff_id}").as_bytes()),
        };
        chain_ids.push(chain_id);
    }
    chain_ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(text: &str) -> Digest {
        Digest::parse(text).expect("valid digest")
    }

    /// Expected values computed independently with coreutils:
    /// `printf '%s %s' "$A" "$B" | sha256sum`, where A, B and C are the
    /// sha256 digests of "a", "b" and "c".
    #[test]
    fn known_answers() {
        let a = digest("sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb");
        let b = digest("sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d");
        let c = digest("sha256:2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6");
        assert_eq!(DigestHasher::sha256_of(b"a"), a);
        let chain = chain_ids(&[a.clone(), b, c]);
        assert_eq!(
            chain,
            vec![
                a,
                digest("sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676"),
                digest("sha256:2fce7f8ce91bcf0a1428b36e1024639fdbd9469eea762dba98aa749631885106"),
            ]
        );
        assert!(chain_ids(&[]).is_empty());
    }
}
