//! `runs/<run-id>/status.json`: what `bootstrap status` reads while a run is
//! under way, and what is left behind when it ends. Never holds a secret: it
//! is built only from phase names, counters and error lines.

use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use super::phase::Phase;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Failed,
    Succeeded,
    /// Finished, but a library lost items beyond the guard: the DB is in
    /// S3 for inspection and is never offered for installation.
    Quarantined,
}

/// Sonic progress, counted in the DB (lessons.md 14).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SonicStatus {
    pub analysed: u64,
    pub tracks: u64,
    /// Over the recent window.
    pub tracks_per_hour: f64,
    /// `None` while no rate is known.
    pub eta: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub run_id: String,
    pub state: RunState,
    /// The phase under way, or the one that failed.
    pub phase: Option<Phase>,
    pub phases_done: Vec<Phase>,
    pub started_at: String,
    pub updated_at: String,
    pub runner_version: String,
    pub last_error: Option<String>,
    /// Where the result is, once uploaded.
    pub result_key: Option<String>,
    /// What the phase under way is doing, in a line.
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub sonic: Option<SonicStatus>,
    /// Why the run is quarantined.
    #[serde(default)]
    pub quarantine: Option<String>,
    /// What went wrong without stopping the run (e.g. its user data could
    /// not be deleted from the metadata service).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The machine identifier of the run's Plex once claimed: home removes
    /// that server from the plex.tv account (after checking it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plex_server: Option<String>,
}

impl Status {
    pub fn new(run_id: &str) -> Self {
        let now = now_rfc3339();
        Status {
            run_id: run_id.to_owned(),
            state: RunState::Running,
            phase: None,
            phases_done: Vec::new(),
            started_at: now.clone(),
            updated_at: now,
            runner_version: env!("CARGO_PKG_VERSION").to_owned(),
            last_error: None,
            result_key: None,
            detail: None,
            sonic: None,
            quarantine: None,
            warnings: Vec::new(),
            plex_server: None,
        }
    }

    /// Records a problem that does not stop the run.
    pub fn warn(&mut self, warning: String) {
        if !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }

    /// Brings the status up to `ckpt` with `phase` under way.
    pub fn enter(&mut self, ckpt: &Checkpoint, phase: Phase) {
        self.phases_done = ckpt.done.iter().map(|r| r.phase).collect();
        self.phase = Some(phase);
        self.state = RunState::Running;
        self.last_error = None;
        self.detail = None;
        self.updated_at = now_rfc3339();
    }

    /// What the phase is doing now.
    pub fn describe(&mut self, detail: String) {
        self.detail = Some(detail);
        self.updated_at = now_rfc3339();
    }

    pub fn fail(&mut self, error: &anyhow::Error) {
        self.state = RunState::Failed;
        // One line: the chain of causes, as the log shows it.
        self.last_error = Some(format!("{error:#}").replace('\n', " "));
        self.updated_at = now_rfc3339();
    }

    pub fn succeed(&mut self, ckpt: &Checkpoint, result_key: String) {
        self.phases_done = ckpt.done.iter().map(|r| r.phase).collect();
        self.phase = None;
        self.detail = None;
        self.quarantine = ckpt.quarantine();
        self.state = if self.quarantine.is_some() {
            RunState::Quarantined
        } else {
            RunState::Succeeded
        };
        self.result_key = Some(result_key);
        self.updated_at = now_rfc3339();
    }

    /// The JSON, masked: an error line may quote a URL or a header.
    pub fn to_json(&self) -> Vec<u8> {
        crate::mask::bytes(&serde_json::to_vec_pretty(self).expect("status serializes"))
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
