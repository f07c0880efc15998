//! The real daemon started with `serve --config FILE`: pinned patterns,
//! runtime handlers with their platforms, serialized pulls, the pull deadline
//! and the minimum throughput, each observed over the socket; and a bad file
//! refused at startup naming the key.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cri_imaged::api::client;
use cri_imaged::api::proto::cri_imaged::admin::v1 as admin;
use cri_imaged::api::proto::cri_imaged::admin::v1::admin_service_client::AdminServiceClient;
use cri_imaged::api::proto::runtime::v1 as cri;

use crate::metrics::{Scrape, scrape_unix};
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

/// Pulls `a` (its layer's download held back by the proxy) and then `b`;
/// returns whether `b` finished first.
async fn second_pull_overtakes(config: &str) -> bool {
    let slow = one_layer_image("slow", Platform::linux_amd64());
    let held_back = Fault::StallBody {
        after_bytes: 0,
        duration: Duration::from_millis(1500),
    };
    pull_race(config, slow, Some(held_back), &[])
        .await
        .second_overtook
}

/// How the second pull of [`pull_race`] went.
struct PullRace {
    second_overtook: bool,
    /// Read by the fail-point test only.
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    second_took: Duration,
}

/// Pulls `slow` (its layer's download slowed by `fault`, if any), and once
/// that download has started, a one-layer image. `environment` goes to the
/// daemon (`FAILPOINTS`).
async fn pull_race(
    config: &str,
    slow: BuiltImage,
    fault: Option<Fault>,
    environment: &[(&str, &str)],
) -> PullRace {
    let registry = TestRegistry::start();
    let fast = one_layer_image("fast", Platform::linux_amd64());
    let pusher = Pusher::new(&registry);
    pusher.push_image("order/a", &slow, "v1").unwrap();
    pusher.push_image("order/b", &fast, "v1").unwrap();
    let proxy = FaultProxy::in_front_of(&registry);
    if let Some(fault) = fault {
        proxy.add_rule(FaultRule::new(
            "GET",
            &format!("/blobs/{}", slow.layers[0].digest),
            fault,
        ));
    }
    let (_directory, path) = config_file(config);
    let daemon =
        DaemonProcess::start_with_environment(&["--config", path.to_str().unwrap()], environment);
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
    // And until its first bytes are in and its unpack had time to start.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b_started = Instant::now();
    let b = pull("b");
    let (a_done, b_done) = (a.await.unwrap(), b.await.unwrap());
    PullRace {
        second_overtook: b_done < a_done,
        second_took: b_done - b_started,
    }
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

/// The first layer unpacked sleeps 2.5 s after its first entry, holding its
/// extraction slot (a slow unpack, not a slow download).
#[cfg(feature = "failpoints")]
const SLOW_FIRST_UNPACK: (&str, &str) = ("FAILPOINTS", "unpack::mid_extraction=1*sleep(2500)");

#[cfg(feature = "failpoints")]
#[tokio::test]
async fn max_concurrent_extractions_is_a_limit_for_the_whole_node() {
    // Measured by how long the second pull takes, not by which pull ends
    // first: the first gives its slot back before its final sync and commit,
    // which the second, once it has the slot, may well overtake.
    let slot_wait = Duration::from_millis(1200);
    let race = |config: &'static str| {
        let slow = one_layer_image("slow", Platform::linux_amd64());
        pull_race(config, slow, None, &[SLOW_FIRST_UNPACK])
    };
    let one_slot = race("[pull]\nmax_concurrent_extractions = 1\n").await;
    assert!(
        one_slot.second_took > slot_wait,
        "with one extraction slot the second image's layer waited for the first's: {:?}",
        one_slot.second_took
    );
    let two_slots = race("[pull]\nmax_concurrent_extractions = 2\n").await;
    assert!(
        two_slots.second_took < slot_wait,
        "with two extraction slots the second image's layer did not wait: {:?}",
        two_slots.second_took
    );
}

#[tokio::test]
async fn a_layer_waiting_for_its_download_holds_no_extraction_slot() {
    let config = "[pull]\nmax_concurrent_extractions = 1\n";
    // Before its first byte: the layer has not taken the slot.
    assert!(
        second_pull_overtakes(config).await,
        "the second image unpacked while the first's download had not started sending"
    );
    // Mid-blob: the layer unpacked the first 64 KiB with the slot, then gave
    // it back to wait for the rest.
    let noise = incompressible(1024 * 1024, 11);
    let slow = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("noise", &noise)
                .build(Compression::Gzip),
        )
        .build();
    let held_back = Fault::StallBody {
        after_bytes: 64 * 1024,
        duration: Duration::from_millis(1500),
    };
    assert!(
        pull_race(config, slow, Some(held_back), &[])
            .await
            .second_overtook,
        "the second image unpacked while the first's download was held back mid-blob"
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
    // The pull unwound through its error path: its lease is released at
    // once (not left to expire in an hour) and its half-unpacked layer is
    // gone, so a gc pass now reclaims what it downloaded.
    let mut admin = AdminServiceClient::new(client::connect(&daemon.socket).await.unwrap());
    let leases = admin
        .list_leases(admin::ListLeasesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(leases.leases.is_empty(), "{leases:?}");
    let extracting = daemon.state().join("snapshots/extracting");
    let left: Vec<_> = std::fs::read_dir(&extracting)
        .map(|entries| entries.map(|entry| entry.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let collected = admin
        .collect_garbage(admin::CollectGarbageRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        collected.blobs_removed + collected.ingests_removed > 0,
        "{collected:?}"
    );

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

/// How many times the threads of process `pid` have gone to sleep (waiting
/// in `epoll_wait`, on a lock, ...): their voluntary context switches.
fn sleeps_of_process(pid: u32) -> u64 {
    let mut sleeps = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        // A thread that ended since the listing has nothing to add.
        let Ok(status) = std::fs::read_to_string(task.unwrap().path().join("status")) else {
            continue;
        };
        let line = status
            .lines()
            .find(|line| line.starts_with("voluntary_ctxt_switches:"))
            .unwrap();
        sleeps += line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap();
    }
    sleeps
}

/// What the daemon did during `calls` Version calls made back to back on one
/// connection.
struct BackToBackCalls {
    /// How many times the daemon's threads went to sleep.
    sleeps: u64,
    /// Polls its metrics count as ended by the client's next request.
    polls_ended_by_input: f64,
}

/// Makes `calls` Version calls back to back on one connection to a daemon
/// started with `api.busy_poll_us = busy_poll_us`.
async fn back_to_back_calls(busy_poll_us: u64, calls: u64) -> BackToBackCalls {
    let metrics_directory = tempfile::tempdir().unwrap();
    let metrics_socket = metrics_directory.path().join("metrics.sock");
    let (_directory, path) = config_file(&format!(
        "metrics_address = {metrics_socket:?}\n[api]\nbusy_poll_us = {busy_poll_us}\n"
    ));
    let daemon = DaemonProcess::start_with(&["--config", path.to_str().unwrap()]);
    let mut runtime = client::runtime_client(&daemon.socket).await.unwrap();
    let version = || cri::VersionRequest {
        version: "v1".into(),
    };
    // The connection's setup and the first calls are not what is measured.
    for _ in 0..10 {
        runtime.version(version()).await.unwrap();
    }
    let polls_ended_by_input = || {
        let scrape = Scrape::parse(&scrape_unix(&metrics_socket));
        scrape.value("cri_imaged_api_busy_polls_total", &[("outcome", "input")])
    };
    let polls_before = polls_ended_by_input();
    let sleeps_before = sleeps_of_process(daemon.child.id());
    for _ in 0..calls {
        let answer = runtime.version(version()).await.unwrap().into_inner();
        assert_eq!(answer.runtime_name, "cri-imaged");
    }
    let sleeps = sleeps_of_process(daemon.child.id()) - sleeps_before;
    BackToBackCalls {
        sleeps,
        polls_ended_by_input: polls_ended_by_input() - polls_before,
    }
}

#[tokio::test]
async fn a_client_calling_back_to_back_is_polled_for_instead_of_waking_the_daemon_for_each_call() {
    const CALLS: u64 = 2_000;
    // Off, the daemon sleeps between calls and is woken by each request:
    // this is what the count below is compared with.
    let unpolled = back_to_back_calls(0, CALLS).await;
    assert!(
        unpolled.sleeps >= CALLS * 9 / 10 && unpolled.polls_ended_by_input == 0.0,
        "without polling the daemon slept {} times in {CALLS} calls and polled {}",
        unpolled.sleeps,
        unpolled.polls_ended_by_input
    );
    // On (with a window wide enough for a busy test machine), the next
    // request is found by polling. A client that is late now and then (this
    // machine runs other tests) costs a sleep, and one more call unpolled.
    let polled = back_to_back_calls(1_000, CALLS).await;
    assert!(
        polled.sleeps <= CALLS / 4 && polled.polls_ended_by_input >= (CALLS * 3 / 4) as f64,
        "with polling the daemon slept {} times in {CALLS} calls (without: {}), \
         and {} polls ended with a request",
        polled.sleeps,
        unpolled.sleeps,
        polled.polls_ended_by_input
    );
}
