//! The client subcommands of the `cri-imaged` binary (`pull`, `images`,
//! `inspect`, `rmi`, `fsinfo`, `version`, `status`, `mount`, `unmount`, `gc`, `leases`): each parses its flags, talks to a
//! running daemon over its unix socket with the same generated CRI clients the
//! kubelet's client mirrors, and prints the answer. Results go to stdout, in a
//! crictl-like table or as JSON; progress and errors go to stderr. No secret
//! read from stdin or an auth file is ever printed.
//!
//! `daemon_connection` is the only file here that calls tonic; `auth_file`
//! reads Docker config files; `table` and `human_format` hold the text layout,
//! as pure functions with unit tests.

mod auth_file;
mod daemon_connection;
mod error;
mod fsck;
mod fsinfo;
mod gc;
mod human_format;
mod images;
mod inspect;
mod leases;
mod mount;
mod pull;
mod rmi;
mod status;
mod table;
mod version;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

pub use error::{AuthFileError, CliError};
pub use fsck::FsckArgs;
pub use fsinfo::FsinfoArgs;
pub use gc::GcArgs;
pub use images::ImagesArgs;
pub use inspect::InspectArgs;
pub use leases::LeasesArgs;
pub use mount::{MountArgs, UnmountArgs};
pub use pull::PullArgs;
pub use rmi::RmiArgs;
pub use status::StatusArgs;
pub use version::VersionArgs;

/// The client subcommands, to be flattened into the binary's own
/// subcommand enum next to `serve`.
#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Pull an image from its registry and print its id.
    Pull(PullArgs),
    /// List the images on this node.
    Images(ImagesArgs),
    /// Show one image with the daemon's verbose information.
    Inspect(InspectArgs),
    /// Remove images by reference, id or id prefix.
    Rmi(RmiArgs),
    /// Show the space and inodes images use.
    Fsinfo(FsinfoArgs),
    /// Show the client's and the daemon's versions.
    Version(VersionArgs),
    /// Show the daemon's uptime, store counts and sizes, limits and last
    /// gc and reconcile summaries.
    Status(StatusArgs),
    /// Run a garbage-collection pass now and print what it freed.
    Gc(GcArgs),
    /// List the leases that protect content from garbage collection.
    Leases(LeasesArgs),
    /// Mount an image's root filesystem read-only on a directory.
    Mount(MountArgs),
    /// Unmount what `mount` mounted and release the image.
    Unmount(UnmountArgs),
}

/// `cri-imaged fsck`: offline, on the store itself (the daemon stopped).
pub fn run_fsck(args: FsckArgs) -> ExitCode {
    match fsck::run(args) {
        Ok(exit_code) => exit_code,
        Err(error) => {
            eprintln!("cri-imaged fsck: {}", error.report());
            ExitCode::from(2)
        }
    }
}

/// Where the daemon listens; every client subcommand takes it.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// The daemon's unix socket (default: /run/cri-imaged/cri-imaged.sock as
    /// root, under $XDG_RUNTIME_DIR otherwise).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// How a listing is printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// JSON for programs.
    Json,
}

/// Runs one client subcommand. `Ok` carries the exit code for outcomes that
/// are not a single error (`rmi` exits 1 when any image failed); `Err` is one
/// failure, for the caller to print, that ends the command with exit code 1.
pub async fn run(command: ClientCommand) -> Result<ExitCode, CliError> {
    match command {
        ClientCommand::Pull(args) => pull::run(args).await,
        ClientCommand::Images(args) => images::run(args).await,
        ClientCommand::Inspect(args) => inspect::run(args).await,
        ClientCommand::Rmi(args) => rmi::run(args).await,
        ClientCommand::Fsinfo(args) => fsinfo::run(args).await,
        ClientCommand::Version(args) => version::run(args).await,
        ClientCommand::Mount(args) => mount::run_mount(args).await,
        ClientCommand::Unmount(args) => mount::run_unmount(args).await,
        ClientCommand::Gc(args) => gc::run(args).await,
        ClientCommand::Leases(args) => leases::run(args).await,
        ClientCommand::Status(args) => status::run(args).await,
    }
}

impl ConnectionArgs {
    /// The socket given, or the daemon's default one.
    fn socket(&self) -> Result<PathBuf, CliError> {
        match &self.socket {
            Some(socket) => Ok(socket.clone()),
            None => crate::config::default_socket().map_err(CliError::DefaultSocket),
        }
    }
}

/// Writes `text` to stdout at once. A reader that went away (`| head`) is not
/// an error: there is nobody left to tell.
fn write_stdout(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.map_err(CliError::WriteOutput),
    }
}

/// `value` as indented JSON and a newline.
fn json_text(value: &serde_json::Value) -> String {
    // A `Value` has string keys only, so serializing it cannot fail.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}
