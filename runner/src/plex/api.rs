//! The Plex Media Server HTTP API, as far as a run needs it (plex.md). The
//! runner always asks for JSON; every call checks the HTTP status (an
//! unknown pref is a 400, not a success: lessons.md 15) and quotes Plex's
//! answer in its error. Right after start Plex refuses library writes
//! with "the server is still starting up. Please retry later" although it
//! already answers `/identity` (issue 13): every request is sent again
//! while Plex says so, within `startup_retry`.

use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::PlexError;
use super::json::{Flag, Id};
use crate::secret::Secret;

/// How long a request answered "still starting up" is sent again, unless
/// set (`deadlines.plex_startup`).
pub const STARTUP_RETRY: Duration = Duration::from_secs(5 * 60);
/// The first pause before sending again; it doubles up to 5 s.
const FIRST_DELAY: Duration = Duration::from_millis(250);

/// A client for one Plex server. Cheap to clone.
#[derive(Clone)]
pub struct PlexApi {
    http: reqwest::Client,
    base: String,
    token: Option<Secret>,
    startup_retry: Duration,
}

/// `GET /library/sections/{id}/timeline`: Plex's metadata work on a
/// section goes on after its activities end (python-plexapi waits for
/// `updateQueueSize` to reach 0).
#[derive(Debug, Clone, Deserialize)]
pub struct Timeline {
    #[serde(rename = "updateQueueSize", default)]
    pub update_queue_size: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Identity {
    #[serde(rename = "machineIdentifier")]
    pub machine_identifier: String,
    pub version: String,
    #[serde(default)]
    pub claimed: Flag,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Section {
    pub key: Id,
    pub title: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub refreshing: Flag,
    #[serde(rename = "Location", default)]
    pub locations: Vec<Location>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Location {
    pub path: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Activity {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub progress: Option<f64>,
    #[serde(rename = "Context", default)]
    pub context: Option<ActivityContext>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ActivityContext {
    #[serde(rename = "librarySectionID", default)]
    pub library_section_id: Option<Id>,
}

impl Activity {
    /// The section an activity works on, when it says.
    pub fn section(&self) -> Option<&str> {
        self.context
            .as_ref()
            .and_then(|c| c.library_section_id.as_ref())
            .map(|id| id.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Setting {
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub value: serde_json::Value,
}

impl Setting {
    /// The value as Plex's query syntax writes it (`1`/`0` for booleans).
    pub fn value_text(&self) -> String {
        match &self.value {
            serde_json::Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

/// The `MyPlex` element of `GET /myplex/account`, the claim and the
/// unclaim: whether the server is signed in, as whom, and Plex Pass.
#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    #[serde(rename = "signInState", default)]
    pub sign_in_state: String,
    #[serde(rename = "subscriptionActive", default)]
    pub subscription_active: Flag,
    #[serde(rename = "subscriptionState", default)]
    pub subscription_state: String,
    #[serde(default)]
    pub username: String,
}

#[derive(Deserialize)]
struct Container<T> {
    #[serde(rename = "MediaContainer")]
    container: T,
}

#[derive(Deserialize)]
struct Directories {
    #[serde(rename = "Directory", default)]
    directories: Vec<Section>,
}

#[derive(Deserialize)]
struct Activities {
    #[serde(rename = "Activity", default)]
    activities: Vec<Activity>,
}

#[derive(Deserialize)]
struct Settings {
    #[serde(rename = "Setting", default)]
    settings: Vec<Setting>,
}

#[derive(Deserialize)]
struct Total {
    #[serde(rename = "totalSize")]
    total_size: u64,
}

/// Plex answers `/myplex/account` as `{"MyPlex": {...}}`; accept a
/// `MediaContainer` wrapper too.
#[derive(Deserialize)]
struct AccountReply {
    #[serde(rename = "MyPlex", alias = "MediaContainer")]
    account: Account,
}

impl PlexApi {
    /// `base` like `http://127.0.0.1:32400`.
    pub fn new(base: &str) -> Result<Self, PlexError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| PlexError::Client(e.to_string()))?;
        Ok(PlexApi {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: None,
            startup_retry: STARTUP_RETRY,
        })
    }

    /// How long requests answered "still starting up" are sent again.
    pub fn set_startup_retry(&mut self, within: Duration) {
        self.startup_retry = within;
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Every later call sends this `X-Plex-Token`.
    pub fn set_token(&mut self, token: Secret) {
        self.token = Some(token);
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Accept", "application/json")
            .header("X-Plex-Product", "plex-burst")
            .header("X-Plex-Client-Identifier", "plex-burst-runner");
        if let Some(t) = &self.token {
            req = req.header("X-Plex-Token", t.expose());
        }
        req
    }

    /// Sends `req` and returns Plex's status and body; while Plex answers
    /// that it is still starting up, sends it again (backoff) until
    /// `startup_retry` has passed, then fails with [`PlexError::StartingUp`].
    async fn exchange(
        &self,
        what: &str,
        req: RequestBuilder,
    ) -> Result<(StatusCode, String), PlexError> {
        let started = Instant::now();
        let mut delay = FIRST_DELAY;
        loop {
            let attempt = req.try_clone().ok_or_else(|| {
                PlexError::Client(format!("{what}: the request cannot be sent again"))
            })?;
            let resp = attempt
                .send()
                .await
                .map_err(|e| super::error::unreachable(what, &e))?;
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            if !super::error::is_starting_up(status, &body) {
                return Ok((status, body));
            }
            if started.elapsed() >= self.startup_retry {
                return Err(PlexError::StartingUp {
                    what: what.to_string(),
                    status: status.as_u16(),
                    body: super::error::snippet(&body),
                    waited: self.startup_retry,
                });
            }
            if delay == FIRST_DELAY {
                tracing::info!(
                    "{what}: Plex is still starting up; trying again for up to {}",
                    humantime::format_duration(self.startup_retry)
                );
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// The body of a 2xx answer (after the start-up retry), else the error.
    async fn send(&self, what: &str, req: RequestBuilder) -> Result<String, PlexError> {
        let (status, body) = self.exchange(what, req).await?;
        super::error::check(what, status, body)
    }

    async fn get_json<T: DeserializeOwned>(&self, what: &str, path: &str) -> Result<T, PlexError> {
        let body = self.send(what, self.request(Method::GET, path)).await?;
        serde_json::from_str(&body).map_err(|e| PlexError::Decode {
            what: what.to_string(),
            detail: format!("{e}; the answer began {}", super::error::snippet(&body)),
        })
    }

    /// `GET /identity`, with the raw status and body for readiness logs.
    pub async fn probe_identity(&self) -> Result<(StatusCode, String), PlexError> {
        let resp = self
            .request(Method::GET, "/identity")
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| super::error::unreachable("GET /identity", &e))?;
        let status = resp.status();
        Ok((status, resp.text().await.unwrap_or_default()))
    }

    pub async fn identity(&self) -> Result<Identity, PlexError> {
        let c: Container<Identity> = self.get_json("GET /identity", "/identity").await?;
        Ok(c.container)
    }

    pub async fn sections(&self) -> Result<Vec<Section>, PlexError> {
        let c: Container<Directories> = self
            .get_json("GET /library/sections", "/library/sections")
            .await?;
        Ok(c.container.directories)
    }

    /// Creates a library section (scratch mode).
    pub async fn create_section(
        &self,
        name: &str,
        kind: &str,
        agent: &str,
        scanner: &str,
        language: &str,
        locations: &[&str],
    ) -> Result<(), PlexError> {
        let mut query = vec![
            ("name", name),
            ("type", kind),
            ("agent", agent),
            ("scanner", scanner),
            ("language", language),
        ];
        query.extend(locations.iter().map(|l| ("location", *l)));
        let req = self
            .request(Method::POST, "/library/sections")
            .query(&query);
        self.send(&format!("create library {name:?}"), req)
            .await
            .map(drop)
    }

    /// Starts a scan of one section (`force`: a full walk).
    /// A scan of the section's files: all its locations, or only the
    /// folder `path` (a partial scan, python-plexapi's
    /// `LibrarySection.update(path=)`). Never `force`: see
    /// `refresh_metadata`.
    pub async fn scan(&self, section: &str, path: Option<&str>) -> Result<(), PlexError> {
        let mut req = self.request(Method::GET, &format!("/library/sections/{section}/refresh"));
        let what = match path {
            Some(path) => {
                req = req.query(&[("path", path)]);
                format!("scan of {path:?} in section {section}")
            }
            None => format!("scan of section {section}"),
        };
        self.send(&what, req).await.map(drop)
    }

    /// Plex's "Refresh All Metadata" (`force=1`): a scan, then every
    /// item's metadata downloaded again from the internet, hours on a big
    /// library (python-plexapi `LibrarySection.refresh`, commit a8d051f).
    /// Only `phases.refresh_metadata` asks for it.
    pub async fn refresh_metadata(&self, section: &str) -> Result<(), PlexError> {
        let req = self
            .request(Method::GET, &format!("/library/sections/{section}/refresh"))
            .query(&[("force", "1")]);
        self.send(&format!("metadata refresh of section {section}"), req)
            .await
            .map(drop)
    }

    pub async fn cancel_refresh(&self, section: &str) -> Result<(), PlexError> {
        let req = self.request(
            Method::DELETE,
            &format!("/library/sections/{section}/refresh"),
        );
        self.send(&format!("cancel the scan of section {section}"), req)
            .await
            .map(drop)
    }

    pub async fn analyze(&self, section: &str) -> Result<(), PlexError> {
        let req = self.request(Method::PUT, &format!("/library/sections/{section}/analyze"));
        self.send(&format!("analysis of section {section}"), req)
            .await
            .map(drop)
    }

    /// Live items of a metadata type in a section, as the API counts them
    /// (cross-check only: the DB is the source of truth, lessons.md 14).
    pub async fn count(&self, section: &str, metadata_type: i64) -> Result<u64, PlexError> {
        let what = format!("count of type {metadata_type} in section {section}");
        let req = self
            .request(Method::GET, &format!("/library/sections/{section}/all"))
            .query(&[("type", metadata_type.to_string())])
            .header("X-Plex-Container-Start", "0")
            .header("X-Plex-Container-Size", "0");
        let body = self.send(&what, req).await?;
        let c: Container<Total> = serde_json::from_str(&body).map_err(|e| PlexError::Decode {
            what,
            detail: e.to_string(),
        })?;
        Ok(c.container.total_size)
    }

    pub async fn timeline(&self, section: &str) -> Result<Timeline, PlexError> {
        let what = format!("GET the timeline of section {section}");
        let path = format!("/library/sections/{section}/timeline");
        let c: Container<Timeline> = self.get_json(&what, &path).await?;
        Ok(c.container)
    }

    pub async fn activities(&self) -> Result<Vec<Activity>, PlexError> {
        let c: Container<Activities> = self.get_json("GET /activities", "/activities").await?;
        Ok(c.container.activities)
    }

    /// Starts a Butler task; `true` if it was started, `false` if it was
    /// already running (202).
    pub async fn start_butler_task(&self, task: &str) -> Result<bool, PlexError> {
        let what = format!("start Butler task {task}");
        let req = self.request(Method::POST, &format!("/butler/{task}"));
        match self.exchange(&what, req).await? {
            (StatusCode::OK, _) => Ok(true),
            (StatusCode::ACCEPTED, _) => Ok(false),
            (status, body) => Err(PlexError::Status {
                what,
                status: status.as_u16(),
                body: super::error::snippet(&body),
            }),
        }
    }

    /// Stops every running Butler task.
    pub async fn stop_butler(&self) -> Result<(), PlexError> {
        self.send("stop Butler tasks", self.request(Method::DELETE, "/butler"))
            .await
            .map(drop)
    }

    pub async fn stop_butler_task(&self, task: &str) -> Result<(), PlexError> {
        let req = self.request(Method::DELETE, &format!("/butler/{task}"));
        self.send(&format!("stop Butler task {task}"), req)
            .await
            .map(drop)
    }

    pub async fn prefs(&self) -> Result<Vec<Setting>, PlexError> {
        let c: Container<Settings> = self.get_json("GET /:/prefs", "/:/prefs").await?;
        Ok(c.container.settings)
    }

    /// Writes prefs in one request; Plex rejects the whole request if any
    /// id is unknown.
    pub async fn set_prefs(&self, values: &[(String, String)]) -> Result<(), PlexError> {
        let names: Vec<&str> = values.iter().map(|(k, _)| k.as_str()).collect();
        let req = self.request(Method::PUT, "/:/prefs").query(values);
        self.send(&format!("set prefs {}", names.join(", ")), req)
            .await
            .map(drop)
    }

    pub async fn account(&self) -> Result<Account, PlexError> {
        let r: AccountReply = self
            .get_json("GET /myplex/account", "/myplex/account")
            .await?;
        Ok(r.account)
    }

    /// Claims the unclaimed server with a claim token (valid a few
    /// minutes), sent as python-plexapi's `PlexServer.claim` sends it: with
    /// the account's `X-Plex-Token`. Plex answers the `MyPlex` element of
    /// the account it is now signed in to.
    pub async fn claim(
        &self,
        claim_token: &Secret,
        account_token: &Secret,
    ) -> Result<Account, PlexError> {
        let req = self
            .request(Method::POST, "/myplex/claim")
            .query(&[("token", claim_token.expose())])
            .header("X-Plex-Token", account_token.expose());
        self.my_plex("claim the server", req).await
    }

    /// Signs the server out of plex.tv; Plex answers the `MyPlex` element.
    pub async fn unclaim(&self) -> Result<Account, PlexError> {
        let req = self.request(Method::DELETE, "/myplex/account");
        self.my_plex("unclaim the server", req).await
    }

    /// Sends a claim or an unclaim and reads the `MyPlex` element it answers.
    async fn my_plex(&self, what: &str, req: RequestBuilder) -> Result<Account, PlexError> {
        let body = self.send(what, req).await?;
        serde_json::from_str::<AccountReply>(&body)
            .map(|r| r.account)
            .map_err(|e| PlexError::Decode {
                what: what.to_string(),
                detail: format!("{e}; the answer began {}", super::error::snippet(&body)),
            })
    }
}
