//! The few filesystem steps that make a change survive a crash: a file's data
//! is synced before it is renamed into place, and the directory is synced after,
//! so after power loss a name either is absent or names complete data.

use std::fs::File;
use std::io;
use std::path::Path;

/// Makes the entries of `directory` (creations, renames, removals) durable.
pub fn sync_directory(directory: &Path) -> io::Result<()> {
    File::open(directory)?.sync_all()
}

/// Renames `from` to `to` (same filesystem) and syncs the destination directory.
/// The caller has already synced the file's data.
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    match to.parent() {
        Some(directory) => sync_directory(directory),
        None => Ok(()),
    }
}

/// Writes back every dirty page and inode of the filesystem holding `path`
/// (`syncfs`): one call instead of a sync per file, for a tree of thousands.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let fd = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::fs::syncfs(&fd)?;
    Ok(())
}

/// Removes a file if it exists; absence is success.
pub fn remove_file_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
