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
    path
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
        assert_eq!(read.image(image.id()).unwrap(), Some(image.clone()));
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
    assert_eq!(
        MetadataStore::schema_version_of(&path).unwrap(),
        Some(SCHEMA_VERSION)
    );
    run_daemon_cleanly(root.path());
    assert_fully_migrated_with_every_record(&path);
}
