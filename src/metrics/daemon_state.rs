//! What `cri-imaged status` reports beyond the store's own counts: how long
//! the daemon has run and the one-line summaries of the last reconciliation
//! and garbage collection. Kept next to the metrics because the same calls
//! that record a gc or reconcile run fill these slots.

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct DaemonState {
    started: Instant,
    last_gc_summary: Mutex<Option<String>>,
    last_reconcile_summary: Mutex<Option<String>>,
}

impl Default for DaemonState {
    fn default() -> Self {
        DaemonState {
            started: Instant::now(),
            last_gc_summary: Mutex::new(None),
            last_reconcile_summary: Mutex::new(None),
        }
    }
}

impl DaemonState {
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// The last gc pass's summary line; `None` until a pass has run.
    pub fn last_gc_summary(&self) -> Option<String> {
        read(&self.last_gc_summary)
    }

    /// The startup reconciliation's summary line; `None` until it has run.
    pub fn last_reconcile_summary(&self) -> Option<String> {
        read(&self.last_reconcile_summary)
    }

    pub(super) fn set_last_gc_summary(&self, summary: String) {
        write(&self.last_gc_summary, summary);
    }

    pub(super) fn set_last_reconcile_summary(&self, summary: String) {
        write(&self.last_reconcile_summary, summary);
    }
}

// A std Mutex: nothing awaits while it is held, and a panic while holding it
// cannot leave a half-written String, so a poisoned lock is used as is.
fn read(slot: &Mutex<Option<String>>) -> Option<String> {
    slot.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

fn write(slot: &Mutex<Option<String>>, summary: String) {
    *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(summary);
}
