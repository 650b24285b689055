//! `/library/sections...`: list, create, refresh (scan) and cancel,
//! analyze, emptyTrash, and item counts with `/all`.

use std::path::{Path, PathBuf};

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::HeaderMap;

use super::{Shared, blocking, ok, section_id};
use crate::plexdouble::pms::items::{self, Listing};
use crate::plexdouble::pms::library::{self, NewSection, SECTION_TYPES, Section};
use crate::plexdouble::pms::scan::Job;
use crate::plexdouble::pms::trash;
use crate::plexdouble::render::{Element, Format};
use crate::plexdouble::web::{ApiError, ApiResult, Params};

fn directory(section: &Section, refreshing: bool) -> Element {
    Element::new("Directory")
        .attr("allowSync", true)
        .attr("key", section.id.to_string())
        .attr("type", library::type_name(section.section_type))
        .attr("title", section.name.as_str())
        .attr("agent", section.agent.as_str())
        .attr("scanner", section.scanner.as_str())
        .attr("language", section.language.as_str())
        .attr("uuid", section.uuid.as_str())
        .attr("updatedAt", section.updated_at)
        .attr("createdAt", section.created_at)
        .opt_attr("scannedAt", section.scanned_at)
        .attr("content", true)
        .attr("directory", true)
        .attr("refreshing", refreshing)
        .children(section.locations.iter().map(|location| {
            Element::new("Location")
                .attr("id", location.id)
                .attr("path", location.path.as_str())
        }))
}

pub async fn list(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    let format = Format::of(&headers);
    let sections = blocking(&state, |s| Ok(s.db.read(library::list)?)).await?;
    let children = sections
        .iter()
        .map(|section| directory(section, state.queue.refreshing(section.id)))
        .collect();
    let container = Element::container(children)
        .attr("allowSync", false)
        .attr("title1", "Plex Library");
    Ok(format.reply(&container))
}

pub async fn create(
    State(state): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let format = Format::of(&headers);
    let params = Params::parse(query.as_deref());
    let name = params.require("name")?.trim().to_string();
    let type_name = params.require("type")?.to_string();
    let agent = params.require("agent")?.to_string();
    let scanner = params.require("scanner")?.to_string();
    let language = params.require("language")?.to_string();
    let Some(&(_, section_type, want_agent, want_scanner)) =
        SECTION_TYPES.iter().find(|t| t.0 == type_name.as_str())
    else {
        return Err(ApiError::bad_request(format!(
            "type {type_name:?} is not one of movie, show, artist, photo"
        )));
    };
    if agent != want_agent || scanner != want_scanner {
        return Err(ApiError::bad_request(format!(
            "agent {agent:?} with scanner {scanner:?} is not valid for type {type_name} (expected {want_agent} / {want_scanner})"
        )));
    }
    let locations: Vec<String> = params
        .all("location")
        .into_iter()
        .map(str::to_string)
        .collect();
    if locations.is_empty() {
        return Err(ApiError::bad_request("missing parameter location"));
    }
    for location in &locations {
        let path = Path::new(location);
        if !path.is_absolute() || !path.is_dir() {
            return Err(ApiError::bad_request(format!(
                "location {location:?} is not an existing directory"
            )));
        }
    }
    let section = blocking(&state, move |s| {
        let id = s.db.write(|conn| {
            if library::name_taken(conn, &name)? {
                return Ok(None);
            }
            library::create(
                conn,
                &NewSection {
                    name: &name,
                    section_type,
                    agent: &agent,
                    scanner: &scanner,
                    language: &language,
                    locations: &locations,
                },
            )
            .map(Some)
        })?;
        let Some(id) = id else {
            return Err(ApiError::bad_request(format!(
                "a library section named {name:?} already exists"
            )));
        };
        s.log.info(format!(
            "Library: created section {id} '{name}' ({type_name})"
        ));
        Ok(s.db.read(|conn| library::load(conn, id))?)
    })
    .await?
    .ok_or_else(|| ApiError::from(anyhow::anyhow!("the new section vanished")))?;
    Ok(format.reply(&Element::container(vec![directory(&section, false)])))
}

/// The section, or 404.
async fn existing(state: &Shared, id: i64) -> Result<Section, ApiError> {
    blocking(state, move |s| {
        Ok(s.db.read(|conn| library::load(conn, id))?)
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no library section {id}")))
}

pub async fn refresh(
    State(state): State<Shared>,
    UrlPath(raw): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let section = existing(&state, section_id(&raw)?).await?;
    let params = Params::parse(query.as_deref());
    let force = params.flag("force")?;
    let path = match params.get("path") {
        None => None,
        Some(path) => Some(scan_path(&section, path)?),
    };
    state.queue.push(Job::Scan {
        section: section.id,
        force,
        path,
    });
    ok()
}

/// `path=` of a partial scan: a folder under one of the section's
/// locations.
fn scan_path(section: &Section, raw: &str) -> Result<PathBuf, ApiError> {
    let path = PathBuf::from(raw);
    let clean = path.is_absolute()
        && !path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
    if !clean || !section.locations.iter().any(|l| path.starts_with(&l.path)) {
        return Err(ApiError::bad_request(format!(
            "path {raw:?} is not under a location of section {}",
            section.id
        )));
    }
    Ok(path)
}

pub async fn cancel(State(state): State<Shared>, UrlPath(raw): UrlPath<String>) -> ApiResult {
    let section = existing(&state, section_id(&raw)?).await?;
    state.queue.cancel_scans(Some(section.id));
    state
        .log
        .info(format!("Library: scan of section {} cancelled", section.id));
    ok()
}

pub async fn refresh_all(State(state): State<Shared>, RawQuery(query): RawQuery) -> ApiResult {
    let params = Params::parse(query.as_deref());
    let force = params.flag("force")?;
    let sections = blocking(&state, |s| Ok(s.db.read(library::list)?)).await?;
    for section in sections {
        state.queue.push(Job::Scan {
            section: section.id,
            force,
            path: None,
        });
    }
    ok()
}

pub async fn cancel_all(State(state): State<Shared>) -> ApiResult {
    state.queue.cancel_scans(None);
    state.log.info("Library: all scans cancelled");
    ok()
}

pub async fn analyze(State(state): State<Shared>, UrlPath(raw): UrlPath<String>) -> ApiResult {
    let section = existing(&state, section_id(&raw)?).await?;
    state.queue.push(Job::Analyze {
        section: section.id,
    });
    ok()
}

pub async fn empty_trash(State(state): State<Shared>, UrlPath(raw): UrlPath<String>) -> ApiResult {
    let section = existing(&state, section_id(&raw)?).await?;
    let id = section.id;
    let removed = blocking(&state, move |s| {
        Ok(s.db.write(|conn| trash::empty_trash(conn, id))?)
    })
    .await?;
    state.log.info(format!(
        "Library: emptied the trash of section {id}: {removed} items deleted"
    ));
    ok()
}

/// A non-negative integer from the query or, failing that, a header
/// (`X-Plex-Container-Start`/`-Size` are accepted both ways, as in Plex).
fn paging(params: &Params, headers: &HeaderMap, name: &str) -> Result<Option<i64>, ApiError> {
    let raw = params.get(name).map(str::to_string).or_else(|| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    match raw {
        None => Ok(None),
        Some(raw) => match raw.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Some(n)),
            _ => Err(ApiError::bad_request(format!(
                "{name}={raw:?} is not a non-negative integer"
            ))),
        },
    }
}

pub async fn all(
    State(state): State<Shared>,
    UrlPath(raw): UrlPath<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let format = Format::of(&headers);
    let section = existing(&state, section_id(&raw)?).await?;
    let params = Params::parse(query.as_deref());
    let metadata_type = match params.get("type") {
        None => None,
        Some(raw) => Some(
            raw.parse::<i64>()
                .ok()
                .filter(|t| library::metadata_type_name(*t).is_some())
                .ok_or_else(|| {
                    ApiError::bad_request(format!("type={raw:?} is not a metadata type"))
                })?,
        ),
    };
    let listing = listing(&section, metadata_type, &params);
    let start = paging(&params, &headers, "X-Plex-Container-Start")?.unwrap_or(0);
    let size = paging(&params, &headers, "X-Plex-Container-Size")?;
    let id = section.id;
    let (total, children) = blocking(&state, move |s| {
        Ok(s.db.read(|conn| {
            let total = items::count(conn, id, listing)?;
            let page = match size {
                Some(0) => Vec::new(),
                _ => items::page(conn, id, listing, start, size.unwrap_or(-1))?,
            };
            let mut children = Vec::with_capacity(page.len());
            for item in &page {
                let media = if items::has_media(item.metadata_type) {
                    items::media(conn, item.id)?
                } else {
                    Vec::new()
                };
                children.push(items::element(item, media));
            }
            Ok((total, children))
        })?)
    })
    .await?;
    let container = Element::container(children)
        .attr("totalSize", total)
        .attr("offset", start)
        .attr("librarySectionID", section.id)
        .attr("librarySectionTitle", section.name.as_str());
    Ok(format.reply(&container))
}

/// What `/all` lists: items of the asked type, else of the section's. A
/// photo section lists its top-level albums and photos (an album type
/// also only top-level albums: python-plexapi issue 423), and every photo
/// with `clusterZoomLevel=1`, as python-plexapi's `totalViewSize` asks.
fn listing(section: &Section, metadata_type: Option<i64>, params: &Params) -> Listing {
    let photo = section.section_type == 13;
    match metadata_type {
        Some(14) if photo => Listing::TopLevel(&[14]),
        Some(t) => Listing::Type(t),
        None if photo && params.get("clusterZoomLevel") == Some("1") => Listing::Type(13),
        None if photo => Listing::TopLevel(&[13, 14]),
        None => Listing::Type(section.section_type),
    }
}
