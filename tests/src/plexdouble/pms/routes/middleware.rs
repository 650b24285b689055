//! Request logging, injected 503 bursts, Plex's auth rules and its
//! start-up window.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Shared;
use crate::plexdouble::pms::{networks, startup};
use crate::plexdouble::web::{ApiError, Params, request_token};

/// Logs method, path with its query, source and status. Tokens are not
/// redacted: Plex logs request URLs as sent, `X-Plex-Token=` and the claim's
/// `?token=claim-...` included, so whatever ships Plex's logs must mask them.
pub async fn log(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_owned);
    let response = next.run(request).await;
    let shown = match query {
        Some(query) if !query.is_empty() => format!("{path}?{query}"),
        _ => path,
    };
    state.log.info(format!(
        "Request: [{peer}] {method} {shown} -> {}",
        response.status().as_u16()
    ));
    response
}

/// The `burst-5xx` fault.
pub async fn faults(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if state.faults.take_503(request.uri().path()) {
        state.log.warn(format!(
            "fault burst-5xx: answering 503 to {}",
            request.uri().path()
        ));
        return (StatusCode::SERVICE_UNAVAILABLE, "fault burst-5xx\n").into_response();
    }
    next.run(request).await
}

/// `/identity` is open. A claimed server accepts only its own
/// `PlexOnlineToken`; an unclaimed one serves clients inside the
/// `allowedNetworks` pref and nobody else.
pub async fn auth(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/identity" {
        return next.run(request).await;
    }
    let params = Params::parse(request.uri().query());
    let token = request_token(request.headers(), &params);
    let allowed = {
        let prefs = state.prefs();
        match prefs.online_token() {
            Some(server_token) => token.as_deref() == Some(server_token),
            None => {
                let allowed = prefs.get("allowedNetworks").unwrap_or_default();
                networks::parse(allowed).is_ok_and(|nets| networks::allows(&nets, peer.ip()))
            }
        }
    };
    if allowed {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// Library writes while the server is still starting up (`startup.rs`).
pub async fn startup(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if state.startup.starting() && startup::refuses(request.method(), request.uri().path()) {
        return (StatusCode::BAD_REQUEST, startup::BODY).into_response();
    }
    next.run(request).await
}
