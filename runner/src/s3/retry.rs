//! The one retry policy of the S3 engine: exponential backoff with jitter,
//! a bounded number of attempts, every wait cancellable.
//!
//! The SDK's own retries are disabled (see `Bucket::new`): they cannot see a
//! body that breaks mid-stream, so a second policy underneath would only
//! multiply attempts and hide causes.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Tuning;
use super::error::{Failure, S3Error};

#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    pub attempt_timeout: Duration,
    pub cancel: CancellationToken,
}

impl Policy {
    pub fn new(tuning: &Tuning, cancel: CancellationToken) -> Self {
        Policy {
            max_attempts: tuning.max_attempts.max(1),
            base_backoff: tuning.base_backoff,
            max_backoff: tuning.max_backoff,
            attempt_timeout: tuning.attempt_timeout,
            cancel,
        }
    }

    /// Wait before attempt `failed + 1`: "equal jitter", half fixed and half
    /// random, so a burst of clients spreads out yet never retries at once.
    pub fn backoff(&self, failed: u32) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(1u32 << failed.saturating_sub(1).min(20));
        let cap = exp.min(self.max_backoff);
        let half = cap / 2;
        half + half.mul_f64(rand::random_range(0.0..=1.0))
    }

    /// Sleeps unless cancelled first.
    pub async fn pause(&self, failed: u32, bucket: &str, key: &str) -> Result<(), S3Error> {
        tokio::select! {
            _ = self.cancel.cancelled() => Err(cancelled(bucket, key)),
            _ = tokio::time::sleep(self.backoff(failed)) => Ok(()),
        }
    }

    /// Runs `op` until it succeeds, fails for good, or runs out of attempts.
    /// Each attempt is bounded by `timeout`.
    pub async fn run<T, F, Fut>(
        &self,
        bucket: &str,
        key: &str,
        what: &str,
        timeout: Duration,
        mut op: F,
    ) -> Result<T, S3Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut failed = 0;
        loop {
            let outcome = tokio::select! {
                _ = self.cancel.cancelled() => return Err(cancelled(bucket, key)),
                r = tokio::time::timeout(timeout, op()) => r,
            };
            let cause = match outcome {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(Failure::Fatal(e))) => return Err(e),
                Ok(Err(Failure::Transient(cause))) => cause,
                Err(_) => format!("no answer within {}", humantime::format_duration(timeout)),
            };
            failed += 1;
            if failed >= self.max_attempts {
                return Err(S3Error::Unreachable {
                    bucket: bucket.into(),
                    key: key.into(),
                    attempts: failed,
                    cause,
                });
            }
            tracing::warn!(
                bucket,
                key,
                attempt = failed,
                "{what} failed, retrying: {cause}"
            );
            self.pause(failed, bucket, key).await?;
        }
    }
}

pub(crate) fn cancelled(bucket: &str, key: &str) -> S3Error {
    S3Error::Cancelled {
        bucket: bucket.into(),
        key: key.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let tuning = Tuning {
            max_attempts: 3,
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            ..Tuning::default()
        };
        Policy::new(&tuning, CancellationToken::new())
    }

    #[test]
    fn backoff_grows_and_stays_under_the_cap() {
        let p = Policy {
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            ..policy()
        };
        for failed in 1..40 {
            let cap = (Duration::from_millis(100) * 2u32.pow((failed - 1).min(20)))
                .min(Duration::from_secs(2));
            let wait = p.backoff(failed);
            assert!(
                wait >= cap / 2 && wait <= cap,
                "attempt {failed}: {wait:?} outside [{:?}, {cap:?}]",
                cap / 2
            );
        }
    }

    #[tokio::test]
    async fn transient_failures_exhaust_into_unreachable_with_the_cause() {
        let mut calls = 0;
        let err = policy()
            .run("b", "k", "GET", Duration::from_secs(5), || {
                calls += 1;
                async { Err::<(), _>(Failure::Transient("HTTP 503 SlowDown".into())) }
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 3);
        assert!(
            matches!(&err, S3Error::Unreachable { attempts: 3, cause, .. } if cause.contains("SlowDown"))
        );
    }

    #[tokio::test]
    async fn fatal_failures_are_not_retried() {
        let mut calls = 0;
        let err = policy()
            .run("b", "k", "GET", Duration::from_secs(5), || {
                calls += 1;
                async {
                    Err::<(), _>(Failure::Fatal(S3Error::NoSuchKey {
                        bucket: "b".into(),
                        key: "k".into(),
                    }))
                }
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 1);
        assert!(matches!(err, S3Error::NoSuchKey { .. }));
    }

    #[tokio::test]
    async fn a_cancelled_token_stops_the_wait() {
        let p = Policy {
            base_backoff: Duration::from_secs(3600),
            max_backoff: Duration::from_secs(3600),
            ..policy()
        };
        p.cancel.cancel();
        let err = p.pause(1, "b", "k").await.unwrap_err();
        assert!(matches!(err, S3Error::Cancelled { .. }));
    }
}
