//! The target directory as a descriptor, and the only way paths inside it are
//! resolved: `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS`, relative to that descriptor.
//!
//! The kernel refuses, during the lookup itself, any `..` that would climb
//! above the root, any absolute path and any symlink, so a path that passed
//! the text checks in `tar_entries` cannot be turned into an escape by what
//! earlier entries put on disk. The final component of every entry is then
//! created with a `*at` call on the returned parent descriptor that does not
//! follow symlinks.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::UnpackError;

/// How every path below the root is looked up.
const RESOLVE_CONFINED: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// `openat2` fails with `EAGAIN` when a rename or mount raced with a lookup
/// confined by `RESOLVE_BENEATH`; nothing else renames inside a snapshot
/// being unpacked, so a few retries always suffice.
const OPENAT2_ATTEMPTS_MAX: usize = 8;

/// An open descriptor of the (empty, when opened) target directory.
pub(super) struct ConfinedRoot {
    fd: OwnedFd,
}

impl ConfinedRoot {
    /// Opens `path`, which must be an existing empty directory. The path
    /// itself is trusted (it comes from the snapshot store); only what is
    /// below it comes from the archive.
    pub(super) fn open_empty(path: &Path) -> Result<ConfinedRoot, UnpackError> {
        let open_error = |source: io::Error| UnpackError::OpenTargetDirectory {
            path: path.to_owned(),
            source,
        };
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| open_error(errno.into()))?;
        let mut listing = std::fs::read_dir(path).map_err(open_error)?;
        if listing.next().is_some() {
            return Err(UnpackError::TargetDirectoryNotEmpty {
                path: path.to_owned(),
            });
        }
        Ok(ConfinedRoot { fd })
    }

    pub(super) fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens the directory at `relative` (components joined by `/`, no `.`,
    /// `..` or empty ones; empty for the root itself). `flags` adds to
    /// `O_DIRECTORY | O_CLOEXEC`; pass `O_PATH` for a descriptor
    /// that only anchors `*at` calls, `O_RDONLY` to change the directory.
    pub(super) fn open_directory(
        &self,
        relative: &[u8],
        flags: OFlags,
    ) -> rustix::io::Result<OwnedFd> {
        let relative: &[u8] = if relative.is_empty() { b"." } else { relative };
        open_directory_beneath(self.as_fd(), relative, flags)
    }
}

/// Opens the directory `relative` below `directory` without leaving it and
/// without following any symlink.
pub(super) fn open_directory_beneath(
    directory: BorrowedFd<'_>,
    relative: &[u8],
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    // No O_NOFOLLOW: with it, O_PATH would open a final symlink itself (and
    // O_DIRECTORY then say ENOTDIR); without it RESOLVE_NO_SYMLINKS refuses
    // every symlink, the last component included, with ELOOP.
    let flags = flags | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match rustix::fs::openat2(directory, relative, flags, Mode::empty(), RESOLVE_CONFINED) {
            Err(Errno::AGAIN) if attempts < OPENAT2_ATTEMPTS_MAX => {}
            result => return result,
        }
    }
}

/// `/proc/self/fd/<directory>/<name>`: a path for the calls that have no
/// `*at` form (`lsetxattr`). The magic link names the directory we already
/// hold open, not anything the archive can redirect, and the `l*` call does not
/// follow `name` if it is a symlink.
pub(super) fn proc_path_of(directory: BorrowedFd<'_>, name: &[u8]) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    let mut path = format!("/proc/self/fd/{}/", directory.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    path
}
