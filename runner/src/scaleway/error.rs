//! What can go wrong talking to Scaleway, typed so a caller can tell a
//! refusal (quota, bad argument, denied) from a passing failure, and worded
//! so the operator reads Scaleway's own explanation. No error ever holds the
//! `X-Auth-Token` or a secret key: calls are named by method and path only.

use std::error::Error as StdError;
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ScwError {
    /// Scaleway answered with an error status. `message` quotes the API's
    /// `message` and summarises its `details`.
    #[error("Scaleway refused {call} ({status}{}): {message}", kind_suffix(kind))]
    Api {
        status: u16,
        /// The answer's `type` (`not_found`, `quotas_exceeded`...), when given.
        kind: Option<String>,
        message: String,
        /// Method and path, e.g. `POST /instance/v1/zones/fr-par-1/servers`.
        call: String,
    },
    /// No answer: connection refused, reset, timed out.
    #[error("cannot reach Scaleway for {call}: {}", chain(source.as_ref()))]
    Transport {
        call: String,
        source: Box<dyn StdError + Send + Sync + 'static>,
    },
    /// A 2xx answer that does not have the expected shape.
    #[error("unexpected answer to {call}: {detail}")]
    Decode { call: String, detail: String },
    /// A wait that ran out of time; `what` names the last state seen.
    #[error("gave up after {} waiting for {what}", humantime::format_duration(*after))]
    Timeout { what: String, after: Duration },
    /// A resource vanished while we waited for it to reach a state.
    #[error("{what} disappeared while waiting for it")]
    Gone { what: String },
    /// A resource reached a state it cannot leave (an image in `error`...).
    #[error("{what} is in state {state:?}")]
    Failed { what: String, state: String },
    /// The Marketplace has no image for this label, zone and type.
    #[error(
        "the Scaleway Marketplace has no image {label:?} of type instance_sbs in {zone} \
         compatible with {commercial_type}"
    )]
    NoMarketplaceImage {
        label: String,
        zone: String,
        commercial_type: String,
    },
    /// The metadata service's user data needs a source port below 1024.
    #[error(
        "{call}: binding a source port below 1024 was refused ({detail}); \
         the metadata service's user data can only be read as root"
    )]
    NotPrivileged { call: String, detail: String },
    /// A bad argument or configuration caught before any request.
    #[error("{0}")]
    Invalid(String),
}

fn kind_suffix(kind: &Option<String>) -> String {
    kind.as_ref().map(|k| format!(" {k}")).unwrap_or_default()
}

impl ScwError {
    /// The answer was 404: the resource does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ScwError::Api { status: 404, .. })
    }

    /// The key is wrong, expired, or lacks a permission (401 / 403
    /// `denied_authentication` / `permissions_denied`).
    pub fn is_auth(&self) -> bool {
        match self {
            ScwError::Api { status: 401, .. } => true,
            ScwError::Api {
                status: 403, kind, ..
            } => matches!(
                kind.as_deref(),
                Some("denied_authentication" | "permissions_denied" | "authorization_required")
                    | None
            ),
            _ => false,
        }
    }

    /// The project hit a quota: retrying will not help, raising it will.
    pub fn is_quota(&self) -> bool {
        matches!(self, ScwError::Api { kind: Some(k), .. } if k == "quotas_exceeded")
    }

    /// Worth trying again later: rate limited, server-side failure, no
    /// answer, a resource in a transient state, or out of stock.
    pub fn is_transient(&self) -> bool {
        match self {
            ScwError::Api { status, kind, .. } => {
                *status == 429
                    || *status >= 500
                    || matches!(kind.as_deref(), Some("transient_state" | "out_of_stock"))
            }
            ScwError::Transport { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn transport(
        call: &str,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        ScwError::Transport {
            call: call.to_string(),
            source: source.into(),
        }
    }

    pub(crate) fn decode(call: &str, detail: impl Into<String>) -> Self {
        ScwError::Decode {
            call: call.to_string(),
            detail: detail.into(),
        }
    }

    /// The typed error for an error answer: Scaleway's JSON error if the
    /// body is one, else the start of the body.
    pub(crate) fn from_answer(call: &str, status: u16, body: &str) -> Self {
        let (kind, message) = match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(map)) => {
                let v = Value::Object(map);
                let kind = v.get("type").and_then(Value::as_str).map(str::to_string);
                (kind, describe(&v, body))
            }
            _ => (None, snippet(body)),
        };
        ScwError::Api {
            status,
            kind,
            message,
            call: call.to_string(),
        }
    }
}

/// Scaleway's `message`, then what its `details` (or the older `fields`,
/// `resource`, `help_message`...) add, on one line.
fn describe(v: &Value, body: &str) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").trim();
    let mut extra: Vec<String> = Vec::new();
    let details = v.get("details").and_then(Value::as_array);
    match s("type") {
        "invalid_arguments" => {
            for d in details.into_iter().flatten() {
                let name = d
                    .get("argument_name")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                let reason = d.get("reason").and_then(Value::as_str).unwrap_or("");
                let help = d.get("help_message").and_then(Value::as_str).unwrap_or("");
                let mut one = name.to_string();
                for part in [reason, help] {
                    if !part.is_empty() {
                        one.push_str(&format!(" ({part})"));
                    }
                }
                extra.push(one);
            }
            if !extra.is_empty() {
                extra = vec![format!("invalid arguments: {}", extra.join(", "))];
            }
        }
        "quotas_exceeded" => {
            for d in details.into_iter().flatten() {
                let res = d.get("resource").and_then(Value::as_str).unwrap_or("?");
                let quota = d.get("quota").map(Value::to_string).unwrap_or_default();
                let current = d.get("current").map(Value::to_string).unwrap_or_default();
                extra.push(format!("{res} at {current} of quota {quota}"));
            }
        }
        "permissions_denied" => {
            for d in details.into_iter().flatten() {
                let res = d.get("resource").and_then(Value::as_str).unwrap_or("?");
                let action = d.get("action").and_then(Value::as_str).unwrap_or("?");
                extra.push(format!("no {action} permission on {res}"));
            }
        }
        _ => {
            for d in details.into_iter().flatten() {
                extra.push(match d {
                    Value::String(t) => t.clone(),
                    other => other.to_string(),
                });
            }
        }
    }
    // Flat fields other error types carry.
    for (key, label) in [
        ("resource", "resource"),
        ("resource_id", "id"),
        ("current_state", "current state"),
        ("precondition", "precondition"),
        ("reason", "reason"),
        ("help_message", ""),
    ] {
        let value = s(key);
        if !value.is_empty() {
            extra.push(if label.is_empty() {
                value.to_string()
            } else {
                format!("{label} {value}")
            });
        }
    }
    // The Instance API's older validation errors: {"fields": {"name": ["..."]}}.
    if let Some(fields) = v.get("fields").and_then(Value::as_object) {
        for (name, why) in fields {
            let why = match why {
                Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_string).unwrap_or(x.to_string()))
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            extra.push(format!("{name}: {why}"));
        }
    }
    let message = s("message");
    let head = if message.is_empty() {
        if extra.is_empty() {
            return snippet(body);
        }
        String::new()
    } else {
        message.to_string()
    };
    let tail = extra.join("; ");
    let text = match (head.is_empty(), tail.is_empty()) {
        (false, false) => format!("{head} ({tail})"),
        (false, true) => head,
        _ => tail,
    };
    one_line(&text, 600)
}

/// The start of a response body, on one line, for error messages.
pub(crate) fn snippet(body: &str) -> String {
    let line = one_line(body, 300);
    if line.is_empty() {
        "(empty body)".into()
    } else {
        format!("«{line}»")
    }
}

fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut s: String = joined.chars().take(max).collect();
    if s.len() < joined.len() {
        s.push('…');
    }
    s
}

/// An error's causes in one line. reqwest's own top message names the URL;
/// replace it by what kind of failure it was.
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = current {
        let text = match err.downcast_ref::<reqwest::Error>() {
            Some(r) if r.url().is_some() => if r.is_timeout() {
                "timed out"
            } else if r.is_connect() {
                "cannot connect"
            } else if r.is_body() || r.is_decode() {
                "the answer broke off"
            } else {
                "request failed"
            }
            .to_string(),
            _ => err.to_string(),
        };
        if !parts.contains(&text) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: &str = "POST /instance/v1/zones/fr-par-1/servers";

    #[test]
    fn quota_is_quoted_and_typed() {
        let body = r#"{"type":"quotas_exceeded","message":"Quotas exceeded: Instances",
            "details":[{"resource":"compute_instances_pop2_hc_16c_32g","quota":0,"current":0}]}"#;
        let e = ScwError::from_answer(CALL, 403, body);
        assert_eq!(
            e.to_string(),
            "Scaleway refused POST /instance/v1/zones/fr-par-1/servers (403 quotas_exceeded): \
             Quotas exceeded: Instances (compute_instances_pop2_hc_16c_32g at 0 of quota 0)"
        );
        assert!(e.is_quota());
        assert!(!e.is_auth());
        assert!(!e.is_transient());
    }

    #[test]
    fn invalid_arguments_name_the_arguments() {
        let body = r#"{"type":"invalid_arguments","message":"invalid argument(s)",
            "details":[{"argument_name":"commercial_type","reason":"constraint",
            "help_message":"unknown type"},{"argument_name":"image","reason":"required"}]}"#;
        let e = ScwError::from_answer(CALL, 400, body).to_string();
        assert!(
            e.contains("(400 invalid_arguments): invalid argument(s)"),
            "{e}"
        );
        assert!(
            e.contains("commercial_type (constraint) (unknown type), image (required)"),
            "{e}"
        );
    }

    #[test]
    fn not_found_and_auth_and_transient() {
        let nf = ScwError::from_answer(
            "GET /instance/v1/zones/fr-par-1/servers/x",
            404,
            r#"{"type":"not_found","message":"resource is not found","resource":"instance_server","resource_id":"x"}"#,
        );
        assert!(nf.is_not_found());
        assert!(
            nf.to_string().contains("resource instance_server; id x"),
            "{nf}"
        );
        let denied = ScwError::from_answer(
            CALL,
            401,
            r#"{"type":"denied_authentication","message":"invalid authentication","method":"api_key","reason":"invalid_argument"}"#,
        );
        assert!(denied.is_auth() && !denied.is_not_found());
        let perm = ScwError::from_answer(
            CALL,
            403,
            r#"{"type":"permissions_denied","message":"insufficient permissions","details":[{"resource":"instance_servers","action":"write"}]}"#,
        );
        assert!(perm.is_auth());
        assert!(
            perm.to_string()
                .contains("no write permission on instance_servers")
        );
        assert!(ScwError::from_answer(CALL, 503, "").is_transient());
        assert!(ScwError::from_answer(CALL, 429, "{}").is_transient());
        assert!(!ScwError::from_answer(CALL, 400, "{}").is_transient());
    }

    #[test]
    fn non_json_body_is_quoted() {
        let e = ScwError::from_answer(CALL, 502, "<html>\n Bad   gateway </html>");
        assert_eq!(
            e.to_string(),
            "Scaleway refused POST /instance/v1/zones/fr-par-1/servers (502): «<html> Bad gateway </html>»"
        );
        let e = ScwError::from_answer(CALL, 500, "");
        assert!(e.to_string().ends_with("(500): (empty body)"), "{e}");
    }

    #[test]
    fn legacy_fields_are_listed() {
        let body = r#"{"type":"invalid_request_error","message":"Validation Error","fields":{"name":["required key not provided"]}}"#;
        let e = ScwError::from_answer(CALL, 400, body).to_string();
        assert!(
            e.ends_with("Validation Error (name: required key not provided)"),
            "{e}"
        );
    }
}
