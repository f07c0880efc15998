//! Startup reconciliation and the startup gc pass on a large store (issue 6
//! target: under 1 s for 10,000 images and 100,000 blobs).
//!
//! `cargo bench --bench reconcile`. Builds, in a temporary directory on the
//! system temp filesystem, a store of 10,000 ready images (manifest, config
//! and 8 layers each: 100,000 blobs, each with its file) and 10,100 committed
//! snapshots (a top layer per image over 100 shared bases, each a directory),
//! plus what a crash leaves: 100 images `pulling` under leases of an earlier
//! boot. Then it times what the daemon does before it listens: `reconcile`
//! (leases of earlier boots, interrupted images, extracting leftovers, the
//! on-disk check of every ready image) followed by the startup gc pass (mark
//! and sweep of every record and file). The first run finds the crash
//! leftovers; the next runs find a clean store. Prints each run and the median
//! of the clean runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use cri_imaged::fsck::StoreLayout;
use cri_imaged::gc::{GarbageCollector, GcPaths, GcSettings, PassTrigger};
use cri_imaged::metadata::{
    Blob, BlobState, Image, ImageState, Lease, LeaseResource, MetadataStore, Snapshot,
    SnapshotState,
};
use cri_imaged::oci::Descriptor;
use cri_imaged::reference::{Digest, ImageReference};
use cri_imaged::snapshot_store::SnapshotStore;

const IMAGES: u32 = 10_000;
const LAYERS_PER_IMAGE: u32 = 8;
const SHARED_BASES: u32 = 100;
const INTERRUPTED_PULLS: u32 = 100;
const CLEAN_RUNS: usize = 5;
const NOW_MS: u64 = 1_763_900_000_000;

fn digest(kind: u8, number: u32) -> Digest {
    Digest::parse(&format!("sha256:{kind:02x}{number:062x}")).unwrap()
}

fn blob(descriptor: &Descriptor, children: Vec<Digest>) -> Blob {
    Blob {
        digest: descriptor.digest.clone(),
        media_type: descriptor.media_type.clone(),
        size_bytes: descriptor.size_bytes,
        state: BlobState::Present,
        children,
        created_unix_ms: NOW_MS,
    }
}

fn snapshot(chain_id: Digest, parent: Option<Digest>) -> Snapshot {
    Snapshot {
        diff_id: chain_id.clone(),
        chain_id,
        parent,
        size_bytes: 4096,
        inodes: 1,
        state: SnapshotState::Committed,
        created_unix_ms: NOW_MS,
    }
}

/// One image's records: the image, its blobs, its top snapshot.
fn image_records(number: u32, state: ImageState) -> (Image, Vec<Blob>, Snapshot) {
    let manifest = Descriptor::new(
        "application/vnd.oci.image.manifest.v1+json",
        digest(0xa0, number),
        1200,
    );
    let config = Descriptor::new(
        "application/vnd.oci.image.config.v1+json",
        digest(0xc0, number),
        3000,
    );
    let layers: Vec<Descriptor> = (0..LAYERS_PER_IMAGE)
        .map(|layer| {
            Descriptor::new(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                digest(0xb0 + layer as u8, number),
                1000 + u64::from(layer),
            )
        })
        .collect();
    let top = snapshot(
        digest(0xd0, number),
        Some(digest(0xe0, number % SHARED_BASES)),
    );
    let mut children = vec![config.digest.clone()];
    children.extend(layers.iter().map(|layer| layer.digest.clone()));
    let mut blobs = vec![blob(&manifest, children), blob(&config, vec![])];
    blobs.extend(layers.iter().map(|layer| blob(layer, vec![])));
    let image = Image {
        target: manifest.clone(),
        manifest,
        config,
        top_chain_id: Some(top.chain_id.clone()),
        size_bytes: 50_000_000,
        state,
        pinned: false,
        config_user: String::new(),
        annotations: BTreeMap::new(),
        created_unix_ms: NOW_MS,
        updated_unix_ms: NOW_MS,
    };
    (image, blobs, top)
}

fn build_store(root: &std::path::Path) -> Arc<MetadataStore> {
    let layout = StoreLayout::under_root(root);
    let (metadata, _) = MetadataStore::open(&root.join("metadata.redb")).unwrap();
    let metadata = Arc::new(metadata);
    let started = Instant::now();
    let mut files = 0u64;
    for chunk in (0..IMAGES + INTERRUPTED_PULLS)
        .collect::<Vec<_>>()
        .chunks(1000)
    {
        let mut records = Vec::new();
        for &number in chunk {
            let state = if number < IMAGES {
                ImageState::Ready
            } else {
                ImageState::Pulling
            };
            records.push(image_records(number, state));
        }
        metadata
            .write(|txn| {
                for (image, blobs, top) in &records {
                    for blob in blobs {
                        txn.put_blob(blob)?;
                    }
                    txn.put_snapshot(top)?;
                    let base = top.parent.clone().unwrap();
                    txn.put_snapshot(&snapshot(base, None))?;
                    txn.put_image(image)?;
                    if image.state == ImageState::Ready {
                        let name = ImageReference::parse_normalized(&format!(
                            "registry.example/app-{}:v1",
                            image.config.digest.hex()
                        ))
                        .unwrap();
                        txn.set_reference(&name, image.id())?;
                    } else {
                        // An interrupted pull: its lease is from an earlier boot.
                        let lease = Lease {
                            id: format!("pull-{}", image.config.digest.hex()),
                            created_unix_ms: NOW_MS,
                            expires_unix_ms: NOW_MS + 3_600_000,
                            boot_id: "an-earlier-boot".to_owned(),
                            labels: BTreeMap::new(),
                        };
                        txn.put_lease(&lease)?;
                        txn.attach_to_lease(&lease.id, &LeaseResource::Image(image.id().clone()))?;
                        for blob in blobs {
                            txn.attach_to_lease(
                                &lease.id,
                                &LeaseResource::Blob(blob.digest.clone()),
                            )?;
                        }
                    }
                }
                Ok(())
            })
            .unwrap();
        for (_, blobs, top) in &records {
            for blob in blobs {
                let path = layout.blobs.blob(&blob.digest);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::File::create(&path)
                    .unwrap()
                    .set_len(blob.size_bytes)
                    .unwrap();
                files += 1;
            }
            std::fs::create_dir_all(layout.snapshot_directory(&top.chain_id)).unwrap();
            std::fs::create_dir_all(layout.snapshot_directory(top.parent.as_ref().unwrap()))
                .unwrap();
        }
    }
    let counts = metadata.read().unwrap().counts().unwrap();
    eprintln!(
        "built the store in {:.1} s: {counts:?}, {files} blob files",
        started.elapsed().as_secs_f64()
    );
    metadata
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing
    // useful either: this harness takes no arguments.
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    let metadata = build_store(root);
    let snapshots = SnapshotStore::open(root.join("snapshots"), metadata.clone()).unwrap();
    let layout = StoreLayout::under_root(root);
    let gc = GarbageCollector::new(
        metadata.clone(),
        GcPaths {
            content_directory: root.join("content"),
            snapshots_directory: root.join("snapshots"),
            trash_directory: root.join("gc-trash"),
        },
        GcSettings::default(),
    );
    let mut clean = Vec::new();
    for run in 0..=CLEAN_RUNS {
        let boot_id = format!("boot-{run}");
        let started = Instant::now();
        let summary =
            cri_imaged::reconcile::reconcile(&metadata, &snapshots, &layout, &boot_id, 600_000)
                .unwrap();
        let reconciled = started.elapsed();
        let report = gc.collect(PassTrigger::Startup).unwrap();
        let total = started.elapsed();
        println!(
            "run {run}: reconcile {:.0} ms + startup gc {:.0} ms = {:.0} ms \
             (leases ended {}, images marked gc_pending {}, gc removed {} images, {} blobs, {} leases)",
            reconciled.as_secs_f64() * 1000.0,
            (total - reconciled).as_secs_f64() * 1000.0,
            total.as_secs_f64() * 1000.0,
            summary.leases_ended,
            summary.images_marked_gc_pending,
            report.images_removed,
            report.blobs_removed,
            report.leases_removed,
        );
        if run > 0 {
            clean.push(total.as_secs_f64() * 1000.0);
        }
    }
    clean.sort_by(f64::total_cmp);
    println!(
        "median of {} clean runs (10,000 images, 100,000 blobs): {:.0} ms (target < 1000 ms)",
        clean.len(),
        clean[clean.len() / 2]
    );
}
