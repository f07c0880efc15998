//! Live progress of one pull, owned by the pull itself (one per in-flight
//! pull in `inflight_pulls`), so every caller that joins a shared pull watches
//! the same table.
//!
//! Two paths, so that a pull nobody watches pays almost nothing:
//! - bytes: one atomic counter per layer, bumped per received chunk and only
//!   read when a watcher samples it;
//! - states (resolved, queued, downloading, extracting, done, reused): a
//!   `tokio::sync::watch` of the state table, changed a few times per layer;
//!   watchers wake on each change. A watch keeps only the latest value, so a
//!   watcher that is slower than two consecutive changes of one layer sees
//!   only the second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::oci::Descriptor;
use crate::reference::Digest;

/// Where a layer is in the pull pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerState {
    /// Waiting for a download slot.
    Queued,
    /// Bytes are being fetched (or the blob waits for its extraction).
    Downloading,
    /// The blob is being unpacked into a snapshot.
    Extracting,
    /// Downloaded and unpacked by this pull.
    Done,
    /// Already present: nothing was fetched and nothing unpacked.
    Reused,
}

/// One layer as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerProgress {
    /// The layer blob's (compressed) digest.
    pub digest: Digest,
    pub media_type: String,
    /// The blob's size from the manifest.
    pub total_bytes: u64,
    pub downloaded_bytes: u64,
    pub extracted: bool,
    pub state: LayerState,
}

/// What the reference resolved to, once the manifest and config are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPull {
    pub manifest_digest: Digest,
    /// The image id.
    pub config_digest: Digest,
    pub layer_count: usize,
    /// Sum of the layer blob sizes.
    pub total_bytes: u64,
}

/// A consistent-enough view of a pull: states as of one change, bytes as of
/// the moment of sampling.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    pub resolved: Option<ResolvedPull>,
    pub layers: Vec<LayerProgress>,
}

/// The state half of the table (what the watch carries).
#[derive(Clone, Debug, Default)]
struct StateTable {
    resolved: Option<ResolvedPull>,
    layers: Vec<LayerEntry>,
}

#[derive(Clone, Debug)]
struct LayerEntry {
    descriptor: Descriptor,
    state: LayerState,
    /// The blob was already stored when this pull asked for it.
    blob_reused: bool,
    extracted: bool,
    /// Its download finished (the blob is stored and verified).
    downloaded: bool,
    /// Its unpack started; a layer unpacks while it downloads, but reports
    /// `Downloading` until its bytes are all in.
    unpacking: bool,
}

/// Notifications of state changes of one [`PullProgress`].
pub struct ProgressChanges(tokio::sync::watch::Receiver<StateTable>);

impl ProgressChanges {
    /// Waits for the next state change; `false` once the pull dropped its
    /// progress (it ended).
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

/// The progress of one pull: written by the pull pipeline, read by watchers.
pub struct PullProgress {
    states: tokio::sync::watch::Sender<StateTable>,
    /// One counter per layer, in manifest order; set once at resolve.
    downloaded_bytes: OnceLock<Arc<[AtomicU64]>>,
}

/// The byte counter of one layer, for a stream that must not borrow.
pub(crate) struct ByteCounter {
    counters: Arc<[AtomicU64]>,
    index: usize,
}

impl ByteCounter {
    /// The hot path of a download: one relaxed atomic add per chunk.
    pub(crate) fn add(&self, bytes: u64) {
        if let Some(counter) = self.counters.get(self.index) {
            counter.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

impl Default for PullProgress {
    fn default() -> Self {
        PullProgress::new()
    }
}

impl PullProgress {
    pub fn new() -> PullProgress {
        PullProgress {
            states: tokio::sync::watch::Sender::new(StateTable::default()),
            downloaded_bytes: OnceLock::new(),
        }
    }

    /// Wakes its holder on every state change (not on byte counts).
    pub fn changes(&self) -> ProgressChanges {
        ProgressChanges(self.states.subscribe())
    }

    /// The current table.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let table = self.states.borrow();
        let counters = self.downloaded_bytes.get();
        let layers = table
            .layers
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let counted = counters
                    .and_then(|counters| counters.get(index))
                    .map_or(0, |counter| counter.load(Ordering::Relaxed));
                LayerProgress {
                    digest: entry.descriptor.digest.clone(),
                    media_type: entry.descriptor.media_type.clone(),
                    total_bytes: entry.descriptor.size_bytes,
                    downloaded_bytes: counted.min(entry.descriptor.size_bytes),
                    extracted: entry.extracted,
                    state: entry.state,
                }
            })
            .collect();
        ProgressSnapshot {
            resolved: table.resolved.clone(),
            layers,
        }
    }

    /// The manifest and config are known: every layer starts `Queued`.
    pub(crate) fn resolved(
        &self,
        manifest_digest: &Digest,
        config_digest: &Digest,
        layers: &[Descriptor],
    ) {
        let _ = self.downloaded_bytes.set(
            layers
                .iter()
                .map(|_| AtomicU64::new(0))
                .collect::<Arc<[AtomicU64]>>(),
        );
        self.states.send_modify(|table| {
            table.resolved = Some(ResolvedPull {
                manifest_digest: manifest_digest.clone(),
                config_digest: config_digest.clone(),
                layer_count: layers.len(),
                total_bytes: layers.iter().map(|layer| layer.size_bytes).sum(),
            });
            table.layers = layers
                .iter()
                .map(|descriptor| LayerEntry {
                    descriptor: descriptor.clone(),
                    state: LayerState::Queued,
                    blob_reused: false,
                    extracted: false,
                    downloaded: false,
                    unpacking: false,
                })
                .collect();
        });
    }

    /// Layer `index` got a download slot.
    pub(crate) fn download_started(&self, index: usize) {
        self.set_state(index, LayerState::Downloading);
    }

    /// A (re)opened stream of layer `index` starts at `offset_bytes`.
    pub(crate) fn download_at(&self, index: usize, offset_bytes: u64) {
        if let Some(counter) = self.counter(index) {
            counter.store(offset_bytes, Ordering::Relaxed);
        }
    }

    /// The counter of layer `index`, once the pull is resolved.
    pub(crate) fn byte_counter(&self, index: usize) -> Option<ByteCounter> {
        let counters = self.downloaded_bytes.get()?.clone();
        (index < counters.len()).then_some(ByteCounter { counters, index })
    }

    /// Layer `index` is stored; `reused` when it was already there.
    pub(crate) fn download_finished(&self, index: usize, reused: bool) {
        if let Some(counter) = self.counter(index) {
            let total = self
                .states
                .borrow()
                .layers
                .get(index)
                .map_or(0, |entry| entry.descriptor.size_bytes);
            counter.store(total, Ordering::Relaxed);
        }
        self.states
            .send_if_modified(|table| match table.layers.get_mut(index) {
                Some(entry) => {
                    entry.blob_reused = reused;
                    entry.downloaded = true;
                    // Its unpack, running since its first bytes, goes on.
                    if entry.unpacking && entry.state != LayerState::Extracting {
                        entry.state = LayerState::Extracting;
                        return true;
                    }
                    false
                }
                None => false,
            });
    }

    /// Layer `index` is being unpacked: `Extracting` at once if its blob is
    /// in, otherwise when its download finishes.
    pub(crate) fn extraction_started(&self, index: usize) {
        self.states
            .send_if_modified(|table| match table.layers.get_mut(index) {
                Some(entry) => {
                    entry.unpacking = true;
                    if entry.downloaded && entry.state != LayerState::Extracting {
                        entry.state = LayerState::Extracting;
                        return true;
                    }
                    false
                }
                None => false,
            });
    }

    /// Every layer has its snapshot: `Reused` for those this pull neither
    /// fetched nor unpacked, `Done` for the others.
    pub(crate) fn all_layers_done(&self) {
        self.states.send_modify(|table| {
            for entry in &mut table.layers {
                let unpacked_now = entry.unpacking;
                entry.extracted = true;
                entry.state = if entry.blob_reused && !unpacked_now {
                    LayerState::Reused
                } else {
                    LayerState::Done
                };
            }
        });
    }

    fn counter(&self, index: usize) -> Option<&AtomicU64> {
        self.downloaded_bytes.get()?.get(index)
    }

    fn set_state(&self, index: usize, state: LayerState) {
        self.states
            .send_if_modified(|table| match table.layers.get_mut(index) {
                Some(entry) if entry.state != state => {
                    entry.state = state;
                    true
                }
                _ => false,
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(byte: u8, size_bytes: u64) -> Descriptor {
        Descriptor::new(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            Digest::from_sha256_bytes([byte; 32]),
            size_bytes,
        )
    }

    #[test]
    fn layers_move_through_their_states_and_bytes_are_capped_at_the_size() {
        let progress = PullProgress::new();
        assert_eq!(progress.snapshot(), ProgressSnapshot::default());
        let layers = [layer(1, 100), layer(2, 50)];
        progress.resolved(&layers[0].digest, &layers[1].digest, &layers);
        let snapshot = progress.snapshot();
        assert_eq!(snapshot.resolved.as_ref().unwrap().total_bytes, 150);
        assert!(
            snapshot
                .layers
                .iter()
                .all(|layer| layer.state == LayerState::Queued)
        );
        progress.download_started(0);
        progress.download_at(0, 10);
        let counter = progress.byte_counter(0).unwrap();
        counter.add(30);
        let snapshot = progress.snapshot();
        assert_eq!(snapshot.layers[0].state, LayerState::Downloading);
        assert_eq!(snapshot.layers[0].downloaded_bytes, 40);
        counter.add(1000);
        assert_eq!(progress.snapshot().layers[0].downloaded_bytes, 100);
        progress.download_finished(0, false);
        progress.download_started(1);
        progress.download_finished(1, true);
        assert_eq!(progress.snapshot().layers[1].downloaded_bytes, 50);
        progress.extraction_started(0);
        assert_eq!(progress.snapshot().layers[0].state, LayerState::Extracting);
        progress.all_layers_done();
        let states: Vec<_> = progress
            .snapshot()
            .layers
            .iter()
            .map(|layer| (layer.state, layer.extracted))
            .collect();
        assert_eq!(
            states,
            [(LayerState::Done, true), (LayerState::Reused, true)]
        );
    }
}
