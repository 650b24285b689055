//! The run's logs go to `runs/<run-id>/logs/` when the run ends, on success
//! and on failure (lessons.md 26): the runner's own log (`runner.log`),
//! the unit's journal under systemd (`journal.txt`: restarts, kills),
//! rclone's log and Plex's console (the work folder's `logs/`), and Plex's
//! own logs (`plex/`). Every secret the run knows, and everything shaped
//! like one, is masked ([`crate::mask`]) before a byte leaves the instance. Shipping never fails the run: a log that cannot be
//! read or sent is reported, and the next file goes. The dead-man ships the
//! same set, plus its own log (`deadman.txt`).

use std::path::{Path, PathBuf};

use super::{RunContext, WorkPaths};
use crate::config::{RunConfig, Termination};
use crate::mask;
use crate::plex::preferences::Preferences;
use crate::s3::Bucket;

/// Of a longer file only the end ships: the last hours are what explain a
/// failure, and an upload must stay small.
const MAX_BYTES: usize = 32 << 20;

/// What shipping needs, without a whole [`RunContext`]: the dead-man ships
/// the same logs from its own process.
pub struct Sources<'a> {
    pub cfg: &'a RunConfig,
    pub bucket: &'a Bucket,
    pub paths: &'a WorkPaths,
    /// More files, as `(name under logs/, path)`.
    pub extra: Vec<(String, PathBuf)>,
}

/// Uploads the run's logs; returns the keys written.
pub async fn ship(ctx: &RunContext) -> Vec<String> {
    ship_from(&Sources {
        cfg: &ctx.cfg,
        bucket: &ctx.bucket,
        paths: &ctx.paths,
        extra: Vec::new(),
    })
    .await
}

/// Uploads the logs `src` names; returns the keys written.
pub async fn ship_from(src: &Sources<'_>) -> Vec<String> {
    let masker = mask::held_and(secrets(src.cfg, src.paths));
    let mut shipped = Vec::new();
    for (name, text) in collect(src) {
        let key = src.cfg.run_key(&format!("logs/{name}"));
        let text = masker.mask(&text);
        match src
            .bucket
            .put_bytes(&key, text.into_bytes().into(), "text/plain")
            .await
        {
            Ok(()) => shipped.push(key),
            Err(e) => tracing::warn!("cannot ship the log {name}: {e}"),
        }
    }
    tracing::info!(
        logs = shipped.len(),
        "logs shipped to the run's logs/ prefix"
    );
    shipped
}

/// `(name under logs/, content)` of every log the run has.
fn collect(src: &Sources<'_>) -> Vec<(String, String)> {
    let mut logs = Vec::new();
    for path in files(&src.paths.logs) {
        push(&mut logs, file_name(&path), &path);
    }
    for path in files(&src.paths.app_support.join("Logs")) {
        if path.extension().is_some_and(|e| e == "log") {
            push(&mut logs, format!("plex/{}", file_name(&path)), &path);
        }
    }
    if let Some(journal) = journal() {
        logs.push(("journal.txt".into(), journal));
    }
    for (name, path) in &src.extra {
        push(&mut logs, name.clone(), path);
    }
    logs
}

fn push(logs: &mut Vec<(String, String)>, name: String, path: &Path) {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(MAX_BYTES);
            let text = String::from_utf8_lossy(&bytes[start..]);
            logs.push((name, mark_lost_bytes(&text)));
        }
        Err(e) => tracing::warn!("cannot read the log {}: {e}", path.display()),
    }
}

/// The regular files of `dir`, sorted (none when it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The runner unit's journal, all boots, when systemd runs us (the runner,
/// or the dead-man shipping in its place).
fn journal() -> Option<String> {
    std::env::var_os("INVOCATION_ID")?;
    let out = std::process::Command::new("journalctl")
        .args([
            "--unit",
            crate::systemd::RUNNER_UNIT,
            "--output",
            "short-iso-precise",
            "--no-pager",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.len().saturating_sub(MAX_BYTES);
    // Cut at a character boundary.
    let start = (start..=text.len()).find(|i| text.is_char_boundary(*i))?;
    Some(text[start..].to_owned())
}

/// Every secret value of the run: credentials of the config, and the token
/// Plex got when it was claimed.
pub(super) fn secrets(cfg: &RunConfig, paths: &WorkPaths) -> Vec<String> {
    let mut secrets = vec![
        cfg.s3().connection.access_key.expose().to_owned(),
        cfg.s3().connection.secret_key.expose().to_owned(),
        cfg.media().connection.access_key.expose().to_owned(),
        cfg.media().connection.secret_key.expose().to_owned(),
    ];
    if let Some(token) = cfg
        .plex()
        .claim
        .as_ref()
        .and_then(|c| c.account_token.as_ref())
    {
        secrets.push(token.expose().to_owned());
    }
    if let Termination::Scaleway(scw) = cfg.termination() {
        secrets.push(scw.secret_key.expose().to_owned());
    }
    secrets.extend(cfg.notify().iter().flat_map(|t| t.secrets()));
    if let Ok(Some(prefs)) = Preferences::read(&paths.app_support)
        && let Some(token) = prefs.online_token()
    {
        secrets.push(token.expose().to_owned());
    }
    secrets
}

/// A hard reset can leave a log's last unwritten block as a run of NUL
/// bytes (the file grew; its data never reached the disk): said in words.
fn mark_lost_bytes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\0') {
        out.push_str(&rest[..at]);
        let run = rest[at..].find(|c| c != '\0').unwrap_or(rest.len() - at);
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!(
            "[plex-burst: {run} bytes of this log were lost here: the instance stopped before they reached the disk]\n"
        ));
        rest = &rest[at + run..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_lost_in_a_crash_are_said_in_words() {
        let text = "line one\nhalf a li\0\0\0\0INFO resuming\n\0\0";
        assert_eq!(
            mark_lost_bytes(text),
            "line one\nhalf a li\n\
             [plex-burst: 4 bytes of this log were lost here: the instance stopped before they reached the disk]\n\
             INFO resuming\n\
             [plex-burst: 2 bytes of this log were lost here: the instance stopped before they reached the disk]\n"
        );
        assert_eq!(mark_lost_bytes("clean\n"), "clean\n");
    }
}
