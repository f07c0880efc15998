//! The client subcommands of the real `cri-imaged` binary (`pull`, `images`,
//! `inspect`, `rmi`, `fsinfo`, `version`), run as a user runs them, against
//! the real daemon and the real Debian registry. Assertions are on stdout,
//! stderr and exit codes; secrets are checked never to appear in any of them.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine as _;

use crate::support::daemon_process::DaemonProcess;
use crate::support::registry::{
    BuiltImage, Compression, ImageBuilder, LayerBuilder, Pusher, TestRegistry,
};

const BINARY: &str = env!("CARGO_BIN_EXE_cri-imaged");

/// The client subcommands, run against a test daemon.
trait ClientOf {
    fn client(&self, subcommand: &str, args: &[&str]) -> ClientRun;
    fn client_with_stdin(&self, subcommand: &str, args: &[&str], stdin: &str) -> ClientRun;
}

impl ClientOf for DaemonProcess {
    /// Runs `cri-imaged SUBCOMMAND --socket <this daemon's> ARGS...`.
    fn client(&self, subcommand: &str, args: &[&str]) -> ClientRun {
        ClientRun::new(&self.socket, subcommand, args, None)
    }

    fn client_with_stdin(&self, subcommand: &str, args: &[&str], stdin: &str) -> ClientRun {
        ClientRun::new(&self.socket, subcommand, args, Some(stdin))
    }
}

/// What one client invocation printed and how it exited.
#[derive(Debug)]
struct ClientRun {
    exit_code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl ClientRun {
    fn new(socket: &Path, subcommand: &str, args: &[&str], stdin: Option<&str>) -> ClientRun {
        let mut child = Command::new(BINARY)
            .arg(subcommand)
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text.as_bytes()).unwrap();
        }
        let output = child.wait_with_output().unwrap();
        ClientRun {
            exit_code: output.status.code(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    #[track_caller]
    fn assert_success(&self) -> &ClientRun {
        assert_eq!(self.exit_code, Some(0), "{self:#?}");
        self
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| panic!("{error}: {self:#?}"))
    }

    fn mentions(&self, text: &str) -> bool {
        self.stdout.contains(text) || self.stderr.contains(text)
    }
}

fn app_image() -> BuiltImage {
    ImageBuilder::new()
        .user("1000:1000")
        .layer(
            LayerBuilder::new()
                .file("etc/os-release", b"NAME=cli\n")
                .build(Compression::Gzip),
        )
        .build()
}

fn hex(digest: &str) -> &str {
    digest.split_once(':').unwrap().1
}

#[test]
fn pull_list_inspect_fsinfo_version_and_remove_through_the_client() {
    let registry = TestRegistry::start();
    let image = app_image();
    Pusher::new(&registry)
        .push_image("team/app", &image, "v1")
        .unwrap();
    let daemon = DaemonProcess::start();
    let repository = format!("{}/team/app", registry.host());
    let reference = format!("{repository}:v1");
    let digested_name = format!("{repository}@{}", image.manifest_digest);
    let short_id = &hex(&image.config_digest)[..13];

    let pulled = daemon.client("pull", &[&reference]);
    pulled.assert_success();
    assert_eq!(pulled.stdout, format!("{}\n", image.config_digest));
    // Not a terminal: plain progress lines between the first and last line.
    let progress: Vec<&str> = pulled.stderr.lines().collect();
    assert_eq!(progress[0], format!("pulling {reference}"), "{pulled:#?}");
    assert!(progress[1].starts_with("resolved sha256:"), "{pulled:#?}");
    assert!(
        progress.last().unwrap().starts_with("done in "),
        "{pulled:#?}"
    );
    for layer in &image.layers {
        let short = &hex(&layer.digest)[..13];
        assert!(
            progress
                .iter()
                .any(|line| line.starts_with(short) && line.contains(" done ")),
            "no final line for layer {short}: {pulled:#?}"
        );
    }

    // The table: a header and one row per tag, with a 13-character id.
    let table = daemon.client("images", &[]);
    table.assert_success();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{table:#?}");
    assert!(lines[0].starts_with("IMAGE "), "{table:#?}");
    for column in ["TAG", "IMAGE ID", "SIZE"] {
        assert!(lines[0].contains(column), "{table:#?}");
    }
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        cells[..3],
        [repository.as_str(), "v1", short_id],
        "{table:#?}"
    );
    assert!(cells[3].ends_with('B'), "a human size: {table:#?}");
    let with_digests = daemon.client("images", &["--digests"]);
    with_digests.assert_success();
    let cells: Vec<&str> = with_digests
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        cells[..4],
        [
            repository.as_str(),
            "v1",
            &hex(&image.manifest_digest)[..13],
            short_id
        ]
    );

    let quiet = daemon.client("images", &["-q"]);
    quiet.assert_success();
    assert_eq!(quiet.stdout, format!("{}\n", image.config_digest));

    let listed = daemon.client("images", &["--output", "json"]);
    listed.assert_success();
    let listed = listed.json();
    let images = listed.as_array().unwrap();
    assert_eq!(images.len(), 1, "{listed:#}");
    assert_eq!(images[0]["id"], image.config_digest.as_str());
    assert_eq!(images[0]["repoTags"], serde_json::json!([reference]));
    assert_eq!(images[0]["repoDigests"], serde_json::json!([digested_name]));
    assert_eq!(images[0]["uid"], 1000);
    assert_eq!(images[0]["username"], "");
    assert_eq!(images[0]["pinned"], false);
    assert!(images[0]["size"].as_u64().unwrap() > 0);

    // inspect finds the image by tag, by digested name and by id prefix.
    for name in [reference.as_str(), digested_name.as_str(), short_id] {
        let inspected = daemon.client("inspect", &[name]);
        inspected.assert_success();
        let document = inspected.json();
        assert_eq!(
            document["image"]["id"],
            image.config_digest.as_str(),
            "{name}"
        );
        assert_eq!(document["image"], images[0], "{name}");
        assert_eq!(document["info"]["state"], "ready", "{name}");
        assert_eq!(document["info"]["imageId"], image.config_digest.as_str());
    }
    let inspected = daemon.client("inspect", &[&reference, "--output", "table"]);
    inspected.assert_success();
    let fields = key_values(&inspected.stdout);
    assert!(
        fields.contains(&vec!["ID:", image.config_digest.as_str()]),
        "{inspected:#?}"
    );
    assert!(
        fields.contains(&vec!["Repo", "tags:", reference.as_str()]),
        "{inspected:#?}"
    );
    assert!(fields.contains(&vec!["State:", "ready"]), "{inspected:#?}");

    let usage = daemon.client("fsinfo", &[]);
    usage.assert_success();
    let row: Vec<&str> = usage
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..2],
        ["image", daemon.state().to_str().unwrap()],
        "{usage:#?}"
    );
    assert!(row[3].starts_with('(') && row[4] == "bytes)", "{usage:#?}");
    let usage = daemon.client("fsinfo", &["-o", "json"]);
    usage.assert_success();
    let usage = usage.json();
    let filesystem = &usage["imageFilesystems"][0];
    assert_eq!(filesystem["mountpoint"], daemon.state().to_str().unwrap());
    assert!(filesystem["usedBytes"].as_u64().unwrap() > 0, "{usage:#}");
    assert!(filesystem["inodesUsed"].as_u64().unwrap() > 0, "{usage:#}");
    assert!(filesystem["timestamp"].as_i64().unwrap() > 0, "{usage:#}");
    assert_eq!(usage["containerFilesystems"], serde_json::json!([]));

    let version = daemon.client("version", &["--output", "json"]);
    version.assert_success();
    assert_eq!(
        version.json(),
        serde_json::json!({
            "clientVersion": env!("CARGO_PKG_VERSION"),
            "version": "0.1.0",
            "runtimeName": "cri-imaged",
            "runtimeVersion": env!("CARGO_PKG_VERSION"),
            "runtimeApiVersion": "v1",
        })
    );
    let version = daemon.client("version", &[]);
    version.assert_success();
    let fields = key_values(&version.stdout);
    assert!(
        fields.contains(&vec!["RuntimeName:", "cri-imaged"]),
        "{version:#?}"
    );
    assert!(
        fields.contains(&vec!["ClientVersion:", env!("CARGO_PKG_VERSION")]),
        "{version:#?}"
    );

    let removed = daemon.client("rmi", &[&reference]);
    removed.assert_success();
    assert_eq!(removed.stdout, format!("Deleted: {reference}\n"));
    let quiet = daemon.client("images", &["-q"]);
    quiet.assert_success();
    assert_eq!(quiet.stdout, "");

    // RemoveImage is idempotent: removing an absent image succeeds, and says so.
    let again = daemon.client("rmi", &[&reference]);
    again.assert_success();
    assert_eq!(again.stdout, "");
    assert!(
        again
            .stderr
            .contains(&format!("image {reference} not found")),
        "{again:#?}"
    );

    // One bad name does not stop the others, but fails the command.
    let mixed = daemon.client("rmi", &["Not A Reference!", &reference]);
    assert_eq!(mixed.exit_code, Some(1), "{mixed:#?}");
    assert!(
        mixed.stderr.contains("cannot remove Not A Reference!: "),
        "{mixed:#?}"
    );
    assert!(mixed.stderr.contains("InvalidArgument"), "{mixed:#?}");
    assert!(
        mixed
            .stderr
            .contains(&format!("image {reference} not found")),
        "{mixed:#?}"
    );

    let absent = daemon.client("inspect", &[&reference]);
    assert_eq!(absent.exit_code, Some(1), "{absent:#?}");
    assert_eq!(absent.stdout, "");
    assert!(
        absent
            .stderr
            .contains(&format!("image {reference} not found")),
        "{absent:#?}"
    );
}

#[test]
fn pull_with_a_password_from_stdin_or_an_auth_file() {
    const PASSWORD: &str = "s3cret-password";
    const WRONG_PASSWORD: &str = "wrong-password";
    let registry = TestRegistry::start_with_htpasswd("alice", PASSWORD);
    let image = app_image();
    Pusher::new(&registry)
        .push_image("private/app", &image, "v1")
        .unwrap();
    let daemon = DaemonProcess::start();
    let reference = format!("{}/private/app:v1", registry.host());
    let no_secret_printed = |run: &ClientRun| {
        assert!(
            !run.mentions(PASSWORD) && !run.mentions(WRONG_PASSWORD),
            "{run:#?}"
        );
        assert!(!run.mentions(&basic(PASSWORD)) && !run.mentions(&basic(WRONG_PASSWORD)));
    };

    let anonymous = daemon.client("pull", &[&reference]);
    assert_eq!(anonymous.exit_code, Some(1), "{anonymous:#?}");
    assert!(
        anonymous.stderr.contains("Unauthenticated"),
        "{anonymous:#?}"
    );
    assert!(
        anonymous.stderr.contains(" failed after "),
        "{anonymous:#?}"
    );

    let wrong = daemon.client_with_stdin(
        "pull",
        &[&reference, "--user", "alice", "--password-stdin"],
        &format!("{WRONG_PASSWORD}\n"),
    );
    assert_eq!(wrong.exit_code, Some(1), "{wrong:#?}");
    assert_eq!(wrong.stdout, "");
    assert!(wrong.stderr.contains("Unauthenticated"), "{wrong:#?}");
    no_secret_printed(&wrong);

    let right = daemon.client_with_stdin(
        "pull",
        &[&reference, "--user", "alice", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    right.assert_success();
    assert_eq!(right.stdout, format!("{}\n", image.config_digest));
    no_secret_printed(&right);
    daemon.client("rmi", &[&reference]).assert_success();

    let empty = daemon.client_with_stdin(
        "pull",
        &[&reference, "--user", "alice", "--password-stdin"],
        "\n",
    );
    assert_eq!(empty.exit_code, Some(1), "{empty:#?}");
    assert!(
        empty
            .stderr
            .contains("the password read from stdin is empty"),
        "{empty:#?}"
    );

    // The password never comes from argv: there is no flag for it, and --user
    // alone is a usage error.
    for args in [
        vec![reference.as_str(), "--user", "alice"],
        vec![
            reference.as_str(),
            "--user",
            "alice",
            "--password",
            PASSWORD,
        ],
    ] {
        let refused = daemon.client("pull", &args);
        assert_eq!(refused.exit_code, Some(2), "{refused:#?}");
    }

    let directory = tempfile::tempdir().unwrap();
    let auth_file = directory.path().join("config.json");
    let write_auth_file = |password: &str| {
        let document = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": basic("hub-password")},
            format!("http://{}/v2/", registry.host()): {"auth": basic(password)},
        }});
        std::fs::write(&auth_file, document.to_string()).unwrap();
    };
    let auth_file_text = auth_file.to_str().unwrap();
    write_auth_file(PASSWORD);
    let from_file = daemon.client("pull", &[&reference, "--auth-file", auth_file_text]);
    from_file.assert_success();
    assert_eq!(from_file.stdout, format!("{}\n", image.config_digest));
    no_secret_printed(&from_file);
    daemon.client("rmi", &[&reference]).assert_success();

    write_auth_file(WRONG_PASSWORD);
    let wrong_in_file = daemon.client("pull", &[&reference, "--auth-file", auth_file_text]);
    assert_eq!(wrong_in_file.exit_code, Some(1), "{wrong_in_file:#?}");
    assert!(
        wrong_in_file.stderr.contains("Unauthenticated"),
        "{wrong_in_file:#?}"
    );
    no_secret_printed(&wrong_in_file);

    // An entry for another registry only: a warning, then an anonymous pull.
    std::fs::write(
        &auth_file,
        serde_json::json!({"auths": {"other.example": {"auth": basic(PASSWORD)}}}).to_string(),
    )
    .unwrap();
    let no_entry = daemon.client("pull", &[&reference, "--auth-file", auth_file_text]);
    assert_eq!(no_entry.exit_code, Some(1), "{no_entry:#?}");
    assert!(
        no_entry.stderr.contains(&format!(
            "auth file {auth_file_text} has no entry for {}; pulling anonymously",
            registry.host()
        )),
        "{no_entry:#?}"
    );
    no_secret_printed(&no_entry);

    // A broken file is refused by name, before the daemon is asked.
    std::fs::write(&auth_file, format!("{{\"auths\": {{\"x\": \"{PASSWORD}")).unwrap();
    let broken = daemon.client("pull", &[&reference, "--auth-file", auth_file_text]);
    assert_eq!(broken.exit_code, Some(1), "{broken:#?}");
    assert!(
        broken
            .stderr
            .contains(&format!("auth file {auth_file_text} is not valid JSON")),
        "{broken:#?}"
    );
    no_secret_printed(&broken);

    let log = daemon.log_text();
    assert!(
        !log.contains(PASSWORD) && !log.contains(WRONG_PASSWORD),
        "a secret reached the log"
    );
    let listed = daemon.client("images", &["-q"]);
    assert_eq!(listed.stdout, "");
}

#[test]
fn a_socket_where_nothing_listens_fails_with_a_clear_message() {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("absent.sock");
    // A socket file left behind by a daemon that is gone: connecting is refused.
    let stale = directory.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    for socket in [&missing, &stale] {
        for (subcommand, args) in [
            ("images", vec![]),
            ("pull", vec!["docker.io/library/busybox:1.36"]),
            ("inspect", vec!["busybox"]),
            ("rmi", vec!["busybox"]),
            ("fsinfo", vec![]),
            ("version", vec![]),
        ] {
            let run = ClientRun::new(socket, subcommand, &args, None);
            assert_eq!(run.exit_code, Some(1), "{run:#?}");
            assert_eq!(run.stdout, "", "{run:#?}");
            assert!(
                run.stderr.contains(&format!(
                    "cannot connect to cri-imaged at {}: is the daemon running?",
                    socket.display()
                )),
                "{run:#?}"
            );
        }
    }
}

/// The words of each line of a key-value listing.
fn key_values(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .map(|line| line.split_whitespace().collect())
        .collect()
}

/// `base64("alice:<password>")`, the `auth` field of a Docker config.
fn basic(password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("alice:{password}"))
}

/// Whether the kernel's mount table has something mounted on `target`.
fn is_mount_point(target: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = target.display().to_string();
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(target.as_str()))
}

#[test]
fn mount_shows_the_merged_read_only_root_and_unmount_releases_it() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("mount test: not root, nothing mounted");
        return;
    }
    let registry = TestRegistry::start();
    let layered = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("etc/os-release", b"NAME=base\n")
                .file("dir/gone", b"whited out above\n")
                .file("dir/kept", b"kept\n")
                .file("opaque/hidden", b"hidden by the opaque marker\n")
                .build(Compression::Gzip),
        )
        .layer(
            LayerBuilder::new()
                .whiteout("dir/gone")
                .opaque_whiteout("opaque")
                .file("opaque/new", b"new\n")
                .build(Compression::Zstd),
        )
        .layer(
            LayerBuilder::new()
                .file("etc/os-release", b"NAME=top\n")
                .build(Compression::None),
        )
        .build();
    let single = app_image();
    let pusher = Pusher::new(&registry);
    pusher.push_image("team/layered", &layered, "v1").unwrap();
    pusher.push_image("team/single", &single, "v1").unwrap();
    let daemon = DaemonProcess::start();
    let layered_ref = format!("{}/team/layered:v1", registry.host());
    let single_ref = format!("{}/team/single:v1", registry.host());
    daemon.client("pull", &[&layered_ref]).assert_success();
    daemon.client("pull", &[&single_ref]).assert_success();

    let mount_point = tempfile::tempdir().unwrap();
    let target = mount_point.path().canonicalize().unwrap();
    let target_text = target.display().to_string();
    let mounted = daemon.client("mount", &["--output", "json", &layered_ref, &target_text]);
    mounted.assert_success();
    let description = mounted.json();
    assert_eq!(description["imageId"], layered.config_digest.as_str());
    assert_eq!(description["lowerDirs"].as_array().unwrap().len(), 3);
    assert!(is_mount_point(&target), "{mounted:#?}");
    // The merged view: the top layer wins, whiteouts and the opaque
    // directory hide lower content.
    assert_eq!(
        std::fs::read_to_string(target.join("etc/os-release")).unwrap(),
        "NAME=top\n"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("dir/kept")).unwrap(),
        "kept\n"
    );
    assert!(!target.join("dir/gone").exists());
    let mut opaque: Vec<String> = std::fs::read_dir(target.join("opaque"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    opaque.sort();
    assert_eq!(opaque, ["new"]);
    // Read-only: a write fails with EROFS.
    let write = std::fs::write(target.join("etc/os-release"), b"changed");
    assert_eq!(write.unwrap_err().raw_os_error(), Some(libc_erofs()));
    // The mount lease keeps the snapshots while mounted, even once the image
    // is removed and garbage is collected; `leases` shows it.
    let lower_dirs: Vec<std::path::PathBuf> = description["lowerDirs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|directory| directory.as_str().unwrap().into())
        .collect();
    let leases = daemon.client("leases", &["--output", "json"]);
    leases.assert_success();
    assert!(leases.stdout.contains(&target_text), "{leases:#?}");
    daemon.client("rmi", &[&layered_ref]).assert_success();
    daemon.client("gc", &[]).assert_success();
    for directory in &lower_dirs {
        assert!(
            directory.is_dir(),
            "{} kept while mounted",
            directory.display()
        );
    }
    assert_eq!(
        std::fs::read_to_string(target.join("dir/kept")).unwrap(),
        "kept\n"
    );
    // unmount takes the mount away and ends the lease; then gc reclaims.
    let unmounted = daemon.client("unmount", &[&target_text]);
    unmounted.assert_success();
    assert!(!is_mount_point(&target), "{unmounted:#?}");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    daemon.client("gc", &[]).assert_success();
    for directory in &lower_dirs {
        assert!(
            !directory.exists(),
            "{} reclaimed after unmount",
            directory.display()
        );
    }
    daemon.client("pull", &[&layered_ref]).assert_success();
    // The lease is gone: a second unmount says there was none.
    let again = daemon.client("unmount", &[&target_text]);
    again.assert_success();
    assert!(again.stderr.contains("had no mount lease"), "{again:#?}");

    // One layer: a read-only bind mount of the snapshot.
    daemon
        .client("mount", &[&single_ref, &target_text])
        .assert_success();
    assert!(is_mount_point(&target));
    assert_eq!(
        std::fs::read_to_string(target.join("etc/os-release")).unwrap(),
        "NAME=cli\n"
    );
    let write = std::fs::write(target.join("new-file"), b"x");
    assert_eq!(write.unwrap_err().raw_os_error(), Some(libc_erofs()));
    daemon.client("unmount", &[&target_text]).assert_success();
    assert!(!is_mount_point(&target));

    // Errors name what was wrong and mount nothing.
    let missing = daemon.client("mount", &["team/absent:v9", &target_text]);
    assert_eq!(missing.exit_code, Some(1), "{missing:#?}");
    assert!(missing.stderr.contains("NotFound"), "{missing:#?}");
    assert!(missing.stderr.contains("team/absent:v9"), "{missing:#?}");
    let no_directory = daemon.client("mount", &[&single_ref, "/nonexistent/mount/point"]);
    assert_eq!(no_directory.exit_code, Some(1), "{no_directory:#?}");
    assert!(
        no_directory.stderr.contains("/nonexistent/mount/point"),
        "{no_directory:#?}"
    );
    assert!(!is_mount_point(&target));
}

/// EROFS on Linux.
fn libc_erofs() -> i32 {
    rustix::io::Errno::ROFS.raw_os_error()
}

#[test]
fn pull_output_json_prints_one_event_per_line_ending_with_the_image_id() {
    let registry = TestRegistry::start();
    let image = app_image();
    Pusher::new(&registry)
        .push_image("team/json", &image, "v1")
        .unwrap();
    let daemon = DaemonProcess::start();
    let reference = format!("{}/team/json:v1", registry.host());

    let pulled = daemon.client("pull", &[&reference, "--output", "json"]);
    pulled.assert_success();
    assert_eq!(pulled.stderr, "", "{pulled:#?}");
    let events: Vec<serde_json::Value> = pulled
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect();
    assert_eq!(events[0]["event"], "resolved", "{pulled:#?}");
    assert_eq!(events[0]["config_digest"], image.config_digest.as_str());
    assert_eq!(events[0]["layer_count"], image.layers.len());
    assert_eq!(
        events.last().unwrap(),
        &serde_json::json!({"event": "done", "image_ref": image.config_digest}),
        "{pulled:#?}"
    );
    for layer in &image.layers {
        let last = events
            .iter()
            .rev()
            .find(|event| event["event"] == "layer" && event["digest"] == layer.digest.as_str())
            .unwrap_or_else(|| panic!("no event for layer {}: {pulled:#?}", layer.digest));
        assert_eq!(last["state"], "done", "{pulled:#?}");
        assert_eq!(last["downloaded_bytes"], layer.bytes.len(), "{pulled:#?}");
        assert_eq!(last["total_bytes"], layer.bytes.len(), "{pulled:#?}");
    }

    // Present already: its layers are reused.
    let again = daemon.client("pull", &[&reference, "-o", "json"]);
    again.assert_success();
    let reused = again
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["event"] == "layer" && event["state"] == "reused")
        .count();
    assert!(reused >= image.layers.len(), "{again:#?}");

    let bad = daemon.client("pull", &["Not A Reference!", "-o", "json"]);
    assert_eq!(bad.exit_code, Some(1), "{bad:#?}");
    assert_eq!(bad.stdout, "", "{bad:#?}");
    assert!(bad.stderr.contains("InvalidArgument"), "{bad:#?}");
}
