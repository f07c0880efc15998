//! Schema v2 -> v3: add the `unsynced_snapshots` table.
//!
//! v3 no longer syncs a snapshot's files before the pull that unpacked it
//! commits: a background sync does, and until then the snapshot is listed
//! here with the kernel boot that wrote it, so that a boot after a power loss
//! knows which snapshots may have lost pages. Everything a v2 build committed
//! was synced before its commit, so the table starts empty.

use crate::metadata::error::MetadataError;
use crate::metadata::tables::UNSYNCED_SNAPSHOTS;

pub(super) fn apply(txn: &redb::WriteTransaction) -> Result<(), MetadataError> {
    txn.open_table(UNSYNCED_SNAPSHOTS)
        .map_err(MetadataError::storage("create unsynced snapshots"))?;
    Ok(())
}
