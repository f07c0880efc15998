//! Helpers shared by the integration tests: sample records built in code, and
//! (`registry`) the real Debian registry, images built in code, and pushing.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

pub mod daemon_process;
pub mod fault_proxy;
pub mod pull_node;
pub mod registry;

use std::collections::BTreeMap;

use cri_imaged::metadata::{Blob, BlobState, Image, ImageState};
use cri_imaged::oci::Descriptor;
use cri_imaged::reference::{Digest, ImageReference};

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// A valid sha256 digest that encodes `kind` and `number`, so that the digests
/// of different test objects never collide.
pub fn digest(kind: u8, number: u32) -> Digest {
    Digest::parse(&format!("sha256:{kind:02x}{number:062x}")).expect("valid digest")
}

pub fn reference(text: &str) -> ImageReference {
    ImageReference::parse_docker_ref(text).expect("valid test reference")
}

/// A ready image without layers, numbered `number`, with the blobs it needs.
pub fn ready_image(number: u32) -> (Image, Vec<Blob>) {
    let manifest = Descriptor::new(MANIFEST_TYPE, digest(0xa0, number), 400 + u64::from(number));
    let config = Descriptor::new(CONFIG_TYPE, digest(0xc0, number), 900);
    let image = Image {
        target: manifest.clone(),
        manifest: manifest.clone(),
        config: config.clone(),
        top_chain_id: None,
        size_bytes: manifest.size_bytes + config.size_bytes,
        state: ImageState::Ready,
        pinned: false,
        config_user: format!("{number}"),
        annotations: BTreeMap::from([("number".to_owned(), number.to_string())]),
        created_unix_ms: 1_000,
        updated_unix_ms: 1_000,
    };
    let blobs = vec![
        Blob {
            digest: manifest.digest.clone(),
            media_type: MANIFEST_TYPE.to_owned(),
            size_bytes: manifest.size_bytes,
            state: BlobState::Present,
            children: vec![config.digest.clone()],
            created_unix_ms: 1_000,
        },
        Blob {
            digest: config.digest.clone(),
            media_type: CONFIG_TYPE.to_owned(),
            size_bytes: config.size_bytes,
            state: BlobState::Present,
            children: vec![],
            created_unix_ms: 1_000,
        },
    ];
    (image, blobs)
}
