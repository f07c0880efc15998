//! What a legitimate layer turns into on disk.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::oci::manifest::LayerCompression;
use crate::reference::{Digest, DigestHasher};
use crate::unpack::{UnpackError, UnpackOptions, sync_filesystem_of, unpack_layer};

use super::{
    Attributes, DIRECTORY_ATTRIBUTES, FILE_ATTRIBUTES, LayerBuilder, Sandbox, gnu_header, gzip,
    is_overlay_whiteout_device, is_root, xattr, xattr_names, zstd,
};

fn attributes(mode: u32, uid: u64, gid: u64, mtime: u64) -> Attributes {
    Attributes {
        mode,
        uid,
        gid,
        mtime,
    }
}

#[test]
fn every_entry_type_with_its_metadata() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .directory_with(b"etc", attributes(0o750, 12, 34, 1_000_000))
        .file_with(
            b"etc/config",
            b"key=value\n",
            attributes(0o4751, 1000, 1001, 1_500_000_000),
        )
        .file_with(b"etc/empty", b"", attributes(0o600, 0, 0, 1_400_000_000))
        .link(
            tar::EntryType::Symlink,
            b"etc/link",
            b"config",
            attributes(0o777, 56, 78, 1_300_000_000),
        )
        .hard_link("etc/hard", "etc/config")
        .device(tar::EntryType::Fifo, "etc/fifo", 0, 0)
        .device(tar::EntryType::Char, "dev-null", 1, 3)
        .device(tar::EntryType::Block, "dev-loop", 7, 0)
        .finish();
    let outcome = sandbox
        .unpack(&layer, &UnpackOptions::privileged())
        .expect("unpack");
    let root = sandbox.root();

    let config = fs::symlink_metadata(root.join("etc/config")).expect("config");
    assert!(config.is_file());
    assert_eq!(
        fs::read(root.join("etc/config")).expect("read"),
        b"key=value\n"
    );
    assert_eq!(config.mode() & 0o7777, 0o4751, "setuid survives the chown");
    assert_eq!((config.uid(), config.gid()), (1000, 1001));
    assert_eq!(config.mtime(), 1_500_000_000);
    assert_eq!(config.nlink(), 2);

    let hard = fs::symlink_metadata(root.join("etc/hard")).expect("hard link");
    assert_eq!(hard.ino(), config.ino());

    let empty = fs::symlink_metadata(root.join("etc/empty")).expect("empty");
    assert_eq!((empty.len(), empty.mode() & 0o7777), (0, 0o600));

    let link = fs::symlink_metadata(root.join("etc/link")).expect("symlink");
    assert!(link.file_type().is_symlink());
    assert_eq!(
        fs::read_link(root.join("etc/link")).expect("readlink"),
        Path::new("config")
    );
    assert_eq!(
        (link.uid(), link.gid()),
        (56, 78),
        "lchown, not chown of the target"
    );
    assert_eq!(link.mtime(), 1_300_000_000);

    let fifo = fs::symlink_metadata(root.join("etc/fifo")).expect("fifo");
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o644);

    let null = fs::symlink_metadata(root.join("dev-null")).expect("char device");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    let loop_device = fs::symlink_metadata(root.join("dev-loop")).expect("block device");
    assert!(loop_device.file_type().is_block_device());
    assert_eq!(loop_device.rdev(), rustix::fs::makedev(7, 0));

    // Directory attributes land after the children, so the mtime sticks.
    let etc = fs::symlink_metadata(root.join("etc")).expect("etc");
    assert_eq!(etc.mode() & 0o7777, 0o750);
    assert_eq!((etc.uid(), etc.gid()), (12, 34));
    assert_eq!(etc.mtime(), 1_000_000);

    assert_eq!(outcome.entries, 8);
    assert_eq!(outcome.inodes, 7, "the hard link adds no inode");
    assert_eq!(outcome.size_bytes, 10);
    assert!(!outcome.owners_skipped);
    assert_eq!(outcome.uncompressed_bytes, layer.len() as u64);
    assert_eq!(outcome.diff_id, DigestHasher::sha256_of(&layer));
}

/// Set in the child process of the umask test below.
const UMASK_CHILD_VARIABLE: &str = "CRI_IMAGED_TEST_UMASK_CHILD";
const UMASK_CHILD_TEST: &str = "unpack::tests::extraction::modes_under_a_umask_in_a_fresh_process";

#[test]
fn a_umask_does_not_shape_modes() {
    // In a process of its own: the umask is the whole process's, and files
    // other tests create meanwhile would get it too.
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            UMASK_CHILD_TEST,
            "--ignored",
            "--test-threads",
            "1",
        ])
        .env(UMASK_CHILD_VARIABLE, "1")
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the child test did not pass: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[ignore = "a helper: a_umask_does_not_shape_modes runs it in a process of its own"]
fn modes_under_a_umask_in_a_fresh_process() {
    if std::env::var_os(UMASK_CHILD_VARIABLE).is_none() {
        return;
    }
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let sandbox = Sandbox::new();
    let own_uid = u64::from(rustix::process::geteuid().as_raw());
    let own_gid = u64::from(rustix::process::getegid().as_raw());
    let layer = LayerBuilder::new()
        .file("a/b/c/file", b"x")
        .file_with(b"shared", b"y", attributes(0o666, own_uid, own_gid, 5))
        .file_with(b"private", b"z", attributes(0o600, own_uid, own_gid, 5))
        .finish();
    let outcome = sandbox
        .unpack(&layer, &UnpackOptions::for_current_user())
        .expect("unpack");
    for directory in ["a", "a/b", "a/b/c"] {
        let metadata = fs::symlink_metadata(sandbox.root().join(directory)).expect("implied dir");
        assert!(metadata.is_dir());
        assert_eq!(metadata.mode() & 0o7777, 0o755, "{directory}");
    }
    for (name, mode) in [("a/b/c/file", 0o644), ("shared", 0o666), ("private", 0o600)] {
        let file = fs::symlink_metadata(sandbox.root().join(name)).expect("file");
        assert_eq!(file.mode() & 0o7777, mode, "{name}");
    }
    assert_eq!(outcome.inodes, 6);
}

#[test]
fn directory_listed_after_its_children_merges() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .file("d/child", b"1")
        .directory_with(b"d/", attributes(0o711, 0, 0, 42))
        .directory_with(b"./d", attributes(0o700, 0, 0, 43))
        .directory("./")
        .finish();
    let outcome = sandbox
        .unpack(&layer, &UnpackOptions::privileged())
        .expect("unpack");
    let directory = fs::symlink_metadata(sandbox.root().join("d")).expect("d");
    assert_eq!(
        (directory.mode() & 0o7777, directory.mtime()),
        (0o700, 43),
        "last entry wins"
    );
    assert_eq!(outcome.entries, 4);
    let root = fs::symlink_metadata(sandbox.root()).expect("root");
    assert_ne!(
        root.mtime(),
        1_600_000_000,
        "a root entry leaves the snapshot directory alone"
    );
}

#[test]
fn read_only_directories_still_receive_their_children() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .directory_with(b"locked", attributes(0o500, 0, 0, 7))
        .file("locked/inside", b"ok")
        .finish();
    sandbox
        .unpack(&layer, &UnpackOptions::unprivileged())
        .expect("unpack");
    let locked = fs::symlink_metadata(sandbox.root().join("locked")).expect("locked");
    assert_eq!(locked.mode() & 0o7777, 0o500);
    assert_eq!(
        fs::read(sandbox.root().join("locked/inside")).expect("inside"),
        b"ok"
    );
    fs::set_permissions(
        sandbox.root().join("locked"),
        fs::Permissions::from_mode(0o700),
    )
    .expect("unlock for cleanup");
}

#[test]
fn long_names_gnu_and_pax() {
    let sandbox = Sandbox::new();
    let gnu_long = format!("{}/file", "d".repeat(150));
    let gnu_long_target = format!("{}/target", "t".repeat(150));
    let pax_long = format!("{}/pax-file", "p".repeat(200));
    let layer = LayerBuilder::new()
        .file(&gnu_long, b"gnu")
        .symlink("long-target-link", &gnu_long_target)
        .pax(&[("path", pax_long.as_bytes())])
        .file("truncated-name-ignored", b"pax")
        .finish();
    let outcome = sandbox
        .unpack(&layer, &UnpackOptions::privileged())
        .expect("unpack");
    let root = sandbox.root();
    assert_eq!(
        fs::read(root.join(&gnu_long)).expect("gnu long name"),
        b"gnu"
    );
    assert_eq!(
        fs::read_link(root.join("long-target-link")).expect("long link"),
        Path::new(&gnu_long_target)
    );
    assert_eq!(fs::read(root.join(&pax_long)).expect("pax path"), b"pax");
    assert!(!root.join("truncated-name-ignored").exists());
    assert_eq!(outcome.entries, 3, "extension headers are not entries");
}

#[test]
fn pax_headers_set_xattrs_owners_and_fractional_mtimes() {
    let sandbox = Sandbox::new();
    let capability: &[u8] = &[
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let layer = LayerBuilder::new()
        .pax(&[
            ("SCHILY.xattr.user.comment", b"hello\nworld"),
            ("SCHILY.xattr.trusted.note", &[0, 1, 2, 255]),
            ("SCHILY.xattr.security.capability", capability),
            ("uid", b"3000000000"),
            ("gid", b"70000"),
            ("mtime", b"1700000000.123456789"),
        ])
        .file("bin/ping", b"binary")
        .pax(&[("SCHILY.xattr.user.on_dir", b"d")])
        .directory("bin")
        .finish();
    sandbox
        .unpack(&layer, &UnpackOptions::privileged())
        .expect("unpack");
    let ping = sandbox.root().join("bin/ping");
    assert_eq!(
        xattr(&ping, "user.comment").as_deref(),
        Some(&b"hello\nworld"[..])
    );
    assert_eq!(
        xattr(&ping, "trusted.note").as_deref(),
        Some(&[0, 1, 2, 255][..])
    );
    assert_eq!(
        xattr(&ping, "security.capability").as_deref(),
        Some(capability),
        "set after chown"
    );
    let metadata = fs::symlink_metadata(&ping).expect("ping");
    assert_eq!((metadata.uid(), metadata.gid()), (3_000_000_000, 70_000));
    assert_eq!(
        (metadata.mtime(), metadata.mtime_nsec()),
        (1_700_000_000, 123_456_789)
    );
    assert_eq!(
        xattr(&sandbox.root().join("bin"), "user.on_dir").as_deref(),
        Some(&b"d"[..])
    );
}

#[test]
fn overlay_xattrs_from_the_archive_are_escaped() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
        .directory("forged")
        .pax(&[("SCHILY.xattr.trusted.overlay.redirect", b"/elsewhere")])
        .file("file", b"")
        .finish();
    sandbox
        .unpack(&layer, &UnpackOptions::privileged())
        .expect("unpack");
    let forged = sandbox.root().join("forged");
    assert_eq!(xattr(&forged, "trusted.overlay.opaque"), None);
    assert_eq!(
        xattr(&forged, "trusted.overlay.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        xattr_names(&sandbox.root().join("file")),
        vec!["trusted.overlay.overlay.redirect".to_owned()]
    );
}

#[test]
fn non_utf8_names() {
    let sandbox = Sandbox::new();
    let directory: &[u8] = b"caf\xe9";
    let file: &[u8] = b"caf\xe9/\xff\xfe-name";
    let layer = LayerBuilder::new()
        .directory_with(directory, DIRECTORY_ATTRIBUTES)
        .file_with(file, b"latin-1", FILE_ATTRIBUTES)
        .link(tar::EntryType::Symlink, b"link", file, FILE_ATTRIBUTES)
        .finish();
    sandbox
        .unpack(&layer, &UnpackOptions::privileged())
        .expect("unpack");
    let file_path = sandbox.root().join(std::ffi::OsStr::from_bytes(file));
    assert_eq!(fs::read(&file_path).expect("non-utf8 file"), b"latin-1");
    assert_eq!(
        fs::read_link(sandbox.root().join("link"))
            .expect("link")
            .as_os_str()
            .as_bytes(),
        file
    );
}

#[test]
fn gnu_sparse_file_with_an_extension_block() {
    let sandbox = Sandbox::new();
    // Five 512-byte regions: four in the header, one in an extension block,
    // and a hole at the end.
    let offsets = [0u64, 8192, 16384, 24576, 32768];
    let real_size = 65536u64;
    let mut header = gnu_header(tar::EntryType::GNUSparse, FILE_ATTRIBUTES);
    {
        let gnu = header.as_gnu_mut().expect("gnu header");
        for (slot, offset) in gnu.sparse.iter_mut().zip(offsets) {
            slot.set_offset(offset);
            slot.set_length(512);
        }
        gnu.set_is_extended(true);
        gnu.set_real_size(real_size);
    }
    header.set_path("sparse").expect("path");
    header.set_size(512 * offsets.len() as u64);
    header.set_cksum();
    let mut extension = tar::GnuExtSparseHeader::new();
    extension.sparse_mut()[0].set_offset(offsets[4]);
    extension.sparse_mut()[0].set_length(512);
    let mut data = Vec::new();
    for index in 0..offsets.len() {
        data.extend(std::iter::repeat_n(b'a' + index as u8, 512));
    }
    let layer = LayerBuilder::new()
        .raw_bytes(header.as_bytes())
        .raw_bytes(extension.as_bytes())
        .raw_bytes(&data)
        .file("after", b"still aligned")
        .finish();
    let outcome = sandbox
        .unpack(&layer, &UnpackOptions::privileged())
        .expect("unpack");
    let content = fs::read(sandbox.root().join("sparse")).expect("sparse file");
    let mut expected = vec![0u8; real_size as usize];
    for (index, offset) in offsets.iter().enumerate() {
        let offset = *offset as usize;
        expected[offset..offset + 512].fill(b'a' + index as u8);
    }
    assert!(content == expected, "sparse content differs");
    assert_eq!(
        fs::read(sandbox.root().join("after")).expect("after"),
        b"still aligned"
    );
    assert_eq!(outcome.size_bytes, 512 * 5 + 13);
    let allocated = fs::metadata(sandbox.root().join("sparse"))
        .expect("stat")
        .blocks()
        * 512;
    assert!(
        allocated < real_size,
        "holes stay holes: {allocated} bytes allocated"
    );
}

#[test]
fn privileged_whiteouts_are_character_devices_and_trusted_xattrs() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .directory("etc")
        .file("etc/.wh.removed", b"")
        .file(".wh.old-directory", b"")
        .file("opaque/.wh..wh..opq", b"")
        .file("opaque/new", b"kept")
        .finish();
    let outcome = sandbox
        .unpack(&layer, &UnpackOptions::privileged())
        .expect("unpack");
    let root = sandbox.root();
    assert!(is_overlay_whiteout_device(&root.join("etc/removed")));
    assert!(is_overlay_whiteout_device(&root.join("old-directory")));
    assert!(!root.join("etc/.wh.removed").exists());
    assert!(!root.join("opaque/.wh..wh..opq").exists());
    assert_eq!(
        xattr(&root.join("opaque"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&root.join("etc"), "trusted.overlay.opaque"), None);
    assert_eq!(fs::read(root.join("opaque/new")).expect("new"), b"kept");
    assert_eq!(outcome.entries, 5);
    // etc, etc/removed, old-directory, opaque (implied), opaque/new.
    assert_eq!(outcome.inodes, 5);
}

#[test]
fn unprivileged_whiteouts_follow_the_userxattr_convention() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .directory("etc")
        .file("etc/.wh.removed", b"")
        .file("etc/kept", b"1")
        .file(".wh.old-directory", b"")
        .file("opaque/.wh..wh..opq", b"")
        .file("opaque/new", b"kept")
        // Redundant under the opaque marker, which comes later here.
        .file("both/.wh.gone", b"")
        .file("both/.wh..wh..opq", b"")
        .finish();
    let outcome = sandbox
        .unpack(&layer, &UnpackOptions::unprivileged())
        .expect("unpack");
    let root = sandbox.root();
    for whiteout in ["etc/removed", "old-directory"] {
        let path = root.join(whiteout);
        let metadata = fs::symlink_metadata(&path).expect("whiteout file");
        assert!(metadata.is_file() && metadata.len() == 0, "{whiteout}");
        assert_eq!(
            xattr(&path, "user.overlay.whiteout").as_deref(),
            Some(&b""[..])
        );
    }
    assert_eq!(
        xattr(&root.join("etc"), "user.overlay.opaque").as_deref(),
        Some(&b"x"[..])
    );
    assert_eq!(
        xattr(&root, "user.overlay.opaque").as_deref(),
        Some(&b"x"[..])
    );
    assert_eq!(
        xattr(&root.join("opaque"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        xattr(&root.join("both"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(
        !root.join("both/gone").exists(),
        "an opaque directory needs no whiteouts"
    );
    for path in [
        root.clone(),
        root.join("etc"),
        root.join("opaque"),
        root.join("both"),
    ] {
        assert!(
            xattr_names(&path)
                .iter()
                .all(|name| !name.starts_with("trusted.")),
            "{path:?}"
        );
    }
    assert_eq!(outcome.entries, 8);
}

#[test]
fn invalid_whiteouts_are_rejected() {
    let cases: [(&str, LayerBuilder); 4] = [
        ("dir/.wh.", LayerBuilder::new().file("dir/.wh.", b"")),
        ("a/.wh.dir/x", LayerBuilder::new().file("a/.wh.dir/x", b"")),
        (".wh.d", LayerBuilder::new().directory(".wh.d")),
        (
            "x/.wh..wh.plnk",
            LayerBuilder::new().file("x/.wh..wh.plnk", b""),
        ),
    ];
    for (entry, layer) in cases {
        let sandbox = Sandbox::new();
        let error = sandbox
            .unpack(&layer.finish(), &UnpackOptions::privileged())
            .expect_err(entry);
        assert!(
            matches!(error, UnpackError::InvalidWhiteout { .. }),
            "{entry}: {error}"
        );
        assert!(error.to_string().contains(entry), "{error}");
    }
}

#[test]
fn whiteout_and_entry_for_one_path_conflict() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .file("name", b"")
        .file(".wh.name", b"")
        .finish();
    let error = sandbox
        .unpack(&layer, &UnpackOptions::privileged())
        .expect_err("conflict");
    assert!(
        matches!(error, UnpackError::DuplicateEntry { .. }),
        "{error}"
    );
    assert!(error.to_string().contains(".wh.name"), "{error}");
}

#[test]
fn aufs_metadata_at_the_root_is_skipped() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .directory(".wh..wh.plnk")
        .file(".wh..wh.plnk/123.456", b"stash")
        .file("real", b"r")
        .finish();
    let outcome = sandbox
        .unpack(&layer, &UnpackOptions::privileged())
        .expect("unpack");
    assert!(!sandbox.root().join(".wh..wh.plnk").exists());
    assert_eq!(fs::read(sandbox.root().join("real")).expect("real"), b"r");
    assert_eq!(outcome.inodes, 1);
}

#[test]
fn unprivileged_mode_skips_owners_and_says_so() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .file_with(b"owned", b"x", attributes(0o644, 1000, 1000, 5))
        .finish();
    let outcome = sandbox
        .unpack(&layer, &UnpackOptions::unprivileged())
        .expect("unpack");
    assert!(outcome.owners_skipped);
    let metadata = fs::symlink_metadata(sandbox.root().join("owned")).expect("owned");
    let effective_uid = rustix::process::geteuid().as_raw();
    assert_eq!(metadata.uid(), effective_uid);

    let sandbox = Sandbox::new();
    let own_ids = attributes(
        0o644,
        u64::from(effective_uid),
        u64::from(rustix::process::getegid().as_raw()),
        5,
    );
    let layer = LayerBuilder::new()
        .file_with(b"mine", b"x", own_ids)
        .finish();
    let outcome = sandbox
        .unpack(&layer, &UnpackOptions::unprivileged())
        .expect("unpack");
    assert!(!outcome.owners_skipped, "nothing was skipped");
}

fn sample_layer() -> Vec<u8> {
    LayerBuilder::new()
        .directory("usr")
        .file("usr/data", &vec![7u8; 300_000])
        .file("usr/.wh.old", b"")
        .symlink("lib", "usr")
        .finish()
}

fn check_sample_layer(root: &Path) {
    assert_eq!(
        fs::read(root.join("usr/data")).expect("data"),
        vec![7u8; 300_000]
    );
    assert!(is_overlay_whiteout_device(&root.join("usr/old")));
    assert_eq!(
        fs::read_link(root.join("lib")).expect("lib"),
        Path::new("usr")
    );
}

#[test]
fn gzip_zstd_and_uncompressed_layers_have_the_same_diff_id() {
    let tar = sample_layer();
    let diff_id = DigestHasher::sha256_of(&tar);
    let mut two_members = gzip(&tar[..10_000]);
    two_members.extend(gzip(&tar[10_000..]));
    let cases = [
        ("none", LayerCompression::None, tar.clone()),
        ("gzip", LayerCompression::Gzip, gzip(&tar)),
        ("gzip with two members", LayerCompression::Gzip, two_members),
        ("zstd", LayerCompression::Zstd, zstd(&tar)),
    ];
    for (name, compression, blob) in cases {
        let sandbox = Sandbox::new();
        let options = UnpackOptions {
            expected_diff_id: Some(diff_id.clone()),
            ..UnpackOptions::privileged()
        };
        let outcome = unpack_layer(&blob[..], compression, &sandbox.root(), &options)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(outcome.diff_id, diff_id, "{name}");
        assert_eq!(outcome.uncompressed_bytes, tar.len() as u64, "{name}");
        check_sample_layer(&sandbox.root());
    }
}

#[test]
fn media_type_and_magic_bytes_must_agree() {
    let tar = sample_layer();
    let cases = [
        (
            LayerCompression::Zstd,
            gzip(&tar),
            "zstd",
            "gzip magic bytes 1f 8b",
        ),
        (
            LayerCompression::Gzip,
            zstd(&tar),
            "gzip",
            "zstd magic bytes 28 b5 2f fd",
        ),
        (
            LayerCompression::Gzip,
            tar.clone(),
            "gzip",
            "neither gzip nor zstd",
        ),
        (
            LayerCompression::None,
            gzip(&tar),
            "uncompressed tar",
            "gzip magic bytes",
        ),
        (
            LayerCompression::Zstd,
            Vec::new(),
            "zstd",
            "no bytes at all",
        ),
    ];
    for (compression, blob, declared, detected) in cases {
        let sandbox = Sandbox::new();
        let error = unpack_layer(
            &blob[..],
            compression,
            &sandbox.root(),
            &UnpackOptions::privileged(),
        )
        .expect_err("mismatch");
        let message = error.to_string();
        assert!(
            matches!(error, UnpackError::CompressionMismatch { .. }),
            "{message}"
        );
        assert!(
            message.contains(declared) && message.contains(detected),
            "{message}"
        );
        assert_eq!(fs::read_dir(sandbox.root()).expect("root").count(), 0);
    }
}

#[test]
fn corrupt_gzip_is_a_read_error() {
    let mut blob = gzip(&sample_layer());
    let middle = blob.len() / 2;
    blob[middle] ^= 0xff;
    blob.truncate(blob.len() - 4);
    let sandbox = Sandbox::new();
    let error = unpack_layer(
        &blob[..],
        LayerCompression::Gzip,
        &sandbox.root(),
        &UnpackOptions::privileged(),
    )
    .expect_err("corrupt");
    assert!(matches!(error, UnpackError::ReadLayer { .. }), "{error}");
}

#[test]
fn diff_id_covers_bytes_after_the_end_blocks_and_must_match() {
    let mut tar = sample_layer();
    // GNU tar pads to a 10 KiB record; the diff id includes the padding.
    tar.resize(tar.len().div_ceil(10240) * 10240 + 10240, 0);
    let sandbox = Sandbox::new();
    let outcome = sandbox
        .unpack(&tar, &UnpackOptions::privileged())
        .expect("unpack");
    assert_eq!(outcome.diff_id, DigestHasher::sha256_of(&tar));
    assert_eq!(outcome.uncompressed_bytes, tar.len() as u64);

    let wrong = Digest::parse(&format!("sha256:{}", "0".repeat(64))).expect("digest");
    let sandbox = Sandbox::new();
    let options = UnpackOptions {
        expected_diff_id: Some(wrong.clone()),
        ..UnpackOptions::privileged()
    };
    let error = sandbox.unpack(&tar, &options).expect_err("mismatch");
    match error {
        UnpackError::DiffIdMismatch { expected, received } => {
            assert_eq!(expected, wrong);
            assert_eq!(received, DigestHasher::sha256_of(&tar));
        }
        other => panic!("expected a diff id mismatch, got {other}"),
    }

    // The expected diff id also picks the algorithm.
    let mut hasher = DigestHasher::new(crate::reference::DigestAlgorithm::Sha512);
    hasher.update(&tar);
    let sha512 = hasher.finish();
    let sandbox = Sandbox::new();
    let options = UnpackOptions {
        expected_diff_id: Some(sha512.clone()),
        ..UnpackOptions::privileged()
    };
    assert_eq!(
        sandbox.unpack(&tar, &options).expect("sha512").diff_id,
        sha512
    );
}

#[test]
fn empty_stream_and_archive_without_end_blocks() {
    let sandbox = Sandbox::new();
    let outcome = sandbox
        .unpack(&[], &UnpackOptions::privileged())
        .expect("an empty stream is an empty layer");
    assert_eq!((outcome.entries, outcome.uncompressed_bytes), (0, 0));
    assert_eq!(outcome.diff_id, DigestHasher::sha256_of(b""));

    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new().file("f", b"data").finish_without_end();
    let outcome = sandbox
        .unpack(&layer, &UnpackOptions::privileged())
        .expect("ends on a block boundary");
    assert_eq!(outcome.entries, 1);
}

#[test]
fn truncated_data_is_an_error_naming_the_entry() {
    let mut layer = LayerBuilder::new()
        .file("cut/short", &[1u8; 2000])
        .finish_without_end();
    layer.truncate(layer.len() - 1000);
    let sandbox = Sandbox::new();
    let error = sandbox
        .unpack(&layer, &UnpackOptions::privileged())
        .expect_err("truncated");
    assert!(matches!(error, UnpackError::ReadLayer { .. }), "{error}");
    assert!(error.to_string().contains("cut/short"), "{error}");
}

#[test]
fn target_directory_must_exist_and_be_empty() {
    let sandbox = Sandbox::new();
    fs::write(sandbox.root().join("leftover"), b"").expect("leftover");
    let error = sandbox
        .unpack(&sample_layer(), &UnpackOptions::privileged())
        .expect_err("not empty");
    assert!(
        matches!(error, UnpackError::TargetDirectoryNotEmpty { .. }),
        "{error}"
    );
    let error = unpack_layer(
        &sample_layer()[..],
        LayerCompression::None,
        &sandbox.root().join("missing"),
        &UnpackOptions::privileged(),
    )
    .expect_err("missing");
    assert!(
        matches!(error, UnpackError::OpenTargetDirectory { .. }),
        "{error}"
    );
}

#[test]
fn errors_are_lowercase_and_bounded() {
    let sandbox = Sandbox::new();
    let long_name = format!("{}/x", "n".repeat(3000));
    let layer = LayerBuilder::new()
        .file(&long_name, b"")
        .file(&long_name, b"")
        .finish();
    let error = sandbox
        .unpack(&layer, &UnpackOptions::privileged())
        .expect_err("duplicate");
    let message = error.to_string();
    assert!(message.len() < 400, "{} bytes", message.len());
    assert!(message.starts_with("entry \"nnn"), "{message}");
    assert!(!message.ends_with('.'));
}

#[test]
fn sync_filesystem_of_a_snapshot() {
    let sandbox = Sandbox::new();
    sandbox
        .unpack(&sample_layer(), &UnpackOptions::privileged())
        .expect("unpack");
    sync_filesystem_of(&sandbox.root()).expect("syncfs");
    let error = sync_filesystem_of(&sandbox.root().join("missing")).expect_err("missing");
    assert!(
        matches!(error, UnpackError::SyncFilesystem { .. }),
        "{error}"
    );
}

#[test]
fn options_for_the_current_user() {
    let options = UnpackOptions::for_current_user();
    assert_eq!(options.chown, is_root());
    assert_eq!(options.privileged_whiteouts, is_root());
    assert_eq!(UnpackOptions::default(), UnpackOptions::privileged());
    assert_eq!(UnpackOptions::default().uncompressed_bytes_max, 64 << 30);
    assert_eq!(UnpackOptions::default().entries_max, 1_000_000);
}

#[test]
fn file_modes_are_exact_whether_or_not_creation_could_set_them() {
    let sandbox = Sandbox::new();
    let own_uid = u64::from(rustix::process::geteuid().as_raw());
    let own_gid = u64::from(rustix::process::getegid().as_raw());
    // Modes the creation can give (0644, 0444, 0000, 0755) and modes only a
    // chmod can (setuid, sticky, group- and other-writable under a umask).
    let modes = [0o644, 0o444, 0o000, 0o755, 0o4755, 0o1777, 0o666, 0o2770];
    let mut builder = LayerBuilder::new();
    for mode in modes {
        let name = format!("m{mode:o}");
        builder = builder.file_with(
            name.as_bytes(),
            b"data",
            attributes(mode, own_uid, own_gid, 7),
        );
    }
    let options = UnpackOptions::for_current_user();
    sandbox.unpack(&builder.finish(), &options).expect("unpack");
    for mode in modes {
        let path = sandbox.root().join(format!("m{mode:o}"));
        let metadata = fs::symlink_metadata(&path).expect("file");
        assert_eq!(metadata.mode() & 0o7777, mode, "{}", path.display());
        assert_eq!(fs::read(&path).expect("read"), b"data");
        assert_eq!(metadata.mtime(), 7);
    }
}

#[test]
fn a_setgid_root_does_not_give_files_its_group() {
    if !is_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let root = sandbox.root();
    std::os::unix::fs::chown(&root, None, Some(4321)).expect("chgrp root");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o2775)).expect("setgid root");
    let layer = LayerBuilder::new()
        .file_with(b"top", b"x", attributes(0o644, 0, 0, 5))
        .file_with(b"dir/nested", b"y", attributes(0o600, 0, 0, 5))
        .finish();
    sandbox
        .unpack(&layer, &UnpackOptions::privileged())
        .expect("unpack");
    for name in ["top", "dir/nested"] {
        let metadata = fs::symlink_metadata(root.join(name)).expect(name);
        assert_eq!((metadata.uid(), metadata.gid()), (0, 0), "{name}");
    }
}
