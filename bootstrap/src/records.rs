//! Bootstrap's own copy of each launch record, at home
//! (`<state_dir>/runs/<run-id>/launch.json`). The bucket's copy is
//! writable by the run's key, so a compromised instance could rewrite it to
//! name any server or volume of the project; what fetch, sweep and a
//! launch's clean-up delete is decided by the copy kept here, and a bucket
//! copy that disagrees with it is refused.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::BootstrapConfig;
use crate::runs::LaunchRecord;

/// `home.state_dir`, else `$XDG_STATE_HOME/plex-burst`, else
/// `~/.local/state/plex-burst` (the XDG base directory default).
pub fn state_dir(cfg: &BootstrapConfig) -> Result<PathBuf> {
    if let Some(dir) = &cfg.home.state_dir {
        return Ok(dir.clone());
    }
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(xdg) = var("XDG_STATE_HOME") {
        return Ok(PathBuf::from(xdg).join("plex-burst"));
    }
    match var("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/plex-burst")),
        None => bail!("home.state_dir: not set and neither XDG_STATE_HOME nor HOME is"),
    }
}

fn path(cfg: &BootstrapConfig, run_id: &str) -> Result<PathBuf> {
    if run_id.is_empty() || run_id.contains(['/', '\\']) || run_id.starts_with('.') {
        bail!("{run_id:?} is not a run id");
    }
    Ok(state_dir(cfg)?
        .join("runs")
        .join(run_id)
        .join("launch.json"))
}

/// Writes the home copy atomically: a temporary file, fsynced, renamed
/// over the old copy, the directory fsynced.
pub fn save(cfg: &BootstrapConfig, record: &LaunchRecord) -> Result<()> {
    let path = path(cfg, &record.run_id)?;
    let dir = path.parent().context("a record path has a parent")?;
    let body = serde_json::to_vec_pretty(record)?;
    write_atomic(dir, &path, &body)
        .with_context(|| format!("cannot keep the launch record at {}", path.display()))
}

fn write_atomic(dir: &Path, path: &Path, body: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let temp = dir.join("launch.json.tmp");
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(body)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The home copy of `run_id`'s record, if this machine launched it.
pub fn load(cfg: &BootstrapConfig, run_id: &str) -> Result<Option<LaunchRecord>> {
    let path = path(cfg, run_id)?;
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is unreadable", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Whether this machine holds a record of `run_id`, readable or not.
pub fn exists(cfg: &BootstrapConfig, run_id: &str) -> Result<bool> {
    Ok(path(cfg, run_id)?.exists())
}

/// The run ids with a home copy.
pub fn run_ids(cfg: &BootstrapConfig) -> Result<Vec<String>> {
    let dir = state_dir(cfg)?.join("runs");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.path().join("launch.json").is_file() {
            ids.extend(entry.file_name().to_str().map(str::to_owned));
        }
    }
    ids.sort();
    Ok(ids)
}

/// The first resource id on which the bucket copy and the home copy
/// differ, as `(what, bucket's, home's)`.
pub fn disagreement(
    bucket: &LaunchRecord,
    home: &LaunchRecord,
) -> Option<(&'static str, String, String)> {
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
    let ids: [(&str, &Option<String>, &Option<String>); 5] = [
        ("server", &bucket.server_id, &home.server_id),
        ("root volume", &bucket.root_volume_id, &home.root_volume_id),
        ("API key", &bucket.api_key, &home.api_key),
        (
            "security group",
            &bucket.security_group_id,
            &home.security_group_id,
        ),
        ("image", &bucket.image_id, &home.image_id),
    ];
    let plain: [(&str, &String, &String); 3] = [
        ("run", &bucket.run_id, &home.run_id),
        ("project", &bucket.project_id, &home.project_id),
        ("zone", &bucket.zone, &home.zone),
    ];
    ids.into_iter()
        .find(|(_, b, h)| b != h)
        .map(|(what, b, h)| (what, show(b), show(h)))
        .or_else(|| {
            plain
                .into_iter()
                .find(|(_, b, h)| b != h)
                .map(|(what, b, h)| (what, b.clone(), h.clone()))
        })
}

/// The one line a disagreement is refused with.
pub fn refusal(key: &str, what: &str, bucket: &str, home: &str) -> String {
    format!(
        "{key} in the bucket names {what} {bucket}, the record kept at home names {home}: refusing to delete; the bucket copy may have been rewritten by the run"
    )
}
