//! HTTP plumbing shared by both doubles: query parameters (repeatable, as
//! Plex takes `location=` several times), errors as plain-text responses,
//! the `X-Plex-Token` and redaction of token values for logs.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// The query string's parameters in order, repeats kept.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Params {
        Params(
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A required, non-empty parameter.
    pub fn require(&self, name: &str) -> Result<&str, ApiError> {
        match self.get(name) {
            Some(value) if !value.trim().is_empty() => Ok(value),
            _ => Err(ApiError::bad_request(format!("missing parameter {name}"))),
        }
    }

    /// An optional `0`/`1` flag.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("0") => Ok(false),
            Some("1") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "{name}={other:?} is not 0 or 1"
            ))),
        }
    }
}

/// The token a request carries, header first, then query.
pub fn request_token(headers: &HeaderMap, params: &Params) -> Option<String> {
    headers
        .get("X-Plex-Token")
        .and_then(|v| v.to_str().ok())
        .or_else(|| params.get("X-Plex-Token"))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// The query string with the value of every parameter whose name mentions
/// a token replaced, for logs and call records.
pub fn redact_query(query: &str) -> String {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| {
            let value = if k.to_ascii_lowercase().contains("token") {
                "REDACTED".into()
            } else {
                v
            };
            form_urlencoded::Serializer::new(String::new())
                .append_pair(&k, &value)
                .finish()
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// An error answer: status and a one-line reason as plain text.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, format!("{}\n", self.message)).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}"))
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(error: rusqlite::Error) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }
}

pub type ApiResult = Result<Response, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_keep_repeats_and_redact_tokens() {
        let params = Params::parse(Some("location=%2Fa&location=%2Fb&name=x"));
        assert_eq!(params.all("location"), vec!["/a", "/b"]);
        assert_eq!(params.get("name"), Some("x"));
        assert_eq!(
            redact_query("X-Plex-Token=secret&token=claim-1&type=1"),
            "X-Plex-Token=REDACTED&token=REDACTED&type=1"
        );
    }
}
