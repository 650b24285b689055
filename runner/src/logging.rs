//! Structured, timestamped logs: to the journal under systemd, plain text on
//! a terminal (lessons.md, rule 26), and, once a run knows its work folder,
//! to `<work_dir>/logs/runner.log` too: the file that ships with the run's
//! logs whatever runs the runner.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

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
        && let Ok(journald) = tracing_journald::layer()
    {
        registry
            .with(journald.with_syslog_identifier(identifier.into()))
            .init();
        return;
    }
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .init();
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
            let _ = file.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
