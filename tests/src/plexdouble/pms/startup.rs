//! The start-up window. Right after start, real Plex answers library writes
//! with `400` and a body saying `the server is still starting up. Please
//! retry later`, while `/identity`, `/` and `PUT /:/prefs` already work
//! (issue 13; python-plexapi's tools/plex-bootstraptest.py, commit
//! a8d051f, retries `library.add` on that text for a minute). The double
//! goes through such a window after every start (`--startup-window`,
//! 0 turns it off), timed from when it starts listening.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::http::Method;

/// What real Plex sends (the runner matches the text, whatever the status).
pub const BODY: &str = "the server is still starting up. Please retry later";

/// The log line that closes the window; the harness waits for it.
pub fn finished_line(pid: u32) -> String {
    format!("Start-up finished (pid {pid}): library writes accepted")
}

pub struct Startup {
    window: Duration,
    until: OnceLock<Instant>,
}

impl Startup {
    pub fn new(window: Duration) -> Startup {
        Startup {
            window,
            until: OnceLock::new(),
        }
    }

    /// Opens the window (once listening) and logs its end, through `log`,
    /// when it closes.
    pub fn begin(&self, log: impl FnOnce() + Send + 'static) {
        let until = *self.until.get_or_init(|| Instant::now() + self.window);
        tokio::spawn(async move {
            tokio::time::sleep_until(until.into()).await;
            log();
        });
    }

    pub fn starting(&self) -> bool {
        self.until.get().is_none_or(|until| Instant::now() < *until)
    }
}

/// The requests the window refuses: library writes and Butler starts
/// (seen on `POST /library/sections`; refresh, analyze, emptyTrash and
/// Butler assumed alike, issue 13).
pub fn refuses(method: &Method, path: &str) -> bool {
    let section_write = |suffix: &str| {
        path.strip_prefix("/library/sections/")
            .and_then(|rest| rest.strip_suffix(suffix))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
    };
    match *method {
        Method::POST => path == "/library/sections" || path.starts_with("/butler/"),
        Method::GET => section_write("/refresh"),
        Method::PUT => section_write("/analyze") || section_write("/emptyTrash"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_library_writes_and_butler_starts_only() {
        assert!(refuses(&Method::POST, "/library/sections"));
        assert!(refuses(&Method::GET, "/library/sections/3/refresh"));
        assert!(refuses(&Method::GET, "/library/sections/all/refresh"));
        assert!(refuses(&Method::PUT, "/library/sections/3/analyze"));
        assert!(refuses(&Method::PUT, "/library/sections/3/emptyTrash"));
        assert!(refuses(&Method::POST, "/butler/MusicAnalysis"));
        assert!(!refuses(&Method::GET, "/library/sections"));
        assert!(!refuses(&Method::GET, "/library/sections/3/timeline"));
        assert!(!refuses(&Method::DELETE, "/library/sections/3/refresh"));
        assert!(!refuses(&Method::PUT, "/:/prefs"));
        assert!(!refuses(&Method::GET, "/identity"));
    }
}
