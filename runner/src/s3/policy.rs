//! The bucket policy (`?policy`): one JSON document per bucket, read and
//! replaced whole (S3 has no partial update).

use super::{Bucket, S3Error, classify};

/// How a bucket policy's operations are named in errors (`s3://bucket/?policy`).
const WHAT: &str = "?policy";

impl Bucket {
    /// The bucket's policy, `None` when it has none (`NoSuchBucketPolicy`).
    pub async fn get_policy(&self) -> Result<Option<String>, S3Error> {
        let got = self
            .run(WHAT, "GET", || async {
                self.client
                    .get_bucket_policy()
                    .bucket(&self.name)
                    .send()
                    .await
                    .map_err(|e| classify(e, &self.name, WHAT))
            })
            .await;
        match got {
            Ok(out) => Ok(out.policy().map(str::to_string)),
            Err(S3Error::NoSuchKey { .. }) => Ok(None),
            Err(S3Error::Rejected { code, .. }) if code == "NoSuchBucketPolicy" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the bucket's policy with `policy` (a JSON document).
    pub async fn put_policy(&self, policy: &str) -> Result<(), S3Error> {
        self.run(WHAT, "PUT", || async {
            self.client
                .put_bucket_policy()
                .bucket(&self.name)
                .policy(policy)
                .send()
                .await
                .map_err(|e| classify(e, &self.name, WHAT))
        })
        .await?;
        Ok(())
    }

    /// Removes the bucket's policy: IAM alone decides again.
    pub async fn delete_policy(&self) -> Result<(), S3Error> {
        self.run(WHAT, "DELETE", || async {
            self.client
                .delete_bucket_policy()
                .bucket(&self.name)
                .send()
                .await
                .map_err(|e| classify(e, &self.name, WHAT))
        })
        .await?;
        Ok(())
    }
}
