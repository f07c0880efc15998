//! Decoding of image manifests, image indexes (manifest lists) and image
//! configs, OCI and Docker schema 2 alike, from the bytes a registry sent.
//! Everything here is untrusted input: sizes and counts are bounded by
//! [`ManifestLimits`] before anything else is looked at, digests go through
//! [`Digest::parse`], and a manifest the daemon could not unpack (schema 1,
//! an artifact, a layer in an unknown format) is refused here with an error
//! that names the offending part, rather than failing later mid-pull.
//!
//! JSON is read with serde into private structs that mirror the wire format;
//! the public types are plain domain types built from them after validation.
//! This module does no I/O and never checks digests of the bytes themselves:
//! the caller verifies the manifest bytes against the digest it asked for.

use crate::reference::bounded_echo;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::oci::Descriptor;
use crate::oci::platform::Platform;
use crate::reference::{Digest, DigestError};

pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_OCI_LAYER_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Deprecated by the OCI spec: never produce it, but keep pulling it.
pub const MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_TAR: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// Deprecated by the OCI spec: never produce it, but keep pulling it.
pub const MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// Deprecated by the OCI spec: never produce it, but keep pulling it.
pub const MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
pub const MEDIA_TYPE_OCI_DESCRIPTOR: &str = "application/vnd.oci.descriptor.v1+json";
pub const MEDIA_TYPE_OCI_LAYOUT_HEADER: &str = "application/vnd.oci.layout.header.v1+json";
/// The empty descriptor's type: the 2-byte blob `{}`, used as the config of
/// artifacts that are not images.
pub const MEDIA_TYPE_OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Interchangeable with [`MEDIA_TYPE_OCI_LAYER_TAR_GZIP`].
pub const MEDIA_TYPE_DOCKER_LAYER_TAR_GZIP: &str =
    "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Pullable, never pushed.
pub const MEDIA_TYPE_DOCKER_FOREIGN_LAYER_TAR_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const MEDIA_TYPE_DOCKER_PLUGIN_CONFIG: &str = "application/vnd.docker.plugin.v1+json";
/// Legacy schema 1, refused.
pub const MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST: &str =
    "application/vnd.docker.distribution.manifest.v1+json";
/// Legacy signed schema 1, refused.
pub const MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The manifest and index types this daemon decodes, for the `Accept` header
/// of manifest requests (indexes first, so that a registry that honours the
/// order serves the multi-platform form).
pub const MANIFEST_ACCEPT_MEDIA_TYPES: [&str; 4] = [
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST,
];

/// A decoded manifest: one image, or an index of images for several
/// platforms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

/// An image manifest (OCI or Docker schema 2). Holding one means the config
/// is an image config, every layer has a pullable layer media type, every
/// digest is valid, and the counts are within the limits it was decoded with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageManifest {
    /// The manifest's own media type: from `Content-Type`, the body's
    /// `mediaType`, or, when both are missing, inferred as the OCI type.
    pub media_type: String,
    pub config: Descriptor,
    /// Base layer first, in the order they are applied.
    pub layers: Vec<Descriptor>,
    pub annotations: BTreeMap<String, String>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageIndex {
    /// The index's own media type, determined like [`ImageManifest::media_type`].
    pub media_type: String,
    /// In index order, which is the order of preference among equals.
    pub manifests: Vec<IndexEntry>,
    pub annotations: BTreeMap<String, String>,
}

/// One entry of an index. Its media type is not restricted: entries may be
/// image manifests, nested indexes, or artifacts the caller should skip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub descriptor: Descriptor,
    /// As the index states it, not normalized. Attestation manifests carry
    /// `unknown/unknown`, which matches no real platform.
    pub platform: Option<Platform>,
    pub annotations: BTreeMap<String, String>,
}

/// Which of the two manifest shapes a media type names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ManifestKind {
    Image,
    Index,
}

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerCompression {
    /// A plain tar: the blob digest is also the diff id.
    None,
    Gzip,
    Zstd,
}

/// The parts of an image config this daemon uses. Fields that are optional
/// on the wire are empty here when absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageConfig {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub os_version: Option<String>,
    pub os_features: Vec<String>,
    /// RFC 3339 as written by the builder; kept as text because it is only
    /// reported, never computed with.
    pub created: Option<String>,
    /// `user`, `user:group`, `uid` or `uid:gid`, or empty for root.
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    /// Keys of `ExposedPorts`, such as `80/tcp`, sorted.
    pub exposed_ports: Vec<String>,
    /// Keys of `Volumes`, sorted.
    pub volumes: Vec<String>,
    pub stop_signal: Option<String>,
    /// Digests of the uncompressed layers, base first; one per manifest layer.
    pub diff_ids: Vec<Digest>,
}

/// Bounds on what a registry may make this module read. Every count is
/// checked before the items are validated one by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManifestLimits {
    pub manifest_bytes_max: u64,
    pub config_bytes_max: u64,
    pub layers_max: usize,
    pub index_entries_max: usize,
    /// Per annotations map (the manifest's, the index's, each entry's).
    pub annotations_max: usize,
    /// Labels in an image config.
    pub labels_max: usize,
}

/// Why manifest or config bytes were refused. Each variant names the part
/// that was wrong; text that came from the registry is cut to a bounded
/// length.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("manifest is {size_bytes} bytes, the maximum is {max_bytes}")]
    ManifestTooLarge { size_bytes: u64, max_bytes: u64 },
    #[error("image config is {size_bytes} bytes, the maximum is {max_bytes}")]
    ConfigTooLarge { size_bytes: u64, max_bytes: u64 },
    #[error("{document} is not valid json: {reason}")]
    InvalidJson {
        document: &'static str,
        reason: String,
    },
    #[error("schema 1 manifests are not supported ({evidence})")]
    Schema1NotSupported { evidence: String },
    #[error("manifest has no schemaVersion")]
    MissingSchemaVersion,
    #[error("unsupported manifest schemaVersion {found}, expected 2")]
    UnsupportedSchemaVersion { found: i64 },
    #[error("unsupported manifest media type {media_type:?}")]
    UnsupportedMediaType { media_type: String },
    #[error("manifest mediaType {body_media_type:?} contradicts Content-Type {content_type:?}")]
    MediaTypeMismatch {
        content_type: String,
        body_media_type: String,
    },
    #[error(
        "cannot tell the manifest kind: no manifest Content-Type, no mediaType, and neither \"manifests\" nor \"config\"/\"layers\""
    )]
    UnknownManifestKind,
    #[error("manifest has both \"manifests\" and \"config\"/\"layers\", so its kind is ambiguous")]
    AmbiguousManifestKind,
    #[error("{media_type} body has a {field:?} field, which belongs to the other kind of manifest")]
    FieldOfOtherKind {
        media_type: String,
        field: &'static str,
    },
    #[error("{location} has no {field:?}")]
    MissingField {
        location: String,
        field: &'static str,
    },
    #[error("{location} has invalid digest {digest:?}")]
    InvalidDigest {
        location: String,
        digest: String,
        #[source]
        source: DigestError,
    },
    #[error("{location} has invalid size {size}, expected an integer from 0 to 2^63-1")]
    InvalidSize { location: String, size: String },
    #[error("config {digest} has media type {media_type:?}, which is not an image config")]
    UnsupportedConfigMediaType {
        digest: Box<Digest>,
        media_type: String,
    },
    #[error("layer {digest} has media type {media_type:?}, which is not a pullable layer type")]
    UnsupportedLayerMediaType {
        digest: Box<Digest>,
        media_type: String,
    },
    #[error("manifest has {count} layers, the maximum is {max}")]
    TooManyLayers { count: usize, max: usize },
    #[error("index has {count} entries, the maximum is {max}")]
    TooManyIndexEntries { count: usize, max: usize },
    #[error("{location} has {count} annotations, the maximum is {max}")]
    TooManyAnnotations {
        location: String,
        count: usize,
        max: usize,
    },
    #[error("image config has {count} labels, the maximum is {max}")]
    TooManyLabels { count: usize, max: usize },
    #[error("image config rootfs.type is {found:?}, expected \"layers\"")]
    InvalidRootfsType { found: String },
    #[error("image config has {count} diff_ids, the maximum is {max}")]
    TooManyDiffIds { count: usize, max: usize },
    #[error("image config diff_ids[{index}] is not a valid digest: {diff_id:?}")]
    InvalidDiffId {
        index: usize,
        diff_id: String,
        #[source]
        source: DigestError,
    },
}

/// `Content-Type` values that say nothing about which manifest this is.
/// Some registries and static file servers send them; the body decides then.
const GENERIC_CONTENT_TYPES: [&str; 3] =
    ["application/json", "application/octet-stream", "text/plain"];

impl Default for ManifestLimits {
    fn default() -> Self {
        ManifestLimits {
            manifest_bytes_max: 4 * 1024 * 1024,
            config_bytes_max: 8 * 1024 * 1024,
            layers_max: 128,
            index_entries_max: 1024,
            annotations_max: 256,
            labels_max: 1024,
        }
    }
}

impl Manifest {
    pub fn media_type(&self) -> &str {
        match self {
            Manifest::Image(image) => &image.media_type,
            Manifest::Index(index) => &index.media_type,
        }
    }
}

impl ImageIndex {
    /// The platform of each entry in index order, the shape
    /// `PlatformMatcher::order_candidates` takes.
    pub fn platforms(&self) -> impl Iterator<Item = Option<&Platform>> {
        self.manifests.iter().map(|entry| entry.platform.as_ref())
    }
}

impl ImageConfig {
    /// The platform the config declares, as written (not normalized).
    pub fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
        }
    }
}

impl fmt::Display for ManifestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ManifestKind::Image => "image manifest",
            ManifestKind::Index => "image index",
        })
    }
}

/// Decodes and validates a manifest or index.
///
/// `content_type` is the reply's `Content-Type`, if any; parameters such as
/// `; charset=utf-8` are ignored. The checks, in order, first failure wins:
/// 1. the size, against `limits.manifest_bytes_max`;
/// 2. a schema 1 `Content-Type` is refused before reading the body;
/// 3. the body is JSON; schema 1 bodies (`fsLayers`, `schemaVersion` 1 or a
///    schema 1 `mediaType`) are refused;
/// 4. the kind: a manifest or index `Content-Type` decides it, and a body
///    `mediaType` that differs is refused (the distribution spec says clients
///    SHOULD); with no `Content-Type` or a generic one (`application/json`,
///    `application/octet-stream`, `text/plain`) the body's `mediaType`
///    decides; without that, the shape does, like containerd: `manifests`
///    means an OCI index, `config`/`layers` an OCI manifest. Any other
///    type is refused with its name;
/// 5. `schemaVersion` is 2;
/// 6. no field of the other kind is present (containerd's `validateMediaType`);
/// 7. the content: descriptors have a media type, a valid digest and a size
///    in 0..=2^63-1; the config is an OCI or Docker image config; every layer
///    has a pullable media type (see [`layer_compression`]); the counts of
///    layers, entries and annotations are within `limits`.
///
/// Index entries may have any media type and any platform; choosing among
/// them is `PlatformMatcher`'s job.
pub fn decode_manifest(
    bytes: &[u8],
    content_type: Option<&str>,
    limits: &ManifestLimits,
) -> Result<Manifest, ManifestError> {
    let size_bytes = length_u64(bytes);
    if size_bytes > limits.manifest_bytes_max {
        return Err(ManifestError::ManifestTooLarge {
            size_bytes,
            max_bytes: limits.manifest_bytes_max,
        });
    }
    let content_type = content_type.map(media_type_essence).filter(|essence| {
        !essence.is_empty() && !GENERIC_CONTENT_TYPES.contains(&essence.as_str())
    });
    if let Some(content_type) = content_type.as_deref()
        && is_schema1_media_type(content_type)
    {
        return Err(ManifestError::Schema1NotSupported {
            evidence: format!("Content-Type {content_type:?}"),
        });
    }

    let JsonObject(raw): JsonObject<RawManifest> =
        serde_json::from_slice(bytes).map_err(|error| ManifestError::InvalidJson {
            document: "manifest",
            reason: bounded_echo(&error.to_string()),
        })?;
    let body_media_type = raw
        .media_type
        .as_deref()
        .filter(|media_type| !media_type.is_empty());
    reject_schema1_body(&raw, body_media_type)?;

    let (kind, media_type) = determine_kind(content_type, body_media_type, &raw)?;
    match raw.schema_version {
        Some(2) => {}
        Some(found) => return Err(ManifestError::UnsupportedSchemaVersion { found }),
        None => return Err(ManifestError::MissingSchemaVersion),
    }
    let field_of_other_kind = match kind {
        ManifestKind::Image => raw.manifests.is_some().then_some("manifests"),
        ManifestKind::Index => {
            if raw.config.is_some() {
                Some("config")
            } else {
                raw.layers.is_some().then_some("layers")
            }
        }
    };
    if let Some(field) = field_of_other_kind {
        return Err(ManifestError::FieldOfOtherKind { media_type, field });
    }

    match kind {
        ManifestKind::Image => decode_image_manifest(media_type, raw, limits).map(Manifest::Image),
        ManifestKind::Index => decode_image_index(media_type, raw, limits).map(Manifest::Index),
    }
}

/// Decodes and validates an image config (OCI or Docker).
///
/// The size is checked against `limits.config_bytes_max` first. `rootfs` is
/// required, its `type` must be `layers`, and `diff_ids` (at most
/// `limits.layers_max` of them) must each be a valid digest. `os` and
/// `architecture` are read as given (empty when absent): whether they suit
/// the host is the caller's decision, as in containerd.
///
/// Does not check that the number of diff ids equals the manifest's layer
/// count; the caller, who has both, must.
pub fn decode_config(bytes: &[u8], limits: &ManifestLimits) -> Result<ImageConfig, ManifestError> {
    let size_bytes = length_u64(bytes);
    if size_bytes > limits.config_bytes_max {
        return Err(ManifestError::ConfigTooLarge {
            size_bytes,
            max_bytes: limits.config_bytes_max,
        });
    }
    let JsonObject(raw): JsonObject<RawImageConfig> =
        serde_json::from_slice(bytes).map_err(|error| ManifestError::InvalidJson {
            document: "image config",
            reason: bounded_echo(&error.to_string()),
        })?;

    let Some(JsonObject(rootfs)) = raw.rootfs else {
        return Err(missing_field("image config", "rootfs"));
    };
    match rootfs.kind.as_deref() {
        Some("layers") => {}
        Some(found) => {
            return Err(ManifestError::InvalidRootfsType {
                found: bounded_echo(found),
            });
        }
        None => return Err(missing_field("image config rootfs", "type")),
    }
    let Some(raw_diff_ids) = rootfs.diff_ids else {
        return Err(missing_field("image config rootfs", "diff_ids"));
    };
    if raw_diff_ids.len() > limits.layers_max {
        return Err(ManifestError::TooManyDiffIds {
            count: raw_diff_ids.len(),
            max: limits.layers_max,
        });
    }
    let diff_ids = raw_diff_ids
        .iter()
        .enumerate()
        .map(|(index, diff_id)| {
            Digest::parse(diff_id).map_err(|source| ManifestError::InvalidDiffId {
                index,
                diff_id: bounded_echo(diff_id),
                source,
            })
        })
        .collect::<Result<Vec<Digest>, ManifestError>>()?;

    let execution = raw
        .config
        .map(|JsonObject(execution)| execution)
        .unwrap_or_default();
    let labels = execution.labels.unwrap_or_default();
    if labels.len() > limits.labels_max {
        return Err(ManifestError::TooManyLabels {
            count: labels.len(),
            max: limits.labels_max,
        });
    }
    Ok(ImageConfig {
        os: raw.os.unwrap_or_default(),
        architecture: raw.architecture.unwrap_or_default(),
        variant: raw.variant.filter(|variant| !variant.is_empty()),
        os_version: raw.os_version.filter(|version| !version.is_empty()),
        os_features: raw.os_features.unwrap_or_default(),
        created: raw.created,
        user: execution.user.unwrap_or_default(),
        env: execution.env.unwrap_or_default(),
        entrypoint: execution
            .entrypoint
            .map(StringOrList::into_list)
            .unwrap_or_default(),
        cmd: execution
            .cmd
            .map(StringOrList::into_list)
            .unwrap_or_default(),
        working_dir: execution.working_dir.unwrap_or_default(),
        labels,
        exposed_ports: execution
            .exposed_ports
            .map(|ports| ports.into_keys().collect())
            .unwrap_or_default(),
        volumes: execution
            .volumes
            .map(|volumes| volumes.into_keys().collect())
            .unwrap_or_default(),
        stop_signal: execution.stop_signal.filter(|signal| !signal.is_empty()),
        diff_ids,
    })
}

/// Which kind of manifest `media_type` names, for the four types this module
/// decodes.
pub fn manifest_kind(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        MEDIA_TYPE_OCI_MANIFEST | MEDIA_TYPE_DOCKER_MANIFEST => Some(ManifestKind::Image),
        MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

/// Whether a config descriptor of this type describes a runnable image.
///
/// Only the OCI and Docker image config types, like containerd's
/// `images.IsConfigType`. Other configs (artifacts with the empty config,
/// Helm charts, Docker plugins) have no root filesystem to unpack; containerd
/// pulls them and then fails at unpack, this daemon refuses them up front.
pub fn is_image_config_media_type(media_type: &str) -> bool {
    matches!(media_type, MEDIA_TYPE_OCI_CONFIG | MEDIA_TYPE_DOCKER_CONFIG)
}

/// The compression of a pullable layer type, or `None` when this daemon
/// cannot unpack layers of that type.
///
/// Pullable: the OCI tar, tar+gzip and tar+zstd types, their deprecated
/// nondistributable forms, Docker's rootfs gzip type and Docker's foreign
/// gzip type. containerd also accepts Docker's uncompressed
/// `rootfs.diff.tar` (and its foreign form) by sniffing the compression,
/// and a Docker `rootfs.diff.tar.zstd`; those are refused here because no
/// registry in common use serves them.
pub fn layer_compression(media_type: &str) -> Option<LayerCompression> {
    match media_type {
        MEDIA_TYPE_OCI_LAYER_TAR | MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_TAR => {
            Some(LayerCompression::None)
        }
        MEDIA_TYPE_OCI_LAYER_TAR_GZIP
        | MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP
        | MEDIA_TYPE_DOCKER_LAYER_TAR_GZIP
        | MEDIA_TYPE_DOCKER_FOREIGN_LAYER_TAR_GZIP => Some(LayerCompression::Gzip),
        MEDIA_TYPE_OCI_LAYER_TAR_ZSTD | MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD => {
            Some(LayerCompression::Zstd)
        }
        _ => None,
    }
}

/// Whether a layer type is nondistributable (OCI) or foreign (Docker). Such
/// layers may list `urls`, which this module drops: like containerd's
/// default, the blob is fetched from the registry by digest.
pub fn is_non_distributable_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_TAR
            | MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP
            | MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD
            | MEDIA_TYPE_DOCKER_FOREIGN_LAYER_TAR_GZIP
    )
}

// --- Wire format. These mirror the JSON and are never exposed. ---

/// A JSON object decoded as `T`. serde's derived struct decoding also accepts
/// a JSON array holding the fields in declaration order, which Go (and so
/// every other client) refuses; every struct on the wire goes through this
/// wrapper so that only objects are accepted.
struct JsonObject<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(JsonObject)
    }
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<JsonObject<RawDescriptor>>,
    layers: Option<Vec<JsonObject<RawDescriptor>>>,
    manifests: Option<Vec<JsonObject<RawIndexEntry>>>,
    annotations: Option<BTreeMap<String, String>>,
    /// Only schema 1 manifests have it; read to recognize them.
    #[serde(rename = "fsLayers")]
    fs_layers: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    digest: Option<String>,
    /// A number of any form, so that a negative or fractional size gets its
    /// own error instead of a generic JSON one.
    size: Option<serde_json::Number>,
}

#[derive(Deserialize)]
struct RawIndexEntry {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<serde_json::Number>,
    platform: Option<JsonObject<RawPlatform>>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct RawPlatform {
    architecture: Option<String>,
    os: Option<String>,
    #[serde(rename = "os.version")]
    os_version: Option<String>,
    #[serde(rename = "os.features")]
    os_features: Option<Vec<String>>,
    variant: Option<String>,
}

#[derive(Deserialize)]
struct RawImageConfig {
    architecture: Option<String>,
    os: Option<String>,
    #[serde(rename = "os.version")]
    os_version: Option<String>,
    #[serde(rename = "os.features")]
    os_features: Option<Vec<String>>,
    variant: Option<String>,
    created: Option<String>,
    config: Option<JsonObject<RawExecutionConfig>>,
    rootfs: Option<JsonObject<RawRootfs>>,
}

/// The `config` object of an image config. Docker's field names, which OCI
/// kept.
#[derive(Default, Deserialize)]
struct RawExecutionConfig {
    #[serde(rename = "User")]
    user: Option<String>,
    #[serde(rename = "Env")]
    env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint")]
    entrypoint: Option<StringOrList>,
    #[serde(rename = "Cmd")]
    cmd: Option<StringOrList>,
    #[serde(rename = "WorkingDir")]
    working_dir: Option<String>,
    #[serde(rename = "Labels")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "ExposedPorts")]
    exposed_ports: Option<BTreeMap<String, IgnoredAny>>,
    #[serde(rename = "Volumes")]
    volumes: Option<BTreeMap<String, IgnoredAny>>,
    #[serde(rename = "StopSignal")]
    stop_signal: Option<String>,
}

/// Docker's `strslice`: `Entrypoint` and `Cmd` decode from a list or from a
/// single string, which old Docker versions wrote.
#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(rename = "type")]
    kind: Option<String>,
    diff_ids: Option<Vec<String>>,
}

impl StringOrList {
    fn into_list(self) -> Vec<String> {
        match self {
            StringOrList::One(item) => vec![item],
            StringOrList::List(items) => items,
        }
    }
}

fn reject_schema1_body(
    raw: &RawManifest,
    body_media_type: Option<&str>,
) -> Result<(), ManifestError> {
    let evidence = if let Some(media_type) =
        body_media_type.filter(|media_type| is_schema1_media_type(media_type))
    {
        Some(format!("mediaType {media_type:?}"))
    } else if raw.fs_layers.is_some() {
        Some("the body has \"fsLayers\"".to_owned())
    } else if raw.schema_version == Some(1) {
        Some("schemaVersion 1".to_owned())
    } else {
        None
    };
    match evidence {
        Some(evidence) => Err(ManifestError::Schema1NotSupported { evidence }),
        None => Ok(()),
    }
}

/// Step 4 of [`decode_manifest`]: the kind and the media type to report.
fn determine_kind(
    content_type: Option<String>,
    body_media_type: Option<&str>,
    raw: &RawManifest,
) -> Result<(ManifestKind, String), ManifestError> {
    if let Some(content_type) = content_type {
        let Some(kind) = manifest_kind(&content_type) else {
            return Err(ManifestError::UnsupportedMediaType {
                media_type: bounded_echo(&content_type),
            });
        };
        if let Some(body_media_type) = body_media_type
            && body_media_type != content_type
        {
            return Err(ManifestError::MediaTypeMismatch {
                content_type,
                body_media_type: bounded_echo(body_media_type),
            });
        }
        return Ok((kind, content_type));
    }
    if let Some(body_media_type) = body_media_type {
        return match manifest_kind(body_media_type) {
            Some(kind) => Ok((kind, body_media_type.to_owned())),
            None => Err(ManifestError::UnsupportedMediaType {
                media_type: bounded_echo(body_media_type),
            }),
        };
    }
    let has_index_fields = raw.manifests.is_some();
    let has_image_fields = raw.config.is_some() || raw.layers.is_some();
    match (has_index_fields, has_image_fields) {
        (true, true) => Err(ManifestError::AmbiguousManifestKind),
        (true, false) => Ok((ManifestKind::Index, MEDIA_TYPE_OCI_INDEX.to_owned())),
        (false, true) => Ok((ManifestKind::Image, MEDIA_TYPE_OCI_MANIFEST.to_owned())),
        (false, false) => Err(ManifestError::UnknownManifestKind),
    }
}

fn decode_image_manifest(
    media_type: String,
    raw: RawManifest,
    limits: &ManifestLimits,
) -> Result<ImageManifest, ManifestError> {
    let Some(JsonObject(raw_config)) = raw.config else {
        return Err(missing_field("manifest", "config"));
    };
    let config = descriptor(
        "config",
        raw_config.media_type,
        raw_config.digest,
        raw_config.size,
    )?;
    if !is_image_config_media_type(&config.media_type) {
        return Err(ManifestError::UnsupportedConfigMediaType {
            media_type: bounded_echo(&config.media_type),
            digest: Box::new(config.digest),
        });
    }
    let Some(raw_layers) = raw.layers else {
        return Err(missing_field("manifest", "layers"));
    };
    if raw_layers.len() > limits.layers_max {
        return Err(ManifestError::TooManyLayers {
            count: raw_layers.len(),
            max: limits.layers_max,
        });
    }
    let mut layers = Vec::with_capacity(raw_layers.len());
    for (index, JsonObject(raw_layer)) in raw_layers.into_iter().enumerate() {
        let layer = descriptor(
            &format!("layers[{index}]"),
            raw_layer.media_type,
            raw_layer.digest,
            raw_layer.size,
        )?;
        if layer_compression(&layer.media_type).is_none() {
            return Err(ManifestError::UnsupportedLayerMediaType {
                media_type: bounded_echo(&layer.media_type),
                digest: Box::new(layer.digest),
            });
        }
        layers.push(layer);
    }
    let annotations = bounded_annotations("manifest", raw.annotations, limits)?;
    Ok(ImageManifest {
        media_type,
        config,
        layers,
        annotations,
    })
}

fn decode_image_index(
    media_type: String,
    raw: RawManifest,
    limits: &ManifestLimits,
) -> Result<ImageIndex, ManifestError> {
    let Some(raw_entries) = raw.manifests else {
        return Err(missing_field("index", "manifests"));
    };
    if raw_entries.len() > limits.index_entries_max {
        return Err(ManifestError::TooManyIndexEntries {
            count: raw_entries.len(),
            max: limits.index_entries_max,
        });
    }
    let mut manifests = Vec::with_capacity(raw_entries.len());
    for (index, JsonObject(raw_entry)) in raw_entries.into_iter().enumerate() {
        let location = format!("manifests[{index}]");
        let descriptor = descriptor(
            &location,
            raw_entry.media_type,
            raw_entry.digest,
            raw_entry.size,
        )?;
        let annotations = bounded_annotations(&location, raw_entry.annotations, limits)?;
        manifests.push(IndexEntry {
            descriptor,
            platform: raw_entry
                .platform
                .map(|JsonObject(platform)| platform_from_raw(platform)),
            annotations,
        });
    }
    let annotations = bounded_annotations("index", raw.annotations, limits)?;
    Ok(ImageIndex {
        media_type,
        manifests,
        annotations,
    })
}

/// Validates one descriptor's three required fields, in the order media
/// type, digest, size.
fn descriptor(
    location: &str,
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<serde_json::Number>,
) -> Result<Descriptor, ManifestError> {
    let Some(media_type) = media_type.filter(|media_type| !media_type.is_empty()) else {
        return Err(missing_field(location, "mediaType"));
    };
    let Some(digest_text) = digest else {
        return Err(missing_field(location, "digest"));
    };
    let digest = Digest::parse(&digest_text).map_err(|source| ManifestError::InvalidDigest {
        location: location.to_owned(),
        digest: bounded_echo(&digest_text),
        source,
    })?;
    let Some(size) = size else {
        return Err(missing_field(location, "size"));
    };
    // Go decodes sizes into an int64, so that is the range every other
    // client accepts; anything outside it, negative or fractional is refused.
    let size_bytes = size
        .as_u64()
        .filter(|size_bytes| i64::try_from(*size_bytes).is_ok())
        .ok_or_else(|| ManifestError::InvalidSize {
            location: location.to_owned(),
            size: bounded_echo(&size.to_string()),
        })?;
    Ok(Descriptor::new(media_type, digest, size_bytes))
}

/// A platform object from an index entry. Missing `os` or `architecture`
/// become empty strings rather than errors: containerd reads them the same
/// way, and such an entry simply matches no wanted platform (an empty OS
/// normalizes to the host's, an empty architecture matches nothing).
fn platform_from_raw(raw: RawPlatform) -> Platform {
    Platform {
        os: raw.os.unwrap_or_default(),
        architecture: raw.architecture.unwrap_or_default(),
        variant: raw.variant.filter(|variant| !variant.is_empty()),
        os_version: raw.os_version.filter(|version| !version.is_empty()),
        os_features: raw.os_features.unwrap_or_default(),
    }
}

fn bounded_annotations(
    location: &str,
    annotations: Option<BTreeMap<String, String>>,
    limits: &ManifestLimits,
) -> Result<BTreeMap<String, String>, ManifestError> {
    let annotations = annotations.unwrap_or_default();
    if annotations.len() > limits.annotations_max {
        return Err(ManifestError::TooManyAnnotations {
            location: location.to_owned(),
            count: annotations.len(),
            max: limits.annotations_max,
        });
    }
    Ok(annotations)
}

fn missing_field(location: &str, field: &'static str) -> ManifestError {
    ManifestError::MissingField {
        location: location.to_owned(),
        field,
    }
}

/// The media type of a `Content-Type` value: the part before any `;`
/// parameters, without surrounding whitespace, lowercased (media types are
/// case-insensitive, RFC 6838).
fn media_type_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim_matches([' ', '\t'])
        .to_ascii_lowercase()
}

fn is_schema1_media_type(media_type: &str) -> bool {
    matches!(
        media_type,
        MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST | MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST
    )
}

fn length_u64(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::oci::platform::PlatformMatcher;

    /// A valid sha256 digest made of one repeated byte.
    fn digest(byte: u8) -> String {
        format!("sha256:{}", format!("{byte:02x}").repeat(32))
    }

    fn parsed_digest(byte: u8) -> Digest {
        Digest::parse(&digest(byte)).expect("valid test digest")
    }

    fn descriptor_json(media_type: &str, byte: u8, size: u64) -> Value {
        json!({ "mediaType": media_type, "digest": digest(byte), "size": size })
    }

    fn oci_manifest_json() -> Value {
        json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": descriptor_json(MEDIA_TYPE_OCI_CONFIG, 0xc0, 1472),
            "layers": [
                descriptor_json(MEDIA_TYPE_OCI_LAYER_TAR_GZIP, 0x01, 3_623_807),
                descriptor_json(MEDIA_TYPE_OCI_LAYER_TAR_ZSTD, 0x02, 1024),
            ],
            "annotations": { "org.opencontainers.image.created": "2024-05-01T00:00:00Z" }
        })
    }

    /// Docker Hub's `library/busybox` shape: an OCI index with one image per
    /// platform plus one attestation manifest per image, each attestation
    /// with platform unknown/unknown.
    fn docker_hub_oci_index_json() -> Value {
        let image = |byte: u8, architecture: &str, variant: Option<&str>| {
            let mut platform = json!({ "architecture": architecture, "os": "linux" });
            if let Some(variant) = variant {
                platform["variant"] = json!(variant);
            }
            json!({
                "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                "digest": digest(byte),
                "size": 610,
                "annotations": {
                    "com.docker.official-images.bashbrew.arch": architecture,
                    "org.opencontainers.image.version": "1.36.1-glibc"
                },
                "platform": platform
            })
        };
        let attestation = |byte: u8, subject: u8| {
            json!({
                "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                "digest": digest(byte),
                "size": 839,
                "annotations": {
                    "vnd.docker.reference.digest": digest(subject),
                    "vnd.docker.reference.type": "attestation-manifest"
                },
                "platform": { "architecture": "unknown", "os": "unknown" }
            })
        };
        json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_INDEX,
            "manifests": [
                image(0x11, "amd64", None),
                attestation(0x12, 0x11),
                image(0x13, "arm", Some("v5")),
                attestation(0x14, 0x13),
                image(0x15, "arm", Some("v6")),
                image(0x16, "arm", Some("v7")),
                image(0x17, "arm64", Some("v8")),
                attestation(0x18, 0x17),
                image(0x19, "386", None),
                image(0x1a, "ppc64le", None),
                image(0x1b, "riscv64", None),
                image(0x1c, "s390x", None)
            ]
        })
    }

    /// The old Docker Hub `library/alpine` manifest list: Docker types,
    /// variants on every arm entry.
    fn docker_manifest_list_json() -> Value {
        let entry = |byte: u8, architecture: &str, variant: Option<&str>| {
            let mut platform = json!({ "architecture": architecture, "os": "linux" });
            if let Some(variant) = variant {
                platform["variant"] = json!(variant);
            }
            json!({
                "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
                "size": 528,
                "digest": digest(byte),
                "platform": platform
            })
        };
        json!({
            "manifests": [
                entry(0x21, "amd64", None),
                entry(0x22, "arm", Some("v6")),
                entry(0x23, "arm", Some("v7")),
                entry(0x24, "arm64", Some("v8")),
                entry(0x25, "386", None),
                entry(0x26, "ppc64le", None),
                entry(0x27, "s390x", None)
            ],
            "mediaType": MEDIA_TYPE_DOCKER_MANIFEST_LIST,
            "schemaVersion": 2
        })
    }

    fn docker_manifest_json() -> Value {
        json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
            "config": descriptor_json(MEDIA_TYPE_DOCKER_CONFIG, 0xc1, 1469),
            "layers": [
                descriptor_json(MEDIA_TYPE_DOCKER_LAYER_TAR_GZIP, 0x31, 2_818_413)
            ]
        })
    }

    fn without(mut value: Value, field: &str) -> Value {
        if let Some(object) = value.as_object_mut() {
            object.remove(field);
        }
        value
    }

    fn with(mut value: Value, pointer: &str, replacement: Value) -> Value {
        match value.pointer_mut(pointer) {
            Some(slot) => *slot = replacement,
            None => panic!("test fixture has no {pointer}"),
        }
        value
    }

    fn bytes_of(value: &Value) -> Vec<u8> {
        serde_json::to_vec(value).expect("test fixture serializes")
    }

    enum Expect {
        Image {
            media_type: &'static str,
            layers: usize,
        },
        Index {
            media_type: &'static str,
            entries: usize,
        },
        Error(ManifestError),
    }

    fn manifest_cases() -> Vec<(&'static str, Vec<u8>, Option<&'static str>, Expect)> {
        use Expect::{Error, Image, Index};
        let limits = ManifestLimits::default();
        let five_mib_manifest = bytes_of(&with(
            oci_manifest_json(),
            "/annotations",
            json!({ "padding": "x".repeat(5 * 1024 * 1024) }),
        ));
        vec![
            (
                "oci manifest with matching content type",
                bytes_of(&oci_manifest_json()),
                Some(MEDIA_TYPE_OCI_MANIFEST),
                Image {
                    media_type: MEDIA_TYPE_OCI_MANIFEST,
                    layers: 2,
                },
            ),
            (
                "content type parameters and case are ignored",
                bytes_of(&oci_manifest_json()),
                Some("Application/VND.oci.image.manifest.v1+json ; charset=utf-8"),
                Image {
                    media_type: MEDIA_TYPE_OCI_MANIFEST,
                    layers: 2,
                },
            ),
            (
                "oci manifest without mediaType, known content type",
                bytes_of(&without(oci_manifest_json(), "mediaType")),
                Some(MEDIA_TYPE_OCI_MANIFEST),
                Image {
                    media_type: MEDIA_TYPE_OCI_MANIFEST,
                    layers: 2,
                },
            ),
            (
                "manifest without mediaType and without content type is inferred from its shape",
                bytes_of(&without(oci_manifest_json(), "mediaType")),
                None,
                Image {
                    media_type: MEDIA_TYPE_OCI_MANIFEST,
                    layers: 2,
                },
            ),
            (
                "index without mediaType behind application/json is inferred from its shape",
                bytes_of(&without(docker_hub_oci_index_json(), "mediaType")),
                Some("application/json"),
                Index {
                    media_type: MEDIA_TYPE_OCI_INDEX,
                    entries: 12,
                },
            ),
            (
                "docker manifest behind text/plain takes the body mediaType",
                bytes_of(&docker_manifest_json()),
                Some("text/plain; charset=utf-8"),
                Image {
                    media_type: MEDIA_TYPE_DOCKER_MANIFEST,
                    layers: 1,
                },
            ),
            (
                "docker manifest with no content type takes the body mediaType",
                bytes_of(&docker_manifest_json()),
                None,
                Image {
                    media_type: MEDIA_TYPE_DOCKER_MANIFEST,
                    layers: 1,
                },
            ),
            (
                "docker hub oci index with attestation manifests",
                bytes_of(&docker_hub_oci_index_json()),
                Some(MEDIA_TYPE_OCI_INDEX),
                Index {
                    media_type: MEDIA_TYPE_OCI_INDEX,
                    entries: 12,
                },
            ),
            (
                "docker manifest list with arm variants",
                bytes_of(&docker_manifest_list_json()),
                Some(MEDIA_TYPE_DOCKER_MANIFEST_LIST),
                Index {
                    media_type: MEDIA_TYPE_DOCKER_MANIFEST_LIST,
                    entries: 7,
                },
            ),
            (
                "empty layer list is allowed",
                bytes_of(&with(oci_manifest_json(), "/layers", json!([]))),
                None,
                Image {
                    media_type: MEDIA_TYPE_OCI_MANIFEST,
                    layers: 0,
                },
            ),
            (
                "empty index is allowed",
                bytes_of(&with(docker_hub_oci_index_json(), "/manifests", json!([]))),
                None,
                Index {
                    media_type: MEDIA_TYPE_OCI_INDEX,
                    entries: 0,
                },
            ),
            (
                "every pullable layer type",
                bytes_of(&with(
                    oci_manifest_json(),
                    "/layers",
                    json!([
                        descriptor_json(MEDIA_TYPE_OCI_LAYER_TAR, 1, 1),
                        descriptor_json(MEDIA_TYPE_OCI_LAYER_TAR_GZIP, 2, 2),
                        descriptor_json(MEDIA_TYPE_OCI_LAYER_TAR_ZSTD, 3, 3),
                        descriptor_json(MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_TAR, 4, 4),
                        descriptor_json(MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP, 5, 5),
                        descriptor_json(MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD, 6, 6),
                        descriptor_json(MEDIA_TYPE_DOCKER_LAYER_TAR_GZIP, 7, 7),
                        descriptor_json(MEDIA_TYPE_DOCKER_FOREIGN_LAYER_TAR_GZIP, 8, 8),
                    ]),
                )),
                Some(MEDIA_TYPE_OCI_MANIFEST),
                Image {
                    media_type: MEDIA_TYPE_OCI_MANIFEST,
                    layers: 8,
                },
            ),
            (
                "size of 2^63-1 is the largest accepted",
                bytes_of(&with(oci_manifest_json(), "/layers/0/size", json!(i64::MAX))),
                None,
                Image {
                    media_type: MEDIA_TYPE_OCI_MANIFEST,
                    layers: 2,
                },
            ),
            (
                "exactly layers_max layers",
                bytes_of(&with(
                    oci_manifest_json(),
                    "/layers",
                    Value::Array(vec![descriptor_json(MEDIA_TYPE_OCI_LAYER_TAR_GZIP, 9, 9); 128]),
                )),
                None,
                Image {
                    media_type: MEDIA_TYPE_OCI_MANIFEST,
                    layers: 128,
                },
            ),
            // --- refused ---
            (
                "body mediaType contradicts content type",
                bytes_of(&docker_manifest_json()),
                Some(MEDIA_TYPE_OCI_MANIFEST),
                Error(ManifestError::MediaTypeMismatch {
                    content_type: MEDIA_TYPE_OCI_MANIFEST.into(),
                    body_media_type: MEDIA_TYPE_DOCKER_MANIFEST.into(),
                }),
            ),
            (
                "index body behind a manifest content type",
                bytes_of(&docker_hub_oci_index_json()),
                Some(MEDIA_TYPE_OCI_MANIFEST),
                Error(ManifestError::MediaTypeMismatch {
                    content_type: MEDIA_TYPE_OCI_MANIFEST.into(),
                    body_media_type: MEDIA_TYPE_OCI_INDEX.into(),
                }),
            ),
            (
                "index shape without mediaType behind a manifest content type",
                bytes_of(&without(docker_hub_oci_index_json(), "mediaType")),
                Some(MEDIA_TYPE_OCI_MANIFEST),
                Error(ManifestError::FieldOfOtherKind {
                    media_type: MEDIA_TYPE_OCI_MANIFEST.into(),
                    field: "manifests",
                }),
            ),
            (
                "manifest shape without mediaType behind an index content type",
                bytes_of(&without(oci_manifest_json(), "mediaType")),
                Some(MEDIA_TYPE_DOCKER_MANIFEST_LIST),
                Error(ManifestError::FieldOfOtherKind {
                    media_type: MEDIA_TYPE_DOCKER_MANIFEST_LIST.into(),
                    field: "config",
                }),
            ),
            (
                "signed schema 1 content type",
                br#"{"schemaVersion":1,"name":"library/busybox","tag":"latest","fsLayers":[],"signatures":[]}"#.to_vec(),
                Some(MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST),
                Error(ManifestError::Schema1NotSupported {
                    evidence: format!("Content-Type {MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST:?}"),
                }),
            ),
            (
                "schema 1 body behind application/json",
                br#"{"schemaVersion":1,"name":"library/busybox","tag":"latest","architecture":"amd64","fsLayers":[{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],"history":[]}"#.to_vec(),
                Some("application/json"),
                Error(ManifestError::Schema1NotSupported {
                    evidence: "the body has \"fsLayers\"".into(),
                }),
            ),
            (
                "schema 1 mediaType in the body",
                bytes_of(&with(
                    oci_manifest_json(),
                    "/mediaType",
                    json!(MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST),
                )),
                None,
                Error(ManifestError::Schema1NotSupported {
                    evidence: format!("mediaType {MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST:?}"),
                }),
            ),
            (
                "schemaVersion 1 alone",
                bytes_of(&with(oci_manifest_json(), "/schemaVersion", json!(1))),
                None,
                Error(ManifestError::Schema1NotSupported {
                    evidence: "schemaVersion 1".into(),
                }),
            ),
            (
                "wrong schemaVersion",
                bytes_of(&with(oci_manifest_json(), "/schemaVersion", json!(3))),
                Some(MEDIA_TYPE_OCI_MANIFEST),
                Error(ManifestError::UnsupportedSchemaVersion { found: 3 }),
            ),
            (
                "missing schemaVersion",
                bytes_of(&without(oci_manifest_json(), "schemaVersion")),
                Some(MEDIA_TYPE_OCI_MANIFEST),
                Error(ManifestError::MissingSchemaVersion),
            ),
            (
                "a 5 MiB manifest",
                five_mib_manifest.clone(),
                Some(MEDIA_TYPE_OCI_MANIFEST),
                Error(ManifestError::ManifestTooLarge {
                    size_bytes: length_u64(&five_mib_manifest),
                    max_bytes: limits.manifest_bytes_max,
                }),
            ),
            (
                "layer of type tar+foo",
                bytes_of(&with(
                    oci_manifest_json(),
                    "/layers/1/mediaType",
                    json!("application/vnd.oci.image.layer.v1.tar+foo"),
                )),
                Some(MEDIA_TYPE_OCI_MANIFEST),
                Error(ManifestError::UnsupportedLayerMediaType {
                    digest: Box::new(parsed_digest(0x02)),
                    media_type: "application/vnd.oci.image.layer.v1.tar+foo".into(),
                }),
            ),
            (
                "encrypted layer",
                bytes_of(&with(
                    oci_manifest_json(),
                    "/layers/0/mediaType",
                    json!("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"),
                )),
                None,
                Error(ManifestError::UnsupportedLayerMediaType {
                    digest: Box::new(parsed_digest(0x01)),
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip+encrypted".into(),
                }),
            ),
            (
                "uncompressed docker layer type",
                bytes_of(&with(
                    docker_manifest_json(),
                    "/layers/0/mediaType",
                    json!("application/vnd.docker.image.rootfs.diff.tar"),
                )),
                None,
                Error(ManifestError::UnsupportedLayerMediaType {
                    digest: Box::new(parsed_digest(0x31)),
                    media_type: "application/vnd.docker.image.rootfs.diff.tar".into(),
                }),
            ),
            (
                "layer with a bad digest",
                bytes_of(&with(
                    oci_manifest_json(),
                    "/layers/1/digest",
                    json!("sha256:XYZ"),
                )),
                Some(MEDIA_TYPE_OCI_MANIFEST),
                Error(ManifestError::InvalidDigest {
                    location: "layers[1]".into(),
                    digest: "sha256:XYZ".into(),
                    source: DigestError::InvalidHex {
                        algorithm: crate::reference::DigestAlgorithm::Sha256,
                        encoded: "XYZ".into(),
                    },
                }),
            ),
            (
                "config with an unsupported digest algorithm",
                bytes_of(&with(
                    oci_manifest_json(),
                    "/config/digest",
                    json!(format!("blake3:{}", "ab".repeat(32))),
                )),
                None,
                Error(ManifestError::InvalidDigest {
                    location: "config".into(),
                    digest: format!("blake3:{}", "ab".repeat(32)),
                    source: DigestError::UnsupportedAlgorithm {
                        algorithm: "blake3".into(),
                    },
                }),
            ),
            (
                "index entry with a bad digest",
                bytes_of(&with(
                    docker_manifest_list_json(),
                    "/manifests/2/digest",
                    json!("sha256"),
                )),
                None,
                Error(ManifestError::InvalidDigest {
                    location: "manifests[2]".into(),
                    digest: "sha256".into(),
                    source: DigestError::MissingAlgorithmSeparator {
                        input: "sha256".into(),
                    },
                }),
            ),
            (
                "negative size",
                bytes_of(&with(oci_manifest_json(), "/layers/0/size", json!(-1))),
                None,
                Error(ManifestError::InvalidSize {
                    location: "layers[0]".into(),
                    size: "-1".into(),
                }),
            ),
            (
                "fractional size",
                bytes_of(&with(oci_manifest_json(), "/config/size", json!(1.5))),
                None,
                Error(ManifestError::InvalidSize {
                    location: "config".into(),
                    size: "1.5".into(),
                }),
            ),
            (
                "size beyond int64",
                bytes_of(&with(oci_manifest_json(), "/layers/0/size", json!(u64::MAX))),
                None,
                Error(ManifestError::InvalidSize {
                    location: "layers[0]".into(),
                    size: u64::MAX.to_string(),
                }),
            ),
            (
                "layer without digest",
                bytes_of(&with(
                    oci_manifest_json(),
                    "/layers/0",
                    json!({ "mediaType": MEDIA_TYPE_OCI_LAYER_TAR, "size": 1 }),
                )),
                None,
                Error(ManifestError::MissingField {
                    location: "layers[0]".into(),
                    field: "digest",
                }),
            ),
            (
                "config without size",
                bytes_of(&with(
                    oci_manifest_json(),
                    "/config",
                    json!({ "mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": digest(1) }),
                )),
                None,
                Error(ManifestError::MissingField {
                    location: "config".into(),
                    field: "size",
                }),
            ),
            (
                "index entry without mediaType",
                bytes_of(&with(
                    docker_hub_oci_index_json(),
                    "/manifests/3",
                    json!({ "digest": digest(1), "size": 1 }),
                )),
                None,
                Error(ManifestError::MissingField {
                    location: "manifests[3]".into(),
                    field: "mediaType",
                }),
            ),
            (
                "manifest without layers",
                bytes_of(&without(oci_manifest_json(), "layers")),
                Some(MEDIA_TYPE_OCI_MANIFEST),
                Error(ManifestError::MissingField {
                    location: "manifest".into(),
                    field: "layers",
                }),
            ),
            (
                "index content type with neither manifests nor other fields",
                br#"{"schemaVersion":2}"#.to_vec(),
                Some(MEDIA_TYPE_OCI_INDEX),
                Error(ManifestError::MissingField {
                    location: "index".into(),
                    field: "manifests",
                }),
            ),
            (
                "artifact with the empty config",
                bytes_of(&with(
                    oci_manifest_json(),
                    "/config",
                    descriptor_json(MEDIA_TYPE_OCI_EMPTY, 0x44, 2),
                )),
                None,
                Error(ManifestError::UnsupportedConfigMediaType {
                    digest: Box::new(parsed_digest(0x44)),
                    media_type: MEDIA_TYPE_OCI_EMPTY.into(),
                }),
            ),
            (
                "helm chart",
                bytes_of(&with(
                    oci_manifest_json(),
                    "/config",
                    descriptor_json("application/vnd.cncf.helm.config.v1+json", 0x45, 117),
                )),
                Some(MEDIA_TYPE_OCI_MANIFEST),
                Error(ManifestError::UnsupportedConfigMediaType {
                    digest: Box::new(parsed_digest(0x45)),
                    media_type: "application/vnd.cncf.helm.config.v1+json".into(),
                }),
            ),
            (
                "129 layers",
                bytes_of(&with(
                    oci_manifest_json(),
                    "/layers",
                    Value::Array(vec![descriptor_json(MEDIA_TYPE_OCI_LAYER_TAR_GZIP, 9, 9); 129]),
                )),
                None,
                Error(ManifestError::TooManyLayers {
                    count: 129,
                    max: 128,
                }),
            ),
            (
                "too many manifest annotations",
                bytes_of(&with(
                    oci_manifest_json(),
                    "/annotations",
                    Value::Object(
                        (0..257)
                            .map(|number| (format!("key{number}"), json!("value")))
                            .collect(),
                    ),
                )),
                None,
                Error(ManifestError::TooManyAnnotations {
                    location: "manifest".into(),
                    count: 257,
                    max: 256,
                }),
            ),
            (
                "unknown content type",
                bytes_of(&oci_manifest_json()),
                Some("application/vnd.oci.artifact.manifest.v1+json"),
                Error(ManifestError::UnsupportedMediaType {
                    media_type: "application/vnd.oci.artifact.manifest.v1+json".into(),
                }),
            ),
            (
                "unknown body mediaType behind a generic content type",
                bytes_of(&with(
                    oci_manifest_json(),
                    "/mediaType",
                    json!("application/vnd.example+json"),
                )),
                Some("application/octet-stream"),
                Error(ManifestError::UnsupportedMediaType {
                    media_type: "application/vnd.example+json".into(),
                }),
            ),
            (
                "both manifests and layers without any type",
                br#"{"schemaVersion":2,"manifests":[],"layers":[]}"#.to_vec(),
                None,
                Error(ManifestError::AmbiguousManifestKind),
            ),
            (
                "no type and no shape",
                br#"{"schemaVersion":2}"#.to_vec(),
                Some("application/json"),
                Error(ManifestError::UnknownManifestKind),
            ),
            (
                "not json",
                b"<html>rate limited</html>".to_vec(),
                Some(MEDIA_TYPE_OCI_MANIFEST),
                Error(ManifestError::InvalidJson {
                    document: "manifest",
                    reason: "expected value at line 1 column 1".into(),
                }),
            ),
            (
                "json that is not an object",
                b"[1,2,3]".to_vec(),
                None,
                Error(ManifestError::InvalidJson {
                    document: "manifest",
                    reason: "invalid type: sequence, expected a JSON object at line 1 column 0".into(),
                }),
            ),
            (
                // serde would read this as the fields in order; Go refuses it.
                "manifest written as an array of its fields",
                format!(
                    r#"[2,"{MEDIA_TYPE_OCI_MANIFEST}",{},[]]"#,
                    descriptor_json(MEDIA_TYPE_OCI_CONFIG, 1, 1)
                )
                .into_bytes(),
                None,
                Error(ManifestError::InvalidJson {
                    document: "manifest",
                    reason: "invalid type: sequence, expected a JSON object at line 1 column 0".into(),
                }),
            ),
            (
                "descriptor written as an array of its fields",
                format!(
                    r#"{{"schemaVersion":2,"config":["{MEDIA_TYPE_OCI_CONFIG}","{}",1],"layers":[]}}"#,
                    digest(1)
                )
                .into_bytes(),
                None,
                Error(ManifestError::InvalidJson {
                    document: "manifest",
                    reason: "invalid type: sequence, expected a JSON object at line 1 column 28".into(),
                }),
            ),
            (
                "duplicate config key",
                format!(
                    r#"{{"schemaVersion":2,"config":{0},"config":{0},"layers":[]}}"#,
                    format_args!(
                        r#"{{"mediaType":"{MEDIA_TYPE_OCI_CONFIG}","digest":"{}","size":1}}"#,
                        digest(1)
                    )
                )
                .into_bytes(),
                None,
                Error(ManifestError::InvalidJson {
                    document: "manifest",
                    reason: "duplicate field `config` at line 1 column 185".into(),
                }),
            ),
        ]
    }

    #[test]
    fn decode_manifest_table() {
        let limits = ManifestLimits::default();
        for (name, bytes, content_type, expect) in manifest_cases() {
            let decoded = decode_manifest(&bytes, content_type, &limits);
            match (expect, decoded) {
                (Expect::Image { media_type, layers }, Ok(Manifest::Image(image))) => {
                    assert_eq!(image.media_type, media_type, "{name}");
                    assert_eq!(image.layers.len(), layers, "{name}");
                }
                (
                    Expect::Index {
                        media_type,
                        entries,
                    },
                    Ok(Manifest::Index(index)),
                ) => {
                    assert_eq!(index.media_type, media_type, "{name}");
                    assert_eq!(index.manifests.len(), entries, "{name}");
                }
                (Expect::Error(expected), Err(error)) => assert_eq!(error, expected, "{name}"),
                (_, other) => panic!("{name}: unexpected result {other:?}"),
            }
        }
    }

    #[test]
    fn oci_manifest_fields() {
        let decoded = decode_manifest(
            &bytes_of(&oci_manifest_json()),
            Some(MEDIA_TYPE_OCI_MANIFEST),
            &ManifestLimits::default(),
        );
        let expected = ImageManifest {
            media_type: MEDIA_TYPE_OCI_MANIFEST.into(),
            config: Descriptor::new(MEDIA_TYPE_OCI_CONFIG, parsed_digest(0xc0), 1472),
            layers: vec![
                Descriptor::new(
                    MEDIA_TYPE_OCI_LAYER_TAR_GZIP,
                    parsed_digest(0x01),
                    3_623_807,
                ),
                Descriptor::new(MEDIA_TYPE_OCI_LAYER_TAR_ZSTD, parsed_digest(0x02), 1024),
            ],
            annotations: BTreeMap::from([(
                "org.opencontainers.image.created".to_owned(),
                "2024-05-01T00:00:00Z".to_owned(),
            )]),
        };
        assert_eq!(decoded, Ok(Manifest::Image(expected)));
    }

    #[test]
    fn docker_hub_index_selects_like_containerd() {
        let Ok(Manifest::Index(index)) = decode_manifest(
            &bytes_of(&docker_hub_oci_index_json()),
            Some(MEDIA_TYPE_OCI_INDEX),
            &ManifestLimits::default(),
        ) else {
            panic!("index decodes");
        };
        let attestation = &index.manifests[1];
        assert_eq!(
            attestation.platform,
            Some(Platform::new("unknown", "unknown"))
        );
        assert_eq!(
            attestation
                .annotations
                .get("vnd.docker.reference.type")
                .map(String::as_str),
            Some("attestation-manifest")
        );
        let selected = |wanted: &str| -> Vec<usize> {
            let matcher = PlatformMatcher::new(&Platform::parse(wanted).expect("valid platform"));
            matcher.order_candidates(index.platforms())
        };
        let first = |wanted: &str| selected(wanted).first().copied();
        assert_eq!(first("linux/amd64"), Some(0));
        assert_eq!(first("linux/arm64"), Some(6));
        assert_eq!(first("linux/arm/v7"), Some(5));
        assert_eq!(first("linux/386"), Some(8));
        assert_eq!(first("linux/mips64le"), None);
        assert_eq!(selected("linux/arm/v6"), vec![4, 2]);
        assert_eq!(selected("linux/arm64"), vec![6, 5, 4, 2]);
    }

    #[test]
    fn docker_manifest_list_platforms() {
        let Ok(Manifest::Index(index)) = decode_manifest(
            &bytes_of(&docker_manifest_list_json()),
            None,
            &ManifestLimits::default(),
        ) else {
            panic!("manifest list decodes");
        };
        let platforms: Vec<String> = index
            .platforms()
            .map(|platform| platform.map(ToString::to_string).unwrap_or_default())
            .collect();
        assert_eq!(
            platforms,
            [
                "linux/amd64",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm64/v8",
                "linux/386",
                "linux/ppc64le",
                "linux/s390x"
            ]
        );
        let matcher = PlatformMatcher::new(&Platform::parse("linux/arm/v8").expect("valid"));
        assert_eq!(matcher.order_candidates(index.platforms()), vec![2, 1]);
    }

    #[test]
    fn smaller_limits_are_enforced() {
        let limits = ManifestLimits {
            manifest_bytes_max: 100_000,
            index_entries_max: 3,
            annotations_max: 1,
            ..ManifestLimits::default()
        };
        assert_eq!(
            decode_manifest(&bytes_of(&docker_manifest_list_json()), None, &limits),
            Err(ManifestError::TooManyIndexEntries { count: 7, max: 3 })
        );
        let two_entries = with(
            docker_hub_oci_index_json(),
            "/manifests",
            json!([
                { "mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": digest(1), "size": 1 },
                {
                    "mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": digest(2), "size": 1,
                    "annotations": { "a": "1", "b": "2" }
                }
            ]),
        );
        assert_eq!(
            decode_manifest(&bytes_of(&two_entries), None, &limits),
            Err(ManifestError::TooManyAnnotations {
                location: "manifests[1]".into(),
                count: 2,
                max: 1,
            })
        );
        let exactly_at_limit = vec![b' '; 100_000];
        assert_eq!(
            decode_manifest(&exactly_at_limit, None, &limits),
            Err(ManifestError::InvalidJson {
                document: "manifest",
                reason: "EOF while parsing a value at line 1 column 100000".into(),
            })
        );
    }

    #[test]
    fn helper_tables() {
        assert_eq!(
            manifest_kind(MEDIA_TYPE_OCI_INDEX),
            Some(ManifestKind::Index)
        );
        assert_eq!(
            manifest_kind(MEDIA_TYPE_DOCKER_MANIFEST),
            Some(ManifestKind::Image)
        );
        assert_eq!(manifest_kind(MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST), None);
        for media_type in MANIFEST_ACCEPT_MEDIA_TYPES {
            assert!(manifest_kind(media_type).is_some(), "{media_type}");
        }
        assert!(is_image_config_media_type(MEDIA_TYPE_DOCKER_CONFIG));
        assert!(!is_image_config_media_type(MEDIA_TYPE_DOCKER_PLUGIN_CONFIG));
        assert!(!is_image_config_media_type(MEDIA_TYPE_OCI_EMPTY));
        assert_eq!(
            layer_compression(MEDIA_TYPE_DOCKER_LAYER_TAR_GZIP),
            Some(LayerCompression::Gzip)
        );
        assert_eq!(
            layer_compression(MEDIA_TYPE_OCI_LAYER_TAR),
            Some(LayerCompression::None)
        );
        assert_eq!(layer_compression(MEDIA_TYPE_OCI_DESCRIPTOR), None);
        assert_eq!(layer_compression(MEDIA_TYPE_OCI_LAYOUT_HEADER), None);
        assert!(is_non_distributable_layer(
            MEDIA_TYPE_DOCKER_FOREIGN_LAYER_TAR_GZIP
        ));
        assert!(!is_non_distributable_layer(MEDIA_TYPE_OCI_LAYER_TAR_GZIP));
        assert_eq!(
            media_type_essence("  Text/Plain ;charset=UTF-8"),
            "text/plain"
        );
    }

    fn alpine_config_json() -> Value {
        json!({
            "architecture": "arm",
            "variant": "v7",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
                "WorkingDir": "",
                "OnBuild": null,
                "Labels": null
            },
            "created": "2024-01-27T00:00:00Z",
            "history": [
                { "created": "2024-01-27T00:00:00Z", "created_by": "ADD file:abc in / " },
                { "created": "2024-01-27T00:00:00Z", "created_by": "CMD [\"/bin/sh\"]", "empty_layer": true }
            ],
            "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [digest(0xd1)] }
        })
    }

    fn oci_config_json() -> Value {
        json!({
            "created": "2024-05-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "User": "65532:65532",
                "ExposedPorts": { "8080/tcp": {}, "443/tcp": {} },
                "Env": ["A=1", "B=2"],
                "Entrypoint": ["/server"],
                "Cmd": ["--port", "8080"],
                "Volumes": { "/data": {} },
                "WorkingDir": "/srv",
                "Labels": { "org.opencontainers.image.source": "https://example.com/repo" },
                "StopSignal": "SIGTERM"
            },
            "rootfs": { "type": "layers", "diff_ids": [digest(0xd1), digest(0xd2)] }
        })
    }

    #[test]
    fn decode_config_fields() {
        let limits = ManifestLimits::default();
        let config = decode_config(&bytes_of(&oci_config_json()), &limits).expect("valid config");
        assert_eq!(
            config,
            ImageConfig {
                os: "linux".into(),
                architecture: "amd64".into(),
                variant: None,
                os_version: None,
                os_features: vec![],
                created: Some("2024-05-01T00:00:00Z".into()),
                user: "65532:65532".into(),
                env: vec!["A=1".into(), "B=2".into()],
                entrypoint: vec!["/server".into()],
                cmd: vec!["--port".into(), "8080".into()],
                working_dir: "/srv".into(),
                labels: BTreeMap::from([(
                    "org.opencontainers.image.source".to_owned(),
                    "https://example.com/repo".to_owned()
                )]),
                exposed_ports: vec!["443/tcp".into(), "8080/tcp".into()],
                volumes: vec!["/data".into()],
                stop_signal: Some("SIGTERM".into()),
                diff_ids: vec![parsed_digest(0xd1), parsed_digest(0xd2)],
            }
        );

        let alpine = decode_config(&bytes_of(&alpine_config_json()), &limits).expect("alpine");
        assert_eq!(alpine.platform().to_string(), "linux/arm/v7");
        assert_eq!(alpine.user, "");
        assert!(alpine.labels.is_empty());
        assert_eq!(alpine.cmd, vec!["/bin/sh".to_owned()]);
        assert_eq!(alpine.diff_ids.len(), 1);
    }

    #[test]
    fn decode_config_table() {
        let limits = ManifestLimits::default();
        let ok = |value: Value| -> Vec<u8> { bytes_of(&value) };
        let cases: Vec<(&str, Vec<u8>, Result<usize, ManifestError>)> = vec![
            ("oci config", ok(oci_config_json()), Ok(2)),
            ("docker config", ok(alpine_config_json()), Ok(1)),
            (
                "no layers at all",
                ok(with(oci_config_json(), "/rootfs/diff_ids", json!([]))),
                Ok(0),
            ),
            (
                "config object is null",
                ok(with(oci_config_json(), "/config", Value::Null)),
                Ok(2),
            ),
            (
                "entrypoint as a single string",
                ok(with(
                    oci_config_json(),
                    "/config/Entrypoint",
                    json!("/bin/sh -c"),
                )),
                Ok(2),
            ),
            (
                "missing os and architecture are read as empty",
                ok(without(without(oci_config_json(), "os"), "architecture")),
                Ok(2),
            ),
            (
                "rootfs type is not layers",
                ok(with(oci_config_json(), "/rootfs/type", json!("squashfs"))),
                Err(ManifestError::InvalidRootfsType {
                    found: "squashfs".into(),
                }),
            ),
            (
                "missing rootfs",
                ok(without(oci_config_json(), "rootfs")),
                Err(ManifestError::MissingField {
                    location: "image config".into(),
                    field: "rootfs",
                }),
            ),
            (
                "missing rootfs type",
                ok(with(
                    oci_config_json(),
                    "/rootfs",
                    json!({ "diff_ids": [] }),
                )),
                Err(ManifestError::MissingField {
                    location: "image config rootfs".into(),
                    field: "type",
                }),
            ),
            (
                "missing diff_ids",
                ok(with(
                    oci_config_json(),
                    "/rootfs",
                    json!({ "type": "layers" }),
                )),
                Err(ManifestError::MissingField {
                    location: "image config rootfs".into(),
                    field: "diff_ids",
                }),
            ),
            (
                "bad diff id",
                ok(with(
                    oci_config_json(),
                    "/rootfs/diff_ids/1",
                    json!("sha256:abc"),
                )),
                Err(ManifestError::InvalidDiffId {
                    index: 1,
                    diff_id: "sha256:abc".into(),
                    source: DigestError::WrongLength {
                        algorithm: crate::reference::DigestAlgorithm::Sha256,
                        expected: 64,
                        actual: 3,
                    },
                }),
            ),
            (
                "too many diff ids",
                ok(with(
                    oci_config_json(),
                    "/rootfs/diff_ids",
                    Value::Array(vec![json!(digest(1)); 129]),
                )),
                Err(ManifestError::TooManyDiffIds {
                    count: 129,
                    max: 128,
                }),
            ),
            (
                "too many labels",
                ok(with(
                    oci_config_json(),
                    "/config/Labels",
                    Value::Object(
                        (0..1025)
                            .map(|number| (format!("label{number}"), json!("")))
                            .collect(),
                    ),
                )),
                Err(ManifestError::TooManyLabels {
                    count: 1025,
                    max: 1024,
                }),
            ),
            (
                "env is not a list",
                br#"{"rootfs":{"type":"layers","diff_ids":[]},"config":{"Env":"A=1"}}"#.to_vec(),
                Err(ManifestError::InvalidJson {
                    document: "image config",
                    reason: "invalid type: string \"A=1\", expected a sequence at line 1 column 63"
                        .into(),
                }),
            ),
            (
                "rootfs written as an array",
                br#"{"rootfs":["layers",[]]}"#.to_vec(),
                Err(ManifestError::InvalidJson {
                    document: "image config",
                    reason: "invalid type: sequence, expected a JSON object at line 1 column 10"
                        .into(),
                }),
            ),
            (
                "truncated",
                b"{\"rootfs\":".to_vec(),
                Err(ManifestError::InvalidJson {
                    document: "image config",
                    reason: "EOF while parsing a value at line 1 column 10".into(),
                }),
            ),
        ];
        for (name, bytes, expected) in cases {
            let decoded = decode_config(&bytes, &limits).map(|config| config.diff_ids.len());
            assert_eq!(decoded, expected, "{name}");
        }
    }

    #[test]
    fn oversized_config_is_refused_before_parsing() {
        let limits = ManifestLimits::default();
        let bytes = vec![b'{'; 8 * 1024 * 1024 + 1];
        assert_eq!(
            decode_config(&bytes, &limits),
            Err(ManifestError::ConfigTooLarge {
                size_bytes: 8 * 1024 * 1024 + 1,
                max_bytes: 8 * 1024 * 1024,
            })
        );
    }

    #[test]
    fn error_messages_are_lowercase_and_bounded() {
        let limits = ManifestLimits::default();
        let long_type = format!("application/{}", "x".repeat(10_000));
        let errors = [
            decode_manifest(&bytes_of(&oci_manifest_json()), Some(&long_type), &limits)
                .expect_err("unknown type"),
            decode_manifest(
                &bytes_of(&with(
                    oci_manifest_json(),
                    "/layers/0/digest",
                    json!("z".repeat(10_000)),
                )),
                None,
                &limits,
            )
            .expect_err("bad digest"),
            decode_manifest(
                format!("{{\"schemaVersion\": \"{}\"}}", "9".repeat(10_000)).as_bytes(),
                None,
                &limits,
            )
            .expect_err("bad json"),
        ];
        for error in errors {
            let message = error.to_string();
            assert!(message.len() < 400, "{} bytes: {message}", message.len());
            assert!(!message.ends_with('.'), "{message}");
            assert!(
                message
                    .chars()
                    .next()
                    .is_some_and(|first| !first.is_uppercase()),
                "{message}"
            );
        }
        assert_eq!(
            ManifestError::Schema1NotSupported {
                evidence: "schemaVersion 1".into()
            }
            .to_string(),
            "schema 1 manifests are not supported (schemaVersion 1)"
        );
        assert_eq!(
            ManifestError::UnsupportedLayerMediaType {
                digest: Box::new(parsed_digest(0x02)),
                media_type: "application/vnd.oci.image.layer.v1.tar+foo".into(),
            }
            .to_string(),
            format!(
                "layer {} has media type \"application/vnd.oci.image.layer.v1.tar+foo\", which is not a pullable layer type",
                digest(0x02)
            )
        );
    }
}
