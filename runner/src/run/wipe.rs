//! What the run leaves on the instance's disk holds no secret: terminate
//! leaves the root volume behind until home deletes it, and whoever can
//! read that volume must find nothing to use. Cloud-init's copies of the
//! user data go at boot (the user data is deleted from the metadata
//! service then too); the plex.tv token's file goes once the server is
//! claimed; the units' environment file, the server's plex.tv token in
//! Plex's Preferences.xml and any log line holding a secret go before the
//! instance ends, the run's key then being in memory only.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::config::{AbsPath, RunConfig};
use crate::plex::preferences::Preferences;

use super::WorkPaths;

/// Deletes `path` after overwriting its bytes, so that the blocks the
/// filesystem frees do not keep the secret. `Ok(false)`: it was not there.
pub fn delete(path: &Path) -> io::Result<bool> {
    let len = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => {
            std::fs::remove_file(path)?;
            return Ok(true);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut file = OpenOptions::new().write(true).open(path)?;
    let zeros = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    drop(file);
    std::fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(true)
}

/// At boot: every file under `dirs` (cloud-init's copies of the user data:
/// the raw user data, the cloud-config built from it, the pickled
/// datasource) that holds one of `secrets` is deleted. Logs are kept with
/// the secrets masked. Returns what was deleted or masked.
pub fn user_data_copies(dirs: &[AbsPath], secrets: &[String]) -> Vec<PathBuf> {
    let mut done = Vec::new();
    for dir in dirs {
        let path = dir.as_path();
        if path.is_file() {
            match scrub_file(path, secrets) {
                Ok(true) => done.push(path.to_path_buf()),
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot scrub {}: {e}", path.display()),
            }
        } else {
            scrub_tree(path, secrets, &mut done);
        }
    }
    for path in &done {
        tracing::info!(file = %path.display(), "a copy of the user data holding the run's secrets was removed");
    }
    done
}

/// Before the instance ends: `[wipe] files` deleted, cloud-init's copies
/// scrubbed again, Plex's Preferences.xml with the server's plex.tv token
/// deleted, and the run's logs on disk masked.
/// Every step runs; failures are logged (the instance ends anyway).
pub fn before_the_end(cfg: &RunConfig, paths: &WorkPaths) {
    let secrets = super::logs::secrets(cfg, paths);
    for file in &cfg.wipe().files {
        match delete(file.as_path()) {
            Ok(true) => tracing::info!(file = %file, "the run's secrets file was deleted"),
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot delete the run's secrets file {file}: {e}"),
        }
    }
    // Plex is stopped: nothing needs the server's identity and token again.
    let prefs = Preferences::path(&paths.app_support);
    match scrub_file(&prefs, &secrets) {
        Ok(true) => {
            tracing::info!("Plex's Preferences.xml (the server's plex.tv token) was deleted")
        }
        Ok(false) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot delete {}: {e}", prefs.display()),
    }
    // Cloud-init's later stages may have pickled the datasource again
    // since the boot.
    user_data_copies(&cfg.wipe().user_data_copies, &secrets);
    let mut masked = Vec::new();
    scrub_tree(&paths.logs, &secrets, &mut masked);
    scrub_tree(&paths.app_support.join("Logs"), &secrets, &mut masked);
    for path in &masked {
        tracing::info!(file = %path.display(), "secrets masked in a log left on the disk");
    }
}

fn scrub_tree(dir: &Path, secrets: &[String], done: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => scrub_tree(&path, secrets, done),
            Ok(t) if t.is_file() => match scrub_file(&path, secrets) {
                Ok(true) => done.push(path),
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot scrub {}: {e}", path.display()),
            },
            _ => {}
        }
    }
}

/// A log keeps its lines with the secrets masked; any other file holding
/// a secret is deleted. `Ok(true)`: the file held one.
fn scrub_file(path: &Path, secrets: &[String]) -> io::Result<bool> {
    let bytes = std::fs::read(path)?;
    let holds = |s: &String| !s.is_empty() && contains(&bytes, s.as_bytes());
    if !secrets.iter().any(holds) {
        return Ok(false);
    }
    if is_log(path) {
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            text = text.replace(s.as_str(), crate::secret::Secret::MASK);
        }
        let tmp = path.with_extension("scrub-tmp");
        std::fs::write(&tmp, text)?;
        File::open(&tmp)?.sync_all()?;
        delete(path)?;
        std::fs::rename(&tmp, path)?;
    } else {
        delete(path)?;
    }
    Ok(true)
}

fn is_log(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name.ends_with(".log") || name.contains(".log.")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-value-0123456789";

    fn abs(p: &Path) -> AbsPath {
        AbsPath::try_from(p.to_string_lossy().into_owned()).unwrap()
    }

    #[test]
    fn copies_holding_a_secret_go_and_the_rest_stays() {
        let dir = tempfile::tempdir().unwrap();
        let inst = dir.path().join("instances/abc");
        std::fs::create_dir_all(inst.join("sem")).unwrap();
        std::fs::write(
            inst.join("user-data.txt"),
            format!("#cloud-config\nX={SECRET}\n"),
        )
        .unwrap();
        std::fs::write(
            inst.join("obj.pkl"),
            [b"\x80\x04", SECRET.as_bytes()].concat(),
        )
        .unwrap();
        std::fs::write(inst.join("sem/config_write_files"), "done").unwrap();
        let log = dir.path().join("cloud-init.log");
        std::fs::write(&log, format!("line one\nwrote {SECRET} here\n")).unwrap();

        let done = user_data_copies(&[abs(dir.path())], &[SECRET.to_string()]);

        assert_eq!(done.len(), 3, "{done:?}");
        assert!(!inst.join("user-data.txt").exists());
        assert!(!inst.join("obj.pkl").exists());
        assert!(
            inst.join("sem/config_write_files").exists(),
            "cloud-init's semaphores stay"
        );
        let log = std::fs::read_to_string(&log).unwrap();
        assert_eq!(log, "line one\nwrote ******** here\n");
    }

    #[test]
    fn delete_says_whether_there_was_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secrets.env");
        std::fs::write(&f, format!("KEY={SECRET}\n")).unwrap();
        assert!(delete(&f).unwrap());
        assert!(!f.exists());
        assert!(!delete(&f).unwrap());
    }
}
