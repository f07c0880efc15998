//! Concurrent PullImage calls for the same reference, credentials and platform
//! share one pull. The pull runs in its own task, so a caller that gives up
//! (cancels, or its deadline passes) does not cancel it for the others; every
//! caller gets the same result. Each pull owns its [`PullProgress`], so a
//! caller that joins later watches the same progress as the first.
//!
//! Pulls are also limited: at most `pulls_max` run at once (0 = unlimited,
//! 1 = the kubelet's serialized mode), with at most `pulls_queued_max` waiting;
//! beyond that a pull is refused at once rather than queued without bound.
//! Node-wide slots bound the layer downloads and extractions of all pulls
//! together (`layer_downloads_max`, `extractions_max`); an extraction holds
//! its slot only while it has bytes to unpack (see [`super::extraction_slots`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tracing::Instrument as _;

use crate::image_service::extraction_slots::ExtractionSlots;
use crate::image_service::pull_progress::PullProgress;
use crate::oci::platform::Platform;
use crate::reference::{Digest, ImageReference};
use crate::registry::RegistryCredentials;

/// What makes two pulls the same pull.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PullKey {
    pub reference: ImageReference,
    pub credentials: RegistryCredentials,
    pub platform: Platform,
}

pub(crate) type PullOutcome<E> = Result<Digest, Arc<E>>;
pub(crate) type SharedPull<E> = Shared<BoxFuture<'static, PullOutcome<E>>>;

/// A pull in flight as one caller holds it.
pub(crate) struct JoinedPull<E> {
    /// Whether this call joined a pull started by another.
    pub joined: bool,
    pub outcome: SharedPull<E>,
    pub progress: Arc<PullProgress>,
}

/// Limits on pulls, with units in their names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PullLimits {
    /// Pulls running at once; 0 means no limit.
    pub pulls_max: usize,
    /// Pulls waiting for a turn; more are refused.
    pub pulls_queued_max: usize,
    /// Layer downloads running at once, all pulls together.
    pub layer_downloads_max: usize,
    /// Layer extractions running at once, all pulls together.
    pub extractions_max: usize,
}

impl Default for PullLimits {
    fn default() -> Self {
        PullLimits {
            pulls_max: 0,
            pulls_queued_max: 256,
            layer_downloads_max: 3,
            extractions_max: std::thread::available_parallelism().map_or(2, usize::from),
        }
    }
}

pub(crate) struct InflightPulls<E> {
    pulls: Mutex<HashMap<PullKey, InflightPull<E>>>,
    running: Option<Arc<tokio::sync::Semaphore>>,
    limits: PullLimits,
    waiting: std::sync::atomic::AtomicUsize,
    download_slots: Arc<tokio::sync::Semaphore>,
    extraction_slots: Arc<ExtractionSlots>,
}

struct InflightPull<E> {
    outcome: SharedPull<E>,
    progress: Arc<PullProgress>,
    /// Aborts the pull's task: at shutdown, once the grace period is over.
    abort: tokio::task::AbortHandle,
}

struct RemoveOnDrop<E: Send + Sync + 'static> {
    pulls: Arc<InflightPulls<E>>,
    key: PullKey,
}

impl<E: Send + Sync + 'static> Drop for RemoveOnDrop<E> {
    fn drop(&mut self) {
        let mut pulls = self.pulls.lock();
        pulls.remove(&self.key);
        if pulls.is_empty() {
            // The last pull ended: what the pulls allocated is free now.
            crate::memory::release_free_heap_soon();
        }
    }
}

/// Why a pull produced no outcome of its own.
#[derive(Debug)]
pub(crate) enum PullRefused {
    /// The queue of pulls waiting for a turn is full.
    QueueFull { queued: usize },
    /// The pull's task ended without an outcome (it panicked, or the runtime
    /// is shutting down).
    TaskFailed { detail: String },
    /// The pull was aborted: the daemon is shutting down and its grace period
    /// is over.
    Aborted,
}

impl<E: Send + Sync + 'static> InflightPulls<E> {
    pub(crate) fn new(limits: PullLimits) -> InflightPulls<E> {
        InflightPulls {
            pulls: Mutex::new(HashMap::new()),
            running: (limits.pulls_max > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(limits.pulls_max))),
            limits,
            waiting: std::sync::atomic::AtomicUsize::new(0),
            download_slots: Arc::new(tokio::sync::Semaphore::new(
                limits.layer_downloads_max.max(1),
            )),
            extraction_slots: ExtractionSlots::new(limits.extractions_max),
        }
    }

    /// Node-wide layer download slots: a download holds one while it runs.
    pub(crate) fn download_slots(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.download_slots
    }

    /// Node-wide extraction slots: an extraction holds one while it has
    /// bytes to unpack.
    pub(crate) fn extraction_slots(&self) -> &Arc<ExtractionSlots> {
        &self.extraction_slots
    }

    /// Joins the pull for `key` if one is in flight, or starts the pull
    /// `start` makes (given the progress it reports to) in its own task.
    pub(crate) fn join_or_start(
        self: &Arc<Self>,
        key: PullKey,
        start: impl FnOnce(Arc<PullProgress>) -> BoxFuture<'static, PullOutcome<E>>,
        refused: fn(PullRefused) -> E,
    ) -> JoinedPull<E> {
        let mut pulls = self.lock();
        if let Some(existing) = pulls.get(&key) {
            return JoinedPull {
                joined: true,
                outcome: existing.outcome.clone(),
                progress: existing.progress.clone(),
            };
        }
        let progress = Arc::new(PullProgress::new());
        let queued = self.waiting.load(std::sync::atomic::Ordering::SeqCst);
        if self.running.is_some() && queued >= self.limits.pulls_queued_max {
            let error = Arc::new(refused(PullRefused::QueueFull { queued }));
            return JoinedPull {
                joined: false,
                outcome: async move { Err(error) }.boxed().shared(),
                progress,
            };
        }
        let pull = start(progress.clone());
        let this = self.clone();
        let task_key = key.clone();
        // Moved into the task, so it drops when the task ends, aborted or not
        // (even before its first poll), and a later call starts a fresh pull
        // instead of joining a finished one.
        let entry = RemoveOnDrop {
            pulls: this.clone(),
            key: task_key,
        };
        // The task carries the span of the request that started it, so its
        // log lines show that request's id.
        let span = tracing::Span::current();
        let task = tokio::spawn(
            async move {
                let _entry = entry;
                let _turn = match &this.running {
                    Some(semaphore) => {
                        this.waiting
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let permit = semaphore.clone().acquire_owned().await;
                        this.waiting
                            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        permit.ok()
                    }
                    None => None,
                };
                pull.await
            }
            .instrument(span),
        );
        let abort = task.abort_handle();
        let shared = async move {
            match task.await {
                Ok(outcome) => outcome,
                Err(join_error) if join_error.is_cancelled() => {
                    Err(Arc::new(refused(PullRefused::Aborted)))
                }
                Err(join_error) => Err(Arc::new(refused(PullRefused::TaskFailed {
                    detail: join_error.to_string(),
                }))),
            }
        }
        .boxed()
        .shared();
        pulls.insert(
            key,
            InflightPull {
                outcome: shared.clone(),
                progress: progress.clone(),
                abort,
            },
        );
        JoinedPull {
            joined: false,
            outcome: shared,
            progress,
        }
    }

    /// Aborts every pull in flight; returns how many. Their callers get
    /// [`PullRefused::Aborted`]. An aborted pull stops at its next await: what
    /// it stored stays under its lease, and its image is never marked ready
    /// (that commit is one synchronous transaction, so it either happened or
    /// did not).
    pub(crate) fn abort_all(&self) -> usize {
        // Collected first: an aborted task's entry removes itself under the
        // same lock.
        let aborts: Vec<tokio::task::AbortHandle> = self
            .lock()
            .values()
            .map(|pull| pull.abort.clone())
            .collect();
        for abort in &aborts {
            abort.abort();
        }
        aborts.len()
    }

    /// Distinct pulls running, and pulls waiting for a turn.
    pub(crate) fn queue_stats(&self) -> crate::metrics::PullQueueStats {
        let queued = self.waiting.load(std::sync::atomic::Ordering::SeqCst) as u64;
        let in_flight = self.lock().len() as u64;
        crate::metrics::PullQueueStats {
            running: in_flight.saturating_sub(queued),
            queued,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PullKey, InflightPull<E>>> {
        self.pulls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum TestError {
        Refused(String),
    }

    fn refused(why: PullRefused) -> TestError {
        TestError::Refused(format!("{why:?}"))
    }

    fn key(name: &str) -> PullKey {
        PullKey {
            reference: ImageReference::parse_docker_ref(name).unwrap(),
            credentials: RegistryCredentials::anonymous(),
            platform: Platform::new("linux", "amd64"),
        }
    }

    /// A pull that never ends on its own.
    fn endless(_progress: Arc<PullProgress>) -> BoxFuture<'static, PullOutcome<TestError>> {
        std::future::pending().boxed()
    }

    #[tokio::test]
    async fn a_joined_pull_shares_progress_and_abort_ends_every_caller_and_the_entry() {
        let pulls = Arc::new(InflightPulls::<TestError>::new(PullLimits::default()));
        let first = pulls.join_or_start(key("a/b:1"), endless, refused);
        let second = pulls.join_or_start(key("a/b:1"), endless, refused);
        let other = pulls.join_or_start(key("a/c:1"), endless, refused);
        assert!(!first.joined && second.joined && !other.joined);
        assert!(Arc::ptr_eq(&first.progress, &second.progress));
        assert!(!Arc::ptr_eq(&first.progress, &other.progress));

        assert_eq!(pulls.abort_all(), 2);
        for outcome in [first.outcome, second.outcome, other.outcome] {
            let error = outcome.await.unwrap_err();
            assert_eq!(*error, TestError::Refused("Aborted".to_owned()));
        }
        // The aborted pulls left the table: a new call starts afresh.
        assert!(pulls.lock().is_empty());
        let again = pulls.join_or_start(key("a/b:1"), endless, refused);
        assert!(!again.joined);
        assert!(!Arc::ptr_eq(&again.progress, &second.progress));
        pulls.abort_all();
    }
}
