//! The real daemon started with `serve --config FILE`: pinned patterns,
//! runtime handlers with their platforms, serialized pulls, the pull deadline
//! and the minimum throughput, each observed over the socket; and a bad file
//! refused at startup naming the key.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cri_imaged::api::client;
use cri_imaged::api::proto::runtime::v1 as cri;

use crate::pull_progress::incompressible;
use crate::support::daemon_process::DaemonProcess;
use crate::support::fault_proxy::{Fault, FaultProxy, FaultRule};
use crate::support::registry::{
    BuiltImage, Compression, ImageBuilder, IndexBuilder, LayerBuilder, ManifestFormat, Platform,
    Pusher, TestRegistry,
};

/// A config file with `text`, kept alive as long as the returned directory.
fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    (directory, path)
}

fn one_layer_image(contents: &str, platform: Platform) -> BuiltImage {
    ImageBuilder::new()
        .platform(platform)
        .layer(
            LayerBuilder::new()
                .file("contents", contents.as_bytes())
                .build(Compression::Gzip),
        )
        .build()
}

fn pull_request(image: &str, runtime_handler: &str) -> cri::PullImageRequest {
    cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: image.to_owned(),
            runtime_handler: runtime_handler.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn pinned_patterns_and_runtime_handler_platforms_come_from_the_config_file() {
    let registry = TestRegistry::start();
    let amd64 = one_layer_image("amd64", Platform::linux_amd64());
    let arm64 = one_layer_image("arm64", Platform::linux_arm64());
    let index = IndexBuilder::new(ManifestFormat::Oci)
        .manifest(&amd64)
        .manifest(&arm64)
        .build();
    let pusher = Pusher::new(&registry);
    pusher.push_index("multi/app", &index, "v1").unwrap();
    let pause = one_layer_image("pause", Platform::linux_amd64());
    pusher.push_image("pause", &pause, "3.10").unwrap();
    let host = registry.host();
    let (_directory, path) = config_file(&format!(
        r#"
        pinned_images = ["{host}/pause:*"]

        [[runtime_handlers]]
        name = "arm"
        platform = "linux/arm64"
        "#
    ));
    let daemon = DaemonProcess::start_with(&["--config", path.to_str().unwrap()]);
    assert!(
        daemon.log_text().contains("configuration read"),
        "{}",
        daemon.log_text()
    );
    let mut images = client::image_client(&daemon.socket).await.unwrap();

    // The handler's platform chooses the arm64 manifest out of the index.
    let pulled = images
        .pull_image(pull_request(&format!("{host}/multi/app:v1"), "arm"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pulled.image_ref, arm64.config_digest);
    let unknown = images
        .pull_image(pull_request(&format!("{host}/multi/app:v1"), "riscv"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument, "{unknown:?}");
    assert!(unknown.message().contains("riscv"), "{unknown:?}");

    // A name under the pinned prefix is pinned; another is not.
    let pause_reference = format!("{host}/pause:3.10");
    images
        .pull_image(pull_request(&pause_reference, ""))
        .await
        .unwrap();
    let status = |image: String| {
        let mut images = images.clone();
        async move {
            images
                .image_status(cri::ImageStatusRequest {
                    image: Some(cri::ImageSpec {
                        image,
                        ..Default::default()
                    }),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner()
                .image
                .unwrap()
        }
    };
    assert!(status(pause_reference).await.pinned);
    assert!(!status(format!("{host}/multi/app:v1")).await.pinned);
}

/// Pulls `a` (held back by the proxy) and then `b`; returns whether `b`
/// finished first.
async fn second_pull_overtakes(config: &str) -> bool {
    let registry = TestRegistry::start();
    let slow = one_layer_image("slow", Platform::linux_amd64());
    let fast = one_layer_image("fast", Platform::linux_amd64());
    let pusher = Pusher::new(&registry);
    pusher.push_image("order/a", &slow, "v1").unwrap();
    pusher.push_image("order/b", &fast, "v1").unwrap();
    let proxy = FaultProxy::in_front_of(&registry);
    proxy.add_rule(FaultRule::new(
        "GET",
        &format!("/blobs/{}", slow.layers[0].digest),
        Fault::StallBody {
            after_bytes: 0,
            duration: Duration::from_millis(1500),
        },
    ));
    let (_directory, path) = config_file(config);
    let daemon = DaemonProcess::start_with(&["--config", path.to_str().unwrap()]);
    let pull = |name: &'static str| {
        let socket = daemon.socket.clone();
        let reference = format!("{}/order/{name}:v1", proxy.host());
        tokio::spawn(async move {
            let mut images = client::image_client(&socket).await.unwrap();
            images
                .pull_image(pull_request(&reference, ""))
                .await
                .unwrap();
            Instant::now()
        })
    };
    let a = pull("a");
    // Wait until the slow pull is at the registry, so it is first in line.
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.count_matching("GET", &format!("/blobs/{}", slow.layers[0].digest)) == 0 {
        assert!(
            Instant::now() < deadline,
            "the first pull never reached the blob"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = pull("b");
    let (a_done, b_done) = (a.await.unwrap(), b.await.unwrap());
    b_done < a_done
}

#[tokio::test]
async fn max_concurrent_one_in_the_config_file_serializes_pulls() {
    assert!(
        !second_pull_overtakes("[pull]\nmax_concurrent = 1\n").await,
        "with max_concurrent = 1 the second pull waited for the first"
    );
    assert!(
        second_pull_overtakes("[pull]\nmax_concurrent = 0\n").await,
        "without a limit the second pull overtook the held-back one"
    );
}

#[tokio::test]
async fn max_concurrent_downloads_is_a_limit_for_the_whole_node() {
    assert!(
        !second_pull_overtakes("[pull]\nmax_concurrent_downloads = 1\n").await,
        "with one download slot the second image's layer waited for the first's"
    );
}

#[tokio::test]
async fn max_concurrent_extractions_is_a_limit_for_the_whole_node() {
    // A layer takes its extraction slot when its download starts (it
    // unpacks while it downloads), so the held-back layer keeps the only one.
    assert!(
        !second_pull_overtakes("[pull]\nmax_concurrent_extractions = 1\n").await,
        "with one extraction slot the second image's layer waited for the first's"
    );
    assert!(
        second_pull_overtakes("[pull]\nmax_concurrent_extractions = 2\n").await,
        "with two extraction slots the second image's layer did not wait"
    );
}

/// An image whose one layer (1 MiB of noise) the proxy sends 64 KiB of,
/// then holds back for `stall`, on every request: more pieces than a pull
/// resumes a download.
fn held_back_image(registry: &TestRegistry, stall: Duration) -> (BuiltImage, FaultProxy) {
    let noise = incompressible(1024 * 1024, 7);
    let image = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("noise", &noise)
                .build(Compression::Gzip),
        )
        .build();
    Pusher::new(registry)
        .push_image("slow/app", &image, "v1")
        .unwrap();
    let proxy = FaultProxy::in_front_of(registry);
    proxy.add_rule(FaultRule::new(
        "GET",
        &format!("/blobs/{}", image.layers[0].digest),
        Fault::StallBody {
            after_bytes: 64 * 1024,
            duration: stall,
        },
    ));
    (image, proxy)
}

#[tokio::test]
async fn a_pull_past_its_deadline_fails_with_deadline_exceeded_and_shows_nothing() {
    let registry = TestRegistry::start();
    let (image, proxy) = held_back_image(&registry, Duration::from_secs(30));
    let (_directory, path) = config_file("[pull]\ndeadline = \"1s\"\n");
    let daemon = DaemonProcess::start_with(&["--config", path.to_str().unwrap()]);
    let mut images = client::image_client(&daemon.socket).await.unwrap();
    let reference = format!("{}/slow/app:v1", proxy.host());
    let started = Instant::now();
    let status = images
        .pull_image(pull_request(&reference, ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("1000 ms deadline"), "{status:?}");
    assert!(status.message().contains("slow/app"), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let listed = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.images.is_empty(), "{listed:?}");

    // Without the fault the same pull succeeds within the deadline.
    proxy.clear_rules();
    let pulled = images
        .pull_image(pull_request(&reference, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pulled.image_ref, image.config_digest);
}

#[tokio::test]
async fn a_download_under_the_minimum_throughput_fails_with_deadline_exceeded() {
    let registry = TestRegistry::start();
    let (_image, proxy) = held_back_image(&registry, Duration::from_millis(1200));
    // The stall timeout alone would wait out each 1.2 s pause.
    let (_directory, path) = config_file(
        "[pull]\nprogress_timeout = \"1m\"\nmin_throughput = \"1MiB\"\nmin_throughput_window = \"1s\"\n",
    );
    let daemon = DaemonProcess::start_with(&["--config", path.to_str().unwrap()]);
    let mut images = client::image_client(&daemon.socket).await.unwrap();
    let reference = format!("{}/slow/app:v1", proxy.host());
    let status = images
        .pull_image(pull_request(&reference, ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        status
            .message()
            .contains("under the minimum of 1048576 bytes/s"),
        "{status:?}"
    );
    // Each too-slow stream was resumed from where it broke before giving up.
    let ranges = proxy.ranges("GET", "/blobs/");
    assert!(
        ranges
            .iter()
            .any(|range| range.as_deref() == Some("bytes=65536-")),
        "{ranges:?}"
    );
}

#[test]
fn a_bad_config_file_stops_the_daemon_naming_the_key_and_value() {
    let (directory, path) = config_file("[pull]\nprogress_timeout = \"soon\"\n");
    let output = Command::new(env!("CARGO_BIN_EXE_cri-imaged"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .arg("--root")
        .arg(directory.path().join("state"))
        .arg("--socket")
        .arg(directory.path().join("cri-imaged.sock"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("config key pull.progress_timeout: invalid value \"soon\""),
        "{stderr}"
    );
    assert!(
        !directory.path().join("state").exists(),
        "nothing was created before the config was validated"
    );

    let (_unknown_directory, unknown) = config_file("[pull]\nmax_parallel = 2\n");
    let output = Command::new(env!("CARGO_BIN_EXE_cri-imaged"))
        .arg("serve")
        .arg("--config")
        .arg(&unknown)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown field `max_parallel`"), "{stderr}");
}
