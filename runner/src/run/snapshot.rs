//! DB snapshots during a long Sonic run: a consistent copy of the live DB
//! (SQLite's online backup, lessons.md 22) packed and uploaded under the
//! run's checkpoint prefix, with the checkpoint mirrored beside it. A
//! replacement instance pulls the snapshot instead of the reference and
//! continues where this one was.
//!
//! The copy never starts over and never blocks Plex's writes for long
//! ([`plexdb::copy::copy_live`]).

use std::path::Path;

use anyhow::{Context as _, Result};

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
    let key = ctx.run_key(SNAPSHOT_ARCHIVE);
    let uploaded = copy_and_push(ctx, &staging, &key).await;
    // GBs of the work disk, freed whatever happened.
    let _ = std::fs::remove_dir_all(&staging);
    let copy_seconds = uploaded?;
    let record = SnapshotRecord {
        archive_key: key.clone(),
        taken_at: super::status::now_rfc3339(),
        analysed,
    };
    tracing::info!(key, analysed, copy_seconds, "DB snapshot uploaded");
    let mut mirrored = ckpt.clone();
    mirrored.snapshot = Some(record.clone());
    mirror(ctx, &mirrored).await;
    ctx.set_snapshot(record);
    Ok(())
}

/// Copies the DBs into `staging` and uploads them as `key`; answers how
/// long the copy took, in seconds.
async fn copy_and_push(ctx: &RunContext, staging: &Path, key: &str) -> Result<f64> {
    let databases = ctx.paths.databases.clone();
    let dest = staging.to_path_buf();
    let started = std::time::Instant::now();
    tokio::task::spawn_blocking(move || copy_databases(&databases, &dest)).await??;
    let copy_seconds = started.elapsed().as_secs_f64();
    let opts = PackOptions {
        plex_version: Some(ctx.cfg.plex_version().to_string()),
        ..PackOptions::default()
    };
    transfer::push_with_progress(
        &ctx.bucket,
        staging,
        key,
        opts,
        |_| {},
        |_| crate::systemd::beat(),
    )
    .await
    .context("cannot upload the DB snapshot")?;
    Ok(copy_seconds)
}

/// An online backup of every SQLite DB of the `Databases` folder (the live
/// DB stays in use by Plex); Plex's dated backups and the `-wal` files
/// (folded into each copy) stay out.
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
        plexdb::copy::copy_live(&path, &dest.join(&name))
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use rusqlite::Connection;

    use super::*;

    /// How long the writer goes on at most: a hang guard, far more than
    /// any copy here needs.
    const WRITE_GUARD: Duration = Duration::from_secs(20);

    /// A `Databases` folder with a library DB in `journal_mode` of a few
    /// thousand 1 KiB pages (Plex's page size), which a copy in steps
    /// needs several steps for, and a counter a writer moves.
    fn databases(journal_mode: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let databases = dir.path().join("Databases");
        std::fs::create_dir(&databases).unwrap();
        let db = databases.join("com.plexapp.plugins.library.db");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA page_size = 1024; PRAGMA journal_mode = {journal_mode};
             CREATE TABLE padding(b BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO padding SELECT randomblob(900) FROM n;
             CREATE TABLE counter(n INTEGER NOT NULL);
             INSERT INTO counter VALUES (0);"
        ))
        .unwrap();
        (dir, db)
    }

    /// A writer committing one increment at a time, as Plex during Sonic.
    struct Writer {
        stop: Arc<AtomicBool>,
        thread: JoinHandle<i64>,
    }

    impl Writer {
        fn start(db: &Path) -> Writer {
            let conn = Connection::open(db).unwrap();
            conn.busy_timeout(Duration::from_secs(30)).unwrap();
            conn.execute_batch("PRAGMA synchronous = OFF").unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            let thread = std::thread::spawn(move || {
                let (mut n, guard) = (0, Instant::now() + WRITE_GUARD);
                while !flag.load(Ordering::SeqCst) && Instant::now() < guard {
                    n = conn
                        .query_row("UPDATE counter SET n = n + 1 RETURNING n", [], |r| r.get(0))
                        .unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
                n
            });
            // The writes are under way before the copy starts.
            while counter(db) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            Writer { stop, thread }
        }

        /// Whether it was still writing, and its last count.
        fn stop(self) -> (bool, i64) {
            let running = !self.thread.is_finished();
            self.stop.store(true, Ordering::SeqCst);
            (running, self.thread.join().unwrap())
        }
    }

    fn counter(db: &Path) -> i64 {
        let conn = plexdb::open_read_only(db).unwrap();
        conn.query_row("SELECT n FROM counter", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_wal_db_is_copied_whole_while_plex_keeps_writing() {
        let (dir, db) = databases("WAL");
        // Beside it, a WAL-mode DB nobody has open.
        let blobs = db.with_file_name("com.plexapp.plugins.library.blobs.db");
        Connection::open(&blobs)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE blobs(b BLOB);")
            .unwrap();
        let writer = Writer::start(&db);
        let dest = dir.path().join("snapshot");
        let copied = copy_databases(db.parent().unwrap(), &dest);
        let (still_writing, written) = writer.stop();
        copied.unwrap();
        assert!(
            still_writing,
            "the copy was done only once the writes stopped"
        );
        // The WAL is folded into the copy, which is the whole snapshot.
        let mut names: Vec<_> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "com.plexapp.plugins.library.blobs.db",
                "com.plexapp.plugins.library.db"
            ]
        );
        let copy = dest.join(&names[1]);
        let check: String = plexdb::open_read_only(&copy)
            .unwrap()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let n = counter(&copy);
        assert!(0 < n && n <= written, "copied {n}, written {written}");
    }

    #[test]
    fn a_rollback_journal_db_written_all_along_gives_up_without_blocking_plex() {
        let (dir, db) = databases("DELETE");
        let writer = Writer::start(&db);
        let copied = copy_databases(db.parent().unwrap(), &dir.path().join("snapshot"));
        let (still_writing, _) = writer.stop();
        assert!(
            still_writing,
            "the copy waited for the writes to stop: {copied:?}"
        );
        let error = format!("{:#}", copied.unwrap_err());
        assert!(error.contains("while being copied"), "{error}");
    }
}
