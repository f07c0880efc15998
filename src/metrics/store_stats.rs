//! The store's counts and sizes (and the pull queue's), computed from the metadata records when
//! they are asked for (a scrape, a `status` call) rather than kept up to date
//! on every change: one read transaction, no directory walk.

/// Counts and bytes of everything the store holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub schema_version: u64,
    /// Image records by state (`ready`, `pulling`, `gc_pending`), every
    /// state present even when zero.
    pub images_by_state: Vec<(&'static str, u64)>,
    pub images: u64,
    pub blobs: u64,
    pub snapshots: u64,
    /// Committed snapshots the background sync has not covered yet.
    pub unsynced_snapshots: u64,
    pub leases: u64,
    pub ingests: u64,
    /// Bytes of verified blobs.
    pub content_bytes: u64,
    /// Bytes of partial downloads.
    pub ingest_bytes: u64,
    /// Bytes of unpacked snapshots.
    pub snapshot_bytes: u64,
    /// Size of the metadata database file.
    pub metadata_file_bytes: u64,
}

/// Pulls under way, counted when asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PullQueueStats {
    /// Distinct pulls running (deduplicated requests count once).
    pub running: u64,
    /// Pulls waiting for a turn under `pulls_max`.
    pub queued: u64,
}

/// Whatever can compute [`StoreStats`] and [`PullQueueStats`] at scrape time
/// (the image service). The metrics hold it weakly: the service holds the
/// metrics.
pub trait StoreStatsSource: Send + Sync {
    /// `None` when the store cannot be read; the scrape then keeps the store
    /// gauges' last values rather than failing.
    fn store_stats(&self) -> Option<StoreStats>;
    fn pull_queue_stats(&self) -> PullQueueStats;
}
