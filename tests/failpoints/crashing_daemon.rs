//! The real daemon binary for crash drills: started on a root with fail
//! points set from `FAILPOINTS`, its output discarded, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cri_imaged::api::client;
use cri_imaged::api::proto::runtime::v1 as cri;

pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` on `root` (state, socket, hosts dir beneath it) with
/// `failpoints`, and waits until it answers.
pub async fn start(root: &Path, failpoints: Option<&str>) -> Daemon {
    let socket = root.join("cri-imaged.sock");
    let mut command = Command::new(env!("CARGO_BIN_EXE_cri-imaged"));
    command
        .args(["serve", "--root"])
        .arg(root.join("state"))
        .arg("--socket")
        .arg(&socket)
        .arg("--hosts-dir")
        .arg(root.join("certs.d"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(failpoints) = failpoints {
        command.env("FAILPOINTS", failpoints);
    }
    let daemon = Daemon {
        child: command.spawn().unwrap(),
        socket,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while client::runtime_client(&daemon.socket).await.is_err() {
        assert!(Instant::now() < deadline, "daemon did not start");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    daemon
}

pub fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}
