//! `cri-imaged version`: this client's version and the daemon's answer to
//! RuntimeService/Version, as crictl-style lines or JSON.

use std::process::ExitCode;

use crate::api::proto::runtime::v1 as cri;
use crate::cli::daemon_connection::runtime_version;
use crate::cli::error::CliError;
use crate::cli::table::render_key_values;
use crate::cli::{ConnectionArgs, OutputFormat, json_text, write_stdout};

const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(clap::Args, Debug)]
pub struct VersionArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

pub async fn run(args: VersionArgs) -> Result<ExitCode, CliError> {
    let socket = args.connection.socket()?;
    let version = runtime_version(&socket).await?;
    let text = match args.output {
        OutputFormat::Table => version_table(&version),
        OutputFormat::Json => json_text(&serde_json::json!({
            "clientVersion": CLIENT_VERSION,
            "version": version.version,
            "runtimeName": version.runtime_name,
            "runtimeVersion": version.runtime_version,
            "runtimeApiVersion": version.runtime_api_version,
        })),
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn version_table(version: &cri::VersionResponse) -> String {
    render_key_values(&[
        ("ClientVersion", CLIENT_VERSION.to_owned()),
        ("Version", version.version.clone()),
        ("RuntimeName", version.runtime_name.clone()),
        ("RuntimeVersion", version.runtime_version.clone()),
        ("RuntimeApiVersion", version.runtime_api_version.clone()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_aligned_line_per_field() {
        let text = version_table(&cri::VersionResponse {
            version: "0.1.0".to_owned(),
            runtime_name: "cri-imaged".to_owned(),
            runtime_version: "1.2.3".to_owned(),
            runtime_api_version: "v1".to_owned(),
        });
        let expected = format!(
            "\
ClientVersion:      {CLIENT_VERSION}
Version:            0.1.0
RuntimeName:        cri-imaged
RuntimeVersion:     1.2.3
RuntimeApiVersion:  v1
"
        );
        assert_eq!(text, expected);
    }
}
