//! Schema versions and the ordered steps between them.
//!
//! The schema version lives in the `meta` table. Each step upgrades exactly one
//! version, runs in one write transaction, and bumps the version in that same
//! transaction, so a crash during a migration leaves the file at some whole
//! version and the next open simply carries on from there. The history of
//! versions is in `migrations/README.md` at the top of the repository, next to a
//! database file written by each released schema (`migrations/golden/`).

mod v1_to_v2;
mod v2_to_v3;

#[doc(hidden)]
pub mod golden;

use std::path::Path;

use crate::metadata::error::{MetadataError, OpenError};
use crate::metadata::tables::{self, meta_keys};

/// The schema this build writes. Bump it only together with a new step in `STEPS`.
pub const SCHEMA_VERSION: u64 = 3;

/// One upgrade, from `from_version` to `from_version + 1`.
#[derive(Clone, Copy)]
pub(crate) struct MigrationStep {
    pub from_version: u64,
    pub description: &'static str,
    pub apply: fn(&redb::WriteTransaction) -> Result<(), MetadataError>,
}

/// Every step, oldest first.
pub(crate) const STEPS: &[MigrationStep] = &[
    MigrationStep {
        from_version: 1,
        description: "index images by state",
        apply: v1_to_v2::apply,
    },
    MigrationStep {
        from_version: 2,
        description: "track snapshots not yet synced",
        apply: v2_to_v3::apply,
    },
];

/// Creates every table of the current schema in an empty file, in one transaction.
pub(crate) fn initialize(db: &redb::Database, version: u64) -> Result<(), MetadataError> {
    let txn = db
        .begin_write()
        .map_err(MetadataError::storage("begin write"))?;
    create_current_tables(&txn)?;
    write_schema_version(&txn, version)?;
    txn.commit().map_err(MetadataError::storage("commit"))
}

/// Applies the steps from `found` up to `target`; returns how many ran.
pub(crate) fn migrate(
    db: &redb::Database,
    path: &Path,
    found: u64,
    steps: &[MigrationStep],
    target: u64,
) -> Result<u64, OpenError> {
    let mut version = found;
    let mut applied = 0;
    while version < target {
        let failed = |source: MetadataError| OpenError::Migration {
            path: path.to_path_buf(),
            from: version,
            to: version + 1,
            source: Box::new(source),
        };
        let step = steps
            .iter()
            .find(|step| step.from_version == version)
            .ok_or_else(|| {
                failed(MetadataError::NoMigrationPath {
                    found: version,
                    target,
                })
            })?;
        apply_step(db, step).map_err(failed)?;
        tracing::info!(
            from = version,
            to = version + 1,
            step = step.description,
            "migrated metadata schema"
        );
        version += 1;
        applied += 1;
        let after_step = || -> Result<(), MetadataError> {
            crate::fail_point!(
                "metadata::migration::after_step",
                MetadataError::FailPoint {
                    name: "metadata::migration::after_step"
                }
            );
            Ok(())
        };
        after_step().map_err(|source| OpenError::Migration {
            path: path.to_path_buf(),
            from: version,
            to: version + 1,
            source: Box::new(source),
        })?;
    }
    Ok(applied)
}

fn apply_step(db: &redb::Database, step: &MigrationStep) -> Result<(), MetadataError> {
    let txn = db
        .begin_write()
        .map_err(MetadataError::storage("begin write"))?;
    (step.apply)(&txn)?;
    write_schema_version(&txn, step.from_version + 1)?;
    crate::fail_point!(
        "metadata::migration::before_commit",
        MetadataError::FailPoint {
            name: "metadata::migration::before_commit"
        }
    );
    txn.commit().map_err(MetadataError::storage("commit"))
}

fn create_current_tables(txn: &redb::WriteTransaction) -> Result<(), MetadataError> {
    let open = MetadataError::storage::<redb::TableError>;
    for definition in [
        tables::META,
        tables::IMAGES,
        tables::REFERENCES,
        tables::BLOBS,
        tables::SNAPSHOTS,
        tables::UNSYNCED_SNAPSHOTS,
        tables::LEASES,
        tables::INGESTS,
    ] {
        txn.open_table(definition).map_err(open("create table"))?;
    }
    for definition in [
        tables::IMAGE_NAMES,
        tables::IMAGES_BY_STATE,
        tables::LEASE_RESOURCES,
    ] {
        txn.open_multimap_table(definition)
            .map_err(open("create table"))?;
    }
    Ok(())
}

fn write_schema_version(txn: &redb::WriteTransaction, version: u64) -> Result<(), MetadataError> {
    txn.open_table(tables::META)
        .map_err(MetadataError::storage("open meta table"))?
        .insert(meta_keys::SCHEMA_VERSION, version.to_le_bytes().as_slice())
        .map_err(MetadataError::storage("write schema version"))?;
    Ok(())
}

#[cfg(test)]
mod tests;
