//! Consistent reads: a `ReadSnapshot` sees the store as of one committed
//! transaction and never blocks, nor is blocked by, a writer (redb MVCC).
//!
//! The `fetch_*` helpers are generic over redb's readable tables so that the
//! write side (`write.rs`) reads through exactly the same decoding paths.

use redb::{ReadableMultimapTable, ReadableTable, ReadableTableMetadata};

use crate::metadata::error::MetadataError;
use crate::metadata::model::{
    Blob, Image, ImageState, Ingest, Lease, LeaseResource, NamedImage, RecordCounts, Snapshot,
    UnsyncedSnapshot,
};
use crate::metadata::records::{
    self, BlobRecord, ImageRecord, IngestRecord, LeaseRecord, ReferenceRecord, SnapshotRecord,
    UnsyncedSnapshotRecord,
};
use crate::metadata::tables::{
    self, BLOBS, IMAGE_NAMES, IMAGES, IMAGES_BY_STATE, INGESTS, LEASE_RESOURCES, LEASES,
    REFERENCES, SNAPSHOTS, UNSYNCED_SNAPSHOTS,
};
use crate::reference::Digest;

type Storage = MetadataError;

/// A point-in-time view of the whole store.
pub struct ReadSnapshot {
    txn: redb::ReadTransaction,
}

impl ReadSnapshot {
    pub(crate) fn new(txn: redb::ReadTransaction) -> Self {
        ReadSnapshot { txn }
    }

    fn table(
        &self,
        definition: redb::TableDefinition<'static, &'static str, &'static [u8]>,
    ) -> Result<redb::ReadOnlyTable<&'static str, &'static [u8]>, MetadataError> {
        self.txn
            .open_table(definition)
            .map_err(Storage::storage("open table for reading"))
    }

    fn multimap(
        &self,
        definition: redb::MultimapTableDefinition<'static, &'static str, &'static str>,
    ) -> Result<redb::ReadOnlyMultimapTable<&'static str, &'static str>, MetadataError> {
        self.txn
            .open_multimap_table(definition)
            .map_err(Storage::storage("open table for reading"))
    }

    /// The schema version the file is written in (`None` for an uninitialized file).
    pub fn schema_version(&self) -> Result<Option<u64>, MetadataError> {
        fetch_schema_version(&self.table(tables::META)?)
    }

    pub fn boot_id(&self) -> Result<Option<String>, MetadataError> {
        let meta = self.table(tables::META)?;
        let value = meta
            .get(tables::meta_keys::BOOT_ID)
            .map_err(Storage::storage("read boot id"))?;
        Ok(value.map(|value| String::from_utf8_lossy(value.value()).into_owned()))
    }

    pub fn image(&self, id: &Digest) -> Result<Option<Image>, MetadataError> {
        fetch_image(&self.table(IMAGES)?, id.as_str())
    }

    /// The id of the image a full normalized name points at.
    pub fn image_id_by_name(&self, name: &str) -> Result<Option<Digest>, MetadataError> {
        fetch_reference(&self.table(REFERENCES)?, name)
    }

    /// The image a full normalized name points at.
    pub fn image_by_name(&self, name: &str) -> Result<Option<Image>, MetadataError> {
        match self.image_id_by_name(name)? {
            Some(id) => self.image(&id),
            None => Ok(None),
        }
    }

    /// Images whose id starts with `prefix` (for example `sha256:3f1a`), in id order.
    pub fn images_by_id_prefix(&self, prefix: &str) -> Result<Vec<Image>, MetadataError> {
        let images = self.table(IMAGES)?;
        let mut found = Vec::new();
        for entry in images
            .range::<&str>(prefix..)
            .map_err(Storage::storage("scan images"))?
        {
            let (key, value) = entry.map_err(Storage::storage("scan images"))?;
            if !key.value().starts_with(prefix) {
                break;
            }
            found.push(decode_image(key.value(), value.value())?);
        }
        Ok(found)
    }

    /// Every name pointing at the image, sorted.
    pub fn names_of(&self, id: &Digest) -> Result<Vec<String>, MetadataError> {
        fetch_names(&self.multimap(IMAGE_NAMES)?, id.as_str())
    }

    /// Every image with its names, in id order, whatever its state.
    ///
    /// One ordered pass over `images` merged with one over the reverse name index
    /// (both are keyed by image id), so listing costs no per-image lookups.
    pub fn list_images(&self) -> Result<Vec<NamedImage>, MetadataError> {
        let images = self.table(IMAGES)?;
        let names = self.multimap(IMAGE_NAMES)?;
        let mut listed: Vec<NamedImage> = Vec::with_capacity(
            usize::try_from(images.len().map_err(Storage::storage("count images"))?).unwrap_or(0),
        );
        for entry in images.iter().map_err(Storage::storage("scan images"))? {
            let (key, value) = entry.map_err(Storage::storage("scan images"))?;
            listed.push(NamedImage {
                image: decode_image(key.value(), value.value())?,
                names: Vec::new(),
            });
        }
        let mut position = 0;
        for entry in names.iter().map_err(Storage::storage("scan image names"))? {
            let (id, names_of_id) = entry.map_err(Storage::storage("scan image names"))?;
            let id = id.value();
            while position < listed.len() && listed[position].image.id().as_str() < id {
                position += 1;
            }
            // A name index entry without its image would be a broken invariant;
            // `consistency_check` reports it, listing just skips it.
            if position < listed.len() && listed[position].image.id().as_str() == id {
                for name in names_of_id {
                    let name = name.map_err(Storage::storage("scan image names"))?;
                    listed[position].names.push(name.value().to_owned());
                }
            }
        }
        Ok(listed)
    }

    /// Every image in `state`, found through the state index.
    pub fn list_images_in_state(&self, state: ImageState) -> Result<Vec<Image>, MetadataError> {
        let index = self.multimap(IMAGES_BY_STATE)?;
        let images = self.table(IMAGES)?;
        let mut found = Vec::new();
        for id in index
            .get(state.as_str())
            .map_err(Storage::storage("read state index"))?
        {
            let id = id.map_err(Storage::storage("read state index"))?;
            if let Some(image) = fetch_image(&images, id.value())? {
                found.push(image);
            }
        }
        Ok(found)
    }

    pub fn blob(&self, digest: &Digest) -> Result<Option<Blob>, MetadataError> {
        fetch_blob(&self.table(BLOBS)?, digest.as_str())
    }

    pub fn blobs(&self) -> Result<Vec<Blob>, MetadataError> {
        let blobs = self.table(BLOBS)?;
        let mut all = Vec::new();
        for entry in blobs.iter().map_err(Storage::storage("scan blobs"))? {
            let (key, value) = entry.map_err(Storage::storage("scan blobs"))?;
            all.push(decode_blob(key.value(), value.value())?);
        }
        Ok(all)
    }

    pub fn snapshot(&self, chain_id: &Digest) -> Result<Option<Snapshot>, MetadataError> {
        fetch_snapshot(&self.table(SNAPSHOTS)?, chain_id.as_str())
    }

    pub fn snapshots(&self) -> Result<Vec<Snapshot>, MetadataError> {
        let snapshots = self.table(SNAPSHOTS)?;
        let mut all = Vec::new();
        for entry in snapshots
            .iter()
            .map_err(Storage::storage("scan snapshots"))?
        {
            let (key, value) = entry.map_err(Storage::storage("scan snapshots"))?;
            all.push(decode_snapshot(key.value(), value.value())?);
        }
        Ok(all)
    }

    /// Every committed snapshot no `syncfs` has covered yet.
    pub fn unsynced_snapshots(&self) -> Result<Vec<UnsyncedSnapshot>, MetadataError> {
        let unsynced = self.table(UNSYNCED_SNAPSHOTS)?;
        let mut all = Vec::new();
        for entry in unsynced
            .iter()
            .map_err(Storage::storage("scan unsynced snapshots"))?
        {
            let (key, value) = entry.map_err(Storage::storage("scan unsynced snapshots"))?;
            all.push(
                records::decode::<UnsyncedSnapshotRecord>(value.value())
                    .and_then(|record| record.into_domain(key.value()))
                    .map_err(Storage::corrupt("unsynced_snapshots", key.value()))?,
            );
        }
        Ok(all)
    }

    pub fn lease(&self, id: &str) -> Result<Option<Lease>, MetadataError> {
        fetch_lease(&self.table(LEASES)?, id)
    }

    pub fn leases(&self) -> Result<Vec<Lease>, MetadataError> {
        let leases = self.table(LEASES)?;
        let mut all = Vec::new();
        for entry in leases.iter().map_err(Storage::storage("scan leases"))? {
            let (key, value) = entry.map_err(Storage::storage("scan leases"))?;
            let record = records::decode::<LeaseRecord>(value.value())
                .map_err(Storage::corrupt("leases", key.value()))?;
            all.push(record.into_domain(key.value()));
        }
        Ok(all)
    }

    pub fn lease_resources(&self, lease_id: &str) -> Result<Vec<LeaseResource>, MetadataError> {
        fetch_lease_resources(&self.multimap(LEASE_RESOURCES)?, lease_id)
    }

    pub fn ingest(&self, key: &str) -> Result<Option<Ingest>, MetadataError> {
        fetch_ingest(&self.table(INGESTS)?, key)
    }

    pub fn ingests(&self) -> Result<Vec<Ingest>, MetadataError> {
        let ingests = self.table(INGESTS)?;
        let mut all = Vec::new();
        for entry in ingests.iter().map_err(Storage::storage("scan ingests"))? {
            let (key, value) = entry.map_err(Storage::storage("scan ingests"))?;
            let record = records::decode::<IngestRecord>(value.value())
                .map_err(Storage::corrupt("ingests", key.value()))?;
            all.push(
                record
                    .into_domain(key.value())
                    .map_err(Storage::corrupt("ingests", key.value()))?,
            );
        }
        Ok(all)
    }

    /// Every full name with the image id it points at, in name order.
    pub fn references(&self) -> Result<Vec<(String, Digest)>, MetadataError> {
        let references = self.table(REFERENCES)?;
        let mut all = Vec::new();
        for entry in references
            .iter()
            .map_err(Storage::storage("scan references"))?
        {
            let (key, value) = entry.map_err(Storage::storage("scan references"))?;
            all.push((
                key.value().to_owned(),
                decode_reference(key.value(), value.value())?,
            ));
        }
        Ok(all)
    }

    /// `(image id, name)` pairs of the reverse name index, in id order.
    pub fn image_name_index(&self) -> Result<Vec<(String, String)>, MetadataError> {
        multimap_pairs(&self.multimap(IMAGE_NAMES)?, "scan image names")
    }

    /// `(state, image id)` pairs of the state index.
    pub fn image_state_index(&self) -> Result<Vec<(String, String)>, MetadataError> {
        multimap_pairs(&self.multimap(IMAGES_BY_STATE)?, "scan state index")
    }

    /// `(lease id, resource)` pairs, including those of leases that no longer exist.
    pub fn all_lease_resources(&self) -> Result<Vec<(String, LeaseResource)>, MetadataError> {
        multimap_pairs(&self.multimap(LEASE_RESOURCES)?, "scan lease resources")?
            .into_iter()
            .map(|(lease, key)| {
                let resource = records::lease_resource_from_key(&key)
                    .map_err(Storage::corrupt("lease_resources", &lease))?;
                Ok((lease, resource))
            })
            .collect()
    }

    pub fn counts(&self) -> Result<RecordCounts, MetadataError> {
        let count = |definition| -> Result<u64, MetadataError> {
            self.table(definition)?
                .len()
                .map_err(Storage::storage("count records"))
        };
        let count_multimap = |definition| -> Result<u64, MetadataError> {
            self.multimap(definition)?
                .len()
                .map_err(Storage::storage("count records"))
        };
        Ok(RecordCounts {
            images: count(IMAGES)?,
            references: count(REFERENCES)?,
            blobs: count(BLOBS)?,
            snapshots: count(SNAPSHOTS)?,
            leases: count(LEASES)?,
            lease_resources: count_multimap(LEASE_RESOURCES)?,
            ingests: count(INGESTS)?,
        })
    }
}

fn multimap_pairs(
    table: &impl ReadableMultimapTable<&'static str, &'static str>,
    operation: &'static str,
) -> Result<Vec<(String, String)>, MetadataError> {
    let mut pairs = Vec::new();
    for entry in table.iter().map_err(Storage::storage(operation))? {
        let (key, values) = entry.map_err(Storage::storage(operation))?;
        for value in values {
            let value = value.map_err(Storage::storage(operation))?;
            pairs.push((key.value().to_owned(), value.value().to_owned()));
        }
    }
    Ok(pairs)
}

pub(crate) fn fetch_schema_version(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<u64>, MetadataError> {
    let Some(value) = meta
        .get(tables::meta_keys::SCHEMA_VERSION)
        .map_err(Storage::storage("read schema version"))?
    else {
        return Ok(None);
    };
    let bytes: [u8; 8] = value.value().try_into().map_err(|_| {
        Storage::corrupt("meta", tables::meta_keys::SCHEMA_VERSION)(
            records::RecordError::InvalidField {
                field: "schema version",
                value: format!("{:?}", value.value()),
            },
        )
    })?;
    Ok(Some(u64::from_le_bytes(bytes)))
}

pub(crate) fn decode_image(key: &str, bytes: &[u8]) -> Result<Image, MetadataError> {
    let image = records::decode::<ImageRecord>(bytes)
        .and_then(ImageRecord::into_domain)
        .map_err(Storage::corrupt("images", key))?;
    if image.id().as_str() != key {
        return Err(Storage::corrupt("images", key)(
            records::RecordError::InvalidField {
                field: "image config digest (differs from its key)",
                value: image.id().to_string(),
            },
        ));
    }
    Ok(image)
}

pub(crate) fn fetch_image(
    images: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<Image>, MetadataError> {
    let value = images.get(id).map_err(Storage::storage("read image"))?;
    value
        .map(|value| decode_image(id, value.value()))
        .transpose()
}

pub(crate) fn decode_reference(name: &str, bytes: &[u8]) -> Result<Digest, MetadataError> {
    let record =
        records::decode::<ReferenceRecord>(bytes).map_err(Storage::corrupt("references", name))?;
    Digest::parse(&record.image_id).map_err(|_| {
        Storage::corrupt("references", name)(records::RecordError::InvalidField {
            field: "reference image id",
            value: record.image_id.clone(),
        })
    })
}

pub(crate) fn fetch_reference(
    references: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<Digest>, MetadataError> {
    let value = references
        .get(name)
        .map_err(Storage::storage("read reference"))?;
    value
        .map(|value| decode_reference(name, value.value()))
        .transpose()
}

pub(crate) fn fetch_names(
    names: &impl ReadableMultimapTable<&'static str, &'static str>,
    id: &str,
) -> Result<Vec<String>, MetadataError> {
    let mut all = Vec::new();
    for name in names
        .get(id)
        .map_err(Storage::storage("read image names"))?
    {
        let name = name.map_err(Storage::storage("read image names"))?;
        all.push(name.value().to_owned());
    }
    Ok(all)
}

pub(crate) fn decode_blob(key: &str, bytes: &[u8]) -> Result<Blob, MetadataError> {
    records::decode::<BlobRecord>(bytes)
        .and_then(|record| record.into_domain(key))
        .map_err(Storage::corrupt("blobs", key))
}

pub(crate) fn fetch_blob(
    blobs: &impl ReadableTable<&'static str, &'static [u8]>,
    digest: &str,
) -> Result<Option<Blob>, MetadataError> {
    let value = blobs.get(digest).map_err(Storage::storage("read blob"))?;
    value
        .map(|value| decode_blob(digest, value.value()))
        .transpose()
}

pub(crate) fn decode_snapshot(key: &str, bytes: &[u8]) -> Result<Snapshot, MetadataError> {
    records::decode::<SnapshotRecord>(bytes)
        .and_then(|record| record.into_domain(key))
        .map_err(Storage::corrupt("snapshots", key))
}

pub(crate) fn fetch_snapshot(
    snapshots: &impl ReadableTable<&'static str, &'static [u8]>,
    chain_id: &str,
) -> Result<Option<Snapshot>, MetadataError> {
    let value = snapshots
        .get(chain_id)
        .map_err(Storage::storage("read snapshot"))?;
    value
        .map(|value| decode_snapshot(chain_id, value.value()))
        .transpose()
}

pub(crate) fn fetch_lease(
    leases: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<Lease>, MetadataError> {
    let value = leases.get(id).map_err(Storage::storage("read lease"))?;
    value
        .map(|value| {
            records::decode::<LeaseRecord>(value.value())
                .map(|record| record.into_domain(id))
                .map_err(Storage::corrupt("leases", id))
        })
        .transpose()
}

pub(crate) fn fetch_lease_resources(
    resources: &impl ReadableMultimapTable<&'static str, &'static str>,
    lease_id: &str,
) -> Result<Vec<LeaseResource>, MetadataError> {
    let mut all = Vec::new();
    for key in resources
        .get(lease_id)
        .map_err(Storage::storage("read lease resources"))?
    {
        let key = key.map_err(Storage::storage("read lease resources"))?;
        all.push(
            records::lease_resource_from_key(key.value())
                .map_err(Storage::corrupt("lease_resources", lease_id))?,
        );
    }
    Ok(all)
}

pub(crate) fn fetch_ingest(
    ingests: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Ingest>, MetadataError> {
    let value = ingests.get(key).map_err(Storage::storage("read ingest"))?;
    value
        .map(|value| {
            records::decode::<IngestRecord>(value.value())
                .and_then(|record| record.into_domain(key))
                .map_err(Storage::corrupt("ingests", key))
        })
        .transpose()
}
