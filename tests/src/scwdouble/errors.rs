//! Error answers in the shapes of Scaleway's APIs (as scaleway-sdk-go
//! decodes them): a JSON object with `type` and `message`, and the fields
//! each type carries.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug)]
pub struct ScwError {
    pub status: StatusCode,
    pub body: Value,
}

pub type ApiResult = Result<Response, ScwError>;

impl ScwError {
    fn new(status: StatusCode, body: Value) -> ScwError {
        ScwError { status, body }
    }

    /// 400 `invalid_arguments` naming one argument, e.g. reason `unknown`,
    /// `required` or `constraint`.
    pub fn argument(name: &str, reason: &str, help: impl Into<String>) -> ScwError {
        let help = help.into();
        ScwError::new(
            StatusCode::BAD_REQUEST,
            json!({
                "type": "invalid_arguments",
                "message": format!("invalid argument(s): {name}: {help}"),
                "details": [{"argument_name": name, "reason": reason, "help_message": help}],
            }),
        )
    }

    pub fn unknown_field(name: &str) -> ScwError {
        ScwError::argument(name, "unknown", "unknown field, not accepted by this API")
    }

    pub fn missing_field(name: &str) -> ScwError {
        ScwError::argument(name, "required", "required field is missing")
    }

    /// 400 `invalid_request_error`, what the Instance API answers to an
    /// action the server's state forbids.
    pub fn invalid_request(message: impl Into<String>) -> ScwError {
        ScwError::new(
            StatusCode::BAD_REQUEST,
            json!({"type": "invalid_request_error", "message": message.into()}),
        )
    }

    pub fn not_found(resource: &str, id: &str) -> ScwError {
        ScwError::new(
            StatusCode::NOT_FOUND,
            json!({
                "type": "not_found",
                "resource": resource,
                "resource_id": id,
                "message": format!("resource {resource} with ID {id} is not found"),
            }),
        )
    }

    /// 401; `reason` as the SDK knows it: `invalid_argument`, `not_found`,
    /// `expired`.
    pub fn denied_authentication(reason: &str) -> ScwError {
        ScwError::new(
            StatusCode::UNAUTHORIZED,
            json!({
                "type": "denied_authentication",
                "method": "api_key",
                "reason": reason,
                "message": format!("authentication is denied (api_key: {reason})"),
            }),
        )
    }

    pub fn permissions_denied(resource: &str, action: &str) -> ScwError {
        ScwError::new(
            StatusCode::FORBIDDEN,
            json!({
                "type": "permissions_denied",
                "message": format!("insufficient permissions: {action} {resource}"),
                "details": [{"resource": resource, "action": action}],
            }),
        )
    }

    pub fn quotas_exceeded(resource: &str, quota: u64, current: u64) -> ScwError {
        ScwError::new(
            StatusCode::FORBIDDEN,
            json!({
                "type": "quotas_exceeded",
                "message": format!("Quotas exceeded: {resource} (quota {quota}, current {current})"),
                "details": [{"resource": resource, "quota": quota, "current": current}],
            }),
        )
    }

    /// 412, e.g. deleting a volume still attached.
    pub fn precondition(precondition: &str, message: impl Into<String>) -> ScwError {
        let message = message.into();
        ScwError::new(
            StatusCode::PRECONDITION_FAILED,
            json!({
                "type": "precondition_failed",
                "precondition": precondition,
                "help_message": message,
                "message": message,
            }),
        )
    }

    /// 409: the resource is busy in a transient state.
    pub fn transient_state(resource: &str, id: &str, state: &str) -> ScwError {
        ScwError::new(
            StatusCode::CONFLICT,
            json!({
                "type": "transient_state",
                "resource": resource,
                "resource_id": id,
                "current_state": state,
                "message": format!("resource {resource} with ID {id} is in a transient state: {state}"),
            }),
        )
    }

    /// Any status with a message: injected failures, unknown routes.
    pub fn other(status: StatusCode, kind: &str, message: impl Into<String>) -> ScwError {
        ScwError::new(status, json!({"type": kind, "message": message.into()}))
    }
}

impl IntoResponse for ScwError {
    fn into_response(self) -> Response {
        reply(self.status, self.body)
    }
}

/// A JSON answer with a status.
pub fn reply(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
