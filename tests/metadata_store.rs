//! The metadata store through its public API: every multi-record change is one
//! transaction, both name indexes always agree, readers never wait for writers,
//! and a damaged file is refused without being touched.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, mpsc};
use std::thread;

use cri_imaged::metadata::{
    ConsistencyProblem, ImageState, Lease, LeaseResource, MetadataError, MetadataStore, OpenError,
    SCHEMA_VERSION, check_consistency, resolve_image_id_prefix,
};
use proptest::prelude::*;

use crate::support::{digest, ready_image, reference};

fn open_fresh() -> (tempfile::TempDir, MetadataStore) {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = MetadataStore::open(&dir.path().join("metadata.redb")).unwrap();
    assert!(report.created);
    (dir, store)
}

/// Records image `number` (with its blobs) and points `names` at it, in one transaction.
fn add_image(store: &MetadataStore, number: u32, names: &[&str]) {
    let (image, blobs) = ready_image(number);
    store
        .write(|txn| {
            for blob in &blobs {
                txn.put_blob(blob)?;
            }
            txn.put_image(&image)?;
            for name in names {
                txn.set_reference(&reference(name), image.id())?;
            }
            Ok(())
        })
        .unwrap();
}

fn assert_consistent(store: &MetadataStore) {
    let problems = check_consistency(&store.read().unwrap()).unwrap();
    assert_eq!(problems, Vec::<ConsistencyProblem>::new());
}

#[test]
fn a_new_store_is_created_at_the_current_schema_and_reopens_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.redb");
    let (store, report) = MetadataStore::open(&path).unwrap();
    assert!(report.created);
    assert_eq!(report.migration_steps_applied, 0);
    assert_eq!(
        store.read().unwrap().schema_version().unwrap(),
        Some(SCHEMA_VERSION)
    );
    let boot = store.begin_boot().unwrap();
    drop(store);

    let (store, report) = MetadataStore::open(&path).unwrap();
    assert!(!report.created);
    assert_eq!(report.found_schema_version, SCHEMA_VERSION);
    assert_eq!(store.read().unwrap().boot_id().unwrap(), Some(boot.clone()));
    let next_boot = store.begin_boot().unwrap();
    assert_ne!(next_boot, boot, "every boot gets a fresh id");
}

#[test]
fn an_image_is_found_by_id_by_every_name_and_by_id_prefix() {
    let (_dir, store) = open_fresh();
    add_image(&store, 1, &["busybox:1.36", "quay.io/x/busybox:1.36"]);
    add_image(&store, 2, &["nginx"]);
    let (image, _) = ready_image(1);
    let read = store.read().unwrap();

    assert_eq!(read.image(image.id()).unwrap().as_ref(), Some(&image));
    for name in ["docker.io/library/busybox:1.36", "quay.io/x/busybox:1.36"] {
        assert_eq!(
            read.image_by_name(name).unwrap().as_ref(),
            Some(&image),
            "{name}"
        );
    }
    assert_eq!(
        read.image_by_name("docker.io/library/busybox:latest")
            .unwrap(),
        None
    );
    assert_eq!(
        read.names_of(image.id()).unwrap(),
        vec!["docker.io/library/busybox:1.36", "quay.io/x/busybox:1.36"]
    );
    // digest(0xc0, n) starts with "c0"; both configs share the "c000" prefix, so
    // only a longer prefix is unique.
    assert_eq!(resolve_image_id_prefix(&read, "c000").unwrap(), None);
    assert_eq!(
        resolve_image_id_prefix(&read, image.id().hex())
            .unwrap()
            .as_ref(),
        Some(image.id())
    );
    assert_eq!(
        resolve_image_id_prefix(&read, image.id().as_str())
            .unwrap()
            .as_ref(),
        Some(image.id())
    );
    assert_eq!(resolve_image_id_prefix(&read, "zz").unwrap(), None);
    assert_consistent(&store);
}

#[test]
fn create_or_update_moves_a_name_and_keeps_the_old_image_reachable_by_id() {
    let (_dir, store) = open_fresh();
    add_image(&store, 1, &["app:v1", "app:stable"]);
    add_image(&store, 2, &[]);
    let (old, _) = ready_image(1);
    let (new, _) = ready_image(2);

    let previous = store
        .write(|txn| txn.set_reference(&reference("app:stable"), new.id()))
        .unwrap();
    assert_eq!(previous.as_ref(), Some(old.id()));

    let read = store.read().unwrap();
    assert_eq!(
        read.image_id_by_name("docker.io/library/app:stable")
            .unwrap()
            .as_ref(),
        Some(new.id())
    );
    assert_eq!(
        read.image(old.id()).unwrap().as_ref(),
        Some(&old),
        "old image stays by id"
    );
    assert_eq!(
        read.names_of(old.id()).unwrap(),
        vec!["docker.io/library/app:v1"]
    );
    assert_eq!(
        read.names_of(new.id()).unwrap(),
        vec!["docker.io/library/app:stable"]
    );
    // Pointing a name at the image it already points at changes nothing.
    let previous = store
        .write(|txn| txn.set_reference(&reference("app:stable"), new.id()))
        .unwrap();
    assert_eq!(previous.as_ref(), Some(new.id()));
    assert_eq!(store.read().unwrap().names_of(new.id()).unwrap().len(), 1);
    assert_consistent(&store);
}

#[test]
fn a_name_cannot_point_at_a_missing_image_or_be_unnormalized() {
    let (_dir, store) = open_fresh();
    let missing = digest(0xc0, 99);
    let error = store
        .write(|txn| txn.set_reference(&reference("ghost:v1"), &missing))
        .unwrap_err();
    assert!(
        matches!(&error, MetadataError::ImageNotFound { id } if *id == missing),
        "{error}"
    );
    assert!(error.to_string().contains(missing.as_str()));

    add_image(&store, 1, &[]);
    let (image, _) = ready_image(1);
    let both = cri_imaged::reference::ImageReference::parse_normalized(&format!(
        "app:v1@{}",
        digest(0xa0, 1)
    ))
    .unwrap();
    let error = store
        .write(|txn| txn.set_reference(&both, image.id()))
        .unwrap_err();
    assert!(
        matches!(error, MetadataError::NotNormalized { .. }),
        "{error}"
    );
    assert_eq!(store.read().unwrap().counts().unwrap().references, 0);
}

#[test]
fn a_failed_multi_record_change_writes_nothing() {
    let (_dir, store) = open_fresh();
    let (image, blobs) = ready_image(7);
    let before = store.read().unwrap().counts().unwrap();
    let error = store
        .write(|txn| {
            for blob in &blobs {
                txn.put_blob(blob)?;
            }
            txn.put_image(&image)?;
            txn.set_reference(&reference("app:v7"), image.id())?;
            // The last step fails: attaching to a lease that does not exist.
            txn.attach_to_lease("no-such-lease", &LeaseResource::Image(image.id().clone()))
        })
        .unwrap_err();
    assert!(
        matches!(error, MetadataError::LeaseNotFound { .. }),
        "{error}"
    );
    let read = store.read().unwrap();
    assert_eq!(read.counts().unwrap(), before);
    assert_eq!(read.image(image.id()).unwrap(), None);
    assert_eq!(
        read.image_by_name("docker.io/library/app:v7").unwrap(),
        None
    );
    assert!(
        read.list_images_in_state(ImageState::Ready)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn removing_an_image_removes_all_its_names_at_once_and_is_idempotent() {
    let (_dir, store) = open_fresh();
    add_image(&store, 1, &["a:1", "b:1", "registry.local:5000/c/d:1"]);
    add_image(&store, 2, &["a:2"]);
    let (image, _) = ready_image(1);

    let removed = store.write(|txn| txn.remove_image(image.id())).unwrap();
    assert_eq!(
        removed,
        Some(vec![
            "docker.io/library/a:1".to_owned(),
            "docker.io/library/b:1".to_owned(),
            "registry.local:5000/c/d:1".to_owned(),
        ])
    );
    let read = store.read().unwrap();
    assert_eq!(read.image(image.id()).unwrap(), None);
    assert_eq!(read.image_by_name("docker.io/library/a:1").unwrap(), None);
    assert_eq!(read.counts().unwrap().references, 1);
    assert_eq!(
        store.write(|txn| txn.remove_image(image.id())).unwrap(),
        None
    );
    assert_consistent(&store);
}

#[test]
fn the_state_index_follows_every_state_change() {
    let (_dir, store) = open_fresh();
    for number in 0..6 {
        add_image(&store, number, &[]);
    }
    let (first, _) = ready_image(0);
    let (second, _) = ready_image(1);
    store
        .write(|txn| {
            txn.set_image_state(first.id(), ImageState::Pulling)?;
            txn.set_image_state(second.id(), ImageState::GcPending)?;
            Ok(())
        })
        .unwrap();
    let read = store.read().unwrap();
    let ids = |state| -> Vec<String> {
        read.list_images_in_state(state)
            .unwrap()
            .iter()
            .map(|image| image.id().to_string())
            .collect()
    };
    assert_eq!(ids(ImageState::Pulling), vec![first.id().to_string()]);
    assert_eq!(ids(ImageState::GcPending), vec![second.id().to_string()]);
    assert_eq!(ids(ImageState::Ready).len(), 4);
    let error = store
        .write(|txn| txn.set_image_state(&digest(0xc0, 500), ImageState::Ready))
        .unwrap_err();
    assert!(matches!(error, MetadataError::ImageNotFound { .. }));
    assert_consistent(&store);
}

#[test]
fn list_images_pairs_every_image_with_exactly_its_names() {
    let (_dir, store) = open_fresh();
    for number in 0..40 {
        let names: Vec<String> = (0..number % 3)
            .map(|tag| format!("app{number}:t{tag}"))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        add_image(&store, number, &names);
    }
    let listed = store.read().unwrap().list_images().unwrap();
    assert_eq!(listed.len(), 40);
    for named in &listed {
        let number: u32 = named.image.annotations["number"].parse().unwrap();
        let expected: Vec<String> = (0..number % 3)
            .map(|tag| format!("docker.io/library/app{number}:t{tag}"))
            .collect();
        assert_eq!(named.names, expected, "image {number}");
    }
}

#[test]
fn leases_protect_resources_until_removed_and_a_blob_and_its_attachment_commit_together() {
    let (_dir, store) = open_fresh();
    let lease = Lease {
        id: "pull-1".to_owned(),
        created_unix_ms: 10,
        expires_unix_ms: 20,
        boot_id: "boot-a".to_owned(),
        labels: BTreeMap::from([("reference".to_owned(), "docker.io/library/x:1".to_owned())]),
    };
    let (_, blobs) = ready_image(3);
    store
        .write(|txn| {
            txn.put_lease(&lease)?;
            txn.put_blob(&blobs[0])?;
            txn.attach_to_lease("pull-1", &LeaseResource::Blob(blobs[0].digest.clone()))?;
            txn.attach_to_lease("pull-1", &LeaseResource::Ingest("pull-1/0".to_owned()))
        })
        .unwrap();
    let read = store.read().unwrap();
    assert_eq!(read.lease("pull-1").unwrap().as_ref(), Some(&lease));
    assert_eq!(
        read.lease_resources("pull-1").unwrap(),
        vec![
            LeaseResource::Blob(blobs[0].digest.clone()),
            LeaseResource::Ingest("pull-1/0".to_owned()),
        ]
    );
    assert_eq!(
        read.blob(&blobs[0].digest).unwrap().as_ref(),
        Some(&blobs[0])
    );

    let released = store.write(|txn| txn.remove_lease("pull-1")).unwrap();
    assert_eq!(released.map(|resources| resources.len()), Some(2));
    let read = store.read().unwrap();
    assert_eq!(read.lease("pull-1").unwrap(), None);
    assert!(read.lease_resources("pull-1").unwrap().is_empty());
    assert!(
        read.blob(&blobs[0].digest).unwrap().is_some(),
        "the blob itself stays for gc"
    );
    assert_eq!(store.write(|txn| txn.remove_lease("pull-1")).unwrap(), None);
    assert_consistent(&store);
}

#[test]
fn a_reader_is_never_blocked_by_an_open_writer_and_sees_one_commit() {
    let (_dir, store) = open_fresh();
    add_image(&store, 1, &["app:v1"]);
    let store = Arc::new(store);
    let (writer_inside, reader_done) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let writer = {
        let store = store.clone();
        let (writer_inside, reader_done) = (writer_inside.clone(), reader_done.clone());
        thread::spawn(move || {
            store
                .write(|txn| {
                    txn.remove_image(ready_image(1).0.id())?;
                    writer_inside.wait();
                    // Hold the write transaction open until the reader has finished.
                    reader_done.wait();
                    Ok(())
                })
                .unwrap();
        })
    };
    writer_inside.wait();
    let (tx, rx) = mpsc::channel();
    {
        let store = store.clone();
        thread::spawn(move || {
            let read = store.read().unwrap();
            tx.send(
                read.image_by_name("docker.io/library/app:v1")
                    .unwrap()
                    .is_some(),
            )
            .unwrap();
        });
    }
    let seen = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("a read must not wait for an open write transaction");
    assert!(seen, "the uncommitted removal is invisible");
    reader_done.wait();
    writer.join().unwrap();
    assert_eq!(
        store
            .read()
            .unwrap()
            .image_by_name("docker.io/library/app:v1")
            .unwrap(),
        None
    );
}

#[test]
fn a_snapshot_keeps_its_view_while_later_commits_land() {
    let (_dir, store) = open_fresh();
    add_image(&store, 1, &["app:v1"]);
    let before = store.read().unwrap();
    add_image(&store, 2, &["app:v1"]);
    assert_eq!(
        before.image_id_by_name("docker.io/library/app:v1").unwrap(),
        Some(ready_image(1).0.id().clone())
    );
    assert_eq!(
        store
            .read()
            .unwrap()
            .image_id_by_name("docker.io/library/app:v1")
            .unwrap(),
        Some(ready_image(2).0.id().clone())
    );
}

#[test]
fn relaxed_commits_are_visible_and_survive_a_clean_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.redb");
    let (store, _) = MetadataStore::open(&path).unwrap();
    let ingest = cri_imaged::metadata::Ingest {
        key: "k".to_owned(),
        expected_digest: digest(0xb0, 1),
        expected_size_bytes: 100,
        offset_bytes: 10,
        started_unix_ms: 1,
        updated_unix_ms: 2,
    };
    store.write_relaxed(|txn| txn.put_ingest(&ingest)).unwrap();
    assert_eq!(
        store.read().unwrap().ingest("k").unwrap().as_ref(),
        Some(&ingest)
    );
    // A later durable commit makes the relaxed one durable too.
    store.begin_boot().unwrap();
    drop(store);
    let (store, _) = MetadataStore::open(&path).unwrap();
    assert_eq!(store.read().unwrap().ingest("k").unwrap(), Some(ingest));
}

/// 8 threads repoint the same 10 names at random ones of 50 images; afterwards
/// every name resolves to exactly one image and both indexes agree.
#[test]
fn eight_writers_hammering_ten_names_leave_both_indexes_in_agreement() {
    let (_dir, store) = open_fresh();
    for number in 0..50 {
        add_image(&store, number, &[]);
    }
    let store = Arc::new(store);
    let threads: Vec<_> = (0..8u64)
        .map(|thread_number| {
            let store = store.clone();
            thread::spawn(move || {
                // A small deterministic generator per thread (xorshift), so a failure replays.
                let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ (thread_number + 1);
                let mut next = move || {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state
                };
                for _ in 0..40 {
                    let name = reference(&format!("hammer:n{}", next() % 10));
                    let image = ready_image((next() % 50) as u32).0;
                    store
                        .write_relaxed(|txn| txn.set_reference(&name, image.id()).map(|_| ()))
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let read = store.read().unwrap();
    let references = read.references().unwrap();
    assert_eq!(references.len(), 10);
    let mut pointed_at_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, id) in &references {
        pointed_at_by
            .entry(id.to_string())
            .or_default()
            .push(name.clone());
        assert!(
            read.image(id).unwrap().is_some(),
            "{name} points at a missing image"
        );
    }
    let index: Vec<(String, String)> = read.image_name_index().unwrap();
    assert_eq!(
        index.len(),
        10,
        "each name appears in the reverse index exactly once"
    );
    for (id, names) in pointed_at_by {
        assert_eq!(
            read.names_of(&cri_imaged::reference::Digest::parse(&id).unwrap())
                .unwrap(),
            names
        );
    }
    assert_consistent(&store);
}

#[test]
fn the_cached_listing_follows_every_commit_even_while_listed_concurrently() {
    let (_dir, store) = open_fresh();
    let store = Arc::new(store);
    let writer = {
        let store = store.clone();
        thread::spawn(move || {
            for number in 0..60 {
                add_image(&store, number, &[&format!("grow:v{number}")]);
                // Right after a commit returns, the listing includes it.
                assert_eq!(store.list_images().unwrap().len(), number as usize + 1);
            }
        })
    };
    let mut last_seen = 0;
    while !writer.is_finished() {
        let listed = store.list_images().unwrap().len();
        assert!(
            listed >= last_seen,
            "a listing went back in time: {listed} after {last_seen}"
        );
        last_seen = listed;
    }
    writer.join().unwrap();
    let listed = store.list_images().unwrap();
    assert_eq!(listed.len(), 60);
    assert_eq!(*listed, store.read().unwrap().list_images().unwrap());
    store
        .write(|txn| txn.remove_image(ready_image(5).0.id()))
        .unwrap();
    assert_eq!(store.list_images().unwrap().len(), 59);
}

#[test]
fn the_cached_listing_is_patched_with_state_changes_and_moved_names_and_rebuilt_after_a_repair() {
    let (_dir, store) = open_fresh();
    add_image(&store, 1, &["app:v1", "app:latest"]);
    add_image(&store, 2, &["app:v2"]);
    assert_eq!(store.list_images().unwrap().len(), 2, "now cached");
    let (first, _) = ready_image(1);
    let (second, _) = ready_image(2);

    // One transaction: a state change, a name moving between images, and a
    // new image, all patched into the cached listing at once.
    store
        .write(|txn| {
            txn.set_image_state(first.id(), ImageState::GcPending)?;
            txn.set_reference(&reference("app:latest"), second.id())?;
            Ok(())
        })
        .unwrap();
    add_image(&store, 3, &[]);
    let listed = store.list_images().unwrap();
    assert_eq!(*listed, store.read().unwrap().list_images().unwrap());
    let of = |id: &cri_imaged::reference::Digest| {
        listed
            .iter()
            .find(|named| named.image.id() == id)
            .unwrap()
            .clone()
    };
    assert_eq!(of(first.id()).image.state, ImageState::GcPending);
    assert_eq!(of(first.id()).names, vec!["docker.io/library/app:v1"]);
    assert_eq!(
        of(second.id()).names,
        vec!["docker.io/library/app:latest", "docker.io/library/app:v2"]
    );
    assert_eq!(listed.len(), 3);

    // A repair rebuilds indexes wholesale: the listing is read again.
    store.write(|txn| txn.rebuild_indexes()).unwrap();
    assert_eq!(
        *store.list_images().unwrap(),
        store.read().unwrap().list_images().unwrap()
    );
    store.write(|txn| txn.remove_image(first.id())).unwrap();
    let listed = store.list_images().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|named| named.image.id() != first.id()));
}

#[test]
fn a_listing_patched_image_by_image_stays_exact_through_its_compactions() {
    // Past a quarter of its length in patched images, the cached listing is
    // copied whole (for memory locality); every listing in between, and
    // after, must still be exactly the store's.
    let (_dir, store) = open_fresh();
    for number in 1..=8 {
        add_image(&store, number, &[]);
    }
    assert_eq!(store.list_images().unwrap().len(), 8, "now cached");
    for number in 9..=40 {
        let name = format!("app:v{number}");
        add_image(&store, number, &[name.as_str()]);
        // Images 6, 11, 16, ... are removed below; the others change state.
        if number % 3 == 0 && (number - 7) % 5 != 1 {
            let (earlier, _) = ready_image(number - 7);
            store
                .write(|txn| txn.set_image_state(earlier.id(), ImageState::GcPending))
                .unwrap();
        }
        if number % 5 == 0 {
            let (earlier, _) = ready_image(number - 4);
            store.write(|txn| txn.remove_image(earlier.id())).unwrap();
        }
        assert_eq!(
            *store.list_images().unwrap(),
            store.read().unwrap().list_images().unwrap(),
            "after image {number}"
        );
    }
}

#[test]
fn a_database_with_flipped_bytes_is_refused_and_left_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.redb");
    {
        let (store, _) = MetadataStore::open(&path).unwrap();
        for number in 0..200 {
            add_image(&store, number, &[&format!("app:v{number}")]);
        }
    }
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip bytes across the data region (past redb's header), where the records live.
    let start = bytes.len() / 4;
    for position in (start..bytes.len()).step_by(509) {
        bytes[position] ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();

    let error = match MetadataStore::open(&path) {
        Ok(_) => panic!("a corrupted database was accepted"),
        Err(error) => error,
    };
    assert!(matches!(error, OpenError::Corrupted { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains(path.to_str().unwrap()), "{message}");
    assert!(message.contains("nothing was deleted"), "{message}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the file is left as found"
    );
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.redb");
    let garbage = b"this is not a redb file, but it must not be overwritten".repeat(100);
    std::fs::write(&path, &garbage).unwrap();
    let error = MetadataStore::open(&path).err().expect("garbage accepted");
    assert!(matches!(error, OpenError::Corrupted { .. }), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[test]
fn a_second_open_of_the_same_file_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.redb");
    let (_store, _) = MetadataStore::open(&path).unwrap();
    let error = MetadataStore::open(&path)
        .err()
        .expect("second open accepted");
    assert!(matches!(error, OpenError::AlreadyOpen { .. }), "{error}");
}

/// One operation of the model-based test.
#[derive(Clone, Debug)]
enum Operation {
    AddImage(u32),
    SetName { name: u8, image: u32 },
    RemoveName(u8),
    RemoveImage(u32),
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        (0..8u32).prop_map(Operation::AddImage),
        (0..6u8, 0..8u32).prop_map(|(name, image)| Operation::SetName { name, image }),
        (0..6u8).prop_map(Operation::RemoveName),
        (0..8u32).prop_map(Operation::RemoveImage),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The store behaves like a pair of maps (image set, name -> image) under any
    /// sequence of changes, and its indexes stay consistent after each one.
    #[test]
    fn the_store_matches_a_map_model_under_any_sequence(operations in proptest::collection::vec(operation(), 1..40)) {
        let (_dir, store) = open_fresh();
        let mut images: std::collections::BTreeSet<u32> = Default::default();
        let mut names: BTreeMap<u8, u32> = BTreeMap::new();
        for operation in operations {
            let name_of = |name: u8| reference(&format!("model/name{name}:t"));
            match operation {
                Operation::AddImage(number) => {
                    add_image(&store, number, &[]);
                    images.insert(number);
                }
                Operation::SetName { name, image } => {
                    let result = store.write(|txn| txn.set_reference(&name_of(name), ready_image(image).0.id()));
                    if images.contains(&image) {
                        prop_assert!(result.is_ok());
                        names.insert(name, image);
                    } else {
                        let is_not_found = matches!(result, Err(MetadataError::ImageNotFound { .. }));
                        prop_assert!(is_not_found);
                    }
                }
                Operation::RemoveName(name) => {
                    let removed = store.write(|txn| txn.remove_reference(&name_of(name).to_string())).unwrap();
                    prop_assert_eq!(removed, names.remove(&name).map(|image| ready_image(image).0.id().clone()));
                }
                Operation::RemoveImage(number) => {
                    let removed = store.write(|txn| txn.remove_image(ready_image(number).0.id())).unwrap();
                    prop_assert_eq!(removed.is_some(), images.remove(&number));
                    names.retain(|_, image| *image != number);
                }
            }
            let read = store.read().unwrap();
            prop_assert_eq!(read.counts().unwrap().images, images.len() as u64);
            for name in 0..6u8 {
                let expected = names.get(&name).map(|image| ready_image(*image).0.id().clone());
                prop_assert_eq!(read.image_id_by_name(&name_of(name).to_string()).unwrap(), expected);
            }
            prop_assert_eq!(check_consistency(&read).unwrap(), vec![]);
            // The cached listing never lags behind a commit that returned.
            prop_assert_eq!(&*store.list_images().unwrap(), &read.list_images().unwrap());
        }
    }
}
