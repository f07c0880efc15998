//! Layer unpacking: a layer blob stream in, one snapshot directory out.
//!
//! [`unpack_layer`] decompresses a layer (gzip, zstd or none, from the media
//! type and checked against the magic bytes), hashes the uncompressed tar
//! stream into the diff id while it extracts, and writes the entries into a
//! target directory that holds only this layer's changes: the overlayfs
//! lower-directory layout that containerd's overlayfs snapshotter also uses.
//! OCI whiteouts become overlayfs whiteouts there (see [`UnpackOptions`] for the
//! two conventions), so stacking the unpacked layers as `lowerdir`s gives the
//! image's root filesystem. Decompression and the diff id run on a thread of
//! their own, a few chunks ahead of the extraction (`read_ahead`).
//!
//! The archive is hostile until proven otherwise. Nothing it contains may
//! create, change or remove anything outside the target directory:
//! - every entry path is first checked as text (no absolute paths, no `..`,
//!   no NUL, bounded length), then its parent directory is opened with
//!   `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`
//!   relative to a descriptor of the target directory, and the last component
//!   is created with a `*at` call that never follows a symlink
//!   (`O_CREAT | O_EXCL | O_NOFOLLOW`, `mknodat`, `symlinkat`, `linkat`
//!   without `AT_SYMLINK_FOLLOW`);
//! - a path may not go through a symlink, not even one that points back
//!   inside: in the lower-directory layout a layer's symlinks are only
//!   meaningful in the merged view, and a real diff never has entries below a
//!   symlink of its own;
//! - a path appears at most once (two directory entries for one path merge),
//!   so nothing is replaced mid-archive;
//! - sizes are bounded: uncompressed bytes, entries, inodes, path bytes and
//!   the bytes of PAX headers, GNU long names and sparse maps.
//!
//! A rejected layer leaves the target directory in whatever state extraction
//! reached; the caller removes it. Nothing outside it has been touched.
//!
//! No file is fsynced here: the daemon's snapshot store syncs committed
//! snapshots with one `syncfs` in the background; a standalone caller can use
//! [`sync_filesystem_of`], far cheaper than a sync per file.

mod confined_fs;
mod decompress;
mod read_ahead;
pub use read_ahead::InputWaitHook;
mod tar_entries;
mod tar_stream;

#[cfg(test)]
mod tests;

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::oci::manifest::LayerCompression;
use crate::reference::{Digest, DigestAlgorithm, DigestHasher};

/// Limits and conventions for one [`unpack_layer`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpackOptions {
    /// The most bytes the uncompressed tar stream may have, padding included.
    /// This is what stops decompression bombs.
    pub uncompressed_bytes_max: u64,
    /// The most tar entries (files, directories, links, whiteouts, ...);
    /// PAX and GNU extension headers do not count.
    pub entries_max: u64,
    /// The most inodes the layer may create, including parent directories
    /// that the archive implies without listing them.
    pub inodes_max: u64,
    /// The longest entry path or link target, in bytes. Because components are
    /// separated by `/`, this also bounds the path depth to half of it.
    pub path_bytes_max: usize,
    /// The largest body of one PAX extended header, GNU long name or long
    /// link, or GNU sparse map, in bytes. These are held in memory.
    pub extended_header_bytes_max: u64,
    /// `true`: whiteouts are character devices 0/0 and opaque directories
    /// carry `trusted.overlay.opaque=y`, the convention of overlayfs mounted by
    /// root. `false`: the `userxattr` convention, for overlayfs mounted with
    /// `-o userxattr` (rootless): a whiteout is a zero-size regular file with
    /// the xattr `user.overlay.whiteout`, its directory carries
    /// `user.overlay.opaque=x` so that readdir looks for such files (Linux
    /// 6.7 and later), and an opaque directory carries `user.overlay.opaque=y`.
    pub privileged_whiteouts: bool,
    /// Whether to apply the archive's owners. `false` (when not root) leaves
    /// files owned by the caller, and [`UnpackOutcome::owners_skipped`] says
    /// whether any entry asked for another owner.
    pub chown: bool,
    /// Whether character and block device entries may be created. When
    /// `false`, such an entry fails the layer with
    /// [`UnpackError::DeviceNodeNotPermitted`]. FIFOs are always allowed.
    pub device_nodes_allowed: bool,
    /// When set, the diff id must equal this digest (which also picks the hash
    /// algorithm); otherwise the layer fails with
    /// [`UnpackError::DiffIdMismatch`].
    pub expected_diff_id: Option<Digest>,
}

/// What an unpacked layer turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpackOutcome {
    /// The digest of the whole uncompressed stream, tar padding included.
    pub diff_id: Digest,
    /// The length of the uncompressed stream.
    pub uncompressed_bytes: u64,
    /// Tar entries read, whiteouts included, extension headers not.
    pub entries: u64,
    /// Inodes created in the target directory (hard links add none).
    pub inodes: u64,
    /// Bytes of regular file data written (sparse holes not counted).
    pub size_bytes: u64,
    /// Whether some entry's owner was not applied because
    /// [`UnpackOptions::chown`] was off.
    pub owners_skipped: bool,
    /// Extended attributes that the filesystem refused as unsupported (or, when
    /// `chown` is off, as not permitted, such as `trusted.*`).
    pub xattrs_skipped: u64,
}

/// Why a layer could not be unpacked. Every variant about an entry carries
/// its path, lossily decoded and cut to a bounded length.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    #[error("layer media type says {declared} but the stream starts with {detected}")]
    CompressionMismatch {
        declared: &'static str,
        detected: &'static str,
    },
    #[error("cannot open target directory {path:?}")]
    OpenTargetDirectory {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("target directory {path:?} is not empty")]
    TargetDirectoryNotEmpty { path: PathBuf },
    #[error("reading the layer failed at entry {entry_path:?}")]
    ReadLayer {
        entry_path: String,
        #[source]
        source: io::Error,
    },
    #[error("layer is larger than {limit_bytes} bytes uncompressed (at entry {entry_path:?})")]
    UncompressedBytesLimit {
        entry_path: String,
        limit_bytes: u64,
    },
    #[error("layer has more than {limit} entries (at entry {entry_path:?})")]
    EntriesLimit { entry_path: String, limit: u64 },
    #[error("layer creates more than {limit} inodes (at entry {entry_path:?})")]
    InodesLimit { entry_path: String, limit: u64 },
    #[error("malformed tar archive at byte {offset_bytes}, entry {entry_path:?}: {reason}")]
    MalformedArchive {
        entry_path: String,
        offset_bytes: u64,
        reason: String,
    },
    #[error(
        "entry {entry_path:?} at byte {offset_bytes}: {kind} of {size_bytes} bytes is larger than the limit of {limit_bytes} bytes"
    )]
    ExtendedHeaderTooLarge {
        entry_path: String,
        offset_bytes: u64,
        kind: &'static str,
        size_bytes: u64,
        limit_bytes: u64,
    },
    #[error(
        "entry {entry_path:?}: {what} of {length_bytes} bytes is longer than the limit of {limit_bytes} bytes"
    )]
    PathTooLong {
        entry_path: String,
        what: &'static str,
        length_bytes: usize,
        limit_bytes: usize,
    },
    #[error("entry {entry_path:?}: {what} is absolute")]
    AbsolutePath {
        entry_path: String,
        what: &'static str,
    },
    #[error("entry {entry_path:?}: {what} has a '..' component")]
    ParentDirectoryComponent {
        entry_path: String,
        what: &'static str,
    },
    #[error("entry {entry_path:?}: {what} contains a NUL byte")]
    NulByte {
        entry_path: String,
        what: &'static str,
    },
    #[error("entry {entry_path:?}: unsupported tar entry type {type_flag:?}")]
    UnsupportedEntryType { entry_path: String, type_flag: char },
    #[error("entry {entry_path:?}: pax sparse files (GNU.sparse.*) are not supported")]
    UnsupportedSparseFormat { entry_path: String },
    #[error("entry {entry_path:?}: invalid whiteout: {reason}")]
    InvalidWhiteout {
        entry_path: String,
        reason: &'static str,
    },
    #[error("entry {entry_path:?}: the layer root can only be a directory")]
    RootNotDirectory { entry_path: String },
    #[error("entry {entry_path:?}: the path already exists in this layer")]
    DuplicateEntry { entry_path: String },
    #[error("entry {entry_path:?}: a parent path component is not a directory")]
    ParentNotDirectory { entry_path: String },
    #[error("entry {entry_path:?}: a parent path component is a symbolic link")]
    PathThroughSymlink { entry_path: String },
    #[error("entry {entry_path:?}: hard link target {target_path:?} {reason}")]
    HardLinkTarget {
        entry_path: String,
        target_path: String,
        reason: &'static str,
    },
    #[error("entry {entry_path:?}: device nodes are not permitted")]
    DeviceNodeNotPermitted { entry_path: String },
    #[error("entry {entry_path:?}: setting xattr {xattr_name:?} failed")]
    SetXattr {
        entry_path: String,
        xattr_name: String,
        #[source]
        source: io::Error,
    },
    #[error("entry {entry_path:?}: {operation} failed")]
    Filesystem {
        entry_path: String,
        operation: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("layer diff id is {received}, expected {expected}")]
    DiffIdMismatch { expected: Digest, received: Digest },
    #[error("syncing the filesystem of {path:?} failed")]
    SyncFilesystem {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Unpacks one layer into `target_directory`, which must exist and be empty,
/// and returns its diff id and counts.
///
/// `compression` comes from the layer's media type
/// ([`crate::oci::manifest::layer_compression`]); the first bytes of the
/// stream must agree with it. The whole stream is read, including anything
/// after the tar end-of-archive blocks, because the diff id covers it all.
///
/// On error the target directory holds a partial layer and must be removed by
/// the caller; nothing outside it was changed.
pub fn unpack_layer(
    reader: impl Read + Send,
    compression: LayerCompression,
    target_directory: &Path,
    options: &UnpackOptions,
) -> Result<UnpackOutcome, UnpackError> {
    unpack_layer_with_input_wait(reader, compression, target_directory, options, None)
}

/// [`unpack_layer`], telling `input_wait` whenever the thread that creates
/// the files has extracted everything decompressed so far and waits for more
/// (the pull gives its extraction slot back when the blob's reader waits for
/// the download too).
pub fn unpack_layer_with_input_wait(
    reader: impl Read + Send,
    compression: LayerCompression,
    target_directory: &Path,
    options: &UnpackOptions,
    input_wait: Option<&dyn InputWaitHook>,
) -> Result<UnpackOutcome, UnpackError> {
    let algorithm = options
        .expected_diff_id
        .as_ref()
        .map_or(DigestAlgorithm::Sha256, Digest::algorithm);
    let root = confined_fs::ConfinedRoot::open_empty(target_directory)?;
    let decompressed = decompress::decompressed_reader(reader, compression)?;
    let hashing = decompress::HashingReader::new(
        decompressed,
        DigestHasher::new(algorithm),
        options.uncompressed_bytes_max,
    );
    // Decompression and the diff id on one thread, the files on another.
    let (extracted, hashing) = read_ahead::read_ahead(hashing, input_wait, |tar_stream| {
        tar_entries::extract_layer(tar_stream, root, options)
    });
    let counts = extracted?;
    let (diff_id, uncompressed_bytes) = hashing.finish();
    if let Some(expected) = &options.expected_diff_id
        && *expected != diff_id
    {
        return Err(UnpackError::DiffIdMismatch {
            expected: expected.clone(),
            received: diff_id,
        });
    }
    Ok(UnpackOutcome {
        diff_id,
        uncompressed_bytes,
        entries: counts.entries,
        inodes: counts.inodes,
        size_bytes: counts.size_bytes,
        owners_skipped: counts.owners_skipped,
        xattrs_skipped: counts.xattrs_skipped,
    })
}

/// Flushes the whole filesystem that holds `path` (`syncfs`): one call after a
/// snapshot is unpacked makes every file in it durable.
pub fn sync_filesystem_of(path: &Path) -> Result<(), UnpackError> {
    crate::durable_fs::sync_filesystem(path).map_err(|source| UnpackError::SyncFilesystem {
        path: path.to_owned(),
        source,
    })
}

impl UnpackOptions {
    /// Root's options: owners applied, device nodes allowed, whiteouts as
    /// character devices and `trusted.overlay.*` xattrs. Same as `default()`.
    pub fn privileged() -> UnpackOptions {
        UnpackOptions {
            uncompressed_bytes_max: 64 << 30,
            entries_max: 1_000_000,
            inodes_max: 2_000_000,
            path_bytes_max: 4096,
            extended_header_bytes_max: 1 << 20,
            privileged_whiteouts: true,
            chown: true,
            device_nodes_allowed: true,
            expected_diff_id: None,
        }
    }

    /// Options for a caller without `CAP_CHOWN`, `CAP_MKNOD` and
    /// `CAP_SYS_ADMIN`: no owners, no device nodes, `user.overlay.*` whiteouts.
    pub fn unprivileged() -> UnpackOptions {
        UnpackOptions {
            privileged_whiteouts: false,
            chown: false,
            device_nodes_allowed: false,
            ..UnpackOptions::privileged()
        }
    }

    /// [`privileged`](Self::privileged) when the effective user is root,
    /// otherwise [`unprivileged`](Self::unprivileged).
    pub fn for_current_user() -> UnpackOptions {
        if rustix::process::geteuid().is_root() {
            UnpackOptions::privileged()
        } else {
            UnpackOptions::unprivileged()
        }
    }
}

impl Default for UnpackOptions {
    fn default() -> UnpackOptions {
        UnpackOptions::privileged()
    }
}

/// The most bytes of an entry path that an error echoes back.
const ENTRY_PATH_ECHO_BYTES_MAX: usize = 256;

/// An entry path (or any archive-supplied name) for an error message: lossy
/// UTF-8, cut to [`ENTRY_PATH_ECHO_BYTES_MAX`] bytes plus "…", so that a
/// hostile 1 MiB name does not become a 1 MiB log line.
fn echo_entry_path(path: &[u8]) -> String {
    let cut = &path[..path.len().min(ENTRY_PATH_ECHO_BYTES_MAX)];
    let mut echo = String::from_utf8_lossy(cut).into_owned();
    if cut.len() < path.len() {
        echo.push('…');
    }
    echo
}

/// Maps a read error of the layer stream, recognizing the uncompressed size
/// limit that [`decompress::HashingReader`] reports through `io::Error`.
fn read_error(entry_path: &[u8], source: io::Error) -> UnpackError {
    if let Some(limit) = decompress::uncompressed_limit_of(&source) {
        return UnpackError::UncompressedBytesLimit {
            entry_path: echo_entry_path(entry_path),
            limit_bytes: limit,
        };
    }
    UnpackError::ReadLayer {
        entry_path: echo_entry_path(entry_path),
        source,
    }
}
