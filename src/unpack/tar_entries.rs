//! Applies tar entries to the target directory: path checks, whiteouts and
//! opaque directories, hard links, and metadata.
//!
//! Each entry goes through three steps. Its path is checked as text (no NUL,
//! not absolute, no `..`; `.` and empty components dropped). Its parent
//! directory is opened through [`ConfinedRoot`], creating missing parents
//! (mode 0755) the way containerd does. Its last component is created with a
//! call that fails if the name exists and never follows a symlink; "exists"
//! means a duplicate entry, except that a directory entry over an existing
//! directory only updates its attributes.
//!
//! Directory owner, mode and mtime are applied after all entries, deepest
//! first, so that creating children does not move a parent's mtime and a
//! read-only directory mode does not block its own children when unpacking
//! without root. The memory this takes is bounded by `entries_max` times
//! `path_bytes_max`; directory xattrs are set at once so they are not held. Opaque markers and the `userxattr` whiteout markers
//! are also set at the end, when every whiteout of a directory is known.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

use super::confined_fs::{self, ConfinedRoot};
use super::tar_stream::{EntryHeader, EntryKind, SparseMap, StreamLimits, TarStream, Timestamp};
use super::{UnpackError, UnpackOptions, echo_entry_path};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// `.wh..wh.`: AUFS metadata at the layer root (`.wh..wh.plnk`,
/// `.wh..wh.aufs`, `.wh..wh.orph`), never part of the image.
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

const TRUSTED_OVERLAY_PREFIX: &[u8] = b"trusted.overlay.";
const USER_OVERLAY_PREFIX: &[u8] = b"user.overlay.";
const TRUSTED_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const USER_OPAQUE_XATTR: &str = "user.overlay.opaque";
const USER_WHITEOUT_XATTR: &str = "user.overlay.whiteout";

#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) entries: u64,
    pub(super) inodes: u64,
    pub(super) size_bytes: u64,
    pub(super) owners_skipped: bool,
    pub(super) xattrs_skipped: u64,
}

/// Reads every entry of the tar stream into `root`, then the rest of the
/// stream (so that a hashing reader under it has seen every byte), and
/// returns what was created.
pub(super) fn extract_layer<R: BufRead>(
    reader: R,
    root: ConfinedRoot,
    options: &UnpackOptions,
) -> Result<Counts, UnpackError> {
    let mut stream = TarStream::new(
        reader,
        StreamLimits {
            extended_header_bytes_max: options.extended_header_bytes_max,
            path_bytes_max: options.path_bytes_max,
        },
    );
    let mut extractor = Extractor::new(root, options);
    while let Some(entry) = stream.next_entry()? {
        extractor.apply(entry, &mut stream)?;
        if extractor.counts.entries == 1 {
            // The crash drills stop here with part of the layer on disk.
            crate::fail_point!(
                "unpack::mid_extraction",
                UnpackError::ReadLayer {
                    entry_path: String::new(),
                    source: std::io::Error::other("fail point unpack::mid_extraction"),
                }
            );
        }
    }
    stream.drain_to_end()?;
    extractor.finish()?;
    Ok(extractor.counts)
}

struct Extractor<'o> {
    root: ConfinedRoot,
    options: &'o UnpackOptions,
    counts: Counts,
    /// The parent directory of the previous entry. Entries of one directory
    /// usually follow each other, so this saves an `openat2` per entry. It
    /// stays correct because nothing can replace a directory once created:
    /// every later entry for that path either merges (a directory) or fails.
    cached_parent: Option<(Vec<u8>, OwnedFd)>,
    deferred_directories: Vec<DeferredDirectory>,
    opaque_directories: HashSet<Vec<u8>>,
    /// `userxattr` whiteouts by directory, when `privileged_whiteouts` is off.
    user_xattr_whiteouts: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    effective_uid: u32,
    effective_gid: u32,
    /// What a new file gets from its creation alone, when that is known;
    /// see [`CreationDefaults`].
    creation_defaults: Option<CreationDefaults>,
}

/// A new file is owned by the effective uid and gid and gets the mode it is
/// created with, minus the umask, unless its directory passes something down:
/// a setgid directory its group, a default ACL its permissions. During an
/// unpack every directory below the root is ours, with modes that are set
/// only in [`Extractor::finish`], so it is enough that the root passes
/// nothing down. Then a file whose owner and mode need no change skips the
/// `fchown` and `fchmod`, two journalled inode updates per file.
#[derive(Clone, Copy)]
struct CreationDefaults {
    umask: u32,
}

impl CreationDefaults {
    fn of_root(root: &ConfinedRoot) -> Option<CreationDefaults> {
        let stat = rustix::fs::fstat(root.as_fd()).ok()?;
        if stat.st_mode & 0o2000 != 0 {
            return None;
        }
        match rustix::fs::fgetxattr(root.as_fd(), "system.posix_acl_default", &mut [0u8; 0]) {
            Err(Errno::NODATA | Errno::OPNOTSUPP) => {}
            _ => return None,
        }
        Some(CreationDefaults {
            umask: process_umask()?,
        })
    }

    /// The permission bits a file created with `mode` gets, if they are all
    /// of `mode`: no setuid, setgid or sticky bit (the archive's, applied by
    /// `fchmod`), none the umask takes away.
    fn exact_creation_mode(self, mode: u32) -> Option<u32> {
        (mode & 0o7000 == 0 && mode & self.umask == 0).then_some(mode)
    }
}

/// The umask, from `/proc/self/status` (Linux 4.7+): `umask(2)` can only be
/// read by setting it, which would race with other threads creating files.
/// Read once per layer (a few microseconds), so a umask changed between
/// unpacks is seen.
fn process_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// A directory entry's attributes, applied in [`Extractor::finish`].
struct DeferredDirectory {
    path: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timestamp,
}

/// Where an xattr goes: an open file or directory, or a name in an open
/// directory (symlinks, devices and FIFOs, which must not be opened).
#[derive(Clone, Copy)]
enum XattrTarget<'a> {
    Open(BorrowedFd<'a>),
    Named {
        directory: BorrowedFd<'a>,
        name: &'a [u8],
    },
}

impl<'o> Extractor<'o> {
    fn new(root: ConfinedRoot, options: &'o UnpackOptions) -> Extractor<'o> {
        let creation_defaults = CreationDefaults::of_root(&root);
        Extractor {
            root,
            options,
            counts: Counts::default(),
            cached_parent: None,
            deferred_directories: Vec::new(),
            opaque_directories: HashSet::new(),
            user_xattr_whiteouts: HashMap::new(),
            effective_uid: rustix::process::geteuid().as_raw(),
            effective_gid: rustix::process::getegid().as_raw(),
            creation_defaults,
        }
    }

    fn apply<R: std::io::BufRead>(
        &mut self,
        entry: EntryHeader,
        stream: &mut TarStream<R>,
    ) -> Result<(), UnpackError> {
        self.counts.entries += 1;
        if self.counts.entries > self.options.entries_max {
            return Err(UnpackError::EntriesLimit {
                entry_path: echo_entry_path(&entry.path),
                limit: self.options.entries_max,
            });
        }
        let path = normalize_path(&entry.path, "path", &entry.path)?;
        if path.starts_with(WHITEOUT_META_PREFIX) && path != OPAQUE_MARKER {
            return Ok(());
        }
        if path.is_empty() {
            // The layer root is the snapshot directory, whose attributes
            // belong to the snapshot store; like containerd, a root entry
            // changes nothing.
            return match entry.kind {
                EntryKind::Directory => Ok(()),
                _ => Err(UnpackError::RootNotDirectory {
                    entry_path: echo_entry_path(&entry.path),
                }),
            };
        }
        let (parent, name) = split_last_component(&path);
        if parent
            .split(|byte| *byte == b'/')
            .any(|component| component.starts_with(WHITEOUT_PREFIX))
        {
            return Err(UnpackError::InvalidWhiteout {
                entry_path: echo_entry_path(&entry.path),
                reason: "a whiteout name is used as a directory",
            });
        }
        if name.starts_with(WHITEOUT_PREFIX) {
            return self.apply_whiteout(&entry, parent, name);
        }
        let (parent_path, parent_fd) = self.parent_directory(parent, &entry.path)?;
        let applied = self.create_entry(&entry, &path, parent_fd.as_fd(), name, stream);
        self.cached_parent = Some((parent_path, parent_fd));
        applied
    }

    fn create_entry<R: std::io::BufRead>(
        &mut self,
        entry: &EntryHeader,
        path: &[u8],
        parent: BorrowedFd<'_>,
        name: &[u8],
        stream: &mut TarStream<R>,
    ) -> Result<(), UnpackError> {
        let entry_path = entry.path.as_slice();
        match entry.kind {
            EntryKind::Regular => {
                // Created with its final mode when that is exact and nothing
                // else (xattrs) needs it writable first; a new file is
                // opened for writing whatever its mode says.
                let exact_mode = self
                    .creation_defaults
                    .filter(|_| entry.xattrs.is_empty())
                    .and_then(|defaults| defaults.exact_creation_mode(entry.mode));
                let fd = rustix::fs::openat(
                    parent,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(exact_mode.unwrap_or(0o600)),
                )
                .map_err(|errno| creation_error(entry_path, "create file", errno))?;
                self.count_inode(entry_path)?;
                let file = File::from(fd);
                match &entry.sparse {
                    None => self.write_data(&file, entry_path, stream)?,
                    Some(sparse) => self.write_sparse_data(&file, sparse, entry_path, stream)?,
                }
                self.apply_metadata_to_open(file.as_fd(), entry, exact_mode.is_some())
            }
            EntryKind::Directory => {
                match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) => self.count_inode(entry_path)?,
                    Err(Errno::EXIST) => {
                        let existing = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(|errno| filesystem_error(entry_path, "stat", errno))?;
                        if FileType::from_raw_mode(existing.st_mode) != FileType::Directory {
                            return Err(UnpackError::DuplicateEntry {
                                entry_path: echo_entry_path(entry_path),
                            });
                        }
                    }
                    Err(errno) => {
                        return Err(filesystem_error(entry_path, "create directory", errno));
                    }
                }
                // Xattrs go on now (they move neither mtime nor permissions,
                // and a directory's chown keeps them), so only a few fixed-size
                // fields wait for `finish`.
                if !entry.xattrs.is_empty() {
                    let directory =
                        confined_fs::open_directory_beneath(parent, name, OFlags::RDONLY)
                            .map_err(|errno| parent_error(entry_path, errno))?;
                    for (xattr_name, value) in &entry.xattrs {
                        self.set_xattr(
                            XattrTarget::Open(directory.as_fd()),
                            xattr_name,
                            value,
                            entry_path,
                        )?;
                    }
                }
                self.deferred_directories.push(DeferredDirectory {
                    path: path.to_vec(),
                    mode: entry.mode,
                    uid: entry.uid,
                    gid: entry.gid,
                    mtime: entry.mtime,
                });
                Ok(())
            }
            EntryKind::Symlink => {
                if entry.link_target.contains(&0) {
                    return Err(UnpackError::NulByte {
                        entry_path: echo_entry_path(entry_path),
                        what: "symlink target",
                    });
                }
                rustix::fs::symlinkat(entry.link_target.as_slice(), parent, name)
                    .map_err(|errno| creation_error(entry_path, "create symlink", errno))?;
                self.count_inode(entry_path)?;
                self.apply_metadata_to_name(parent, name, entry)
            }
            EntryKind::HardLink => self.create_hard_link(entry, parent, name),
            EntryKind::CharacterDevice | EntryKind::BlockDevice | EntryKind::Fifo => {
                let file_type = match entry.kind {
                    EntryKind::CharacterDevice => FileType::CharacterDevice,
                    EntryKind::BlockDevice => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if file_type != FileType::Fifo && !self.options.device_nodes_allowed {
                    return Err(UnpackError::DeviceNodeNotPermitted {
                        entry_path: echo_entry_path(entry_path),
                    });
                }
                let device = rustix::fs::makedev(entry.device_major, entry.device_minor);
                rustix::fs::mknodat(
                    parent,
                    name,
                    file_type,
                    Mode::from_raw_mode(entry.mode & 0o777),
                    device,
                )
                .map_err(|errno| creation_error(entry_path, "create special file", errno))?;
                self.count_inode(entry_path)?;
                self.apply_metadata_to_name(parent, name, entry)
            }
        }
    }

    /// A hard link may only point at a non-directory that an earlier entry of
    /// this layer created. The target is found through [`ConfinedRoot`] like
    /// any path, and `linkat` without `AT_SYMLINK_FOLLOW` links a symlink
    /// itself, never what it points to.
    fn create_hard_link(
        &mut self,
        entry: &EntryHeader,
        parent: BorrowedFd<'_>,
        name: &[u8],
    ) -> Result<(), UnpackError> {
        let entry_path = entry.path.as_slice();
        let target = normalize_path(&entry.link_target, "hard link target", entry_path)?;
        let target_error = |reason: &'static str| UnpackError::HardLinkTarget {
            entry_path: echo_entry_path(entry_path),
            target_path: echo_entry_path(&entry.link_target),
            reason,
        };
        if target.is_empty() {
            return Err(target_error("is the layer root"));
        }
        let (target_parent, target_name) = split_last_component(&target);
        let target_directory = self
            .root
            .open_directory(target_parent, OFlags::PATH)
            .map_err(|errno| match errno {
                Errno::LOOP | Errno::XDEV => target_error("goes through a symbolic link"),
                Errno::NOENT | Errno::NOTDIR => target_error("does not exist in this layer"),
                errno => filesystem_error(entry_path, "open hard link target directory", errno),
            })?;
        let target_stat =
            match rustix::fs::statat(&target_directory, target_name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::NOENT) => return Err(target_error("does not exist in this layer")),
                Err(errno) => {
                    return Err(filesystem_error(entry_path, "stat hard link target", errno));
                }
            };
        let target_type = FileType::from_raw_mode(target_stat.st_mode);
        if target_type == FileType::Directory {
            return Err(target_error("is a directory"));
        }
        let is_privileged_whiteout =
            target_type == FileType::CharacterDevice && target_stat.st_rdev == 0;
        let is_user_xattr_whiteout = self
            .user_xattr_whiteouts
            .get(target_parent)
            .is_some_and(|names| names.iter().any(|hidden| hidden == target_name));
        if is_privileged_whiteout || is_user_xattr_whiteout {
            return Err(target_error("is a whiteout"));
        }
        rustix::fs::linkat(
            &target_directory,
            target_name,
            parent,
            name,
            AtFlags::empty(),
        )
        .map_err(|errno| creation_error(entry_path, "create hard link", errno))
    }

    /// `.wh.<name>` becomes an overlay whiteout for `<name>`, and
    /// `.wh..wh..opq` marks its directory opaque (applied in `finish`).
    fn apply_whiteout(
        &mut self,
        entry: &EntryHeader,
        parent: &[u8],
        name: &[u8],
    ) -> Result<(), UnpackError> {
        let entry_path = entry.path.as_slice();
        let invalid = |reason: &'static str| UnpackError::InvalidWhiteout {
            entry_path: echo_entry_path(entry_path),
            reason,
        };
        if entry.kind == EntryKind::Directory {
            return Err(invalid("a whiteout cannot be a directory"));
        }
        if name == OPAQUE_MARKER {
            let (parent_path, parent_fd) = self.parent_directory(parent, entry_path)?;
            self.cached_parent = Some((parent_path, parent_fd));
            self.opaque_directories.insert(parent.to_vec());
            return Ok(());
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() {
            return Err(invalid("'.wh.' names no file"));
        }
        if hidden == b"." || hidden == b".." {
            return Err(invalid("a whiteout cannot hide '.' or '..'"));
        }
        if hidden.starts_with(WHITEOUT_PREFIX) {
            return Err(invalid("a whiteout cannot hide another whiteout name"));
        }
        let (parent_path, parent_fd) = self.parent_directory(parent, entry_path)?;
        let created = if self.options.privileged_whiteouts {
            rustix::fs::mknodat(
                &parent_fd,
                hidden,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(|errno| creation_error(entry_path, "create whiteout device", errno))
        } else {
            self.create_user_xattr_whiteout(parent_fd.as_fd(), hidden, entry_path)
        };
        if created.is_ok() && !self.options.privileged_whiteouts {
            self.user_xattr_whiteouts
                .entry(parent.to_vec())
                .or_default()
                .push(hidden.to_vec());
        }
        self.cached_parent = Some((parent_path, parent_fd));
        created?;
        self.count_inode(entry_path)
    }

    /// The overlayfs `userxattr` whiteout: an empty regular file with the
    /// `user.overlay.whiteout` xattr. Its mode lets the owner set that xattr.
    fn create_user_xattr_whiteout(
        &mut self,
        parent: BorrowedFd<'_>,
        hidden: &[u8],
        entry_path: &[u8],
    ) -> Result<(), UnpackError> {
        let fd = rustix::fs::openat(
            parent,
            hidden,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|errno| creation_error(entry_path, "create whiteout file", errno))?;
        rustix::fs::fsetxattr(&fd, USER_WHITEOUT_XATTR, b"", XattrFlags::empty())
            .map_err(|errno| filesystem_error(entry_path, "set user.overlay.whiteout", errno))
    }

    /// Opens `parent` (relative to the root), creating missing directories.
    /// Returns the path with the descriptor so the caller can put both back
    /// into the cache.
    fn parent_directory(
        &mut self,
        parent: &[u8],
        entry_path: &[u8],
    ) -> Result<(Vec<u8>, OwnedFd), UnpackError> {
        if let Some((cached_path, cached_fd)) = self.cached_parent.take()
            && cached_path == parent
        {
            return Ok((cached_path, cached_fd));
        }
        match self.root.open_directory(parent, OFlags::PATH) {
            Ok(fd) => Ok((parent.to_vec(), fd)),
            Err(Errno::NOENT) => {
                let fd = self.create_parent_directories(parent, entry_path)?;
                Ok((parent.to_vec(), fd))
            }
            Err(errno) => Err(parent_error(entry_path, errno)),
        }
    }

    /// Walks `parent` one component at a time from the root, creating what is
    /// missing with mode 0755 (exactly: the umask does not apply).
    fn create_parent_directories(
        &mut self,
        parent: &[u8],
        entry_path: &[u8],
    ) -> Result<OwnedFd, UnpackError> {
        let mut current = self
            .root
            .open_directory(b"", OFlags::PATH)
            .map_err(|errno| filesystem_error(entry_path, "open target directory", errno))?;
        for component in parent.split(|byte| *byte == b'/') {
            current =
                match confined_fs::open_directory_beneath(current.as_fd(), component, OFlags::PATH)
                {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) => {
                        match rustix::fs::mkdirat(&current, component, Mode::from_raw_mode(0o755)) {
                            Ok(()) => self.count_inode(entry_path)?,
                            Err(Errno::EXIST) => {}
                            Err(errno) => {
                                return Err(filesystem_error(
                                    entry_path,
                                    "create parent directory",
                                    errno,
                                ));
                            }
                        }
                        let created = confined_fs::open_directory_beneath(
                            current.as_fd(),
                            component,
                            OFlags::RDONLY,
                        )
                        .map_err(|errno| parent_error(entry_path, errno))?;
                        rustix::fs::fchmod(&created, Mode::from_raw_mode(0o755)).map_err(
                            |errno| filesystem_error(entry_path, "chmod parent directory", errno),
                        )?;
                        created
                    }
                    Err(errno) => return Err(parent_error(entry_path, errno)),
                };
        }
        Ok(current)
    }

    fn write_data<R: std::io::BufRead>(
        &mut self,
        mut file: &File,
        entry_path: &[u8],
        stream: &mut TarStream<R>,
    ) -> Result<(), UnpackError> {
        loop {
            let chunk = stream.fill_data()?;
            if chunk.is_empty() {
                return Ok(());
            }
            file.write_all(chunk)
                .map_err(|source| io_filesystem_error(entry_path, "write file data", source))?;
            let written = chunk.len();
            stream.consume_data(written);
            self.counts.size_bytes += written as u64;
        }
    }

    /// Writes each region at its offset, leaving holes between them, then
    /// sets the full length (which may end in a hole).
    fn write_sparse_data<R: std::io::BufRead>(
        &mut self,
        file: &File,
        sparse: &SparseMap,
        entry_path: &[u8],
        stream: &mut TarStream<R>,
    ) -> Result<(), UnpackError> {
        for region in &sparse.regions {
            let mut position = region.offset_bytes;
            let mut remaining = region.length_bytes;
            while remaining > 0 {
                let chunk = stream.fill_data()?;
                let usable = chunk
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                // The sparse map was checked to add up to the data size, so
                // the data cannot run out before the last region.
                debug_assert!(usable > 0);
                file.write_all_at(&chunk[..usable], position)
                    .map_err(|source| io_filesystem_error(entry_path, "write file data", source))?;
                stream.consume_data(usable);
                position += usable as u64;
                remaining -= usable as u64;
                self.counts.size_bytes += usable as u64;
            }
        }
        file.set_len(sparse.real_size_bytes)
            .map_err(|source| io_filesystem_error(entry_path, "set sparse file length", source))
    }

    /// Owner, then xattrs (a chown drops `security.capability`), then mode
    /// (a chown clears setuid and setgid, and without root a mode without
    /// owner write would forbid `user.*` xattrs), then times.
    /// `created_with_mode`: the file was created with exactly its mode (see
    /// [`CreationDefaults`]), so no `fchmod` is needed. With those defaults
    /// known, a new file is also already owned by the effective ids.
    fn apply_metadata_to_open(
        &mut self,
        fd: BorrowedFd<'_>,
        entry: &EntryHeader,
        created_with_mode: bool,
    ) -> Result<(), UnpackError> {
        let entry_path = entry.path.as_slice();
        if self.options.chown {
            let owned_at_creation = self.creation_defaults.is_some()
                && entry.uid == self.effective_uid
                && entry.gid == self.effective_gid;
            if !owned_at_creation {
                rustix::fs::fchown(
                    fd,
                    Some(Uid::from_raw(entry.uid)),
                    Some(Gid::from_raw(entry.gid)),
                )
                .map_err(|errno| filesystem_error(entry_path, "chown", errno))?;
            }
        } else {
            self.note_owner_skipped(entry.uid, entry.gid);
        }
        for (xattr_name, value) in &entry.xattrs {
            self.set_xattr(XattrTarget::Open(fd), xattr_name, value, entry_path)?;
        }
        if !created_with_mode {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(entry.mode))
                .map_err(|errno| filesystem_error(entry_path, "chmod", errno))?;
        }
        rustix::fs::futimens(fd, &timestamps(entry.mtime))
            .map_err(|errno| filesystem_error(entry_path, "set times", errno))
    }

    /// The same for an entry that must not be opened (symlink, device,
    /// FIFO), by name in its directory, never following a symlink. A symlink
    /// has no mode of its own.
    fn apply_metadata_to_name(
        &mut self,
        directory: BorrowedFd<'_>,
        name: &[u8],
        entry: &EntryHeader,
    ) -> Result<(), UnpackError> {
        let entry_path = entry.path.as_slice();
        if self.options.chown {
            rustix::fs::chownat(
                directory,
                name,
                Some(Uid::from_raw(entry.uid)),
                Some(Gid::from_raw(entry.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|errno| filesystem_error(entry_path, "chown", errno))?;
        } else {
            self.note_owner_skipped(entry.uid, entry.gid);
        }
        for (xattr_name, value) in &entry.xattrs {
            self.set_xattr(
                XattrTarget::Named { directory, name },
                xattr_name,
                value,
                entry_path,
            )?;
        }
        if entry.kind != EntryKind::Symlink {
            // The name was just created by mknodat, so it is not a symlink.
            rustix::fs::chmodat(
                directory,
                name,
                Mode::from_raw_mode(entry.mode),
                AtFlags::empty(),
            )
            .map_err(|errno| filesystem_error(entry_path, "chmod", errno))?;
        }
        rustix::fs::utimensat(
            directory,
            name,
            &timestamps(entry.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|errno| filesystem_error(entry_path, "set times", errno))
    }

    /// Sets one archive xattr. Names in the overlay namespace that the chosen
    /// whiteout convention makes overlayfs interpret are escaped (one more
    /// `overlay.`), so a layer cannot forge whiteouts, opaque markers or
    /// redirects; overlayfs (6.7+) shows them unescaped in the merged view.
    fn set_xattr(
        &mut self,
        target: XattrTarget<'_>,
        xattr_name: &[u8],
        value: &[u8],
        entry_path: &[u8],
    ) -> Result<(), UnpackError> {
        if xattr_name.contains(&0) {
            return Err(UnpackError::NulByte {
                entry_path: echo_entry_path(entry_path),
                what: "xattr name",
            });
        }
        let overlay_prefix = if self.options.privileged_whiteouts {
            TRUSTED_OVERLAY_PREFIX
        } else {
            USER_OVERLAY_PREFIX
        };
        let stored_name: Vec<u8> = match xattr_name.strip_prefix(overlay_prefix) {
            Some(rest) => [overlay_prefix, b"overlay.", rest].concat(),
            None => xattr_name.to_vec(),
        };
        let result = match target {
            XattrTarget::Open(fd) => {
                rustix::fs::fsetxattr(fd, stored_name.as_slice(), value, XattrFlags::empty())
            }
            XattrTarget::Named { directory, name } => rustix::fs::lsetxattr(
                confined_fs::proc_path_of(directory, name),
                stored_name.as_slice(),
                value,
                XattrFlags::empty(),
            ),
        };
        let named_target = matches!(target, XattrTarget::Named { .. });
        match result {
            Ok(()) => Ok(()),
            // The filesystem has no such namespace, or (EPERM) the caller may
            // not write it: trusted.* and security.* without privileges, and
            // user.* on symlinks and device nodes for everyone.
            Err(Errno::OPNOTSUPP) => {
                self.counts.xattrs_skipped += 1;
                Ok(())
            }
            Err(Errno::PERM)
                if !self.options.chown || (named_target && xattr_name.starts_with(b"user.")) =>
            {
                self.counts.xattrs_skipped += 1;
                Ok(())
            }
            Err(errno) => Err(UnpackError::SetXattr {
                entry_path: echo_entry_path(entry_path),
                xattr_name: echo_entry_path(xattr_name),
                source: errno.into(),
            }),
        }
    }

    /// After the last entry: drop `userxattr` whiteouts made redundant by an
    /// opaque directory (they would show as empty files there), set the opaque
    /// and whiteout markers, then every directory's attributes, deepest first.
    fn finish(&mut self) -> Result<(), UnpackError> {
        self.cached_parent = None;
        let mut opaque_directories: Vec<Vec<u8>> = self.opaque_directories.drain().collect();
        opaque_directories.sort();
        for directory_path in &opaque_directories {
            let Some(hidden_names) = self.user_xattr_whiteouts.remove(directory_path) else {
                continue;
            };
            let directory = self.open_for_finish(directory_path, OFlags::PATH)?;
            for hidden in hidden_names {
                rustix::fs::unlinkat(&directory, hidden.as_slice(), AtFlags::empty()).map_err(
                    |errno| filesystem_error(directory_path, "remove redundant whiteout", errno),
                )?;
                self.counts.inodes -= 1;
            }
        }
        let opaque_xattr = if self.options.privileged_whiteouts {
            TRUSTED_OPAQUE_XATTR
        } else {
            USER_OPAQUE_XATTR
        };
        for directory_path in &opaque_directories {
            self.set_marker(directory_path, opaque_xattr, b"y")?;
        }
        let mut whiteout_directories: Vec<Vec<u8>> =
            self.user_xattr_whiteouts.keys().cloned().collect();
        whiteout_directories.sort();
        for directory_path in &whiteout_directories {
            // "x": this directory holds xattr whiteouts; without the marker
            // overlayfs readdir would list them (Linux 6.7+ rule).
            self.set_marker(directory_path, USER_OPAQUE_XATTR, b"x")?;
        }

        let mut directories = std::mem::take(&mut self.deferred_directories);
        directories.sort_by_key(|directory| Reverse(component_count(&directory.path)));
        for directory in &directories {
            let fd = self.open_for_finish(&directory.path, OFlags::RDONLY)?;
            if self.options.chown {
                rustix::fs::fchown(
                    &fd,
                    Some(Uid::from_raw(directory.uid)),
                    Some(Gid::from_raw(directory.gid)),
                )
                .map_err(|errno| filesystem_error(&directory.path, "chown", errno))?;
            } else {
                self.note_owner_skipped(directory.uid, directory.gid);
            }
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(directory.mode))
                .map_err(|errno| filesystem_error(&directory.path, "chmod", errno))?;
            rustix::fs::futimens(&fd, &timestamps(directory.mtime))
                .map_err(|errno| filesystem_error(&directory.path, "set times", errno))?;
        }
        Ok(())
    }

    fn set_marker(
        &mut self,
        directory_path: &[u8],
        xattr_name: &str,
        value: &[u8],
    ) -> Result<(), UnpackError> {
        let directory = self.open_for_finish(directory_path, OFlags::RDONLY)?;
        rustix::fs::fsetxattr(&directory, xattr_name, value, XattrFlags::empty()).map_err(|errno| {
            UnpackError::SetXattr {
                entry_path: echo_entry_path(directory_path),
                xattr_name: xattr_name.to_owned(),
                source: errno.into(),
            }
        })
    }

    fn open_for_finish(
        &self,
        directory_path: &[u8],
        flags: OFlags,
    ) -> Result<OwnedFd, UnpackError> {
        self.root
            .open_directory(directory_path, flags)
            .map_err(|errno| parent_error(directory_path, errno))
    }

    fn count_inode(&mut self, entry_path: &[u8]) -> Result<(), UnpackError> {
        self.counts.inodes += 1;
        if self.counts.inodes > self.options.inodes_max {
            return Err(UnpackError::InodesLimit {
                entry_path: echo_entry_path(entry_path),
                limit: self.options.inodes_max,
            });
        }
        Ok(())
    }

    fn note_owner_skipped(&mut self, uid: u32, gid: u32) {
        if uid != self.effective_uid || gid != self.effective_gid {
            self.counts.owners_skipped = true;
        }
    }
}

/// The text check of an archive path: no NUL, not absolute, no `..`; `.` and
/// empty components are dropped, so `./a//b/` becomes `a/b` and `./` the
/// root (empty). `what` and `entry_path` only feed the error.
fn normalize_path(
    raw: &[u8],
    what: &'static str,
    entry_path: &[u8],
) -> Result<Vec<u8>, UnpackError> {
    if raw.contains(&0) {
        return Err(UnpackError::NulByte {
            entry_path: echo_entry_path(entry_path),
            what,
        });
    }
    if raw.starts_with(b"/") {
        return Err(UnpackError::AbsolutePath {
            entry_path: echo_entry_path(entry_path),
            what,
        });
    }
    let mut normalized = Vec::with_capacity(raw.len());
    for component in raw.split(|byte| *byte == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                return Err(UnpackError::ParentDirectoryComponent {
                    entry_path: echo_entry_path(entry_path),
                    what,
                });
            }
            _ => {
                if !normalized.is_empty() {
                    normalized.push(b'/');
                }
                normalized.extend_from_slice(component);
            }
        }
    }
    Ok(normalized)
}

/// `a/b/c` into (`a/b`, `c`); `c` into (``, `c`).
fn split_last_component(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|byte| *byte == b'/') {
        Some(slash) => (&path[..slash], &path[slash + 1..]),
        None => (&[], path),
    }
}

fn component_count(path: &[u8]) -> usize {
    path.iter().filter(|byte| **byte == b'/').count() + 1
}

fn timestamps(mtime: Timestamp) -> Timestamps {
    let time = Timespec {
        tv_sec: mtime.seconds,
        tv_nsec: i64::from(mtime.nanoseconds),
    };
    Timestamps {
        last_access: time,
        last_modification: time,
    }
}

fn filesystem_error(entry_path: &[u8], operation: &'static str, errno: Errno) -> UnpackError {
    io_filesystem_error(entry_path, operation, errno.into())
}

fn io_filesystem_error(
    entry_path: &[u8],
    operation: &'static str,
    source: std::io::Error,
) -> UnpackError {
    UnpackError::Filesystem {
        entry_path: echo_entry_path(entry_path),
        operation,
        source,
    }
}

/// Creating a name that exists means the layer lists a path twice.
fn creation_error(entry_path: &[u8], operation: &'static str, errno: Errno) -> UnpackError {
    match errno {
        Errno::EXIST => UnpackError::DuplicateEntry {
            entry_path: echo_entry_path(entry_path),
        },
        errno => filesystem_error(entry_path, operation, errno),
    }
}

/// Why a parent directory could not be opened beneath the root.
fn parent_error(entry_path: &[u8], errno: Errno) -> UnpackError {
    match errno {
        // ELOOP: a symlink on the way (RESOLVE_NO_SYMLINKS); EXDEV: the
        // lookup would leave the root (RESOLVE_BENEATH).
        Errno::LOOP | Errno::XDEV => UnpackError::PathThroughSymlink {
            entry_path: echo_entry_path(entry_path),
        },
        Errno::NOTDIR => UnpackError::ParentNotDirectory {
            entry_path: echo_entry_path(entry_path),
        },
        errno => filesystem_error(entry_path, "open parent directory", errno),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        let cases: [(&[u8], Option<&[u8]>); 10] = [
            (b"a/b", Some(b"a/b")),
            (b"./a//b/", Some(b"a/b")),
            (b"./", Some(b"")),
            (b".", Some(b"")),
            (b"a/./b/.", Some(b"a/b")),
            (b"\xff\xfe/x", Some(b"\xff\xfe/x")),
            (b"/etc/passwd", None),
            (b"a/../b", None),
            (b"..", None),
            (b"a\0b", None),
        ];
        for (raw, expected) in cases {
            let normalized = normalize_path(raw, "path", raw).ok();
            assert_eq!(normalized.as_deref(), expected, "{raw:?}");
        }
    }

    #[test]
    fn splits_last_component() {
        assert_eq!(split_last_component(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_last_component(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(component_count(b"a/b/c"), 3);
        assert_eq!(component_count(b"a"), 1);
    }
}
