//! The rewriter against hand-built client byte streams. Two oracles: the
//! exact bytes expected (the representation kept, the value raw, the
//! framing), and a real h2 server fed with the output, which decodes it with
//! its own HPACK decoder and tells which requests it accepted with which
//! authority.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::hpack::{STATIC_TABLE, huffman_encode, write_integer};
use super::*;
use crate::api::http2_frame::FRAME_TYPE_DATA;

/// What grpc-core sends for `unix:///run/x/cri.sock`.
const GRPC_CORE_AUTHORITY: &[u8] = b"run%2Fx%2Fcri.sock";
const GRPC_CORE_AUTHORITY_REWRITTEN: &[u8] = b"run_2Fx_2Fcri.sock";
const VERSION_PATH: &[u8] = b"/runtime.v1.RuntimeService/Version";
/// The path of the request that ends every test session (see `accepted_by_h2`).
const END_PATH: &str = "/end";

const FRAME_TYPE_SETTINGS: u8 = 0x4;
const FRAME_TYPE_PING: u8 = 0x6;
const FRAME_TYPE_WINDOW_UPDATE: u8 = 0x8;

// ===== Building client streams =====

/// The literal representations of RFC 7541 6.2: the first byte's pattern
/// and the bits of the name index.
#[derive(Debug, Clone, Copy)]
enum Literal {
    Incremental,
    Without,
    Never,
}

impl Literal {
    fn first_bits_and_prefix(self) -> (u8, u32) {
        match self {
            Literal::Incremental => (0x40, 6),
            Literal::Without => (0x00, 4),
            Literal::Never => (0x10, 4),
        }
    }
}

fn frame(frame_type: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    bytes.push(frame_type);
    bytes.push(flags);
    bytes.extend_from_slice(&stream_id.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn headers_frame(stream_id: u32, flags: u8, block: &[u8]) -> Vec<u8> {
    frame(
        FRAME_TYPE_HEADERS,
        FLAG_END_HEADERS | flags,
        stream_id,
        block,
    )
}

fn string(value: &[u8], huffman: bool) -> Vec<u8> {
    let mut bytes = Vec::new();
    if huffman {
        let mut coded = Vec::new();
        huffman_encode(value, &mut coded);
        write_integer(coded.len(), 7, 0x80, &mut bytes);
        bytes.extend_from_slice(&coded);
    } else {
        write_integer(value.len(), 7, 0x00, &mut bytes);
        bytes.extend_from_slice(value);
    }
    bytes
}

fn literal(kind: Literal, name_index: usize, value: &[u8], huffman: bool) -> Vec<u8> {
    let (first_bits, prefix_bits) = kind.first_bits_and_prefix();
    let mut bytes = Vec::new();
    write_integer(name_index, prefix_bits, first_bits, &mut bytes);
    bytes.extend_from_slice(&string(value, huffman));
    bytes
}

fn literal_with_new_name(
    kind: Literal,
    name: &[u8],
    name_huffman: bool,
    value: &[u8],
    huffman: bool,
) -> Vec<u8> {
    let mut bytes = vec![kind.first_bits_and_prefix().0];
    bytes.extend_from_slice(&string(name, name_huffman));
    bytes.extend_from_slice(&string(value, huffman));
    bytes
}

fn indexed(index: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_integer(index, 7, 0x80, &mut bytes);
    bytes
}

/// A first gRPC request the way grpc-core shapes it: the path and
/// content-type enter the table around the given authority field, so after
/// it the table holds content-type (62), the authority if indexed (63), the
/// path (64).
fn first_request_block(authority_field: &[u8]) -> Vec<u8> {
    [
        &[0x83, 0x86][..],
        &literal(Literal::Incremental, 4, VERSION_PATH, false),
        authority_field,
        &literal(Literal::Incremental, 31, b"application/grpc", false),
        &literal_with_new_name(Literal::Without, b"te", false, b"trailers", false),
    ]
    .concat()
}

/// A later request that refers to all three entries of the first.
fn second_request_block() -> Vec<u8> {
    [
        &[0x83, 0x86][..],
        &indexed(64),
        &indexed(63),
        &indexed(62),
        &literal_with_new_name(Literal::Without, b"te", false, b"trailers", false),
    ]
    .concat()
}

/// The request that ends a session; it leaves the table alone.
fn end_request(stream_id: u32) -> Vec<u8> {
    let block = [
        &[0x83, 0x86][..],
        &literal(Literal::Without, 4, END_PATH.as_bytes(), false),
        &literal(Literal::Without, 1, b"end.example", false),
    ]
    .concat();
    headers_frame(stream_id, FLAG_END_STREAM, &block)
}

fn client_stream(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = CLIENT_PREFACE.to_vec();
    bytes.extend_from_slice(&frame(FRAME_TYPE_SETTINGS, 0, 0, &[]));
    for frame in frames {
        bytes.extend_from_slice(frame);
    }
    bytes
}

fn grpc_message_frame(stream_id: u32) -> Vec<u8> {
    frame(
        FRAME_TYPE_DATA,
        FLAG_END_STREAM,
        stream_id,
        &[0, 0, 0, 0, 0],
    )
}

/// A client's HPACK encoder, with the table holding full entries.
struct TestEncoder {
    /// Newest first.
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    capacity_bytes: usize,
    authority_literals: usize,
}

impl TestEncoder {
    fn new() -> TestEncoder {
        TestEncoder {
            table: VecDeque::new(),
            capacity_bytes: 4096,
            authority_literals: 0,
        }
    }

    fn size_bytes(&self) -> usize {
        self.table
            .iter()
            .map(|(name, value)| name.len() + value.len() + 32)
            .sum()
    }

    fn insert(&mut self, name: &[u8], value: &[u8]) {
        self.table.push_front((name.to_vec(), value.to_vec()));
        self.evict();
    }

    fn evict(&mut self) {
        while self.size_bytes() > self.capacity_bytes {
            self.table.pop_back();
        }
    }

    fn set_capacity(&mut self, capacity_bytes: usize, block: &mut Vec<u8>) {
        write_integer(capacity_bytes, 5, 0x20, block);
        self.capacity_bytes = capacity_bytes;
        self.evict();
    }

    /// The full index of an entry with this name (and value, if given).
    fn find(&self, name: &[u8], value: Option<&[u8]>) -> Option<usize> {
        let matches = |entry_name: &[u8], entry_value: &[u8]| {
            entry_name == name && value.is_none_or(|value| value == entry_value)
        };
        if let Some(slot) = STATIC_TABLE
            .iter()
            .position(|&(entry_name, entry_value)| matches(entry_name, entry_value))
        {
            return Some(slot + 1);
        }
        self.table
            .iter()
            .position(|(entry_name, entry_value)| matches(entry_name, entry_value))
            .map(|slot| slot + STATIC_TABLE.len() + 1)
    }

    /// Like Go's hpack encoder under grpc-go: indexed when the table has the
    /// field, else a literal added to the table (with the name indexed if
    /// the table has it), Huffman-coded when that is shorter.
    fn encode_like_grpc_go(&mut self, name: &[u8], value: &[u8], block: &mut Vec<u8>) {
        if let Some(index) = self.find(name, Some(value)) {
            block.extend_from_slice(&indexed(index));
            return;
        }
        if name == AUTHORITY_NAME {
            self.authority_literals += 1;
        }
        let shorter = |text: &[u8]| {
            let mut coded = Vec::new();
            huffman_encode(text, &mut coded);
            coded.len() < text.len()
        };
        match self.find(name, None) {
            Some(name_index) => {
                block.extend_from_slice(&literal(
                    Literal::Incremental,
                    name_index,
                    value,
                    shorter(value),
                ));
            }
            None => block.extend_from_slice(&literal_with_new_name(
                Literal::Incremental,
                name,
                shorter(name),
                value,
                shorter(value),
            )),
        }
        self.insert(name, value);
    }
}

// ===== Driving the rewriter =====

/// Hands out the given chunks, one per read (split further when the reader
/// asks for less), then the end of input.
struct ChunkedReader {
    chunks: VecDeque<Vec<u8>>,
}

impl AsyncRead for ChunkedReader {
    fn poll_read(
        self: Pin<&mut Self>,
        _context: &mut Context<'_>,
        output: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(mut chunk) = this.chunks.pop_front() {
            let count = chunk.len().min(output.remaining());
            output.put_slice(&chunk[..count]);
            if count < chunk.len() {
                this.chunks.push_front(chunk.split_off(count));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Reads the input, cut into `chunks`, through a rewriter into reads of at
/// most `output_bytes`, and returns what came out.
fn rewrite_chunks(chunks: Vec<Vec<u8>>, output_bytes: usize) -> Vec<u8> {
    let mut rewriter = AuthorityRewriter::new();
    let mut reader = ChunkedReader {
        chunks: chunks
            .into_iter()
            .filter(|chunk| !chunk.is_empty())
            .collect(),
    };
    let mut context = Context::from_waker(Waker::noop());
    let mut storage = vec![0u8; output_bytes];
    let mut output = Vec::new();
    loop {
        let mut read = ReadBuf::new(&mut storage);
        match rewriter.poll_read(Pin::new(&mut reader), &mut context, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => return output,
            Poll::Ready(Ok(())) => output.extend_from_slice(read.filled()),
            Poll::Ready(Err(error)) => panic!("read failed: {error}"),
            Poll::Pending => panic!("the reader never blocks, so neither may the rewriter"),
        }
    }
}

fn rewrite(input: &[u8]) -> Vec<u8> {
    rewrite_chunks(vec![input.to_vec()], 64 * 1024)
}

// ===== h2 as the oracle =====

#[derive(Debug, Clone, PartialEq, Eq)]
struct AcceptedRequest {
    authority: Option<String>,
    path: String,
    /// Sorted, so that the order a `HeaderMap` iterates in does not matter.
    headers: Vec<(String, String)>,
}

/// The requests a real h2 server accepts from `client_bytes`, up to the end
/// request (or the end of the connection, if h2 ends it first).
fn accepted_by_h2(client_bytes: &[u8]) -> Vec<AcceptedRequest> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(8 * 1024 * 1024);
        client.write_all(client_bytes).await.unwrap();
        let session = async {
            let mut connection = h2::server::handshake(server).await.unwrap();
            let mut accepted = Vec::new();
            // Kept open, so that DATA the client sends later is not for a
            // stream h2 already closed.
            let mut open_streams = Vec::new();
            while let Some(next) = connection.accept().await {
                let (request, respond) = match next {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        eprintln!("h2 ended the connection: {error}");
                        break;
                    }
                };
                let path = request.uri().path().to_owned();
                if path == END_PATH {
                    break;
                }
                let mut headers: Vec<(String, String)> = request
                    .headers()
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.as_str().to_owned(),
                            String::from_utf8_lossy(value.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                headers.sort();
                accepted.push(AcceptedRequest {
                    authority: request
                        .uri()
                        .authority()
                        .map(|authority| authority.to_string()),
                    path,
                    headers,
                });
                open_streams.push((request, respond));
            }
            accepted
        };
        tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .expect("h2 accepts the end request")
    })
}

fn request(authority: &[u8], path: &[u8], headers: &[(&str, &str)]) -> AcceptedRequest {
    let mut headers: Vec<(String, String)> = headers
        .iter()
        .map(|&(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    headers.sort();
    AcceptedRequest {
        authority: Some(String::from_utf8(authority.to_vec()).unwrap()),
        path: String::from_utf8(path.to_vec()).unwrap(),
        headers,
    }
}

fn version_request(authority: &[u8]) -> AcceptedRequest {
    request(
        authority,
        VERSION_PATH,
        &[("content-type", "application/grpc"), ("te", "trailers")],
    )
}

/// The session every fixed test reuses: grpc-core's first request with
/// `authority_field`, a message, then a second request that refers to the
/// first's table entries.
fn grpc_core_session(authority_field: &[u8]) -> Vec<u8> {
    client_stream(&[
        headers_frame(1, 0, &first_request_block(authority_field)),
        grpc_message_frame(1),
        headers_frame(3, 0, &second_request_block()),
        grpc_message_frame(3),
        end_request(5),
    ])
}

// ===== The tests =====

#[test]
fn grpc_core_authority_is_rewritten_in_place_and_later_references_get_the_rewritten_value() {
    let input = grpc_core_session(&literal(
        Literal::Incremental,
        1,
        GRPC_CORE_AUTHORITY,
        false,
    ));
    let output = rewrite(&input);

    // The same bytes but the value: the representation (0x41: incremental
    // indexing, static name 1) and the length stay.
    let expected = grpc_core_session(&literal(
        Literal::Incremental,
        1,
        GRPC_CORE_AUTHORITY_REWRITTEN,
        false,
    ));
    assert_eq!(output, expected);

    let rewritten = version_request(GRPC_CORE_AUTHORITY_REWRITTEN);
    assert_eq!(accepted_by_h2(&output), [rewritten.clone(), rewritten]);
    // The defect itself: without the rewrite h2 accepts neither request.
    assert_eq!(accepted_by_h2(&input), []);
}

#[test]
fn a_huffman_coded_authority_is_rewritten_raw_with_the_same_decoded_length() {
    let input = grpc_core_session(&literal(Literal::Incremental, 1, GRPC_CORE_AUTHORITY, true));
    let output = rewrite(&input);
    let expected = grpc_core_session(&literal(
        Literal::Incremental,
        1,
        GRPC_CORE_AUTHORITY_REWRITTEN,
        false,
    ));
    assert_eq!(output, expected);
    assert!(
        output.len() > input.len(),
        "the raw value is longer than the Huffman-coded one, and the frame length follows"
    );
    let rewritten = version_request(GRPC_CORE_AUTHORITY_REWRITTEN);
    assert_eq!(accepted_by_h2(&output), [rewritten.clone(), rewritten]);
}

#[test]
fn every_literal_representation_keeps_its_representation() {
    // (the field as sent, the field expected), all on one connection: the
    // first adds entry 62, which the second names.
    let bad = b"/run/x y@z%";
    let good = b"_run_x_y_z_";
    let fields: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (
            literal(Literal::Incremental, 1, bad, true),
            literal(Literal::Incremental, 1, good, false),
        ),
        (
            literal(Literal::Without, 62, bad, false),
            literal(Literal::Without, 62, good, false),
        ),
        (
            literal(Literal::Never, 1, bad, true),
            literal(Literal::Never, 1, good, false),
        ),
        (
            literal_with_new_name(Literal::Without, AUTHORITY_NAME, false, bad, false),
            literal_with_new_name(Literal::Without, AUTHORITY_NAME, false, good, false),
        ),
        (
            literal_with_new_name(Literal::Never, AUTHORITY_NAME, true, bad, true),
            literal_with_new_name(Literal::Never, AUTHORITY_NAME, true, good, false),
        ),
        (
            literal_with_new_name(Literal::Incremental, AUTHORITY_NAME, true, bad, false),
            literal_with_new_name(Literal::Incremental, AUTHORITY_NAME, true, good, false),
        ),
        // The entry the previous field added, by index.
        (indexed(62), indexed(62)),
    ];
    let block = |authority_field: &[u8]| {
        [
            &[0x83, 0x86][..],
            &literal(Literal::Without, 4, VERSION_PATH, false),
            authority_field,
        ]
        .concat()
    };
    let session = |expected: bool| {
        let mut frames = Vec::new();
        for (number, (sent, rewritten)) in fields.iter().enumerate() {
            let field = if expected { rewritten } else { sent };
            frames.push(headers_frame(
                2 * number as u32 + 1,
                FLAG_END_STREAM,
                &block(field),
            ));
        }
        frames.push(end_request(2 * fields.len() as u32 + 1));
        client_stream(&frames)
    };
    let output = rewrite(&session(false));
    assert_eq!(output, session(true));
    let accepted = accepted_by_h2(&output);
    assert_eq!(accepted.len(), fields.len());
    for request in accepted {
        assert_eq!(request.authority.as_deref(), Some("_run_x_y_z_"));
    }
}

const AUTHORITY_NAME: &[u8] = b":authority";

#[test]
fn valid_authorities_and_grpc_go_sessions_pass_through_byte_identical() {
    for authority in [
        &b"localhost"[..],
        b"localhost:10010",
        b"[::1]:10010",
        b"127.0.0.1",
        b"user@host:1",
    ] {
        for huffman in [false, true] {
            let input = grpc_core_session(&literal(Literal::Incremental, 1, authority, huffman));
            assert!(
                rewrite(&input) == input,
                "{}",
                String::from_utf8_lossy(authority)
            );
        }
    }

    // What grpc-go sends: its encoder indexes what the table holds, adds
    // everything else, Huffman-codes where shorter; every call carries a new
    // grpc-timeout, so after about seventy calls the first entries (the
    // authority among them) are evicted and sent again. Window updates and
    // pings between the calls.
    let mut encoder = TestEncoder::new();
    let mut frames = vec![frame(FRAME_TYPE_WINDOW_UPDATE, 0, 0, &[0, 0xff, 0, 0])];
    let calls = 200u32;
    for call in 0..calls {
        let timeout = format!("{}u", 1_999_000 + call);
        let mut block = Vec::new();
        for (name, value) in [
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", VERSION_PATH),
            (b":authority", b"localhost"),
            (b"content-type", b"application/grpc"),
            (b"user-agent", b"grpc-go/1.72.0"),
            (b"te", b"trailers"),
            (b"grpc-timeout", timeout.as_bytes()),
        ] {
            encoder.encode_like_grpc_go(name, value, &mut block);
        }
        let stream_id = 1 + 2 * call;
        frames.push(headers_frame(stream_id, 0, &block));
        frames.push(grpc_message_frame(stream_id));
        frames.push(frame(FRAME_TYPE_PING, 0, 0, &call.to_be_bytes().repeat(2)));
    }
    assert!(
        encoder.authority_literals > 1,
        "the authority was evicted and sent again"
    );
    frames.push(end_request(1 + 2 * calls));
    let input = client_stream(&frames);
    let output = rewrite(&input);
    assert!(output == input, "a grpc-go session passes unchanged");
    let accepted = accepted_by_h2(&output);
    assert_eq!(accepted.len(), calls as usize);
    assert!(
        accepted
            .iter()
            .all(|request| request.authority.as_deref() == Some("localhost"))
    );
}

/// grpc-core's first request with its authority Huffman-coded, cut into a
/// padded HEADERS frame with priority fields and two CONTINUATION frames.
fn fragmented_padded_prioritized_first_request(stream_id: u32) -> Vec<u8> {
    let block = first_request_block(&literal(Literal::Incremental, 1, GRPC_CORE_AUTHORITY, true));
    // Inside the path, inside the authority, inside content-type.
    let (first, rest) = block.split_at(20);
    let (second, third) = rest.split_at(30);
    let priority = [0x00, 0x00, 0x00, 0x00, 0x0f];
    let padding = [0u8; 7];
    let headers_payload = [&[padding.len() as u8][..], &priority, first, &padding].concat();
    [
        frame(
            FRAME_TYPE_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY,
            stream_id,
            &headers_payload,
        ),
        frame(FRAME_TYPE_CONTINUATION, 0, stream_id, second),
        frame(FRAME_TYPE_CONTINUATION, FLAG_END_HEADERS, stream_id, third),
    ]
    .concat()
}

#[test]
fn a_block_in_continuation_frames_with_padding_and_priority_becomes_one_headers_frame() {
    let input = client_stream(&[
        fragmented_padded_prioritized_first_request(1),
        grpc_message_frame(1),
        headers_frame(3, 0, &second_request_block()),
        grpc_message_frame(3),
        end_request(5),
    ]);
    let output = rewrite(&input);
    let rewritten_block = first_request_block(&literal(
        Literal::Incremental,
        1,
        GRPC_CORE_AUTHORITY_REWRITTEN,
        false,
    ));
    // Priority kept, padding dropped, END_HEADERS on the one frame.
    let expected = client_stream(&[
        frame(
            FRAME_TYPE_HEADERS,
            FLAG_PRIORITY | FLAG_END_HEADERS,
            1,
            &[&[0x00, 0x00, 0x00, 0x00, 0x0f][..], &rewritten_block].concat(),
        ),
        grpc_message_frame(1),
        headers_frame(3, 0, &second_request_block()),
        grpc_message_frame(3),
        end_request(5),
    ]);
    assert_eq!(output, expected);
    let rewritten = version_request(GRPC_CORE_AUTHORITY_REWRITTEN);
    assert_eq!(accepted_by_h2(&output), [rewritten.clone(), rewritten]);

    // END_STREAM survives the reframing too.
    let input = client_stream(&[
        headers_frame(
            1,
            FLAG_END_STREAM,
            &first_request_block(&literal(Literal::Never, 1, GRPC_CORE_AUTHORITY, false)),
        ),
        end_request(3),
    ]);
    let output = rewrite(&input);
    assert_eq!(
        FrameHeader::parse(&output[33..]).flags,
        FLAG_END_STREAM | FLAG_END_HEADERS
    );
    assert_eq!(accepted_by_h2(&output).len(), 1);
}

#[test]
fn a_block_that_outgrows_one_frame_is_split_into_continuation_frames() {
    // A Huffman-coded authority of 600 '%' (6 bits each: 450 bytes) that
    // becomes 600 raw bytes, next to a header that fills the frame.
    let authority = vec![b'%'; 600];
    let filler = vec![b'f'; 15_800];
    let block = [
        &[0x83, 0x86][..],
        &literal(Literal::Without, 4, VERSION_PATH, false),
        &literal(Literal::Incremental, 1, &authority, true),
        &literal_with_new_name(Literal::Without, b"x-filler", false, &filler, false),
    ]
    .concat();
    assert!(block.len() <= FRAME_PAYLOAD_BYTES_MAX);
    let input = client_stream(&[
        headers_frame(1, FLAG_END_STREAM, &block),
        // Refers to the authority by index: the rewritten one.
        headers_frame(
            3,
            FLAG_END_STREAM,
            &[
                &[0x83, 0x86][..],
                &literal(Literal::Without, 4, VERSION_PATH, false),
                &indexed(62),
            ]
            .concat(),
        ),
        end_request(5),
    ]);
    let output = rewrite(&input);

    let mut frames = Vec::new();
    let mut offset = CLIENT_PREFACE.len();
    while offset < output.len() {
        let header = FrameHeader::parse(&output[offset..]);
        assert!(header.length <= FRAME_PAYLOAD_BYTES_MAX);
        frames.push((
            header.frame_type,
            header.flags,
            header.stream_id,
            header.length,
        ));
        offset += FRAME_HEADER_BYTES + header.length;
    }
    assert_eq!(offset, output.len());
    let expected_block_bytes =
        block.len() - string(&authority, true).len() + string(&vec![b'_'; 600], false).len();
    assert_eq!(expected_block_bytes, block.len() + 600 - 450);
    assert_eq!(
        frames[1..3],
        [
            (
                FRAME_TYPE_HEADERS,
                FLAG_END_STREAM,
                1,
                FRAME_PAYLOAD_BYTES_MAX
            ),
            (
                FRAME_TYPE_CONTINUATION,
                FLAG_END_HEADERS,
                1,
                expected_block_bytes - FRAME_PAYLOAD_BYTES_MAX
            ),
        ]
    );
    let accepted = accepted_by_h2(&output);
    assert_eq!(accepted.len(), 2);
    for request in &accepted {
        assert_eq!(request.authority.as_deref(), Some(&"_".repeat(600)[..]));
    }
    assert_eq!(
        accepted[0].headers,
        [("x-filler".to_owned(), "f".repeat(15_800))]
    );
}

/// A session with everything the parser has to follow: the preface, a
/// fragmented, padded and prioritized block to rewrite, DATA, PING, a block
/// that refers back to it, a valid block and a zero-length frame.
fn everything_session() -> Vec<u8> {
    client_stream(&[
        frame(FRAME_TYPE_WINDOW_UPDATE, 0, 0, &[0, 0, 0x10, 0]),
        fragmented_padded_prioritized_first_request(1),
        grpc_message_frame(1),
        frame(FRAME_TYPE_PING, 0, 0, b"12345678"),
        headers_frame(3, 0, &second_request_block()),
        frame(FRAME_TYPE_DATA, 0, 3, &[]),
        grpc_message_frame(3),
        headers_frame(
            5,
            FLAG_END_STREAM,
            &first_request_block(&literal(Literal::Without, 1, b"localhost", true)),
        ),
        end_request(7),
    ])
}

#[test]
fn every_split_of_the_input_and_every_read_size_give_the_same_output() {
    let input = everything_session();
    let whole = rewrite(&input);
    let rewritten = version_request(GRPC_CORE_AUTHORITY_REWRITTEN);
    assert_eq!(
        accepted_by_h2(&whole),
        [rewritten.clone(), rewritten, version_request(b"localhost")]
    );
    for split in 0..=input.len() {
        let chunks = vec![input[..split].to_vec(), input[split..].to_vec()];
        assert!(
            rewrite_chunks(chunks, 64 * 1024) == whole,
            "split at byte {split}"
        );
    }
    for (first, second) in [(10, 30), (33, 42), (50, 51), (60, 200), (100, 101)] {
        let chunks = vec![
            input[..first].to_vec(),
            input[first..second].to_vec(),
            input[second..].to_vec(),
        ];
        assert!(
            rewrite_chunks(chunks, 64 * 1024) == whole,
            "split at {first} and {second}"
        );
    }
    let bytes: Vec<Vec<u8>> = input.iter().map(|&byte| vec![byte]).collect();
    assert!(
        rewrite_chunks(bytes.clone(), 64 * 1024) == whole,
        "byte by byte"
    );
    assert!(
        rewrite_chunks(bytes, 1) == whole,
        "byte by byte, read by read"
    );
    for read_bytes in [1, 2, 9, 100] {
        assert!(
            rewrite_chunks(vec![input.clone()], read_bytes) == whole,
            "reads of {read_bytes}"
        );
    }
}

#[test]
fn what_the_mirror_cannot_follow_passes_through_unchanged_from_there_on() {
    let bad_authority_request = |stream_id| {
        headers_frame(
            stream_id,
            FLAG_END_STREAM,
            &first_request_block(&literal(
                Literal::Incremental,
                1,
                GRPC_CORE_AUTHORITY,
                false,
            )),
        )
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "not HTTP/2",
            b"GET / HTTP/1.1\r\nHost: %2Fx\r\n\r\n".to_vec(),
        ),
        (
            "a preface that goes wrong late",
            [&CLIENT_PREFACE[..23], b"X", &bad_authority_request(1)].concat(),
        ),
        (
            "an index the table does not have",
            client_stream(&[
                headers_frame(1, FLAG_END_STREAM, &indexed(70)),
                bad_authority_request(3),
            ]),
        ),
        (
            "a size update above the limit",
            client_stream(&[
                headers_frame(1, FLAG_END_STREAM, &[0x3f, 0xe2, 0x1f]),
                bad_authority_request(3),
            ]),
        ),
        (
            "padding longer than the frame",
            client_stream(&[
                frame(
                    FRAME_TYPE_HEADERS,
                    FLAG_PADDED | FLAG_END_HEADERS,
                    1,
                    &[9, 0x82],
                ),
                bad_authority_request(3),
            ]),
        ),
        (
            "a block interrupted by another frame",
            client_stream(&[
                frame(FRAME_TYPE_HEADERS, 0, 1, &[0x83]),
                frame(FRAME_TYPE_PING, 0, 0, b"12345678"),
                frame(FRAME_TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &[0x86]),
                bad_authority_request(3),
            ]),
        ),
        (
            "a continuation of another stream",
            client_stream(&[
                frame(FRAME_TYPE_HEADERS, 0, 1, &[0x83]),
                frame(FRAME_TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &[0x86]),
                bad_authority_request(5),
            ]),
        ),
        (
            "a frame header claiming 16 MiB",
            [
                client_stream(&[bad_authority_request(1)]),
                vec![0xff, 0xff, 0xff, FRAME_TYPE_HEADERS, 0, 0, 0, 0, 3],
                vec![0x82; 100_000],
            ]
            .concat(),
        ),
        (
            "input that ends inside a block",
            client_stream(&[bad_authority_request(1)])[..60].to_vec(),
        ),
    ];
    for (case, input) in cases {
        // A rewrite before the trouble would show; there is none, except in
        // the 16 MiB case, whose first request comes before it.
        let output = rewrite(&input);
        if case == "a frame header claiming 16 MiB" {
            let prefix = client_stream(&[bad_authority_request(1)]).len();
            assert_eq!(output[prefix..], input[prefix..], "{case}");
            assert_ne!(output[..prefix], input[..prefix], "{case}");
        } else {
            assert!(output == input, "{case}");
        }
        for split in [1, 7, 24, 40, input.len() / 2] {
            let split = split.min(input.len());
            let chunks = vec![input[..split].to_vec(), input[split..].to_vec()];
            assert!(
                rewrite_chunks(chunks, 1000) == output,
                "{case}, split at {split}"
            );
        }
    }
}

#[test]
fn a_header_block_larger_than_the_limit_passes_through_without_being_held_whole() {
    let fragment = vec![0x82; 16_000];
    let mut frames = vec![frame(FRAME_TYPE_HEADERS, 0, 1, &fragment)];
    for _ in 0..(HEADER_BLOCK_BYTES_MAX / fragment.len() + 2) {
        frames.push(frame(FRAME_TYPE_CONTINUATION, 0, 1, &fragment));
    }
    frames.push(frame(FRAME_TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &[0x86]));
    frames.push(headers_frame(
        3,
        FLAG_END_STREAM,
        &first_request_block(&literal(
            Literal::Incremental,
            1,
            GRPC_CORE_AUTHORITY,
            false,
        )),
    ));
    let input = client_stream(&frames);

    let mut rewriter = AuthorityRewriter::new();
    let mut reader = ChunkedReader {
        chunks: input.chunks(5000).map(<[u8]>::to_vec).collect(),
    };
    let mut context = Context::from_waker(Waker::noop());
    let mut storage = vec![0u8; 8192];
    let mut output = Vec::new();
    let mut buffer_bytes_max = 0;
    loop {
        let mut read = ReadBuf::new(&mut storage);
        let Poll::Ready(Ok(())) =
            rewriter.poll_read(Pin::new(&mut reader), &mut context, &mut read)
        else {
            panic!("the reader never blocks or fails");
        };
        buffer_bytes_max = buffer_bytes_max.max(rewriter.buffer.len());
        if read.filled().is_empty() {
            break;
        }
        output.extend_from_slice(read.filled());
    }
    assert!(output == input);
    assert_eq!(rewriter.parse, Parse::PassThrough);
    assert!(
        buffer_bytes_max <= HEADER_BLOCK_BYTES_MAX + 2 * READ_CHUNK_BYTES,
        "held {buffer_bytes_max} bytes"
    );
}

#[test]
fn unreserved_only_values_are_exactly_the_ones_the_fast_path_accepts() {
    let unreserved: Vec<u8> = (0..=255u8).filter(|&byte| is_unreserved(byte)).collect();
    assert_eq!(unreserved.len(), 26 * 2 + 10 + 4);
    for &byte in &unreserved {
        for value in [
            vec![byte],
            vec![byte; 3],
            [&b"a"[..], &[byte], b"z"].concat(),
        ] {
            assert!(
                http::uri::Authority::try_from(&value[..]).is_ok(),
                "{value:?}"
            );
            assert!(is_valid_authority(&value));
        }
    }
    assert!(!is_valid_authority(b""));
    assert!(!is_valid_authority(GRPC_CORE_AUTHORITY));
    assert!(is_valid_authority(GRPC_CORE_AUTHORITY_REWRITTEN));
    assert!(is_valid_authority(b"localhost:10010"));
}

/// Deterministic choices from a seed (xorshift64*), so that a failing case
/// is its seed.
struct Choices(u64);

impl Choices {
    fn new(seed: u64) -> Choices {
        Choices(seed | 1)
    }

    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % bound
    }

    fn percent(&mut self, chance: usize) -> bool {
        self.below(100) < chance
    }

    fn literal(&mut self) -> Literal {
        [Literal::Incremental, Literal::Without, Literal::Never][self.below(3)]
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn text(&mut self, alphabet: &[u8], length_max: usize) -> Vec<u8> {
        let length = 1 + self.below(length_max);
        (0..length).map(|_| *self.pick(alphabet)).collect()
    }
}

/// The authority h2 should see for what the client sent.
fn expected_authority(sent: &[u8]) -> Vec<u8> {
    if http::uri::Authority::try_from(sent).is_ok() {
        return sent.to_vec();
    }
    sent.iter()
        .map(|&byte| if is_unreserved(byte) { byte } else { b'_' })
        .collect()
}

/// A client that encodes each field in a representation chosen at random,
/// refers to earlier entries, resizes its table, and frames its blocks in
/// random pieces with random padding and priority. Returns the bytes, the
/// requests h2 should accept, and whether any authority was invalid.
fn random_session(seed: u64, requests: usize) -> (Vec<u8>, Vec<AcceptedRequest>, bool) {
    const VALID: [&[u8]; 5] = [
        b"localhost",
        b"localhost:10010",
        b"[::1]:10010",
        b"cri.example",
        b"10.0.0.1:1",
    ];
    const HOSTILE: &[u8] = b"%/ @:[]?#\"<>^`{|}\\abcxyz0129-._~\x80\xc3\xa9\xff";
    const VALUE: &[u8] = b"abcdefghijklmnopqrstuvwxyz ABC0123456789-_.:/%=;,";
    const NAMES: [&[u8]; 4] = [b"x-a", b"x-request-id", b"user-agent", b"grpc-timeout"];

    let mut choices = Choices::new(seed);
    let mut encoder = TestEncoder::new();
    let mut frames = Vec::new();
    let mut expected = Vec::new();
    let mut any_invalid = false;
    let mut open_streams = Vec::new();
    for number in 0..requests {
        let stream_id = 2 * number as u32 + 1;
        let mut block = Vec::new();
        if choices.percent(15) {
            let capacity = *choices.pick(&[0, 64, 200, 1000, 4096]);
            encoder.set_capacity(capacity, &mut block);
        }
        block.extend_from_slice(&[0x83, 0x86]);
        let path = format!("/p{}", choices.below(4)).into_bytes();
        let kind = choices.literal();
        block.extend_from_slice(&literal(kind, 4, &path, choices.percent(50)));
        if matches!(kind, Literal::Incremental) {
            encoder.insert(b":path", &path);
        }

        // The authority: an entry already in the table, or a literal.
        let authority_entries: Vec<usize> = encoder
            .table
            .iter()
            .enumerate()
            .filter(|(_, (name, _))| name == AUTHORITY_NAME)
            .map(|(slot, _)| slot + STATIC_TABLE.len() + 1)
            .collect();
        let sent = if !authority_entries.is_empty() && choices.percent(40) {
            let index = *choices.pick(&authority_entries);
            block.extend_from_slice(&indexed(index));
            encoder.table[index - STATIC_TABLE.len() - 1].1.clone()
        } else {
            let value = if choices.percent(40) {
                choices.pick(&VALID).to_vec()
            } else {
                choices.text(HOSTILE, 60)
            };
            let kind = choices.literal();
            let huffman = choices.percent(50);
            match choices.below(3) {
                0 => block.extend_from_slice(&literal(kind, 1, &value, huffman)),
                1 if !authority_entries.is_empty() => {
                    let name_index = *choices.pick(&authority_entries);
                    block.extend_from_slice(&literal(kind, name_index, &value, huffman));
                }
                _ => block.extend_from_slice(&literal_with_new_name(
                    kind,
                    AUTHORITY_NAME,
                    choices.percent(50),
                    &value,
                    huffman,
                )),
            }
            if matches!(kind, Literal::Incremental) {
                encoder.insert(AUTHORITY_NAME, &value);
            }
            value
        };
        any_invalid |= http::uri::Authority::try_from(&sent[..]).is_err();

        // Regular headers: by index when the table has one, else literal.
        let mut headers = Vec::new();
        for _ in 0..choices.below(4) {
            let regular_entries: Vec<usize> = encoder
                .table
                .iter()
                .enumerate()
                .filter(|(_, (name, _))| !name.starts_with(b":"))
                .map(|(slot, _)| slot + STATIC_TABLE.len() + 1)
                .collect();
            let (name, value) = if !regular_entries.is_empty() && choices.percent(30) {
                let index = *choices.pick(&regular_entries);
                block.extend_from_slice(&indexed(index));
                encoder.table[index - STATIC_TABLE.len() - 1].clone()
            } else {
                let name = choices.pick(&NAMES).to_vec();
                let value = if choices.percent(10) {
                    vec![b'v'; 300 + choices.below(900)]
                } else {
                    choices.text(VALUE, 40)
                };
                let kind = choices.literal();
                let huffman = choices.percent(50);
                match encoder.find(&name, None) {
                    Some(name_index) if choices.percent(60) => {
                        block.extend_from_slice(&literal(kind, name_index, &value, huffman));
                    }
                    _ => block.extend_from_slice(&literal_with_new_name(
                        kind,
                        &name,
                        choices.percent(50),
                        &value,
                        huffman,
                    )),
                }
                if matches!(kind, Literal::Incremental) {
                    encoder.insert(&name, &value);
                }
                (name, value)
            };
            headers.push((
                String::from_utf8(name).unwrap(),
                String::from_utf8(value).unwrap(),
            ));
        }
        headers.sort();
        expected.push(AcceptedRequest {
            authority: Some(String::from_utf8(expected_authority(&sent)).unwrap()),
            path: String::from_utf8(path).unwrap(),
            headers,
        });

        // Framing.
        let end_stream = choices.percent(50);
        let priority = if choices.percent(30) {
            vec![0, 0, 0, 0, choices.below(256) as u8]
        } else {
            Vec::new()
        };
        let padding = if choices.percent(30) {
            vec![0; choices.below(20)]
        } else {
            Vec::new()
        };
        let mut cuts: Vec<usize> = (0..choices.below(4))
            .map(|_| choices.below(block.len() + 1))
            .collect();
        cuts.sort();
        cuts.push(block.len());
        let mut start = 0;
        for (piece, &end) in cuts.iter().enumerate() {
            let last = piece + 1 == cuts.len();
            let end_headers = if last { FLAG_END_HEADERS } else { 0 };
            if piece == 0 {
                let mut flags = end_headers;
                let mut payload = Vec::new();
                if end_stream {
                    flags |= FLAG_END_STREAM;
                }
                if !padding.is_empty() {
                    flags |= FLAG_PADDED;
                    payload.push(padding.len() as u8);
                }
                if !priority.is_empty() {
                    flags |= FLAG_PRIORITY;
                    payload.extend_from_slice(&priority);
                }
                payload.extend_from_slice(&block[start..end]);
                payload.extend_from_slice(&padding);
                frames.push(frame(FRAME_TYPE_HEADERS, flags, stream_id, &payload));
            } else {
                frames.push(frame(
                    FRAME_TYPE_CONTINUATION,
                    end_headers,
                    stream_id,
                    &block[start..end],
                ));
            }
            start = end;
        }
        if !end_stream {
            open_streams.push(stream_id);
        }
        // Other frames between blocks, and the messages of open streams.
        if choices.percent(30) {
            frames.push(frame(FRAME_TYPE_PING, 0, 0, b"pingping"));
        }
        if !open_streams.is_empty() && choices.percent(50) {
            let stream_id = open_streams.remove(choices.below(open_streams.len()));
            frames.push(grpc_message_frame(stream_id));
        }
    }
    for stream_id in open_streams {
        frames.push(grpc_message_frame(stream_id));
    }
    frames.push(end_request(2 * requests as u32 + 1));
    (client_stream(&frames), expected, any_invalid)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// h2, with its own HPACK decoder, accepts every request of a random
    /// session with the authority sent (when valid) or its rewrite, through
    /// table resizes and evictions; the output does not depend on how the
    /// input is cut; and a session with nothing to rewrite passes unchanged.
    #[test]
    fn random_sessions_reach_h2_with_every_authority_accepted(
        seed in any::<u64>(),
        requests in 1usize..16,
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        read_bytes in 1usize..20_000,
    ) {
        let (input, expected, any_invalid) = random_session(seed, requests);
        let output = rewrite(&input);
        prop_assert_eq!(accepted_by_h2(&output), expected);
        if !any_invalid {
            prop_assert!(output == input);
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (input.len() + 1)).collect();
        cuts.sort();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts {
            chunks.push(input[start..cut].to_vec());
            start = cut;
        }
        chunks.push(input[start..].to_vec());
        prop_assert!(rewrite_chunks(chunks, read_bytes) == output);
    }
}
