//! The same drill for every fail point of the pull and gc paths: the real
//! daemon runs a workload (pull two images sharing a layer, remove one, run
//! gc) with the fail point set to abort the process; then, restarted without
//! it, the daemon must start; offline fsck must find nothing (so whatever is
//! listed is whole); every image whose pull was acknowledged (and not
//! removed) is listed, and nothing whose pull never ran;
//! pulling again succeeds without fetching any blob that was recorded before
//! the crash; and after removing everything and a gc pass, the content,
//! ingest and snapshot directories are empty and no record is left.

use std::path::Path;
use std::process::Command;

use cri_imaged::api::client;
use cri_imaged::api::proto::runtime::v1 as cri;
use cri_imaged::metadata::MetadataStore;

use crate::crashing_daemon::{spec, start};
use crate::support::registry::{
    BuiltImage, Compression, ImageBuilder, LayerBuilder, Pusher, TestRegistry,
};

/// Each fail point with the `FAILPOINTS` action that fires it during the
/// workload (gc's own is passed once: the daemon's startup pass goes first).
const FAIL_POINTS: [(&str, &str); 6] = [
    ("content::after_rename_before_record", "return(abort)"),
    ("unpack::mid_extraction", "return(abort)"),
    ("snapshot::after_rename_before_record", "return(abort)"),
    ("pull::before_ready_commit", "return(abort)"),
    ("pull::after_ready_commit", "return(abort)"),
    ("gc::between_record_and_file_phase", "1*off->return(abort)"),
];

fn images() -> (BuiltImage, BuiltImage) {
    let base = LayerBuilder::new()
        .file("etc/os-release", b"NAME=drill\n")
        .file("base/data", &[7; 50_000])
        .build(Compression::Gzip);
    let first = ImageBuilder::new()
        .layer(base.clone())
        .layer(
            LayerBuilder::new()
                .file("first", &[1; 20_000])
                .build(Compression::Gzip),
        )
        .build();
    let second = ImageBuilder::new()
        .layer(base)
        .layer(
            LayerBuilder::new()
                .file("second", &[2; 20_000])
                .build(Compression::Zstd),
        )
        .build();
    (first, second)
}

fn fsck_is_clean(state: &Path) -> Result<(), String> {
    let output = Command::new(env!("CARGO_BIN_EXE_cri-imaged"))
        .args(["fsck", "--verify-content", "--root"])
        .arg(state)
        .output()
        .unwrap();
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn recorded_blobs(state: &Path) -> Vec<String> {
    let (store, _) = MetadataStore::open(&state.join("metadata.redb")).unwrap();
    let read = store.read().unwrap();
    read.blobs()
        .unwrap()
        .iter()
        .map(|blob| blob.digest.to_string())
        .collect()
}

fn entries(directory: &Path) -> Vec<String> {
    std::fs::read_dir(directory)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name != "extracting")
                .collect()
        })
        .unwrap_or_default()
}

async fn drill(fail_point: &str, action: &str) {
    let registry = TestRegistry::start();
    let (first, second) = images();
    let pusher = Pusher::new(&registry);
    pusher.push_image("drill/first", &first, "v1").unwrap();
    pusher.push_image("drill/second", &second, "v1").unwrap();
    let first_name = format!("{}/drill/first:v1", registry.host());
    let second_name = format!("{}/drill/second:v1", registry.host());
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");

    // The workload, until the fail point aborts the daemon.
    let mut daemon = start(root.path(), Some(&format!("{fail_point}={action}"))).await;
    let mut acknowledged_pulls = Vec::new();
    // A pull cut off by the crash may or may not have committed.
    let mut interrupted_pulls = Vec::new();
    let mut first_removed = false;
    if let Ok(mut images) = client::image_client(&daemon.socket).await {
        for (name, built) in [(&first_name, &first), (&second_name, &second)] {
            let pulled = images
                .pull_image(cri::PullImageRequest {
                    image: spec(name),
                    ..Default::default()
                })
                .await;
            match pulled {
                Ok(_) => acknowledged_pulls.push(built.config_digest.clone()),
                Err(_) => interrupted_pulls.push(built.config_digest.clone()),
            }
        }
        first_removed = images
            .remove_image(cri::RemoveImageRequest {
                image: spec(&first_name),
            })
            .await
            .is_ok();
        let _ = Command::new(env!("CARGO_BIN_EXE_cri-imaged"))
            .args(["gc", "--socket"])
            .arg(&daemon.socket)
            .output();
    }
    let status = daemon.child.wait().unwrap();
    assert!(
        !status.success(),
        "{fail_point}: the workload reached the fail point and aborted"
    );
    drop(daemon);
    let stored_before = recorded_blobs(&state);

    // Restarted without the fail point: it starts, and what it lists is
    // exactly what the clients were told.
    let daemon = start(root.path(), None).await;
    let mut images = client::image_client(&daemon.socket).await.unwrap();
    let listed: Vec<String> = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images
        .into_iter()
        .map(|image| image.id)
        .collect();
    let mut expected = acknowledged_pulls.clone();
    if first_removed {
        expected.retain(|id| *id != first.config_digest);
    }
    for id in &expected {
        assert!(
            listed.contains(id),
            "{fail_point}: {id} lost; listed {listed:?}"
        );
    }
    for id in &listed {
        assert!(
            acknowledged_pulls.contains(id) || interrupted_pulls.contains(id),
            "{fail_point}: {id} listed but never pulled"
        );
    }
    drop(images);
    drop(daemon);
    if let Err(problems) = fsck_is_clean(&state) {
        panic!("{fail_point}: fsck after the restart:\n{problems}");
    }

    // Pulling again succeeds and fetches no blob that was stored.
    let daemon = start(root.path(), None).await;
    let mut images = client::image_client(&daemon.socket).await.unwrap();
    let log_before = registry.log_text().len();
    for name in [&first_name, &second_name] {
        images
            .pull_image(cri::PullImageRequest {
                image: spec(name),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("{fail_point}: pull of {name} again: {status}"));
    }
    let fetched_again = registry.log_text()[log_before..].to_owned();
    for digest in &stored_before {
        assert!(
            !fetched_again.contains(&format!("/blobs/{digest}")),
            "{fail_point}: {digest} was stored before the crash and fetched again"
        );
    }

    // Remove everything, collect: nothing is left behind.
    for name in [&first_name, &second_name] {
        images
            .remove_image(cri::RemoveImageRequest { image: spec(name) })
            .await
            .unwrap();
    }
    let collected = Command::new(env!("CARGO_BIN_EXE_cri-imaged"))
        .args(["gc", "--socket"])
        .arg(&daemon.socket)
        .output()
        .unwrap();
    assert!(collected.status.success(), "{collected:?}");
    drop(images);
    drop(daemon);
    for directory in ["content/blobs/sha256", "content/ingest", "snapshots"] {
        let left = entries(&state.join(directory));
        assert!(
            left.is_empty(),
            "{fail_point}: {directory} still holds {left:?}"
        );
    }
    let (store, _) = MetadataStore::open(&state.join("metadata.redb")).unwrap();
    let counts = store.read().unwrap().counts().unwrap();
    let read = store.read().unwrap();
    assert!(
        read.blobs().unwrap().is_empty()
            && read.snapshots().unwrap().is_empty()
            && read.ingests().unwrap().is_empty()
            && read.references().unwrap().is_empty()
            && read.list_images().unwrap().is_empty(),
        "{fail_point}: records left: {counts:?}"
    );
}

#[tokio::test]
async fn every_fail_point_leaves_a_store_that_restarts_consistent_and_leaks_nothing() {
    for (fail_point, action) in FAIL_POINTS {
        drill(fail_point, action).await;
    }
}
