//! The optional analysis phase: `analyze` one library at a time, each
//! watched until Plex is idle (the phase's budget bounds the whole).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::RunContext;
use super::checkpoint::Checkpoint;
use super::session::call;
use super::watch::{Progress, Watch};

pub(super) async fn run(ctx: &RunContext, ckpt: &Checkpoint) -> Result<Value> {
    if !ctx.cfg.phases().analysis {
        return Ok(json!({ "skipped": "phases.analysis = false" }));
    }
    if let Some(reason) = ckpt.quarantine() {
        return Ok(json!({ "skipped": format!("the run is quarantined ({reason})") }));
    }
    let mut guard = ctx.session().await?;
    let session = guard.as_mut().context("no Plex session")?;
    let sections = call("list libraries", || session.api().sections()).await?;
    let mut done = Vec::new();
    for s in sections
        .iter()
        .filter(|s| ctx.cfg.plex().libraries.selects(&s.title))
    {
        session.check_mount(true).await?;
        ctx.describe(format!("analysing {:?}", s.title)).await;
        let started = Instant::now();
        call("start an analysis", || {
            session.api().analyze(s.key.as_str())
        })
        .await?;
        let mut watch = Watch::new(ctx, started, Duration::MAX);
        loop {
            watch.sleep().await;
            if session.revive_plex().await? || session.check_mount(false).await? {
                call("start an analysis", || {
                    session.api().analyze(s.key.as_str())
                })
                .await?;
            }
            let busy = session.busy().await?;
            match watch.observe(busy.is_idle(), format!("{:?}", busy.progress)) {
                Progress::Working => {}
                Progress::Idle => break,
                Progress::Stalled(d) => bail!(
                    "the analysis of {:?} stalled: no progress for {} (Plex: {busy})",
                    s.title,
                    humantime::format_duration(d)
                ),
                Progress::OutOfTime => unreachable!("no budget of its own"),
            }
        }
        done.push(json!({ "library": s.title, "seconds": started.elapsed().as_secs_f64() }));
    }
    Ok(json!({ "libraries": done }))
}
