//! Busy polling of a CRI connection between a client's calls.
//!
//! Why: on a VM whose idle vCPUs halt (no guest halt polling), waking a
//! thread that sleeps in `epoll_wait` costs a trip through the host: about
//! 33 us on the machine our benchmarks run on, against under 5 us on the same
//! CPU. A call pays two such wakeups, the daemon's on the request and the
//! client's on the answer, and together they were half of an ImageStatus
//! call's latency. When a client sends its calls back to back (a kubelet
//! starting a batch of pods, a script of `crictl` calls, an image GC pass),
//! the next request comes within tens of microseconds of the answer, so after
//! answering, the daemon keeps its thread on the CPU and polls the socket for
//! up to `window` (200 us by default, the kernel's own guest halt polling
//! default) instead of going to sleep: the request is then seen without a
//! wakeup. Back-to-back ImageStatus calls from our tonic client went from a
//! p50 of 102-125 us to 58-64 us with no more daemon CPU per call (the sleep
//! and wakeup it saves cost about what the polling does). A grpc-go client
//! (the kubelet's stack) comes back later, about 90 us after the answer: its
//! p50 went from 120-140 us to 90-125 us, for about 40 us more daemon CPU
//! per call, which `api_busy_poll_seconds_total` shows.
//!
//! When: only once the client has nothing left to wait for (every stream it
//! opened has been ended by us and the end written out), so polling never
//! holds up an answer; at most once per idle spell; and only when the
//! client's previous request came within `window` of the answer before it. A
//! client that calls now and then (the kubelet's steady state) is therefore
//! never polled for, and a burst costs at most one window at its end.
//!
//! How: the connection's bytes are followed in both directions at the frame
//! level (see [`http2_frame`](super::http2_frame)) to know which streams the
//! client opened and we have not ended. The polling itself is a `poll(2)`
//! with a zero timeout and a `sched_yield` between tries, so a client that
//! shares our CPU still runs.

use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

use super::http2_frame::{FRAME_TYPE_HEADERS, FRAME_TYPE_RST_STREAM, FrameFollower, FrameHeader};

/// The default polling window; the upstream kernel's
/// `haltpoll.guest_halt_poll_ns` default is the same.
pub const DEFAULT_WINDOW: Duration = Duration::from_micros(200);

/// The largest window the config accepts: the poll holds a runtime worker,
/// so it must stay short next to anything else that worker could run.
pub const WINDOW_MAX: Duration = Duration::from_millis(1);

/// More streams awaiting answers than this means a client the tracking is
/// not meant for; polling stops for the connection rather than the list
/// growing (h2 refuses streams past its own concurrency limit long before).
const AWAITED_STREAMS_MAX: usize = 1024;

/// One per connection: follows its bytes and polls when the client is
/// expected back soon.
pub struct BusyPoll {
    /// `Duration::ZERO` turns everything here off.
    window: Duration,
    streams: AwaitedStreams,
    /// Since when the client has had nothing to wait for; `None` while it
    /// waits for an answer.
    idle_since: Option<Instant>,
    /// The client's last request came within `window` of the moment it had
    /// nothing left to wait for.
    client_returns_quickly: bool,
    /// Where each poll is counted, with the time it took.
    metrics: Option<Arc<Metrics>>,
}

impl BusyPoll {
    pub fn new(window: Duration, metrics: Option<Arc<Metrics>>) -> BusyPoll {
        BusyPoll {
            window,
            streams: AwaitedStreams::new(),
            idle_since: None,
            client_returns_quickly: false,
            metrics,
        }
    }

    /// Takes bytes read from the client.
    pub fn client_sent(&mut self, bytes: &[u8]) {
        if self.window.is_zero() || !self.streams.client_sent(bytes) {
            return;
        }
        if let Some(idle_since) = self.idle_since.take() {
            self.client_returns_quickly = idle_since.elapsed() <= self.window;
        }
    }

    /// Takes bytes written to the client.
    pub fn server_sent(&mut self, bytes: &[u8]) {
        if !self.window.is_zero() {
            self.streams.server_sent(bytes);
        }
    }

    /// Called once everything written so far has gone out. If this starts an
    /// idle spell of a client that comes back quickly, polls `socket` until
    /// the client sends something or the window passes. Returns whether it
    /// polled.
    pub fn flushed(&mut self, socket: BorrowedFd<'_>) -> bool {
        if self.window.is_zero() || self.idle_since.is_some() || !self.streams.none_awaited() {
            return false;
        }
        let idle_since = Instant::now();
        self.idle_since = Some(idle_since);
        if !self.client_returns_quickly {
            return false;
        }
        let ended_by_input = poll_until_readable(socket, self.window);
        if let Some(metrics) = &self.metrics {
            metrics.record_busy_poll(ended_by_input, idle_since.elapsed());
        }
        true
    }
}

impl std::fmt::Debug for BusyPoll {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BusyPoll")
            .field("window", &self.window)
            .field("streams", &self.streams)
            .field("idle_since", &self.idle_since)
            .field("client_returns_quickly", &self.client_returns_quickly)
            .finish_non_exhaustive()
    }
}

/// Polls `socket` for readability without sleeping, until it is readable (or
/// closed, or in error: true) or `window` has passed (false).
fn poll_until_readable(socket: BorrowedFd<'_>, window: Duration) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    const NOW: Timespec = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let start = Instant::now();
    loop {
        let mut watched = [PollFd::from_borrowed_fd(socket, PollFlags::IN)];
        match poll(&mut watched, Some(&NOW)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => {}
            // Readable, hung up or in error: h2 finds out which on its read.
            Ok(_) | Err(_) => return true,
        }
        if start.elapsed() >= window {
            return false;
        }
        // Lets a client on this CPU run; returns at once when none waits.
        std::thread::yield_now();
    }
}

/// The streams a client opened that we have not ended, from the frames seen
/// in both directions.
#[derive(Debug)]
struct AwaitedStreams {
    from_client: FrameFollower,
    from_server: FrameFollower,
    awaited: Vec<u32>,
    /// Client streams are opened in increasing order; a HEADERS frame on a
    /// stream not above this one is trailers or a stream already known.
    last_opened: u32,
    /// The connection is not followed (not HTTP/2, or too many streams):
    /// the client always counts as waiting.
    untracked: bool,
}

impl AwaitedStreams {
    fn new() -> AwaitedStreams {
        AwaitedStreams {
            from_client: FrameFollower::client(),
            from_server: FrameFollower::server(),
            awaited: Vec::new(),
            last_opened: 0,
            untracked: false,
        }
    }

    /// Returns whether the bytes opened a stream.
    fn client_sent(&mut self, bytes: &[u8]) -> bool {
        let mut opened = false;
        let AwaitedStreams {
            from_client,
            awaited,
            last_opened,
            untracked,
            ..
        } = self;
        from_client.follow(bytes, |frame: FrameHeader| match frame.frame_type {
            FRAME_TYPE_HEADERS if frame.stream_id > *last_opened => {
                *last_opened = frame.stream_id;
                awaited.push(frame.stream_id);
                opened = true;
            }
            FRAME_TYPE_RST_STREAM => awaited.retain(|stream| *stream != frame.stream_id),
            _ => {}
        });
        if from_client.is_lost() || awaited.len() > AWAITED_STREAMS_MAX {
            *untracked = true;
        }
        opened
    }

    fn server_sent(&mut self, bytes: &[u8]) {
        let awaited = &mut self.awaited;
        self.from_server.follow(bytes, |frame| {
            if frame.ends_stream() || frame.frame_type == FRAME_TYPE_RST_STREAM {
                awaited.retain(|stream| *stream != frame.stream_id);
            }
        });
    }

    fn none_awaited(&self) -> bool {
        !self.untracked && self.awaited.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::http2_frame::{
        CLIENT_PREFACE, FLAG_END_HEADERS, FLAG_END_STREAM, FRAME_TYPE_DATA,
    };
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    fn frame(frame_type: u8, flags: u8, stream_id: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        FrameHeader::write(3, frame_type, flags, stream_id, &mut bytes);
        bytes.extend_from_slice(b"abc");
        bytes
    }

    fn request(stream_id: u32) -> Vec<u8> {
        let mut bytes = frame(FRAME_TYPE_HEADERS, FLAG_END_HEADERS, stream_id);
        bytes.extend(frame(FRAME_TYPE_DATA, FLAG_END_STREAM, stream_id));
        bytes
    }

    fn answer(stream_id: u32) -> Vec<u8> {
        let mut bytes = frame(FRAME_TYPE_HEADERS, FLAG_END_HEADERS, stream_id);
        bytes.extend(frame(FRAME_TYPE_DATA, 0, stream_id));
        bytes.extend(frame(
            FRAME_TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            stream_id,
        ));
        bytes
    }

    #[test]
    fn a_stream_is_awaited_from_the_clients_headers_until_we_end_or_either_side_resets_it() {
        let mut streams = AwaitedStreams::new();
        assert!(!streams.client_sent(CLIENT_PREFACE));
        assert!(streams.none_awaited());
        assert!(streams.client_sent(&request(1)));
        assert!(streams.client_sent(&request(3)));
        // The answer's first frames do not end the stream; its trailers do.
        let answer_1 = answer(1);
        streams.server_sent(&answer_1[..answer_1.len() - 1]);
        assert!(!streams.none_awaited());
        streams.server_sent(&answer_1[answer_1.len() - 1..]);
        assert!(!streams.none_awaited(), "stream 3 is still awaited");
        streams.server_sent(&frame(FRAME_TYPE_RST_STREAM, 0, 3));
        assert!(streams.none_awaited());

        // Client trailers on an open stream open nothing; a client reset ends it.
        assert!(streams.client_sent(&request(5)));
        assert!(!streams.client_sent(&frame(FRAME_TYPE_HEADERS, FLAG_END_STREAM, 5)));
        assert!(!streams.none_awaited());
        streams.client_sent(&frame(FRAME_TYPE_RST_STREAM, 0, 5));
        assert!(streams.none_awaited());
    }

    #[test]
    fn a_connection_that_is_not_http2_always_counts_as_waiting() {
        let mut streams = AwaitedStreams::new();
        streams.client_sent(b"GET / HTTP/1.1\r\n\r\n");
        assert!(!streams.none_awaited());
    }

    #[test]
    fn a_client_that_opens_too_many_streams_always_counts_as_waiting() {
        let mut streams = AwaitedStreams::new();
        streams.client_sent(CLIENT_PREFACE);
        for stream in 0..=AWAITED_STREAMS_MAX as u32 {
            streams.client_sent(&request(2 * stream + 1));
        }
        for stream in 0..=AWAITED_STREAMS_MAX as u32 {
            streams.server_sent(&answer(2 * stream + 1));
        }
        assert!(!streams.none_awaited());
    }

    /// One exchange: the client's request, our answer, the flush after it.
    /// Returns whether the flush polled.
    fn exchange(poll: &mut BusyPoll, socket: &UnixStream, stream_id: u32) -> bool {
        poll.client_sent(&request(stream_id));
        assert!(
            !poll.flushed(socket.as_fd()),
            "nothing polls while a stream is awaited"
        );
        poll.server_sent(&answer(stream_id));
        poll.flushed(socket.as_fd())
    }

    #[test]
    fn polling_starts_after_a_quick_return_and_stops_after_a_slow_one() {
        let (socket, _peer) = UnixStream::pair().unwrap();
        let window = Duration::from_millis(50);
        let metrics = Arc::new(Metrics::new());
        let mut poll = BusyPoll::new(window, Some(metrics.clone()));
        poll.client_sent(CLIENT_PREFACE);
        assert!(!exchange(&mut poll, &socket, 1), "no gap seen yet");
        assert!(!poll.flushed(socket.as_fd()), "once per idle spell");
        // Back within the window: the next idle spell polls, for the whole
        // window since the client sends nothing.
        let polled_at = Instant::now();
        assert!(exchange(&mut poll, &socket, 3));
        assert!(polled_at.elapsed() >= window);
        assert!(!poll.flushed(socket.as_fd()), "once per idle spell");
        // Back after the window (the poll above took all of it): no poll.
        assert!(!exchange(&mut poll, &socket, 5));
        // Back quickly again: polling again.
        assert!(exchange(&mut poll, &socket, 7));
        let exposition = metrics.encode();
        assert!(
            exposition.contains("cri_imaged_api_busy_polls_total{outcome=\"window_passed\"} 2"),
            "{exposition}"
        );
    }

    #[test]
    fn polling_ends_as_soon_as_the_client_sends() {
        use std::io::Write;
        let (socket, mut peer) = UnixStream::pair().unwrap();
        let window = Duration::from_secs(30);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            peer.write_all(b"x").unwrap();
            peer
        });
        let started = Instant::now();
        assert!(poll_until_readable(socket.as_fd(), window));
        assert!(started.elapsed() < window / 2);
        drop(sender.join().unwrap());
    }

    #[test]
    fn a_zero_window_follows_nothing_and_never_polls() {
        let (socket, _peer) = UnixStream::pair().unwrap();
        let mut poll = BusyPoll::new(Duration::ZERO, None);
        poll.client_sent(CLIENT_PREFACE);
        for stream in [1, 3, 5] {
            assert!(!exchange(&mut poll, &socket, stream));
        }
        assert!(poll.streams.awaited.is_empty() && poll.streams.last_opened == 0);
    }
}
