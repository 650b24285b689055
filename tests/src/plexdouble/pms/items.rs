//! Library items as real Plex renders them, from `metadata_items` rows:
//! the element and its type per metadata type (a photo album is a
//! `Directory` of type `photo`, a show a `Directory` whose key ends in
//! `/children`), parent and grandparent attributes, `Media`/`Part` of
//! leaf items and Sonic's `musicAnalysisVersion` read from `extra_data`.
//! python-plexapi (4.18.3: plexapi/audio.py, photo.py, video.py) builds
//! its objects from these tag/type pairs; the attribute names follow it.

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, Row};

use crate::plexdouble::render::Element;

/// One live item with its parent and grandparent.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: i64,
    pub section: Option<i64>,
    pub metadata_type: i64,
    pub guid: String,
    pub title: String,
    pub index: Option<i64>,
    pub year: Option<i64>,
    pub duration: Option<i64>,
    pub added_at: Option<i64>,
    pub updated_at: Option<i64>,
    pub extra_data: Option<String>,
    pub parent: Option<Relative>,
    pub grandparent: Option<Relative>,
}

#[derive(Debug, Clone)]
pub struct Relative {
    pub id: i64,
    pub title: String,
    pub index: Option<i64>,
    pub guid: String,
}

const SELECT: &str = "SELECT m.id, m.library_section_id, m.metadata_type, coalesce(m.guid, ''),
        coalesce(m.title, ''), m.\"index\", m.year, m.duration, m.added_at, m.updated_at, m.extra_data,
        p.id, coalesce(p.title, ''), p.\"index\", coalesce(p.guid, ''),
        g.id, coalesce(g.title, ''), g.\"index\", coalesce(g.guid, '')
    FROM metadata_items m
    LEFT JOIN metadata_items p ON p.id = m.parent_id
    LEFT JOIN metadata_items g ON g.id = p.parent_id";

fn relative(row: &Row<'_>, at: usize) -> rusqlite::Result<Option<Relative>> {
    Ok(match row.get::<_, Option<i64>>(at)? {
        None => None,
        Some(id) => Some(Relative {
            id,
            title: row.get(at + 1)?,
            index: row.get(at + 2)?,
            guid: row.get(at + 3)?,
        }),
    })
}

fn item_from_row(row: &Row<'_>) -> rusqlite::Result<Item> {
    Ok(Item {
        id: row.get(0)?,
        section: row.get(1)?,
        metadata_type: row.get(2)?,
        guid: row.get(3)?,
        title: row.get(4)?,
        index: row.get(5)?,
        year: row.get(6)?,
        duration: row.get(7)?,
        added_at: row.get(8)?,
        updated_at: row.get(9)?,
        extra_data: row.get(10)?,
        parent: relative(row, 11)?,
        grandparent: relative(row, 15)?,
    })
}

/// A live item by id.
pub fn load(conn: &Connection, id: i64) -> Result<Option<Item>> {
    Ok(conn
        .query_row(
            &format!("{SELECT} WHERE m.id = ?1 AND m.deleted_at IS NULL"),
            [id],
            item_from_row,
        )
        .optional()?)
}

/// Which items of a section `/all` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Every live item of a metadata type, whatever its depth.
    Type(i64),
    /// Live items at the top of the section (no parent): what a photo
    /// section lists as its albums and loose photos.
    TopLevel(&'static [i64]),
}

impl Listing {
    fn filter(self) -> String {
        match self {
            Listing::Type(t) => format!("m.metadata_type = {t}"),
            Listing::TopLevel(types) => format!(
                "m.parent_id IS NULL AND m.metadata_type IN ({})",
                types
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

pub fn count(conn: &Connection, section: i64, listing: Listing) -> Result<i64> {
    Ok(conn.query_row(
        &format!(
            "SELECT count(*) FROM metadata_items m
             WHERE m.library_section_id = ?1 AND m.deleted_at IS NULL AND {}",
            listing.filter()
        ),
        [section],
        |row| row.get(0),
    )?)
}

/// A page of live items in id order; `size` -1 is no limit.
pub fn page(
    conn: &Connection,
    section: i64,
    listing: Listing,
    start: i64,
    size: i64,
) -> Result<Vec<Item>> {
    let mut statement = conn.prepare(&format!(
        "{SELECT} WHERE m.library_section_id = ?1 AND m.deleted_at IS NULL AND {}
         ORDER BY m.id LIMIT ?2 OFFSET ?3",
        listing.filter()
    ))?;
    let rows = statement.query_map((section, size, start), item_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The `Media` elements of an item, each with its `Part`s.
pub fn media(conn: &Connection, item: i64) -> Result<Vec<Element>> {
    let mut media = conn.prepare_cached(
        "SELECT id, duration, bitrate, width, height, container, video_codec, audio_codec, audio_channels
         FROM media_items WHERE metadata_item_id = ?1 AND deleted_at IS NULL ORDER BY id",
    )?;
    let mut parts = conn.prepare_cached(
        "SELECT id, coalesce(file, ''), size, duration FROM media_parts
         WHERE media_item_id = ?1 AND deleted_at IS NULL ORDER BY id",
    )?;
    let rows = media
        .query_map([item], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                Element::new("Media")
                    .attr("id", row.get::<_, i64>(0)?)
                    .opt_attr("duration", row.get::<_, Option<i64>>(1)?)
                    .opt_attr("bitrate", row.get::<_, Option<i64>>(2)?)
                    .opt_attr("width", row.get::<_, Option<i64>>(3)?)
                    .opt_attr("height", row.get::<_, Option<i64>>(4)?)
                    .opt_attr("container", row.get::<_, Option<String>>(5)?)
                    .opt_attr("videoCodec", row.get::<_, Option<String>>(6)?)
                    .opt_attr("audioCodec", row.get::<_, Option<String>>(7)?)
                    .opt_attr("audioChannels", row.get::<_, Option<i64>>(8)?),
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for (id, element) in rows {
        let children = parts
            .query_map([id], |row| {
                let part: i64 = row.get(0)?;
                let file: String = row.get(1)?;
                let name = file.rsplit('/').next().unwrap_or_default().to_string();
                Ok(Element::new("Part")
                    .attr("id", part)
                    .attr("key", format!("/library/parts/{part}/0/{name}"))
                    .opt_attr("duration", row.get::<_, Option<i64>>(3)?)
                    .attr("file", file)
                    .opt_attr("size", row.get::<_, Option<i64>>(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.push(element.children(children));
    }
    Ok(out)
}

/// (element name, `type` attribute, whether its key lists children).
fn shape(metadata_type: i64) -> (&'static str, &'static str, bool) {
    match metadata_type {
        1 => ("Video", "movie", false),
        2 => ("Directory", "show", true),
        3 => ("Directory", "season", true),
        4 => ("Video", "episode", false),
        5 => ("Video", "trailer", false),
        8 => ("Directory", "artist", true),
        9 => ("Directory", "album", true),
        10 => ("Track", "track", false),
        12 => ("Video", "clip", false),
        13 => ("Photo", "photo", false),
        // Plex renders a photo album as a Directory of type photo.
        14 => ("Directory", "photo", true),
        15 => ("Playlist", "playlist", true),
        18 => ("Directory", "collection", true),
        _ => ("Directory", "unknown", false),
    }
}

/// The item's element, as a section's `/all` or `/library/metadata/{id}`
/// lists it; `media` are its `Media` children (leaf items).
pub fn element(item: &Item, media: Vec<Element>) -> Element {
    let (name, type_name, children) = shape(item.metadata_type);
    let key = if children {
        format!("/library/metadata/{}/children", item.id)
    } else {
        format!("/library/metadata/{}", item.id)
    };
    let mut element = Element::new(name)
        .attr("ratingKey", item.id.to_string())
        .attr("key", key)
        .attr("guid", item.guid.as_str())
        .attr("type", type_name)
        .attr("title", item.title.as_str());
    if let Some(parent) = &item.parent {
        element = element
            .attr("parentRatingKey", parent.id.to_string())
            .attr("parentKey", format!("/library/metadata/{}", parent.id))
            .attr("parentGuid", parent.guid.as_str())
            .attr("parentTitle", parent.title.as_str())
            .opt_attr("parentIndex", parent.index);
    }
    if let Some(grandparent) = &item.grandparent {
        element = element
            .attr("grandparentRatingKey", grandparent.id.to_string())
            .attr(
                "grandparentKey",
                format!("/library/metadata/{}", grandparent.id),
            )
            .attr("grandparentGuid", grandparent.guid.as_str())
            .attr("grandparentTitle", grandparent.title.as_str());
    }
    element
        .opt_attr("index", item.index)
        .opt_attr("year", item.year)
        .opt_attr("duration", item.duration)
        .opt_attr(
            "musicAnalysisVersion",
            super::sonic::music_analysis_version(item.extra_data.as_deref()),
        )
        .opt_attr("addedAt", item.added_at)
        .opt_attr("updatedAt", item.updated_at)
        .children(media)
        .json_as("Metadata")
}

/// Whether an item of this type carries `Media` (a playable leaf).
pub fn has_media(metadata_type: i64) -> bool {
    matches!(metadata_type, 1 | 4 | 5 | 10 | 12 | 13)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_photo_album_is_a_directory_of_type_photo() {
        let album = Item {
            id: 7,
            section: Some(5),
            metadata_type: 14,
            guid: "local://7".into(),
            title: "2006".into(),
            index: None,
            year: None,
            duration: None,
            added_at: None,
            updated_at: None,
            extra_data: None,
            parent: None,
            grandparent: None,
        };
        let xml = Element::container(vec![element(&album, Vec::new())]).to_xml();
        assert!(
            xml.contains(r#"<Directory ratingKey="7" key="/library/metadata/7/children" guid="local://7" type="photo""#),
            "{xml}"
        );
    }
}
