//! The layer blob to the uncompressed tar stream: gzip (zlib-rs), zstd or
//! none, picked by the media type and checked against the first bytes, then
//! counted, bounded and hashed into the diff id by [`HashingReader`].

use std::fmt;
use std::io::{self, BufReader, Cursor, Read};

use crate::oci::manifest::LayerCompression;
use crate::reference::{Digest, DigestHasher};

use super::UnpackError;

/// Read-ahead on the compressed blob. Large reads keep the per-call cost of
/// the blob reader (often a file or a socket) negligible.
const COMPRESSED_BUFFER_BYTES: usize = 1 << 20;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Wraps `reader` in the decompressor that `compression` names, after checking
/// that the stream's magic bytes agree.
pub(super) fn decompressed_reader<'a>(
    mut reader: impl Read + Send + 'a,
    compression: LayerCompression,
) -> Result<Box<dyn Read + Send + 'a>, UnpackError> {
    let mut prefix = [0u8; 4];
    let prefix_len = read_prefix(&mut reader, &mut prefix)
        .map_err(|source| super::read_error(b"(start of layer)", source))?;
    let detected = detect(&prefix[..prefix_len]);
    let matches = match compression {
        LayerCompression::None => !matches!(detected, Detected::Gzip | Detected::Zstd),
        LayerCompression::Gzip => detected == Detected::Gzip,
        LayerCompression::Zstd => detected == Detected::Zstd,
    };
    if !matches {
        return Err(UnpackError::CompressionMismatch {
            declared: declared_name(compression),
            detected: detected.name(),
        });
    }
    let whole = Cursor::new(prefix).take(prefix_len as u64).chain(reader);
    Ok(match compression {
        LayerCompression::None => Box::new(whole),
        LayerCompression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(
            BufReader::with_capacity(COMPRESSED_BUFFER_BYTES, whole),
        )),
        LayerCompression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
                COMPRESSED_BUFFER_BYTES,
                whole,
            ))
            .map_err(|source| super::read_error(b"(start of layer)", source))?;
            Box::new(decoder)
        }
    })
}

/// Counts, bounds and hashes every byte read through it. Exceeding the bound
/// is an `io::Error` carrying [`UncompressedLimitExceeded`], which
/// [`uncompressed_limit_of`] recognizes wherever the error surfaces.
pub(super) struct HashingReader<R> {
    inner: R,
    hasher: DigestHasher,
    bytes_read: u64,
    bytes_max: u64,
}

/// The payload of the error that [`HashingReader`] returns past its bound.
#[derive(Debug)]
pub(super) struct UncompressedLimitExceeded {
    limit_bytes: u64,
}

/// The limit, when `error` is [`HashingReader`]'s "too many bytes".
pub(super) fn uncompressed_limit_of(error: &io::Error) -> Option<u64> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<UncompressedLimitExceeded>())
        .map(|exceeded| exceeded.limit_bytes)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Detected {
    Empty,
    Gzip,
    Zstd,
    Other,
}

impl<R: Read> HashingReader<R> {
    pub(super) fn new(inner: R, hasher: DigestHasher, bytes_max: u64) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher,
            bytes_read: 0,
            bytes_max,
        }
    }

    /// The digest of everything read, and how many bytes that was.
    pub(super) fn finish(self) -> (Digest, u64) {
        (self.hasher.finish(), self.bytes_read)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read_len = self.inner.read(buffer)?;
        self.bytes_read += read_len as u64;
        if self.bytes_read > self.bytes_max {
            return Err(io::Error::other(UncompressedLimitExceeded {
                limit_bytes: self.bytes_max,
            }));
        }
        self.hasher.update(&buffer[..read_len]);
        Ok(read_len)
    }
}

impl fmt::Display for UncompressedLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "uncompressed layer is larger than {} bytes",
            self.limit_bytes
        )
    }
}

impl std::error::Error for UncompressedLimitExceeded {}

impl Detected {
    fn name(self) -> &'static str {
        match self {
            Detected::Empty => "no bytes at all",
            Detected::Gzip => "gzip magic bytes 1f 8b",
            Detected::Zstd => "zstd magic bytes 28 b5 2f fd",
            Detected::Other => "neither gzip nor zstd magic bytes",
        }
    }
}

fn declared_name(compression: LayerCompression) -> &'static str {
    match compression {
        LayerCompression::None => "uncompressed tar",
        LayerCompression::Gzip => "gzip",
        LayerCompression::Zstd => "zstd",
    }
}

fn detect(prefix: &[u8]) -> Detected {
    if prefix.is_empty() {
        Detected::Empty
    } else if prefix.starts_with(&GZIP_MAGIC) {
        Detected::Gzip
    } else if prefix.starts_with(&ZSTD_MAGIC) || is_zstd_skippable_frame(prefix) {
        Detected::Zstd
    } else {
        Detected::Other
    }
}

/// Skippable frames (magic 0x184D2A50..=0x184D2A5F, little-endian) may
/// precede the first zstd frame; the decoder passes over them.
fn is_zstd_skippable_frame(prefix: &[u8]) -> bool {
    prefix.len() == 4 && prefix[0] & 0xf0 == 0x50 && prefix[1..] == [0x2a, 0x4d, 0x18]
}

/// Reads up to `prefix.len()` bytes, fewer only at the end of the stream.
fn read_prefix(reader: &mut impl Read, prefix: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < prefix.len() {
        match reader.read(&mut prefix[filled..]) {
            Ok(0) => break,
            Ok(read_len) => filled += read_len,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_magic_bytes() {
        assert_eq!(detect(b""), Detected::Empty);
        assert_eq!(detect(&[0x1f, 0x8b, 0x08, 0x00]), Detected::Gzip);
        assert_eq!(detect(&[0x1f, 0x8b]), Detected::Gzip);
        assert_eq!(detect(&ZSTD_MAGIC), Detected::Zstd);
        assert_eq!(detect(&[0x5e, 0x2a, 0x4d, 0x18]), Detected::Zstd);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f]), Detected::Other);
        assert_eq!(detect(b"etc/"), Detected::Other);
    }

    #[test]
    fn hashing_reader_stops_past_its_bound() {
        let mut reader = HashingReader::new(
            Cursor::new(vec![7u8; 100]),
            DigestHasher::new(crate::reference::DigestAlgorithm::Sha256),
            99,
        );
        let error = io::copy(&mut reader, &mut io::sink()).expect_err("over the bound");
        assert_eq!(uncompressed_limit_of(&error), Some(99));

        let mut reader = HashingReader::new(
            Cursor::new(vec![7u8; 100]),
            DigestHasher::new(crate::reference::DigestAlgorithm::Sha256),
            100,
        );
        io::copy(&mut reader, &mut io::sink()).expect("at the bound");
        let (digest, bytes) = reader.finish();
        assert_eq!(bytes, 100);
        assert_eq!(digest, DigestHasher::sha256_of(&[7u8; 100]));
    }
}
