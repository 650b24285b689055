//! The few plex.tv calls made with the account's token: on the instance a
//! claim token at the moment of claiming (it lives ~4 minutes, lessons.md
//! 8) and the account the claimed server must then be signed in to; at
//! home, removing the run's server from the account's devices.

use std::time::Duration;

use reqwest::{Method, RequestBuilder};
use serde::Deserialize;

use super::api::Account;
use super::error::{PlexError, send};
use super::xml;
use crate::secret::Secret;

pub struct PlexTv {
    http: reqwest::Client,
    base: String,
    account_token: Secret,
}

/// A device registered on the account.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub client_identifier: String,
    /// "Plex Media Server" for a server.
    pub product: String,
    /// When it was registered (unix seconds), if plex.tv says.
    pub created_at: Option<i64>,
}

/// The account a token belongs to (`GET /api/v2/user`).
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub email: String,
}

impl User {
    /// Whether the `MyPlex` element Plex answered a claim with says it is
    /// signed in to this account. Plex names the account by its email
    /// (python-plexapi's tests/test_server.py), plex.tv by username and
    /// email: either matches; an empty name does not contradict.
    pub fn check_claimed(&self, answer: &Account) -> Result<(), String> {
        if answer.sign_in_state != "ok" {
            return Err(format!(
                "Plex answered the claim but is not signed in to plex.tv (signInState {:?})",
                answer.sign_in_state
            ));
        }
        let name = answer.username.trim();
        let ours = [&self.username, &self.email]
            .iter()
            .any(|n| !n.is_empty() && n.eq_ignore_ascii_case(name));
        if !name.is_empty() && !ours {
            return Err(format!(
                "Plex answered the claim signed in as {name:?}, not as the account of the run's plex.tv token ({:?})",
                self.username
            ));
        }
        Ok(())
    }
}

impl PlexTv {
    pub fn new(base: &str, account_token: Secret) -> Result<Self, PlexError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| PlexError::Client(e.to_string()))?;
        Ok(PlexTv {
            http,
            base: base.trim_end_matches('/').to_string(),
            account_token,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("X-Plex-Token", self.account_token.expose())
            .header("X-Plex-Product", "plex-burst")
            .header("X-Plex-Client-Identifier", "plex-burst-runner")
    }

    /// A fresh claim token (`claim-...`).
    pub async fn claim_token(&self) -> Result<Secret, PlexError> {
        #[derive(Deserialize)]
        struct Reply {
            token: String,
        }
        let what = "get a claim token from plex.tv";
        let body = send(what, self.request(Method::GET, "/api/claim/token.json")).await?;
        let reply: Reply = serde_json::from_str(&body).map_err(|e| PlexError::Decode {
            what: what.into(),
            detail: e.to_string(),
        })?;
        Ok(Secret::new(reply.token))
    }

    /// The token's account, whose name a claimed server must report.
    pub async fn user(&self) -> Result<User, PlexError> {
        let what = "read the plex.tv account";
        let req = self
            .request(Method::GET, "/api/v2/user")
            .header("Accept", "application/json");
        let body = send(what, req).await?;
        serde_json::from_str(&body).map_err(|e| PlexError::Decode {
            what: what.into(),
            detail: e.to_string(),
        })
    }

    /// The account's token, for the one call to Plex that carries it: the
    /// claim.
    pub fn account_token(&self) -> &Secret {
        &self.account_token
    }

    pub async fn devices(&self) -> Result<Vec<Device>, PlexError> {
        let what = "list the account's devices on plex.tv";
        let body = send(what, self.request(Method::GET, "/devices.xml")).await?;
        let devices = xml::elements(&body, "Device").map_err(|e| PlexError::Decode {
            what: what.into(),
            detail: e,
        })?;
        Ok(devices
            .into_iter()
            .map(|mut a| Device {
                id: a.remove("id").unwrap_or_default(),
                name: a.remove("name").unwrap_or_default(),
                client_identifier: a.remove("clientIdentifier").unwrap_or_default(),
                product: a.remove("product").unwrap_or_default(),
                created_at: a.remove("createdAt").and_then(|t| t.parse().ok()),
            })
            .collect())
    }

    pub async fn delete_device(&self, id: &str) -> Result<(), PlexError> {
        let req = self.request(Method::DELETE, &format!("/devices/{id}.xml"));
        send(&format!("remove device {id} from plex.tv"), req)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            username: "burst-user".into(),
            email: "Burst@Example.org".into(),
        }
    }

    /// The `MyPlex` element as real Plex answers it in JSON (attributes as
    /// python-plexapi a8d051f plexapi/server.py `Account` reads them; the
    /// shape of LukeHagar/plexjs's recorded example).
    fn answer(sign_in: &str, username: &str) -> Account {
        let body = serde_json::json!({"MyPlex": {
            "authToken": "t0kenT0kenT0kenT0ken", "username": username,
            "mappingState": "unknown", "signInState": sign_in,
            "publicAddress": "", "publicPort": 0, "privateAddress": "", "privatePort": 0,
            "subscriptionActive": true, "subscriptionState": "Active",
            "subscriptionFeatures": "pass,sync",
        }});
        serde_json::from_value(body["MyPlex"].clone()).unwrap()
    }

    #[test]
    fn a_claim_answer_must_be_signed_in_to_the_runs_account() {
        let u = user();
        assert_eq!(u.check_claimed(&answer("ok", "burst@example.org")), Ok(()));
        assert_eq!(u.check_claimed(&answer("ok", "burst-user")), Ok(()));
        assert_eq!(u.check_claimed(&answer("ok", "")), Ok(()));
        let other = u
            .check_claimed(&answer("ok", "someone@else.org"))
            .unwrap_err();
        assert!(
            other.contains("signed in as \"someone@else.org\""),
            "{other}"
        );
        let out = u.check_claimed(&answer("none", "")).unwrap_err();
        assert!(out.contains("signInState \"none\""), "{out}");
    }
}
