//! Presigned URLs: a machine without credentials (the image builder) reads
//! or writes one object, for a limited time, with plain HTTP.

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;

use super::Bucket;
use super::error::S3Error;

impl Bucket {
    /// A URL that GETs `key` until `valid_for` has passed.
    pub async fn presign_get(&self, key: &str, valid_for: Duration) -> Result<String, S3Error> {
        let request = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .presigned(presigning(key, valid_for)?)
            .await
            .map_err(|e| presign_failed(key, e))?;
        Ok(request.uri().to_string())
    }

    /// A URL that PUTs `key` (any content type) until `valid_for` has passed.
    pub async fn presign_put(&self, key: &str, valid_for: Duration) -> Result<String, S3Error> {
        let request = self
            .client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .presigned(presigning(key, valid_for)?)
            .await
            .map_err(|e| presign_failed(key, e))?;
        Ok(request.uri().to_string())
    }
}

fn presigning(key: &str, valid_for: Duration) -> Result<PresigningConfig, S3Error> {
    PresigningConfig::expires_in(valid_for).map_err(|e| S3Error::Presign {
        key: key.into(),
        detail: e.to_string(),
    })
}

fn presign_failed(key: &str, e: impl std::error::Error + 'static) -> S3Error {
    S3Error::Presign {
        key: key.into(),
        detail: super::error::causes(&e),
    }
}
