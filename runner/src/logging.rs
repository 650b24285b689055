//! Structured, timestamped logs: to the journal under systemd, plain text on
//! a terminal (lessons.md, rule 26), and, once a run knows its work folder,
//! to `<work_dir>/logs/runner.log` too: the file that ships with the run's
//! logs whatever runs the runner. Every line is masked ([`crate::mask`])
//! before it is written anywhere: the journal is written here too (its
//! native protocol), not by a layer that would send fields unmasked.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Mutex;

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use crate::mask;

/// The run's log file, once [`also_to_file`] opened it.
static FILE: Mutex<Option<File>> = Mutex::new(None);

/// Installs the global subscriber, as the runner.
pub fn init() {
    init_as("plex-burst-runner");
}

/// Installs the global subscriber; `identifier` tags journal lines (the
/// dead-man's are not the runner's). `RUST_LOG` overrides the default
/// level. The AWS SDK's own logs stay at `warn`: at debug they would print
/// request headers, credentials included.
pub fn init_as(identifier: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,aws_smithy_runtime=warn,aws_sdk_s3=warn,aws_config=warn,hyper=warn")
    });
    let file = tracing_subscriber::fmt::layer()
        .with_writer(|| FileWriter)
        .with_ansi(false)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter).with(file);
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Some(journal) = Journal::connect(identifier)
    {
        // The journal stamps each entry itself.
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(journal)
                    .with_ansi(false)
                    .with_target(false)
                    .without_time(),
            )
            .init();
        return;
    }
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(|| Masked(io::stderr()))
                .with_target(false),
        )
        .init();
}

/// Writes each formatted event masked to `W`. The fmt layer writes an
/// event with one `write_all` of the whole line, so a line is masked whole.
struct Masked<W: Write>(W);

impl<W: Write> Write for Masked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&mask::bytes(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The journal's native socket: entries with a priority and the process's
/// identifier (the dead-man's lines are not the runner's), as
/// tracing-journald would send them, but masked.
struct Journal {
    socket: UnixDatagram,
    identifier: String,
}

impl Journal {
    const SOCKET: &str = "/run/systemd/journal/socket";

    fn connect(identifier: &str) -> Option<Journal> {
        let socket = UnixDatagram::unbound().ok()?;
        socket.connect(Self::SOCKET).ok()?;
        Some(Journal {
            socket,
            identifier: identifier.to_owned(),
        })
    }
}

impl<'a> MakeWriter<'a> for Journal {
    type Writer = JournalEntry<'a>;

    fn make_writer(&'a self) -> JournalEntry<'a> {
        JournalEntry {
            journal: self,
            priority: 6,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> JournalEntry<'a> {
        let priority = match *meta.level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        JournalEntry {
            journal: self,
            priority,
        }
    }
}

struct JournalEntry<'a> {
    journal: &'a Journal,
    priority: u8,
}

impl Write for JournalEntry<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let message = mask::bytes(buf);
        let message = message.strip_suffix(b"\n").unwrap_or(&message);
        let mut entry = format!(
            "PRIORITY={}\nSYSLOG_IDENTIFIER={}\nMESSAGE\n",
            self.priority, self.journal.identifier
        )
        .into_bytes();
        // MESSAGE in the binary form: it may hold newlines.
        entry.extend_from_slice(&(message.len() as u64).to_le_bytes());
        entry.extend_from_slice(message);
        entry.push(b'\n');
        if self.journal.socket.send(&entry).is_err() {
            // Too big for a datagram, or journald gone: stderr goes to the
            // journal too, under systemd.
            let _ = io::stderr().write_all(&[message, b"\n"].concat());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// From now on, every log line is also appended to `path` (restarts add to
/// the same file).
pub fn also_to_file(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = File::options().create(true).append(true).open(path)?;
    *FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
    Ok(())
}

/// Writes to the log file when one is open; a no-op before.
struct FileWriter;

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(file) = FILE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            // A full disk must not stop the run: the line is lost, not the work.
            let _ = file.write_all(&mask::bytes(buf));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
