//! `cri-imaged mount REF DIR` and `cri-imaged unmount DIR`: the image's root
//! filesystem, read-only, for inspection.
//!
//! The daemon leases the image's snapshot chain for the target and answers the
//! lower dirs; this process mounts them (overlayfs, or a read-only bind mount
//! for a one-layer image) in its own mount namespace. `unmount` unmounts and
//! then ends the lease. A mount that fails ends the lease at once.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

use crate::cli::daemon_connection::AdminConnection;
use crate::cli::error::CliError;
use crate::cli::{ConnectionArgs, OutputFormat, json_text, write_stdout};

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Output format of the mount description.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// The image: a reference, an id or an id prefix.
    pub image: String,
    /// An existing directory to mount it on.
    pub target: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct UnmountArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// The directory `cri-imaged mount` mounted an image on.
    pub target: PathBuf,
}

pub async fn run_mount(args: MountArgs) -> Result<ExitCode, CliError> {
    let socket = args.connection.socket()?;
    let target = canonical_directory(&args.target)?;
    let mut admin = AdminConnection::open(&socket).await?;
    let prepared = admin.prepare_mount(&args.image, &target).await?;
    if let Err(source) = mount_read_only(&prepared.lower_dirs, &prepared.options, &target) {
        // Nothing is mounted: the lease would only pin the image's space.
        if let Err(error) = admin.release_mount(&target).await {
            eprintln!("cannot release the mount lease: {}", error.report());
        }
        return Err(CliError::Mount {
            image: args.image,
            target,
            source,
        });
    }
    let text = match args.output {
        OutputFormat::Table => format!(
            "{} mounted read-only on {} ({} layer{})\n",
            prepared.image_id,
            target.display(),
            prepared.lower_dirs.len(),
            if prepared.lower_dirs.len() == 1 {
                ""
            } else {
                "s"
            },
        ),
        OutputFormat::Json => json_text(&serde_json::json!({
            "imageId": prepared.image_id,
            "target": target.display().to_string(),
            "lowerDirs": prepared.lower_dirs,
            "options": prepared.options,
            "leaseId": prepared.lease_id,
        })),
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn run_unmount(args: UnmountArgs) -> Result<ExitCode, CliError> {
    let socket = args.connection.socket()?;
    let target = canonical_directory(&args.target)?;
    match rustix::mount::unmount(&target, UnmountFlags::empty()) {
        Ok(()) => {}
        // Not mounted (any more): still end a lease left by an earlier
        // unmount whose release did not reach the daemon.
        Err(rustix::io::Errno::INVAL) => {}
        Err(errno) => {
            return Err(CliError::Unmount {
                target,
                source: errno.into(),
            });
        }
    }
    let mut admin = AdminConnection::open(&socket).await?;
    let released = admin.release_mount(&target).await?;
    if !released.released {
        eprintln!(
            "{} had no mount lease (was it mounted by cri-imaged mount?)",
            target.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The target as the daemon records it: absolute, symlinks resolved, so that
/// `unmount ./x` finds the lease `mount /abs/x` took.
fn canonical_directory(target: &Path) -> Result<PathBuf, CliError> {
    let error = |source| CliError::MountTarget {
        target: target.to_path_buf(),
        source,
    };
    let canonical = std::fs::canonicalize(target).map_err(error)?;
    if !canonical.is_dir() {
        return Err(error(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    Ok(canonical)
}

/// Mounts the lower dirs read-only on `target`: overlayfs for two or more,
/// a read-only bind mount for one.
fn mount_read_only(lower_dirs: &[String], options: &str, target: &Path) -> std::io::Result<()> {
    match lower_dirs {
        [] => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the daemon named no layer directory",
        )),
        [single] => {
            rustix::mount::mount_bind(single.as_str(), target)?;
            // A bind mount takes MS_RDONLY only on a remount; a bind mount left
            // writable would let `cri-imaged mount` users change a snapshot.
            let remounted =
                rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "");
            if let Err(errno) = remounted {
                let _ = rustix::mount::unmount(target, UnmountFlags::empty());
                return Err(errno.into());
            }
            // Keep mounts made later under the snapshot out of the host.
            let _ = rustix::mount::mount_change(target, MountPropagationFlags::PRIVATE);
            Ok(())
        }
        _ => {
            let options = std::ffi::CString::new(options).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "mount options hold a NUL")
            })?;
            Ok(rustix::mount::mount(
                "overlay",
                target,
                "overlay",
                MountFlags::RDONLY | MountFlags::NODEV | MountFlags::NOSUID,
                options.as_c_str(),
            )?)
        }
    }
}
