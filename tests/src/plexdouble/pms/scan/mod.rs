//! Library scans: walk every location of a section, give every known and
//! every new file a header read with a timeout, then write what that
//! decided (lessons.md rule 1: a file the scanner cannot read counts as
//! gone, which is how a degraded mount empties a library).

mod apply;
mod place;
mod probe;
mod queue;
mod walk;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Result;

pub use queue::{Job, Queue};

use self::apply::{Changes, NewFile};
use self::probe::{Limits, Outcome};
use super::activity;
use super::library::{self, Location};
use super::state::State;
use super::trash::{self, KnownPart};
use super::work::Work;
use super::{analyze, butler, refresh};
use crate::plexdouble::cli::KnownFiles;

/// Header reads in flight at once: enough for 10-20k files in seconds on
/// a local disk.
const LANES: usize = 8;
/// Hung reads after which a scan stops trying the rest of its files.
const MAX_HUNG: usize = 16;
/// Unreadable files named one by one in the log (then only counted).
const LOGGED_FAILURES: usize = 20;

/// The queue's single worker, for the life of the server.
pub fn spawn_worker(state: Arc<State>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("scanner-queue".into())
        .spawn(move || {
            while let Some((job, cancel)) = state.queue.next(&state.stopping) {
                run_job(&state, job, cancel);
                state.queue.finish();
            }
        })
}

fn run_job(state: &Arc<State>, job: Job, cancel: Arc<AtomicBool>) {
    match job {
        Job::Scan {
            section,
            force,
            path,
        } => match scan(state, section, force, path.as_deref(), Arc::clone(&cancel)) {
            Ok(true) => {
                // `force=1` is "Refresh All Metadata": the same scan, then
                // every item's metadata downloaded again.
                if force && let Err(error) = refresh::all_metadata(state, section, cancel) {
                    state.log.error(format!(
                        "Metadata: refresh of section {section} failed: {error:#}"
                    ));
                }
                // lessons.md rule 11: with its Butler pref on, Plex follows
                // a scan with deep analysis on its own.
                if state.flag("ButlerTaskDeepMediaAnalysis") {
                    state
                        .log
                        .info("Butler: ButlerTaskDeepMediaAnalysis is on: starting DeepMediaAnalysis after the scan");
                    butler::start(state, "DeepMediaAnalysis");
                }
            }
            Ok(false) => {}
            Err(error) => state.log.error(format!(
                "Scanner: scan of section {section} failed: {error:#}"
            )),
        },
        Job::Analyze { section } => {
            if let Err(error) = analyze::section(state, section, cancel) {
                state
                    .log
                    .error(format!("Analysis of section {section} failed: {error:#}"));
            }
        }
    }
}

/// Where a probed file came from.
enum Target {
    Known(usize),
    New(usize),
}

/// One scan; true when it ran to the end.
fn scan(
    state: &State,
    section_id: i64,
    force: bool,
    path: Option<&Path>,
    cancel: Arc<AtomicBool>,
) -> Result<bool> {
    if state.faults.crash_on_scan {
        state
            .log
            .error("fault crash-on-scan: aborting as the first scan starts");
        std::process::abort();
    }
    let Some(section) = state.db.read(|conn| library::load(conn, section_id))? else {
        state
            .log
            .warn(format!("Scanner: section {section_id} no longer exists"));
        return Ok(false);
    };
    let mut args = vec![
        "--scan".to_string(),
        "--section".into(),
        section_id.to_string(),
    ];
    if force {
        args.push("--force".into());
    }
    if let Some(path) = path {
        args.extend(["--directory".into(), path.display().to_string()]);
    }
    let work = Work::begin(
        state,
        activity::SCAN,
        format!("Scanning {}", section.name),
        Some(section_id),
        Some(args),
        cancel,
    );
    work.activity.progress(0);
    state.log.info(format!(
        "Scanner: scanning section {section_id} '{}' (force={}, path={})",
        section.name,
        u8::from(force),
        path.map_or("all locations".into(), |p| p.display().to_string())
    ));
    if state.faults.stuck_activity {
        work.freeze(state, &format!("the scan of section {section_id}"));
        return Ok(false);
    }

    // Walk.
    let scopes: Vec<(usize, &Location, PathBuf)> = section
        .locations
        .iter()
        .enumerate()
        .filter_map(|(rank, location)| match path {
            None => Some((rank, location, PathBuf::from(&location.path))),
            Some(path) if path.starts_with(&location.path) => {
                Some((rank, location, path.to_path_buf()))
            }
            Some(_) => None,
        })
        .collect();
    let extensions = walk::extensions(section.section_type);
    let mut changes = Changes::default();
    let mut listed: Vec<(usize, &Location, PathBuf)> = Vec::new();
    let mut offline_dirs: Vec<&Path> = Vec::new();
    work.activity.subtitle("Listing files".into());
    for (rank, location, dir) in &scopes {
        match walk::media_files(dir, extensions) {
            Ok(files) => listed.extend(files.into_iter().map(|f| (*rank, *location, f))),
            Err(error) => {
                state.log.warn(format!(
                    "Scanner: {} cannot be listed ({error}): its items are marked unavailable, never deleted",
                    dir.display()
                ));
                if dir == Path::new(&location.path) {
                    changes.offline_locations.push(location.id);
                }
                offline_dirs.push(dir);
            }
        }
    }
    if work.stopped() {
        state
            .log
            .info(format!("Scanner: scan of section {section_id} cancelled"));
        return Ok(false);
    }

    // Every known file under the scanned folders, and every new one, gets
    // a header read.
    let known: Vec<KnownPart> = state
        .db
        .read(|conn| trash::known_parts(conn, section_id))?
        .into_iter()
        .filter(|part| {
            scopes
                .iter()
                .any(|(_, _, dir)| Path::new(&part.file).starts_with(dir))
        })
        .collect();
    let known_files: HashSet<&str> = known.iter().map(|p| p.file.as_str()).collect();
    let listed_files: HashSet<&Path> = match state.config.known_files {
        KnownFiles::Read => HashSet::new(),
        KnownFiles::Listed => listed.iter().map(|(_, _, f)| f.as_path()).collect(),
    };
    let mut targets = Vec::new();
    let mut paths = Vec::new();
    for (i, part) in known.iter().enumerate() {
        if offline_dirs
            .iter()
            .any(|d| Path::new(&part.file).starts_with(d))
        {
            if !part.deleted {
                changes.offline.push(part.clone());
            }
            continue;
        }
        if listed_files.contains(Path::new(&part.file)) {
            if part.deleted {
                changes.restore.push(part.clone());
            }
            continue;
        }
        targets.push(Target::Known(i));
        paths.push(PathBuf::from(&part.file));
    }
    for (j, (_, _, file)) in listed.iter().enumerate() {
        if !known_files.contains(file.to_string_lossy().as_ref()) {
            targets.push(Target::New(j));
            paths.push(file.clone());
        }
    }
    work.activity
        .subtitle(format!("Reading {} files", paths.len()));
    let total = paths.len().max(1);
    let limits = Limits {
        timeout: state.config.header_timeout,
        lanes: LANES,
        max_hung: MAX_HUNG,
    };
    let outcomes = probe::probe_all(&paths, limits, &|| work.stopped(), &|done| {
        work.activity.progress((done * 90 / total) as i64)
    });
    if work.stopped() {
        state
            .log
            .info(format!("Scanner: scan of section {section_id} cancelled"));
        return Ok(false);
    }

    // Decide.
    let (mut unreadable, mut timed_out, mut not_tried) = (0, 0, 0);
    for ((target, outcome), path) in targets.iter().zip(&outcomes).zip(&paths) {
        if outcome.size().is_none() {
            unreadable += 1;
            match outcome {
                Outcome::TimedOut => timed_out += 1,
                Outcome::NotTried => not_tried += 1,
                _ => {}
            }
            if unreadable <= LOGGED_FAILURES {
                state.log.warn(format!(
                    "Scanner: cannot read {}: {}",
                    path.display(),
                    describe(outcome, state.config.header_timeout)
                ));
            }
        }
        match (target, outcome.size()) {
            (Target::Known(i), Some(_)) if known[*i].deleted => {
                changes.restore.push(known[*i].clone())
            }
            (Target::Known(_), Some(_)) => {}
            (Target::Known(i), None) if !known[*i].deleted => changes.gone.push(known[*i].clone()),
            (Target::Known(_), None) => {}
            (Target::New(j), Some(size)) => {
                let (rank, location, file) = &listed[*j];
                changes.new.push(NewFile {
                    location: (*location).clone(),
                    location_rank: *rank,
                    path: file.clone(),
                    size,
                });
            }
            (Target::New(_), None) => {}
        }
    }

    // Write.
    let auto_empty = state.flag("autoEmptyTrash");
    let count = changes.count().max(1);
    let summary = apply::apply(
        &state.db,
        &section,
        &changes,
        auto_empty,
        &|| work.stopped(),
        &|done| work.activity.progress(90 + (done * 10 / count) as i64),
    )?;
    state.log.info(format!(
        "Scanner: section {section_id} '{}' {}: {} files read, {} unreadable ({timed_out} timed out, {not_tried} not tried), {} added, {} restored, {} marked unavailable, {} items deleted by emptying the trash (autoEmptyTrash={})",
        section.name,
        if work.stopped() { "cancelled" } else { "done" },
        paths.len() - unreadable,
        unreadable,
        summary.added,
        summary.restored,
        summary.marked,
        summary.purged,
        u8::from(auto_empty)
    ));
    // Plex goes on with the new items after the scan's activity ends.
    state.metadata.enqueue(section_id, &summary.inserted);
    Ok(!work.stopped())
}

fn describe(outcome: &Outcome, timeout: Duration) -> String {
    match outcome {
        Outcome::Readable(_) => "readable".into(),
        Outcome::Missing => "no such file".into(),
        Outcome::Failed(reason) => reason.clone(),
        Outcome::TimedOut => format!("no data within {}", humantime::format_duration(timeout)),
        Outcome::NotTried => "not tried: too many reads of this scan hung".into(),
        Outcome::Stopped => "not tried: scan stopped".into(),
    }
}
