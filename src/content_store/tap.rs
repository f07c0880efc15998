//! Taps: readers that follow a blob's bytes while an ingest writes them, so a
//! layer can be unpacked while it is still downloading.
//!
//! A pull opens a [`BlobTap`] on a layer's digest before the download starts
//! and hands [`BlobTap::reader`] to the unpacker. Every ingest of that digest
//! publishes to the taps open on it: the file it writes (the partial file, and
//! after the rename the same inode under `blobs/`), how many bytes are written,
//! and its end. The reader reads only bytes already written (`pread` on its
//! own handle) and blocks for more; it reaches end of file only once the ingest
//! has verified the whole blob's size and digest.
//!
//! What the unpacker reads before the digest check is not trusted yet: it goes
//! into a snapshot directory that stays `extracting` until both the blob is
//! verified and the layer's diff id matches, and is discarded otherwise. An
//! ingest that restarts (a resume truncates the partial file) rewrites the same
//! bytes at the same offsets, which the final digest check proves.
//!
//! The pull owns the tap: when its download ends in failure, or the pull is
//! dropped, the tap ends with an error and the reader returns it, so an
//! unpacker thread never waits for bytes that will not come.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use crate::reference::Digest;

/// The taps open on digests being ingested.
#[derive(Default)]
pub(crate) struct BlobTaps {
    open: Mutex<HashMap<Digest, Vec<Weak<TapState>>>>,
}

#[derive(Default)]
struct TapState {
    progress: Mutex<TapProgress>,
    changed: Condvar,
}

#[derive(Default)]
struct TapProgress {
    file: Option<Arc<File>>,
    /// Bytes of the blob written to `file` so far.
    written_bytes: u64,
    /// `Some(Ok(size))` once the blob is verified and in place.
    end: Option<Result<u64, String>>,
}

impl TapState {
    fn lock(&self) -> MutexGuard<'_, TapProgress> {
        self.progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut TapProgress)) {
        let mut progress = self.lock();
        // The end is final: a late update from an ingest that lost a race
        // changes nothing for a reader that was already told.
        if progress.end.is_none() {
            change(&mut progress);
        }
        drop(progress);
        self.changed.notify_all();
    }
}

impl BlobTaps {
    pub(crate) fn open(self: &Arc<Self>, digest: &Digest) -> BlobTap {
        let state = Arc::new(TapState::default());
        let mut open = self.lock();
        open.retain(|_, taps| {
            taps.retain(|tap| tap.strong_count() > 0);
            !taps.is_empty()
        });
        open.entry(digest.clone())
            .or_default()
            .push(Arc::downgrade(&state));
        BlobTap { state }
    }

    /// An ingest of `digest` writes to `file`, of which `written_bytes` are
    /// already the blob's.
    pub(crate) fn publish_file(&self, digest: &Digest, file: &File, written_bytes: u64) {
        let taps = self.taps_of(digest);
        if taps.is_empty() {
            return;
        }
        let file = match file.try_clone() {
            Ok(file) => Arc::new(file),
            Err(error) => {
                let reason = format!("cannot share the file of blob {digest}: {error}");
                for tap in taps {
                    tap.update(|progress| progress.end = Some(Err(reason.clone())));
                }
                return;
            }
        };
        for tap in taps {
            tap.update(|progress| {
                progress.file = Some(file.clone());
                progress.written_bytes = written_bytes;
            });
        }
    }

    pub(crate) fn publish_written(&self, digest: &Digest, written_bytes: u64) {
        for tap in self.taps_of(digest) {
            tap.update(|progress| progress.written_bytes = written_bytes);
        }
    }

    /// The blob is verified and in place; `file` is a handle on it.
    pub(crate) fn publish_complete(&self, digest: &Digest, file: &File, size_bytes: u64) {
        let taps = self.taps_of(digest);
        if taps.is_empty() {
            return;
        }
        let file = file.try_clone().map(Arc::new);
        for tap in taps {
            tap.update(|progress| match &file {
                Ok(file) => {
                    progress.file = Some(file.clone());
                    progress.written_bytes = size_bytes;
                    progress.end = Some(Ok(size_bytes));
                }
                Err(error) => {
                    progress.end = Some(Err(format!(
                        "cannot share the file of blob {digest}: {error}"
                    )));
                }
            });
        }
    }

    pub(crate) fn has_taps(&self, digest: &Digest) -> bool {
        !self.taps_of(digest).is_empty()
    }

    /// The taps on `digest` that have not ended.
    fn taps_of(&self, digest: &Digest) -> Vec<Arc<TapState>> {
        let mut live: Vec<Arc<TapState>> = self
            .lock()
            .get(digest)
            .map(|taps| taps.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default();
        live.retain(|tap| tap.lock().end.is_none());
        live
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Digest, Vec<Weak<TapState>>>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The owner's end of a tap: dropping it without [`BlobTap::fail`] or a
/// completed ingest ends the tap with an error.
pub struct BlobTap {
    state: Arc<TapState>,
}

impl BlobTap {
    /// A reader of the blob's bytes; several may read one tap.
    pub fn reader(&self) -> TapReader {
        TapReader {
            state: self.state.clone(),
            position: 0,
            wait_hook: None,
            waiting: false,
        }
    }

    /// Ends the tap: the download failed with `reason`.
    pub fn fail(&self, reason: &str) {
        self.state
            .update(|progress| progress.end = Some(Err(reason.to_owned())));
    }
}

impl Drop for BlobTap {
    fn drop(&mut self) {
        self.fail("the download of this blob ended before it completed");
    }
}

/// Told when a [`TapReader`] starts and stops waiting for bytes the download
/// has not written yet. The unpacker gives its node-wide extraction slot back
/// for the wait: a layer that waits on a slow or stalled registry uses no
/// CPU, and must not keep the layers whose bytes are there from unpacking.
pub trait TapWaitHook: Send {
    /// The reader is about to block until more bytes (or the end) arrive.
    fn wait_started(&mut self);
    /// The bytes (or the end) arrived; called on the reader's thread, which
    /// it may block (to take a slot back) before the reader returns them.
    fn wait_ended(&mut self);
}

/// Reads a tapped blob from the start, blocking until bytes are written.
/// Meant for blocking threads (the unpacker), never for async tasks.
pub struct TapReader {
    state: Arc<TapState>,
    position: u64,
    wait_hook: Option<Box<dyn TapWaitHook>>,
    /// Whether the hook was told of a wait that has not ended.
    waiting: bool,
}

/// What a reader found past its position.
enum Readable {
    /// `available` bytes of the blob are in `file` past the position.
    Bytes { file: Arc<File>, available: u64 },
    /// The blob is verified and read to its end.
    End,
}

impl TapReader {
    /// Tells `hook` around every wait for bytes from now on. The hook starts
    /// as if a wait had begun: its first [`TapWaitHook::wait_ended`] comes
    /// when the reader first has bytes (or the end) to return.
    pub fn set_wait_hook(&mut self, hook: Box<dyn TapWaitHook>) {
        self.wait_hook = Some(hook);
        self.waiting = true;
    }

    /// Blocks until the blob has bytes past the position or has ended (the
    /// hook's first `wait_ended` comes here). Lets the unpacker wait for a
    /// download that has not started without allocating anything.
    pub fn wait_for_bytes(&mut self) -> std::io::Result<()> {
        self.wait_readable().map(|_| ())
    }

    /// Drops the blob's pages from the page cache, once it is verified and
    /// stored (its end of file was read). A layer blob is read once, by its
    /// unpack, and then only kept for a later pull to skip the download: its
    /// cached pages (300 MB for `bench/large`) would only push out what
    /// containers read. Advice only: a failure changes nothing but the cache.
    pub fn drop_cached_pages(&self) {
        let progress = self.state.lock();
        if let (Some(Ok(_)), Some(file)) = (&progress.end, &progress.file) {
            // The ingest synced the blob before it ended the tap, so its
            // pages are clean and the kernel drops them here.
            let _ = rustix::fs::fadvise(&**file, 0, None, rustix::fs::Advice::DontNeed);
        }
    }

    /// Blocks until there is something to read past the position, telling
    /// the hook around the wait. The progress lock is never held while the
    /// hook runs: `wait_ended` may block, and the ingest must keep
    /// publishing meanwhile.
    fn wait_readable(&mut self) -> std::io::Result<Readable> {
        let mut progress = self.state.lock();
        loop {
            if let Some(Err(reason)) = &progress.end {
                return Err(std::io::Error::other(reason.clone()));
            }
            let readable = match (&progress.file, progress.end.as_ref()) {
                (Some(file), _) if progress.written_bytes > self.position => {
                    Some(Readable::Bytes {
                        file: file.clone(),
                        available: progress.written_bytes - self.position,
                    })
                }
                (_, Some(Ok(size_bytes))) if self.position >= *size_bytes => Some(Readable::End),
                _ => None,
            };
            if let Some(readable) = readable {
                drop(progress);
                if self.waiting {
                    self.waiting = false;
                    if let Some(hook) = &mut self.wait_hook {
                        hook.wait_ended();
                    }
                }
                return Ok(readable);
            }
            if !self.waiting
                && let Some(hook) = &mut self.wait_hook
            {
                drop(progress);
                self.waiting = true;
                hook.wait_started();
                // What changed meanwhile is looked at again before waiting.
                progress = self.state.lock();
                continue;
            }
            progress = self
                .state
                .changed
                .wait(progress)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

impl std::io::Read for TapReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if buffer.is_empty() {
            return Ok(0);
        }
        loop {
            let (file, available) = match self.wait_readable()? {
                Readable::End => return Ok(0),
                Readable::Bytes { file, available } => (file, available),
            };
            let wanted = buffer
                .len()
                .min(usize::try_from(available).unwrap_or(usize::MAX));
            let read = file.read_at(&mut buffer[..wanted], self.position)?;
            if read == 0 {
                // Written bytes must be readable; a shorter file means the
                // ingest truncated it to restart: wait for the rewrite.
                let progress = self.state.lock();
                if progress.written_bytes > self.position && progress.end.is_none() {
                    drop(
                        self.state
                            .changed
                            .wait(progress)
                            .unwrap_or_else(|poisoned| poisoned.into_inner()),
                    );
                }
                continue;
            }
            self.position += read as u64;
            return Ok(read);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// A file both written and read, as the ingest's partial file is.
    fn read_write_file(path: &std::path::Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }

    fn digest() -> Digest {
        Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap()
    }

    #[test]
    fn a_reader_follows_the_writer_and_ends_only_when_complete() {
        let taps = Arc::new(BlobTaps::default());
        let tap = taps.open(&digest());
        let mut reader = tap.reader();
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("blob.partial");
        let mut file = read_write_file(&path);
        let reading = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes).map(|_| bytes)
        });
        taps.publish_file(&digest(), &file, 0);
        let mut written = 0;
        for chunk in [&b"hello "[..], b"streaming ", b"world"] {
            file.write_all(chunk).unwrap();
            written += chunk.len() as u64;
            taps.publish_written(&digest(), written);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            !reading.is_finished(),
            "no end of file before the blob is complete"
        );
        taps.publish_complete(&digest(), &file, written);
        assert_eq!(reading.join().unwrap().unwrap(), b"hello streaming world");
    }

    #[test]
    fn dropping_the_cached_pages_of_a_complete_blob_keeps_its_bytes() {
        let taps = Arc::new(BlobTaps::default());
        let tap = taps.open(&digest());
        let directory = tempfile::tempdir().unwrap();
        let mut file = read_write_file(&directory.path().join("blob"));
        let bytes: Vec<u8> = (0..256 * 1024u32).map(|index| index as u8).collect();
        file.write_all(&bytes).unwrap();
        file.sync_all().unwrap();
        // Before the blob is complete the advice is not given (nothing to
        // check but that it neither blocks nor ends the tap).
        let early = tap.reader();
        early.drop_cached_pages();
        taps.publish_complete(&digest(), &file, bytes.len() as u64);
        let mut first = tap.reader();
        let mut read = Vec::new();
        first.read_to_end(&mut read).unwrap();
        assert!(read == bytes);
        first.drop_cached_pages();
        // What the cache no longer holds is read from the file again.
        let mut second = tap.reader();
        let mut again = Vec::new();
        second.read_to_end(&mut again).unwrap();
        assert!(
            again == bytes,
            "the blob reads the same after its pages were dropped"
        );
        let mut early = early;
        let mut from_early = Vec::new();
        early.read_to_end(&mut from_early).unwrap();
        assert!(from_early == bytes);
    }

    #[test]
    fn a_failed_or_dropped_tap_ends_its_reader_with_an_error() {
        let taps = Arc::new(BlobTaps::default());
        let tap = taps.open(&digest());
        let mut reader = tap.reader();
        let reading = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes)
        });
        tap.fail("registry went away");
        let error = reading.join().unwrap().unwrap_err();
        assert!(error.to_string().contains("registry went away"), "{error}");

        let tap = taps.open(&digest());
        let mut reader = tap.reader();
        drop(tap);
        assert!(reader.read(&mut [0; 8]).is_err());
        assert!(!taps.has_taps(&digest()), "dropped taps are forgotten");
    }

    #[test]
    fn a_restarted_ingest_is_followed_through_its_rewrite() {
        let taps = Arc::new(BlobTaps::default());
        let tap = taps.open(&digest());
        let mut reader = tap.reader();
        let directory = tempfile::tempdir().unwrap();
        let mut file = read_write_file(&directory.path().join("blob"));
        file.write_all(b"abcdef").unwrap();
        taps.publish_file(&digest(), &file, 6);
        let mut first = [0; 4];
        reader.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"abcd");
        // The ingest restarts from zero (the server ignored Range) and writes
        // the same bytes again.
        file.set_len(0).unwrap();
        taps.publish_written(&digest(), 0);
        let reading = std::thread::spawn(move || {
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).map(|_| rest)
        });
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        file.write_all(b"abcdefgh").unwrap();
        taps.publish_written(&digest(), 8);
        taps.publish_complete(&digest(), &file, 8);
        assert_eq!(reading.join().unwrap().unwrap(), b"efgh");
    }

    #[test]
    fn completion_is_final() {
        let taps = Arc::new(BlobTaps::default());
        let tap = taps.open(&digest());
        let mut reader = tap.reader();
        let directory = tempfile::tempdir().unwrap();
        let mut file = read_write_file(&directory.path().join("blob"));
        file.write_all(b"xy").unwrap();
        taps.publish_complete(&digest(), &file, 2);
        tap.fail("too late");
        drop(tap);
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, b"xy");
    }

    /// Records what a reader told its hook.
    #[derive(Clone, Default)]
    struct RecordingHook {
        events: Arc<Mutex<Vec<&'static str>>>,
    }

    impl TapWaitHook for RecordingHook {
        fn wait_started(&mut self) {
            self.events.lock().unwrap().push("started");
        }

        fn wait_ended(&mut self) {
            self.events.lock().unwrap().push("ended");
        }
    }

    /// A tap on `digest()` and a reader of it whose hook records its events.
    fn reader_with_recording_hook() -> (
        Arc<BlobTaps>,
        BlobTap,
        TapReader,
        Arc<Mutex<Vec<&'static str>>>,
    ) {
        let taps = Arc::new(BlobTaps::default());
        let tap = taps.open(&digest());
        let mut reader = tap.reader();
        let hook = RecordingHook::default();
        let events = hook.events.clone();
        reader.set_wait_hook(Box::new(hook));
        (taps, tap, reader, events)
    }

    #[test]
    fn the_wait_hook_is_told_around_each_wait_and_not_while_bytes_are_there() {
        let (taps, _tap, mut reader, events) = reader_with_recording_hook();
        let directory = tempfile::tempdir().unwrap();
        let mut file = read_write_file(&directory.path().join("blob"));
        file.write_all(b"abcd").unwrap();
        taps.publish_file(&digest(), &file, 4);
        // Bytes are there: the hook's initial wait ends, nothing blocks.
        reader.wait_for_bytes().unwrap();
        let mut first = [0; 2];
        reader.read_exact(&mut first).unwrap();
        reader.read_exact(&mut first).unwrap();
        assert_eq!(*events.lock().unwrap(), ["ended"]);
        let reading = std::thread::spawn(move || {
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).map(|_| rest)
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while events.lock().unwrap().len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the reader never waited"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(*events.lock().unwrap(), ["ended", "started"]);
        file.write_all(b"ef").unwrap();
        taps.publish_complete(&digest(), &file, 6);
        assert_eq!(reading.join().unwrap().unwrap(), b"ef");
        assert_eq!(
            *events.lock().unwrap(),
            ["ended", "started", "ended"],
            "one wait for the last bytes, whose end of file came with them"
        );
    }

    #[test]
    fn a_failed_tap_ends_the_wait_without_telling_the_hook() {
        let (_taps, tap, mut reader, events) = reader_with_recording_hook();
        let reading = std::thread::spawn(move || reader.wait_for_bytes());
        std::thread::sleep(std::time::Duration::from_millis(20));
        tap.fail("registry went away");
        assert!(reading.join().unwrap().is_err());
        // No `ended`: a failed layer takes no slot back just to give it up.
        assert!(
            events.lock().unwrap().is_empty(),
            "{:?}",
            events.lock().unwrap()
        );
    }
}
