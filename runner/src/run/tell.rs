//! What the runner tells the user through `[[notify]]`, and when: the run
//! under way, each library scanned, Sonic at 25/50/75%, a stall, the end
//! (done, quarantined or failed). Sent in the background: a target that
//! is down or hangs never holds the run up ([`crate::notify`] bounds each
//! send); the end's notifications are waited for, boundedly, before the
//! instance goes.

use std::time::Duration;

use serde_json::{Value, json};

use super::RunContext;
use super::checkpoint::unix_now;
use super::cost::SoFar;
use super::report::Report;
use crate::notify::{Event, EventKind};

/// How long the end of a run waits for its notifications to go out.
pub const FLUSH: Duration = Duration::from_secs(60);

/// Sonic's milestones, in percent.
const MILESTONES: [u64; 3] = [25, 50, 75];

fn event(ctx: &RunContext, kind: EventKind, summary: &str, message: String) -> Event {
    let run = ctx.cfg.run_id().to_string();
    // The link is a presigned URL made for the user: notifications are
    // built from our own fields and never pass the masker, which would
    // take its signature out.
    Event::new(kind, Some(&run), summary, message)
        .sender("runner")
        .next(format!("bootstrap status {run}"))
        .link(ctx.report_link.clone())
}

pub(super) fn started(ctx: &RunContext) {
    let canary = if ctx.cfg.canary().is_some() {
        " (a canary)"
    } else {
        ""
    };
    ctx.notifier.spawn(event(
        ctx,
        EventKind::Started,
        "under way",
        format!(
            "The instance booted and the run{canary} is under way; it ends by itself within {}.",
            hours_or_less(ctx.cfg.run_deadline())
        ),
    ));
}

/// "72 h" rather than humantime's "3days"; "45m" below an hour.
fn hours_or_less(d: Duration) -> String {
    if d.as_secs() >= 3600 {
        format!("{:.0} h", d.as_secs_f64() / 3600.0)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// After the scan phase, with its output: what each library gained.
pub(super) fn scan_done(ctx: &RunContext, output: &Value) {
    let Some(libraries) = output["libraries"].as_array() else {
        return;
    };
    let added: Vec<(String, i64)> = libraries
        .iter()
        .map(|l| {
            let count = |side: &str| -> i64 {
                l[side]
                    .as_object()
                    .map_or(0, |m| m.values().filter_map(Value::as_i64).sum())
            };
            (
                l["library"].as_str().unwrap_or("?").to_string(),
                count("after") - count("before"),
            )
        })
        .collect();
    let lines: Vec<String> = added
        .iter()
        .map(|(name, n)| format!("{name}: {n:+} items"))
        .collect();
    ctx.notifier.spawn(
        event(
            ctx,
            EventKind::ScanDone,
            "scan done",
            format!("Every library is scanned.\n{}", lines.join("\n")),
        )
        .details(json!({
            "libraries": added.iter().map(|(name, n)| json!({ "library": name, "items_added": n })).collect::<Vec<_>>(),
        })),
    );
}

/// Sonic's 25/50/75% marks, each told once; those passed before this
/// runner started are not told again.
pub(super) struct Milestones {
    next: usize,
}

impl Milestones {
    pub fn starting_at(analysed: u64, tracks: u64) -> Milestones {
        let mut m = Milestones { next: 0 };
        m.passed(analysed, tracks);
        m
    }

    /// The highest mark newly passed, if any.
    fn passed(&mut self, analysed: u64, tracks: u64) -> Option<u64> {
        let percent = (analysed * 100).checked_div(tracks)?;
        let mut passed = None;
        while self.next < MILESTONES.len() && percent >= MILESTONES[self.next] {
            passed = Some(MILESTONES[self.next]);
            self.next += 1;
        }
        passed
    }

    pub fn tell(&mut self, ctx: &RunContext, analysed: u64, tracks: u64, eta: Option<&str>) {
        let Some(mark) = self.passed(analysed, tracks) else {
            return;
        };
        let eta = eta.map_or(String::new(), |e| format!("; about {e} to go"));
        ctx.notifier.spawn(
            event(
                ctx,
                EventKind::SonicProgress,
                &format!("Sonic {mark}%"),
                format!("Sonic analysis: {analysed} of {tracks} tracks{eta}."),
            )
            .details(json!({ "percent": mark, "analysed": analysed, "tracks": tracks })),
        );
    }
}

pub(super) fn stalled(ctx: &RunContext, what: &str) {
    ctx.notifier.spawn(event(
        ctx,
        EventKind::Stalled,
        "stalled",
        format!("{what}. The run goes on with what was done."),
    ));
}

pub(super) fn failed(ctx: &RunContext, error: &anyhow::Error) {
    let reason = format!("{error:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    ctx.notifier.spawn(event(
        ctx,
        EventKind::Failed,
        "failed",
        format!("The run failed and is over: {reason}"),
    ));
}

pub(super) fn finished(ctx: &RunContext, report: &Report, started_unix: u64) {
    let now = unix_now();
    let hours = now.saturating_sub(started_unix) as f64 / 3600.0;
    let cost = SoFar::of(&ctx.cfg, started_unix, now);
    let run = &report.run_id;
    let (before, after) = (&report.before, &report.after);
    let cents = |eur: f64| (eur * 100.0).round() / 100.0;
    let details = json!({
        "hours": cents(hours),
        "tracks": { "before": before.live("track"), "after": after.live("track") },
        "sonic_analysed": { "before": before.sonic.analysed, "after": after.sonic.analysed },
        "result_key": report.result_key,
        "cost_eur": cost.as_ref().map(|c| cents(c.eur)),
        "estimate_eur": cost.as_ref().and_then(|c| c.estimate_eur).map(cents),
    });
    let mut figures = format!(
        "{:.1} h; tracks {} -> {}; Sonic-analysed {} -> {}.",
        hours,
        before.live("track"),
        after.live("track"),
        before.sonic.analysed,
        after.sonic.analysed
    );
    if let Some(c) = &cost {
        figures.push_str(&format!(" Cost: {}.", c.line()));
    }
    let event = match &report.quarantine {
        Some(reason) => event(
            ctx,
            EventKind::Quarantined,
            "quarantined",
            format!("The result was kept out of reach of the home server: {reason}. {figures}"),
        ),
        None => event(
            ctx,
            EventKind::Done,
            "done",
            format!("The run is done and its result uploaded. {figures}"),
        )
        .next(if ctx.cfg.canary().is_some() {
            format!("bootstrap fetch --canary {run}")
        } else {
            format!("bootstrap fetch {run}")
        }),
    };
    ctx.notifier.spawn(event.details(details));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mark_is_passed_once_and_those_behind_the_start_never() {
        let mut m = Milestones::starting_at(30, 100);
        assert_eq!(m.passed(40, 100), None, "25% was passed before the start");
        assert_eq!(m.passed(50, 100), Some(50));
        assert_eq!(m.passed(60, 100), None);
        assert_eq!(
            m.passed(100, 100),
            Some(75),
            "a jump past two marks tells the last"
        );
        assert_eq!(m.passed(100, 100), None);
        assert_eq!(Milestones::starting_at(0, 0).passed(0, 0), None);
    }
}
