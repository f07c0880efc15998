//! The real `cri-imaged serve` binary as a test fixture: its own root, socket
//! and hosts directory in a temporary directory, its log in a file, killed on
//! drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon may take to start listening.
const DAEMON_START_TIMEOUT_MS: u64 = 30_000;

pub struct DaemonProcess {
    pub child: Child,
    pub root: tempfile::TempDir,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl DaemonProcess {
    /// Starts the daemon and waits until its socket accepts connections.
    pub fn start() -> DaemonProcess {
        Self::start_with(&[])
    }

    /// Like [`DaemonProcess::start`], with extra `serve` flags.
    pub fn start_with(extra_arguments: &[&str]) -> DaemonProcess {
        let root = tempfile::tempdir().unwrap();
        let socket = root.path().join("run/cri-imaged.sock");
        let log = root.path().join("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_cri-imaged"))
            .arg("serve")
            .arg("--root")
            .arg(root.path().join("state"))
            .arg("--socket")
            .arg(&socket)
            .arg("--hosts-dir")
            .arg(root.path().join("certs.d"))
            .args(extra_arguments)
            .env("CRI_IMAGED_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let daemon = DaemonProcess {
            child,
            root,
            socket,
            log,
        };
        let deadline = Instant::now() + Duration::from_millis(DAEMON_START_TIMEOUT_MS);
        while std::os::unix::net::UnixStream::connect(&daemon.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "daemon did not listen: {}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        daemon
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's `--root`.
    pub fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
