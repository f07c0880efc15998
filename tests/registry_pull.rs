//! Pulls from the real Debian registry into the content store: tags, digests,
//! indexes with platform choice, Docker and OCI formats, every auth form (basic,
//! bearer via the token flow, OAuth2 identity tokens, registry tokens), TLS
//! hosts configured through `certs.d`, mirrors, and registries that misbehave.

use std::path::Path;

use cri_imaged::image_service::fetch::{FetchError, FetchLimits, FetchedImage, fetch_image};
use cri_imaged::oci::platform::Platform;
use cri_imaged::reference::ImageReference;
use cri_imaged::registry::hosts::HostsDirectory;
use cri_imaged::registry::{
    AuthConfigFields, DefaultEndpoints, EndpointResolver, RegistryClient, RegistryConfig,
    RegistryCredentials, RegistryError,
};

use crate::support::pull_node::{LEASE, Node};
use crate::support::registry::{
    BuiltImage, Compression, ImageBuilder, IndexBuilder, LayerBuilder, ManifestFormat,
    Platform as TestPlatform, Pusher, RepositoryAccess, TestCertificates, TestRegistry,
    TokenServer,
};

impl Node {
    async fn pull_with(
        &self,
        client: &RegistryClient,
        reference: &str,
        credentials: RegistryCredentials,
        platform: &Platform,
    ) -> Result<FetchedImage, FetchError> {
        let reference = ImageReference::parse_docker_ref(reference).unwrap();
        let session = client.session(&reference, credentials)?;
        fetch_image(
            &session,
            &self.content,
            &reference,
            platform,
            LEASE,
            &FetchLimits::default(),
        )
        .await
    }

    fn blob_count(&self) -> u64 {
        self.metadata.read().unwrap().counts().unwrap().blobs
    }
}

fn client() -> RegistryClient {
    client_with(Box::new(DefaultEndpoints))
}

fn client_with(resolver: Box<dyn EndpointResolver>) -> RegistryClient {
    RegistryClient::new(
        RegistryConfig {
            retry_backoff_initial_ms: 10,
            retry_backoff_max_ms: 50,
            ..RegistryConfig::default()
        },
        resolver,
    )
}

fn linux_amd64() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

fn two_layer_image(format: ManifestFormat, compression: Compression) -> BuiltImage {
    ImageBuilder::new()
        .format(format)
        .user("1000:1000")
        .layer(
            LayerBuilder::new()
                .directory("etc")
                .file("etc/os-release", b"NAME=test\n")
                .build(compression),
        )
        .layer(
            LayerBuilder::new()
                .file("bin/app", &vec![7u8; 300_000])
                .build(compression),
        )
        .build()
}

fn user_password(user: &str, password: &str) -> RegistryCredentials {
    RegistryCredentials::from_auth_config(&AuthConfigFields {
        username: user.to_owned(),
        password: password.to_owned(),
        ..AuthConfigFields::default()
    })
    .unwrap()
}

#[tokio::test]
async fn a_tagged_oci_image_is_pulled_verified_and_recorded() {
    let registry = TestRegistry::start();
    let image = two_layer_image(ManifestFormat::Oci, Compression::Gzip);
    Pusher::new(&registry)
        .push_image("team/app", &image, "v1")
        .unwrap();
    let node = Node::new();
    let fetched = node
        .pull_with(
            &client(),
            &format!("{}/team/app:v1", registry.host()),
            RegistryCredentials::anonymous(),
            &linux_amd64(),
        )
        .await
        .unwrap();
    assert_eq!(fetched.manifest.digest.as_str(), image.manifest_digest);
    assert_eq!(fetched.target, fetched.manifest);
    assert_eq!(fetched.config.user, "1000:1000");
    assert_eq!(fetched.layers.len(), 2);
    assert_eq!(
        fetched.downloaded_bytes(),
        image
            .layers
            .iter()
            .map(|l| l.bytes.len() as u64)
            .sum::<u64>()
    );
    node.assert_holds(&image);
    assert_eq!(node.blob_count(), 4);

    // A second pull downloads nothing.
    let again = node
        .pull_with(
            &client(),
            &format!("{}/team/app:v1", registry.host()),
            RegistryCredentials::anonymous(),
            &linux_amd64(),
        )
        .await
        .unwrap();
    assert_eq!(again.downloaded_bytes(), 0);
    assert!(again.layers.iter().all(|layer| layer.already_present));
}

#[tokio::test]
async fn docker_schema2_zstd_and_digest_references_are_pulled() {
    let registry = TestRegistry::start();
    let docker = two_layer_image(ManifestFormat::Docker, Compression::Gzip);
    let zstd = two_layer_image(ManifestFormat::Oci, Compression::Zstd);
    let pusher = Pusher::new(&registry);
    pusher
        .push_image("library/docker", &docker, "latest")
        .unwrap();
    pusher.push_image_by_digest("library/zstd", &zstd).unwrap();
    let node = Node::new();
    node.pull_with(
        &client(),
        &format!("{}/library/docker", registry.host()),
        RegistryCredentials::anonymous(),
        &linux_amd64(),
    )
    .await
    .unwrap();
    node.assert_holds(&docker);
    let by_digest = format!("{}/library/zstd@{}", registry.host(), zstd.manifest_digest);
    let fetched = node
        .pull_with(
            &client(),
            &by_digest,
            RegistryCredentials::anonymous(),
            &linux_amd64(),
        )
        .await
        .unwrap();
    assert_eq!(fetched.manifest.digest.as_str(), zstd.manifest_digest);
    node.assert_holds(&zstd);
}

#[tokio::test]
async fn an_index_resolves_to_the_wanted_platform_and_says_what_it_offers_otherwise() {
    let registry = TestRegistry::start();
    let amd64 = ImageBuilder::new()
        .platform(TestPlatform::linux_amd64())
        .layer(
            LayerBuilder::new()
                .file("arch", b"amd64")
                .build(Compression::Gzip),
        )
        .build();
    let arm64 = ImageBuilder::new()
        .platform(TestPlatform::linux_arm64())
        .layer(
            LayerBuilder::new()
                .file("arch", b"arm64")
                .build(Compression::Gzip),
        )
        .build();
    let index = IndexBuilder::new(ManifestFormat::Oci)
        .manifest(&amd64)
        .manifest(&arm64)
        .attestation_for(&amd64)
        .build();
    Pusher::new(&registry)
        .push_index("multi/arch", &index, "v1")
        .unwrap();
    let reference = format!("{}/multi/arch:v1", registry.host());

    let node = Node::new();
    let fetched = node
        .pull_with(
            &client(),
            &reference,
            RegistryCredentials::anonymous(),
            &Platform::parse("linux/arm64").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(fetched.target.digest.as_str(), index.digest);
    assert_eq!(fetched.manifest.digest.as_str(), arm64.manifest_digest);
    node.assert_holds(&arm64);
    let index_blob = node
        .metadata
        .read()
        .unwrap()
        .blob(&fetched.target.digest)
        .unwrap()
        .expect("the index is stored");
    assert_eq!(
        index_blob.children.len(),
        3,
        "every index entry is a gc edge"
    );

    let error = node
        .pull_with(
            &client(),
            &reference,
            RegistryCredentials::anonymous(),
            &Platform::parse("linux/s390x").unwrap(),
        )
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, FetchError::NoMatchingPlatform { .. }),
        "{message}"
    );
    assert!(
        message.contains("linux/amd64") && message.contains("linux/arm64"),
        "{message}"
    );
}

#[tokio::test]
async fn basic_auth_works_with_every_credential_form_and_refuses_the_rest() {
    let registry = TestRegistry::start_with_htpasswd("alice", "correct horse");
    let image = two_layer_image(ManifestFormat::Oci, Compression::Gzip);
    Pusher::new(&registry)
        .push_image("private/app", &image, "v1")
        .unwrap();
    let reference = format!("{}/private/app:v1", registry.host());
    let auth = base64_of("alice:correct horse\0");

    for credentials in [
        user_password("alice", "correct horse"),
        RegistryCredentials::from_auth_config(&AuthConfigFields {
            auth,
            ..Default::default()
        })
        .unwrap(),
        RegistryCredentials::from_auth_config(&AuthConfigFields {
            username: "alice".into(),
            password: "correct horse".into(),
            server_address: registry.host().to_owned(),
            ..Default::default()
        })
        .unwrap(),
    ] {
        let node = Node::new();
        node.pull_with(&client(), &reference, credentials, &linux_amd64())
            .await
            .unwrap();
        node.assert_holds(&image);
    }

    for (credentials, why) in [
        (
            RegistryCredentials::anonymous(),
            "authentication is required",
        ),
        (
            user_password("alice", "wrong password"),
            "the credentials were rejected",
        ),
        (
            // Issued for another registry: never sent here.
            RegistryCredentials::from_auth_config(&AuthConfigFields {
                username: "alice".into(),
                password: "correct horse".into(),
                server_address: "quay.io".into(),
                ..Default::default()
            })
            .unwrap(),
            "authentication is required",
        ),
    ] {
        let node = Node::new();
        let error = node
            .pull_with(&client(), &reference, credentials, &linux_amd64())
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(
                error,
                FetchError::Registry(RegistryError::Unauthorized { .. })
            ),
            "{message}"
        );
        assert!(
            message.contains(why) && message.contains("private/app"),
            "{message}"
        );
        assert!(
            !message.contains("correct horse") && !message.contains("wrong password"),
            "{message}"
        );
        assert_eq!(node.blob_count(), 0);
    }
}

#[tokio::test]
async fn the_bearer_token_flow_serves_every_credential_form_with_one_token_per_pull() {
    let tokens = TokenServer::builder()
        .user("bob", "hunter2", &["private/app"])
        .identity_token("refresh-token-of-bob", "bob")
        .start();
    let registry = TestRegistry::start_with_token_auth(&tokens);
    let image = two_layer_image(ManifestFormat::Oci, Compression::Gzip);
    Pusher::new(&registry)
        .push_image("private/app", &image, "v1")
        .unwrap();
    let reference = format!("{}/private/app:v1", registry.host());

    // username/password: GET with basic credentials, one token for the whole pull.
    tokens.reset_counts();
    let node = Node::new();
    node.pull_with(
        &client(),
        &reference,
        user_password("bob", "hunter2"),
        &linux_amd64(),
    )
    .await
    .unwrap();
    node.assert_holds(&image);
    assert_eq!(tokens.counts().get_granted, 1, "{:?}", tokens.counts());

    // identity token: the OAuth2 POST form.
    tokens.reset_counts();
    let identity = RegistryCredentials::from_auth_config(&AuthConfigFields {
        identity_token: "refresh-token-of-bob".into(),
        ..Default::default()
    })
    .unwrap();
    let node = Node::new();
    node.pull_with(&client(), &reference, identity, &linux_amd64())
        .await
        .unwrap();
    assert_eq!(tokens.counts().post_granted, 1, "{:?}", tokens.counts());
    assert_eq!(tokens.counts().get_total(), 0);

    // registry token: sent as is, the token endpoint never hears of it.
    tokens.reset_counts();
    let minted = tokens.mint_token("bob", &[RepositoryAccess::new("private/app", &["pull"])]);
    let registry_token = RegistryCredentials::from_auth_config(&AuthConfigFields {
        registry_token: minted,
        ..Default::default()
    })
    .unwrap();
    let node = Node::new();
    node.pull_with(&client(), &reference, registry_token, &linux_amd64())
        .await
        .unwrap();
    node.assert_holds(&image);
    assert_eq!(tokens.counts().total(), 0);

    // Refusals: anonymous, a wrong password, a token for another repository.
    for credentials in [
        RegistryCredentials::anonymous(),
        user_password("bob", "wrong"),
        RegistryCredentials::from_auth_config(&AuthConfigFields {
            registry_token: tokens
                .mint_token("bob", &[RepositoryAccess::new("other/repo", &["pull"])]),
            ..Default::default()
        })
        .unwrap(),
    ] {
        let node = Node::new();
        let error = node
            .pull_with(&client(), &reference, credentials, &linux_amd64())
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                FetchError::Registry(RegistryError::Unauthorized { .. })
            ),
            "{error}"
        );
        assert!(!error.to_string().contains("hunter2"));
        assert_eq!(node.blob_count(), 0);
    }
}

fn write_hosts_toml(hosts: &Path, registry_host: &str, contents: &str) {
    let directory = hosts.join(registry_host);
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::write(directory.join("hosts.toml"), contents).unwrap();
}

#[tokio::test]
async fn tls_registries_are_reached_through_certs_d_with_ca_client_certificates_or_skip_verify() {
    let certificates = TestCertificates::generate();
    let registry = TestRegistry::start_with_tls(&certificates, true);
    let image = two_layer_image(ManifestFormat::Oci, Compression::Gzip);
    Pusher::new(&registry)
        .push_image("secure/app", &image, "v1")
        .unwrap();
    let reference = format!("{}/secure/app:v1", registry.host());
    let hosts = tempfile::tempdir().unwrap();
    let server = format!("https://{}", registry.host());

    // The test CA and the client certificate: works.
    write_hosts_toml(
        hosts.path(),
        registry.host(),
        &format!(
            "server = \"{server}\"\nca = \"{}\"\nclient = [[\"{}\", \"{}\"]]\n",
            certificates.ca_certificate_path().display(),
            certificates.client_certificate_path().display(),
            certificates.client_key_path().display(),
        ),
    );
    let node = Node::new();
    node.pull_with(
        &client_with(Box::new(HostsDirectory::new(hosts.path()))),
        &reference,
        RegistryCredentials::anonymous(),
        &linux_amd64(),
    )
    .await
    .unwrap();
    node.assert_holds(&image);

    // skip_verify instead of the CA, still presenting the client certificate: works.
    write_hosts_toml(
        hosts.path(),
        registry.host(),
        &format!(
            "server = \"{server}\"\nskip_verify = true\nclient = [[\"{}\", \"{}\"]]\n",
            certificates.client_certificate_path().display(),
            certificates.client_key_path().display(),
        ),
    );
    let node = Node::new();
    node.pull_with(
        &client_with(Box::new(HostsDirectory::new(hosts.path()))),
        &reference,
        RegistryCredentials::anonymous(),
        &linux_amd64(),
    )
    .await
    .unwrap();

    // The CA but no client certificate: the server refuses the handshake.
    write_hosts_toml(
        hosts.path(),
        registry.host(),
        &format!(
            "server = \"{server}\"\nca = \"{}\"\n",
            certificates.ca_certificate_path().display()
        ),
    );
    let node = Node::new();
    let error = node
        .pull_with(
            &client_with(Box::new(HostsDirectory::new(hosts.path()))),
            &reference,
            RegistryCredentials::anonymous(),
            &linux_amd64(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            FetchError::Registry(RegistryError::Unreachable { .. })
        ),
        "{error}"
    );

    // Neither CA nor skip_verify: the certificate is not trusted.
    write_hosts_toml(
        hosts.path(),
        registry.host(),
        &format!("server = \"{server}\"\n"),
    );
    let error = node
        .pull_with(
            &client_with(Box::new(HostsDirectory::new(hosts.path()))),
            &reference,
            RegistryCredentials::anonymous(),
            &linux_amd64(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            FetchError::Registry(RegistryError::Unreachable { .. })
        ),
        "{error}"
    );
    assert_eq!(node.blob_count(), 0);
}

#[tokio::test]
async fn mirrors_are_tried_in_order_and_upstream_serves_what_they_lack() {
    let upstream = TestRegistry::start();
    let empty_mirror = TestRegistry::start();
    let image = two_layer_image(ManifestFormat::Oci, Compression::Gzip);
    Pusher::new(&upstream)
        .push_image("team/app", &image, "v1")
        .unwrap();
    // A port where nothing listens: a dead mirror.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_address = dead.local_addr().unwrap();
    drop(dead);

    let hosts = tempfile::tempdir().unwrap();
    write_hosts_toml(
        hosts.path(),
        upstream.host(),
        &format!(
            "server = \"http://{}\"\n\n[host.\"http://{dead_address}\"]\ncapabilities = [\"pull\", \"resolve\"]\n\n[host.\"http://{}\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
            upstream.host(),
            empty_mirror.host(),
        ),
    );
    let node = Node::new();
    let fetched = node
        .pull_with(
            &client_with(Box::new(HostsDirectory::new(hosts.path()))),
            &format!("{}/team/app:v1", upstream.host()),
            RegistryCredentials::anonymous(),
            &linux_amd64(),
        )
        .await
        .unwrap();
    assert_eq!(fetched.manifest.digest.as_str(), image.manifest_digest);
    node.assert_holds(&image);
    // The empty mirror was asked first and answered 404.
    assert!(
        empty_mirror.log_text().contains("team/app/manifests/v1"),
        "{}",
        empty_mirror.log_text()
    );
}

#[tokio::test]
async fn a_missing_manifest_and_a_corrupted_blob_fail_clearly_and_leave_nothing() {
    let registry = TestRegistry::start();
    let node = Node::new();
    let error = node
        .pull_with(
            &client(),
            &format!("{}/team/none:v1", registry.host()),
            RegistryCredentials::anonymous(),
            &linux_amd64(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            FetchError::Registry(RegistryError::ManifestNotFound { .. })
        ),
        "{error}"
    );
    assert!(error.to_string().contains("team/none:v1"), "{error}");

    let image = two_layer_image(ManifestFormat::Oci, Compression::Gzip);
    Pusher::new(&registry)
        .push_image("team/broken", &image, "v1")
        .unwrap();
    // Damage the second layer inside the registry's storage, same length.
    let damaged = &image.layers[1];
    let path = registry.blob_data_path(&damaged.digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let error = node
        .pull_with(
            &client(),
            &format!("{}/team/broken:v1", registry.host()),
            RegistryCredentials::anonymous(),
            &linux_amd64(),
        )
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&damaged.digest), "{message}");
    let damaged_digest = cri_imaged::reference::Digest::parse(&damaged.digest).unwrap();
    let read = node.metadata.read().unwrap();
    assert_eq!(read.blob(&damaged_digest).unwrap(), None);
    assert!(
        read.ingests().unwrap().is_empty(),
        "no ingest record is left"
    );
    assert!(
        !node.content.paths().partial(&damaged_digest).exists(),
        "no partial file is left"
    );
    assert!(!node.content.paths().blob(&damaged_digest).exists());
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
