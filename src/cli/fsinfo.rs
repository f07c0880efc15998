//! `cri-imaged fsinfo`: ImageFsInfo, the space and inodes used on the
//! filesystems that hold images (and container storage, when the daemon
//! reports one), as a table or JSON.

use std::process::ExitCode;

use crate::api::proto::runtime::v1 as cri;
use crate::cli::daemon_connection::ImageServiceConnection;
use crate::cli::error::CliError;
use crate::cli::human_format::{human_size, rfc3339_utc};
use crate::cli::table::render_table;
use crate::cli::{ConnectionArgs, OutputFormat, json_text, write_stdout};

#[derive(clap::Args, Debug)]
pub struct FsinfoArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

pub async fn run(args: FsinfoArgs) -> Result<ExitCode, CliError> {
    let socket = args.connection.socket()?;
    let mut connection = ImageServiceConnection::open(&socket).await?;
    let response = connection.image_fs_info().await?;
    let text = match args.output {
        OutputFormat::Table => fsinfo_table(&response),
        OutputFormat::Json => json_text(&serde_json::json!({
            "imageFilesystems": response.image_filesystems.iter().map(usage_json).collect::<Vec<_>>(),
            "containerFilesystems": response.container_filesystems.iter().map(usage_json).collect::<Vec<_>>(),
        })),
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn usage_json(usage: &cri::FilesystemUsage) -> serde_json::Value {
    serde_json::json!({
        "mountpoint": mountpoint(usage),
        "usedBytes": usage.used_bytes.as_ref().map(|used| used.value),
        "inodesUsed": usage.inodes_used.as_ref().map(|inodes| inodes.value),
        "timestamp": usage.timestamp,
    })
}

fn fsinfo_table(response: &cri::ImageFsInfoResponse) -> String {
    let kinds = response
        .image_filesystems
        .iter()
        .map(|usage| ("image", usage))
        .chain(
            response
                .container_filesystems
                .iter()
                .map(|usage| ("container", usage)),
        );
    let rows: Vec<Vec<String>> = kinds
        .map(|(kind, usage)| {
            vec![
                kind.to_owned(),
                mountpoint(usage).to_owned(),
                usage.used_bytes.as_ref().map_or("-".to_owned(), |used| {
                    format!("{} ({} bytes)", human_size(used.value), used.value)
                }),
                usage
                    .inodes_used
                    .as_ref()
                    .map_or("-".to_owned(), |inodes| inodes.value.to_string()),
                rfc3339_utc(usage.timestamp),
            ]
        })
        .collect();
    render_table(
        &["TYPE", "MOUNTPOINT", "USED", "INODES", "TIMESTAMP"],
        &rows,
    )
}

fn mountpoint(usage: &cri::FilesystemUsage) -> &str {
    usage
        .fs_id
        .as_ref()
        .map_or("", |identifier| identifier.mountpoint.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_human_and_exact_bytes_inodes_and_a_utc_time() {
        let response = cri::ImageFsInfoResponse {
            image_filesystems: vec![cri::FilesystemUsage {
                timestamp: 1_709_296_496_123_456_789,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: "/var/lib/cri-imaged".to_owned(),
                }),
                used_bytes: Some(cri::UInt64Value { value: 1_234_567 }),
                inodes_used: Some(cri::UInt64Value { value: 42 }),
            }],
            container_filesystems: vec![cri::FilesystemUsage::default()],
        };
        let expected = "\
TYPE                MOUNTPOINT            USED                     INODES              TIMESTAMP
image               /var/lib/cri-imaged   1.23MB (1234567 bytes)   42                  2024-03-01T12:34:56Z
container                                 -                        -                   1970-01-01T00:00:00Z
";
        assert_eq!(fsinfo_table(&response), expected);
        let json = usage_json(&response.image_filesystems[0]);
        assert_eq!(
            json,
            serde_json::json!({
                "mountpoint": "/var/lib/cri-imaged", "usedBytes": 1_234_567,
                "inodesUsed": 42, "timestamp": 1_709_296_496_123_456_789_i64,
            })
        );
    }
}
