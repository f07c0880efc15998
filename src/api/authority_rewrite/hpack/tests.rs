//! The decoder against RFC 7541 Appendix C. A reference decoder built here
//! holds full entries (names and values) and evicts by its own arithmetic, so
//! the expected header lists check the field decoding and the expected
//! tables check the mirror's sizes and evictions.

use std::collections::VecDeque;

use super::*;

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|&(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// Keeps names and values, which the mirror does not.
struct ReferenceDecoder {
    entries: VecDeque<(String, String)>,
    capacity_bytes: usize,
}

impl ReferenceDecoder {
    fn new(capacity_bytes: usize) -> ReferenceDecoder {
        ReferenceDecoder {
            entries: VecDeque::new(),
            capacity_bytes,
        }
    }

    fn lookup(&self, index: usize) -> (String, String) {
        if index <= STATIC_TABLE.len() {
            let (name, value) = STATIC_TABLE[index - 1];
            return (text(name), text(value));
        }
        self.entries[index - STATIC_TABLE.len() - 1].clone()
    }

    fn size_bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|(name, value)| name.len() + value.len() + 32)
            .sum()
    }

    fn insert(&mut self, name: String, value: String) {
        self.entries.push_front((name, value));
        while self.size_bytes() > self.capacity_bytes {
            self.entries.pop_back();
        }
    }

    /// Decodes `block` through `decode_block`, which updates `mirror`.
    fn decode(&mut self, block: &[u8], mirror: &mut DynamicTable) -> Vec<(String, String)> {
        let mut list = Vec::new();
        decode_block(block, mirror, |field| {
            match field {
                Field::Indexed { index } => list.push(self.lookup(index)),
                Field::Literal {
                    indexing,
                    name,
                    value,
                    ..
                } => {
                    let name = match name {
                        FieldName::Indexed(index) => self.lookup(index).0,
                        FieldName::Literal(literal) => decoded(&literal),
                    };
                    let value = decoded(&value);
                    if indexing == Indexing::Incremental {
                        self.insert(name.clone(), value.clone());
                    }
                    list.push((name, value));
                }
                Field::SizeUpdate { size_bytes } => {
                    self.capacity_bytes = size_bytes;
                    while self.size_bytes() > self.capacity_bytes {
                        self.entries.pop_back();
                    }
                }
            }
            Ok(())
        })
        .unwrap();
        list
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn decoded(literal: &StringLiteral<'_>) -> String {
    let mut bytes = Vec::new();
    literal.decode_into(&mut bytes).unwrap();
    text(&bytes)
}

struct Step<'a> {
    block: &'a str,
    headers: &'a [(&'a str, &'a str)],
    table: &'a [(&'a str, &'a str)],
    table_size_bytes: usize,
}

fn check_sequence(capacity_bytes: usize, steps: &[Step<'_>]) {
    let mut mirror = DynamicTable::new(capacity_bytes);
    let mut reference = ReferenceDecoder::new(capacity_bytes);
    for (number, step) in steps.iter().enumerate() {
        let headers = reference.decode(&hex(step.block), &mut mirror);
        assert_eq!(
            headers,
            owned(step.headers),
            "header list of block {number}"
        );
        assert_eq!(
            Vec::from(reference.entries.clone()),
            owned(step.table),
            "table after block {number}"
        );
        assert_eq!(
            mirror.size_bytes(),
            step.table_size_bytes,
            "mirror size after block {number}"
        );
        assert_eq!(
            mirror.len(),
            step.table.len(),
            "mirror entries after block {number}"
        );
        assert_eq!(reference.size_bytes(), step.table_size_bytes);
    }
}

#[test]
fn integers_of_appendix_c_1_and_their_encoding() {
    // (encoded, prefix bits, value): C.1.1, C.1.2, C.1.3.
    let cases: [(&[u8], u32, usize); 3] = [
        (&[0b0000_1010], 5, 10),
        (&[0b0001_1111, 0b1001_1010, 0b0000_1010], 5, 1337),
        (&[0b0010_1010], 8, 42),
    ];
    for (encoded, prefix_bits, value) in cases {
        let mut offset = 0;
        assert_eq!(
            read_integer(encoded, &mut offset, prefix_bits, 0),
            Ok(value)
        );
        assert_eq!(offset, encoded.len());
        let mut written = Vec::new();
        write_integer(value, prefix_bits, 0, &mut written);
        assert_eq!(written, encoded);
    }
    // The high bits of the first byte are not part of the integer.
    let mut offset = 0;
    assert_eq!(read_integer(&[0b1110_1010], &mut offset, 5, 0), Ok(10));
    for value in [0, 30, 31, 127, 128, 255, 16_384, 1 << 24] {
        let mut written = Vec::new();
        write_integer(value, 7, 0x80, &mut written);
        assert_eq!(written[0] & 0x80, 0x80);
        let mut offset = 0;
        assert_eq!(read_integer(&written, &mut offset, 7, 0), Ok(value));
    }
}

#[test]
fn integers_that_end_early_or_run_long_are_errors() {
    let mut offset = 0;
    assert_eq!(
        read_integer(&[0x1f, 0x9a], &mut offset, 5, 0),
        Err(HpackError::Truncated { field_offset: 0 })
    );
    // Five bytes in all is what h2 takes too; a sixth is refused by both.
    let mut offset = 0;
    assert_eq!(
        read_integer(&[0x1f, 0xff, 0xff, 0xff, 0x7f], &mut offset, 5, 0),
        Ok(31 + (1 << 28) - 1)
    );
    let mut offset = 0;
    assert_eq!(
        read_integer(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x01], &mut offset, 5, 0),
        Err(HpackError::IntegerTooLong { offset: 0 })
    );
}

#[test]
fn single_representations_of_appendix_c_2() {
    // C.2.1: literal with incremental indexing, new name.
    check_sequence(
        4096,
        &[Step {
            block: "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
            headers: &[("custom-key", "custom-header")],
            table: &[("custom-key", "custom-header")],
            table_size_bytes: 55,
        }],
    );
    // C.2.2, C.2.3, C.2.4: nothing enters the table.
    for (block, header, expected_indexing) in [
        (
            "040c 2f73 616d 706c 652f 7061 7468",
            (":path", "/sample/path"),
            Some(Indexing::Without),
        ),
        (
            "1008 7061 7373 776f 7264 0673 6563 7265 74",
            ("password", "secret"),
            Some(Indexing::Never),
        ),
        ("82", (":method", "GET"), None),
    ] {
        check_sequence(
            4096,
            &[Step {
                block,
                headers: &[header],
                table: &[],
                table_size_bytes: 0,
            }],
        );
        let mut indexings = Vec::new();
        decode_block(&hex(block), &mut DynamicTable::new(4096), |field| {
            if let Field::Literal { indexing, .. } = field {
                indexings.push(indexing);
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(indexings, Vec::from_iter(expected_indexing));
    }
}

const REQUEST_HEADERS: [&[(&str, &str)]; 3] = [
    &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ],
    &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ],
    &[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ],
];

const REQUEST_TABLES: [&[(&str, &str)]; 3] = [
    &[(":authority", "www.example.com")],
    &[
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ],
    &[
        ("custom-key", "custom-value"),
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ],
];

fn request_steps<'a>(blocks: [&'a str; 3]) -> [Step<'a>; 3] {
    let sizes = [57, 110, 164];
    std::array::from_fn(|number| Step {
        block: blocks[number],
        headers: REQUEST_HEADERS[number],
        table: REQUEST_TABLES[number],
        table_size_bytes: sizes[number],
    })
}

#[test]
fn requests_without_huffman_of_appendix_c_3() {
    check_sequence(
        4096,
        &request_steps([
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ]),
    );
}

#[test]
fn requests_with_huffman_of_appendix_c_4() {
    check_sequence(
        4096,
        &request_steps([
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ]),
    );
}

const DATE_1: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE_2: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
const LOCATION: &str = "https://www.example.com";
const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";

fn response_steps<'a>(blocks: [&'a str; 3]) -> [Step<'a>; 3] {
    [
        Step {
            block: blocks[0],
            headers: &[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", DATE_1),
                ("location", LOCATION),
            ],
            table: &[
                ("location", LOCATION),
                ("date", DATE_1),
                ("cache-control", "private"),
                (":status", "302"),
            ],
            table_size_bytes: 222,
        },
        // The new :status entry evicts the old one.
        Step {
            block: blocks[1],
            headers: &[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", DATE_1),
                ("location", LOCATION),
            ],
            table: &[
                (":status", "307"),
                ("location", LOCATION),
                ("date", DATE_1),
                ("cache-control", "private"),
            ],
            table_size_bytes: 222,
        },
        // Three entries in, four evicted.
        Step {
            block: blocks[2],
            headers: &[
                (":status", "200"),
                ("cache-control", "private"),
                ("date", DATE_2),
                ("location", LOCATION),
                ("content-encoding", "gzip"),
                ("set-cookie", COOKIE),
            ],
            table: &[
                ("set-cookie", COOKIE),
                ("content-encoding", "gzip"),
                ("date", DATE_2),
            ],
            table_size_bytes: 215,
        },
    ]
}

#[test]
fn responses_without_huffman_and_with_eviction_of_appendix_c_5() {
    check_sequence(
        256,
        &response_steps([
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
             6c65 2e63 6f6d",
            "4803 3330 37c1 c0bf",
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
             54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
             5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e \
             3d31",
        ]),
    );
}

#[test]
fn responses_with_huffman_and_eviction_of_appendix_c_6() {
    check_sequence(
        256,
        &response_steps([
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ]),
    );
}

#[test]
fn authority_is_recognised_by_static_index_dynamic_index_and_literal_name() {
    let mut table = DynamicTable::new(4096);
    let mut huffman_name = vec![0x40];
    let mut coded = Vec::new();
    huffman_encode(AUTHORITY, &mut coded);
    write_integer(coded.len(), 7, 0x80, &mut huffman_name);
    huffman_name.extend_from_slice(&coded);
    huffman_name.extend_from_slice(b"\x01a");
    let blocks: [Vec<u8>; 4] = [
        // Static name 1, with incremental indexing: entry 62.
        b"\x41\x01a".to_vec(),
        // Name of entry 62, without indexing.
        b"\x0f\x2f\x01b".to_vec(),
        // A raw literal name, never indexed.
        b"\x10\x0a:authority\x01c".to_vec(),
        // A Huffman-coded literal name.
        huffman_name,
    ];
    for block in blocks {
        let mut authorities = 0;
        decode_block(&block, &mut table, |field| {
            if let Field::Literal {
                name_is_authority, ..
            } = field
            {
                assert!(name_is_authority, "{block:02x?}");
                authorities += 1;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(authorities, 1);
    }
    // A name that merely starts like it is not it.
    decode_block(b"\x00\x0b:authorityx\x01a", &mut table, |field| {
        assert!(matches!(
            field,
            Field::Literal {
                name_is_authority: false,
                ..
            }
        ));
        Ok(())
    })
    .unwrap();
}

#[test]
fn size_updates_evict_and_are_only_allowed_first_and_within_the_limit() {
    let mut table = DynamicTable::new(4096);
    decode_block(b"\x41\x01a\x41\x01b", &mut table, |_| Ok(())).unwrap();
    assert_eq!((table.len(), table.size_bytes()), (2, 2 * 43));
    // Two updates in a row are fine; shrinking to 50 keeps the newest entry.
    decode_block(b"\x3f\xe1\x1f\x3f\x13", &mut table, |_| Ok(())).unwrap();
    assert_eq!((table.len(), table.size_bytes()), (1, 43));
    // An entry larger than the table empties it.
    decode_block(b"\x41\x10aaaaaaaaaaaaaaaa", &mut table, |_| Ok(())).unwrap();
    assert_eq!((table.len(), table.size_bytes()), (0, 0));
    assert_eq!(
        decode_block(b"\x82\x20", &mut table, |_| Ok(())),
        Err(HpackError::SizeUpdateAfterField { offset: 1 })
    );
    assert_eq!(
        decode_block(b"\x3f\xe2\x1f", &mut table, |_| Ok(())),
        Err(HpackError::SizeUpdateTooLarge {
            size_bytes: 4097,
            limit_bytes: 4096
        })
    );
}

#[test]
fn bad_indexes_strings_and_huffman_are_errors() {
    let mut table = DynamicTable::new(4096);
    assert_eq!(
        decode_block(b"\x80", &mut table, |_| Ok(())),
        Err(HpackError::IndexOutOfRange {
            index: 0,
            dynamic_entries: 0
        })
    );
    assert_eq!(
        decode_block(b"\xbe", &mut table, |_| Ok(())),
        Err(HpackError::IndexOutOfRange {
            index: 62,
            dynamic_entries: 0
        })
    );
    assert_eq!(
        decode_block(b"\x82\x41\x05abc", &mut table, |_| Ok(())),
        Err(HpackError::Truncated { field_offset: 1 })
    );
    // A Huffman value of eight padding bits, in a field that is indexed (so
    // its length must be decoded).
    assert!(matches!(
        decode_block(b"\x41\x81\xff", &mut table, |_| Ok(())),
        Err(HpackError::Huffman {
            offset: 1,
            source: HuffmanError::PaddingTooLong
        })
    ));
}
