//! The real `cri-imaged serve` binary, driven over its unix socket with the
//! generated CRI clients (what the kubelet and crictl speak), pulling from the
//! real Debian registry.

use std::path::Path;

use cri_imaged::api::client;
use cri_imaged::api::proto::runtime::v1 as cri;

use crate::support::daemon_process::DaemonProcess;
use crate::support::registry::{
    BuiltImage, Compression, ImageBuilder, LayerBuilder, Pusher, TestRegistry,
};

/// A CRI image client connected to `daemon`.
async fn images_of(
    daemon: &DaemonProcess,
) -> cri::image_service_client::ImageServiceClient<tonic::transport::Channel> {
    client::image_client(&daemon.socket).await.unwrap()
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}

/// Pulls `reference` with no credentials; any failure fails the test.
async fn pull(
    images: &mut cri::image_service_client::ImageServiceClient<tonic::transport::Channel>,
    reference: &str,
) {
    images
        .pull_image(cri::PullImageRequest {
            image: spec(reference),
            ..Default::default()
        })
        .await
        .unwrap();
}

fn app_image(user: &str) -> BuiltImage {
    ImageBuilder::new()
        .user(user)
        .annotation("org.opencontainers.image.title", "app")
        .layer(
            LayerBuilder::new()
                .directory("etc")
                .file("etc/os-release", b"NAME=base\n")
                .file("etc/removed-later", b"x")
                .build(Compression::Gzip),
        )
        .layer(
            LayerBuilder::new()
                .file("bin/app", b"#!/bin/sh\necho hi\n")
                .whiteout("etc/removed-later")
                .build(Compression::Zstd),
        )
        .build()
}

fn list_paths(directory: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(directory).into_iter().flatten().flatten() {
        found.push(entry.file_name().to_string_lossy().into_owned());
    }
    found.sort();
    found
}

#[tokio::test]
async fn version_and_status_answer_as_an_image_only_runtime() {
    let daemon = DaemonProcess::start();
    let mut runtime = client::runtime_client(&daemon.socket).await.unwrap();
    let version = runtime
        .version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.runtime_name, "cri-imaged");
    assert_eq!(version.runtime_api_version, "v1");
    assert_eq!(version.runtime_version, env!("CARGO_PKG_VERSION"));
    let status = runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conditions = status.status.unwrap().conditions;
    let types: Vec<&str> = conditions.iter().map(|c| c.r#type.as_str()).collect();
    assert_eq!(types, ["RuntimeReady", "NetworkReady"]);
    assert!(
        conditions
            .iter()
            .all(|c| !c.status && c.message.contains("images only"))
    );
    assert!(!status.info.is_empty(), "verbose status carries info");

    // A RuntimeService method this daemon does not serve, called raw.
    let channel = client::connect(&daemon.socket).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let error = grpc
        .unary::<cri::VersionRequest, cri::VersionResponse, _>(
            tonic::Request::new(cri::VersionRequest::default()),
            http::uri::PathAndQuery::from_static("/runtime.v1.RuntimeService/RunPodSandbox"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unimplemented);
    assert!(
        error.message().contains("serves images only"),
        "{}",
        error.message()
    );
    assert!(
        error.message().contains("RunPodSandbox"),
        "{}",
        error.message()
    );
}

/// Raw HTTP/2 frames for `grpc_core_style_requests_...`.
mod raw_http2 {
    pub const SETTINGS: u8 = 0x4;
    pub const HEADERS: u8 = 0x1;
    pub const DATA: u8 = 0x0;
    pub const RST_STREAM: u8 = 0x3;
    pub const GOAWAY: u8 = 0x7;

    pub fn frame(frame_type: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut bytes = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        bytes.extend_from_slice(&[frame_type, flags]);
        bytes.extend_from_slice(&stream_id.to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// A raw (not Huffman-coded) HPACK string of under 127 bytes.
    pub fn string(value: &[u8]) -> Vec<u8> {
        assert!(value.len() < 127);
        [&[value.len() as u8][..], value].concat()
    }
}

/// What gRPC C-core (Python grpcio, C++, Ruby, PHP) sends on a `unix:` target
/// unless told otherwise: the socket path, percent-encoded, as `:authority`,
/// added to the HPACK table and referred to by index in the next call. Both
/// calls are answered (h2 would reset both streams with PROTOCOL_ERROR
/// without the rewrite in `api/authority_rewrite`). Also pins what that
/// rewrite assumes of our server's SETTINGS: no HPACK table above 4096 bytes.
#[tokio::test]
async fn grpc_core_style_requests_with_a_percent_encoded_authority_are_answered() {
    use raw_http2::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let daemon = DaemonProcess::start();
    let mut socket = tokio::net::UnixStream::connect(&daemon.socket)
        .await
        .unwrap();
    let path = b"/runtime.v1.RuntimeService/Version";
    // :method POST, :scheme http, :path and :authority with incremental
    // indexing, content-type (static name 31) with incremental indexing, te.
    let first_block = [
        &[0x83, 0x86, 0x44][..],
        &string(path),
        &[0x41],
        &string(b"run%2Fcri-imaged%2Fcri-imaged.sock"),
        &[0x5f],
        &string(b"application/grpc"),
        &[0x00],
        &string(b"te"),
        &string(b"trailers"),
    ]
    .concat();
    // The table is now content-type (62), :authority (63), :path (64).
    let second_block = [
        &[0x83, 0x86, 0xc0, 0xbf, 0xbe, 0x00][..],
        &string(b"te"),
        &string(b"trailers"),
    ]
    .concat();
    // A VersionRequest { version: "v1" } behind the gRPC message prefix.
    let message = [0, 0, 0, 0, 4, 0x0a, 0x02, b'v', b'1'];
    let mut sent = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    for frame_bytes in [
        frame(SETTINGS, 0, 0, &[]),
        frame(HEADERS, 0x4, 1, &first_block),
        frame(DATA, 0x1, 1, &message),
        frame(HEADERS, 0x4, 3, &second_block),
        frame(DATA, 0x1, 3, &message),
    ] {
        sent.extend_from_slice(&frame_bytes);
    }
    socket.write_all(&sent).await.unwrap();

    let mut answered = std::collections::BTreeMap::new();
    let mut saw_settings = false;
    let read_frames = async {
        while answered.len() < 2 {
            let mut header = [0u8; 9];
            socket.read_exact(&mut header).await.unwrap();
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let stream_id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
            let mut payload = vec![0u8; length];
            socket.read_exact(&mut payload).await.unwrap();
            match header[3] {
                SETTINGS if header[4] & 0x1 == 0 => {
                    saw_settings = true;
                    for parameter in payload.chunks(6) {
                        let identifier = u16::from_be_bytes([parameter[0], parameter[1]]);
                        let value = u32::from_be_bytes([
                            parameter[2],
                            parameter[3],
                            parameter[4],
                            parameter[5],
                        ]);
                        // SETTINGS_HEADER_TABLE_SIZE: the rewrite's mirror
                        // allows the protocol default and no more.
                        assert!(identifier != 0x1 || value <= 4096, "{identifier} = {value}");
                    }
                    socket
                        .write_all(&frame(SETTINGS, 0x1, 0, &[]))
                        .await
                        .unwrap();
                }
                RST_STREAM | GOAWAY => panic!(
                    "stream {stream_id} refused: frame type {}, payload {payload:02x?}",
                    header[3]
                ),
                DATA if length > 5 => {
                    answered.insert(stream_id, payload);
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), read_frames)
        .await
        .expect("both calls answered");
    assert!(saw_settings);
    assert_eq!(answered.keys().copied().collect::<Vec<_>>(), [1, 3]);
    for reply in answered.values() {
        assert!(
            reply.windows(10).any(|window| window == b"cri-imaged"),
            "{reply:02x?}"
        );
    }
}

#[tokio::test]
async fn pull_list_status_remove_and_fs_info_over_the_socket() {
    let registry = TestRegistry::start();
    let numeric = app_image("1000:1000");
    let named = ImageBuilder::new()
        .user("nobody")
        .layer(
            LayerBuilder::new()
                .file("hello", b"hello")
                .build(Compression::Gzip),
        )
        .build();
    let pusher = Pusher::new(&registry);
    pusher.push_image("team/app", &numeric, "v1").unwrap();
    pusher.push_image("team/named", &named, "v2").unwrap();
    let daemon = DaemonProcess::start();
    let mut images = images_of(&daemon).await;

    let before = images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let used_before = before.image_filesystems[0].used_bytes.unwrap().value;

    let reference = format!("{}/team/app:v1", registry.host());
    let pulled = images
        .pull_image(cri::PullImageRequest {
            image: spec(&reference),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pulled.image_ref, numeric.config_digest,
        "image_ref is the config digest"
    );
    images
        .pull_image(cri::PullImageRequest {
            image: spec(&format!("{}/team/named:v2", registry.host())),
            ..Default::default()
        })
        .await
        .unwrap();

    let listed = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(listed.len(), 2);
    let app = listed
        .iter()
        .find(|image| image.id == numeric.config_digest)
        .unwrap();
    assert_eq!(app.repo_tags, vec![reference.clone()]);
    assert_eq!(
        app.repo_digests,
        vec![format!(
            "{}/team/app@{}",
            registry.host(),
            numeric.manifest_digest
        )]
    );
    assert_eq!(app.uid, Some(cri::Int64Value { value: 1000 }));
    assert_eq!(app.username, "");
    assert!(app.size > 0);
    assert_eq!(
        app.spec.as_ref().unwrap().annotations["org.opencontainers.image.title"],
        "app"
    );
    let other = listed
        .iter()
        .find(|image| image.id == named.config_digest)
        .unwrap();
    assert_eq!(other.uid, None);
    assert_eq!(other.username, "nobody");

    // Status by tag, by id, by digest reference and by id prefix all find it.
    for name in [
        reference.clone(),
        numeric.config_digest.clone(),
        app.repo_digests[0].clone(),
        numeric.config_digest["sha256:".len().."sha256:".len() + 12].to_owned(),
    ] {
        let status = images
            .image_status(cri::ImageStatusRequest {
                image: spec(&name),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            status.image.map(|image| image.id),
            Some(numeric.config_digest.clone()),
            "{name}"
        );
    }
    let verbose = images
        .image_status(cri::ImageStatusRequest {
            image: spec(&reference),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    assert_eq!(info["state"], "ready");
    assert_eq!(info["imageSpec"]["config"]["User"], "1000:1000");
    let chain_id = info["chainId"].as_str().unwrap().to_owned();

    // The snapshots are overlay lower dirs: the top holds the whiteout as a 0/0
    // character device, the base the files.
    let top = daemon
        .state()
        .join("snapshots")
        .join(chain_id.replace(':', "-"));
    assert_eq!(list_paths(&top), vec!["bin", "etc"]);
    let whiteout = std::fs::symlink_metadata(top.join("etc/removed-later")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(
        whiteout.file_type().is_char_device(),
        "whiteout is a character device"
    );

    let after = images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let usage = &after.image_filesystems[0];
    assert!(usage.timestamp > 0);
    assert!(usage.used_bytes.unwrap().value > used_before, "{usage:?}");
    assert!(usage.inodes_used.unwrap().value > 0);
    assert_eq!(
        usage.fs_id.as_ref().unwrap().mountpoint,
        daemon.state().display().to_string()
    );
    assert!(after.container_filesystems.is_empty());

    // An absent image: an empty status, not an error.
    let absent = images
        .image_status(cri::ImageStatusRequest {
            image: spec("docker.io/library/absent:1"),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(absent.image.is_none());

    // Remove by tag removes every name; removing again succeeds.
    for _ in 0..2 {
        images
            .remove_image(cri::RemoveImageRequest {
                image: spec(&reference),
            })
            .await
            .unwrap();
    }
    let listed = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(listed.len(), 1);
    let gone = images
        .image_status(cri::ImageStatusRequest {
            image: spec(&numeric.config_digest),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(gone.image.is_none());

    // StreamImages carries the same images as ListImages.
    let mut stream = images
        .stream_images(cri::StreamImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        assert!(!message.images.is_empty());
        streamed.extend(message.images);
    }
    assert_eq!(streamed, listed);
}

#[tokio::test]
async fn bad_requests_get_the_right_status_codes_and_change_nothing() {
    let registry = TestRegistry::start_with_htpasswd("alice", "s3cret-password");
    let image = app_image("0");
    Pusher::new(&registry)
        .push_image("private/app", &image, "v1")
        .unwrap();
    let daemon = DaemonProcess::start();
    let mut images = images_of(&daemon).await;
    let reference = format!("{}/private/app:v1", registry.host());

    let cases: Vec<(cri::PullImageRequest, tonic::Code, &str)> = vec![
        (
            cri::PullImageRequest {
                image: spec("Not A Reference!"),
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "Not A Reference!",
        ),
        (
            cri::PullImageRequest {
                image: spec(&reference),
                ..Default::default()
            },
            tonic::Code::Unauthenticated,
            "private/app",
        ),
        (
            cri::PullImageRequest {
                image: spec(&reference),
                auth: Some(cri::AuthConfig {
                    username: "alice".into(),
                    password: "wrong-password".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            tonic::Code::Unauthenticated,
            "rejected",
        ),
        (
            cri::PullImageRequest {
                image: spec(&reference),
                auth: Some(cri::AuthConfig {
                    auth: "%%%not-base64".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "base64",
        ),
        (
            cri::PullImageRequest {
                image: spec(&format!("{}/private/absent:v1", registry.host())),
                auth: Some(cri::AuthConfig {
                    username: "alice".into(),
                    password: "s3cret-password".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            tonic::Code::NotFound,
            "private/absent:v1",
        ),
        (
            cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: reference.clone(),
                    runtime_handler: "no-such-handler".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "no-such-handler",
        ),
    ];
    for (request, code, mentions) in cases {
        let error = images.pull_image(request).await.unwrap_err();
        assert_eq!(error.code(), code, "{}", error.message());
        assert!(error.message().contains(mentions), "{}", error.message());
        assert!(
            !error.message().contains("s3cret-password")
                && !error.message().contains("wrong-password")
        );
    }
    assert!(
        !daemon.log_text().contains("s3cret-password"),
        "a secret reached the log"
    );
    assert!(
        !daemon.log_text().contains("wrong-password"),
        "a secret reached the log"
    );
    let listed = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(listed.is_empty());

    // With the right credentials it works.
    let pulled = images
        .pull_image(cri::PullImageRequest {
            image: spec(&reference),
            auth: Some(cri::AuthConfig {
                username: "alice".into(),
                password: "s3cret-password".into(),
                server_address: registry.host().to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pulled.image_ref, image.config_digest);
    let status = images
        .image_status(cri::ImageStatusRequest {
            image: spec(&reference),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.image.unwrap().uid,
        Some(cri::Int64Value { value: 0 })
    );
}

#[tokio::test]
async fn twenty_concurrent_pulls_of_one_image_download_it_once() {
    let registry = TestRegistry::start();
    let image = app_image("1");
    Pusher::new(&registry)
        .push_image("team/popular", &image, "v1")
        .unwrap();
    let daemon = DaemonProcess::start();
    let reference = format!("{}/team/popular:v1", registry.host());
    let log_before = registry.log_text();
    let pulls: Vec<_> = (0..20)
        .map(|_| {
            let socket = daemon.socket.clone();
            let reference = reference.clone();
            tokio::spawn(async move {
                let mut images = client::image_client(&socket).await.unwrap();
                images
                    .pull_image(cri::PullImageRequest {
                        image: spec(&reference),
                        ..Default::default()
                    })
                    .await
                    .map(|response| response.into_inner().image_ref)
            })
        })
        .collect();
    for pull in pulls {
        assert_eq!(pull.await.unwrap().unwrap(), image.config_digest);
    }
    let log = registry.log_text();
    let new_log = &log[log_before.len().min(log.len())..];
    for layer in &image.layers {
        let fetches = new_log
            .lines()
            .filter(|line| line.contains(&format!("GET /v2/team/popular/blobs/{}", layer.digest)))
            .count();
        assert_eq!(
            fetches, 1,
            "layer {} was fetched {fetches} times",
            layer.digest
        );
    }
}

/// Pulls image `a` (whose layer the proxy holds back for a second) and image
/// `b` at the same time; returns whether `b` finished before `a`.
async fn b_finishes_first(pulls_max: &str) -> bool {
    use crate::support::fault_proxy::{Fault, FaultProxy, FaultRule};
    let registry = TestRegistry::start();
    let slow = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("slow", b"slow")
                .build(Compression::Gzip),
        )
        .build();
    let fast = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("fast", b"fast")
                .build(Compression::Gzip),
        )
        .build();
    let pusher = Pusher::new(&registry);
    pusher.push_image("order/a", &slow, "v1").unwrap();
    pusher.push_image("order/b", &fast, "v1").unwrap();
    let proxy = FaultProxy::in_front_of(&registry);
    proxy.add_rule(FaultRule::new(
        "GET",
        &format!("/blobs/{}", slow.layers[0].digest),
        Fault::StallBody {
            after_bytes: 0,
            duration: std::time::Duration::from_millis(1500),
        },
    ));
    let daemon = DaemonProcess::start_with(&["--pulls-max", pulls_max]);
    let pull = |name: &'static str| {
        let socket = daemon.socket.clone();
        let reference = format!("{}/order/{name}:v1", proxy.host());
        tokio::spawn(async move {
            let mut images = client::image_client(&socket).await.unwrap();
            images
                .pull_image(cri::PullImageRequest {
                    image: spec(&reference),
                    ..Default::default()
                })
                .await
                .unwrap();
            std::time::Instant::now()
        })
    };
    let a = pull("a");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let b = pull("b");
    let (a_done, b_done) = (a.await.unwrap(), b.await.unwrap());
    b_done < a_done
}

#[tokio::test]
async fn serialized_mode_runs_one_pull_at_a_time_and_the_default_does_not() {
    assert!(
        !b_finishes_first("1").await,
        "with --pulls-max 1 the second pull waited for the first"
    );
    assert!(
        b_finishes_first("0").await,
        "without a limit the second pull overtook the stalled one"
    );
}

#[tokio::test]
async fn sigterm_during_a_pull_lets_it_finish_then_exits_zero() {
    use crate::support::fault_proxy::{Fault, FaultProxy, FaultRule};
    let registry = TestRegistry::start();
    let image = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("slow", b"slow")
                .build(Compression::Gzip),
        )
        .build();
    Pusher::new(&registry)
        .push_image("term/app", &image, "v1")
        .unwrap();
    let proxy = FaultProxy::in_front_of(&registry);
    proxy.add_rule(FaultRule::new(
        "GET",
        &format!("/blobs/{}", image.layers[0].digest),
        Fault::StallBody {
            after_bytes: 0,
            duration: std::time::Duration::from_millis(1500),
        },
    ));
    let mut daemon = DaemonProcess::start();
    let reference = format!("{}/term/app:v1", proxy.host());
    let socket = daemon.socket.clone();
    let pull = tokio::spawn(async move {
        let mut images = client::image_client(&socket).await.unwrap();
        images
            .pull_image(cri::PullImageRequest {
                image: spec(&reference),
                ..Default::default()
            })
            .await
            .map(|response| response.into_inner().image_ref)
    });
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let killed = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(daemon.child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let pulled = pull.await.unwrap();
    assert_eq!(
        pulled.unwrap(),
        image.config_digest,
        "the pull in flight finished"
    );
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "exit {status}: {}", daemon.log_text());
    assert!(daemon.log_text().contains("shutting down"));
    assert!(
        !daemon.socket.exists(),
        "the socket is removed on a clean exit"
    );
}

/// The daemon answers an unfiltered ListImages with an answer it encoded
/// earlier, until an image or a name changes: every change must show in the
/// very next listing, and a filtered listing must not be served from it.
#[tokio::test]
async fn every_listing_shows_the_changes_made_before_it() {
    let registry = TestRegistry::start();
    let first = app_image("1000");
    let second = app_image("2000");
    let pusher = Pusher::new(&registry);
    pusher.push_image("team/first", &first, "v1").unwrap();
    pusher.push_image("team/first", &first, "v2").unwrap();
    pusher.push_image("team/second", &second, "v1").unwrap();
    let daemon = DaemonProcess::start();
    let mut images = images_of(&daemon).await;
    let host = registry.host();

    async fn listing(
        images: &mut cri::image_service_client::ImageServiceClient<tonic::transport::Channel>,
        filter: Option<&str>,
    ) -> Vec<(String, Vec<String>)> {
        let filter = filter.map(|image| cri::ImageFilter { image: spec(image) });
        let mut listed: Vec<_> = images
            .list_images(cri::ListImagesRequest { filter })
            .await
            .unwrap()
            .into_inner()
            .images
            .into_iter()
            .map(|image| (image.id, image.repo_tags))
            .collect();
        listed.sort();
        listed
    }

    assert_eq!(listing(&mut images, None).await, vec![]);
    pull(&mut images, &format!("{host}/team/first:v1")).await;
    let first_v1 = (
        first.config_digest.clone(),
        vec![format!("{host}/team/first:v1")],
    );
    assert_eq!(listing(&mut images, None).await, vec![first_v1.clone()]);
    assert_eq!(listing(&mut images, None).await, vec![first_v1.clone()]);

    // A second name for the same image changes only names.
    pull(&mut images, &format!("{host}/team/first:v2")).await;
    let first_both = (
        first.config_digest.clone(),
        vec![
            format!("{host}/team/first:v1"),
            format!("{host}/team/first:v2"),
        ],
    );
    assert_eq!(listing(&mut images, None).await, vec![first_both.clone()]);

    pull(&mut images, &format!("{host}/team/second:v1")).await;
    let second_v1 = (
        second.config_digest.clone(),
        vec![format!("{host}/team/second:v1")],
    );
    let mut both = vec![first_both.clone(), second_v1.clone()];
    both.sort();
    assert_eq!(listing(&mut images, None).await, both);
    // A filter is answered for itself, between unfiltered listings.
    assert_eq!(
        listing(&mut images, Some(&format!("{host}/team/second:v1"))).await,
        vec![second_v1.clone()]
    );
    assert_eq!(listing(&mut images, None).await, both);

    images
        .remove_image(cri::RemoveImageRequest {
            image: spec(&first.config_digest),
        })
        .await
        .unwrap();
    assert_eq!(listing(&mut images, None).await, vec![second_v1]);
}

#[tokio::test]
async fn every_image_status_answer_shows_the_changes_made_before_it() {
    let registry = TestRegistry::start();
    let first = app_image("1000");
    let second = app_image("2000");
    let pusher = Pusher::new(&registry);
    let daemon = DaemonProcess::start();
    let mut images = images_of(&daemon).await;
    let tag = format!("{}/team/moving:v1", registry.host());

    async fn status(
        images: &mut cri::image_service_client::ImageServiceClient<tonic::transport::Channel>,
        image: &str,
    ) -> Option<(String, Vec<String>)> {
        images
            .image_status(cri::ImageStatusRequest {
                image: spec(image),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .image
            .map(|image| (image.id, image.repo_tags))
    }

    // Each question is asked twice in a row: the second answer may come
    // from memory, and must still be the right one.
    for _ in 0..2 {
        assert_eq!(status(&mut images, &tag).await, None);
    }
    pusher.push_image("team/moving", &first, "v1").unwrap();
    pull(&mut images, &tag).await;
    for _ in 0..2 {
        assert_eq!(
            status(&mut images, &tag).await,
            Some((first.config_digest.clone(), vec![tag.clone()])),
            "absent before the pull, present after it"
        );
    }

    // The tag moves to another image: the name's answer follows it, and the
    // first image, asked for by id, has lost the name.
    pusher.push_image("team/moving", &second, "v1").unwrap();
    pull(&mut images, &tag).await;
    for _ in 0..2 {
        assert_eq!(
            status(&mut images, &tag).await,
            Some((second.config_digest.clone(), vec![tag.clone()]))
        );
        assert_eq!(
            status(&mut images, &first.config_digest).await,
            Some((first.config_digest.clone(), vec![]))
        );
    }

    images
        .remove_image(cri::RemoveImageRequest { image: spec(&tag) })
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(status(&mut images, &tag).await, None);
        assert_eq!(status(&mut images, &second.config_digest).await, None);
        assert!(status(&mut images, &first.config_digest).await.is_some());
    }
}
