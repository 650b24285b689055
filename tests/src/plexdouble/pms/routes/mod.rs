//! The PMS double's HTTP surface (plex.md is the spec). Strict like Plex:
//! a wrong method is 405, an unknown section 404, a missing or invalid
//! parameter 400. `/__double/*` (`double`) is the double's own, outside
//! Plex's rules.

mod double;
mod items;
mod library;
mod middleware;
mod myplex;
mod prefs;
mod root;
mod tasks;
mod timeline;

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, Request};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};

use super::state::State;
use crate::plexdouble::web::{ApiError, ApiResult};

pub type Shared = Arc<State>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(root::root))
        .route("/identity", get(myplex::identity))
        .route("/library", get(root::library))
        .route("/library/metadata/{ids}", get(items::metadata))
        .route(
            "/library/sections",
            get(library::list).post(library::create),
        )
        // Plex takes the trailing slash too; python-plexapi asks this way
        // when `/library` is refused.
        .route("/library/sections/", get(library::list))
        .route(
            "/library/sections/all/refresh",
            get(library::refresh_all).delete(library::cancel_all),
        )
        .route(
            "/library/sections/{id}/refresh",
            get(library::refresh).delete(library::cancel),
        )
        .route("/library/sections/{id}/analyze", put(library::analyze))
        .route(
            "/library/sections/{id}/emptyTrash",
            put(library::empty_trash),
        )
        .route("/library/sections/{id}/all", get(library::all))
        .route("/library/sections/{id}/timeline", get(timeline::get))
        .route("/activities", get(tasks::activities))
        .route("/activities/{uuid}", delete(tasks::cancel_activity))
        .route("/butler", get(tasks::butler).delete(tasks::stop_all))
        .route("/butler/{task}", post(tasks::start).delete(tasks::stop))
        .route(
            "/myplex/account",
            get(myplex::account).delete(myplex::unclaim),
        )
        .route("/myplex/claim", post(myplex::claim))
        // axum reads a leading ':' in a route as old capture syntax, so
        // `/:/prefs` is dispatched by the fallback.
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::startup,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::auth,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::faults,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::log,
        ))
        // Added past the layers: no auth, start-up window, fault or log.
        .route(
            "/__double/db-writes",
            get(double::db_writes).delete(double::reset_db_writes),
        )
        .with_state(state)
}

async fn fallback(
    axum::extract::State(state): axum::extract::State<Shared>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    if request.uri().path() != "/:/prefs" {
        return ApiError::not_found("no such endpoint").into_response();
    }
    let result = match method {
        Method::GET => prefs::get(state, headers).await,
        Method::PUT => prefs::put(state, query).await,
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        )),
    };
    result.into_response()
}

/// Runs DB work off the async threads.
async fn blocking<T: Send + 'static>(
    state: &Shared,
    work: impl FnOnce(&State) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || work(&state))
        .await
        .map_err(|e| ApiError::from(anyhow::anyhow!("worker failed: {e}")))?
}

/// A section id from the path: anything but an existing section is 404.
fn section_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("no library section {raw:?}")))
}

fn ok() -> ApiResult {
    Ok(StatusCode::OK.into_response())
}
