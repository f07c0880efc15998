//! A decoder for HPACK header blocks (RFC 7541) that keeps a mirror of the
//! client encoder's dynamic table.
//!
//! Why a decoder of our own when h2 has one: h2's is private, and the
//! authority rewrite needs what h2's does not give out: where each field sits
//! in the block, how it was represented, and the table state before h2 sees
//! the block. Why a mirror that holds sizes and not strings: to stay in step
//! with the client's encoder (and so with h2's decoder) only each entry's
//! size is needed, and to find `:authority` only whether an entry's name is
//! `:authority`. Values are never stored, so decoding a block allocates
//! nothing; a value is decoded only when the caller asks for it.

mod huffman;
mod static_table;

use std::collections::VecDeque;

pub use huffman::HuffmanError;
#[cfg(test)]
pub use huffman::encode as huffman_encode;
pub use static_table::STATIC_TABLE;

/// The pseudo-header the rewrite is about.
pub const AUTHORITY: &[u8] = b":authority";

/// What RFC 7541 section 4.1 charges each entry on top of its name and value.
pub const ENTRY_OVERHEAD_BYTES: usize = 32;

/// h2 refuses integers longer than five bytes, the prefix byte included;
/// taking the same ones keeps the mirror from giving up on a block h2
/// decodes. Four continuation bytes already reach 256 Mi, beyond any index
/// or string a real client sends.
const INTEGER_CONTINUATION_BYTES_MAX: usize = 4;

/// Why a header block cannot be decoded. Each one is also an error for h2, so
/// the caller stops mirroring and lets h2 report it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HpackError {
    #[error("header block ends inside the field that starts at byte {field_offset}")]
    Truncated { field_offset: usize },
    #[error(
        "integer at byte {offset} is longer than {INTEGER_CONTINUATION_BYTES_MAX} continuation bytes"
    )]
    IntegerTooLong { offset: usize },
    #[error(
        "table index {index} is neither static nor among the {dynamic_entries} dynamic entries"
    )]
    IndexOutOfRange {
        index: usize,
        dynamic_entries: usize,
    },
    #[error("dynamic table size update at byte {offset} follows a header field")]
    SizeUpdateAfterField { offset: usize },
    #[error(
        "dynamic table size update to {size_bytes} bytes exceeds the {limit_bytes} bytes allowed"
    )]
    SizeUpdateTooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    #[error("huffman string at byte {offset}: {source}")]
    Huffman {
        offset: usize,
        #[source]
        source: HuffmanError,
    },
}

/// Whether and how a literal field enters the dynamic table (RFC 7541 6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexing {
    Incremental,
    Without,
    Never,
}

/// A string literal as it sits in the block.
#[derive(Debug, Clone, Copy)]
pub struct StringLiteral<'a> {
    /// Offset in the block of its first byte (the one with the Huffman flag
    /// and the start of the length).
    pub encoded_start: usize,
    /// Offset in the block just past its last byte.
    pub encoded_end: usize,
    pub huffman: bool,
    /// The string's octets as sent (Huffman-coded when `huffman`).
    pub octets: &'a [u8],
}

/// A literal field's name: a table index, or a string of its own.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "the rewrite reads only the authority's value; the tests decode all"
    )
)]
pub enum FieldName<'a> {
    Indexed(usize),
    Literal(StringLiteral<'a>),
}

/// One representation in a header block, in the order the block holds them.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "the rewrite reads only the authority's value; the tests decode all"
    )
)]
pub enum Field<'a> {
    Indexed {
        index: usize,
    },
    Literal {
        indexing: Indexing,
        name: FieldName<'a>,
        name_is_authority: bool,
        value: StringLiteral<'a>,
    },
    SizeUpdate {
        size_bytes: usize,
    },
}

/// The sizes of the entries in the client encoder's dynamic table, newest
/// first, and the size limit it works under.
#[derive(Debug)]
pub struct DynamicTable {
    entries: VecDeque<EntrySize>,
    size_bytes: usize,
    capacity_bytes: usize,
    capacity_limit_bytes: usize,
}

#[derive(Debug, Clone, Copy)]
struct EntrySize {
    name_len: usize,
    size_bytes: usize,
    name_is_authority: bool,
}

impl<'a> StringLiteral<'a> {
    /// The length once Huffman-decoded: what a table entry is charged.
    pub fn decoded_len(&self) -> Result<usize, HpackError> {
        if !self.huffman {
            return Ok(self.octets.len());
        }
        huffman::decoded_len(self.octets).map_err(|source| HpackError::Huffman {
            offset: self.encoded_start,
            source,
        })
    }

    /// Appends the decoded string to `output`.
    pub fn decode_into(&self, output: &mut Vec<u8>) -> Result<(), HpackError> {
        if !self.huffman {
            output.extend_from_slice(self.octets);
            return Ok(());
        }
        huffman::decode(self.octets, |byte| output.push(byte)).map_err(|source| {
            HpackError::Huffman {
                offset: self.encoded_start,
                source,
            }
        })
    }

    fn decodes_to(&self, expected: &[u8]) -> Result<bool, HpackError> {
        if !self.huffman {
            return Ok(self.octets == expected);
        }
        let mut matched = 0usize;
        let mut equal = true;
        huffman::decode(self.octets, |byte| {
            equal &= expected.get(matched) == Some(&byte);
            matched += 1;
        })
        .map_err(|source| HpackError::Huffman {
            offset: self.encoded_start,
            source,
        })?;
        Ok(equal && matched == expected.len())
    }
}

impl DynamicTable {
    /// A table for a decoder that allows `capacity_bytes`
    /// (SETTINGS_HEADER_TABLE_SIZE): the encoder starts at that size and may
    /// only shrink it or grow it back up to it with size updates.
    pub fn new(capacity_bytes: usize) -> DynamicTable {
        DynamicTable {
            entries: VecDeque::with_capacity(capacity_bytes / ENTRY_OVERHEAD_BYTES),
            size_bytes: 0,
            capacity_bytes,
            capacity_limit_bytes: capacity_bytes,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    /// The name length of table entry `index`, and whether it is `:authority`.
    fn name_of(&self, index: usize) -> Result<(usize, bool), HpackError> {
        if let Some(&(name, _)) = index.checked_sub(1).and_then(|slot| STATIC_TABLE.get(slot)) {
            return Ok((name.len(), index == 1));
        }
        index
            .checked_sub(STATIC_TABLE.len() + 1)
            .and_then(|slot| self.entries.get(slot))
            .map(|entry| (entry.name_len, entry.name_is_authority))
            .ok_or(HpackError::IndexOutOfRange {
                index,
                dynamic_entries: self.entries.len(),
            })
    }

    fn insert(&mut self, name_len: usize, value_len: usize, name_is_authority: bool) {
        let size_bytes = name_len
            .saturating_add(value_len)
            .saturating_add(ENTRY_OVERHEAD_BYTES);
        // RFC 7541 4.4: an entry larger than the table empties it and is
        // not added.
        if size_bytes > self.capacity_bytes {
            self.entries.clear();
            self.size_bytes = 0;
            return;
        }
        self.evict_down_to(self.capacity_bytes - size_bytes);
        self.entries.push_front(EntrySize {
            name_len,
            size_bytes,
            name_is_authority,
        });
        self.size_bytes += size_bytes;
    }

    fn evict_down_to(&mut self, size_bytes: usize) {
        while self.size_bytes > size_bytes {
            let Some(oldest) = self.entries.pop_back() else {
                break;
            };
            self.size_bytes -= oldest.size_bytes;
        }
    }
}

/// Decodes one complete header block, updating `table` as the client's
/// encoder did, and hands each representation to `visit` (after its entry,
/// if any, was added to the table).
pub fn decode_block<'a>(
    block: &'a [u8],
    table: &mut DynamicTable,
    mut visit: impl FnMut(Field<'a>) -> Result<(), HpackError>,
) -> Result<(), HpackError> {
    let mut offset = 0usize;
    let mut seen_field = false;
    while let Some(&first) = block.get(offset) {
        let field_offset = offset;
        let field = if first & 0x80 != 0 {
            let index = read_integer(block, &mut offset, 7, field_offset)?;
            table.name_of(index)?;
            Field::Indexed { index }
        } else if first & 0xc0 == 0x40 {
            read_literal(block, &mut offset, Indexing::Incremental, table)?
        } else if first & 0xe0 == 0x20 {
            if seen_field {
                return Err(HpackError::SizeUpdateAfterField { offset });
            }
            let size_bytes = read_integer(block, &mut offset, 5, field_offset)?;
            if size_bytes > table.capacity_limit_bytes {
                return Err(HpackError::SizeUpdateTooLarge {
                    size_bytes,
                    limit_bytes: table.capacity_limit_bytes,
                });
            }
            table.capacity_bytes = size_bytes;
            table.evict_down_to(size_bytes);
            visit(Field::SizeUpdate { size_bytes })?;
            continue;
        } else if first & 0xf0 == 0x10 {
            read_literal(block, &mut offset, Indexing::Never, table)?
        } else {
            read_literal(block, &mut offset, Indexing::Without, table)?
        };
        seen_field = true;
        visit(field)?;
    }
    Ok(())
}

fn read_literal<'a>(
    block: &'a [u8],
    offset: &mut usize,
    indexing: Indexing,
    table: &mut DynamicTable,
) -> Result<Field<'a>, HpackError> {
    let field_offset = *offset;
    let prefix_bits = match indexing {
        Indexing::Incremental => 6,
        Indexing::Without | Indexing::Never => 4,
    };
    let name_index = read_integer(block, offset, prefix_bits, field_offset)?;
    let (name, name_len, name_is_authority) = if name_index == 0 {
        let name = read_string(block, offset, field_offset)?;
        let name_is_authority = name.decodes_to(AUTHORITY)?;
        // Only an entry's size needs the decoded length.
        let name_len = match indexing {
            Indexing::Incremental => name.decoded_len()?,
            Indexing::Without | Indexing::Never => 0,
        };
        (FieldName::Literal(name), name_len, name_is_authority)
    } else {
        let (name_len, name_is_authority) = table.name_of(name_index)?;
        (FieldName::Indexed(name_index), name_len, name_is_authority)
    };
    let value = read_string(block, offset, field_offset)?;
    if indexing == Indexing::Incremental {
        table.insert(name_len, value.decoded_len()?, name_is_authority);
    }
    Ok(Field::Literal {
        indexing,
        name,
        name_is_authority,
        value,
    })
}

fn read_string<'a>(
    block: &'a [u8],
    offset: &mut usize,
    field_offset: usize,
) -> Result<StringLiteral<'a>, HpackError> {
    let encoded_start = *offset;
    let huffman = block
        .get(encoded_start)
        .is_some_and(|&first| first & 0x80 != 0);
    let length = read_integer(block, offset, 7, field_offset)?;
    let octets = offset
        .checked_add(length)
        .and_then(|end| block.get(*offset..end))
        .ok_or(HpackError::Truncated { field_offset })?;
    *offset += length;
    Ok(StringLiteral {
        encoded_start,
        encoded_end: *offset,
        huffman,
        octets,
    })
}

/// Reads an integer with an N-bit prefix (RFC 7541 5.1) at `offset`.
pub fn read_integer(
    block: &[u8],
    offset: &mut usize,
    prefix_bits: u32,
    field_offset: usize,
) -> Result<usize, HpackError> {
    let start = *offset;
    let prefix_max = (1usize << prefix_bits) - 1;
    let first = *block
        .get(start)
        .ok_or(HpackError::Truncated { field_offset })?;
    let prefix_value = usize::from(first) & prefix_max;
    *offset += 1;
    if prefix_value < prefix_max {
        return Ok(prefix_value);
    }
    // Four 7-bit groups and the prefix fit in 29 bits.
    let mut value = prefix_value as u64;
    for continuation in 0..INTEGER_CONTINUATION_BYTES_MAX {
        let byte = *block
            .get(*offset)
            .ok_or(HpackError::Truncated { field_offset })?;
        *offset += 1;
        value += u64::from(byte & 0x7f) << (7 * continuation);
        if byte & 0x80 == 0 {
            return usize::try_from(value)
                .map_err(|_| HpackError::IntegerTooLong { offset: start });
        }
    }
    Err(HpackError::IntegerTooLong { offset: start })
}

/// Appends `value` with an N-bit prefix whose high bits are `first_bits`.
pub fn write_integer(value: usize, prefix_bits: u32, first_bits: u8, output: &mut Vec<u8>) {
    let prefix_max = (1usize << prefix_bits) - 1;
    if value < prefix_max {
        // Below the prefix maximum, so it fits the prefix bits of one byte.
        output.push(first_bits | value as u8);
        return;
    }
    output.push(first_bits | prefix_max as u8);
    let mut rest = value - prefix_max;
    while rest >= 0x80 {
        output.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    output.push(rest as u8);
}

#[cfg(test)]
mod tests;
