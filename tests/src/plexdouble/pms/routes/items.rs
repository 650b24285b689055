//! `GET /library/metadata/{ids}`: live items by rating key (one, or
//! several comma-separated as python-plexapi's `fetchItems([..])` asks),
//! each with its section and `Media`; an unknown or deleted id is 404.

use axum::extract::{Path, State};
use axum::http::HeaderMap;

use super::{Shared, blocking};
use crate::plexdouble::pms::{items, library};
use crate::plexdouble::render::{Element, Format};
use crate::plexdouble::web::{ApiError, ApiResult};

pub async fn metadata(
    State(state): State<Shared>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let ids = raw
        .split(',')
        .map(|id| id.trim().parse::<i64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ApiError::not_found(format!("no item {raw:?}")))?;
    let elements = blocking(&state, move |s| {
        Ok(s.db.read(|conn| {
            let mut out = Vec::new();
            for id in ids {
                let Some(item) = items::load(conn, id)? else {
                    continue;
                };
                let media = if items::has_media(item.metadata_type) {
                    items::media(conn, item.id)?
                } else {
                    Vec::new()
                };
                let section = match item.section {
                    Some(section) => library::load(conn, section)?,
                    None => None,
                };
                let element = items::element(&item, media);
                out.push(match section {
                    Some(section) => element
                        .attr("librarySectionID", section.id)
                        .attr(
                            "librarySectionKey",
                            format!("/library/sections/{}", section.id),
                        )
                        .attr("librarySectionTitle", section.name),
                    None => element,
                });
            }
            Ok(out)
        })?)
    })
    .await?;
    if elements.is_empty() {
        return Err(ApiError::not_found(format!("no item {raw}")));
    }
    let container = Element::container(elements)
        .attr("allowSync", true)
        .attr("identifier", "com.plexapp.plugins.library")
        .attr("mediaTagPrefix", "/system/bundle/media/flags/");
    Ok(Format::of(&headers).reply(&container))
}
