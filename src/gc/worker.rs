//! The background gc task: runs a pass as soon as an image is removed, every
//! `schedule_interval_ms`, and when the earliest lease expires (for example
//! the grace lease startup reconciliation takes), until shutdown. It stops
//! only between passes: a pass in progress finishes first.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::gc::{GarbageCollector, PassTrigger};

/// Starts the worker. It ends when `shutdown` turns `true` (or its sender is
/// dropped); await the handle to know the last pass has finished.
pub fn spawn_worker(
    collector: Arc<GarbageCollector>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(collector, shutdown))
}

async fn run(collector: Arc<GarbageCollector>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let settings = collector.settings().clone();
    let mut next_scheduled = instant_after_ms(settings.schedule_interval_ms);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let lease_wake = match collector.earliest_lease_expiry_unix_ms() {
            Ok(Some(expires_unix_ms)) => {
                let now = crate::metadata::unix_millis_now();
                // One millisecond past the expiry: a lease is live until then.
                Some(instant_after_ms(expires_unix_ms.saturating_sub(now) + 1))
            }
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%error, "gc worker cannot read the leases");
                None
            }
        };
        let lease_check = instant_after_ms(settings.lease_check_interval_ms);
        let timer = [Some(next_scheduled), lease_wake, Some(lease_check)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(lease_check);
        let trigger = tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            () = collector.wake.notified() => {
                if !collector.pass_requested.load(Ordering::SeqCst) {
                    // A permit left by a request that an earlier pass answered.
                    continue;
                }
                PassTrigger::ImageRemoved
            }
            () = tokio::time::sleep_until(timer) => {
                if Instant::now() >= next_scheduled {
                    PassTrigger::Schedule
                } else if collector.has_expired_lease().unwrap_or(false) {
                    PassTrigger::LeaseExpired
                } else {
                    continue;
                }
            }
        };
        // Cleared before the pass: a removal during the pass asks for another.
        // That is how a burst of removals (the kubelet's image gc removes one
        // image per call) coalesces: the first starts a pass at once, and
        // every one that lands while it runs is reclaimed by the next.
        collector.pass_requested.store(false, Ordering::SeqCst);
        // The pass logs its own outcome.
        let _ = collector.collect_now(trigger).await;
        next_scheduled = instant_after_ms(settings.schedule_interval_ms);
    }
}

/// Waits longer than this are cut to it: a lease expiring in the far future
/// (or a huge setting) must not overflow the clock, and the worker re-reads
/// the leases long before anyway.
const WAIT_MS_MAX: u64 = 365 * 24 * 60 * 60 * 1000;

fn instant_after_ms(wait_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(wait_ms.min(WAIT_MS_MAX))
}
