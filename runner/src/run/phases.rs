//! What each phase does. Every function is idempotent: it may run again
//! after a crash at any point inside it.

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::checkpoint::Checkpoint;
use super::guard;
use super::{Phase, RunContext, analysis, scan, sonic};
use crate::archive::PackOptions;
use crate::config::{Mode, PlexRuntime};
use crate::plexdb::{self, PlexSqlite, stats::Stats};
use crate::transfer;

/// The name of the result archive under `runs/<run-id>/result/`.
pub const RESULT_ARCHIVE: &str = "result/plex-db.tar.zst";
/// A quarantined run's DB, for inspection only, under `runs/<run-id>/`.
pub const QUARANTINE_ARCHIVE: &str = "quarantine/plex-db.tar.zst";

pub(super) async fn run(phase: Phase, ctx: &RunContext, ckpt: &Checkpoint) -> Result<Value> {
    match phase {
        Phase::Boot => boot(ctx, ckpt).await,
        Phase::Pull => pull(ctx, ckpt).await,
        Phase::Verify => verify(ctx).await,
        Phase::Remap => remap(ctx).await,
        Phase::Scan => scan::run(ctx).await,
        Phase::Analysis => analysis::run(ctx, ckpt).await,
        Phase::Sonic => sonic::run(ctx, ckpt).await,
        Phase::Stop => stop(ctx).await,
        Phase::Package => package(ctx, ckpt).await,
        Phase::Upload => upload(ctx, ckpt).await,
    }
}

/// What the run starts from: a snapshot an earlier instance of this run
/// left, else the reference (delta), else nothing (scratch).
fn source_key(ctx: &RunContext, ckpt: &Checkpoint) -> Option<String> {
    if let Some(s) = &ckpt.snapshot {
        return Some(s.archive_key.clone());
    }
    match ctx.cfg.mode() {
        Mode::Delta { reference } => Some(reference.archive_key.to_string()),
        Mode::Scratch { .. } => None,
    }
}

/// Checks what would waste the run's time later: the archive the run
/// starts from is there and readable.
async fn boot(ctx: &RunContext, ckpt: &Checkpoint) -> Result<Value> {
    std::fs::create_dir_all(&ctx.paths.backups)
        .with_context(|| format!("cannot create {}", ctx.paths.backups.display()))?;
    let Some(key) = source_key(ctx, ckpt) else {
        return Ok(json!({ "runner_version": env!("CARGO_PKG_VERSION"), "mode": "scratch" }));
    };
    let key = &key;
    let info = ctx
        .bucket
        .head(key)
        .await
        .with_context(|| {
            format!(
                "cannot reach the reference archive s3://{}/{key}",
                ctx.bucket.name()
            )
        })?
        .with_context(|| {
            format!(
                "the reference archive s3://{}/{key} does not exist",
                ctx.bucket.name()
            )
        })?;
    Ok(json!({
        "runner_version": env!("CARGO_PKG_VERSION"),
        "reference_key": key,
        "reference_bytes": info.size,
        "from_snapshot": ckpt.snapshot.is_some(),
    }))
}

/// Streams the reference archive (or this run's last snapshot) into Plex's
/// `Databases` folder.
async fn pull(ctx: &RunContext, ckpt: &Checkpoint) -> Result<Value> {
    let Some(key) = source_key(ctx, ckpt) else {
        std::fs::create_dir_all(&ctx.paths.databases)
            .with_context(|| format!("cannot create {}", ctx.paths.databases.display()))?;
        return Ok(json!({ "skipped": "scratch mode: Plex starts with an empty DB" }));
    };
    let key = &key;
    let named_manifest = match (ctx.cfg.mode(), &ckpt.snapshot) {
        (Mode::Delta { reference }, None) => reference.manifest_key.as_ref(),
        _ => None,
    };
    // A manifest named in the config must exist; the default one may not
    // (the user's own tar.gz archives have none).
    let manifest = match named_manifest {
        Some(m) => Some(transfer::fetch_manifest(&ctx.bucket, m).await?),
        None => {
            let default = transfer::manifest_key_for(key);
            match ctx.bucket.head(&default).await? {
                Some(_) => Some(transfer::fetch_manifest(&ctx.bucket, &default).await?),
                None => {
                    tracing::info!(
                        "no manifest beside {key}: files are checked by the integrity check only"
                    );
                    None
                }
            }
        }
    };
    if let Some(parent) = ctx.paths.databases.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let limits = ctx.cfg.pull_limits();
    let pulled = transfer::pull_bounded(
        &ctx.bucket,
        key,
        &ctx.paths.databases,
        manifest,
        limits,
        |_| crate::systemd::beat(),
    )
    .await?;
    Ok(json!({
        "archive_bytes": pulled.download.bytes,
        "archive_sha256": pulled.download.sha256,
        "files": pulled.unpack.files.len(),
        "bytes_written": pulled.unpack.bytes_written,
        "root_prefix": pulled.unpack.root_prefix,
        "skipped_entries": pulled.unpack.skipped_entries,
        // Plex's dated backups, read past (only the home server can use them).
        "dated_backups_skipped": pulled.unpack.dated_backups.files,
        "dated_backup_bytes_skipped": pulled.unpack.dated_backups.bytes,
    }))
}

/// A real integrity check (lessons.md 18) and the statistics before any work.
async fn verify(ctx: &RunContext) -> Result<Value> {
    let db = ctx.paths.library_db();
    if let Mode::Scratch { .. } = ctx.cfg.mode() {
        return Ok(json!({ "stats_before": Stats::default() }));
    }
    let plex_sqlite = plex_sqlite(ctx);
    tokio::task::spawn_blocking(move || -> Result<Value> {
        let integrity = plexdb::integrity::check_best(&db, plex_sqlite.as_ref())
            .context("the reference DB failed its integrity check")?;
        tracing::info!("integrity of the reference DB: {integrity}");
        let stats = plexdb::stats::collect(&db)?;
        Ok(json!({ "integrity": integrity, "stats_before": stats }))
    })
    .await?
}

/// Home paths to instance paths (lessons.md 20), then every root must lie
/// under the mount (lessons.md 6).
async fn remap(ctx: &RunContext) -> Result<Value> {
    let db = ctx.paths.library_db();
    if let Mode::Scratch { .. } = ctx.cfg.mode() {
        return Ok(json!({ "skipped": "scratch mode: no home paths" }));
    }
    let mappings = ctx.cfg.path_mappings().to_vec();
    let mount = ctx.cfg.media_mount_point().to_path_buf();
    let backups = ctx.paths.backups.join("remap");
    tokio::task::spawn_blocking(move || -> Result<Value> {
        // A previous attempt may have committed its changes and died before
        // the checkpoint: start again from its backup, or mappings would
        // apply twice.
        if let Some(backup) = plexdb::remap::restore_first_backup(&backups, &db)? {
            tracing::warn!(backup = %backup.display(), "an earlier remap attempt did not finish: started again from its backup");
        }
        let report = plexdb::remap::apply(&db, &mappings, &backups)?;
        let coverage = plexdb::coverage::report(&db, &[], &mount)?;
        coverage.ensure_covered()?;
        Ok(json!({ "remap": report, "coverage": coverage }))
    })
    .await?
}

/// Plex stopped and signed out of plex.tv, the media unmounted: the DB is
/// Plex's no more (lessons.md 21, 22).
async fn stop(ctx: &RunContext) -> Result<Value> {
    let problems = ctx.close_session(true).await;
    let db = ctx.paths.library_db();
    // A Plex that stopped cleanly checkpointed and removed its WAL; what
    // is left says it did not (the checkpoint below keeps it either way).
    let wal_left = std::fs::metadata(plexdb::wal_path(&db)).map_or(0, |m| m.len());
    if wal_left > 0 {
        tracing::warn!(
            wal_left,
            "Plex left its WAL behind: it did not stop cleanly"
        );
    } else {
        tracing::info!("Plex stopped cleanly: no WAL left behind");
    }
    if db.exists() {
        tokio::task::spawn_blocking(move || plexdb::checkpoint_wal(&db)).await??;
    }
    Ok(json!({ "problems": problems, "wal_left": wal_left }))
}

/// The DB as it will be published: checkpointed, checked, counted, and
/// compared with what it held before (the deletion guard, lessons.md 1).
/// A library that lost too much quarantines the run: the DB is uploaded
/// for inspection, never as a result.
async fn package(ctx: &RunContext, ckpt: &Checkpoint) -> Result<Value> {
    let db = ctx.paths.library_db();
    let plex_sqlite = plex_sqlite(ctx);
    let before: Stats = phase_output(ckpt, Phase::Verify, "stats_before")?;
    let limits = ctx.cfg.guard();
    let earlier = ckpt.quarantine();
    tokio::task::spawn_blocking(move || -> Result<Value> {
        plexdb::checkpoint_wal(&db)?;
        let integrity = plexdb::integrity::check_best(&db, plex_sqlite.as_ref())
            .context("the result DB failed its integrity check")?;
        tracing::info!("integrity of the result DB: {integrity}");
        let after = plexdb::stats::collect(&db)?;
        let verdict = guard::compare(&before, &after, &limits);
        let quarantine = earlier.or_else(|| verdict.ensure_passed().err().map(|e| format!("{e:#}")));
        Ok(json!({ "integrity": integrity, "stats_after": after, "guard": verdict, "quarantine": quarantine }))
    })
    .await?
}

/// Streams the result to S3; writes `DONE` last. A quarantined DB goes
/// elsewhere, with a `QUARANTINED` marker and no `DONE`.
async fn upload(ctx: &RunContext, ckpt: &Checkpoint) -> Result<Value> {
    let quarantine = ckpt.quarantine();
    let (archive, marker) = match quarantine {
        Some(_) => (QUARANTINE_ARCHIVE, "QUARANTINED"),
        None => (RESULT_ARCHIVE, "DONE"),
    };
    let key = ctx.run_key(archive);
    let stats = json!({
        "before": phase_output::<Value>(ckpt, Phase::Verify, "stats_before")?,
        "after": phase_output::<Value>(ckpt, Phase::Package, "stats_after")?,
        "sonic": ckpt.record(Phase::Sonic).map(|r| r.output.clone()),
        "quarantine": ckpt.quarantine(),
    });
    let opts = PackOptions {
        plex_version: Some(ctx.cfg.plex_version().to_string()),
        ..PackOptions::default()
    };
    let pushed = transfer::push_with_progress(
        &ctx.bucket,
        &ctx.paths.databases,
        &key,
        opts,
        |m| m.stats = Some(stats),
        |_| crate::systemd::beat(),
    )
    .await?;
    let done = json!({
        "run_id": ctx.cfg.run_id().to_string(),
        "archive_key": key,
        "manifest_key": pushed.manifest_key,
        "archive_sha256": pushed.upload.sha256,
        "finished_at": super::status::now_rfc3339(),
        "quarantine": quarantine,
    });
    let done_key = ctx.run_key(marker);
    ctx.bucket
        .put_bytes(
            &done_key,
            serde_json::to_vec_pretty(&done)?.into(),
            "application/json",
        )
        .await
        .with_context(|| format!("cannot write s3://{}/{done_key}", ctx.bucket.name()))?;
    Ok(json!({
        "archive_key": key,
        "manifest_key": pushed.manifest_key,
        "archive_bytes": pushed.upload.bytes,
        "archive_sha256": pushed.upload.sha256,
        "parts": pushed.upload.parts,
        "files": pushed.manifest.files.len(),
        "marker_key": done_key,
    }))
}

/// A value an earlier phase recorded in the checkpoint.
fn phase_output<T: serde::de::DeserializeOwned>(
    ckpt: &Checkpoint,
    phase: Phase,
    field: &str,
) -> Result<T> {
    let record = ckpt
        .record(phase)
        .with_context(|| format!("phase {phase} has not run: its {field} is missing"))?;
    serde_json::from_value(record.output[field].clone())
        .with_context(|| format!("the checkpoint's {field} of phase {phase} is unreadable"))
}

/// Plex's own SQLite: the pinned, pre-pulled image's for the docker
/// runtime; none for the double, whose DBs the per-table check with the
/// bundled SQLite verifies.
fn plex_sqlite(ctx: &RunContext) -> Option<PlexSqlite> {
    let plex = ctx.cfg.plex();
    match &plex.runtime {
        PlexRuntime::Docker { image, .. } => {
            Some(PlexSqlite::Image(format!("{image}:{}", plex.version)))
        }
        PlexRuntime::Double { .. } => None,
    }
}
