//! Per-run API keys: one IAM application and policy for all runs (made
//! once), one key per run that expires after the run's deadline and is
//! deleted by `fetch`. The key can manage instances and objects of the
//! project and nothing else (no IAM, no billing): a leaked key is worth
//! little, and not for long.

use std::time::SystemTime;

use anyhow::{Context, Result};
use runner::scaleway::{ApiKey, Client};

use crate::config::BootstrapConfig;

const APPLICATION: &str = "plex-burst-runs";
/// What a runner does with the key: read the reference and write its
/// results (Object Storage), terminate its own instance (Instances).
const PERMISSION_SETS: [&str; 5] = [
    "InstancesFullAccess",
    "ObjectStorageObjectsRead",
    "ObjectStorageObjectsWrite",
    "ObjectStorageObjectsDelete",
    "ObjectStorageBucketsRead",
];

fn description(run_id: &str) -> String {
    format!("plex-burst run {run_id}")
}

/// The run id a key was made for, from its description.
pub fn key_run_id(key: &ApiKey) -> Option<&str> {
    key.description.strip_prefix("plex-burst run ")
}

/// The application runs' keys belong to, and its policy, made on first
/// use (a policy missing from an earlier, interrupted setup is made too).
async fn application(cfg: &BootstrapConfig, client: &Client) -> Result<String> {
    let org = &cfg.scaleway.organization_id;
    let app = match client.find_application(APPLICATION, org).await? {
        Some(app) => app,
        None => client
            .create_application(
                APPLICATION,
                org,
                "plex-burst: one API key per run, scoped to the runs' project",
                &[crate::runs::TAG],
            )
            .await
            .context(
                "cannot create the IAM application for run keys (the API key needs IAMManager)",
            )?,
    };
    if client.find_policy(&app.id).await?.is_none() {
        client
            .create_policy(
                APPLICATION,
                org,
                &app.id,
                &PERMISSION_SETS,
                &[cfg.scaleway.project_id.as_str()],
            )
            .await
            .context("cannot create the IAM policy for run keys")?;
    }
    Ok(app.id)
}

/// A new key for `run_id`, valid until `expires`.
pub async fn create_run_key(
    cfg: &BootstrapConfig,
    client: &Client,
    run_id: &str,
    expires: SystemTime,
) -> Result<ApiKey> {
    let app = application(cfg, client).await?;
    client
        .create_api_key(
            &app,
            expires,
            &cfg.scaleway.project_id,
            &description(run_id),
        )
        .await
        .context("cannot create the run's API key")
}

/// Every key made for runs (without secrets).
pub async fn run_keys(cfg: &BootstrapConfig, client: &Client) -> Result<Vec<ApiKey>> {
    match client
        .find_application(APPLICATION, &cfg.scaleway.organization_id)
        .await?
    {
        Some(app) => Ok(client.list_api_keys(&app.id).await?),
        None => Ok(Vec::new()),
    }
}

/// Deletes the keys made for `run_id`.
pub async fn delete_run_keys(cfg: &BootstrapConfig, client: &Client, run_id: &str) -> Result<()> {
    for key in run_keys(cfg, client).await? {
        if key_run_id(&key) == Some(run_id) {
            client
                .delete_api_key(&key.access_key)
                .await
                .with_context(|| format!("cannot delete the API key of run {run_id}"))?;
        }
    }
    Ok(())
}
