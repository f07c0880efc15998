//! `cri-imaged gc`: CollectGarbage, a pass run by the daemon now, and what it
//! freed, as one line or JSON.

use std::process::ExitCode;

use crate::api::proto::cri_imaged::admin::v1 as admin;
use crate::cli::daemon_connection::AdminConnection;
use crate::cli::error::CliError;
use crate::cli::human_format::human_size;
use crate::cli::{ConnectionArgs, OutputFormat, json_text, write_stdout};

#[derive(clap::Args, Debug)]
pub struct GcArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

pub async fn run(args: GcArgs) -> Result<ExitCode, CliError> {
    let socket = args.connection.socket()?;
    let mut connection = AdminConnection::open(&socket).await?;
    let response = connection.collect_garbage().await?;
    let text = match args.output {
        OutputFormat::Table => gc_line(&response),
        OutputFormat::Json => json_text(&gc_json(&response)),
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn gc_line(response: &admin::CollectGarbageResponse) -> String {
    format!(
        "removed {} blobs, {} snapshots, {} partial downloads; freed {} ({} bytes) in {} ms\n",
        response.blobs_removed,
        response.snapshots_removed,
        response.ingests_removed,
        human_size(response.bytes_freed),
        response.bytes_freed,
        response.duration_ms
    )
}

fn gc_json(response: &admin::CollectGarbageResponse) -> serde_json::Value {
    serde_json::json!({
        "blobsRemoved": response.blobs_removed,
        "snapshotsRemoved": response.snapshots_removed,
        "ingestsRemoved": response.ingests_removed,
        "bytesFreed": response.bytes_freed,
        "durationMs": response.duration_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_and_the_json_say_what_was_freed() {
        let response = admin::CollectGarbageResponse {
            blobs_removed: 3,
            snapshots_removed: 2,
            ingests_removed: 1,
            bytes_freed: 1_234_567,
            duration_ms: 15,
        };
        assert_eq!(
            gc_line(&response),
            "removed 3 blobs, 2 snapshots, 1 partial downloads; freed 1.23MB (1234567 bytes) in 15 ms\n"
        );
        assert_eq!(
            gc_json(&response),
            serde_json::json!({
                "blobsRemoved": 3, "snapshotsRemoved": 2, "ingestsRemoved": 1,
                "bytesFreed": 1_234_567, "durationMs": 15,
            })
        );
    }
}
