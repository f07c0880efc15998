//! `cri-imaged pull REF`: PullWithProgress (or PullImage from a daemon
//! without the admin API), then the image id on stdout.
//!
//! Progress goes to stderr: on a terminal, one line per layer redrawn in place
//! (short digest, state, bytes, rate, ETA); otherwise plain lines when a layer
//! changes state and every few seconds while it downloads. `--output json`
//! prints every event as one JSON object per line on stdout instead, the
//! last being `done` with the image id.
//!
//! Credentials come from stdin (`--user U --password-stdin`, so the password
//! never sits in argv or shell history) or from a Docker `config.json` style
//! file (`--auth-file`). Either way they are sent only for the reference's
//! registry (`server_address`), so the daemon never hands them to another host.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::api::proto::cri_imaged::admin::v1 as admin;
use crate::api::proto::runtime::v1 as cri;
use crate::cli::auth_file::{self, AuthEntry};
use crate::cli::daemon_connection::{self, ImageServiceConnection, image_spec};
use crate::cli::error::CliError;
use crate::cli::human_format::{human_size, truncated_id};
use crate::cli::{ConnectionArgs, OutputFormat, write_stdout};
use crate::reference::ImageReference;

/// A password or token longer than this is not one.
const PASSWORD_BYTES_MAX: u64 = 64 * 1024;
/// The live display redraws at most this often (state changes redraw at once).
const REDRAW_INTERVAL_MS: u64 = 100;
/// Without a terminal, a downloading layer prints a line at most this often.
const PLAIN_LINE_INTERVAL_MS: u64 = 2_000;
/// Weight of the newest sample in a layer's smoothed download rate.
const RATE_SMOOTHING: f64 = 0.3;

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
    /// `table`: progress on stderr and the image id on stdout; `json`: one
    /// JSON object per progress event on stdout.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

pub async fn run(args: PullArgs) -> Result<ExitCode, CliError> {
    // Credentials first: a bad auth file or an empty password is reported
    // without a round trip, and stdin is read before anything else happens.
    let auth = credentials(&args)?;
    let socket = args.connection.socket()?;
    let mut spec = image_spec(&args.reference);
    spec.runtime_handler = args.runtime_handler.clone().unwrap_or_default();
    let mut display = match args.output {
        OutputFormat::Json => Display::Json,
        OutputFormat::Table if std::io::stderr().is_terminal() => {
            Display::Live(LiveTable::default())
        }
        OutputFormat::Table => Display::Plain(PlainLines::default()),
    };
    if args.output == OutputFormat::Table {
        eprintln!("pulling {}", args.reference);
    }
    let started = Instant::now();
    let request = admin::PullWithProgressRequest {
        image: Some(spec.clone()),
        auth: auth.clone(),
    };
    let mut fell_back = false;
    let pulled = match pull_with_progress(&socket, request, &mut display).await {
        Err(CliError::Rpc {
            code: tonic::Code::Unimplemented,
            ..
        }) => {
            fell_back = true;
            // A daemon without the admin API: the same pull, without progress.
            let mut connection = ImageServiceConnection::open(&socket).await?;
            let request = cri::PullImageRequest {
                image: Some(spec),
                auth,
                sandbox_config: None,
            };
            connection
                .pull_image(request)
                .await
                .map(|response| response.image_ref)
        }
        other => other,
    };
    let elapsed_seconds = started.elapsed().as_secs_f64();
    match pulled {
        Ok(image_ref) => {
            match args.output {
                // Streamed, `done` was printed with the other events.
                OutputFormat::Json if fell_back => {
                    write_stdout(&json_line(&done_event(&image_ref)))?;
                }
                OutputFormat::Json => {}
                OutputFormat::Table => {
                    display.finish();
                    eprintln!("done in {elapsed_seconds:.1}s");
                    write_stdout(&format!("{image_ref}\n"))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            display.finish();
            if args.output == OutputFormat::Table {
                eprintln!(
                    "pull of {} failed after {elapsed_seconds:.1}s",
                    args.reference
                );
            }
            Err(error)
        }
    }
}

/// Runs PullWithProgress, showing each event; returns the image id.
async fn pull_with_progress(
    socket: &Path,
    request: admin::PullWithProgressRequest,
    display: &mut Display,
) -> Result<String, CliError> {
    let mut events = daemon_connection::pull_with_progress(socket, request).await?;
    let mut image_ref = None;
    while let Some(event) = events.next().await? {
        if let admin::pull_progress::Event::Done(done) = &event {
            image_ref = Some(done.image_ref.clone());
        }
        display.show(&event, Instant::now())?;
    }
    image_ref.ok_or(CliError::Rpc {
        rpc: "PullWithProgress",
        code: tonic::Code::Internal,
        message: "the stream ended without a result".to_owned(),
    })
}

/// Where progress goes.
enum Display {
    Json,
    Live(LiveTable),
    Plain(PlainLines),
}

impl Display {
    fn show(&mut self, event: &admin::pull_progress::Event, now: Instant) -> Result<(), CliError> {
        match self {
            Display::Json => write_stdout(&json_line(event)),
            Display::Live(table) => {
                if table.update(event, now) {
                    write_stderr(&table.redraw());
                }
                Ok(())
            }
            Display::Plain(lines) => {
                for line in lines.update(event, now) {
                    write_stderr(&format!("{line}\n"));
                }
                Ok(())
            }
        }
    }

    fn finish(&mut self) {
        if let Display::Live(table) = self {
            write_stderr(&table.redraw());
        }
    }
}

/// Progress text is best effort: a closed stderr must not fail the pull.
fn write_stderr(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr
        .write_all(text.as_bytes())
        .and_then(|()| stderr.flush());
}

/// One layer as the client tracks it.
#[derive(Clone, Debug)]
struct LayerRow {
    digest: String,
    state: admin::LayerState,
    downloaded_bytes: u64,
    total_bytes: u64,
    /// The last sample (time, bytes) and the smoothed rate in bytes/s.
    sample: Option<(Instant, u64)>,
    rate_bytes_per_second: Option<f64>,
}

impl LayerRow {
    fn new(layer: &admin::LayerProgress, now: Instant) -> LayerRow {
        LayerRow {
            digest: layer.digest.clone(),
            state: layer.state(),
            downloaded_bytes: layer.downloaded_bytes,
            total_bytes: layer.total_bytes,
            sample: Some((now, layer.downloaded_bytes)),
            rate_bytes_per_second: None,
        }
    }

    fn update(&mut self, layer: &admin::LayerProgress, now: Instant) {
        if let Some((at, bytes)) = self.sample {
            let seconds = now.duration_since(at).as_secs_f64();
            if seconds > 0.0 && layer.downloaded_bytes >= bytes {
                let rate = (layer.downloaded_bytes - bytes) as f64 / seconds;
                self.rate_bytes_per_second = Some(match self.rate_bytes_per_second {
                    Some(previous) => previous + RATE_SMOOTHING * (rate - previous),
                    None => rate,
                });
            }
        }
        self.sample = Some((now, layer.downloaded_bytes));
        self.state = layer.state();
        self.downloaded_bytes = layer.downloaded_bytes;
        self.total_bytes = layer.total_bytes;
    }

    /// `3f57d9401f8d4  downloading   1.2MB / 3.4MB   850kB/s  ETA 3s`.
    fn line(&self) -> String {
        let bytes = format!(
            "{} / {}",
            human_size(self.downloaded_bytes),
            human_size(self.total_bytes)
        );
        let mut line = format!(
            "{:<13}  {:<11}  {bytes:>17}",
            truncated_id(&self.digest),
            state_name(self.state),
        );
        let remaining = self.total_bytes.saturating_sub(self.downloaded_bytes);
        if self.state == admin::LayerState::Downloading
            && remaining > 0
            && let Some(rate) = self.rate_bytes_per_second.filter(|rate| *rate >= 1.0)
        {
            line.push_str(&format!(
                "  {:>8}/s  ETA {}",
                human_size(rate as u64),
                eta_text(Duration::from_secs_f64(remaining as f64 / rate))
            ));
        }
        line
    }
}

/// The live table: one line per layer, redrawn in place.
#[derive(Default)]
struct LiveTable {
    layers: Vec<LayerRow>,
    /// Lines of the last drawing, to move the cursor back over them.
    drawn_lines: usize,
    drawn_at: Option<Instant>,
}

impl LiveTable {
    /// Takes `event`; returns whether it is time to redraw.
    fn update(&mut self, event: &admin::pull_progress::Event, now: Instant) -> bool {
        let admin::pull_progress::Event::Layer(layer) = event else {
            return false;
        };
        let state_changed = match self
            .layers
            .iter_mut()
            .find(|row| row.digest == layer.digest)
        {
            Some(row) => {
                let changed = row.state != layer.state();
                row.update(layer, now);
                changed
            }
            None => {
                self.layers.push(LayerRow::new(layer, now));
                true
            }
        };
        let due = self
            .drawn_at
            .is_none_or(|at| now.duration_since(at) >= Duration::from_millis(REDRAW_INTERVAL_MS));
        if state_changed || due {
            self.drawn_at = Some(now);
            return true;
        }
        false
    }

    /// Moves up over the last drawing and writes every line again.
    fn redraw(&mut self) -> String {
        let mut text = String::new();
        if self.drawn_lines > 0 {
            // ANSI: cursor up N lines, to the first column.
            text.push_str(&format!("\x1b[{}F", self.drawn_lines));
        }
        for row in &self.layers {
            // ANSI: clear the line before writing it.
            text.push_str("\x1b[2K");
            text.push_str(&row.line());
            text.push('\n');
        }
        self.drawn_lines = self.layers.len();
        text
    }
}

/// Plain lines for a log: one per state change, and one every
/// [`PLAIN_LINE_INTERVAL_MS`] per downloading layer.
#[derive(Default)]
struct PlainLines {
    layers: Vec<(LayerRow, Instant)>,
}

impl PlainLines {
    fn update(&mut self, event: &admin::pull_progress::Event, now: Instant) -> Vec<String> {
        match event {
            admin::pull_progress::Event::Resolved(resolved) => vec![format!(
                "resolved {}: {} layers, {}",
                resolved.manifest_digest,
                resolved.layer_count,
                human_size(resolved.total_bytes)
            )],
            admin::pull_progress::Event::Done(_) => Vec::new(),
            admin::pull_progress::Event::Layer(layer) => {
                match self
                    .layers
                    .iter_mut()
                    .find(|(row, _)| row.digest == layer.digest)
                {
                    None => {
                        let row = LayerRow::new(layer, now);
                        let line = row.line();
                        self.layers.push((row, now));
                        vec![line]
                    }
                    Some((row, printed_at)) => {
                        let state_changed = row.state != layer.state();
                        row.update(layer, now);
                        let due = now.duration_since(*printed_at)
                            >= Duration::from_millis(PLAIN_LINE_INTERVAL_MS);
                        if state_changed || due {
                            *printed_at = now;
                            vec![row.line()]
                        } else {
                            Vec::new()
                        }
                    }
                }
            }
        }
    }
}

fn state_name(state: admin::LayerState) -> &'static str {
    match state {
        admin::LayerState::Unspecified => "unknown",
        admin::LayerState::Queued => "queued",
        admin::LayerState::Downloading => "downloading",
        admin::LayerState::Extracting => "extracting",
        admin::LayerState::Done => "done",
        admin::LayerState::Reused => "reused",
    }
}

/// `45s`, `3m05s`, `2h10m`.
fn eta_text(remaining: Duration) -> String {
    let seconds = remaining.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

fn done_event(image_ref: &str) -> admin::pull_progress::Event {
    admin::pull_progress::Event::Done(admin::PullDone {
        image_ref: image_ref.to_owned(),
    })
}

/// One event as one line of JSON (`"event"` says which kind).
fn json_line(event: &admin::pull_progress::Event) -> String {
    let value = match event {
        admin::pull_progress::Event::Resolved(resolved) => serde_json::json!({
            "event": "resolved",
            "manifest_digest": resolved.manifest_digest,
            "config_digest": resolved.config_digest,
            "layer_count": resolved.layer_count,
            "total_bytes": resolved.total_bytes,
        }),
        admin::pull_progress::Event::Layer(layer) => serde_json::json!({
            "event": "layer",
            "digest": layer.digest,
            "media_type": layer.media_type,
            "state": state_name(layer.state()),
            "downloaded_bytes": layer.downloaded_bytes,
            "total_bytes": layer.total_bytes,
            "extracted": layer.extracted,
        }),
        admin::pull_progress::Event::Done(done) => serde_json::json!({
            "event": "done",
            "image_ref": done.image_ref,
        }),
    };
    // A `Value` with string keys always serializes.
    let mut line = serde_json::to_string(&value).unwrap_or_default();
    line.push('\n');
    line
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

    fn layer(state: admin::LayerState, downloaded_bytes: u64) -> admin::LayerProgress {
        admin::LayerProgress {
            digest: format!("sha256:{}", "ab".repeat(32)),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".to_owned(),
            total_bytes: 3_000_000,
            downloaded_bytes,
            extracted: false,
            state: state as i32,
        }
    }

    #[test]
    fn eta_is_seconds_then_minutes_then_hours() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (60, "1m00s"),
            (185, "3m05s"),
            (7_800, "2h10m"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(eta_text(Duration::from_secs(seconds)), expected);
        }
    }

    #[test]
    fn a_downloading_layer_shows_bytes_rate_and_eta() {
        let start = Instant::now();
        let mut row = LayerRow::new(&layer(admin::LayerState::Downloading, 0), start);
        assert_eq!(row.line(), "ababababababa  downloading           0B / 3MB");
        row.update(
            &layer(admin::LayerState::Downloading, 1_000_000),
            start + Duration::from_secs(1),
        );
        assert_eq!(
            row.line(),
            "ababababababa  downloading          1MB / 3MB       1MB/s  ETA 2s"
        );
        row.update(
            &layer(admin::LayerState::Done, 3_000_000),
            start + Duration::from_secs(2),
        );
        assert_eq!(row.line(), "ababababababa  done                 3MB / 3MB");
    }

    #[test]
    fn the_live_table_redraws_in_place() {
        let start = Instant::now();
        let mut table = LiveTable::default();
        let event = admin::pull_progress::Event::Layer(layer(admin::LayerState::Queued, 0));
        assert!(table.update(&event, start));
        let first = table.redraw();
        assert!(
            first.starts_with("\x1b[2K") && first.ends_with('\n'),
            "{first:?}"
        );
        // A byte update too soon after a drawing waits; a state change does not.
        let bytes = admin::pull_progress::Event::Layer(layer(admin::LayerState::Queued, 5));
        assert!(!table.update(&bytes, start + Duration::from_millis(10)));
        let downloading =
            admin::pull_progress::Event::Layer(layer(admin::LayerState::Downloading, 6));
        assert!(table.update(&downloading, start + Duration::from_millis(20)));
        let second = table.redraw();
        assert!(second.starts_with("\x1b[1F\x1b[2K"), "{second:?}");
        assert!(second.contains("downloading"), "{second:?}");
    }

    #[test]
    fn events_are_one_json_object_per_line() {
        let line = json_line(&admin::pull_progress::Event::Layer(layer(
            admin::LayerState::Extracting,
            3_000_000,
        )));
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["event"], "layer");
        assert_eq!(value["state"], "extracting");
        assert_eq!(value["downloaded_bytes"], 3_000_000);
        let done: serde_json::Value =
            serde_json::from_str(&json_line(&done_event("sha256:1"))).unwrap();
        assert_eq!(
            done,
            serde_json::json!({"event": "done", "image_ref": "sha256:1"})
        );
    }

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
