//! What a notification says: one event of a run, the same for every
//! target. The generic webhook gets it as JSON, schema
//! [`SCHEMA`] (docs/notifications.md documents every field); the other
//! targets get its title, message, link and next command in their own
//! shape (`target.rs`).

use serde::{Deserialize, Serialize};

/// The webhook payload's schema name and version. A field is only ever
/// added within a version; renaming or removing one makes a new version.
pub const SCHEMA: &str = "plex-burst.notification.v1";

/// The events a user can be told of, in the order a run meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The instance booted and the runner started the run.
    Started,
    /// A library's scan is done (items added).
    ScanDone,
    /// Sonic analysis passed 25, 50 or 75%.
    SonicProgress,
    /// Plex made no progress for the stall limit.
    Stalled,
    /// The deletion guard kept the result out of the home server's reach.
    Quarantined,
    Failed,
    Done,
    /// The dead-man ended a run that outlived its deadline.
    EndedByDeadMan,
    /// `bootstrap fetch` installed the result at home.
    Installed,
    /// `bootstrap sweep` found cloud leftovers.
    Leftovers,
    /// `bootstrap notify test`.
    Test,
}

impl EventKind {
    pub const ALL: [EventKind; 11] = [
        EventKind::Started,
        EventKind::ScanDone,
        EventKind::SonicProgress,
        EventKind::Stalled,
        EventKind::Quarantined,
        EventKind::Failed,
        EventKind::Done,
        EventKind::EndedByDeadMan,
        EventKind::Installed,
        EventKind::Leftovers,
        EventKind::Test,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::ScanDone => "scan_done",
            EventKind::SonicProgress => "sonic_progress",
            EventKind::Stalled => "stalled",
            EventKind::Quarantined => "quarantined",
            EventKind::Failed => "failed",
            EventKind::Done => "done",
            EventKind::EndedByDeadMan => "ended_by_dead_man",
            EventKind::Installed => "installed",
            EventKind::Leftovers => "leftovers",
            EventKind::Test => "test",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// How urgent it is, 1 (FYI) to 5 (act now): ntfy's and Gotify's
    /// priority scales are both 1-5 (Gotify's goes to 10; 5 is "high" in
    /// its Android client).
    pub fn priority(self) -> u8 {
        match self {
            EventKind::Failed | EventKind::Stalled | EventKind::EndedByDeadMan => 5,
            EventKind::Quarantined | EventKind::Leftovers => 4,
            EventKind::Done | EventKind::Installed => 3,
            _ => 2,
        }
    }

    /// Went wrong: the targets that show a colour show red.
    pub fn is_bad(self) -> bool {
        self.priority() >= 4
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One notification: the webhook's JSON body as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub schema: String,
    pub event: EventKind,
    /// `None` for events not about one run (a sweep, a test).
    pub run_id: Option<String>,
    /// One line, e.g. "plex-burst run 20261203-1830: done".
    pub title: String,
    /// A few lines a person reads on a phone.
    pub message: String,
    /// What to run next, e.g. `bootstrap fetch 20261203-1830`.
    pub next: Option<String>,
    /// A page about it (the run's report), when there is one.
    pub link: Option<String>,
    /// RFC 3339, UTC.
    pub at: String,
    /// Event-specific figures (docs/notifications.md lists them).
    pub details: serde_json::Value,
    /// Who sent it: `runner`, `dead-man` or `bootstrap`.
    pub sender: String,
}

impl Event {
    pub fn new(kind: EventKind, run_id: Option<&str>, summary: &str, message: String) -> Event {
        let title = match run_id {
            Some(id) => format!("plex-burst run {id}: {summary}"),
            None => format!("plex-burst: {summary}"),
        };
        Event {
            schema: SCHEMA.into(),
            event: kind,
            run_id: run_id.map(str::to_owned),
            title,
            message,
            next: None,
            link: None,
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            details: serde_json::Value::Object(Default::default()),
            sender: "bootstrap".into(),
        }
    }

    pub fn next(mut self, command: impl Into<String>) -> Event {
        self.next = Some(command.into());
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Event {
        self.details = details;
        self
    }

    pub fn sender(mut self, sender: &str) -> Event {
        self.sender = sender.into();
        self
    }

    pub fn link(mut self, link: Option<String>) -> Event {
        self.link = link;
        self
    }

    /// The message with the next command under it: what the text-only
    /// targets show.
    pub fn text(&self) -> String {
        match &self.next {
            Some(next) => format!("{}\nNext: {next}", self.message),
            None => self.message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_name_that_parses_back() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.name()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.name().into())
            );
        }
        assert_eq!(EventKind::parse("finished"), None);
    }
}
