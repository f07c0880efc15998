//! [`CliError`]: everything a client subcommand can fail with. Each variant
//! names what it was working on (the socket, the RPC, the image, the auth
//! file) and none carries a secret: password and token values never enter an
//! error, only the names of the fields that held them.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::reference::ReferenceError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    #[error("no socket given and no default socket: {0}")]
    DefaultSocket(#[source] ConfigError),
    #[error("cannot connect to cri-imaged at {}: is the daemon running?", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(
        "cri-imaged at {} did not accept a connection within {timeout_ms} ms",
        socket.display()
    )]
    ConnectTimeout { socket: PathBuf, timeout_ms: u64 },
    /// The daemon answered with a gRPC error status.
    #[error("{rpc} failed with status {code:?}: {message}")]
    Rpc {
        rpc: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("{rpc} got no answer from cri-imaged at {} within {timeout_ms} ms", socket.display())]
    RpcTimeout {
        rpc: &'static str,
        socket: PathBuf,
        timeout_ms: u64,
    },
    #[error("image {reference} not found")]
    ImageNotFound { reference: String },
    #[error("invalid image reference: {0}")]
    InvalidReference(#[source] ReferenceError),
    #[error("cannot read the password from stdin: {0}")]
    ReadPassword(#[source] std::io::Error),
    #[error("the password read from stdin is empty")]
    EmptyPassword,
    #[error("the password read from stdin is longer than {bytes_max} bytes")]
    PasswordTooLong { bytes_max: u64 },
    #[error(transparent)]
    AuthFile(#[from] AuthFileError),
    #[error("cannot write to stdout: {0}")]
    WriteOutput(#[source] std::io::Error),
    #[error("mount target {}: {source}", target.display())]
    MountTarget {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount image {image} on {}: {source}", target.display())]
    Mount {
        image: String,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no cri-imaged store under {} (no metadata.redb)", root.display())]
    NoStore { root: PathBuf },
    #[error("cannot open the store (is the daemon running? stop it first): {0}")]
    OpenStore(#[source] crate::metadata::OpenError),
    #[error("fsck failed: {0}")]
    Fsck(#[from] crate::fsck::FsckError),
    #[error("cannot unmount {}: {source}", target.display())]
    Unmount {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// The message for the user's terminal: this error's text and, when the
    /// text does not already say it, its innermost cause (the operating
    /// system's reason a connection or a read failed).
    pub fn report(&self) -> String {
        let message = self.to_string();
        let mut innermost: Option<&(dyn std::error::Error + 'static)> = None;
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            innermost = Some(error);
            cause = error.source();
        }
        match innermost.map(ToString::to_string) {
            Some(reason) if !message.contains(&reason) => format!("{message} ({reason})"),
            _ => message,
        }
    }
}

/// A Docker `config.json` style file that cannot be used. Every variant names
/// the file; none echoes a value read from it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFileError {
    #[error("cannot read auth file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("auth file {} is larger than {size_bytes_max} bytes", path.display())]
    TooLarge { path: PathBuf, size_bytes_max: u64 },
    /// Only syntax errors reach here: serde_json reports them by line and
    /// column, without quoting the text.
    #[error("auth file {} is not valid JSON: {source}", path.display())]
    NotJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("auth file {}: {location} must be {expected}", path.display())]
    WrongType {
        path: PathBuf,
        location: String,
        expected: &'static str,
    },
    #[error("auth file {}: the \"auth\" field of the entry for {host} {problem}", path.display())]
    MalformedAuth {
        path: PathBuf,
        host: String,
        problem: &'static str,
    },
    #[error("auth file {}: the entry for {host} holds no credentials", path.display())]
    EmptyEntry { path: PathBuf, host: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_adds_the_innermost_cause_once() {
        let read = CliError::from(AuthFileError::Read {
            path: PathBuf::from("/etc/auth.json"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert_eq!(
            read.report(),
            "cannot read auth file /etc/auth.json: entity not found"
        );
        let password = CliError::ReadPassword(std::io::Error::other(CliError::EmptyPassword));
        assert_eq!(
            password.report(),
            "cannot read the password from stdin: the password read from stdin is empty"
        );
        let not_found = CliError::ImageNotFound {
            reference: "busybox".to_owned(),
        };
        assert_eq!(not_found.report(), "image busybox not found");
    }
}
