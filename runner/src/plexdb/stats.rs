//! What a library DB holds: items per library and per type (every type
//! present, photos included), what lies outside the libraries, deleted and
//! unavailable counts, Sonic progress. Read-only; a few grouped scans,
//! whatever the number of types.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{PlexDbError, open_plex_read_only};

/// `metadata_items.metadata_type` of a music track.
pub const TRACK: i64 = 10;

/// The names Plex gives to `metadata_type` values: plex.md, and the
/// search types of python-plexapi (a client tested against real servers),
/// which name the rest, e.g. 42 for the optimized-versions list that real
/// DBs hold (its title is "Background Processing List").
const TYPE_NAMES: [(i64, &str); 19] = [
    (1, "movie"),
    (2, "show"),
    (3, "season"),
    (4, "episode"),
    (5, "trailer"),
    (6, "comic"),
    (7, "person"),
    (8, "artist"),
    (9, "album"),
    (TRACK, "track"),
    (11, "picture"),
    (12, "clip"),
    (13, "photo"),
    (14, "photoalbum"),
    (15, "playlist"),
    (16, "playlist_folder"),
    (18, "collection"),
    (42, "optimized_version"),
    (1001, "user_playlist_item"),
];

/// The name of a metadata type; an unknown one is reported by number
/// (`type_77`) rather than dropped.
pub fn type_name(metadata_type: i64) -> String {
    TYPE_NAMES
        .iter()
        .find(|(code, _)| *code == metadata_type)
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| format!("type_{metadata_type}"))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// One entry per `library_sections` row, by id.
    pub libraries: Vec<LibraryStats>,
    /// Every `metadata_items` row by type name, whatever its library
    /// (playlists and collections have none).
    pub totals: BTreeMap<String, ItemCount>,
    /// The rows of `totals` in no library: Plex's own (theme songs as
    /// tracks of the hidden section -2, extras, playlists).
    #[serde(default)]
    pub outside_libraries: BTreeMap<String, ItemCount>,
    /// Sonic progress over the live tracks of the libraries (theme songs
    /// are never analysed, so they do not count).
    pub sonic: SonicProgress,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibraryStats {
    pub id: i64,
    pub name: String,
    pub section_type: i64,
    /// `section_type` by name (`artist` for music, `photo`, ...).
    pub section_type_name: String,
    /// Items by type name.
    pub items: BTreeMap<String, ItemCount>,
    /// `media_parts` marked deleted (their file went missing).
    pub deleted_parts: u64,
    /// Root paths with `section_locations.available` false.
    pub unavailable_locations: Vec<String>,
    /// Live tracks in this library and those Sonic-analysed (zero for a
    /// library without tracks).
    pub sonic: SonicProgress,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemCount {
    /// `deleted_at IS NULL`.
    pub live: u64,
    /// `deleted_at IS NOT NULL` (in Plex's trash).
    pub deleted: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SonicProgress {
    /// Live tracks whose `extra_data` carries `musicAnalysisVersion`
    /// (URL-encoded or JSON: the substring is the same).
    pub analysed: u64,
    pub tracks: u64,
}

impl SonicProgress {
    fn add(&mut self, other: SonicProgress) {
        self.analysed += other.analysed;
        self.tracks += other.tracks;
    }
}

impl Stats {
    pub fn library(&self, name: &str) -> Option<&LibraryStats> {
        self.libraries.iter().find(|l| l.name == name)
    }

    /// Live items of one type across the DB.
    pub fn live(&self, type_name: &str) -> u64 {
        self.totals.get(type_name).map_or(0, |c| c.live)
    }
}

/// Every `metadata_items` row of section `section_id`, live or deleted:
/// what a scan's progress is watched by. The section's index answers it
/// (milliseconds), where [`collect`] reads every row of the DB (seconds at
/// the user's size, once per poll).
pub fn section_rows(db: &Path, section_id: i64) -> Result<u64, PlexDbError> {
    let conn = open_plex_read_only(db)?;
    conn.query_row(
        "SELECT count(*) FROM metadata_items WHERE library_section_id = ?1",
        [section_id],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
    .map_err(|e| PlexDbError::sqlite(db, e))
}

/// Reads the counts from `db` (read-only; safe while Plex runs).
pub fn collect(db: &Path) -> Result<Stats, PlexDbError> {
    let conn = open_plex_read_only(db)?;
    let sqlite = |e| PlexDbError::sqlite(db, e);
    // One read transaction: all counts come from the same snapshot.
    conn.execute_batch("BEGIN").map_err(sqlite)?;

    let mut stats = Stats::default();
    let mut stmt = conn
        .prepare(
            "SELECT id, coalesce(name, ''), coalesce(section_type, 0) FROM library_sections ORDER BY id",
        )
        .map_err(sqlite)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(sqlite)?;
    for row in rows {
        let (id, name, section_type) = row.map_err(sqlite)?;
        let section_type_name = type_name(section_type);
        stats.libraries.push(LibraryStats {
            id,
            name,
            section_type,
            section_type_name,
            ..Default::default()
        });
    }
    let mut by_id: BTreeMap<i64, usize> = stats
        .libraries
        .iter()
        .enumerate()
        .map(|(i, l)| (l.id, i))
        .collect();

    // The one scan of metadata_items: per section, type and deleted flag.
    let mut stmt = conn
        .prepare(
            "SELECT library_section_id, metadata_type, deleted_at IS NOT NULL, count(*),
                    sum(metadata_type = ?1 AND extra_data LIKE '%musicAnalysisVersion%')
             FROM metadata_items GROUP BY 1, 2, 3",
        )
        .map_err(sqlite)?;
    let rows = stmt
        .query_map([TRACK], |r| {
            Ok((
                r.get::<_, Option<i64>>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        })
        .map_err(sqlite)?;
    for row in rows {
        let (section, metadata_type, deleted, count, analysed) = row.map_err(sqlite)?;
        let (count, analysed) = (count as u64, analysed.unwrap_or(0) as u64);
        let name = metadata_type.map_or_else(|| "type_null".to_string(), type_name);
        let add = |items: &mut BTreeMap<String, ItemCount>| {
            let entry = items.entry(name.clone()).or_default();
            if deleted {
                entry.deleted += count
            } else {
                entry.live += count
            }
        };
        add(&mut stats.totals);
        let sonic = SonicProgress {
            analysed,
            tracks: count,
        };
        let is_live_track = metadata_type == Some(TRACK) && !deleted;
        match section
            .and_then(|id| by_id.get_mut(&id))
            .map(|i| &mut stats.libraries[*i])
        {
            Some(library) => {
                add(&mut library.items);
                if is_live_track {
                    library.sonic.add(sonic);
                    stats.sonic.add(sonic);
                }
            }
            None => add(&mut stats.outside_libraries),
        }
    }

    let mut stmt = conn
        .prepare(
            "SELECT mi.library_section_id, count(*) FROM media_parts mp
             JOIN media_items mi ON mi.id = mp.media_item_id
             WHERE mp.deleted_at IS NOT NULL GROUP BY 1",
        )
        .map_err(sqlite)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(sqlite)?;
    for row in rows {
        let (section, count) = row.map_err(sqlite)?;
        if let Some(i) = section.and_then(|id| by_id.get_mut(&id)) {
            stats.libraries[*i].deleted_parts += count as u64;
        }
    }

    // `available` is a Rails boolean: 0/1 or 'f'/'t' depending on the writer.
    let mut stmt = conn
        .prepare(
            "SELECT library_section_id, coalesce(root_path, '') FROM section_locations
             WHERE available IN (0, 'f', 'false') ORDER BY id",
        )
        .map_err(sqlite)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(sqlite)?;
    for row in rows {
        let (section, root) = row.map_err(sqlite)?;
        if let Some(i) = section.and_then(|id| by_id.get_mut(&id)) {
            stats.libraries[*i].unavailable_locations.push(root);
        }
    }
    Ok(stats)
}
