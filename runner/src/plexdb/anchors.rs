//! Anchor files for the mount probe (lessons.md 1): media files the DB says
//! exist, which a healthy mount must serve.
//!
//! Picked at random but cheaply on a 500k-row table: every pick is one seek
//! in the `media_parts.file` index at a random key between the first and
//! the last file of a library location, never a sort of the table. Picks go
//! round-robin over the locations (so a small library is not drowned by the
//! music), and prefer folders not yet used (not all from one album).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::paths::is_under;
use super::{PlexDbError, open_plex_read_only};

/// Random seeks tried per anchor wanted before falling back to taking
/// files in order.
const SEEKS_PER_ANCHOR: usize = 12;
/// Beyond this many anchors, the rest are taken in order (the config allows
/// at most 1000 anchors).
const MAX_RANDOM_PICKS: usize = 1000;
/// Seeks in a row that find nothing new, per location, before the random
/// pass relaxes its folder rule, then gives up.
const MISSES_PER_RANGE: usize = 8;

/// Hops past an already used folder before a seek gives up.
const FOLDER_HOPS: usize = 4;

/// The first live file at or after `?1`, before `?2`. Keys are bound as
/// bytes and compared as text byte for byte (a random key need not be
/// UTF-8). `+deleted_at` keeps the planner on the `file` index (the
/// `deleted_at` index would make it scan every live row).
const NEXT_LIVE: &str = "SELECT file FROM media_parts
    WHERE file >= CAST(?1 AS TEXT) AND file < ?2 AND +deleted_at IS NULL
    ORDER BY file LIMIT 1";
const AFTER_LIVE: &str = "SELECT file FROM media_parts
    WHERE file > CAST(?1 AS TEXT) AND file < ?2 AND +deleted_at IS NULL
    ORDER BY file LIMIT 1";
const LAST_LIVE: &str = "SELECT file FROM media_parts
    WHERE file >= CAST(?1 AS TEXT) AND file < ?2 AND +deleted_at IS NULL
    ORDER BY file DESC LIMIT 1";

/// Up to `n` distinct live (`deleted_at IS NULL`) `media_parts.file` paths
/// that lie under `under` by whole components, spread over the library
/// locations that overlap `under`. Fewer only when fewer exist. Opens `db`
/// read-only.
pub fn sample(db: &Path, n: usize, under: &Path) -> Result<Vec<PathBuf>, PlexDbError> {
    let Some(under) = under.to_str() else {
        return Ok(Vec::new()); // Plex stores paths as text: nothing matches.
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let conn = open_plex_read_only(db)?;
    let sql = |e| PlexDbError::sqlite(db, e);
    let mut ranges = Vec::new();
    for prefix in location_prefixes(&conn, under).map_err(sql)? {
        if let Some(range) = Range::new(&conn, &prefix).map_err(sql)? {
            ranges.push(range);
        }
    }
    let mut picks = Picks::default();
    random_picks(&conn, &ranges, n, &mut picks).map_err(sql)?;
    if picks.files.len() < n {
        ordered_picks(&conn, &ranges, n, &mut picks).map_err(sql)?;
    }
    Ok(picks.files.into_iter().map(PathBuf::from).collect())
}

/// The chosen files, with what makes a choice new.
#[derive(Default)]
struct Picks {
    files: Vec<String>,
    seen: HashSet<String>,
    folders: HashSet<String>,
}

impl Picks {
    /// `file` is not taken (and, when `new_folder`, its folder not used).
    fn wants(&self, file: &str, new_folder: bool) -> bool {
        let used_folder = new_folder && self.folders.contains(folder_of(file));
        !(self.seen.contains(file) || used_folder)
    }

    /// Takes `file` if [`Picks::wants`] it.
    fn offer(&mut self, file: String, new_folder: bool) -> bool {
        if !self.wants(&file, new_folder) {
            return false;
        }
        self.seen.insert(file.clone());
        self.folders.insert(folder_of(&file).to_string());
        self.files.push(file);
        true
    }
}

fn folder_of(file: &str) -> &str {
    file.rsplit_once('/').map_or("", |(folder, _)| folder)
}

/// Files under `lo..hi` (a folder's `prefix/` to `prefix0`: `0` follows
/// `/`, so this is exactly "under prefix") and the first and last live one.
struct Range {
    lo: String,
    hi: String,
    first: String,
    last: String,
}

impl Range {
    /// None when no live file lies under `prefix`.
    fn new(conn: &Connection, prefix: &str) -> rusqlite::Result<Option<Range>> {
        let lo = format!("{prefix}/");
        let hi = format!("{prefix}0");
        let first = one(conn, NEXT_LIVE, lo.as_bytes(), &hi)?;
        let last = one(conn, LAST_LIVE, lo.as_bytes(), &hi)?;
        Ok(first.zip(last).map(|(first, last)| Range {
            lo,
            hi,
            first,
            last,
        }))
    }

    /// A live file that `picks` wants, found by seeking to a random key
    /// between `first` and `last` (there is always a file there, since
    /// `last` is live and the key is not past it); a file in a used folder
    /// makes the seek hop past that folder (wrapping at the end).
    fn random_file(
        &self,
        conn: &Connection,
        picks: &Picks,
        new_folder: bool,
    ) -> rusqlite::Result<Option<String>> {
        let key = random_key(&self.first, &self.last);
        let mut next = one(conn, NEXT_LIVE, &key, &self.hi)?;
        for _ in 0..FOLDER_HOPS {
            let Some(file) = next else {
                return Ok(None);
            };
            if picks.wants(&file, new_folder) {
                return Ok(Some(file));
            }
            // `folder0` sorts after every `folder/...`.
            let past = format!("{}0", folder_of(&file));
            next = match one(conn, NEXT_LIVE, past.as_bytes(), &self.hi)? {
                Some(file) => Some(file),
                None => one(conn, NEXT_LIVE, self.lo.as_bytes(), &self.hi)?,
            };
        }
        Ok(None)
    }
}

fn one(conn: &Connection, sql: &str, from: &[u8], to: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(sql)?
        .query_row(params![from, to], |r| r.get(0))
        .optional()
}

/// Round-robin random seeks, first only into folders not used yet, then
/// (after half the budget, or when seeks keep finding nothing new) into any
/// file not taken. Gives up early when seeks keep finding nothing new at
/// all: fewer files than wanted, and the ordered pass takes the rest.
fn random_picks(
    conn: &Connection,
    ranges: &[Range],
    n: usize,
    picks: &mut Picks,
) -> rusqlite::Result<()> {
    let budget = n.min(MAX_RANDOM_PICKS) * SEEKS_PER_ANCHOR;
    let give_up = MISSES_PER_RANGE * ranges.len();
    let (mut seeks, mut misses, mut new_folder) = (0, 0, true);
    while picks.files.len() < n && seeks < budget && !ranges.is_empty() {
        for range in ranges {
            seeks += 1;
            let took = match range.random_file(conn, picks, new_folder)? {
                Some(file) => picks.offer(file, new_folder),
                None => false,
            };
            misses = if took { 0 } else { misses + 1 };
            if picks.files.len() == n {
                return Ok(());
            }
            if misses >= give_up {
                if !new_folder {
                    return Ok(());
                }
                (new_folder, misses) = (false, 0);
            }
            new_folder &= seeks < budget / 2;
        }
    }
    Ok(())
}

/// Round-robin in index order, for what random seeks missed (a small
/// location whose few files hide behind one another).
fn ordered_picks(
    conn: &Connection,
    ranges: &[Range],
    n: usize,
    picks: &mut Picks,
) -> rusqlite::Result<()> {
    let mut cursors: Vec<Option<String>> = vec![None; ranges.len()];
    let mut open = vec![true; ranges.len()];
    while picks.files.len() < n && open.contains(&true) {
        for (i, range) in ranges.iter().enumerate() {
            if !open[i] {
                continue;
            }
            // Skips files already taken, one index step each.
            loop {
                let next = match &cursors[i] {
                    None => one(conn, NEXT_LIVE, range.lo.as_bytes(), &range.hi)?,
                    Some(after) => one(conn, AFTER_LIVE, after.as_bytes(), &range.hi)?,
                };
                let Some(file) = next else {
                    open[i] = false;
                    break;
                };
                cursors[i] = Some(file.clone());
                if picks.offer(file, false) {
                    break;
                }
            }
            if picks.files.len() == n {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The folders to sample: each library location that lies under `under`,
/// or `under` itself where it lies inside a location; `under` alone when no
/// location overlaps it. Nested ones are dropped (their files are already
/// in the outer range). Without trailing `/`; the root is "".
fn location_prefixes(conn: &Connection, under: &str) -> rusqlite::Result<Vec<String>> {
    let under = under.trim_end_matches('/').to_string();
    let mut stmt = conn.prepare(
        "SELECT DISTINCT root_path FROM section_locations WHERE root_path IS NOT NULL ORDER BY id",
    )?;
    let roots: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    let mut prefixes: Vec<String> = Vec::new();
    for root in roots {
        let root = root.trim_end_matches('/').to_string();
        if !root.is_empty() && !root.starts_with('/') {
            continue;
        }
        let prefix = if is_under(&root, &display(&under)) {
            root
        } else if is_under(&under, &display(&root)) {
            under.clone()
        } else {
            continue;
        };
        if !prefixes.contains(&prefix) {
            prefixes.push(prefix);
        }
    }
    if prefixes.is_empty() {
        prefixes.push(under);
    }
    let all = prefixes.clone();
    prefixes.retain(|p| {
        !all.iter()
            .any(|outer| outer != p && is_under(p, &display(outer)))
    });
    Ok(prefixes)
}

/// A prefix as a path for `is_under` ("" is the root).
fn display(prefix: &str) -> String {
    if prefix.is_empty() {
        "/".into()
    } else {
        prefix.into()
    }
}

/// A key between `first` and `last` (inclusive), uniform over the 8 bytes
/// after their common prefix: random positions in the name space, so random
/// artists and films rather than rows. Bytes, not text: the 8 bytes need
/// not be UTF-8, and SQLite compares text byte for byte.
fn random_key(first: &str, last: &str) -> Vec<u8> {
    let (a, b) = (first.as_bytes(), last.as_bytes());
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let window = |s: &[u8]| {
        let mut w = [0u8; 8];
        for (slot, byte) in w.iter_mut().zip(s.iter().skip(common)) {
            *slot = *byte;
        }
        u64::from_be_bytes(w)
    };
    let (lo, hi) = (window(a), window(b));
    let pick = if lo < hi {
        rand::random_range(lo..=hi)
    } else {
        lo
    };
    let mut key = a[..common].to_vec();
    key.extend_from_slice(&pick.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_keys_stay_between_the_bounds() {
        for (first, last) in [
            ("/m/Music/ABBA/x.flac", "/m/Music/Zappa/y.flac"),
            ("/m/Movies/Amélie/a.mkv", "/m/Movies/Ça ira/b.mkv"),
            ("/m/è/a", "/m/é/b"),
        ] {
            for _ in 0..1000 {
                let key = random_key(first, last);
                assert!(key.as_slice() <= last.as_bytes(), "{key:?}");
                assert!(key.starts_with(b"/m/"), "{key:?}");
            }
        }
        assert!(random_key("/a/x", "/a/x").starts_with(b"/a/x"));
    }

    fn db(locations: &[&str], files: &[(&str, bool)]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lib.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE library_sections (id INTEGER PRIMARY KEY);
             CREATE TABLE metadata_items (id INTEGER PRIMARY KEY);
             CREATE TABLE section_locations (id INTEGER PRIMARY KEY, root_path varchar(255));
             CREATE TABLE media_parts (id INTEGER PRIMARY KEY, file varchar(255), deleted_at integer);
             CREATE INDEX index_media_parts_on_file ON media_parts (file);
             CREATE INDEX index_media_parts_on_deleted_at ON media_parts (deleted_at);",
        )
        .unwrap();
        for root in locations {
            conn.execute(
                "INSERT INTO section_locations (root_path) VALUES (?1)",
                [root],
            )
            .unwrap();
        }
        for (file, deleted) in files {
            conn.execute(
                "INSERT INTO media_parts (file, deleted_at) VALUES (?1, ?2)",
                params![file, deleted.then_some(1)],
            )
            .unwrap();
        }
        (dir, path)
    }

    #[test]
    fn the_file_index_serves_every_seek() {
        let (_dir, path) = db(&["/m/A"], &[("/m/A/x", false)]);
        let conn = Connection::open(&path).unwrap();
        for sql in [NEXT_LIVE, AFTER_LIVE, LAST_LIVE] {
            let plan: String = conn
                .query_row(
                    &format!("EXPLAIN QUERY PLAN {sql}"),
                    params![b"a".as_slice(), "b"],
                    |r| r.get(3),
                )
                .unwrap();
            assert!(plan.contains("index_media_parts_on_file"), "{plan}");
        }
    }

    #[test]
    fn only_live_files_under_whole_components() {
        let (_dir, path) = db(
            &["/m/Movies", "/m/Movies2/", "/other"],
            &[
                ("/m/Movies/a/a.mkv", false),
                ("/m/Movies/b/b.mkv", true),
                ("/m/Movies2/c/c.mkv", false),
                ("/other/d.mkv", false),
                ("/m/Moviesx.mkv", false),
                ("/x/y.mkv", false),
            ],
        );
        let mut all = sample(&path, 10, Path::new("/m/Movies")).unwrap();
        all.sort();
        assert_eq!(all, [PathBuf::from("/m/Movies/a/a.mkv")]);
        let mut both = sample(&path, 10, Path::new("/m/")).unwrap();
        both.sort();
        assert_eq!(
            both,
            [
                PathBuf::from("/m/Movies/a/a.mkv"),
                PathBuf::from("/m/Movies2/c/c.mkv")
            ]
        );
        assert!(sample(&path, 10, Path::new("/m/Mov")).unwrap().is_empty());
        assert!(sample(&path, 0, Path::new("/m")).unwrap().is_empty());
        // Inside a location; under no location; above several.
        assert_eq!(sample(&path, 5, Path::new("/m/Movies/a")).unwrap().len(), 1);
        assert_eq!(
            sample(&path, 5, Path::new("/x")).unwrap(),
            [PathBuf::from("/x/y.mkv")]
        );
        assert_eq!(sample(&path, 5, Path::new("/")).unwrap().len(), 3);
    }
}
