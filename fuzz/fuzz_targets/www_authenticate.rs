//! Fuzzes the `WWW-Authenticate` parser, which reads a header straight from a
//! registry, and the token request URL built from what it returns. Besides
//! "never panics", it checks what the auth code relies on: a successful parse
//! has at least one challenge, every Bearer challenge has a non-empty realm,
//! parsing is deterministic, and error messages stay bounded.

#![no_main]

use cri_imaged::registry::www_authenticate::{
    Challenge, HEADER_BYTES_MAX, parse_www_authenticate, token_request_url,
};
use libfuzzer_sys::fuzz_target;

/// Longer than any message the parser builds from bounded echoes.
const MESSAGE_BYTES_MAX: usize = 2048;

fuzz_target!(|data: &[u8]| {
    // Header values reach the parser as `&str` (the HTTP layer's `to_str`),
    // so other byte strings cannot.
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_www_authenticate(header);
    assert_eq!(parse_www_authenticate(header), parsed);
    match parsed {
        Ok(challenges) => {
            assert!(header.len() <= HEADER_BYTES_MAX);
            assert!(!challenges.is_empty());
            for challenge in &challenges {
                match challenge {
                    Challenge::Bearer {
                        realm,
                        service,
                        scope,
                        error,
                    } => {
                        assert!(!realm.is_empty());
                        for optional in [service, scope, error] {
                            assert!(optional.as_ref().is_none_or(|value| !value.is_empty()));
                        }
                        let scopes: Vec<String> = scope.iter().cloned().collect();
                        match token_request_url(realm, service.as_deref(), &scopes) {
                            Ok(url) => {
                                assert!(url.starts_with("http://") || url.starts_with("https://"));
                                assert!(!url.contains('#'));
                            }
                            Err(error) => check_message(&error.to_string()),
                        }
                    }
                    Challenge::Basic { realm } => {
                        assert!(realm.as_ref().is_none_or(|value| !value.is_empty()));
                    }
                    Challenge::Other { scheme } => {
                        assert!(!scheme.is_empty());
                        assert_eq!(scheme.to_ascii_lowercase(), *scheme);
                        assert!(scheme != "basic" && scheme != "bearer");
                    }
                }
            }
        }
        Err(error) => check_message(&error.to_string()),
    }
});

fn check_message(message: &str) {
    assert!(message.len() <= MESSAGE_BYTES_MAX, "{} bytes", message.len());
    assert!(!message.ends_with('.'), "{message}");
}
