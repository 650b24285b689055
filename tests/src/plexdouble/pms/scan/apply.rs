//! The DB side of a scan: what the header reads decided, written in small
//! transactions (the writer lock is never held across file I/O).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rusqlite::{OptionalExtension, Transaction, params};

use super::place::{self, Node};
use crate::plexdouble::ids;
use crate::plexdouble::pms::db::Db;
use crate::plexdouble::pms::library::{Location, Section};
use crate::plexdouble::pms::trash::{self, KnownPart};

/// A readable file the DB does not know yet.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub location: Location,
    /// The location's rank among the section's locations.
    pub location_rank: usize,
    pub path: PathBuf,
    pub size: u64,
}

#[derive(Debug, Default)]
pub struct Changes {
    /// Known parts marked deleted whose file reads again.
    pub restore: Vec<KnownPart>,
    /// Known live parts whose file is missing or unreadable.
    pub gone: Vec<KnownPart>,
    /// Known live parts under a location root that cannot be listed.
    pub offline: Vec<KnownPart>,
    pub new: Vec<NewFile>,
    /// Locations whose root could not be listed.
    pub offline_locations: Vec<i64>,
}

impl Changes {
    pub fn count(&self) -> usize {
        self.restore.len() + self.gone.len() + self.offline.len() + self.new.len()
    }
}

#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub added: usize,
    pub restored: usize,
    pub marked: usize,
    pub purged: usize,
    /// Every metadata item inserted (files and their new parents), for
    /// the metadata update queue.
    pub inserted: Vec<i64>,
}

enum Op<'a> {
    Restore(&'a KnownPart),
    Gone(&'a KnownPart),
    Offline(&'a KnownPart),
    New(&'a NewFile),
}

const BATCH: usize = 200;

/// Writes `changes`: gone items are marked unavailable, then with
/// `auto_empty` (the `autoEmptyTrash` pref) the trash is emptied. Stops
/// between batches when `stop` says so.
pub fn apply(
    db: &Db,
    section: &Section,
    changes: &Changes,
    auto_empty: bool,
    stop: &dyn Fn() -> bool,
    progress: &dyn Fn(usize),
) -> Result<Summary> {
    let ops: Vec<Op<'_>> = changes
        .restore
        .iter()
        .map(Op::Restore)
        .chain(changes.gone.iter().map(Op::Gone))
        .chain(changes.offline.iter().map(Op::Offline))
        .chain(changes.new.iter().map(Op::New))
        .collect();
    let now = ids::now();
    let mut summary = Summary::default();
    let mut inserter = Inserter::new(section, now);
    for (n, batch) in ops.chunks(BATCH).enumerate() {
        if stop() {
            break;
        }
        db.write(|conn| {
            let tx = conn.transaction()?;
            for op in batch {
                match op {
                    Op::Restore(part) => {
                        trash::restore(&tx, part, now)?;
                        summary.restored += 1;
                    }
                    Op::Gone(part) | Op::Offline(part) => {
                        trash::mark_unavailable(&tx, part, now)?;
                        summary.marked += 1;
                    }
                    Op::New(file) => {
                        inserter
                            .insert(&tx, file)
                            .with_context(|| format!("adding {}", file.path.display()))?;
                        summary.added += 1;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })?;
        progress((n * BATCH + batch.len()).min(ops.len()));
    }
    summary.inserted = inserter.inserted;
    // `autoEmptyTrash` empties the section's whole trash after the scan,
    // unless a location is offline (Plex's one guard).
    if auto_empty && changes.offline.is_empty() && changes.offline_locations.is_empty() && !stop() {
        summary.purged = db.write(|conn| trash::empty_trash(conn, section.id))?;
    }
    db.write(|conn| {
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE library_sections SET scanned_at = ?2, updated_at = ?2, content_changed_at = ?2 WHERE id = ?1",
            params![section.id, now],
        )?;
        for location in &section.locations {
            let available = !changes.offline_locations.contains(&location.id);
            tx.execute(
                "UPDATE section_locations SET scanned_at = ?2, updated_at = ?2, available = ?3 WHERE id = ?1",
                params![location.id, now, available],
            )?;
        }
        tx.commit()?;
        Ok(())
    })?;
    Ok(summary)
}

/// Adds new files with their folders and parent items, reusing existing
/// ones.
struct Inserter {
    section: i64,
    section_type: i64,
    now: i64,
    containers: HashMap<(Option<i64>, i64, String), i64>,
    directories: HashMap<(Option<i64>, String), i64>,
    roots: HashMap<i64, i64>,
    inserted: Vec<i64>,
}

impl Inserter {
    fn new(section: &Section, now: i64) -> Inserter {
        Inserter {
            section: section.id,
            section_type: section.section_type,
            now,
            containers: HashMap::new(),
            directories: HashMap::new(),
            roots: HashMap::new(),
            inserted: Vec::new(),
        }
    }

    fn insert(&mut self, tx: &Transaction<'_>, file: &NewFile) -> Result<()> {
        let root = Path::new(&file.location.path);
        let relative = file.path.strip_prefix(root)?;
        let placement = place::place(self.section_type, relative);
        let directory =
            self.directory(tx, &file.location, file.location_rank, relative.parent())?;
        let mut parent = None;
        for node in &placement.parents {
            parent = Some(self.container(tx, parent, node)?);
        }
        let item = self.metadata(tx, parent, &placement.leaf, true)?;
        let extension = file
            .path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let container = match extension.as_str() {
            "jpg" => "jpeg",
            "m4v" => "mp4",
            other => other,
        };
        tx.execute(
            "INSERT INTO media_items(library_section_id, section_location_id, metadata_item_id, type_id, size,
                container, created_at, updated_at, media_analysis_version)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, 0)",
            params![
                self.section,
                file.location.id,
                item,
                placement.leaf.metadata_type,
                file.size as i64,
                container,
                self.now
            ],
        )?;
        let media_item = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO media_parts(media_item_id, directory_id, hash, file, \"index\", size, created_at, updated_at)
             VALUES(?1, ?2, ?3, ?4, 0, ?5, ?6, ?6)",
            params![
                media_item,
                directory,
                ids::hex(40),
                file.path.to_string_lossy(),
                file.size as i64,
                self.now
            ],
        )?;
        Ok(())
    }

    /// A show, season, artist, album or photo album: found or created.
    fn container(&mut self, tx: &Transaction<'_>, parent: Option<i64>, node: &Node) -> Result<i64> {
        let key = (parent, node.metadata_type, node.title.clone());
        if let Some(id) = self.containers.get(&key) {
            return Ok(*id);
        }
        let existing = tx
            .query_row(
                "SELECT id FROM metadata_items WHERE library_section_id = ?1 AND metadata_type = ?2
                   AND parent_id IS ?3 AND title = ?4 AND deleted_at IS NULL ORDER BY id LIMIT 1",
                params![self.section, node.metadata_type, parent, node.title],
                |row| row.get(0),
            )
            .optional()?;
        let id = match existing {
            Some(id) => id,
            None => self.metadata(tx, parent, node, false)?,
        };
        self.containers.insert(key, id);
        Ok(id)
    }

    fn metadata(
        &mut self,
        tx: &Transaction<'_>,
        parent: Option<i64>,
        node: &Node,
        leaf: bool,
    ) -> Result<i64> {
        // Unmatched until the metadata update queue processes it: a
        // `local://` guid and no `refreshed_at`, as Plex leaves an item its
        // agent has not matched yet.
        tx.execute(
            "INSERT INTO metadata_items(library_section_id, parent_id, metadata_type, guid, media_item_count,
                title, title_sort, \"index\", year, added_at, created_at, updated_at, refreshed_at, changed_at,
                resources_changed_at)
             VALUES(?1, ?2, ?3, '', ?4, ?5, ?5, ?6, ?7, ?8, ?8, ?8, NULL, ?8, ?8)",
            params![
                self.section,
                parent,
                node.metadata_type,
                leaf.then_some(1),
                node.title,
                node.index,
                node.year,
                self.now
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE metadata_items SET guid = ?2 WHERE id = ?1",
            params![id, format!("local://{id}")],
        )?;
        self.inserted.push(id);
        Ok(id)
    }

    /// The `directories` row of a folder (relative to the location root;
    /// the root itself has path "").
    fn directory(
        &mut self,
        tx: &Transaction<'_>,
        location: &Location,
        rank: usize,
        folder: Option<&Path>,
    ) -> Result<i64> {
        let mut parent = self.root_directory(tx, location, rank)?;
        let mut path = String::new();
        for component in folder.into_iter().flat_map(Path::components) {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(&component.as_os_str().to_string_lossy());
            let key = (Some(parent), path.clone());
            parent = match self.directories.get(&key) {
                Some(id) => *id,
                None => {
                    let id =
                        find_or_insert_directory(tx, self.section, Some(parent), &path, self.now)?;
                    self.directories.insert(key, id);
                    id
                }
            };
        }
        Ok(parent)
    }

    /// Each location has a root row (parent NULL, path ""), in location
    /// order.
    fn root_directory(
        &mut self,
        tx: &Transaction<'_>,
        location: &Location,
        rank: usize,
    ) -> Result<i64> {
        if let Some(id) = self.roots.get(&location.id) {
            return Ok(*id);
        }
        let existing = tx
            .query_row(
                "SELECT id FROM directories WHERE library_section_id = ?1 AND parent_directory_id IS NULL
                   AND path = '' ORDER BY id LIMIT 1 OFFSET ?2",
                params![self.section, rank as i64],
                |row| row.get(0),
            )
            .optional()?;
        let id = match existing {
            Some(id) => id,
            None => insert_directory(tx, self.section, None, "", self.now)?,
        };
        self.roots.insert(location.id, id);
        Ok(id)
    }
}

fn find_or_insert_directory(
    tx: &Transaction<'_>,
    section: i64,
    parent: Option<i64>,
    path: &str,
    now: i64,
) -> Result<i64> {
    let existing = tx
        .query_row(
            "SELECT id FROM directories WHERE library_section_id = ?1 AND parent_directory_id IS ?2 AND path = ?3
             ORDER BY id LIMIT 1",
            params![section, parent, path],
            |row| row.get(0),
        )
        .optional()?;
    match existing {
        Some(id) => {
            tx.execute(
                "UPDATE directories SET deleted_at = NULL WHERE id = ?1",
                [id],
            )?;
            Ok(id)
        }
        None => insert_directory(tx, section, parent, path, now),
    }
}

fn insert_directory(
    tx: &Transaction<'_>,
    section: i64,
    parent: Option<i64>,
    path: &str,
    now: i64,
) -> Result<i64> {
    tx.execute(
        "INSERT INTO directories(library_section_id, parent_directory_id, path, created_at, updated_at)
         VALUES(?1, ?2, ?3, ?4, ?4)",
        params![section, parent, path, now],
    )?;
    Ok(tx.last_insert_rowid())
}
