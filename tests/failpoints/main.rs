//! Crash drills with the real daemon binary, built with the `failpoints`
//! feature: a fail point set through `FAILPOINTS` aborts the process at a chosen
//! step (`return(abort)`), the test restarts it, and then checks what the store
//! holds by reading it, never by trusting what the crashed process said.
//!
//! Run with `cargo test --features failpoints --test failpoints`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cri_imaged::metadata::migrations::golden::golden_sample;
use cri_imaged::metadata::{MetadataStore, SCHEMA_VERSION, check_consistency};

fn copy_golden_v1(root: &Path) -> PathBuf {
    let path = root.join("metadata.redb");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/golden/v1.redb"),
        &path,
    )
    .unwrap();
    plant_files_of_golden_records(root);
    path
}

/// The files the golden records name, with their recorded sizes: startup
/// reconciliation marks a ready image whose files are missing as broken, and
/// these tests are about the records' migration, not about damage.
fn plant_files_of_golden_records(root: &Path) {
    let sample = golden_sample();
    for blob in &sample.blobs {
        let directory = root
            .join("content/blobs")
            .join(blob.digest.algorithm().name());
        std::fs::create_dir_all(&directory).unwrap();
        let file = std::fs::File::create(directory.join(blob.digest.hex())).unwrap();
        file.set_len(blob.size_bytes).unwrap();
    }
    for snapshot in &sample.snapshots {
        std::fs::create_dir_all(root.join(format!(
            "snapshots/{}-{}",
            snapshot.chain_id.algorithm().name(),
            snapshot.chain_id.hex()
        )))
        .unwrap();
    }
}

/// Runs `serve` with `failpoints` set and returns its output once it exits.
fn run_daemon_until_it_dies(root: &Path, failpoints: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cri-imaged"))
        .args(["serve", "--root"])
        .arg(root)
        .arg("--socket")
        .arg(root.join("cri-imaged.sock"))
        .arg("--hosts-dir")
        .arg(root.join("certs.d"))
        .env("FAILPOINTS", failpoints)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the daemon did not hit fail point {failpoints}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Starts the daemon normally, waits until it has recorded its boot, and stops it.
fn run_daemon_cleanly(root: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cri-imaged"))
        .args(["serve", "--root"])
        .arg(root)
        .arg("--socket")
        .arg(root.join("cri-imaged.sock"))
        .arg("--hosts-dir")
        .arg(root.join("certs.d"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // Read the log to its end, so the daemon never writes into a closed pipe.
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.contains("metadata store open") {
                let _ = ready_tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    let ready = ready_rx.recv_timeout(Duration::from_secs(30)).is_ok();
    std::thread::sleep(Duration::from_millis(200));
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let lines = reader.join().unwrap();
    assert!(ready && status.success(), "{status}: {lines:#?}");
}

fn assert_fully_migrated_with_every_record(path: &Path) {
    let (store, report) = MetadataStore::open(path).unwrap();
    assert_eq!(report.found_schema_version, SCHEMA_VERSION);
    let read = store.read().unwrap();
    for (image, names) in golden_sample().images {
        let stored = read.image(image.id()).unwrap();
        // The daemon reconciled at startup: an image left pulling by the
        // crash that wrote the golden file became gc_pending, and the
        // startup gc pass collected it with the one already gc_pending.
        if image.state != cri_imaged::metadata::ImageState::Ready {
            assert!(stored.is_none(), "{stored:?}");
            continue;
        }
        let stored = stored.expect("every ready image survives");
        assert_eq!(stored, image);
        assert_eq!(read.names_of(image.id()).unwrap().len(), names.len());
    }
    assert_eq!(check_consistency(&read).unwrap(), vec![]);
}

#[test]
fn killed_inside_the_migration_step_the_daemon_restarts_and_finishes_migrating() {
    let root = tempfile::tempdir().unwrap();
    let path = copy_golden_v1(root.path());
    let output = run_daemon_until_it_dies(
        root.path(),
        "metadata::migration::before_commit=return(abort)",
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("metadata::migration::before_commit"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    {
        // The aborted step left the file at v1, whole.
        let db_check = MetadataStore::schema_version_of(&path).unwrap();
        assert_eq!(db_check, Some(1));
    }
    run_daemon_cleanly(root.path());
    assert_fully_migrated_with_every_record(&path);
}

#[test]
fn killed_right_after_a_migration_step_the_daemon_restarts_at_the_new_version() {
    let root = tempfile::tempdir().unwrap();
    let path = copy_golden_v1(root.path());
    let output =
        run_daemon_until_it_dies(root.path(), "metadata::migration::after_step=return(abort)");
    assert!(!output.status.success());
    // The first step (v1 -> v2) committed before the abort after it.
    assert_eq!(MetadataStore::schema_version_of(&path).unwrap(), Some(2));
    run_daemon_cleanly(root.path());
    assert_fully_migrated_with_every_record(&path);
}

#[path = "../support/mod.rs"]
mod support;

mod crashing_daemon;
mod every_fail_point;
mod gc_crashes;

mod pull_crashes {
    //! A pull killed before and after its final "ready" transaction: after a
    //! restart nothing half-pulled is visible, what was stored is reused, and
    //! an image that was committed is intact.

    use cri_imaged::api::client;
    use cri_imaged::api::proto::runtime::v1 as cri;
    use cri_imaged::metadata::{ImageState, MetadataStore, check_consistency};

    use crate::crashing_daemon::{spec, start};

    use crate::support::registry::{Compression, ImageBuilder, LayerBuilder, Pusher, TestRegistry};

    fn blob_fetches(log: &str, digest: &str) -> usize {
        log.lines()
            .filter(|line| line.contains("GET /v2/") && line.contains(&format!("/blobs/{digest}")))
            .count()
    }

    #[tokio::test]
    async fn killed_before_the_ready_commit_nothing_is_visible_and_the_retry_reuses_the_content() {
        let registry = TestRegistry::start();
        let image = ImageBuilder::new()
            .layer(
                LayerBuilder::new()
                    .file("a", &[1; 50_000])
                    .build(Compression::Gzip),
            )
            .layer(
                LayerBuilder::new()
                    .file("b", &[2; 50_000])
                    .build(Compression::Zstd),
            )
            .build();
        Pusher::new(&registry)
            .push_image("team/app", &image, "v1")
            .unwrap();
        let reference = format!("{}/team/app:v1", registry.host());
        let root = tempfile::tempdir().unwrap();

        let mut daemon = start(root.path(), Some("pull::before_ready_commit=return(abort)")).await;
        let mut images = client::image_client(&daemon.socket).await.unwrap();
        // The connection breaks as the daemon aborts: the call fails.
        images
            .pull_image(cri::PullImageRequest {
                image: spec(&reference),
                ..Default::default()
            })
            .await
            .unwrap_err();
        let status = daemon.child.wait().unwrap();
        assert!(!status.success(), "the daemon aborted at the fail point");
        drop(daemon);

        let daemon = start(root.path(), None).await;
        let mut images = client::image_client(&daemon.socket).await.unwrap();
        let listed = images
            .list_images(cri::ListImagesRequest { filter: None })
            .await
            .unwrap()
            .into_inner();
        assert!(
            listed.images.is_empty(),
            "a half-pulled image is listed: {listed:?}"
        );
        let status = images
            .image_status(cri::ImageStatusRequest {
                image: spec(&reference),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(status.image.is_none());

        let log_before = registry.log_text();
        let pulled = images
            .pull_image(cri::PullImageRequest {
                image: spec(&reference),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(pulled.image_ref, image.config_digest);
        let new_log = registry.log_text()[log_before.len()..].to_owned();
        for layer in &image.layers {
            assert_eq!(
                blob_fetches(&new_log, &layer.digest),
                0,
                "layer {} downloaded again",
                layer.digest
            );
        }
        drop(images);
        drop(daemon);

        let (store, _) = MetadataStore::open(&root.path().join("state/metadata.redb")).unwrap();
        let read = store.read().unwrap();
        assert_eq!(check_consistency(&read).unwrap(), vec![]);
        let id = cri_imaged::reference::Digest::parse(&image.config_digest).unwrap();
        assert_eq!(read.image(&id).unwrap().unwrap().state, ImageState::Ready);
    }

    #[tokio::test]
    async fn killed_right_after_the_ready_commit_the_image_is_intact_after_restart() {
        let registry = TestRegistry::start();
        let image = ImageBuilder::new()
            .layer(
                LayerBuilder::new()
                    .file("a", b"committed")
                    .build(Compression::Gzip),
            )
            .build();
        Pusher::new(&registry)
            .push_image("team/app", &image, "v1")
            .unwrap();
        let reference = format!("{}/team/app:v1", registry.host());
        let root = tempfile::tempdir().unwrap();

        let mut daemon = start(root.path(), Some("pull::after_ready_commit=return(abort)")).await;
        let mut images = client::image_client(&daemon.socket).await.unwrap();
        images
            .pull_image(cri::PullImageRequest {
                image: spec(&reference),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(!daemon.child.wait().unwrap().success());
        drop(daemon);

        let daemon = start(root.path(), None).await;
        let mut images = client::image_client(&daemon.socket).await.unwrap();
        let listed = images
            .list_images(cri::ListImagesRequest { filter: None })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.images.len(), 1);
        assert_eq!(listed.images[0].id, image.config_digest);
        assert_eq!(listed.images[0].repo_tags, vec![reference.clone()]);
    }
}
