//! The run's ledger on the instance: which phases are done, and what they
//! produced that later phases need. Written atomically with a generation
//! number, so a runner killed at any moment finds either the old or the new
//! checkpoint, never a torn one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::phase::Phase;
use super::usage::Usage;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub run_id: String,
    /// Bumped on every save; tells which copy is newer.
    pub generation: u64,
    /// When the run first started (Unix seconds): the run's deadline counts
    /// from here across restarts.
    pub started_unix: u64,
    pub done: Vec<PhaseRecord>,
    /// The last DB snapshot uploaded during Sonic: where a replacement
    /// instance starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotRecord>,
}

/// A consistent copy of the live DB in S3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRecord {
    pub archive_key: String,
    pub taken_at: String,
    /// Sonic-analysed tracks in it.
    pub analysed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseRecord {
    pub phase: Phase,
    pub finished_at: String,
    pub seconds: f64,
    /// The runner's own CPU and peak memory in the phase (absent in
    /// checkpoints of older runners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// What the phase hands to later ones and to the report.
    #[serde(default)]
    pub output: serde_json::Value,
}

impl Checkpoint {
    pub fn new(run_id: &str) -> Self {
        Checkpoint {
            run_id: run_id.to_owned(),
            generation: 0,
            started_unix: unix_now(),
            done: Vec::new(),
            snapshot: None,
        }
    }

    /// Why the run is quarantined, if it is: a scan or the final check
    /// found a library that lost items beyond the guard.
    pub fn quarantine(&self) -> Option<String> {
        [Phase::Scan, Phase::Package]
            .into_iter()
            .filter_map(|p| self.record(p))
            .find_map(|r| r.output["quarantine"].as_str().map(str::to_owned))
    }

    /// Makes a checkpoint mirrored by another instance resume on this one
    /// from its last DB snapshot: the phases that built instance state
    /// (boot, pull) run again, pull fetching the snapshot; what the DB
    /// already holds (verify's baseline, remap, scans) stays done.
    pub fn adopt_for_replacement(&mut self) {
        self.done.retain(|r| {
            matches!(
                r.phase,
                Phase::Verify | Phase::Remap | Phase::Scan | Phase::Analysis
            )
        });
    }

    pub fn is_done(&self, phase: Phase) -> bool {
        self.done.iter().any(|r| r.phase == phase)
    }

    pub fn record(&self, phase: Phase) -> Option<&PhaseRecord> {
        self.done.iter().find(|r| r.phase == phase)
    }

    /// The first phase not yet done, or `None` when the run is complete.
    pub fn next_phase(&self) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| !self.is_done(*p))
    }

    /// Records a phase as done. Phases finish in order; anything else is a bug
    /// in the state machine, not a condition to carry on from.
    pub fn complete(
        &mut self,
        phase: Phase,
        seconds: f64,
        usage: Option<Usage>,
        output: serde_json::Value,
    ) -> Result<()> {
        if self.next_phase() != Some(phase) {
            bail!(
                "phase {phase} cannot finish now: the next phase due is {}",
                self.next_phase().map_or("none", Phase::name)
            );
        }
        self.done.push(PhaseRecord {
            phase,
            finished_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string(),
            seconds,
            usage,
            output,
        });
        Ok(())
    }

    /// Forgets `phase` and every phase after it (their results are no longer
    /// valid, e.g. the pulled folder vanished).
    pub fn rewind_to(&mut self, phase: Phase) {
        self.done.retain(|r| r.phase < phase);
    }

    /// Loads the checkpoint at `path`; `None` if there is none yet.
    pub fn load(path: &Path) -> Result<Option<Checkpoint>> {
        let text = match fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read checkpoint {}", path.display()));
            }
        };
        let ckpt = serde_json::from_slice(&text).with_context(|| {
            format!(
                "checkpoint {} is unreadable (delete it to start the run over)",
                path.display()
            )
        })?;
        Ok(Some(ckpt))
    }

    /// Writes the checkpoint atomically: temp file, fsync, rename, fsync of
    /// the folder.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.generation += 1;
        let json = serde_json::to_vec_pretty(self)?;
        write_atomically(path, &json)
            .with_context(|| format!("cannot write checkpoint {}", path.display()))
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new
/// content, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp: PathBuf = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_at_the_first_unfinished_phase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.json");
        assert!(Checkpoint::load(&path).unwrap().is_none());

        let mut c = Checkpoint::new("r1");
        c.complete(Phase::Boot, 0.1, None, serde_json::Value::Null)
            .unwrap();
        let usage = Usage {
            cpu_seconds: 1.5,
            peak_rss_mb: 90.2,
        };
        c.complete(
            Phase::Pull,
            2.0,
            Some(usage),
            serde_json::json!({"bytes": 42}),
        )
        .unwrap();
        c.save(&path).unwrap();

        let back = Checkpoint::load(&path).unwrap().unwrap();
        assert_eq!(back.generation, 1);
        assert_eq!(back.next_phase(), Some(Phase::Verify));
        assert_eq!(back.record(Phase::Pull).unwrap().output["bytes"], 42);
        assert_eq!(back.record(Phase::Pull).unwrap().usage, Some(usage));
        assert!(
            !dir.path().read_dir().unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp-"))
        );
    }

    #[test]
    fn phases_finish_only_in_order() {
        let mut c = Checkpoint::new("r1");
        assert!(
            c.complete(Phase::Pull, 0.0, None, serde_json::Value::Null)
                .is_err()
        );
        c.complete(Phase::Boot, 0.0, None, serde_json::Value::Null)
            .unwrap();
        assert!(
            c.complete(Phase::Boot, 0.0, None, serde_json::Value::Null)
                .is_err()
        );
    }

    #[test]
    fn rewind_forgets_later_phases() {
        let mut c = Checkpoint::new("r1");
        for p in [Phase::Boot, Phase::Pull, Phase::Verify] {
            c.complete(p, 0.0, None, serde_json::Value::Null).unwrap();
        }
        c.rewind_to(Phase::Pull);
        assert_eq!(c.next_phase(), Some(Phase::Pull));
    }

    #[test]
    fn a_torn_checkpoint_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.json");
        fs::write(&path, b"{\"run_id\": \"r1\", \"gener").unwrap();
        let err = format!("{:#}", Checkpoint::load(&path).unwrap_err());
        assert!(err.contains("unreadable"), "{err}");
    }
}
