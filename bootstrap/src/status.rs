//! `bootstrap status [RUN] [--watch]`: where a run is (phase, progress,
//! Sonic rate and ETA, cost so far, last error) from its `status.json` and
//! its server's state; runs past their deadline and resources left behind
//! are flagged. Without RUN, one line per run. `--link` / `--open`: the
//! run's report page (`runner::run::page`) by a presigned URL.

use std::time::{Duration, SystemTime};

use anyhow::Result;

use runner::run::status::{RunState, Status};
use runner::s3::Bucket;
use runner::scaleway::{Client, Server};

use crate::cloud;
use crate::config::BootstrapConfig;
use crate::estimate;
use crate::runs::{self, LaunchRecord, LaunchState, Outcome};

/// Everything known about one run right now.
pub struct RunView {
    pub record: LaunchRecord,
    pub status: Option<Status>,
    pub outcome: Outcome,
    /// `None`: the server no longer exists.
    pub server: Option<Server>,
    /// The root volume, when it outlived the server (billed).
    pub leftover_volume: Option<String>,
    /// The last lines of the runner's log, once the run shipped its logs.
    pub log_tail: Vec<String>,
}

impl RunView {
    pub async fn load(
        cfg: &BootstrapConfig,
        client: &Client,
        bucket: &Bucket,
        record: LaunchRecord,
    ) -> Result<RunView> {
        let zone = &cfg.scaleway.zone;
        let status = runs::status(cfg, bucket, &record.run_id).await?;
        let outcome = runs::outcome(cfg, bucket, &record.run_id).await?;
        let server = match &record.server_id {
            Some(id) => client.get_server(zone, id).await?,
            None => None,
        };
        let leftover_volume = match (&server, &record.root_volume_id) {
            (None, Some(v)) => client.get_volume(zone, v).await?.map(|v| v.id),
            _ => None,
        };
        // The log is a bonus: a status without it is still a status.
        let log_tail = bucket
            .get_tail(
                &cfg.run_key(&record.run_id, "logs/runner.log"),
                LOG_TAIL_BYTES,
            )
            .await
            .ok()
            .flatten()
            .map(|bytes| last_lines(&String::from_utf8_lossy(&bytes), LOG_TAIL_LINES))
            .unwrap_or_default();
        Ok(RunView {
            record,
            status,
            outcome,
            server,
            leftover_volume,
            log_tail,
        })
    }

    /// Finished as far as the runner is concerned.
    pub fn finished(&self) -> bool {
        self.outcome != Outcome::Pending
            || self
                .status
                .as_ref()
                .is_some_and(|s| s.state != RunState::Running)
    }

    /// When billing stopped (the server is gone), else now.
    fn billed_until(&self) -> SystemTime {
        match (&self.server, &self.status) {
            (None, Some(s)) => humantime::parse_rfc3339(&s.updated_at).unwrap_or(SystemTime::now()),
            _ => SystemTime::now(),
        }
    }

    pub fn cost_so_far(&self) -> f64 {
        let hours = self.record.hours_until(self.billed_until());
        let per_hour = estimate::hourly(
            self.record.hourly_price.unwrap_or(0.0),
            self.record.root_volume_gb,
        );
        hours * per_hour
    }

    /// Things the user must know about: money still being spent.
    pub fn flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        let past_deadline = self
            .record
            .deadline_time()
            .is_some_and(|d| SystemTime::now() > d);
        if self.server.is_some() && past_deadline {
            flags.push(
                "PAST DEADLINE and the server still exists (billed): `bootstrap sweep`".into(),
            );
        } else if self.server.is_some() && self.finished() {
            flags.push("finished but the server still exists (billed): `bootstrap fetch` or `bootstrap sweep`".into());
        }
        if let Some(v) = &self.leftover_volume {
            flags.push(format!(
                "root volume {v} outlived the server (billed): `bootstrap fetch` deletes it"
            ));
        }
        if self.record.state == LaunchState::Creating {
            flags.push(
                "launch interrupted: the next `bootstrap launch` or `bootstrap sweep` cleans it"
                    .into(),
            );
        }
        flags
    }

    fn state_word(&self) -> String {
        match (self.record.state, self.outcome, &self.status) {
            (LaunchState::Fetched, _, _) => "fetched".into(),
            (LaunchState::Abandoned, _, _) => "abandoned".into(),
            (_, Outcome::Done, _) => "done".into(),
            (_, Outcome::Quarantined, _) => "quarantined".into(),
            (_, _, Some(s)) => format!("{:?}", s.state).to_lowercase(),
            (LaunchState::Creating, _, None) => "launching".into(),
            (_, _, None) => match &self.server {
                Some(s) => format!("booting ({})", s.state),
                None => "no status (server gone)".into(),
            },
        }
    }

    /// One line for the list.
    pub fn line(&self) -> String {
        let phase = self
            .status
            .as_ref()
            .and_then(|s| s.phase.map(|p| p.to_string()))
            .unwrap_or_else(|| "-".into());
        let flag = if self.flags().is_empty() { "" } else { "  (!)" };
        format!(
            "{:<20} {:<14} {:<10} EUR {:>7.2}{flag}",
            self.record.run_id,
            self.state_word(),
            phase,
            self.cost_so_far()
        )
    }

    /// The full picture of one run.
    pub fn details(&self) -> String {
        let mut out = vec![
            format!("run        {}", self.record.run_id),
            format!("state      {}", self.state_word()),
        ];
        if let Some(s) = &self.status {
            if let Some(phase) = s.phase {
                out.push(format!(
                    "phase      {phase} (done: {})",
                    join(&s.phases_done)
                ));
            }
            if let Some(detail) = &s.detail {
                out.push(format!("doing      {detail}"));
            }
            if let Some(sonic) = &s.sonic {
                let pct = if sonic.tracks > 0 {
                    100.0 * sonic.analysed as f64 / sonic.tracks as f64
                } else {
                    0.0
                };
                out.push(format!(
                    "sonic      {}/{} tracks ({pct:.1}%), {:.0} tracks/h, ETA {}",
                    sonic.analysed,
                    sonic.tracks,
                    sonic.tracks_per_hour,
                    sonic.eta.as_deref().unwrap_or("unknown")
                ));
            }
            if let Some(q) = &s.quarantine {
                out.push(format!("quarantine {q}"));
            }
            if let Some(e) = &s.last_error {
                out.push(format!("last error {e}"));
            }
            out.push(format!("updated    {}", s.updated_at));
        }
        match &self.server {
            Some(server) => out.push(format!(
                "server     {} {} ({})",
                server.id, server.state, self.record.commercial_type
            )),
            None => out.push("server     gone (billing stopped)".into()),
        }
        match &self.record.actual {
            Some(actual) => out.push(format!(
                "cost       {} (launched {})",
                crate::cost::compared(actual, self.record.estimate.as_ref())
                    .trim_start_matches("cost: "),
                self.record.launched_at
            )),
            None => out.push(format!(
                "cost       EUR {:.2} so far (launched {}, deadline {})",
                self.cost_so_far(),
                self.record.launched_at,
                self.record.deadline
            )),
        }
        if let Some(e) = &self.record.estimate {
            out.push(format!("estimate   {e}, made at launch"));
        }
        for flag in self.flags() {
            out.push(format!("(!)        {flag}"));
        }
        if !self.log_tail.is_empty() {
            out.push("log        (the end of the runner's log, shipped when the run ended)".into());
            out.extend(self.log_tail.iter().map(|l| format!("  | {l}")));
        }
        out.join("\n")
    }
}

/// How much of the shipped runner log `status` reads, and shows.
const LOG_TAIL_BYTES: u64 = 8 * 1024;
const LOG_TAIL_LINES: usize = 8;

fn last_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn status(
    cfg: &BootstrapConfig,
    run: Option<&str>,
    watch: Option<Duration>,
) -> Result<()> {
    let client = cloud::client(cfg)?;
    let bucket = cloud::bucket(cfg);
    let Some(run_id) = run else {
        let records = runs::all(cfg, &bucket).await?;
        if records.is_empty() {
            println!("no runs yet: `bootstrap launch` starts one");
        }
        for record in records {
            println!(
                "{}",
                RunView::load(cfg, &client, &bucket, record).await?.line()
            );
        }
        return Ok(());
    };
    let mut failed = 0;
    loop {
        let finished = match show(cfg, &client, &bucket, run_id).await {
            Ok(finished) => {
                failed = 0;
                finished
            }
            // A watch outlives a failed look (the bucket briefly down, an
            // object read while it was replaced): said, and tried again.
            Err(e) if watch.is_some() && failed < WATCH_FAILURES => {
                failed += 1;
                eprintln!("warning: {e:#}; trying again ({failed} of {WATCH_FAILURES})");
                false
            }
            Err(e) => return Err(e),
        };
        match watch {
            Some(every) if !finished => {
                println!();
                tokio::time::sleep(every).await;
            }
            _ => return Ok(()),
        }
    }
}

/// Failed looks in a row after which `status --watch` gives up.
const WATCH_FAILURES: u32 = 5;

/// Prints where `run_id` is; answers whether it is over.
async fn show(
    cfg: &BootstrapConfig,
    client: &Client,
    bucket: &Bucket,
    run_id: &str,
) -> Result<bool> {
    let record = LaunchRecord::load(cfg, bucket, run_id).await?;
    let view = RunView::load(cfg, client, bucket, record).await?;
    println!("{}", view.details());
    // A canary's verdict: the one `fetch --canary` recorded, else as
    // things stand.
    if let Some(canary) = &view.record.canary {
        let verdict = match &canary.verdict {
            Some(v) => v.clone(),
            None => crate::canary::judge_now(cfg, client, bucket, &view, None).await?,
        };
        println!("{}", verdict.lines.join("\n"));
    }
    Ok(view.finished())
}

/// How long a `status --link` URL works: long enough to read a run's page
/// over an evening, short enough that a link pasted somewhere soon stops
/// opening it (keep `--link`'s help in step).
pub const LINK_VALIDITY: Duration = Duration::from_secs(6 * 3600);

/// `status RUN --link` / `--open`: prints a presigned GET of the run's
/// report page; `open` also hands it to the desktop's opener.
pub async fn report_link(cfg: &BootstrapConfig, run_id: &str, open: bool) -> Result<()> {
    let bucket = cloud::bucket(cfg);
    let key = cfg.run_key(run_id, runner::run::page::KEY);
    if bucket.head(&key).await?.is_none() {
        anyhow::bail!(
            "run {run_id} has no report page yet (s3://{}/{key}): its runner writes one at its first status update",
            bucket.name()
        );
    }
    let url = bucket.presign_get(&key, LINK_VALIDITY).await?;
    println!("{url}");
    if open {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        match std::process::Command::new(opener).arg(&url).status() {
            Ok(s) if s.success() => {}
            Ok(s) => eprintln!("{opener} failed ({s}): open the link above by hand"),
            Err(e) => eprintln!("cannot run {opener} ({e}): open the link above by hand"),
        }
    }
    Ok(())
}
