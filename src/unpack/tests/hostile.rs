//! One test per attack. Each layer must be rejected with an error that names
//! the offending entry, and nothing beside the target directory (the sandbox
//! holds a `sentinel` directory with files) may have changed.

use std::fs;
use std::path::Path;

use crate::oci::manifest::LayerCompression;
use crate::unpack::{UnpackError, UnpackOptions, unpack_layer};

use super::{FILE_ATTRIBUTES, LayerBuilder, Sandbox, gnu_header, gzip, zstd};

/// Unpacks `layer`, expects an error, and checks the outside is unchanged.
fn reject(sandbox: &Sandbox, layer: &[u8], options: &UnpackOptions) -> UnpackError {
    reject_with(sandbox, options, |root, options| {
        unpack_layer(layer, LayerCompression::None, root, options)
    })
}

fn reject_with(
    sandbox: &Sandbox,
    options: &UnpackOptions,
    unpack: impl FnOnce(&Path, &UnpackOptions) -> Result<crate::unpack::UnpackOutcome, UnpackError>,
) -> UnpackError {
    let before = sandbox.outside_listing();
    let error = match unpack(&sandbox.root(), options) {
        Ok(outcome) => panic!("hostile layer was accepted: {outcome:?}"),
        Err(error) => error,
    };
    assert_eq!(
        sandbox.outside_listing(),
        before,
        "something outside the target directory changed ({error})"
    );
    assert_eq!(
        fs::read(sandbox.sentinel().join("secret")).expect("secret"),
        b"do not touch"
    );
    error
}

fn assert_names(error: &UnpackError, entry: &str) {
    let message = error.to_string();
    assert!(
        message.contains(&format!("{entry:?}")),
        "error does not name entry {entry:?}: {message}"
    );
}

fn privileged() -> UnpackOptions {
    UnpackOptions::privileged()
}

fn sentinel_text(sandbox: &Sandbox, rest: &str) -> String {
    format!("{}{rest}", sandbox.sentinel().display())
}

#[test]
fn dot_dot_component() {
    for name in [
        "../sentinel/secret",
        "a/../../sentinel/secret",
        "./../escape",
    ] {
        let sandbox = Sandbox::new();
        let layer = LayerBuilder::new()
            .raw(tar::EntryType::Regular, name.as_bytes(), b"", b"pwned")
            .finish();
        let error = reject(&sandbox, &layer, &privileged());
        assert!(
            matches!(error, UnpackError::ParentDirectoryComponent { .. }),
            "{error}"
        );
        assert_names(&error, name);
    }
}

#[test]
fn absolute_path() {
    let sandbox = Sandbox::new();
    let name = sentinel_text(&sandbox, "/secret");
    let layer = LayerBuilder::new()
        .raw(tar::EntryType::Regular, name.as_bytes(), b"", b"pwned")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(matches!(error, UnpackError::AbsolutePath { .. }), "{error}");
    assert_names(&error, &name);
}

#[test]
fn absolute_symlink_then_write_through_it() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .symlink("evil", &sentinel_text(&sandbox, ""))
        .file("evil/secret", b"pwned")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(error, UnpackError::PathThroughSymlink { .. }),
        "{error}"
    );
    assert_names(&error, "evil/secret");
}

#[test]
fn relative_symlink_then_write_through_it() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .symlink("evil", "../sentinel")
        .file("evil/new-file", b"pwned")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(error, UnpackError::PathThroughSymlink { .. }),
        "{error}"
    );
    assert_names(&error, "evil/new-file");
}

#[test]
fn symlink_chain_then_write_through_it() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .symlink("a", "b")
        .symlink("b", "../sentinel")
        .file("a/nested/inner", b"pwned")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(error, UnpackError::PathThroughSymlink { .. }),
        "{error}"
    );
    assert_names(&error, "a/nested/inner");
}

#[test]
fn symlink_then_create_directories_through_it() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .symlink("evil", &sentinel_text(&sandbox, ""))
        .file("evil/made/by/parents", b"pwned")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(error, UnpackError::PathThroughSymlink { .. }),
        "{error}"
    );
    assert_names(&error, "evil/made/by/parents");

    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .symlink("evil", &sentinel_text(&sandbox, ""))
        .directory("evil/new-directory")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(error, UnpackError::PathThroughSymlink { .. }),
        "{error}"
    );
    assert_names(&error, "evil/new-directory");
}

#[test]
fn symlink_pointing_inside_is_not_followed_either() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .directory("real")
        .symlink("alias", "real")
        .file("alias/file", b"x")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(error, UnpackError::PathThroughSymlink { .. }),
        "{error}"
    );
    assert_names(&error, "alias/file");
}

#[test]
fn whiteout_and_opaque_marker_through_a_symlink() {
    for entry in ["evil/.wh.secret", "evil/.wh..wh..opq"] {
        for options in [UnpackOptions::privileged(), UnpackOptions::unprivileged()] {
            let sandbox = Sandbox::new();
            let layer = LayerBuilder::new()
                .symlink("evil", &sentinel_text(&sandbox, ""))
                .file(entry, b"")
                .finish();
            let error = reject(&sandbox, &layer, &options);
            assert!(
                matches!(error, UnpackError::PathThroughSymlink { .. }),
                "{error}"
            );
            assert_names(&error, entry);
        }
    }
}

#[test]
fn whiteout_of_dot_dot() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .raw(tar::EntryType::Regular, b"dir/.wh..", b"", b"")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(error, UnpackError::InvalidWhiteout { .. }),
        "{error}"
    );
    assert_names(&error, "dir/.wh..");
}

#[test]
fn hard_link_to_an_absolute_outside_target() {
    let sandbox = Sandbox::new();
    let target = sentinel_text(&sandbox, "/secret");
    let layer = LayerBuilder::new()
        .raw(tar::EntryType::Link, b"h", target.as_bytes(), b"")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(
            error,
            UnpackError::AbsolutePath {
                what: "hard link target",
                ..
            }
        ),
        "{error}"
    );
    assert_names(&error, "h");
}

#[test]
fn hard_link_climbing_out_with_dot_dot() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .raw(tar::EntryType::Link, b"h", b"../sentinel/secret", b"")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(
            error,
            UnpackError::ParentDirectoryComponent {
                what: "hard link target",
                ..
            }
        ),
        "{error}"
    );
    assert_names(&error, "h");
}

#[test]
fn hard_link_through_a_symlink_to_outside() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .symlink("s", &sentinel_text(&sandbox, ""))
        .hard_link("h", "s/secret")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(
            error,
            UnpackError::HardLinkTarget {
                reason: "goes through a symbolic link",
                ..
            }
        ),
        "{error}"
    );
    assert_names(&error, "h");
}

#[test]
fn hard_link_to_a_symlink_pointing_outside_then_write() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .symlink("s", &sentinel_text(&sandbox, "/secret"))
        .hard_link("h", "s")
        .file("h", b"pwned")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(error, UnpackError::DuplicateEntry { .. }),
        "{error}"
    );
    assert_names(&error, "h");
    // The hard link copied the symlink itself; nothing followed it.
    let linked = fs::symlink_metadata(sandbox.root().join("h")).expect("h");
    assert!(linked.file_type().is_symlink());
}

#[test]
fn hard_link_to_an_entry_not_in_this_layer() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .hard_link("h", "comes/later")
        .file("comes/later", b"x")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(
            error,
            UnpackError::HardLinkTarget {
                reason: "does not exist in this layer",
                ..
            }
        ),
        "{error}"
    );
    assert_names(&error, "h");
}

#[test]
fn hard_link_to_a_directory_or_a_whiteout() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .directory("d")
        .hard_link("h", "d")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(
            error,
            UnpackError::HardLinkTarget {
                reason: "is a directory",
                ..
            }
        ),
        "{error}"
    );
    assert_names(&error, "h");

    for options in [UnpackOptions::privileged(), UnpackOptions::unprivileged()] {
        let sandbox = Sandbox::new();
        let layer = LayerBuilder::new()
            .file("dir/.wh.gone", b"")
            .hard_link("dir/copy", "dir/gone")
            .finish();
        let error = reject(&sandbox, &layer, &options);
        assert!(
            matches!(
                error,
                UnpackError::HardLinkTarget {
                    reason: "is a whiteout",
                    ..
                }
            ),
            "{error}"
        );
        assert_names(&error, "dir/copy");
    }
}

#[test]
fn directory_replaced_by_a_symlink_mid_archive() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .directory("d")
        .file("d/a", b"1")
        .symlink("d", &sentinel_text(&sandbox, ""))
        .file("d/secret", b"pwned")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(error, UnpackError::DuplicateEntry { .. }),
        "{error}"
    );
    assert_names(&error, "d");
    assert!(
        fs::symlink_metadata(sandbox.root().join("d"))
            .expect("d")
            .is_dir()
    );
}

#[test]
fn file_replaced_by_a_symlink_or_a_directory() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .file("f", b"first")
        .symlink("f", &sentinel_text(&sandbox, "/secret"))
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(error, UnpackError::DuplicateEntry { .. }),
        "{error}"
    );
    assert_names(&error, "f");

    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .file("f", b"first")
        .directory("f")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(error, UnpackError::DuplicateEntry { .. }),
        "{error}"
    );
    assert_names(&error, "f");
}

#[test]
fn duplicate_regular_file() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .file("dup", b"first")
        .raw(tar::EntryType::Regular, b"./dup", b"", b"second")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(error, UnpackError::DuplicateEntry { .. }),
        "{error}"
    );
    assert_names(&error, "./dup");
    assert_eq!(fs::read(sandbox.root().join("dup")).expect("dup"), b"first");
}

#[test]
fn enormous_pax_header() {
    let sandbox = Sandbox::new();
    let huge_value = vec![b'v'; 2 << 20];
    let layer = LayerBuilder::new()
        .pax(&[("SCHILY.xattr.user.huge", &huge_value)])
        .file("victim", b"")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(
            error,
            UnpackError::ExtendedHeaderTooLarge {
                kind: "pax extended header",
                ..
            }
        ),
        "{error}"
    );
    // The header describes an entry that comes after it, so the error can
    // only name the header itself (empty here) and its offset.
    assert!(error.to_string().contains("at byte 0"), "{error}");
}

#[test]
fn extension_header_claiming_a_terabyte_fails_before_reading() {
    for (kind, kind_name) in [
        (tar::EntryType::XHeader, "pax extended header"),
        (tar::EntryType::GNULongName, "gnu long name"),
        (tar::EntryType::GNULongLink, "gnu long link"),
        (tar::EntryType::XGlobalHeader, "pax global header"),
    ] {
        let sandbox = Sandbox::new();
        let mut header = gnu_header(kind, FILE_ATTRIBUTES);
        header.set_path("huge-header").expect("path");
        header.set_size(1 << 40);
        header.set_cksum();
        let layer = LayerBuilder::new().raw_bytes(header.as_bytes()).finish();
        let error = reject(&sandbox, &layer, &privileged());
        match &error {
            UnpackError::ExtendedHeaderTooLarge {
                kind, size_bytes, ..
            } => {
                assert_eq!((*kind, *size_bytes), (kind_name, 1 << 40));
            }
            other => panic!("{kind_name}: {other}"),
        }
        assert_names(&error, "huge-header");
    }
}

#[test]
fn gnu_long_name_over_the_limit() {
    let sandbox = Sandbox::new();
    let long_name = vec![b'n'; 3 << 20];
    let layer = LayerBuilder::new()
        .raw(
            tar::EntryType::GNULongName,
            b"././@LongLink",
            b"",
            &long_name,
        )
        .file("short", b"")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(
            error,
            UnpackError::ExtendedHeaderTooLarge {
                kind: "gnu long name",
                ..
            }
        ),
        "{error}"
    );
    assert_names(&error, "././@LongLink");
}

#[test]
fn path_and_link_target_over_the_limit() {
    let sandbox = Sandbox::new();
    let long_path = format!("{}/x", "p".repeat(5000));
    let layer = LayerBuilder::new()
        .pax(&[("path", long_path.as_bytes())])
        .file("short", b"")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(error, UnpackError::PathTooLong { what: "path", .. }),
        "{error}"
    );
    assert!(error.to_string().contains("pppp"), "{error}");

    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .pax(&[("linkpath", "t".repeat(5000).as_bytes())])
        .symlink("link", "short")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(
            error,
            UnpackError::PathTooLong {
                what: "link target",
                ..
            }
        ),
        "{error}"
    );
    assert_names(&error, "link");
}

#[test]
fn nul_byte_in_a_pax_path() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .pax(&[("path", b"ok\0/../../sentinel/secret")])
        .file("short", b"pwned")
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(error, UnpackError::NulByte { what: "path", .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("ok\\0/../../sentinel"),
        "{error}"
    );
}

fn bomb_tar() -> Vec<u8> {
    LayerBuilder::new()
        .file("bomb", &vec![0u8; 32 << 20])
        .finish()
}

#[test]
fn decompression_bomb_gzip_and_zstd() {
    let tar = bomb_tar();
    let options = UnpackOptions {
        uncompressed_bytes_max: 4 << 20,
        ..UnpackOptions::privileged()
    };
    for (compression, blob) in [
        (LayerCompression::Gzip, gzip(&tar)),
        (LayerCompression::Zstd, zstd(&tar)),
        (LayerCompression::None, tar.clone()),
    ] {
        assert!(compression == LayerCompression::None || blob.len() < (1 << 20));
        let sandbox = Sandbox::new();
        let error = reject_with(&sandbox, &options, |root, options| {
            unpack_layer(&blob[..], compression, root, options)
        });
        assert!(
            matches!(error, UnpackError::UncompressedBytesLimit { limit_bytes, .. } if limit_bytes == 4 << 20),
            "{compression:?}: {error}"
        );
        assert_names(&error, "bomb");
        let written = fs::metadata(sandbox.root().join("bomb"))
            .expect("partial")
            .len();
        assert!(written <= 4 << 20, "{written} bytes written");
    }
}

#[test]
fn too_many_entries() {
    let sandbox = Sandbox::new();
    let mut layer = LayerBuilder::new();
    for index in 0..10 {
        layer = layer.file(&format!("f{index}"), b"");
    }
    let options = UnpackOptions {
        entries_max: 3,
        ..UnpackOptions::privileged()
    };
    let error = reject(&sandbox, &layer.finish(), &options);
    assert!(
        matches!(error, UnpackError::EntriesLimit { limit: 3, .. }),
        "{error}"
    );
    assert_names(&error, "f3");
}

#[test]
fn too_many_inodes_through_implied_directories() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new().file("a/b/c/d/e/f/g/h", b"").finish();
    let options = UnpackOptions {
        inodes_max: 5,
        ..UnpackOptions::privileged()
    };
    let error = reject(&sandbox, &layer, &options);
    assert!(
        matches!(error, UnpackError::InodesLimit { limit: 5, .. }),
        "{error}"
    );
    assert_names(&error, "a/b/c/d/e/f/g/h");
}

#[test]
fn device_nodes_when_not_permitted() {
    for (kind, name) in [
        (tar::EntryType::Char, "dev/mem"),
        (tar::EntryType::Block, "dev/sda"),
    ] {
        let sandbox = Sandbox::new();
        let layer = LayerBuilder::new().device(kind, name, 8, 0).finish();
        let error = reject(&sandbox, &layer, &UnpackOptions::unprivileged());
        assert!(
            matches!(error, UnpackError::DeviceNodeNotPermitted { .. }),
            "{error}"
        );
        assert_names(&error, name);
        assert!(!sandbox.root().join(name).exists());
    }
}

#[test]
fn corrupt_header_checksum() {
    let sandbox = Sandbox::new();
    let mut layer = LayerBuilder::new()
        .file("first", b"1")
        .file("second", b"2")
        .finish();
    // The second header starts after the first header and its data block.
    layer[1024 + 120] ^= 0x01;
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(
            error,
            UnpackError::MalformedArchive {
                offset_bytes: 1024,
                ..
            }
        ),
        "{error}"
    );
    assert_names(&error, "second");
}

#[test]
fn layer_root_as_a_symlink() {
    let sandbox = Sandbox::new();
    let layer = LayerBuilder::new()
        .raw(
            tar::EntryType::Symlink,
            b"./",
            sentinel_text(&sandbox, "").as_bytes(),
            b"",
        )
        .finish();
    let error = reject(&sandbox, &layer, &privileged());
    assert!(
        matches!(error, UnpackError::RootNotDirectory { .. }),
        "{error}"
    );
    assert_names(&error, "./");
}
