//! What happens to a library item whose file is gone: Plex marks its
//! metadata item, media item and part `deleted_at` (unavailable, "in the
//! trash"), and deletes the rows when the trash is emptied, which
//! `autoEmptyTrash` does after every scan: the real behaviour behind
//! lessons.md rule 1.

use anyhow::Result;
use rusqlite::{Connection, Transaction, params};

/// A media part the DB knows, with the rows above it.
#[derive(Debug, Clone)]
pub struct KnownPart {
    pub part_id: i64,
    pub media_item_id: i64,
    pub metadata_item_id: i64,
    pub file: String,
    pub deleted: bool,
    pub directory_id: Option<i64>,
}

/// Every part of a section, live or not.
pub fn known_parts(conn: &Connection, section: i64) -> Result<Vec<KnownPart>> {
    let mut statement = conn.prepare(
        "SELECT mp.id, mp.media_item_id, coalesce(mi.metadata_item_id, 0), coalesce(mp.file, ''),
                mp.deleted_at IS NOT NULL, mp.directory_id
         FROM media_parts mp JOIN media_items mi ON mi.id = mp.media_item_id
         WHERE mi.library_section_id = ?1 ORDER BY mp.id",
    )?;
    let rows = statement.query_map([section], |row| {
        Ok(KnownPart {
            part_id: row.get(0)?,
            media_item_id: row.get(1)?,
            metadata_item_id: row.get(2)?,
            file: row.get(3)?,
            deleted: row.get(4)?,
            directory_id: row.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Marks the part unavailable, and its media item and metadata item when
/// none of their parts is left available.
pub fn mark_unavailable(tx: &Transaction<'_>, part: &KnownPart, now: i64) -> Result<()> {
    tx.execute(
        "UPDATE media_parts SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
        params![part.part_id, now],
    )?;
    tx.execute(
        "UPDATE media_items SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM media_parts WHERE media_item_id = ?1 AND deleted_at IS NULL)",
        params![part.media_item_id, now],
    )?;
    tx.execute(
        "UPDATE metadata_items SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM media_items WHERE metadata_item_id = ?1 AND deleted_at IS NULL)",
        params![part.metadata_item_id, now],
    )?;
    Ok(())
}

/// The file is back: the part, its media item, its metadata item and its
/// folder are available again.
pub fn restore(tx: &Transaction<'_>, part: &KnownPart, now: i64) -> Result<()> {
    tx.execute(
        "UPDATE media_parts SET deleted_at = NULL, updated_at = ?2 WHERE id = ?1",
        params![part.part_id, now],
    )?;
    tx.execute(
        "UPDATE media_items SET deleted_at = NULL, updated_at = ?2 WHERE id = ?1",
        params![part.media_item_id, now],
    )?;
    tx.execute(
        "UPDATE metadata_items SET deleted_at = NULL, updated_at = ?2 WHERE id = ?1",
        params![part.metadata_item_id, now],
    )?;
    if let Some(directory) = part.directory_id {
        tx.execute(
            "UPDATE directories SET deleted_at = NULL WHERE id = ?1",
            [directory],
        )?;
    }
    Ok(())
}

/// Deletes containers (shows, seasons, artists, albums, photo albums) left
/// without children, innermost first, as Plex cleans up after a purge.
pub fn prune_empty_containers(tx: &Transaction<'_>, section: i64) -> Result<usize> {
    let mut removed = 0;
    loop {
        let n = tx.execute(
            "DELETE FROM metadata_items WHERE library_section_id = ?1
               AND metadata_type IN (2, 3, 8, 9, 14)
               AND NOT EXISTS (SELECT 1 FROM metadata_items child WHERE child.parent_id = metadata_items.id)",
            [section],
        )?;
        removed += n;
        if n == 0 {
            return Ok(removed);
        }
    }
}

/// `emptyTrash`: deletes every row of the section marked `deleted_at`.
/// Returns the metadata items removed.
pub fn empty_trash(conn: &mut Connection, section: i64) -> Result<usize> {
    let tx = conn.transaction()?;
    let in_section = "SELECT id FROM media_items WHERE library_section_id = ?1";
    tx.execute(
        &format!(
            "DELETE FROM media_streams WHERE media_part_id IN
               (SELECT id FROM media_parts WHERE deleted_at IS NOT NULL AND media_item_id IN ({in_section}))"
        ),
        [section],
    )?;
    tx.execute(
        &format!("DELETE FROM media_parts WHERE deleted_at IS NOT NULL AND media_item_id IN ({in_section})"),
        [section],
    )?;
    tx.execute(
        "DELETE FROM media_streams WHERE media_item_id IN
           (SELECT id FROM media_items WHERE library_section_id = ?1 AND deleted_at IS NOT NULL)",
        [section],
    )?;
    tx.execute(
        "DELETE FROM media_items WHERE library_section_id = ?1 AND deleted_at IS NOT NULL",
        [section],
    )?;
    tx.execute(
        "DELETE FROM taggings WHERE metadata_item_id IN
           (SELECT id FROM metadata_items WHERE library_section_id = ?1 AND deleted_at IS NOT NULL)",
        [section],
    )?;
    let items = tx.execute(
        "DELETE FROM metadata_items WHERE library_section_id = ?1 AND deleted_at IS NOT NULL",
        [section],
    )?;
    tx.execute(
        "DELETE FROM directories WHERE library_section_id = ?1 AND deleted_at IS NOT NULL",
        [section],
    )?;
    let containers = prune_empty_containers(&tx, section)?;
    tx.commit()?;
    Ok(items + containers)
}
