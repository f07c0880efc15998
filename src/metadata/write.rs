//! Typed write transactions. Everything done through one `WriteTxn` commits
//! together or not at all: `MetadataStore::write` commits when its closure
//! returns `Ok` and aborts on `Err`, so a multi-record change (an image with its
//! names, a blob with its lease attachment) is never half-written.
//!
//! Derived tables (the reverse name index, the state index) are only ever
//! written here, next to the table they index.

use std::collections::BTreeSet;

use redb::ReadableTable;

use crate::metadata::error::MetadataError;
use crate::metadata::model::{
    Blob, Image, ImageState, Ingest, Lease, LeaseResource, Snapshot, UnsyncedSnapshot,
};
use crate::metadata::read;
use crate::metadata::records::{
    self, BlobRecord, ImageRecord, IngestRecord, LeaseRecord, ReferenceRecord, SnapshotRecord,
    UnsyncedSnapshotRecord,
};
use crate::metadata::tables::{
    BLOBS, IMAGE_NAMES, IMAGES, IMAGES_BY_STATE, INGESTS, LEASE_RESOURCES, LEASES, META,
    REFERENCES, SNAPSHOTS, UNSYNCED_SNAPSHOTS,
};
use crate::reference::{Digest, ImageReference};

type Storage = MetadataError;

/// One open write transaction. Writers serialize: while one is open, another
/// `MetadataStore::write` waits; readers are never blocked.
pub struct WriteTxn {
    txn: redb::WriteTransaction,
    now_unix_ms: u64,
    /// The images whose record or names this transaction changed, so the
    /// store can patch its cached image listing after the commit.
    pub(super) changed_images: BTreeSet<Digest>,
    /// Set by changes that touch the listing as a whole (index rebuilds): the
    /// cached listing is dropped instead.
    pub(super) changed_all_images: bool,
}

impl WriteTxn {
    pub(crate) fn new(txn: redb::WriteTransaction, now_unix_ms: u64) -> Self {
        WriteTxn {
            txn,
            now_unix_ms,
            changed_images: BTreeSet::new(),
            changed_all_images: false,
        }
    }

    pub(crate) fn into_inner(self) -> redb::WriteTransaction {
        self.txn
    }

    /// The wall-clock time this transaction stamps on what it writes.
    pub fn now_unix_ms(&self) -> u64 {
        self.now_unix_ms
    }

    pub(super) fn table(
        &self,
        definition: redb::TableDefinition<'static, &'static str, &'static [u8]>,
    ) -> Result<redb::Table<'_, &'static str, &'static [u8]>, MetadataError> {
        self.txn
            .open_table(definition)
            .map_err(Storage::storage("open table for writing"))
    }

    pub(super) fn multimap(
        &self,
        definition: redb::MultimapTableDefinition<'static, &'static str, &'static str>,
    ) -> Result<redb::MultimapTable<'_, &'static str, &'static str>, MetadataError> {
        self.txn
            .open_multimap_table(definition)
            .map_err(Storage::storage("open table for writing"))
    }

    pub(crate) fn write_meta(&mut self, key: &str, value: &[u8]) -> Result<(), MetadataError> {
        self.table(META)?
            .insert(key, value)
            .map_err(Storage::storage("write meta"))?;
        Ok(())
    }

    pub fn image(&self, id: &Digest) -> Result<Option<Image>, MetadataError> {
        read::fetch_image(&self.table(IMAGES)?, id.as_str())
    }

    pub fn image_id_by_name(&self, name: &str) -> Result<Option<Digest>, MetadataError> {
        read::fetch_reference(&self.table(REFERENCES)?, name)
    }

    pub fn names_of(&self, id: &Digest) -> Result<Vec<String>, MetadataError> {
        read::fetch_names(&self.multimap(IMAGE_NAMES)?, id.as_str())
    }

    /// Creates or replaces the image record, keeping the state index in step.
    pub fn put_image(&mut self, image: &Image) -> Result<(), MetadataError> {
        self.changed_images.insert(image.id().clone());
        let id = image.id().as_str();
        let previous_state = {
            let mut images = self.table(IMAGES)?;
            let previous = images
                .insert(
                    id,
                    records::encode(&ImageRecord::from_domain(image)).as_slice(),
                )
                .map_err(Storage::storage("write image"))?;
            match previous {
                Some(bytes) => Some(read::decode_image(id, bytes.value())?.state),
                None => None,
            }
        };
        let mut by_state = self.multimap(IMAGES_BY_STATE)?;
        if let Some(previous_state) = previous_state
            && previous_state != image.state
        {
            by_state
                .remove(previous_state.as_str(), id)
                .map_err(Storage::storage("update state index"))?;
        }
        by_state
            .insert(image.state.as_str(), id)
            .map_err(Storage::storage("update state index"))?;
        Ok(())
    }

    /// Moves an existing image to `state` and returns the updated image.
    pub fn set_image_state(
        &mut self,
        id: &Digest,
        state: ImageState,
    ) -> Result<Image, MetadataError> {
        let mut image = self
            .image(id)?
            .ok_or_else(|| MetadataError::ImageNotFound { id: id.clone() })?;
        image.state = state;
        image.updated_unix_ms = self.now_unix_ms;
        self.put_image(&image)?;
        Ok(image)
    }

    /// Points `reference` at image `id`, creating the name or moving it from the
    /// image it pointed at before (which stays reachable by id). Both indexes change
    /// in this transaction, so no reader ever sees the name pointing nowhere or at
    /// two images. Returns the image the name pointed at before, if any.
    pub fn set_reference(
        &mut self,
        reference: &ImageReference,
        id: &Digest,
    ) -> Result<Option<Digest>, MetadataError> {
        let name = reference.to_string();
        if reference.normalized() != *reference
            || (reference.tag().is_some() == reference.digest().is_some())
        {
            return Err(MetadataError::NotNormalized { name });
        }
        if self.image(id)?.is_none() {
            return Err(MetadataError::ImageNotFound { id: id.clone() });
        }
        self.changed_images.insert(id.clone());
        let record = ReferenceRecord {
            image_id: id.to_string(),
            updated_unix_ms: self.now_unix_ms,
        };
        let previous = {
            let mut references = self.table(REFERENCES)?;
            let previous = references
                .insert(name.as_str(), records::encode(&record).as_slice())
                .map_err(Storage::storage("write reference"))?;
            match previous {
                Some(bytes) => Some(read::decode_reference(&name, bytes.value())?),
                None => None,
            }
        };
        if let Some(previous) = &previous {
            self.changed_images.insert(previous.clone());
        }
        let mut names = self.multimap(IMAGE_NAMES)?;
        if let Some(previous) = &previous
            && previous != id
        {
            names
                .remove(previous.as_str(), name.as_str())
                .map_err(Storage::storage("update name index"))?;
        }
        names
            .insert(id.as_str(), name.as_str())
            .map_err(Storage::storage("update name index"))?;
        Ok(previous)
    }

    /// Removes one name; the image it pointed at stays. Returns that image's id.
    pub fn remove_reference(&mut self, name: &str) -> Result<Option<Digest>, MetadataError> {
        let removed = {
            let mut references = self.table(REFERENCES)?;
            let removed = references
                .remove(name)
                .map_err(Storage::storage("remove reference"))?;
            match removed {
                Some(bytes) => Some(read::decode_reference(name, bytes.value())?),
                None => None,
            }
        };
        if let Some(id) = &removed {
            self.changed_images.insert(id.clone());
            self.multimap(IMAGE_NAMES)?
                .remove(id.as_str(), name)
                .map_err(Storage::storage("update name index"))?;
        }
        Ok(removed)
    }

    /// Removes the image and every name pointing at it. Returns the names removed,
    /// or `None` when there was no such image (removal is idempotent). Its blobs and
    /// snapshots are left for gc.
    pub fn remove_image(&mut self, id: &Digest) -> Result<Option<Vec<String>>, MetadataError> {
        self.changed_images.insert(id.clone());
        let removed = {
            let mut images = self.table(IMAGES)?;
            let removed = images
                .remove(id.as_str())
                .map_err(Storage::storage("remove image"))?;
            match removed {
                Some(bytes) => Some(read::decode_image(id.as_str(), bytes.value())?),
                None => None,
            }
        };
        let Some(image) = removed else {
            return Ok(None);
        };
        self.multimap(IMAGES_BY_STATE)?
            .remove(image.state.as_str(), id.as_str())
            .map_err(Storage::storage("update state index"))?;
        let names: Vec<String> = {
            let mut index = self.multimap(IMAGE_NAMES)?;
            let values = index
                .remove_all(id.as_str())
                .map_err(Storage::storage("update name index"))?;
            let mut names = Vec::new();
            for name in values {
                names.push(
                    name.map_err(Storage::storage("update name index"))?
                        .value()
                        .to_owned(),
                );
            }
            names
        };
        let mut references = self.table(REFERENCES)?;
        for name in &names {
            references
                .remove(name.as_str())
                .map_err(Storage::storage("remove reference"))?;
        }
        Ok(Some(names))
    }

    pub fn blob(&self, digest: &Digest) -> Result<Option<Blob>, MetadataError> {
        read::fetch_blob(&self.table(BLOBS)?, digest.as_str())
    }

    pub fn put_blob(&mut self, blob: &Blob) -> Result<(), MetadataError> {
        self.table(BLOBS)?
            .insert(
                blob.digest.as_str(),
                records::encode(&BlobRecord::from_domain(blob)).as_slice(),
            )
            .map_err(Storage::storage("write blob"))?;
        Ok(())
    }

    pub fn remove_blob(&mut self, digest: &Digest) -> Result<bool, MetadataError> {
        Ok(self
            .table(BLOBS)?
            .remove(digest.as_str())
            .map_err(Storage::storage("remove blob"))?
            .is_some())
    }

    pub fn snapshot(&self, chain_id: &Digest) -> Result<Option<Snapshot>, MetadataError> {
        read::fetch_snapshot(&self.table(SNAPSHOTS)?, chain_id.as_str())
    }

    pub fn put_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), MetadataError> {
        self.table(SNAPSHOTS)?
            .insert(
                snapshot.chain_id.as_str(),
                records::encode(&SnapshotRecord::from_domain(snapshot)).as_slice(),
            )
            .map_err(Storage::storage("write snapshot"))?;
        Ok(())
    }

    /// Removes a snapshot record, and its unsynced mark with it.
    pub fn remove_snapshot(&mut self, chain_id: &Digest) -> Result<bool, MetadataError> {
        self.remove_unsynced_mark(chain_id)?;
        Ok(self
            .table(SNAPSHOTS)?
            .remove(chain_id.as_str())
            .map_err(Storage::storage("remove snapshot"))?
            .is_some())
    }

    /// Marks a committed snapshot as written since the last sync.
    pub fn put_unsynced_snapshot(
        &mut self,
        unsynced: &UnsyncedSnapshot,
    ) -> Result<(), MetadataError> {
        self.table(UNSYNCED_SNAPSHOTS)?
            .insert(
                unsynced.chain_id.as_str(),
                records::encode(&UnsyncedSnapshotRecord::from_domain(unsynced)).as_slice(),
            )
            .map_err(Storage::storage("write unsynced snapshot"))?;
        Ok(())
    }

    /// Removes the unsynced mark of `chain_id`, whatever it holds (repair).
    pub fn remove_unsynced_mark(&mut self, chain_id: &Digest) -> Result<bool, MetadataError> {
        Ok(self
            .table(UNSYNCED_SNAPSHOTS)?
            .remove(chain_id.as_str())
            .map_err(Storage::storage("remove unsynced snapshot"))?
            .is_some())
    }

    /// Removes the unsynced mark `unsynced` if it is still the one recorded
    /// (a sync that started before the snapshot was committed again does not
    /// cover the new files); returns whether it did.
    pub fn remove_unsynced_snapshot_if_unchanged(
        &mut self,
        unsynced: &UnsyncedSnapshot,
    ) -> Result<bool, MetadataError> {
        // The encoding is deterministic: equal bytes, equal mark.
        let expected = records::encode(&UnsyncedSnapshotRecord::from_domain(unsynced));
        let mut table = self.table(UNSYNCED_SNAPSHOTS)?;
        let unchanged = table
            .get(unsynced.chain_id.as_str())
            .map_err(Storage::storage("read unsynced snapshot"))?
            .is_some_and(|value| value.value() == expected.as_slice());
        if !unchanged {
            return Ok(false);
        }
        table
            .remove(unsynced.chain_id.as_str())
            .map_err(Storage::storage("remove unsynced snapshot"))?;
        Ok(true)
    }

    pub fn lease(&self, id: &str) -> Result<Option<Lease>, MetadataError> {
        read::fetch_lease(&self.table(LEASES)?, id)
    }

    /// Every lease, in id order.
    pub fn leases(&self) -> Result<Vec<Lease>, MetadataError> {
        let table = self.table(LEASES)?;
        let mut leases = Vec::new();
        for entry in table.iter().map_err(Storage::storage("scan leases"))? {
            let (key, value) = entry.map_err(Storage::storage("scan leases"))?;
            let record = records::decode::<LeaseRecord>(value.value())
                .map_err(Storage::corrupt("leases", key.value()))?;
            leases.push(record.into_domain(key.value()));
        }
        Ok(leases)
    }

    pub fn put_lease(&mut self, lease: &Lease) -> Result<(), MetadataError> {
        self.table(LEASES)?
            .insert(
                lease.id.as_str(),
                records::encode(&LeaseRecord::from_domain(lease)).as_slice(),
            )
            .map_err(Storage::storage("write lease"))?;
        Ok(())
    }

    /// Ends a lease: removes it and its resource list (not the resources). Returns
    /// what it protected, or `None` when there was no such lease.
    pub fn remove_lease(&mut self, id: &str) -> Result<Option<Vec<LeaseResource>>, MetadataError> {
        let existed = self
            .table(LEASES)?
            .remove(id)
            .map_err(Storage::storage("remove lease"))?
            .is_some();
        let mut resources = Vec::new();
        {
            let mut table = self.multimap(LEASE_RESOURCES)?;
            for key in table
                .remove_all(id)
                .map_err(Storage::storage("remove lease resources"))?
            {
                let key = key.map_err(Storage::storage("remove lease resources"))?;
                resources.push(
                    records::lease_resource_from_key(key.value())
                        .map_err(Storage::corrupt("lease_resources", id))?,
                );
            }
        }
        Ok(existed.then_some(resources))
    }

    /// Puts `resource` under the protection of lease `lease_id`, which must exist.
    pub fn attach_to_lease(
        &mut self,
        lease_id: &str,
        resource: &LeaseResource,
    ) -> Result<(), MetadataError> {
        if self.lease(lease_id)?.is_none() {
            return Err(MetadataError::LeaseNotFound {
                id: lease_id.to_owned(),
            });
        }
        self.multimap(LEASE_RESOURCES)?
            .insert(lease_id, records::lease_resource_key(resource).as_str())
            .map_err(Storage::storage("attach lease resource"))?;
        Ok(())
    }

    pub fn detach_from_lease(
        &mut self,
        lease_id: &str,
        resource: &LeaseResource,
    ) -> Result<bool, MetadataError> {
        self.multimap(LEASE_RESOURCES)?
            .remove(lease_id, records::lease_resource_key(resource).as_str())
            .map_err(Storage::storage("detach lease resource"))
    }

    pub fn lease_resources(&self, lease_id: &str) -> Result<Vec<LeaseResource>, MetadataError> {
        read::fetch_lease_resources(&self.multimap(LEASE_RESOURCES)?, lease_id)
    }

    pub fn ingest(&self, key: &str) -> Result<Option<Ingest>, MetadataError> {
        read::fetch_ingest(&self.table(INGESTS)?, key)
    }

    pub fn put_ingest(&mut self, ingest: &Ingest) -> Result<(), MetadataError> {
        self.table(INGESTS)?
            .insert(
                ingest.key.as_str(),
                records::encode(&IngestRecord::from_domain(ingest)).as_slice(),
            )
            .map_err(Storage::storage("write ingest"))?;
        Ok(())
    }

    pub fn remove_ingest(&mut self, key: &str) -> Result<bool, MetadataError> {
        Ok(self
            .table(INGESTS)?
            .remove(key)
            .map_err(Storage::storage("remove ingest"))?
            .is_some())
    }
}
