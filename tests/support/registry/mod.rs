//! The registry side of the integration tests: a real registry (Debian's
//! `docker-registry`, distribution 2.8) on `127.0.0.1`, the images pushed to
//! it, and the pieces its auth and TLS modes need. Nothing here reaches past
//! the loopback interface.
//!
//! - `server`: [`TestRegistry`] starts and stops the registry process in one of
//!   its modes (anonymous, htpasswd, token, TLS).
//! - `token_server`: [`TokenServer`], the Docker token endpoint that token mode
//!   points at, with a configurable policy and request counters.
//! - `certificates`: [`TestCertificates`], a test CA with server and client
//!   certificates for TLS mode.
//! - `image_builder`: deterministic layers, images and indexes built in code.
//! - `push`: [`Pusher`] uploads built images and deletes blobs and manifests.
//!
//! A typical test:
//!
//! ```text
//! let registry = TestRegistry::start();
//! let layer = LayerBuilder::new().file("etc/hello", b"hi").build(Compression::Gzip);
//! let image = ImageBuilder::new().layer(layer).build();
//! Pusher::new(&registry).push_image("library/hello", &image, "latest").expect("push");
//! let reference = format!("{}/library/hello:latest", registry.host());
//! ```

// Each test binary uses its own subset of the harness, and of the
// re-exports below.
#![allow(dead_code, unused_imports)]

pub mod certificates;
pub mod image_builder;
pub mod push;
pub mod server;
pub mod token_server;

pub use certificates::TestCertificates;
pub use image_builder::{
    BuiltImage, BuiltIndex, BuiltLayer, Compression, EntryAttributes, EntryKind, ImageBuilder,
    IndexBuilder, IndexChild, LayerBuilder, LayerEntry, LongNameFormat, MANIFEST_ACCEPT,
    ManifestFormat, Platform,
};
pub use push::{PushAuth, PushError, Pusher};
pub use server::{RegistryAuth, RegistryOptions, RegistryTls, TestRegistry};
pub use token_server::{
    RepositoryAccess, TokenPolicy, TokenRequestCounts, TokenRequestMethod, TokenRequestOutcome,
    TokenRequestRecord, TokenServer, TokenUser,
};
