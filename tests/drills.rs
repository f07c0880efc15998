//! Crash and concurrency drills against the real daemon binary and the real
//! registry.
//!
//! The randomized drill: a seeded loop of cycles; each starts the daemon on
//! the same root, runs concurrent pulls and removes, sends SIGKILL at a random
//! moment, restarts, and checks the invariants: the daemon starts; fsck
//! (offline, daemon stopped) finds nothing; every image whose pull was
//! acknowledged and not possibly undone by a remove is listed; every image
//! whose remove was acknowledged and not possibly undone by a pull is absent;
//! pulling every image again succeeds. At the end everything is removed and a
//! GC pass must leave the content, ingest and snapshot directories empty.
//! The seed is printed; `DRILL_SEED=<seed>` replays a run and
//! `DRILL_CYCLES=<n>` sets the number of cycles (default 30).
//!
//! The concurrency drill: 16 clients run a random mix of pulls and removes on
//! a few references for a bounded time; then the same invariants, plus every
//! reference resolves to exactly one ready image.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::daemon_process::DaemonProcess;
use crate::support::registry::{
    BuiltImage, Compression, ImageBuilder, LayerBuilder, Pusher, TestRegistry,
};

const BINARY: &str = env!("CARGO_BIN_EXE_cri-imaged");
const DEFAULT_CYCLES: u64 = 30;

/// SplitMix64: a small, seedable generator, so a failing run can be replayed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn bytes(&mut self, count: usize) -> Vec<u8> {
        (0..count).map(|_| self.next() as u8).collect()
    }
}

fn cri_imaged(socket: &Path, subcommand: &str, args: &[&str]) -> Output {
    Command::new(BINARY)
        .arg(subcommand)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Images sharing a base layer, with layers big enough (a few MB of
/// incompressible bytes) that a kill often lands mid-download or mid-unpack.
fn drill_images(random: &mut Random) -> Vec<BuiltImage> {
    let base = LayerBuilder::new()
        .file("base/blob", &random.bytes(3 << 20))
        .file("etc/os-release", b"NAME=drill\n")
        .build(Compression::Gzip);
    (0..4)
        .map(|index| {
            let mut layers = LayerBuilder::new().file(
                &format!("app/{index}/data"),
                &random.bytes((1 + index) << 20),
            );
            for file in 0..50 {
                layers = layers.file(&format!("app/{index}/small/{file}"), b"small file\n");
            }
            ImageBuilder::new()
                .layer(base.clone())
                .layer(layers.build(if index % 2 == 0 {
                    Compression::Gzip
                } else {
                    Compression::Zstd
                }))
                .build()
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Pull,
    Remove,
}

/// One client call: when it started, when it was acknowledged (if it was),
/// and whether it succeeded.
#[derive(Clone, Debug)]
struct Call {
    image: usize,
    operation: Operation,
    started: Instant,
    acknowledged: Option<(Instant, bool)>,
}

/// What the calls made before a crash allow: `Some(true)` when the image must
/// be listed after the restart, `Some(false)` when it must not be, `None` when
/// either is correct (a call that could have changed it was in flight).
fn expected_presence(calls: &[Call], image: usize) -> Option<bool> {
    let calls: Vec<&Call> = calls.iter().filter(|call| call.image == image).collect();
    let settled_after = |call: &Call, other: Operation| {
        // Every call of the other kind was acknowledged before `call` began,
        // so none of them can have committed after it.
        calls
            .iter()
            .filter(|other_call| other_call.operation == other)
            .all(|other_call| {
                other_call
                    .acknowledged
                    .is_some_and(|(at, _)| at < call.started)
            })
    };
    let succeeded = |call: &&&Call, operation| {
        call.operation == operation && matches!(call.acknowledged, Some((_, true)))
    };
    if calls
        .iter()
        .filter(|call| succeeded(call, Operation::Pull))
        .any(|call| settled_after(call, Operation::Remove))
    {
        return Some(true);
    }
    if calls
        .iter()
        .filter(|call| succeeded(call, Operation::Remove))
        .any(|call| settled_after(call, Operation::Pull))
    {
        return Some(false);
    }
    None
}

fn listed_ids(socket: &Path) -> Vec<String> {
    let listed = cri_imaged(socket, "images", &["-q"]);
    assert!(listed.status.success(), "{}", describe(&listed));
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Stops the daemon, runs fsck on its root (must be clean), starts it again.
fn assert_fsck_clean(daemon: &mut DaemonProcess, context: &str) {
    daemon.stop();
    let root = daemon.state();
    let checked = Command::new(BINARY)
        .args(["fsck", "--root", root.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{context}: fsck found problems:\n{}\ndaemon log:\n{}",
        describe(&checked),
        daemon.log_text()
    );
    daemon.restart();
}

/// Removes every image, collects garbage, and checks nothing is left behind.
fn assert_nothing_leaks(daemon: &mut DaemonProcess, references: &[String]) {
    for reference in references {
        let removed = cri_imaged(&daemon.socket, "rmi", &[reference]);
        assert!(removed.status.success(), "{}", describe(&removed));
    }
    let collected = cri_imaged(&daemon.socket, "gc", &[]);
    assert!(collected.status.success(), "{}", describe(&collected));
    let root = daemon.state();
    for directory in ["content/blobs/sha256", "content/ingest", "snapshots"] {
        let left: Vec<String> = std::fs::read_dir(root.join(directory))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            // The extracting directory itself is the store's, and stays.
            .filter(|name| name != "extracting")
            .collect();
        assert!(left.is_empty(), "{directory} still holds {left:?}");
    }
    assert_fsck_clean(daemon, "after removing everything");
}

fn seed() -> u64 {
    std::env::var("DRILL_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

#[test]
fn randomized_sigkill_drill_keeps_the_store_consistent() {
    let seed = seed();
    let cycles: u64 = std::env::var("DRILL_CYCLES")
        .ok()
        .and_then(|cycles| cycles.parse().ok())
        .unwrap_or(DEFAULT_CYCLES);
    eprintln!("randomized drill: DRILL_SEED={seed} DRILL_CYCLES={cycles}");
    let mut random = Random(seed);
    let registry = TestRegistry::start();
    let images = drill_images(&mut Random(7));
    let pusher = Pusher::new(&registry);
    let references: Vec<String> = images
        .iter()
        .enumerate()
        .map(|(index, image)| {
            pusher
                .push_image("drill/app", image, &format!("v{index}"))
                .unwrap();
            format!("{}/drill/app:v{index}", registry.host())
        })
        .collect();
    let mut daemon = DaemonProcess::start();
    for cycle in 0..cycles {
        let context = format!("seed {seed}, cycle {cycle}");
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients: Vec<_> = (0..3)
            .map(|client| {
                let mut client_random = Random(random.next());
                let calls = calls.clone();
                let stop = stop.clone();
                let socket = daemon.socket.clone();
                let references = references.clone();
                std::thread::spawn(move || {
                    let _ = client;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let image = client_random.below(references.len() as u64) as usize;
                        let operation = if client_random.below(3) == 0 {
                            Operation::Remove
                        } else {
                            Operation::Pull
                        };
                        let index = {
                            let mut calls = calls.lock().unwrap();
                            calls.push(Call {
                                image,
                                operation,
                                started: Instant::now(),
                                acknowledged: None,
                            });
                            calls.len() - 1
                        };
                        let subcommand = match operation {
                            Operation::Pull => "pull",
                            Operation::Remove => "rmi",
                        };
                        let output = cri_imaged(&socket, subcommand, &[&references[image]]);
                        let at = Instant::now();
                        // A call cut off by the kill is not acknowledged: its
                        // client saw an error and cannot know the outcome.
                        if !stop.load(std::sync::atomic::Ordering::SeqCst) {
                            calls.lock().unwrap()[index].acknowledged =
                                Some((at, output.status.success()));
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50 + random.below(700)));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
        for client in clients {
            client.join().unwrap();
        }
        daemon.restart();
        let calls = calls.lock().unwrap().clone();
        let listed = listed_ids(&daemon.socket);
        for (index, image) in images.iter().enumerate() {
            let present = listed.contains(&image.config_digest);
            if let Some(expected) = expected_presence(&calls, index) {
                assert_eq!(
                    present,
                    expected,
                    "{context}: image {index} listed={present}, calls: {calls:#?}\nlog:\n{}",
                    daemon.log_text()
                );
            }
        }
        // Every few cycles (and at the end): the full offline check, and
        // every image pulls again.
        if cycle % 5 == 4 || cycle + 1 == cycles {
            assert_fsck_clean(&mut daemon, &context);
            for reference in &references {
                let pulled = cri_imaged(&daemon.socket, "pull", &[reference]);
                assert!(pulled.status.success(), "{context}: {}", describe(&pulled));
            }
        }
    }
    assert_nothing_leaks(&mut daemon, &references);
}

#[test]
fn sixteen_clients_pulling_and_removing_leave_one_ready_image_per_name() {
    let seed = seed();
    eprintln!("concurrency drill: DRILL_SEED={seed}");
    let mut random = Random(seed);
    let registry = TestRegistry::start();
    let images = drill_images(&mut Random(11));
    let pusher = Pusher::new(&registry);
    let references: Vec<String> = images
        .iter()
        .take(3)
        .enumerate()
        .map(|(index, image)| {
            pusher
                .push_image("drill/busy", image, &format!("v{index}"))
                .unwrap();
            format!("{}/drill/busy:v{index}", registry.host())
        })
        .collect();
    let mut daemon = DaemonProcess::start();
    let deadline = Instant::now() + Duration::from_secs(8);
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let mut client_random = Random(random.next());
            let socket = daemon.socket.clone();
            let references = references.clone();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while Instant::now() < deadline {
                    let reference =
                        &references[client_random.below(references.len() as u64) as usize];
                    let subcommand = if client_random.below(3) == 0 {
                        "rmi"
                    } else {
                        "pull"
                    };
                    let output = cri_imaged(&socket, subcommand, &[reference]);
                    if !output.status.success() {
                        failures.push(describe(&output));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = clients
        .into_iter()
        .flat_map(|client| client.join().unwrap())
        .collect();
    assert!(
        failures.is_empty(),
        "seed {seed}: calls failed: {failures:#?}"
    );

    // Every name that is listed resolves to exactly one ready image, the one
    // the registry serves under it.
    let listed = cri_imaged(&daemon.socket, "images", &["--output", "json"]);
    assert!(listed.status.success(), "{}", describe(&listed));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for image in listed.as_array().unwrap() {
        for tag in image["repoTags"].as_array().unwrap() {
            owners
                .entry(tag.as_str().unwrap().to_owned())
                .or_default()
                .push(image["id"].as_str().unwrap().to_owned());
        }
    }
    for (index, reference) in references.iter().enumerate() {
        if let Some(ids) = owners.get(reference) {
            assert_eq!(
                ids,
                &vec![images[index].config_digest.clone()],
                "{reference}"
            );
        }
    }
    assert_fsck_clean(&mut daemon, &format!("concurrency drill, seed {seed}"));
    for reference in &references {
        let pulled = cri_imaged(&daemon.socket, "pull", &[reference]);
        assert!(pulled.status.success(), "{}", describe(&pulled));
    }
    assert_nothing_leaks(&mut daemon, &references);
}
