//! A streaming tar reader whose memory use the archive cannot choose.
//!
//! The `tar` crate decodes the header fields (octal and base-256 numbers,
//! ustar prefixes, GNU sparse maps), but its entry iterator reads PAX headers
//! and GNU long names into memory whole, whatever size they declare, and it
//! stops at the first zero block. This reader walks the blocks itself so that
//! every extension body is bounded by
//! [`StreamLimits::extended_header_bytes_max`] and every path by
//! [`StreamLimits::path_bytes_max`]. It reads the way Go's `archive/tar` does
//! (containerd's reader), so both see the same entries in a given archive:
//! header-only types (links, directories, devices, FIFOs) carry no data
//! whatever their size field says, a PAX `size` overrides the header, and an
//! old-style regular entry whose name ends in `/` is a directory.

use std::io::{self, BufRead, Read};

use super::{UnpackError, echo_entry_path, read_error};

const BLOCK_BYTES: u64 = 512;

/// What an entry creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EntryKind {
    Regular,
    HardLink,
    Symlink,
    CharacterDevice,
    BlockDevice,
    Directory,
    Fifo,
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Timestamp {
    pub(super) seconds: i64,
    pub(super) nanoseconds: u32,
}

/// One entry's header, with its PAX and GNU extensions applied.
#[derive(Debug)]
pub(super) struct EntryHeader {
    /// Raw bytes, not yet checked: may be absolute or hold `..`.
    pub(super) path: Vec<u8>,
    /// For hard links and symlinks; empty otherwise.
    pub(super) link_target: Vec<u8>,
    pub(super) kind: EntryKind,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime: Timestamp,
    pub(super) device_major: u32,
    pub(super) device_minor: u32,
    /// From `SCHILY.xattr.<name>` PAX records, in archive order.
    pub(super) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// For GNU sparse entries: where the data bytes go in the file.
    pub(super) sparse: Option<SparseMap>,
}

/// A GNU sparse file: the archive holds only the listed regions, in order.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SparseMap {
    pub(super) regions: Vec<SparseRegion>,
    pub(super) real_size_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SparseRegion {
    pub(super) offset_bytes: u64,
    pub(super) length_bytes: u64,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct StreamLimits {
    pub(super) extended_header_bytes_max: u64,
    pub(super) path_bytes_max: usize,
}

/// Reads entries one at a time; the caller reads each entry's data through
/// [`TarStream::fill_data`] and [`TarStream::consume_data`] (or not at all).
pub(super) struct TarStream<R> {
    reader: R,
    offset_bytes: u64,
    data_remaining_bytes: u64,
    padding_remaining_bytes: u64,
    limits: StreamLimits,
    /// The path of the entry last returned: errors between entries name it.
    current_path: Vec<u8>,
    at_end: bool,
}

/// What the extension headers before an entry said about it.
#[derive(Default)]
struct Extensions {
    any: bool,
    pax_seen: bool,
    pax_path: Option<Vec<u8>>,
    pax_link_target: Option<Vec<u8>>,
    pax_size: Option<u64>,
    pax_uid: Option<u64>,
    pax_gid: Option<u64>,
    pax_mtime: Option<Timestamp>,
    pax_gnu_sparse: bool,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    long_name: Option<Vec<u8>>,
    long_link_target: Option<Vec<u8>>,
}

const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
const PAX_GNU_SPARSE_PREFIX: &[u8] = b"GNU.sparse.";

impl<R: BufRead> TarStream<R> {
    pub(super) fn new(reader: R, limits: StreamLimits) -> TarStream<R> {
        TarStream {
            reader,
            offset_bytes: 0,
            data_remaining_bytes: 0,
            padding_remaining_bytes: 0,
            limits,
            current_path: b"(start of archive)".to_vec(),
            at_end: false,
        }
    }

    /// The next entry, skipping whatever data of the previous one was not read.
    /// `None` at the end-of-archive marker (a zero block) or at the end of the
    /// stream on a block boundary.
    pub(super) fn next_entry(&mut self) -> Result<Option<EntryHeader>, UnpackError> {
        if self.at_end {
            return Ok(None);
        }
        self.skip_rest_of_entry()?;
        let mut extensions = Extensions::default();
        loop {
            let header_offset = self.offset_bytes;
            let mut header = tar::Header::new_old();
            let block_read = self
                .read_block(header.as_mut_bytes())
                .map_err(|source| read_error(&self.current_path, source))?;
            if !block_read || header.as_bytes().iter().all(|byte| *byte == 0) {
                self.at_end = true;
                if extensions.any {
                    return Err(malformed(
                        &self.current_path,
                        header_offset,
                        "extension headers at the end of the archive describe no entry",
                    ));
                }
                return Ok(None);
            }
            let header_path = header.path_bytes().into_owned();
            if !checksum_matches(&header) {
                return Err(malformed(
                    &header_path,
                    header_offset,
                    "header checksum mismatch",
                ));
            }
            let type_flag = header.as_old().linkflag[0];
            let extension_kind = match type_flag {
                b'x' => "pax extended header",
                b'g' => "pax global header",
                b'L' => "gnu long name",
                b'K' => "gnu long link",
                _ => return self.finish_entry(&header, header_offset, header_path, extensions),
            };
            let size_bytes = numeric_field(&header.as_old().size, || header.entry_size())
                .map_err(|_| malformed(&header_path, header_offset, "invalid size field"))?;
            if size_bytes > self.limits.extended_header_bytes_max {
                return Err(UnpackError::ExtendedHeaderTooLarge {
                    entry_path: echo_entry_path(&header_path),
                    offset_bytes: header_offset,
                    kind: extension_kind,
                    size_bytes,
                    limit_bytes: self.limits.extended_header_bytes_max,
                });
            }
            let body = self.read_extension_body(size_bytes, &header_path)?;
            match type_flag {
                b'x' => {
                    if extensions.pax_seen {
                        return Err(malformed(
                            &header_path,
                            header_offset,
                            "two pax extended headers for one entry",
                        ));
                    }
                    extensions.pax_seen = true;
                    extensions
                        .apply_pax(&body)
                        .map_err(|reason| malformed(&header_path, header_offset, reason))?;
                }
                // Global headers would apply to every later entry. Docker,
                // BuildKit and containerd neither write nor honour them (Go's
                // reader hands them out as entries that extraction skips).
                b'g' => continue,
                b'L' => {
                    if extensions.long_name.is_some() {
                        return Err(malformed(
                            &header_path,
                            header_offset,
                            "two gnu long names for one entry",
                        ));
                    }
                    extensions.long_name = Some(until_nul(body));
                }
                _ => {
                    if extensions.long_link_target.is_some() {
                        return Err(malformed(
                            &header_path,
                            header_offset,
                            "two gnu long links for one entry",
                        ));
                    }
                    extensions.long_link_target = Some(until_nul(body));
                }
            }
            extensions.any = true;
        }
    }

    /// The next bytes of the current entry's data: empty only once it has all
    /// been consumed. Call [`consume_data`](Self::consume_data) with how many
    /// were used.
    pub(super) fn fill_data(&mut self) -> Result<&[u8], UnpackError> {
        if self.data_remaining_bytes == 0 {
            return Ok(&[]);
        }
        let remaining = self.data_remaining_bytes;
        let buffer = match self.reader.fill_buf() {
            Ok(buffer) => buffer,
            Err(error) => return Err(read_error(&self.current_path, error)),
        };
        if buffer.is_empty() {
            return Err(read_error(
                &self.current_path,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the layer ends inside this entry's data",
                ),
            ));
        }
        let usable = buffer
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        Ok(&buffer[..usable])
    }

    pub(super) fn consume_data(&mut self, used_bytes: usize) {
        self.reader.consume(used_bytes);
        self.data_remaining_bytes -= used_bytes as u64;
        self.offset_bytes += used_bytes as u64;
    }

    /// Reads the rest of the stream (the tar end blocks and whatever follows
    /// them) so that the diff id covers it, and returns the reader.
    pub(super) fn drain_to_end(mut self) -> Result<R, UnpackError> {
        io::copy(&mut self.reader, &mut io::sink())
            .map_err(|source| read_error(b"(after the end of the archive)", source))?;
        Ok(self.reader)
    }

    fn finish_entry(
        &mut self,
        header: &tar::Header,
        header_offset: u64,
        header_path: Vec<u8>,
        extensions: Extensions,
    ) -> Result<Option<EntryHeader>, UnpackError> {
        let path = extensions
            .pax_path
            .or(extensions.long_name)
            .unwrap_or(header_path);
        if path.len() > self.limits.path_bytes_max {
            return Err(UnpackError::PathTooLong {
                entry_path: echo_entry_path(&path),
                what: "path",
                length_bytes: path.len(),
                limit_bytes: self.limits.path_bytes_max,
            });
        }
        if extensions.pax_gnu_sparse {
            return Err(UnpackError::UnsupportedSparseFormat {
                entry_path: echo_entry_path(&path),
            });
        }
        let type_flag = header.as_old().linkflag[0];
        let kind = match type_flag {
            b'0' | b'7' | b'S' => EntryKind::Regular,
            b'\0' if path.ends_with(b"/") => EntryKind::Directory,
            b'\0' => EntryKind::Regular,
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharacterDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            _ => {
                return Err(UnpackError::UnsupportedEntryType {
                    entry_path: echo_entry_path(&path),
                    type_flag: char::from(type_flag),
                });
            }
        };
        let field_error = |field: &'static str| malformed(&path, header_offset, field);
        let link_target = if matches!(kind, EntryKind::HardLink | EntryKind::Symlink) {
            let target = match extensions.pax_link_target.or(extensions.long_link_target) {
                Some(target) => target,
                None => header.link_name_bytes().unwrap_or_default().into_owned(),
            };
            if target.len() > self.limits.path_bytes_max {
                return Err(UnpackError::PathTooLong {
                    entry_path: echo_entry_path(&path),
                    what: "link target",
                    length_bytes: target.len(),
                    limit_bytes: self.limits.path_bytes_max,
                });
            }
            target
        } else {
            Vec::new()
        };
        let mode = numeric_field(&header.as_old().mode, || header.mode().map(u64::from))
            .map_err(|_| field_error("invalid mode field"))?;
        // At most 0o7777 after the mask, so the cast keeps every bit.
        let mode = (mode & 0o7777) as u32;
        let uid = match extensions.pax_uid {
            Some(uid) => uid,
            None => numeric_field(&header.as_old().uid, || header.uid())
                .map_err(|_| field_error("invalid uid field"))?,
        };
        let gid = match extensions.pax_gid {
            Some(gid) => gid,
            None => numeric_field(&header.as_old().gid, || header.gid())
                .map_err(|_| field_error("invalid gid field"))?,
        };
        let uid = u32::try_from(uid).map_err(|_| field_error("uid does not fit in 32 bits"))?;
        let gid = u32::try_from(gid).map_err(|_| field_error("gid does not fit in 32 bits"))?;
        let mtime = match extensions.pax_mtime {
            Some(mtime) => mtime,
            None => Timestamp {
                seconds: numeric_field(&header.as_old().mtime, || header.mtime())
                    .ok()
                    .and_then(|seconds| i64::try_from(seconds).ok())
                    .ok_or_else(|| field_error("invalid mtime field"))?,
                nanoseconds: 0,
            },
        };
        let (device_major, device_minor) =
            if matches!(kind, EntryKind::CharacterDevice | EntryKind::BlockDevice) {
                // Bytes 329..337 and 337..345 in both ustar and GNU headers.
                let major = numeric_field(&header.as_bytes()[329..337], || {
                    header
                        .device_major()
                        .map(|major| u64::from(major.unwrap_or(0)))
                })
                .ok()
                .and_then(|major| u32::try_from(major).ok())
                .ok_or_else(|| field_error("invalid device major field"))?;
                let minor = numeric_field(&header.as_bytes()[337..345], || {
                    header
                        .device_minor()
                        .map(|minor| u64::from(minor.unwrap_or(0)))
                })
                .ok()
                .and_then(|minor| u32::try_from(minor).ok())
                .ok_or_else(|| field_error("invalid device minor field"))?;
                (major, minor)
            } else {
                (0, 0)
            };
        let size_bytes = match extensions.pax_size {
            Some(size_bytes) => size_bytes,
            None => numeric_field(&header.as_old().size, || header.entry_size())
                .map_err(|_| field_error("invalid size field"))?,
        };
        let sparse = if type_flag == b'S' {
            Some(self.read_gnu_sparse_map(header, header_offset, &path, size_bytes)?)
        } else {
            None
        };
        let data_bytes = if kind == EntryKind::Regular {
            size_bytes
        } else {
            0
        };
        self.data_remaining_bytes = data_bytes;
        self.padding_remaining_bytes = padding_after(data_bytes);
        self.current_path.clone_from(&path);
        Ok(Some(EntryHeader {
            path,
            link_target,
            kind,
            mode,
            uid,
            gid,
            mtime,
            device_major,
            device_minor,
            xattrs: extensions.xattrs,
            sparse,
        }))
    }

    /// Reads the old GNU sparse map: up to four regions in the header, then
    /// 21 per extension block while the "extended" flag is set. The blocks
    /// count against the extension header limit.
    fn read_gnu_sparse_map(
        &mut self,
        header: &tar::Header,
        header_offset: u64,
        path: &[u8],
        data_bytes: u64,
    ) -> Result<SparseMap, UnpackError> {
        let bad_map = |reason: &'static str| malformed(path, header_offset, reason);
        let gnu = header
            .as_gnu()
            .ok_or_else(|| bad_map("sparse entry without a gnu header"))?;
        let mut regions = Vec::new();
        push_sparse_regions(&mut regions, &gnu.sparse)
            .map_err(|_| bad_map("invalid sparse region"))?;
        let mut extended = gnu.is_extended();
        let mut extension_bytes = 0u64;
        while extended {
            extension_bytes += BLOCK_BYTES;
            if extension_bytes > self.limits.extended_header_bytes_max {
                return Err(UnpackError::ExtendedHeaderTooLarge {
                    entry_path: echo_entry_path(path),
                    offset_bytes: header_offset,
                    kind: "gnu sparse map",
                    size_bytes: extension_bytes,
                    limit_bytes: self.limits.extended_header_bytes_max,
                });
            }
            let mut extension = tar::GnuExtSparseHeader::new();
            let block_read = self
                .read_block(extension.as_mut_bytes())
                .map_err(|source| read_error(path, source))?;
            if !block_read {
                return Err(bad_map("the layer ends inside a sparse map"));
            }
            push_sparse_regions(&mut regions, extension.sparse())
                .map_err(|_| bad_map("invalid sparse region"))?;
            extended = extension.is_extended();
        }
        let real_size_bytes = gnu
            .real_size()
            .map_err(|_| bad_map("invalid sparse real size"))?;
        let mut end_of_previous = 0u64;
        let mut stored_bytes = 0u64;
        for region in &regions {
            let end = region
                .offset_bytes
                .checked_add(region.length_bytes)
                .ok_or_else(|| bad_map("sparse region past the largest file size"))?;
            if region.offset_bytes < end_of_previous || end > real_size_bytes {
                return Err(bad_map("sparse regions overlap or lie past the file size"));
            }
            end_of_previous = end;
            stored_bytes += region.length_bytes;
        }
        if stored_bytes != data_bytes {
            return Err(bad_map("sparse regions do not add up to the entry size"));
        }
        Ok(SparseMap {
            regions,
            real_size_bytes,
        })
    }

    fn read_extension_body(
        &mut self,
        size_bytes: u64,
        header_path: &[u8],
    ) -> Result<Vec<u8>, UnpackError> {
        // `size_bytes` is at most the extension limit, a few MiB at most.
        let mut body = Vec::with_capacity(usize::try_from(size_bytes).unwrap_or(0));
        (&mut self.reader)
            .take(size_bytes)
            .read_to_end(&mut body)
            .map_err(|source| read_error(header_path, source))?;
        if (body.len() as u64) < size_bytes {
            return Err(read_error(
                header_path,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the layer ends inside an extension header",
                ),
            ));
        }
        self.offset_bytes += size_bytes;
        self.skip(padding_after(size_bytes), header_path)?;
        Ok(body)
    }

    fn skip_rest_of_entry(&mut self) -> Result<(), UnpackError> {
        let remaining = self.data_remaining_bytes + self.padding_remaining_bytes;
        self.data_remaining_bytes = 0;
        self.padding_remaining_bytes = 0;
        let path = std::mem::take(&mut self.current_path);
        let skipped = self.skip(remaining, &path);
        self.current_path = path;
        skipped
    }

    fn skip(&mut self, mut remaining: u64, entry_path: &[u8]) -> Result<(), UnpackError> {
        while remaining > 0 {
            let available = match self.reader.fill_buf() {
                Ok(buffer) => buffer.len(),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(read_error(entry_path, error)),
            };
            if available == 0 {
                return Err(read_error(
                    entry_path,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the layer ends inside this entry",
                    ),
                ));
            }
            let skipped = available.min(usize::try_from(remaining).unwrap_or(usize::MAX));
            self.reader.consume(skipped);
            self.offset_bytes += skipped as u64;
            remaining -= skipped as u64;
        }
        Ok(())
    }

    /// Fills `block`: `false` when the stream ended before its first byte.
    fn read_block(&mut self, block: &mut [u8; 512]) -> io::Result<bool> {
        let mut filled = 0;
        while filled < block.len() {
            match self.reader.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the layer ends inside a tar header block",
                    ));
                }
                Ok(read_len) => filled += read_len,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        self.offset_bytes += BLOCK_BYTES;
        Ok(true)
    }
}

impl Extensions {
    /// Applies the records of one PAX extended header (`"<length> <key>=<value>\n"`,
    /// where the length counts the whole record). Values may hold any byte,
    /// newlines included, so records are split by their length, not by lines.
    fn apply_pax(&mut self, mut body: &[u8]) -> Result<(), &'static str> {
        while !body.is_empty() {
            // Some writers pad the body with NULs.
            if body.iter().all(|byte| *byte == 0) {
                break;
            }
            let space = body
                .iter()
                .take(20)
                .position(|byte| *byte == b' ')
                .ok_or("pax record without a length")?;
            let record_len = parse_decimal(&body[..space])
                .and_then(|len| usize::try_from(len).ok())
                .ok_or("pax record with an invalid length")?;
            if record_len <= space + 1 || record_len > body.len() || body[record_len - 1] != b'\n' {
                return Err("pax record with a wrong length");
            }
            let key_value = &body[space + 1..record_len - 1];
            body = &body[record_len..];
            let equals = key_value
                .iter()
                .position(|byte| *byte == b'=')
                .ok_or("pax record without '='")?;
            let (key, value) = (&key_value[..equals], &key_value[equals + 1..]);
            // An empty value removes the key, which for us means "use the
            // header's own field".
            let present = !value.is_empty();
            match key {
                b"path" => self.pax_path = present.then(|| value.to_vec()),
                b"linkpath" => self.pax_link_target = present.then(|| value.to_vec()),
                b"size" => self.pax_size = parse_pax_number(value, "pax size is not a number")?,
                b"uid" => self.pax_uid = parse_pax_number(value, "pax uid is not a number")?,
                b"gid" => self.pax_gid = parse_pax_number(value, "pax gid is not a number")?,
                b"mtime" if present => {
                    self.pax_mtime = Some(parse_pax_time(value).ok_or("pax mtime is not a time")?);
                }
                _ if key.starts_with(PAX_XATTR_PREFIX) => {
                    self.xattrs
                        .push((key[PAX_XATTR_PREFIX.len()..].to_vec(), value.to_vec()));
                }
                _ if key.starts_with(PAX_GNU_SPARSE_PREFIX) => self.pax_gnu_sparse = true,
                // atime, ctime, uname, gname, charset, comment, and vendor keys
                // such as LIBARCHIVE.* and MSWINDOWS.* change nothing here.
                _ => {}
            }
        }
        Ok(())
    }
}

fn malformed(entry_path: &[u8], offset_bytes: u64, reason: &str) -> UnpackError {
    UnpackError::MalformedArchive {
        entry_path: echo_entry_path(entry_path),
        offset_bytes,
        reason: reason.to_owned(),
    }
}

/// POSIX tar checksums are the unsigned byte sum with the checksum field read
/// as spaces; some old writers summed signed bytes, which Go also accepts.
fn checksum_matches(header: &tar::Header) -> bool {
    let Ok(stored) = header.cksum() else {
        return false;
    };
    let mut unsigned_sum: i64 = 0;
    let mut signed_sum: i64 = 0;
    for (index, byte) in header.as_bytes().iter().enumerate() {
        let byte = if (148..156).contains(&index) {
            b' '
        } else {
            *byte
        };
        unsigned_sum += i64::from(byte);
        signed_sum += i64::from(byte as i8);
    }
    i64::from(stored) == unsigned_sum || i64::from(stored) == signed_sum
}

/// A numeric header field, where (as in Go's reader) a field of only NULs
/// and spaces means 0; the `tar` crate would call it invalid.
fn numeric_field(raw: &[u8], parse: impl FnOnce() -> io::Result<u64>) -> io::Result<u64> {
    if raw.iter().all(|byte| *byte == 0 || *byte == b' ') {
        return Ok(0);
    }
    parse()
}

fn push_sparse_regions(
    regions: &mut Vec<SparseRegion>,
    headers: &[tar::GnuSparseHeader],
) -> io::Result<()> {
    for header in headers {
        if header.is_empty() {
            continue;
        }
        regions.push(SparseRegion {
            offset_bytes: header.offset()?,
            length_bytes: header.length()?,
        });
    }
    Ok(())
}

fn padding_after(size_bytes: u64) -> u64 {
    (BLOCK_BYTES - size_bytes % BLOCK_BYTES) % BLOCK_BYTES
}

fn until_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(nul) = bytes.iter().position(|byte| *byte == 0) {
        bytes.truncate(nul);
    }
    bytes
}

/// ASCII digits only: no sign, no spaces, no empty string.
fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn parse_pax_number(value: &[u8], problem: &'static str) -> Result<Option<u64>, &'static str> {
    if value.is_empty() {
        return Ok(None);
    }
    parse_decimal(value).map(Some).ok_or(problem)
}

/// `[-]seconds[.fraction]`, with the fraction cut to nanoseconds.
fn parse_pax_time(value: &[u8]) -> Option<Timestamp> {
    let (negative, unsigned) = match value.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, fraction) = match unsigned.iter().position(|byte| *byte == b'.') {
        Some(dot) => (&unsigned[..dot], &unsigned[dot + 1..]),
        None => (unsigned, &b""[..]),
    };
    let whole = i64::try_from(parse_decimal(whole)?).ok()?;
    if !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nanoseconds: u32 = 0;
    for position in 0..9 {
        let digit = fraction
            .get(position)
            .map_or(0, |digit| u32::from(digit - b'0'));
        nanoseconds = nanoseconds * 10 + digit;
    }
    Some(match (negative, nanoseconds) {
        (false, _) => Timestamp {
            seconds: whole,
            nanoseconds,
        },
        (true, 0) => Timestamp {
            seconds: -whole,
            nanoseconds: 0,
        },
        (true, _) => Timestamp {
            seconds: -whole - 1,
            nanoseconds: 1_000_000_000 - nanoseconds,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: StreamLimits = StreamLimits {
        extended_header_bytes_max: 4096,
        path_bytes_max: 4096,
    };

    fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
        // The length prefix counts itself, so find the fixed point.
        let body_len = key.len() + value.len() + 3;
        let mut total = body_len + 1;
        while total != body_len + total.to_string().len() {
            total = body_len + total.to_string().len();
        }
        let mut record = format!("{total} {key}=").into_bytes();
        record.extend_from_slice(value);
        record.push(b'\n');
        record
    }

    #[test]
    fn pax_records_allow_newlines_and_binary_values() {
        let mut body = pax_record("path", b"dir/with\nnewline");
        body.extend(pax_record("SCHILY.xattr.user.bin", &[0, 1, b'\n', 255]));
        body.extend(pax_record("mtime", b"1700000000.25"));
        body.extend(pax_record("uid", b"4294967295"));
        body.extend(pax_record("comment", b"ignored"));
        let mut extensions = Extensions::default();
        extensions.apply_pax(&body).expect("valid records");
        assert_eq!(
            extensions.pax_path.as_deref(),
            Some(&b"dir/with\nnewline"[..])
        );
        assert_eq!(
            extensions.xattrs,
            vec![(b"user.bin".to_vec(), vec![0, 1, b'\n', 255])]
        );
        assert_eq!(
            extensions.pax_mtime,
            Some(Timestamp {
                seconds: 1_700_000_000,
                nanoseconds: 250_000_000
            })
        );
        assert_eq!(extensions.pax_uid, Some(u64::from(u32::MAX)));
    }

    #[test]
    fn pax_records_reject_bad_lengths() {
        for body in [
            &b"5 path=a\n"[..],
            b"100 path=a\n",
            b"x path=a\n",
            b"9 patha\n\n",
            b"pathnolength",
        ] {
            let mut extensions = Extensions::default();
            assert!(extensions.apply_pax(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn pax_times() {
        let time = |seconds, nanoseconds| {
            Some(Timestamp {
                seconds,
                nanoseconds,
            })
        };
        let cases: [(&[u8], Option<Timestamp>); 7] = [
            (b"0", time(0, 0)),
            (b"12.5", time(12, 500_000_000)),
            (b"-1.5", time(-2, 500_000_000)),
            (b"-3", time(-3, 0)),
            (b"1.1234567899", time(1, 123_456_789)),
            (b"1.x", None),
            (b"", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_pax_time(text),
                expected,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn reads_past_unread_data_and_stops_at_the_end_marker() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(700);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "a", &[1u8; 700][..])
            .expect("append");
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, "b", "a")
            .expect("append link");
        let mut archive = builder.into_inner().expect("finish");
        archive.extend_from_slice(b"trailing bytes after the end blocks");
        let mut stream = TarStream::new(&archive[..], LIMITS);
        let first = stream.next_entry().expect("first").expect("an entry");
        assert_eq!(first.path, b"a");
        let chunk = stream.fill_data().expect("data");
        assert!(!chunk.is_empty() && chunk.iter().all(|byte| *byte == 1));
        stream.consume_data(10);
        let second = stream.next_entry().expect("second").expect("an entry");
        assert_eq!(second.kind, EntryKind::Symlink);
        assert_eq!(second.link_target, b"a");
        assert!(stream.next_entry().expect("end").is_none());
        let rest = stream.drain_to_end().expect("drain");
        assert!(rest.is_empty());
    }
    #[test]
    fn header_only_entries_carry_no_data_and_global_headers_are_skipped() {
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_pax_extensions([("comment", &b"global"[..])])
            .expect("pax");
        // Turn that local PAX header into a global one.
        let mut archive = builder.into_inner().expect("finish");
        archive[156] = b'g';
        let mut header = tar::Header::from_byte_slice(&archive[..512]).clone();
        header.set_cksum();
        archive[..512].copy_from_slice(header.as_bytes());
        archive.truncate(archive.len() - 1024);

        // A symlink whose size field says 512: Go's reader (and so this one)
        // reads no data for it, so the next block is the next header.
        let mut symlink = tar::Header::new_gnu();
        symlink.set_entry_type(tar::EntryType::Symlink);
        symlink.set_path("link").expect("path");
        symlink.set_link_name("target").expect("link");
        symlink.set_size(512);
        symlink.set_cksum();
        archive.extend_from_slice(symlink.as_bytes());
        let mut file = tar::Header::new_gnu();
        file.set_path("file").expect("path");
        file.set_size(3);
        file.set_cksum();
        archive.extend_from_slice(file.as_bytes());
        archive.extend_from_slice(b"abc");
        archive.resize(archive.len() + 509 + 1024, 0);

        let mut stream = TarStream::new(&archive[..], LIMITS);
        let link = stream.next_entry().expect("link").expect("an entry");
        assert_eq!(
            (link.kind, link.path.as_slice()),
            (EntryKind::Symlink, &b"link"[..])
        );
        assert!(stream.fill_data().expect("no data").is_empty());
        let file = stream.next_entry().expect("file").expect("an entry");
        assert_eq!(file.path, b"file");
        assert_eq!(stream.fill_data().expect("data"), b"abc");
        assert!(stream.next_entry().expect("end").is_none());
    }
}
