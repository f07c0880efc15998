//! Decompression on a thread of its own, a few chunks ahead of extraction.
//!
//! Why: unpacking a layer is two halves of similar cost. One is inflating
//! the blob and hashing the tar stream into the diff id; the other is
//! parsing the tar and creating the files (a few syscalls per entry, and
//! copying the data into the page cache). On one thread a layer unpacks at
//! the speed of one core, so an image with fewer layers than the node has
//! cores, or with one layer much larger than the rest, left cores idle: in
//! `bench/many-files` the largest layer took 245 ms while the others were
//! done after 160. Here the decompressing side fills 256 KiB chunks and hands
//! them over a bounded channel to the extracting side, which parses them in
//! place; emptied chunks go back to be refilled, so memory stays at a few
//! chunks per layer.
//!
//! Errors travel with the bytes: an `io::Error` of the decompressor or of
//! the [`super::decompress::HashingReader`] (a corrupt stream, the
//! uncompressed size limit) reaches the extractor as the same value, where
//! it is mapped exactly as it was without the thread. When the extractor
//! stops early (a hostile entry), the decompressor stops at its next chunk.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

/// The bytes of one hand-over.
const CHUNK_BYTES: usize = 256 << 10;
/// Filled chunks waiting for the extractor: enough to ride out a burst of
/// small files on one side or a slow stretch of the blob on the other.
const CHUNKS_AHEAD: usize = 4;

/// Runs `consume` on the bytes of `source`, with `source` read on a thread
/// of its own; returns what `consume` returned and `source`, read up to
/// where `consume` stopped (to its end when `consume` read everything).
///
/// Should the thread not start (the process is out of threads), `source` is
/// read on the calling thread instead: slower, but the same bytes.
/// `input_wait`, if given, is told whenever the consuming side has emptied
/// every chunk and must wait for the decompressing side.
pub(super) fn read_ahead<S, T>(
    source: S,
    input_wait: Option<&dyn InputWaitHook>,
    consume: impl FnOnce(&mut dyn BufRead) -> T,
) -> (T, S)
where
    S: Read + Send,
{
    // The source moves into the thread and comes back when it ends; the slot
    // lets the fallback take it back if the thread cannot start.
    let slot = std::sync::Mutex::new(Some(source));
    let slot = &slot;
    std::thread::scope(|scope| {
        let (filled_sender, filled) = sync_channel(CHUNKS_AHEAD);
        let (emptied_sender, emptied) = sync_channel(CHUNKS_AHEAD + 2);
        let spawned = std::thread::Builder::new()
            .name("layer-inflate".to_owned())
            .spawn_scoped(scope, move || {
                fill_chunks(take(slot), filled_sender, emptied)
            });
        let producer = match spawned {
            Ok(producer) => producer,
            Err(error) => {
                tracing::debug!(%error, "no read-ahead thread; decompressing on the extracting thread");
                let mut buffered = BufReader::with_capacity(CHUNK_BYTES, take(slot));
                let consumed = consume(&mut buffered);
                return (consumed, buffered.into_inner());
            }
        };
        let mut reader = ChunkReader {
            filled,
            emptied: emptied_sender,
            current: None,
            position: 0,
            failed: false,
            input_wait,
        };
        let consumed = consume(&mut reader);
        // A producer waiting for room sees the channel closed and stops.
        drop(reader);
        let source = producer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (consumed, source)
    })
}

fn take<S>(slot: &std::sync::Mutex<Option<S>>) -> S {
    slot.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
        .expect("the source is taken once")
}

/// One filled chunk: `bytes[..length]` are the stream's.
struct Chunk {
    bytes: Vec<u8>,
    length: usize,
}

/// The decompressing side: fills chunks from `source` until its end, an
/// error, or the extractor hanging up; returns `source`.
fn fill_chunks<S: Read>(
    mut source: S,
    filled: SyncSender<io::Result<Chunk>>,
    emptied: Receiver<Vec<u8>>,
) -> S {
    loop {
        // Chunks are allocated and zeroed once, then reused: what the
        // extractor emptied comes back here.
        let mut bytes = match emptied.try_recv() {
            Ok(bytes) => bytes,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => vec![0; CHUNK_BYTES],
        };
        let mut length = 0;
        let ended = loop {
            match source.read(&mut bytes[length..]) {
                Ok(0) => break Ok(true),
                Ok(read) => {
                    length += read;
                    if length == bytes.len() {
                        break Ok(false);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => break Err(error),
            }
        };
        if length > 0 && filled.send(Ok(Chunk { bytes, length })).is_err() {
            return source;
        }
        match ended {
            Ok(false) => {}
            // Dropping the sender is the end of the stream.
            Ok(true) => return source,
            Err(error) => {
                let _ = filled.send(Err(error));
                return source;
            }
        }
    }
}

/// Told when the extracting side has nothing left to extract and waits for
/// the decompressing side, and when it has a chunk (or the end) again.
pub trait InputWaitHook: Sync {
    fn input_wait_started(&self);
    /// May block (to take an extraction slot back) before extraction goes on.
    fn input_wait_ended(&self);
}

/// The extracting side: the chunks, in order, as a `BufRead`.
struct ChunkReader<'h> {
    filled: Receiver<io::Result<Chunk>>,
    emptied: SyncSender<Vec<u8>>,
    current: Option<Chunk>,
    position: usize,
    /// The stream failed: every later read fails too, never a clean end.
    failed: bool,
    input_wait: Option<&'h dyn InputWaitHook>,
}

impl ChunkReader<'_> {
    /// The next chunk, telling the hook if it has to wait for it.
    fn next_chunk(&self) -> Result<io::Result<Chunk>, std::sync::mpsc::RecvError> {
        let Some(hook) = self.input_wait else {
            return self.filled.recv();
        };
        match self.filled.try_recv() {
            Ok(received) => Ok(received),
            Err(TryRecvError::Disconnected) => Err(std::sync::mpsc::RecvError),
            Err(TryRecvError::Empty) => {
                hook.input_wait_started();
                let received = self.filled.recv();
                hook.input_wait_ended();
                received
            }
        }
    }
}

impl BufRead for ChunkReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self
            .current
            .as_ref()
            .is_none_or(|chunk| self.position == chunk.length)
        {
            if self.failed {
                return Err(io::Error::other("the layer stream failed before this read"));
            }
            if let Some(used) = self.current.take() {
                // Full only if the producer has stopped taking them back.
                let _ = self.emptied.try_send(used.bytes);
            }
            match self.next_chunk() {
                Ok(Ok(chunk)) => {
                    self.current = Some(chunk);
                    self.position = 0;
                }
                Ok(Err(error)) => {
                    self.failed = true;
                    return Err(error);
                }
                // The producer ended without an error: the end of the stream.
                Err(_) => return Ok(&[]),
            }
        }
        let chunk = self.current.as_ref().expect("checked by the loop");
        Ok(&chunk.bytes[self.position..chunk.length])
    }

    fn consume(&mut self, amount: usize) {
        self.position += amount;
    }
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let copied = available.len().min(buffer.len());
        buffer[..copied].copy_from_slice(&available[..copied]);
        self.consume(copied);
        Ok(copied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that gives `bytes` in reads of at most `step` bytes, then
    /// fails with `error` if one is set, and counts how far it was read.
    struct SteppedSource {
        bytes: Vec<u8>,
        position: usize,
        step: usize,
        error: Option<io::ErrorKind>,
    }

    impl Read for SteppedSource {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            if self.position == self.bytes.len() {
                return match self.error {
                    Some(kind) => Err(io::Error::new(kind, "source failed")),
                    None => Ok(0),
                };
            }
            let length = buffer
                .len()
                .min(self.step)
                .min(self.bytes.len() - self.position);
            buffer[..length].copy_from_slice(&self.bytes[self.position..][..length]);
            self.position += length;
            Ok(length)
        }
    }

    fn patterned(length: usize) -> Vec<u8> {
        (0..length).map(|index| (index * 7 % 251) as u8).collect()
    }

    #[test]
    fn every_byte_arrives_in_order_across_chunks() {
        // Odd read sizes, several chunks, and a partial last chunk.
        let bytes = patterned(CHUNK_BYTES * 9 + 12_345);
        let source = SteppedSource {
            bytes: bytes.clone(),
            position: 0,
            step: 10_007,
            error: None,
        };
        let (received, source) = read_ahead(source, None, |reader| {
            let mut received = Vec::new();
            reader.read_to_end(&mut received).map(|_| received)
        });
        assert!(
            received.unwrap() == bytes,
            "bytes lost, duplicated or reordered"
        );
        assert_eq!(
            source.position,
            bytes.len(),
            "the source is read to its end"
        );
    }

    #[test]
    fn an_empty_source_is_a_clean_end() {
        let source = SteppedSource {
            bytes: Vec::new(),
            position: 0,
            step: 1,
            error: None,
        };
        let (received, _source) =
            read_ahead(source, None, |reader| reader.fill_buf().map(<[u8]>::len));
        assert_eq!(received.unwrap(), 0);
    }

    #[test]
    fn a_source_error_reaches_the_reader_after_the_bytes_before_it() {
        let bytes = patterned(CHUNK_BYTES + 100);
        let source = SteppedSource {
            bytes: bytes.clone(),
            position: 0,
            step: 4096,
            error: Some(io::ErrorKind::InvalidData),
        };
        let (outcome, _source) = read_ahead(source, None, |reader| {
            let mut received = Vec::new();
            let error = reader.read_to_end(&mut received).unwrap_err();
            // Once failed, never a clean end of the stream.
            let again = reader.fill_buf().map(<[u8]>::len);
            (received, error, again.is_err())
        });
        let (received, error, fails_again) = outcome;
        assert!(received == bytes, "the bytes before the error arrive");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(error.to_string(), "source failed", "the source's own error");
        assert!(fails_again);
    }

    #[test]
    fn a_reader_that_stops_early_stops_the_source_within_a_few_chunks() {
        let total = CHUNK_BYTES * 64;
        let source = SteppedSource {
            bytes: patterned(total),
            position: 0,
            step: CHUNK_BYTES,
            error: None,
        };
        let (first, source) = read_ahead(source, None, |reader| {
            let mut first = [0u8; 10];
            reader.read_exact(&mut first).map(|()| first)
        });
        assert_eq!(first.unwrap()[..], patterned(10)[..]);
        // What was filled ahead, at most: the channel's chunks, the one the
        // reader held, and the one being filled when the reader hung up.
        assert!(
            source.position <= CHUNK_BYTES * (CHUNKS_AHEAD + 2),
            "the source was read to {} of {total} bytes after the reader stopped",
            source.position
        );
    }

    /// Counts the waits it is told of, and checks they pair up.
    #[derive(Default)]
    struct CountingHook {
        started: std::sync::atomic::AtomicUsize,
        ended: std::sync::atomic::AtomicUsize,
    }

    impl InputWaitHook for CountingHook {
        fn input_wait_started(&self) {
            let started = self
                .started
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(
                started,
                self.ended.load(std::sync::atomic::Ordering::SeqCst),
                "a wait starts only after the last one ended"
            );
        }

        fn input_wait_ended(&self) {
            self.ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A source that sleeps before each read, as a download does between
    /// packets.
    struct SlowSource(SteppedSource);

    impl Read for SlowSource {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(std::time::Duration::from_millis(2));
            self.0.read(buffer)
        }
    }

    #[test]
    fn the_extractor_tells_the_hook_when_it_waits_for_the_decompressor() {
        let bytes = patterned(CHUNK_BYTES * 3 + 1);
        let source = SlowSource(SteppedSource {
            bytes: bytes.clone(),
            position: 0,
            // Each chunk takes tens of reads: the extractor outruns them.
            step: CHUNK_BYTES / 16,
            error: None,
        });
        let hook = CountingHook::default();
        let (received, _source) = read_ahead(source, Some(&hook), |reader| {
            let mut received = Vec::new();
            reader.read_to_end(&mut received).map(|_| received)
        });
        assert!(received.unwrap() == bytes);
        let started = hook.started.load(std::sync::atomic::Ordering::SeqCst);
        let ended = hook.ended.load(std::sync::atomic::Ordering::SeqCst);
        // One wait for each of the 4 chunks and for the end, give or take
        // the first chunk, which may already be there.
        assert!(started >= 4, "{started} waits");
        assert_eq!(started, ended, "every wait ended");
    }
}
