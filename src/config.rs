//! Daemon configuration: where its state lives, where it listens, its limits.
//!
//! Two layers of "as the user wrote it": [`RawConfig`] (the `serve` flags) and
//! [`FileConfig`] (the TOML file, `--config FILE`, or
//! `/etc/cri-imaged/config.toml` when running as root and it exists). A flag
//! overrides the file's value. [`Config::from_raw`] merges them, fills in
//! every default and validates; an unknown key or a bad value is an error
//! that names the key (`pull.progress_timeout`) and the value. `Config` is all
//! the rest of the daemon reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::oci::platform::Platform;
use crate::reference::ImageReference;
pub use crate::registry::MinThroughput;

/// Where the config file is read from when `--config` is not given (only as
/// root, and only when it exists).
pub const DEFAULT_CONFIG_FILE: &str = "/etc/cri-imaged/config.toml";
/// A config file larger than this is not one.
const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Settings as given on the command line, before the file, defaults and
/// validation.
#[derive(Clone, Debug, Default)]
pub struct RawConfig {
    pub root: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub hosts_directory: Option<PathBuf>,
    /// Pulls running at once (0 = unlimited, 1 = the kubelet's serialized mode).
    pub pulls_max: Option<usize>,
    /// Where to serve `/metrics` (TCP address or unix socket path); off if unset.
    pub metrics_address: Option<crate::metrics::MetricsAddress>,
    /// `--config FILE`; `None` means the default file if present.
    pub config_file: Option<PathBuf>,
    /// `--log-format`, overriding `log.format`.
    pub log_format: Option<LogFormat>,
}

/// The TOML config file as written. Every key is optional; see
/// `contrib/config.toml` for each one with its default.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub root: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub hosts_dir: Option<PathBuf>,
    #[serde(default)]
    pub pull: FilePull,
    #[serde(default)]
    pub runtime_handlers: Vec<FileRuntimeHandler>,
    #[serde(default)]
    pub pinned_images: Vec<String>,
    #[serde(default)]
    pub shutdown: FileShutdown,
    #[serde(default)]
    pub gc: FileGc,
    #[serde(default)]
    pub snapshots: FileSnapshots,
    #[serde(default)]
    pub log: FileLog,
    #[serde(default)]
    pub api: FileApi,
    /// Where to serve `/metrics`: `HOST:PORT` or an absolute unix socket path.
    pub metrics_address: Option<String>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePull {
    pub max_concurrent: Option<usize>,
    pub queue_max: Option<usize>,
    pub max_concurrent_downloads: Option<usize>,
    pub max_concurrent_extractions: Option<usize>,
    pub progress_timeout: Option<String>,
    pub min_throughput: Option<String>,
    pub min_throughput_window: Option<String>,
    pub deadline: Option<String>,
}

#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRuntimeHandler {
    pub name: String,
    pub platform: String,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileShutdown {
    pub grace_period: Option<String>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGc {
    pub interval: Option<String>,
    pub reconcile_grace_period: Option<String>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSnapshots {
    pub sync_delay: Option<String>,
    pub kernel_boot_id_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileApi {
    pub busy_poll_us: Option<u64>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Directory holding the database, content and snapshots.
    pub root: PathBuf,
    /// The unix socket the CRI services listen on.
    pub socket: PathBuf,
    /// containerd-compatible `certs.d` directory of registry hosts.
    pub hosts_directory: PathBuf,
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    /// Pulls running at once; 0 means no limit.
    pub pulls_max: usize,
    /// Pulls waiting for a turn when `pulls_max` is reached; more are refused.
    pub pulls_queued_max: usize,
    /// Layer downloads running at once, all pulls together.
    pub layer_downloads_max: usize,
    /// Layer extractions running at once, all pulls together.
    pub extractions_max: usize,
    /// A registry response that sends no byte for this long has stalled.
    pub progress_timeout_ms: u64,
    pub min_throughput: Option<MinThroughput>,
    /// A pull still running this long after it started fails.
    pub pull_deadline_ms: Option<u64>,
    /// Runtime handler name -> the platform its images are pulled for.
    pub runtime_handlers: BTreeMap<String, Platform>,
    /// Exact names (normalized) and `prefix*` patterns of pinned images.
    pub pinned_images: Vec<String>,
    /// How long pulls in flight may finish after SIGTERM/SIGINT.
    pub shutdown_grace_period_ms: u64,
    /// Time between background garbage collections.
    pub gc_interval_ms: u64,
    /// How long what interrupted pulls stored stays protected after a restart.
    pub gc_reconcile_grace_period_ms: u64,
    /// How long the background sync of committed snapshots waits after a
    /// commit for more to gather.
    pub snapshot_sync_delay_ms: u64,
    /// Where the kernel boot id is read: it tells a restart of the daemon
    /// (page cache intact) from a reboot (unsynced snapshots distrusted).
    pub kernel_boot_id_file: PathBuf,
    /// How long, in microseconds, a CRI connection whose client sends calls
    /// back to back is polled after an answer instead of sleeping; 0 never.
    pub busy_poll_us: u64,
    pub log_format: LogFormat,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub log_level: String,
    /// Where to serve `/metrics`; `None` serves no metrics.
    pub metrics_address: Option<crate::metrics::MetricsAddress>,
}

/// Defaults, with units in their names.
pub const DEFAULT_PULLS_QUEUED_MAX: usize = 256;
pub const DEFAULT_LAYER_DOWNLOADS_MAX: usize = 3;
pub const DEFAULT_PROGRESS_TIMEOUT_MS: u64 = 5 * 60 * 1000;
pub const DEFAULT_MIN_THROUGHPUT_WINDOW_MS: u64 = 30 * 1000;
pub const DEFAULT_SHUTDOWN_GRACE_PERIOD_MS: u64 = 30 * 1000;
pub const DEFAULT_GC_INTERVAL_MS: u64 = 60 * 60 * 1000;
pub const DEFAULT_GC_RECONCILE_GRACE_PERIOD_MS: u64 = 10 * 60 * 1000;
pub const DEFAULT_SNAPSHOT_SYNC_DELAY_MS: u64 = 0;

const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{key} must be an absolute path, got {path}")]
    RelativePath { key: &'static str, path: PathBuf },
    #[error("no default {key}: neither {variable} nor HOME is set; pass --{key}")]
    NoDefault {
        key: &'static str,
        variable: &'static str,
    },
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is larger than {bytes_max} bytes")]
    FileTooLarge { path: PathBuf, bytes_max: u64 },
    /// A TOML syntax error, an unknown key or a value of the wrong type; the
    /// parser's message names the key and the line.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key {key}: invalid value {value:?}: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
}

impl Config {
    /// Flags, then the config file (the one given, or the default one if
    /// present), then defaults.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let (file, config_file) = match &raw.config_file {
            Some(path) => (read_config_file(path)?, Some(path.clone())),
            None if is_root_user() && Path::new(DEFAULT_CONFIG_FILE).exists() => {
                let path = PathBuf::from(DEFAULT_CONFIG_FILE);
                (read_config_file(&path)?, Some(path))
            }
            None => (FileConfig::default(), None),
        };
        Config::from_parts(raw, file, config_file)
    }

    /// Merges `raw` (wins) over `file` (read from `config_file`) and validates.
    pub fn from_parts(
        raw: RawConfig,
        file: FileConfig,
        config_file: Option<PathBuf>,
    ) -> Result<Config, ConfigError> {
        let root = match raw.root.or(file.root) {
            Some(root) => root,
            None => default_root()?,
        };
        let socket = match raw.socket.or(file.socket) {
            Some(socket) => socket,
            None => default_socket()?,
        };
        let hosts_directory = match raw.hosts_directory.or(file.hosts_dir) {
            Some(directory) => directory,
            None => default_hosts_directory()?,
        };
        for (key, path) in [
            ("root", &root),
            ("socket", &socket),
            ("hosts-dir", &hosts_directory),
        ] {
            if !path.is_absolute() {
                return Err(ConfigError::RelativePath {
                    key,
                    path: path.clone(),
                });
            }
        }
        let metrics_address = match (raw.metrics_address.clone(), &file.metrics_address) {
            (Some(address), _) => Some(address),
            (None, Some(text)) => Some(
                text.parse::<crate::metrics::MetricsAddress>()
                    .map_err(|error| invalid("metrics_address", text, &error.to_string()))?,
            ),
            (None, None) => None,
        };
        let pull = &file.pull;
        let layer_downloads_max = at_least_one(
            "pull.max_concurrent_downloads",
            pull.max_concurrent_downloads,
            DEFAULT_LAYER_DOWNLOADS_MAX,
        )?;
        let extractions_max = at_least_one(
            "pull.max_concurrent_extractions",
            pull.max_concurrent_extractions,
            std::thread::available_parallelism().map_or(2, usize::from),
        )?;
        let progress_timeout_ms = match &pull.progress_timeout {
            Some(text) => positive_duration_ms("pull.progress_timeout", text)?,
            None => DEFAULT_PROGRESS_TIMEOUT_MS,
        };
        let min_throughput_window_ms = match &pull.min_throughput_window {
            Some(text) => positive_duration_ms("pull.min_throughput_window", text)?,
            None => DEFAULT_MIN_THROUGHPUT_WINDOW_MS,
        };
        let min_throughput = match &pull.min_throughput {
            Some(text) => Some(MinThroughput {
                bytes_per_second: throughput_bytes_per_second("pull.min_throughput", text)?,
                window_ms: min_throughput_window_ms,
            }),
            None => None,
        };
        let pull_deadline_ms = match &pull.deadline {
            Some(text) => Some(positive_duration_ms("pull.deadline", text)?),
            None => None,
        };
        let mut runtime_handlers = BTreeMap::new();
        for handler in &file.runtime_handlers {
            if handler.name.is_empty() {
                return Err(invalid(
                    "runtime_handlers.name",
                    "",
                    "a runtime handler needs a name (the empty name is the default platform)",
                ));
            }
            let key = format!("runtime_handlers.{}.platform", handler.name);
            let platform = Platform::parse(&handler.platform)
                .map_err(|error| invalid(&key, &handler.platform, &error.to_string()))?;
            if runtime_handlers
                .insert(handler.name.clone(), platform)
                .is_some()
            {
                return Err(invalid(
                    "runtime_handlers.name",
                    &handler.name,
                    "listed more than once",
                ));
            }
        }
        let pinned_images = file
            .pinned_images
            .iter()
            .map(|pattern| pinned_pattern(pattern))
            .collect::<Result<Vec<_>, _>>()?;
        let shutdown_grace_period_ms = match &file.shutdown.grace_period {
            Some(text) => duration_ms("shutdown.grace_period", text)?,
            None => DEFAULT_SHUTDOWN_GRACE_PERIOD_MS,
        };
        let gc_interval_ms = match &file.gc.interval {
            Some(text) => positive_duration_ms("gc.interval", text)?,
            None => DEFAULT_GC_INTERVAL_MS,
        };
        let gc_reconcile_grace_period_ms = match &file.gc.reconcile_grace_period {
            Some(text) => duration_ms("gc.reconcile_grace_period", text)?,
            None => DEFAULT_GC_RECONCILE_GRACE_PERIOD_MS,
        };
        let snapshot_sync_delay_ms = match &file.snapshots.sync_delay {
            Some(text) => duration_ms("snapshots.sync_delay", text)?,
            None => DEFAULT_SNAPSHOT_SYNC_DELAY_MS,
        };
        let kernel_boot_id_file = match &file.snapshots.kernel_boot_id_file {
            Some(path) if !path.is_absolute() => {
                return Err(ConfigError::RelativePath {
                    key: "snapshots.kernel_boot_id_file",
                    path: path.clone(),
                });
            }
            Some(path) => path.clone(),
            None => PathBuf::from(crate::snapshot_store::sync::KERNEL_BOOT_ID_PATH),
        };
        let busy_poll_max_us = crate::api::BUSY_POLL_WINDOW_MAX.as_micros() as u64;
        let busy_poll_us = match file.api.busy_poll_us {
            None => crate::api::DEFAULT_BUSY_POLL_WINDOW.as_micros() as u64,
            Some(us) if us > busy_poll_max_us => {
                return Err(invalid(
                    "api.busy_poll_us",
                    &us.to_string(),
                    &format!(
                        "at most {busy_poll_max_us}: the polling holds a runtime worker thread"
                    ),
                ));
            }
            Some(us) => us,
        };
        let log_format = match (raw.log_format, file.log.format.as_deref()) {
            (Some(format), _) => format,
            (None, None | Some("text")) => LogFormat::Text,
            (None, Some("json")) => LogFormat::Json,
            (None, Some(other)) => {
                return Err(invalid(
                    "log.format",
                    other,
                    "expected \"text\" or \"json\"",
                ));
            }
        };
        let log_level = match file.log.level.as_deref() {
            None => "info".to_owned(),
            Some(level) if LOG_LEVELS.contains(&level) => level.to_owned(),
            Some(other) => {
                return Err(invalid(
                    "log.level",
                    other,
                    "expected one of trace, debug, info, warn, error",
                ));
            }
        };
        Ok(Config {
            root,
            socket,
            hosts_directory,
            config_file,
            pulls_max: raw.pulls_max.or(pull.max_concurrent).unwrap_or(0),
            pulls_queued_max: pull.queue_max.unwrap_or(DEFAULT_PULLS_QUEUED_MAX),
            layer_downloads_max,
            extractions_max,
            progress_timeout_ms,
            min_throughput,
            pull_deadline_ms,
            runtime_handlers,
            pinned_images,
            shutdown_grace_period_ms,
            gc_interval_ms,
            gc_reconcile_grace_period_ms,
            snapshot_sync_delay_ms,
            kernel_boot_id_file,
            busy_poll_us,
            log_format,
            log_level,
            metrics_address,
        })
    }

    /// The metadata database file.
    pub fn metadata_path(&self) -> PathBuf {
        self.root.join("metadata.redb")
    }

    pub fn content_directory(&self) -> PathBuf {
        self.root.join("content")
    }

    pub fn snapshots_directory(&self) -> PathBuf {
        self.root.join("snapshots")
    }
}

/// Reads and parses (but does not validate) a config file.
pub fn read_config_file(path: &Path) -> Result<FileConfig, ConfigError> {
    use std::io::Read as _;
    let read_error = |source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read_error)?
        .take(CONFIG_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > CONFIG_FILE_BYTES_MAX {
        return Err(ConfigError::FileTooLarge {
            path: path.to_path_buf(),
            bytes_max: CONFIG_FILE_BYTES_MAX,
        });
    }
    parse_config_text(&text).map_err(|message| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses config file text; the error is the parser's message (it names the
/// key, the line and the column).
pub fn parse_config_text(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|error| error.to_string().trim_end().to_owned())
}

fn invalid(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn at_least_one(key: &str, value: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(invalid(key, "0", "must be at least 1")),
        Some(value) => Ok(value),
    }
}

fn positive_duration_ms(key: &str, text: &str) -> Result<u64, ConfigError> {
    match duration_ms(key, text)? {
        0 => Err(invalid(key, text, "must be longer than zero")),
        milliseconds => Ok(milliseconds),
    }
}

/// `"90s"`, `"5m"`, `"1h30m"`, `"250ms"`, `"2d"`: one or more numbers, each
/// with a unit (ms, s, m, h, d).
pub fn duration_ms(key: &str, text: &str) -> Result<u64, ConfigError> {
    const REASON: &str = "expected a duration such as \"30s\", \"5m\", \"1h30m\" or \"500ms\"";
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid(key, text, REASON));
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(invalid(key, text, REASON));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| invalid(key, text, "number too large"))?;
        rest = &rest[digits..];
        let unit_length = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit_ms: u64 = match &rest[..unit_length] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60 * 1000,
            "h" => 60 * 60 * 1000,
            "d" => 24 * 60 * 60 * 1000,
            _ => return Err(invalid(key, text, REASON)),
        };
        rest = &rest[unit_length..];
        total_ms = number
            .checked_mul(unit_ms)
            .and_then(|part| total_ms.checked_add(part))
            .ok_or_else(|| invalid(key, text, "duration too long"))?;
    }
    Ok(total_ms)
}

/// `"512MiB"`, `"10MB"`, `"100k"`, `"4096"`: a number of bytes with an
/// optional decimal (kB, MB, GB) or binary (KiB, MiB, GiB) unit.
pub fn size_bytes(key: &str, text: &str) -> Result<u64, ConfigError> {
    const REASON: &str = "expected a size such as \"512KiB\", \"10MB\" or \"4096\"";
    let trimmed = text.trim();
    let digits = trimmed.len()
        - trimmed
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .len();
    if digits == 0 {
        return Err(invalid(key, text, REASON));
    }
    let number: u64 = trimmed[..digits]
        .parse()
        .map_err(|_| invalid(key, text, "number too large"))?;
    let multiplier: u64 = match trimmed[digits..].trim() {
        "" | "B" => 1,
        "k" | "kB" | "KB" => 1000,
        "M" | "MB" => 1000 * 1000,
        "G" | "GB" => 1000 * 1000 * 1000,
        "Ki" | "KiB" => 1024,
        "Mi" | "MiB" => 1024 * 1024,
        "Gi" | "GiB" => 1024 * 1024 * 1024,
        _ => return Err(invalid(key, text, REASON)),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| invalid(key, text, "size too large"))
}

/// A size per second (`"1MiB"`, or `"1MiB/s"`), at least one byte.
fn throughput_bytes_per_second(key: &str, text: &str) -> Result<u64, ConfigError> {
    let size = text.trim().strip_suffix("/s").unwrap_or(text);
    match size_bytes(key, size).map_err(|_| {
        invalid(
            key,
            text,
            "expected bytes per second such as \"100KiB\" or \"1MB/s\"",
        )
    })? {
        0 => Err(invalid(key, text, "must be at least one byte per second")),
        bytes => Ok(bytes),
    }
}

/// A `prefix*` pattern as written, or an exact name normalized the way the
/// daemon stores names (`busybox` is `docker.io/library/busybox:latest`).
fn pinned_pattern(pattern: &str) -> Result<String, ConfigError> {
    const KEY: &str = "pinned_images";
    if pattern.is_empty() {
        return Err(invalid(KEY, pattern, "an empty pattern"));
    }
    match pattern.find('*') {
        Some(position) if position + 1 == pattern.len() => Ok(pattern.to_owned()),
        Some(_) => Err(invalid(
            KEY,
            pattern,
            "a `*` is allowed only at the end (a prefix pattern)",
        )),
        None => ImageReference::parse_docker_ref(pattern)
            .map(|reference| reference.to_string())
            .map_err(|error| invalid(KEY, pattern, &error.to_string())),
    }
}

/// `/var/lib/cri-imaged` for root (the node service); a per-user data directory
/// otherwise, so that trying the daemon out needs no privileges.
pub fn default_root() -> Result<PathBuf, ConfigError> {
    if is_root_user() {
        return Ok(PathBuf::from("/var/lib/cri-imaged"));
    }
    Ok(user_directory("XDG_DATA_HOME", ".local/share", "root")?.join("cri-imaged"))
}

/// `/run/cri-imaged/cri-imaged.sock` for root; under `XDG_RUNTIME_DIR` otherwise.
pub fn default_socket() -> Result<PathBuf, ConfigError> {
    if is_root_user() {
        return Ok(PathBuf::from("/run/cri-imaged/cri-imaged.sock"));
    }
    if let Some(runtime) = non_empty_variable("XDG_RUNTIME_DIR") {
        return Ok(Path::new(&runtime).join("cri-imaged/cri-imaged.sock"));
    }
    Ok(user_directory("XDG_DATA_HOME", ".local/share", "socket")?
        .join("cri-imaged/cri-imaged.sock"))
}

/// `/etc/cri-imaged/certs.d` for root; under the user's config directory otherwise.
pub fn default_hosts_directory() -> Result<PathBuf, ConfigError> {
    if is_root_user() {
        return Ok(PathBuf::from("/etc/cri-imaged/certs.d"));
    }
    Ok(user_directory("XDG_CONFIG_HOME", ".config", "hosts-dir")?.join("cri-imaged/certs.d"))
}

fn user_directory(
    variable: &'static str,
    under_home: &str,
    key: &'static str,
) -> Result<PathBuf, ConfigError> {
    if let Some(directory) = non_empty_variable(variable) {
        return Ok(PathBuf::from(directory));
    }
    let home = non_empty_variable("HOME").ok_or(ConfigError::NoDefault { key, variable })?;
    Ok(Path::new(&home).join(under_home))
}

fn non_empty_variable(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|value| !value.is_empty())
}

fn is_root_user() -> bool {
    // The owner of /proc/self is the effective uid of this process; reading it
    // avoids a libc dependency (and any unsafe) for one getuid() call.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_refused_with_the_key_named() {
        let error = Config::from_raw(RawConfig {
            root: Some(PathBuf::from("relative/dir")),
            ..RawConfig::default()
        })
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "root must be an absolute path, got relative/dir"
        );
        let error = Config::from_raw(RawConfig {
            root: Some(PathBuf::from("/srv")),
            socket: Some(PathBuf::from("x.sock")),
            ..RawConfig::default()
        })
        .unwrap_err();
        assert!(error.to_string().starts_with("socket must be"), "{error}");
    }

    #[test]
    fn explicit_paths_are_kept_and_state_lives_under_the_root() {
        let config = Config::from_raw(RawConfig {
            root: Some(PathBuf::from("/srv/images")),
            socket: Some(PathBuf::from("/tmp/x.sock")),
            hosts_directory: Some(PathBuf::from("/etc/x/certs.d")),
            pulls_max: Some(1),
            ..RawConfig::default()
        })
        .unwrap();
        assert_eq!(
            config.metadata_path(),
            PathBuf::from("/srv/images/metadata.redb")
        );
        assert_eq!(
            config.content_directory(),
            PathBuf::from("/srv/images/content")
        );
        assert_eq!(config.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(config.pulls_max, 1);
    }

    fn paths() -> RawConfig {
        RawConfig {
            root: Some(PathBuf::from("/srv/images")),
            socket: Some(PathBuf::from("/run/x.sock")),
            hosts_directory: Some(PathBuf::from("/etc/x/certs.d")),
            ..RawConfig::default()
        }
    }

    /// The config `text` gives, with paths from flags.
    fn config_of(text: &str) -> Result<Config, String> {
        let file = parse_config_text(text)?;
        Config::from_parts(paths(), file, None).map_err(|error| error.to_string())
    }

    #[test]
    fn the_metrics_address_comes_from_the_file_and_a_bad_one_names_the_key() {
        assert_eq!(config_of("").unwrap().metrics_address, None);
        let config = config_of("metrics_address = \"127.0.0.1:9464\"").unwrap();
        assert_eq!(
            config.metrics_address,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        let error = config_of("metrics_address = \"not an address\"").unwrap_err();
        assert!(
            error.to_string().contains("metrics_address")
                && error.to_string().contains("not an address"),
            "{error}"
        );
    }

    #[test]
    fn an_empty_file_gives_every_default() {
        let config = config_of("").unwrap();
        assert_eq!(config.pulls_max, 0);
        assert_eq!(config.pulls_queued_max, 256);
        assert_eq!(config.layer_downloads_max, 3);
        assert!(config.extractions_max >= 1);
        assert_eq!(config.progress_timeout_ms, 300_000);
        assert_eq!(config.min_throughput, None);
        assert_eq!(config.pull_deadline_ms, None);
        assert!(config.runtime_handlers.is_empty());
        assert!(config.pinned_images.is_empty());
        assert_eq!(config.shutdown_grace_period_ms, 30_000);
        assert_eq!(config.gc_interval_ms, 3_600_000);
        assert_eq!(config.gc_reconcile_grace_period_ms, 600_000);
        assert_eq!(config.snapshot_sync_delay_ms, 0);
        assert_eq!(config.busy_poll_us, 200);
        assert_eq!(
            config.kernel_boot_id_file,
            PathBuf::from("/proc/sys/kernel/random/boot_id")
        );
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.log_level, "info");
    }

    #[test]
    fn the_example_file_in_contrib_parses_to_the_defaults_it_documents() {
        let text = include_str!("../contrib/config.toml");
        let file = parse_config_text(text).unwrap();
        let mut raw = paths();
        raw.root = None;
        raw.socket = None;
        raw.hosts_directory = None;
        let config = Config::from_parts(raw, file, None).unwrap();
        let defaults = config_of("").unwrap();
        assert_eq!(config.root, PathBuf::from("/var/lib/cri-imaged"));
        assert_eq!(
            config.socket,
            PathBuf::from("/run/cri-imaged/cri-imaged.sock")
        );
        assert_eq!(
            config.hosts_directory,
            PathBuf::from("/etc/cri-imaged/certs.d")
        );
        assert_eq!(config.pulls_max, defaults.pulls_max);
        assert_eq!(config.pulls_queued_max, defaults.pulls_queued_max);
        assert_eq!(config.layer_downloads_max, defaults.layer_downloads_max);
        assert_eq!(config.progress_timeout_ms, defaults.progress_timeout_ms);
        assert_eq!(
            config.shutdown_grace_period_ms,
            defaults.shutdown_grace_period_ms
        );
        assert_eq!(config.gc_interval_ms, defaults.gc_interval_ms);
        assert_eq!(
            config.gc_reconcile_grace_period_ms,
            defaults.gc_reconcile_grace_period_ms
        );
        assert_eq!(config.pinned_images, ["registry.k8s.io/pause:*".to_owned()]);
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.log_level, "info");
    }

    #[test]
    fn every_key_is_read() {
        let config = config_of(
            r#"
            root = "/ignored/flags/win"
            [pull]
            max_concurrent = 1
            queue_max = 10
            max_concurrent_downloads = 5
            max_concurrent_extractions = 2
            progress_timeout = "90s"
            min_throughput = "100KiB/s"
            min_throughput_window = "20s"
            deadline = "1h30m"
            [[runtime_handlers]]
            name = "arm"
            platform = "linux/arm64"
            [[runtime_handlers]]
            name = "wasm"
            platform = "wasi/wasm"
            pinned_images = ["registry.k8s.io/pause:*", "busybox"]
            "#,
        );
        // `pinned_images` after a table header belongs to that table.
        assert!(
            config
                .as_ref()
                .unwrap_err()
                .contains("unknown field `pinned_images`"),
            "{config:?}"
        );
        let config = config_of(
            r#"
            root = "/ignored/flags/win"
            pinned_images = ["registry.k8s.io/pause:*", "busybox"]
            [pull]
            max_concurrent = 1
            queue_max = 10
            max_concurrent_downloads = 5
            max_concurrent_extractions = 2
            progress_timeout = "90s"
            min_throughput = "100KiB/s"
            min_throughput_window = "20s"
            deadline = "1h30m"
            [[runtime_handlers]]
            name = "arm"
            platform = "linux/arm64"
            [shutdown]
            grace_period = "5s"
            [gc]
            interval = "15m"
            reconcile_grace_period = "0s"
            [snapshots]
            sync_delay = "250ms"
            kernel_boot_id_file = "/run/boot-id"
            [log]
            format = "json"
            level = "debug"
            [api]
            busy_poll_us = 0
            "#,
        )
        .unwrap();
        assert_eq!(
            config.root,
            PathBuf::from("/srv/images"),
            "a flag overrides the file"
        );
        assert_eq!(config.pulls_max, 1);
        assert_eq!(config.pulls_queued_max, 10);
        assert_eq!(config.layer_downloads_max, 5);
        assert_eq!(config.extractions_max, 2);
        assert_eq!(config.progress_timeout_ms, 90_000);
        assert_eq!(
            config.min_throughput,
            Some(MinThroughput {
                bytes_per_second: 102_400,
                window_ms: 20_000
            })
        );
        assert_eq!(config.pull_deadline_ms, Some(5_400_000));
        assert_eq!(
            config.runtime_handlers.get("arm"),
            Some(&Platform::parse("linux/arm64").unwrap())
        );
        assert_eq!(
            config.pinned_images,
            [
                "registry.k8s.io/pause:*".to_owned(),
                "docker.io/library/busybox:latest".to_owned()
            ]
        );
        assert_eq!(config.shutdown_grace_period_ms, 5_000);
        assert_eq!(config.gc_interval_ms, 900_000);
        assert_eq!(config.gc_reconcile_grace_period_ms, 0);
        assert_eq!(config.snapshot_sync_delay_ms, 250);
        assert_eq!(config.kernel_boot_id_file, PathBuf::from("/run/boot-id"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.log_level, "debug");
        assert_eq!(config.busy_poll_us, 0);
    }

    #[test]
    fn flags_override_the_file() {
        let file =
            parse_config_text("[pull]\nmax_concurrent = 4\n[log]\nformat = \"json\"").unwrap();
        let mut raw = paths();
        raw.pulls_max = Some(1);
        raw.log_format = Some(LogFormat::Text);
        let config = Config::from_parts(raw, file, None).unwrap();
        assert_eq!(config.pulls_max, 1);
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn every_bad_value_is_refused_naming_its_key_and_value() {
        let cases = [
            ("colour = 1", "unknown field `colour`"),
            ("[pull]\nmax_parallel = 1", "unknown field `max_parallel`"),
            (
                "[gc]\ninterval = \"1h\"\nbatch = 2",
                "unknown field `batch`",
            ),
            ("[pull]\nmax_concurrent = -1", "max_concurrent"),
            (
                "[api]\nbusy_poll_us = 1001",
                "config key api.busy_poll_us: invalid value \"1001\": at most 1000",
            ),
            ("[api]\nbusy_poll_us = \"200us\"", "busy_poll_us"),
            ("[pull]\nmax_concurrent = \"one\"", "max_concurrent"),
            (
                "[pull]\nmax_concurrent_downloads = 0",
                "config key pull.max_concurrent_downloads: invalid value \"0\": must be at least 1",
            ),
            (
                "[pull]\nmax_concurrent_extractions = 0",
                "config key pull.max_concurrent_extractions: invalid value \"0\"",
            ),
            (
                "[pull]\nprogress_timeout = \"5 minutes\"",
                "config key pull.progress_timeout: invalid value \"5 minutes\": expected a duration",
            ),
            (
                "[pull]\nprogress_timeout = \"0s\"",
                "config key pull.progress_timeout: invalid value \"0s\": must be longer than zero",
            ),
            ("[pull]\nprogress_timeout = 300", "progress_timeout"),
            (
                "[pull]\nmin_throughput = \"fast\"",
                "config key pull.min_throughput: invalid value \"fast\"",
            ),
            (
                "[pull]\nmin_throughput = \"0KiB\"",
                "config key pull.min_throughput: invalid value \"0KiB\": must be at least one byte",
            ),
            (
                "[pull]\nmin_throughput_window = \"-3s\"",
                "config key pull.min_throughput_window: invalid value \"-3s\"",
            ),
            (
                "[pull]\ndeadline = \"1y\"",
                "config key pull.deadline: invalid value \"1y\"",
            ),
            (
                "[pull]\ndeadline = \"99999999999999999d\"",
                "config key pull.deadline: invalid value \"99999999999999999d\": duration too long",
            ),
            (
                "[[runtime_handlers]]\nname = \"arm\"\nplatform = \"\"",
                "config key runtime_handlers.arm.platform: invalid value \"\"",
            ),
            (
                "[[runtime_handlers]]\nname = \"\"\nplatform = \"linux/arm64\"",
                "config key runtime_handlers.name: invalid value \"\"",
            ),
            (
                "[[runtime_handlers]]\nname = \"a\"\nplatform = \"linux/arm64\"\n[[runtime_handlers]]\nname = \"a\"\nplatform = \"linux/amd64\"",
                "config key runtime_handlers.name: invalid value \"a\": listed more than once",
            ),
            (
                "[[runtime_handlers]]\nname = \"arm\"",
                "missing field `platform`",
            ),
            (
                "[[runtime_handlers]]\nname = \"arm\"\nplatform = \"linux/arm64\"\nruntime = \"x\"",
                "unknown field `runtime`",
            ),
            (
                "pinned_images = [\"registry.k8s.io/*/pause\"]",
                "config key pinned_images: invalid value \"registry.k8s.io/*/pause\": a `*` is allowed only at the end",
            ),
            (
                "pinned_images = [\"Not A Name\"]",
                "config key pinned_images: invalid value \"Not A Name\"",
            ),
            (
                "pinned_images = [\"\"]",
                "config key pinned_images: invalid value \"\"",
            ),
            (
                "[shutdown]\ngrace_period = \"soon\"",
                "config key shutdown.grace_period: invalid value \"soon\"",
            ),
            (
                "[gc]\ninterval = \"0m\"",
                "config key gc.interval: invalid value \"0m\": must be longer than zero",
            ),
            (
                "[gc]\nreconcile_grace_period = \"10\"",
                "config key gc.reconcile_grace_period: invalid value \"10\"",
            ),
            (
                "[snapshots]\nsync_delay = \"later\"",
                "config key snapshots.sync_delay: invalid value \"later\"",
            ),
            (
                "[snapshots]\nkernel_boot_id_file = \"boot_id\"",
                "snapshots.kernel_boot_id_file must be an absolute path",
            ),
            (
                "[log]\nformat = \"xml\"",
                "config key log.format: invalid value \"xml\": expected \"text\" or \"json\"",
            ),
            (
                "[log]\nlevel = \"loud\"",
                "config key log.level: invalid value \"loud\"",
            ),
            ("root = \"relative\"", "must be an absolute path"),
        ];
        for (text, expected) in cases {
            let file = match parse_config_text(text) {
                Ok(file) => file,
                Err(message) => {
                    assert!(message.contains(expected), "{text:?}: {message}");
                    continue;
                }
            };
            let mut raw = paths();
            raw.root = None;
            let error = Config::from_parts(raw, file, None).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn durations_and_sizes_parse_with_their_units() {
        for (text, expected) in [
            ("250ms", 250),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("2d", 172_800_000),
            ("0s", 0),
        ] {
            assert_eq!(duration_ms("k", text).unwrap(), expected, "{text}");
        }
        for text in ["", "5", "m", "5 m", "5M", "1.5h", "-1s"] {
            assert!(duration_ms("k", text).is_err(), "{text:?}");
        }
        for (text, expected) in [
            ("4096", 4096),
            ("512KiB", 512 * 1024),
            ("512MiB", 512 * 1024 * 1024),
            ("10MB", 10_000_000),
            ("1GiB", 1 << 30),
            ("3kB", 3000),
        ] {
            assert_eq!(size_bytes("k", text).unwrap(), expected, "{text}");
        }
        for text in ["", "MiB", "1.5MiB", "1TiB", "12 parsecs"] {
            assert!(size_bytes("k", text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn a_missing_config_file_is_an_error_naming_it() {
        let error = Config::from_raw(RawConfig {
            config_file: Some(PathBuf::from("/nonexistent/cri-imaged.toml")),
            ..paths()
        })
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot read config file /nonexistent/cri-imaged.toml: "),
            "{error}"
        );
    }
}
