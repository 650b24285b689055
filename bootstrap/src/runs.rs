//! A run as bootstrap knows it: `runs/<run-id>/launch.json` in the bucket,
//! written at each step of a launch (so an interrupted launch can be found
//! and cleaned up) and read by `status`, `fetch` and `sweep`. No secret
//! goes in it: the API key is recorded by its access key id only. Every
//! write also keeps a copy at home (`records.rs`), and what is deleted is
//! decided by that copy ([`trusted`]).

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use runner::run::status::Status;
use runner::s3::Bucket;

use crate::config::BootstrapConfig;
use crate::records;

/// Every resource plex-burst creates carries this tag; a run's resources
/// also carry [`run_tag`].
pub const TAG: &str = "plex-burst";

pub fn run_tag(run_id: &str) -> String {
    format!("plex-burst-run={run_id}")
}

/// Where a launch got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaunchState {
    /// Resources are being created; a launch that stopped here left them
    /// behind and the next launch cleans them up.
    Creating,
    /// The server was powered on: the run is the runner's now.
    Launched,
    /// An interrupted launch whose resources were deleted.
    Abandoned,
    /// The result was installed at home and the cloud cleaned.
    Fetched,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchRecord {
    pub run_id: String,
    pub state: LaunchState,
    pub zone: String,
    pub project_id: String,
    pub commercial_type: String,
    /// EUR per hour of the server, from the API's catalogue at launch.
    pub hourly_price: Option<f64>,
    pub root_volume_gb: u64,
    pub image_id: Option<String>,
    pub server_id: Option<String>,
    pub root_volume_id: Option<String>,
    /// The per-run API key's access key id (never its secret).
    pub api_key: Option<String>,
    /// The run's own security group (inbound drop).
    #[serde(default)]
    pub security_group_id: Option<String>,
    /// RFC 3339.
    pub launched_at: String,
    /// When the run must have ended (launch + the run's deadline).
    pub deadline: String,
    /// The snapshot the run started from (unix seconds), for the
    /// watch-state merge at fetch.
    pub snapshot_time: Option<i64>,
    pub reference_key: Option<String>,
    pub plex_version: String,
    pub bootstrap_version: String,
    /// The image recipe, reference and config the run was launched with,
    /// hashed (`canary::fingerprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// What the run was expected to cost, at launch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<crate::estimate::Estimate>,
    /// What it cost, recorded by `fetch` once the cloud side is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<crate::cost::Actual>,
    /// Set for a canary (`launch --canary`), with its verdict once judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<crate::canary::CanaryRecord>,
    /// Whether this record is the copy kept at home (set by [`trusted`]),
    /// not one only the bucket had.
    #[serde(skip)]
    pub kept_at_home: bool,
}

impl LaunchRecord {
    pub fn key(cfg: &BootstrapConfig, run_id: &str) -> String {
        cfg.run_key(run_id, "launch.json")
    }

    pub async fn save(&self, cfg: &BootstrapConfig, bucket: &Bucket) -> Result<()> {
        records::save(cfg, self)?;
        let key = Self::key(cfg, &self.run_id);
        let body = runner::mask::values_in_record(&serde_json::to_vec_pretty(self)?);
        bucket
            .put_bytes(&key, body.into(), "application/json")
            .await
            .with_context(|| format!("cannot record the launch in s3://{}/{key}", bucket.name()))
    }

    pub async fn load(
        cfg: &BootstrapConfig,
        bucket: &Bucket,
        run_id: &str,
    ) -> Result<LaunchRecord> {
        let key = Self::key(cfg, run_id);
        let bytes = bucket.get_bytes(&key).await.with_context(|| {
            format!(
                "no launch record for run {run_id:?} (s3://{}/{key})",
                bucket.name()
            )
        })?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("s3://{}/{key} is unreadable", bucket.name()))
    }

    pub fn deadline_time(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.deadline).ok()
    }

    pub fn launched_time(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.launched_at).ok()
    }

    /// Hours billed between launch and `until`.
    pub fn hours_until(&self, until: SystemTime) -> f64 {
        self.launched_time()
            .and_then(|t| until.duration_since(t).ok())
            .map_or(0.0, |d| d.as_secs_f64() / 3600.0)
    }
}

/// Every run with a launch record, oldest first.
pub async fn all(cfg: &BootstrapConfig, bucket: &Bucket) -> Result<Vec<LaunchRecord>> {
    let objects = bucket
        .list(cfg.runs_prefix())
        .await
        .context("cannot list the runs")?;
    let mut runs = Vec::new();
    for object in objects.iter().filter(|o| o.key.ends_with("/launch.json")) {
        let run_id = object.key[cfg.runs_prefix().len()..]
            .trim_end_matches("/launch.json")
            .to_owned();
        if run_id.contains('/') {
            continue;
        }
        // One damaged record must not hide the others (and their costs).
        match LaunchRecord::load(cfg, bucket, &run_id).await {
            Ok(record) => runs.push(record),
            Err(e) => eprintln!(
                "{}",
                runner::mask::text(&format!("warning: run {run_id} is skipped: {e:#}"))
            ),
        }
    }
    runs.sort_by(|a, b| a.launched_at.cmp(&b.launched_at));
    Ok(runs)
}

/// The record deletions of `run_id` act on: the copy kept at home, once
/// the bucket's copy agrees with it on every id. A run with no home copy
/// (launched from another machine) is refused unless `trust_bucket`; its
/// deletions are still checked against each resource (`guard.rs`).
pub async fn trusted(
    cfg: &BootstrapConfig,
    bucket: &Bucket,
    run_id: &str,
    trust_bucket: bool,
) -> Result<LaunchRecord> {
    let key = LaunchRecord::key(cfg, run_id);
    let in_bucket = match bucket.head(&key).await? {
        Some(_) => Some(LaunchRecord::load(cfg, bucket, run_id).await?),
        None => None,
    };
    match (records::load(cfg, run_id)?, in_bucket) {
        (Some(mut home), in_bucket) => {
            if let Some((what, b, h)) = in_bucket
                .as_ref()
                .and_then(|b| records::disagreement(b, &home))
            {
                bail!("{}", records::refusal(&key, what, &b, &h));
            }
            home.kept_at_home = true;
            Ok(home)
        }
        (None, Some(record)) if trust_bucket => Ok(record),
        (None, Some(_)) => bail!(
            "run {run_id} has no launch record kept at home (launched from another machine?): `--trust-bucket-record` acts on the bucket's copy, each deletion still checked against the resource"
        ),
        (None, None) => bail!(
            "no launch record for run {run_id:?} (s3://{}/{key})",
            bucket.name()
        ),
    }
}

/// Every run sweep and a launch's clean-up may act on, oldest first: the
/// home copy where there is one (a bucket copy that disagrees with it is
/// reported and ignored), else the bucket's, whose ids are then only used
/// through checks of the resources themselves.
pub async fn all_for_deleting(cfg: &BootstrapConfig, bucket: &Bucket) -> Result<Vec<LaunchRecord>> {
    let mut by_id: std::collections::BTreeMap<String, LaunchRecord> = all(cfg, bucket)
        .await?
        .into_iter()
        .map(|r| (r.run_id.clone(), r))
        .collect();
    for run_id in records::run_ids(cfg)? {
        let Some(mut home) = records::load(cfg, &run_id)? else {
            continue;
        };
        if let Some((what, b, h)) = by_id
            .get(&run_id)
            .and_then(|b| records::disagreement(b, &home))
        {
            let key = LaunchRecord::key(cfg, &run_id);
            eprintln!(
                "warning: {key} in the bucket names {what} {b}, the record kept at home names {h}: only the home copy is used; the bucket copy may have been rewritten by the run"
            );
        }
        home.kept_at_home = true;
        by_id.insert(run_id, home);
    }
    let mut runs: Vec<LaunchRecord> = by_id.into_values().collect();
    runs.sort_by(|a, b| a.launched_at.cmp(&b.launched_at));
    Ok(runs)
}

/// The run's `status.json`, if the runner wrote one.
pub async fn status(
    cfg: &BootstrapConfig,
    bucket: &Bucket,
    run_id: &str,
) -> Result<Option<Status>> {
    run_json(cfg, bucket, run_id, "status.json").await
}

/// The run's checkpoint as the runner mirrored it (phases done, their
/// times and outputs), if it wrote one.
pub async fn checkpoint(
    cfg: &BootstrapConfig,
    bucket: &Bucket,
    run_id: &str,
) -> Result<Option<runner::run::checkpoint::Checkpoint>> {
    let name = runner::run::snapshot::MIRRORED_CHECKPOINT;
    run_json(cfg, bucket, run_id, name).await
}

/// `runs/<run_id>/<name>` parsed, if the run wrote it.
async fn run_json<T: serde::de::DeserializeOwned>(
    cfg: &BootstrapConfig,
    bucket: &Bucket,
    run_id: &str,
    name: &str,
) -> Result<Option<T>> {
    let key = cfg.run_key(run_id, name);
    if bucket.head(&key).await?.is_none() {
        return Ok(None);
    }
    let bytes = bucket.get_bytes(&key).await?;
    Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
        format!("s3://{}/{key} is unreadable", bucket.name())
    })?))
}

/// What the run left in S3 when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `DONE`: a verified result to install.
    Done,
    /// `QUARANTINED`: a result that lost items; never installed.
    Quarantined,
    /// Neither (yet).
    Pending,
}

pub async fn outcome(cfg: &BootstrapConfig, bucket: &Bucket, run_id: &str) -> Result<Outcome> {
    if bucket
        .head(&cfg.run_key(run_id, "QUARANTINED"))
        .await?
        .is_some()
    {
        return Ok(Outcome::Quarantined);
    }
    if bucket.head(&cfg.run_key(run_id, "DONE")).await?.is_some() {
        return Ok(Outcome::Done);
    }
    Ok(Outcome::Pending)
}

/// A run id for a launch now: `YYYY-MM-DD-HHMM` (UTC), with a suffix when
/// that minute already has a run, in the bucket or in this machine's
/// records (which outlive a bucket, and may hold another bucket's runs).
pub async fn new_run_id(cfg: &BootstrapConfig, bucket: &Bucket) -> Result<String> {
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    // 2026-11-24T01:02:03Z → 2026-11-24-0102
    let base = format!("{}-{}{}", &now[..10], &now[11..13], &now[14..16]);
    for n in 1..100 {
        let id = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        if !records::exists(cfg, &id)? && bucket.list(&cfg.run_key(&id, "")).await?.is_empty() {
            return Ok(id);
        }
    }
    anyhow::bail!("no free run id for {base}")
}

/// RFC 3339, seconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `d` as "3h 12m".
pub fn short_duration(d: Duration) -> String {
    let minutes = d.as_secs() / 60;
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h {m}m"),
    }
}
