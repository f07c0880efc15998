//! Mark: which records no root reaches. A pure function of the records and
//! the time, so that its rules are tested with plain values.
//!
//! Roots: `ready` images; pinned images; `pulling` images attached to a live
//! lease; every resource attached to a live lease. Edges: image -> target,
//! manifest and config blobs; blob -> its recorded children (an index's
//! manifests, a manifest's config and layers); image -> top snapshot;
//! snapshot -> parent. A `gc_pending` image is never a root: it is what a
//! crash or a broken image left behind, and goes with whatever only it reaches.

use std::collections::{BTreeMap, BTreeSet};

use crate::metadata::{Blob, Image, ImageState, Ingest, Lease, LeaseResource, Snapshot};
use crate::reference::Digest;

/// Every record gc looks at, read in its write transaction.
#[derive(Clone, Debug, Default)]
pub(crate) struct StoreRecords {
    pub images: Vec<Image>,
    pub blobs: Vec<Blob>,
    pub snapshots: Vec<Snapshot>,
    pub ingests: Vec<Ingest>,
    pub leases: Vec<Lease>,
    pub lease_resources: Vec<(String, LeaseResource)>,
}

/// The records to delete, each list sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Unreachable {
    pub images: Vec<Digest>,
    pub blobs: Vec<Digest>,
    pub snapshots: Vec<Digest>,
    pub ingests: Vec<String>,
    /// Ended leases (expired), and ids that only a resource list still names.
    pub leases: Vec<String>,
}

/// The label that marks a grace lease: the one startup reconciliation takes
/// over what pulls interrupted by a restart stored. A pass an operator asks for
/// ends grace leases early.
pub const GRACE_LEASE_LABEL: &str = "cri-imaged/grace";

pub fn is_grace_lease(lease: &Lease) -> bool {
    lease.labels.contains_key(GRACE_LEASE_LABEL)
}

/// Whether `lease` still protects what is attached to it at `now_unix_ms`.
/// An expiry of 0 means the lease never expires (the admin API's convention).
pub fn lease_is_live(lease: &Lease, now_unix_ms: u64) -> bool {
    lease.expires_unix_ms == 0 || lease.expires_unix_ms > now_unix_ms
}

/// `end_grace_leases`: treat grace leases as ended (an operator's pass).
pub(crate) fn find_unreachable(
    records: &StoreRecords,
    now_unix_ms: u64,
    end_grace_leases: bool,
) -> Unreachable {
    let live_leases: BTreeSet<&str> = records
        .leases
        .iter()
        .filter(|lease| lease_is_live(lease, now_unix_ms))
        .filter(|lease| !(end_grace_leases && is_grace_lease(lease)))
        .map(|lease| lease.id.as_str())
        .collect();
    let leased: BTreeSet<&LeaseResource> = records
        .lease_resources
        .iter()
        .filter(|(lease_id, _)| live_leases.contains(lease_id.as_str()))
        .map(|(_, resource)| resource)
        .collect();

    let root_images: BTreeSet<&Digest> = records
        .images
        .iter()
        .filter(|image| match image.state {
            ImageState::Ready => true,
            ImageState::Pulling => {
                image.pinned || leased.contains(&LeaseResource::Image(image.id().clone()))
            }
            ImageState::GcPending => false,
        })
        .map(Image::id)
        .collect();

    let children: BTreeMap<&Digest, &[Digest]> = records
        .blobs
        .iter()
        .map(|blob| (&blob.digest, blob.children.as_slice()))
        .collect();
    let mut blobs_to_visit: Vec<&Digest> = Vec::new();
    let mut snapshots_to_visit: Vec<&Digest> = Vec::new();
    for image in records
        .images
        .iter()
        .filter(|image| root_images.contains(image.id()))
    {
        blobs_to_visit.extend([
            &image.target.digest,
            &image.manifest.digest,
            &image.config.digest,
        ]);
        snapshots_to_visit.extend(image.top_chain_id.as_ref());
    }
    let mut reached_ingests: BTreeSet<&str> = BTreeSet::new();
    for resource in &leased {
        match resource {
            LeaseResource::Blob(digest) => blobs_to_visit.push(digest),
            LeaseResource::Snapshot(chain_id) => snapshots_to_visit.push(chain_id),
            LeaseResource::Ingest(key) => {
                reached_ingests.insert(key.as_str());
            }
            // A leased image is a root above (unless gc_pending).
            LeaseResource::Image(_) => {}
        }
    }

    // Each digest is expanded once, so cycles in corrupt child lists end.
    let mut reached_blobs: BTreeSet<&Digest> = BTreeSet::new();
    while let Some(digest) = blobs_to_visit.pop() {
        if reached_blobs.insert(digest)
            && let Some(children) = children.get(digest)
        {
            blobs_to_visit.extend(children.iter());
        }
    }
    let parents: BTreeMap<&Digest, Option<&Digest>> = records
        .snapshots
        .iter()
        .map(|snapshot| (&snapshot.chain_id, snapshot.parent.as_ref()))
        .collect();
    let mut reached_snapshots: BTreeSet<&Digest> = BTreeSet::new();
    while let Some(chain_id) = snapshots_to_visit.pop() {
        if reached_snapshots.insert(chain_id)
            && let Some(Some(parent)) = parents.get(chain_id)
        {
            snapshots_to_visit.push(parent);
        }
    }

    let mut ended_leases: BTreeSet<String> = records
        .leases
        .iter()
        .filter(|lease| !live_leases.contains(lease.id.as_str()))
        .map(|lease| lease.id.clone())
        .collect();
    let lease_ids: BTreeSet<&str> = records
        .leases
        .iter()
        .map(|lease| lease.id.as_str())
        .collect();
    ended_leases.extend(
        records
            .lease_resources
            .iter()
            .filter(|(lease_id, _)| !lease_ids.contains(lease_id.as_str()))
            .map(|(lease_id, _)| lease_id.clone()),
    );

    Unreachable {
        images: sorted(
            records
                .images
                .iter()
                .map(Image::id)
                .filter(|id| !root_images.contains(id)),
        ),
        blobs: sorted(
            records
                .blobs
                .iter()
                .map(|blob| &blob.digest)
                .filter(|digest| !reached_blobs.contains(digest)),
        ),
        snapshots: sorted(
            records
                .snapshots
                .iter()
                .map(|snapshot| &snapshot.chain_id)
                .filter(|chain_id| !reached_snapshots.contains(chain_id)),
        ),
        ingests: records
            .ingests
            .iter()
            .filter(|ingest| !reached_ingests.contains(ingest.key.as_str()))
            .map(|ingest| ingest.key.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        leases: ended_leases.into_iter().collect(),
    }
}

fn sorted<'a>(digests: impl Iterator<Item = &'a Digest>) -> Vec<Digest> {
    let set: BTreeSet<&Digest> = digests.collect();
    set.into_iter().cloned().collect()
}
