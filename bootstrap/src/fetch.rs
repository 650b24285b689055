//! `bootstrap fetch [RUN] [--wait]`: the finished DB comes home. The result
//! is downloaded and verified while the home Plex keeps running (digests of
//! the archive and of every file); a quarantined or unverified result is
//! never installed. The install itself (stop, backup, watch-state merge,
//! remap, integrity, swap, start, verify, rollback) is `home::install`.
//! Then the cloud is cleaned: server, root volume and security group if
//! left, the run's API key, and the checkpoints when asked. What is deleted
//! comes from the launch record kept at home (`records.rs`), each resource
//! checked first (`guard.rs`).

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use runner::notify::{Event, EventKind};
use runner::plexdb::PathMapping;
use runner::plexdb::stats::Stats;
use runner::run::status::RunState;
use runner::s3::Bucket;
use runner::scaleway::Client;

use crate::canary::{self, HomeChecks};
use crate::cloud;
use crate::config::BootstrapConfig;
use crate::cost::{self, Actual};
use crate::grants;
use crate::guard::{self, Owner};
use crate::home;
use crate::plex_account;
use crate::progress;
use crate::runs::{self, LaunchRecord, LaunchState, Outcome};
use crate::status::RunView;

pub struct FetchOptions {
    pub wait: bool,
    pub dry_run: bool,
    pub delete_checkpoints: bool,
    /// Act on the bucket's launch record of a run this machine did not
    /// launch (no home copy); each deletion is still checked.
    pub trust_bucket_record: bool,
}

/// Where a download lands before the swap: beside `Databases`, on the same
/// filesystem, so the swap is a rename.
const INCOMING: &str = "Databases.plex-burst-incoming";

/// The `DONE` marker the runner writes last.
#[derive(Debug, Deserialize)]
struct Done {
    archive_key: String,
    manifest_key: String,
    archive_sha256: String,
}

pub async fn fetch(cfg: &BootstrapConfig, run: Option<&str>, opts: &FetchOptions) -> Result<()> {
    let client = cloud::client(cfg)?;
    let bucket = cloud::bucket(cfg);
    let run_id = match run {
        Some(id) => id.to_owned(),
        None => latest(cfg, &bucket, false).await?.run_id,
    };
    let record = runs::trusted(cfg, &bucket, &run_id, opts.trust_bucket_record).await?;
    let run_id = record.run_id.clone();
    if record.canary.is_some() {
        bail!(
            "run {run_id} is a canary: its result is never installed; `bootstrap fetch --canary {run_id}` judges it"
        );
    }
    if record.state == LaunchState::Fetched && !opts.dry_run {
        bail!("run {run_id} was already fetched and installed");
    }
    if opts.wait {
        wait_finished(cfg, &bucket, &run_id).await?;
    }
    let Downloaded {
        plan,
        plex,
        incoming,
        stats,
    } = download(cfg, &bucket, &record).await?;
    if opts.dry_run {
        let preview = tokio::task::spawn_blocking({
            let plan = plan.clone();
            move || home::install::plan_install(&plan)
        })
        .await??;
        println!("{preview}");
        remove_stale(&incoming)?;
        println!("dry run: the home DB was not touched");
        return Ok(());
    }
    let report = tokio::task::spawn_blocking(move || home::install::install(&plan, &plex))
        .await
        .context("the install thread panicked")?;
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            let _ = remove_stale(&incoming);
            return Err(anyhow::anyhow!(e).context(format!("run {run_id} was not installed")));
        }
    };
    println!("{report}");
    crate::notify::tell(
        cfg,
        Event::new(
            EventKind::Installed,
            Some(&run_id),
            "installed at home",
            format!(
                "The run's result is installed in the home Plex; the previous DB is kept in {}.",
                report.backup.display()
            ),
        )
        .details(serde_json::json!({ "backup": report.backup })),
    )
    .await;

    // Installed: a second fetch must not install it again, whatever the
    // cleanup below does. The root volume goes with the cleanup: its
    // billing ends now.
    let mut record = record;
    record.state = LaunchState::Fetched;
    let status = runs::status(cfg, &bucket, &run_id).await.ok().flatten();
    let actual = Actual::of(&record, status.as_ref(), stats.as_ref(), SystemTime::now());
    println!("{}", cost::compared(&actual, record.estimate.as_ref()));
    record.actual = Some(actual);
    record.save(cfg, &bucket).await?;
    clean_cloud(cfg, &client, &bucket, &record, opts.delete_checkpoints)
        .await
        .with_context(|| {
            format!("run {run_id} is installed, but cleaning the cloud failed: `bootstrap sweep` lists what is left")
        })?;
    println!("run {run_id} installed; the cloud side is cleaned up");
    Ok(())
}

/// `fetch --canary`: the canary's result checked at home in a scratch
/// copy (never installed), the cloud cleaned, the verdict printed and
/// recorded. Fails when the canary did.
pub async fn fetch_canary(cfg: &BootstrapConfig, run: Option<&str>, wait: bool) -> Result<()> {
    let client = cloud::client(cfg)?;
    let bucket = cloud::bucket(cfg);
    let run_id = match run {
        Some(id) => id.to_owned(),
        None => latest(cfg, &bucket, true).await?.run_id,
    };
    let mut record = runs::trusted(cfg, &bucket, &run_id, false).await?;
    if record.canary.is_none() {
        bail!("run {run_id} is not a canary: `bootstrap fetch {run_id}` installs its result");
    }
    if wait {
        wait_finished(cfg, &bucket, &run_id).await?;
    }
    let failed = runs::status(cfg, &bucket, &run_id)
        .await?
        .is_some_and(|s| s.state == RunState::Failed);
    let home = match runs::outcome(cfg, &bucket, &run_id).await? {
        Outcome::Done => Some(match rehearse(cfg, &bucket, &record).await {
            Ok(line) => HomeChecks::Passed(line),
            Err(e) => HomeChecks::Failed(format!("{e:#}")),
        }),
        Outcome::Pending if !failed => bail!(
            "canary {run_id} has not finished: wait with `bootstrap fetch --canary {run_id} --wait`"
        ),
        _ => None,
    };
    // Judged before the cleanup: whether the instance ended itself is
    // part of the verdict (a failed run ships its logs and ends just after
    // its status says so).
    wait_server_gone(cfg, &client, &record).await?;
    let view = RunView::load(cfg, &client, &bucket, record.clone()).await?;
    let verdict = canary::judge_now(cfg, &client, &bucket, &view, home.as_ref()).await?;
    clean_cloud(cfg, &client, &bucket, &record, false)
        .await
        .with_context(|| {
            format!(
                "canary {run_id}: cleaning the cloud failed: `bootstrap sweep` lists what is left"
            )
        })?;
    println!("{}", verdict.lines.join("\n"));
    let passed = verdict.passed;
    record.canary = Some(canary::CanaryRecord {
        verdict: Some(verdict),
    });
    record.state = LaunchState::Fetched;
    record.save(cfg, &bucket).await?;
    if !passed {
        bail!("canary {run_id} failed: the line marked FAILED says where and what to change");
    }
    println!("canary {run_id} passed; the cloud side is cleaned up");
    Ok(())
}

/// The canary's result downloaded into a scratch copy and checked there.
async fn rehearse(cfg: &BootstrapConfig, bucket: &Bucket, record: &LaunchRecord) -> Result<String> {
    let Downloaded { plan, incoming, .. } = download(cfg, bucket, record).await?;
    let checked = tokio::task::spawn_blocking(move || home::rehearse::rehearse(&plan))
        .await
        .context("the home checks panicked")?;
    remove_stale(&incoming)?;
    checked.map_err(anyhow::Error::msg)
}

/// A verified result beside the home `Databases`, and the plan to install it.
struct Downloaded {
    plan: home::install::InstallPlan,
    plex: home::HomePlex,
    incoming: std::path::PathBuf,
    /// The manifest's statistics (before, after, Sonic's outcome).
    stats: Option<serde_json::Value>,
}

async fn download(
    cfg: &BootstrapConfig,
    bucket: &Bucket,
    record: &LaunchRecord,
) -> Result<Downloaded> {
    let run_id = &record.run_id;
    let done = finished_result(cfg, bucket, run_id).await?;
    let manifest = runner::transfer::fetch_manifest(bucket, &done.manifest_key).await?;
    if manifest.archive.sha256 != done.archive_sha256 {
        bail!(
            "run {run_id}: the manifest's archive digest ({}) is not the one DONE records ({}): the result is not installed",
            manifest.archive.sha256,
            done.archive_sha256
        );
    }
    let expected: Stats = manifest
        .stats
        .as_ref()
        .and_then(|s| serde_json::from_value(s["after"].clone()).ok())
        .context("the result's manifest has no statistics to verify the install against")?;

    let layout = home::layout_of(&cfg.home);
    let databases = layout.databases_dir();
    let incoming = databases
        .parent()
        .context("the Databases folder has no parent")?
        .join(INCOMING);
    remove_stale(&incoming)?;
    let plex = home::plex_of(&cfg.home, &layout);
    check_versions(&plex, manifest.plex_version.as_deref())?;

    println!(
        "downloading run {run_id}'s result ({:.1} MB) into {}",
        manifest.archive.size as f64 / 1e6,
        incoming.display()
    );
    runner::transfer::pull_with_progress(
        bucket,
        &done.archive_key,
        &incoming,
        Some(manifest.clone()),
        progress::bytes(manifest.archive.size, "download"),
    )
    .await
    .context("the result could not be downloaded and verified; the home DB was not touched")?;
    println!(
        "verified: archive sha256 and {} files",
        manifest.files.len()
    );

    let plan = home::install::InstallPlan {
        databases_dir: databases.clone(),
        incoming_dir: incoming.clone(),
        snapshot_time: record.snapshot_time.unwrap_or(0),
        mappings: home_mappings(cfg)?,
        expected,
        keep_backups: cfg.home.keep_backups,
        free_space_margin: cfg.home.free_space_margin,
        plex_timeout: cfg.home.plex_timeout,
        // Plex's own SQLite checks the FTS tables too.
        plex_sqlite: plex.control.plex_sqlite(),
    };
    Ok(Downloaded {
        plan,
        plex,
        incoming,
        stats: manifest.stats,
    })
}

/// Plex migrates its DB forward only (lessons.md 24): a result made by a
/// newer Plex than home's would not open at home.
fn check_versions(plex: &home::HomePlex, result: Option<&str>) -> Result<()> {
    let Some(result) = result else {
        return Ok(());
    };
    let home = match plex.version() {
        Ok(v) => v,
        Err(e) => {
            println!(
                "the home Plex does not answer ({e}): its version is checked after the install starts it"
            );
            return Ok(());
        }
    };
    if version_numbers(result) > version_numbers(&home) {
        bail!(
            "the result was made by Plex {result} but home runs {home}: a DB migrated past what home can open is never installed (upgrade the home Plex first)"
        );
    }
    Ok(())
}

/// `1.41.3.9314-a0bfb8370` → `[1, 41, 3, 9314]`, for ordering.
fn version_numbers(version: &str) -> Vec<u64> {
    version
        .split('-')
        .next()
        .unwrap_or("")
        .split('.')
        .map(|n| n.parse().unwrap_or(0))
        .collect()
}

/// The most recent launched run (a canary or not) not yet fetched.
async fn latest(cfg: &BootstrapConfig, bucket: &Bucket, canary: bool) -> Result<LaunchRecord> {
    runs::all(cfg, bucket)
        .await?
        .into_iter()
        .rev()
        .find(|r| r.state == LaunchState::Launched && r.canary.is_some() == canary)
        .context("no launched run waiting to be fetched (name one: `bootstrap fetch RUN`)")
}

/// How long a finished run's server is given to end itself.
const SELF_END: Duration = Duration::from_secs(5 * 60);

/// Waits (bounded) until the run's server is gone.
async fn wait_server_gone(
    cfg: &BootstrapConfig,
    client: &Client,
    record: &LaunchRecord,
) -> Result<()> {
    let Some(id) = &record.server_id else {
        return Ok(());
    };
    let until = std::time::Instant::now() + SELF_END;
    while client.get_server(&cfg.scaleway.zone, id).await?.is_some()
        && std::time::Instant::now() < until
    {
        tokio::time::sleep(cloud::poll_interval()).await;
    }
    Ok(())
}

/// Polls until the run has a result or has failed.
async fn wait_finished(cfg: &BootstrapConfig, bucket: &Bucket, run_id: &str) -> Result<()> {
    let every = Duration::from_millis(
        std::env::var("PLEX_BURST_POLL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60_000),
    );
    let mut last = String::new();
    loop {
        if runs::outcome(cfg, bucket, run_id).await? != Outcome::Pending {
            return Ok(());
        }
        if let Some(status) = runs::status(cfg, bucket, run_id).await? {
            if status.state == RunState::Failed {
                return Ok(()); // reported by finished_result
            }
            let line = format!(
                "run {run_id}: {} {}",
                status.phase.map(|p| p.to_string()).unwrap_or_default(),
                status.detail.unwrap_or_default()
            );
            if line != last {
                println!("{line}");
                last = line;
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// The `DONE` marker, or why there is nothing to install.
async fn finished_result(cfg: &BootstrapConfig, bucket: &Bucket, run_id: &str) -> Result<Done> {
    match runs::outcome(cfg, bucket, run_id).await? {
        Outcome::Done => {}
        Outcome::Quarantined => {
            let why = runs::status(cfg, bucket, run_id)
                .await?
                .and_then(|s| s.quarantine)
                .unwrap_or_else(|| "a library lost items".into());
            bail!(
                "run {run_id} is quarantined ({why}): its DB is never installed; it stays in s3://{}/{} for inspection",
                bucket.name(),
                cfg.run_key(run_id, "quarantine/")
            );
        }
        Outcome::Pending => {
            let status = runs::status(cfg, bucket, run_id).await?;
            match status {
                Some(s) if s.state == RunState::Failed => bail!(
                    "run {run_id} failed in phase {}: {}",
                    s.phase.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                    s.last_error.unwrap_or_else(|| "no error recorded".into())
                ),
                Some(s) => bail!(
                    "run {run_id} has not finished (phase {}): wait with `bootstrap fetch {run_id} --wait`",
                    s.phase.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
                ),
                None => bail!("run {run_id} has not started writing its status yet: try `--wait`"),
            }
        }
    }
    let key = cfg.run_key(run_id, "DONE");
    let bytes = bucket.get_bytes(&key).await?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("s3://{}/{key} is unreadable", bucket.name()))
}

/// The run's path mappings reversed: instance paths back to home paths.
fn home_mappings(cfg: &BootstrapConfig) -> Result<Vec<PathMapping>> {
    cfg.run_settings()
        .path_mappings()
        .iter()
        .map(|m| PathMapping::new(&m.to, &m.from).context("a path mapping cannot be reversed"))
        .collect()
}

/// After the install: nothing of the run stays billed.
async fn clean_cloud(
    cfg: &BootstrapConfig,
    client: &Client,
    bucket: &Bucket,
    record: &LaunchRecord,
    delete_checkpoints: bool,
) -> Result<()> {
    let owner = Owner::Run(&record.run_id);
    if let Some(id) = &record.server_id
        && guard::destroy_server(cfg, client, id, owner).await?
    {
        println!("the run's server {id} was still there: deleted it");
    }
    if let Some(volume) = &record.root_volume_id
        && guard::delete_volume(cfg, client, volume, owner, record.kept_at_home).await?
    {
        println!("deleted the run's root volume {volume}");
    }
    // Only once the server is gone: a group in use cannot be deleted.
    if let Some(group) = &record.security_group_id
        && guard::delete_security_group(cfg, client, group, owner).await?
    {
        println!("deleted the run's security group {group}");
    }
    grants::revoke(cfg, client, bucket, &record.run_id).await?;
    let status = runs::status(cfg, bucket, &record.run_id).await?;
    for line in plex_account::forget_run_server(cfg, record, status.as_ref()).await? {
        println!("{line}");
    }
    if delete_checkpoints {
        for object in bucket
            .list(&cfg.run_key(&record.run_id, "checkpoint/"))
            .await?
        {
            bucket.delete(&object.key).await?;
        }
        println!("deleted the run's checkpoints");
    }
    Ok(())
}

/// A download left by an earlier, interrupted fetch.
fn remove_stale(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::version_numbers;

    #[test]
    fn versions_order_by_their_numbers_not_their_text() {
        assert!(version_numbers("1.41.10.1-abc") > version_numbers("1.41.9.9999-def"));
        assert!(version_numbers("1.41.3.9314-a0bfb8370") == version_numbers("1.41.3.9314-ffff"));
        assert!(version_numbers("1.40.0.1-a") < version_numbers("1.41.0.0-a"));
    }
}
