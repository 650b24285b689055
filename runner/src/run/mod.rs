//! The run: a state machine over [`Phase`]s with a checkpoint on disk and a
//! status in S3. Each phase is idempotent, so a runner restarted at any
//! moment (crash, `systemctl restart`, reboot) resumes at the first phase the
//! checkpoint does not record as done.

mod analysis;
mod canary;
pub mod checkpoint;
pub mod cost;
pub mod curve;
pub mod deadman;
mod guard;
mod instance;
mod logs;
pub mod page;
pub mod phase;
mod phases;
pub mod report;
mod scan;
mod session;
pub mod snapshot;
mod sonic;
pub mod status;
mod tell;
pub mod usage;
mod watch;
mod wipe;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Mutex, MutexGuard};

use crate::config::{CredentialSource, RunConfig};
use crate::s3::Bucket;
use crate::secret::Secret;
use crate::systemd;
use checkpoint::{Checkpoint, SnapshotRecord};
pub use phase::Phase;
pub use phases::{QUARANTINE_ARCHIVE, RESULT_ARCHIVE};
use report::Report;
use session::Session;
use status::Status;

/// Plex's library database, inside the `Databases` folder.
pub const LIBRARY_DB: &str = "com.plexapp.plugins.library.db";

/// Where a run keeps its files on the instance.
#[derive(Debug, Clone)]
pub struct WorkPaths {
    pub checkpoint: PathBuf,
    /// Plex's app-support folder (`.../Plex Media Server`).
    pub app_support: PathBuf,
    pub databases: PathBuf,
    pub backups: PathBuf,
    /// rclone's log and Plex's console output.
    pub logs: PathBuf,
}

impl WorkPaths {
    pub fn new(cfg: &RunConfig) -> Self {
        let app_support = cfg.plex_app_support_dir().to_path_buf();
        WorkPaths {
            checkpoint: cfg.work_dir().join("checkpoint.json"),
            databases: app_support.join("Plug-in Support").join("Databases"),
            app_support,
            backups: cfg.work_dir().join("backups"),
            logs: cfg.work_dir().join("logs"),
        }
    }

    pub fn library_db(&self) -> PathBuf {
        self.databases.join(LIBRARY_DB)
    }
}

/// What every phase gets.
pub struct RunContext {
    pub cfg: RunConfig,
    pub bucket: Bucket,
    pub paths: WorkPaths,
    /// The run's absolute deadline (counted from its first start).
    deadline: Instant,
    /// The mount and Plex, once a phase needed them.
    session: Mutex<Option<Session>>,
    status: Mutex<Status>,
    snapshot: std::sync::Mutex<Option<SnapshotRecord>>,
    /// The plex.tv account token, until the server is claimed (it is
    /// needed for nothing else: home removes the server from the account).
    plex_token: std::sync::Mutex<Option<Secret>>,
    /// `[[notify]]`'s targets (`tell.rs` says what goes there).
    notifier: std::sync::Arc<crate::notify::Notifier>,
    /// The report page's last upload (`page.rs` throttles).
    page: page::Published,
    /// A presigned GET of the report page, for the notifications.
    report_link: Option<String>,
}

impl RunContext {
    pub fn run_key(&self, name: &str) -> String {
        self.cfg.run_key(name)
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The open session, opened now if no phase did yet.
    async fn session(&self) -> Result<MutexGuard<'_, Option<Session>>> {
        let mut guard = self.session.lock().await;
        if guard.is_none() {
            self.describe("mounting the media and starting Plex".into())
                .await;
            *guard = Some(Session::open(self).await?);
        }
        Ok(guard)
    }

    /// Stops Plex and the mount if they run; the problems met, if any.
    async fn close_session(&self, forget: bool) -> Vec<String> {
        match self.session.lock().await.take() {
            Some(s) => s.close(forget).await,
            None => Vec::new(),
        }
    }

    /// Updates the status and publishes it.
    async fn update_status(&self, change: impl FnOnce(&mut Status)) {
        let snapshot = {
            let mut status = self.status.lock().await;
            change(&mut status);
            status.updated_at = status::now_rfc3339();
            status.clone()
        };
        publish_status(self, &snapshot).await;
    }

    /// Every secret value of the run still held.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = logs::secrets(&self.cfg, &self.paths);
        secrets.extend(self.plex_token().map(|t| t.expose().to_owned()));
        secrets
    }

    /// Says what the phase is doing, in `status.json` and to systemd.
    async fn describe(&self, detail: String) {
        systemd::notify(&format!("STATUS={detail}"));
        tracing::info!("{detail}");
        self.update_status(|s| s.describe(detail)).await;
    }

    fn set_snapshot(&self, record: SnapshotRecord) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(record);
    }

    fn last_snapshot(&self) -> Option<SnapshotRecord> {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn plex_token(&self) -> Option<Secret> {
        self.plex_token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The server is claimed: with `forget_token_after_claim`, the account
    /// token leaves memory and its file leaves the disk.
    fn claimed(&self) {
        let Some(claim) = &self.cfg.plex().claim else {
            return;
        };
        if !claim.forget_after_claim {
            return;
        }
        self.plex_token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let CredentialSource::File { path, .. } = &claim.source {
            match wipe::delete(path.as_path()) {
                Ok(true) => {
                    tracing::info!(file = %path, "the plex.tv token was used for the claim and deleted")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot delete the plex.tv token's file {path}: {e}"),
            }
        }
    }
}

/// Runs (or resumes) the whole job and returns its report.
pub async fn execute(mut cfg: RunConfig) -> Result<Report> {
    let plex_token = cfg.take_plex_token();
    let paths = WorkPaths::new(&cfg);
    std::fs::create_dir_all(cfg.work_dir())
        .with_context(|| format!("cannot create the work folder {}", cfg.work_dir().display()))?;
    let runner_log = paths.logs.join("runner.log");
    if let Err(e) = crate::logging::also_to_file(&runner_log) {
        tracing::warn!("cannot log to {}: {e}", runner_log.display());
    }
    let bucket = Bucket::new(&cfg.s3_connection(), cfg.s3_bucket(), Default::default());
    let run_id = cfg.run_id().to_string();
    let notifier = crate::notify::Notifier::new(cfg.notify().to_vec(), Default::default());
    let mut ctx = RunContext {
        notifier,
        cfg,
        bucket,
        paths,
        deadline: Instant::now(),
        session: Mutex::new(None),
        status: Mutex::new(Status::new(&run_id)),
        snapshot: std::sync::Mutex::new(None),
        plex_token: std::sync::Mutex::new(plex_token),
        page: Default::default(),
        report_link: None,
    };

    let mut ckpt = match Checkpoint::load(&ctx.paths.checkpoint)? {
        Some(c) if c.run_id != run_id => bail!(
            "the work folder {} holds run {:?}, not {run_id:?}: use another work_dir or remove it",
            ctx.cfg.work_dir().display(),
            c.run_id
        ),
        Some(c) => {
            if let Some(next) = c.next_phase() {
                tracing::info!(run = %run_id, resume_at = %next, "resuming from the checkpoint");
            }
            c
        }
        None => match snapshot::mirrored(&ctx).await {
            // Another instance of this run got this far: continue from its
            // last DB snapshot rather than from zero.
            Ok(Some(mut c)) if c.run_id == run_id && c.snapshot.is_some() => {
                c.adopt_for_replacement();
                tracing::info!(run = %run_id, snapshot = ?c.snapshot, "continuing from the snapshot another instance of this run left");
                c
            }
            Ok(_) => Checkpoint::new(&run_id),
            Err(e) => {
                tracing::warn!(
                    "cannot read a mirrored checkpoint ({e:#}): starting from the reference"
                );
                Checkpoint::new(&run_id)
            }
        },
    };
    if let Some(s) = &ckpt.snapshot {
        ctx.set_snapshot(s.clone());
    }

    // Ready as soon as the run is under way: systemd needs no more to wait
    // for. From here the watchdog wants to hear of progress.
    systemd::notify("READY=1");
    systemd::arm_watchdog(ctx.cfg.deadlines().watchdog);
    // The user data holds the run's secrets: once cloud-init has written
    // its files, neither the metadata service nor the disk keeps it.
    if let Err(e) = instance::forget_user_data(&ctx.cfg).await {
        tracing::error!("{e:#}");
        ctx.update_status(|s| s.warn(format!("{e:#}"))).await;
    }
    wipe::user_data_copies(&ctx.cfg.wipe().user_data_copies, &ctx.secrets());
    // The run's deadline counts from its first start, across restarts.
    let run_budget = ctx.cfg.run_deadline();
    let elapsed = Duration::from_secs(checkpoint::unix_now().saturating_sub(ckpt.started_unix));
    let deadline = Instant::now() + run_budget.saturating_sub(elapsed);
    ctx.deadline = deadline;
    ctx.report_link = page::link(&ctx).await;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;

    let outcome = run_phases(&ctx, &mut ckpt, &mut sigterm, &mut sigint).await;
    // Past the deadline every restart would fail at once: a failed run is
    // over, and so is the instance (unless kept for inspection). A canary
    // is over at its first failure: its verdict is wanted in minutes.
    let over = outcome.is_err() && (Instant::now() >= deadline || ctx.cfg.canary().is_some());
    // Whatever happened, Plex and the mount stop before the runner exits
    // (a restart resumes from the checkpoint); a run that is over signs
    // its server out of plex.tv first.
    ctx.close_session(over).await;
    if let Err(e) = outcome {
        if over {
            tell::failed(&ctx, &e);
        }
        logs::ship(&ctx).await;
        ctx.notifier.flush(tell::FLUSH).await;
        if over && instance::terminates(&ctx.cfg) && !instance::kept_on_failure(&ctx.cfg) {
            wipe::before_the_end(&ctx.cfg, &ctx.paths);
            instance::terminate_after_failure(&ctx.cfg).await;
        }
        return Err(e);
    }

    let report = Report::from_checkpoint(&ctx, &ckpt);
    ctx.update_status(|s| s.succeed(&ckpt, report.result_key.clone()))
        .await;
    systemd::notify(if report.quarantine.is_some() {
        "STATUS=quarantined"
    } else {
        "STATUS=done"
    });
    tell::finished(&ctx, &report, ckpt.started_unix);
    logs::ship(&ctx).await;
    ctx.notifier.flush(tell::FLUSH).await;
    // Billing stops here. The secrets leave the disk first (the root volume
    // outlives the instance); the terminate call holds them in memory and
    // tries until the API accepts (a runner restarted now could no longer
    // load its config: the dead-man would end the instance).
    if instance::terminates(&ctx.cfg) {
        wipe::before_the_end(&ctx.cfg, &ctx.paths);
    }
    instance::terminate_until_accepted(&ctx.cfg).await?;
    Ok(report)
}

async fn run_phases(
    ctx: &RunContext,
    ckpt: &mut Checkpoint,
    sigterm: &mut tokio::signal::unix::Signal,
    sigint: &mut tokio::signal::unix::Signal,
) -> Result<()> {
    let deadline = ctx.deadline;
    let run_budget = ctx.cfg.run_deadline();
    while let Some(phase) = ckpt.next_phase() {
        ctx.update_status(|s| s.enter(ckpt, phase)).await;
        systemd::notify(&format!("STATUS=phase {phase}"));
        systemd::beat();
        tracing::info!(%phase, "phase started");

        let started = Instant::now();
        // Each phase starts with what the ones before it freed handed back.
        usage::release_freed_memory();
        let meter = usage::Meter::start();
        let phase_deadline = match phase.budget(ctx.cfg.deadlines()) {
            Some(budget) => deadline.min(started + budget),
            None => deadline,
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout_at(phase_deadline.into(), phases::run(phase, ctx, ckpt)) => match r {
                Ok(r) => r,
                Err(_) if phase_deadline < deadline => Err(anyhow::anyhow!(
                    "phase {phase} ran out of its time budget ({})",
                    humantime::format_duration(phase_deadline - started)
                )),
                Err(_) => Err(anyhow::anyhow!(
                    "the run's deadline ({}) passed during phase {phase}",
                    humantime::format_duration(run_budget)
                )),
            },
            _ = sigterm.recv() => Err(anyhow::anyhow!("stopped by SIGTERM during phase {phase}; a restart resumes here")),
            _ = sigint.recv() => Err(anyhow::anyhow!("stopped by SIGINT during phase {phase}; a restart resumes here")),
        };
        match outcome {
            Ok(output) => {
                let seconds = round_secs(started.elapsed());
                let usage = meter.stop();
                tracing::info!(
                    %phase,
                    seconds,
                    cpu_seconds = usage.cpu_seconds,
                    peak_rss_mb = usage.peak_rss_mb,
                    "phase done"
                );
                match phase {
                    Phase::Boot => tell::started(ctx),
                    Phase::Scan => tell::scan_done(ctx, &output),
                    Phase::Sonic if output["outcome"] == "stalled" => tell::stalled(
                        ctx,
                        "Sonic analysis stalled: no track analysed for the stall limit",
                    ),
                    _ => {}
                }
                ckpt.complete(phase, seconds, Some(usage), output)?;
                ckpt.snapshot = ctx.last_snapshot();
                ckpt.save(&ctx.paths.checkpoint)?;
                systemd::beat();
                snapshot::mirror(ctx, ckpt).await;
            }
            Err(e) => {
                let e = e.context(format!("phase {phase} failed"));
                tracing::error!("{e:#}");
                ctx.update_status(|s| s.fail(&e)).await;
                systemd::notify(&format!("STATUS=failed in phase {phase}"));
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The status (and the report page, `page.rs`) is for humans watching
/// from home: a failure to write it is logged, never fatal (the phase that
/// needs S3 will fail on its own).
async fn publish_status(ctx: &RunContext, status: &Status) {
    let key = ctx.run_key("status.json");
    // Past the run's deadline the dead-man may have ended the run (a frozen
    // runner wakes to the shutdown's SIGTERM): its verdict stands.
    if Instant::now() >= ctx.deadline && ended_by_dead_man(ctx, &key).await {
        tracing::warn!(
            "the dead-man has ended this run: status.json keeps its verdict, not this update"
        );
        return;
    }
    if let Err(e) = ctx
        .bucket
        .put_bytes(&key, status.to_json().into(), "application/json")
        .await
    {
        tracing::warn!("cannot update s3://{}/{key}: {e}", ctx.bucket.name());
        // The page would meet the same S3: no second round of retries.
        return;
    }
    page::publish(ctx, status).await;
}

/// Whether the run's status.json holds the dead-man's verdict (unreadable:
/// no, the update goes).
async fn ended_by_dead_man(ctx: &RunContext, key: &str) -> bool {
    match ctx.bucket.get_bytes(key).await {
        Ok(bytes) => {
            serde_json::from_slice::<Status>(&bytes).is_ok_and(|s| deadman::is_verdict(&s))
        }
        Err(_) => false,
    }
}

fn round_secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
