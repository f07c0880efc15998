//! The store's counts and sizes for the metrics endpoint and `cri-imaged
//! status`, from one read transaction (record counts are table lengths; byte
//! totals sum the blob, ingest and snapshot records, as `fs_usage` does), and
//! the pull limits in force.

use std::collections::BTreeMap;

use crate::image_service::{ImageService, ServiceError};
use crate::metadata::ImageState;
use crate::metrics::{PullQueueStats, StoreStats, StoreStatsSource};

impl ImageService {
    pub fn store_stats(&self) -> Result<StoreStats, ServiceError> {
        let read = self.metadata.read()?;
        let counts = read.counts()?;
        let mut images_by_state: Vec<(&'static str, u64)> = ImageState::ALL
            .iter()
            .map(|state| (state.as_str(), 0))
            .collect();
        for (state, _image) in read.image_state_index()? {
            if let Some(entry) = images_by_state
                .iter_mut()
                .find(|(name, _)| *name == state.as_str())
            {
                entry.1 += 1;
            }
        }
        let content_bytes = read.blobs()?.iter().map(|blob| blob.size_bytes).sum();
        let ingest_bytes = read
            .ingests()?
            .iter()
            .map(|ingest| ingest.offset_bytes)
            .sum();
        let snapshot_bytes = read
            .snapshots()?
            .iter()
            .map(|snapshot| snapshot.size_bytes)
            .sum();
        Ok(StoreStats {
            schema_version: read.schema_version()?.unwrap_or_default(),
            images_by_state,
            images: counts.images,
            blobs: counts.blobs,
            snapshots: counts.snapshots,
            unsynced_snapshots: read.unsynced_snapshots()?.len() as u64,
            leases: counts.leases,
            ingests: counts.ingests,
            content_bytes,
            ingest_bytes,
            snapshot_bytes,
            // The file is open, so only a vanished root fails here; a size
            // of 0 then says so without failing the whole report.
            metadata_file_bytes: self.metadata.file_size_bytes().unwrap_or(0),
        })
    }

    /// The limits pulls run under, by name, for `cri-imaged status`.
    pub fn limits_in_force(&self) -> BTreeMap<String, String> {
        let settings = &self.settings;
        let limits: [(&str, String); 11] = [
            ("pulls_max", settings.limits.pulls_max.to_string()),
            (
                "pulls_queued_max",
                settings.limits.pulls_queued_max.to_string(),
            ),
            (
                "layer_downloads_max",
                settings.fetch.layer_downloads_max.to_string(),
            ),
            (
                "layer_resumes_max",
                settings.fetch.layer_resumes_max.to_string(),
            ),
            (
                "extractions_max",
                settings.limits.extractions_max.to_string(),
            ),
            ("lease_duration_ms", settings.lease_duration_ms.to_string()),
            (
                "manifest_bytes_max",
                settings.fetch.manifest.manifest_bytes_max.to_string(),
            ),
            (
                "config_bytes_max",
                settings.fetch.manifest.config_bytes_max.to_string(),
            ),
            ("layers_max", settings.fetch.manifest.layers_max.to_string()),
            (
                "layer_uncompressed_bytes_max",
                settings.unpack.uncompressed_bytes_max.to_string(),
            ),
            ("layer_entries_max", settings.unpack.entries_max.to_string()),
        ];
        limits
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect()
    }
}

impl StoreStatsSource for ImageService {
    fn store_stats(&self) -> Option<StoreStats> {
        match ImageService::store_stats(self) {
            Ok(stats) => Some(stats),
            Err(error) => {
                tracing::warn!(%error, "cannot read the store for its metrics");
                None
            }
        }
    }

    fn pull_queue_stats(&self) -> PullQueueStats {
        self.inflight.queue_stats()
    }
}
