//! Gc against a real metadata store and real files in a temporary directory:
//! records are built with the metadata API, orphan files are planted, and
//! each test asserts exactly which records and files go and which stay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::content_store::BlobPaths;
use crate::gc::{GarbageCollector, GcPaths, GcReport, GcSettings, PassTrigger};
use crate::metadata::{
    Blob, BlobState, Image, ImageState, Ingest, Lease, LeaseResource, MetadataStore, Snapshot,
    SnapshotState, check_consistency,
};
use crate::oci::Descriptor;
use crate::reference::{Digest, ImageReference};

const HOUR_MS: u64 = 60 * 60 * 1000;

pub(crate) fn digest(kind: u8, number: u32) -> Digest {
    Digest::parse(&format!("sha256:{kind:02x}{number:062x}")).unwrap()
}

pub(crate) struct Fixture {
    _directory: tempfile::TempDir,
    pub(crate) root: PathBuf,
    pub(crate) metadata: Arc<MetadataStore>,
    collector: Arc<GarbageCollector>,
    blob_paths: BlobPaths,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path().to_path_buf();
        let (metadata, _) = MetadataStore::open(&root.join("metadata.redb")).unwrap();
        let metadata = Arc::new(metadata);
        let paths = GcPaths::under_root(&root);
        for created in [
            paths.content_directory.join("blobs/sha256"),
            paths.content_directory.join("ingest"),
            paths.snapshots_directory.join("extracting"),
        ] {
            std::fs::create_dir_all(created).unwrap();
        }
        let blob_paths = BlobPaths::new(paths.content_directory.clone());
        let collector = Arc::new(GarbageCollector::new(
            metadata.clone(),
            paths,
            GcSettings::default(),
        ));
        Fixture {
            _directory: directory,
            root,
            metadata,
            collector,
            blob_paths,
        }
    }

    /// A blob record and its file of `size_bytes`.
    fn blob(&self, digest: &Digest, size_bytes: u64, children: &[Digest]) {
        self.blob_record(digest, size_bytes, children);
        self.plant_blob_file(digest, size_bytes);
    }

    fn blob_record(&self, digest: &Digest, size_bytes: u64, children: &[Digest]) {
        let blob = Blob {
            digest: digest.clone(),
            media_type: "application/octet-stream".to_owned(),
            size_bytes,
            state: BlobState::Present,
            children: children.to_vec(),
            created_unix_ms: 1,
        };
        self.metadata.write(|txn| txn.put_blob(&blob)).unwrap();
    }

    fn plant_blob_file(&self, digest: &Digest, size_bytes: u64) {
        std::fs::write(self.blob_paths.blob(digest), vec![7u8; size_bytes as usize]).unwrap();
    }

    fn snapshot_directory(&self, chain_id: &Digest) -> PathBuf {
        self.root
            .join("snapshots")
            .join(format!("sha256-{}", chain_id.hex()))
    }

    /// A snapshot record in `state` and its directory holding one file.
    pub(crate) fn snapshot(
        &self,
        chain_id: &Digest,
        parent: Option<&Digest>,
        state: SnapshotState,
    ) {
        let snapshot = Snapshot {
            chain_id: chain_id.clone(),
            parent: parent.cloned(),
            diff_id: chain_id.clone(),
            size_bytes: 10,
            inodes: 2,
            state,
            created_unix_ms: 1,
        };
        self.metadata
            .write(|txn| txn.put_snapshot(&snapshot))
            .unwrap();
        self.plant_snapshot_directory(chain_id);
    }

    fn plant_snapshot_directory(&self, chain_id: &Digest) {
        let directory = self.snapshot_directory(chain_id);
        std::fs::create_dir_all(directory.join("etc")).unwrap();
        std::fs::write(directory.join("etc/hostname"), b"0123456789").unwrap();
    }

    /// An image record (manifest -> config + layers) with its blobs and
    /// snapshot chain; returns its id.
    pub(crate) fn image(
        &self,
        number: u32,
        state: ImageState,
        layers: &[Digest],
        chain: &[Digest],
    ) -> Digest {
        let manifest = digest(0xa0, number);
        let config = digest(0xc0, number);
        let mut children = vec![config.clone()];
        children.extend(layers.iter().cloned());
        self.blob(&manifest, 100, &children);
        self.blob(&config, 50, &[]);
        for layer in layers {
            self.blob(layer, 1000, &[]);
        }
        for (index, chain_id) in chain.iter().enumerate() {
            let parent = index.checked_sub(1).map(|parent| &chain[parent]);
            self.snapshot(chain_id, parent, SnapshotState::Committed);
        }
        let image = Image {
            target: Descriptor::new("manifest", manifest.clone(), 100),
            manifest: Descriptor::new("manifest", manifest, 100),
            config: Descriptor::new("config", config.clone(), 50),
            top_chain_id: chain.last().cloned(),
            size_bytes: 1,
            state,
            pinned: false,
            config_user: String::new(),
            annotations: BTreeMap::new(),
            created_unix_ms: 1,
            updated_unix_ms: 1,
        };
        self.metadata
            .write(|txn| {
                txn.put_image(&image)?;
                if state == ImageState::Ready {
                    let name = ImageReference::parse_docker_ref(&format!("example/app{number}:v1"))
                        .unwrap();
                    txn.set_reference(&name, &config)?;
                }
                Ok(())
            })
            .unwrap();
        config
    }

    fn lease(&self, id: &str, expires_unix_ms: u64, resources: &[LeaseResource]) {
        let lease = Lease {
            id: id.to_owned(),
            created_unix_ms: 1,
            expires_unix_ms,
            boot_id: "boot".to_owned(),
            labels: BTreeMap::new(),
        };
        self.metadata
            .write(|txn| {
                txn.put_lease(&lease)?;
                for resource in resources {
                    txn.attach_to_lease(id, resource)?;
                }
                Ok(())
            })
            .unwrap();
    }

    /// An ingest record and its partial file.
    fn ingest(&self, digest: &Digest) -> String {
        let key = BlobPaths::ingest_key(digest);
        let ingest = Ingest {
            key: key.clone(),
            expected_digest: digest.clone(),
            expected_size_bytes: 1000,
            offset_bytes: 300,
            started_unix_ms: 1,
            updated_unix_ms: 1,
        };
        self.metadata.write(|txn| txn.put_ingest(&ingest)).unwrap();
        std::fs::write(self.blob_paths.partial(digest), vec![1u8; 300]).unwrap();
        key
    }

    pub(crate) fn collect(&self) -> GcReport {
        self.collector.collect(PassTrigger::Schedule).unwrap()
    }

    fn has_blob(&self, digest: &Digest) -> (bool, bool) {
        (
            self.metadata
                .read()
                .unwrap()
                .blob(digest)
                .unwrap()
                .is_some(),
            self.blob_paths.blob(digest).is_file(),
        )
    }

    pub(crate) fn has_snapshot(&self, chain_id: &Digest) -> (bool, bool) {
        (
            self.metadata
                .read()
                .unwrap()
                .snapshot(chain_id)
                .unwrap()
                .is_some(),
            self.snapshot_directory(chain_id).is_dir(),
        )
    }

    fn has_ingest(&self, digest: &Digest) -> (bool, bool) {
        (
            self.metadata
                .read()
                .unwrap()
                .ingest(&BlobPaths::ingest_key(digest))
                .unwrap()
                .is_some(),
            self.blob_paths.partial(digest).is_file(),
        )
    }

    /// Marks `chain_id` committed but not synced, under `kernel_boot_id`.
    pub(crate) fn mark_unsynced(&self, chain_id: &Digest, kernel_boot_id: &str) {
        let mark = crate::metadata::UnsyncedSnapshot {
            chain_id: chain_id.clone(),
            kernel_boot_id: kernel_boot_id.to_owned(),
            committed_unix_ms: 1,
        };
        self.metadata
            .write(|txn| txn.put_unsynced_snapshot(&mark))
            .unwrap();
    }

    pub(crate) fn assert_consistent(&self) {
        assert_eq!(
            check_consistency(&self.metadata.read().unwrap()).unwrap(),
            vec![]
        );
    }
}

fn now_ms() -> u64 {
    crate::metadata::unix_millis_now()
}

const BOTH: (bool, bool) = (true, true);
const NEITHER: (bool, bool) = (false, false);

#[test]
fn a_ready_image_keeps_its_content_and_orphans_go_with_their_files() {
    let fixture = Fixture::new();
    let layers = [digest(0x1a, 1), digest(0x1a, 2)];
    let chain = [digest(0xcc, 1), digest(0xcc, 2)];
    let id = fixture.image(1, ImageState::Ready, &layers, &chain);
    let orphan_blob = digest(0x0b, 1);
    fixture.blob(&orphan_blob, 4000, &[]);
    let orphan_snapshot = digest(0x05, 1);
    fixture.snapshot(&orphan_snapshot, None, SnapshotState::Committed);
    let unrecorded_blob = digest(0x0b, 2);
    fixture.plant_blob_file(&unrecorded_blob, 500);
    let unrecorded_snapshot = digest(0x05, 2);
    fixture.plant_snapshot_directory(&unrecorded_snapshot);
    let orphan_partial = fixture.blob_paths.partial(&digest(0x0b, 3));
    std::fs::write(&orphan_partial, vec![0u8; 70]).unwrap();
    let unknown = [
        fixture.root.join("content/blobs/sha256/not-a-digest"),
        fixture.root.join("content/blobs/md5"),
        fixture.root.join("content/ingest/stray.tmp"),
        fixture.root.join("snapshots/stray-file"),
    ];
    for path in &unknown {
        std::fs::write(path, b"xx").unwrap();
    }
    let extracting = fixture.root.join("snapshots/extracting/sha256-abc-123");
    std::fs::create_dir_all(&extracting).unwrap();

    let report = fixture.collect();

    assert_eq!(report.images_removed, 0);
    assert_eq!(report.blobs_removed, 2, "{report:?}");
    assert_eq!(report.snapshots_removed, 2, "{report:?}");
    assert_eq!(report.ingests_removed, 1, "{report:?}");
    assert_eq!(report.unknown_files_removed, 4, "{report:?}");
    assert_eq!(report.bytes_freed, 4000 + 10 + 500 + 10 + 70 + 4 * 2);
    assert!(report.file_phase_skipped_for.is_empty());
    for kept in [
        digest(0xa0, 1),
        id.clone(),
        layers[0].clone(),
        layers[1].clone(),
    ] {
        assert_eq!(fixture.has_blob(&kept), BOTH, "{kept}");
    }
    for kept in &chain {
        assert_eq!(fixture.has_snapshot(kept), BOTH, "{kept}");
    }
    for gone in [&orphan_blob, &unrecorded_blob] {
        assert_eq!(fixture.has_blob(gone), NEITHER, "{gone}");
    }
    for gone in [&orphan_snapshot, &unrecorded_snapshot] {
        assert_eq!(fixture.has_snapshot(gone), NEITHER, "{gone}");
    }
    assert!(!orphan_partial.exists());
    for path in &unknown {
        assert!(!path.exists(), "{}", path.display());
    }
    assert!(
        extracting.is_dir(),
        "extracting directories belong to running extractions"
    );
    assert!(fixture.root.join("content/blobs/sha256").is_dir());
    assert!(
        std::fs::read_dir(fixture.root.join("gc-trash"))
            .unwrap()
            .next()
            .is_none(),
        "the trash is emptied"
    );
    assert!(
        fixture
            .metadata
            .read()
            .unwrap()
            .image(&id)
            .unwrap()
            .is_some()
    );
    fixture.assert_consistent();

    let second = fixture.collect();
    assert_eq!(
        (
            second.blobs_removed,
            second.snapshots_removed,
            second.bytes_freed
        ),
        (0, 0, 0)
    );
}

#[test]
fn a_gc_pending_image_loses_its_exclusive_content_and_keeps_what_it_shares() {
    let fixture = Fixture::new();
    let shared_layer = digest(0x1a, 1);
    let shared_base = digest(0xcc, 1);
    let ready = fixture.image(
        1,
        ImageState::Ready,
        std::slice::from_ref(&shared_layer),
        std::slice::from_ref(&shared_base),
    );
    let own_layer = digest(0x1a, 2);
    let own_top = digest(0xcc, 2);
    let pending = fixture.image(
        2,
        ImageState::GcPending,
        &[shared_layer.clone(), own_layer.clone()],
        &[shared_base.clone(), own_top.clone()],
    );
    // Even a lease does not keep a gc_pending image: it is what a crash left.
    fixture.lease(
        "grace",
        now_ms() + HOUR_MS,
        &[LeaseResource::Image(pending.clone())],
    );

    let report = fixture.collect();

    assert_eq!(report.images_removed, 1);
    assert_eq!(report.blobs_removed, 3, "manifest, config and own layer");
    assert_eq!(report.snapshots_removed, 1);
    let read = fixture.metadata.read().unwrap();
    assert!(read.image(&pending).unwrap().is_none());
    assert!(read.image(&ready).unwrap().is_some());
    drop(read);
    for gone in [digest(0xa0, 2), pending.clone(), own_layer] {
        assert_eq!(fixture.has_blob(&gone), NEITHER, "{gone}");
    }
    assert_eq!(fixture.has_snapshot(&own_top), NEITHER);
    for kept in [digest(0xa0, 1), ready, shared_layer] {
        assert_eq!(fixture.has_blob(&kept), BOTH, "{kept}");
    }
    assert_eq!(fixture.has_snapshot(&shared_base), BOTH);
    fixture.assert_consistent();
}

#[test]
fn many_doomed_entries_are_all_deleted_and_counted_and_a_crashed_passs_trash_goes_too() {
    let fixture = Fixture::new();
    // What a pass killed after moving entries into the trash leaves there.
    let trash = fixture.root.join("gc-trash");
    std::fs::create_dir_all(trash.join("0badc0de/usr/bin")).unwrap();
    std::fs::write(trash.join("0badc0de/usr/bin/tool"), [1u8; 100]).unwrap();
    std::fs::write(trash.join("5ca1ab1e"), [2u8; 50]).unwrap();
    // More doomed blobs and snapshots than deleting threads, of mixed sizes.
    let mut expected_bytes = 0;
    for number in 0..40 {
        let size = 1 + u64::from(number) * 37;
        fixture.plant_blob_file(&digest(0xb0, number), size);
        expected_bytes += size;
        fixture.plant_snapshot_directory(&digest(0xc0, number));
        expected_bytes += 10;
    }

    let report = fixture.collect();

    assert_eq!(report.blobs_removed, 40);
    assert_eq!(report.snapshots_removed, 40);
    assert_eq!(
        report.bytes_freed, expected_bytes,
        "the trash left by a crash is not counted: it was never this pass's"
    );
    for number in 0..40 {
        assert_eq!(fixture.has_blob(&digest(0xb0, number)), NEITHER);
        assert_eq!(fixture.has_snapshot(&digest(0xc0, number)), NEITHER);
    }
    assert!(
        std::fs::read_dir(&trash).unwrap().next().is_none(),
        "the trash is empty after the pass"
    );
    fixture.assert_consistent();
}

#[test]
fn live_leases_keep_what_they_hold_and_expired_ones_go_with_it() {
    let fixture = Fixture::new();
    let now = now_ms();
    // A pull in flight: its image is `pulling`, some blobs stored, a snapshot
    // extracting, an ingest partial.
    let pulling = fixture.image(1, ImageState::Pulling, &[digest(0x1a, 1)], &[]);
    let leased_blob = digest(0x1a, 1);
    let leased_snapshot = digest(0xcc, 1);
    fixture.snapshot(&leased_snapshot, None, SnapshotState::Extracting);
    let leased_ingest = digest(0x1a, 2);
    let leased_key = fixture.ingest(&leased_ingest);
    fixture.lease(
        "live",
        now + HOUR_MS,
        &[
            LeaseResource::Image(pulling.clone()),
            LeaseResource::Blob(leased_blob.clone()),
            LeaseResource::Snapshot(leased_snapshot.clone()),
            LeaseResource::Ingest(leased_key),
        ],
    );
    // An abandoned pull: its lease expired.
    let abandoned = fixture.image(2, ImageState::Pulling, &[digest(0x1b, 1)], &[]);
    let expired_snapshot = digest(0xcd, 1);
    fixture.snapshot(&expired_snapshot, None, SnapshotState::Committed);
    let expired_ingest = digest(0x1b, 2);
    let expired_key = fixture.ingest(&expired_ingest);
    fixture.lease(
        "expired",
        now - 1,
        &[
            LeaseResource::Image(abandoned.clone()),
            LeaseResource::Blob(digest(0x1b, 1)),
            LeaseResource::Snapshot(expired_snapshot.clone()),
            LeaseResource::Ingest(expired_key),
        ],
    );

    let report = fixture.collect();

    assert_eq!(report.leases_removed, 1);
    assert_eq!(report.images_removed, 1);
    assert_eq!(report.ingests_removed, 1);
    assert_eq!(report.snapshots_removed, 1);
    let read = fixture.metadata.read().unwrap();
    assert!(read.lease("live").unwrap().is_some());
    assert!(read.lease("expired").unwrap().is_none());
    assert!(read.lease_resources("expired").unwrap().is_empty());
    assert_eq!(read.lease_resources("live").unwrap().len(), 4);
    assert!(read.image(&pulling).unwrap().is_some());
    assert!(read.image(&abandoned).unwrap().is_none());
    drop(read);
    for kept in [digest(0xa0, 1), pulling, leased_blob] {
        assert_eq!(fixture.has_blob(&kept), BOTH, "{kept}");
    }
    assert_eq!(fixture.has_snapshot(&leased_snapshot), BOTH);
    assert_eq!(fixture.has_ingest(&leased_ingest), BOTH);
    for gone in [digest(0xa0, 2), abandoned, digest(0x1b, 1)] {
        assert_eq!(fixture.has_blob(&gone), NEITHER, "{gone}");
    }
    assert_eq!(fixture.has_snapshot(&expired_snapshot), NEITHER);
    assert_eq!(fixture.has_ingest(&expired_ingest), NEITHER);
    fixture.assert_consistent();
}

#[test]
fn a_blob_renamed_into_place_before_its_record_is_kept_while_its_ingest_is_recorded() {
    let fixture = Fixture::new();
    // The window in ingest between the rename into blobs/ and the commit that
    // swaps the ingest record for the blob record.
    let renamed = digest(0x1a, 1);
    let key = fixture.ingest(&renamed);
    std::fs::rename(
        fixture.blob_paths.partial(&renamed),
        fixture.blob_paths.blob(&renamed),
    )
    .unwrap();
    fixture.lease(
        "pull",
        now_ms() + HOUR_MS,
        &[LeaseResource::Ingest(key.clone())],
    );
    // The same window in the snapshot store: renamed into place, still
    // recorded `extracting`.
    let committing = digest(0xcc, 1);
    fixture.snapshot(&committing, None, SnapshotState::Extracting);
    fixture.lease(
        "pull-2",
        now_ms() + HOUR_MS,
        &[LeaseResource::Snapshot(committing.clone())],
    );

    let report = fixture.collect();

    assert_eq!(report.blobs_removed + report.snapshots_removed, 0);
    assert!(fixture.blob_paths.blob(&renamed).is_file());
    assert!(fixture.snapshot_directory(&committing).is_dir());
}

#[test]
fn a_store_failing_its_consistency_check_loses_records_but_no_file() {
    let fixture = Fixture::new();
    let id = fixture.image(1, ImageState::Ready, &[], &[]);
    // A ready image whose config record is gone: a broken invariant.
    fixture
        .metadata
        .write(|txn| txn.remove_blob(&id).map(|_| ()))
        .unwrap();
    let orphan = digest(0x0b, 1);
    fixture.blob(&orphan, 100, &[]);
    let unrecorded = digest(0x0b, 2);
    fixture.plant_blob_file(&unrecorded, 100);
    fixture.lease("expired", now_ms() - 1, &[]);

    let report = fixture.collect();

    assert!(!report.file_phase_skipped_for.is_empty(), "{report:?}");
    assert_eq!(report.leases_removed, 1, "the record phase still ran");
    assert_eq!(report.bytes_freed, 0);
    assert_eq!(fixture.has_blob(&orphan), (false, true));
    assert!(fixture.blob_paths.blob(&unrecorded).is_file());
    assert!(fixture.blob_paths.blob(&id).is_file());
    // What an operator's CollectGarbage answers then: the object concerned.
    let message = super::GcError::StoreInconsistent {
        problems: report.file_phase_skipped_for,
    }
    .to_string();
    assert!(
        message.starts_with("gc deleted no file") && message.contains(id.as_str()),
        "{message}"
    );
}

#[test]
fn a_lease_without_expiry_is_live_and_one_past_its_expiry_is_not() {
    let lease = |expires_unix_ms| Lease {
        id: "l".to_owned(),
        created_unix_ms: 0,
        expires_unix_ms,
        boot_id: String::new(),
        labels: BTreeMap::new(),
    };
    assert!(super::lease_is_live(&lease(0), 5_000));
    assert!(super::lease_is_live(&lease(5_001), 5_000));
    assert!(!super::lease_is_live(&lease(5_000), 5_000));
}

#[test]
fn a_lease_is_renewed_once_half_of_it_is_gone() {
    use super::lease_renewal::renewed_expiry_unix_ms;
    assert_eq!(renewed_expiry_unix_ms(10_000, 5_000, 8_000), None);
    assert_eq!(renewed_expiry_unix_ms(10_000, 6_001, 8_000), Some(14_001));
    assert_eq!(renewed_expiry_unix_ms(10_000, 20_000, 8_000), Some(28_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_pull_keeps_its_lease_past_the_lease_duration() {
    let fixture = Fixture::new();
    // Long enough that a renewal (a durable commit) delayed by a loaded
    // machine still lands before the half-life's margin is gone.
    let duration_ms = 2_000;
    fixture.lease("pull", now_ms() + duration_ms, &[]);
    let started = now_ms();
    super::lease_renewal::renew_while(
        &fixture.metadata,
        "pull",
        duration_ms,
        tokio::time::sleep(std::time::Duration::from_millis(2 * duration_ms)),
    )
    .await;
    let lease = fixture
        .metadata
        .read()
        .unwrap()
        .lease("pull")
        .unwrap()
        .unwrap();
    assert!(now_ms() >= started + 2 * duration_ms);
    assert!(
        lease.expires_unix_ms > now_ms(),
        "the lease expired under a live pull: {lease:?}"
    );
    // A pass now keeps it; a released lease is not renewed again.
    fixture.collect();
    assert!(
        fixture
            .metadata
            .read()
            .unwrap()
            .lease("pull")
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_a_pass_soon_after_a_request() {
    let fixture = Fixture::new();
    let collector = fixture.collector.clone();
    let orphan = digest(0x0b, 1);
    fixture.blob(&orphan, 10, &[]);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = super::worker::spawn_worker(collector.clone(), stopped);
    collector.request_pass();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while collector.last_report().is_none() {
        assert!(std::time::Instant::now() < deadline, "no pass ran");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(fixture.has_blob(&orphan), NEITHER);
    stop.send(true).unwrap();
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_a_pass_when_the_earliest_lease_expires() {
    let fixture = Fixture::new();
    let held = digest(0x0b, 1);
    fixture.blob(&held, 10, &[]);
    fixture.lease(
        "grace",
        now_ms() + 300,
        &[LeaseResource::Blob(held.clone())],
    );
    // A lease expiring in the far future neither overflows the timer nor
    // delays the earlier one.
    fixture.lease("far", u64::MAX - 1, &[]);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = super::worker::spawn_worker(fixture.collector.clone(), stopped);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // The files go during the pass; its report is kept when the pass ends.
    while fixture.has_blob(&held) != NEITHER || fixture.collector.last_report().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the expiry woke no pass"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let report = fixture.collector.last_report().unwrap();
    assert_eq!(report.leases_removed, 1);
    stop.send(true).unwrap();
    worker.await.unwrap();
}

/// Ingests of blobs and extractions of snapshots through the real content and
/// snapshot stores, racing gc passes that run back to back. Every pull
/// releases its lease when done, so the content all pulls share keeps turning
/// into garbage that the next pull must re-protect or fetch again. The safety argument is
/// in `file_sweep`; this checks it: after every pull, whatever its lease holds
/// has its record and its file, and in the end the store is consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_in_flight_never_lose_a_file_to_a_concurrent_pass() {
    use crate::content_store::{ContentLimits, ContentStore, IngestRequest};
    use crate::snapshot_store::{LayerSnapshot, SnapshotStore, UnpackedSize};

    let fixture = Fixture::new();
    let content = Arc::new(
        ContentStore::open(
            fixture.root.join("content"),
            fixture.metadata.clone(),
            ContentLimits::default(),
        )
        .unwrap(),
    );
    let snapshots = Arc::new(
        SnapshotStore::open(fixture.root.join("snapshots"), fixture.metadata.clone()).unwrap(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let passes = {
        let collector = fixture.collector.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut passes = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                collector.collect_now(PassTrigger::Schedule).await.unwrap();
                passes += 1;
            }
            passes
        })
    };

    let mut pulls = Vec::new();
    for worker in 0..4u32 {
        let content = content.clone();
        let snapshots = snapshots.clone();
        let metadata = fixture.metadata.clone();
        pulls.push(tokio::spawn(async move {
            for round in 0..40u32 {
                let lease_id = format!("pull-{worker}-{round}");
                let lease = Lease {
                    id: lease_id.clone(),
                    created_unix_ms: now_ms(),
                    expires_unix_ms: now_ms() + HOUR_MS,
                    boot_id: "boot".to_owned(),
                    labels: BTreeMap::new(),
                };
                metadata.write(|txn| txn.put_lease(&lease)).unwrap();
                // Blob 0 is shared by everyone; the other is this pull's own.
                let mut held = Vec::new();
                for data in [
                    b"shared".to_vec(),
                    format!("own-{worker}-{round}").into_bytes(),
                ] {
                    let expected = descriptor_of(&data);
                    let mut source = MemorySource(bytes::Bytes::from(data));
                    let outcome = content
                        .ingest(
                            IngestRequest {
                                expected: &expected,
                                children: &[],
                                lease_id: &lease_id,
                            },
                            &mut source,
                        )
                        .await
                        .unwrap();
                    held.push(outcome.blob.digest);
                }
                let shared_chain = digest(0xcc, 1);
                let own_chain = digest(0xcd, worker * 100 + round);
                for (chain_id, parent) in [
                    (shared_chain.clone(), None),
                    (own_chain.clone(), Some(shared_chain.clone())),
                ] {
                    let layer = LayerSnapshot {
                        chain_id: chain_id.clone(),
                        parent,
                        diff_id: chain_id.clone(),
                    };
                    let prepared = snapshots
                        .prepare(layer, &lease_id, |directory: &Path| {
                            std::fs::write(directory.join("file"), b"layer")?;
                            Ok::<_, std::io::Error>(UnpackedSize {
                                size_bytes: 5,
                                inodes: 1,
                            })
                        })
                        .await
                        .unwrap();
                    if let Err(error) = snapshots.commit(prepared) {
                        panic!("commit of {chain_id} failed: {error:?}");
                    }
                }
                // Everything the live lease holds is recorded and on disk.
                let read = metadata.read().unwrap();
                for digest in &held {
                    assert!(read.blob(digest).unwrap().is_some(), "{digest}");
                    assert!(content.paths().blob(digest).is_file(), "{digest}");
                }
                for chain_id in [&shared_chain, &own_chain] {
                    let snapshot = read.snapshot(chain_id).unwrap().expect("recorded");
                    assert_eq!(snapshot.state, SnapshotState::Committed);
                    assert!(
                        snapshots.snapshot_directory(chain_id).is_dir(),
                        "{chain_id}"
                    );
                }
                drop(read);
                // Released: all of it, the shared content too when no other
                // pull holds it, becomes garbage for the next pass.
                metadata.write(|txn| txn.remove_lease(&lease_id)).unwrap();
            }
        }));
    }
    for pull in pulls {
        pull.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let passes = passes.await.unwrap();
    assert!(passes > 1, "gc ran concurrently ({passes} passes)");
    fixture.collect();
    fixture.assert_consistent();
    // Every pull released its lease: the last pass reclaimed all of it,
    // records and files alike.
    let read = fixture.metadata.read().unwrap();
    assert!(read.blobs().unwrap().is_empty());
    assert!(read.snapshots().unwrap().is_empty());
    assert!(read.all_lease_resources().unwrap().is_empty());
    let left_on_disk: Vec<_> = std::fs::read_dir(fixture.root.join("snapshots"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name != "extracting")
        .collect();
    assert!(left_on_disk.is_empty(), "{left_on_disk:?}");
    assert_eq!(
        std::fs::read_dir(content.paths().blobs_directory(&digest(0, 0)))
            .unwrap()
            .count(),
        0
    );
}

fn descriptor_of(data: &[u8]) -> Descriptor {
    let mut hasher = crate::reference::DigestHasher::new(crate::reference::DigestAlgorithm::Sha256);
    hasher.update(data);
    Descriptor::new("layer", hasher.finish(), data.len() as u64)
}

struct MemorySource(bytes::Bytes);

impl crate::content_store::BlobSource for MemorySource {
    type Error = std::io::Error;

    async fn open(
        &mut self,
        offset_bytes: u64,
    ) -> Result<crate::content_store::OpenedBlob<std::io::Error>, std::io::Error> {
        let rest = self.0.slice(offset_bytes as usize..);
        Ok(crate::content_store::OpenedBlob {
            offset_bytes,
            stream: Box::pin(futures_util::stream::iter([Ok(rest)])),
        })
    }
}

#[test]
fn an_operators_pass_ends_the_grace_lease_and_an_automatic_one_does_not() {
    let fixture = Fixture::new();
    let held = digest(0x0b, 1);
    fixture.blob(&held, 10, &[]);
    let retried = digest(0x0b, 2);
    fixture.blob(&retried, 10, &[]);
    let grace = Lease {
        id: "grace-boot".to_owned(),
        created_unix_ms: 1,
        expires_unix_ms: now_ms() + HOUR_MS,
        boot_id: "boot".to_owned(),
        labels: BTreeMap::from([(super::GRACE_LEASE_LABEL.to_owned(), "true".to_owned())]),
    };
    fixture
        .metadata
        .write(|txn| {
            txn.put_lease(&grace)?;
            txn.attach_to_lease(&grace.id, &LeaseResource::Blob(held.clone()))?;
            txn.attach_to_lease(&grace.id, &LeaseResource::Blob(retried.clone()))
        })
        .unwrap();
    // A retry of the interrupted pull has already claimed one blob.
    fixture.lease(
        "pull-retry",
        now_ms() + HOUR_MS,
        &[LeaseResource::Blob(retried.clone())],
    );

    fixture.collect();
    assert_eq!(fixture.has_blob(&held), BOTH);

    let report = fixture.collector.collect(PassTrigger::Requested).unwrap();
    assert_eq!(report.leases_removed, 1);
    assert_eq!(fixture.has_blob(&held), NEITHER);
    assert_eq!(
        fixture.has_blob(&retried),
        BOTH,
        "the retry's own lease keeps it"
    );
    assert!(
        fixture
            .metadata
            .read()
            .unwrap()
            .lease("pull-retry")
            .unwrap()
            .is_some()
    );
}

/// The interleaving behind a rare `ParentNotCommitted` under load: a pull
/// re-extracts a snapshot whose record an earlier record phase deleted before
/// the file phase moved the old directory away. Its `extracting` record names
/// the path, and its commit (which takes no write lock) replaces the stale
/// directory: `remove_dir_all`, then `rename`. If the file phase lists the
/// stale entry, then looks at it in between those two steps, it must still
/// keep the path, and never move the committed directory into the trash.
#[cfg(feature = "failpoints")]
#[test]
fn a_snapshot_replacing_its_stale_directory_during_the_file_phase_keeps_it() {
    thread_local! {
        /// Set on the thread whose gc pass the fail point callbacks act in, so
        /// that passes of tests running at the same time go undisturbed.
        static PLAYS_A_PULL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    let fixture = Fixture::new();
    let chain_id = digest(0xce, 1);
    fixture.lease(
        "pull",
        now_ms() + HOUR_MS,
        &[LeaseResource::Snapshot(chain_id.clone())],
    );
    // The extracting record, the stale directory, and the new one unpacked.
    fixture.snapshot(&chain_id, None, SnapshotState::Extracting);
    let destination = fixture.snapshot_directory(&chain_id);
    let unpacked = fixture.root.join("snapshots/extracting/new");
    std::fs::create_dir_all(&unpacked).unwrap();
    std::fs::write(unpacked.join("file"), b"layer").unwrap();

    let stale = destination.clone();
    fail::cfg_callback("gc::file_phase::snapshots_listed", move || {
        if PLAYS_A_PULL.get() {
            std::fs::remove_dir_all(&stale).unwrap();
        }
    })
    .unwrap();
    let (from, to) = (unpacked.clone(), destination.clone());
    fail::cfg_callback("gc::file_phase::decided", move || {
        if PLAYS_A_PULL.get() {
            std::fs::rename(&from, &to).unwrap();
        }
    })
    .unwrap();
    PLAYS_A_PULL.set(true);
    let report = fixture.collector.collect(PassTrigger::Schedule);
    PLAYS_A_PULL.set(false);
    fail::remove("gc::file_phase::snapshots_listed");
    fail::remove("gc::file_phase::decided");
    let report = report.unwrap();

    assert!(
        destination.join("file").is_file(),
        "the committed directory went: {report:?}"
    );
    assert_eq!(report.unknown_files_removed, 0, "{report:?}");
    assert_eq!(report.snapshots_removed, 0, "{report:?}");
}

/// A removal while a pass runs (the kubelet removing images one call after
/// another) must get a pass after it: the pass running may have decided
/// before the removal committed. The fail point holds the first pass in its
/// file phase until the request is made.
#[cfg(feature = "failpoints")]
#[test]
fn a_pass_requested_while_one_runs_gets_a_pass_after_it() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    // Only passes on this runtime's threads act in the callback: other tests
    // running at the same time pass through the same fail point.
    const THREAD_NAME: &str = "gc-pass-requested-test";
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(THREAD_NAME)
        .enable_all()
        .build()
        .unwrap();
    let fixture = Fixture::new();
    let passes = Arc::new(AtomicUsize::new(0));
    let (in_pass, first_pass_started) = mpsc::channel::<()>();
    let (request_made, wait_for_request) = mpsc::channel::<()>();
    let wait_for_request = std::sync::Mutex::new(wait_for_request);
    let counted = passes.clone();
    fail::cfg_callback("gc::file_phase::decided", move || {
        if std::thread::current().name() != Some(THREAD_NAME) {
            return;
        }
        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            in_pass.send(()).unwrap();
            wait_for_request.lock().unwrap().recv().unwrap();
        }
    })
    .unwrap();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = {
        let _entered = runtime.enter();
        super::worker::spawn_worker(fixture.collector.clone(), stopped)
    };
    fixture.collector.request_pass();
    first_pass_started
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the request started no pass");
    fixture.collector.request_pass();
    request_made.send(()).unwrap();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while passes.load(Ordering::SeqCst) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no pass after the one the request arrived during"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    fail::remove("gc::file_phase::decided");
    stop.send(true).unwrap();
    runtime.block_on(worker).unwrap();
}
