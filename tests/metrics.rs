//! Observability of the real daemon: `serve --metrics-addr` scraped over TCP
//! and over a unix socket and parsed with a real exposition parser
//! (`prometheus-parse`), request ids in the JSON log, `cri-imaged status`,
//! and no credential in any log line or metric.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use cri_imaged::api::client;
use cri_imaged::api::proto::runtime::v1 as cri;

use crate::support::daemon_process::DaemonProcess;
use crate::support::fault_proxy::{Fault, FaultProxy, FaultRule};
use crate::support::registry::{
    BuiltImage, Compression, ImageBuilder, LayerBuilder, Pusher, TestRegistry,
};

const BINARY: &str = env!("CARGO_BIN_EXE_cri-imaged");
const PULL_IMAGE: &str = "/runtime.v1.ImageService/PullImage";
/// How long a test waits for the daemon to log its metrics address.
const LOG_WAIT_MS: u64 = 30_000;

fn two_layer_image() -> BuiltImage {
    ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .directory("etc")
                .file("etc/os-release", b"NAME=metrics\n")
                .build(Compression::Gzip),
        )
        .layer(
            LayerBuilder::new()
                .file("bin/app", b"#!/bin/sh\necho metrics\n")
                .build(Compression::Zstd),
        )
        .build()
}

fn layer_bytes(image: &BuiltImage) -> u64 {
    image.layers.iter().map(|layer| layer.size()).sum()
}

/// Every byte a first pull of `image` receives: manifest, config, layers.
fn blob_bytes(image: &BuiltImage) -> u64 {
    image.manifest_bytes.len() as u64 + image.config_bytes.len() as u64 + layer_bytes(image)
}

/// The daemon's JSON log, one value per line (lines that are not JSON are
/// kept as strings, so nothing is skipped by a credential check).
fn log_lines(daemon: &DaemonProcess) -> Vec<serde_json::Value> {
    daemon
        .log_text()
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|_| serde_json::Value::String(line.into()))
        })
        .collect()
}

/// The address the daemon logged for its metrics endpoint (polled: the log
/// line is written before the socket opens, but the file may lag).
fn metrics_address(daemon: &DaemonProcess) -> String {
    let deadline = Instant::now() + Duration::from_millis(LOG_WAIT_MS);
    loop {
        let found = log_lines(daemon).into_iter().find_map(|line| {
            (line["fields"]["message"] == "serving metrics")
                .then(|| line["fields"]["address"].as_str().unwrap().to_owned())
        });
        if let Some(address) = found {
            return address;
        }
        assert!(
            Instant::now() < deadline,
            "no metrics address logged: {}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `GET /metrics` over TCP with a real HTTP client.
fn scrape_tcp(address: &str) -> String {
    let mut response = ureq::get(&format!("http://{address}/metrics"))
        .call()
        .unwrap();
    let content_type = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.body_mut().read_to_string().unwrap()
}

/// `GET /metrics` over a unix socket, as plain HTTP/1.1 with
/// `Connection: close` (ureq speaks TCP only).
pub(crate) fn scrape_unix(path: &Path) -> String {
    let mut stream = std::os::unix::net::UnixStream::connect(path).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    body.to_owned()
}

/// A parsed scrape, looked up by metric name and (a subset of) labels.
pub(crate) struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    pub(crate) fn parse(text: &str) -> Scrape {
        assert!(text.ends_with("# EOF\n"), "{text}");
        let lines = text.lines().map(|line| Ok(line.to_owned()));
        Scrape(prometheus_parse::Scrape::parse(lines).unwrap())
    }

    /// The value of the sample `metric` whose labels include `labels`; 0
    /// when there is none yet (a family shows a label set once it is used).
    pub(crate) fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<f64> = self
            .0
            .samples
            .iter()
            .filter(|sample| sample.metric == metric)
            .filter(|sample| {
                labels
                    .iter()
                    .all(|(name, value)| sample.labels.get(name) == Some(*value))
            })
            .map(|sample| match sample.value {
                prometheus_parse::Value::Counter(value)
                | prometheus_parse::Value::Gauge(value)
                | prometheus_parse::Value::Untyped(value) => value,
                _ => panic!("{metric} is not a single value"),
            })
            .collect();
        assert!(matching.len() <= 1, "{metric} {labels:?}: {matching:?}");
        matching.first().copied().unwrap_or(0.0)
    }

    /// How far each of `metrics` moved since `before`.
    fn moved_since(
        &self,
        before: &Scrape,
        metrics: &[(&str, &[(&str, &str)])],
    ) -> HashMap<String, f64> {
        metrics
            .iter()
            .map(|(metric, labels)| {
                (
                    format!("{metric}{labels:?}"),
                    self.value(metric, labels) - before.value(metric, labels),
                )
            })
            .collect()
    }
}

fn pull_request(image: &str, auth: Option<cri::AuthConfig>) -> cri::PullImageRequest {
    cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        auth,
        ..Default::default()
    }
}

#[tokio::test]
async fn pulls_move_the_pull_byte_store_and_rpc_metrics_by_what_they_did() {
    let registry = TestRegistry::start();
    let image = two_layer_image();
    Pusher::new(&registry)
        .push_image("team/app", &image, "v1")
        .unwrap();
    let daemon =
        DaemonProcess::start_with(&["--log-format", "json", "--metrics-addr", "127.0.0.1:0"]);
    let address = metrics_address(&daemon);
    let host = registry.host();
    let mut images = client::image_client(&daemon.socket).await.unwrap();

    let before = Scrape::parse(&scrape_tcp(&address));
    let reference = format!("{host}/team/app:v1");
    images
        .pull_image(pull_request(&reference, None))
        .await
        .unwrap();
    let after_first = Scrape::parse(&scrape_tcp(&address));
    let ok: &[(&str, &str)] = &[("registry", host), ("result", "ok")];
    let pull_method: &[(&str, &str)] = &[("method", PULL_IMAGE)];
    let moved = after_first.moved_since(
        &before,
        &[
            ("cri_imaged_pulls_started_total", &[("registry", host)]),
            ("cri_imaged_pulls_finished_total", ok),
            (
                "cri_imaged_pull_duration_seconds_count",
                &[("result", "ok")],
            ),
            (
                "cri_imaged_pull_downloaded_bytes_total",
                &[("registry", host)],
            ),
            ("cri_imaged_pull_skipped_bytes_total", &[("registry", host)]),
            (
                "cri_imaged_grpc_requests_total",
                &[("method", PULL_IMAGE), ("code", "OK")],
            ),
            (
                "cri_imaged_grpc_request_duration_seconds_count",
                pull_method,
            ),
        ],
    );
    let expected: HashMap<String, f64> = [
        (
            format!("cri_imaged_pulls_started_total{:?}", [("registry", host)]),
            1.0,
        ),
        (format!("cri_imaged_pulls_finished_total{ok:?}"), 1.0),
        (
            format!(
                "cri_imaged_pull_duration_seconds_count{:?}",
                [("result", "ok")]
            ),
            1.0,
        ),
        (
            format!(
                "cri_imaged_pull_downloaded_bytes_total{:?}",
                [("registry", host)]
            ),
            blob_bytes(&image) as f64,
        ),
        (
            format!(
                "cri_imaged_pull_skipped_bytes_total{:?}",
                [("registry", host)]
            ),
            0.0,
        ),
        (
            format!(
                "cri_imaged_grpc_requests_total{:?}",
                [("method", PULL_IMAGE), ("code", "OK")]
            ),
            1.0,
        ),
        (
            format!("cri_imaged_grpc_request_duration_seconds_count{pull_method:?}"),
            1.0,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(moved, expected);
    // Store gauges, computed at scrape time.
    assert_eq!(
        after_first.value("cri_imaged_store_images", &[("state", "ready")]),
        1.0
    );
    assert_eq!(after_first.value("cri_imaged_store_blobs", &[]), 4.0);
    assert_eq!(after_first.value("cri_imaged_store_leases", &[]), 0.0);
    assert_eq!(
        after_first.value("cri_imaged_store_used_bytes", &[("part", "content")]),
        blob_bytes(&image) as f64
    );
    assert!(after_first.value("cri_imaged_store_used_bytes", &[("part", "snapshots")]) > 0.0);
    assert!(after_first.value("cri_imaged_metadata_file_bytes", &[]) > 0.0);
    assert_eq!(
        after_first.value("cri_imaged_reconcile_runs_total", &[]),
        1.0
    );
    assert_eq!(after_first.value("cri_imaged_pulls_running", &[]), 0.0);

    // A second pull of the same image downloads only the manifest again and
    // skips every layer.
    images
        .pull_image(pull_request(&reference, None))
        .await
        .unwrap();
    let after_second = Scrape::parse(&scrape_tcp(&address));
    let registry_label: &[(&str, &str)] = &[("registry", host)];
    assert_eq!(
        after_second.value("cri_imaged_pull_skipped_bytes_total", registry_label)
            - after_first.value("cri_imaged_pull_skipped_bytes_total", registry_label),
        layer_bytes(&image) as f64
    );
    assert_eq!(
        after_second.value("cri_imaged_pull_downloaded_bytes_total", registry_label)
            - after_first.value("cri_imaged_pull_downloaded_bytes_total", registry_label),
        image.manifest_bytes.len() as f64
    );
    assert_eq!(
        after_second.value("cri_imaged_pulls_finished_total", ok),
        2.0
    );

    // An unknown tag is counted under not_found, with the gRPC code to match.
    let error = images
        .pull_image(pull_request(&format!("{host}/team/app:missing"), None))
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound, "{error}");
    let after_failure = Scrape::parse(&scrape_tcp(&address));
    assert_eq!(
        after_failure.value(
            "cri_imaged_pulls_finished_total",
            &[("registry", host), ("result", "not_found")]
        ),
        1.0
    );
    assert_eq!(
        after_failure.value(
            "cri_imaged_grpc_requests_total",
            &[("method", PULL_IMAGE), ("code", "NOT_FOUND")]
        ),
        1.0
    );
    assert_eq!(
        after_failure.value("cri_imaged_pulls_finished_total", ok),
        2.0
    );
    // An invalid reference never reaches a registry: `invalid`, host `other`.
    let error = images
        .pull_image(pull_request("not a reference", None))
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error}");
    let after_invalid = Scrape::parse(&scrape_tcp(&address));
    assert_eq!(
        after_invalid.value(
            "cri_imaged_pulls_finished_total",
            &[("registry", "other"), ("result", "invalid")]
        ),
        1.0
    );
}

#[tokio::test]
async fn every_log_line_of_a_pull_carries_its_request_id_and_status_reports_the_store() {
    let registry = TestRegistry::start();
    let image = two_layer_image();
    Pusher::new(&registry)
        .push_image("team/traced", &image, "v1")
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let metrics_socket = root.path().join("metrics/metrics.sock");
    let daemon = DaemonProcess::start_with(&[
        "--log-format",
        "json",
        "--metrics-addr",
        metrics_socket.to_str().unwrap(),
    ]);
    assert_eq!(metrics_address(&daemon), metrics_socket.to_str().unwrap());
    let before = Scrape::parse(&scrape_unix(&metrics_socket));

    let mut images = client::image_client(&daemon.socket).await.unwrap();
    let reference = format!("{}/team/traced:v1", registry.host());
    let mut request = tonic::Request::new(pull_request(&reference, None));
    request
        .metadata_mut()
        .insert("x-request-id", "metrics-test-pull-1".parse().unwrap());
    let response = images.pull_image(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "metrics-test-pull-1"
    );
    // An id that is not plain is replaced by a generated one.
    let mut request = tonic::Request::new(cri::ImageStatusRequest {
        image: Some(cri::ImageSpec {
            image: reference.clone(),
            ..Default::default()
        }),
        verbose: false,
    });
    request
        .metadata_mut()
        .insert("x-request-id", "not plain; {}".parse().unwrap());
    let response = images.image_status(request).await.unwrap();
    let generated = response.metadata().get("x-request-id").unwrap();
    assert!(
        uuid::Uuid::parse_str(generated.to_str().unwrap()).is_ok(),
        "{generated:?}"
    );

    let after = Scrape::parse(&scrape_unix(&metrics_socket));
    assert_eq!(
        after.value(
            "cri_imaged_grpc_requests_total",
            &[
                ("method", "/runtime.v1.ImageService/ImageStatus"),
                ("code", "OK")
            ]
        ) - before.value(
            "cri_imaged_grpc_requests_total",
            &[
                ("method", "/runtime.v1.ImageService/ImageStatus"),
                ("code", "OK")
            ]
        ),
        1.0
    );

    // Every line logged while pulling, including those of the pull's own
    // task and of its per-layer futures, is inside the request's rpc span.
    let lines = log_lines(&daemon);
    let pull_messages = [
        "reference resolved",
        "layer fetched",
        "layer unpacked",
        "image pulled",
    ];
    let pull_lines: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| {
            pull_messages
                .iter()
                .any(|message| line["fields"]["message"] == *message)
        })
        .collect();
    assert_eq!(pull_lines.len(), 1 + 2 + 2 + 1, "{}", daemon.log_text());
    for line in &pull_lines {
        let spans = line["spans"].as_array().unwrap();
        assert_eq!(spans[0]["name"], "rpc", "{line}");
        assert_eq!(spans[0]["request_id"], "metrics-test-pull-1", "{line}");
        assert_eq!(spans[0]["method"], PULL_IMAGE, "{line}");
        assert!(
            spans
                .iter()
                .any(|span| span["name"] == "pull" && span["reference"] == reference.as_str()),
            "{line}"
        );
    }
    // Each layer's fetch and unpack line names its layer's digest.
    for layer in &image.layers {
        for (message, span_name) in [
            ("layer fetched", "fetch_layer"),
            ("layer unpacked", "unpack_layer"),
        ] {
            assert!(
                pull_lines.iter().any(|line| {
                    line["fields"]["message"] == message
                        && line["span"]["name"] == span_name
                        && line["span"]["digest"] == layer.digest.as_str()
                }),
                "no {message} line for {}: {}",
                layer.digest,
                daemon.log_text()
            );
        }
    }

    // `cri-imaged status --output json` after the pull.
    let output = Command::new(BINARY)
        .args(["status", "--socket"])
        .arg(&daemon.socket)
        .args(["--output", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["images"], 1);
    assert_eq!(status["blobs"], 4);
    assert_eq!(status["snapshots"], 2);
    assert_eq!(status["leases"], 0);
    assert_eq!(status["contentBytes"], blob_bytes(&image));
    assert_eq!(status["ingestBytes"], 0);
    assert!(status["snapshotBytes"].as_u64().unwrap() > 0, "{status}");
    assert!(status["schemaVersion"].as_u64().unwrap() >= 1, "{status}");
    assert!(status["uptimeSeconds"].is_u64(), "{status}");
    assert_eq!(status["limits"]["pulls_max"], "0");
    assert_eq!(status["limits"]["layer_downloads_max"], "3");
    // The daemon's startup pass, on an empty store.
    assert!(
        status["lastGcSummary"]
            .as_str()
            .unwrap()
            .starts_with("removed 0 images, 0 blobs, 0 snapshots"),
        "{status}"
    );
    assert!(
        status["lastReconcileSummary"]
            .as_str()
            .unwrap()
            .starts_with("ended 0 leases of earlier boots"),
        "{status}"
    );
    let text = Command::new(BINARY)
        .args(["status", "--socket"])
        .arg(&daemon.socket)
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("Images:") && text.contains("Last gc:         removed 0 images"),
        "{text}"
    );

    // SIGTERM stops the metrics endpoint with the daemon and removes its
    // socket. The client's connection closes first (its task runs on this
    // test's runtime, hence the async sleeps below).
    drop(images);
    let mut daemon = daemon;
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_millis(LOG_WAIT_MS);
    let exit = loop {
        if let Some(exit) = daemon.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "{}", daemon.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit}: {}", daemon.log_text());
    assert!(!metrics_socket.exists(), "{}", daemon.log_text());
}

#[tokio::test]
async fn no_log_line_or_metric_carries_a_password_and_a_refused_one_counts_as_auth() {
    const USER: &str = "alice";
    const PASSWORD: &str = "correct horse battery staple";
    const WRONG_PASSWORD: &str = "wrong pony glue clip";
    let registry = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let image = two_layer_image();
    Pusher::new(&registry)
        .with_basic_auth(USER, PASSWORD)
        .push_image("private/app", &image, "v1")
        .unwrap();
    // Debug level, not the fixture's info: the check covers every line the
    // daemon can log about a pull.
    let root = tempfile::tempdir().unwrap();
    let socket = root.path().join("run/cri-imaged.sock");
    let metrics_socket = root.path().join("run/metrics.sock");
    let log = root.path().join("daemon.log");
    let child = Command::new(BINARY)
        .arg("serve")
        .arg("--root")
        .arg(root.path().join("state"))
        .arg("--socket")
        .arg(&socket)
        .arg("--hosts-dir")
        .arg(root.path().join("certs.d"))
        .arg("--metrics-addr")
        .arg(&metrics_socket)
        .args(["--log-format", "json"])
        .env("CRI_IMAGED_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let daemon = DaemonProcess {
        child,
        root,
        socket,
        log,
        arguments: Vec::new(),
        environment: Vec::new(),
    };
    metrics_address(&daemon);
    let deadline = Instant::now() + Duration::from_millis(LOG_WAIT_MS);
    let mut images = loop {
        match client::image_client(&daemon.socket).await {
            Ok(images) => break images,
            Err(error) => {
                assert!(Instant::now() < deadline, "{error}: {}", daemon.log_text());
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    };
    let reference = format!("{}/private/app:v1", registry.host());
    let basic = |password: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"))
    };

    let refused = images
        .pull_image(pull_request(
            &reference,
            Some(cri::AuthConfig {
                username: USER.into(),
                password: WRONG_PASSWORD.into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    images
        .pull_image(pull_request(
            &reference,
            Some(cri::AuthConfig {
                username: USER.into(),
                password: PASSWORD.into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap();
    // The docker-config form, base64("user:password"), too.
    images
        .pull_image(pull_request(
            &reference,
            Some(cri::AuthConfig {
                auth: basic(PASSWORD),
                ..Default::default()
            }),
        ))
        .await
        .unwrap();

    let metrics = scrape_unix(&metrics_socket);
    let scrape = Scrape::parse(&metrics);
    let host = registry.host();
    assert_eq!(
        scrape.value(
            "cri_imaged_pulls_finished_total",
            &[("registry", host), ("result", "auth")]
        ),
        1.0
    );
    assert_eq!(
        scrape.value(
            "cri_imaged_pulls_finished_total",
            &[("registry", host), ("result", "ok")]
        ),
        2.0
    );
    let log_text = daemon.log_text();
    assert!(log_text.contains("image pulled"), "{log_text}");
    for secret in [
        PASSWORD.to_owned(),
        WRONG_PASSWORD.to_owned(),
        basic(PASSWORD),
        basic(WRONG_PASSWORD),
    ] {
        assert!(!log_text.contains(&secret), "log carries {secret:?}");
        assert!(!metrics.contains(&secret), "metrics carry {secret:?}");
        // Also any distinctive word of it, in case it was split or escaped.
        for word in secret.split(' ').filter(|word| word.len() > 4) {
            assert!(!log_text.contains(word), "log carries {word:?}");
        }
    }
}

#[tokio::test]
async fn a_mirror_that_lacks_the_image_counts_one_fallback_per_request_it_failed() {
    let upstream = TestRegistry::start();
    let empty_mirror = TestRegistry::start();
    let image = two_layer_image();
    Pusher::new(&upstream)
        .push_image("team/app", &image, "v1")
        .unwrap();
    let daemon =
        DaemonProcess::start_with(&["--log-format", "json", "--metrics-addr", "127.0.0.1:0"]);
    let address = metrics_address(&daemon);
    let hosts = daemon.root.path().join("certs.d").join(upstream.host());
    std::fs::create_dir_all(&hosts).unwrap();
    std::fs::write(
        hosts.join("hosts.toml"),
        format!(
            "server = \"http://{}\"\n\n[host.\"http://{}\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
            upstream.host(),
            empty_mirror.host()
        ),
    )
    .unwrap();
    let mut images = client::image_client(&daemon.socket).await.unwrap();
    images
        .pull_image(pull_request(
            &format!("{}/team/app:v1", upstream.host()),
            None,
        ))
        .await
        .unwrap();
    let scrape = Scrape::parse(&scrape_tcp(&address));
    // The mirror answers 404 to the manifest, the config and each layer;
    // each of those requests then goes on to upstream once.
    assert_eq!(
        scrape.value(
            "cri_imaged_registry_mirror_fallbacks_total",
            &[("registry", upstream.host())]
        ),
        (1 + 1 + image.layers.len()) as f64,
        "{}",
        daemon.log_text()
    );
    assert!(
        empty_mirror.log_text().contains("team/app/manifests/v1"),
        "{}",
        empty_mirror.log_text()
    );
}

/// Polls the scrape at `address` until `metric` (with `labels`) reads
/// `wanted`.
async fn wait_for_metric(address: &str, metric: &str, labels: &[(&str, &str)], wanted: f64) {
    let deadline = Instant::now() + Duration::from_millis(LOG_WAIT_MS);
    loop {
        let value = Scrape::parse(&scrape_tcp(address)).value(metric, labels);
        if value == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{metric}{labels:?} stayed at {value}, wanted {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn running_queued_and_deduplicated_pulls_are_counted_while_they_wait() {
    let registry = TestRegistry::start();
    let first = two_layer_image();
    let second = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("second", b"second")
                .build(Compression::Gzip),
        )
        .build();
    let pusher = Pusher::new(&registry);
    pusher.push_image("team/first", &first, "v1").unwrap();
    pusher.push_image("team/second", &second, "v1").unwrap();
    // The first manifest request is held long enough for the test to see
    // the pull running and to queue and join others behind it; every wait
    // below polls for a state, the hold only keeps that state in place.
    let proxy = FaultProxy::in_front_of(&registry);
    proxy.add_rule(
        FaultRule::new(
            "GET",
            "team/first/manifests/v1",
            Fault::StallBeforeHeaders {
                duration: Duration::from_secs(10),
            },
        )
        .first(1),
    );
    let daemon = DaemonProcess::start_with(&[
        "--log-format",
        "json",
        "--metrics-addr",
        "127.0.0.1:0",
        "--pulls-max",
        "1",
    ]);
    let address = metrics_address(&daemon);
    let host = proxy.host();
    let images = client::image_client(&daemon.socket).await.unwrap();
    let pull = |reference: String| {
        let mut images = images.clone();
        tokio::spawn(async move { images.pull_image(pull_request(&reference, None)).await })
    };

    let held = pull(format!("{host}/team/first:v1"));
    wait_for_metric(&address, "cri_imaged_pulls_running", &[], 1.0).await;
    let queued = pull(format!("{host}/team/second:v1"));
    wait_for_metric(&address, "cri_imaged_pulls_queued", &[], 1.0).await;
    let joined = pull(format!("{host}/team/first:v1"));
    wait_for_metric(
        &address,
        "cri_imaged_pulls_deduplicated_total",
        &[("registry", host.as_str())],
        1.0,
    )
    .await;
    let scrape = Scrape::parse(&scrape_tcp(&address));
    assert_eq!(
        scrape.value(
            "cri_imaged_pulls_started_total",
            &[("registry", host.as_str())]
        ),
        3.0
    );
    assert_eq!(
        scrape.value(
            "cri_imaged_pulls_finished_total",
            &[("registry", host.as_str()), ("result", "ok")]
        ),
        0.0
    );

    let held = held.await.unwrap().unwrap().into_inner();
    let joined = joined.await.unwrap().unwrap().into_inner();
    assert_eq!(held.image_ref, joined.image_ref);
    queued.await.unwrap().unwrap();
    let scrape = Scrape::parse(&scrape_tcp(&address));
    assert_eq!(
        scrape.value(
            "cri_imaged_pulls_finished_total",
            &[("registry", host.as_str()), ("result", "ok")]
        ),
        3.0
    );
    assert_eq!(scrape.value("cri_imaged_pulls_running", &[]), 0.0);
    assert_eq!(scrape.value("cri_imaged_pulls_queued", &[]), 0.0);
    assert_eq!(
        scrape.value(
            "cri_imaged_pull_duration_seconds_count",
            &[("result", "ok")]
        ),
        3.0
    );
}
