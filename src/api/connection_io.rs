//! The byte stream under each accepted CRI connection. It does two things
//! to the bytes between the socket and h2.
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

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

use super::authority_rewrite::AuthorityRewriter;

/// An accepted unix connection: the client's `:authority` made acceptable to
/// h2 on the way in, small frames coalesced on the way out.
#[derive(Debug)]
pub struct AcceptedConnection {
    stream: UnixStream,
    authority_rewriter: AuthorityRewriter,
}

impl AcceptedConnection {
    pub fn new(stream: UnixStream) -> AcceptedConnection {
        AcceptedConnection {
            stream,
            authority_rewriter: AuthorityRewriter::new(),
        }
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
            .poll_read(Pin::new(&mut this.stream), context, buffer)
    }
}

impl AsyncWrite for AcceptedConnection {
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

    /// Coalescing (see the module comment).
    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl Connected for AcceptedConnection {
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
    async fn bytes_that_are_not_http2_pass_through_both_ways_in_order_and_h2_is_told_not_vectored()
    {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut connection = AcceptedConnection::new(ours);
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

        let mut connection = h2::server::handshake(AcceptedConnection::new(ours))
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
