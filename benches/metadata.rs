//! Metadata store benchmarks (issue targets on a 2-core machine: list 10,000
//! images under 5 ms, lookup by reference under 5 µs).
//!
//! `cargo bench --bench metadata`. The store lives in a temporary directory on
//! the same filesystem as the system temp dir; durable commits pay one fsync.

use std::collections::BTreeMap;
use std::hint::black_box;

use cri_imaged::metadata::{Blob, BlobState, Image, ImageState, MetadataStore};
use cri_imaged::oci::Descriptor;
use cri_imaged::reference::{Digest, ImageReference};
use criterion::{Criterion, criterion_group, criterion_main};

const IMAGE_COUNT: u32 = 10_000;

fn digest(kind: u8, number: u32) -> Digest {
    Digest::parse(&format!("sha256:{kind:02x}{number:062x}")).unwrap()
}

fn image(number: u32) -> (Image, Vec<Blob>) {
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
    let image = Image {
        target: manifest.clone(),
        manifest: manifest.clone(),
        config: config.clone(),
        top_chain_id: Some(digest(0xd0, number)),
        size_bytes: 50_000_000,
        state: ImageState::Ready,
        pinned: false,
        config_user: "65532".to_owned(),
        annotations: BTreeMap::from([(
            "org.opencontainers.image.source".to_owned(),
            "https://example.invalid/repo".to_owned(),
        )]),
        created_unix_ms: 1_763_900_000_000,
        updated_unix_ms: 1_763_900_000_000,
    };
    let blob = |descriptor: &Descriptor, children: Vec<Digest>| Blob {
        digest: descriptor.digest.clone(),
        media_type: descriptor.media_type.clone(),
        size_bytes: descriptor.size_bytes,
        state: BlobState::Present,
        children,
        created_unix_ms: 1_763_900_000_000,
    };
    let blobs = vec![
        blob(&manifest, vec![config.digest.clone()]),
        blob(&config, vec![]),
    ];
    (image, blobs)
}

fn name(number: u32) -> ImageReference {
    ImageReference::parse_docker_ref(&format!("registry.example:5000/team/app-{number}:v1"))
        .unwrap()
}

/// A store holding `IMAGE_COUNT` ready images, each with a tag and a digest name.
fn populated_store() -> (tempfile::TempDir, MetadataStore) {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = MetadataStore::open(&dir.path().join("metadata.redb")).unwrap();
    for chunk in (0..IMAGE_COUNT).collect::<Vec<_>>().chunks(1000) {
        store
            .write(|txn| {
                for &number in chunk {
                    let (image, blobs) = image(number);
                    for blob in &blobs {
                        txn.put_blob(blob)?;
                    }
                    txn.put_image(&image)?;
                    txn.set_reference(&name(number), image.id())?;
                    txn.set_reference(
                        &name(number).with_digest(image.manifest.digest.clone()),
                        image.id(),
                    )?;
                }
                Ok(())
            })
            .unwrap();
    }
    (dir, store)
}

fn benchmarks(criterion: &mut Criterion) {
    let (dir, store) = populated_store();

    criterion.bench_function("get image by reference (10k images)", |bench| {
        let mut number = 0;
        bench.iter(|| {
            number = (number + 7919) % IMAGE_COUNT;
            let read = store.read().unwrap();
            black_box(
                read.image_by_name(&name(number).to_string())
                    .unwrap()
                    .unwrap(),
            );
        })
    });

    let names: Vec<String> = (0..IMAGE_COUNT)
        .map(|number| name(number).to_string())
        .collect();
    criterion.bench_function(
        "get image by reference, name preformatted (10k images)",
        |bench| {
            let mut number = 0;
            bench.iter(|| {
                number = (number + 7919) % IMAGE_COUNT;
                let read = store.read().unwrap();
                black_box(
                    read.image_by_name(&names[number as usize])
                        .unwrap()
                        .unwrap(),
                );
            })
        },
    );

    criterion.bench_function("list 10,000 images with their names (cached)", |bench| {
        bench.iter(|| {
            let listed = store.list_images().unwrap();
            assert_eq!(listed.len(), IMAGE_COUNT as usize);
            black_box(listed);
        })
    });

    criterion.bench_function("list 10,000 images with their names (decoded)", |bench| {
        bench.iter(|| {
            let listed = store.read().unwrap().list_images().unwrap();
            assert_eq!(listed.len(), IMAGE_COUNT as usize);
            black_box(listed);
        })
    });

    criterion.bench_function("create-or-update a reference (durable commit)", |bench| {
        let mut number = 0;
        bench.iter(|| {
            number = (number + 1) % IMAGE_COUNT;
            let target = image(number).0;
            store
                .write(|txn| txn.set_reference(&name(0), target.id()))
                .unwrap();
        })
    });

    criterion.bench_function("create-or-update a reference (relaxed commit)", |bench| {
        let mut number = 0;
        bench.iter(|| {
            number = (number + 1) % IMAGE_COUNT;
            let target = image(number).0;
            store
                .write_relaxed(|txn| txn.set_reference(&name(0), target.id()))
                .unwrap();
        })
    });

    let path = store.path().to_path_buf();
    drop(store);
    let mut group = criterion.benchmark_group("open");
    group.sample_size(10);
    group.bench_function("open with integrity check (10k images)", |bench| {
        bench.iter(|| {
            let (store, _) = MetadataStore::open(&path).unwrap();
            black_box(store);
        })
    });
    group.finish();
    drop(dir);
}

criterion_group!(benches, benchmarks);
criterion_main!(benches);
