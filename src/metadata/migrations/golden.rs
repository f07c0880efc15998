//! Writers of the golden databases in `migrations/golden/` and the sample they
//! hold. `cargo run --example write_golden_databases` calls these once per
//! released schema; the files are then committed and never rewritten, and
//! `tests/migrations.rs` opens each one, upgrades it, and compares it record by
//! record with [`golden_sample`].
//!
//! FROZEN: the sample and `write_v1` describe what schema v1 wrote. Changing them
//! would no longer describe the committed file.

use std::collections::BTreeMap;
use std::path::Path;

use crate::metadata::MetadataStore;
use crate::metadata::error::{MetadataError, OpenError};
use crate::metadata::model::{
    Blob, BlobState, Image, ImageState, Ingest, Lease, LeaseResource, Snapshot, SnapshotState,
};
use crate::metadata::records::{
    self, BlobRecord, ImageRecord, IngestRecord, LeaseRecord, ReferenceRecord, SnapshotRecord,
};
use crate::metadata::tables::{self, meta_keys};
use crate::oci::Descriptor;
use crate::reference::{Digest, ImageReference};

/// Everything the golden databases hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoldenSample {
    /// Each image with the names pointing at it.
    pub images: Vec<(Image, Vec<ImageReference>)>,
    pub blobs: Vec<Blob>,
    pub snapshots: Vec<Snapshot>,
    pub leases: Vec<(Lease, Vec<LeaseResource>)>,
    pub ingests: Vec<Ingest>,
    pub boot_id: String,
}

/// A digest made of one repeated byte: readable in a hex dump and valid.
pub fn sample_digest(byte: u8) -> Digest {
    Digest::parse(&format!("sha256:{}", format!("{byte:02x}").repeat(32)))
        .expect("a repeated hex byte is a valid sha256 digest")
}

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const TIME_UNIX_MS: u64 = 1_763_900_000_000;

fn reference(text: &str) -> ImageReference {
    ImageReference::parse_docker_ref(text).expect("sample names are valid references")
}

/// The frozen sample: a ready image pulled through an index with two names and a
/// two-layer snapshot chain, a ready single-manifest image, an image left
/// `pulling` under a lease with an ingest in progress, and a `gc_pending` one.
pub fn golden_sample() -> GoldenSample {
    let blob = |byte: u8, media_type: &str, size_bytes: u64, children: Vec<Digest>| Blob {
        digest: sample_digest(byte),
        media_type: media_type.to_owned(),
        size_bytes,
        state: BlobState::Present,
        children,
        created_unix_ms: TIME_UNIX_MS + u64::from(byte),
    };
    let image = |target: (u8, &str, u64), manifest: (u8, u64), config: (u8, u64)| Image {
        target: Descriptor::new(target.1, sample_digest(target.0), target.2),
        manifest: Descriptor::new(MANIFEST_TYPE, sample_digest(manifest.0), manifest.1),
        config: Descriptor::new(CONFIG_TYPE, sample_digest(config.0), config.1),
        top_chain_id: None,
        size_bytes: 0,
        state: ImageState::Ready,
        pinned: false,
        config_user: String::new(),
        annotations: BTreeMap::new(),
        created_unix_ms: TIME_UNIX_MS,
        updated_unix_ms: TIME_UNIX_MS + 1,
    };

    let mut busybox = image((0x10, INDEX_TYPE, 900), (0x11, 700), (0x12, 1500));
    busybox.top_chain_id = Some(sample_digest(0x31));
    busybox.size_bytes = 700 + 1500 + 4000 + 6000;
    busybox.config_user = "1000:1000".to_owned();
    busybox.annotations.insert(
        "org.opencontainers.image.title".to_owned(),
        "busybox".to_owned(),
    );

    let mut pause = image((0x20, MANIFEST_TYPE, 500), (0x20, 500), (0x21, 800));
    pause.pinned = true;
    pause.config_user = "nobody".to_owned();
    pause.size_bytes = 500 + 800;

    let mut pulling = image((0x40, MANIFEST_TYPE, 600), (0x40, 600), (0x41, 700));
    pulling.state = ImageState::Pulling;
    let mut abandoned = image((0x50, MANIFEST_TYPE, 600), (0x50, 600), (0x51, 700));
    abandoned.state = ImageState::GcPending;

    let pull_lease = Lease {
        id: "pull-7f3e".to_owned(),
        created_unix_ms: TIME_UNIX_MS,
        expires_unix_ms: TIME_UNIX_MS + 600_000,
        boot_id: "6d1c1c3e-1111-4c1c-9c1c-000000000001".to_owned(),
        labels: BTreeMap::from([(
            "cri-imaged/reference".to_owned(),
            "docker.io/library/nginx:1.27".to_owned(),
        )]),
    };

    GoldenSample {
        images: vec![
            (
                busybox,
                vec![
                    reference("busybox:1.36"),
                    reference("quay.io/mirror/busybox:1.36"),
                    reference(&format!("busybox@{}", sample_digest(0x10))),
                ],
            ),
            (pause, vec![reference("registry.k8s.io/pause:3.10")]),
            (pulling, vec![]),
            (abandoned, vec![]),
        ],
        blobs: vec![
            blob(0x10, INDEX_TYPE, 900, vec![sample_digest(0x11)]),
            blob(
                0x11,
                MANIFEST_TYPE,
                700,
                vec![
                    sample_digest(0x12),
                    sample_digest(0x13),
                    sample_digest(0x14),
                ],
            ),
            blob(0x12, CONFIG_TYPE, 1500, vec![]),
            blob(0x13, LAYER_TYPE, 4000, vec![]),
            blob(0x14, LAYER_TYPE, 6000, vec![]),
            blob(0x20, MANIFEST_TYPE, 500, vec![sample_digest(0x21)]),
            blob(0x21, CONFIG_TYPE, 800, vec![]),
            blob(0x40, MANIFEST_TYPE, 600, vec![sample_digest(0x41)]),
        ],
        snapshots: vec![
            Snapshot {
                chain_id: sample_digest(0x30),
                parent: None,
                diff_id: sample_digest(0x30),
                size_bytes: 9000,
                inodes: 120,
                state: SnapshotState::Committed,
                created_unix_ms: TIME_UNIX_MS,
            },
            Snapshot {
                chain_id: sample_digest(0x31),
                parent: Some(sample_digest(0x30)),
                diff_id: sample_digest(0x32),
                size_bytes: 12000,
                inodes: 33,
                state: SnapshotState::Committed,
                created_unix_ms: TIME_UNIX_MS,
            },
        ],
        leases: vec![(
            pull_lease,
            vec![
                LeaseResource::Image(sample_digest(0x41)),
                LeaseResource::Blob(sample_digest(0x40)),
                LeaseResource::Ingest("pull-7f3e/layer-0".to_owned()),
            ],
        )],
        ingests: vec![Ingest {
            key: "pull-7f3e/layer-0".to_owned(),
            expected_digest: sample_digest(0x42),
            expected_size_bytes: 1_048_576,
            offset_bytes: 65_536,
            started_unix_ms: TIME_UNIX_MS,
            updated_unix_ms: TIME_UNIX_MS + 5,
        }],
        boot_id: "6d1c1c3e-1111-4c1c-9c1c-000000000001".to_owned(),
    }
}

/// Writes the sample in the exact layout schema v1 used: every table but
/// `images_by_state`, with the same record encodings, and version 1 in `meta`.
pub fn write_v1(path: &Path) -> Result<(), MetadataError> {
    let sample = golden_sample();
    let db = redb::Database::create(path).map_err(MetadataError::storage("create database"))?;
    let txn = db
        .begin_write()
        .map_err(MetadataError::storage("begin write"))?;
    {
        let mut meta = txn.open_table(tables::META).map_err(golden_write_failed)?;
        meta.insert(meta_keys::SCHEMA_VERSION, 1u64.to_le_bytes().as_slice())
            .map_err(golden_write_failed)?;
        meta.insert(meta_keys::BOOT_ID, sample.boot_id.as_bytes())
            .map_err(golden_write_failed)?;
        let mut images = txn
            .open_table(tables::IMAGES)
            .map_err(golden_write_failed)?;
        let mut references = txn
            .open_table(tables::REFERENCES)
            .map_err(golden_write_failed)?;
        let mut names = txn
            .open_multimap_table(tables::IMAGE_NAMES)
            .map_err(golden_write_failed)?;
        for (image, image_names) in &sample.images {
            images
                .insert(
                    image.id().as_str(),
                    records::encode(&ImageRecord::from_domain(image)).as_slice(),
                )
                .map_err(golden_write_failed)?;
            for name in image_names {
                let record = ReferenceRecord {
                    image_id: image.id().to_string(),
                    updated_unix_ms: TIME_UNIX_MS,
                };
                references
                    .insert(
                        name.to_string().as_str(),
                        records::encode(&record).as_slice(),
                    )
                    .map_err(golden_write_failed)?;
                names
                    .insert(image.id().as_str(), name.to_string().as_str())
                    .map_err(golden_write_failed)?;
            }
        }
        let mut blobs = txn.open_table(tables::BLOBS).map_err(golden_write_failed)?;
        for blob in &sample.blobs {
            blobs
                .insert(
                    blob.digest.as_str(),
                    records::encode(&BlobRecord::from_domain(blob)).as_slice(),
                )
                .map_err(golden_write_failed)?;
        }
        let mut snapshots = txn
            .open_table(tables::SNAPSHOTS)
            .map_err(golden_write_failed)?;
        for snapshot in &sample.snapshots {
            snapshots
                .insert(
                    snapshot.chain_id.as_str(),
                    records::encode(&SnapshotRecord::from_domain(snapshot)).as_slice(),
                )
                .map_err(golden_write_failed)?;
        }
        let mut leases = txn
            .open_table(tables::LEASES)
            .map_err(golden_write_failed)?;
        let mut resources = txn
            .open_multimap_table(tables::LEASE_RESOURCES)
            .map_err(golden_write_failed)?;
        for (lease, lease_resources) in &sample.leases {
            leases
                .insert(
                    lease.id.as_str(),
                    records::encode(&LeaseRecord::from_domain(lease)).as_slice(),
                )
                .map_err(golden_write_failed)?;
            for resource in lease_resources {
                resources
                    .insert(
                        lease.id.as_str(),
                        records::lease_resource_key(resource).as_str(),
                    )
                    .map_err(golden_write_failed)?;
            }
        }
        let mut ingests = txn
            .open_table(tables::INGESTS)
            .map_err(golden_write_failed)?;
        for ingest in &sample.ingests {
            ingests
                .insert(
                    ingest.key.as_str(),
                    records::encode(&IngestRecord::from_domain(ingest)).as_slice(),
                )
                .map_err(golden_write_failed)?;
        }
    }
    txn.commit().map_err(MetadataError::storage("commit"))
}

fn golden_write_failed(error: impl Into<redb::Error>) -> MetadataError {
    MetadataError::storage("write golden v1 database")(error)
}

/// Writes the sample through the current store API (schema [`super::SCHEMA_VERSION`]).
pub fn write_current(path: &Path) -> Result<(), OpenError> {
    let sample = golden_sample();
    let (store, _) = MetadataStore::open(path)?;
    let wrap = |source: MetadataError| OpenError::Metadata {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    store
        .write(|txn| {
            txn.write_meta(meta_keys::BOOT_ID, sample.boot_id.as_bytes())?;
            for (image, names) in &sample.images {
                txn.put_image(image)?;
                for name in names {
                    txn.set_reference(name, image.id())?;
                }
            }
            for blob in &sample.blobs {
                txn.put_blob(blob)?;
            }
            for snapshot in &sample.snapshots {
                txn.put_snapshot(snapshot)?;
            }
            for (lease, resources) in &sample.leases {
                txn.put_lease(lease)?;
                for resource in resources {
                    txn.attach_to_lease(&lease.id, resource)?;
                }
            }
            for ingest in &sample.ingests {
                txn.put_ingest(ingest)?;
            }
            Ok(())
        })
        .map_err(wrap)
}
