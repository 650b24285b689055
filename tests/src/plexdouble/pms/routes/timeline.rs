//! `GET /library/sections/{id}/timeline`: the `MediaContainer` that
//! python-plexapi reads as `LibraryTimeline` (plexapi/library.py, and the
//! values its tests/test_library.py asserts on a real server, commit
//! a8d051f), with `updateQueueSize` from the metadata update queue.

use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;

use super::{Shared, blocking, section_id};
use crate::plexdouble::pms::library;
use crate::plexdouble::render::{Element, Format};
use crate::plexdouble::web::{ApiError, ApiResult};

/// Real servers send a build-time stamp here; the tests only want > 1.
const MEDIA_TAG_VERSION: i64 = 1_736_457_220;

pub async fn get(
    State(state): State<Shared>,
    UrlPath(raw): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    let id = section_id(&raw)?;
    let found = blocking(&state, move |s| {
        Ok(s.db.read(|conn| {
            let Some(section) = library::load(conn, id)? else {
                return Ok(None);
            };
            let items = library::count_live(conn, id, section.section_type)?;
            let latest: Option<i64> = conn.query_row(
                "SELECT max(updated_at) FROM metadata_items WHERE library_section_id = ?1",
                [id],
                |row| row.get(0),
            )?;
            Ok(Some((section, items, latest)))
        })?)
    })
    .await?;
    let Some((section, items, latest)) = found else {
        return Err(ApiError::not_found(format!("no library section {id}")));
    };
    let kind = library::type_name(section.section_type);
    // `size` is UNCONFIRMED: python-plexapi's test only says it is > 0
    // for a library with items; the double counts the library's items.
    let container = Element::new("MediaContainer")
        .attr("size", items)
        .attr("allowSync", false)
        .attr("art", format!("/:/resources/{kind}-fanart.jpg"))
        .attr("content", "secondary")
        .attr("identifier", "com.plexapp.plugins.library")
        .attr("latestEntryTime", latest.unwrap_or(section.updated_at))
        .attr("mediaTagPrefix", "/system/bundle/media/flags/")
        .attr("mediaTagVersion", MEDIA_TAG_VERSION)
        .attr("thumb", format!("/:/resources/{kind}.png"))
        .attr("title1", section.name.as_str())
        .attr("updateQueueSize", state.metadata.size(section.id) as i64)
        .attr("viewGroup", "secondary");
    Ok(Format::of(&headers).reply(&container))
}
