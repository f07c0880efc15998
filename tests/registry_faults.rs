//! Pulls from registries that misbehave: the real Debian registry behind a
//! [`FaultProxy`] that breaks one answer at a time. Each case asserts the
//! typed error the pull fails with (or that a retry, a resume or a fallback
//! made it succeed) and what the failure left in the store: nothing for a bad
//! blob, or, for a source failure kept for resume, an ingest record at the
//! exact offset received, which the next pull resumes with a `Range` request
//! the proxy saw.

use std::time::{Duration, Instant};

use cri_imaged::content_store::{BlobPaths, ContentError};
use cri_imaged::image_service::fetch::{FetchError, FetchLimits, FetchedImage, fetch_image};
use cri_imaged::metadata::{Ingest, LeaseResource};
use cri_imaged::oci::manifest::ManifestError;
use cri_imaged::oci::platform::Platform;
use cri_imaged::reference::{Digest, ImageReference};
use cri_imaged::registry::hosts::HostsDirectory;
use cri_imaged::registry::{
    DefaultEndpoints, EndpointResolver, RegistryClient, RegistryConfig, RegistryCredentials,
    RegistryError,
};

use crate::support::fault_proxy::{Fault, FaultProxy, FaultRule};
use crate::support::pull_node::{LEASE, Node};
use crate::support::registry::image_builder::sha256_digest;
use crate::support::registry::{
    BuiltImage, BuiltLayer, Compression, ImageBuilder, LayerBuilder, ManifestFormat, Pusher,
    RegistryAuth, RegistryOptions, TestRegistry, TokenServer,
};

const REPOSITORY: &str = "faults/app";
const TAG: &str = "v1";
/// Bytes of the big layer a mid-body fault lets through.
const CUT_BYTES: usize = 100_000;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

impl Node {
    async fn pull(
        &self,
        client: &RegistryClient,
        reference: &str,
        limits: &FetchLimits,
    ) -> Result<FetchedImage, FetchError> {
        let reference = ImageReference::parse_docker_ref(reference).unwrap();
        let session = client.session(&reference, RegistryCredentials::anonymous())?;
        fetch_image(
            &session,
            &self.content,
            &reference,
            &Platform::parse("linux/amd64").unwrap(),
            LEASE,
            limits,
        )
        .await
    }

    /// Nothing at all was stored: no record, no file, no partial file.
    fn assert_empty(&self) {
        let read = self.metadata.read().unwrap();
        let counts = read.counts().unwrap();
        assert_eq!((counts.blobs, counts.ingests), (0, 0), "{counts:?}");
        assert_eq!(read.lease_resources(LEASE).unwrap(), vec![]);
        for directory in [
            self.content.paths().ingest_directory(),
            self.content
                .paths()
                .content_directory()
                .join("blobs/sha256"),
        ] {
            let entries: Vec<_> = std::fs::read_dir(&directory)
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .collect();
            assert!(entries.is_empty(), "{entries:?}");
        }
    }

    /// `digest` left nothing behind: no blob or ingest record, no lease
    /// entry, no partial file, no blob file.
    fn assert_nothing_left_for(&self, digest: &Digest) {
        let read = self.metadata.read().unwrap();
        let key = BlobPaths::ingest_key(digest);
        assert_eq!(read.blob(digest).unwrap(), None, "blob record of {digest}");
        assert_eq!(
            read.ingest(&key).unwrap(),
            None,
            "ingest record of {digest}"
        );
        let resources = read.lease_resources(LEASE).unwrap();
        assert!(
            !resources.contains(&LeaseResource::Blob(digest.clone()))
                && !resources.contains(&LeaseResource::Ingest(key)),
            "{resources:?}"
        );
        assert!(!self.content.paths().partial(digest).exists());
        assert!(!self.content.paths().blob(digest).exists());
    }

    /// The ingest of `digest` was kept for a resume at `offset_bytes`, with a
    /// partial file holding exactly those bytes of `bytes`.
    fn assert_kept_for_resume(&self, digest: &Digest, bytes: &[u8], offset_bytes: u64) {
        let read = self.metadata.read().unwrap();
        let key = BlobPaths::ingest_key(digest);
        let ingest: Ingest = read.ingest(&key).unwrap().expect("the ingest is kept");
        assert_eq!(ingest.offset_bytes, offset_bytes);
        assert_eq!(ingest.expected_size_bytes, bytes.len() as u64);
        assert!(
            read.lease_resources(LEASE)
                .unwrap()
                .contains(&LeaseResource::Ingest(key)),
            "the lease protects the kept ingest"
        );
        assert_eq!(read.blob(digest).unwrap(), None);
        let partial = std::fs::read(self.content.paths().partial(digest)).unwrap();
        assert_eq!(partial, &bytes[..offset_bytes as usize]);
    }
}

/// A real registry holding the test image, and a proxy in front of it.
struct Scene {
    registry: TestRegistry,
    proxy: FaultProxy,
    image: BuiltImage,
}

impl Scene {
    fn start() -> Scene {
        let registry = TestRegistry::start();
        let image = test_image();
        Pusher::new(&registry)
            .push_image(REPOSITORY, &image, TAG)
            .unwrap();
        let proxy = FaultProxy::in_front_of(&registry);
        Scene {
            registry,
            proxy,
            image,
        }
    }

    /// The tag, through the proxy.
    fn reference(&self) -> String {
        format!("{}/{REPOSITORY}:{TAG}", self.proxy.host())
    }

    fn big_layer(&self) -> &BuiltLayer {
        &self.image.layers[1]
    }

    fn big_layer_path(&self) -> String {
        blob_path(&self.big_layer().digest)
    }
}

/// Two layers: a small gzip one, and an uncompressed one of about 300 KB so
/// that a fault at byte [`CUT_BYTES`] lands mid-body.
fn test_image() -> BuiltImage {
    ImageBuilder::new()
        .format(ManifestFormat::Oci)
        .layer(
            LayerBuilder::new()
                .file("etc/os-release", b"NAME=faults\n")
                .build(Compression::Gzip),
        )
        .layer(
            LayerBuilder::new()
                .file("bin/app", &pseudo_random_bytes(300_000))
                .build(Compression::None),
        )
        .build()
}

fn pseudo_random_bytes(length: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn blob_path(digest: &str) -> String {
    format!("/v2/{REPOSITORY}/blobs/{digest}")
}

fn manifest_path(reference: &str) -> String {
    format!("/v2/{REPOSITORY}/manifests/{reference}")
}

fn digest_of(text: &str) -> Digest {
    Digest::parse(text).unwrap()
}

/// Quick retries, so that retried cases stay fast.
fn fast_config() -> RegistryConfig {
    RegistryConfig {
        retries_max: 2,
        retry_backoff_initial_ms: 10,
        retry_backoff_max_ms: 50,
        ..RegistryConfig::default()
    }
}

fn client(config: RegistryConfig) -> RegistryClient {
    client_with(config, Box::new(DefaultEndpoints))
}

fn client_with(config: RegistryConfig, resolver: Box<dyn EndpointResolver>) -> RegistryClient {
    RegistryClient::new(config, resolver)
}

fn no_resumes() -> FetchLimits {
    FetchLimits {
        layer_resumes_max: 0,
        ..FetchLimits::default()
    }
}

fn registry_error(error: FetchError) -> RegistryError {
    match error {
        FetchError::Registry(error) => error,
        other => panic!("expected a registry error, got {other:?} ({other})"),
    }
}

fn content_error(error: FetchError) -> ContentError {
    match error {
        FetchError::Content(error) => error,
        other => panic!("expected a content store error, got {other:?} ({other})"),
    }
}

fn manifest_error(error: FetchError) -> ManifestError {
    match error {
        FetchError::Manifest { source, .. } => source,
        other => panic!("expected a manifest error, got {other:?} ({other})"),
    }
}

#[tokio::test]
async fn bad_manifest_answers_fail_with_typed_errors_and_store_nothing() {
    let scene = Scene::start();
    let other_image = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("other", b"other")
                .build(Compression::Gzip),
        )
        .build();
    let by_tag = scene.reference();
    let by_digest = format!(
        "{}/{REPOSITORY}@{}",
        scene.proxy.host(),
        scene.image.manifest_digest
    );
    let unknown_type = "application/vnd.example.thing.v1+json";
    let lying_digest = scene.image.config_digest.clone();

    type Check = Box<dyn Fn(FetchError)>;
    let cases: Vec<(&str, &str, FaultRule, Check)> = vec![
        (
            "not json",
            &by_tag,
            FaultRule::new(
                "GET",
                &manifest_path(TAG),
                Fault::respond_with(200, OCI_MANIFEST, "<html>surprise</html>"),
            ),
            Box::new(|error| {
                let error = manifest_error(error);
                assert!(
                    matches!(
                        error,
                        ManifestError::InvalidJson {
                            document: "manifest",
                            ..
                        }
                    ),
                    "{error:?}"
                );
            }),
        ),
        (
            "unknown media type",
            &by_tag,
            FaultRule::new(
                "GET",
                &manifest_path(TAG),
                Fault::respond_with(
                    200,
                    unknown_type,
                    format!(r#"{{"schemaVersion":2,"mediaType":"{unknown_type}"}}"#),
                ),
            ),
            Box::new(move |error| {
                assert_eq!(
                    manifest_error(error),
                    ManifestError::UnsupportedMediaType {
                        media_type: unknown_type.to_owned()
                    }
                );
            }),
        ),
        (
            "Docker-Content-Digest that lies",
            &by_tag,
            FaultRule::new(
                "GET",
                &manifest_path(TAG),
                Fault::set_header("Docker-Content-Digest", &lying_digest),
            ),
            Box::new({
                let lying_digest = lying_digest.clone();
                let real_digest = scene.image.manifest_digest.clone();
                move |error| match registry_error(error) {
                    RegistryError::DigestMismatch {
                        expected, received, ..
                    } => {
                        assert_eq!(expected.as_str(), lying_digest);
                        assert_eq!(received.as_str(), real_digest);
                    }
                    other => panic!("{other:?}"),
                }
            }),
        ),
        (
            "bytes of another manifest for the digest asked",
            &by_digest,
            FaultRule::new(
                "GET",
                &manifest_path(&scene.image.manifest_digest),
                Fault::Rewrite {
                    set_headers: vec![],
                    remove_headers: vec!["Docker-Content-Digest".to_owned()],
                    body: Some(other_image.manifest_bytes.clone()),
                },
            ),
            Box::new({
                let asked = scene.image.manifest_digest.clone();
                let served = other_image.manifest_digest.clone();
                move |error| match registry_error(error) {
                    RegistryError::DigestMismatch {
                        expected, received, ..
                    } => {
                        assert_eq!(expected.as_str(), asked);
                        assert_eq!(received.as_str(), served);
                    }
                    other => panic!("{other:?}"),
                }
            }),
        ),
    ];
    for (name, reference, rule, check) in cases {
        scene.proxy.clear_rules();
        scene.proxy.add_rule(rule);
        let node = Node::new();
        let error = node
            .pull(&client(fast_config()), reference, &FetchLimits::default())
            .await
            .expect_err(name);
        check(error);
        node.assert_empty();
    }

    // The same pulls pass once the proxy stops interfering.
    scene.proxy.clear_rules();
    let node = Node::new();
    node.pull(&client(fast_config()), &by_digest, &FetchLimits::default())
        .await
        .unwrap();
    node.assert_holds(&scene.image);
}

#[tokio::test]
async fn a_manifest_over_four_mebibytes_is_refused_with_or_without_a_content_length() {
    // The registry itself refuses to store a manifest over 4 MiB (distribution
    // 2.8 caps manifest uploads), so the proxy serves this one in its place.
    let scene = Scene::start();
    let huge = ImageBuilder::new()
        .annotation("padding", &"x".repeat(4 * 1024 * 1024))
        .layer(LayerBuilder::new().file("a", b"a").build(Compression::Gzip))
        .build();
    assert!(huge.manifest_size() > 4 * 1024 * 1024);
    for fault in [
        Fault::respond_with(200, OCI_MANIFEST, huge.manifest_bytes.clone()),
        // Without Content-Length the limit must stop the streamed read itself.
        Fault::CloseDelimitedBody {
            body: Some(huge.manifest_bytes.clone()),
        },
    ] {
        scene.proxy.clear_rules();
        scene.proxy.clear_requests();
        scene
            .proxy
            .add_rule(FaultRule::new("GET", &manifest_path(TAG), fault));
        let node = Node::new();
        let error = node
            .pull(
                &client(fast_config()),
                &scene.reference(),
                &FetchLimits::default(),
            )
            .await
            .unwrap_err();
        match registry_error(error) {
            RegistryError::TooLarge {
                what, limit_bytes, ..
            } => {
                assert_eq!(what, "manifest");
                assert_eq!(limit_bytes, 4 * 1024 * 1024);
            }
            other => panic!("{other:?}"),
        }
        node.assert_empty();
        assert_eq!(
            scene.proxy.count("GET", &manifest_path(TAG)),
            1,
            "a manifest over the limit is not asked for again"
        );
    }
}

#[tokio::test]
async fn a_short_long_or_corrupted_blob_fails_with_a_typed_error_and_leaves_nothing() {
    let scene = Scene::start();
    let layer = scene.big_layer().clone();
    let layer_digest = digest_of(&layer.digest);
    let size_bytes = layer.bytes.len() as u64;
    let mut corrupted = layer.bytes.clone();
    corrupted[1234] ^= 0xff;
    let corrupted_digest = sha256_digest(&corrupted);

    type Check<'a> = Box<dyn Fn(ContentError) + 'a>;
    let cases: Vec<(&str, Fault, Check)> = vec![
        (
            "shorter Content-Length",
            Fault::ShortBody { length_bytes: 1000 },
            Box::new(|error| match error {
                ContentError::SizeMismatch {
                    digest,
                    expected_size_bytes,
                    received_size_bytes,
                } => {
                    assert_eq!(digest, layer_digest);
                    assert_eq!(expected_size_bytes, size_bytes);
                    assert_eq!(received_size_bytes, 1000);
                }
                other => panic!("{other:?}"),
            }),
        ),
        (
            "longer body",
            Fault::AppendBytes {
                bytes: b"trailing bytes".to_vec(),
            },
            Box::new(|error| match error {
                ContentError::SizeMismatch {
                    digest,
                    expected_size_bytes,
                    received_size_bytes,
                } => {
                    assert_eq!(digest, layer_digest);
                    assert_eq!(expected_size_bytes, size_bytes);
                    assert!(received_size_bytes > size_bytes);
                }
                other => panic!("{other:?}"),
            }),
        ),
        (
            "corrupted byte",
            Fault::CorruptByte { offset_bytes: 1234 },
            Box::new(|error| match error {
                ContentError::DigestMismatch { digest, received } => {
                    assert_eq!(digest, layer_digest);
                    assert_eq!(received.as_str(), corrupted_digest);
                }
                other => panic!("{other:?}"),
            }),
        ),
    ];
    for (name, fault, check) in cases {
        scene.proxy.clear_rules();
        scene.proxy.clear_requests();
        scene
            .proxy
            .add_rule(FaultRule::new("GET", &scene.big_layer_path(), fault));
        let node = Node::new();
        let error = node
            .pull(
                &client(fast_config()),
                &scene.reference(),
                &FetchLimits::default(),
            )
            .await
            .expect_err(name);
        let message = error.to_string();
        assert!(message.contains(&layer.digest), "{name}: {message}");
        check(content_error(error));
        node.assert_nothing_left_for(&layer_digest);
        // A bad blob is not a transient failure: it is not downloaded again.
        assert_eq!(
            scene.proxy.count("GET", &scene.big_layer_path()),
            1,
            "{name}"
        );
    }

    // A corrupted config is caught before it is stored or parsed.
    scene.proxy.clear_rules();
    let config_path = blob_path(&scene.image.config_digest);
    scene.proxy.add_rule(FaultRule::new(
        "GET",
        &config_path,
        Fault::CorruptByte { offset_bytes: 0 },
    ));
    let node = Node::new();
    let error = node
        .pull(
            &client(fast_config()),
            &scene.reference(),
            &FetchLimits::default(),
        )
        .await
        .unwrap_err();
    match registry_error(error) {
        RegistryError::DigestMismatch {
            expected, received, ..
        } => {
            assert_eq!(expected.as_str(), scene.image.config_digest);
            assert_ne!(received, expected);
        }
        other => panic!("{other:?}"),
    }
    node.assert_nothing_left_for(&digest_of(&scene.image.config_digest));
}

#[tokio::test]
async fn endless_redirects_stop_at_redirects_max_and_a_plain_redirect_is_followed() {
    let scene = Scene::start();
    scene.proxy.add_rule(FaultRule::new(
        "GET",
        &manifest_path(TAG),
        Fault::RedirectLoop,
    ));
    let node = Node::new();
    let config = RegistryConfig {
        redirects_max: 3,
        ..fast_config()
    };
    let error = node
        .pull(&client(config), &scene.reference(), &FetchLimits::default())
        .await
        .unwrap_err();
    match registry_error(error) {
        RegistryError::TooManyRedirects {
            path,
            redirects_max,
            ..
        } => {
            assert_eq!(redirects_max, 3);
            assert_eq!(path, manifest_path(TAG));
        }
        other => panic!("{other:?}"),
    }
    // The first request and three redirects followed; then the client stops,
    // and does not retry.
    assert_eq!(scene.proxy.count("GET", &manifest_path(TAG)), 4);
    node.assert_empty();

    // Every blob redirected to the registry itself: followed, and stored.
    scene.proxy.clear_rules();
    scene.proxy.clear_requests();
    scene.proxy.add_rule(FaultRule::new(
        "GET",
        &format!("/v2/{REPOSITORY}/blobs/"),
        Fault::RedirectTo {
            base_url: scene.registry.base_url(),
        },
    ));
    let node = Node::new();
    node.pull(
        &client(fast_config()),
        &scene.reference(),
        &FetchLimits::default(),
    )
    .await
    .unwrap();
    node.assert_holds(&scene.image);
    assert_eq!(
        scene
            .proxy
            .count_matching("GET", &format!("/v2/{REPOSITORY}/blobs/")),
        3,
        "config and two layers, each redirected once"
    );
}

#[tokio::test]
async fn a_token_endpoint_answering_garbage_fails_with_token_response_invalid() {
    let tokens = TokenServer::builder().anonymous_pull(&[REPOSITORY]).start();
    let token_proxy = FaultProxy::start(tokens.address());
    let realm = format!("{}/token", token_proxy.base_url());
    // The registry's challenge names the proxy as its token endpoint.
    let registry = TestRegistry::start_with_options(RegistryOptions {
        auth: RegistryAuth::Token {
            realm: realm.clone(),
            service: tokens.service().to_owned(),
            issuer: tokens.issuer().to_owned(),
            root_certificate_bundle_pem: tokens.root_certificate_bundle_pem().to_owned(),
            minter: tokens.minter(),
        },
        tls: None,
    });
    let image = test_image();
    Pusher::new(&registry)
        .push_image(REPOSITORY, &image, TAG)
        .unwrap();
    let reference = format!("{}/{REPOSITORY}:{TAG}", registry.host());

    let cases: Vec<(Fault, &str)> = vec![
        (
            Fault::respond_with(200, "application/json", "<html>login</html>"),
            "not the expected JSON",
        ),
        (
            Fault::respond_with(200, "application/json", "{}"),
            "no token or access_token",
        ),
        (
            Fault::respond_with(200, "application/json", r#"{"token":""}"#),
            "no token or access_token",
        ),
        (
            Fault::respond_with(200, "application/json", vec![b' '; 2 * 1024 * 1024]),
            "over the 1048576-byte limit",
        ),
        (Fault::status(500), "status 500"),
        (
            Fault::ShortBody { length_bytes: 5 },
            "not the expected JSON",
        ),
    ];
    for (fault, detail_part) in cases {
        token_proxy.clear_rules();
        token_proxy.add_rule(FaultRule::new("GET", "/token", fault.clone()));
        let node = Node::new();
        let error = node
            .pull(&client(fast_config()), &reference, &FetchLimits::default())
            .await
            .unwrap_err();
        match registry_error(error) {
            RegistryError::TokenResponseInvalid {
                realm: named,
                detail,
            } => {
                assert_eq!(named, realm, "the realm, without its query");
                assert!(detail.contains(detail_part), "{fault:?}: {detail}");
            }
            other => panic!("{fault:?}: {other:?}"),
        }
        node.assert_empty();
    }

    // The endpoint recovers: the pull gets its token through the proxy.
    token_proxy.clear_rules();
    token_proxy.clear_requests();
    let node = Node::new();
    node.pull(&client(fast_config()), &reference, &FetchLimits::default())
        .await
        .unwrap();
    node.assert_holds(&image);
    assert_eq!(token_proxy.count("GET", "/token"), 1, "one token per pull");
}

/// A client that gives up on a silent server after 500 ms.
fn impatient_config() -> RegistryConfig {
    RegistryConfig {
        progress_timeout_ms: 500,
        retries_max: 1,
        ..fast_config()
    }
}

#[tokio::test]
async fn a_stalled_blob_fails_as_stalled_keeps_its_bytes_and_the_next_pull_resumes() {
    let scene = Scene::start();
    let layer = scene.big_layer().clone();
    let layer_digest = digest_of(&layer.digest);
    scene.proxy.add_rule(
        FaultRule::new(
            "GET",
            &scene.big_layer_path(),
            Fault::StallBody {
                after_bytes: CUT_BYTES,
                duration: Duration::from_secs(10),
            },
        )
        .first(1),
    );
    let node = Node::new();
    let started = Instant::now();
    let error = node
        .pull(
            &client(impatient_config()),
            &scene.reference(),
            &no_resumes(),
        )
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    match registry_error(error) {
        RegistryError::Stalled { what, .. } => assert!(what.contains(&layer.digest), "{what}"),
        other => panic!("{other:?}"),
    }
    node.assert_kept_for_resume(&layer_digest, &layer.bytes, CUT_BYTES as u64);

    let fetched = node
        .pull(
            &client(impatient_config()),
            &scene.reference(),
            &no_resumes(),
        )
        .await
        .unwrap();
    assert_eq!(
        scene.proxy.ranges("GET", &scene.big_layer_path()),
        vec![None, Some(format!("bytes={CUT_BYTES}-"))]
    );
    assert_eq!(fetched.layers[1].resumed_from_bytes, CUT_BYTES as u64);
    assert_eq!(
        fetched.layers[1].downloaded_bytes,
        (layer.bytes.len() - CUT_BYTES) as u64
    );
    node.assert_holds(&scene.image);
}

fn write_hosts_toml(hosts: &std::path::Path, registry_host: &str, contents: &str) {
    let directory = hosts.join(registry_host);
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::write(directory.join("hosts.toml"), contents).unwrap();
}

/// hosts.toml for `registry`: the `mirrors` in order, then the registry itself.
fn mirrors_then_upstream(registry: &TestRegistry, mirrors: &[&FaultProxy]) -> tempfile::TempDir {
    let hosts = tempfile::tempdir().unwrap();
    let mut contents = format!("server = \"{}\"\n", registry.base_url());
    for mirror in mirrors {
        contents.push_str(&format!(
            "\n[host.\"{}\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
            mirror.base_url()
        ));
    }
    write_hosts_toml(hosts.path(), registry.host(), &contents);
    hosts
}

#[tokio::test]
async fn a_mirror_that_stalls_before_answering_gives_way_to_the_next_mirror() {
    let scene = Scene::start();
    let healthy = FaultProxy::in_front_of(&scene.registry);
    let hosts = mirrors_then_upstream(&scene.registry, &[&scene.proxy, &healthy]);
    scene.proxy.add_rule(FaultRule::new(
        "GET",
        &scene.big_layer_path(),
        Fault::StallBeforeHeaders {
            duration: Duration::from_secs(10),
        },
    ));
    let node = Node::new();
    let fetched = node
        .pull(
            &client_with(
                impatient_config(),
                Box::new(HostsDirectory::new(hosts.path())),
            ),
            &format!("{}/{REPOSITORY}:{TAG}", scene.registry.host()),
            &FetchLimits::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        fetched.manifest.digest.as_str(),
        scene.image.manifest_digest
    );
    node.assert_holds(&scene.image);
    // The stalling mirror was tried (and retried) before the healthy one served the layer.
    assert_eq!(
        scene.proxy.count("GET", &scene.big_layer_path()),
        1 + impatient_config().retries_max as usize
    );
    assert_eq!(healthy.count("GET", &scene.big_layer_path()), 1);
}

#[tokio::test]
async fn a_mirror_that_stalls_mid_blob_gives_way_to_the_next_mirror() {
    let scene = Scene::start();
    let healthy = FaultProxy::in_front_of(&scene.registry);
    let hosts = mirrors_then_upstream(&scene.registry, &[&scene.proxy, &healthy]);
    // Headers, then silence: the stalling mirror never makes progress, so a
    // resume must try the next endpoint rather than go back to it.
    scene.proxy.add_rule(FaultRule::new(
        "GET",
        &scene.big_layer_path(),
        Fault::StallBody {
            after_bytes: 0,
            duration: Duration::from_secs(10),
        },
    ));
    let node = Node::new();
    let limits = FetchLimits {
        layer_resumes_max: 2,
        ..FetchLimits::default()
    };
    let result = node
        .pull(
            &client_with(
                impatient_config(),
                Box::new(HostsDirectory::new(hosts.path())),
            ),
            &format!("{}/{REPOSITORY}:{TAG}", scene.registry.host()),
            &limits,
        )
        .await;
    let asked_stalling = scene.proxy.count("GET", &scene.big_layer_path());
    let asked_healthy = healthy.count("GET", &scene.big_layer_path());
    result.unwrap_or_else(|error| {
        panic!(
            "{error}: the stalling mirror was asked for the layer {asked_stalling} times, \
             the healthy one {asked_healthy} times"
        )
    });
    node.assert_holds(&scene.image);
    assert!(asked_healthy >= 1);
    assert!(asked_stalling <= limits.layer_resumes_max as usize + 1);
}

#[tokio::test]
async fn server_errors_and_rate_limits_that_recover_are_retried() {
    let scene = Scene::start();
    let layer_path = scene.big_layer_path();
    let cases: Vec<(String, Fault, u32)> = vec![
        (manifest_path(TAG), Fault::status(500), 2),
        (manifest_path(TAG), Fault::status(502), 1),
        (manifest_path(TAG), Fault::status(503), 2),
        (manifest_path(TAG), Fault::too_many_requests(0), 2),
        (layer_path.clone(), Fault::status(500), 2),
        (layer_path.clone(), Fault::status(503), 1),
        (layer_path.clone(), Fault::too_many_requests(0), 2),
    ];
    for (path, fault, failures) in cases {
        scene.proxy.clear_rules();
        scene.proxy.clear_requests();
        scene
            .proxy
            .add_rule(FaultRule::new("GET", &path, fault.clone()).first(failures));
        let node = Node::new();
        node.pull(
            &client(fast_config()),
            &scene.reference(),
            &FetchLimits::default(),
        )
        .await
        .unwrap_or_else(|error| panic!("{fault:?} on {path}: {error}"));
        node.assert_holds(&scene.image);
        assert_eq!(
            scene.proxy.count("GET", &path),
            failures as usize + 1,
            "{fault:?} on {path}"
        );
    }
}

#[tokio::test]
async fn retry_after_is_honoured_up_to_the_backoff_cap() {
    let scene = Scene::start();
    scene
        .proxy
        .add_rule(FaultRule::new("GET", &manifest_path(TAG), Fault::too_many_requests(1)).first(1));
    let config = RegistryConfig {
        retry_backoff_initial_ms: 10,
        retry_backoff_max_ms: 5_000,
        ..fast_config()
    };
    let node = Node::new();
    let started = Instant::now();
    node.pull(&client(config), &scene.reference(), &FetchLimits::default())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    // The backoff alone would have waited 10 ms.
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert_eq!(scene.proxy.count("GET", &manifest_path(TAG)), 2);
}

#[tokio::test]
async fn server_errors_that_never_recover_fail_after_retries_max() {
    let scene = Scene::start();
    let attempts = fast_config().retries_max as usize + 1;
    for status in [500, 503] {
        scene.proxy.clear_rules();
        scene.proxy.clear_requests();
        scene.proxy.add_rule(FaultRule::new(
            "GET",
            &manifest_path(TAG),
            Fault::Respond {
                status,
                headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
                body: br#"{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}"#.to_vec(),
            },
        ));
        let node = Node::new();
        let error = node
            .pull(
                &client(fast_config()),
                &scene.reference(),
                &FetchLimits::default(),
            )
            .await
            .unwrap_err();
        match registry_error(error) {
            RegistryError::UnexpectedStatus {
                status: answered,
                path,
                code,
                message,
                ..
            } => {
                assert_eq!(answered, status);
                assert_eq!(path, manifest_path(TAG));
                assert_eq!(code.as_deref(), Some("UNAVAILABLE"));
                assert_eq!(message.as_deref(), Some("try later"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(scene.proxy.count("GET", &manifest_path(TAG)), attempts);
        node.assert_empty();
    }

    scene.proxy.clear_rules();
    scene.proxy.clear_requests();
    scene.proxy.add_rule(FaultRule::new(
        "GET",
        &manifest_path(TAG),
        Fault::too_many_requests(0),
    ));
    let node = Node::new();
    let error = node
        .pull(
            &client(fast_config()),
            &scene.reference(),
            &FetchLimits::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(registry_error(error), RegistryError::RateLimited { ref path, .. } if *path == manifest_path(TAG))
    );
    assert_eq!(scene.proxy.count("GET", &manifest_path(TAG)), attempts);
    node.assert_empty();
}

#[tokio::test]
async fn a_blob_whose_every_request_fails_gives_up_after_retries_max() {
    let scene = Scene::start();
    let layer = scene.big_layer().clone();
    scene.proxy.add_rule(FaultRule::new(
        "GET",
        &scene.big_layer_path(),
        Fault::status(500),
    ));
    let node = Node::new();
    let error = node
        .pull(
            &client(fast_config()),
            &scene.reference(),
            &FetchLimits::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        registry_error(error),
        RegistryError::UnexpectedStatus { status: 500, .. }
    ));
    // Nothing arrived; the ingest is kept at offset 0 like any source failure.
    node.assert_kept_for_resume(&digest_of(&layer.digest), &layer.bytes, 0);
    // One request and retries_max retries, as for a manifest. The layer's
    // resume loop must not multiply them: a resume is for a stream that
    // broke after making progress, not for a request whose retries ran out.
    assert_eq!(
        scene.proxy.count("GET", &scene.big_layer_path()),
        fast_config().retries_max as usize + 1
    );
}

#[tokio::test]
async fn a_connection_cut_mid_blob_is_resumed_with_a_range_request() {
    let scene = Scene::start();
    let layer = scene.big_layer().clone();
    let layer_digest = digest_of(&layer.digest);
    let expected_ranges = vec![None, Some(format!("bytes={CUT_BYTES}-"))];
    for fault in [
        Fault::ResetMidBody {
            after_bytes: CUT_BYTES,
        },
        Fault::CloseMidBody {
            after_bytes: CUT_BYTES,
        },
    ] {
        // Within one pull: the layer resumes where the cut left it.
        scene.proxy.clear_rules();
        scene.proxy.clear_requests();
        scene
            .proxy
            .add_rule(FaultRule::new("GET", &scene.big_layer_path(), fault.clone()).first(1));
        let node = Node::new();
        let fetched = node
            .pull(
                &client(fast_config()),
                &scene.reference(),
                &FetchLimits::default(),
            )
            .await
            .unwrap_or_else(|error| panic!("{fault:?}: {error}"));
        assert_eq!(
            scene.proxy.ranges("GET", &scene.big_layer_path()),
            expected_ranges,
            "{fault:?}"
        );
        assert_eq!(fetched.layers[1].resumed_from_bytes, CUT_BYTES as u64);
        node.assert_holds(&scene.image);

        // Across pulls: the first fails and keeps the bytes, the next resumes.
        scene.proxy.clear_rules();
        scene.proxy.clear_requests();
        scene
            .proxy
            .add_rule(FaultRule::new("GET", &scene.big_layer_path(), fault.clone()).first(1));
        let node = Node::new();
        let error = node
            .pull(&client(fast_config()), &scene.reference(), &no_resumes())
            .await
            .unwrap_err();
        let error = registry_error(error);
        assert!(
            matches!(error, RegistryError::Unreachable { .. }),
            "{fault:?}: {error:?}"
        );
        assert!(error.is_transient());
        node.assert_kept_for_resume(&layer_digest, &layer.bytes, CUT_BYTES as u64);
        let fetched = node
            .pull(&client(fast_config()), &scene.reference(), &no_resumes())
            .await
            .unwrap();
        assert_eq!(
            scene.proxy.ranges("GET", &scene.big_layer_path()),
            expected_ranges,
            "{fault:?}"
        );
        assert_eq!(fetched.layers[1].resumed_from_bytes, CUT_BYTES as u64);
        assert_eq!(
            fetched.layers[1].downloaded_bytes,
            (layer.bytes.len() - CUT_BYTES) as u64
        );
        node.assert_holds(&scene.image);
    }
}
