//! A value derived from the listing of every image (such as an encoded
//! ListImages answer), kept until the listing changes.
//!
//! The metadata store hands out its cached listing as an `Arc` and replaces
//! that `Arc` with a new one at every commit that changes an image or a name,
//! so the `Arc`'s identity is the listing's version. The memo keeps a `Weak`
//! of the listing it rendered: weak, because a strong count would make the
//! store copy its whole listing at its next patch instead of editing it in
//! place; and the `Weak` keeps the listing's allocation reserved, so a newer
//! listing can never be placed at the same address and pass for the old one.

use std::sync::{Arc, Mutex, Weak};

use crate::metadata::NamedImage;

pub struct ListingMemo<T> {
    rendered: Mutex<Option<Rendered<T>>>,
}

struct Rendered<T> {
    from: Weak<Vec<NamedImage>>,
    value: T,
}

impl<T: Clone> ListingMemo<T> {
    pub fn new() -> ListingMemo<T> {
        ListingMemo {
            rendered: Mutex::new(None),
        }
    }

    /// What `render` made of `listing`, from memory if `listing` is the one
    /// rendered last. The lock is held while rendering: concurrent callers
    /// after a change wait for one rendering instead of each making its own.
    pub fn get_or_render<E>(
        &self,
        listing: &Arc<Vec<NamedImage>>,
        render: impl FnOnce(&[NamedImage]) -> Result<T, E>,
    ) -> Result<T, E> {
        // Nothing here can be left half-done by a panic: recover the lock.
        let mut rendered = self
            .rendered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(rendered) = rendered.as_ref()
            && std::ptr::eq(rendered.from.as_ptr(), Arc::as_ptr(listing))
        {
            return Ok(rendered.value.clone());
        }
        let value = render(listing)?;
        *rendered = Some(Rendered {
            from: Arc::downgrade(listing),
            value: value.clone(),
        });
        Ok(value)
    }
}

impl<T: Clone> Default for ListingMemo<T> {
    fn default() -> Self {
        ListingMemo::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(count: usize) -> Arc<Vec<NamedImage>> {
        Arc::new(Vec::with_capacity(count))
    }

    #[test]
    fn the_same_listing_is_rendered_once_and_a_new_one_again() {
        let memo = ListingMemo::new();
        let renders = std::cell::Cell::new(0);
        let render = |_: &[NamedImage]| {
            renders.set(renders.get() + 1);
            Ok::<_, ()>(renders.get())
        };
        let first = listing(0);
        assert_eq!(memo.get_or_render(&first, render), Ok(1));
        assert_eq!(memo.get_or_render(&first.clone(), render), Ok(1));
        let second = listing(0);
        assert_eq!(memo.get_or_render(&second, render), Ok(2));
        assert_eq!(memo.get_or_render(&second, render), Ok(2));
        assert_eq!(renders.get(), 2);
    }

    #[test]
    fn a_listing_dropped_and_replaced_is_never_taken_for_the_rendered_one() {
        let memo = ListingMemo::new();
        let first = listing(1);
        memo.get_or_render(&first, |_| Ok::<_, ()>("first"))
            .unwrap();
        let address = Arc::as_ptr(&first);
        drop(first);
        // The allocator would gladly reuse the freed block for a listing of
        // the same size; the memo's Weak keeps it from being freed.
        let replacements: Vec<_> = (0..64).map(|_| listing(1)).collect();
        assert!(replacements.iter().all(|new| Arc::as_ptr(new) != address));
        assert_eq!(
            memo.get_or_render(&replacements[0], |_| Ok::<_, ()>("second")),
            Ok("second")
        );
    }

    #[test]
    fn the_memo_does_not_keep_the_listing_shared() {
        let memo = ListingMemo::new();
        let listing = listing(0);
        memo.get_or_render(&listing, |_| Ok::<_, ()>(())).unwrap();
        // The metadata store edits an unshared listing in place.
        assert!(Arc::try_unwrap(listing).is_ok());
    }

    #[test]
    fn a_failed_render_keeps_nothing() {
        let memo = ListingMemo::new();
        let listing = listing(0);
        assert_eq!(
            memo.get_or_render(&listing, |_| Err::<u8, _>("no")),
            Err("no")
        );
        assert_eq!(memo.get_or_render(&listing, |_| Ok::<_, &str>(7)), Ok(7));
    }
}
