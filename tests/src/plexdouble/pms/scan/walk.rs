//! Listing a location's media files, as the scanner walks the tree.

use std::io;
use std::path::{Path, PathBuf};

const VIDEO: &[&str] = &[
    "mkv", "mp4", "m4v", "avi", "mov", "ts", "m2ts", "wmv", "webm", "mpg", "mpeg",
];
const AUDIO: &[&str] = &[
    "flac", "mp3", "m4a", "aac", "ogg", "opus", "wav", "aiff", "alac", "wma",
];
const PHOTO: &[&str] = &["jpg", "jpeg", "png", "heic", "gif", "tif", "tiff", "webp"];

/// The media extensions a section type's scanner picks up (subtitles and
/// other side files are not items).
pub fn extensions(section_type: i64) -> &'static [&'static str] {
    match section_type {
        1 | 2 => VIDEO,
        8 => AUDIO,
        13 => PHOTO,
        _ => &[],
    }
}

/// Every non-directory entry under `root` with one of `extensions`,
/// sorted. Hidden entries are skipped. Only an unlistable `root` is an
/// error; an unlistable subfolder is skipped (its files then count as
/// missing, as they would for Plex).
pub fn media_files(root: &Path, extensions: &[&str]) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    let mut first = true;
    while let Some(folder) = folders.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(error) if first => return Err(error),
            Err(_) => continue,
        };
        first = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            // Follow symlinks to decide what an entry is.
            let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
            if is_dir {
                folders.push(path);
            } else if has_extension(&name, extensions) {
                // Not only regular files: a FIFO or device named like media
                // is what a broken mount can look like, and is probed.
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn has_extension(name: &str, extensions: &[&str]) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| extensions.contains(&ext.to_ascii_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_media_of_the_type_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("A (2000)/.hidden")).unwrap();
        for name in [
            "A (2000)/A (2000).MKV",
            "A (2000)/A (2000).en.srt",
            "A (2000)/.hidden/x.mkv",
            "b.mp4",
        ] {
            std::fs::write(root.join(name), b"x").unwrap();
        }
        let files = media_files(root, extensions(1)).unwrap();
        assert_eq!(
            files,
            vec![root.join("A (2000)/A (2000).MKV"), root.join("b.mp4")]
        );
        assert!(media_files(&root.join("absent"), VIDEO).is_err());
    }
}
