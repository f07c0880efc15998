//! Value types every layer shares: [`Digest`] and [`ImageReference`], plus
//! [`AnyReference`] for what a CRI `ImageSpec.image` may hold. This module does
//! no I/O. Each type can only be built by a validating parser (or, for digests,
//! from hash output), so holding one proves the text is well formed and
//! normalized; code further in never re-checks it.

mod digest;
mod digest_hasher;
mod image_reference;

pub use digest::{Digest, DigestAlgorithm, DigestError};
pub use digest_hasher::DigestHasher;
pub use image_reference::{AnyReference, ImageReference, ReferenceError};

/// The most characters of caller-supplied text that an error echoes back.
const ECHO_CHARS_MAX: usize = 100;

/// Copies `text` for use inside an error, cut to [`ECHO_CHARS_MAX`] characters
/// plus "…". The input comes from clients, and a megabyte-long reference must
/// not turn into a megabyte-long log line.
pub(crate) fn bounded_echo(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS_MAX) {
        Some((cut_byte_index, _)) => {
            let mut echo = String::with_capacity(cut_byte_index + '…'.len_utf8());
            echo.push_str(&text[..cut_byte_index]);
            echo.push('…');
            echo
        }
        None => text.to_owned(),
    }
}
