//! The run report: what a user reads at the end of a run (and what the demo
//! prints). Built from the checkpoint, so a resumed run reports the whole
//! run, not just its last leg.

use std::fmt;

use serde_json::Value;

use super::checkpoint::Checkpoint;
use super::phases::RESULT_ARCHIVE;
use super::{Phase, RunContext};
use crate::plexdb::IntegrityReport;
use crate::plexdb::remap::RemapReport;
use crate::plexdb::stats::Stats;

#[derive(Debug, Clone)]
pub struct Report {
    pub run_id: String,
    pub bucket: String,
    pub reference_key: String,
    pub result_key: String,
    pub manifest_key: String,
    pub phase_seconds: Vec<(Phase, f64)>,
    pub reference_bytes: u64,
    pub pulled_files: u64,
    pub pulled_bytes: u64,
    pub result_bytes: u64,
    pub result_sha256: String,
    pub remap: Option<RemapReport>,
    /// The result DB's check, at package.
    pub integrity: Option<IntegrityReport>,
    pub before: Stats,
    pub after: Stats,
    /// Why the DB was not published as a result, if it was not.
    pub quarantine: Option<String>,
    /// Lines for phases that were skipped, and why.
    pub skipped: Vec<String>,
    /// Sonic: outcome, and tracks per hour.
    pub sonic: Option<(String, f64)>,
}

impl Report {
    pub fn from_checkpoint(ctx: &RunContext, ckpt: &Checkpoint) -> Report {
        Report::of(ckpt, ctx.bucket.name(), ctx.run_key(RESULT_ARCHIVE))
    }

    /// The report of `ckpt`, its objects in `bucket`; `result_key` until
    /// the upload names it.
    pub fn of(ckpt: &Checkpoint, bucket: &str, result_key: String) -> Report {
        let out = |p: Phase| {
            ckpt.record(p)
                .map(|r| r.output.clone())
                .unwrap_or(Value::Null)
        };
        let (boot, pull, verify, remap, package, upload) = (
            out(Phase::Boot),
            out(Phase::Pull),
            out(Phase::Verify),
            out(Phase::Remap),
            out(Phase::Package),
            out(Phase::Upload),
        );
        let u64_of = |v: &Value| v.as_u64().unwrap_or(0);
        let str_of = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Report {
            run_id: ckpt.run_id.clone(),
            bucket: bucket.to_owned(),
            reference_key: str_of(&boot["reference_key"]),
            result_key: upload["archive_key"]
                .as_str()
                .map_or(result_key, str::to_owned),
            manifest_key: str_of(&upload["manifest_key"]),
            phase_seconds: ckpt.done.iter().map(|r| (r.phase, r.seconds)).collect(),
            reference_bytes: u64_of(&boot["reference_bytes"]),
            pulled_files: u64_of(&pull["files"]),
            pulled_bytes: u64_of(&pull["bytes_written"]),
            result_bytes: u64_of(&upload["archive_bytes"]),
            result_sha256: str_of(&upload["archive_sha256"]),
            remap: serde_json::from_value(remap["remap"].clone()).ok(),
            integrity: serde_json::from_value(package["integrity"].clone()).ok(),
            before: serde_json::from_value(verify["stats_before"].clone()).unwrap_or_default(),
            after: serde_json::from_value(package["stats_after"].clone()).unwrap_or_default(),
            quarantine: ckpt.quarantine(),
            skipped: ckpt
                .done
                .iter()
                .filter_map(|r| Some(format!("{}: {}", r.phase, r.output["skipped"].as_str()?)))
                .collect(),
            sonic: ckpt.record(Phase::Sonic).and_then(|r| {
                Some((
                    r.output["outcome"].as_str()?.to_owned(),
                    r.output["tracks_per_hour"].as_f64().unwrap_or(0.0),
                ))
            }),
        }
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.quarantine {
            None => writeln!(f, "plex-burst run {}: done", self.run_id)?,
            Some(why) => {
                writeln!(f, "plex-burst run {}: QUARANTINED", self.run_id)?;
                writeln!(f, "  {why}")?;
                writeln!(
                    f,
                    "  the DB below is for inspection only and will not be installed"
                )?;
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "  reference  s3://{}/{} ({}; {} files, {} extracted)",
            self.bucket,
            self.reference_key,
            mb(self.reference_bytes),
            self.pulled_files,
            mb(self.pulled_bytes)
        )?;
        writeln!(
            f,
            "  result     s3://{}/{} ({})",
            self.bucket,
            self.result_key,
            mb(self.result_bytes)
        )?;
        writeln!(f, "  sha256     {}", self.result_sha256)?;
        writeln!(f, "  manifest   s3://{}/{}", self.bucket, self.manifest_key)?;
        writeln!(f)?;
        write!(f, "  timings   ")?;
        let total: f64 = self.phase_seconds.iter().map(|(_, s)| s).sum();
        for (phase, secs) in &self.phase_seconds {
            write!(f, " {phase} {secs:.1}s")?;
        }
        writeln!(f, "  (total {total:.1}s)")?;
        if let Some(remap) = &self.remap {
            for m in &remap.mappings {
                writeln!(f, "  remap      {} -> {}: {} rows", m.from, m.to, m.total)?;
            }
        }
        if let Some(integrity) = &self.integrity {
            writeln!(f, "  integrity  {integrity}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  {:<22} {:<11} {:>9} {:>9}",
            "library", "type", "before", "after"
        )?;
        for lib in &self.before.libraries {
            let now = self.after.libraries.iter().find(|l| l.id == lib.id);
            for (item_type, count) in &lib.items {
                let after = now
                    .and_then(|l| l.items.get(item_type))
                    .map_or(0, |c| c.live);
                writeln!(
                    f,
                    "  {:<22} {:<11} {:>9} {:>9}",
                    lib.name, item_type, count.live, after
                )?;
            }
        }
        let (b, a) = (self.before.sonic, self.after.sonic);
        if b.tracks > 0 {
            writeln!(
                f,
                "  Sonic analysed: {} of {} tracks before, {} of {} after",
                b.analysed, b.tracks, a.analysed, a.tracks
            )?;
        }
        if let Some((outcome, per_hour)) = &self.sonic {
            writeln!(f, "  Sonic phase: {outcome}, {per_hour:.0} tracks/hour")?;
        }
        for line in &self.skipped {
            writeln!(f, "  skipped    {line}")?;
        }
        Ok(())
    }
}
