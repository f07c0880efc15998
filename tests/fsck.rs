//! `cri-imaged fsck` against a store the real daemon built: clean after
//! pulls; damage made behind the daemon's back (a deleted layer, a flipped
//! byte, orphan files, an interrupted extraction's leftovers) is found and
//! named; `--repair` fixes it without touching the intact image, and the
//! restarted daemon pulls the broken image again.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::daemon_process::DaemonProcess;
use crate::support::registry::{
    BuiltImage, Compression, ImageBuilder, LayerBuilder, Pusher, TestRegistry,
};

const BINARY: &str = env!("CARGO_BIN_EXE_cri-imaged");

fn cri_imaged(args: &[&str]) -> Output {
    Command::new(BINARY).args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn fsck(root: &Path, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut args = vec!["fsck", "--root", root.to_str().unwrap(), "--output", "json"];
    args.extend_from_slice(extra);
    let output = cri_imaged(&args);
    let json = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    (output.status.code(), json, text(&output))
}

fn blob_path(root: &Path, digest: &str) -> std::path::PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap();
    root.join("content/blobs").join(algorithm).join(hex)
}

fn problems(report: &serde_json::Value) -> Vec<String> {
    report["problems"]
        .as_array()
        .map(|problems| {
            problems
                .iter()
                .map(|problem| problem.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn images_sharing_a_base() -> (BuiltImage, BuiltImage) {
    let base = LayerBuilder::new()
        .file("etc/os-release", b"NAME=shared\n")
        .build(Compression::Gzip);
    let first = ImageBuilder::new()
        .layer(base.clone())
        .layer(
            LayerBuilder::new()
                .file("first", b"1\n")
                .build(Compression::Gzip),
        )
        .build();
    let second = ImageBuilder::new()
        .layer(base)
        .layer(
            LayerBuilder::new()
                .file("second", b"2\n")
                .build(Compression::Zstd),
        )
        .build();
    (first, second)
}

#[test]
fn fsck_finds_damage_names_it_and_repairs_it_without_touching_intact_images() {
    let registry = TestRegistry::start();
    let (first, second) = images_sharing_a_base();
    let pusher = Pusher::new(&registry);
    pusher.push_image("fsck/first", &first, "v1").unwrap();
    pusher.push_image("fsck/second", &second, "v1").unwrap();
    let first_ref = format!("{}/fsck/first:v1", registry.host());
    let second_ref = format!("{}/fsck/second:v1", registry.host());
    let mut daemon = DaemonProcess::start();
    let socket = daemon.socket.to_str().unwrap().to_owned();
    for reference in [&first_ref, &second_ref] {
        let pulled = cri_imaged(&["pull", "--socket", &socket, reference]);
        assert!(pulled.status.success(), "{}", text(&pulled));
    }
    let root = daemon.state();

    // While the daemon holds the store, fsck refuses and says why.
    let (code, _, output) = fsck(&root, &[]);
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("is the daemon running?"), "{output}");

    daemon.stop();
    let (code, report, output) = fsck(&root, &["--verify-content"]);
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(problems(&report), Vec::<String>::new(), "{output}");
    assert_eq!(report["imagesChecked"], 2, "{output}");

    // A flipped byte keeps the size: only --verify-content sees it.
    let flipped_layer = &second.layers[1].digest;
    let flipped = blob_path(&root, flipped_layer);
    let mut bytes = std::fs::read(&flipped).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&flipped, &bytes).unwrap();
    let (code, report, output) = fsck(&root, &[]);
    assert_eq!(code, Some(0), "size checks pass: {output}");
    assert!(problems(&report).is_empty(), "{output}");
    let (code, report, output) = fsck(&root, &["--verify-content"]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        problems(&report).iter().any(
            |problem| problem.contains(flipped_layer.as_str()) && problem.contains("hashes to")
        ),
        "{output}"
    );
    bytes[10] ^= 0xff;
    std::fs::write(&flipped, &bytes).unwrap();

    // Damage: the first image's own layer deleted; orphans planted.
    let deleted_layer = &first.layers[1].digest;
    std::fs::remove_file(blob_path(&root, deleted_layer)).unwrap();
    let orphan_blob = root.join(format!("content/blobs/sha256/{}", "e".repeat(64)));
    std::fs::write(&orphan_blob, b"nobody names me").unwrap();
    let orphan_partial = root.join("content/ingest/sha256-orphan.partial");
    std::fs::write(&orphan_partial, b"half").unwrap();
    let orphan_snapshot = root.join(format!("snapshots/sha256-{}", "f".repeat(64)));
    std::fs::create_dir_all(orphan_snapshot.join("usr")).unwrap();
    let leftover = root.join("snapshots/extracting/interrupted");
    std::fs::create_dir_all(&leftover).unwrap();

    let (code, report, output) = fsck(&root, &[]);
    assert_eq!(code, Some(1), "{output}");
    let found = problems(&report);
    for expected in [
        format!("blob {deleted_layer}: file"),
        format!("ready image {} is broken", first.config_digest),
        orphan_blob.display().to_string(),
        orphan_partial.display().to_string(),
        orphan_snapshot.display().to_string(),
        leftover.display().to_string(),
    ] {
        assert!(
            found.iter().any(|problem| problem.contains(&expected)),
            "{expected} not reported: {output}"
        );
    }
    assert!(
        !found
            .iter()
            .any(|problem| problem.contains(&second.config_digest)),
        "the intact image is not reported: {output}"
    );
    // A check without --repair changes nothing.
    assert!(orphan_blob.exists() && leftover.exists());

    let (code, report, output) = fsck(&root, &["--repair"]);
    assert_eq!(
        code,
        Some(1),
        "problems were found, even if repaired: {output}"
    );
    assert!(
        !report["repairs"].as_array().unwrap().is_empty(),
        "{output}"
    );
    for path in [&orphan_blob, &orphan_partial, &orphan_snapshot, &leftover] {
        assert!(!path.exists(), "{} removed: {output}", path.display());
    }
    let (code, report, output) = fsck(&root, &["--verify-content"]);
    assert_eq!(code, Some(0), "clean after the repair: {output}");
    assert!(problems(&report).is_empty(), "{output}");

    // The intact image is still served; the broken one is gone and pulls again.
    daemon.restart();
    let listed = cri_imaged(&["images", "--socket", &socket, "-q"]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        format!("{}\n", second.config_digest)
    );
    let pulled = cri_imaged(&["pull", "--socket", &socket, &first_ref]);
    assert!(pulled.status.success(), "{}", text(&pulled));
    assert!(blob_path(&root, deleted_layer).is_file());
    daemon.stop();
    let (code, _, output) = fsck(&root, &["--verify-content"]);
    assert_eq!(code, Some(0), "{output}");
}

#[test]
fn fsck_on_a_directory_without_a_store_says_so() {
    let empty = tempfile::tempdir().unwrap();
    let (code, _, output) = fsck(empty.path(), &[]);
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("no cri-imaged store"), "{output}");
}

#[test]
fn at_startup_an_image_whose_files_were_deleted_is_not_served_and_pulls_again() {
    let registry = TestRegistry::start();
    let (first, second) = images_sharing_a_base();
    let pusher = Pusher::new(&registry);
    pusher.push_image("broken/first", &first, "v1").unwrap();
    pusher.push_image("broken/second", &second, "v1").unwrap();
    let first_ref = format!("{}/broken/first:v1", registry.host());
    let second_ref = format!("{}/broken/second:v1", registry.host());
    let mut daemon = DaemonProcess::start();
    let socket = daemon.socket.to_str().unwrap().to_owned();
    for reference in [&first_ref, &second_ref] {
        let pulled = cri_imaged(&["pull", "--socket", &socket, reference]);
        assert!(pulled.status.success(), "{}", text(&pulled));
    }
    daemon.stop();
    // Someone deletes the first image's own layer; a crash left a file no
    // record names.
    let root = daemon.state();
    std::fs::remove_file(blob_path(&root, &first.layers[1].digest)).unwrap();
    let orphan = root.join(format!("content/blobs/sha256/{}", "d".repeat(64)));
    std::fs::write(&orphan, b"left by a crash between rename and record").unwrap();

    daemon.restart();
    let listed = cri_imaged(&["images", "--socket", &socket, "-q"]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        format!("{}\n", second.config_digest),
        "{}",
        daemon.log_text()
    );
    assert!(
        daemon.log_text().contains("broken on disk"),
        "{}",
        daemon.log_text()
    );
    assert!(!orphan.exists(), "the startup gc pass removed the orphan");
    let pulled = cri_imaged(&["pull", "--socket", &socket, &first_ref]);
    assert!(pulled.status.success(), "{}", text(&pulled));
    assert!(blob_path(&root, &first.layers[1].digest).is_file());
    daemon.stop();
    let (code, _, output) = fsck(&root, &["--verify-content"]);
    assert_eq!(code, Some(0), "{output}");
}
