//! Transient failures injected through `POST /__double/fail`: the next
//! `times` API calls matching a method and a path prefix get `status`
//! instead of an answer, before authentication, as a gateway would.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::errors::ScwError;

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Any method when absent.
    #[serde(default)]
    pub method: Option<String>,
    pub path_prefix: String,
    pub status: u16,
    pub times: u32,
}

impl FaultRule {
    fn matches(&self, method: &str, path: &str) -> bool {
        self.times > 0
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && path.starts_with(&self.path_prefix)
    }
}

/// Uses up one failure of the first rule matching, if any.
pub fn take(rules: &mut Vec<FaultRule>, method: &str, path: &str) -> Option<u16> {
    let rule = rules.iter_mut().find(|r| r.matches(method, path))?;
    rule.times -= 1;
    let status = rule.status;
    rules.retain(|r| r.times > 0);
    Some(status)
}

/// The injected answer. A 429 is the API gateway's as recorded: an empty
/// body, `X-Envoy-Ratelimited: true`, no `Retry-After` (terraform-provider-
/// scaleway b2d45ed4, block list-block-snapshots-basic cassette); a 503
/// and anything else a JSON error with a generic type.
pub fn response(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    if status == 429 {
        let mut response = (code, "").into_response();
        response
            .headers_mut()
            .insert("X-Envoy-Ratelimited", HeaderValue::from_static("true"));
        return response;
    }
    let (kind, message) = match status {
        503 => ("service_unavailable", "service temporarily unavailable"),
        _ => ("injected_error", "injected failure"),
    };
    ScwError::other(code, kind, format!("{message} (injected by scw-double)")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_down_per_rule() {
        let mut rules = vec![FaultRule {
            method: Some("post".into()),
            path_prefix: "/instance/".into(),
            status: 503,
            times: 2,
        }];
        assert_eq!(take(&mut rules, "GET", "/instance/v1"), None);
        assert_eq!(take(&mut rules, "POST", "/block/v1"), None);
        assert_eq!(take(&mut rules, "POST", "/instance/v1"), Some(503));
        assert_eq!(take(&mut rules, "POST", "/instance/v1"), Some(503));
        assert_eq!(take(&mut rules, "POST", "/instance/v1"), None);
        assert!(rules.is_empty());
    }
}
