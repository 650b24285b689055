//! `runs/<run-id>/report.html`: the run as one page a person opens from a
//! notification or `bootstrap status RUN --link`, on a phone as well as
//! offline. Self-contained (inline CSS, the Sonic curve as inline SVG, no
//! script, font or image), rebuilt from what the runner keeps: the
//! checkpoint (timeline, stats, scans, guard; through [`Report`]), the
//! status, Sonic's samples ([`curve`](super::curve)) and the end of
//! runner.log. Every text not written here is masked, then HTML-escaped:
//! library names come from the user's DB, log lines from anywhere.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::Value;

use super::checkpoint::{Checkpoint, unix_now};
use super::cost::SoFar;
use super::curve::{Curve, Sample};
use super::guard::Verdict;
use super::report::Report;
use super::status::{RunState, Status};
use super::{Phase, RunContext};
use crate::mask::Masker;
use crate::plexdb::stats::Stats;

/// The page's name under `runs/<run-id>/`.
pub const KEY: &str = "report.html";

/// A busy poll loop updates the status every few seconds: the page goes
/// at most this often, and at once when the phase or the state changes.
const EVERY: Duration = Duration::from_secs(60);

/// How much of runner.log the page ends with.
const LOG_LINES: usize = 40;
const LOG_BYTES: u64 = 16 * 1024;

/// SigV4 presigned URLs live at most 7 days.
const MAX_LINK_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// A notification is read after it is sent: the end's a while after.
const LINK_MARGIN: Duration = Duration::from_secs(24 * 3600);

/// What was last uploaded: when, and at which phase and state.
#[derive(Default)]
pub(super) struct Published(std::sync::Mutex<Option<(Instant, Option<Phase>, RunState)>>);

impl Published {
    /// Whether the page is due for `status` (and if so, counts it done).
    fn due(&self, status: &Status) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|(at, phase, state)| {
            at.elapsed() >= EVERY || phase != status.phase || state != status.state
        });
        if due {
            *last = Some((Instant::now(), status.phase, status.state));
        }
        due
    }
}

/// Rebuilds and uploads the page if due. Like the status, it is for
/// humans: a failure is a warning, never fatal.
pub(super) async fn publish(ctx: &RunContext, status: &Status) {
    if !ctx.page.due(status) {
        return;
    }
    let ckpt = match Checkpoint::load(&ctx.paths.checkpoint) {
        Ok(Some(c)) => c,
        Ok(None) => Checkpoint::new(ctx.cfg.run_id().as_ref()),
        Err(e) => {
            tracing::warn!("no report page this time: {e:#}");
            return;
        }
    };
    let report = Report::from_checkpoint(ctx, &ckpt);
    let samples = Curve::read(&Curve::path_in(ctx.cfg.work_dir()));
    let log = log_tail(&ctx.paths.logs.join("runner.log"));
    let cost = SoFar::of(&ctx.cfg, ckpt.started_unix, unix_now());
    let page = render(
        &Inputs {
            status,
            ckpt: &ckpt,
            report: &report,
            samples: &samples,
            log_tail: &log,
            cost: cost.as_ref(),
        },
        &crate::mask::held_and(ctx.secrets()),
    );
    let key = ctx.run_key(KEY);
    if let Err(e) = ctx
        .bucket
        .put_bytes(&key, page.into(), "text/html; charset=utf-8")
        .await
    {
        tracing::warn!("cannot update s3://{}/{key}: {e}", ctx.bucket.name());
    }
}

/// A presigned GET of the page for the run's notifications: valid until a
/// day past the run's deadline, at most SigV4's 7 days. `None` (logged) if
/// it cannot be made: the notifications go without a link.
pub(super) async fn link(ctx: &RunContext) -> Option<String> {
    let valid = (ctx.deadline().saturating_duration_since(Instant::now()) + LINK_MARGIN)
        .min(MAX_LINK_VALIDITY);
    match ctx.bucket.presign_get(&ctx.run_key(KEY), valid).await {
        Ok(url) => Some(url),
        Err(e) => {
            tracing::warn!("notifications go without a link to the report page: {e}");
            None
        }
    }
}

/// The last lines of runner.log (none if it cannot be read).
fn log_tail(path: &std::path::Path) -> Vec<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let mut bytes = Vec::new();
    if file
        .seek(SeekFrom::Start(len.saturating_sub(LOG_BYTES)))
        .is_err()
        || file.read_to_end(&mut bytes).is_err()
    {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    // The first line may be cut: it goes unless it is all there is.
    let from = lines
        .len()
        .saturating_sub(LOG_LINES)
        .max(usize::from(len > LOG_BYTES && lines.len() > 1));
    lines[from.min(lines.len())..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// Everything the page shows.
pub struct Inputs<'a> {
    pub status: &'a Status,
    pub ckpt: &'a Checkpoint,
    pub report: &'a Report,
    pub samples: &'a [Sample],
    pub log_tail: &'a [String],
    /// `None` when the run was not priced (no `[cost]`).
    pub cost: Option<&'a SoFar>,
}

const STYLE: &str = "\
*{box-sizing:border-box}\
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:62rem;padding:.75rem;color:#1b1b1b;background:#fff}\
h1,p,li{overflow-wrap:anywhere}\
h1{font-size:1.3rem;margin:.2rem 0}h2{font-size:1.05rem;margin:1.4rem 0 .4rem;border-bottom:1px solid #ddd}\
.state{display:inline-block;padding:0 .5rem;border-radius:.3rem;color:#fff;background:#1f6feb}\
.succeeded{background:#1a7f37}.failed{background:#cf222e}.quarantined{background:#9a6700}\
.problem{border-left:4px solid #cf222e;padding:.3rem .6rem;background:#fff5f5;margin:.4rem 0}\
.muted{color:#656d76}.scroll{overflow-x:auto}\
table{border-collapse:collapse;width:100%}th,td{padding:.2rem .4rem;border-bottom:1px solid #eee;text-align:left;vertical-align:top}\
th,.n,.t{white-space:nowrap}.n{text-align:right;font-variant-numeric:tabular-nums}td.b{min-width:4rem;width:30%}\
.bar{display:block;height:.45rem;background:#1f6feb;min-width:1px}\
svg{width:100%;height:auto;display:block;background:#f6f8fa}\
pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:12px;background:#f6f8fa;padding:.5rem;margin:0}";

/// The page, whole.
pub fn render(i: &Inputs, masker: &Masker) -> String {
    let t = |s: &str| escape(&masker.mask(s));
    let s = i.status;
    let state = format!("{:?}", s.state).to_lowercase();
    let mut h = String::with_capacity(32 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>plex-burst run {id}: {state}</title><style>{STYLE}</style></head><body>\n\
         <h1>plex-burst run {id}</h1>\n<p><span class=\"state {state}\">{state}</span> {phase}</p>\n",
        id = t(&s.run_id),
        phase = match (s.phase, s.state) {
            (Some(p), RunState::Failed) => format!("in phase {p}"),
            (Some(p), _) => format!("phase {p}"),
            (None, _) => String::new(),
        },
    );
    if let Some(detail) = &s.detail {
        let _ = writeln!(h, "<p>{}</p>", t(detail));
    }
    for (what, line) in s
        .last_error
        .iter()
        .map(|e| ("error", e))
        .chain(s.quarantine.iter().map(|q| ("quarantined", q)))
        .chain(s.warnings.iter().map(|w| ("warning", w)))
    {
        let _ = writeln!(h, "<p class=\"problem\"><b>{what}</b>: {}</p>", t(line));
    }
    let _ = writeln!(
        h,
        "<p class=\"muted\">started {}; updated {}; runner {}</p>",
        utc(i.ckpt.started_unix),
        t(&s.updated_at.replace('T', " ").replace('Z', " UTC")),
        t(&s.runner_version)
    );

    timeline(&mut h, i);
    sonic(&mut h, i, &t);
    stats(&mut h, &i.report.before, &i.report.after, &t);
    scans(&mut h, i.ckpt, &t);
    guard(&mut h, i.ckpt, &t);

    h.push_str("<h2>Cost</h2>\n");
    match i.cost {
        Some(c) => {
            let _ = writeln!(h, "<p>So far: {}</p>", t(&c.line()));
            if let Some(basis) = &c.basis {
                let _ = writeln!(h, "<p class=\"muted\">{}</p>", t(basis));
            }
        }
        None => h.push_str("<p class=\"muted\">not known</p>\n"),
    }

    h.push_str("<h2>Last log lines</h2>\n");
    if i.log_tail.is_empty() {
        h.push_str("<p class=\"muted\">none yet</p>\n");
    } else {
        let lines: Vec<String> = i.log_tail.iter().map(|l| t(l)).collect();
        let _ = writeln!(h, "<pre>{}</pre>", lines.join("\n"));
    }
    h.push_str("</body></html>\n");
    h
}

/// Each phase: done (wall time, the runner's CPU and peak memory), under
/// way, failed or to come.
fn timeline(h: &mut String, i: &Inputs) {
    let total: f64 = i.ckpt.done.iter().map(|r| r.seconds).sum();
    h.push_str(
        "<h2>Timeline</h2>\n<div class=\"scroll\"><table><tr><th>phase</th><th>finished</th>\
         <th class=\"n\">wall s</th><th class=\"n\">CPU s</th><th class=\"n\">peak MB</th><th></th></tr>\n",
    );
    for phase in Phase::ALL {
        let skipped = i
            .ckpt
            .record(phase)
            .is_some_and(|r| r.output["skipped"].is_string());
        let note = if skipped { " (skipped)" } else { "" };
        let _ = write!(h, "<tr><td>{phase}{note}</td>");
        match i.ckpt.record(phase) {
            Some(r) => {
                let (cpu, rss) = r.usage.map_or((String::new(), String::new()), |u| {
                    (
                        format!("{:.1}", u.cpu_seconds),
                        format!("{:.0}", u.peak_rss_mb),
                    )
                });
                let share = if total > 0.0 {
                    100.0 * r.seconds / total
                } else {
                    0.0
                };
                let _ = writeln!(
                    h,
                    "<td class=\"t\">{}</td><td class=\"n\">{:.1}</td><td class=\"n\">{cpu}</td>\
                     <td class=\"n\">{rss}</td><td class=\"b\"><span class=\"bar\" style=\"width:{share:.1}%\"></span></td></tr>",
                    escape(&short_time(&r.finished_at)),
                    r.seconds
                );
            }
            None => {
                let now = match (i.status.phase == Some(phase), i.status.state) {
                    (true, RunState::Failed) => "failed",
                    (true, _) => "under way",
                    _ => "",
                };
                let _ = writeln!(h, "<td colspan=\"5\" class=\"muted\">{now}</td></tr>");
            }
        }
    }
    let cpu: f64 = i
        .ckpt
        .done
        .iter()
        .filter_map(|r| r.usage.map(|u| u.cpu_seconds))
        .sum();
    let _ = writeln!(
        h,
        "</table></div>\n<p>Timings: {total:.1} s in the phases done, {cpu:.1} s of the runner's CPU.</p>"
    );
}

/// Sonic: where it is, its rate and ETA, and the curve of tracks analysed
/// over time (one point per sample).
fn sonic(h: &mut String, i: &Inputs, t: &dyn Fn(&str) -> String) {
    h.push_str("<h2>Sonic analysis</h2>\n");
    if let Some(why) = i
        .ckpt
        .record(Phase::Sonic)
        .and_then(|r| r.output["skipped"].as_str())
    {
        let _ = writeln!(h, "<p>skipped: {}</p>", t(why));
    }
    if let Some((outcome, per_hour)) = &i.report.sonic {
        let _ = writeln!(
            h,
            "<p>phase over: {}, {per_hour:.0} tracks/hour</p>",
            t(outcome)
        );
    }
    let last = i.samples.last();
    let now = i
        .status
        .sonic
        .as_ref()
        .map(|s| (s.analysed, s.tracks))
        .or(last.map(|s| (s.analysed, s.tracks)));
    if let Some((analysed, tracks)) = now {
        let pct = if tracks > 0 {
            100.0 * analysed as f64 / tracks as f64
        } else {
            0.0
        };
        let _ = write!(h, "<p>{analysed} of {tracks} tracks analysed ({pct:.1}%)");
        if let Some(s) = &i.status.sonic {
            let _ = write!(
                h,
                "; {:.0} tracks/hour; ETA {}",
                s.tracks_per_hour,
                t(s.eta.as_deref().unwrap_or("unknown"))
            );
        }
        h.push_str("</p>\n");
    }
    let (Some(first), Some(last)) = (i.samples.first(), last) else {
        if i.ckpt.record(Phase::Sonic).is_none() {
            h.push_str("<p class=\"muted\">not started</p>\n");
        }
        return;
    };
    const W: f64 = 600.0;
    const H: f64 = 200.0;
    let span = last.at.saturating_sub(first.at).max(1) as f64;
    let top = i.samples.iter().map(|s| s.tracks).max().unwrap_or(0).max(1) as f64;
    let points: Vec<String> = i
        .samples
        .iter()
        .map(|s| {
            let x = W * s.at.saturating_sub(first.at) as f64 / span;
            let y = H - H * s.analysed as f64 / top;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let _ = writeln!(
        h,
        "<svg viewBox=\"-4 -4 {vw} {vh}\" role=\"img\" aria-label=\"tracks analysed over time\">\
         <line x1=\"0\" y1=\"0\" x2=\"{W}\" y2=\"0\" stroke=\"#999\" stroke-dasharray=\"4 4\"/>\
         <line x1=\"0\" y1=\"{H}\" x2=\"{W}\" y2=\"{H}\" stroke=\"#999\"/>\
         <polyline id=\"sonic-curve\" fill=\"none\" stroke=\"#1f6feb\" stroke-width=\"2\" points=\"{}\"/>\
         <circle cx=\"{}\" r=\"3\" fill=\"#1f6feb\"/></svg>\n\
         <p class=\"muted\">{n} samples from {} to {}; dashed: all {top} tracks.</p>",
        points.join(" "),
        points
            .last()
            .map_or("0\" cy=\"0".into(), |p| p.replacen(',', "\" cy=\"", 1)),
        utc(first.at),
        utc(last.at),
        vw = W + 8.0,
        vh = H + 8.0,
        n = i.samples.len(),
    );
}

/// Live items per library and type, before the run and after it.
fn stats(h: &mut String, before: &Stats, after: &Stats, t: &dyn Fn(&str) -> String) {
    h.push_str("<h2>Libraries</h2>\n");
    if before.libraries.is_empty() && after.libraries.is_empty() {
        h.push_str("<p class=\"muted\">not counted yet</p>\n");
        return;
    }
    let counted_after = !after.libraries.is_empty();
    h.push_str(
        "<div class=\"scroll\"><table><tr><th>library</th><th>type</th>\
         <th class=\"n\">before</th><th class=\"n\">after</th><th class=\"n\">change</th></tr>\n",
    );
    let mut ids: Vec<i64> = before.libraries.iter().map(|l| l.id).collect();
    ids.extend(
        after
            .libraries
            .iter()
            .map(|l| l.id)
            .filter(|id| !before.libraries.iter().any(|l| l.id == *id)),
    );
    for id in ids {
        let b = before.libraries.iter().find(|l| l.id == id);
        let a = after.libraries.iter().find(|l| l.id == id);
        let name = b.or(a).map_or("", |l| l.name.as_str());
        let types: BTreeSet<&String> = b
            .iter()
            .chain(a.iter())
            .flat_map(|l| l.items.keys())
            .collect();
        for ty in types {
            let count = |l: Option<&crate::plexdb::stats::LibraryStats>| {
                l.and_then(|l| l.items.get(ty)).map_or(0, |c| c.live)
            };
            let (nb, na) = (count(b), count(a));
            let (after_cell, change) = if counted_after {
                (na.to_string(), format!("{:+}", na as i64 - nb as i64))
            } else {
                ("-".into(), String::new())
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{nb}</td><td class=\"n\">{after_cell}</td><td class=\"n\">{change}</td></tr>",
                t(name),
                t(ty)
            );
        }
    }
    h.push_str("</table></div>\n");
    let (b, a) = (before.sonic, after.sonic);
    if b.tracks > 0 || a.tracks > 0 {
        let after = if counted_after {
            format!("{} of {} after", a.analysed, a.tracks)
        } else {
            "not counted after yet".into()
        };
        let _ = writeln!(
            h,
            "<p>Sonic-analysed: {} of {} tracks before, {after}.</p>",
            b.analysed, b.tracks
        );
    }
}

/// What each library's scan added, per type.
fn scans(h: &mut String, ckpt: &Checkpoint, t: &dyn Fn(&str) -> String) {
    h.push_str("<h2>Scans</h2>\n");
    let Some(record) = ckpt.record(Phase::Scan) else {
        h.push_str("<p class=\"muted\">not done yet</p>\n");
        return;
    };
    if let Some(why) = record.output["skipped"].as_str() {
        let _ = writeln!(h, "<p>skipped: {}</p>", t(why));
        return;
    }
    h.push_str(
        "<div class=\"scroll\"><table><tr><th>library</th><th class=\"n\">seconds</th>\
         <th class=\"n\">remounts</th><th>added</th></tr>\n",
    );
    for lib in record.output["libraries"].as_array().into_iter().flatten() {
        let side = |k: &str| lib[k].as_object().cloned().unwrap_or_default();
        let (before, after) = (side("before"), side("after"));
        let types: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        let added: Vec<String> = types
            .into_iter()
            .filter_map(|ty| {
                let n = |m: &serde_json::Map<String, Value>| m.get(ty).and_then(Value::as_i64);
                let d = n(&after).unwrap_or(0) - n(&before).unwrap_or(0);
                (d != 0).then(|| format!("{d:+} {}", t(ty)))
            })
            .collect();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"n\">{:.1}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            t(lib["library"].as_str().unwrap_or("?")),
            lib["seconds"].as_f64().unwrap_or(0.0),
            lib["remounts"].as_u64().unwrap_or(0),
            if added.is_empty() {
                "nothing".into()
            } else {
                added.join(", ")
            }
        );
    }
    h.push_str("</table></div>\n");
}

/// The deletion guard's decisions: after each library's scan, and the
/// final check of the DB to publish.
fn guard(h: &mut String, ckpt: &Checkpoint, t: &dyn Fn(&str) -> String) {
    h.push_str("<h2>Deletion guard</h2>\n");
    let mut decisions: Vec<(String, Verdict)> = Vec::new();
    if let Some(r) = ckpt.record(Phase::Scan) {
        for lib in r.output["libraries"].as_array().into_iter().flatten() {
            if let Ok(v) = serde_json::from_value(lib["guard"].clone()) {
                let name = lib["library"].as_str().unwrap_or("?");
                decisions.push((format!("after the scan of {}", t(name)), v));
            }
        }
    }
    if let Some(v) = ckpt
        .record(Phase::Package)
        .and_then(|r| serde_json::from_value(r.output["guard"].clone()).ok())
    {
        decisions.push(("the result, before upload".into(), v));
    }
    if decisions.is_empty() {
        h.push_str("<p class=\"muted\">no decision yet</p>\n");
        return;
    }
    h.push_str("<ul>\n");
    for (when, v) in decisions {
        let word = if v.passed { "passed" } else { "REFUSED" };
        let losses: Vec<String> = v
            .losses
            .iter()
            .map(|l| {
                let over = if l.over_limit {
                    " (over the limit)"
                } else {
                    ""
                };
                format!("{}{over}", t(&l.to_string()))
            })
            .collect();
        let detail = if losses.is_empty() {
            "no loss".into()
        } else {
            losses.join("; ")
        };
        let _ = writeln!(h, "<li>{when}: <b>{word}</b>, {detail}</li>");
    }
    h.push_str("</ul>\n");
}

/// An RFC 3339 time without its year: the page's start line has it.
fn short_time(rfc3339: &str) -> String {
    rfc3339
        .get(5..19)
        .map_or_else(|| rfc3339.to_owned(), |t| t.replace('T', " "))
}

fn utc(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix))
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// `s` safe in HTML text and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HOSTILE: &str = "<script>alert('x')</script>";

    fn checkpoint() -> Checkpoint {
        let stats = |tracks: u64| {
            json!({
                "libraries": [{ "id": 1, "name": HOSTILE, "section_type": 8,
                    "section_type_name": "artist",
                    "items": { "track": { "live": tracks, "deleted": 0 } },
                    "deleted_parts": 0, "unavailable_locations": [] }],
                "totals": {}, "sonic": { "analysed": 0, "tracks": tracks }
            })
        };
        let mut c = Checkpoint::new("r1");
        for phase in [Phase::Boot, Phase::Pull, Phase::Verify, Phase::Remap] {
            let output = match phase {
                Phase::Verify => json!({ "stats_before": stats(10) }),
                _ => Value::Null,
            };
            c.complete(phase, 1.5, None, output).unwrap();
        }
        let scan = json!({ "libraries": [{ "library": HOSTILE, "seconds": 2.0, "remounts": 0,
            "before": { "track": 10 }, "after": { "track": 12 },
            "guard": { "passed": true, "losses": [] } }] });
        c.complete(Phase::Scan, 2.0, None, scan).unwrap();
        c
    }

    fn page(samples: &[Sample], log: &[String], masker: &Masker) -> String {
        priced(samples, log, masker, None)
    }

    fn priced(samples: &[Sample], log: &[String], masker: &Masker, cost: Option<&SoFar>) -> String {
        let ckpt = checkpoint();
        let mut status = Status::new("r1");
        status.enter(&ckpt, Phase::Analysis);
        status.warn(format!("a warning naming {HOSTILE}"));
        let report = Report::of(&ckpt, "bucket", "runs/r1/result".into());
        render(
            &Inputs {
                status: &status,
                ckpt: &ckpt,
                report: &report,
                samples,
                log_tail: log,
                cost,
            },
            masker,
        )
    }

    #[test]
    fn what_the_user_db_and_the_log_hold_is_escaped_and_secrets_are_masked() {
        let secret = "a-secret-value-0123456789";
        let log = vec![
            format!("INFO library {HOSTILE} scanned"),
            format!("WARN the key {secret} was refused"),
        ];
        let html = page(&[], &log, &Masker::new([secret]));
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(!html.contains(secret) && html.contains("the key ********"));
        // Stats before, what the scan added, the guard, an unpriced run.
        assert!(html.contains("+2 track"), "{html}");
        assert!(html.contains("<b>passed</b>, no loss"), "{html}");
        assert!(html.contains("<h2>Cost</h2>\n<p class=\"muted\">not known</p>"));
        assert!(html.contains("<td>analysis</td><td colspan=\"5\" class=\"muted\">under way"));
        assert!(!html.contains("sonic-curve"), "no samples, no curve");
    }

    #[test]
    fn a_priced_run_shows_its_cost_so_far_beside_the_estimate() {
        let cost = SoFar {
            hours: 2.0,
            eur: 0.9,
            estimate_eur: Some(30.0),
            basis: Some(format!("learned from {HOSTILE}")),
        };
        let html = priced(&[], &[], &Masker::default(), Some(&cost));
        assert!(
            html.contains(
                "<h2>Cost</h2>\n<p>So far: EUR 0.90 over 2.0 h; estimated at launch: EUR 30.00</p>"
            ),
            "{html}"
        );
        assert!(html.contains("learned from &lt;script&gt;"), "{html}");
    }

    #[test]
    fn the_curve_has_one_point_per_sample() {
        let samples: Vec<Sample> = (0..7)
            .map(|i| Sample {
                at: 1_700_000_000 + 10 * i,
                analysed: 100 * i,
                tracks: 1000,
            })
            .collect();
        let html = page(&samples, &[], &Masker::default());
        let points = html
            .split("id=\"sonic-curve\"")
            .nth(1)
            .and_then(|rest| rest.split("points=\"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        assert_eq!(points.split(' ').count(), 7, "{points}");
        assert!(points.starts_with("0.0,200.0 ") && points.ends_with(" 600.0,80.0"));
        assert!(
            html.contains("7 samples from 2023-11-14 22:13:20 UTC"),
            "{html}"
        );
    }
}
