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
    /// Extra `serve` flags, given again on restart.
    pub arguments: Vec<String>,
    /// Extra environment variables (`FAILPOINTS`), given again on restart.
    pub environment: Vec<(String, String)>,
}

/// `cri-imaged serve` on the directories under `root`, its log appended to `log`.
fn spawn_daemon(
    root: &std::path::Path,
    socket: &std::path::Path,
    log: &std::path::Path,
    arguments: &[String],
    environment: &[(String, String)],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_cri-imaged"))
        .arg("serve")
        .arg("--root")
        .arg(root.join("state"))
        .arg("--socket")
        .arg(socket)
        .arg("--hosts-dir")
        .arg(root.join("certs.d"))
        .args(arguments)
        .env("CRI_IMAGED_LOG", "info")
        .envs(environment.iter().map(|(name, value)| (name, value)))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

impl DaemonProcess {
    /// Starts the daemon and waits until its socket accepts connections.
    pub fn start() -> DaemonProcess {
        Self::start_with(&[])
    }

    /// Like [`DaemonProcess::start`], with extra `serve` flags.
    pub fn start_with(extra_arguments: &[&str]) -> DaemonProcess {
        Self::start_with_environment(extra_arguments, &[])
    }

    /// Like [`DaemonProcess::start_with`], with extra environment variables
    /// (`FAILPOINTS` needs the `failpoints` feature).
    pub fn start_with_environment(
        extra_arguments: &[&str],
        environment: &[(&str, &str)],
    ) -> DaemonProcess {
        let root = tempfile::tempdir().unwrap();
        let socket = root.path().join("run/cri-imaged.sock");
        let log = root.path().join("daemon.log");
        let arguments: Vec<String> = extra_arguments.iter().map(ToString::to_string).collect();
        let environment: Vec<(String, String)> = environment
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let child = spawn_daemon(root.path(), &socket, &log, &arguments, &environment);
        let daemon = DaemonProcess {
            child,
            root,
            socket,
            log,
            arguments,
            environment,
        };
        daemon.wait_until_listening();
        daemon
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_millis(DAEMON_START_TIMEOUT_MS);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "daemon did not listen: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops the daemon with SIGTERM and waits for it; returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        if let Some(status) = self.child.try_wait().unwrap() {
            return status;
        }
        let terminated = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(terminated.success());
        let deadline = Instant::now() + Duration::from_millis(DAEMON_START_TIMEOUT_MS);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not stop: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the daemon again on the same root, socket and flags (stopping
    /// it first if it still runs), and waits until it listens.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_daemon(
            self.root.path(),
            &self.socket,
            &self.log,
            &self.arguments,
            &self.environment,
        );
        self.wait_until_listening();
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
