//! Notifications: the user hears how a run goes without watching it.
//! Sent by the runner, the dead-man and bootstrap to every `[[notify]]`
//! target, each retried with backoff and bounded in time; a notification
//! that cannot be delivered is logged and never blocks or fails the work
//! it reports on.

mod config;
mod event;
mod target;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use config::{RawTarget, for_run, run_var, targets};
pub use event::{Event, EventKind, SCHEMA};
pub use target::{EmailSettings, Kind, SCALEWAY_API, Target};

/// How hard one target is tried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    /// Doubled after each failed attempt.
    pub first_backoff: Duration,
    /// One request's bound, connecting included.
    pub timeout: Duration,
    /// The longest wait a 429's `Retry-After` is honoured for.
    pub max_wait: Duration,
}

impl Default for Retry {
    /// At most 4 x 10 s of requests and 2 + 4 + 8 s of backoff: about a
    /// minute per target, all targets at once.
    fn default() -> Retry {
        Retry {
            attempts: 4,
            first_backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            max_wait: Duration::from_secs(30),
        }
    }
}

/// What became of one target's notification.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub target: String,
    pub attempts: u32,
    /// `Err`: the last failure, one line, secrets masked.
    pub outcome: Result<(), String>,
    pub took: Duration,
}

pub struct Notifier {
    targets: Vec<Target>,
    client: reqwest::Client,
    retry: Retry,
    pending: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Notifier {
    pub fn new(targets: Vec<Target>, retry: Retry) -> Arc<Notifier> {
        let client = reqwest::Client::builder()
            .connect_timeout(retry.timeout)
            .timeout(retry.timeout)
            .user_agent(concat!("plex-burst/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a default HTTP client builds");
        Arc::new(Notifier {
            targets,
            client,
            retry,
            pending: Mutex::new(Vec::new()),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Sends `event` to every target that wants it, all at once; each
    /// outcome is logged.
    pub async fn send(&self, event: &Event) -> Vec<Delivery> {
        let sends = self
            .targets
            .iter()
            .filter(|t| t.wants(event.event))
            .map(|t| self.deliver(t, event));
        let deliveries = futures::future::join_all(sends).await;
        for d in &deliveries {
            match &d.outcome {
                Ok(()) => {
                    tracing::info!(target_name = %d.target, event = %event.event, attempts = d.attempts, "notification sent")
                }
                Err(e) => {
                    tracing::warn!(target_name = %d.target, event = %event.event, attempts = d.attempts, "notification not delivered: {e}")
                }
            }
        }
        deliveries
    }

    /// Sends in the background: the caller goes on at once. [`flush`]
    /// waits for what is still on its way.
    ///
    /// [`flush`]: Notifier::flush
    pub fn spawn(self: &Arc<Self>, event: Event) {
        if self.is_empty() {
            return;
        }
        let me = Arc::clone(self);
        let handle = tokio::spawn(async move {
            me.send(&event).await;
        });
        let mut pending = self.pending.lock().expect("not poisoned");
        pending.retain(|h| !h.is_finished());
        pending.push(handle);
    }

    /// Waits up to `within` for the notifications sent in the background
    /// (before an instance ends, say); those still going are dropped.
    pub async fn flush(&self, within: Duration) {
        let handles: Vec<_> = std::mem::take(&mut *self.pending.lock().expect("not poisoned"));
        if handles.is_empty() {
            return;
        }
        let all = futures::future::join_all(handles);
        if tokio::time::timeout(within, all).await.is_err() {
            tracing::warn!(
                "notifications still being sent after {}: given up",
                humantime::format_duration(within)
            );
        }
    }

    async fn deliver(&self, target: &Target, event: &Event) -> Delivery {
        let started = Instant::now();
        let request = target.request(event);
        let mut backoff = self.retry.first_backoff;
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            let failure = match self.attempt(&request).await {
                Ok(()) => break Ok(()),
                Err(failure) => failure,
            };
            if !failure.retry || attempts >= self.retry.attempts {
                break Err(failure.message);
            }
            let wait = failure
                .retry_after
                .map_or(backoff, |w| w.min(self.retry.max_wait));
            tokio::time::sleep(wait).await;
            backoff *= 2;
        };
        Delivery {
            target: target.label(),
            attempts,
            outcome: outcome.map_err(|e| crate::mask::text(&e)),
            took: started.elapsed(),
        }
    }

    async fn attempt(&self, request: &target::Request) -> Result<(), Failure> {
        let mut builder = self.client.post(&request.url).body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        let response = builder.send().await.map_err(|e| Failure {
            // reqwest's message carries the URL: only its kind is kept.
            message: if e.is_timeout() {
                format!(
                    "no answer within {}",
                    humantime::format_duration(self.retry.timeout)
                )
            } else if e.is_connect() {
                "cannot connect".into()
            } else {
                "the request failed".into()
            },
            retry: true,
            retry_after: None,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let body = response.text().await.unwrap_or_default();
        let said: String = body
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(200)
            .collect();
        Err(Failure {
            message: format!(
                "HTTP {}{}",
                status.as_u16(),
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                }
            ),
            retry: status.as_u16() == 429 || status.is_server_error(),
            retry_after,
        })
    }
}

struct Failure {
    message: String,
    retry: bool,
    retry_after: Option<Duration>,
}
