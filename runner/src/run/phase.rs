//! The phases of a run, in order. A run walks them front to back; a restarted
//! runner resumes at the first one its checkpoint does not record as done.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Deadlines;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Config loaded, work folder ready, S3 reachable.
    Boot,
    /// Reference archive streamed from S3 into the `Databases` folder.
    Pull,
    /// Integrity check and the "before" statistics.
    Verify,
    /// Home paths rewritten to the instance's mount; coverage checked.
    Remap,
    /// Media mounted, Plex started; each library scanned in turn, with the
    /// deletion guard after each scan.
    Scan,
    /// Optional media analysis, one library at a time.
    Analysis,
    /// Sonic analysis of music tracks, with periodic DB snapshots to S3.
    Sonic,
    /// Plex stopped and signed out, the mount stopped, the WAL checkpointed.
    Stop,
    /// DB quiesced and checked again; "after" statistics; deletion guard.
    Package,
    /// Archive streamed to S3, manifest written, then `DONE`.
    Upload,
}

impl Phase {
    pub const ALL: [Phase; 10] = [
        Phase::Boot,
        Phase::Pull,
        Phase::Verify,
        Phase::Remap,
        Phase::Scan,
        Phase::Analysis,
        Phase::Sonic,
        Phase::Stop,
        Phase::Package,
        Phase::Upload,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Boot => "boot",
            Phase::Pull => "pull",
            Phase::Verify => "verify",
            Phase::Remap => "remap",
            Phase::Scan => "scan",
            Phase::Analysis => "analysis",
            Phase::Sonic => "sonic",
            Phase::Stop => "stop",
            Phase::Package => "package",
            Phase::Upload => "upload",
        }
    }

    /// The phase's own time budget, if it has one; every phase is also
    /// bounded by the run's deadline. Scan budgets are per library, and
    /// Sonic ends itself at its deadline (what it did is kept).
    pub fn budget(self, deadlines: &Deadlines) -> Option<Duration> {
        match self {
            Phase::Pull => Some(deadlines.pull),
            Phase::Analysis => Some(deadlines.analysis),
            Phase::Upload => Some(deadlines.upload),
            Phase::Boot
            | Phase::Verify
            | Phase::Remap
            | Phase::Scan
            | Phase::Sonic
            | Phase::Stop
            | Phase::Package => None,
        }
    }

    /// Phases that need Plex and the media mount.
    pub fn needs_plex(self) -> bool {
        matches!(self, Phase::Scan | Phase::Analysis | Phase::Sonic)
    }

    /// The phases that must be done before this one may start.
    pub fn prerequisites(self) -> &'static [Phase] {
        let i = Phase::ALL.iter().position(|p| *p == self).unwrap_or(0);
        &Phase::ALL[..i]
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_the_declared_order() {
        let mut sorted = Phase::ALL;
        sorted.sort();
        assert_eq!(sorted, Phase::ALL);
        assert_eq!(Phase::Boot.prerequisites(), &[]);
        assert_eq!(Phase::Verify.prerequisites(), &[Phase::Boot, Phase::Pull]);
    }

    #[test]
    fn names_round_trip_through_serde() {
        for p in Phase::ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
            assert_eq!(serde_json::from_str::<Phase>(&json).unwrap(), p);
        }
    }
}
