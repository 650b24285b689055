//! The S3 engine: the only S3 client of plex-burst, for any S3-compatible
//! endpoint (Scaleway Object Storage, `rclone serve s3` in the tests).
//!
//! Small objects go through [`Bucket::get_bytes`], [`Bucket::put_bytes`] and
//! friends; large ones through [`Bucket::download`] (parallel ranged GETs,
//! in order, sha256 on the fly) and [`Bucket::upload`] (resumable parallel
//! multipart PUT). Every request follows one retry policy (`retry.rs`).
//!
//! Cancellation: cancel the token given to [`Bucket::with_cancel`] and every
//! wait (backoff, request, body read) ends with [`S3Error::Cancelled`];
//! dropping a future also stops its background tasks.

mod download;
mod error;
mod policy;
mod presign;
mod retry;
mod sink;
mod upload;

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use download::DownloadReport;
pub use error::S3Error;
pub use sink::{Counted, Sink, WriteSink};
pub use upload::{MAX_PARTS, MIN_PART_SIZE, PendingUpload, UploadReport, part_size_for};

use error::{Failure, classify};
use retry::Policy;

const MIB: u64 = 1024 * 1024;

/// Where and as whom to connect. Resolved by the config module.
#[derive(Clone, Debug)]
pub struct Connection {
    /// `None`: AWS's own endpoint for the region.
    pub endpoint: Option<String>,
    pub region: String,
    /// Path-style URLs (`host/bucket/key`), needed for bucket names with dots
    /// and for most local servers.
    pub path_style: bool,
    pub access_key: String,
    pub secret_key: crate::secret::Secret,
}

/// How hard to push. The defaults suit a Scaleway instance (3.2 Gb/s NIC).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tuning {
    /// Ranges (download) or parts (upload) in flight at once. Memory use is
    /// at most `concurrency` ranges or parts.
    pub concurrency: usize,
    /// Bytes per ranged GET: 8 of 8 MiB keep a 3.2 Gb/s link busy while
    /// bounding a pull to 64 MiB of buffers.
    pub range_size: u64,
    /// Smallest part size an upload uses; raised (never lowered below 5 MiB)
    /// so the object fits in 1000 parts.
    pub min_part_size: u64,
    /// Attempts per request (and per range without progress) before giving up.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub base_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long a request may go without an answer, or a body without a byte,
    /// before the attempt counts as failed (a stalled connection).
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Duration,
    /// Slowest upload rate tolerated, in bytes per second: a part upload may
    /// take `attempt_timeout + part size / min_throughput`.
    pub min_throughput: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            concurrency: 8,
            range_size: 8 * MIB,
            min_part_size: 16 * MIB,
            max_attempts: 8,
            base_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(30),
            min_throughput: MIB,
        }
    }
}

/// What `head` and `list` tell about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Quotes stripped; for single-PUT objects the hex MD5 of the content.
    pub etag: Option<String>,
}

/// One bucket on one endpoint. Cheap to clone (the client is shared).
#[derive(Clone)]
pub struct Bucket {
    client: Client,
    name: String,
    tuning: Tuning,
    policy: Policy,
}

impl Bucket {
    pub fn new(conn: &Connection, bucket: impl Into<String>, tuning: Tuning) -> Self {
        let credentials = Credentials::new(
            &conn.access_key,
            conn.secret_key.expose(),
            None,
            None,
            "plex-burst",
        );
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(conn.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(conn.path_style)
            // One retry policy: ours (see retry.rs).
            .retry_config(RetryConfig::disabled())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(tuning.attempt_timeout)
                    .build(),
            )
            // Integrity is ours too: Content-MD5 per part, sha256 of the whole.
            // The SDK's default CRC trailers are not understood by every
            // S3-compatible server.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &conn.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let policy = Policy::new(&tuning, CancellationToken::new());
        Bucket {
            client: Client::from_conf(config.build()),
            name: bucket.into(),
            tuning,
            policy,
        }
    }

    /// Makes every wait of this bucket (and its clones) end when `token` is cancelled.
    pub fn with_cancel(mut self, token: CancellationToken) -> Self {
        self.policy.cancel = token;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    /// Size and ETag of `key`, or `None` if there is no such object.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, S3Error> {
        let found = self
            .run(key, "HEAD", || async {
                let out = self
                    .client
                    .head_object()
                    .bucket(&self.name)
                    .key(key)
                    .send()
                    .await;
                match out {
                    Ok(o) => Ok(Some(ObjectInfo {
                        key: key.into(),
                        size: o.content_length().unwrap_or(0).max(0) as u64,
                        etag: o.e_tag().map(unquote),
                    })),
                    Err(e) => match classify(e, &self.name, key) {
                        Failure::Fatal(S3Error::NoSuchKey { .. }) => Ok(None),
                        other => Err(other),
                    },
                }
            })
            .await?;
        // A HEAD answer has no body, so "no such bucket" looks like "no such
        // key"; ask once more to tell the caller which.
        if found.is_none() {
            self.run(key, "HEAD bucket", || async {
                self.client
                    .head_bucket()
                    .bucket(&self.name)
                    .send()
                    .await
                    .map_err(|e| match classify(e, &self.name, key) {
                        Failure::Fatal(S3Error::NoSuchKey { bucket, key }) => {
                            Failure::Fatal(S3Error::NoSuchBucket { bucket, key })
                        }
                        other => other,
                    })
            })
            .await?;
        }
        Ok(found)
    }

    /// The whole content of a small object, in one request per attempt.
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, S3Error> {
        self.get_range(key, None).await
    }

    /// The last `bytes` bytes of `key` (all of it when shorter), or `None`
    /// if there is no such object: the end of a log. The range is explicit
    /// (not a suffix range, which some S3 servers refuse past the size).
    pub async fn get_tail(&self, key: &str, bytes: u64) -> Result<Option<Bytes>, S3Error> {
        let Some(info) = self.head(key).await? else {
            return Ok(None);
        };
        let range =
            (info.size > bytes).then(|| format!("bytes={}-{}", info.size - bytes, info.size - 1));
        self.get_range(key, range.as_deref()).await.map(Some)
    }

    /// One GET of `key`, of `range` if given, read whole, per attempt.
    async fn get_range(&self, key: &str, range: Option<&str>) -> Result<Bytes, S3Error> {
        self.run(key, "GET", || async {
            let out = self
                .client
                .get_object()
                .bucket(&self.name)
                .key(key)
                .set_range(range.map(str::to_owned))
                .send()
                .await
                .map_err(|e| classify(e, &self.name, key))?;
            let body = out.body.collect().await.map_err(|e| {
                Failure::Transient(format!("body read failed: {}", error::causes(&e)))
            })?;
            Ok(body.into_bytes())
        })
        .await
    }

    /// Writes a small object in one PUT, with Content-MD5 so the server
    /// refuses damaged bytes.
    pub async fn put_bytes(
        &self,
        key: &str,
        data: Bytes,
        content_type: &str,
    ) -> Result<(), S3Error> {
        let md5 = md5_base64(&data);
        let timeout = self.transfer_timeout(data.len() as u64);
        self.policy
            .run(&self.name, key, "PUT", timeout, || async {
                self.client
                    .put_object()
                    .bucket(&self.name)
                    .key(key)
                    .content_type(content_type)
                    .content_md5(&md5)
                    .body(ByteStream::from(data.clone()))
                    .send()
                    .await
                    .map_err(|e| classify(e, &self.name, key))
            })
            .await?;
        Ok(())
    }

    /// Every object whose key starts with `prefix`, in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, S3Error> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .run(prefix, "LIST", || async {
                    self.client
                        .list_objects_v2()
                        .bucket(&self.name)
                        .prefix(prefix)
                        .set_continuation_token(token.clone())
                        .send()
                        .await
                        .map_err(|e| classify(e, &self.name, prefix))
                })
                .await?;
            found.extend(page.contents().iter().map(|o| ObjectInfo {
                key: o.key().unwrap_or_default().to_string(),
                size: o.size().unwrap_or(0).max(0) as u64,
                etag: o.e_tag().map(unquote),
            }));
            token = page.next_continuation_token().map(str::to_string);
            if !page.is_truncated().unwrap_or(false) || token.is_none() {
                return Ok(found);
            }
        }
    }

    /// The first object under `prefix`, if any: one request, whatever the
    /// bucket holds (a readability probe).
    pub async fn first(&self, prefix: &str) -> Result<Option<ObjectInfo>, S3Error> {
        let page = self
            .run(prefix, "LIST", || async {
                self.client
                    .list_objects_v2()
                    .bucket(&self.name)
                    .prefix(prefix)
                    .max_keys(1)
                    .send()
                    .await
                    .map_err(|e| classify(e, &self.name, prefix))
            })
            .await?;
        Ok(page.contents().first().map(|o| ObjectInfo {
            key: o.key().unwrap_or_default().to_string(),
            size: o.size().unwrap_or(0).max(0) as u64,
            etag: o.e_tag().map(unquote),
        }))
    }

    /// Deletes `key`; deleting a missing object is not an error (S3 semantics).
    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        self.run(key, "DELETE", || async {
            self.client
                .delete_object()
                .bucket(&self.name)
                .key(key)
                .send()
                .await
                .map_err(|e| classify(e, &self.name, key))
        })
        .await?;
        Ok(())
    }

    /// A request without a large body, under the retry policy.
    async fn run<T, F, Fut>(&self, key: &str, what: &str, op: F) -> Result<T, S3Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.policy
            .run(&self.name, key, what, self.policy.attempt_timeout, op)
            .await
    }

    /// Time allowed for a request carrying `bytes` of payload.
    fn transfer_timeout(&self, bytes: u64) -> Duration {
        let rate = self.tuning.min_throughput.max(1);
        self.policy.attempt_timeout + Duration::from_secs(bytes.div_ceil(rate))
    }
}

/// Short, and free of the client's configuration (credentials included).
impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("name", &self.name)
            .field("tuning", &self.tuning)
            .finish()
    }
}

fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

fn md5_base64(data: &[u8]) -> String {
    use md5::Digest;
    aws_smithy_types::base64::encode(md5::Md5::digest(data))
}
