//! Snapshots are synced after their pull, in the background: a restart of
//! the daemon alone keeps the ones not synced yet (the kernel still holds
//! their pages) and syncs them; a reboot, told by the kernel boot id
//! changing, distrusts them: their images are pulled, and their layers
//! unpacked, again. The sync is held back here (`snapshots.sync_delay`) and
//! the boot id read from a file the test writes.

use std::path::{Path, PathBuf};

use cri_imaged::api::client;
use cri_imaged::api::proto::runtime::v1 as cri;
use cri_imaged::metadata::{ImageState, MetadataStore, check_consistency};
use cri_imaged::reference::Digest;

use cri_imaged::api::proto::cri_imaged::admin::v1 as admin;

use crate::pull_progress::admin_client;
use crate::support::daemon_process::DaemonProcess;
use crate::support::registry::{
    BuiltImage, Compression, ImageBuilder, LayerBuilder, Pusher, TestRegistry,
};

fn two_layer_image(name: &str) -> BuiltImage {
    ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file(&format!("{name}/base"), name.as_bytes())
                .build(Compression::Gzip),
        )
        .layer(
            LayerBuilder::new()
                .file(&format!("{name}/top"), &[7; 20_000])
                .build(Compression::Zstd),
        )
        .build()
}

/// The daemon (JSON log) with `[snapshots]` `settings` and its kernel boot id
/// read from a file the test rewrites to simulate a reboot; starts as
/// `boot-one`. Returns the directory holding both files, and that file.
fn daemon_under_kernel_boot(settings: &str) -> (tempfile::TempDir, PathBuf, DaemonProcess) {
    let directory = tempfile::tempdir().unwrap();
    let boot_id_file = directory.path().join("boot_id");
    std::fs::write(&boot_id_file, "boot-one\n").unwrap();
    let config = directory.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[snapshots]\n{settings}\nkernel_boot_id_file = \"{}\"\n",
            boot_id_file.display()
        ),
    )
    .unwrap();
    let daemon =
        DaemonProcess::start_with(&["--config", config.to_str().unwrap(), "--log-format", "json"]);
    (directory, boot_id_file, daemon)
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}

async fn pull(socket: &Path, reference: &str) -> String {
    let mut images = client::image_client(socket).await.unwrap();
    images
        .pull_image(cri::PullImageRequest {
            image: spec(reference),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .image_ref
}

async fn unsynced_snapshots(daemon: &DaemonProcess) -> u64 {
    admin_client(daemon)
        .await
        .daemon_status(admin::DaemonStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .unsynced_snapshots
}

async fn listed_ids(socket: &Path) -> Vec<String> {
    let mut images = client::image_client(socket).await.unwrap();
    let mut ids: Vec<String> = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images
        .into_iter()
        .map(|image| image.id)
        .collect();
    ids.sort();
    ids
}

fn snapshot_directories(state: &Path) -> Vec<PathBuf> {
    let mut directories: Vec<PathBuf> = std::fs::read_dir(state.join("snapshots"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().is_some_and(|name| name != "extracting"))
        .collect();
    directories.sort();
    directories
}

#[tokio::test]
async fn a_restart_syncs_snapshots_left_unsynced_and_a_reboot_unpacks_them_again() {
    let registry = TestRegistry::start();
    let first = two_layer_image("first");
    let second = two_layer_image("second");
    let pusher = Pusher::new(&registry);
    pusher.push_image("team/first", &first, "v1").unwrap();
    pusher.push_image("team/second", &second, "v1").unwrap();
    let first_reference = format!("{}/team/first:v1", registry.host());
    let second_reference = format!("{}/team/second:v1", registry.host());

    let (_directory, boot_id_file, mut daemon) = daemon_under_kernel_boot("sync_delay = \"1h\"");
    assert_eq!(
        pull(&daemon.socket, &first_reference).await,
        first.config_digest
    );
    assert_eq!(unsynced_snapshots(&daemon).await, 2);

    // The daemon dies before its sync; the machine does not.
    daemon.child.kill().unwrap();
    daemon.restart();
    assert_eq!(
        listed_ids(&daemon.socket).await,
        vec![first.config_digest.clone()]
    );
    assert_eq!(unsynced_snapshots(&daemon).await, 0);
    let log = daemon.log_text();
    assert!(
        log.contains(r#""unsynced_snapshots_synced":2"#)
            && log.contains(r#""unsynced_snapshots_lost":0"#),
        "{log}"
    );
    let synced_directories = snapshot_directories(&daemon.state());
    assert_eq!(synced_directories.len(), 2);

    // The next pull's snapshots are not synced when the machine goes down.
    assert_eq!(
        pull(&daemon.socket, &second_reference).await,
        second.config_digest
    );
    daemon.child.kill().unwrap();
    std::fs::write(&boot_id_file, "boot-two\n").unwrap();
    daemon.restart();
    // What the earlier restart synced is trusted; the rest is gone, with
    // its directories, and nothing of it is visible.
    assert_eq!(
        listed_ids(&daemon.socket).await,
        vec![first.config_digest.clone()]
    );
    let log = daemon.log_text();
    assert!(
        log.contains(r#""unsynced_snapshots_lost":2"#)
            && log.contains(r#""images_of_lost_snapshots_marked_gc_pending":1"#),
        "{log}"
    );
    assert_eq!(snapshot_directories(&daemon.state()), synced_directories);
    let mut images = client::image_client(&daemon.socket).await.unwrap();
    let status = images
        .image_status(cri::ImageStatusRequest {
            image: spec(&second_reference),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none(), "{status:?}");

    // Pulled again, its layers are unpacked again.
    assert_eq!(
        pull(&daemon.socket, &second_reference).await,
        second.config_digest
    );
    let mut both = vec![first.config_digest.clone(), second.config_digest.clone()];
    both.sort();
    assert_eq!(listed_ids(&daemon.socket).await, both);
    assert_eq!(snapshot_directories(&daemon.state()).len(), 4);

    // A clean stop syncs what it committed: nothing is left unsynced.
    // (Stopped from a blocking thread, so that this runtime goes on running
    // the client connections' tasks, which close them when the daemon asks.)
    drop(images);
    let (daemon, status) = tokio::task::spawn_blocking(move || {
        let status = daemon.stop();
        (daemon, status)
    })
    .await
    .unwrap();
    assert!(status.success());
    let (store, _) = MetadataStore::open(&daemon.state().join("metadata.redb")).unwrap();
    let read = store.read().unwrap();
    assert_eq!(read.unsynced_snapshots().unwrap(), vec![]);
    assert_eq!(check_consistency(&read).unwrap(), vec![]);
    let id = Digest::parse(&second.config_digest).unwrap();
    assert_eq!(read.image(&id).unwrap().unwrap().state, ImageState::Ready);
}

#[tokio::test]
async fn snapshots_are_synced_soon_after_their_pull_without_a_stop() {
    let registry = TestRegistry::start();
    let image = two_layer_image("soon");
    Pusher::new(&registry)
        .push_image("team/soon", &image, "v1")
        .unwrap();
    let reference = format!("{}/team/soon:v1", registry.host());
    let (_directory, boot_id_file, mut daemon) = daemon_under_kernel_boot("");
    assert_eq!(pull(&daemon.socket, &reference).await, image.config_digest);
    // Once the background sync has run, cut the power: the boot id changes
    // and the daemon gets no chance to sync on its way out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !daemon.log_text().contains("committed snapshots synced") {
        assert!(
            std::time::Instant::now() < deadline,
            "no sync: {}",
            daemon.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    daemon.child.kill().unwrap();
    std::fs::write(&boot_id_file, "boot-two\n").unwrap();
    daemon.restart();
    assert_eq!(
        listed_ids(&daemon.socket).await,
        vec![image.config_digest.clone()]
    );
    let log = daemon.log_text();
    assert!(log.contains(r#""unsynced_snapshots_lost":0"#), "{log}");
}
