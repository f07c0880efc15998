//! Garbage collection and leases with the real daemon binary and the real
//! registry: removing an image reclaims what only it used within seconds,
//! removing everything empties the content and snapshot directories, and
//! `cri-imaged leases` shows a pull's lease while the pull runs and none after.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::daemon_process::DaemonProcess;
use crate::support::fault_proxy::{Fault, FaultProxy, FaultRule};
use crate::support::registry::{
    BuiltImage, BuiltLayer, Compression, ImageBuilder, LayerBuilder, Pusher, TestRegistry,
};

const BINARY: &str = env!("CARGO_BIN_EXE_cri-imaged");
/// Background gc runs half a second after a removal; allow for a slow machine.
const RECLAIM_TIMEOUT_MS: u64 = 10_000;

/// Runs a client subcommand against `socket`; returns stdout, panicking on failure.
fn client(socket: &Path, subcommand: &str, args: &[&str]) -> String {
    let output = Command::new(BINARY)
        .arg(subcommand)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{subcommand} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn client_json(socket: &Path, subcommand: &str) -> serde_json::Value {
    serde_json::from_str(&client(socket, subcommand, &["-o", "json"])).unwrap()
}

fn blob_file(state: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap();
    state.join("content/blobs").join(algorithm).join(hex)
}

fn snapshot_directory(state: &Path, chain_id: &str) -> PathBuf {
    state.join("snapshots").join(chain_id.replacen(':', "-", 1))
}

/// Every blob file an image stands on.
fn blob_files(state: &Path, image: &BuiltImage) -> Vec<PathBuf> {
    let mut files = vec![
        blob_file(state, &image.manifest_digest),
        blob_file(state, &image.config_digest),
    ];
    files.extend(
        image
            .layers
            .iter()
            .map(|layer| blob_file(state, &layer.digest)),
    );
    files
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_millis(RECLAIM_TIMEOUT_MS);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Names in `directory`, sorted (none when it does not exist).
fn listing(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn layer(name: &str, size_bytes: usize) -> BuiltLayer {
    LayerBuilder::new()
        .file(name, &vec![name.as_bytes()[0]; size_bytes])
        .build(Compression::Gzip)
}

#[test]
fn removing_an_image_reclaims_only_what_it_alone_used_and_removing_all_empties_the_store() {
    let registry = TestRegistry::start();
    let shared = layer("base", 40_000);
    let first = ImageBuilder::new()
        .layer(shared.clone())
        .layer(layer("first", 30_000))
        .build();
    let second = ImageBuilder::new()
        .layer(shared.clone())
        .layer(layer("second", 20_000))
        .build();
    let pusher = Pusher::new(&registry);
    pusher.push_image("team/first", &first, "v1").unwrap();
    pusher.push_image("team/second", &second, "v1").unwrap();
    let daemon = DaemonProcess::start();
    let state = daemon.state();
    let first_name = format!("{}/team/first:v1", registry.host());
    let second_name = format!("{}/team/second:v1", registry.host());
    client(&daemon.socket, "pull", &[&first_name]);
    client(&daemon.socket, "pull", &[&second_name]);
    for file in blob_files(&state, &first)
        .into_iter()
        .chain(blob_files(&state, &second))
    {
        assert!(file.is_file(), "{} after the pulls", file.display());
    }
    let second_chain = second.chain_ids();
    let second_top = snapshot_directory(&state, second_chain.last().unwrap());
    let shared_base = snapshot_directory(&state, &second_chain[0]);
    assert!(second_top.is_dir() && shared_base.is_dir());

    client(&daemon.socket, "rmi", &[&second_name]);

    let exclusive = [
        blob_file(&state, &second.manifest_digest),
        blob_file(&state, &second.config_digest),
        blob_file(&state, &second.layers[1].digest),
        second_top.clone(),
    ];
    wait_until("the removed image's own files are gone", || {
        exclusive.iter().all(|path| !path.exists())
    });
    for file in blob_files(&state, &first) {
        assert!(file.is_file(), "{} of the remaining image", file.display());
    }
    for chain_id in first.chain_ids() {
        assert!(snapshot_directory(&state, &chain_id).is_dir(), "{chain_id}");
    }
    assert!(shared_base.is_dir(), "the shared base snapshot stays");
    assert_eq!(
        client(&daemon.socket, "images", &["-q"]),
        format!("{}\n", first.config_digest)
    );
    client(&daemon.socket, "inspect", &[&first_name]);
    // The remaining image can still be pulled: everything is reused.
    client(&daemon.socket, "pull", &[&first_name]);

    client(&daemon.socket, "rmi", &[&first_name]);
    wait_until("the content and snapshot directories are empty", || {
        listing(&state.join("content/blobs/sha256")).is_empty()
            && listing(&state.join("content/ingest")).is_empty()
            && listing(&state.join("snapshots")) == ["extracting"]
    });
    assert!(listing(&state.join("snapshots/extracting")).is_empty());
    let report = client_json(&daemon.socket, "gc");
    assert_eq!(
        report,
        serde_json::json!({
            "blobsRemoved": 0, "snapshotsRemoved": 0, "ingestsRemoved": 0,
            "bytesFreed": 0, "durationMs": report["durationMs"],
        })
    );
    assert!(
        client(&daemon.socket, "gc", &[]).starts_with("removed 0 blobs, 0 snapshots"),
        "the one-line report"
    );
    assert!(daemon.log_text().contains("gc pass done"));
}

#[test]
fn leases_lists_a_pull_lease_while_the_pull_runs_and_none_after() {
    let registry = TestRegistry::start();
    let image = ImageBuilder::new().layer(layer("slow", 30_000)).build();
    Pusher::new(&registry)
        .push_image("team/slow", &image, "v1")
        .unwrap();
    let proxy = FaultProxy::in_front_of(&registry);
    // The layer's answer waits, so the pull is in flight long enough to look.
    proxy.add_rule(FaultRule::new(
        "GET",
        &format!("/blobs/{}", image.layers[0].digest),
        Fault::StallBeforeHeaders {
            duration: Duration::from_secs(3),
        },
    ));
    let daemon = DaemonProcess::start();
    let reference = format!("{}/team/slow:v1", proxy.host());
    assert_eq!(
        client_json(&daemon.socket, "leases"),
        serde_json::json!({"leases": []})
    );

    let pulling = {
        let socket = daemon.socket.clone();
        let reference = reference.clone();
        std::thread::spawn(move || client(&socket, "pull", &[&reference]))
    };
    let mut seen = serde_json::Value::Null;
    // Listed from its start; it holds the manifest and config once stored.
    wait_until("the pull's lease is listed holding what it stored", || {
        seen = client_json(&daemon.socket, "leases");
        seen["leases"][0]["resourceCount"]
            .as_u64()
            .is_some_and(|count| count >= 2)
    });
    let lease = &seen["leases"][0];
    assert!(lease["id"].as_str().unwrap().starts_with("pull-"), "{seen}");
    assert_eq!(lease["labels"]["cri-imaged/reference"], reference.as_str());
    assert!(lease["expiresUnixMs"].as_i64().unwrap() > lease["createdUnixMs"].as_i64().unwrap());
    let table = client(&daemon.socket, "leases", &[]);
    assert!(table.starts_with("LEASE") && table.contains(lease["id"].as_str().unwrap()));
    // A pass while the pull waits takes nothing the pull already stored.
    client(&daemon.socket, "gc", &[]);

    assert_eq!(
        pulling.join().unwrap(),
        format!("{}\n", image.config_digest)
    );
    assert_eq!(
        client_json(&daemon.socket, "leases"),
        serde_json::json!({"leases": []}),
        "the final transaction released the lease"
    );
    for file in blob_files(&daemon.state(), &image) {
        assert!(file.is_file(), "{}", file.display());
    }
}
