//! A bounded in-memory byte pipe between a blocking producer and a blocking
//! consumer (tar/zstd on one side, the S3 engine on the other).
//!
//! The bound is what keeps pull and push memory flat in archive size: the
//! writer blocks once `capacity` chunks are in flight. Dropping either end
//! wakes the other: a reader sees EOF (or the writer's error), a writer sees
//! `BrokenPipe`.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use bytes::Bytes;

/// What travels through the pipe: data, or the producer's failure, so a
/// consumer can tell a clean end from an aborted stream.
enum Msg {
    Data(Bytes),
    Failed(io::ErrorKind, String),
}

pub struct PipeWriter {
    tx: SyncSender<Msg>,
}

pub struct PipeReader {
    rx: Receiver<Msg>,
    current: Bytes,
    done: bool,
}

/// A pipe holding at most `capacity` chunks in flight.
pub fn pipe(capacity: usize) -> (PipeWriter, PipeReader) {
    let (tx, rx) = sync_channel(capacity.max(1));
    (
        PipeWriter { tx },
        PipeReader {
            rx,
            current: Bytes::new(),
            done: false,
        },
    )
}

impl PipeWriter {
    /// Hands a chunk over without copying it.
    pub fn send(&self, chunk: Bytes) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Msg::Data(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "pipe reader is gone"))
    }

    /// Ends the stream with an error the reader will return instead of EOF.
    pub fn fail(self, err: &io::Error) {
        let _ = self.tx.send(Msg::Failed(err.kind(), err.to_string()));
    }
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send(Bytes::copy_from_slice(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl PipeReader {
    /// The next chunk, or `None` at a clean end of stream.
    pub fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if !self.current.is_empty() {
            return Ok(Some(std::mem::take(&mut self.current)));
        }
        if self.done {
            return Ok(None);
        }
        match self.rx.recv() {
            Ok(Msg::Data(b)) => Ok(Some(b)),
            Ok(Msg::Failed(kind, msg)) => {
                self.done = true;
                Err(io::Error::new(kind, msg))
            }
            Err(_) => {
                self.done = true;
                Ok(None)
            }
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.current.is_empty() {
            match self.next_chunk()? {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_in_order_and_end_cleanly() {
        let (mut w, mut r) = pipe(2);
        let producer = std::thread::spawn(move || {
            for i in 0..100u8 {
                w.write_all(&[i; 1000]).unwrap();
            }
        });
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        producer.join().unwrap();
        assert_eq!(out.len(), 100_000);
        assert!(
            out.chunks(1000)
                .enumerate()
                .all(|(i, c)| c.iter().all(|&b| b == i as u8))
        );
    }

    #[test]
    fn a_failed_producer_is_an_error_not_eof() {
        let (w, mut r) = pipe(2);
        w.send(Bytes::from_static(b"partial")).unwrap();
        w.fail(&io::Error::new(
            io::ErrorKind::ConnectionReset,
            "reset by peer",
        ));
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(out, b"partial");
    }

    #[test]
    fn a_gone_reader_is_a_broken_pipe() {
        let (mut w, r) = pipe(1);
        drop(r);
        assert_eq!(w.write(b"x").unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}
