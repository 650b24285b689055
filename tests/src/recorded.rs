//! Real Scaleway traffic, as Scaleway's CLI and Terraform provider recorded
//! it (tests/data/scaleway/, extracted by extract.py there), and the two
//! ways the conformance tests use it: a replay server that answers the
//! client with the recorded responses and keeps what the client sent, and
//! a comparison of JSON shapes (keys and types, recursively).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

/// An access key id in place of the recordings' `@ACCESS_KEY@`: built from
/// pieces, so the tree holds no text shaped like a key.
pub fn access_key() -> String {
    concat!("SCW", "CONFORMANCE", "000000").to_string()
}

/// Where a recording came from.
#[derive(Debug, Clone, Deserialize)]
pub struct Source {
    pub repository: String,
    pub commit: String,
    pub cassette: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub content_type: Option<String>,
    /// JSON, text, or null when there was none.
    pub body: Value,
}

impl Request {
    /// The recorded value of query parameter `key`; panics when the
    /// recording has none (the test's premise is then wrong).
    pub fn param(&self, key: &str) -> &str {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("the recorded {} {} has no {key}", self.method, self.path))
    }

    /// The recorded string value of body field `key`; panics when the
    /// recording has none.
    pub fn field(&self, key: &str) -> &str {
        self.body[key]
            .as_str()
            .unwrap_or_else(|| panic!("the recorded {} {} has no {key}", self.method, self.path))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Answer {
    pub status: u16,
    pub headers: std::collections::BTreeMap<String, String>,
    /// JSON, or text (`""` when empty).
    pub body: Value,
}

impl Answer {
    /// The body as sent on the wire.
    pub fn wire_body(&self) -> String {
        match &self.body {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Interaction {
    pub id: i64,
    pub request: Request,
    pub response: Answer,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Recording {
    pub source: Source,
    pub interactions: Vec<Interaction>,
}

impl Recording {
    /// `tests/data/scaleway/<name>.json`.
    pub fn load(name: &str) -> Recording {
        let path = format!("{}/data/scaleway/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
            .replace("@ACCESS_KEY@", &access_key());
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The interaction with the cassette's id `id`.
    pub fn get(&self, id: i64) -> &Interaction {
        self.interactions
            .iter()
            .find(|i| i.id == id)
            .unwrap_or_else(|| panic!("{} has no interaction {id}", self.source.cassette))
    }

    /// `repository@commit:cassette#id`, for messages.
    pub fn cite(&self, id: i64) -> String {
        let s = &self.source;
        format!("{}@{}:{}#{id}", s.repository, &s.commit[..12], s.cassette)
    }
}

/// What the client sent the replay server.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: the body is not JSON ({e}): {}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The query's keys, in order.
    pub fn query_keys(&self) -> Vec<&str> {
        self.query.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// The values of `key` in the query.
    pub fn query_values(&self, key: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Default)]
struct ReplayState {
    answers: VecDeque<Answer>,
    seen: Vec<Seen>,
}

/// An HTTP server on loopback answering, in order, with recorded answers;
/// past the last one it answers 599, which no client takes for success.
pub struct Replay {
    pub url: String,
    state: Arc<Mutex<ReplayState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Replay {
    pub async fn start(answers: Vec<Answer>) -> Replay {
        let state = Arc::new(Mutex::new(ReplayState {
            answers: answers.into(),
            seen: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the replay server");
        });
        Replay { url, state, task }
    }

    /// Every request received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The only request received.
    pub fn one(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(seen.len(), 1, "{seen:#?}");
        seen.into_iter().next().unwrap()
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<ReplayState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let mut state = state.lock().unwrap();
    state.seen.push(Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        query,
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: body.to_vec(),
    });
    let Some(recorded) = state.answers.pop_front() else {
        return (
            StatusCode::from_u16(599).unwrap(),
            "no recorded answer left",
        )
            .into_response();
    };
    let mut response = Response::new(recorded.wire_body().into());
    *response.status_mut() = StatusCode::from_u16(recorded.status).unwrap();
    for (name, value) in &recorded.headers {
        if name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        response
            .headers_mut()
            .insert::<axum::http::HeaderName>(name.parse().unwrap(), value.parse().unwrap());
    }
    response
}

/// JSON's type names, `null` apart.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Where `got` differs in shape from `want` (a recorded answer): a key one
/// has and the other lacks, or a value of another type, recursively.
/// `null` on either side matches any type (a value not set yet: an IP, a
/// date). Each element of an array in `got` is compared with the element
/// of `want`'s it is most like. The objects at `maps` (paths like
/// `server.volumes`, `*` for any key) are maps keyed by data (volume
/// slots, type names): their keys may differ, each value is compared with
/// `want`'s first.
pub fn shape_diff(want: &Value, got: &Value, maps: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    walk(want, got, "", maps, &mut out);
    out
}

fn walk(want: &Value, got: &Value, at: &str, maps: &[&str], out: &mut Vec<String>) {
    let name = if at.is_empty() { "(top)" } else { at };
    match (want, got) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(w), Value::Object(g)) if is_map(at, maps) => {
            if let Some(first) = w.values().next() {
                for (k, v) in g {
                    walk(first, v, &join(at, k), maps, out);
                }
            }
        }
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => walk(wv, gv, &join(at, k), maps, out),
                    None => out.push(format!("{}: missing (recorded {})", join(at, k), kind(wv))),
                }
            }
            for (k, gv) in g {
                if !w.contains_key(k) {
                    out.push(format!(
                        "{}: not in the recorded answer ({})",
                        join(at, k),
                        kind(gv)
                    ));
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if !w.is_empty() => {
            // Each element against the recorded one it is most like: a
            // list mixes variants (a policy of a group, of an application).
            for (i, v) in g.iter().enumerate() {
                let at = format!("{at}[{i}]");
                let best = w
                    .iter()
                    .map(|candidate| {
                        let mut diff = Vec::new();
                        walk(candidate, v, &at, maps, &mut diff);
                        diff
                    })
                    .min_by_key(Vec::len)
                    .unwrap_or_default();
                out.extend(best);
            }
        }
        (w, g) if kind(w) != kind(g) => out.push(format!(
            "{name}: {} where the recording has {}",
            kind(g),
            kind(w)
        )),
        _ => {}
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// Whether the path `at` (array indices dropped) is one of `maps`.
fn is_map(at: &str, maps: &[&str]) -> bool {
    let plain = strip_indices(at);
    maps.iter().any(|m| {
        let mp: Vec<&str> = m.split('.').collect();
        let ap: Vec<&str> = plain.split('.').collect();
        mp.len() == ap.len() && mp.iter().zip(&ap).all(|(m, a)| *m == "*" || m == a)
    })
}

fn strip_indices(at: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in at.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The keys of the JSON object `v`, sorted.
pub fn keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes() {
        let want = json!({"a": 1, "b": {"c": "x", "d": [{"e": true}]}, "n": null,
                          "volumes": {"0": {"id": "v"}}});
        let same = json!({"a": 2, "b": {"c": "y", "d": []}, "n": "now set",
                          "volumes": {"1": {"id": "w"}, "2": {"id": "z"}}});
        assert!(shape_diff(&want, &same, &["volumes"]).is_empty());
        let other = json!({"a": "2", "b": {"d": [{"e": 1}], "f": 0}, "n": null,
                           "volumes": {"0": {"id": 1}}});
        assert_eq!(
            shape_diff(&want, &other, &["volumes"]),
            vec![
                "a: string where the recording has number",
                "b.c: missing (recorded string)",
                "b.d[0].e: number where the recording has bool",
                "b.f: not in the recorded answer (number)",
                "volumes.0.id: number where the recording has string",
            ]
        );
        assert!(is_map("servers[3].volumes", &["servers.volumes"]));
        assert!(is_map(
            "x.per_volume_constraint",
            &["*.per_volume_constraint"]
        ));
    }
}
