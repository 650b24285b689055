//! `/activities` and `/butler`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

use super::{Shared, ok};
use crate::plexdouble::pms::butler::{self, Start, TASKS};
use crate::plexdouble::render::{Element, Format};
use crate::plexdouble::web::{ApiError, ApiResult};

pub async fn activities(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    let children = state
        .activities
        .snapshot()
        .into_iter()
        .map(|activity| {
            let element = Element::new("Activity")
                .attr("uuid", activity.uuid)
                .attr("type", activity.kind)
                .attr("cancellable", activity.cancellable)
                .attr("userID", 1_i64)
                .attr("title", activity.title)
                .attr("subtitle", activity.subtitle)
                .attr("progress", activity.progress);
            match activity.section {
                Some(section) => element.child(
                    Element::new("Context")
                        .attr("librarySectionID", section.to_string())
                        .single(),
                ),
                None => element,
            }
        })
        .collect();
    Ok(Format::of(&headers).reply(&Element::container(children)))
}

pub async fn cancel_activity(State(state): State<Shared>, Path(uuid): Path<String>) -> ApiResult {
    if state.activities.cancel(&uuid) {
        ok()
    } else {
        Err(ApiError::not_found(format!("no activity {uuid}")))
    }
}

/// Plex answers `/butler` with a `ButlerTasks` root, not a MediaContainer.
pub async fn butler(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    let tasks: Vec<Element> = {
        let prefs = state.prefs();
        TASKS
            .iter()
            .map(|task| {
                Element::new("ButlerTask")
                    .attr("name", task.name)
                    .attr("interval", task.interval_days)
                    .attr("scheduleRandomized", false)
                    .attr("enabled", butler::enabled(task, &prefs))
                    .attr("title", task.title)
                    .attr("description", task.title)
            })
            .collect()
    };
    Ok(Format::of(&headers).reply(&Element::new("ButlerTasks").children(tasks)))
}

pub async fn start(State(state): State<Shared>, Path(name): Path<String>) -> ApiResult {
    match butler::start(&state, &name) {
        Start::Started => ok(),
        Start::AlreadyRunning => Ok(StatusCode::ACCEPTED.into_response()),
        Start::Unknown => Err(ApiError::not_found(format!("no Butler task {name:?}"))),
    }
}

pub async fn stop(State(state): State<Shared>, Path(name): Path<String>) -> ApiResult {
    if state.butler.stop(&name) {
        state.log.info(format!("Butler: stop requested for {name}"));
        ok()
    } else {
        Err(ApiError::not_found(format!(
            "no Butler task {name:?} running"
        )))
    }
}

pub async fn stop_all(State(state): State<Shared>) -> ApiResult {
    state.butler.stop_all();
    state.log.info("Butler: stop requested for all tasks");
    ok()
}
