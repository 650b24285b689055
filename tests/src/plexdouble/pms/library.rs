//! Library sections in the DB: listing, loading, creating, and item
//! counts.

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};

use crate::plexdouble::ids;

#[derive(Debug, Clone)]
pub struct Section {
    pub id: i64,
    pub name: String,
    pub section_type: i64,
    pub agent: String,
    pub scanner: String,
    pub language: String,
    pub uuid: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub scanned_at: Option<i64>,
    pub locations: Vec<Location>,
}

#[derive(Debug, Clone)]
pub struct Location {
    pub id: i64,
    pub path: String,
    pub available: bool,
}

/// Section types by API name, with `library_sections.section_type` and
/// the (agent, scanner) pair Plex uses for it.
pub const SECTION_TYPES: &[(&str, i64, &str, &str)] = &[
    ("movie", 1, "tv.plex.agents.movie", "Plex Movie"),
    ("show", 2, "tv.plex.agents.series", "Plex TV Series"),
    ("artist", 8, "tv.plex.agents.music", "Plex Music"),
    ("photo", 13, "com.plexapp.agents.none", "Plex Photo Scanner"),
];

pub fn type_name(section_type: i64) -> &'static str {
    SECTION_TYPES
        .iter()
        .find(|t| t.1 == section_type)
        .map_or("unknown", |t| t.0)
}

/// Metadata type names by `metadata_items.metadata_type` (plex.md).
pub const METADATA_TYPES: &[(i64, &str)] = &[
    (1, "movie"),
    (2, "show"),
    (3, "season"),
    (4, "episode"),
    (5, "trailer"),
    (8, "artist"),
    (9, "album"),
    (10, "track"),
    (12, "clip"),
    (13, "photo"),
    (14, "photoalbum"),
    (15, "playlist"),
    (18, "collection"),
];

pub fn metadata_type_name(code: i64) -> Option<&'static str> {
    METADATA_TYPES.iter().find(|t| t.0 == code).map(|t| t.1)
}

const SECTION_COLUMNS: &str = "id, name, section_type, coalesce(agent, ''), coalesce(scanner, ''),
    coalesce(language, ''), coalesce(uuid, ''), coalesce(created_at, 0), coalesce(updated_at, 0), scanned_at";

fn section_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Section> {
    Ok(Section {
        id: row.get(0)?,
        name: row.get::<_, Option<String>>(1)?.unwrap_or_default(),
        section_type: row.get::<_, Option<i64>>(2)?.unwrap_or_default(),
        agent: row.get(3)?,
        scanner: row.get(4)?,
        language: row.get(5)?,
        uuid: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
        scanned_at: row.get(9)?,
        locations: Vec::new(),
    })
}

fn locations(conn: &Connection, section: i64) -> Result<Vec<Location>> {
    // `available` is declared boolean with default "t": accept both forms.
    let mut statement = conn.prepare_cached(
        "SELECT id, coalesce(root_path, ''), coalesce(available IN (1, 't', 'true', '1'), 1)
         FROM section_locations WHERE library_section_id = ?1 ORDER BY id",
    )?;
    let rows = statement.query_map([section], |row| {
        Ok(Location {
            id: row.get(0)?,
            path: row.get(1)?,
            available: row.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn list(conn: &Connection) -> Result<Vec<Section>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {SECTION_COLUMNS} FROM library_sections WHERE section_type IN (1, 2, 8, 13) ORDER BY id"
    ))?;
    let mut sections = statement
        .query_map([], section_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for section in &mut sections {
        section.locations = locations(conn, section.id)?;
    }
    Ok(sections)
}

pub fn load(conn: &Connection, id: i64) -> Result<Option<Section>> {
    let section = conn
        .query_row(
            &format!("SELECT {SECTION_COLUMNS} FROM library_sections WHERE id = ?1 AND section_type IN (1, 2, 8, 13)"),
            [id],
            section_from_row,
        )
        .optional()?;
    match section {
        Some(mut section) => {
            section.locations = locations(conn, id)?;
            Ok(Some(section))
        }
        None => Ok(None),
    }
}

pub struct NewSection<'a> {
    pub name: &'a str,
    pub section_type: i64,
    pub agent: &'a str,
    pub scanner: &'a str,
    pub language: &'a str,
    pub locations: &'a [String],
}

/// Inserts the section and its locations; returns its id.
pub fn create(conn: &mut Connection, new: &NewSection<'_>) -> Result<i64> {
    let now = ids::now();
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO library_sections(name, name_sort, section_type, language, agent, scanner, public,
            created_at, updated_at, display_secondary_level, uuid, changed_at, content_changed_at)
         VALUES(?1, ?1, ?2, ?3, ?4, ?5, 0, ?6, ?6, 0, ?7, ?6, ?6)",
        params![
            new.name,
            new.section_type,
            new.language,
            new.agent,
            new.scanner,
            now,
            ids::uuid_v4()
        ],
    )?;
    let id = tx.last_insert_rowid();
    for path in new.locations {
        tx.execute(
            "INSERT INTO section_locations(library_section_id, root_path, available, created_at, updated_at)
             VALUES(?1, ?2, 1, ?3, ?3)",
            params![id, path, now],
        )?;
    }
    tx.commit()?;
    Ok(id)
}

pub fn name_taken(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM library_sections WHERE name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Live items of a metadata type in a section.
pub fn count_live(conn: &Connection, section: i64, metadata_type: i64) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM metadata_items
         WHERE library_section_id = ?1 AND metadata_type = ?2 AND deleted_at IS NULL",
        [section, metadata_type],
        |row| row.get(0),
    )?)
}
