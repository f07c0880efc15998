//! Node-wide extraction slots: how many layers unpack at once, all pulls
//! together (`extractions_max`, one per core by default).
//!
//! A layer holds a slot only while it has bytes to unpack. Layers unpack
//! while their blobs download, so a layer often waits for its download; for
//! the wait it gives its slot back and takes one again when bytes arrive.
//! Otherwise a registry that stalls would keep every slot of the node held by
//! layers that do nothing, and the layers of other pulls, whose bytes are
//! there, would wait up to the stall timeout.
//!
//! A layer unpacks on two threads: one reads the blob through its tap and
//! decompresses, the other creates the files from the chunks the first hands
//! over. The [`LayerSlot`] goes back only while both wait: the reader for
//! download bytes (the tap's [`TapWaitHook`]), the extractor for chunks (the
//! unpack's [`InputWaitHook`]). A layer whose extractor still has chunks to
//! work through keeps its slot, so the limit holds for both threads.
//!
//! Slots are taken on the unpacker's blocking threads: hence a blocking
//! semaphore of our own rather than tokio's. The slot is taken after the
//! layer's chain lock, and a slot holder waits for nothing but its input
//! (giving the slot back when both of its threads do), its own other thread
//! and the disk: no holder of a slot ever waits for a lock or a slot that
//! another layer holds.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::content_store::TapWaitHook;
use crate::unpack::InputWaitHook;

/// The slots of the node.
pub(crate) struct ExtractionSlots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl ExtractionSlots {
    /// `count` slots (at least one).
    pub(crate) fn new(count: usize) -> Arc<ExtractionSlots> {
        Arc::new(ExtractionSlots {
            free: Mutex::new(count.max(1)),
            freed: Condvar::new(),
        })
    }

    /// A claim on a slot, not holding one yet.
    pub(crate) fn claim(self: &Arc<Self>) -> ExtractionSlot {
        ExtractionSlot {
            slots: self.clone(),
            held: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        self.free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One layer's claim on a slot: it takes one while the layer has bytes to
/// unpack and gives it back while the layer waits, and on drop.
pub(crate) struct ExtractionSlot {
    slots: Arc<ExtractionSlots>,
    held: bool,
}

impl ExtractionSlot {
    /// Takes a slot, blocking until one is free. Blocking threads only.
    pub(crate) fn take(&mut self) {
        if self.held {
            return;
        }
        let mut free = self.slots.lock();
        while *free == 0 {
            free = self
                .slots
                .freed
                .wait(free)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        *free -= 1;
        self.held = true;
    }

    /// Gives the slot back, if held.
    pub(crate) fn give_back(&mut self) {
        if !self.held {
            return;
        }
        self.held = false;
        *self.slots.lock() += 1;
        self.slots.freed.notify_one();
    }
}

impl Drop for ExtractionSlot {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// One layer's slot, shared by the thread that reads and decompresses the
/// blob and the thread that creates the files.
pub(crate) struct LayerSlot {
    state: Mutex<LayerSlotState>,
}

struct LayerSlotState {
    slot: ExtractionSlot,
    reader_waiting: bool,
    extractor_waiting: bool,
    /// Given back for good: no wait takes a slot any more.
    finished: bool,
}

impl LayerSlot {
    /// A layer that has no slot yet: its reader waits for the first bytes
    /// (the tap's hook starts as waiting) and the extractor has not started.
    pub(crate) fn new(slot: ExtractionSlot) -> Arc<LayerSlot> {
        Arc::new(LayerSlot {
            state: Mutex::new(LayerSlotState {
                slot,
                reader_waiting: true,
                extractor_waiting: false,
                finished: false,
            }),
        })
    }

    /// The hook for the layer's tap reader.
    pub(crate) fn reader_hook(self: &Arc<Self>) -> Box<dyn TapWaitHook> {
        Box::new(ReaderSide(self.clone()))
    }

    /// Gives the slot back for good: the layer has nothing left to unpack
    /// (what may follow is waiting for the blob's verification and the disk).
    pub(crate) fn give_back(&self) {
        let mut state = self.lock();
        state.finished = true;
        state.slot.give_back();
    }

    fn set_waiting(&self, change: impl FnOnce(&mut LayerSlotState) -> &mut bool, waiting: bool) {
        let mut state = self.lock();
        *change(&mut state) = waiting;
        if state.finished {
            return;
        }
        if !waiting {
            // Blocks with the layer's lock held: the layer's other thread
            // has nothing to do but wait for the same slot meanwhile.
            state.slot.take();
        } else if state.reader_waiting && state.extractor_waiting {
            state.slot.give_back();
        }
    }

    fn lock(&self) -> MutexGuard<'_, LayerSlotState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl InputWaitHook for LayerSlot {
    fn input_wait_started(&self) {
        self.set_waiting(|state| &mut state.extractor_waiting, true);
    }

    fn input_wait_ended(&self) {
        self.set_waiting(|state| &mut state.extractor_waiting, false);
    }
}

struct ReaderSide(Arc<LayerSlot>);

impl TapWaitHook for ReaderSide {
    fn wait_started(&mut self) {
        self.0.set_waiting(|state| &mut state.reader_waiting, true);
    }

    fn wait_ended(&mut self) {
        self.0.set_waiting(|state| &mut state.reader_waiting, false);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Whether `claim` gets a slot within 50 ms; the claim, holding or not.
    fn takes_at_once(mut claim: ExtractionSlot) -> (bool, ExtractionSlot) {
        let taking = std::thread::spawn(move || {
            claim.take();
            claim
        });
        std::thread::sleep(Duration::from_millis(50));
        let at_once = taking.is_finished();
        (at_once, taking.join().unwrap())
    }

    #[test]
    fn a_slot_is_missing_until_given_back_or_dropped() {
        let slots = ExtractionSlots::new(2);
        let mut first = slots.claim();
        first.take();
        // Taking again holds the same slot.
        first.take();
        let (at_once, second) = takes_at_once(slots.claim());
        assert!(at_once, "one of two slots was free");
        assert_eq!(*slots.lock(), 0);

        let mut third = slots.claim();
        let waiting = std::thread::spawn(move || {
            third.take();
            third
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiting.is_finished(), "both slots are held");
        first.give_back();
        // Giving back twice frees one slot, not two.
        first.give_back();
        let third = waiting.join().unwrap();
        assert_eq!(*slots.lock(), 0);

        drop(second);
        let (at_once, fourth) = takes_at_once(slots.claim());
        assert!(at_once, "a dropped claim gave its slot back");
        drop((third, fourth, first));
        assert_eq!(*slots.lock(), 2);
    }

    /// Whether `change` returns within 50 ms; blocks until it does.
    fn at_once(change: impl FnOnce() + Send + 'static) -> bool {
        let changing = std::thread::spawn(change);
        std::thread::sleep(Duration::from_millis(50));
        let done = changing.is_finished();
        changing.join().unwrap();
        done
    }

    #[test]
    fn a_layer_gives_its_slot_back_only_while_both_its_threads_wait() {
        let slots = ExtractionSlots::new(1);
        let layer = LayerSlot::new(slots.claim());
        let mut reader = layer.reader_hook();
        assert_eq!(*slots.lock(), 1, "no slot before the first bytes");
        reader.wait_ended();
        assert_eq!(*slots.lock(), 0);
        // The reader waits for the download, the extractor still works.
        reader.wait_started();
        assert_eq!(*slots.lock(), 0, "the extractor still has chunks");
        layer.input_wait_started();
        assert_eq!(*slots.lock(), 1, "both threads wait");
        // Another layer takes the free slot; this one waits for it to resume.
        let mut other = slots.claim();
        other.take();
        let resuming = layer.clone();
        let resumed = std::thread::spawn(move || {
            let mut reader = resuming.reader_hook();
            reader.wait_ended();
            std::mem::forget(reader);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!resumed.is_finished(), "the slot is the other layer's");
        drop(other);
        resumed.join().unwrap();
        assert_eq!(*slots.lock(), 0);
        // The extractor gets its chunk: the slot is already the layer's.
        let extracting = layer.clone();
        assert!(at_once(move || extracting.input_wait_ended()));
        assert_eq!(*slots.lock(), 0);
        layer.give_back();
        assert_eq!(*slots.lock(), 1);
        // The reader may still wait for the blob's verification: no slot.
        let mut reader = layer.reader_hook();
        reader.wait_started();
        reader.wait_ended();
        assert_eq!(*slots.lock(), 1, "a finished layer takes no slot");
        drop(reader);
        drop(layer);
        assert_eq!(*slots.lock(), 1, "given back once");
    }

    #[test]
    fn zero_slots_means_one() {
        let slots = ExtractionSlots::new(0);
        let mut slot = slots.claim();
        slot.take();
        assert_eq!(*slots.lock(), 0);
    }
}
