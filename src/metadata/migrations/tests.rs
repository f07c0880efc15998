//! Migration mechanics with synthetic schemas: refusing newer files untouched,
//! gaps in the step list, and (with the `failpoints` feature) crashes between
//! and inside steps.

use super::*;
use crate::metadata::MetadataStore;
use redb::ReadableDatabase;

/// A synthetic v3 -> v4 step that records that it ran, so tests can tell a
/// completed step from an aborted one.
fn mark_v4(txn: &redb::WriteTransaction) -> Result<(), MetadataError> {
    txn.open_table(tables::META)
        .map_err(MetadataError::storage("open meta"))?
        .insert("synthetic_v4", b"done".as_slice())
        .map_err(MetadataError::storage("write meta"))?;
    Ok(())
}

/// The real steps to v3, then the synthetic one.
const STEPS_TO_V4: &[MigrationStep] = &[
    STEPS[0],
    STEPS[1],
    MigrationStep {
        from_version: 3,
        description: "synthetic test step",
        apply: mark_v4,
    },
];

/// Fail points are process-global: every test here that runs migration steps
/// takes a turn, so a fail point set by one never fires in another.
static MIGRATIONS_RUNNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    MIGRATIONS_RUNNING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn copy_golden_v1(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("metadata.redb");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/golden/v1.redb"),
        &path,
    )
    .unwrap();
    path
}

fn synthetic_mark(store: &MetadataStore) -> bool {
    let txn = store.db.begin_read().unwrap();
    let meta = txn.open_table(tables::META).unwrap();
    redb::ReadableTable::get(&meta, "synthetic_v4")
        .unwrap()
        .is_some()
}

#[test]
fn a_file_from_a_newer_schema_is_refused_without_a_byte_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.redb");
    let (store, _) = MetadataStore::open_with_steps(&path, &[], SCHEMA_VERSION + 7).unwrap();
    drop(store);
    let before = std::fs::read(&path).unwrap();
    let error = MetadataStore::open(&path)
        .err()
        .expect("newer schema accepted");
    assert!(
        matches!(error, OpenError::NewerSchema { found, supported, .. }
            if found == SCHEMA_VERSION + 7 && supported == SCHEMA_VERSION),
        "{error}"
    );
    assert!(error.to_string().contains("the file was not modified"));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_missing_step_is_an_error_naming_the_versions() {
    let _turn = take_turn();
    let dir = tempfile::tempdir().unwrap();
    let path = copy_golden_v1(dir.path());
    let error = MetadataStore::open_with_steps(&path, &STEPS_TO_V4[1..], 4)
        .err()
        .expect("a gap in the steps was accepted");
    assert!(error.to_string().contains("from schema 1 to 2"), "{error}");
    // Nothing was migrated: the real open still finds v1.
    let (_, report) = MetadataStore::open(&path).unwrap();
    assert_eq!(report.found_schema_version, 1);
}

#[test]
fn all_steps_run_in_order_to_the_target() {
    let _turn = take_turn();
    let dir = tempfile::tempdir().unwrap();
    let path = copy_golden_v1(dir.path());
    let (store, report) = MetadataStore::open_with_steps(&path, STEPS_TO_V4, 4).unwrap();
    assert_eq!(report.migration_steps_applied, 3);
    assert_eq!(store.read().unwrap().schema_version().unwrap(), Some(4));
    assert!(synthetic_mark(&store));
}

#[cfg(feature = "failpoints")]
mod crashes {
    use super::*;

    #[test]
    fn a_crash_between_two_steps_leaves_a_file_that_finishes_migrating() {
        let _turn = take_turn();
        let dir = tempfile::tempdir().unwrap();
        let path = copy_golden_v1(dir.path());
        fail::cfg("metadata::migration::after_step", "1*return->off").unwrap();
        let error = MetadataStore::open_with_steps(&path, STEPS_TO_V4, 4).err();
        fail::remove("metadata::migration::after_step");
        let error = error.expect("the fail point did not fire");
        assert!(error.to_string().contains("fail point"), "{error}");

        // The first step committed on its own: the file is a whole v2.
        let (store, report) = MetadataStore::open_with_steps(&path, STEPS_TO_V4, 4).unwrap();
        assert_eq!(report.found_schema_version, 2);
        assert_eq!(report.migration_steps_applied, 2);
        assert!(synthetic_mark(&store));
        let problems = crate::metadata::check_consistency(&store.read().unwrap()).unwrap();
        assert_eq!(problems, vec![]);
    }

    #[test]
    fn a_crash_inside_a_step_leaves_the_previous_version_whole() {
        let _turn = take_turn();
        let dir = tempfile::tempdir().unwrap();
        let path = copy_golden_v1(dir.path());
        // Let the first two steps commit, fail the third before its commit.
        fail::cfg("metadata::migration::before_commit", "2*off->1*return->off").unwrap();
        let error = MetadataStore::open_with_steps(&path, STEPS_TO_V4, 4).err();
        fail::remove("metadata::migration::before_commit");
        assert!(error.is_some(), "the fail point did not fire");

        let (store, report) = MetadataStore::open_with_steps(&path, STEPS_TO_V4, 4).unwrap();
        assert_eq!(
            report.found_schema_version, 3,
            "the aborted step wrote nothing"
        );
        assert_eq!(report.migration_steps_applied, 1);
        assert!(synthetic_mark(&store));
    }
}
