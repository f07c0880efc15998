//! `cri_imaged.admin.v1.AdminService/PullWithProgress` over the real daemon's
//! socket, pulling from the real Debian registry (through the fault proxy
//! where a download must be slow enough to watch).

use std::collections::BTreeMap;
use std::time::Duration;

use cri_imaged::api::client;
use cri_imaged::api::proto::cri_imaged::admin::v1 as admin;
use cri_imaged::api::proto::cri_imaged::admin::v1::admin_service_client::AdminServiceClient;
use cri_imaged::api::proto::runtime::v1 as cri;

use crate::support::daemon_process::DaemonProcess;
use crate::support::fault_proxy::{Fault, FaultProxy, FaultRule};
use crate::support::registry::{
    BuiltImage, Compression, ImageBuilder, LayerBuilder, Pusher, TestRegistry,
};

/// `length` bytes that gzip cannot shrink much (a linear congruential
/// sequence), so a layer is big enough to arrive in several chunks.
pub fn incompressible(length: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..length)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect()
}

/// An image of two layers: a big one (256 KiB of noise) and a small one.
pub fn two_layer_image(seed: u32) -> BuiltImage {
    ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("big", &incompressible(256 * 1024, seed))
                .build(Compression::Gzip),
        )
        .layer(
            LayerBuilder::new()
                .file("small", format!("small {seed}").as_bytes())
                .build(Compression::Gzip),
        )
        .build()
}

pub async fn admin_client(daemon: &DaemonProcess) -> AdminServiceClient<tonic::transport::Channel> {
    AdminServiceClient::new(client::connect(&daemon.socket).await.unwrap())
}

fn request(image: &str, runtime_handler: &str) -> admin::PullWithProgressRequest {
    admin::PullWithProgressRequest {
        image: Some(cri::ImageSpec {
            image: image.to_owned(),
            runtime_handler: runtime_handler.to_owned(),
            ..Default::default()
        }),
        auth: None,
    }
}

/// Everything one PullWithProgress call received: its events in order and
/// the final status (`Ok` when the stream ended cleanly).
#[derive(Debug)]
struct Received {
    events: Vec<admin::pull_progress::Event>,
    end: Result<(), tonic::Status>,
}

async fn pull_with_progress(
    admin: &mut AdminServiceClient<tonic::transport::Channel>,
    image: &str,
    runtime_handler: &str,
) -> Received {
    let mut stream = match admin
        .pull_with_progress(request(image, runtime_handler))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return Received {
                events: Vec::new(),
                end: Err(status),
            };
        }
    };
    let mut events = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(message)) => events.push(message.event.expect("every message has an event")),
            Ok(None) => {
                return Received {
                    events,
                    end: Ok(()),
                };
            }
            Err(status) => {
                return Received {
                    events,
                    end: Err(status),
                };
            }
        }
    }
}

impl Received {
    fn resolved(&self) -> &admin::PullResolved {
        match self.events.first() {
            Some(admin::pull_progress::Event::Resolved(resolved)) => resolved,
            other => panic!("the first event is not `resolved`: {other:?}"),
        }
    }

    fn done_image_ref(&self) -> &str {
        match self.events.last() {
            Some(admin::pull_progress::Event::Done(done)) => &done.image_ref,
            other => panic!(
                "the last event is not `done`: {other:?} (end {:?})",
                self.end
            ),
        }
    }

    /// Layer events by digest, in order.
    fn layers(&self) -> BTreeMap<String, Vec<admin::LayerProgress>> {
        let mut layers: BTreeMap<String, Vec<admin::LayerProgress>> = BTreeMap::new();
        for event in &self.events {
            if let admin::pull_progress::Event::Layer(layer) = event {
                layers
                    .entry(layer.digest.clone())
                    .or_default()
                    .push(layer.clone());
            }
        }
        layers
    }

    /// Checks the shape every successful stream has: `resolved` first and
    /// only once, `done` last and only once, layer events in between with
    /// monotonic byte counts that end at each layer's size in `final_state`.
    fn assert_complete(&self, image: &BuiltImage, final_state: admin::LayerState) {
        assert!(self.end.is_ok(), "{:?}", self.end);
        let resolved = self.resolved();
        assert_eq!(resolved.config_digest, image.config_digest);
        assert_eq!(resolved.manifest_digest, image.manifest_digest);
        assert_eq!(resolved.layer_count as usize, image.layers.len());
        assert_eq!(
            resolved.total_bytes,
            image
                .layers
                .iter()
                .map(|layer| layer.bytes.len() as u64)
                .sum::<u64>()
        );
        assert_eq!(self.done_image_ref(), image.config_digest);
        let resolved_count = self
            .events
            .iter()
            .filter(|event| matches!(event, admin::pull_progress::Event::Resolved(_)))
            .count();
        let done_count = self
            .events
            .iter()
            .filter(|event| matches!(event, admin::pull_progress::Event::Done(_)))
            .count();
        assert_eq!((resolved_count, done_count), (1, 1), "{:#?}", self.events);
        let layers = self.layers();
        assert_eq!(layers.len(), image.layers.len(), "{layers:#?}");
        for built in &image.layers {
            let events = &layers[&built.digest];
            for pair in events.windows(2) {
                assert!(
                    pair[0].downloaded_bytes <= pair[1].downloaded_bytes,
                    "bytes went backwards for {}: {events:#?}",
                    built.digest
                );
            }
            let last = events.last().unwrap();
            assert_eq!(last.total_bytes, built.bytes.len() as u64);
            assert_eq!(last.downloaded_bytes, last.total_bytes, "{events:#?}");
            assert_eq!(last.state(), final_state, "{events:#?}");
            assert!(last.extracted);
            assert_eq!(last.media_type, built.media_type);
        }
    }
}

/// Holds the big layer's download for `stall` after its first 64 KiB.
fn proxy_holding_big_layer(
    registry: &TestRegistry,
    image: &BuiltImage,
    stall: Duration,
) -> FaultProxy {
    let proxy = FaultProxy::in_front_of(registry);
    proxy.add_rule(FaultRule::new(
        "GET",
        &format!("/blobs/{}", image.layers[0].digest),
        Fault::StallBody {
            after_bytes: 64 * 1024,
            duration: stall,
        },
    ));
    proxy
}

#[tokio::test]
async fn progress_streams_resolved_layers_and_done_with_the_id_pull_image_returns() {
    let registry = TestRegistry::start();
    let image = two_layer_image(1);
    Pusher::new(&registry)
        .push_image("progress/app", &image, "v1")
        .unwrap();
    let proxy = proxy_holding_big_layer(&registry, &image, Duration::from_millis(800));
    let daemon = DaemonProcess::start();
    let reference = format!("{}/progress/app:v1", proxy.host());
    let mut admin = admin_client(&daemon).await;

    let started = std::time::Instant::now();
    let received = pull_with_progress(&mut admin, &reference, "").await;
    let elapsed = started.elapsed();
    received.assert_complete(&image, admin::LayerState::Done);
    let big = &received.layers()[&image.layers[0].digest];
    // Byte events are rate-limited (150 ms per layer), state changes are not.
    let state_changes = big
        .windows(2)
        .filter(|pair| pair[0].state != pair[1].state)
        .count();
    let byte_events_max = elapsed.as_millis() as usize / 150 + 2;
    assert!(
        big.len() <= 1 + state_changes + byte_events_max,
        "{} events in {elapsed:?}: {big:#?}",
        big.len()
    );
    assert!(
        big.iter()
            .any(|event| event.state() == admin::LayerState::Downloading
                && event.downloaded_bytes > 0
                && event.downloaded_bytes < event.total_bytes),
        "no partial progress was reported while the layer was held back: {big:#?}"
    );
    let states: Vec<_> = big.iter().map(|event| event.state()).collect();
    assert!(
        states.contains(&admin::LayerState::Downloading),
        "{states:?}"
    );

    // PullImage of the same reference answers the same id, and the image is
    // listed, as after any pull.
    let mut images = client::image_client(&daemon.socket).await.unwrap();
    let pulled = images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: reference.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pulled.image_ref, received.done_image_ref());

    // Pulled again, the image's layers are reused: nothing fetched or unpacked.
    proxy.clear_requests();
    let again = pull_with_progress(&mut admin, &reference, "").await;
    again.assert_complete(&image, admin::LayerState::Reused);
    assert_eq!(
        proxy.count_matching("GET", "/blobs/"),
        0,
        "a present image's blobs were fetched again"
    );
}

#[tokio::test]
async fn a_second_caller_joins_the_pull_in_flight_and_a_caller_that_leaves_cancels_nothing() {
    let registry = TestRegistry::start();
    let image = two_layer_image(2);
    Pusher::new(&registry)
        .push_image("progress/shared", &image, "v1")
        .unwrap();
    let proxy = proxy_holding_big_layer(&registry, &image, Duration::from_millis(1500));
    let daemon = DaemonProcess::start();
    let reference = format!("{}/progress/shared:v1", proxy.host());

    // The first caller reads until the pull is resolved, then goes away.
    let mut first = admin_client(&daemon).await;
    let mut first_stream = first
        .pull_with_progress(request(&reference, ""))
        .await
        .unwrap()
        .into_inner();
    let first_event = first_stream
        .message()
        .await
        .unwrap()
        .unwrap()
        .event
        .unwrap();
    assert!(
        matches!(first_event, admin::pull_progress::Event::Resolved(_)),
        "{first_event:?}"
    );

    // The second caller joins while the big layer is held back.
    let mut second = admin_client(&daemon).await;
    let joined = tokio::spawn(async move { pull_with_progress(&mut second, &reference, "").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(first_stream);
    drop(first);

    let received = joined.await.unwrap();
    received.assert_complete(&image, admin::LayerState::Done);
    assert_eq!(
        proxy.count_matching("GET", &format!("/blobs/{}", image.layers[0].digest)),
        1,
        "the joined pull downloaded the layer again"
    );
    assert!(
        daemon.log_text().contains("image pulled"),
        "{}",
        daemon.log_text()
    );
}

#[tokio::test]
async fn errors_end_the_stream_with_the_status_pull_image_gives() {
    let daemon = DaemonProcess::start();
    let mut admin = admin_client(&daemon).await;

    let bad = pull_with_progress(&mut admin, "Not A Reference!", "").await;
    let status = bad.end.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("Not A Reference!"), "{status:?}");
    assert!(bad.events.is_empty(), "{:?}", bad.events);

    let unknown =
        pull_with_progress(&mut admin, "127.0.0.1:1/some/image:v1", "no-such-handler").await;
    let unknown_status = unknown.end.unwrap_err();
    assert_eq!(
        unknown_status.code(),
        tonic::Code::InvalidArgument,
        "{unknown_status:?}"
    );
    assert!(
        unknown_status.message().contains("no-such-handler"),
        "{unknown_status:?}"
    );

    // The same errors from PullImage.
    let mut images = client::image_client(&daemon.socket).await.unwrap();
    let status = images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: "127.0.0.1:1/some/image:v1".to_owned(),
                runtime_handler: "no-such-handler".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), unknown_status.message());

    // An unreachable registry: the status PullImage gives, after the stream.
    let unreachable = pull_with_progress(&mut admin, "127.0.0.1:1/some/image:v1", "").await;
    assert_eq!(
        unreachable.end.unwrap_err().code(),
        tonic::Code::Unavailable
    );
}

/// Every path under `directory` whose file name is `name`.
fn find_named(directory: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(directory) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == name {
            found.push(path.clone());
        }
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            found.extend(find_named(&path, name));
        }
    }
    found
}

#[tokio::test]
async fn a_layer_is_unpacked_while_it_is_still_downloading() {
    let registry = TestRegistry::start();
    let image = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("early", b"the first entry of the archive\n")
                .file("late", &incompressible(4 * 1024 * 1024, 9))
                .build(Compression::Gzip),
        )
        .build();
    Pusher::new(&registry)
        .push_image("progress/streamed", &image, "v1")
        .unwrap();
    let proxy = FaultProxy::in_front_of(&registry);
    proxy.add_rule(FaultRule::new(
        "GET",
        &format!("/blobs/{}", image.layers[0].digest),
        // Past the content store's 1 MiB write batch, so the bytes before
        // the stall reach the partial file.
        Fault::StallBody {
            after_bytes: 1536 * 1024,
            duration: Duration::from_secs(6),
        },
    ));
    let daemon = DaemonProcess::start();
    let reference = format!("{}/progress/streamed:v1", proxy.host());
    let mut admin = admin_client(&daemon).await;
    let pulling = tokio::spawn(async move { pull_with_progress(&mut admin, &reference, "").await });

    // While the blob is held back mid-download, its first file is already
    // on disk in the layer's extracting snapshot, and the blob is not stored.
    let extracting = daemon.state().join("snapshots/extracting");
    let blob = daemon.state().join(format!(
        "content/blobs/sha256/{}",
        image.layers[0].digest.trim_start_matches("sha256:")
    ));
    let deadline = std::time::Instant::now() + Duration::from_millis(5500);
    let early = loop {
        let found = find_named(&extracting, "early");
        if let Some(path) = found.first() {
            break path.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing was unpacked while the download was held: {}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        !blob.exists(),
        "the blob was stored before its bytes were all in"
    );
    assert_eq!(
        std::fs::read(&early).unwrap(),
        b"the first entry of the archive\n"
    );

    let received = pulling.await.unwrap();
    received.assert_complete(&image, admin::LayerState::Done);
    assert!(blob.is_file());
    let committed = find_named(&daemon.state().join("snapshots"), "late");
    assert_eq!(committed.len(), 1, "{committed:?}");
    assert!(!committed[0].starts_with(&extracting), "{committed:?}");
    assert!(find_named(&extracting, "early").is_empty());
}
