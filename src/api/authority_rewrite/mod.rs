//! Makes the `:authority` of gRPC C-core clients acceptable to h2.
//!
//! Why: a C-core client (Python grpcio, C++, Ruby, PHP) dialing
//! `unix:///run/x/cri.sock` sends the socket path, percent-encoded, as its
//! authority unless told otherwise (`:authority: run%2Fx%2Fcri.sock` from
//! grpcio 1.85). The `http` crate's `Authority` parser rejects `%`, so h2
//! resets every such stream with PROTOCOL_ERROR and the client sees INTERNAL
//! "RST_STREAM" before any of our code runs. grpc-go (the kubelet, crictl)
//! sends `localhost` and never hits this. The daemon does not use the
//! authority, so any valid value will do.
//!
//! How: the bytes the client sends are read through an [`AuthorityRewriter`],
//! which follows the HTTP/2 framing and keeps a mirror of the client's HPACK
//! dynamic table. A header block whose `:authority` h2 would reject has that
//! one field written again, in the same representation, with a raw value of
//! the same decoded length in which every byte that is not an RFC 3986
//! unreserved character became `_` (`run%2Fx%2Fcri.sock` becomes
//! `run_2Fx_2Fcri.sock`). The same decoded length means the entry the field
//! adds costs the same in h2's table as in the client's, so both tables keep
//! evicting the same entries, and a later request that refers to the entry by
//! index gets the rewritten value. Every other byte goes through unchanged,
//! and a block with nothing to rewrite goes through as it came.
//!
//! Anything the mirror cannot follow (a connection that is not HTTP/2, a
//! block it cannot decode, a block larger than [`HEADER_BLOCK_BYTES_MAX`])
//! ends the rewriting for that connection: from then on its bytes pass
//! through untouched and h2 reports whatever is wrong with them.

mod hpack;

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

use super::http2_frame::{
    CLIENT_PREFACE, FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, FLAG_PRIORITY,
    FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX, FRAME_TYPE_CONTINUATION, FRAME_TYPE_HEADERS,
    FrameHeader,
};
use hpack::{DynamicTable, Field, HpackError};

/// Header blocks up to this size are mirrored. h2 under hyper refuses header
/// lists over 16 KiB decoded, so a real client's blocks are far smaller; a
/// larger block ends the rewriting instead of growing the buffer further.
pub const HEADER_BLOCK_BYTES_MAX: usize = 1024 * 1024;

/// The HPACK table size h2's decoder allows: tonic never sets
/// SETTINGS_HEADER_TABLE_SIZE, so it stays at the protocol default, which is
/// also where every client encoder's table starts.
const HEADER_TABLE_SIZE_BYTES: usize = 4096;

/// How much is asked of the socket per read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Scratch buffers grown past this by an unusual block are given back once
/// the block is done, so a connection does not keep its worst case.
const RETAINED_SCRATCH_BYTES_MAX: usize = 64 * 1024;

const PRIORITY_FIELDS_BYTES: usize = 5;

/// Rewrites the `:authority` of the HTTP/2 stream read through it (see the
/// module comment). One per connection, fed by the connection's socket.
pub struct AuthorityRewriter {
    /// Bytes read from the socket, all initialized; only
    /// `[handed_out..received)` is live: `[handed_out..processed)` is ready
    /// for h2, `[processed..received)` waits for the rest of its frame or
    /// block.
    buffer: Vec<u8>,
    handed_out: usize,
    processed: usize,
    received: usize,
    end_of_input: bool,
    parse: Parse,
    table: DynamicTable,
    /// The fragments of a block that spans several frames, joined.
    joined_fragments: Vec<u8>,
    /// The rewritten values of the block being processed, back to back.
    rewritten_values: Vec<u8>,
    rewrites: Vec<ValueRewrite>,
    rewritten_block: Vec<u8>,
    rewritten_frames: Vec<u8>,
    rewritten_blocks: u64,
}

/// Why rewriting stopped on a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteStopped {
    #[error("the connection does not start with the HTTP/2 client preface")]
    NotHttp2,
    #[error(
        "a frame of type {frame_type:#x} on stream {stream_id} interrupts the header block of stream {block_stream_id}"
    )]
    InterruptedHeaderBlock {
        frame_type: u8,
        stream_id: u32,
        block_stream_id: u32,
    },
    #[error("the header block of stream {stream_id} exceeds {HEADER_BLOCK_BYTES_MAX} bytes")]
    HeaderBlockTooLarge { stream_id: u32 },
    #[error("the HEADERS frame of stream {stream_id} has more padding and priority than payload")]
    MalformedHeadersFrame { stream_id: u32 },
    #[error("cannot decode the header block of stream {stream_id}: {source}")]
    Hpack {
        stream_id: u32,
        #[source]
        source: HpackError,
    },
}

/// Where the parser is in the client's byte stream; offsets are relative to
/// `processed`, the first byte not yet passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parse {
    Preface {
        matched_bytes: usize,
    },
    FrameHeader,
    Payload {
        remaining_bytes: usize,
    },
    /// A HEADERS frame starts at `processed`; the frames of its block seen so
    /// far take `scanned_bytes`.
    HeaderBlock {
        scanned_bytes: usize,
    },
    PassThrough,
}

/// One value to replace: its bytes in the joined block, and its new value in
/// `rewritten_values`.
#[derive(Debug, Clone, Copy)]
struct ValueRewrite {
    encoded_start: usize,
    encoded_end: usize,
    value_start: usize,
    value_end: usize,
}

enum BlockScan {
    NeedMore { scanned_bytes: usize },
    Complete { block_bytes: usize },
}

impl AuthorityRewriter {
    pub fn new() -> AuthorityRewriter {
        AuthorityRewriter {
            buffer: Vec::new(),
            handed_out: 0,
            processed: 0,
            received: 0,
            end_of_input: false,
            parse: Parse::Preface { matched_bytes: 0 },
            table: DynamicTable::new(HEADER_TABLE_SIZE_BYTES),
            joined_fragments: Vec::new(),
            rewritten_values: Vec::new(),
            rewrites: Vec::new(),
            rewritten_block: Vec::new(),
            rewritten_frames: Vec::new(),
            rewritten_blocks: 0,
        }
    }

    /// Reads from `source` and fills `output` with the rewritten stream.
    pub fn poll_read<R: AsyncRead + ?Sized>(
        &mut self,
        mut source: Pin<&mut R>,
        context: &mut Context<'_>,
        output: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.processed > self.handed_out {
                let count = (self.processed - self.handed_out).min(output.remaining());
                output.put_slice(&self.buffer[self.handed_out..self.handed_out + count]);
                self.handed_out += count;
                if self.handed_out == self.received {
                    self.handed_out = 0;
                    self.processed = 0;
                    self.received = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if self.end_of_input {
                // What is left is an unfinished frame: h2 gets it as it is,
                // then the end of input, and says what it thinks of that.
                if self.received > self.processed {
                    self.processed = self.received;
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            self.make_room_to_read();
            let mut unfilled = ReadBuf::new(&mut self.buffer[self.received..]);
            ready!(source.as_mut().poll_read(context, &mut unfilled))?;
            let count = unfilled.filled().len();
            if count == 0 {
                self.end_of_input = true;
            } else {
                self.received += count;
                self.advance();
            }
        }
    }

    /// Moves the unprocessed bytes to the front and makes sure a read has
    /// room (a read into no room would look like the end of input).
    fn make_room_to_read(&mut self) {
        debug_assert_eq!(self.handed_out, self.processed);
        if self.handed_out > 0 {
            self.buffer.copy_within(self.handed_out..self.received, 0);
            self.received -= self.handed_out;
            self.handed_out = 0;
            self.processed = 0;
        }
        if self.buffer.len() - self.received < READ_CHUNK_BYTES / 4 {
            self.buffer.resize(self.received + READ_CHUNK_BYTES, 0);
        }
    }

    /// Passes on everything that is complete in `[processed..received)`.
    fn advance(&mut self) {
        loop {
            let available = self.received - self.processed;
            match self.parse {
                Parse::PassThrough => {
                    self.processed = self.received;
                    return;
                }
                Parse::Preface { matched_bytes } => {
                    let expected = &CLIENT_PREFACE[matched_bytes..];
                    let count = expected.len().min(available);
                    if count == 0 {
                        return;
                    }
                    if self.buffer[self.processed..self.processed + count] != expected[..count] {
                        self.stop(RewriteStopped::NotHttp2);
                        continue;
                    }
                    self.processed += count;
                    self.parse = if matched_bytes + count == CLIENT_PREFACE.len() {
                        Parse::FrameHeader
                    } else {
                        Parse::Preface {
                            matched_bytes: matched_bytes + count,
                        }
                    };
                }
                Parse::FrameHeader => {
                    if available < FRAME_HEADER_BYTES {
                        return;
                    }
                    let header = FrameHeader::parse(&self.buffer[self.processed..]);
                    if header.frame_type == FRAME_TYPE_HEADERS {
                        self.parse = Parse::HeaderBlock { scanned_bytes: 0 };
                    } else {
                        self.processed += FRAME_HEADER_BYTES;
                        self.parse = Parse::Payload {
                            remaining_bytes: header.length,
                        };
                    }
                }
                Parse::Payload { remaining_bytes } => {
                    if remaining_bytes == 0 {
                        self.parse = Parse::FrameHeader;
                        continue;
                    }
                    let count = remaining_bytes.min(available);
                    if count == 0 {
                        return;
                    }
                    self.processed += count;
                    self.parse = Parse::Payload {
                        remaining_bytes: remaining_bytes - count,
                    };
                }
                Parse::HeaderBlock { scanned_bytes } => match self.scan_header_block(scanned_bytes)
                {
                    Ok(BlockScan::NeedMore { scanned_bytes }) => {
                        self.parse = Parse::HeaderBlock { scanned_bytes };
                        return;
                    }
                    Ok(BlockScan::Complete { block_bytes }) => {
                        match self.process_header_block(block_bytes) {
                            Ok(()) => self.parse = Parse::FrameHeader,
                            Err(reason) => self.stop(reason),
                        }
                        self.release_oversized_scratch();
                    }
                    Err(reason) => self.stop(reason),
                },
            }
        }
    }

    /// Ends the rewriting on this connection: what is not yet passed on, and
    /// everything after, goes to h2 as it came.
    fn stop(&mut self, reason: RewriteStopped) {
        match reason {
            RewriteStopped::NotHttp2 => {
                tracing::debug!(%reason, "authority rewriting off for this connection");
            }
            _ => tracing::warn!(
                %reason,
                "authority rewriting off for this connection; its bytes now reach h2 unchanged"
            ),
        }
        self.parse = Parse::PassThrough;
    }

    /// Follows the frames of the header block that starts at `processed`
    /// until one ends it (END_HEADERS) or the bytes run out.
    fn scan_header_block(&self, mut scanned_bytes: usize) -> Result<BlockScan, RewriteStopped> {
        let block = &self.buffer[self.processed..self.received];
        let first = FrameHeader::parse(block);
        loop {
            let Some(header_bytes) = block.get(scanned_bytes..scanned_bytes + FRAME_HEADER_BYTES)
            else {
                return Ok(BlockScan::NeedMore { scanned_bytes });
            };
            let header = FrameHeader::parse(header_bytes);
            if scanned_bytes > 0
                && (header.frame_type != FRAME_TYPE_CONTINUATION
                    || header.stream_id != first.stream_id)
            {
                return Err(RewriteStopped::InterruptedHeaderBlock {
                    frame_type: header.frame_type,
                    stream_id: header.stream_id,
                    block_stream_id: first.stream_id,
                });
            }
            let frame_end = scanned_bytes + FRAME_HEADER_BYTES + header.length;
            if frame_end > HEADER_BLOCK_BYTES_MAX {
                return Err(RewriteStopped::HeaderBlockTooLarge {
                    stream_id: first.stream_id,
                });
            }
            if frame_end > block.len() {
                return Ok(BlockScan::NeedMore { scanned_bytes });
            }
            if header.flags & FLAG_END_HEADERS != 0 {
                return Ok(BlockScan::Complete {
                    block_bytes: frame_end,
                });
            }
            scanned_bytes = frame_end;
        }
    }

    /// Decodes the complete block of `block_bytes` at `processed` into the
    /// mirror and passes it on, rewritten if its authority needs it.
    fn process_header_block(&mut self, block_bytes: usize) -> Result<(), RewriteStopped> {
        let frames = &self.buffer[self.processed..self.processed + block_bytes];
        let headers = FrameHeader::parse(frames);
        let stream_id = headers.stream_id;
        let payload = &frames[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + headers.length];
        let (priority_fields, first_fragment) = split_headers_payload(payload, headers.flags)
            .ok_or(RewriteStopped::MalformedHeadersFrame { stream_id })?;
        let first_frame_bytes = FRAME_HEADER_BYTES + headers.length;
        // The common block is one frame: decode it where it lies.
        let fragment = if first_frame_bytes == block_bytes {
            first_fragment
        } else {
            self.joined_fragments.clear();
            self.joined_fragments.extend_from_slice(first_fragment);
            let mut offset = first_frame_bytes;
            while offset < block_bytes {
                let continuation = FrameHeader::parse(&frames[offset..]);
                let payload_start = offset + FRAME_HEADER_BYTES;
                self.joined_fragments
                    .extend_from_slice(&frames[payload_start..payload_start + continuation.length]);
                offset = payload_start + continuation.length;
            }
            &self.joined_fragments[..]
        };

        self.rewrites.clear();
        self.rewritten_values.clear();
        let rewrites = &mut self.rewrites;
        let rewritten_values = &mut self.rewritten_values;
        hpack::decode_block(fragment, &mut self.table, |field| {
            let Field::Literal {
                name_is_authority: true,
                value,
                ..
            } = field
            else {
                return Ok(());
            };
            let value_start = rewritten_values.len();
            value.decode_into(rewritten_values)?;
            let decoded = &mut rewritten_values[value_start..];
            if decoded.is_empty() || is_valid_authority(decoded) {
                // Nothing to do for a valid value, and nothing of the same
                // length would make an empty one valid.
                rewritten_values.truncate(value_start);
                return Ok(());
            }
            for byte in decoded.iter_mut() {
                if !is_unreserved(*byte) {
                    *byte = b'_';
                }
            }
            rewrites.push(ValueRewrite {
                encoded_start: value.encoded_start,
                encoded_end: value.encoded_end,
                value_start,
                value_end: rewritten_values.len(),
            });
            Ok(())
        })
        .map_err(|source| RewriteStopped::Hpack { stream_id, source })?;

        if self.rewrites.is_empty() {
            self.processed += block_bytes;
            return Ok(());
        }

        self.rewritten_block.clear();
        let mut copied_to = 0;
        for rewrite in &self.rewrites {
            self.rewritten_block
                .extend_from_slice(&fragment[copied_to..rewrite.encoded_start]);
            let value = &self.rewritten_values[rewrite.value_start..rewrite.value_end];
            hpack::write_integer(value.len(), 7, 0x00, &mut self.rewritten_block);
            self.rewritten_block.extend_from_slice(value);
            copied_to = rewrite.encoded_end;
        }
        self.rewritten_block
            .extend_from_slice(&fragment[copied_to..]);
        frame_header_block(
            &self.rewritten_block,
            headers.flags & FLAG_END_STREAM,
            priority_fields,
            stream_id,
            &mut self.rewritten_frames,
        );
        tracing::debug!(
            stream_id,
            rewritten_values = %String::from_utf8_lossy(&self.rewritten_values),
            "rewrote an :authority that h2 would reject"
        );
        self.rewritten_blocks += 1;
        let frames = std::mem::take(&mut self.rewritten_frames);
        self.replace_unprocessed(block_bytes, &frames);
        self.processed += frames.len();
        self.rewritten_frames = frames;
        Ok(())
    }

    /// Replaces the first `length` unprocessed bytes with `replacement`.
    fn replace_unprocessed(&mut self, length: usize, replacement: &[u8]) {
        let start = self.processed;
        let tail = start + length..self.received;
        let received = self.received - length + replacement.len();
        if received > self.buffer.len() {
            self.buffer.resize(received, 0);
        }
        self.buffer.copy_within(tail, start + replacement.len());
        self.buffer[start..start + replacement.len()].copy_from_slice(replacement);
        self.received = received;
    }

    fn release_oversized_scratch(&mut self) {
        for scratch in [
            &mut self.joined_fragments,
            &mut self.rewritten_values,
            &mut self.rewritten_block,
            &mut self.rewritten_frames,
        ] {
            if scratch.capacity() > RETAINED_SCRATCH_BYTES_MAX {
                *scratch = Vec::new();
            }
        }
    }
}

impl Default for AuthorityRewriter {
    fn default() -> AuthorityRewriter {
        AuthorityRewriter::new()
    }
}

impl fmt::Debug for AuthorityRewriter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AuthorityRewriter")
            .field("parse", &self.parse)
            .field("buffered_bytes", &(self.received - self.handed_out))
            .field("rewritten_blocks", &self.rewritten_blocks)
            .finish_non_exhaustive()
    }
}

/// Splits a HEADERS payload into its priority fields (empty without the
/// PRIORITY flag) and its block fragment, dropping the padding; `None` when
/// padding and priority claim more than the payload (h2 refuses that frame).
fn split_headers_payload(payload: &[u8], flags: u8) -> Option<(&[u8], &[u8])> {
    let mut rest = payload;
    let mut padding_bytes = 0;
    if flags & FLAG_PADDED != 0 {
        let (&pad_length, after) = rest.split_first()?;
        padding_bytes = usize::from(pad_length);
        rest = after;
    }
    let priority_bytes = if flags & FLAG_PRIORITY != 0 {
        PRIORITY_FIELDS_BYTES
    } else {
        0
    };
    let fragment_end = rest.len().checked_sub(priority_bytes + padding_bytes)?;
    let (priority_fields, after) = rest.split_at(priority_bytes);
    Some((priority_fields, &after[..fragment_end]))
}

/// Frames `block` as one HEADERS frame, plus CONTINUATION frames when it does
/// not fit, keeping END_STREAM and the priority fields and dropping padding.
fn frame_header_block(
    block: &[u8],
    end_stream: u8,
    priority_fields: &[u8],
    stream_id: u32,
    output: &mut Vec<u8>,
) {
    output.clear();
    let first_fragment_bytes = block
        .len()
        .min(FRAME_PAYLOAD_BYTES_MAX - priority_fields.len());
    let (first, mut rest) = block.split_at(first_fragment_bytes);
    let mut flags = end_stream;
    if !priority_fields.is_empty() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    FrameHeader::write(
        priority_fields.len() + first.len(),
        FRAME_TYPE_HEADERS,
        flags,
        stream_id,
        output,
    );
    output.extend_from_slice(priority_fields);
    output.extend_from_slice(first);
    while !rest.is_empty() {
        let (fragment, after) = rest.split_at(rest.len().min(FRAME_PAYLOAD_BYTES_MAX));
        rest = after;
        let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        FrameHeader::write(
            fragment.len(),
            FRAME_TYPE_CONTINUATION,
            flags,
            stream_id,
            output,
        );
        output.extend_from_slice(fragment);
    }
}

/// RFC 3986 unreserved: ALPHA DIGIT - . _ ~
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Whether h2 accepts `value` as an authority. A value made only of
/// unreserved characters always is (it is a plain host name), which spares
/// the copy `Authority::try_from` makes of every valid value.
fn is_valid_authority(value: &[u8]) -> bool {
    (!value.is_empty() && value.iter().all(|&byte| is_unreserved(byte)))
        || http::uri::Authority::try_from(value).is_ok()
}

#[cfg(test)]
mod tests;
