//! Fuzzes the manifest, index and image config decoders, which read bytes
//! straight from registries. The first input byte picks the `Content-Type`
//! (and, with its top bit, small limits so that every limit is reachable);
//! the rest is the body. Besides "never panics", it checks what callers rely
//! on when decoding succeeds: every count is within its limit, the config is an
//! image config, every layer type is pullable, the reported media type agrees
//! with a manifest `Content-Type`, decoding is deterministic, and platform
//! selection over the decoded index only returns valid, distinct positions.

#![no_main]

use cri_imaged::oci::manifest::{
    Manifest, ManifestKind, ManifestLimits, decode_config, decode_manifest,
    is_image_config_media_type, layer_compression, manifest_kind,
};
use cri_imaged::oci::platform::{Platform, PlatformMatcher};
use libfuzzer_sys::fuzz_target;

/// Content types a registry might send: none, each manifest type, generic
/// ones, schema 1, parameters, an unknown type, and an empty value.
const CONTENT_TYPES: [Option<&str>; 12] = [
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/json"),
    Some("text/plain; charset=utf-8"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("application/octet-stream"),
    Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
    Some("application/x-unknown"),
    Some(""),
];

/// Small enough that short inputs can exceed every limit.
const SMALL_LIMITS: ManifestLimits = ManifestLimits {
    manifest_bytes_max: 4096,
    config_bytes_max: 4096,
    layers_max: 2,
    index_entries_max: 3,
    annotations_max: 1,
    labels_max: 1,
};

/// Longer than any message the decoders build from bounded echoes.
const MESSAGE_BYTES_MAX: usize = 2048;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector & 0x7f) % CONTENT_TYPES.len()];
    let limits = if selector & 0x80 != 0 {
        SMALL_LIMITS
    } else {
        ManifestLimits::default()
    };

    let decoded = decode_manifest(body, content_type, &limits);
    assert_eq!(decode_manifest(body, content_type, &limits), decoded);
    match &decoded {
        Ok(manifest) => {
            assert!(body.len() as u64 <= limits.manifest_bytes_max);
            check_manifest(manifest, content_type, &limits);
        }
        Err(error) => check_message(&error.to_string()),
    }

    match decode_config(body, &limits) {
        Ok(config) => {
            assert!(body.len() as u64 <= limits.config_bytes_max);
            assert!(config.diff_ids.len() <= limits.layers_max);
            assert!(config.labels.len() <= limits.labels_max);
            let normalized = config.platform().normalized();
            assert_eq!(normalized.normalized(), normalized);
        }
        Err(error) => check_message(&error.to_string()),
    }
});

fn check_manifest(manifest: &Manifest, content_type: Option<&str>, limits: &ManifestLimits) {
    let kind = manifest_kind(manifest.media_type());
    // A manifest Content-Type decides the reported type, parameters aside.
    if let Some(content_type) = content_type {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if manifest_kind(essence).is_some() {
            assert_eq!(manifest.media_type(), essence);
        }
    }
    match manifest {
        Manifest::Image(image) => {
            assert_eq!(kind, Some(ManifestKind::Image));
            assert!(image.layers.len() <= limits.layers_max);
            assert!(image.annotations.len() <= limits.annotations_max);
            assert!(is_image_config_media_type(&image.config.media_type));
            assert!(image.config.size_bytes <= i64::MAX as u64);
            for layer in &image.layers {
                assert!(layer_compression(&layer.media_type).is_some());
                assert!(layer.size_bytes <= i64::MAX as u64);
            }
        }
        Manifest::Index(index) => {
            assert_eq!(kind, Some(ManifestKind::Index));
            assert!(index.manifests.len() <= limits.index_entries_max);
            assert!(index.annotations.len() <= limits.annotations_max);
            for entry in &index.manifests {
                assert!(!entry.descriptor.media_type.is_empty());
                assert!(entry.annotations.len() <= limits.annotations_max);
                assert!(entry.descriptor.size_bytes <= i64::MAX as u64);
                if let Some(platform) = &entry.platform {
                    let normalized = platform.normalized();
                    assert_eq!(normalized.normalized(), normalized);
                    // Only that it returns; most fuzzed platforms are invalid.
                    let _ = Platform::parse(&platform.to_string());
                }
            }
            for wanted in [
                Platform::host_default(),
                Platform::new("linux", "arm64").with_variant("v9.3"),
                Platform::new("linux", "arm").with_variant("v7"),
            ] {
                let matcher = PlatformMatcher::new(&wanted);
                let order = matcher.order_candidates(index.platforms());
                let mut seen = vec![false; index.manifests.len()];
                for position in order {
                    assert!(!seen[position], "position {position} returned twice");
                    seen[position] = true;
                    if let Some(platform) = &index.manifests[position].platform {
                        assert!(matcher.matches(platform));
                    }
                }
            }
        }
    }
}

fn check_message(message: &str) {
    assert!(message.len() <= MESSAGE_BYTES_MAX, "{} bytes", message.len());
    assert!(!message.ends_with('.'), "{message}");
}
