//! The byte stream under each accepted CRI connection. It does three things
//! to the bytes between the socket and h2, and watches them for a fourth.
//!
//! Reading: what the client sends goes through an
//! [`AuthorityRewriter`](super::authority_rewrite::AuthorityRewriter), so
//! that gRPC C-core clients (Python, C++, Ruby, PHP), which send the
//! percent-encoded socket path as `:authority` for a `unix:` target, are not
//! reset by h2 for a malformed authority (see that module). For every other
//! client the bytes pass unchanged.
//!
//! Writing: h2 copies a DATA frame's payload into its write buffer only when
//! the payload is shorter than a threshold: 256 bytes when the stream says it
//! writes vectored, 1024 otherwise. A longer payload is chained, and a
//! chained frame is written out before the next frame can be buffered. A
//! typical unary answer (an `ImageStatusResponse` of 300-900 bytes) therefore
//! left in two writes, the headers and message, then the `grpc-status`
//! trailers, and the client woke up twice per call. Saying "not vectored"
//! raises the threshold to 1024 bytes, so such an answer leaves in one write.
//! Larger answers (ListImages) are chained as before and cost one more
//! `write` per 16 KiB frame, which is noise next to encoding them.
//!
//! Waking: the socket is registered with the reactor for readability only
//! (see [`ReadRegisteredSocket`]), so the daemon is not woken each time the
//! client reads an answer. With 20,000 back-to-back ImageStatus calls the
//! daemon's context switches fell from about 35,000 to 21,000; on this VM
//! with the kernel's default guest halt polling, the call's p50 fell from
//! 69-108 us to 55-77 us (without polling, the run-to-run noise hides it).
//!
//! Polling: once the client has nothing left to wait for, the daemon may
//! keep polling the socket for a short while instead of sleeping, when the
//! client has been sending its calls back to back (see
//! [`BusyPoll`](super::busy_poll::BusyPoll)).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

use super::authority_rewrite::AuthorityRewriter;
use super::busy_poll::BusyPoll;

/// An accepted unix connection: the client's `:authority` made acceptable to
/// h2 on the way in, small frames coalesced on the way out.
#[derive(Debug)]
pub struct AcceptedConnection {
    socket: ReadRegisteredSocket,
    connect_info: UdsConnectInfo,
    authority_rewriter: AuthorityRewriter,
}

impl AcceptedConnection {
    pub fn new(stream: UnixStream, busy_poll: BusyPoll) -> io::Result<AcceptedConnection> {
        let connect_info = stream.connect_info();
        Ok(AcceptedConnection {
            socket: ReadRegisteredSocket::new(stream.into_std()?, busy_poll)?,
            connect_info,
            authority_rewriter: AuthorityRewriter::new(),
        })
    }
}

impl AsyncRead for AcceptedConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.authority_rewriter
            .poll_read(Pin::new(&mut this.socket), context, buffer)
    }
}

impl AsyncWrite for AcceptedConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write(context, buffer)
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(context)
    }

    /// Coalescing (see the module comment).
    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl Connected for AcceptedConnection {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> UdsConnectInfo {
        self.connect_info.clone()
    }
}

/// A unix stream socket registered with the reactor for readability only.
///
/// On a unix stream socket, every read by the peer tells the writer's
/// waiters that there is room again, whether or not the writer ever ran out
/// of it. A socket registered for writability as well (as
/// `tokio::net::UnixStream` is) therefore wakes the daemon each time the
/// client reads an answer, and that wakeup is sent from the client's
/// `recvfrom`, on the client's time. Writes here go straight to the socket;
/// only when one would block is a second registration, for writability, made
/// on a duplicate of the descriptor (epoll tells registrations apart by
/// descriptor), and it is dropped at the first flush after that write
/// completes.
#[derive(Debug)]
struct ReadRegisteredSocket {
    readable: AsyncFd<std::os::unix::net::UnixStream>,
    /// Made when a write would block; dropped at the first flush with no
    /// write waiting.
    writable: Option<AsyncFd<OwnedFd>>,
    /// A write returned `Pending` and has not completed since.
    write_waiting: bool,
    busy_poll: BusyPoll,
}

impl ReadRegisteredSocket {
    fn new(
        stream: std::os::unix::net::UnixStream,
        busy_poll: BusyPoll,
    ) -> io::Result<ReadRegisteredSocket> {
        stream.set_nonblocking(true)?;
        Ok(ReadRegisteredSocket {
            readable: register(stream, Interest::READABLE)?,
            writable: None,
            write_waiting: false,
            busy_poll,
        })
    }

    fn stream(&self) -> &std::os::unix::net::UnixStream {
        self.readable.get_ref()
    }
}

/// One `write`, retried when a signal interrupts it.
fn write_to(mut stream: &std::os::unix::net::UnixStream, buffer: &[u8]) -> io::Result<usize> {
    loop {
        match stream.write(buffer) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            written => return written,
        }
    }
}

/// Registers `owner`'s descriptor with the current reactor for `interest`.
fn register<T: AsRawFd>(owner: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    // SAFETY: tokio requires the descriptor to stay open and the same for as
    // long as the `AsyncFd` lives. `owner` is a `UnixStream` or an `OwnedFd`:
    // it owns its descriptor, closes it only when dropped (which the
    // `AsyncFd` does after deregistering), and this module never replaces it
    // through `get_mut`.
    unsafe { AsyncFd::register_with_interest(owner, interest) }.map_err(io::Error::from)
}

impl AsyncRead for ReadRegisteredSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut ready = ready!(this.readable.poll_read_ready(context))?;
            let unfilled = buffer.initialize_unfilled();
            let room = unfilled.len();
            match ready.try_io(|socket| socket.get_ref().read(unfilled)) {
                Ok(Ok(count)) => {
                    // A short read emptied the socket: the next read would
                    // only say "would block", so skip it (as tokio's own
                    // streams do). Epoll reports whatever arrives later.
                    if count > 0 && count < room {
                        ready.clear_ready();
                    }
                    this.busy_poll.client_sent(&unfilled[..count]);
                    buffer.advance(count);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(error)) => return Poll::Ready(Err(error)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for ReadRegisteredSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        let ReadRegisteredSocket {
            readable,
            writable,
            write_waiting,
            busy_poll,
        } = self.get_mut();
        let stream = readable.get_ref();
        let mut sent = |written: io::Result<usize>| {
            if let Ok(count) = written {
                busy_poll.server_sent(&buffer[..count]);
            }
            written
        };
        if !*write_waiting {
            match write_to(stream, buffer) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                written => return Poll::Ready(sent(written)),
            }
            if writable.is_none() {
                let duplicate = stream.as_fd().try_clone_to_owned()?;
                *writable = Some(register(duplicate, Interest::WRITABLE)?);
            }
            *write_waiting = true;
        }
        let registration = writable.as_ref().expect("registered when the wait began");
        loop {
            let mut ready = match ready!(registration.poll_write_ready(context)) {
                Ok(ready) => ready,
                Err(error) => {
                    *write_waiting = false;
                    return Poll::Ready(Err(error));
                }
            };
            if let Ok(written) = ready.try_io(|_| write_to(stream, buffer)) {
                *write_waiting = false;
                return Poll::Ready(sent(written));
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes are unbuffered; a flush with no write waiting ends a batch,
        // so a writability registration made during it is no longer needed,
        // and the client may now have nothing left to wait for.
        let this = self.get_mut();
        if !this.write_waiting {
            this.writable = None;
            this.busy_poll.flushed(this.readable.get_ref().as_fd());
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.writable = None;
        this.write_waiting = false;
        Poll::Ready(this.stream().shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn bytes_that_are_not_http2_pass_through_both_ways_in_order_and_h2_is_told_not_vectored()
    {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut connection =
            AcceptedConnection::new(ours, BusyPoll::new(Duration::ZERO, None)).unwrap();
        assert!(!connection.is_write_vectored());
        // More than a unix socket buffers, so the writer must wait for the
        // reader part of the way. Not an HTTP/2 preface, so the reading side
        // passes it through untouched.
        let sent: Vec<u8> = (0..4 * 1024 * 1024u32).map(|index| index as u8).collect();
        let expected = sent.clone();
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            peer.read_to_end(&mut received).await.unwrap();
            peer.write_all(&received).await.unwrap();
            received
        });
        connection.write_all(&sent).await.unwrap();
        connection.flush().await.unwrap();
        connection.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        connection.read_to_end(&mut echoed).await.unwrap();
        assert!(
            reader.await.unwrap() == expected,
            "the bytes arrive whole and in order"
        );
        assert!(echoed == expected, "the echo comes back whole and in order");
    }

    /// The event masks of every epoll registration of the socket file
    /// `socket` (a duplicated descriptor shares its inode), read from
    /// `/proc/self/fdinfo` of every epoll descriptor of this process.
    fn epoll_masks_of(socket: &impl AsRawFd) -> Vec<u32> {
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
            .unwrap()
            .ino();
        // By registration line: tokio's reactor holds its epoll instance
        // under two descriptors, which list the same registrations.
        let mut masks = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
            let entry = entry.unwrap();
            let is_epoll = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:[eventpoll]");
            if !is_epoll {
                continue;
            }
            let Ok(info) = std::fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                entry.file_name().to_string_lossy()
            )) else {
                continue;
            };
            for line in info.lines().filter(|line| line.starts_with("tfd:")) {
                let mut words = line.split_whitespace();
                let mask = words
                    .find(|word| *word == "events:")
                    .and_then(|_| words.next())
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok());
                let registered_inode = line
                    .split_whitespace()
                    .find_map(|word| word.strip_prefix("ino:"))
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok());
                if registered_inode == Some(inode) {
                    masks.insert(
                        line.to_owned(),
                        mask.expect("an epoll registration has an event mask"),
                    );
                }
            }
        }
        masks.into_values().collect()
    }

    const EPOLLIN: u32 = 0x1;
    const EPOLLOUT: u32 = 0x4;

    #[tokio::test]
    async fn the_socket_is_watched_for_room_to_write_only_while_a_write_waits_for_it() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut connection =
            AcceptedConnection::new(ours, BusyPoll::new(Duration::ZERO, None)).unwrap();
        let masks = epoll_masks_of(connection.socket.stream());
        assert_eq!(masks.len(), 1, "one registration: {masks:x?}");
        assert!(
            masks[0] & EPOLLIN != 0 && masks[0] & EPOLLOUT == 0,
            "{masks:x?}"
        );

        // Write until the socket is full and the write has to wait.
        let block = vec![7u8; 64 * 1024];
        let mut written = 0;
        std::future::poll_fn(|context| {
            loop {
                match Pin::new(&mut connection).poll_write(context, &block) {
                    Poll::Ready(result) => written += result.unwrap(),
                    Poll::Pending => return Poll::Ready(()),
                }
            }
        })
        .await;
        // A flush while the write waits must not drop what will wake it.
        std::future::poll_fn(|context| Pin::new(&mut connection).poll_flush(context))
            .await
            .unwrap();
        let masks = epoll_masks_of(connection.socket.stream());
        assert_eq!(
            masks.len(),
            2,
            "a second registration while waiting: {masks:x?}"
        );
        assert!(
            masks
                .iter()
                .any(|mask| mask & EPOLLOUT != 0 && mask & EPOLLIN == 0),
            "{masks:x?}"
        );

        // The reader drains; the waiting write goes on, and the flush that
        // ends the batch drops the registration for room.
        let expected = written + block.len();
        let reader = tokio::spawn(async move {
            let mut received = vec![0u8; expected];
            peer.read_exact(&mut received).await.unwrap();
            received.iter().all(|byte| *byte == 7)
        });
        connection.write_all(&block).await.unwrap();
        connection.flush().await.unwrap();
        assert!(reader.await.unwrap(), "every byte arrived");
        let masks = epoll_masks_of(connection.socket.stream());
        assert_eq!(masks.len(), 1, "back to one registration: {masks:x?}");
        assert!(masks[0] & EPOLLOUT == 0, "{masks:x?}");
    }

    /// An h2 server on an accepted connection that polls for 10 s, and an h2
    /// client on another thread: a poll would show as a 10 s stall.
    #[test]
    fn polling_never_holds_up_an_answer_and_ends_when_the_client_sends_or_leaves() {
        const WINDOW: Duration = Duration::from_secs(10);
        const STALL: Duration = Duration::from_secs(5);
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let current_thread = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        // One thread, as a runtime worker: while the connection polls, the
        // tasks that answer cannot run.
        let server = std::thread::spawn(move || {
            current_thread().block_on(async move {
                let socket = UnixStream::from_std(ours).unwrap();
                let connection =
                    AcceptedConnection::new(socket, BusyPoll::new(WINDOW, None)).unwrap();
                let mut connection = h2::server::handshake(connection).await.unwrap();
                while let Some(accepted) = connection.accept().await {
                    let (request, mut respond) = accepted.unwrap();
                    let delay = match request.uri().path() {
                        "/slow" => Duration::from_millis(200),
                        _ => Duration::ZERO,
                    };
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let mut body = respond
                            .send_response(http::Response::new(()), false)
                            .unwrap();
                        body.send_data(bytes::Bytes::from_static(b"answer"), true)
                            .unwrap();
                    });
                }
            });
            Instant::now()
        });
        let left_at = current_thread().block_on(async move {
            let socket = UnixStream::from_std(theirs).unwrap();
            let (client, connection) = h2::client::handshake(socket).await.unwrap();
            let connection = tokio::spawn(connection);
            let call = |path: &str| {
                let request = http::Request::get(format!("http://localhost{path}"))
                    .body(())
                    .unwrap();
                let (answer, _) = client.clone().send_request(request, true).unwrap();
                async move {
                    let mut body = answer.await.unwrap().into_body();
                    assert_eq!(body.data().await.unwrap().unwrap(), "answer");
                }
            };
            // Back to back: from the second call on, the flush after each
            // answer polls, and the next request ends the poll.
            for _ in 0..5 {
                let started = Instant::now();
                call("/fast").await;
                assert!(started.elapsed() < STALL, "a poll outlived the request");
            }
            // The fast answer goes out while the slow stream is still
            // awaited: that flush must not poll, or the slow answer's task
            // would not run until the window ends.
            let started = Instant::now();
            let slow = call("/slow");
            let fast = call("/fast");
            fast.await;
            slow.await;
            assert!(started.elapsed() < STALL, "an answer was held up by a poll");
            drop(client);
            connection.await.unwrap().unwrap();
            Instant::now()
        });
        let server_done_at = server.join().unwrap();
        assert!(
            server_done_at.saturating_duration_since(left_at) < STALL,
            "a poll outlived the client's hangup"
        );
    }

    #[tokio::test]
    async fn h2_serving_an_accepted_connection_sees_grpc_cores_authority_rewritten() {
        let (ours, mut client) = UnixStream::pair().unwrap();
        let authority = b"run%2Fx%2Fcri.sock";
        // :method GET, :scheme http, :path /, then :authority with incremental
        // indexing and a raw value; END_STREAM and END_HEADERS.
        let mut block = vec![0x82, 0x86, 0x84, 0x41, authority.len() as u8];
        block.extend_from_slice(authority);
        let mut sent = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        sent.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        sent.extend_from_slice(&[0, 0, block.len() as u8, 0x1, 0x5, 0, 0, 0, 1]);
        sent.extend_from_slice(&block);
        client.write_all(&sent).await.unwrap();

        let mut connection = h2::server::handshake(
            AcceptedConnection::new(ours, BusyPoll::new(Duration::ZERO, None)).unwrap(),
        )
        .await
        .unwrap();
        let (request, _respond) = connection.accept().await.unwrap().unwrap();
        assert_eq!(
            request
                .uri()
                .authority()
                .map(|authority| authority.as_str()),
            Some("run_2Fx_2Fcri.sock")
        );
    }
}
