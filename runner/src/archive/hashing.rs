//! sha256 + byte count on the way through a reader or a writer.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

#[derive(Default)]
pub(crate) struct Digester {
    hasher: Sha256,
    bytes: u64,
}

impl Digester {
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The lowercase hex sha256 of everything seen.
    pub fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

/// Hashes what is read; remembers whether the inner reader failed, so a
/// caller can tell a failing source from a failing consumer.
pub(crate) struct HashingReader<R> {
    inner: R,
    pub digest: Digester,
    pub failed: bool,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            digest: Digester::default(),
            failed: false,
        }
    }

    pub fn into_parts(self) -> (R, Digester) {
        (self.inner, self.digest)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.digest.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                self.failed |= e.kind() != io::ErrorKind::Interrupted;
                Err(e)
            }
        }
    }
}

/// Hashes what is written.
pub(crate) struct HashingWriter<W> {
    inner: W,
    pub digest: Digester,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            digest: Digester::default(),
        }
    }

    pub fn into_parts(self) -> (W, Digester) {
        (self.inner, self.digest)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_and_writer_agree_with_a_one_shot_digest() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let expected = hex::encode(Sha256::digest(&data));

        let mut reader = HashingReader::new(&data[..]);
        let mut writer = HashingWriter::new(Vec::new());
        io::copy(&mut reader, &mut writer).expect("copy");
        let (copied, written) = writer.into_parts();

        assert_eq!(copied, data);
        assert_eq!(reader.digest.bytes(), data.len() as u64);
        assert_eq!(written.bytes(), data.len() as u64);
        assert_eq!(reader.digest.finish(), expected);
        assert_eq!(written.finish(), expected);
    }
}
