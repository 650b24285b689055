//! Installing a run's result into the home Plex without losing anything.
//!
//! Steps: check free space; stop Plex; back up the `Databases` folder
//! (Plex's dated backups left out: they stay in place, `dated.rs`); merge
//! the watch state home recorded since the snapshot into the new DB; remap
//! cloud paths to home paths; check the new DB's integrity; make sure
//! nothing wrote the home DB meanwhile; drop any dated backups the result
//! brought and hard-link home's into it; exchange the folders atomically;
//! start Plex and compare its live counts with the result's. Any failure
//! after the backup stops Plex (if started), links home's dated backups
//! into the backup, puts it back by rename (byte-identical) and starts Plex
//! again.
//!
//! `incoming_dir` is consumed: on success it is gone (swapped in, then the
//! replaced folder removed: the backup holds it, the dated backups live on
//! in the new folder); after a failure before the swap it holds a partly
//! merged DB: extract the result again to retry.
//! Everything blocks: call it from a thread (`spawn_blocking` in async code).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use runner::archive::DatedBackups;
use runner::plexdb::watchstate::{self, WatchStateReport};
use runner::plexdb::{
    IntegrityReport, PathMapping, PlexSqlite, RemapReport, Stats, integrity, remap,
};
use serde::Serialize;

use super::backup::{Backup, BackupError, digest_of};
use super::control::{HomePlex, block_on};
use super::counts::{CountCheck, live_counts, mismatches};
use super::preview::preflight;
pub use super::preview::{InstallPreview, plan_install};
use super::{BLOBS_DB, LIBRARY_DB, dated, swap};

/// Everything an install needs; see [`InstallPlan::new`] for defaults.
#[derive(Debug, Clone)]
pub struct InstallPlan {
    /// The home Plex's `Plug-in Support/Databases`.
    pub databases_dir: PathBuf,
    /// The result, downloaded, verified and extracted on the same
    /// filesystem as `databases_dir`.
    pub incoming_dir: PathBuf,
    /// When the home DB was copied for the run (unix seconds).
    pub snapshot_time: i64,
    /// Cloud path → home path; empty when they are the same.
    pub mappings: Vec<PathMapping>,
    /// The manifest's "after" stats.
    pub expected: Stats,
    /// Backups of the `Databases` folder kept after a success.
    pub keep_backups: usize,
    /// Bounds each wait for Plex to stop or to answer.
    pub plex_timeout: Duration,
    /// Free space the install leaves on the disk Plex lives on; `None`: a
    /// tenth of the free space or 2 GiB, whichever is larger, at most half
    /// of it (`runner::archive::margin`).
    pub free_space_margin: Option<u64>,
    /// Plex's own SQLite, for a full integrity check (lessons.md 18), when
    /// home has it (the container's image, or a native install's).
    pub plex_sqlite: Option<PlexSqlite>,
}

impl InstallPlan {
    pub fn new(
        databases_dir: &Path,
        incoming_dir: &Path,
        snapshot_time: i64,
        expected: Stats,
    ) -> Self {
        InstallPlan {
            databases_dir: databases_dir.to_path_buf(),
            incoming_dir: incoming_dir.to_path_buf(),
            snapshot_time,
            mappings: Vec::new(),
            expected,
            keep_backups: 3,
            plex_timeout: Duration::from_secs(300),
            free_space_margin: None,
            plex_sqlite: None,
        }
    }

    pub(crate) fn home_db(&self) -> PathBuf {
        self.databases_dir.join(LIBRARY_DB)
    }

    pub(crate) fn incoming_db(&self) -> PathBuf {
        self.incoming_dir.join(LIBRARY_DB)
    }
}

/// The steps, as errors and reports name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Preflight,
    StopPlex,
    Backup,
    MergeWatchState,
    Remap,
    IntegrityCheck,
    HomeUnchanged,
    Swap,
    StartPlex,
    VerifyCounts,
    Prune,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Preflight => "checking the result and free space",
            Step::StopPlex => "stopping Plex",
            Step::Backup => "backing up the Databases folder",
            Step::MergeWatchState => "merging the watch state",
            Step::Remap => "remapping paths",
            Step::IntegrityCheck => "checking the new DB's integrity",
            Step::HomeUnchanged => "checking that nothing wrote the home DB",
            Step::Swap => "swapping the Databases folders",
            Step::StartPlex => "starting Plex",
            Step::VerifyCounts => "comparing Plex's counts with the result's",
            Step::Prune => "removing old backups",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Nothing on disk changed (Plex may have been stopped and started).
    #[error("install failed while {step}: {cause}; nothing was changed{}", if *.plex_restarted { " and Plex was restarted" } else { "" })]
    NothingChanged {
        step: Step,
        cause: String,
        plex_restarted: bool,
    },
    #[error("install failed while {step}: {cause}; the previous DB was restored (byte-identical, from {}) and Plex restarted{}", backup.display(), kept_note(.kept))]
    RolledBack {
        step: Step,
        cause: String,
        backup: PathBuf,
        kept: Option<PathBuf>,
    },
    #[error(
        "install failed while {step}: {cause}; the previous DB was restored but Plex did not start again: {start}"
    )]
    RestoredNotStarted {
        step: Step,
        cause: String,
        start: String,
    },
    #[error("install failed while {step}: {cause}; restoring the previous DB failed too ({restore}): it is in {}, put it back as {} by hand", backup.display(), databases_dir.display())]
    RestoreFailed {
        step: Step,
        cause: String,
        restore: String,
        backup: PathBuf,
        databases_dir: PathBuf,
    },
}

fn kept_note(kept: &Option<PathBuf>) -> String {
    kept.as_ref()
        .map(|p| format!("; the folder found in place was kept in {}", p.display()))
        .unwrap_or_default()
}

impl InstallError {
    pub fn step(&self) -> Step {
        match self {
            InstallError::NothingChanged { step, .. }
            | InstallError::RolledBack { step, .. }
            | InstallError::RestoredNotStarted { step, .. }
            | InstallError::RestoreFailed { step, .. } => *step,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepTime {
    pub step: Step,
    #[serde(with = "humantime_serde")]
    pub took: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstallReport {
    pub backup: PathBuf,
    /// Older backups removed to keep `keep_backups`.
    pub pruned: Vec<PathBuf>,
    pub watch_state: WatchStateReport,
    /// `None` without mappings.
    pub remap: Option<RemapReport>,
    pub integrity: IntegrityReport,
    /// Files whose owner or mode was set to the replaced ones'.
    pub ownership_fixed: usize,
    /// Home's dated backups, kept in place (not copied to the backup).
    pub dated_backups_kept: DatedBackups,
    pub counts_checked: Vec<CountCheck>,
    pub plex_version: String,
    pub machine_identifier: String,
    pub durations: Vec<StepTime>,
}

/// A failure after the backup, before the rollback.
struct Failure {
    step: Step,
    cause: String,
    /// A start was attempted: Plex must be stopped before restoring.
    plex_started: bool,
    /// What is in place may hold writes not in the backup: keep it.
    keep_current: bool,
}

impl Failure {
    fn new(step: Step, cause: impl std::fmt::Display) -> Failure {
        Failure {
            step,
            cause: one_line(&cause.to_string()),
            plex_started: false,
            keep_current: false,
        }
    }
}

/// Step timings.
#[derive(Default)]
struct Timer(Vec<StepTime>);

impl Timer {
    fn run<T>(&mut self, step: Step, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = work();
        self.0.push(StepTime {
            step,
            took: started.elapsed(),
        });
        out
    }

    fn record(&mut self, step: Step, started: Instant) {
        self.0.push(StepTime {
            step,
            took: started.elapsed(),
        });
    }
}

/// Installs `plan.incoming_dir` as the home Plex's `Databases` folder.
pub fn install(plan: &InstallPlan, plex: &HomePlex) -> Result<InstallReport, InstallError> {
    let mut timer = Timer::default();
    let nothing = |step, cause: String, plex_restarted| InstallError::NothingChanged {
        step,
        cause: one_line(&cause),
        plex_restarted,
    };
    timer
        .run(Step::Preflight, || {
            preflight(plan).and_then(|space| space.ensure_enough())
        })
        .map_err(|e| nothing(Step::Preflight, e, false))?;

    let started = Instant::now();
    plex.stop_and_wait(plan.plex_timeout)
        .map_err(|e| nothing(Step::StopPlex, e.to_string(), false))?;
    timer.record(Step::StopPlex, started);

    let backup = match timer.run(Step::Backup, || Backup::take(&plan.databases_dir)) {
        Ok(backup) => backup,
        Err(e) => {
            let restarted = plex.start_and_wait(plan.plex_timeout).is_ok();
            return Err(nothing(Step::Backup, e.to_string(), restarted));
        }
    };
    match work(plan, plex, &backup, &mut timer) {
        Ok(report) => Ok(report),
        Err(failure) => Err(rollback(plan, plex, &backup, failure)),
    }
}

/// Everything after the backup; any error is rolled back by the caller.
fn work(
    plan: &InstallPlan,
    plex: &HomePlex,
    backup: &Backup,
    timer: &mut Timer,
) -> Result<InstallReport, Failure> {
    let (home_db, incoming_db) = (plan.home_db(), plan.incoming_db());
    let watch_state = timer
        .run(Step::MergeWatchState, || {
            watchstate::merge(&home_db, &incoming_db, plan.snapshot_time)
        })
        .map_err(|e| Failure::new(Step::MergeWatchState, e))?;

    let remap = if plan.mappings.is_empty() {
        None
    } else {
        let report = timer
            .run(Step::Remap, || remap_incoming(plan))
            .map_err(|e| Failure::new(Step::Remap, e))?;
        Some(report)
    };

    let integrity = timer
        .run(Step::IntegrityCheck, || {
            check_incoming(plan, plan.plex_sqlite.as_ref())
        })
        .map_err(|e| Failure::new(Step::IntegrityCheck, e))?;

    let unchanged = timer
        .run(Step::HomeUnchanged, || digest_of(&plan.databases_dir))
        .map_err(|e| Failure::new(Step::HomeUnchanged, e))?;
    if unchanged != backup.digest() {
        return Err(Failure {
            keep_current: true,
            ..Failure::new(
                Step::HomeUnchanged,
                "the home DB changed while installing; is Plex really stopped?",
            )
        });
    }

    let ownership_fixed = timer
        .run(Step::Swap, || {
            let dropped = dated::remove(&plan.incoming_dir)?;
            if dropped.files > 0 {
                tracing::info!("{dropped} in the result dropped: home's stay");
            }
            let fixed = swap::match_ownership(&plan.databases_dir, &plan.incoming_dir)?;
            // Linked, not moved: they are in the live folder before, during
            // and after the exchange.
            dated::link(&backup.dated, &plan.databases_dir, &plan.incoming_dir)?;
            swap::exchange(&plan.incoming_dir, &plan.databases_dir)?;
            Ok::<_, BackupError>(fixed)
        })
        .map_err(|e| Failure::new(Step::Swap, e))?;
    // The replaced folder is the backup's twin (the backup keeps it) plus
    // links to the dated backups, which live on in the new folder.
    if let Err(e) = std::fs::remove_dir_all(&plan.incoming_dir) {
        tracing::warn!(folder = %plan.incoming_dir.display(), "cannot remove the replaced folder: {e}");
    }

    let started = Instant::now();
    let identity = plex
        .start_and_wait(plan.plex_timeout)
        .map_err(|e| Failure {
            plex_started: true,
            ..Failure::new(Step::StartPlex, e)
        })?;
    timer.record(Step::StartPlex, started);

    let started = Instant::now();
    let after_start = |cause: String| Failure {
        plex_started: true,
        ..Failure::new(Step::VerifyCounts, cause)
    };
    let api = plex.api().map_err(|e| after_start(e.to_string()))?;
    let counts_checked = block_on(|| live_counts(&api, &plan.expected, plan.plex_timeout))
        .map_err(|e| after_start(e.to_string()))?;
    if let Some(problem) = mismatches(&counts_checked) {
        return Err(after_start(problem));
    }
    timer.record(Step::VerifyCounts, started);

    // Installed: a failure to prune is only worth a warning.
    let pruned = timer
        .run(Step::Prune, || backup.prune(plan.keep_backups))
        .unwrap_or_else(|e| {
            tracing::warn!("cannot remove old backups: {e}");
            Vec::new()
        });
    tracing::info!(backup = %backup.path.display(), "new DB installed");
    Ok(InstallReport {
        backup: backup.path.clone(),
        pruned,
        watch_state,
        remap,
        integrity,
        ownership_fixed,
        dated_backups_kept: dated::tally(&backup.dated),
        counts_checked,
        plex_version: identity.version,
        machine_identifier: identity.machine_identifier,
        durations: std::mem::take(&mut timer.0),
    })
}

/// Applies the mappings; the copy `remap` insists on goes to a scratch
/// folder beside the home one, removed afterwards.
pub(super) fn remap_incoming(
    plan: &InstallPlan,
) -> Result<RemapReport, runner::plexdb::PlexDbError> {
    let scratch = plan
        .databases_dir
        .with_file_name(format!(".plex-burst-remap-{}", std::process::id()));
    let result = remap::apply(&plan.incoming_db(), &plan.mappings, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    let mut report = result?;
    report.backup = None;
    Ok(report)
}

/// The library DB's full check, and a plain one for the blobs DB (it has
/// no virtual tables).
pub(super) fn check_incoming(
    plan: &InstallPlan,
    plex_sqlite: Option<&PlexSqlite>,
) -> Result<IntegrityReport, String> {
    let report =
        integrity::check_best(&plan.incoming_db(), plex_sqlite).map_err(|e| e.to_string())?;
    let blobs = plan.incoming_dir.join(BLOBS_DB);
    if blobs.is_file() {
        let conn = runner::plexdb::open_read_only(&blobs).map_err(|e| e.to_string())?;
        let verdict: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| format!("{}: {e}", blobs.display()))?;
        if verdict != "ok" {
            return Err(format!(
                "database is corrupt: {}: {verdict}",
                blobs.display()
            ));
        }
    }
    Ok(report)
}

/// Stops Plex if it was started, puts the backup back by rename, starts
/// Plex; the error says what failed and where things are.
fn rollback(
    plan: &InstallPlan,
    plex: &HomePlex,
    backup: &Backup,
    failure: Failure,
) -> InstallError {
    let Failure {
        step,
        cause,
        plex_started,
        keep_current,
    } = failure;
    tracing::error!(%step, %cause, "install failed: restoring the previous DB");
    let restore_failed = |restore: String| InstallError::RestoreFailed {
        step,
        cause: cause.clone(),
        restore: one_line(&restore),
        backup: backup.path.clone(),
        databases_dir: plan.databases_dir.clone(),
    };
    if plex_started && let Err(e) = plex.stop_and_wait(plan.plex_timeout) {
        return restore_failed(format!("cannot stop Plex: {e}"));
    }
    if let Err(e) = backup.verify() {
        return restore_failed(e.to_string());
    }
    if let Err(e) = dated_into_backup(backup, &plan.databases_dir) {
        return restore_failed(e.to_string());
    }
    let why = if keep_current { "changed" } else { "failed" };
    let aside = match swap::put_back(&backup.path, &plan.databases_dir, why) {
        Ok(aside) => aside,
        Err(e) => return restore_failed(e.to_string()),
    };
    let kept = match aside {
        Some(aside) if keep_current => Some(aside),
        Some(aside) => {
            if let Err(e) = std::fs::remove_dir_all(&aside) {
                tracing::warn!(folder = %aside.display(), "cannot remove the failed folder: {e}");
            }
            None
        }
        None => None,
    };
    if let Err(e) = plex.start_and_wait(plan.plex_timeout) {
        return InstallError::RestoredNotStarted {
            step,
            cause,
            start: one_line(&e.to_string()),
        };
    }
    InstallError::RolledBack {
        step,
        cause,
        backup: backup.path.clone(),
        kept,
    }
}

/// Home's dated backups, from the live folder (the one found, or the new
/// one holding their links), into the backup about to be put back. One that
/// Plex removed meanwhile is gone from home either way.
fn dated_into_backup(backup: &Backup, live: &Path) -> Result<(), BackupError> {
    let (present, gone): (Vec<_>, Vec<_>) = backup
        .dated
        .iter()
        .cloned()
        .partition(|d| live.join(&d.name).is_file());
    for d in &gone {
        tracing::warn!(name = %d.name, "Plex's dated backup is no longer in {}: not restored", live.display());
    }
    dated::link(&present, live, &backup.path)
}

/// Messages are one line: some causes (SQLite's integrity report) span
/// several.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
