//! Fail points for the crash drills, behind the `failpoints` cargo feature.
//!
//! `crate::fail_point!("name", error)` marks a place where a test can make the
//! daemon fail. Without the feature it expands to nothing. With it, the point is
//! configured at run time, in process with `fail::cfg(name, actions)` or from the
//! `FAILPOINTS` environment variable (`name=action;name=action`), where the
//! action is one of the `fail` crate's (`return`, `panic`, `sleep(ms)`, …):
//! - `return` makes the enclosing function return `Err(error)`;
//! - `return(abort)` aborts the whole process on the spot, like a SIGKILL, which
//!   is what the crash drills use to stop the daemon between two steps.

/// Marks a fail point. `$error` is the error the enclosing function returns
/// when the point fires with the `return` action.
#[macro_export]
macro_rules! fail_point {
    ($name:literal, $error:expr) => {
        ::fail::fail_point!($name, |argument: Option<String>| {
            if argument.as_deref() == Some("abort") {
                $crate::fail_point::abort_process($name);
            }
            Err($error)
        })
    };
}

/// Ends the process immediately, without unwinding or flushing anything: the
/// closest a test can get to pulling the plug from inside.
pub fn abort_process(name: &str) -> ! {
    eprintln!("fail point {name} fired: aborting the process");
    std::process::abort()
}

/// Reads fail point settings from `FAILPOINTS`. Call once at process start;
/// without the `failpoints` feature this does nothing.
pub fn configure_from_environment() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}
