//! Keeping the daemon's heap small: one malloc arena, and freed memory handed
//! back to the kernel when the daemon goes idle.
//!
//! glibc's allocator gives each new thread that allocates an arena of its
//! own (or one an exited thread left), up to eight per core, and an arena gives
//! memory back only from its top. Parallel pulls run on the async workers and
//! on a pool of blocking threads (extraction, file writes), so a burst of
//! pulls spread the heap over a dozen arenas, each fragmented by what the
//! pulls left: after 200 small pulls, 4 at a time, the daemon held 7 MiB of
//! anonymous memory it no longer used, and the peak during the burst was
//! 38 MiB. With a single arena the same burst peaks at 20 MiB and leaves
//! 3 MiB, and the 8-layer pull is as fast (its work is in large buffers
//! allocated once per layer; small allocations come from each thread's cache
//! without taking the arena's lock). See `benches/pull_vs_containerd.sh`.
//!
//! On top of that the daemon trims when its last pull ends and after a gc
//! pass, moments after which it has nothing to do. A trim costs a few
//! milliseconds of one thread, off the async workers.

/// Environment variables through which an operator may choose the arena
/// count themself; when one of them is set, the daemon leaves it alone.
const ARENA_SETTINGS_FROM_ENVIRONMENT: [&str; 2] = ["MALLOC_ARENA_MAX", "GLIBC_TUNABLES"];

/// Limits the C library's allocator to one arena, unless the environment
/// already says how many. Call it before the daemon starts its threads: a
/// thread that allocated before keeps the arena it has, and once a process
/// has more than eight arenas glibc fixes its limit for good, so a later
/// call would change nothing.
pub fn use_one_heap_arena() {
    if ARENA_SETTINGS_FROM_ENVIRONMENT
        .iter()
        .any(|name| std::env::var_os(name).is_some())
    {
        return;
    }
    set_arena_limit(1);
}

fn set_arena_limit(arenas: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// glibc's `M_ARENA_MAX` parameter of `mallopt` (malloc.h).
        const M_ARENA_MAX: std::ffi::c_int = -8;
        unsafe extern "C" {
            /// glibc: `int mallopt(int param, int value);`
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: `mallopt` takes the allocator's own lock; M_ARENA_MAX only
        // caps how many arenas later threads may create (existing arenas and
        // their allocations are untouched), so it is sound at any time. The
        // declaration matches glibc's prototype.
        unsafe {
            mallopt(M_ARENA_MAX, arenas);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// Releases free heap memory to the kernel, off the async runtime when there
/// is one. A no-op where the C library is not glibc.
pub fn release_free_heap_soon() {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(release_free_heap);
        }
        Err(_) => release_free_heap(),
    }
}

/// Releases free heap memory to the kernel now (blocking).
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            /// glibc: `int malloc_trim(size_t pad);`
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: `malloc_trim` has no preconditions: it takes each arena's
        // lock itself, so it is safe to call from any thread while others
        // allocate, and it only returns pages that hold no live allocation.
        // The declaration matches glibc's prototype (size_t is usize here).
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use std::ffi::{c_char, c_int, c_void};

    unsafe extern "C" {
        fn open_memstream(buffer: *mut *mut c_char, size: *mut usize) -> *mut c_void;
        fn malloc_info(options: c_int, stream: *mut c_void) -> c_int;
        fn fclose(stream: *mut c_void) -> c_int;
        fn free(pointer: *mut c_void);
    }

    /// How many arenas glibc has: one `<heap nr=…>` element each in
    /// `malloc_info`'s XML.
    fn arena_count() -> usize {
        let mut buffer: *mut c_char = std::ptr::null_mut();
        let mut size = 0usize;
        // SAFETY: open_memstream writes the buffer and size pointers, which
        // outlive the stream; malloc_info writes to the open stream; fclose
        // flushes and finalizes the buffer, which we copy and then free with
        // the allocator open_memstream used (malloc).
        let report = unsafe {
            let stream = open_memstream(&mut buffer, &mut size);
            assert!(!stream.is_null(), "open_memstream failed");
            assert_eq!(malloc_info(0, stream), 0, "malloc_info failed");
            assert_eq!(fclose(stream), 0, "fclose failed");
            let bytes = std::slice::from_raw_parts(buffer.cast::<u8>(), size).to_vec();
            free(buffer.cast());
            String::from_utf8(bytes).expect("malloc_info writes ASCII XML")
        };
        report.matches("<heap nr=").count()
    }

    /// Threads that allocate at the same moment, as the blocking pool does
    /// during parallel pulls. More of them than glibc's default limit on a
    /// two-core machine (16), so that without a limit some would get new
    /// arenas whatever the exited threads left to reuse.
    fn allocate_in_parallel_threads(threads: usize) {
        let barrier = std::sync::Barrier::new(threads);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    barrier.wait();
                    let blocks: Vec<Vec<u8>> = (0..256).map(|size| vec![1u8; size * 64]).collect();
                    std::hint::black_box(&blocks);
                    barrier.wait();
                });
            }
        });
    }

    /// Set in the child process of the test below: `limit` or `none`.
    const CHILD_MODE_VARIABLE: &str = "CRI_IMAGED_TEST_ARENA_CHILD";
    const CHILD_TEST: &str = "memory::tests::arena_count_in_a_fresh_process";

    /// Runs [`arena_count_in_a_fresh_process`] alone in a new process of this
    /// test binary; returns the arenas it counted before and after.
    fn arenas_in_a_fresh_process(mode: &str) -> (usize, usize) {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", CHILD_TEST, "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_MODE_VARIABLE, mode)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "the child test did not pass: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The harness prints the line after the test's name.
        let counts: Vec<usize> = stdout
            .split_once("arenas ")
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .take(2)
                    .filter_map(|count| count.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(counts.len(), 2, "no counts in the child's output: {stdout}");
        (counts[0], counts[1])
    }

    #[test]
    fn with_the_limit_new_threads_share_the_existing_arenas() {
        // In a process of its own: glibc fixes its arena limit for good once
        // a process has more than eight arenas, which this test binary, with
        // its threads, already may have (the daemon sets the limit before
        // it starts any thread).
        let (before, after) = arenas_in_a_fresh_process("none");
        assert!(
            after > before,
            "without the limit, threads allocating at once get arenas of their own ({before} -> {after})"
        );
        let (before, after) = arenas_in_a_fresh_process("limit");
        assert_eq!(
            after, before,
            "threads allocating at once made new arenas despite the limit"
        );
    }

    #[test]
    #[ignore = "a helper: with_the_limit_new_threads_share_the_existing_arenas runs it in a process of its own"]
    fn arena_count_in_a_fresh_process() {
        let Ok(mode) = std::env::var(CHILD_MODE_VARIABLE) else {
            return;
        };
        if mode == "limit" {
            super::set_arena_limit(1);
        }
        let before = arena_count();
        allocate_in_parallel_threads(24);
        println!("arenas {before} {}", arena_count());
    }
}
