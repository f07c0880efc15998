//! `cri-imaged fsck`: the offline store check (see `crate::fsck`). It opens
//! the database itself, so the daemon must be stopped: redb's file lock makes
//! a second opener fail, and that is reported as such.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::error::CliError;
use crate::cli::{OutputFormat, json_text, write_stdout};
use crate::fsck::{FsckOptions, StoreLayout, fsck};
use crate::metadata::MetadataStore;

#[derive(clap::Args, Debug)]
pub struct FsckArgs {
    /// The daemon's state directory (default: the daemon's default root).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Fix what can be fixed without losing an intact ready image.
    #[arg(long)]
    pub repair: bool,
    /// Re-hash every blob (reads all stored content).
    #[arg(long)]
    pub verify_content: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Exit code 0 when nothing was found, 1 when problems were found (even if
/// repaired: the operator should know), 2 when the check itself failed.
pub fn run(args: FsckArgs) -> Result<ExitCode, CliError> {
    let root = match args.root {
        Some(root) => root,
        None => crate::config::default_root().map_err(CliError::DefaultSocket)?,
    };
    let database = root.join("metadata.redb");
    if !database.is_file() {
        return Err(CliError::NoStore { root });
    }
    let (metadata, _report) = MetadataStore::open(&database).map_err(CliError::OpenStore)?;
    let layout = StoreLayout::under_root(&root);
    let options = FsckOptions {
        verify_content: args.verify_content,
        repair: args.repair,
        kernel_boot_id: None,
    };
    let report = fsck(&metadata, &layout, options)?;
    let text = match args.output {
        OutputFormat::Table => {
            let mut text = String::new();
            for problem in &report.problems {
                text.push_str(&format!("problem: {problem}\n"));
            }
            for repair in &report.repairs {
                text.push_str(&format!("repaired: {repair}\n"));
            }
            text.push_str(&format!(
                "checked {} ready images, {} blobs, {} snapshots: {} problem{}{}\n",
                report.images_checked,
                report.blobs_checked,
                report.snapshots_checked,
                report.problems.len(),
                if report.problems.len() == 1 { "" } else { "s" },
                if args.repair && !report.problems.is_empty() {
                    ", repaired"
                } else {
                    ""
                },
            ));
            text
        }
        OutputFormat::Json => json_text(&serde_json::json!({
            "problems": report.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "repairs": report.repairs,
            "imagesChecked": report.images_checked,
            "blobsChecked": report.blobs_checked,
            "snapshotsChecked": report.snapshots_checked,
        })),
    };
    write_stdout(&text)?;
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
