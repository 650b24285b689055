//! The run: a state machine over [`Phase`]s with a checkpoint on disk and a
//! status in S3. Each phase is idempotent, so a runner restarted at any
//! moment (crash, `systemctl restart`, reboot) resumes at the first phase the
//! checkpoint does not record as done.

pub mod checkpoint;
mod guard;
pub mod phase;
mod phases;
pub mod report;
pub mod status;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::RunConfig;
use crate::s3::Bucket;
use checkpoint::Checkpoint;
pub use phase::Phase;
use report::Report;
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
}

impl WorkPaths {
    pub fn new(cfg: &RunConfig) -> Self {
        let app_support = cfg.plex_app_support_dir().to_path_buf();
        WorkPaths {
            checkpoint: cfg.work_dir().join("checkpoint.json"),
            databases: app_support.join("Plug-in Support").join("Databases"),
            app_support,
            backups: cfg.work_dir().join("backups"),
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
}

impl RunContext {
    pub fn run_key(&self, name: &str) -> String {
        self.cfg.run_key(name)
    }
}

/// Runs (or resumes) the whole job and returns its report.
pub async fn execute(cfg: RunConfig) -> Result<Report> {
    let paths = WorkPaths::new(&cfg);
    std::fs::create_dir_all(cfg.work_dir())
        .with_context(|| format!("cannot create the work folder {}", cfg.work_dir().display()))?;
    let bucket = Bucket::new(&cfg.s3_connection(), cfg.s3_bucket(), Default::default());
    let ctx = RunContext { cfg, bucket, paths };

    let run_id = ctx.cfg.run_id().to_string();
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
        None => Checkpoint::new(&run_id),
    };

    let mut status = Status::new(&run_id);
    // Ready as soon as the run is under way: systemd needs no more to wait for.
    notify_systemd("READY=1");
    // The run's deadline counts from its first start, across restarts.
    let run_budget = ctx.cfg.run_deadline();
    let elapsed = Duration::from_secs(checkpoint::unix_now().saturating_sub(ckpt.started_unix));
    let deadline = Instant::now() + run_budget.saturating_sub(elapsed);
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;

    while let Some(phase) = ckpt.next_phase() {
        status.enter(&ckpt, phase);
        publish_status(&ctx, &status).await;
        notify_systemd(&format!("STATUS=phase {phase}"));
        tracing::info!(%phase, "phase started");

        let started = Instant::now();
        let phase_deadline = match phase.budget(ctx.cfg.deadlines()) {
            Some(budget) => deadline.min(started + budget),
            None => deadline,
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout_at(phase_deadline.into(), phases::run(phase, &ctx, &ckpt)) => match r {
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
                tracing::info!(%phase, seconds, "phase done");
                ckpt.complete(phase, seconds, output)?;
                ckpt.save(&ctx.paths.checkpoint)?;
            }
            Err(e) => {
                let e = e.context(format!("phase {phase} failed"));
                tracing::error!("{e:#}");
                status.fail(&e);
                publish_status(&ctx, &status).await;
                notify_systemd(&format!("STATUS=failed in phase {phase}"));
                return Err(e);
            }
        }
    }

    let report = Report::from_checkpoint(&ctx, &ckpt);
    status.succeed(&ckpt, report.result_key.clone());
    publish_status(&ctx, &status).await;
    notify_systemd("STATUS=done");
    Ok(report)
}

/// The status is for humans watching from home: a failure to write it is
/// logged, never fatal (the phase that needs S3 will fail on its own).
async fn publish_status(ctx: &RunContext, status: &Status) {
    let key = ctx.run_key("status.json");
    if let Err(e) = ctx
        .bucket
        .put_bytes(&key, status.to_json().into(), "application/json")
        .await
    {
        tracing::warn!("cannot update s3://{}/{key}: {e}", ctx.bucket.name());
    }
}

/// Tells systemd (`Type=notify`) how the run is going; a no-op elsewhere.
fn notify_systemd(state: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Custom(state)]);
    }
}

fn round_secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
