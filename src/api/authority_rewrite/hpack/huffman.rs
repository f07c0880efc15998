//! The HPACK Huffman code (RFC 7541 Appendix B) and a decoder for it.
//!
//! The mirror needs decoded strings for two reasons only: the size a new
//! dynamic table entry takes is counted in decoded bytes, and an `:authority`
//! value has to be read to know whether h2 will accept it. Both are rare
//! enough per request that a bit-at-a-time walk of a 256-node tree is fast
//! enough, and the tree is built at compile time, so a typo in the table
//! below that breaks the prefix property fails the build.

/// The code of every symbol, indexed by symbol (256 is end-of-string): the
/// code right-aligned in a `u32`, and its length in bits. Transcribed from
/// RFC 7541 Appendix B ("code as hex aligned to LSB", "len in bits").
const CODES: [(u32, u8); 257] = [
    // 0 - 15
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    // 16 - 31
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    // 32 - 47: ' ' ! " # $ % & ' ( ) * + , - . /
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    // 48 - 63: 0 1 2 3 4 5 6 7 8 9 : ; < = > ?
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    // 64 - 79: @ A B C D E F G H I J K L M N O
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    // 80 - 95: P Q R S T U V W X Y Z [ \ ] ^ _
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    // 96 - 111: ` a b c d e f g h i j k l m n o
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    // 112 - 127: p q r s t u v w x y z { | } ~ DEL
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    // 128 - 143
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    // 144 - 159
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    // 160 - 175
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    // 176 - 191
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    // 192 - 207
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    // 208 - 223
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    // 224 - 239
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    // 240 - 255
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    // 256: end of string
    (0x3fffffff, 30),
];

const END_OF_STRING: u16 = 256;

/// A child in `DECODE_TREE` with this bit set is a leaf holding the symbol in
/// its low bits; otherwise it is the index of an inner node.
const LEAF: u16 = 0x8000;

/// The inner nodes of the code's binary tree, root first: `[child on 0, child
/// on 1]`. A complete prefix code over 257 symbols has exactly 256 of them.
const DECODE_TREE: [[u16; 2]; 256] = build_decode_tree();

/// Why a Huffman-coded string cannot be decoded (RFC 7541 section 5.2 makes
/// each of these a decoding error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    #[error("huffman string contains the end-of-string symbol")]
    EndOfStringSymbol,
    #[error("huffman string ends with more than 7 bits of padding")]
    PaddingTooLong,
    #[error("huffman string ends with padding that is not a prefix of end-of-string")]
    PaddingNotOnes,
}

/// Decodes `encoded`, handing each decoded byte to `emit`.
pub fn decode(encoded: &[u8], mut emit: impl FnMut(u8)) -> Result<(), HuffmanError> {
    let mut node = 0usize;
    // Bits read since the last symbol, and whether all of them were ones:
    // what is left at the end is padding, which must be a short prefix of
    // end-of-string (all ones).
    let mut pending_bits = 0u32;
    let mut pending_all_ones = true;
    for &byte in encoded {
        for shift in (0..8).rev() {
            let bit = (byte >> shift) & 1;
            pending_bits += 1;
            pending_all_ones &= bit == 1;
            let child = DECODE_TREE[node][usize::from(bit)];
            if child & LEAF == 0 {
                node = usize::from(child);
                continue;
            }
            let symbol = child & !LEAF;
            if symbol == END_OF_STRING {
                return Err(HuffmanError::EndOfStringSymbol);
            }
            // The mask keeps the conversion lossless: every other symbol is a byte.
            emit((symbol & 0xff) as u8);
            node = 0;
            pending_bits = 0;
            pending_all_ones = true;
        }
    }
    if pending_bits > 7 {
        return Err(HuffmanError::PaddingTooLong);
    }
    if !pending_all_ones {
        return Err(HuffmanError::PaddingNotOnes);
    }
    Ok(())
}

/// The length of `encoded` once decoded, which is what a dynamic table entry
/// is charged for.
pub fn decoded_len(encoded: &[u8]) -> Result<usize, HuffmanError> {
    let mut length = 0usize;
    decode(encoded, |_| length += 1)?;
    Ok(length)
}

/// Encodes `plain` (tests only: the daemon never Huffman-codes anything, it
/// writes rewritten values raw).
#[cfg(test)]
pub fn encode(plain: &[u8], output: &mut Vec<u8>) {
    let mut bits = 0u64;
    let mut bit_count = 0u32;
    for &byte in plain {
        let (code, length) = CODES[usize::from(byte)];
        bits = (bits << length) | u64::from(code);
        bit_count += u32::from(length);
        while bit_count >= 8 {
            bit_count -= 8;
            output.push((bits >> bit_count) as u8);
        }
    }
    if bit_count > 0 {
        // Pad with the most significant bits of end-of-string: ones.
        let padding = 8 - bit_count;
        output.push(((bits << padding) as u8) | ((1u8 << padding) - 1));
    }
}

/// Builds the tree from `CODES`. A const fn, so that a table that is not a
/// complete prefix code (a code repeated, one code the prefix of another, a
/// code missing) stops the build instead of misdecoding at run time.
const fn build_decode_tree() -> [[u16; 2]; 256] {
    // 0 marks a child not assigned yet: the root is never anyone's child.
    let mut tree = [[0u16; 2]; 256];
    let mut nodes_used = 1usize;
    let mut symbol = 0usize;
    while symbol < CODES.len() {
        let (code, length) = CODES[symbol];
        let mut node = 0usize;
        let mut remaining_bits = length as u32;
        while remaining_bits > 1 {
            remaining_bits -= 1;
            let bit = ((code >> remaining_bits) & 1) as usize;
            let child = tree[node][bit];
            if child == 0 {
                assert!(
                    nodes_used < 256,
                    "more inner nodes than a complete code has"
                );
                tree[node][bit] = nodes_used as u16;
                node = nodes_used;
                nodes_used += 1;
            } else {
                assert!(child & LEAF == 0, "a code extends a shorter code");
                node = child as usize;
            }
        }
        let bit = (code & 1) as usize;
        assert!(
            tree[node][bit] == 0,
            "a code is repeated or is a prefix of another"
        );
        tree[node][bit] = LEAF | symbol as u16;
        symbol += 1;
    }
    assert!(
        nodes_used == 256,
        "a complete code over 257 symbols has 256 inner nodes"
    );
    let mut node = 0usize;
    while node < 256 {
        assert!(
            tree[node][0] != 0 && tree[node][1] != 0,
            "the code is not complete"
        );
        node += 1;
    }
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(encoded: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut output = Vec::new();
        decode(encoded, |byte| output.push(byte))?;
        Ok(output)
    }

    #[test]
    fn decodes_the_rfc_7541_appendix_c_strings() {
        let cases: [(&[u8], &[u8]); 6] = [
            // C.4.1
            (
                &[
                    0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
                ],
                b"www.example.com",
            ),
            // C.4.2
            (&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf], b"no-cache"),
            // C.4.3
            (
                &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f],
                b"custom-key",
            ),
            // C.6.1
            (&[0x64, 0x02], b"302"),
            (&[0xae, 0xc3, 0x77, 0x1a, 0x4b], b"private"),
            // C.6.2
            (&[0x64, 0x0e, 0xff], b"307"),
        ];
        for (encoded, plain) in cases {
            assert_eq!(decoded(encoded).unwrap(), plain);
            assert_eq!(decoded_len(encoded).unwrap(), plain.len());
            let mut reencoded = Vec::new();
            encode(plain, &mut reencoded);
            assert_eq!(reencoded, encoded, "{}", String::from_utf8_lossy(plain));
        }
    }

    #[test]
    fn every_byte_round_trips_alone_and_in_sequence() {
        let all: Vec<u8> = (0..=255).collect();
        for byte in 0..=255u8 {
            let mut encoded = Vec::new();
            encode(&[byte], &mut encoded);
            assert_eq!(decoded(&encoded).unwrap(), [byte]);
        }
        let mut encoded = Vec::new();
        encode(&all, &mut encoded);
        assert_eq!(decoded(&encoded).unwrap(), all);
    }

    #[test]
    fn the_code_is_complete_and_end_of_string_is_thirty_ones() {
        // Kraft's equality in units of 2^-30, the longest code.
        let sum: u64 = CODES.iter().map(|&(_, length)| 1u64 << (30 - length)).sum();
        assert_eq!(sum, 1 << 30);
        assert_eq!(CODES[usize::from(END_OF_STRING)], ((1 << 30) - 1, 30));
    }

    #[test]
    fn padding_and_end_of_string_errors() {
        assert_eq!(decoded(&[]).unwrap(), b"");
        // '0' is 00000: three bits of ones pad it; zeros do not.
        assert_eq!(decoded(&[0b0000_0111]).unwrap(), b"0");
        assert_eq!(decoded(&[0b0000_0110]), Err(HuffmanError::PaddingNotOnes));
        // A whole byte of ones is eight bits of padding.
        assert_eq!(decoded(&[0xff]), Err(HuffmanError::PaddingTooLong));
        assert_eq!(
            decoded(&[0b0000_0111, 0xff]),
            Err(HuffmanError::PaddingTooLong)
        );
        // Thirty ones are the end-of-string symbol itself.
        assert_eq!(
            decoded(&[0xff, 0xff, 0xff, 0xfc]),
            Err(HuffmanError::EndOfStringSymbol)
        );
    }
}
