//! `bootstrap snapshot`: the reference push. A consistent copy of the home
//! `Databases` folder (SQLite's online backup while Plex runs, or a copy
//! with Plex stopped), packed as tar.zst and uploaded, its manifest
//! recording the home Plex version (the cloud runs the same one), the
//! library roots, the snapshot time (the watch-state merge at fetch starts
//! there) and the DB's statistics (the launch's estimate reads them).
//! Plex's dated backups stay at home: the cloud Plex cannot use them, and
//! they would be most of the upload.

use anyhow::{Context, Result};

use runner::archive::PackOptions;

use crate::cloud;
use crate::config::BootstrapConfig;
use crate::home;

/// The reference archive's name under `reference_prefix`.
pub const ARCHIVE_NAME: &str = "plex-db.tar.zst";
/// The copy's folder, beside `Databases` (same filesystem, same owner).
const STAGING: &str = "Databases.plex-burst-snapshot";

pub async fn snapshot(cfg: &BootstrapConfig, stop_plex: bool) -> Result<()> {
    let layout = home::layout_of(&cfg.home);
    let plex = home::plex_of(&cfg.home, &layout);
    let databases = layout.databases_dir();
    let staging = databases
        .parent()
        .context("the Databases folder has no parent")?
        .join(STAGING);
    let identity = plex
        .identity()
        .context("the home Plex must answer to record its version (lessons.md 24)")?;
    remove(&staging)?;

    let copy = if stop_plex {
        plex.stop_and_wait(cfg.home.plex_timeout)?;
        let copied = home::snapshot::consistent_copy(&databases, &staging);
        // Plex comes back whatever the copy did.
        plex.start_and_wait(cfg.home.plex_timeout)
            .context("the home Plex did not start again after the copy")?;
        copied?
    } else {
        home::snapshot::consistent_copy(&databases, &staging)?
    };

    if copy.left_out.files > 0 {
        println!(
            "left out: {}, the home server's own (the cloud Plex has no use for them)",
            copy.left_out
        );
    }
    let db = staging.join(home::LIBRARY_DB);
    let stats = runner::plexdb::stats::collect(&db)?;
    let roots = home::snapshot::library_roots(&db)?;
    let bucket = cloud::bucket(cfg);
    let key = format!("{}{ARCHIVE_NAME}", cfg.reference_prefix());
    println!(
        "uploading the home DB (Plex {}, {} libraries) to s3://{}/{key}",
        identity.version,
        stats.libraries.len(),
        bucket.name()
    );
    let opts = PackOptions {
        plex_version: Some(identity.version.clone()),
        ..PackOptions::default()
    };
    let pushed = runner::transfer::push(&bucket, &staging, &key, opts, |m| {
        m.stats = serde_json::to_value(&stats).ok();
        m.source
            .insert("snapshot_time".into(), copy.snapshot_time.to_string());
        m.source
            .insert("home_plex_version".into(), identity.version.clone());
        m.source.insert(
            "library_roots".into(),
            serde_json::to_string(&roots).unwrap_or_default(),
        );
        m.source
            .insert("made_by".into(), "bootstrap snapshot".into());
    })
    .await;
    remove(&staging)?;
    let pushed = pushed?;
    println!(
        "reference uploaded: {} files, {:.1} MB compressed, sha256 {}",
        pushed.manifest.files.len(),
        pushed.upload.bytes as f64 / 1e6,
        &pushed.upload.sha256[..16]
    );
    Ok(())
}

fn remove(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}
