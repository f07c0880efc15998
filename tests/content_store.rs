//! The content store through its public API: only verified bytes become blobs,
//! a bad blob leaves nothing behind, an interrupted ingest resumes from its
//! recorded offset (also after a restart), and concurrent ingests of one digest
//! download once.
//!
//! The bytes come from an in-memory source here so that each fault is exact;
//! the registry tests drive the same code with the real registry.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cri_imaged::content_store::{
    BlobSource, ContentError, ContentLimits, ContentStore, IngestError, IngestRequest, OpenedBlob,
};
use cri_imaged::metadata::{Lease, LeaseResource, MetadataStore};
use cri_imaged::oci::Descriptor;
use cri_imaged::reference::{Digest, DigestAlgorithm, DigestHasher};
use futures_util::StreamExt;

#[derive(Debug, thiserror::Error)]
#[error("test source failed at byte {0}")]
struct SourceFailed(u64);

/// Serves `data` in chunks; can fail once at a byte offset, and can ignore ranges.
#[derive(Clone)]
struct MemorySource {
    data: Bytes,
    chunk_bytes: usize,
    fail_once_at: Arc<Mutex<Option<u64>>>,
    honour_range: bool,
    opened_at: Arc<Mutex<Vec<u64>>>,
}

impl MemorySource {
    fn new(data: Vec<u8>) -> Self {
        MemorySource {
            data: Bytes::from(data),
            chunk_bytes: 7_000,
            fail_once_at: Arc::new(Mutex::new(None)),
            honour_range: true,
            opened_at: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn failing_once_at(self, offset: u64) -> Self {
        *self.fail_once_at.lock().unwrap() = Some(offset);
        self
    }

    fn opens(&self) -> Vec<u64> {
        self.opened_at.lock().unwrap().clone()
    }
}

impl BlobSource for MemorySource {
    type Error = SourceFailed;

    async fn open(&mut self, offset_bytes: u64) -> Result<OpenedBlob<SourceFailed>, SourceFailed> {
        self.opened_at.lock().unwrap().push(offset_bytes);
        let start = if self.honour_range { offset_bytes } else { 0 };
        let fail_at = self.fail_once_at.lock().unwrap().take();
        let mut chunks: Vec<Result<Bytes, SourceFailed>> = Vec::new();
        let mut position = start as usize;
        while position < self.data.len() {
            let end = (position + self.chunk_bytes).min(self.data.len());
            if let Some(fail_at) = fail_at
                && end as u64 > fail_at
            {
                let cut = (fail_at as usize).max(position);
                if cut > position {
                    chunks.push(Ok(self.data.slice(position..cut)));
                }
                chunks.push(Err(SourceFailed(fail_at)));
                break;
            }
            chunks.push(Ok(self.data.slice(position..end)));
            position = end;
        }
        Ok(OpenedBlob {
            offset_bytes: start,
            stream: futures_util::stream::iter(chunks).boxed(),
        })
    }
}

fn blob_data(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn descriptor_of(data: &[u8]) -> Descriptor {
    Descriptor::new(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        DigestHasher::sha256_of(data),
        data.len() as u64,
    )
}

struct Fixture {
    root: tempfile::TempDir,
    metadata: Arc<MetadataStore>,
    store: ContentStore,
}

fn small_limits() -> ContentLimits {
    ContentLimits {
        progress_record_interval_bytes: 32 * 1024,
        write_batch_bytes: 16 * 1024,
    }
}

fn open_fixture(root: tempfile::TempDir) -> Fixture {
    let (metadata, _) = MetadataStore::open(&root.path().join("metadata.redb")).unwrap();
    let metadata = Arc::new(metadata);
    let store = ContentStore::open(
        root.path().join("content"),
        metadata.clone(),
        small_limits(),
    )
    .unwrap();
    Fixture {
        root,
        metadata,
        store,
    }
}

fn fixture_with_lease(lease_id: &str) -> Fixture {
    let fixture = open_fixture(tempfile::tempdir().unwrap());
    add_lease(&fixture, lease_id);
    fixture
}

fn add_lease(fixture: &Fixture, lease_id: &str) {
    let lease = Lease {
        id: lease_id.to_owned(),
        created_unix_ms: 1,
        expires_unix_ms: u64::MAX,
        boot_id: "test".to_owned(),
        labels: Default::default(),
    };
    fixture.metadata.write(|txn| txn.put_lease(&lease)).unwrap();
}

fn files_under(directory: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(directory) {
        for entry in entries {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                found.extend(files_under(&entry.path()));
            } else {
                found.push(entry.path().display().to_string());
            }
        }
    }
    found
}

/// Nothing of `digest` exists: no blob file, no partial file, no records.
fn assert_nothing_left(fixture: &Fixture, digest: &Digest) {
    let content = fixture.root.path().join("content");
    assert_eq!(files_under(&content), Vec::<String>::new());
    let read = fixture.metadata.read().unwrap();
    assert_eq!(read.blob(digest).unwrap(), None);
    assert!(read.ingests().unwrap().is_empty());
    for lease in read.leases().unwrap() {
        assert!(
            read.lease_resources(&lease.id).unwrap().is_empty(),
            "{lease:?}"
        );
    }
}

#[tokio::test]
async fn a_verified_blob_is_stored_recorded_and_leased() {
    let fixture = fixture_with_lease("pull");
    let data = blob_data(100_000, 1);
    let expected = descriptor_of(&data);
    let children = vec![DigestHasher::sha256_of(b"child")];
    let mut source = MemorySource::new(data.clone());
    let outcome = fixture
        .store
        .ingest(
            IngestRequest {
                expected: &expected,
                children: &children,
                lease_id: "pull",
            },
            &mut source,
        )
        .await
        .unwrap();
    assert!(!outcome.already_present);
    assert_eq!(outcome.downloaded_bytes, 100_000);
    assert_eq!(outcome.blob.children, children);
    assert_eq!(
        std::fs::read(fixture.store.paths().blob(&expected.digest)).unwrap(),
        data
    );
    assert_eq!(
        fixture
            .store
            .read_verified(&expected.digest, 1 << 20)
            .unwrap(),
        data
    );
    let read = fixture.metadata.read().unwrap();
    assert_eq!(read.blob(&expected.digest).unwrap(), Some(outcome.blob));
    assert!(read.ingests().unwrap().is_empty());
    assert_eq!(
        read.lease_resources("pull").unwrap(),
        vec![LeaseResource::Blob(expected.digest.clone())]
    );
    assert!(!fixture.store.paths().partial(&expected.digest).exists());
}

#[tokio::test]
async fn content_with_the_wrong_digest_is_refused_and_leaves_nothing() {
    let fixture = fixture_with_lease("pull");
    let data = blob_data(50_000, 2);
    let mut expected = descriptor_of(&data);
    let claimed = DigestHasher::sha256_of(b"something else entirely");
    expected.digest = claimed.clone();
    let error = fixture
        .store
        .ingest(
            IngestRequest {
                expected: &expected,
                children: &[],
                lease_id: "pull",
            },
            &mut MemorySource::new(data.clone()),
        )
        .await
        .unwrap_err();
    let message = error.to_string();
    match error {
        IngestError::Content(ContentError::DigestMismatch { digest, received }) => {
            assert_eq!(digest, claimed);
            assert_eq!(received, DigestHasher::sha256_of(&data));
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(message.contains(claimed.as_str()), "{message}");
    assert!(
        message.contains(DigestHasher::sha256_of(&data).as_str()),
        "{message}"
    );
    assert_nothing_left(&fixture, &claimed);
}

#[tokio::test]
async fn too_long_and_too_short_content_is_refused_and_leaves_nothing() {
    let fixture = fixture_with_lease("pull");
    let data = blob_data(40_000, 3);
    for (claimed_size, received) in [(30_000u64, 35_000u64), (50_000, 40_000)] {
        let mut expected = descriptor_of(&data);
        expected.size_bytes = claimed_size;
        let error = fixture
            .store
            .ingest(
                IngestRequest {
                    expected: &expected,
                    children: &[],
                    lease_id: "pull",
                },
                &mut MemorySource::new(data.clone()),
            )
            .await
            .unwrap_err();
        match &error {
            IngestError::Content(ContentError::SizeMismatch {
                expected_size_bytes,
                received_size_bytes,
                ..
            }) => {
                assert_eq!(*expected_size_bytes, claimed_size);
                // Too long is caught at the first chunk past the expected size.
                assert_eq!(*received_size_bytes, received, "{error}");
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(
            error
                .to_string()
                .contains(&format!("expected {claimed_size} bytes"))
        );
        assert_nothing_left(&fixture, &expected.digest);
    }
}

#[tokio::test]
async fn an_interrupted_ingest_keeps_its_progress_and_resumes_from_the_recorded_offset() {
    let fixture = fixture_with_lease("pull");
    let data = blob_data(300_000, 4);
    let expected = descriptor_of(&data);
    let request = IngestRequest {
        expected: &expected,
        children: &[],
        lease_id: "pull",
    };
    let mut source = MemorySource::new(data.clone()).failing_once_at(200_000);
    let error = fixture
        .store
        .ingest(request, &mut source)
        .await
        .unwrap_err();
    assert!(
        matches!(error, IngestError::Source(SourceFailed(200_000))),
        "{error}"
    );
    let ingest = fixture
        .metadata
        .read()
        .unwrap()
        .ingests()
        .unwrap()
        .pop()
        .expect("ingest kept");
    assert_eq!(
        ingest.offset_bytes, 200_000,
        "everything received was synced and recorded"
    );
    assert_eq!(
        fixture
            .metadata
            .read()
            .unwrap()
            .blob(&expected.digest)
            .unwrap(),
        None
    );

    let outcome = fixture.store.ingest(request, &mut source).await.unwrap();
    assert_eq!(source.opens(), vec![0, 200_000]);
    assert_eq!(outcome.resumed_from_bytes, 200_000);
    assert_eq!(outcome.downloaded_bytes, 100_000);
    assert_eq!(
        std::fs::read(fixture.store.paths().blob(&expected.digest)).unwrap(),
        data
    );
    assert!(
        fixture
            .metadata
            .read()
            .unwrap()
            .ingests()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_resume_after_a_restart_rehashes_only_the_recorded_prefix() {
    let fixture = fixture_with_lease("first-pull");
    let data = blob_data(250_000, 5);
    let expected = descriptor_of(&data);
    let mut source = MemorySource::new(data.clone()).failing_once_at(150_000);
    fixture
        .store
        .ingest(
            IngestRequest {
                expected: &expected,
                children: &[],
                lease_id: "first-pull",
            },
            &mut source,
        )
        .await
        .unwrap_err();
    // Bytes past the recorded offset were never synced: make them garbage, as a
    // crash may, and make the record lag behind the file.
    let partial = fixture.store.paths().partial(&expected.digest);
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&partial)
            .unwrap();
        file.write_all(&[0xee; 9_999]).unwrap();
    }
    let Fixture {
        root,
        metadata,
        store,
    } = fixture;
    drop(store);
    drop(metadata);

    let fixture = open_fixture(root);
    add_lease(&fixture, "second-pull");
    let mut source = MemorySource::new(data.clone());
    let outcome = fixture
        .store
        .ingest(
            IngestRequest {
                expected: &expected,
                children: &[],
                lease_id: "second-pull",
            },
            &mut source,
        )
        .await
        .unwrap();
    assert_eq!(outcome.resumed_from_bytes, 150_000);
    assert_eq!(source.opens(), vec![150_000]);
    assert_eq!(
        std::fs::read(fixture.store.paths().blob(&expected.digest)).unwrap(),
        data
    );
}

#[tokio::test]
async fn a_source_that_ignores_ranges_restarts_the_ingest_from_zero() {
    let fixture = fixture_with_lease("pull");
    let data = blob_data(120_000, 6);
    let expected = descriptor_of(&data);
    let request = IngestRequest {
        expected: &expected,
        children: &[],
        lease_id: "pull",
    };
    let mut source = MemorySource::new(data.clone()).failing_once_at(80_000);
    source.honour_range = false;
    fixture
        .store
        .ingest(request, &mut source)
        .await
        .unwrap_err();
    let outcome = fixture.store.ingest(request, &mut source).await.unwrap();
    assert_eq!(
        outcome.downloaded_bytes, 120_000,
        "the whole blob came again"
    );
    assert_eq!(
        std::fs::read(fixture.store.paths().blob(&expected.digest)).unwrap(),
        data
    );
}

#[tokio::test]
async fn concurrent_ingests_of_one_digest_download_it_once() {
    let fixture = fixture_with_lease("pull");
    let data = blob_data(400_000, 7);
    let expected = descriptor_of(&data);
    let source = MemorySource::new(data.clone());
    let store = Arc::new(fixture.store);
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            let expected = expected.clone();
            let mut source = source.clone();
            tokio::spawn(async move {
                store
                    .ingest(
                        IngestRequest {
                            expected: &expected,
                            children: &[],
                            lease_id: "pull",
                        },
                        &mut source,
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut downloads = 0;
    for task in tasks {
        let outcome = task.await.unwrap();
        if !outcome.already_present {
            downloads += 1;
        }
    }
    assert_eq!(downloads, 1);
    assert_eq!(source.opens(), vec![0], "the source was opened once");
}

#[tokio::test]
async fn an_ingest_under_a_missing_lease_is_refused_before_any_byte_is_written() {
    let fixture = fixture_with_lease("pull");
    let data = blob_data(1_000, 8);
    let expected = descriptor_of(&data);
    let mut source = MemorySource::new(data);
    let error = fixture
        .store
        .ingest(
            IngestRequest {
                expected: &expected,
                children: &[],
                lease_id: "no-such-lease",
            },
            &mut source,
        )
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("lease no-such-lease does not exist"),
        "{error}"
    );
    assert!(source.opens().is_empty());
    assert_nothing_left(&fixture, &expected.digest);
}

#[tokio::test]
async fn sha512_blobs_are_verified_with_sha512() {
    let fixture = fixture_with_lease("pull");
    let data = blob_data(10_000, 9);
    let mut hasher = DigestHasher::new(DigestAlgorithm::Sha512);
    hasher.update(&data);
    let expected = Descriptor::new(
        "application/octet-stream",
        hasher.finish(),
        data.len() as u64,
    );
    fixture
        .store
        .ingest(
            IngestRequest {
                expected: &expected,
                children: &[],
                lease_id: "pull",
            },
            &mut MemorySource::new(data.clone()),
        )
        .await
        .unwrap();
    assert!(
        fixture
            .store
            .paths()
            .blob(&expected.digest)
            .to_str()
            .unwrap()
            .contains("/blobs/sha512/")
    );
    assert_eq!(
        fixture
            .store
            .read_verified(&expected.digest, 1 << 20)
            .unwrap(),
        data
    );
}

#[tokio::test]
async fn a_stored_blob_changed_on_disk_fails_its_verified_read() {
    let fixture = fixture_with_lease("pull");
    let data = blob_data(5_000, 10);
    let expected = descriptor_of(&data);
    fixture
        .store
        .ingest(
            IngestRequest {
                expected: &expected,
                children: &[],
                lease_id: "pull",
            },
            &mut MemorySource::new(data.clone()),
        )
        .await
        .unwrap();
    let path = fixture.store.paths().blob(&expected.digest);
    let mut changed = data.clone();
    changed[1234] ^= 1;
    std::fs::write(&path, &changed).unwrap();
    let error = fixture
        .store
        .read_verified(&expected.digest, 1 << 20)
        .unwrap_err();
    assert!(
        matches!(error, ContentError::DigestMismatch { .. }),
        "{error}"
    );
    let error = fixture
        .store
        .read_verified(&expected.digest, 100)
        .unwrap_err();
    assert!(matches!(error, ContentError::TooLarge { .. }), "{error}");
}
