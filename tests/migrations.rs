//! Every released schema's golden database (`migrations/golden/`) opens with
//! this build, upgrades to the current schema, and reads back record by record
//! exactly as the schema that wrote it stored it.

use std::path::{Path, PathBuf};

use cri_imaged::metadata::migrations::golden::{GoldenSample, golden_sample};
use cri_imaged::metadata::{ImageState, MetadataStore, SCHEMA_VERSION, check_consistency};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations/golden")
        .join(name)
}

/// Opens a copy (the committed file must never change) and returns the store.
fn open_copy(
    name: &str,
) -> (
    tempfile::TempDir,
    MetadataStore,
    cri_imaged::metadata::OpenReport,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.redb");
    std::fs::copy(golden(name), &path).unwrap();
    let (store, report) = MetadataStore::open(&path).unwrap();
    (dir, store, report)
}

fn assert_holds_the_sample(store: &MetadataStore, sample: &GoldenSample) {
    let read = store.read().unwrap();
    assert_eq!(read.schema_version().unwrap(), Some(SCHEMA_VERSION));
    assert_eq!(
        read.boot_id().unwrap().as_deref(),
        Some(sample.boot_id.as_str())
    );
    for (image, names) in &sample.images {
        assert_eq!(read.image(image.id()).unwrap().as_ref(), Some(image));
        let mut expected: Vec<String> = names.iter().map(ToString::to_string).collect();
        expected.sort();
        assert_eq!(read.names_of(image.id()).unwrap(), expected);
        for name in &expected {
            assert_eq!(
                read.image_id_by_name(name).unwrap().as_ref(),
                Some(image.id())
            );
        }
    }
    for blob in &sample.blobs {
        assert_eq!(read.blob(&blob.digest).unwrap().as_ref(), Some(blob));
    }
    for snapshot in &sample.snapshots {
        assert_eq!(
            read.snapshot(&snapshot.chain_id).unwrap().as_ref(),
            Some(snapshot)
        );
    }
    for (lease, resources) in &sample.leases {
        assert_eq!(read.lease(&lease.id).unwrap().as_ref(), Some(lease));
        let mut expected = resources.clone();
        expected.sort();
        let mut actual = read.lease_resources(&lease.id).unwrap();
        actual.sort();
        assert_eq!(actual, expected);
    }
    for ingest in &sample.ingests {
        assert_eq!(read.ingest(&ingest.key).unwrap().as_ref(), Some(ingest));
    }
    let counts = read.counts().unwrap();
    assert_eq!(counts.images, sample.images.len() as u64);
    assert_eq!(counts.blobs, sample.blobs.len() as u64);
    assert_eq!(counts.snapshots, sample.snapshots.len() as u64);
    assert_eq!(counts.leases, sample.leases.len() as u64);
    assert_eq!(counts.ingests, sample.ingests.len() as u64);
    // The v2 state index answers for every state, built from the v1 records.
    for state in ImageState::ALL {
        let mut expected: Vec<String> = sample
            .images
            .iter()
            .filter(|(image, _)| image.state == state)
            .map(|(image, _)| image.id().to_string())
            .collect();
        expected.sort();
        let actual: Vec<String> = read
            .list_images_in_state(state)
            .unwrap()
            .iter()
            .map(|image| image.id().to_string())
            .collect();
        assert_eq!(actual, expected, "{state}");
    }
    // v3: nothing an earlier schema committed waits for a sync (it synced
    // before committing).
    assert_eq!(read.unsynced_snapshots().unwrap(), vec![]);
    assert_eq!(check_consistency(&read).unwrap(), vec![]);
}

#[test]
fn the_v1_golden_database_upgrades_to_the_current_schema_record_by_record() {
    let (_dir, store, report) = open_copy("v1.redb");
    assert_eq!(report.found_schema_version, 1);
    assert_eq!(report.migration_steps_applied, SCHEMA_VERSION - 1);
    assert!(!report.created);
    assert_holds_the_sample(&store, &golden_sample());
}

#[test]
fn the_v2_golden_database_upgrades_to_the_current_schema_record_by_record() {
    let (_dir, store, report) = open_copy("v2.redb");
    assert_eq!(report.found_schema_version, 2);
    assert_eq!(report.migration_steps_applied, SCHEMA_VERSION - 2);
    assert_holds_the_sample(&store, &golden_sample());
}

#[test]
fn the_v3_golden_database_opens_as_it_is() {
    let (_dir, store, report) = open_copy("v3.redb");
    assert_eq!(report.found_schema_version, 3);
    assert_eq!(report.migration_steps_applied, SCHEMA_VERSION - 3);
    assert_holds_the_sample(&store, &golden_sample());
}

#[test]
fn an_upgraded_database_reopens_without_migrating_again() {
    let (dir, store, _) = open_copy("v1.redb");
    drop(store);
    let (store, report) = MetadataStore::open(&dir.path().join("metadata.redb")).unwrap();
    assert_eq!(report.found_schema_version, SCHEMA_VERSION);
    assert_eq!(report.migration_steps_applied, 0);
    assert_holds_the_sample(&store, &golden_sample());
}

#[test]
fn every_schema_version_has_a_golden_database_and_a_history_entry() {
    let history =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/README.md"))
            .unwrap();
    for version in 1..=SCHEMA_VERSION {
        assert!(
            golden(&format!("v{version}.redb")).is_file(),
            "no golden v{version}.redb"
        );
        assert!(
            history.contains(&format!("## v{version}")),
            "migrations/README.md has no entry for v{version}"
        );
    }
}
