//! What can go wrong talking to Plex or plex.tv, typed so a caller can tell
//! a server that is not up yet (retry) from one that said no (stop).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PlexError {
    #[error("{what}: Plex does not answer ({detail})")]
    Unreachable { what: String, detail: String },
    #[error("{what}: HTTP {status} {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    /// Plex answered that it is still starting up, for longer than the
    /// API waits (`deadlines.plex_startup`).
    #[error("{what}: Plex was still starting up after {} (last answer: HTTP {status} {body})", humantime::format_duration(*.waited))]
    StartingUp {
        what: String,
        status: u16,
        body: String,
        waited: std::time::Duration,
    },
    #[error("{what}: unexpected answer ({detail})")]
    Decode { what: String, detail: String },
    #[error("cannot build an HTTP client: {0}")]
    Client(String),
}

impl PlexError {
    /// Worth trying again: the server is not up, restarting, or overloaded.
    pub fn is_transient(&self) -> bool {
        match self {
            PlexError::Unreachable { .. } => true,
            PlexError::Status { status, .. } => *status >= 500 || *status == 429,
            // Already retried within its bound.
            PlexError::StartingUp { .. } | PlexError::Decode { .. } | PlexError::Client(_) => false,
        }
    }
}

/// What real Plex says, whatever the status (a 400), to library writes
/// right after start (issue 13; python-plexapi retries on the same text).
const STARTING_UP: &str = "still starting up";

/// Whether a refused request is Plex's "still starting up. Please retry
/// later": not an answer, only "not ready yet".
pub(super) fn is_starting_up(status: reqwest::StatusCode, body: &str) -> bool {
    !status.is_success() && body.to_ascii_lowercase().contains(STARTING_UP)
}

/// Sends a request and returns the body of a 2xx answer; anything else is
/// the typed error, quoting the answer. One place for Plex and plex.tv.
pub(super) async fn send(what: &str, req: reqwest::RequestBuilder) -> Result<String, PlexError> {
    let resp = req.send().await.map_err(|e| unreachable(what, &e))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    check(what, status, body)
}

/// The body of a 2xx answer, else the typed error quoting it.
pub(super) fn check(
    what: &str,
    status: reqwest::StatusCode,
    body: String,
) -> Result<String, PlexError> {
    if !status.is_success() {
        return Err(PlexError::Status {
            what: what.to_string(),
            status: status.as_u16(),
            body: snippet(&body),
        });
    }
    Ok(body)
}

pub(super) fn unreachable(what: &str, e: &reqwest::Error) -> PlexError {
    PlexError::Unreachable {
        what: what.to_string(),
        detail: chain(e),
    }
}

/// An HTTP error's causes in one line, without the URL: a query string may
/// carry a token.
fn chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        let text = err.to_string();
        // reqwest's own message names the URL; its causes do not.
        let text = if parts.is_empty() && e.url().is_some() {
            if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_connect() {
                "cannot connect".to_string()
            } else {
                "request failed".to_string()
            }
        } else {
            text
        };
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = err.source();
    }
    parts.join(": ")
}

/// The start of a response body, on one line, for error messages.
pub(super) fn snippet(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return "(empty body)".into();
    }
    let mut s: String = one_line.chars().take(200).collect();
    if s.len() < one_line.len() {
        s.push('…');
    }
    format!("«{s}»")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn the_start_up_answer_is_recognised_by_its_text_whatever_the_status() {
        let body = "the server is still starting up. Please retry later";
        assert!(is_starting_up(StatusCode::BAD_REQUEST, body));
        assert!(is_starting_up(StatusCode::SERVICE_UNAVAILABLE, body));
        assert!(is_starting_up(
            StatusCode::BAD_REQUEST,
            "<html><body>The server is Still Starting Up</body></html>"
        ));
        assert!(!is_starting_up(StatusCode::OK, body));
        assert!(!is_starting_up(
            StatusCode::BAD_REQUEST,
            "a library section named \"Music\" already exists"
        ));
    }
}
