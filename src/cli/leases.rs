//! `cri-imaged leases`: ListLeases, what protects content from garbage
//! collection right now (pulls in flight, the grace lease after a restart),
//! as a table or JSON.

use std::process::ExitCode;

use crate::api::proto::cri_imaged::admin::v1 as admin;
use crate::cli::daemon_connection::AdminConnection;
use crate::cli::error::CliError;
use crate::cli::human_format::rfc3339_utc;
use crate::cli::table::render_table;
use crate::cli::{ConnectionArgs, OutputFormat, json_text, write_stdout};

#[derive(clap::Args, Debug)]
pub struct LeasesArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

pub async fn run(args: LeasesArgs) -> Result<ExitCode, CliError> {
    let socket = args.connection.socket()?;
    let mut connection = AdminConnection::open(&socket).await?;
    let response = connection.list_leases().await?;
    let text = match args.output {
        OutputFormat::Table => leases_table(&response.leases),
        OutputFormat::Json => json_text(&serde_json::json!({
            "leases": response.leases.iter().map(lease_json).collect::<Vec<_>>(),
        })),
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn lease_json(lease: &admin::Lease) -> serde_json::Value {
    let labels: std::collections::BTreeMap<&String, &String> = lease.labels.iter().collect();
    serde_json::json!({
        "id": lease.id,
        "createdUnixMs": lease.created_unix_ms,
        "expiresUnixMs": lease.expires_unix_ms,
        "bootId": lease.boot_id,
        "labels": labels,
        "resourceCount": lease.resource_count,
    })
}

fn leases_table(leases: &[admin::Lease]) -> String {
    let rows: Vec<Vec<String>> = leases
        .iter()
        .map(|lease| {
            let mut labels: Vec<String> = lease
                .labels
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            labels.sort();
            vec![
                lease.id.clone(),
                lease.resource_count.to_string(),
                rfc3339_utc(lease.created_unix_ms.saturating_mul(1_000_000)),
                if lease.expires_unix_ms == 0 {
                    "never".to_owned()
                } else {
                    rfc3339_utc(lease.expires_unix_ms.saturating_mul(1_000_000))
                },
                labels.join(","),
            ]
        })
        .collect();
    render_table(
        &["LEASE", "RESOURCES", "CREATED", "EXPIRES", "LABELS"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_lease_with_its_resources_and_utc_times() {
        let lease = admin::Lease {
            id: "pull-1".to_owned(),
            created_unix_ms: 1_709_296_496_000,
            expires_unix_ms: 1_709_300_096_000,
            boot_id: "boot".to_owned(),
            labels: [(
                "cri-imaged/reference".to_owned(),
                "docker.io/library/busybox:1".to_owned(),
            )]
            .into_iter()
            .collect(),
            resource_count: 4,
        };
        let table = leases_table(std::slice::from_ref(&lease));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(lines[0].starts_with("LEASE"));
        for cell in [
            "pull-1",
            "4",
            "2024-03-01T12:34:56Z",
            "2024-03-01T13:34:56Z",
            "cri-imaged/reference=docker.io/library/busybox:1",
        ] {
            assert!(lines[1].contains(cell), "{cell} missing from {table}");
        }
        assert_eq!(lease_json(&lease)["resourceCount"], 4);
        assert_eq!(
            lease_json(&lease)["labels"]["cri-imaged/reference"],
            "docker.io/library/busybox:1"
        );
    }
}
