//! Per-run API keys. Each run has an IAM application of its own
//! (`plex-burst-run-<id>`, made at launch, deleted by `fetch` or `sweep`)
//! whose key can manage instances and read and write objects of the
//! project (narrowed to the run's share of plex-burst's bucket by a
//! bucket statement naming that application: `bucket_policy.rs`), and a
//! key of the shared read-only application `plex-burst-media-read` for
//! the media bucket. Both keys expire after the run's deadline. No IAM,
//! no billing, no bucket settings: a leaked key is worth little, and not
//! for long.
//!
//! Permission sets, from Scaleway's "Amazon S3 and IAM permissions
//! equivalence" page: ObjectStorageObjectsRead (GetObject, HeadObject,
//! ListObjects, ListParts, ListMultipartUploads), ObjectStorageObjectsWrite
//! (PutObject, multipart), ObjectStorageObjectsDelete (AbortMultipartUpload,
//! DeleteObject), ObjectStorageBucketsRead (HeadBucket, GetBucketLocation).
//! A bucket policy only narrows: what it allows must be allowed by IAM too.

use std::time::SystemTime;

use anyhow::{Context, Result};
use runner::scaleway::{ApiKey, Client};

use crate::config::BootstrapConfig;

/// The application every run shared before runs had their own: its keys
/// are still listed (and swept).
const SHARED_RUNS_APPLICATION: &str = "plex-burst-runs";
const RUN_APPLICATION: &str = "plex-burst-run-";
const MEDIA_APPLICATION: &str = "plex-burst-media-read";

/// What a run does with its key: read the reference and write its results
/// (Object Storage; aborting a failed multipart upload is a delete),
/// terminate its own instance (Instances: nothing narrower exists; IAM
/// rules are scoped to projects, not to a resource).
const RUN_PERMISSION_SETS: [&str; 4] = [
    "InstancesFullAccess",
    "ObjectStorageObjectsRead",
    "ObjectStorageObjectsWrite",
    "ObjectStorageObjectsDelete",
];
/// The media bucket: list and read.
const MEDIA_PERMISSION_SETS: [&str; 2] = ["ObjectStorageObjectsRead", "ObjectStorageBucketsRead"];

/// A run's two keys (with their secrets) and its application.
pub struct RunKeys {
    pub run: ApiKey,
    pub media: ApiKey,
    pub application_id: String,
}

fn description(run_id: &str) -> String {
    format!("plex-burst run {run_id}")
}

/// The run id a key was made for, from its description.
pub fn key_run_id(key: &ApiKey) -> Option<&str> {
    key.description.strip_prefix("plex-burst run ")
}

/// The application named `name` with a policy of `sets` on the project,
/// made when missing (a policy missing from an interrupted setup too).
async fn application(
    cfg: &BootstrapConfig,
    client: &Client,
    name: &str,
    what: &str,
    sets: &[&str],
) -> Result<String> {
    let org = &cfg.scaleway.organization_id;
    let app = match client.find_application(name, org).await? {
        Some(app) => app,
        None => client
            .create_application(name, org, what, &[crate::runs::TAG])
            .await
            .with_context(|| {
                format!("cannot create the IAM application {name} (the API key needs IAMManager)")
            })?,
    };
    if client.find_policy(&app.id, org).await?.is_none() {
        client
            .create_policy(
                name,
                org,
                &app.id,
                sets,
                &[cfg.scaleway.project_id.as_str()],
            )
            .await
            .with_context(|| format!("cannot create the IAM policy of {name}"))?;
    }
    Ok(app.id)
}

/// The run's application and keys, valid until `expires`.
pub async fn create_run_keys(
    cfg: &BootstrapConfig,
    client: &Client,
    run_id: &str,
    expires: SystemTime,
) -> Result<RunKeys> {
    let run_app = application(
        cfg,
        client,
        &format!("{RUN_APPLICATION}{run_id}"),
        "plex-burst: the key of one run",
        &RUN_PERMISSION_SETS,
    )
    .await?;
    let media_app = application(
        cfg,
        client,
        MEDIA_APPLICATION,
        "plex-burst: runs read the media bucket with its keys",
        &MEDIA_PERMISSION_SETS,
    )
    .await?;
    let project = &cfg.scaleway.project_id;
    let run = client
        .create_api_key(&run_app, expires, project, &description(run_id))
        .await
        .context("cannot create the run's API key")?;
    let media = client
        .create_api_key(&media_app, expires, project, &description(run_id))
        .await
        .context("cannot create the run's media key")?;
    Ok(RunKeys {
        run,
        media,
        application_id: run_app,
    })
}

/// The media-read application's id, if it exists.
pub async fn media_application(cfg: &BootstrapConfig, client: &Client) -> Result<Option<String>> {
    let org = &cfg.scaleway.organization_id;
    Ok(client
        .find_application(MEDIA_APPLICATION, org)
        .await?
        .map(|a| a.id))
}

/// Every key made for runs (without secrets): per-run applications', the
/// media application's and the old shared application's.
pub async fn run_keys(cfg: &BootstrapConfig, client: &Client) -> Result<Vec<ApiKey>> {
    let org = &cfg.scaleway.organization_id;
    let mut apps = client.applications_named(RUN_APPLICATION, org).await?;
    for name in [MEDIA_APPLICATION, SHARED_RUNS_APPLICATION] {
        apps.extend(client.find_application(name, org).await?);
    }
    let mut keys = Vec::new();
    for app in apps {
        keys.extend(client.list_api_keys(&app.id).await?);
    }
    Ok(keys)
}

/// Deletes the keys made for `run_id` and the run's application.
pub async fn delete_run_keys(cfg: &BootstrapConfig, client: &Client, run_id: &str) -> Result<()> {
    for key in run_keys(cfg, client).await? {
        if key_run_id(&key) == Some(run_id) {
            client
                .delete_api_key(&key.access_key)
                .await
                .with_context(|| format!("cannot delete an API key of run {run_id}"))?;
        }
    }
    let name = format!("{RUN_APPLICATION}{run_id}");
    if let Some(app) = client
        .find_application(&name, &cfg.scaleway.organization_id)
        .await?
    {
        if let Some(policy) = client
            .find_policy(&app.id, &cfg.scaleway.organization_id)
            .await?
        {
            client.delete_policy(&policy.id).await?;
        }
        client
            .delete_application(&app.id)
            .await
            .with_context(|| format!("cannot delete the IAM application of run {run_id}"))?;
    }
    Ok(())
}

/// Bootstrap's own principal for bucket policies (`user_id:<id>` or
/// `application_id:<id>`), from its S3 key, which is an IAM API key.
pub async fn own_principal(cfg: &BootstrapConfig, client: &Client) -> Result<String> {
    let access = cfg.s3_connection().access_key;
    let key = client
        .get_api_key(&access)
        .await
        .context("cannot look up bootstrap's own S3 key in IAM")?
        .with_context(|| {
            format!("[s3]'s access key {access} is not an API key of this organization: bucket policies need its owner")
        })?;
    match (&key.user_id, &key.application_id) {
        (Some(user), _) => Ok(crate::bucket_policy::principal("user_id", user)),
        (None, Some(app)) => Ok(crate::bucket_policy::principal("application_id", app)),
        (None, None) => anyhow::bail!("IAM names no owner of [s3]'s access key {access}"),
    }
}
