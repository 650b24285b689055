//! The reading half of `unpack`: source → sha256 → zstd/gzip decoder →
//! chunks into a pipe for the extracting thread. Running it on its own
//! thread lets decompression overlap with hashing and writing the files.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::bound::Bound;
use super::error::ArchiveError;
use super::hashing::Digester;
use super::manifest::Compression;
use crate::pipe::PipeWriter;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
const GZIP_MAGIC: [u8; 2] = [0x1F, 0x8B];
const READ_BUFFER: usize = 1 << 20;
/// Decompressed bytes per pipe message.
pub(crate) const CHUNK: usize = 1 << 20;

/// What the whole compressed stream was.
pub(crate) struct StreamDigest {
    pub compression: Compression,
    pub size: u64,
    pub sha256: String,
}

pub(crate) enum DecodeFailure {
    /// The archive itself (or its source) is at fault.
    Archive(ArchiveError),
    /// The extracting side stopped reading; its error is the one to report.
    ConsumerGone,
}

/// Decodes `source` to its very end into `tx`, stopping at `bound`.
/// `consumed` tracks the compressed bytes read so far, for the other side's
/// error messages.
pub(crate) fn decode(
    source: impl Read,
    tx: PipeWriter,
    consumed: &AtomicU64,
    bound: &Bound,
) -> Result<StreamDigest, DecodeFailure> {
    let mut src = Source {
        inner: source,
        digest: Digester::default(),
        failed: false,
        consumed,
    };
    let outcome = decode_into(&mut src, &tx, bound);
    let after = src.digest.bytes();
    let error = match outcome {
        Ok(compression) => {
            return Ok(StreamDigest {
                compression,
                size: after,
                sha256: src.digest.finish(),
            });
        }
        Err(Failure::Gone) => return Err(DecodeFailure::ConsumerGone),
        Err(Failure::Archive(error)) => error,
        Err(Failure::Io(e)) if src.failed => ArchiveError::Read { after, source: e },
        Err(Failure::Io(e)) => stream_error(e, after),
    };
    // Tell the extracting side to stop; it must not mistake this for an end.
    tx.fail(&io::Error::other(error.to_string()));
    Err(DecodeFailure::Archive(error))
}

/// A decoder or tar error at `after` bytes into the stream, as the user
/// should read it.
pub(crate) fn stream_error(e: io::Error, after: u64) -> ArchiveError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ArchiveError::Truncated { after }
    } else {
        ArchiveError::Corrupt {
            after,
            detail: e.to_string(),
        }
    }
}

enum Failure {
    Io(io::Error),
    Archive(ArchiveError),
    Gone,
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

fn decode_into<R: Read>(
    src: &mut Source<R>,
    tx: &PipeWriter,
    bound: &Bound,
) -> Result<Compression, Failure> {
    let mut magic = [0u8; 4];
    let got = read_full(src, &mut magic)?;
    let magic = &magic[..got];
    let compression = detect(magic).map_err(Failure::Archive)?;

    let buffered = BufReader::with_capacity(READ_BUFFER, magic.chain(&mut *src));
    let mut decoder = match compression {
        Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Compression::Gzip => Decoder::Gzip(flate2::bufread::MultiGzDecoder::new(buffered)),
    };
    let mut expanded = 0u64;
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let n = read_full(&mut decoder, &mut chunk)?;
        if n == 0 {
            break;
        }
        // Checked before the chunk leaves: what is refused is never written.
        expanded += n as u64;
        bound
            .check(expanded, compressed_used(decoder.input()))
            .map_err(Failure::Archive)?;
        chunk.truncate(n);
        tx.send(Bytes::from(chunk)).map_err(|_| Failure::Gone)?;
    }
    drop(decoder);
    // Both decoders stop only at the end of their input; make sure nothing
    // is left, so the archive digest covers every byte of the stream.
    let trailing = io::copy(src, &mut io::sink())?;
    if trailing > 0 {
        return Err(Failure::Archive(ArchiveError::Corrupt {
            after: src.digest.bytes(),
            detail: format!("{trailing} bytes follow the compressed stream"),
        }));
    }
    Ok(compression)
}

/// Compressed bytes the decoder took so far: what was read ahead into the
/// buffer does not count, or a bomb would expand further for being read in
/// large blocks.
fn compressed_used<R: Read>(input: &BufReader<io::Chain<&[u8], &mut Source<'_, R>>>) -> u64 {
    let (magic_left, source) = input.get_ref().get_ref();
    source
        .digest
        .bytes()
        .saturating_sub((magic_left.len() + input.buffer().len()) as u64)
}

fn detect(magic: &[u8]) -> Result<Compression, ArchiveError> {
    if magic.starts_with(&ZSTD_MAGIC) {
        return Ok(Compression::Zstd);
    }
    if magic.starts_with(&GZIP_MAGIC) {
        return Ok(Compression::Gzip);
    }
    let short = magic.len() < ZSTD_MAGIC.len();
    if short
        && !magic.is_empty()
        && (ZSTD_MAGIC.starts_with(magic) || GZIP_MAGIC.starts_with(magic))
    {
        return Err(ArchiveError::Truncated {
            after: magic.len() as u64,
        });
    }
    let detail = if magic.is_empty() {
        "the stream is empty".to_string()
    } else {
        let hex: Vec<String> = magic.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "it starts with bytes {} (zstd starts with 28 b5 2f fd, gzip with 1f 8b)",
            hex.join(" ")
        )
    };
    Err(ArchiveError::NotAnArchive { detail })
}

/// Either decoder over the buffered source; both take their input straight
/// from its buffer, so what they used is known exactly.
enum Decoder<B: BufRead> {
    Zstd(zstd::stream::read::Decoder<'static, B>),
    Gzip(flate2::bufread::MultiGzDecoder<B>),
}

impl<B: BufRead> Decoder<B> {
    fn input(&self) -> &B {
        match self {
            Self::Zstd(d) => d.get_ref(),
            Self::Gzip(d) => d.get_ref(),
        }
    }
}

impl<B: BufRead> Read for Decoder<B> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Zstd(d) => d.read(buf),
            Self::Gzip(d) => d.read(buf),
        }
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
pub(crate) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The raw source: hashed, counted (also for the other thread), and
/// remembering whether it failed itself.
struct Source<'a, R> {
    inner: R,
    digest: Digester,
    failed: bool,
    consumed: &'a AtomicU64,
}

impl<R: Read> Read for Source<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.digest.update(&buf[..n]);
                self.consumed.store(self.digest.bytes(), Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                self.failed |= e.kind() != io::ErrorKind::Interrupted;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_compression_by_magic() {
        assert_eq!(
            detect(&[0x28, 0xB5, 0x2F, 0xFD]).ok(),
            Some(Compression::Zstd)
        );
        assert_eq!(detect(&[0x1F, 0x8B, 8, 0]).ok(), Some(Compression::Gzip));
        assert!(matches!(
            detect(&[0x28, 0xB5]),
            Err(ArchiveError::Truncated { after: 2 })
        ));
        let zip = detect(b"PK\x03\x04").expect_err("zip").to_string();
        assert!(zip.contains("50 4b 03 04"), "{zip}");
        let empty = detect(b"").expect_err("empty").to_string();
        assert!(empty.contains("empty"), "{empty}");
    }
}
