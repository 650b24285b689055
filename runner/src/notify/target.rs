//! The places a notification goes, and the request each one expects, as
//! their documentation gives it:
//!
//! - webhook: a JSON POST of the [`Event`] itself (schema in
//!   docs/notifications.md), `Authorization: Bearer` when a token is set;
//! - ntfy: a POST to the topic URL, the message as the body, `Title`,
//!   `Priority` (1-5), `Tags` and `Click` headers, `Authorization: Bearer`
//!   for an access token (docs.ntfy.sh, "Publishing");
//! - Discord: an incoming webhook's JSON `content` (at most 2000
//!   characters) and one embed (title at most 256, description at most
//!   4096); 204 without `?wait=true` (Discord's "Execute Webhook");
//! - Slack: an incoming webhook's JSON `text`, answered `ok` (Slack's
//!   "Sending messages using incoming webhooks");
//! - Gotify: `POST /message` with `X-Gotify-Key` and JSON `title`,
//!   `message`, `priority`, `extras` (Gotify's API docs);
//! - email: Scaleway Transactional Email, `POST
//!   /transactional-email/v1alpha1/regions/{region}/emails` with
//!   `X-Auth-Token` and JSON `from`, `to`, `subject`, `text`, `project_id`
//!   (Scaleway's TEM API reference).
//!
//! A Discord or Slack webhook URL is itself the credential: it is held as
//! a [`Secret`] and only its host ever shows.

use std::collections::BTreeSet;

use serde_json::json;

use super::event::{Event, EventKind};
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Webhook,
    Ntfy,
    Discord,
    Slack,
    Gotify,
    Email,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Webhook,
        Kind::Ntfy,
        Kind::Discord,
        Kind::Slack,
        Kind::Gotify,
        Kind::Email,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Ntfy => "ntfy",
            Kind::Discord => "discord",
            Kind::Slack => "slack",
            Kind::Gotify => "gotify",
            Kind::Email => "email",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Where Scaleway's APIs answer unless told otherwise.
pub const SCALEWAY_API: &str = "https://api.scaleway.com";

/// Email through Scaleway Transactional Email.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailSettings {
    pub from: String,
    pub to: Vec<String>,
    pub region: String,
    pub project_id: String,
}

/// One configured target.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: Kind,
    /// The endpoint (the topic URL, the webhook URL, Gotify's or the API's
    /// base URL); a secret when it carries the credential.
    pub url: Secret,
    /// The URL came from the environment (a webhook URL carrying its
    /// credential): masked in shipped logs like any secret.
    pub url_is_secret: bool,
    pub token: Option<Secret>,
    /// The events it wants; `None`: all of them.
    pub events: Option<BTreeSet<String>>,
    pub email: Option<EmailSettings>,
}

/// A request ready to send.
pub struct Request {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Target {
    /// The secret values it holds.
    pub fn secrets(&self) -> Vec<String> {
        let url = self.url_is_secret.then(|| self.url.expose().to_string());
        url.into_iter()
            .chain(self.token.as_ref().map(|t| t.expose().to_string()))
            .collect()
    }

    pub fn wants(&self, kind: EventKind) -> bool {
        // A test goes everywhere: it is what checks a target.
        kind == EventKind::Test
            || self
                .events
                .as_ref()
                .is_none_or(|wanted| wanted.contains(kind.name()))
    }

    /// How logs and `bootstrap notify test` name it: the kind and the
    /// host, never the path (it can hold a token or a private topic).
    pub fn label(&self) -> String {
        let host = url::Url::parse(self.url.expose())
            .ok()
            .and_then(|u| {
                u.host_str()
                    .map(|h| u.port().map_or(h.to_string(), |p| format!("{h}:{p}")))
            })
            .unwrap_or_else(|| "?".into());
        format!("{} at {host}", self.kind.name())
    }

    pub fn request(&self, event: &Event) -> Request {
        let url = self.url.expose().trim_end_matches('/').to_string();
        let bearer = self
            .token
            .as_ref()
            .map(|t| ("Authorization", format!("Bearer {}", t.expose())));
        let json_body = |value: serde_json::Value| serde_json::to_vec(&value).expect("JSON");
        match self.kind {
            Kind::Webhook => Request {
                url: self.url.expose().to_string(),
                headers: [("Content-Type", "application/json".to_string())]
                    .into_iter()
                    .chain(bearer)
                    .collect(),
                body: serde_json::to_vec(event).expect("JSON"),
            },
            Kind::Ntfy => {
                let mut headers = vec![
                    ("Title", header_safe(&event.title)),
                    ("Priority", event.event.priority().to_string()),
                    ("Tags", ntfy_tags(event.event).to_string()),
                ];
                if let Some(link) = &event.link {
                    headers.push(("Click", link.clone()));
                }
                headers.extend(bearer);
                Request {
                    url: self.url.expose().to_string(),
                    headers,
                    body: event.text().into_bytes(),
                }
            }
            Kind::Discord => {
                let mut embed = json!({
                    "title": truncate(&event.title, 256),
                    "description": truncate(&event.text(), 4096),
                    "color": if event.event.is_bad() { 0xd9_3025 } else { 0x2e_8b57 },
                    "timestamp": event.at,
                });
                if let Some(link) = &event.link {
                    embed["url"] = link.clone().into();
                }
                Request {
                    url: self.url.expose().to_string(),
                    headers: vec![("Content-Type", "application/json".into())],
                    body: json_body(json!({
                        "username": "plex-burst",
                        "content": truncate(&event.title, 2000),
                        "embeds": [embed],
                        "allowed_mentions": { "parse": [] },
                    })),
                }
            }
            Kind::Slack => {
                let mut text = format!("*{}*\n{}", event.title, event.text());
                if let Some(link) = &event.link {
                    text.push_str(&format!("\n<{link}|The run's report>"));
                }
                Request {
                    url: self.url.expose().to_string(),
                    headers: vec![("Content-Type", "application/json".into())],
                    body: json_body(json!({ "text": text })),
                }
            }
            Kind::Gotify => {
                let mut body = json!({
                    "title": event.title,
                    "message": event.text(),
                    "priority": event.event.priority(),
                });
                if let Some(link) = &event.link {
                    body["extras"] =
                        json!({ "client::notification": { "click": { "url": link } } });
                }
                Request {
                    url: format!("{url}/message"),
                    headers: [("Content-Type", "application/json".to_string())]
                        .into_iter()
                        .chain(
                            self.token
                                .as_ref()
                                .map(|t| ("X-Gotify-Key", t.expose().to_string())),
                        )
                        .collect(),
                    body: json_body(body),
                }
            }
            Kind::Email => {
                let email = self.email.as_ref().expect("validated: email settings");
                let mut text = event.text();
                if let Some(link) = &event.link {
                    text.push_str(&format!("\n\nThe run's report: {link}"));
                }
                Request {
                    url: format!(
                        "{url}/transactional-email/v1alpha1/regions/{}/emails",
                        email.region
                    ),
                    headers: [("Content-Type", "application/json".to_string())]
                        .into_iter()
                        .chain(
                            self.token
                                .as_ref()
                                .map(|t| ("X-Auth-Token", t.expose().to_string())),
                        )
                        .collect(),
                    body: json_body(json!({
                        "from": { "email": email.from, "name": "plex-burst" },
                        "to": email.to.iter().map(|to| json!({ "email": to })).collect::<Vec<_>>(),
                        "subject": event.title,
                        "text": text,
                        "project_id": email.project_id,
                    })),
                }
            }
        }
    }
}

/// ntfy shows tags that name an emoji as that emoji.
fn ntfy_tags(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Done | EventKind::Installed => "white_check_mark,plex-burst",
        k if k.is_bad() => "warning,plex-burst",
        _ => "information_source,plex-burst",
    }
}

/// HTTP header values are one line of visible ASCII: anything else
/// becomes `?` (ntfy reads a UTF-8 title only RFC 2047-encoded).
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max_chars - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(kind: Kind, url: &str) -> Target {
        Target {
            kind,
            url: Secret::new(url),
            url_is_secret: true,
            token: Some(Secret::new("tk_notifytesttoken")),
            events: None,
            email: Some(EmailSettings {
                from: "runs@example.com".into(),
                to: vec!["me@example.com".into()],
                region: "fr-par".into(),
                project_id: "11111111-2222-3333-4444-555555555555".into(),
            }),
        }
    }

    #[test]
    fn a_label_shows_the_host_and_never_the_path() {
        let t = target(
            Kind::Discord,
            "https://discord.example/api/webhooks/123/very-secret-token",
        );
        assert_eq!(t.label(), "discord at discord.example");
        let t = target(Kind::Ntfy, "http://127.0.0.1:8080/private-topic");
        assert_eq!(t.label(), "ntfy at 127.0.0.1:8080");
    }

    #[test]
    fn long_texts_are_cut_to_discords_limits() {
        let event = Event::new(EventKind::Failed, Some("r1"), "failed", "é".repeat(5000));
        let r = target(Kind::Discord, "https://d.example/w").request(&event);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let description = body["embeds"][0]["description"].as_str().unwrap();
        assert_eq!(description.chars().count(), 4096);
        assert!(description.ends_with('…'));
    }

    #[test]
    fn a_non_ascii_title_is_made_header_safe_for_ntfy() {
        let event = Event::new(EventKind::Done, Some("r1"), "fini à 100 %", "ok".into());
        let r = target(Kind::Ntfy, "https://ntfy.example/t").request(&event);
        let title = &r.headers.iter().find(|(k, _)| *k == "Title").unwrap().1;
        assert_eq!(title, "plex-burst run r1: fini ? 100 %");
    }

    #[test]
    fn events_filter_but_a_test_goes_everywhere() {
        let mut t = target(Kind::Webhook, "https://w.example/");
        t.events = Some(["done".to_string()].into());
        assert!(t.wants(EventKind::Done));
        assert!(!t.wants(EventKind::Started));
        assert!(t.wants(EventKind::Test));
    }
}
