//! Whole-store reads and checked lease changes inside a write transaction, for
//! garbage collection and lease upkeep.
//!
//! Gc decides what is unreachable from inside its own write transaction: the
//! view it marks from is then exactly the state its deletions apply to, since
//! no other commit can land in between (writers serialize). Readers still
//! never wait.

use std::collections::BTreeSet;

use redb::{ReadableMultimapTable, ReadableTable};

use crate::metadata::error::MetadataError;
use crate::metadata::model::{Blob, Image, Ingest, Lease, LeaseResource, Snapshot};
use crate::metadata::read;
use crate::metadata::records::{self, IngestRecord};
use crate::metadata::tables::{BLOBS, IMAGES, INGESTS, LEASE_RESOURCES, SNAPSHOTS};
use crate::metadata::write::WriteTxn;

type Storage = MetadataError;

/// Record keys that name files (see [`WriteTxn::file_naming_keys`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileNamingKeys {
    /// `sha256:<hex>` of every blob record.
    pub blob_digests: BTreeSet<String>,
    /// Every ingest record's key (`sha256-<hex>`).
    pub ingest_keys: BTreeSet<String>,
    /// `sha256:<hex>` of every snapshot record, whatever its state.
    pub snapshot_chain_ids: BTreeSet<String>,
}

impl WriteTxn {
    /// Every image, in id order, whatever its state.
    pub fn images(&self) -> Result<Vec<Image>, MetadataError> {
        let table = self.table(IMAGES)?;
        let mut all = Vec::new();
        for entry in table.iter().map_err(Storage::storage("scan images"))? {
            let (key, value) = entry.map_err(Storage::storage("scan images"))?;
            all.push(read::decode_image(key.value(), value.value())?);
        }
        Ok(all)
    }

    /// Every blob record, in digest order.
    pub fn blobs(&self) -> Result<Vec<Blob>, MetadataError> {
        let table = self.table(BLOBS)?;
        let mut all = Vec::new();
        for entry in table.iter().map_err(Storage::storage("scan blobs"))? {
            let (key, value) = entry.map_err(Storage::storage("scan blobs"))?;
            all.push(read::decode_blob(key.value(), value.value())?);
        }
        Ok(all)
    }

    /// Every snapshot record, in chain id order.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>, MetadataError> {
        let table = self.table(SNAPSHOTS)?;
        let mut all = Vec::new();
        for entry in table.iter().map_err(Storage::storage("scan snapshots"))? {
            let (key, value) = entry.map_err(Storage::storage("scan snapshots"))?;
            all.push(read::decode_snapshot(key.value(), value.value())?);
        }
        Ok(all)
    }

    /// Every ingest record, in key order.
    pub fn ingests(&self) -> Result<Vec<Ingest>, MetadataError> {
        let table = self.table(INGESTS)?;
        let mut all = Vec::new();
        for entry in table.iter().map_err(Storage::storage("scan ingests"))? {
            let (key, value) = entry.map_err(Storage::storage("scan ingests"))?;
            let key = key.value();
            all.push(
                records::decode::<IngestRecord>(value.value())
                    .and_then(|record| record.into_domain(key))
                    .map_err(Storage::corrupt("ingests", key))?,
            );
        }
        Ok(all)
    }

    /// `(lease id, resource)` pairs, including those of leases that no longer exist.
    pub fn all_lease_resources(&self) -> Result<Vec<(String, LeaseResource)>, MetadataError> {
        let table = self.multimap(LEASE_RESOURCES)?;
        let mut pairs = Vec::new();
        for entry in table
            .iter()
            .map_err(Storage::storage("scan lease resources"))?
        {
            let (lease, keys) = entry.map_err(Storage::storage("scan lease resources"))?;
            for key in keys {
                let key = key.map_err(Storage::storage("scan lease resources"))?;
                let resource = records::lease_resource_from_key(key.value())
                    .map_err(Storage::corrupt("lease_resources", lease.value()))?;
                pairs.push((lease.value().to_owned(), resource));
            }
        }
        Ok(pairs)
    }

    /// The keys of the blob, ingest and snapshot tables: every name a file
    /// under the content and snapshot directories can be known by. Keys only,
    /// no record decoded, so gc's file phase holds writers briefly.
    pub fn file_naming_keys(&self) -> Result<FileNamingKeys, MetadataError> {
        Ok(FileNamingKeys {
            blob_digests: self.keys(BLOBS, "scan blobs")?,
            ingest_keys: self.keys(INGESTS, "scan ingests")?,
            snapshot_chain_ids: self.keys(SNAPSHOTS, "scan snapshots")?,
        })
    }

    fn keys(
        &self,
        definition: redb::TableDefinition<'static, &'static str, &'static [u8]>,
        operation: &'static str,
    ) -> Result<BTreeSet<String>, MetadataError> {
        let table = self.table(definition)?;
        let mut keys = BTreeSet::new();
        for entry in table.iter().map_err(Storage::storage(operation))? {
            let (key, _) = entry.map_err(Storage::storage(operation))?;
            keys.insert(key.value().to_owned());
        }
        Ok(keys)
    }

    /// Attaches `resource` to lease `lease_id` only if the resource's record
    /// still exists; returns whether it did. For callers that saw the resource
    /// in an earlier read: gc may have deleted it since, and a lease naming a
    /// deleted resource would protect nothing while the caller relies on it.
    pub fn attach_existing_to_lease(
        &mut self,
        lease_id: &str,
        resource: &LeaseResource,
    ) -> Result<bool, MetadataError> {
        let exists = match resource {
            LeaseResource::Image(id) => self.image(id)?.is_some(),
            LeaseResource::Blob(digest) => self.blob(digest)?.is_some(),
            LeaseResource::Snapshot(chain_id) => self.snapshot(chain_id)?.is_some(),
            LeaseResource::Ingest(key) => self.ingest(key)?.is_some(),
        };
        if exists {
            self.attach_to_lease(lease_id, resource)?;
        }
        Ok(exists)
    }

    /// Moves lease `id`'s expiry to `expires_unix_ms`; returns the lease as
    /// updated, or `None` when the lease no longer exists (it was released or
    /// collected), which a renewer takes as the end of its job.
    pub fn set_lease_expiry(
        &mut self,
        id: &str,
        expires_unix_ms: u64,
    ) -> Result<Option<Lease>, MetadataError> {
        let Some(mut lease) = self.lease(id)? else {
            return Ok(None);
        };
        lease.expires_unix_ms = expires_unix_ms;
        self.put_lease(&lease)?;
        Ok(Some(lease))
    }
}
