//! Server user data through the API: raw `text/plain` values by key.
//! Each write records the server's state then, so tests can assert that
//! cloud-init's user data was set before the first poweron.

use std::time::SystemTime;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::scwdouble::auth::{Perm, Principal};
use crate::scwdouble::errors::{ApiResult, ScwError, reply};
use crate::scwdouble::query;
use crate::scwdouble::state::{Server, Shared, UserData, World};

/// The server after the permission check.
fn server<'a>(
    world: &'a mut World,
    principal: &Principal,
    perm: Perm,
    zone: &str,
    id: &str,
) -> Result<&'a mut Server, ScwError> {
    let project = world
        .server(zone, id)
        .ok_or_else(|| ScwError::not_found("instance_server", id))?
        .project
        .clone();
    world.require(principal, perm, Some(&project))?;
    Ok(world.server_mut(zone, id).expect("found above"))
}

pub async fn list(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id)): Path<(String, String)>,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let mut world = double.world();
    let server = server(&mut world, &principal, Perm::InstanceRead, zone, &id)?;
    let keys: Vec<&String> = server.user_data.keys().collect();
    Ok(reply(StatusCode::OK, json!({ "user_data": keys })))
}

pub async fn show(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id, key)): Path<(String, String, String)>,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let mut world = double.world();
    let server = server(&mut world, &principal, Perm::InstanceRead, zone, &id)?;
    // A missing key is a bare 404 with an empty text/plain body
    // (scaleway-cli c2d470d, internal/namespaces/instance/v1/testdata/
    // test-user-data-get-get-an-nonexistent-key.cassette.yaml).
    let Some(data) = server.user_data.get(&key) else {
        let mut answer = text(Vec::new());
        *answer.status_mut() = StatusCode::NOT_FOUND;
        return Ok(answer);
    };
    Ok(text(data.text.clone()))
}

/// A raw user-data value as `text/plain`, without a charset as recorded
/// (terraform-provider-scaleway b2d45ed4, user-data-basic cassette).
pub fn text(bytes: Vec<u8>) -> axum::response::Response {
    let mut response = (StatusCode::OK, bytes).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Whether the request says `Content-Type: text/plain` (parameters
/// allowed): user data is plain text only.
pub fn is_text_plain(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/plain"))
}

pub async fn set(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id, key)): Path<(String, String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    if !is_text_plain(&headers) {
        return Err(ScwError::invalid_request(
            "user data must be sent with Content-Type: text/plain",
        ));
    }
    let mut world = double.world();
    let server = server(&mut world, &principal, Perm::InstanceWrite, zone, &id)?;
    server.user_data.insert(
        key,
        UserData {
            text: bytes.to_vec(),
            set_at: SystemTime::now(),
            set_in_state: server.state,
            set_before_first_poweron: server.poweron_count == 0
                && server.state == crate::scwdouble::state::STOPPED,
        },
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn delete(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id, key)): Path<(String, String, String)>,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let mut world = double.world();
    let server = server(&mut world, &principal, Perm::InstanceWrite, zone, &id)?;
    server
        .user_data
        .remove(&key)
        .ok_or_else(|| ScwError::not_found("instance_user_data", &key))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
