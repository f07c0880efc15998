//! Mounts real overlayfs over two unpacked layers and checks the merged view,
//! once per whiteout convention: character devices with `trusted.overlay.*`,
//! and the `userxattr` convention (`-o userxattr`). Needs root, which this
//! project's machines and CI have; without root the test says so on stderr
//! and checks nothing. A failing mount fails the test.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::unpack::UnpackOptions;

use super::{LayerBuilder, Sandbox, is_root};

/// Unmounts on drop, so a failed assertion does not leave a mount behind.
struct Mounted {
    target: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(&self.target).status();
        if !matches!(status, Ok(status) if status.success()) {
            eprintln!("umount {:?} failed: {status:?}", self.target);
        }
    }
}

fn lower_layer() -> Vec<u8> {
    LayerBuilder::new()
        .directory("etc")
        .file("etc/keep", b"keep")
        .file("etc/gone", b"gone")
        .directory("etc/dir-gone")
        .file("etc/dir-gone/inside", b"inside")
        .file("top-gone", b"top")
        .directory("opaque")
        .file("opaque/old", b"old")
        .file("opaque/sub/deep", b"deep")
        .directory("shared")
        .file("shared/lower-file", b"lower")
        .finish()
}

fn upper_layer() -> Vec<u8> {
    LayerBuilder::new()
        .directory("etc")
        .file("etc/.wh.gone", b"")
        .file("etc/.wh.dir-gone", b"")
        .file("etc/added", b"added")
        .file(".wh.top-gone", b"")
        .directory("opaque")
        .file("opaque/.wh..wh..opq", b"")
        .file("opaque/new", b"new")
        .file("shared/upper-file", b"upper")
        .finish()
}

fn names_in(directory: &Path) -> BTreeSet<String> {
    fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("read_dir {directory:?}: {error}"))
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

#[test]
fn overlayfs_merges_two_unpacked_layers() {
    if !is_root() {
        eprintln!("overlayfs_merges_two_unpacked_layers: not root, no overlayfs mount was tried");
        return;
    }
    for (convention, options, extra_mount_option) in [
        ("privileged", UnpackOptions::privileged(), ""),
        ("userxattr", UnpackOptions::unprivileged(), ",userxattr"),
    ] {
        let lower = Sandbox::new();
        lower.unpack(&lower_layer(), &options).expect("lower layer");
        let upper = Sandbox::new();
        upper.unpack(&upper_layer(), &options).expect("upper layer");
        let merged_parent = tempfile::tempdir_in("/tmp").expect("mount point");
        let merged = merged_parent.path().join("merged");
        fs::create_dir(&merged).expect("merged dir");

        let mount_options = format!(
            "lowerdir={}:{}{extra_mount_option}",
            upper.root().display(),
            lower.root().display()
        );
        let output = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &mount_options])
            .arg(&merged)
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "{convention}: mounting overlayfs failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let _mounted = Mounted {
            target: merged.clone(),
        };

        assert_eq!(
            names_in(&merged),
            set(&["etc", "opaque", "shared"]),
            "{convention}: root"
        );
        assert_eq!(
            names_in(&merged.join("etc")),
            set(&["added", "keep"]),
            "{convention}: etc"
        );
        assert!(
            !merged.join("etc/gone").exists(),
            "{convention}: whited-out file"
        );
        assert!(
            !merged.join("etc/dir-gone").exists(),
            "{convention}: whited-out dir"
        );
        assert!(
            !merged.join("top-gone").exists(),
            "{convention}: root whiteout"
        );
        assert_eq!(fs::read(merged.join("etc/keep")).expect("keep"), b"keep");
        assert_eq!(fs::read(merged.join("etc/added")).expect("added"), b"added");
        assert_eq!(
            names_in(&merged.join("opaque")),
            set(&["new"]),
            "{convention}: opaque"
        );
        assert!(!merged.join("opaque/old").exists());
        assert!(!merged.join("opaque/sub/deep").exists());
        assert_eq!(
            names_in(&merged.join("shared")),
            set(&["lower-file", "upper-file"]),
            "{convention}: merged directory"
        );
        assert_eq!(
            fs::read(merged.join("shared/lower-file")).expect("lower"),
            b"lower"
        );
    }
}
