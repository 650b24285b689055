//! Local receivers for every notification target, each as strict as its
//! documentation describes the real service, on one loopback server:
//!
//! - `/ntfy/<topic>`: ntfy's publish (docs.ntfy.sh "Publishing"): a topic
//!   of 1-64 of `[-_A-Za-z0-9]`, the message as the body, `Priority` 1-5
//!   or a priority name, `Click` a URL; a `private-*` topic answers 401
//!   without `Authorization: Bearer <NTFY_TOKEN>`. 200 with the message
//!   as JSON.
//! - `/discord/api/webhooks/<id>/<token>`: Discord's "Execute Webhook":
//!   JSON with `content` and/or `embeds`; content at most 2000 characters,
//!   at most 10 embeds, a title at most 256 and a description at most
//!   4096; an empty message is 400 code 50006, a too-long field 400 code
//!   50035. 204 No Content.
//! - `/slack/services/<T>/<B>/<secret>`: a Slack incoming webhook: JSON
//!   with `text` (or `blocks`); `invalid_payload` / `no_text` on 400;
//!   200 `ok`.
//! - `/gotify/message`: Gotify's `POST /message`: the application token in
//!   `X-Gotify-Key` (or `?token=`), 401 otherwise; `message` required;
//!   200 with the stored message.
//! - `/tem/transactional-email/v1alpha1/regions/<region>/emails`: Scaleway
//!   TEM's "Send an email": `X-Auth-Token`, `from.email`, at least one
//!   `to[].email`, a `subject`, `text` or `html`, a UUID `project_id`;
//!   200 `{"emails": [...]}`.
//! - `/webhook/...`: plex-burst's generic webhook: a JSON body of schema
//!   `plex-burst.notification.v1`, 200.
//! - `/fail/...` answers 500, `/hang/...` never answers, `/limited/...`
//!   answers 429 with `Retry-After: 1` to its first request and 200 after.
//!
//! Every request is recorded with what was answered.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const NTFY_TOKEN: &str = "tk_receiverntfytoken0000000000";
pub const GOTIFY_TOKEN: &str = "AgotifyAppToken1";
pub const TEM_KEY: &str = "4b1c5e8a-0000-4000-8000-receivertemkey";

/// One request as received, and the status it got.
#[derive(Debug, Clone)]
pub struct Received {
    pub service: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-cased names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} got a body that is not JSON ({e})", self.service))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

#[derive(Default)]
struct Shared {
    received: Vec<Received>,
    limited_seen: bool,
}

/// The server, on its own thread and runtime; stopped when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    pub fn start() -> Receiver {
        Self::start_on("127.0.0.1:0".parse().expect("an address"))
    }

    pub fn start_on(listen: SocketAddr) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(listen))
            .unwrap_or_else(|e| panic!("cannot listen on {listen}: {e}"));
        let addr = listener.local_addr().expect("an address");
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            shared,
            _runtime: runtime,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().expect("not poisoned").received.clone()
    }

    /// Waits until `done` holds for what was received (panics after
    /// `within`).
    pub fn wait_until(
        &self,
        within: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let until = Instant::now() + within;
        loop {
            let got = self.received();
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < until,
                "the receivers did not get what was expected within {within:?}; they got: {:#?}",
                got.iter()
                    .map(|r| (&r.service, &r.path, r.status, r.text()))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn handle(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let service = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let header_map: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    if service == "hang" {
        record(&shared, &service, &method, &uri, &header_map, &body, 0);
        std::future::pending::<()>().await;
    }
    let limited_first = service == "limited" && {
        let mut s = shared.lock().expect("not poisoned");
        !std::mem::replace(&mut s.limited_seen, true)
    };
    let rest: Vec<&str> = path.trim_start_matches('/').split('/').skip(1).collect();
    let query = uri.query().unwrap_or("");
    let (status, response) =
        if method != Method::POST && !(service == "ntfy" && method == Method::PUT) {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed".into_response(),
            )
        } else {
            match service.as_str() {
                "ntfy" => ntfy(&rest, &header_map, &body),
                "discord" => discord(&rest, &header_map, &body),
                "slack" => slack(&rest, &header_map, &body),
                "gotify" => gotify(&rest, query, &header_map, &body),
                "tem" => tem(&rest, &header_map, &body),
                "webhook" => webhook(&header_map, &body),
                "fail" => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "receiver told to fail".into_response(),
                ),
                "limited" if limited_first => (
                    StatusCode::TOO_MANY_REQUESTS,
                    ([("retry-after", "1")], "slow down").into_response(),
                ),
                "limited" => (StatusCode::OK, "ok".into_response()),
                _ => (StatusCode::NOT_FOUND, "no such receiver".into_response()),
            }
        };
    record(
        &shared,
        &service,
        &method,
        &uri,
        &header_map,
        &body,
        status.as_u16(),
    );
    let mut response = response;
    *response.status_mut() = status;
    response
}

fn record(
    shared: &Mutex<Shared>,
    service: &str,
    method: &Method,
    uri: &Uri,
    headers: &BTreeMap<String, String>,
    body: &[u8],
    status: u16,
) {
    shared
        .lock()
        .expect("not poisoned")
        .received
        .push(Received {
            service: service.to_string(),
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers: headers.clone(),
            body: body.to_vec(),
            status,
        });
}

type Answer = (StatusCode, Response);

fn json_answer(status: StatusCode, value: Value) -> Answer {
    (status, axum::Json(value).into_response())
}

fn is_json(headers: &BTreeMap<String, String>) -> bool {
    headers
        .get("content-type")
        .is_some_and(|c| c.starts_with("application/json"))
}

fn ntfy(rest: &[&str], headers: &BTreeMap<String, String>, body: &[u8]) -> Answer {
    let bad = |code: u32, error: &str| {
        json_answer(
            StatusCode::BAD_REQUEST,
            json!({ "code": code, "http": 400, "error": error }),
        )
    };
    let [topic] = rest else {
        return (StatusCode::NOT_FOUND, "page not found".into_response());
    };
    if topic.is_empty()
        || topic.len() > 64
        || !topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return bad(40010, "invalid topic");
    }
    if topic.starts_with("private-")
        && headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {NTFY_TOKEN}"))
    {
        return json_answer(
            StatusCode::UNAUTHORIZED,
            json!({ "code": 40101, "http": 401, "error": "unauthorized" }),
        );
    }
    let header = |names: &[&str]| names.iter().find_map(|n| headers.get(*n).cloned());
    if let Some(p) = header(&["priority", "x-priority", "p"])
        && ![
            "1", "2", "3", "4", "5", "min", "low", "default", "high", "max", "urgent",
        ]
        .contains(&p.as_str())
    {
        return bad(40007, "invalid priority");
    }
    if let Some(click) = header(&["click", "x-click"])
        && reqwest::Url::parse(&click).is_err()
    {
        return bad(40013, "invalid click URL");
    }
    let message = String::from_utf8_lossy(body).into_owned();
    json_answer(
        StatusCode::OK,
        json!({
            "id": "hwQ2YpKdmg", "time": 1_700_000_000, "expires": 1_700_043_200, "event": "message",
            "topic": topic, "title": header(&["title", "x-title", "t"]), "message": if message.is_empty() { "triggered".into() } else { message },
        }),
    )
}

fn discord(rest: &[&str], headers: &BTreeMap<String, String>, body: &[u8]) -> Answer {
    let invalid = || {
        json_answer(
            StatusCode::BAD_REQUEST,
            json!({ "code": 50035, "message": "Invalid Form Body" }),
        )
    };
    if !matches!(rest, ["api", "webhooks", id, token] if id.chars().all(|c| c.is_ascii_digit()) && !token.is_empty())
    {
        return json_answer(
            StatusCode::NOT_FOUND,
            json!({ "code": 10015, "message": "Unknown Webhook" }),
        );
    }
    if !is_json(headers) {
        return json_answer(
            StatusCode::BAD_REQUEST,
            json!({ "code": 50006, "message": "Cannot send an empty message" }),
        );
    }
    let Ok(msg) = serde_json::from_slice::<Value>(body) else {
        return json_answer(
            StatusCode::BAD_REQUEST,
            json!({ "code": 50109, "message": "The request body contains invalid JSON." }),
        );
    };
    let content = msg["content"].as_str().unwrap_or("");
    let embeds = msg["embeds"].as_array().cloned().unwrap_or_default();
    if content.is_empty() && embeds.is_empty() {
        return json_answer(
            StatusCode::BAD_REQUEST,
            json!({ "code": 50006, "message": "Cannot send an empty message" }),
        );
    }
    let chars = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    if content.chars().count() > 2000 || embeds.len() > 10 {
        return invalid();
    }
    for e in &embeds {
        if chars(&e["title"]) > 256
            || chars(&e["description"]) > 4096
            || !e["color"].is_null() && !e["color"].is_u64()
        {
            return invalid();
        }
    }
    (StatusCode::NO_CONTENT, ().into_response())
}

fn slack(rest: &[&str], headers: &BTreeMap<String, String>, body: &[u8]) -> Answer {
    if !matches!(rest, ["services", t, b, secret] if t.starts_with('T') && b.starts_with('B') && !secret.is_empty())
    {
        return (StatusCode::NOT_FOUND, "no_service".into_response());
    }
    let Ok(msg) = serde_json::from_slice::<Value>(body) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload".into_response());
    };
    if !is_json(headers) {
        return (StatusCode::BAD_REQUEST, "invalid_payload".into_response());
    }
    if msg["text"].as_str().is_none_or(str::is_empty) && msg["blocks"].is_null() {
        return (StatusCode::BAD_REQUEST, "no_text".into_response());
    }
    (StatusCode::OK, "ok".into_response())
}

fn gotify(rest: &[&str], query: &str, headers: &BTreeMap<String, String>, body: &[u8]) -> Answer {
    if rest != ["message"] {
        return json_answer(
            StatusCode::NOT_FOUND,
            json!({ "error": "Not Found", "errorCode": 404, "errorDescription": "page not found" }),
        );
    }
    let from_query = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned());
    let token = headers.get("x-gotify-key").cloned().or(from_query);
    if token.as_deref() != Some(GOTIFY_TOKEN) {
        return json_answer(
            StatusCode::UNAUTHORIZED,
            json!({ "error": "Unauthorized", "errorCode": 401, "errorDescription": "you need to provide a valid access token or user credentials to access this api" }),
        );
    }
    let Ok(msg) = serde_json::from_slice::<Value>(body) else {
        return json_answer(
            StatusCode::BAD_REQUEST,
            json!({ "error": "Bad Request", "errorCode": 400, "errorDescription": "invalid JSON" }),
        );
    };
    if msg["message"].as_str().is_none_or(str::is_empty) {
        return json_answer(
            StatusCode::BAD_REQUEST,
            json!({ "error": "Bad Request", "errorCode": 400, "errorDescription": "Field 'message' is required" }),
        );
    }
    if !msg["priority"].is_null() && !msg["priority"].is_i64() {
        return json_answer(
            StatusCode::BAD_REQUEST,
            json!({ "error": "Bad Request", "errorCode": 400, "errorDescription": "Field 'priority' must be an integer" }),
        );
    }
    json_answer(
        StatusCode::OK,
        json!({ "id": 1, "appid": 1, "message": msg["message"], "title": msg["title"], "priority": msg["priority"], "date": "2026-12-03T00:00:00Z" }),
    )
}

fn tem(rest: &[&str], headers: &BTreeMap<String, String>, body: &[u8]) -> Answer {
    let invalid = |field: &str| {
        json_answer(
            StatusCode::BAD_REQUEST,
            json!({ "message": "invalid argument(s)", "type": "invalid_arguments", "details": [{ "argument_name": field, "reason": "required" }] }),
        )
    };
    let region_ok = matches!(rest, ["transactional-email", "v1alpha1", "regions", region, "emails"] if ["fr-par", "nl-ams", "pl-waw"].contains(region));
    if !region_ok {
        return json_answer(
            StatusCode::NOT_FOUND,
            json!({ "message": "resource is not found", "type": "not_found" }),
        );
    }
    if headers.get("x-auth-token").map(String::as_str) != Some(TEM_KEY) {
        return json_answer(
            StatusCode::UNAUTHORIZED,
            json!({ "message": "authentication is denied", "method": "api_key", "reason": "invalid_argument", "type": "denied_authentication" }),
        );
    }
    let Ok(msg) = serde_json::from_slice::<Value>(body) else {
        return invalid("body");
    };
    let email = |v: &Value| v["email"].as_str().is_some_and(|e| e.contains('@'));
    if !email(&msg["from"]) {
        return invalid("from.email");
    }
    let to = msg["to"].as_array().cloned().unwrap_or_default();
    if to.is_empty() || !to.iter().all(email) {
        return invalid("to");
    }
    if msg["subject"].as_str().is_none_or(str::is_empty) {
        return invalid("subject");
    }
    if msg["text"].as_str().is_none_or(str::is_empty)
        && msg["html"].as_str().is_none_or(str::is_empty)
    {
        return invalid("text");
    }
    let project = msg["project_id"].as_str().unwrap_or("");
    let uuid = project.len() == 36 && project.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if !uuid {
        return invalid("project_id");
    }
    json_answer(
        StatusCode::OK,
        json!({ "emails": to.iter().map(|t| json!({
            "id": "6a1e6f4c-0000-4000-8000-000000000001", "message_id": "6a1e6f4c-0000-4000-8000-000000000002",
            "project_id": project, "mail_from": msg["from"]["email"], "rcpt_to": t["email"], "rcpt_type": "to",
            "subject": msg["subject"], "status": "new", "created_at": "2026-12-03T00:00:00Z",
        })).collect::<Vec<_>>() }),
    )
}

fn webhook(headers: &BTreeMap<String, String>, body: &[u8]) -> Answer {
    let parsed = serde_json::from_slice::<runner::notify::Event>(body);
    match parsed {
        Ok(e) if is_json(headers) && e.schema == runner::notify::SCHEMA => {
            (StatusCode::OK, "ok".into_response())
        }
        Ok(e) => (
            StatusCode::BAD_REQUEST,
            format!("unknown schema {:?}", e.schema).into_response(),
        ),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("not a plex-burst notification: {e}").into_response(),
        ),
    }
}
