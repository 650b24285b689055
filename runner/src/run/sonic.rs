//! The Sonic phase (lessons.md 12, 13): Plex Pass checked, stabilisation,
//! then `MusicAnalysis` without force (the optional metadata refresh is
//! `phases.refresh_metadata`, in the scan phase). Sonic is started the way
//! Plex has: `MusicAnalysisBehavior` (no `ButlerTask*` pref governs it) and
//! `POST /butler/MusicAnalysis`. Progress is
//! counted in the DB; rate and ETA go to `status.json`, each count to the
//! report page's curve (`curve.rs`); a consistent DB
//! snapshot goes to S3 every `snapshot_interval`. The phase ends when every
//! track is analysed, at its deadline, or when progress stalls: what was
//! analysed is kept in every case. A canary ends it after its
//! `sonic_tracks`, and fails without Plex Pass (a real run skips Sonic).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::RunContext;
use super::checkpoint::Checkpoint;
use super::curve::Curve;
use super::scan::db_stats;
use super::session::{Session, call};
use super::snapshot;
use super::status::SonicStatus;
use super::watch::{Progress, Watch};
use crate::plex::prefs;

const TASK: &str = "MusicAnalysis";
/// The rate is measured over this much recent time.
const RATE_WINDOW: Duration = Duration::from_secs(30 * 60);

pub(super) async fn run(ctx: &RunContext, ckpt: &Checkpoint) -> Result<Value> {
    if !ctx.cfg.phases().sonic {
        return Ok(json!({ "skipped": "phases.sonic = false" }));
    }
    if let Some(reason) = ckpt.quarantine() {
        return Ok(json!({ "skipped": format!("the run is quarantined ({reason})") }));
    }
    if ctx.cfg.plex().claim.is_none() {
        return Ok(json!({
            "skipped": "Sonic needs a server claimed with a Plex Pass account: set plex.claim = true"
        }));
    }
    let (analysed, tracks) = music_progress(ctx).await?;
    if tracks == 0 || analysed >= tracks {
        return Ok(
            json!({ "outcome": "done", "analysed_before": analysed, "analysed": analysed, "tracks": tracks }),
        );
    }
    let mut guard = ctx.session().await?;
    let session = guard.as_mut().context("no Plex session")?;
    let account = call("read the Plex account", || session.api().account()).await?;
    if !account.subscription_active.0 {
        let no_pass = format!(
            "the Plex account {:?} has no active Plex Pass (subscription state {:?})",
            account.username, account.subscription_state
        );
        if ctx.cfg.canary().is_some() {
            anyhow::bail!("Sonic cannot run: {no_pass}");
        }
        let line = format!("Sonic skipped: {no_pass}");
        tracing::warn!("{line}");
        return Ok(json!({ "skipped": line, "analysed": analysed, "tracks": tracks }));
    }

    let started = Instant::now();
    // Sonic stops in time for the rest of the run to finish.
    let end = ctx.deadline().min(started + ctx.cfg.deadlines().sonic);
    let end = end
        .checked_sub(ctx.cfg.deadlines().upload)
        .filter(|e| *e > started)
        .unwrap_or(end);

    stabilise(ctx, session).await?;
    session.set_work(prefs::Work::Sonic).await?;
    call("start Sonic analysis", || {
        session.api().start_butler_task(TASK)
    })
    .await?;
    tracing::info!(analysed, tracks, "Sonic analysis started");
    // The rate counts from here: settling took time that analysed nothing.
    let sonic_started = Instant::now();
    let analysed_before = analysed;
    let target = ctx
        .cfg
        .canary()
        .map_or(tracks, |c| tracks.min(analysed + c.sonic_tracks));
    let mut rate = Rate::default();
    rate.add(Instant::now(), analysed);
    // The report page's curve, kept across restarts.
    let mut curve = Curve::open(Curve::path_in(ctx.cfg.work_dir()));
    curve.add(analysed, tracks);
    let mut watch = Watch::new(ctx, started, end.saturating_duration_since(started));
    let mut last_snapshot = Instant::now();
    let mut milestones = super::tell::Milestones::starting_at(analysed, tracks);
    let mut snapshots = 0u32;
    // The runner's own work during Sonic (Plex goes on meanwhile).
    let mut snapshot_time = Duration::ZERO;
    let (outcome, analysed) = loop {
        watch.sleep().await;
        if session.revive_plex().await? || session.check_mount(false).await? {
            call("restart Sonic analysis", || {
                session.api().start_butler_task(TASK)
            })
            .await?;
        }
        let (analysed, tracks) = music_progress(ctx).await?;
        let now = Instant::now();
        rate.add(now, analysed);
        curve.add(analysed, tracks);
        let eta = publish(ctx, analysed, tracks, &rate).await;
        milestones.tell(ctx, analysed, tracks, eta.as_deref());
        if analysed >= tracks {
            break ("done", analysed);
        }
        if analysed >= target {
            break ("canary", analysed);
        }
        if last_snapshot.elapsed() >= ctx.cfg.deadlines().snapshot_interval {
            // A snapshot only serves a replacement instance: one not taken
            // (a DB written all along in rollback-journal mode, S3 down) is
            // tried again an interval later while the run goes on.
            let taking = Instant::now();
            match snapshot::take(ctx, ckpt, analysed).await {
                Ok(()) => snapshots += 1,
                Err(e) => tracing::warn!("no DB snapshot this time: {e:#}"),
            }
            snapshot_time += taking.elapsed();
            last_snapshot = Instant::now();
        }
        // Progress is the count alone: an activity with frozen progress is
        // not work.
        let busy = session.busy().await?;
        match watch.observe(false, analysed.to_string()) {
            Progress::Working => {
                if busy.is_idle() {
                    // The task ended early (Plex restarted it, or it gave up
                    // on a batch): ask again; stall detection bounds this.
                    call("restart Sonic analysis", || {
                        session.api().start_butler_task(TASK)
                    })
                    .await?;
                }
            }
            Progress::Idle => unreachable!("never observed idle"),
            Progress::Stalled(d) => {
                tracing::error!(
                    "Sonic stalled: no track analysed for {} (Plex: {busy})",
                    humantime::format_duration(d)
                );
                break ("stalled", analysed);
            }
            Progress::OutOfTime => {
                tracing::warn!(analysed, tracks, "Sonic stopped at its deadline");
                break ("deadline", analysed);
            }
        }
    };
    let _ = session.api().stop_butler_task(TASK).await;
    let seconds = sonic_started.elapsed().as_secs_f64();
    let per_hour = (analysed - analysed_before) as f64 * 3600.0 / seconds.max(1.0);
    tracing::info!(outcome, analysed, per_hour, "Sonic phase over");
    Ok(json!({
        "outcome": outcome,
        "analysed_before": analysed_before,
        "analysed": analysed,
        "tracks": music_progress(ctx).await?.1,
        "tracks_per_hour": per_hour.round(),
        "seconds": seconds,
        "snapshots": snapshots,
        "snapshot_seconds": snapshot_time.as_secs_f64(),
    }))
}

/// Waits until Plex does nothing at all before Sonic starts.
async fn stabilise(ctx: &RunContext, session: &mut Session) -> Result<()> {
    ctx.describe("waiting for Plex to settle before Sonic".into())
        .await;
    let d = ctx.cfg.deadlines();
    wait_idle(ctx, session, d.stall_interval * d.stall_checks).await
}

async fn wait_idle(ctx: &RunContext, session: &mut Session, budget: Duration) -> Result<()> {
    let mut watch = Watch::new(ctx, Instant::now(), budget);
    loop {
        watch.sleep().await;
        session.revive_plex().await?;
        let busy = session.busy().await?;
        match watch.observe(busy.is_idle(), format!("{:?}", busy.progress)) {
            Progress::Working => {}
            Progress::Idle => return Ok(()),
            Progress::Stalled(_) | Progress::OutOfTime => anyhow::bail!(
                "Plex did not settle within {} (Plex: {busy})",
                humantime::format_duration(budget)
            ),
        }
    }
}

/// Analysed and total live tracks of the run's music libraries, from the DB.
async fn music_progress(ctx: &RunContext) -> Result<(u64, u64)> {
    let stats = db_stats(ctx).await?;
    let filter = &ctx.cfg.plex().libraries;
    Ok(stats
        .libraries
        .iter()
        .filter(|l| filter.selects(&l.name))
        .fold((0, 0), |(a, t), l| {
            (a + l.sonic.analysed, t + l.sonic.tracks)
        }))
}

/// Sonic's progress into the status; answers the ETA it shows.
async fn publish(ctx: &RunContext, analysed: u64, tracks: u64, rate: &Rate) -> Option<String> {
    let per_hour = rate.per_hour();
    let eta = (per_hour > 0.0).then(|| {
        let hours = (tracks - analysed) as f64 / per_hour;
        humantime::format_duration(Duration::from_secs((hours * 3600.0) as u64)).to_string()
    });
    let sonic = SonicStatus {
        analysed,
        tracks,
        tracks_per_hour: per_hour.round(),
        eta: eta.clone(),
    };
    ctx.update_status(|s| {
        s.detail = Some(format!("Sonic: {analysed} of {tracks} tracks analysed"));
        s.sonic = Some(sonic);
    })
    .await;
    eta
}

/// Tracks per hour over a sliding window.
#[derive(Default)]
struct Rate {
    points: VecDeque<(Instant, u64)>,
}

impl Rate {
    fn add(&mut self, at: Instant, analysed: u64) {
        self.points.push_back((at, analysed));
        while self
            .points
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > RATE_WINDOW)
            && self.points.len() > 2
        {
            self.points.pop_front();
        }
    }

    fn per_hour(&self) -> f64 {
        match (self.points.front(), self.points.back()) {
            (Some((t0, a0)), Some((t1, a1))) if t1 > t0 => {
                a1.saturating_sub(*a0) as f64 * 3600.0 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_measured_over_the_recent_window() {
        let t0 = Instant::now();
        let mut r = Rate::default();
        r.add(t0, 0);
        assert_eq!(r.per_hour(), 0.0);
        r.add(t0 + Duration::from_secs(60), 100);
        assert_eq!(r.per_hour(), 6000.0);
        // An hour later the first minute no longer counts.
        r.add(t0 + Duration::from_secs(3660), 100);
        r.add(t0 + Duration::from_secs(3720), 160);
        assert_eq!(r.per_hour(), 3600.0);
    }
}
