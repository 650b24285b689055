//! Will Plex find its media under the mount? (lessons.md, rule 6)
//!
//! Lists every library location and every media root, after path mapping,
//! and whether each lies under the mount point by whole components. A
//! file's *root* is the longest library location (`section_locations`)
//! that contains it, before mapping; a file under no location is grouped by
//! the first [`STRAY_ROOT_DEPTH`] components of its folder
//! (`/data/photos2/2019/a.jpg` → `/data/photos2`). Coverage is decided per
//! file, so a mapping that moves part of a root elsewhere is seen.
//!
//! Plex's own files are not library media: outside every location, a file
//! of an item in no library (theme songs are tracks of the hidden section
//! -2) or under Plex's data folder (`.../Plex Media Server/Metadata/...`)
//! is counted apart, never required under the mount.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::paths::{Mapper, PathMapping, is_under, strip_prefix};
use super::{PlexDbError, open_plex_read_only};

/// Components kept to name the root of a file under no library location.
pub const STRAY_ROOT_DEPTH: usize = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageReport {
    pub mount_point: String,
    pub locations: Vec<LocationCoverage>,
    pub file_roots: Vec<FileRootCoverage>,
    /// Live files of Plex's own, left out (see the module's doc).
    #[serde(default)]
    pub plex_own_files: u64,
}

/// One `section_locations` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationCoverage {
    pub library_id: i64,
    pub library: String,
    pub root_path: String,
    /// `root_path` after mapping.
    pub mapped: String,
    pub covered: bool,
}

/// The live (`deleted_at IS NULL`) media files under one root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRootCoverage {
    /// Before mapping.
    pub root: String,
    /// True when `root` is a library location, false for a stray group.
    pub is_location: bool,
    /// The library of the first file seen under this root.
    pub library: Option<String>,
    pub files: u64,
    /// Files whose mapped path lies outside the mount.
    pub outside: u64,
    /// The first of those, mapped: a path to show the user.
    pub first_outside: Option<String>,
}

/// A path Plex would not find under the mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncovered {
    /// e.g. `library "Photos" location` or `12 media files of library "Photos" under`.
    pub what: String,
    pub path: String,
    pub mapped: String,
}

impl CoverageReport {
    /// Everything outside the mount, locations first.
    pub fn uncovered(&self) -> Vec<Uncovered> {
        let locations = self
            .locations
            .iter()
            .filter(|l| !l.covered)
            .map(|l| Uncovered {
                what: format!("library {:?} location", l.library),
                path: l.root_path.clone(),
                mapped: l.mapped.clone(),
            });
        let roots = self
            .file_roots
            .iter()
            .filter(|r| r.outside > 0)
            .map(|r| Uncovered {
                what: match &r.library {
                    Some(library) => {
                        format!("{} media files of library {library:?} under", r.outside)
                    }
                    None => format!("{} media files under", r.outside),
                },
                path: r.root.clone(),
                mapped: r.first_outside.clone().unwrap_or_default(),
            });
        locations.chain(roots).collect()
    }

    /// One line naming the first path outside the mount, or Ok.
    pub fn ensure_covered(&self) -> Result<(), PlexDbError> {
        let uncovered = self.uncovered();
        let Some(first) = uncovered.first() else {
            return Ok(());
        };
        let more = match uncovered.len() - 1 {
            0 => String::new(),
            n => format!(" (and {n} more paths outside it)"),
        };
        let mapped = if first.mapped == first.path {
            String::new()
        } else {
            format!(" (mapped to {})", first.mapped)
        };
        Err(PlexDbError::NotCovered(format!(
            "{} {}{mapped} is outside the mount {}{more}",
            first.what, first.path, self.mount_point
        )))
    }
}

/// Reads every location and media file of `db` (read-only) and checks it
/// against `mount_point` after `mappings`.
pub fn report(
    db: &Path,
    mappings: &[PathMapping],
    mount_point: &Path,
) -> Result<CoverageReport, PlexDbError> {
    let mapper = Mapper::new(mappings)?;
    let mount = mount_point.to_string_lossy().into_owned();
    let conn = open_plex_read_only(db)?;
    let sqlite = |e| PlexDbError::sqlite(db, e);
    conn.execute_batch("BEGIN").map_err(sqlite)?;

    let mut locations = Vec::new();
    let mut stmt = conn
        .prepare(
            "SELECT sl.library_section_id, coalesce(ls.name, ''), sl.root_path FROM section_locations sl
             LEFT JOIN library_sections ls ON ls.id = sl.library_section_id
             WHERE sl.root_path IS NOT NULL ORDER BY sl.id",
        )
        .map_err(sqlite)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<i64>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(sqlite)?;
    for row in rows {
        let (library_id, library, root_path) = row.map_err(sqlite)?;
        let mapped = mapper.apply(&root_path);
        let covered = is_under(&mapped, &mount);
        locations.push(LocationCoverage {
            library_id: library_id.unwrap_or(0),
            library,
            root_path,
            mapped,
            covered,
        });
    }

    // Longest first, so the first match is the innermost location.
    let mut roots: Vec<&str> = locations
        .iter()
        .map(|l| l.root_path.trim_end_matches('/'))
        .collect();
    roots.sort_by_key(|r| std::cmp::Reverse(r.len()));
    roots.dedup();
    let mut stmt = conn
        .prepare("SELECT id, coalesce(name, '') FROM library_sections")
        .map_err(sqlite)?;
    let names: BTreeMap<i64, String> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(sqlite)?
        .collect::<Result<_, _>>()
        .map_err(sqlite)?;

    let mut by_root: BTreeMap<String, FileRootCoverage> = BTreeMap::new();
    let mut plex_own_files = 0;
    let mut stmt = conn
        .prepare(
            "SELECT mp.file, mi.library_section_id FROM media_parts mp
             LEFT JOIN media_items mi ON mi.id = mp.media_item_id
             WHERE mp.deleted_at IS NULL AND mp.file IS NOT NULL AND mp.file != ''",
        )
        .map_err(sqlite)?;
    let mut rows = stmt.query([]).map_err(sqlite)?;
    while let Some(row) = rows.next().map_err(sqlite)? {
        let file: String = row.get(0).map_err(sqlite)?;
        let section: Option<i64> = row.get(1).map_err(sqlite)?;
        let location = roots
            .iter()
            .find(|root| strip_prefix(&file, root).is_some());
        let in_library = section.is_some_and(|id| names.contains_key(&id));
        if location.is_none() && (!in_library || is_plex_data(&file)) {
            plex_own_files += 1;
            continue;
        }
        let root = match location {
            Some(&"") => "/".to_string(),
            Some(r) => r.to_string(),
            None => stray_root(&file),
        };
        let entry = by_root
            .entry(root)
            .or_insert_with_key(|root| FileRootCoverage {
                root: root.clone(),
                is_location: location.is_some(),
                library: section.and_then(|id| names.get(&id)).map(|n| n.to_string()),
                files: 0,
                outside: 0,
                first_outside: None,
            });
        entry.files += 1;
        let mapped = mapper.apply(&file);
        if !is_under(&mapped, &mount) {
            entry.outside += 1;
            entry.first_outside.get_or_insert(mapped);
        }
    }
    drop(rows);
    Ok(CoverageReport {
        mount_point: mount,
        locations,
        file_roots: by_root.into_values().collect(),
        plex_own_files,
    })
}

/// True for a path in Plex's data folder: a `Plex Media Server` component
/// followed by `Metadata` or `Media` (where Plex keeps downloaded theme
/// songs and its generated files).
fn is_plex_data(path: &str) -> bool {
    let components: Vec<&str> = path.split('/').collect();
    components
        .windows(2)
        .any(|w| w[0] == "Plex Media Server" && matches!(w[1], "Metadata" | "Media"))
}

/// The first [`STRAY_ROOT_DEPTH`] components of the folder holding `file`.
fn stray_root(file: &str) -> String {
    let folder = file.rsplit_once('/').map_or("", |(dir, _)| dir);
    let components: Vec<&str> = folder
        .split('/')
        .filter(|c| !c.is_empty())
        .take(STRAY_ROOT_DEPTH)
        .collect();
    format!("/{}", components.join("/"))
}

#[cfg(test)]
mod tests {
    use super::{is_plex_data, stray_root};

    #[test]
    fn plex_data_paths() {
        assert!(is_plex_data(
            "/config/Library/Application Support/Plex Media Server/Metadata/TV Shows/a.bundle/Contents/_combined/themes/x"
        ));
        assert!(is_plex_data(
            "/var/lib/plexmediaserver/Library/Application Support/Plex Media Server/Media/localhost/a"
        ));
        assert!(!is_plex_data(
            "/data/Plex Media Server Backups/Metadata/a.mp3"
        ));
        assert!(!is_plex_data("/data/music/Metadata/a.mp3"));
    }

    #[test]
    fn stray_roots() {
        assert_eq!(stray_root("/data/photos2/2019/a.jpg"), "/data/photos2");
        assert_eq!(stray_root("/data/a.jpg"), "/data");
        assert_eq!(stray_root("/a.jpg"), "/");
        assert_eq!(stray_root("relative.jpg"), "/");
    }
}
