//! Schema v1 -> v2: add the `images_by_state` index.
//!
//! Startup reconciliation must find every image left `pulling` by a crash, and
//! gc every `gc_pending` one; with v1 that meant decoding every image record.
//! v2 keeps an index from state to image ids, written in the same transaction as
//! the image record. This step builds it from the existing records.

use redb::{ReadableTable, ReadableTableMetadata};

use crate::metadata::error::MetadataError;
use crate::metadata::read::decode_image;
use crate::metadata::tables::{IMAGES, IMAGES_BY_STATE};

pub(super) fn apply(txn: &redb::WriteTransaction) -> Result<(), MetadataError> {
    let images = txn
        .open_table(IMAGES)
        .map_err(MetadataError::storage("open images"))?;
    let mut by_state = txn
        .open_multimap_table(IMAGES_BY_STATE)
        .map_err(MetadataError::storage("create state index"))?;
    let expected = images
        .len()
        .map_err(MetadataError::storage("count images"))?;
    let mut indexed = 0;
    for entry in images
        .iter()
        .map_err(MetadataError::storage("scan images"))?
    {
        let (key, value) = entry.map_err(MetadataError::storage("scan images"))?;
        let image = decode_image(key.value(), value.value())?;
        by_state
            .insert(image.state.as_str(), key.value())
            .map_err(MetadataError::storage("write state index"))?;
        indexed += 1;
    }
    debug_assert_eq!(indexed, expected);
    Ok(())
}
