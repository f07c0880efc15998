//! `cri-imaged rmi REF...`: RemoveImage for each reference, in order.
//!
//! A failure is reported on stderr and the rest are still removed; the exit
//! code is 1 if any failed. RemoveImage succeeds for an image that is not
//! there (the CRI contract), so removing an absent image exits 0; a note on
//! stderr says nothing was there, and stdout lists only what was deleted.

use std::process::ExitCode;

use crate::cli::daemon_connection::ImageServiceConnection;
use crate::cli::error::CliError;
use crate::cli::{ConnectionArgs, write_stdout};

#[derive(clap::Args, Debug)]
pub struct RmiArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// The images: references, ids or id prefixes.
    #[arg(value_name = "REF", required = true)]
    pub references: Vec<String>,
}

pub async fn run(args: RmiArgs) -> Result<ExitCode, CliError> {
    let socket = args.connection.socket()?;
    let mut connection = ImageServiceConnection::open(&socket).await?;
    let mut any_failed = false;
    for reference in &args.references {
        match remove_one(&mut connection, reference).await {
            Ok(true) => write_stdout(&format!("Deleted: {reference}\n"))?,
            Ok(false) => eprintln!("cri-imaged: image {reference} not found; nothing to delete"),
            Err(error) => {
                any_failed = true;
                eprintln!("cri-imaged: cannot remove {reference}: {}", error.report());
            }
        }
    }
    Ok(if any_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Whether the image was there. RemoveImage is called either way: an image
/// still being pulled has no status yet, but its names can be removed.
async fn remove_one(
    connection: &mut ImageServiceConnection,
    reference: &str,
) -> Result<bool, CliError> {
    let was_present = connection
        .image_status(reference, false)
        .await?
        .image
        .is_some();
    connection.remove_image(reference).await?;
    Ok(was_present)
}
