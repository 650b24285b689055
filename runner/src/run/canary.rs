//! A canary run's slice of the scan (`[canary]`): one folder per library,
//! read through the mount before Plex is asked to scan it, so that a
//! folder the media key cannot read fails in one line naming the file
//! (Plex would only mark its items unavailable).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use super::RunContext;
use crate::config::Canary;
use crate::plex::api::Section;

/// The first files of the folder that are read, and how much of each: as
/// much as a scanner reads of a file's header.
const READ_FILES: usize = 8;
const READ_BYTES: usize = 256 * 1024;

/// The folder of `section` the canary scans, checked readable.
pub(super) async fn folder(ctx: &RunContext, canary: &Canary, section: &Section) -> Result<String> {
    let locations: Vec<PathBuf> = section
        .locations
        .iter()
        .map(|l| l.path.clone().into())
        .collect();
    let named: Vec<PathBuf> = canary.folders.iter().map(|f| f.to_path_buf()).collect();
    let title = section.title.clone();
    let work = tokio::task::spawn_blocking(move || -> Result<(PathBuf, usize)> {
        let folder = choose(&title, &locations, &named)?;
        let read = read_first_files(&folder)?;
        Ok((folder, read))
    });
    let within = ctx.cfg.media().probe_timeout * READ_FILES as u32;
    let (folder, read) = tokio::time::timeout(within, work).await.map_err(|_| {
        anyhow::anyhow!(
            "the canary's folder of {:?} did not answer through the media mount within {}",
            section.title,
            humantime::format_duration(within)
        )
    })???;
    let folder = folder.to_string_lossy().into_owned();
    tracing::info!(library = %section.title, folder, files_read = read, "canary: a partial scan of one folder");
    Ok(folder)
}

/// A named folder under one of the locations, else the first folder at
/// the top of the first location that has one (sorted, hidden skipped).
fn choose(title: &str, locations: &[PathBuf], named: &[PathBuf]) -> Result<PathBuf> {
    if let Some(folder) = named
        .iter()
        .find(|f| locations.iter().any(|l| f.starts_with(l)))
    {
        return Ok(folder.clone());
    }
    for location in locations {
        let mut folders: Vec<PathBuf> = std::fs::read_dir(location)
            .with_context(|| format!("cannot list {} (library {title:?})", location.display()))?
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        folders.sort();
        if let Some(first) = folders.into_iter().next() {
            return Ok(first);
        }
    }
    bail!("library {title:?} has no folder to scan at the top of its locations")
}

/// Reads the start of the folder's first files (depth first, sorted):
/// how many were read. A folder without files is an error too: Plex
/// would find nothing in it either.
fn read_first_files(folder: &Path) -> Result<usize> {
    let files = first_files(folder, READ_FILES)?;
    if files.is_empty() {
        bail!("{} holds no file to scan", folder.display());
    }
    let mut buf = vec![0u8; READ_BYTES];
    for file in &files {
        let read = std::fs::File::open(file).and_then(|mut f| {
            let mut total = 0;
            while total < READ_BYTES {
                match f.read(&mut buf[total..])? {
                    0 => break,
                    n => total += n,
                }
            }
            Ok(total)
        });
        read.with_context(|| {
            format!(
                "cannot read {} through the media mount: the media key cannot read that object (a cold storage class, or a policy that denies it)",
                file.display()
            )
        })?;
    }
    Ok(files.len())
}

fn first_files(folder: &Path, max: usize) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        entries.sort();
        let (dirs, files): (Vec<_>, Vec<_>) = entries.into_iter().partition(|p| p.is_dir());
        for file in files {
            if found.len() == max {
                return Ok(found);
            }
            found.push(file);
        }
        // Reversed: popped in sorted order.
        pending.extend(dirs.into_iter().rev());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_folder_wins_else_the_first_top_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("music");
        for f in ["B", "A", ".hidden"] {
            std::fs::create_dir_all(root.join(f)).unwrap();
        }
        std::fs::write(root.join("0-a-file.flac"), b"x").unwrap();
        let roots = [root.clone()];
        assert_eq!(choose("Music", &roots, &[]).unwrap(), root.join("A"));
        let named = [dir.path().join("elsewhere"), root.join("B")];
        assert_eq!(choose("Music", &roots, &named).unwrap(), root.join("B"));
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = choose("Films", &[empty], &[]).unwrap_err().to_string();
        assert!(err.contains("\"Films\" has no folder to scan"), "{err}");
    }

    #[test]
    fn the_first_files_are_read_depth_first_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let album = dir.path().join("Artist");
        std::fs::create_dir_all(album.join("2 Second")).unwrap();
        std::fs::create_dir_all(album.join("1 First")).unwrap();
        std::fs::write(album.join("2 Second/01.flac"), b"b").unwrap();
        std::fs::write(album.join("1 First/01.flac"), b"a").unwrap();
        std::fs::write(album.join("cover.jpg"), b"c").unwrap();
        let files = first_files(&album, 2).unwrap();
        assert_eq!(
            files,
            [album.join("cover.jpg"), album.join("1 First/01.flac")]
        );
        assert_eq!(read_first_files(&album).unwrap(), 3);
        let err = read_first_files(&album.join("1 First/01.flac"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot list"), "{err}");
    }
}
