//! The record-level invariants of the store, checked in one pass over a
//! snapshot. Used by tests after every kind of change, by `fsck`, and at startup.
//!
//! The invariants (ARCHITECTURE.md lists them too):
//! 1. Every name is a normalized reference and points at an existing image.
//! 2. The reverse name index holds exactly the `(image, name)` pairs of `references`.
//! 3. The state index holds exactly one entry per image, under its current state.
//! 4. A ready image's target, manifest and config blobs are recorded, as is every
//!    child of its manifest (config and layers).
//! 5. A ready image's top snapshot is committed and its whole parent chain is
//!    recorded and committed.
//! 6. Every lease resource list belongs to an existing lease.
//! 7. Every unsynced mark names a committed snapshot.

use std::collections::{BTreeMap, BTreeSet};

use crate::metadata::error::MetadataError;
use crate::metadata::model::{ImageState, SnapshotState};
use crate::metadata::read::ReadSnapshot;
use crate::reference::{Digest, ImageReference};

/// One broken invariant, naming the object it concerns.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsistencyProblem {
    #[error("name {name} is not a normalized image reference")]
    InvalidName { name: String },
    #[error("name {name} points at image {image_id}, which does not exist")]
    DanglingReference { name: String, image_id: Digest },
    #[error("name {name} -> image {image_id} is missing from the reverse name index")]
    NameMissingFromIndex { name: String, image_id: String },
    #[error("reverse name index has {image_id} -> {name}, which the references table does not")]
    StaleNameIndexEntry { image_id: String, name: String },
    #[error("image {image_id} in state {state} is missing from the state index")]
    ImageMissingFromStateIndex { image_id: String, state: ImageState },
    #[error("state index has {image_id} under {state}, which does not match the image record")]
    StaleStateIndexEntry { image_id: String, state: String },
    #[error("ready image {image_id} needs blob {digest}, which is not recorded")]
    ReadyImageMissingBlob { image_id: Digest, digest: Digest },
    #[error(
        "ready image {image_id} needs snapshot {chain_id}, which is not recorded and committed"
    )]
    ReadyImageMissingSnapshot { image_id: Digest, chain_id: Digest },
    #[error("lease resources are recorded for lease {lease_id}, which does not exist")]
    ResourcesOfMissingLease { lease_id: String },
    #[error("snapshot {chain_id} is marked unsynced but is not recorded and committed")]
    UnsyncedMarkOfMissingSnapshot { chain_id: Digest },
}

/// Checks every invariant above and returns each violation found (empty when the
/// store is consistent).
pub fn check_consistency(
    snapshot: &ReadSnapshot,
) -> Result<Vec<ConsistencyProblem>, MetadataError> {
    let mut problems = Vec::new();
    let images = snapshot.list_images()?;
    let image_ids: BTreeSet<&str> = images
        .iter()
        .map(|named| named.image.id().as_str())
        .collect();

    // 1 and 2: names and the reverse index agree exactly.
    let references = snapshot.references()?;
    let mut expected_index: BTreeSet<(String, String)> = BTreeSet::new();
    for (name, image_id) in &references {
        match ImageReference::parse_normalized(name) {
            Ok(reference)
                if reference.to_string() == *name && reference.normalized() == reference => {}
            _ => problems.push(ConsistencyProblem::InvalidName { name: name.clone() }),
        }
        if !image_ids.contains(image_id.as_str()) {
            problems.push(ConsistencyProblem::DanglingReference {
                name: name.clone(),
                image_id: image_id.clone(),
            });
        }
        expected_index.insert((image_id.to_string(), name.clone()));
    }
    let actual_index: BTreeSet<(String, String)> =
        snapshot.image_name_index()?.into_iter().collect();
    for (image_id, name) in expected_index.difference(&actual_index) {
        problems.push(ConsistencyProblem::NameMissingFromIndex {
            name: name.clone(),
            image_id: image_id.clone(),
        });
    }
    for (image_id, name) in actual_index.difference(&expected_index) {
        problems.push(ConsistencyProblem::StaleNameIndexEntry {
            image_id: image_id.clone(),
            name: name.clone(),
        });
    }

    // 3: the state index mirrors the image records.
    let expected_states: BTreeSet<(String, String)> = images
        .iter()
        .map(|named| {
            (
                named.image.state.as_str().to_owned(),
                named.image.id().to_string(),
            )
        })
        .collect();
    let actual_states: BTreeSet<(String, String)> =
        snapshot.image_state_index()?.into_iter().collect();
    for named in &images {
        let key = (
            named.image.state.as_str().to_owned(),
            named.image.id().to_string(),
        );
        if !actual_states.contains(&key) {
            problems.push(ConsistencyProblem::ImageMissingFromStateIndex {
                image_id: named.image.id().to_string(),
                state: named.image.state,
            });
        }
    }
    for (state, image_id) in actual_states.difference(&expected_states) {
        problems.push(ConsistencyProblem::StaleStateIndexEntry {
            image_id: image_id.clone(),
            state: state.clone(),
        });
    }

    // 4 and 5: what a ready image stands on is recorded.
    let blobs: BTreeMap<Digest, Vec<Digest>> = snapshot
        .blobs()?
        .into_iter()
        .map(|blob| (blob.digest, blob.children))
        .collect();
    let snapshots: BTreeMap<Digest, (Option<Digest>, SnapshotState)> = snapshot
        .snapshots()?
        .into_iter()
        .map(|snapshot| (snapshot.chain_id, (snapshot.parent, snapshot.state)))
        .collect();
    for named in images
        .iter()
        .filter(|named| named.image.state == ImageState::Ready)
    {
        let image = &named.image;
        let mut needed: Vec<&Digest> = vec![
            &image.target.digest,
            &image.manifest.digest,
            &image.config.digest,
        ];
        if let Some(children) = blobs.get(&image.manifest.digest) {
            needed.extend(children.iter());
        }
        for digest in needed {
            if !blobs.contains_key(digest) {
                problems.push(ConsistencyProblem::ReadyImageMissingBlob {
                    image_id: image.id().clone(),
                    digest: digest.clone(),
                });
            }
        }
        let mut next = image.top_chain_id.clone();
        // Bounded by the number of snapshots, so a cycle cannot loop forever.
        for _ in 0..=snapshots.len() {
            let Some(chain_id) = next.take() else { break };
            match snapshots.get(&chain_id) {
                Some((parent, SnapshotState::Committed)) => next = parent.clone(),
                _ => problems.push(ConsistencyProblem::ReadyImageMissingSnapshot {
                    image_id: image.id().clone(),
                    chain_id,
                }),
            }
        }
    }

    // 6: no resource list outlives its lease.
    let lease_ids: BTreeSet<String> = snapshot
        .leases()?
        .into_iter()
        .map(|lease| lease.id)
        .collect();
    let orphaned: BTreeSet<String> = snapshot
        .all_lease_resources()?
        .into_iter()
        .map(|(lease_id, _)| lease_id)
        .filter(|lease_id| !lease_ids.contains(lease_id))
        .collect();
    for lease_id in orphaned {
        problems.push(ConsistencyProblem::ResourcesOfMissingLease { lease_id });
    }

    // 7: an unsynced mark names a committed snapshot (it is written in the
    // snapshot's commit and removed with its record).
    for unsynced in snapshot.unsynced_snapshots()? {
        if !matches!(
            snapshots.get(&unsynced.chain_id),
            Some((_, SnapshotState::Committed))
        ) {
            problems.push(ConsistencyProblem::UnsyncedMarkOfMissingSnapshot {
                chain_id: unsynced.chain_id,
            });
        }
    }
    Ok(problems)
}
