//! The canary: a rehearsal of a run on the user's own account, bucket,
//! media and Plex, on the cheapest instance and a slice of the work
//! (`launch --canary`; the runner's side is its `[canary]` table). Its
//! verdict is one line per step, passed or failed with the reason, what to
//! change and the time it took, then the Sonic rate measured and what the
//! real run would cost. `fetch --canary` records the verdict in the run's
//! launch record with the run's fingerprint (image recipe, reference and
//! config): a later `launch` says whether a canary proved the same.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use runner::archive::Manifest;
use runner::run::checkpoint::Checkpoint;
use runner::run::phase::Phase;
use runner::run::status::RunState;
use runner::s3::Bucket;
use runner::scaleway::{Client, ServerType};

use crate::config::BootstrapConfig;
use crate::estimate;
use crate::runs::{LaunchRecord, Outcome};
use crate::status::RunView;

/// What a canary's launch record carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CanaryRecord {
    /// Set by `fetch --canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub passed: bool,
    /// RFC 3339.
    pub judged_at: String,
    pub lines: Vec<String>,
}

/// The image recipe, the reference and the run's configuration, hashed:
/// the same fingerprint means the canary ran what the real run will.
pub fn fingerprint(
    cfg: &BootstrapConfig,
    recipe: &str,
    reference: Option<(&str, &Manifest)>,
) -> String {
    let mut h = Sha256::new();
    h.update(recipe.as_bytes());
    if let Some((key, manifest)) = reference {
        h.update(format!("\n{key}\n{}\n", manifest.archive.sha256).as_bytes());
    }
    h.update(cfg.run_identity().as_bytes());
    hex::encode(h.finalize())
}

/// One step of a verdict.
struct Step {
    name: String,
    result: StepResult,
    seconds: Option<f64>,
    detail: String,
}

enum StepResult {
    Passed,
    Failed { why: String },
    NotReached,
}

impl Step {
    fn new(name: &str, result: StepResult, seconds: Option<f64>, detail: String) -> Step {
        Step {
            name: name.into(),
            result,
            seconds,
            detail,
        }
    }

    fn failed(name: &str, why: String) -> Step {
        Step::new(name, StepResult::Failed { why }, None, String::new())
    }

    fn passed(&self) -> bool {
        matches!(self.result, StepResult::Passed)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = self
            .seconds
            .map(|s| format!(" ({})", seconds(s)))
            .unwrap_or_default();
        match &self.result {
            StepResult::Passed => {
                let detail = match self.detail.as_str() {
                    "" => String::new(),
                    d => format!(": {d}"),
                };
                write!(f, "  ok      {:<9}{detail}{time}", self.name)
            }
            StepResult::Failed { why } => write!(
                f,
                "  FAILED  {:<9}: {why}{time}\n          fix: {}",
                self.name,
                fix(&self.name, why)
            ),
            StepResult::NotReached => write!(f, "  -       {:<9}: not reached", self.name),
        }
    }
}

fn seconds(s: f64) -> String {
    match s {
        s if s < 90.0 => format!("{s:.0} s"),
        s => format!("{:.1} min", s / 60.0),
    }
}

/// What to change, in the user's words, for a step that failed with `why`.
fn fix(step: &str, why: &str) -> String {
    let has = |s: &str| why.contains(s);
    if has("Plex Pass") {
        "Sonic needs an active Plex Pass on the plex.tv account whose token is in PLEX_TOKEN: subscribe it, or set run.phases.sonic = false".into()
    } else if has("outside the mount") {
        "every library root and media file must lie under run.media.mount_point: add a [[run.path_mapping]] from the home path, or point run.media.remote at the bucket path that holds it".into()
    } else if has("cannot read") && has("media") {
        "the run's read-only media key cannot read that object: restore it if it is in a cold storage class (Glacier), or let the media bucket's policy allow it".into()
    } else if has("credentials") || has("401") || has("denied_authentication") {
        "the Scaleway secret key is refused: set SCW_SECRET_KEY (or scaleway.secret_key_env) to an API key of this project".into()
    } else if has("AccessDenied") || has("403") {
        "a key was refused by Object Storage: check the bucket's policy and the IAM permissions of bootstrap's own key".into()
    } else if has("claim") || has("plex.tv") {
        "PLEX_TOKEN must be a plex.tv account token (X-Plex-Token of the account), not a claim token".into()
    } else if has("reference") {
        "`bootstrap snapshot` writes the reference a delta run starts from".into()
    } else if step == "image" {
        "the builder's log is shown with the error: fix [image] (rclone_sha256, plex_image_digest) and run `bootstrap image build`".into()
    } else {
        "the runner's log (the end of it below, or `bootstrap status RUN`) says what happened before".into()
    }
}

/// The verdict of a launch that failed before its run existed.
pub fn launch_failed(step: &str, error: &anyhow::Error) -> String {
    let mut lines = vec!["canary FAILED before its run started:".to_owned()];
    lines.push(Step::failed(step, format!("{error:#}").replace('\n', " ")).to_string());
    lines.join("\n")
}

/// The home side of `fetch --canary`: the downloaded result checked and
/// merged into a scratch copy, nothing installed.
pub enum HomeChecks {
    Passed(String),
    Failed(String),
}

/// The verdict on the run `view` shows, with the home checks when
/// `fetch --canary` made them. `types`: the catalogue, for the estimate.
fn judge(
    cfg: &BootstrapConfig,
    view: &RunView,
    ckpt: Option<&Checkpoint>,
    home: Option<&HomeChecks>,
    types: &std::collections::BTreeMap<String, ServerType>,
) -> Verdict {
    let mut steps = vec![Step::new(
        "launch",
        StepResult::Passed,
        None,
        format!(
            "{} in {}, image {}",
            view.record.commercial_type,
            view.record.zone,
            view.record.image_id.as_deref().unwrap_or("?")
        ),
    )];
    let failed_phase = view
        .status
        .as_ref()
        .filter(|s| s.state == RunState::Failed)
        .and_then(|s| {
            s.phase
                .map(|p| (p, s.last_error.clone().unwrap_or_default()))
        });
    let mut sonic = None;
    for phase in Phase::ALL {
        let done = ckpt.and_then(|c| c.done.iter().find(|r| r.phase == phase));
        let step = match (done, &failed_phase) {
            (Some(r), _) => {
                if phase == Phase::Sonic {
                    sonic = Some(r.output.clone());
                }
                Step::new(
                    phase.name(),
                    StepResult::Passed,
                    Some(r.seconds),
                    detail(phase, &r.output),
                )
            }
            (None, Some((p, why))) if *p == phase => {
                let prefix = format!("phase {phase} failed: ");
                Step::failed(phase.name(), why.trim_start_matches(&prefix).to_owned())
            }
            (None, _) => Step::new(phase.name(), StepResult::NotReached, None, String::new()),
        };
        steps.push(step);
    }
    if let Some(s) = &view.status
        && let Some(server) = &s.plex_server
    {
        steps.push(Step::new(
            "plex",
            StepResult::Passed,
            None,
            format!("Plex ran and was claimed on the plex.tv account as server {server}"),
        ));
    }
    let ran = matches!(view.outcome, Outcome::Done);
    steps.push(match (&view.server, ran || failed_phase.is_some()) {
        (None, _) => Step::new(
            "ended",
            StepResult::Passed,
            None,
            "the instance ended itself".into(),
        ),
        (Some(_), true) => Step::failed(
            "ended",
            "the run is over but its server still exists (billed)".into(),
        ),
        (Some(_), false) => Step::new("ended", StepResult::NotReached, None, String::new()),
    });
    steps.push(
        match (view.log_tail.is_empty(), ran || failed_phase.is_some()) {
            (false, _) => Step::new(
                "logs",
                StepResult::Passed,
                None,
                "shipped to the bucket".into(),
            ),
            (true, true) => Step::failed("logs", "the run shipped no logs".into()),
            (true, false) => Step::new("logs", StepResult::NotReached, None, String::new()),
        },
    );
    steps.push(match home {
        Some(HomeChecks::Passed(d)) => Step::new("home", StepResult::Passed, None, d.clone()),
        Some(HomeChecks::Failed(why)) => Step::failed("home", why.clone()),
        None => Step::new("home", StepResult::NotReached, None, String::new()),
    });

    let passed = steps.iter().all(Step::passed);
    let failed = steps
        .iter()
        .any(|s| matches!(s.result, StepResult::Failed { .. }));
    let run_passed = steps[..steps.len() - 1].iter().all(Step::passed);
    let id = &view.record.run_id;
    let mut lines = vec![match (passed, failed, run_passed) {
        (true, _, _) => format!("canary {id}: PASSED"),
        (_, true, _) => format!("canary {id}: FAILED"),
        (_, _, true) => format!(
            "canary {id}: the run PASSED; `bootstrap fetch --canary {id}` checks its result at home and cleans up"
        ),
        _ => format!("canary {id}: under way"),
    }];
    lines.extend(steps.iter().map(ToString::to_string));
    if let Some(line) = sonic
        .as_ref()
        .and_then(|s| real_run_estimate(cfg, view, s, types))
    {
        lines.push(line);
    }
    if !passed && !view.log_tail.is_empty() {
        lines.push("  the end of the runner's log:".into());
        lines.extend(view.log_tail.iter().map(|l| format!("  | {l}")));
    }
    Verdict {
        passed,
        judged_at: crate::runs::rfc3339(std::time::SystemTime::now()),
        lines,
    }
}

/// The verdict on `view` as things stand, with the run's mirrored
/// checkpoint and the catalogue.
pub async fn judge_now(
    cfg: &BootstrapConfig,
    client: &Client,
    bucket: &Bucket,
    view: &RunView,
    home: Option<&HomeChecks>,
) -> anyhow::Result<Verdict> {
    let ckpt = crate::runs::checkpoint(cfg, bucket, &view.record.run_id).await?;
    // The estimate is a bonus: a verdict without it is still a verdict.
    let types = client
        .server_types(&cfg.scaleway.zone)
        .await
        .unwrap_or_default();
    Ok(judge(cfg, view, ckpt.as_ref(), home, &types))
}

/// A phase's output in a few words.
fn detail(phase: Phase, output: &Value) -> String {
    if let Some(skipped) = output["skipped"].as_str() {
        return format!("skipped ({skipped})");
    }
    match phase {
        Phase::Scan => {
            let folders: Vec<&str> = output["libraries"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|l| l["canary_folder"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{} folder(s) scanned: {}",
                folders.len(),
                folders.join(", ")
            )
        }
        Phase::Sonic => format!(
            "{} tracks analysed at {:.0} tracks/h",
            output["analysed"].as_u64().unwrap_or(0)
                - output["analysed_before"].as_u64().unwrap_or(0),
            output["tracks_per_hour"].as_f64().unwrap_or(0.0)
        ),
        _ => String::new(),
    }
}

/// What the real run's Sonic would take on the configured type, from the
/// rate the canary measured. Sonic is CPU-bound: the rate is scaled by the
/// vCPUs of the two types (an assumption, said in the line).
fn real_run_estimate(
    cfg: &BootstrapConfig,
    view: &RunView,
    sonic: &Value,
    types: &std::collections::BTreeMap<String, ServerType>,
) -> Option<String> {
    let rate = sonic["tracks_per_hour"].as_f64().filter(|r| *r > 0.0)?;
    let left = sonic["tracks"]
        .as_u64()?
        .saturating_sub(sonic["analysed_before"].as_u64()?);
    let real = &cfg.scaleway.commercial_type;
    let scale = estimate::vcpu_scale(types, &view.record.commercial_type, real)?;
    let real_rate = rate * scale;
    let hours = left as f64 / real_rate;
    let per_hour = estimate::hourly(types.get(real)?.hourly_price, cfg.scaleway.root_volume_gb);
    Some(format!(
        "  estimate the real run's Sonic on {real}: {left} tracks at about {real_rate:.0} tracks/h = {hours:.1} h, EUR {:.2} ({rate:.0} tracks/h measured on {}, scaled by vCPUs x{scale:.1})",
        hours * per_hour,
        view.record.commercial_type
    ))
}

/// The launch records kept at home: only they are trusted as proof (a
/// run can write its own record in the bucket).
pub fn home_records(cfg: &BootstrapConfig) -> Vec<LaunchRecord> {
    crate::records::run_ids(cfg)
        .unwrap_or_default()
        .iter()
        .filter_map(|id| crate::records::load(cfg, id).ok().flatten())
        .collect()
}

/// The line a real `launch` prints: whether a canary proved this launch's
/// fingerprint, among `records` (the home copies).
pub fn proof(records: &[LaunchRecord], fingerprint: &str) -> String {
    let judged = records
        .iter()
        .filter(|r| r.fingerprint.as_deref() == Some(fingerprint))
        .filter_map(|r| Some((r, r.canary.as_ref()?.verdict.as_ref()?)))
        .max_by(|a, b| a.1.judged_at.cmp(&b.1.judged_at));
    match judged {
        Some((r, v)) if v.passed => format!(
            "  canary     run {} passed at {} with this image recipe, reference and config",
            r.run_id, v.judged_at
        ),
        Some((r, v)) => format!(
            "  canary     WARNING: the last canary with this image recipe, reference and config (run {}) FAILED at {}: `bootstrap status {}` says why",
            r.run_id, v.judged_at, r.run_id
        ),
        None => "  canary     WARNING: no canary has proved this image recipe, reference and config: `bootstrap launch --canary` does, in minutes and for cents".into(),
    }
}
