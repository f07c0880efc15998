//! Domain types to and from the generated CRI messages.

use crate::api::proto::runtime::v1 as cri;
use crate::image_service::{FsUsage, ImageView};
use crate::registry::AuthConfigFields;

pub fn image(view: &ImageView) -> cri::Image {
    into_image(view.clone())
}

/// As [`image`], moving the view's strings instead of copying them: a
/// listing of 10,000 images otherwise copies every name twice.
pub fn into_image(view: ImageView) -> cri::Image {
    let id = view.id.to_string();
    cri::Image {
        id: id.clone(),
        repo_tags: view.repo_tags,
        repo_digests: view.repo_digests,
        size: view.size_bytes,
        uid: view.uid.map(|value| cri::Int64Value { value }),
        username: view.username,
        spec: Some(cri::ImageSpec {
            image: id,
            annotations: view.annotations.into_iter().collect(),
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
