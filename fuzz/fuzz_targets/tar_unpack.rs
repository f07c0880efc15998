//! Fuzzes layer unpacking: arbitrary bytes as an uncompressed tar layer,
//! unpacked into a fresh `root` directory inside a temporary parent that also
//! holds a sentinel directory (a file, a nested file, a symlink to /etc).
//! Besides "never panics", it checks what the snapshot store relies on:
//! nothing outside `root` is created, changed or removed, whatever the
//! archive says, and a layer that unpacks leaves no `.wh.` whiteout file
//! behind. Limits are small so that every one of them is reachable, device
//! nodes are refused so the fuzzer never creates real devices, and the
//! input's length picks the whiteout convention (character devices when even
//! and running as root, `user.overlay.*` xattrs otherwise).

#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cri_imaged::oci::manifest::LayerCompression;
use cri_imaged::unpack::{UnpackOptions, unpack_layer};
use libfuzzer_sys::fuzz_target;

/// The temporary parent, made once per process: `sentinel/` and, during
/// each run, `root/`.
fn parent() -> &'static Path {
    static PARENT: OnceLock<PathBuf> = OnceLock::new();
    PARENT.get_or_init(|| {
        let parent = std::env::temp_dir().join(format!("tar-unpack-fuzz-{}", std::process::id()));
        let _ = fs::remove_dir_all(&parent);
        let sentinel = parent.join("sentinel");
        fs::create_dir_all(sentinel.join("nested")).expect("sentinel");
        fs::write(sentinel.join("secret"), b"do not touch").expect("sentinel file");
        fs::write(sentinel.join("nested/inner"), b"inner").expect("sentinel file");
        std::os::unix::fs::symlink("/etc", sentinel.join("etc-link")).expect("sentinel link");
        parent
    })
}

fuzz_target!(|data: &[u8]| {
    let parent = parent();
    let root = parent.join("root");
    fs::create_dir(&root).expect("create root");
    let before = listing(parent, &root);
    let options = UnpackOptions {
        uncompressed_bytes_max: 1 << 20,
        entries_max: 256,
        inodes_max: 512,
        path_bytes_max: 1024,
        extended_header_bytes_max: 64 << 10,
        device_nodes_allowed: false,
        // Both whiteout conventions: the input's length picks one, so the
        // archive bytes themselves stay a plain tar.
        privileged_whiteouts: data.len() % 2 == 0 && UnpackOptions::for_current_user().chown,
        ..UnpackOptions::for_current_user()
    };
    let result = unpack_layer(data, LayerCompression::None, &root, &options);
    assert_eq!(
        listing(parent, &root),
        before,
        "the layer changed something outside its root (result: {result:?})"
    );
    if result.is_ok() {
        assert_no_whiteout_files(&root);
    }
    remove_tree(&root);
});

/// Everything under `parent` except `root` and its contents, with the metadata and
/// bytes that a write through an escaped path would change.
fn listing(parent: &Path, root: &Path) -> BTreeMap<PathBuf, String> {
    let mut listing = BTreeMap::new();
    describe(parent, root, &mut listing);
    listing
}

fn describe(path: &Path, root: &Path, listing: &mut BTreeMap<PathBuf, String>) {
    // The root itself changes (its mtime moves as entries are created), and
    // everything in it is the layer's to change.
    if path == root {
        return;
    }
    let metadata = fs::symlink_metadata(path).expect("lstat");
    let file_type = metadata.file_type();
    let content = if file_type.is_file() {
        format!("{:?}", fs::read(path).expect("read"))
    } else if file_type.is_symlink() {
        format!("{:?}", fs::read_link(path).expect("readlink"))
    } else {
        String::new()
    };
    listing.insert(
        path.to_owned(),
        format!(
            "{file_type:?} {:o} {}:{} {} {} {content}",
            metadata.mode(),
            metadata.uid(),
            metadata.gid(),
            metadata.len(),
            metadata.mtime(),
        ),
    );
    if file_type.is_dir() {
        for child in fs::read_dir(path).expect("read_dir") {
            describe(&child.expect("entry").path(), root, listing);
        }
    }
}

fn assert_no_whiteout_files(directory: &Path) {
    for child in fs::read_dir(directory).expect("read_dir") {
        let child = child.expect("entry");
        let name = child.file_name();
        assert!(
            !name.as_encoded_bytes().starts_with(b".wh."),
            "whiteout file left in the layer: {:?}",
            child.path()
        );
        if child.file_type().expect("file type").is_dir() {
            assert_no_whiteout_files(&child.path());
        }
    }
}

/// Removes `root` even when the layer made directories read-only.
fn remove_tree(root: &Path) {
    make_directories_writable(root);
    fs::remove_dir_all(root).expect("remove root");
}

fn make_directories_writable(directory: &Path) {
    let _ = fs::set_permissions(directory, fs::Permissions::from_mode(0o700));
    let Ok(children) = fs::read_dir(directory) else {
        return;
    };
    for child in children.flatten() {
        if child.file_type().is_ok_and(|file_type| file_type.is_dir()) {
            make_directories_writable(&child.path());
        }
    }
}
