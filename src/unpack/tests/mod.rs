//! Tests of [`super::unpack_layer`] on layers built in code with the `tar`
//! crate, unpacked into temporary directories.
//!
//! - `extraction`: every entry type, metadata, whiteouts in both conventions,
//!   compression, diff ids, limits that legitimate layers meet.
//! - `hostile`: one test per attack; each checks the error names the entry and
//!   that nothing next to the target directory changed.
//! - `overlay_mount`: real overlayfs over two unpacked layers (root only).

mod extraction;
mod hostile;
mod overlay_mount;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::oci::manifest::LayerCompression;

use super::{UnpackError, UnpackOptions, UnpackOutcome, unpack_layer};

/// Builds a layer tar in memory. Paths are raw bytes so tests can use any
/// name, including ones the `tar` crate's path setters refuse.
pub(super) struct LayerBuilder {
    builder: tar::Builder<Vec<u8>>,
}

/// Owner, mode and mtime of an entry.
#[derive(Clone, Copy, Debug)]
pub(super) struct Attributes {
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: u64,
}

/// A temporary parent holding the target directory `root` and a `sentinel`
/// directory beside it, so tests can prove nothing outside `root` changed.
pub(super) struct Sandbox {
    parent: tempfile::TempDir,
}

pub(super) const FILE_ATTRIBUTES: Attributes = Attributes {
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: 1_600_000_000,
};

pub(super) const DIRECTORY_ATTRIBUTES: Attributes = Attributes {
    mode: 0o755,
    ..FILE_ATTRIBUTES
};

impl LayerBuilder {
    pub(super) fn new() -> LayerBuilder {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Complete);
        LayerBuilder { builder }
    }

    pub(super) fn file(self, path: &str, data: &[u8]) -> LayerBuilder {
        self.file_with(path.as_bytes(), data, FILE_ATTRIBUTES)
    }

    pub(super) fn file_with(
        mut self,
        path: &[u8],
        data: &[u8],
        attributes: Attributes,
    ) -> LayerBuilder {
        let mut header = gnu_header(tar::EntryType::Regular, attributes);
        header.set_size(data.len() as u64);
        self.builder
            .append_data(&mut header, Path::new(OsStr::from_bytes(path)), data)
            .expect("append file");
        self
    }

    pub(super) fn directory(self, path: &str) -> LayerBuilder {
        self.directory_with(path.as_bytes(), DIRECTORY_ATTRIBUTES)
    }

    pub(super) fn directory_with(mut self, path: &[u8], attributes: Attributes) -> LayerBuilder {
        let mut header = gnu_header(tar::EntryType::Directory, attributes);
        self.builder
            .append_data(&mut header, Path::new(OsStr::from_bytes(path)), &[][..])
            .expect("append directory");
        self
    }

    pub(super) fn symlink(self, path: &str, target: &str) -> LayerBuilder {
        self.link(
            tar::EntryType::Symlink,
            path.as_bytes(),
            target.as_bytes(),
            FILE_ATTRIBUTES,
        )
    }

    pub(super) fn hard_link(self, path: &str, target: &str) -> LayerBuilder {
        self.link(
            tar::EntryType::Link,
            path.as_bytes(),
            target.as_bytes(),
            FILE_ATTRIBUTES,
        )
    }

    pub(super) fn link(
        mut self,
        kind: tar::EntryType,
        path: &[u8],
        target: &[u8],
        attributes: Attributes,
    ) -> LayerBuilder {
        let mut header = gnu_header(kind, attributes);
        self.builder
            .append_link(
                &mut header,
                Path::new(OsStr::from_bytes(path)),
                Path::new(OsStr::from_bytes(target)),
            )
            .expect("append link");
        self
    }

    pub(super) fn device(
        mut self,
        kind: tar::EntryType,
        path: &str,
        major: u32,
        minor: u32,
    ) -> LayerBuilder {
        let mut header = gnu_header(kind, FILE_ATTRIBUTES);
        header.set_device_major(major).expect("gnu header");
        header.set_device_minor(minor).expect("gnu header");
        self.builder
            .append_data(&mut header, path, &[][..])
            .expect("append device");
        self
    }

    /// PAX records for the next entry.
    pub(super) fn pax(mut self, records: &[(&str, &[u8])]) -> LayerBuilder {
        self.builder
            .append_pax_extensions(records.iter().copied())
            .expect("append pax");
        self
    }

    /// An entry written exactly as given: `name` goes into the 100-byte name
    /// field unchecked (absolute paths, `..`), with a valid checksum.
    pub(super) fn raw(
        mut self,
        kind: tar::EntryType,
        name: &[u8],
        link_target: &[u8],
        data: &[u8],
    ) -> LayerBuilder {
        let mut header = gnu_header(kind, FILE_ATTRIBUTES);
        {
            let old = header.as_old_mut();
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name);
            old.linkname = [0; 100];
            old.linkname[..link_target.len()].copy_from_slice(link_target);
        }
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.builder.append(&header, data).expect("append raw");
        self
    }

    /// Raw bytes appended to the archive as they are.
    pub(super) fn raw_bytes(mut self, bytes: &[u8]) -> LayerBuilder {
        self.builder.get_mut().extend_from_slice(bytes);
        self
    }

    /// The archive with its two zero end blocks.
    pub(super) fn finish(self) -> Vec<u8> {
        self.builder.into_inner().expect("finish tar")
    }

    /// The archive without end blocks, for splicing.
    pub(super) fn finish_without_end(self) -> Vec<u8> {
        let mut bytes = self.finish();
        bytes.truncate(bytes.len() - 1024);
        bytes
    }
}

pub(super) fn gnu_header(kind: tar::EntryType, attributes: Attributes) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(attributes.mode);
    header.set_uid(attributes.uid);
    header.set_gid(attributes.gid);
    header.set_mtime(attributes.mtime);
    header.set_size(0);
    header
}

impl Sandbox {
    pub(super) fn new() -> Sandbox {
        let parent = tempfile::Builder::new()
            .prefix("unpack-test-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        fs::create_dir(parent.path().join("root")).expect("root dir");
        let sentinel = parent.path().join("sentinel");
        fs::create_dir(&sentinel).expect("sentinel dir");
        fs::write(sentinel.join("secret"), b"do not touch").expect("sentinel file");
        fs::create_dir(sentinel.join("nested")).expect("sentinel nested");
        fs::write(sentinel.join("nested/inner"), b"inner").expect("sentinel inner");
        Sandbox { parent }
    }

    pub(super) fn root(&self) -> PathBuf {
        self.parent.path().join("root")
    }

    pub(super) fn sentinel(&self) -> PathBuf {
        self.parent.path().join("sentinel")
    }

    pub(super) fn unpack(
        &self,
        layer: &[u8],
        options: &UnpackOptions,
    ) -> Result<UnpackOutcome, UnpackError> {
        unpack_layer(layer, LayerCompression::None, &self.root(), options)
    }

    /// Everything in the parent except the target directory and its contents:
    /// type, mode, owner, size, mtime, content or link target, and xattrs.
    pub(super) fn outside_listing(&self) -> BTreeMap<PathBuf, String> {
        let mut listing = BTreeMap::new();
        describe_tree(
            self.parent.path(),
            self.parent.path(),
            &self.root(),
            &mut listing,
        );
        listing
    }
}

fn describe_tree(base: &Path, path: &Path, skip: &Path, listing: &mut BTreeMap<PathBuf, String>) {
    // The target directory's own mtime moves as entries are created in it.
    if path == skip {
        return;
    }
    let metadata = fs::symlink_metadata(path).expect("lstat");
    let file_type = metadata.file_type();
    let content = if file_type.is_file() {
        format!("{:?}", fs::read(path).expect("read"))
    } else if file_type.is_symlink() {
        format!("-> {:?}", fs::read_link(path).expect("readlink"))
    } else {
        String::new()
    };
    let description = format!(
        "{:?} mode {:o} owner {}:{} size {} mtime {} rdev {} xattrs {:?} {content}",
        file_type,
        metadata.mode(),
        metadata.uid(),
        metadata.gid(),
        metadata.len(),
        metadata.mtime(),
        metadata.rdev(),
        xattr_names(path),
    );
    listing.insert(
        path.strip_prefix(base).expect("inside").to_owned(),
        description,
    );
    if file_type.is_dir() {
        for child in fs::read_dir(path).expect("read dir") {
            describe_tree(base, &child.expect("dir entry").path(), skip, listing);
        }
    }
}

/// The value of xattr `name` of `path` itself (not following a symlink).
pub(super) fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buffer = vec![0u8; 65536];
    match rustix::fs::lgetxattr(path, name, &mut buffer) {
        Ok(len) => {
            buffer.truncate(len);
            Some(buffer)
        }
        Err(rustix::io::Errno::NODATA) => None,
        Err(errno) => panic!("lgetxattr {path:?} {name}: {errno}"),
    }
}

pub(super) fn xattr_names(path: &Path) -> Vec<String> {
    let mut buffer = vec![0u8; 65536];
    let len = rustix::fs::llistxattr(path, &mut buffer).expect("llistxattr");
    let mut names: Vec<String> = buffer[..len]
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    names.sort();
    names
}

pub(super) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub(super) fn is_overlay_whiteout_device(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .is_ok_and(|metadata| metadata.file_type().is_char_device() && metadata.rdev() == 0)
}

pub(super) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

pub(super) fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).expect("zstd")
}
