//! Domain types to and from the generated CRI messages.

use crate::api::proto::runtime::v1 as cri;
use crate::image_service::{FsUsage, ImageView};
use crate::registry::AuthConfigFields;

pub fn image(view: &ImageView) -> cri::Image {
    cri::Image {
        id: view.id.to_string(),
        repo_tags: view.repo_tags.clone(),
        repo_digests: view.repo_digests.clone(),
        size: view.size_bytes,
        uid: view.uid.map(|value| cri::Int64Value { value }),
        username: view.username.clone(),
        spec: Some(cri::ImageSpec {
            image: view.id.to_string(),
            annotations: view.annotations.clone().into_iter().collect(),
            ..cri::ImageSpec::default()
        }),
        pinned: view.pinned,
    }
}

pub fn auth(auth: Option<cri::AuthConfig>) -> AuthConfigFields {
    let auth = auth.unwrap_or_default();
    AuthConfigFields {
        username: auth.username,
        password: auth.password,
        auth: auth.auth,
        server_address: auth.server_address,
        identity_token: auth.identity_token,
        registry_token: auth.registry_token,
    }
}

pub fn filesystem_usage(usage: &FsUsage) -> cri::FilesystemUsage {
    cri::FilesystemUsage {
        timestamp: usage.timestamp_unix_ns,
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: usage.mountpoint.display().to_string(),
        }),
        used_bytes: Some(cri::UInt64Value {
            value: usage.used_bytes,
        }),
        inodes_used: Some(cri::UInt64Value {
            value: usage.inodes_used,
        }),
    }
}
