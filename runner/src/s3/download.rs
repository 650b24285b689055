//! Large-object download: parallel ranged GETs handed to a sink in order,
//! sha256 computed on the way.
//!
//! A range holds a semaphore permit from the moment its GET starts until the
//! sink has taken its bytes, so at most `concurrency` ranges are ever in
//! memory, however slow the sink. A range whose body breaks is asked again
//! from the byte it reached, not from its start. Bytes the sink has taken
//! are the sink's: a pipe applies its own bound.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::task::AbortOnDropHandle;

use super::error::{Failure, S3Error, causes, classify};
use super::retry::cancelled;
use super::sink::Sink;
use super::{Bucket, ObjectInfo, unquote};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadReport {
    /// Size of the whole object (and of the file, for `download_to_file`).
    pub bytes: u64,
    /// Bytes fetched by this call (less than `bytes` when a file was resumed).
    pub fetched: u64,
    /// Hex sha256 of the whole object.
    pub sha256: String,
    /// Most bytes held in memory at once: never above concurrency × range size.
    pub peak_buffered: u64,
}

/// Bytes fetched but not yet taken by the sink.
#[derive(Default)]
struct Gauge {
    now: AtomicU64,
    peak: AtomicU64,
}

impl Gauge {
    fn add(&self, n: usize) {
        let now = self.now.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    fn sub(&self, n: usize) {
        self.now.fetch_sub(n as u64, Ordering::SeqCst);
    }
}

/// From the network side to the sink thread.
enum Msg {
    Range(Bytes, OwnedSemaphorePermit),
    End,
    Failed(String),
}

/// Why the range loop stopped early.
enum Stop {
    S3(S3Error),
    /// The sink thread ended; its own error says why.
    SinkGone,
}

impl From<S3Error> for Stop {
    fn from(e: S3Error) -> Self {
        Stop::S3(e)
    }
}

impl Bucket {
    /// Streams the whole of `key` into `sink`, in order.
    pub async fn download<S: Sink>(&self, key: &str, sink: S) -> Result<DownloadReport, S3Error> {
        let info = match self.head(key).await {
            Ok(Some(info)) => info,
            found => {
                let err = found.err().unwrap_or_else(|| S3Error::NoSuchKey {
                    bucket: self.name.clone(),
                    key: key.into(),
                });
                sink.fail(&io::Error::other(err.to_string()));
                return Err(err);
            }
        };
        self.fetch(&info, 0, Sha256::new(), sink).await
    }

    /// Downloads `key` into `path`, continuing a partial file left by an
    /// earlier attempt, then syncs it and checks its size.
    ///
    /// The bytes already present are trusted to be a prefix of the object;
    /// the returned sha256 covers the whole file, so a caller comparing it
    /// with a manifest catches a stale prefix.
    pub async fn download_to_file(
        &self,
        key: &str,
        path: &Path,
    ) -> Result<DownloadReport, S3Error> {
        let info = self.head(key).await?.ok_or_else(|| S3Error::NoSuchKey {
            bucket: self.name.clone(),
            key: key.into(),
        })?;
        let owned = path.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || open_partial(&owned))
            .await
            .map_err(|e| io_error(format!("opening {}", path.display()), io::Error::other(e)))?;
        let (file, have, hasher) =
            opened.map_err(|e| io_error(format!("opening {}", path.display()), e))?;
        if have > info.size {
            return Err(S3Error::SizeMismatch {
                what: format!(
                    "partial download {} is larger than s3://{}/{}",
                    path.display(),
                    self.name,
                    key
                ),
                expected: info.size,
                found: have,
            });
        }
        if have > 0 {
            tracing::info!(key, path = %path.display(), have, "resuming a partial download");
        }
        let sink = FileSink {
            file,
            path: path.to_path_buf(),
        };
        let report = self.fetch(&info, have, hasher, sink).await?;
        let len = std::fs::metadata(path)
            .map_err(|e| io_error(format!("checking {}", path.display()), e))?
            .len();
        if len != info.size {
            return Err(S3Error::SizeMismatch {
                what: format!(
                    "{} downloaded from s3://{}/{}",
                    path.display(),
                    self.name,
                    key
                ),
                expected: info.size,
                found: len,
            });
        }
        Ok(report)
    }

    /// Fetches `from..size` of the object into `sink`; `hasher` already holds
    /// the bytes before `from`.
    async fn fetch<S: Sink>(
        &self,
        info: &ObjectInfo,
        from: u64,
        hasher: Sha256,
        sink: S,
    ) -> Result<DownloadReport, S3Error> {
        let started = Instant::now();
        let gauge = Arc::new(Gauge::default());
        let (tx, rx) = mpsc::channel(self.tuning.concurrency.max(1));
        let writer = tokio::task::spawn_blocking({
            let gauge = gauge.clone();
            move || write_in_order(rx, sink, hasher, &gauge)
        });
        let fetched = self.fetch_ranges(info, from, &tx, &gauge).await;
        let last = match &fetched {
            Ok(()) => Msg::End,
            Err(Stop::S3(e)) => Msg::Failed(e.to_string()),
            Err(Stop::SinkGone) => Msg::Failed("the sink stopped".into()),
        };
        let _ = tx.send(last).await;
        drop(tx);
        let what = || format!("writing the download of s3://{}/{}", self.name, info.key);
        let written = writer
            .await
            .map_err(|e| io_error(what(), io::Error::other(e)))?;
        let (fetched_bytes, sha256) = match fetched {
            Err(Stop::S3(e)) => return Err(e),
            _ => written.map_err(|e| io_error(what(), e))?,
        };
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            key = info.key,
            bytes = fetched_bytes,
            secs = format!("{secs:.2}"),
            mib_per_s = format!("{:.1}", fetched_bytes as f64 / 1048576.0 / secs.max(1e-9)),
            "downloaded"
        );
        Ok(DownloadReport {
            bytes: info.size,
            fetched: fetched_bytes,
            sha256,
            peak_buffered: gauge.peak.load(Ordering::SeqCst),
        })
    }

    /// Starts range GETs while permits last and hands finished ranges to the
    /// sink thread in order.
    async fn fetch_ranges(
        &self,
        info: &ObjectInfo,
        from: u64,
        tx: &mpsc::Sender<Msg>,
        gauge: &Arc<Gauge>,
    ) -> Result<(), Stop> {
        let permits = Arc::new(Semaphore::new(self.tuning.concurrency.max(1)));
        let step = self.tuning.range_size.max(1);
        let mut ranges = (from..info.size)
            .step_by(step as usize)
            .map(|s| s..(s + step).min(info.size))
            .peekable();
        let mut in_flight = VecDeque::new();
        loop {
            while let Some(range) = ranges.peek().cloned() {
                let permit = if in_flight.is_empty() {
                    // Every permit sits with the sink thread: wait for it.
                    tokio::select! {
                        _ = self.policy.cancel.cancelled() => return Err(cancelled(&self.name, &info.key).into()),
                        p = permits.clone().acquire_owned() => p.map_err(|_| Stop::SinkGone)?,
                    }
                } else {
                    match permits.clone().try_acquire_owned() {
                        Ok(p) => p,
                        Err(_) => break,
                    }
                };
                ranges.next();
                let (bucket, info, gauge) = (self.clone(), info.clone(), gauge.clone());
                in_flight.push_back(AbortOnDropHandle::new(tokio::spawn(async move {
                    bucket
                        .fetch_range(&info, range, &gauge)
                        .await
                        .map(|data| (data, permit))
                })));
            }
            let Some(next) = in_flight.pop_front() else {
                return Ok(());
            };
            let (data, permit) = next.await.map_err(|e| {
                io_error(
                    format!("fetching s3://{}/{}", self.name, info.key),
                    io::Error::other(e),
                )
            })??;
            tx.send(Msg::Range(data, permit))
                .await
                .map_err(|_| Stop::SinkGone)?;
        }
    }

    /// One range, resumed from the byte reached after each failure. An
    /// attempt that made progress starts a fresh attempt budget.
    async fn fetch_range(
        &self,
        info: &ObjectInfo,
        range: Range<u64>,
        gauge: &Gauge,
    ) -> Result<Bytes, S3Error> {
        let mut buf = BytesMut::with_capacity((range.end - range.start) as usize);
        let mut failed = 0;
        loop {
            let before = buf.len();
            let attempt = tokio::select! {
                _ = self.policy.cancel.cancelled() => return Err(cancelled(&self.name, &info.key)),
                r = self.get_range_into(info, &range, &mut buf, gauge) => r,
            };
            let cause = match attempt {
                Ok(()) => return Ok(buf.freeze()),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(cause)) => cause,
            };
            if buf.len() > before {
                failed = 0;
            }
            failed += 1;
            if failed >= self.policy.max_attempts {
                return Err(S3Error::Unreachable {
                    bucket: self.name.clone(),
                    key: info.key.clone(),
                    attempts: failed,
                    cause,
                });
            }
            let at = range.start + buf.len() as u64;
            tracing::warn!(
                key = info.key,
                at,
                attempt = failed,
                "ranged GET failed, resuming: {cause}"
            );
            self.policy.pause(failed, &self.name, &info.key).await?;
        }
    }

    /// One GET of what `buf` still misses of `range`, appending to `buf`.
    async fn get_range_into(
        &self,
        info: &ObjectInfo,
        range: &Range<u64>,
        buf: &mut BytesMut,
        gauge: &Gauge,
    ) -> Result<(), Failure> {
        let start = range.start + buf.len() as u64;
        let timeout = self.policy.attempt_timeout;
        let stalled = |at: u64| {
            Failure::Transient(format!(
                "no data for {} at byte {at}",
                humantime::format_duration(timeout)
            ))
        };
        let request = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(&info.key)
            .range(format!("bytes={start}-{}", range.end - 1))
            .set_if_match(info.etag.as_ref().map(|e| format!("\"{e}\"")));
        let changed = |found: &str| S3Error::Changed {
            bucket: self.name.clone(),
            key: info.key.clone(),
            expected: info.etag.clone().unwrap_or_default(),
            found: found.into(),
        };
        let out = match tokio::time::timeout(timeout, request.send()).await {
            Err(_) => return Err(stalled(start)),
            Ok(Err(e)) => match classify(e, &self.name, &info.key) {
                Failure::Fatal(S3Error::Rejected { status: 412, .. }) => {
                    return Err(changed("another version").into());
                }
                other => return Err(other),
            },
            Ok(Ok(out)) => out,
        };
        if let (Some(expected), Some(found)) = (&info.etag, out.e_tag())
            && unquote(found) != *expected
        {
            return Err(changed(&unquote(found)).into());
        }
        let asked = range.end - start;
        let answered = out.content_length().unwrap_or(-1);
        if answered != asked as i64 {
            return Err(S3Error::Rejected {
                bucket: self.name.clone(),
                key: info.key.clone(),
                status: 200,
                code: "InvalidRange".into(),
                message: format!(
                    "asked for {asked} bytes from byte {start}, the server announced {answered}"
                ),
            }
            .into());
        }
        let mut body = out.body;
        loop {
            let at = range.start + buf.len() as u64;
            let chunk = match tokio::time::timeout(timeout, body.next()).await {
                Err(_) => return Err(stalled(at)),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(Failure::Transient(format!(
                        "body broke at byte {at}: {}",
                        causes(&e)
                    )));
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            if at + chunk.len() as u64 > range.end {
                return Err(Failure::Transient(format!(
                    "body ran past the range end at byte {at}"
                )));
            }
            gauge.add(chunk.len());
            buf.extend_from_slice(&chunk);
        }
        if buf.len() as u64 != range.end - range.start {
            let at = range.start + buf.len() as u64;
            return Err(Failure::Transient(format!("body ended early at byte {at}")));
        }
        Ok(())
    }
}

/// The sink thread: hashes and hands over each range in arrival order (the
/// network side sends them in object order).
fn write_in_order<S: Sink>(
    mut rx: mpsc::Receiver<Msg>,
    mut sink: S,
    mut hasher: Sha256,
    gauge: &Gauge,
) -> io::Result<(u64, String)> {
    let mut written = 0u64;
    loop {
        match rx.blocking_recv() {
            Some(Msg::Range(data, permit)) => {
                hasher.update(&data);
                let n = data.len();
                if let Err(e) = sink.put(data) {
                    sink.fail(&e);
                    return Err(e);
                }
                written += n as u64;
                gauge.sub(n);
                drop(permit);
            }
            Some(Msg::End) => {
                sink.finish()?;
                return Ok((written, hex::encode(hasher.finalize())));
            }
            Some(Msg::Failed(cause)) => {
                let e = io::Error::other(cause);
                sink.fail(&e);
                return Err(e);
            }
            None => {
                let e = io::Error::new(io::ErrorKind::Interrupted, "the download was interrupted");
                sink.fail(&e);
                return Err(e);
            }
        }
    }
}

fn io_error(what: String, source: io::Error) -> S3Error {
    S3Error::Io { what, source }
}

/// Opens (or creates) `path` for appending and hashes what it already holds.
fn open_partial(path: &Path) -> io::Result<(File, u64, Sha256)> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut have = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((file, have, hasher));
        }
        hasher.update(&buf[..n]);
        have += n as u64;
    }
}

/// A file that is synced to disk before the download counts as done.
struct FileSink {
    file: File,
    path: PathBuf,
}

impl Sink for FileSink {
    fn put(&mut self, chunk: Bytes) -> io::Result<()> {
        io::Write::write_all(&mut self.file, &chunk)
            .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", self.path.display())))
    }

    fn finish(self) -> io::Result<()> {
        self.file
            .sync_all()
            .map_err(|e| io::Error::new(e.kind(), format!("syncing {}: {e}", self.path.display())))
    }

    fn fail(self, _err: &io::Error) {
        // What was written stays: the next attempt resumes from it.
        let _ = self.file.sync_data();
    }
}
