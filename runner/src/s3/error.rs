//! What can go wrong talking to S3, and which of it is worth retrying.

use std::io;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// Failures a caller must decide about. Every message is one line naming the
/// object (`s3://bucket/key`) at fault.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("bucket {bucket:?} does not exist (while accessing s3://{bucket}/{key})")]
    NoSuchBucket { bucket: String, key: String },
    #[error("s3://{bucket}/{key} does not exist")]
    NoSuchKey { bucket: String, key: String },
    #[error("access to s3://{bucket}/{key} denied ({code}): check the access key and secret")]
    AccessDenied {
        bucket: String,
        key: String,
        code: String,
    },
    #[error("s3://{bucket}/{key} unreachable after {attempts} attempts; last error: {cause}")]
    Unreachable {
        bucket: String,
        key: String,
        attempts: u32,
        cause: String,
    },
    #[error("s3://{bucket}/{key}: request rejected (HTTP {status} {code}): {message}")]
    Rejected {
        bucket: String,
        key: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("s3://{bucket}/{key} changed while it was being read (ETag {expected} became {found})")]
    Changed {
        bucket: String,
        key: String,
        expected: String,
        found: String,
    },
    #[error("{what}: expected {expected} bytes, found {found}")]
    SizeMismatch {
        what: String,
        expected: u64,
        found: u64,
    },
    #[error("s3://{bucket}/{key}: sha256 is {actual}, expected {expected}")]
    DigestMismatch {
        bucket: String,
        key: String,
        expected: String,
        actual: String,
    },
    #[error(
        "s3://{bucket}/{key}: the stream outgrew the upload plan ({max_parts} parts of {part_size} bytes); pass a larger size hint"
    )]
    TooManyParts {
        bucket: String,
        key: String,
        part_size: u64,
        max_parts: u32,
    },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("s3://{bucket}/{key}: cancelled")]
    Cancelled { bucket: String, key: String },
    #[error("cannot presign a URL for {key}: {detail}")]
    Presign { key: String, detail: String },
}

/// The outcome of one failed attempt: give up now, or try again.
#[derive(Debug)]
pub(crate) enum Failure {
    Fatal(S3Error),
    Transient(String),
}

impl From<S3Error> for Failure {
    fn from(e: S3Error) -> Self {
        Failure::Fatal(e)
    }
}

/// Sorts an SDK error. Everything that is not an answer from the service
/// (timeouts, refused or reset connections, a broken response) is transient.
pub(crate) fn classify<E>(err: SdkError<E, HttpResponse>, bucket: &str, key: &str) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or_default();
            let message = se.err().message().unwrap_or_default();
            let cause = format!("HTTP {status} {code} {message}")
                .trim_end()
                .to_string();
            from_status(status, code, message, bucket, key, cause)
        }
        _ => classify_transport(&err, bucket, key),
    }
}

/// Failures before any answer from the service.
fn classify_transport<E, R>(err: &SdkError<E, R>, bucket: &str, key: &str) -> Failure
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let cause = causes(err);
    match err {
        SdkError::ConstructionFailure(_) => Failure::Fatal(S3Error::Rejected {
            bucket: bucket.into(),
            key: key.into(),
            status: 0,
            code: "InvalidRequest".into(),
            message: cause,
        }),
        _ => Failure::Transient(cause),
    }
}

/// The error and its sources on one line ("dispatch failure: ...: Connection
/// refused"), without the SDK's Debug dump.
pub(crate) fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ").replace('\n', " ")
}

/// Sorts a service answer by HTTP status and S3 error code.
pub(crate) fn from_status(
    status: u16,
    code: &str,
    message: &str,
    bucket: &str,
    key: &str,
    cause: String,
) -> Failure {
    let (bucket, key) = (bucket.to_string(), key.to_string());
    match (status, code) {
        (_, "NoSuchBucket") => Failure::Fatal(S3Error::NoSuchBucket { bucket, key }),
        (_, "NoSuchKey") | (404, "") | (404, "NotFound") => {
            Failure::Fatal(S3Error::NoSuchKey { bucket, key })
        }
        (
            _,
            "AccessDenied"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "InvalidToken"
            | "ExpiredToken",
        )
        | (401 | 403, _) => Failure::Fatal(S3Error::AccessDenied {
            bucket,
            key,
            code: if code.is_empty() {
                format!("HTTP {status}")
            } else {
                code.into()
            },
        }),
        // The server will never do it, however often asked.
        (501, _) | (_, "NotImplemented") => Failure::Fatal(S3Error::Rejected {
            bucket,
            key,
            status,
            code: code.into(),
            message: if message.is_empty() {
                cause
            } else {
                message.into()
            },
        }),
        // BadDigest: the bytes were damaged on the way; sending them again is the cure.
        (
            _,
            "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable" | "BadDigest",
        )
        | (408 | 429 | 500..=599, _) => Failure::Transient(cause),
        _ => Failure::Fatal(S3Error::Rejected {
            bucket,
            key,
            status,
            code: code.into(),
            message: if message.is_empty() {
                cause
            } else {
                message.into()
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sort(status: u16, code: &str) -> Failure {
        from_status(status, code, "", "b", "k", "cause".into())
    }

    #[test]
    fn client_errors_are_typed_and_final() {
        assert!(matches!(
            sort(404, "NoSuchBucket"),
            Failure::Fatal(S3Error::NoSuchBucket { .. })
        ));
        assert!(matches!(
            sort(404, "NoSuchKey"),
            Failure::Fatal(S3Error::NoSuchKey { .. })
        ));
        assert!(matches!(
            sort(403, "SignatureDoesNotMatch"),
            Failure::Fatal(S3Error::AccessDenied { .. })
        ));
        assert!(matches!(
            sort(403, ""),
            Failure::Fatal(S3Error::AccessDenied { .. })
        ));
        assert!(matches!(
            sort(400, "InvalidArgument"),
            Failure::Fatal(S3Error::Rejected { status: 400, .. })
        ));
        assert!(matches!(
            sort(501, "NotImplemented"),
            Failure::Fatal(S3Error::Rejected { status: 501, .. })
        ));
    }

    #[test]
    fn overload_and_server_errors_are_retried() {
        for (status, code) in [
            (503, "SlowDown"),
            (500, "InternalError"),
            (429, ""),
            (502, ""),
            (400, "BadDigest"),
        ] {
            assert!(
                matches!(sort(status, code), Failure::Transient(_)),
                "{status} {code}"
            );
        }
    }

    #[test]
    fn messages_name_the_object_and_the_remedy() {
        let e = S3Error::AccessDenied {
            bucket: "b".into(),
            key: "k".into(),
            code: "InvalidAccessKeyId".into(),
        };
        let text = e.to_string();
        assert!(text.contains("s3://b/k") && text.contains("check the access key and secret"));
        assert!(!text.contains('\n'));
    }
}
