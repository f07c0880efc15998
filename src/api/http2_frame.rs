//! HTTP/2 framing facts (RFC 9113 §3.4, §4.1, §6) shared by the modules that
//! watch a CRI connection's bytes: the authority rewriter, which follows the
//! client's frames to find header blocks, and the busy poller, which follows
//! both directions to know whether the client is waiting on an answer.

/// What every HTTP/2 client sends before its first frame.
pub const CLIENT_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const FRAME_HEADER_BYTES: usize = 9;
/// Every endpoint accepts frames this large: SETTINGS_MAX_FRAME_SIZE starts
/// there and can only be raised.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 16_384;

pub const FRAME_TYPE_DATA: u8 = 0x0;
pub const FRAME_TYPE_HEADERS: u8 = 0x1;
pub const FRAME_TYPE_RST_STREAM: u8 = 0x3;
pub const FRAME_TYPE_CONTINUATION: u8 = 0x9;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub length: usize,
    pub frame_type: u8,
    pub flags: u8,
    pub stream_id: u32,
}

impl FrameHeader {
    /// Reads the 9-byte frame header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> FrameHeader {
        FrameHeader {
            length: usize::from(bytes[0]) << 16
                | usize::from(bytes[1]) << 8
                | usize::from(bytes[2]),
            frame_type: bytes[3],
            flags: bytes[4],
            stream_id: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    pub fn write(length: usize, frame_type: u8, flags: u8, stream_id: u32, output: &mut Vec<u8>) {
        debug_assert!(length <= FRAME_PAYLOAD_BYTES_MAX);
        output.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
        output.push(frame_type);
        output.push(flags);
        output.extend_from_slice(&stream_id.to_be_bytes());
    }

    pub fn ends_stream(&self) -> bool {
        matches!(self.frame_type, FRAME_TYPE_DATA | FRAME_TYPE_HEADERS)
            && self.flags & FLAG_END_STREAM != 0
    }
}

/// Follows the frame boundaries of one direction of a connection, however
/// its bytes are split between reads or writes, and reports each frame
/// header once it is whole. Payloads are skipped, never buffered.
#[derive(Debug, Clone)]
pub struct FrameFollower {
    /// Bytes of the client preface still to come (0 for the server's side).
    preface_remaining: usize,
    header: [u8; FRAME_HEADER_BYTES],
    header_filled: usize,
    payload_remaining: usize,
    lost: bool,
}

impl FrameFollower {
    /// For the bytes a client sends: the preface, then frames.
    pub fn client() -> FrameFollower {
        FrameFollower {
            preface_remaining: CLIENT_PREFACE.len(),
            ..FrameFollower::server()
        }
    }

    /// For the bytes a server sends: frames from the first byte.
    pub fn server() -> FrameFollower {
        FrameFollower {
            preface_remaining: 0,
            header: [0; FRAME_HEADER_BYTES],
            header_filled: 0,
            payload_remaining: 0,
            lost: false,
        }
    }

    /// The bytes did not start with the client preface: this is not HTTP/2,
    /// and nothing more is reported.
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Takes the next `bytes` of the direction and calls `on_frame` with the
    /// header of every frame that starts in them.
    pub fn follow(&mut self, mut bytes: &[u8], mut on_frame: impl FnMut(FrameHeader)) {
        while !bytes.is_empty() && !self.lost {
            if self.preface_remaining > 0 {
                let matched = CLIENT_PREFACE.len() - self.preface_remaining;
                let count = self.preface_remaining.min(bytes.len());
                if bytes[..count] != CLIENT_PREFACE[matched..matched + count] {
                    self.lost = true;
                    return;
                }
                self.preface_remaining -= count;
                bytes = &bytes[count..];
            } else if self.payload_remaining > 0 {
                let count = self.payload_remaining.min(bytes.len());
                self.payload_remaining -= count;
                bytes = &bytes[count..];
            } else {
                let count = (FRAME_HEADER_BYTES - self.header_filled).min(bytes.len());
                self.header[self.header_filled..self.header_filled + count]
                    .copy_from_slice(&bytes[..count]);
                self.header_filled += count;
                bytes = &bytes[count..];
                if self.header_filled == FRAME_HEADER_BYTES {
                    self.header_filled = 0;
                    let header = FrameHeader::parse(&self.header);
                    self.payload_remaining = header.length;
                    on_frame(header);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(frame_type: u8, flags: u8, stream_id: u32, payload_bytes: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        FrameHeader::write(payload_bytes, frame_type, flags, stream_id, &mut bytes);
        bytes.extend(std::iter::repeat_n(0xa5, payload_bytes));
        bytes
    }

    #[test]
    fn every_frame_is_reported_once_however_the_bytes_are_split() {
        let mut stream = CLIENT_PREFACE.to_vec();
        stream.extend(frame(0x4, 0, 0, 12));
        stream.extend(frame(FRAME_TYPE_HEADERS, FLAG_END_HEADERS, 1, 40));
        stream.extend(frame(FRAME_TYPE_DATA, FLAG_END_STREAM, 1, 0));
        stream.extend(frame(FRAME_TYPE_RST_STREAM, 0, 3, 4));
        let expected = [
            (0x4, 0),
            (FRAME_TYPE_HEADERS, 1),
            (FRAME_TYPE_DATA, 1),
            (FRAME_TYPE_RST_STREAM, 3),
        ];
        for chunk_bytes in 1..=stream.len() {
            let mut follower = FrameFollower::client();
            let mut seen = Vec::new();
            for chunk in stream.chunks(chunk_bytes) {
                follower.follow(chunk, |header| {
                    seen.push((header.frame_type, header.stream_id))
                });
            }
            assert_eq!(seen, expected, "chunks of {chunk_bytes} bytes");
            assert!(!follower.is_lost());
        }
    }

    #[test]
    fn bytes_without_the_client_preface_are_not_followed() {
        let mut follower = FrameFollower::client();
        let mut seen = 0;
        follower.follow(b"PRI * HTTP/2.0\r\n", |_| seen += 1);
        assert!(!follower.is_lost());
        follower.follow(b"GET / HTTP/1.1\r\n\r\n", |_| seen += 1);
        assert!(follower.is_lost());
        follower.follow(&frame(FRAME_TYPE_HEADERS, 0, 1, 0), |_| seen += 1);
        assert_eq!(seen, 0);
    }

    #[test]
    fn only_data_and_headers_frames_end_a_stream() {
        let header = |frame_type, flags| FrameHeader {
            length: 0,
            frame_type,
            flags,
            stream_id: 1,
        };
        assert!(header(FRAME_TYPE_HEADERS, FLAG_END_STREAM | FLAG_END_HEADERS).ends_stream());
        assert!(header(FRAME_TYPE_DATA, FLAG_END_STREAM).ends_stream());
        assert!(!header(FRAME_TYPE_HEADERS, FLAG_END_HEADERS).ends_stream());
        // Flag 0x1 on SETTINGS or PING is ACK, not END_STREAM.
        assert!(!header(0x4, 0x1).ends_stream());
        assert!(!header(0x6, 0x1).ends_stream());
    }
}
