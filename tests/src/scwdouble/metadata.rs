//! The instance metadata service (what a guest reaches at
//! 169.254.42.42): `/conf`, user data and the boot check-in, for the
//! caller's server: the one bound to its source address when guests have
//! addresses of their own (`POST /__double/metadata/bind` with `address`,
//! as the VM test's hypervisor does; then no other caller is answered, as
//! on Scaleway), else the bound server, else the last powered on. As on
//! Scaleway, user data is served only to a TCP source port below 1024,
//! i.e. to root. Calls go to the same log, marked `metadata`.

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Extension, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use serde_json::json;

use super::body::Body;
use super::errors::{ApiResult, ScwError, reply};
use super::ids::rfc3339;
use super::instance::user_data::{is_text_plain, text};
use super::query::Params;
use super::state::{Server, Shared, UserData, World};

pub fn router(double: Shared) -> Router {
    Router::new()
        .route("/conf", get(conf))
        .route("/user_data", get(user_data_keys))
        .route(
            "/user_data/{key}",
            get(user_data)
                .delete(delete_user_data)
                .put(put_user_data)
                .patch(put_user_data),
        )
        .route("/state", patch(state))
        .fallback(|| async {
            ScwError::other(StatusCode::NOT_FOUND, "not_found", "no such metadata path")
        })
        .layer(axum::middleware::from_fn_with_state(double.clone(), record))
        .with_state(double)
}

/// Who calls: its address and the server the service answers it for
/// (resolved once per call, recorded with it).
#[derive(Clone)]
struct Caller {
    peer: SocketAddr,
    server: Option<String>,
}

async fn record(
    State(double): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let server = double.world().metadata_server_id(peer.ip());
    request.extensions_mut().insert(Caller {
        peer,
        server: server.clone(),
    });
    let response = next.run(request).await;
    let mut world = double.world();
    let seq = world.calls.len() + 1;
    world.calls.push(json!({
        "seq": seq,
        "service": "metadata",
        "method": method,
        "path": path,
        "query": query,
        "status": response.status().as_u16(),
        "source_address": peer.ip().to_string(),
        "source_port": peer.port(),
        "server_id": server,
        "at": rfc3339(SystemTime::now()),
    }));
    response
}

/// The caller's server, or 404 when it has none (or it is gone).
fn server_of<'w>(world: &'w mut World, caller: &Caller) -> Result<&'w mut Server, ScwError> {
    let id = caller.server.clone().ok_or_else(|| {
        let why = if world.metadata_addresses.is_empty() {
            "no server is bound to the metadata service".to_string()
        } else {
            format!("no server has the address {}", caller.peer.ip())
        };
        ScwError::other(StatusCode::NOT_FOUND, "not_found", why)
    })?;
    world
        .servers
        .iter_mut()
        .find(|s| s.id == id)
        .ok_or_else(|| ScwError::not_found("instance_server", &id))
}

/// User data is for root only: the caller's source port must be < 1024.
fn privileged(peer: SocketAddr) -> Result<(), ScwError> {
    if peer.port() < 1024 {
        Ok(())
    } else {
        Err(ScwError::other(
            StatusCode::FORBIDDEN,
            "permissions_denied",
            format!(
                "user data is only served to a privileged source port (< 1024), not {}",
                peer.port()
            ),
        ))
    }
}

/// JSON with `format=json`, else the `KEY=value` lines the real service
/// answers by default.
async fn conf(
    State(double): State<Shared>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let params = Params::parse(raw.as_deref());
    let mut world = double.world();
    let conf = server_of(&mut world, &caller)?.conf_json(&double.config.organization_id);
    if params.get("format") == Some("json") {
        return Ok(reply(StatusCode::OK, conf));
    }
    let mut lines = String::new();
    for key in [
        "id",
        "name",
        "hostname",
        "commercial_type",
        "organization",
        "project",
        "state_detail",
        "zone",
    ] {
        let value = conf[key].as_str().unwrap_or_default();
        lines.push_str(&format!("{}={value}\n", key.to_ascii_uppercase()));
    }
    let tags: Vec<&str> = conf["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str())
        .collect();
    lines.push_str(&format!("TAGS={}\n", tags.len()));
    for (i, tag) in tags.iter().enumerate() {
        lines.push_str(&format!("TAGS_{i}={tag}\n"));
    }
    Ok(lines.into_response())
}

async fn user_data_keys(
    State(double): State<Shared>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    privileged(caller.peer)?;
    let params = Params::parse(raw.as_deref());
    let mut world = double.world();
    let keys: Vec<String> = server_of(&mut world, &caller)?
        .user_data
        .keys()
        .cloned()
        .collect();
    if params.get("format") == Some("json") {
        Ok(reply(StatusCode::OK, json!({ "user_data": keys })))
    } else {
        Ok(keys
            .iter()
            .map(|k| format!("{k}\n"))
            .collect::<String>()
            .into_response())
    }
}

async fn user_data(
    State(double): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
) -> ApiResult {
    privileged(caller.peer)?;
    let mut world = double.world();
    let server = server_of(&mut world, &caller)?;
    let data = server
        .user_data
        .get(&key)
        .ok_or_else(|| ScwError::not_found("instance_user_data", &key))?;
    Ok(text(data.text.clone()))
}

/// Gone for the API too: it is the same server's user data.
async fn delete_user_data(
    State(double): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
) -> ApiResult {
    privileged(caller.peer)?;
    let mut world = double.world();
    server_of(&mut world, &caller)?
        .user_data
        .remove(&key)
        .ok_or_else(|| ScwError::not_found("instance_user_data", &key))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn put_user_data(
    State(double): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult {
    privileged(caller.peer)?;
    if !is_text_plain(&headers) {
        return Err(ScwError::invalid_request(
            "user data must be sent with Content-Type: text/plain",
        ));
    }
    let mut world = double.world();
    let server = server_of(&mut world, &caller)?;
    let entry = UserData {
        text: bytes.to_vec(),
        set_at: SystemTime::now(),
        set_in_state: server.state,
        set_before_first_poweron: false,
    };
    server.user_data.insert(key, entry);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The guest's boot check-in: becomes the server's `state_detail`.
async fn state(
    State(double): State<Shared>,
    Extension(caller): Extension<Caller>,
    bytes: Bytes,
) -> ApiResult {
    let body = Body::parse(&bytes, &["state_detail"])?;
    let detail = body.str("state_detail")?;
    let mut world = double.world();
    let server = server_of(&mut world, &caller)?;
    server.state_detail = detail.clone();
    server.state_reports.push(detail);
    server.modified = SystemTime::now();
    Ok(StatusCode::NO_CONTENT.into_response())
}
