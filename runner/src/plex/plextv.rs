//! The few plex.tv calls made with the account's token: on the instance a
//! claim token at the moment of claiming (it lives ~4 minutes, lessons.md
//! 8); at home, removing the run's server from the account's devices.

use std::time::Duration;

use reqwest::{Method, RequestBuilder};
use serde::Deserialize;

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
