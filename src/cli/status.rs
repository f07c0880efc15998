//! `cri-imaged status`: the admin DaemonStatus answer (version, uptime,
//! schema version, store counts and bytes, limits in force, the last gc and
//! reconciliation summaries), as aligned `Key: value` lines or JSON.

use std::process::ExitCode;

use crate::api::proto::cri_imaged::admin::v1 as admin;
use crate::cli::daemon_connection::daemon_status;
use crate::cli::error::CliError;
use crate::cli::human_format::human_size;
use crate::cli::table::render_key_values;
use crate::cli::{ConnectionArgs, OutputFormat, json_text, write_stdout};

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

pub async fn run(args: StatusArgs) -> Result<ExitCode, CliError> {
    let socket = args.connection.socket()?;
    let status = daemon_status(&socket).await?;
    let text = match args.output {
        OutputFormat::Table => status_text(&status),
        OutputFormat::Json => json_text(&status_json(&status)),
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn status_json(status: &admin::DaemonStatusResponse) -> serde_json::Value {
    // A BTreeMap, so the limits print in a stable order.
    let limits: std::collections::BTreeMap<&String, &String> = status.limits.iter().collect();
    serde_json::json!({
        "version": status.version,
        "uptimeSeconds": status.uptime_seconds,
        "schemaVersion": status.schema_version,
        "images": status.images,
        "blobs": status.blobs,
        "snapshots": status.snapshots,
        "leases": status.leases,
        "contentBytes": status.content_bytes,
        "ingestBytes": status.ingest_bytes,
        "snapshotBytes": status.snapshot_bytes,
        "unsyncedSnapshots": status.unsynced_snapshots,
        "limits": limits,
        "lastGcSummary": status.last_gc_summary,
        "lastReconcileSummary": status.last_reconcile_summary,
    })
}

fn status_text(status: &admin::DaemonStatusResponse) -> String {
    let bytes = |value: u64| format!("{} ({value} bytes)", human_size(value));
    let or_none = |summary: &str| {
        if summary.is_empty() {
            "none yet".to_owned()
        } else {
            summary.to_owned()
        }
    };
    let mut limits: Vec<(&String, &String)> = status.limits.iter().collect();
    limits.sort();
    let mut pairs: Vec<(&str, String)> = vec![
        ("Version", status.version.clone()),
        ("Uptime", uptime_text(status.uptime_seconds)),
        ("Schema version", status.schema_version.to_string()),
        ("Images", status.images.to_string()),
        ("Blobs", status.blobs.to_string()),
        ("Snapshots", status.snapshots.to_string()),
        ("Leases", status.leases.to_string()),
        ("Content", bytes(status.content_bytes)),
        ("Ingests", bytes(status.ingest_bytes)),
        ("Snapshot data", bytes(status.snapshot_bytes)),
        // Snapshots a machine crash now would unpack again.
        ("Not yet synced", status.unsynced_snapshots.to_string()),
        ("Last gc", or_none(&status.last_gc_summary)),
        ("Last reconcile", or_none(&status.last_reconcile_summary)),
    ];
    for (index, (name, value)) in limits.iter().enumerate() {
        pairs.push((
            if index == 0 { "Limits" } else { "" },
            format!("{name} = {value}"),
        ));
    }
    render_key_values(&pairs)
}

/// `3d 4h 5m 6s`, leading zero units left out.
fn uptime_text(seconds: u64) -> String {
    let units = [
        (seconds / 86_400, "d"),
        (seconds / 3_600 % 24, "h"),
        (seconds / 60 % 60, "m"),
        (seconds % 60, "s"),
    ];
    let first = units
        .iter()
        .position(|(value, _)| *value > 0)
        .unwrap_or(units.len() - 1);
    units[first..]
        .iter()
        .map(|(value, unit)| format!("{value}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_shows_every_field_with_sizes_limits_and_missing_summaries() {
        let status = admin::DaemonStatusResponse {
            version: "0.1.0".into(),
            uptime_seconds: 3_725,
            schema_version: 2,
            images: 3,
            blobs: 9,
            snapshots: 4,
            leases: 1,
            content_bytes: 1_234_567,
            ingest_bytes: 0,
            snapshot_bytes: 2_000_000,
            unsynced_snapshots: 2,
            limits: [("pulls_max", "0"), ("layer_downloads_max", "3")]
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
            last_gc_summary: String::new(),
            last_reconcile_summary: "ended 0 leases".into(),
        };
        let expected = "\
Version:         0.1.0
Uptime:          1h 2m 5s
Schema version:  2
Images:          3
Blobs:           9
Snapshots:       4
Leases:          1
Content:         1.23MB (1234567 bytes)
Ingests:         0B (0 bytes)
Snapshot data:   2MB (2000000 bytes)
Not yet synced:  2
Last gc:         none yet
Last reconcile:  ended 0 leases
Limits:          layer_downloads_max = 3
                 pulls_max = 0
";
        assert_eq!(status_text(&status), expected);
        let json = status_json(&status);
        assert_eq!(json["contentBytes"], 1_234_567);
        assert_eq!(json["limits"]["pulls_max"], "0");
        assert_eq!(json["lastGcSummary"], "");
        assert_eq!(json["unsyncedSnapshots"], 2);
    }

    #[test]
    fn uptime_leaves_out_leading_zero_units() {
        assert_eq!(uptime_text(0), "0s");
        assert_eq!(uptime_text(59), "59s");
        assert_eq!(uptime_text(3_600), "1h 0m 0s");
        assert_eq!(uptime_text(90_061), "1d 1h 1m 1s");
    }
}
