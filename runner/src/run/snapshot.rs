//! DB snapshots during a long Sonic run: a consistent copy of the live DB
//! (SQLite's online backup, lessons.md 22) packed and uploaded under the
//! run's checkpoint prefix, with the checkpoint mirrored beside it. A
//! replacement instance pulls the snapshot instead of the reference and
//! continues where this one was.

use std::path::Path;

use anyhow::{Context as _, Result};
use rusqlite::backup::Backup;

use super::RunContext;
use super::checkpoint::{Checkpoint, SnapshotRecord};
use crate::archive::PackOptions;
use crate::plexdb;
use crate::transfer;

pub const SNAPSHOT_ARCHIVE: &str = "checkpoint/plex-db.tar.zst";
pub const MIRRORED_CHECKPOINT: &str = "checkpoint/checkpoint.json";

/// Takes and uploads a snapshot holding `analysed` Sonic tracks.
pub async fn take(ctx: &RunContext, ckpt: &Checkpoint, analysed: u64) -> Result<()> {
    let staging = ctx.cfg.work_dir().join("snapshot");
    let databases = ctx.paths.databases.clone();
    let dest = staging.clone();
    tokio::task::spawn_blocking(move || copy_databases(&databases, &dest)).await??;
    let key = ctx.run_key(SNAPSHOT_ARCHIVE);
    let opts = PackOptions {
        plex_version: Some(ctx.cfg.plex_version().to_string()),
        ..PackOptions::default()
    };
    transfer::push(&ctx.bucket, &staging, &key, opts, |_| {})
        .await
        .context("cannot upload the DB snapshot")?;
    let _ = std::fs::remove_dir_all(&staging);
    let record = SnapshotRecord {
        archive_key: key.clone(),
        taken_at: super::status::now_rfc3339(),
        analysed,
    };
    tracing::info!(key, analysed, "DB snapshot uploaded");
    let mut mirrored = ckpt.clone();
    mirrored.snapshot = Some(record.clone());
    mirror(ctx, &mirrored).await;
    ctx.set_snapshot(record);
    Ok(())
}

/// An online backup of every SQLite DB of the `Databases` folder (the live
/// DB stays in use by Plex).
fn copy_databases(databases: &Path, dest: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(dest);
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    for entry in std::fs::read_dir(databases)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !name.ends_with(".db") {
            continue;
        }
        let src = plexdb::open_read_only(&path)?;
        let mut out = rusqlite::Connection::open(dest.join(&name))?;
        Backup::new(&src, &mut out)?
            .run_to_completion(1024, std::time::Duration::from_millis(5), None)
            .with_context(|| format!("cannot back up {}", path.display()))?;
    }
    Ok(())
}

/// Mirrors the checkpoint to S3, for a replacement instance. Best effort:
/// the local checkpoint is what this instance resumes from.
pub async fn mirror(ctx: &RunContext, ckpt: &Checkpoint) {
    let key = ctx.run_key(MIRRORED_CHECKPOINT);
    let body = match serde_json::to_vec_pretty(ckpt) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("cannot serialise the checkpoint: {e}");
            return;
        }
    };
    if let Err(e) = ctx
        .bucket
        .put_bytes(&key, body.into(), "application/json")
        .await
    {
        tracing::warn!(
            "cannot mirror the checkpoint to s3://{}/{key}: {e}",
            ctx.bucket.name()
        );
    }
}

/// The checkpoint another instance of this run mirrored, if any.
pub async fn mirrored(ctx: &RunContext) -> Result<Option<Checkpoint>> {
    let key = ctx.run_key(MIRRORED_CHECKPOINT);
    if ctx.bucket.head(&key).await?.is_none() {
        return Ok(None);
    }
    let bytes = ctx.bucket.get_bytes(&key).await?;
    let ckpt = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "the mirrored checkpoint s3://{}/{key} is unreadable",
            ctx.bucket.name()
        )
    })?;
    Ok(Some(ckpt))
}
