//! Concurrent PullImage calls for the same reference, credentials and platform
//! share one pull. The pull runs in its own task, so a caller that gives up
//! (cancels, or its deadline passes) does not cancel it for the others; every
//! caller gets the same result.
//!
//! Pulls are also limited: at most `pulls_max` run at once (0 = unlimited,
//! 1 = the kubelet's serialized mode), with at most `pulls_queued_max` waiting;
//! beyond that a pull is refused at once rather than queued without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tracing::Instrument as _;

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
type SharedPull<E> = Shared<BoxFuture<'static, PullOutcome<E>>>;

/// Limits on pulls, with units in their names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PullLimits {
    /// Pulls running at once; 0 means no limit.
    pub pulls_max: usize,
    /// Pulls waiting for a turn; more are refused.
    pub pulls_queued_max: usize,
}

impl Default for PullLimits {
    fn default() -> Self {
        PullLimits {
            pulls_max: 0,
            pulls_queued_max: 256,
        }
    }
}

pub(crate) struct InflightPulls<E> {
    pulls: Mutex<HashMap<PullKey, SharedPull<E>>>,
    running: Option<Arc<tokio::sync::Semaphore>>,
    limits: PullLimits,
    waiting: std::sync::atomic::AtomicUsize,
}

/// Why a pull produced no outcome of its own.
#[derive(Debug)]
pub(crate) enum PullRefused {
    /// The queue of pulls waiting for a turn is full.
    QueueFull { queued: usize },
    /// The pull's task ended without an outcome (it panicked, or the runtime
    /// is shutting down).
    TaskFailed { detail: String },
}

impl<E: Send + Sync + 'static> InflightPulls<E> {
    pub(crate) fn new(limits: PullLimits) -> InflightPulls<E> {
        InflightPulls {
            pulls: Mutex::new(HashMap::new()),
            running: (limits.pulls_max > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(limits.pulls_max))),
            limits,
            waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Joins the pull for `key` if one is in flight, or starts `pull` in its
    /// own task. Returns whether this call joined an existing pull, and the
    /// shared outcome to wait for.
    pub(crate) fn join_or_start(
        self: &Arc<Self>,
        key: PullKey,
        pull: BoxFuture<'static, PullOutcome<E>>,
        refused: fn(PullRefused) -> E,
    ) -> (bool, SharedPull<E>) {
        let mut pulls = self.lock();
        if let Some(existing) = pulls.get(&key) {
            return (true, existing.clone());
        }
        let queued = self.waiting.load(std::sync::atomic::Ordering::SeqCst);
        if self.running.is_some() && queued >= self.limits.pulls_queued_max {
            let error = Arc::new(refused(PullRefused::QueueFull { queued }));
            return (false, async move { Err(error) }.boxed().shared());
        }
        let this = self.clone();
        let task_key = key.clone();
        // The task carries the span of the request that started it, so its
        // log lines show that request's id.
        let span = tracing::Span::current();
        let task = tokio::spawn(
            async move {
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
                let outcome = pull.await;
                this.lock().remove(&task_key);
                outcome
            }
            .instrument(span),
        );
        let shared = async move {
            match task.await {
                Ok(outcome) => outcome,
                Err(join_error) => Err(Arc::new(refused(PullRefused::TaskFailed {
                    detail: join_error.to_string(),
                }))),
            }
        }
        .boxed()
        .shared();
        pulls.insert(key, shared.clone());
        (false, shared)
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PullKey, SharedPull<E>>> {
        self.pulls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
