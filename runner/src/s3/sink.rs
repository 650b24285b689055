//! Where a download's bytes go. A sink is driven from a blocking thread of
//! its own, in order, so it may block (a full pipe, a slow disk) without
//! stalling the network side.

use std::io::{self, Write};

use bytes::Bytes;

use crate::pipe::PipeWriter;

pub trait Sink: Send + 'static {
    /// Takes the next bytes of the object, in order.
    fn put(&mut self, chunk: Bytes) -> io::Result<()>;

    /// The object is complete: flush, sync, close.
    fn finish(self) -> io::Result<()>
    where
        Self: Sized;

    /// The download failed: a reader on the other side must see an error,
    /// never a clean (truncated) end.
    fn fail(self, err: &io::Error)
    where
        Self: Sized;
}

/// Zero-copy hand-over to a blocking consumer (unpacking, hashing, ...).
impl Sink for PipeWriter {
    fn put(&mut self, chunk: Bytes) -> io::Result<()> {
        self.send(chunk)
    }

    fn finish(self) -> io::Result<()> {
        Ok(())
    }

    fn fail(self, err: &io::Error) {
        PipeWriter::fail(self, err)
    }
}

/// Any `Write` as a sink (a file, a buffer, a hasher).
pub struct WriteSink<W>(pub W);

impl<W: Write + Send + 'static> Sink for WriteSink<W> {
    fn put(&mut self, chunk: Bytes) -> io::Result<()> {
        self.0.write_all(&chunk)
    }

    fn finish(mut self) -> io::Result<()> {
        self.0.flush()
    }

    fn fail(self, _err: &io::Error) {}
}

/// A sink that reports how many bytes went through it (a progress bar).
pub struct Counted<S, F> {
    inner: S,
    seen: u64,
    progress: F,
}

impl<S: Sink, F: FnMut(u64) + Send + 'static> Counted<S, F> {
    /// `progress` gets the running total after each chunk.
    pub fn new(inner: S, progress: F) -> Self {
        Counted {
            inner,
            seen: 0,
            progress,
        }
    }
}

impl<S: Sink, F: FnMut(u64) + Send + 'static> Sink for Counted<S, F> {
    fn put(&mut self, chunk: Bytes) -> io::Result<()> {
        self.seen += chunk.len() as u64;
        self.inner.put(chunk)?;
        (self.progress)(self.seen);
        Ok(())
    }

    fn finish(self) -> io::Result<()> {
        self.inner.finish()
    }

    fn fail(self, err: &io::Error) {
        self.inner.fail(err)
    }
}
