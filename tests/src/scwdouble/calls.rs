//! The front of the API listener: every call is recorded (method, path,
//! query, JSON body with secrets masked, status, caller), injected faults
//! answer first, then `X-Auth-Token` is checked and the caller handed to
//! the handler as an extension. `/__double/*` is neither recorded nor
//! authenticated; Marketplace is public.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::authenticate;
use super::faults;
use super::ids::rfc3339;
use super::state::Shared;

/// Requests larger than this are refused (user data is small).
const MAX_BODY: usize = 16 * 1024 * 1024;

pub async fn gate(State(double): State<Shared>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if path.starts_with("/__double/") {
        return next.run(request).await;
    }
    let method = request.method().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        return (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    let recorded_body = describe_body(&parts.headers, &bytes);

    let (fault, caller) = {
        let mut world = double.world();
        let caller = authenticate(&double.config, &world, &parts.headers);
        (faults::take(&mut world.faults, &method, &path), caller)
    };
    let label = caller.as_ref().ok().map(|p| p.label());
    let response = match (fault, caller) {
        (Some(status), _) => faults::response(status),
        (None, _) if path.starts_with("/marketplace/") => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        (None, Err(denied)) => denied.into_response(),
        (None, Ok(principal)) => {
            let mut request = Request::from_parts(parts, Body::from(bytes));
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
    };

    let mut call = json!({
        "service": "api",
        "method": method,
        "path": path,
        "query": query,
        "status": response.status().as_u16(),
        "key": label,
        "injected": fault.is_some(),
        "at": rfc3339(std::time::SystemTime::now()),
    });
    if let Some((name, value)) = recorded_body {
        call[name] = value;
    }
    let mut world = double.world();
    call["seq"] = json!(world.calls.len() + 1);
    world.calls.push(call);
    response
}

/// What the log keeps of a body: JSON with every `secret_key` masked;
/// only the size of text (user data can hold credentials) and of anything
/// that is not JSON.
fn describe_body(headers: &axum::http::HeaderMap, bytes: &[u8]) -> Option<(&'static str, Value)> {
    if bytes.is_empty() {
        return None;
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|t| !t.trim_start().to_ascii_lowercase().starts_with("text/"));
    match serde_json::from_slice::<Value>(bytes) {
        Ok(mut value) if is_json => {
            mask(&mut value);
            Some(("body", value))
        }
        _ => Some(("body_bytes", json!(bytes.len()))),
    }
}

fn mask(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                if key == "secret_key" {
                    *field = json!("***");
                } else {
                    mask(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}
