//! Builds OCI and Docker schema 2 images in code, byte for byte the same on
//! every run, so tests can name digests and compare what the daemon unpacked
//! with what was built.
//!
//! Three builders, one per kind of object:
//! - [`LayerBuilder`] writes a layer tar from [`LayerEntry`] values (files,
//!   directories, symlinks, hardlinks, whiteouts, opaque whiteouts, fifos,
//!   devices, long names, xattrs) and compresses it ([`Compression`]). Paths
//!   go into the tar exactly as given, so tests can also build hostile layers
//!   (`../escape`, `/absolute`, duplicates).
//! - [`ImageBuilder`] writes the config and the manifest of one image.
//! - [`IndexBuilder`] writes an OCI index or a Docker manifest list over
//!   images, nested indexes and attestation manifests.
//!
//! Digests are strings in the `sha256:<hex>` form, as on the wire; the
//! harness does not depend on the daemon's own `Digest` type.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use flate2::GzBuilder;
use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The layer type of BuildKit's attestation manifests.
pub const IN_TOTO_LAYER: &str = "application/vnd.in-toto+json";

/// The `Accept` header value that lists the four manifest and index types.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// 2024-01-01T00:00:00Z: the mtime of every entry unless a test sets one.
pub const DEFAULT_MTIME_UNIX_SECONDS: u64 = 1_704_067_200;
pub const DEFAULT_CREATED: &str = "2024-01-01T00:00:00Z";

/// The zstd level used for `+zstd` layers; fixed so output is reproducible.
const ZSTD_LEVEL: i32 = 3;
/// The size of the name and linkname fields of a tar header.
const TAR_NAME_BYTES_MAX: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// How paths and link targets longer than 100 bytes are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LongNameFormat {
    /// PAX extended headers (`path`, `linkpath`), as Go's archive/tar and Docker write them.
    #[default]
    Pax,
    /// GNU `././@LongLink` entries of type `L` and `K`.
    Gnu,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ManifestFormat {
    #[default]
    Oci,
    Docker,
}

/// Mode, ownership, mtime and extended attributes of one tar entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryAttributes {
    /// Permission bits, including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime_unix_seconds: u64,
    /// Written as PAX `SCHILY.xattr.<name>` records.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File {
        contents: Vec<u8>,
    },
    Directory,
    Symlink {
        target: String,
    },
    /// Tar type `1`; `target` is another path in the archive.
    Hardlink {
        target: String,
    },
    Fifo,
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
}

/// One tar entry, written as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerEntry {
    pub path: String,
    pub kind: EntryKind,
    pub attributes: EntryAttributes,
}

#[derive(Clone, Debug, Default)]
pub struct LayerBuilder {
    entries: Vec<LayerEntry>,
    long_name_format: LongNameFormat,
}

/// A layer blob and the facts a test checks it against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltLayer {
    pub media_type: String,
    /// The blob as pushed (compressed unless the media type is plain tar).
    pub bytes: Vec<u8>,
    /// `sha256:` of `bytes`.
    pub digest: String,
    /// `sha256:` of `uncompressed_tar`.
    pub diff_id: String,
    /// The tar before compression; for non-tar layers (attestations), the blob itself.
    pub uncompressed_tar: Vec<u8>,
    /// Descriptor annotations in the manifest.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ImageBuilder {
    format: ManifestFormat,
    platform: Platform,
    created: String,
    user: Option<String>,
    env: Vec<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    working_dir: Option<String>,
    labels: BTreeMap<String, String>,
    manifest_annotations: BTreeMap<String, String>,
    layers: Vec<BuiltLayer>,
    history: Vec<HistoryEntry>,
}

/// One image: manifest, config and layers, ready to push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub config_bytes: Vec<u8>,
    pub config_digest: String,
    pub config_media_type: String,
    pub layers: Vec<BuiltLayer>,
    pub platform: Platform,
}

#[derive(Clone, Debug)]
pub struct IndexBuilder {
    format: ManifestFormat,
    entries: Vec<(serde_json::Value, IndexChild)>,
    annotations: BTreeMap<String, String>,
}

/// An index (or manifest list) and everything it points at, ready to push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltIndex {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub media_type: String,
    /// In the order of the index's `manifests`.
    pub children: Vec<IndexChild>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexChild {
    Image(BuiltImage),
    Index(BuiltIndex),
}

impl EntryAttributes {
    /// Root-owned, with the default mtime and no xattrs.
    pub fn with_mode(mode: u32) -> EntryAttributes {
        EntryAttributes {
            mode,
            uid: 0,
            gid: 0,
            mtime_unix_seconds: DEFAULT_MTIME_UNIX_SECONDS,
            xattrs: Vec::new(),
        }
    }

    pub fn owner(mut self, uid: u64, gid: u64) -> EntryAttributes {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn mtime(mut self, mtime_unix_seconds: u64) -> EntryAttributes {
        self.mtime_unix_seconds = mtime_unix_seconds;
        self
    }

    pub fn xattr(mut self, name: &str, value: &[u8]) -> EntryAttributes {
        self.xattrs.push((name.to_owned(), value.to_vec()));
        self
    }
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        LayerBuilder::default()
    }

    pub fn long_name_format(mut self, long_name_format: LongNameFormat) -> LayerBuilder {
        self.long_name_format = long_name_format;
        self
    }

    pub fn entry(mut self, entry: LayerEntry) -> LayerBuilder {
        self.entries.push(entry);
        self
    }

    /// A regular file, mode 0644, owned by root.
    pub fn file(self, path: &str, contents: &[u8]) -> LayerBuilder {
        self.file_with(path, contents, EntryAttributes::with_mode(0o644))
    }

    pub fn file_with(
        self,
        path: &str,
        contents: &[u8],
        attributes: EntryAttributes,
    ) -> LayerBuilder {
        self.kind(
            path,
            EntryKind::File {
                contents: contents.to_vec(),
            },
            attributes,
        )
    }

    /// A directory, mode 0755; a trailing `/` is added to the tar name when missing.
    pub fn directory(self, path: &str) -> LayerBuilder {
        self.directory_with(path, EntryAttributes::with_mode(0o755))
    }

    pub fn directory_with(self, path: &str, attributes: EntryAttributes) -> LayerBuilder {
        let path = if path.ends_with('/') {
            path.to_owned()
        } else {
            format!("{path}/")
        };
        self.kind(&path, EntryKind::Directory, attributes)
    }

    pub fn symlink(self, path: &str, target: &str) -> LayerBuilder {
        self.kind(
            path,
            EntryKind::Symlink {
                target: target.to_owned(),
            },
            EntryAttributes::with_mode(0o777),
        )
    }

    /// A hardlink at `path` to the earlier entry `target`.
    pub fn hardlink(self, path: &str, target: &str) -> LayerBuilder {
        self.kind(
            path,
            EntryKind::Hardlink {
                target: target.to_owned(),
            },
            EntryAttributes::with_mode(0o644),
        )
    }

    /// A whiteout that deletes `path` from lower layers: the empty file
    /// `<parent>/.wh.<name>`.
    pub fn whiteout(self, path: &str) -> LayerBuilder {
        let path = path.trim_end_matches('/');
        let whiteout_path = match path.rsplit_once('/') {
            Some((parent, name)) => format!("{parent}/.wh.{name}"),
            None => format!(".wh.{path}"),
        };
        self.file(&whiteout_path, b"")
    }

    /// An opaque whiteout that hides every lower-layer child of `directory`:
    /// the empty file `<directory>/.wh..wh..opq`.
    pub fn opaque_whiteout(self, directory: &str) -> LayerBuilder {
        let directory = directory.trim_end_matches('/');
        self.file(&format!("{directory}/.wh..wh..opq"), b"")
    }

    pub fn fifo(self, path: &str) -> LayerBuilder {
        self.kind(path, EntryKind::Fifo, EntryAttributes::with_mode(0o644))
    }

    pub fn char_device(self, path: &str, major: u32, minor: u32) -> LayerBuilder {
        self.kind(
            path,
            EntryKind::CharDevice { major, minor },
            EntryAttributes::with_mode(0o666),
        )
    }

    pub fn block_device(self, path: &str, major: u32, minor: u32) -> LayerBuilder {
        self.kind(
            path,
            EntryKind::BlockDevice { major, minor },
            EntryAttributes::with_mode(0o660),
        )
    }

    pub fn entries(&self) -> &[LayerEntry] {
        &self.entries
    }

    /// The uncompressed tar, ending with the two zero blocks.
    pub fn build_tar(&self) -> Vec<u8> {
        let mut archive = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            append_entry(&mut archive, entry, self.long_name_format)
                .unwrap_or_else(|error| panic!("write tar entry {}: {error}", entry.path));
        }
        archive.into_inner().expect("finish the tar")
    }

    /// The layer blob with its OCI media type for `compression`.
    pub fn build(&self, compression: Compression) -> BuiltLayer {
        BuiltLayer::from_tar(self.build_tar(), compression)
    }

    fn kind(self, path: &str, kind: EntryKind, attributes: EntryAttributes) -> LayerBuilder {
        self.entry(LayerEntry {
            path: path.to_owned(),
            kind,
            attributes,
        })
    }
}

impl BuiltLayer {
    /// Compresses any tar bytes, for layers a [`LayerBuilder`] cannot express.
    pub fn from_tar(uncompressed_tar: Vec<u8>, compression: Compression) -> BuiltLayer {
        let bytes = compress(&uncompressed_tar, compression);
        let media_type = match compression {
            Compression::None => OCI_LAYER_TAR,
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        };
        BuiltLayer {
            media_type: media_type.to_owned(),
            digest: sha256_digest(&bytes),
            diff_id: sha256_digest(&uncompressed_tar),
            bytes,
            uncompressed_tar,
            annotations: BTreeMap::new(),
        }
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn descriptor(&self) -> serde_json::Value {
        let mut descriptor = json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size(),
        });
        if !self.annotations.is_empty() {
            descriptor["annotations"] = json!(self.annotations);
        }
        descriptor
    }
}

impl Platform {
    pub fn new(os: &str, architecture: &str) -> Platform {
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
        }
    }

    pub fn with_variant(mut self, variant: &str) -> Platform {
        self.variant = Some(variant.to_owned());
        self
    }

    pub fn linux_amd64() -> Platform {
        Platform::new("linux", "amd64")
    }

    pub fn linux_arm64() -> Platform {
        Platform::new("linux", "arm64").with_variant("v8")
    }

    /// `unknown/unknown`, the platform of attestation manifests.
    pub fn unknown() -> Platform {
        Platform::new("unknown", "unknown")
    }

    fn to_json(&self) -> serde_json::Value {
        let mut platform = json!({
            "architecture": self.architecture,
            "os": self.os,
        });
        if let Some(variant) = &self.variant {
            platform["variant"] = json!(variant);
        }
        platform
    }
}

impl Default for ImageBuilder {
    fn default() -> ImageBuilder {
        ImageBuilder {
            format: ManifestFormat::Oci,
            platform: Platform::linux_amd64(),
            created: DEFAULT_CREATED.to_owned(),
            user: None,
            env: Vec::new(),
            entrypoint: None,
            cmd: None,
            working_dir: None,
            labels: BTreeMap::new(),
            manifest_annotations: BTreeMap::new(),
            layers: Vec::new(),
            history: Vec::new(),
        }
    }
}

impl ImageBuilder {
    /// An OCI image for linux/amd64 without layers.
    pub fn new() -> ImageBuilder {
        ImageBuilder::default()
    }

    pub fn format(mut self, format: ManifestFormat) -> ImageBuilder {
        self.format = format;
        self
    }

    pub fn platform(mut self, platform: Platform) -> ImageBuilder {
        self.platform = platform;
        self
    }

    pub fn created(mut self, created: &str) -> ImageBuilder {
        self.created = created.to_owned();
        self
    }

    /// `config.User`, for example `1000:1000` or `nobody`.
    pub fn user(mut self, user: &str) -> ImageBuilder {
        self.user = Some(user.to_owned());
        self
    }

    /// Adds one `KEY=value` to `config.Env`.
    pub fn env(mut self, variable: &str) -> ImageBuilder {
        self.env.push(variable.to_owned());
        self
    }

    pub fn entrypoint(mut self, arguments: &[&str]) -> ImageBuilder {
        self.entrypoint = Some(arguments.iter().map(ToString::to_string).collect());
        self
    }

    pub fn cmd(mut self, arguments: &[&str]) -> ImageBuilder {
        self.cmd = Some(arguments.iter().map(ToString::to_string).collect());
        self
    }

    pub fn working_dir(mut self, directory: &str) -> ImageBuilder {
        self.working_dir = Some(directory.to_owned());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> ImageBuilder {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// An annotation on the manifest itself.
    pub fn annotation(mut self, key: &str, value: &str) -> ImageBuilder {
        self.manifest_annotations
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Appends a layer (base layer first) and its history entry.
    pub fn layer(mut self, layer: BuiltLayer) -> ImageBuilder {
        self.history.push(HistoryEntry {
            created_by: format!("cri-imaged test layer {}", self.layers.len()),
            empty_layer: false,
        });
        self.layers.push(layer);
        self
    }

    /// A history entry with `empty_layer: true`, which has no diff_id.
    pub fn empty_layer_history(mut self, created_by: &str) -> ImageBuilder {
        self.history.push(HistoryEntry {
            created_by: created_by.to_owned(),
            empty_layer: true,
        });
        self
    }

    pub fn build(self) -> BuiltImage {
        let (manifest_media_type, config_media_type) = match self.format {
            ManifestFormat::Oci => (OCI_MANIFEST, OCI_CONFIG),
            ManifestFormat::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG),
        };
        let mut layers = self.layers;
        if self.format == ManifestFormat::Docker {
            // The two gzip types are interchangeable; a Docker manifest uses its own.
            for layer in &mut layers {
                if layer.media_type == OCI_LAYER_GZIP {
                    layer.media_type = DOCKER_LAYER_GZIP.to_owned();
                }
            }
        }

        let mut container_config = serde_json::Map::new();
        if let Some(user) = &self.user {
            container_config.insert("User".to_owned(), json!(user));
        }
        if !self.env.is_empty() {
            container_config.insert("Env".to_owned(), json!(self.env));
        }
        if let Some(entrypoint) = &self.entrypoint {
            container_config.insert("Entrypoint".to_owned(), json!(entrypoint));
        }
        if let Some(cmd) = &self.cmd {
            container_config.insert("Cmd".to_owned(), json!(cmd));
        }
        if let Some(working_dir) = &self.working_dir {
            container_config.insert("WorkingDir".to_owned(), json!(working_dir));
        }
        if !self.labels.is_empty() {
            container_config.insert("Labels".to_owned(), json!(self.labels));
        }
        let history: Vec<serde_json::Value> = self
            .history
            .iter()
            .map(|entry| {
                let mut value = json!({
                    "created": self.created,
                    "created_by": entry.created_by,
                });
                if entry.empty_layer {
                    value["empty_layer"] = json!(true);
                }
                value
            })
            .collect();
        let diff_ids: Vec<&str> = layers.iter().map(|layer| layer.diff_id.as_str()).collect();
        let mut config = json!({
            "created": self.created,
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "config": container_config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": history,
        });
        if let Some(variant) = &self.platform.variant {
            config["variant"] = json!(variant);
        }
        let config_bytes = serde_json::to_vec(&config).expect("encode the image config");
        let config_digest = sha256_digest(&config_bytes);

        let layer_descriptors: Vec<serde_json::Value> =
            layers.iter().map(BuiltLayer::descriptor).collect();
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_media_type,
            "config": {
                "mediaType": config_media_type,
                "digest": config_digest,
                "size": config_bytes.len(),
            },
            "layers": layer_descriptors,
        });
        if !self.manifest_annotations.is_empty() {
            manifest["annotations"] = json!(self.manifest_annotations);
        }
        let manifest_bytes = serde_json::to_vec(&manifest).expect("encode the manifest");
        BuiltImage {
            manifest_digest: sha256_digest(&manifest_bytes),
            manifest_bytes,
            manifest_media_type: manifest_media_type.to_owned(),
            config_bytes,
            config_digest,
            config_media_type: config_media_type.to_owned(),
            layers,
            platform: self.platform,
        }
    }
}

impl BuiltImage {
    pub fn manifest_size(&self) -> u64 {
        self.manifest_bytes.len() as u64
    }

    /// The ImageID: the digest of the config.
    pub fn image_id(&self) -> &str {
        &self.config_digest
    }

    pub fn diff_ids(&self) -> Vec<String> {
        self.layers
            .iter()
            .map(|layer| layer.diff_id.clone())
            .collect()
    }

    pub fn chain_ids(&self) -> Vec<String> {
        chain_ids(&self.diff_ids())
    }

    /// Manifest, config and layer sizes added up.
    pub fn total_size(&self) -> u64 {
        self.manifest_size()
            + self.config_bytes.len() as u64
            + self.layers.iter().map(BuiltLayer::size).sum::<u64>()
    }
}

impl IndexBuilder {
    pub fn new(format: ManifestFormat) -> IndexBuilder {
        IndexBuilder {
            format,
            entries: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// An entry for `image` with the image's own platform.
    pub fn manifest(self, image: &BuiltImage) -> IndexBuilder {
        let platform = image.platform.clone();
        self.manifest_with_platform(image, Some(platform))
    }

    /// An entry for `image` with any platform, or none at all.
    pub fn manifest_with_platform(
        mut self,
        image: &BuiltImage,
        platform: Option<Platform>,
    ) -> IndexBuilder {
        let mut descriptor = json!({
            "mediaType": image.manifest_media_type,
            "digest": image.manifest_digest,
            "size": image.manifest_size(),
        });
        if let Some(platform) = platform {
            descriptor["platform"] = platform.to_json();
        }
        self.entries
            .push((descriptor, IndexChild::Image(image.clone())));
        self
    }

    /// A BuildKit-style attestation manifest for `subject`: platform
    /// `unknown/unknown`, one in-toto layer, and the
    /// `vnd.docker.reference.*` annotations that point at the subject.
    pub fn attestation_for(mut self, subject: &BuiltImage) -> IndexBuilder {
        let attestation = attestation_manifest(subject);
        let descriptor = json!({
            "mediaType": attestation.manifest_media_type,
            "digest": attestation.manifest_digest,
            "size": attestation.manifest_size(),
            "platform": Platform::unknown().to_json(),
            "annotations": {
                "vnd.docker.reference.digest": subject.manifest_digest,
                "vnd.docker.reference.type": "attestation-manifest",
            },
        });
        self.entries
            .push((descriptor, IndexChild::Image(attestation)));
        self
    }

    /// A nested index.
    pub fn index(mut self, index: &BuiltIndex, platform: Option<Platform>) -> IndexBuilder {
        let mut descriptor = json!({
            "mediaType": index.media_type,
            "digest": index.digest,
            "size": index.bytes.len(),
        });
        if let Some(platform) = platform {
            descriptor["platform"] = platform.to_json();
        }
        self.entries
            .push((descriptor, IndexChild::Index(index.clone())));
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> IndexBuilder {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn build(self) -> BuiltIndex {
        let media_type = match self.format {
            ManifestFormat::Oci => OCI_INDEX,
            ManifestFormat::Docker => DOCKER_MANIFEST_LIST,
        };
        let (descriptors, children): (Vec<_>, Vec<_>) = self.entries.into_iter().unzip();
        let mut index = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": descriptors,
        });
        if !self.annotations.is_empty() {
            index["annotations"] = json!(self.annotations);
        }
        let bytes = serde_json::to_vec(&index).expect("encode the index");
        BuiltIndex {
            digest: sha256_digest(&bytes),
            bytes,
            media_type: media_type.to_owned(),
            children,
        }
    }
}

impl BuiltIndex {
    /// Every image below this index, depth first, attestations included.
    pub fn images(&self) -> Vec<&BuiltImage> {
        let mut images = Vec::new();
        for child in &self.children {
            match child {
                IndexChild::Image(image) => images.push(image),
                IndexChild::Index(index) => images.extend(index.images()),
            }
        }
        images
    }

    /// The first image for `platform`, searching nested indexes too.
    pub fn image_for(&self, platform: &Platform) -> Option<&BuiltImage> {
        self.images()
            .into_iter()
            .find(|image| image.platform == *platform)
    }
}

/// `sha256:<lowercase hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut digest = String::with_capacity(7 + 64);
    digest.push_str("sha256:");
    for byte in hash.iter() {
        digest.push_str(&format!("{byte:02x}"));
    }
    digest
}

/// ChainIDs of a diff_id stack, base first (spec section 5.3).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain_ids: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let chain_id = match chain_ids.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        chain_ids.push(chain_id);
    }
    chain_ids
}

pub fn compress(bytes: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::None => bytes.to_vec(),
        Compression::Gzip => {
            // GzBuilder writes mtime 0 and no file name, so output is stable.
            let mut encoder = GzBuilder::new().write(Vec::new(), flate2::Compression::default());
            encoder.write_all(bytes).expect("gzip into memory");
            encoder.finish().expect("finish gzip")
        }
        Compression::Zstd => zstd::encode_all(bytes, ZSTD_LEVEL).expect("zstd into memory"),
    }
}

/// The inverse of [`compress`], for tests that inspect a blob.
pub fn decompress(bytes: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::None => bytes.to_vec(),
        Compression::Gzip => {
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut decoded)
                .expect("gunzip");
            decoded
        }
        Compression::Zstd => zstd::decode_all(bytes).expect("zstd decode"),
    }
}

#[derive(Clone, Debug)]
struct HistoryEntry {
    created_by: String,
    empty_layer: bool,
}

fn attestation_manifest(subject: &BuiltImage) -> BuiltImage {
    let subject_hex = subject
        .manifest_digest
        .strip_prefix("sha256:")
        .expect("sha256 digest");
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://spdx.dev/Document",
        "subject": [{ "name": "cri-imaged-test", "digest": { "sha256": subject_hex } }],
        "predicate": { "spdxVersion": "SPDX-2.3" },
    });
    let bytes = serde_json::to_vec(&statement).expect("encode the attestation");
    let digest = sha256_digest(&bytes);
    let layer = BuiltLayer {
        media_type: IN_TOTO_LAYER.to_owned(),
        diff_id: digest.clone(),
        digest,
        uncompressed_tar: bytes.clone(),
        bytes,
        annotations: BTreeMap::from([(
            "in-toto.io/predicate-type".to_owned(),
            "https://spdx.dev/Document".to_owned(),
        )]),
    };
    ImageBuilder::new()
        .platform(Platform::unknown())
        .layer(layer)
        .build()
}

fn append_entry(
    archive: &mut tar::Builder<Vec<u8>>,
    entry: &LayerEntry,
    long_name_format: LongNameFormat,
) -> io::Result<()> {
    let attributes = &entry.attributes;
    let (entry_type, link_target, contents, device): (_, Option<&str>, &[u8], _) = match &entry.kind
    {
        EntryKind::File { contents } => (tar::EntryType::Regular, None, contents, None),
        EntryKind::Directory => (tar::EntryType::Directory, None, &[], None),
        EntryKind::Symlink { target } => (tar::EntryType::Symlink, Some(target), &[], None),
        EntryKind::Hardlink { target } => (tar::EntryType::Link, Some(target), &[], None),
        EntryKind::Fifo => (tar::EntryType::Fifo, None, &[], None),
        EntryKind::CharDevice { major, minor } => {
            (tar::EntryType::Char, None, &[], Some((*major, *minor)))
        }
        EntryKind::BlockDevice { major, minor } => {
            (tar::EntryType::Block, None, &[], Some((*major, *minor)))
        }
    };

    let path = entry.path.as_bytes();
    let link_target = link_target.map(str::as_bytes);
    let mut pax_records: Vec<(String, Vec<u8>)> = attributes
        .xattrs
        .iter()
        .map(|(name, value)| (format!("SCHILY.xattr.{name}"), value.clone()))
        .collect();
    match long_name_format {
        LongNameFormat::Gnu => {
            if path.len() > TAR_NAME_BYTES_MAX {
                append_gnu_long_name(archive, tar::EntryType::GNULongName, path)?;
            }
            if let Some(target) = link_target.filter(|t| t.len() > TAR_NAME_BYTES_MAX) {
                append_gnu_long_name(archive, tar::EntryType::GNULongLink, target)?;
            }
        }
        LongNameFormat::Pax => {
            if path.len() > TAR_NAME_BYTES_MAX {
                pax_records.push(("path".to_owned(), path.to_vec()));
            }
            if let Some(target) = link_target.filter(|t| t.len() > TAR_NAME_BYTES_MAX) {
                pax_records.push(("linkpath".to_owned(), target.to_vec()));
            }
        }
    }
    if !pax_records.is_empty() {
        append_pax_header(archive, &pax_records)?;
    }

    let mut header = match long_name_format {
        LongNameFormat::Gnu => tar::Header::new_gnu(),
        LongNameFormat::Pax => tar::Header::new_ustar(),
    };
    // Names are copied byte for byte (truncated when an extension carries the
    // full name), so tests can put `..` or absolute paths into a layer.
    copy_truncated(&mut header.as_old_mut().name, path);
    if let Some(target) = link_target {
        copy_truncated(&mut header.as_old_mut().linkname, target);
    }
    header.set_entry_type(entry_type);
    header.set_mode(attributes.mode);
    header.set_uid(attributes.uid);
    header.set_gid(attributes.gid);
    header.set_mtime(attributes.mtime_unix_seconds);
    header.set_size(contents.len() as u64);
    if let Some((major, minor)) = device {
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
    }
    header.set_cksum();
    archive.append(&header, contents)
}

fn append_gnu_long_name(
    archive: &mut tar::Builder<Vec<u8>>,
    entry_type: tar::EntryType,
    name: &[u8],
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    copy_truncated(&mut header.as_old_mut().name, b"././@LongLink");
    header.set_entry_type(entry_type);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    // The name is NUL-terminated inside the entry's data.
    header.set_size(name.len() as u64 + 1);
    header.set_cksum();
    archive.append(&header, name.chain(&[0_u8][..]))
}

/// A PAX extended header (type `x`) applying `records` to the next entry.
fn append_pax_header(
    archive: &mut tar::Builder<Vec<u8>>,
    records: &[(String, Vec<u8>)],
) -> io::Result<()> {
    let mut data = Vec::new();
    for (key, value) in records {
        // Each record is "<length> <key>=<value>\n", where <length> counts
        // the whole record including its own digits.
        let without_length = key.len() + value.len() + 3;
        let mut length = without_length + 1;
        while without_length + length.to_string().len() != length {
            length = without_length + length.to_string().len();
        }
        data.extend_from_slice(format!("{length} {key}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut header = tar::Header::new_ustar();
    copy_truncated(&mut header.as_old_mut().name, b"././@PaxHeader");
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    header.set_cksum();
    archive.append(&header, data.as_slice())
}

fn copy_truncated(field: &mut [u8], value: &[u8]) {
    let length = value.len().min(field.len());
    field[..length].copy_from_slice(&value[..length]);
}
