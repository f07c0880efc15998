//! A label whose values come from outside (registry hosts, gRPC method
//! paths) could grow a metric family without bound. [`BoundedLabelValues`]
//! admits the first `values_max` distinct values and folds every later one
//! into [`OTHER`], so a scrape stays small whatever clients send.

use std::collections::HashSet;
use std::sync::Mutex;

/// The value that stands for every value past the cap.
pub const OTHER: &str = "other";

#[derive(Debug)]
pub struct BoundedLabelValues {
    admitted: Mutex<HashSet<String>>,
    values_max: usize,
}

impl BoundedLabelValues {
    pub fn new(values_max: usize) -> BoundedLabelValues {
        BoundedLabelValues {
            admitted: Mutex::new(HashSet::new()),
            values_max,
        }
    }

    /// `value` itself if it is admitted (already, or now while there is
    /// room), [`OTHER`] otherwise.
    pub fn admit(&self, value: &str) -> String {
        // Nothing awaits while the lock is held, and a panic while holding it
        // cannot leave the set inconsistent, so a poisoned lock is used as is.
        let mut admitted = self
            .admitted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if admitted.contains(value) {
            return value.to_owned();
        }
        if admitted.len() < self.values_max {
            admitted.insert(value.to_owned());
            return value.to_owned();
        }
        OTHER.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_cap_fold_into_other_and_admitted_ones_stay() {
        let labels = BoundedLabelValues::new(2);
        assert_eq!(labels.admit("a.example"), "a.example");
        assert_eq!(labels.admit("b.example"), "b.example");
        assert_eq!(labels.admit("c.example"), OTHER);
        assert_eq!(labels.admit("a.example"), "a.example");
        assert_eq!(labels.admit("d.example"), OTHER);
    }
}
