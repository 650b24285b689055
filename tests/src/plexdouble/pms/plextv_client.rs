//! The server's side of plex.tv: exchanging a claim token for the server's
//! token, and reading the account (username, Plex Pass).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use quick_xml::events::Event;
use serde::Deserialize;

pub struct PlexTv {
    base: String,
    http: reqwest::Client,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub username: String,
    pub email: String,
    pub subscription_active: bool,
    pub subscription_status: String,
}

/// What plex.tv gave for a claim token.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub token: String,
    pub username: String,
}

#[derive(Debug)]
pub enum ClaimError {
    /// plex.tv answered with an error: its status and message.
    Rejected { status: u16, message: String },
    /// plex.tv could not be reached or answered nonsense.
    Failed(String),
}

#[derive(Deserialize)]
struct User {
    username: String,
    #[serde(default)]
    email: String,
    subscription: Subscription,
}

#[derive(Deserialize)]
struct Subscription {
    active: bool,
    status: String,
}

impl PlexTv {
    pub fn new(base: &str) -> Result<PlexTv> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the plex.tv client")?;
        Ok(PlexTv {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// `POST /api/claim/exchange?token=` as the official image does on
    /// first run, identifying the server by its machine identifier.
    /// The line Plex logs for a call to plex.tv, the token in its URL (as
    /// Plex's logs and the official image's first-run claim show them).
    pub fn requesting(&self, method: &str, path: &str, param: &str, token: &str) -> String {
        format!(
            "HTTP requesting {method} {}{path}?{param}={token}",
            self.base
        )
    }

    pub async fn exchange(
        &self,
        claim_token: &str,
        machine_id: &str,
    ) -> Result<Claimed, ClaimError> {
        let response = self
            .http
            .post(format!("{}/api/claim/exchange", self.base))
            .query(&[("token", claim_token)])
            .header("X-Plex-Client-Identifier", machine_id)
            .header("X-Plex-Product", "Plex Media Server")
            .header("X-Plex-Provides", "server")
            .send()
            .await
            .map_err(|e| ClaimError::Failed(format!("plex.tv unreachable: {e}")))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| ClaimError::Failed(format!("plex.tv answer unreadable: {e}")))?;
        if !status.is_success() {
            return Err(ClaimError::Rejected {
                status: status.as_u16(),
                message: body.trim().to_string(),
            });
        }
        parse_claimed(&body).map_err(|e| ClaimError::Failed(format!("{e:#}")))
    }

    /// `GET /api/v2/user` with the server's token.
    pub async fn account(&self, token: &str) -> Result<Account> {
        let response = self
            .http
            .get(format!("{}/api/v2/user", self.base))
            .header("X-Plex-Token", token)
            .header("Accept", "application/json")
            .send()
            .await
            .context("plex.tv unreachable")?;
        let status = response.status();
        if !status.is_success() {
            bail!("plex.tv answered {status} for the account");
        }
        let user: User = response.json().await.context("plex.tv account answer")?;
        Ok(Account {
            username: user.username,
            email: user.email,
            subscription_active: user.subscription.active,
            subscription_status: user.subscription.status,
        })
    }
}

/// The `<user authenticationToken=".." username=".."/>` of an exchange.
fn parse_claimed(body: &str) -> Result<Claimed> {
    let mut reader = quick_xml::Reader::from_str(body);
    loop {
        match reader.read_event()? {
            Event::Start(element) | Event::Empty(element) if element.name().as_ref() == b"user" => {
                let mut token = None;
                let mut username = String::new();
                for attr in element.attributes() {
                    let attr = attr?;
                    let value = attr.unescape_value()?.into_owned();
                    match attr.key.as_ref() {
                        b"authenticationToken" => token = Some(value),
                        b"username" => username = value,
                        _ => {}
                    }
                }
                let token = token
                    .filter(|t| !t.is_empty())
                    .context("plex.tv's claim answer has no authenticationToken")?;
                return Ok(Claimed { token, username });
            }
            Event::Eof => bail!("plex.tv's claim answer has no <user> element"),
            _ => {}
        }
    }
}
