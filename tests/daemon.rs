//! The real `cri-imaged` binary: it starts on an empty root, stops cleanly on
//! SIGTERM, and refuses to start on a corrupted store without deleting it.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn start_daemon(root: &Path) -> Child {
    start_daemon_with(root, &[])
}

fn start_daemon_with(root: &Path, extra_arguments: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cri-imaged"))
        .args(["serve", "--root"])
        .arg(root)
        .args(extra_arguments)
        // Each daemon gets its own socket and hosts directory, so tests never
        // meet on the system defaults.
        .arg("--socket")
        .arg(root.join("cri-imaged.sock"))
        .arg("--hosts-dir")
        .arg(root.join("certs.d"))
        .env("CRI_IMAGED_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the daemon binary starts")
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

#[test]
fn the_daemon_creates_its_store_and_exits_zero_on_sigterm() {
    let root = tempfile::tempdir().unwrap();
    let mut child = start_daemon(root.path());
    let database = root.path().join("metadata.redb");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !database.exists() {
        assert!(Instant::now() < deadline, "no database created");
        assert!(
            child.try_wait().unwrap().is_none(),
            "daemon exited early: {}",
            stderr_of(&mut child)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Give it a moment to finish opening and install its signal handlers.
    std::thread::sleep(Duration::from_millis(300));
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_for_exit(&mut child, Duration::from_secs(20));
    let log = stderr_of(&mut child);
    assert!(status.success(), "exit {status}: {log}");
    assert!(log.contains("metadata store open"), "{log}");
    assert!(log.contains("shutting down"), "{log}");
}

#[test]
fn the_daemon_refuses_a_corrupted_store_with_a_clear_message_and_deletes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let database = root.path().join("metadata.redb");
    let garbage = b"not a database: keep me".repeat(300);
    std::fs::write(&database, &garbage).unwrap();
    let mut child = start_daemon(root.path());
    let status = wait_for_exit(&mut child, Duration::from_secs(20));
    let log = stderr_of(&mut child);
    assert!(!status.success());
    assert!(log.contains("is corrupted"), "{log}");
    assert!(log.contains("nothing was deleted"), "{log}");
    assert_eq!(std::fs::read(&database).unwrap(), garbage);
}

#[test]
fn the_daemon_keeps_running_and_exits_zero_when_its_log_pipe_closes() {
    use std::io::BufRead;
    let root = tempfile::tempdir().unwrap();
    let mut child = start_daemon(root.path());
    let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first_line = String::new();
    log.read_line(&mut first_line).unwrap();
    assert!(first_line.contains("metadata store open"), "{first_line}");
    drop(log);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "daemon died when its log pipe closed"
    );
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = wait_for_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "{status}");
}

/// Waits until `child` listens on its socket under `root`.
fn wait_for_socket(child: &mut Child, root: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(root.join("cri-imaged.sock")).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not listen");
        assert!(
            child.try_wait().unwrap().is_none(),
            "daemon exited early: {}",
            stderr_of(child)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_pull_still_stalled_after_the_grace_period_is_aborted_and_a_retry_after_restart_succeeds()
{
    use cri_imaged::api::client;
    use cri_imaged::api::proto::runtime::v1 as cri;

    use crate::support::fault_proxy::{Fault, FaultProxy, FaultRule};
    use crate::support::registry::{Compression, ImageBuilder, LayerBuilder, Pusher, TestRegistry};

    const GRACE_PERIOD: Duration = Duration::from_secs(1);
    const EXIT_MARGIN: Duration = Duration::from_secs(5);
    let registry = TestRegistry::start();
    let image = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file(
                    "noise",
                    &crate::pull_progress::incompressible(256 * 1024, 3),
                )
                .build(Compression::Gzip),
        )
        .build();
    Pusher::new(&registry)
        .push_image("grace/app", &image, "v1")
        .unwrap();
    let proxy = FaultProxy::in_front_of(&registry);
    let blob_path = format!("/blobs/{}", image.layers[0].digest);
    proxy.add_rule(FaultRule::new(
        "GET",
        &blob_path,
        Fault::StallBody {
            after_bytes: 64 * 1024,
            duration: Duration::from_secs(120),
        },
    ));
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("config.toml");
    std::fs::write(&config, "[shutdown]\ngrace_period = \"1s\"\n").unwrap();
    let mut child = start_daemon_with(root.path(), &["--config", config.to_str().unwrap()]);
    wait_for_socket(&mut child, root.path());
    let socket = root.path().join("cri-imaged.sock");
    let reference = format!("{}/grace/app:v1", proxy.host());
    let request = cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: reference.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pull = {
        let socket = socket.clone();
        let request = request.clone();
        tokio::spawn(async move {
            let mut images = client::image_client(&socket).await.unwrap();
            images.pull_image(request).await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.count_matching("GET", &blob_path) == 0 {
        assert!(
            Instant::now() < deadline,
            "the pull never reached the layer"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let signalled = Instant::now();
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    // The wait blocks this test's single-threaded runtime, so the client
    // neither reads its answer nor acknowledges the server's HTTP/2 goaway
    // meanwhile: a client like that must not keep the daemon up either.
    let exit_deadline = signalled + GRACE_PERIOD + EXIT_MARGIN;
    while child.try_wait().unwrap().is_none() && Instant::now() < exit_deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let exited_after = signalled.elapsed();
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the daemon did not exit within {:?}: {}",
            GRACE_PERIOD + EXIT_MARGIN,
            stderr_of(&mut child)
        );
    }
    let status = child.wait().unwrap();
    let log = stderr_of(&mut child);
    assert!(status.success(), "exit {status}: {log}");
    assert!(
        exited_after >= GRACE_PERIOD,
        "exited after {exited_after:?}, before the grace period: {log}"
    );
    assert!(log.contains("aborting the pulls still running"), "{log}");
    assert!(log.contains("connections still open"), "{log}");
    let status = pull.await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");

    // Restarted on the same root, the aborted pull left nothing visible, and a
    // retry (the registry healthy again) succeeds.
    proxy.clear_rules();
    let mut child = start_daemon(root.path());
    wait_for_socket(&mut child, root.path());
    let mut images = client::image_client(&socket).await.unwrap();
    let listed = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.images.is_empty(), "{listed:?}");
    let found = images
        .image_status(cri::ImageStatusRequest {
            image: request.image.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.image, None);
    let pulled = images.pull_image(request).await.unwrap().into_inner();
    assert_eq!(pulled.image_ref, image.config_digest);
    let _ = child.kill();
    let _ = child.wait();
}
