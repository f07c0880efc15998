//! Daemon configuration: where its state lives. `RawConfig` is what the user
//! wrote (flags, later a TOML file); `Config` is validated, with every default
//! filled in, and is all the rest of the daemon reads.

use std::path::{Path, PathBuf};

/// Settings as given on the command line, before defaults and validation.
#[derive(Clone, Debug, Default)]
pub struct RawConfig {
    pub root: Option<PathBuf>,
}

/// Validated settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Directory holding the database and, later, content and snapshots.
    pub root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("root must be an absolute path, got {root}")]
    RelativeRoot { root: PathBuf },
    #[error("no default root directory: neither XDG_DATA_HOME nor HOME is set; pass --root")]
    NoDefaultRoot,
}

impl Config {
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let root = match raw.root {
            Some(root) => root,
            None => default_root()?,
        };
        if !root.is_absolute() {
            return Err(ConfigError::RelativeRoot { root });
        }
        Ok(Config { root })
    }

    /// The metadata database file.
    pub fn metadata_path(&self) -> PathBuf {
        self.root.join("metadata.redb")
    }
}

/// `/var/lib/cri-imaged` for root (the node service); a per-user data directory
/// otherwise, so that trying the daemon out needs no privileges.
pub fn default_root() -> Result<PathBuf, ConfigError> {
    if is_root_user() {
        return Ok(PathBuf::from("/var/lib/cri-imaged"));
    }
    if let Some(data_home) = std::env::var_os("XDG_DATA_HOME").filter(|value| !value.is_empty()) {
        return Ok(Path::new(&data_home).join("cri-imaged"));
    }
    let home = std::env::var_os("HOME")
        .filter(|value| !value.is_empty())
        .ok_or(ConfigError::NoDefaultRoot)?;
    Ok(Path::new(&home).join(".local/share/cri-imaged"))
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
    fn relative_root_is_refused_with_the_path_named() {
        let error = Config::from_raw(RawConfig {
            root: Some(PathBuf::from("relative/dir")),
        })
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "root must be an absolute path, got relative/dir"
        );
    }

    #[test]
    fn explicit_root_is_kept_and_the_database_lives_inside_it() {
        let config = Config::from_raw(RawConfig {
            root: Some(PathBuf::from("/srv/images")),
        })
        .unwrap();
        assert_eq!(
            config.metadata_path(),
            PathBuf::from("/srv/images/metadata.redb")
        );
    }
}
