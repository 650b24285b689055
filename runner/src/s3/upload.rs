//! Large-object upload: a reader cut into parts on a blocking thread (sha256
//! of the whole and MD5 of each part computed there), parts sent in parallel
//! as a multipart upload, a single PUT when the stream fits in one part.
//!
//! Resume: a pending multipart upload for the key (left by a killed process)
//! is picked up; each part the source produces again is skipped when the
//! server already holds a part of that number with the same size and MD5.
//! Any failure other than cancellation aborts the multipart upload, so no
//! orphan parts stay billed; cancellation leaves it for a later resume.

use std::collections::HashMap;
use std::io::{self, Read};
use std::time::Instant;

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use md5::Md5;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::error::{S3Error, classify};
use super::retry::cancelled;
use super::{Bucket, MIB, unquote};

/// Scaleway's cap on parts per object.
pub const MAX_PARTS: u32 = 1000;
/// S3's floor for every part but the last.
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// The object size assumed when the caller cannot tell: 100 GB.
const UNKNOWN_SIZE: u64 = 100_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadReport {
    pub bytes: u64,
    /// Hex sha256 of the whole content.
    pub sha256: String,
    /// Parts of the object (1 for a single PUT).
    pub parts: u32,
    /// Parts found already uploaded by an interrupted attempt and kept.
    pub reused_parts: u32,
}

/// A multipart upload neither completed nor aborted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    /// Seconds and nanoseconds since the epoch, when the server tells.
    pub initiated: Option<(i64, u32)>,
}

/// The part size for an object of about `size_hint` bytes: at least
/// `preferred` and 5 MiB, a whole number of MiB, and large enough that the
/// object fits in [`MAX_PARTS`] parts.
pub fn part_size_for(size_hint: Option<u64>, preferred: u64) -> u64 {
    let needed = size_hint
        .unwrap_or(UNKNOWN_SIZE)
        .div_ceil(u64::from(MAX_PARTS));
    needed
        .max(preferred)
        .max(MIN_PART_SIZE)
        .next_multiple_of(MIB)
}

/// One part as cut by the reader thread.
struct Part {
    number: i32,
    data: Bytes,
}

impl Part {
    /// S3's ETag of a part. Computed only when it is needed (to match a
    /// part left by an interrupted upload): MD5 is the slowest hash here.
    fn md5_hex(&self) -> String {
        hex::encode(Md5::digest(&self.data))
    }
}

/// Why the reader thread stopped early.
enum ReadStop {
    Io(io::Error),
    TooManyParts,
    /// The upload side went away (it failed or was cancelled).
    Gone,
}

type Reader = JoinHandle<Result<(u64, String), ReadStop>>;

impl Bucket {
    /// Uploads everything `source` yields to `key`. `size_hint` (the expected
    /// size; `None` assumes up to 100 GB) sets the part size; a stream larger
    /// than 1000 parts of that size fails with [`S3Error::TooManyParts`].
    /// Memory: at most `concurrency + 2` parts.
    pub async fn upload<R: Read + Send + 'static>(
        &self,
        key: &str,
        source: R,
        size_hint: Option<u64>,
        content_type: &str,
    ) -> Result<UploadReport, S3Error> {
        let started = Instant::now();
        let part_size = part_size_for(size_hint, self.tuning.min_part_size);
        let (tx, mut rx) = mpsc::channel(1);
        let reader: Reader =
            tokio::task::spawn_blocking(move || read_parts(source, part_size as usize, tx));

        // Two parts decide between a single PUT and a multipart upload.
        let mut head = Vec::new();
        if let Some(first) = self.next_part(key, &mut rx).await? {
            let full = first.data.len() as u64 == part_size;
            head.push(first);
            if full && let Some(second) = self.next_part(key, &mut rx).await? {
                head.push(second);
            }
        }
        let report = if head.len() < 2 {
            let (bytes, sha256) = self.join_reader(key, part_size, reader).await?;
            let data = head.pop().map(|p| p.data).unwrap_or_default();
            self.put_bytes(key, data, content_type).await?;
            UploadReport {
                bytes,
                sha256,
                parts: 1,
                reused_parts: 0,
            }
        } else {
            self.upload_multipart(key, part_size, head, rx, reader, content_type)
                .await?
        };
        self.check_size(key, report.bytes).await?;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            key,
            bytes = report.bytes,
            parts = report.parts,
            reused = report.reused_parts,
            secs = format!("{secs:.2}"),
            mib_per_s = format!("{:.1}", report.bytes as f64 / 1048576.0 / secs.max(1e-9)),
            "uploaded"
        );
        Ok(report)
    }

    async fn upload_multipart(
        &self,
        key: &str,
        part_size: u64,
        head: Vec<Part>,
        rx: mpsc::Receiver<Part>,
        reader: Reader,
        content_type: &str,
    ) -> Result<UploadReport, S3Error> {
        let (upload_id, existing) = self.start_or_resume(key, content_type).await?;
        let sent = self
            .send_parts(key, part_size, &upload_id, &existing, head, rx, reader)
            .await;
        let result = match sent {
            Ok((report, parts)) => self
                .complete(key, &upload_id, parts, report.bytes)
                .await
                .map(|()| report),
            Err(e) => Err(e),
        };
        if let Err(e) = &result
            && !matches!(e, S3Error::Cancelled { .. })
        {
            self.abort(key, &upload_id).await;
        }
        result
    }

    /// The pending upload to resume (and the parts it holds), or a new one.
    async fn start_or_resume(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<(String, HashMap<i32, (i64, String)>), S3Error> {
        if let Some(upload_id) = self.pending_upload(key).await? {
            match self.uploaded_parts(key, &upload_id).await {
                Ok(parts) => {
                    tracing::info!(
                        key,
                        parts = parts.len(),
                        "resuming a pending multipart upload"
                    );
                    return Ok((upload_id, parts));
                }
                // Aborted meanwhile (e.g. by a lifecycle rule): start afresh.
                Err(S3Error::Rejected { code, .. }) if code == "NoSuchUpload" => {}
                Err(e) => return Err(e),
            }
        }
        let upload_id = self
            .run(key, "CreateMultipartUpload", || async {
                let created = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.name)
                    .key(key)
                    .content_type(content_type)
                    .send()
                    .await;
                let err = match created {
                    Ok(out) => return Ok(out.upload_id().unwrap_or_default().to_string()),
                    Err(err) => err,
                };
                // rclone serve s3 names the answer's root element
                // `InitiateMultipartUpload` (S3: `...Result`), which the SDK
                // refuses; the upload id in it is all we need.
                if let SdkError::ServiceError(e) = &err
                    && e.raw().status().is_success()
                    && let Some(id) = e.raw().body().bytes().and_then(upload_id_in)
                {
                    return Ok(id);
                }
                Err(classify(err, &self.name, key))
            })
            .await?;
        if upload_id.is_empty() {
            return Err(S3Error::Rejected {
                bucket: self.name.clone(),
                key: key.into(),
                status: 200,
                code: "NoUploadId".into(),
                message: "CreateMultipartUpload answered without an upload id".into(),
            });
        }
        Ok((upload_id, HashMap::new()))
    }

    /// Multipart uploads started under `prefix` and neither completed nor
    /// aborted (first page: up to 1000), oldest first.
    pub async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, S3Error> {
        let listed = self
            .run(prefix, "ListMultipartUploads", || async {
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.name)
                    .prefix(prefix)
                    .send()
                    .await
                    .map_err(|e| classify(e, &self.name, prefix))
            })
            .await;
        let listed = match listed {
            Ok(listed) => listed,
            // rclone serve s3 answers this for a bucket that has never held
            // a multipart upload; it can only mean "none".
            Err(S3Error::Rejected { code, .. }) if code == "NoSuchUpload" => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut pending: Vec<PendingUpload> = listed
            .uploads()
            .iter()
            .filter_map(|u| {
                Some(PendingUpload {
                    key: u.key()?.to_string(),
                    upload_id: u.upload_id()?.to_string(),
                    initiated: u.initiated().map(|t| (t.secs(), t.subsec_nanos())),
                })
            })
            .collect();
        pending.sort_by_key(|u| u.initiated);
        Ok(pending)
    }

    /// The most recent pending multipart upload of exactly `key`.
    async fn pending_upload(&self, key: &str) -> Result<Option<String>, S3Error> {
        match self.pending_uploads(key).await {
            Ok(pending) => Ok(pending
                .into_iter()
                .rev()
                .find(|u| u.key == key)
                .map(|u| u.upload_id)),
            Err(S3Error::Rejected { code, .. }) if code == "NotImplemented" => {
                tracing::warn!(
                    key,
                    "the server cannot list multipart uploads: an interrupted upload starts over"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Part number → (size, ETag without quotes) of a pending upload.
    async fn uploaded_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<HashMap<i32, (i64, String)>, S3Error> {
        let mut parts = HashMap::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .run(key, "ListParts", || async {
                    self.client
                        .list_parts()
                        .bucket(&self.name)
                        .key(key)
                        .upload_id(upload_id)
                        .set_part_number_marker(marker.clone())
                        .send()
                        .await
                        .map_err(|e| classify(e, &self.name, key))
                })
                .await?;
            for p in page.parts() {
                if let (Some(n), Some(size), Some(etag)) = (p.part_number(), p.size(), p.e_tag()) {
                    parts.insert(n, (size, unquote(etag)));
                }
            }
            marker = page.next_part_number_marker().map(str::to_string);
            if !page.is_truncated().unwrap_or(false) || marker.is_none() {
                return Ok(parts);
            }
        }
    }

    /// Uploads the parts as the reader produces them, `concurrency` at a time,
    /// skipping those the pending upload already holds.
    #[allow(clippy::too_many_arguments)]
    async fn send_parts(
        &self,
        key: &str,
        part_size: u64,
        upload_id: &str,
        existing: &HashMap<i32, (i64, String)>,
        head: Vec<Part>,
        mut rx: mpsc::Receiver<Part>,
        reader: Reader,
    ) -> Result<(UploadReport, Vec<CompletedPart>), S3Error> {
        let mut head = head.into_iter();
        let mut tasks = JoinSet::new();
        let mut done = Vec::new();
        let mut reused = 0;
        loop {
            // Wait for a free slot before taking the next part: that bounds memory.
            while tasks.len() >= self.tuning.concurrency.max(1) {
                done.push(joined(tasks.join_next().await, &self.name, key)?);
            }
            let part = match head.next() {
                Some(part) => part,
                None => match self.next_part(key, &mut rx).await? {
                    Some(part) => part,
                    None => break,
                },
            };
            if let Some((size, etag)) = existing.get(&part.number)
                && *size == part.data.len() as i64
                && *etag == part.md5_hex()
            {
                tracing::debug!(key, part = part.number, "part already uploaded, skipping");
                done.push(completed(part.number, etag));
                reused += 1;
                continue;
            }
            let (bucket, key, upload_id) = (self.clone(), key.to_string(), upload_id.to_string());
            tasks.spawn(async move { bucket.upload_part(&key, &upload_id, part).await });
        }
        while let Some(next) = tasks.join_next().await {
            done.push(joined(Some(next), &self.name, key)?);
        }
        let (bytes, sha256) = self.join_reader(key, part_size, reader).await?;
        done.sort_by_key(|p| p.part_number());
        let report = UploadReport {
            bytes,
            sha256,
            parts: done.len() as u32,
            reused_parts: reused,
        };
        Ok((report, done))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part: Part,
    ) -> Result<CompletedPart, S3Error> {
        let timeout = self.transfer_timeout(part.data.len() as u64);
        let what = format!("UploadPart {}", part.number);
        let etag = self
            .policy
            .run(&self.name, key, &what, timeout, || async {
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.name)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(part.number)
                    // No Content-MD5: the signed payload (SigV4's sha256,
                    // hardware-accelerated, unlike MD5) already has the
                    // server verify every byte.
                    .content_length(part.data.len() as i64)
                    .body(ByteStream::from(part.data.clone()))
                    .send()
                    .await
                    .map_err(|e| classify(e, &self.name, key))?;
                Ok(out.e_tag().map(unquote))
            })
            .await?;
        Ok(completed(
            part.number,
            &etag.unwrap_or_else(|| part.md5_hex()),
        ))
    }

    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        bytes: u64,
    ) -> Result<(), S3Error> {
        let upload = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        // The server assembles the object before it answers: allow for its size.
        let timeout = self.transfer_timeout(bytes / 16);
        self.policy
            .run(
                &self.name,
                key,
                "CompleteMultipartUpload",
                timeout,
                || async {
                    self.client
                        .complete_multipart_upload()
                        .bucket(&self.name)
                        .key(key)
                        .upload_id(upload_id)
                        .multipart_upload(upload.clone())
                        .send()
                        .await
                        .map_err(|e| classify(e, &self.name, key))
                },
            )
            .await?;
        Ok(())
    }

    /// Best effort: the failure that led here is what the caller hears about.
    async fn abort(&self, key: &str, upload_id: &str) {
        let aborted = self
            .run(key, "AbortMultipartUpload", || async {
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.name)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
                    .await
                    .map_err(|e| classify(e, &self.name, key))
            })
            .await;
        match aborted {
            Ok(_) => tracing::info!(key, "aborted the multipart upload"),
            Err(e) => tracing::warn!(
                key,
                "could not abort the multipart upload (a lifecycle rule must clean it): {e}"
            ),
        }
    }

    /// The server must hold exactly what was read.
    async fn check_size(&self, key: &str, bytes: u64) -> Result<(), S3Error> {
        let found = self.head(key).await?.map_or(0, |info| info.size);
        if found != bytes {
            return Err(S3Error::SizeMismatch {
                what: format!("s3://{}/{} after upload", self.name, key),
                expected: bytes,
                found,
            });
        }
        Ok(())
    }

    async fn next_part(
        &self,
        key: &str,
        rx: &mut mpsc::Receiver<Part>,
    ) -> Result<Option<Part>, S3Error> {
        tokio::select! {
            _ = self.policy.cancel.cancelled() => Err(cancelled(&self.name, key)),
            part = rx.recv() => Ok(part),
        }
    }

    /// The reader's verdict once it has stopped: byte count and sha256.
    async fn join_reader(
        &self,
        key: &str,
        part_size: u64,
        reader: Reader,
    ) -> Result<(u64, String), S3Error> {
        let what = || format!("reading the source of s3://{}/{}", self.name, key);
        match reader.await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(ReadStop::Io(e))) => Err(S3Error::Io {
                what: what(),
                source: e,
            }),
            Ok(Err(ReadStop::TooManyParts)) => Err(S3Error::TooManyParts {
                bucket: self.name.clone(),
                key: key.into(),
                part_size,
                max_parts: MAX_PARTS,
            }),
            Ok(Err(ReadStop::Gone)) => Err(cancelled(&self.name, key)),
            Err(e) => Err(S3Error::Io {
                what: what(),
                source: io::Error::other(e),
            }),
        }
    }
}

/// The `<UploadId>` of a CreateMultipartUpload answer, read leniently.
fn upload_id_in(xml: &[u8]) -> Option<String> {
    let xml = std::str::from_utf8(xml).ok()?;
    let (_, rest) = xml.split_once("<UploadId>")?;
    let (id, _) = rest.split_once("</UploadId>")?;
    Some(id.trim().to_string()).filter(|id| !id.is_empty())
}

fn completed(number: i32, etag: &str) -> CompletedPart {
    CompletedPart::builder()
        .part_number(number)
        .e_tag(format!("\"{etag}\""))
        .build()
}

fn joined(
    next: Option<Result<Result<CompletedPart, S3Error>, tokio::task::JoinError>>,
    bucket: &str,
    key: &str,
) -> Result<CompletedPart, S3Error> {
    match next {
        Some(Ok(part)) => part,
        Some(Err(e)) => Err(S3Error::Io {
            what: format!("uploading s3://{bucket}/{key}"),
            source: io::Error::other(e),
        }),
        None => Err(cancelled(bucket, key)),
    }
}

/// The reader thread: cuts `source` into parts, hashing as it goes.
fn read_parts<R: Read>(
    mut source: R,
    part_size: usize,
    tx: mpsc::Sender<Part>,
) -> Result<(u64, String), ReadStop> {
    let mut sha = Sha256::new();
    let mut total = 0u64;
    let mut number = 0i32;
    loop {
        let mut buf = BytesMut::zeroed(part_size);
        let filled = fill(&mut source, &mut buf).map_err(ReadStop::Io)?;
        if filled == 0 {
            break;
        }
        number += 1;
        if number > MAX_PARTS as i32 {
            return Err(ReadStop::TooManyParts);
        }
        buf.truncate(filled);
        sha.update(&buf);
        total += filled as u64;
        tx.blocking_send(Part {
            number,
            data: buf.freeze(),
        })
        .map_err(|_| ReadStop::Gone)?;
        if filled < part_size {
            break;
        }
    }
    Ok((total, hex::encode(sha.finalize())))
}

/// Reads until `buf` is full or the source ends.
fn fill(source: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1_000_000_000;

    #[test]
    fn part_sizes_fit_the_part_cap_and_the_floor() {
        for size in [15 * GB, 100 * GB, 5 * 1024 * GB, 1, 0] {
            let part = part_size_for(Some(size), 0);
            assert!(
                part >= MIN_PART_SIZE,
                "{size}: part of {part} bytes is below 5 MiB"
            );
            assert!(
                size.div_ceil(part) <= u64::from(MAX_PARTS),
                "{size}: {} parts",
                size.div_ceil(part)
            );
            assert_eq!(part % MIB, 0);
        }
        assert_eq!(
            part_size_for(Some(15 * GB), 0),
            15 * MIB,
            "15 GB needs 15 MiB parts, no more"
        );
        assert_eq!(part_size_for(Some(100 * GB), 0), 96 * MIB);
        assert_eq!(
            part_size_for(None, 0),
            part_size_for(Some(100 * GB), 0),
            "no hint assumes 100 GB"
        );
        assert_eq!(
            part_size_for(Some(GB), 16 * MIB),
            16 * MIB,
            "the preferred size wins when larger"
        );
    }

    #[test]
    fn upload_ids_are_read_from_a_lenient_answer() {
        let xml = b"<?xml version=\"1.0\"?>\n<InitiateMultipartUpload><Bucket>b</Bucket><UploadId>abc-1</UploadId></InitiateMultipartUpload>";
        assert_eq!(upload_id_in(xml).as_deref(), Some("abc-1"));
        assert_eq!(
            upload_id_in(b"<Error><Code>NoSuchBucket</Code></Error>"),
            None
        );
        assert_eq!(upload_id_in(b"<UploadId></UploadId>"), None);
    }

    #[test]
    fn the_reader_refuses_part_1001() {
        let part = 8;
        let (tx, mut rx) = mpsc::channel(1);
        let drain = std::thread::spawn(move || while rx.blocking_recv().is_some() {});
        let source = io::repeat(7).take(part as u64 * u64::from(MAX_PARTS) + 1);
        assert!(matches!(
            read_parts(source, part, tx),
            Err(ReadStop::TooManyParts)
        ));
        drain.join().unwrap();

        let (tx, mut rx) = mpsc::channel(1);
        let drain = std::thread::spawn(move || while rx.blocking_recv().is_some() {});
        let exact = io::repeat(7).take(part as u64 * u64::from(MAX_PARTS));
        assert!(matches!(read_parts(exact, part, tx), Ok((n, _)) if n == part as u64 * 1000));
        drain.join().unwrap();
    }
}
