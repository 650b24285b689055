//! The media mount and Plex, together: what the scan, analysis and Sonic
//! phases work through. Opened by the first phase that needs it (again
//! after a restart: neither survives the runner), closed by the stop phase
//! or when the run ends in any other way.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio_util::sync::CancellationToken;

use super::RunContext;
use crate::config::RunConfig;
use crate::mount::{Health, Mount, MountSpec, ProbeLimits, ProbeTargets, Quorum, RemountPolicy};
use crate::plex::plextv::PlexTv;
use crate::plex::process::Launch;
use crate::plex::server::{StartOptions, retry};
use crate::plex::{PlexError, PlexServer, api::PlexApi, prefs};
use crate::plexdb;

/// How many times Plex may be restarted after a crash within one runner
/// process before the run gives up on it.
const MAX_PLEX_RESTARTS: u32 = 3;
/// Attempts of one API call while Plex answers 5xx or is restarting.
pub const API_ATTEMPTS: u32 = 6;

pub struct Session {
    mount: Mount,
    targets: ProbeTargets,
    limits: ProbeLimits,
    plex: PlexServer,
    launch: Launch,
    plextv: Option<PlexTv>,
    pinned_version: String,
    ready_within: Duration,
    plex_startup: Duration,
    work: prefs::Work,
    restarts: u32,
    last_probe: Instant,
    health_interval: Duration,
    cancel: CancellationToken,
    /// The probe that let Plex start: how many sampled DB files the bucket
    /// no longer has (lessons.md 7).
    preflight: Health,
}

impl Session {
    /// Mounts the media, proves the mount healthy, then starts Plex with the
    /// run's prefs. Nothing of Plex starts on a mount that fails its probe.
    pub async fn open(ctx: &RunContext) -> Result<Session> {
        let cfg = &ctx.cfg;
        let launch = Launch::from_config(cfg, &ctx.paths.logs);
        let db = ctx.paths.library_db();
        let mount_point = cfg.media_mount_point().to_path_buf();
        let samples = cfg.media().anchor_samples as usize;
        // A scratch run has no DB yet: the probe can only list.
        let anchors = if db.exists() {
            tokio::task::spawn_blocking(move || plexdb::anchors::sample(&db, samples, &mount_point))
                .await??
        } else {
            Vec::new()
        };
        if anchors.is_empty() {
            tracing::warn!(
                "the DB names no media file under the mount: the health probe can only list"
            );
        }
        // Three in four anchors must read: files renamed in the bucket since
        // the reference are missing legitimately (lessons.md 7), while a
        // degraded mount fails every read.
        let quorum = Quorum::AtLeast((anchors.len() * 3).div_ceil(4).max(1));
        let targets = ProbeTargets {
            anchors,
            dirs: Vec::new(),
        };
        let timeout = cfg.media().probe_timeout;
        let limits = ProbeLimits {
            list_timeout: timeout,
            read_timeout: timeout,
            quorum,
            ..ProbeLimits::default()
        };

        let spec = mount_spec(cfg, &launch, &ctx.paths.logs);
        let cancel = CancellationToken::new();
        let mut mount = Mount::start(spec, &cancel)
            .await
            .context("cannot mount the media bucket")?;
        let health = mount.probe(&targets, &limits).await;
        if !health.is_healthy() {
            let _ = mount.stop().await;
            bail!(
                "the media mount is not healthy, Plex was not started: {}",
                health.summary()
            );
        }
        tracing::info!("media mount healthy: {}", health.summary());

        give_to_plex_user(&ctx.paths.app_support, launch.uid, launch.gid)?;
        let plextv = match ctx.plex_token() {
            Some(token) => Some(PlexTv::new(&cfg.plex().plextv_url, token)?),
            None => None,
        };
        let pinned_version = cfg.plex_version().to_string();
        let ready_within = cfg.deadlines().plex_ready;
        let plex_startup = cfg.deadlines().plex_startup;
        let times = (ready_within, plex_startup);
        let plex = match start_plex(&launch, &pinned_version, times, plextv.as_ref()).await {
            Ok(p) => p,
            Err(e) => {
                let _ = mount.stop().await;
                return Err(e);
            }
        };
        let plextv = if cfg.plex().claim.is_some() {
            ctx.update_status(|s| s.plex_server = Some(plex.machine_identifier().to_owned()))
                .await;
            if plex.is_claimed() {
                // The account token has done its one job.
                ctx.claimed();
                ctx.plex_token().and(plextv)
            } else {
                let mut plex = plex;
                let _ = plex.stop().await;
                let _ = mount.stop().await;
                bail!(
                    "Plex is not claimed and the plex.tv token is gone (an earlier attempt used it and deleted it, plex.forget_token_after_claim): launch the run again"
                );
            }
        } else {
            plextv
        };
        let mut session = Session {
            mount,
            targets,
            limits,
            plex,
            launch,
            plextv,
            pinned_version,
            ready_within,
            plex_startup,
            work: prefs::Work::Scan,
            restarts: 0,
            last_probe: Instant::now(),
            health_interval: cfg.media().health_interval,
            cancel,
            preflight: health,
        };
        if let Err(e) = session.set_work(prefs::Work::Scan).await {
            session.close(false).await;
            return Err(e);
        }
        Ok(session)
    }

    pub fn api(&self) -> &PlexApi {
        self.plex.api()
    }

    /// Sampled DB files missing from the bucket when the session opened.
    pub fn preflight(&self) -> serde_json::Value {
        let missing = self
            .preflight
            .problems
            .iter()
            .filter(|p| p.kind == crate::mount::ProblemKind::Missing)
            .count();
        serde_json::json!({
            "anchors_read": self.preflight.anchors_read,
            "anchors_total": self.preflight.anchors_total,
            "missing": missing,
        })
    }

    /// What Plex is doing, surviving 5xx bursts.
    pub async fn busy(&self) -> Result<crate::plex::idle::Busy, PlexError> {
        call("poll Plex", || self.plex.busy()).await
    }

    /// Sets Plex's prefs for the kind of work the phase does.
    pub async fn set_work(&mut self, work: prefs::Work) -> Result<()> {
        let settings = retry("read Plex prefs", API_ATTEMPTS, || self.api().prefs()).await?;
        let wanted = prefs::wanted(work, &settings, &self.plex.allowed_networks())?;
        self.plex.apply_prefs(&wanted).await?;
        self.work = work;
        Ok(())
    }

    /// Restarts Plex if it died (bounded): `Ok(true)` when it did, so the
    /// caller can start its work again.
    pub async fn revive_plex(&mut self) -> Result<bool> {
        let Some(reason) = self.plex.exited().await else {
            return Ok(false);
        };
        self.restarts += 1;
        if self.restarts > MAX_PLEX_RESTARTS {
            bail!(
                "Plex died again ({reason}) after {MAX_PLEX_RESTARTS} restarts\n--- Plex logs ---\n{}",
                self.plex.log_tail()
            );
        }
        tracing::warn!(
            restart = self.restarts,
            "{reason}: restarting Plex\n{}",
            self.plex.log_tail()
        );
        self.plex = start_plex(
            &self.launch,
            &self.pinned_version,
            (self.ready_within, self.plex_startup),
            self.plextv.as_ref(),
        )
        .await?;
        self.set_work(self.work).await?;
        Ok(true)
    }

    /// The health check between and during Plex's work (lessons.md 1, 3, 4):
    /// due every `health_interval` (or now with `force`). A failed probe
    /// pauses Plex's work, remounts, and probes again; `Ok(true)` means a
    /// remount happened and interrupted work must be started again.
    pub async fn check_mount(&mut self, force: bool) -> Result<bool> {
        if !force && self.last_probe.elapsed() < self.health_interval {
            return Ok(false);
        }
        self.last_probe = Instant::now();
        let health = self.mount.probe(&self.targets, &self.limits).await;
        if health.is_healthy() {
            tracing::debug!("media mount healthy: {}", health.summary());
            return Ok(false);
        }
        tracing::error!(
            "media mount unhealthy: {}; pausing Plex and remounting",
            health.summary()
        );
        self.pause_plex().await;
        match self.remount().await {
            Ok(h) => {
                tracing::info!("remounted: {}", h.summary());
                Ok(true)
            }
            Err(e) => Err(e.context(format!(
                "the media mount failed ({}) and could not be remounted",
                health.summary()
            ))),
        }
    }

    async fn remount(&mut self) -> Result<Health> {
        let policy = RemountPolicy::default();
        Ok(self
            .mount
            .remount(&self.targets, &self.limits, &policy, &self.cancel)
            .await?)
    }

    /// Stops whatever Plex is doing (scans, Butler tasks), best effort.
    pub async fn pause_plex(&self) {
        if let Ok(sections) = self.api().sections().await {
            for s in sections.iter().filter(|s| s.refreshing.0) {
                if let Err(e) = self.api().cancel_refresh(s.key.as_str()).await {
                    tracing::warn!("{e}");
                }
            }
        }
        if let Err(e) = self.api().stop_butler().await {
            tracing::warn!("{e}");
        }
    }

    /// Ends the session: signs the server out of plex.tv (with
    /// `sign_out`; home removes it from the account's devices), stops
    /// Plex, unmounts. Every step runs; failures are logged.
    pub async fn close(mut self, sign_out: bool) -> Vec<String> {
        let mut problems = Vec::new();
        if sign_out
            && self.plex.is_claimed()
            && let Err(e) = self.plex.sign_out().await
        {
            problems.push(format!("cannot sign the server out of plex.tv: {e:#}"));
        }
        if let Err(e) = self.plex.stop().await {
            problems.push(format!("{e:#}"));
        }
        self.cancel.cancel();
        if let Err(e) = self.mount.stop().await {
            problems.push(format!("cannot unmount the media: {e}"));
        }
        for p in &problems {
            tracing::warn!("{p}");
        }
        problems
    }
}

async fn start_plex(
    launch: &Launch,
    pinned_version: &str,
    (ready_within, startup_retry): (Duration, Duration),
    plextv: Option<&PlexTv>,
) -> Result<PlexServer> {
    PlexServer::start(
        launch.clone(),
        StartOptions {
            pinned_version,
            ready_within,
            startup_retry,
            plextv,
        },
    )
    .await
}

fn mount_spec(cfg: &RunConfig, launch: &Launch, logs: &std::path::Path) -> MountSpec {
    let spec = MountSpec::from_config(
        cfg,
        launch.uid,
        launch.gid,
        cfg.work_dir(),
        logs.join("rclone.log"),
    );
    // Tests and the demo point at their pinned rclone.
    match std::env::var_os("PLEX_BURST_RCLONE") {
        Some(rclone) => spec.with_rclone(PathBuf::from(rclone)),
        None => spec,
    }
}

/// The extracted DB belongs to the runner's user; Plex must own it.
fn give_to_plex_user(app_support: &std::path::Path, uid: u32, gid: u32) -> Result<()> {
    let me = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    if (uid, gid) == me {
        return Ok(());
    }
    std::fs::create_dir_all(app_support)
        .with_context(|| format!("cannot create {}", app_support.display()))?;
    chown_tree(app_support, uid, gid)
}

fn chown_tree(path: &std::path::Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("cannot give {} to uid {uid}", path.display()))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// A Plex API call that survives 5xx bursts and restarts.
pub async fn call<T, F, Fut>(what: &str, f: F) -> Result<T, PlexError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PlexError>>,
{
    retry(what, API_ATTEMPTS, f).await
}
