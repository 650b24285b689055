//! What a run is given and taken back: its keys (`iam.rs`) and its
//! statements in the buckets' policies (`bucket_policy.rs`).

use std::time::SystemTime;

use anyhow::{Context, Result};
use runner::s3::Bucket;
use runner::scaleway::Client;

use crate::bucket_policy;
use crate::config::BootstrapConfig;
use crate::iam::{self, RunKeys};

/// The run's keys, and its statements in plex-burst's bucket policy
/// (and in the media bucket's, when that bucket has a policy: one is never
/// put on it, it would shut out whoever else reads it).
pub async fn grant(
    cfg: &BootstrapConfig,
    client: &Client,
    bucket: &Bucket,
    run_id: &str,
    expires: SystemTime,
) -> Result<RunKeys> {
    let keys = iam::create_run_keys(cfg, client, run_id, expires).await?;
    let home = iam::own_principal(cfg, client).await?;
    let added = bucket_policy::run_statements(
        bucket.name(),
        cfg.reference_prefix(),
        cfg.runs_prefix(),
        run_id,
        &keys.application_id,
    );
    put_merged(bucket, &home, &added).await?;

    let media = media_bucket(cfg);
    if media
        .get_policy()
        .await
        .context("the media bucket")?
        .is_some()
    {
        let media_app = keys.media.application_id.clone().unwrap_or_default();
        put_merged(
            &media,
            &home,
            &[bucket_policy::media_statement(media.name(), &media_app)],
        )
        .await?;
    } else {
        println!(
            "note: the media bucket {} has no bucket policy: the run's key, which writes results to this project, could write it too (README: Credentials a run holds)",
            media.name()
        );
    }
    Ok(keys)
}

async fn put_merged(bucket: &Bucket, home: &str, added: &[serde_json::Value]) -> Result<()> {
    let current = bucket.get_policy().await?;
    let merged = bucket_policy::merge(bucket.name(), current.as_deref(), home, added)?;
    bucket
        .put_policy(&merged)
        .await
        .with_context(|| format!("cannot set the policy of bucket {}", bucket.name()))
}

/// Deletes the run's keys and application and its bucket statements.
pub async fn revoke(
    cfg: &BootstrapConfig,
    client: &Client,
    bucket: &Bucket,
    run_id: &str,
) -> Result<()> {
    iam::delete_run_keys(cfg, client, run_id).await?;
    let current = bucket.get_policy().await?;
    if let Some(text) = bucket_policy::without_run(bucket.name(), current.as_deref(), run_id)? {
        bucket.put_policy(&text).await.with_context(|| {
            format!(
                "cannot remove run {run_id}'s statements from bucket {}",
                bucket.name()
            )
        })?;
    }
    Ok(())
}

/// The runs that still have statements in plex-burst's bucket policy.
pub async fn runs_with_statements(bucket: &Bucket) -> Result<Vec<String>> {
    let current = bucket.get_policy().await?;
    bucket_policy::runs_in(bucket.name(), current.as_deref())
}

/// The media bucket, as bootstrap reaches it.
fn media_bucket(cfg: &BootstrapConfig) -> Bucket {
    let media = cfg.run_settings().media();
    Bucket::new(
        &media.connection.to_engine(),
        media.remote.bucket.to_string(),
        runner::s3::Tuning::default(),
    )
}
