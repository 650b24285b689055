//! The scan phase: one library at a time (lessons.md 17), each behind a
//! mount health gate, watched until Plex is idle, bounded by its type's
//! budget and by stall detection, and followed by the deletion guard.
//!
//! What each library is asked, and why:
//! - the scan: `refresh` without `force`, Plex's "Scan Library Files";
//! - `phases.deep_scan`: that scan, then one partial scan (`path=`) per
//!   folder at the top of each location, all queued at once (Plex runs
//!   them one at a time) and watched as one. Plex's section scan only
//!   looks into folders it believes changed, and on the media mount folder
//!   times do not follow what moved in the bucket (object stores have no
//!   folders: rclone shows times of its own, rclone/rclone issues 940 and
//!   6986). A partial scan is how Plex is told a folder changed: its own
//!   file-system events do it (`FSEventLibraryPartialScanEnabled`, "only
//!   scan the folder that changed" in a real server's `/:/prefs`), as do
//!   python-plexapi's `LibrarySection.update(path=)` and tools such as
//!   plex_autoscan. Whether a partial scan also re-reads the unchanged
//!   folders under the one named is UNCONFIRMED; a request per top folder
//!   names as much as can be named without thousands of requests;
//! - `phases.refresh_metadata`: `force=1`, "Refresh All Metadata" (a scan,
//!   then every item's metadata downloaded again: hours for 450k tracks),
//!   under its own budget, `deadlines.refresh_metadata`. Never part of a
//!   scan;
//! - a canary (`[canary]`): only a partial scan of one folder (`canary.rs`).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use super::RunContext;
use super::session::{Session, call};
use super::watch::{Progress, Watch};
use super::{canary, guard};
use crate::config::{LibraryType, Mode};
use crate::plex::api::Section;
use crate::plexdb::stats::{self, LibraryStats, Stats};

/// One library's scan, for the report.
#[derive(Debug, Serialize)]
struct Scanned {
    library: String,
    section: String,
    seconds: f64,
    /// Partial scans (`phases.deep_scan`, a canary's one folder).
    folders: usize,
    /// A canary's one folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    canary_folder: Option<String>,
    /// `phases.refresh_metadata`: how long the refresh took.
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_refresh_seconds: Option<f64>,
    remounts: u32,
    before: std::collections::BTreeMap<String, u64>,
    after: std::collections::BTreeMap<String, u64>,
    /// The deletion guard's verdict on this library's scan.
    guard: guard::Verdict,
}

pub(super) async fn run(ctx: &RunContext) -> Result<Value> {
    if !ctx.cfg.phases().scan {
        return Ok(json!({ "skipped": "phases.scan = false" }));
    }
    let mut guard = ctx.session().await?;
    let session = guard.as_mut().context("no Plex session")?;
    if let Mode::Scratch { libraries } = ctx.cfg.mode() {
        create_libraries(session, libraries).await?;
    }
    let preflight = session.preflight();
    if preflight["missing"].as_u64().unwrap_or(0) > 0 {
        tracing::warn!(
            "{} of {} sampled DB files are missing from the bucket (renamed or removed since the reference?): phases.deep_scan finds reorganised folders",
            preflight["missing"],
            preflight["anchors_total"]
        );
    }
    let sections = selected_sections(ctx, session).await?;
    let mut scanned = Vec::new();
    // Each library's "before" is the last one's "after": Plex was idle
    // from one to the other (a watch ends when nothing is left to do),
    // and on the user's DB each count is seconds of reading.
    let mut before = db_stats(ctx).await?;
    for section in &sections {
        let kind = library_type(&section.kind)?;
        let budget = ctx.cfg.deadlines().scan_for(kind);
        let folders = match (ctx.cfg.canary(), ctx.cfg.phases().deep_scan) {
            (Some(c), _) => vec![canary::folder(ctx, c, section).await?],
            (None, true) => top_folders(ctx, section).await?,
            (None, false) => Vec::new(),
        };
        let ask = Ask::Scan {
            whole: ctx.cfg.canary().is_none(),
            folders: &folders,
        };
        let (seconds, mut remounts) = watch_one(ctx, session, section, ask, budget).await?;
        let mut metadata_refresh_seconds = None;
        if ctx.cfg.phases().refresh_metadata {
            let budget = ctx.cfg.deadlines().refresh_metadata;
            let (seconds, more) =
                watch_one(ctx, session, section, Ask::RefreshMetadata, budget).await?;
            metadata_refresh_seconds = Some(seconds);
            remounts += more;
        }
        let after = db_stats(ctx).await?;
        let verdict = guard::compare(&before, &after, &ctx.cfg.guard());
        scanned.push(Scanned {
            library: section.title.clone(),
            section: section.key.to_string(),
            seconds,
            folders: folders.len(),
            canary_folder: ctx.cfg.canary().and(folders.first().cloned()),
            metadata_refresh_seconds,
            remounts,
            before: live_counts(before.library(&section.title)),
            after: live_counts(after.library(&section.title)),
            guard: verdict.clone(),
        });
        if !verdict.passed {
            // Stop all Plex work now: nothing more may happen to this DB.
            session.pause_plex().await;
            let reason = format!(
                "after scanning {:?}: {}",
                section.title,
                verdict
                    .losses
                    .iter()
                    .filter(|l| l.over_limit)
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            tracing::error!("deletion guard: {reason}; the run is quarantined");
            return Ok(
                json!({ "preflight": preflight, "libraries": scanned, "guard": verdict, "quarantine": reason }),
            );
        }
        for loss in &verdict.losses {
            tracing::warn!("within the guard's limits: {loss}");
        }
        tracing::info!(
            "deletion guard: {:?} passed ({} losses within the limits)",
            section.title,
            verdict.losses.len()
        );
        before = after;
    }
    Ok(json!({ "preflight": preflight, "libraries": scanned }))
}

/// What one library is asked (see the module's comment).
#[derive(Clone, Copy)]
enum Ask<'a> {
    /// The scan (unless not `whole`), then a partial scan of each of
    /// `folders`.
    Scan {
        whole: bool,
        folders: &'a [String],
    },
    RefreshMetadata,
}

impl Ask<'_> {
    fn name(self) -> &'static str {
        match self {
            Ask::Scan { .. } => "scan",
            Ask::RefreshMetadata => "metadata refresh",
        }
    }

    async fn send(self, session: &Session, key: &str) -> Result<(), crate::plex::PlexError> {
        match self {
            Ask::Scan { whole, folders } => {
                if whole {
                    call("start a scan", || session.api().scan(key, None)).await?;
                }
                for folder in folders {
                    call("start a folder scan", || {
                        session.api().scan(key, Some(folder))
                    })
                    .await?;
                }
                Ok(())
            }
            Ask::RefreshMetadata => {
                call("start a metadata refresh", || {
                    session.api().refresh_metadata(key)
                })
                .await
            }
        }
    }
}

/// Asks Plex for `ask` on one section and waits until it is idle again.
/// A failed health probe meanwhile, or once Plex is idle, cancels the
/// work, remounts, and asks again.
async fn watch_one(
    ctx: &RunContext,
    session: &mut Session,
    section: &Section,
    ask: Ask<'_>,
    budget: Duration,
) -> Result<(f64, u32)> {
    let started = Instant::now();
    let key = section.key.to_string();
    let what = ask.name();
    let mut remounts = 0;
    // Said when done: the scanners are Plex's children, found wherever it
    // runs (in a container, they are not the runner's descendants).
    let mut scanner_processes = 0;
    // The gate: never start a scan on a mount that cannot read (lessons.md 1).
    if session.check_mount(true).await? {
        remounts += 1;
    }
    'scan: loop {
        ctx.describe(match ask {
            Ask::Scan { .. } => format!("scanning {:?}", section.title),
            Ask::RefreshMetadata => format!("refreshing the metadata of {:?}", section.title),
        })
        .await;
        tracing::info!(library = %section.title, section = %key, "{what} started");
        if let Err(e) = ask.send(session, &key).await {
            // Plex may have died under the request: restart it (bounded)
            // rather than fail on a symptom.
            if session.revive_plex().await? {
                continue 'scan;
            }
            return Err(e.into());
        }
        let mut watch = Watch::new(ctx, started, budget);
        loop {
            watch.sleep().await;
            if session.revive_plex().await? {
                continue 'scan;
            }
            if session.check_mount(false).await? {
                remounts += 1;
                continue 'scan;
            }
            let busy = session.busy().await?;
            scanner_processes = scanner_processes.max(busy.scanners);
            let signature = scan_signature(ctx, section, &busy).await?;
            match watch.observe(busy.is_idle(), signature) {
                Progress::Working => {}
                // A scan that ended over a dead mount took its unreadable
                // files for deleted ones: it is trusted only if the mount
                // still reads now, else it runs again on the new mount
                // (the rescan finds the files and makes them available).
                Progress::Idle => {
                    if session.check_mount(true).await? {
                        remounts += 1;
                        continue 'scan;
                    }
                    break 'scan;
                }
                Progress::Stalled(for_how_long) => {
                    let _ = session.api().cancel_refresh(&key).await;
                    bail!(
                        "the {what} of {:?} stalled: no progress for {} (Plex: {busy})",
                        section.title,
                        humantime::format_duration(for_how_long)
                    );
                }
                Progress::OutOfTime => {
                    let _ = session.api().cancel_refresh(&key).await;
                    bail!(
                        "the {what} of {:?} did not finish within its budget of {} (Plex: {busy})",
                        section.title,
                        humantime::format_duration(budget)
                    );
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        library = %section.title,
        seconds,
        scanner_processes,
        "{what} done"
    );
    Ok((seconds, remounts))
}

/// The folders at the top of the section's locations, as Plex sees them
/// (the mount is at the same path for Plex and the runner), sorted;
/// hidden ones skipped. Listed on a blocking thread, bounded by the
/// mount's probe timeout: a hung mount fails here, not in Plex.
async fn top_folders(ctx: &RunContext, section: &Section) -> Result<Vec<String>> {
    let locations: Vec<String> = section.locations.iter().map(|l| l.path.clone()).collect();
    let listing = tokio::task::spawn_blocking(move || list_top_folders(&locations));
    let within = ctx.cfg.media().probe_timeout;
    let folders = tokio::time::timeout(within, listing)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "cannot list the folders of {:?} for phases.deep_scan: no answer from the media mount within {}",
                section.title,
                humantime::format_duration(within)
            )
        })???;
    tracing::info!(library = %section.title, folders = folders.len(), "deep scan: one partial scan per top folder");
    Ok(folders)
}

fn list_top_folders(locations: &[String]) -> Result<Vec<String>> {
    let mut folders = Vec::new();
    for location in locations {
        let entries = std::fs::read_dir(location)
            .with_context(|| format!("cannot list {location} for phases.deep_scan"))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {location}"))?;
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            // Follow symlinks, as Plex's scanner does.
            let path = entry.path();
            if !hidden && std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                folders.push(path.to_string_lossy().into_owned());
            }
        }
    }
    folders.sort();
    Ok(folders)
}

/// What changes while a scan works: the library's rows and the progress
/// of Plex's activities.
async fn scan_signature(
    ctx: &RunContext,
    section: &Section,
    busy: &crate::plex::idle::Busy,
) -> Result<String> {
    let db = ctx.paths.library_db();
    let id: i64 = section.key.as_str().parse().with_context(|| {
        format!(
            "Plex named section {:?} by a key that is not a number: {}",
            section.title, section.key
        )
    })?;
    let rows = tokio::task::spawn_blocking(move || stats::section_rows(&db, id)).await??;
    Ok(format!("{rows} {:?}", busy.progress))
}

/// The run's libraries: every section Plex has, filtered by the config's
/// include/exclude list, in section order.
async fn selected_sections(ctx: &RunContext, session: &Session) -> Result<Vec<Section>> {
    let sections = call("list libraries", || session.api().sections()).await?;
    let filter = &ctx.cfg.plex().libraries;
    let mut selected: Vec<Section> = sections
        .into_iter()
        .filter(|s| filter.selects(&s.title))
        .collect();
    selected.sort_by_key(|s| s.key.as_str().parse::<u64>().unwrap_or(u64::MAX));
    let names: Vec<&str> = selected.iter().map(|s| s.title.as_str()).collect();
    tracing::info!(libraries = ?names, "libraries of this run");
    Ok(selected)
}

async fn create_libraries(session: &Session, libraries: &[crate::config::Library]) -> Result<()> {
    let existing = call("list libraries", || session.api().sections()).await?;
    for lib in libraries {
        if existing.iter().any(|s| s.title == *lib.title) {
            continue;
        }
        let locations: Vec<&str> = lib.locations.iter().map(|l| l.as_str()).collect();
        call("create a library", || {
            session.api().create_section(
                &lib.title,
                lib.kind.as_str(),
                &lib.agent,
                &lib.scanner,
                &lib.language,
                &locations,
            )
        })
        .await?;
        tracing::info!(library = %*lib.title, "library created");
    }
    Ok(())
}

fn library_type(kind: &str) -> Result<LibraryType> {
    Ok(match kind {
        "movie" => LibraryType::Movie,
        "show" => LibraryType::Show,
        "artist" => LibraryType::Artist,
        "photo" => LibraryType::Photo,
        other => bail!("Plex reports a library of unknown type {other:?}"),
    })
}

/// Statistics from the DB itself (lessons.md 14), read-only.
pub(super) async fn db_stats(ctx: &RunContext) -> Result<Stats> {
    let db = ctx.paths.library_db();
    Ok(tokio::task::spawn_blocking(move || stats::collect(&db)).await??)
}

fn live_counts(lib: Option<&LibraryStats>) -> std::collections::BTreeMap<String, u64> {
    lib.map(|l| l.items.iter().map(|(t, c)| (t.clone(), c.live)).collect())
        .unwrap_or_default()
}
