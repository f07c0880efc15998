//! Fuzzes the image reference and digest parsers, which read text straight
//! from CRI clients. Besides "never panics", it checks the invariants the rest
//! of the daemon relies on: a parsed reference prints back to text that parses
//! to the same value (both in full and in familiar form), normalizing is
//! idempotent, and `parse_docker_ref` of the printed form is `normalized()`.

#![no_main]

use cri_imaged::reference::{AnyReference, Digest, ImageReference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Every caller hands the parsers a `&str` (gRPC strings are UTF-8), so
    // other byte strings cannot reach them.
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(reference) = ImageReference::parse_normalized(input) {
        let normalized = reference.normalized();
        assert_eq!(normalized.normalized(), normalized);
        assert_eq!(
            ImageReference::parse_normalized(&reference.to_string()).as_ref(),
            Ok(&reference)
        );
        assert_eq!(
            ImageReference::parse_normalized(&reference.familiar_string()).as_ref(),
            Ok(&reference)
        );
        assert_eq!(
            ImageReference::parse_docker_ref(&reference.to_string()),
            Ok(normalized)
        );
    }

    // The result does not matter here, only that it returns.
    let _ = AnyReference::parse(input);

    if let Ok(digest) = Digest::parse(input) {
        assert_eq!(Digest::parse(digest.as_str()).as_ref(), Ok(&digest));
    }
});
