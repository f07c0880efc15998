//! `cri-imaged pull REF`: PullImage, then the image id on stdout.
//!
//! Credentials come from stdin (`--user U --password-stdin`, so the password
//! never sits in argv or shell history) or from a Docker `config.json` style
//! file (`--auth-file`). Either way they are sent only for the reference's
//! registry (`server_address`), so the daemon never hands them to another host.

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::api::proto::runtime::v1 as cri;
use crate::cli::auth_file::{self, AuthEntry};
use crate::cli::daemon_connection::{ImageServiceConnection, image_spec};
use crate::cli::error::CliError;
use crate::cli::{ConnectionArgs, write_stdout};
use crate::reference::ImageReference;

/// A password or token longer than this is not one.
const PASSWORD_BYTES_MAX: u64 = 64 * 1024;

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// The image to pull, such as docker.io/library/busybox:1.36.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Registry user name; the password is read from stdin.
    #[arg(long, value_name = "U", requires = "password_stdin")]
    pub user: Option<String>,
    /// Read the registry password (or token) for --user from stdin.
    #[arg(long, requires = "user")]
    pub password_stdin: bool,
    /// Take the registry's credentials from this Docker config.json style file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["user", "password_stdin"])]
    pub auth_file: Option<PathBuf>,
    /// Pull for this runtime handler (RuntimeClass); empty means the default.
    #[arg(long, value_name = "NAME")]
    pub runtime_handler: Option<String>,
}

pub async fn run(args: PullArgs) -> Result<ExitCode, CliError> {
    // Credentials first: a bad auth file or an empty password is reported
    // without a round trip, and stdin is read before anything else happens.
    let auth = credentials(&args)?;
    let socket = args.connection.socket()?;
    let mut connection = ImageServiceConnection::open(&socket).await?;
    let mut spec = image_spec(&args.reference);
    spec.runtime_handler = args.runtime_handler.clone().unwrap_or_default();
    let request = cri::PullImageRequest {
        image: Some(spec),
        auth,
        sandbox_config: None,
    };
    eprint!("pulling {} ...", args.reference);
    let started = Instant::now();
    let pulled = connection.pull_image(request).await;
    let elapsed_seconds = started.elapsed().as_secs_f64();
    match pulled {
        Ok(response) => {
            eprintln!(" done in {elapsed_seconds:.1}s");
            write_stdout(&format!("{}\n", response.image_ref))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!(" failed after {elapsed_seconds:.1}s");
            Err(error)
        }
    }
}

fn credentials(args: &PullArgs) -> Result<Option<cri::AuthConfig>, CliError> {
    if let Some(username) = &args.user {
        let registry_host = registry_host(&args.reference)?;
        let password = read_password_from_stdin()?;
        return Ok(Some(cri::AuthConfig {
            username: username.clone(),
            password,
            server_address: registry_host,
            ..cri::AuthConfig::default()
        }));
    }
    if let Some(path) = &args.auth_file {
        let registry_host = registry_host(&args.reference)?;
        return match auth_file::read_auth_entry(path, &registry_host)? {
            Some(entry) => Ok(Some(auth_config(entry, registry_host))),
            None => {
                eprintln!(
                    "cri-imaged: auth file {} has no entry for {registry_host}; pulling anonymously",
                    path.display()
                );
                Ok(None)
            }
        };
    }
    Ok(None)
}

/// The registry host of `reference` (`docker.io` for Docker Hub names).
fn registry_host(reference: &str) -> Result<String, CliError> {
    let reference =
        ImageReference::parse_normalized(reference).map_err(CliError::InvalidReference)?;
    Ok(reference.domain().to_owned())
}

fn auth_config(entry: AuthEntry, registry_host: String) -> cri::AuthConfig {
    cri::AuthConfig {
        username: entry.username,
        password: entry.password,
        auth: String::new(),
        server_address: registry_host,
        identity_token: entry.identity_token,
        registry_token: entry.registry_token,
    }
}

/// All of stdin, without the one line ending `echo` or a here-string adds
/// (as `docker login --password-stdin` trims it).
fn read_password_from_stdin() -> Result<String, CliError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("cri-imaged: reading the password from stdin (end with Ctrl-D)");
    }
    let mut bytes = Vec::new();
    stdin
        .lock()
        .take(PASSWORD_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(CliError::ReadPassword)?;
    if bytes.len() as u64 > PASSWORD_BYTES_MAX {
        return Err(CliError::PasswordTooLong {
            bytes_max: PASSWORD_BYTES_MAX,
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        CliError::ReadPassword(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the password is not UTF-8 text",
        ))
    })?;
    let password = trim_one_line_ending(&text);
    if password.is_empty() {
        return Err(CliError::EmptyPassword);
    }
    Ok(password.to_owned())
}

fn trim_one_line_ending(text: &str) -> &str {
    let text = text.strip_suffix('\n').unwrap_or(text);
    text.strip_suffix('\r').unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_ending_is_trimmed_and_other_whitespace_kept() {
        let cases = [
            ("pw\n", "pw"),
            ("pw\r\n", "pw"),
            ("pw", "pw"),
            ("pw\n\n", "pw\n"),
            (" pw \n", " pw "),
            ("\n", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(trim_one_line_ending(input), expected, "{input:?}");
        }
    }

    #[test]
    fn the_registry_host_is_the_normalized_domain() {
        assert_eq!(registry_host("busybox").unwrap(), "docker.io");
        assert_eq!(
            registry_host("index.docker.io/library/busybox").unwrap(),
            "docker.io"
        );
        assert_eq!(
            registry_host("127.0.0.1:5000/team/app:v1").unwrap(),
            "127.0.0.1:5000"
        );
        assert!(matches!(
            registry_host("Not A Reference!"),
            Err(CliError::InvalidReference(_))
        ));
    }
}
