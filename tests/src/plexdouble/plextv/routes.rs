//! The plex.tv endpoints the PMS double and the runner use.
//!
//! Auth: the account token (`X-Plex-Token` header or query) for
//! everything but the claim exchange, whose credential is the claim token
//! itself, and `/api/v2/user`, which also takes a server token issued by a
//! claim (a claimed server asks it about its account).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::json;

use super::{Call, Claim, Device, PlexTvState, locked};
use crate::plexdouble::ids;
use crate::plexdouble::render::{Element, Format, escape_xml};
use crate::plexdouble::web::{ApiError, ApiResult, Params, redact_query, request_token};

type Shared = Arc<PlexTvState>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/api/claim/token.json", get(claim_token))
        .route("/api/claim/exchange", post(exchange))
        .route("/api/v2/user", get(user))
        .route("/devices.xml", get(devices))
        .route("/devices/{file}", delete(delete_device))
        .route("/__double/calls", get(calls))
        .route("/__double/tokens", get(tokens))
        .route("/__double/claims", get(claims))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            record,
        ))
        .with_state(state)
}

/// Records every call but a test's reads of the double's own state.
async fn record(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(redact_query).unwrap_or_default();
    let response = next.run(request).await;
    if !path.starts_with("/__double/") {
        locked(&state.calls).push(Call {
            method,
            path,
            query,
            status: response.status().as_u16(),
        });
    }
    response
}

fn require_account(
    state: &PlexTvState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<(), ApiError> {
    match request_token(headers, params) {
        Some(token) if token == state.account_token => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

async fn claim_token(
    State(state): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = Params::parse(query.as_deref());
    require_account(&state, &headers, &params)?;
    let token = format!("claim-{}", ids::token(20));
    locked(&state.issued).push(token.clone());
    locked(&state.claims).insert(
        token.clone(),
        Claim {
            issued: std::time::Instant::now(),
            used: false,
        },
    );
    Ok(json_response(&json!({ "token": token })))
}

/// Success answers, as plex.tv does, with a `<user>` element carrying the
/// server's token both as the `authenticationToken` attribute and as an
/// `<authentication-token>` child.
async fn exchange(
    State(state): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = Params::parse(query.as_deref());
    let client_id = headers
        .get("X-Plex-Client-Identifier")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request("X-Plex-Client-Identifier header required"))?
        .to_string();
    let claim = params.require("token")?;
    {
        let mut claims = locked(&state.claims);
        let Some(entry) = claims.get_mut(claim) else {
            return Err(ApiError::not_found("claim token unknown"));
        };
        if entry.used {
            return Err(ApiError::new(StatusCode::GONE, "claim token already used"));
        }
        if entry.expired(state.claim_ttl) {
            return Err(ApiError::new(StatusCode::GONE, "claim token expired"));
        }
        entry.used = true;
    }
    let token = ids::token(20);
    locked(&state.issued).push(token.clone());
    let name = headers
        .get("X-Plex-Device-Name")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Plex Media Server")
        .to_string();
    {
        let mut devices = locked(&state.devices);
        // A server claimed again keeps one device, with the new token.
        devices.retain(|d| d.client_identifier != client_id);
        devices.push(Device {
            id: state.next_device_id.fetch_add(1, Ordering::SeqCst),
            name,
            client_identifier: client_id,
            token: token.clone(),
            created_at: ids::now(),
        });
    }
    let username = escape_xml(&state.username);
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<user id=\"1\" username=\"{username}\" \
         email=\"{username}@example.invalid\" authenticationToken=\"{token}\">\
         <authentication-token>{token}</authentication-token></user>\n"
    );
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    Ok(response)
}

async fn user(
    State(state): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = Params::parse(query.as_deref());
    let token = request_token(&headers, &params).ok_or_else(ApiError::unauthorized)?;
    let known =
        token == state.account_token || locked(&state.devices).iter().any(|d| d.token == token);
    if !known {
        return Err(ApiError::unauthorized());
    }
    let status = if state.plex_pass {
        "Active"
    } else {
        "Inactive"
    };
    Ok(json_response(&json!({
        "id": 1,
        "uuid": "0f2b6a4c1d3e5f70",
        "username": state.username,
        "title": state.username,
        "email": format!("{}@example.invalid", state.username),
        "subscription": {
            "active": state.plex_pass,
            "status": status,
            "plan": if state.plex_pass { Some("lifetime") } else { None },
        },
    })))
}

async fn devices(
    State(state): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = Params::parse(query.as_deref());
    require_account(&state, &headers, &params)?;
    let children: Vec<Element> = locked(&state.devices)
        .iter()
        .map(|d| {
            Element::new("Device")
                .attr("name", d.name.as_str())
                .attr("id", d.id)
                .attr("clientIdentifier", d.client_identifier.as_str())
                .attr("product", "Plex Media Server")
                .attr("platform", "Linux")
                .attr("provides", "server")
                .attr("createdAt", d.created_at)
                .attr("lastSeenAt", d.created_at)
        })
        .collect();
    let container = Element::new("MediaContainer")
        .attr("publicAddress", "127.0.0.1")
        .children(children);
    Ok(Format::Xml.reply(&container))
}

async fn delete_device(
    State(state): State<Shared>,
    Path(file): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = Params::parse(query.as_deref());
    require_account(&state, &headers, &params)?;
    let id: i64 = file
        .strip_suffix(".xml")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| ApiError::not_found(format!("no device {file:?}")))?;
    let mut devices = locked(&state.devices);
    let before = devices.len();
    devices.retain(|d| d.id != id);
    if devices.len() == before {
        return Err(ApiError::not_found(format!("no device {id}")));
    }
    Ok(StatusCode::OK.into_response())
}

async fn tokens(State(state): State<Shared>) -> Response {
    let issued = locked(&state.issued).clone();
    json_response(&serde_json::json!(issued))
}

/// Each claim token issued, used or past its lifetime: what a test waits
/// on rather than sleeping out the lifetime.
async fn claims(State(state): State<Shared>) -> Response {
    let claims: serde_json::Map<String, serde_json::Value> = locked(&state.claims)
        .iter()
        .map(|(token, claim)| {
            let view = json!({ "used": claim.used, "expired": claim.expired(state.claim_ttl) });
            (token.clone(), view)
        })
        .collect();
    json_response(&serde_json::Value::Object(claims))
}

async fn calls(State(state): State<Shared>) -> Response {
    let calls = locked(&state.calls).clone();
    json_response(&serde_json::to_value(calls).unwrap_or_default())
}

fn json_response(value: &serde_json::Value) -> Response {
    let mut response = (StatusCode::OK, value.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
