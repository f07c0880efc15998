//! Daemon configuration: where its state lives and where it listens.
//! `RawConfig` is what the user wrote (flags, later a TOML file); `Config` is
//! validated, with every default filled in, and is all the rest of the daemon
//! reads.

use std::path::{Path, PathBuf};

/// Settings as given on the command line, before defaults and validation.
#[derive(Clone, Debug, Default)]
pub struct RawConfig {
    pub root: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub hosts_directory: Option<PathBuf>,
    /// Pulls running at once (0 = unlimited, 1 = the kubelet's serialized mode).
    pub pulls_max: Option<usize>,
    /// Where to serve `/metrics` (TCP address or unix socket path); off if unset.
    pub metrics_address: Option<crate::metrics::MetricsAddress>,
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
    /// Pulls running at once; 0 means no limit.
    pub pulls_max: usize,
    /// Where to serve `/metrics`; `None` serves no metrics.
    pub metrics_address: Option<crate::metrics::MetricsAddress>,
}

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
}

impl Config {
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let root = match raw.root {
            Some(root) => root,
            None => default_root()?,
        };
        let socket = match raw.socket {
            Some(socket) => socket,
            None => default_socket()?,
        };
        let hosts_directory = match raw.hosts_directory {
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
        Ok(Config {
            root,
            socket,
            hosts_directory,
            pulls_max: raw.pulls_max.unwrap_or(0),
            metrics_address: raw.metrics_address,
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
            metrics_address: None,
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
}
