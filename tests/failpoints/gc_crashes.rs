//! Crash drills that end with gc reclaiming what the crash left:
//! - a gc pass killed between its record phase and its file phase: the records
//!   of the removed image's content are gone (committed), its files are still
//!   on disk. After a restart the daemon starts, the remaining image is intact
//!   and listed, the store is consistent, and a pass removes the leftover files.
//! - a pull killed in the middle of a layer's extraction: after a restart
//!   nothing is listed, the half-written layer is gone, the retry reuses the
//!   downloaded blobs, and removing the image then running `cri-imaged gc`
//!   leaves empty directories and no record (nothing leaked).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cri_imaged::api::client;
use cri_imaged::api::proto::runtime::v1 as cri;
use cri_imaged::metadata::{MetadataStore, check_consistency};
use cri_imaged::reference::Digest;

use crate::crashing_daemon::{spec, start};
use crate::support::registry::{Compression, ImageBuilder, LayerBuilder, Pusher, TestRegistry};

fn blob_file(state: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap();
    state.join("content/blobs").join(algorithm).join(hex)
}

#[tokio::test]
async fn killed_between_the_record_and_file_phases_a_restarted_pass_removes_the_leftovers() {
    let registry = TestRegistry::start();
    let shared = LayerBuilder::new()
        .file("base", &[1; 40_000])
        .build(Compression::Gzip);
    let kept = ImageBuilder::new()
        .layer(shared.clone())
        .layer(
            LayerBuilder::new()
                .file("kept", &[2; 20_000])
                .build(Compression::Gzip),
        )
        .build();
    let removed = ImageBuilder::new()
        .layer(shared)
        .layer(
            LayerBuilder::new()
                .file("removed", &[3; 20_000])
                .build(Compression::Zstd),
        )
        .build();
    let pusher = Pusher::new(&registry);
    pusher.push_image("team/kept", &kept, "v1").unwrap();
    pusher.push_image("team/removed", &removed, "v1").unwrap();
    let kept_name = format!("{}/team/kept:v1", registry.host());
    let removed_name = format!("{}/team/removed:v1", registry.host());
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");

    let mut daemon = start(
        root.path(),
        // The daemon's own startup pass goes through; the next one aborts.
        Some("gc::between_record_and_file_phase=1*off->return(abort)"),
    )
    .await;
    let mut images = client::image_client(&daemon.socket).await.unwrap();
    for name in [&kept_name, &removed_name] {
        images
            .pull_image(cri::PullImageRequest {
                image: spec(name),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // The removal wakes the background pass, which dies at the fail point.
    images
        .remove_image(cri::RemoveImageRequest {
            image: spec(&removed_name),
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the gc pass did not run");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(!status.success(), "the daemon aborted at the fail point");
    drop(images);
    drop(daemon);

    let removed_only = [
        removed.manifest_digest.clone(),
        removed.config_digest.clone(),
        removed.layers[1].digest.clone(),
    ];
    let removed_top = state
        .join("snapshots")
        .join(removed.chain_ids().last().unwrap().replacen(':', "-", 1));
    {
        // The record phase committed; the file phase never ran.
        let (store, _) = MetadataStore::open(&state.join("metadata.redb")).unwrap();
        let read = store.read().unwrap();
        for digest in &removed_only {
            assert!(
                read.blob(&Digest::parse(digest).unwrap())
                    .unwrap()
                    .is_none()
            );
            assert!(blob_file(&state, digest).is_file(), "{digest} left on disk");
        }
        assert!(removed_top.is_dir());
        assert_eq!(check_consistency(&read).unwrap(), vec![]);
    }

    let daemon = start(root.path(), None).await;
    let mut images = client::image_client(&daemon.socket).await.unwrap();
    let listed = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.images.len(), 1, "{listed:?}");
    assert_eq!(listed.images[0].id, kept.config_digest);
    assert_eq!(listed.images[0].repo_tags, vec![kept_name.clone()]);

    // The restarted daemon's startup pass removed the leftovers before it
    // listened; an operator's pass then finds nothing more.
    let output = Command::new(env!("CARGO_BIN_EXE_cri-imaged"))
        .args(["gc", "--output", "json", "--socket"])
        .arg(&daemon.socket)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["blobsRemoved"], 0, "{report}");
    assert_eq!(report["snapshotsRemoved"], 0, "{report}");
    for digest in &removed_only {
        assert!(
            !blob_file(&state, digest).exists(),
            "{digest} still on disk"
        );
    }
    assert!(!removed_top.exists());
    for digest in [&kept.manifest_digest, &kept.config_digest]
        .into_iter()
        .chain(kept.layers.iter().map(|layer| &layer.digest))
    {
        assert!(
            blob_file(&state, digest).is_file(),
            "{digest} of the kept image"
        );
    }
    // The kept image is whole: pulling it again succeeds.
    images
        .pull_image(cri::PullImageRequest {
            image: spec(&kept_name),
            ..Default::default()
        })
        .await
        .unwrap();
    drop(images);
    drop(daemon);

    let (store, _) = MetadataStore::open(&state.join("metadata.redb")).unwrap();
    assert_eq!(check_consistency(&store.read().unwrap()).unwrap(), vec![]);
}

fn listing(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn run_gc(socket: &Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_cri-imaged"))
        .args(["gc", "--output", "json", "--socket"])
        .arg(socket)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn killed_mid_extraction_the_retry_reuses_the_stored_blobs_and_removal_then_gc_leaks_nothing()
{
    let registry = TestRegistry::start();
    let layer_with_many_entries = (0..20).fold(LayerBuilder::new(), |layer, number| {
        layer.file(&format!("files/{number}"), &[number as u8; 5_000])
    });
    let image = ImageBuilder::new()
        .layer(layer_with_many_entries.build(Compression::Gzip))
        .layer(
            LayerBuilder::new()
                .file("top", &[9; 10_000])
                .build(Compression::Zstd),
        )
        .build();
    Pusher::new(&registry)
        .push_image("team/app", &image, "v1")
        .unwrap();
    let name = format!("{}/team/app:v1", registry.host());
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");

    let mut daemon = start(root.path(), Some("unpack::mid_extraction=return(abort)")).await;
    let mut images = client::image_client(&daemon.socket).await.unwrap();
    images
        .pull_image(cri::PullImageRequest {
            image: spec(&name),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        !daemon.child.wait().unwrap().success(),
        "aborted at the fail point"
    );
    drop(images);
    drop(daemon);
    assert!(
        !listing(&state.join("snapshots/extracting")).is_empty(),
        "the crash left a half-extracted layer"
    );
    // Layers unpack while they download: the blobs stored (verified and
    // recorded) by the time of the crash are what the retry must not fetch
    // again.
    let stored_before_crash: Vec<String> = {
        let (store, _) = MetadataStore::open(&state.join("metadata.redb")).unwrap();
        let read = store.read().unwrap();
        read.blobs()
            .unwrap()
            .iter()
            .map(|blob| blob.digest.hex().to_owned())
            .collect()
    };

    let daemon = start(root.path(), None).await;
    assert!(
        listing(&state.join("snapshots/extracting")).is_empty(),
        "reconciliation removed the half-extracted layer"
    );
    let mut images = client::image_client(&daemon.socket).await.unwrap();
    let listed = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.images.is_empty(), "{listed:?}");
    let log_before = registry.log_text();
    images
        .pull_image(cri::PullImageRequest {
            image: spec(&name),
            ..Default::default()
        })
        .await
        .unwrap();
    let new_log = registry.log_text()[log_before.len()..].to_owned();
    for layer in image.layers.iter().filter(|layer| {
        stored_before_crash.contains(&layer.digest.trim_start_matches("sha256:").to_owned())
    }) {
        assert!(
            !new_log.contains(&format!("/blobs/{}", layer.digest)),
            "layer {} downloaded again",
            layer.digest
        );
    }

    images
        .remove_image(cri::RemoveImageRequest { image: spec(&name) })
        .await
        .unwrap();
    // The explicit pass ends the grace lease too, so everything goes now.
    let report = run_gc(&daemon.socket);
    assert_eq!(report["ingestsRemoved"], 0, "{report}");
    assert!(listing(&state.join("content/blobs/sha256")).is_empty());
    assert!(listing(&state.join("content/ingest")).is_empty());
    assert_eq!(listing(&state.join("snapshots")), ["extracting"]);
    drop(images);
    drop(daemon);

    let (store, _) = MetadataStore::open(&state.join("metadata.redb")).unwrap();
    let counts = store.read().unwrap().counts().unwrap();
    assert_eq!(counts.total(), 0, "records leaked: {counts:?}");
}
