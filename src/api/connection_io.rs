//! The byte stream under each accepted CRI connection.
//!
//! Why a wrapper: h2 copies a DATA frame's payload into its write buffer only
//! when the payload is shorter than a threshold: 256 bytes when the stream
//! says it writes vectored, 1024 otherwise. A longer payload is chained, and
//! a chained frame is written out before the next frame can be buffered. A
//! typical unary answer (an `ImageStatusResponse` of 300-900 bytes) therefore
//! left in two writes, the headers and message, then the `grpc-status`
//! trailers, and the client woke up twice per call. Saying "not vectored"
//! raises the threshold to 1024 bytes, so such an answer leaves in one write.
//! Larger answers (ListImages) are chained as before and cost one more
//! `write` per 16 KiB frame, which is noise next to encoding them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

/// An accepted unix connection that asks h2 to coalesce small frames.
#[derive(Debug)]
pub struct CoalescingUnixStream {
    stream: UnixStream,
}

impl CoalescingUnixStream {
    pub fn new(stream: UnixStream) -> CoalescingUnixStream {
        CoalescingUnixStream { stream }
    }
}

impl AsyncRead for CoalescingUnixStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for CoalescingUnixStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(context, buffer)
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(context)
    }

    /// The point of the wrapper (see the module comment).
    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl Connected for CoalescingUnixStream {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> UdsConnectInfo {
        self.stream.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn bytes_pass_through_both_ways_in_order_and_h2_is_told_not_vectored() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut connection = CoalescingUnixStream::new(ours);
        assert!(!connection.is_write_vectored());
        // More than a unix socket buffers, so the writer must wait for the
        // reader part of the way.
        let sent: Vec<u8> = (0..4 * 1024 * 1024u32).map(|index| index as u8).collect();
        let expected = sent.clone();
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            peer.read_to_end(&mut received).await.unwrap();
            peer.write_all(b"answer").await.unwrap();
            received
        });
        connection.write_all(&sent).await.unwrap();
        connection.flush().await.unwrap();
        connection.shutdown().await.unwrap();
        let mut answer = Vec::new();
        connection.read_to_end(&mut answer).await.unwrap();
        assert!(
            reader.await.unwrap() == expected,
            "the bytes arrive whole and in order"
        );
        assert_eq!(answer, b"answer");
    }
}
