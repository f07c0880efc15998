//! The real `cri-imaged` binary: it starts on an empty root, stops cleanly on
//! SIGTERM, and refuses to start on a corrupted store without deleting it.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn start_daemon(root: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cri-imaged"))
        .args(["serve", "--root"])
        .arg(root)
        // Each daemon gets its own socket and hosts directory, so tests never
        // meet on the system defaults.
        .arg("--socket")
        .arg(root.join("cri-imaged.sock"))
        .arg("--hosts-dir")
        .arg(root.join("certs.d"))
        .env("CRI_IMAGED_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the daemon binary starts")
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

#[test]
fn the_daemon_creates_its_store_and_exits_zero_on_sigterm() {
    let root = tempfile::tempdir().unwrap();
    let mut child = start_daemon(root.path());
    let database = root.path().join("metadata.redb");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !database.exists() {
        assert!(Instant::now() < deadline, "no database created");
        assert!(
            child.try_wait().unwrap().is_none(),
            "daemon exited early: {}",
            stderr_of(&mut child)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Give it a moment to finish opening and install its signal handlers.
    std::thread::sleep(Duration::from_millis(300));
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_for_exit(&mut child, Duration::from_secs(20));
    let log = stderr_of(&mut child);
    assert!(status.success(), "exit {status}: {log}");
    assert!(log.contains("metadata store open"), "{log}");
    assert!(log.contains("shutting down"), "{log}");
}

#[test]
fn the_daemon_refuses_a_corrupted_store_with_a_clear_message_and_deletes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let database = root.path().join("metadata.redb");
    let garbage = b"not a database: keep me".repeat(300);
    std::fs::write(&database, &garbage).unwrap();
    let mut child = start_daemon(root.path());
    let status = wait_for_exit(&mut child, Duration::from_secs(20));
    let log = stderr_of(&mut child);
    assert!(!status.success());
    assert!(log.contains("is corrupted"), "{log}");
    assert!(log.contains("nothing was deleted"), "{log}");
    assert_eq!(std::fs::read(&database).unwrap(), garbage);
}

#[test]
fn the_daemon_keeps_running_and_exits_zero_when_its_log_pipe_closes() {
    use std::io::BufRead;
    let root = tempfile::tempdir().unwrap();
    let mut child = start_daemon(root.path());
    let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first_line = String::new();
    log.read_line(&mut first_line).unwrap();
    assert!(first_line.contains("metadata store open"), "{first_line}");
    drop(log);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "daemon died when its log pipe closed"
    );
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = wait_for_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "{status}");
}
