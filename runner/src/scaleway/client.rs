//! The HTTP core every Scaleway call goes through: base URL, `X-Auth-Token`,
//! JSON, retries, error quoting, pagination and polling.
//!
//! Retry rule. A request is tried again, with exponential backoff and
//! jitter, at most `RetryPolicy::attempts` times in all, when:
//! - the answer is 429 (rate limited) or 503 (unavailable): Scaleway did not
//!   process the request, so even a `POST` that creates a server is safe to
//!   send again;
//! - the answer is another 5xx and the method is idempotent (GET, PUT,
//!   PATCH, DELETE: our PATCHes set a whole value). A `POST` that got a 500,
//!   502 or 504 may have been carried out: sending it again could create a
//!   second, billed server, so it fails at once and the caller decides
//!   (after listing by tag, for instance);
//! - no answer came: for an idempotent method whatever the cause, for a
//!   `POST` only when the connection itself failed (refused, DNS, TLS), i.e.
//!   the request never left.
//!
//! A 4xx other than 429 is never retried. `Retry-After` (seconds) replaces
//! the backoff when given. Dropping the future cancels the call, waits
//! included.

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ScwError;
use crate::secret::Secret;

/// Scaleway's public API endpoint.
pub const DEFAULT_API_URL: &str = "https://api.scaleway.com";

/// The longest `Retry-After` we agree to sleep.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// A safety bound on pagination, should an answer never run short.
const MAX_PAGES: u32 = 1000;
const PAGE_SIZE: usize = 100;

/// How often and how patiently a call is retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubles after each failure.
    pub base_delay: Duration,
    /// Cap on the backoff (not on `Retry-After`).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Wait after `failed` failures: "equal jitter", half fixed, half random.
    pub(crate) fn backoff(&self, failed: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << failed.saturating_sub(1).min(20));
        let cap = exp.min(self.max_delay);
        let half = cap / 2;
        half + half.mul_f64(rand::random_range(0.0..=1.0))
    }
}

/// A Scaleway API client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Secret,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token)
            .field("retry", &self.retry)
            .finish()
    }
}

/// A request body.
pub(crate) enum Payload {
    Empty,
    Json(Vec<u8>),
    Text(String),
}

/// A successful answer.
pub(crate) struct Answer {
    pub body: Vec<u8>,
    pub headers: HeaderMap,
}

/// How a list endpoint pages.
#[derive(Clone, Copy)]
pub(crate) enum Paging {
    /// Instance: `per_page` + `page`, total in the `X-Total-Count` header.
    Instance,
    /// Block, IAM, Marketplace: `page_size` + `page`, total in `total_count`.
    Standard,
}

impl Client {
    /// A client for `api_url` (normally [`DEFAULT_API_URL`]) sending
    /// `secret_key` as `X-Auth-Token`.
    pub fn new(api_url: &str, secret_key: Secret) -> Result<Client, ScwError> {
        let parsed = url::Url::parse(api_url)
            .map_err(|e| ScwError::Invalid(format!("bad Scaleway API URL {api_url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(ScwError::Invalid(format!(
                "bad Scaleway API URL {api_url:?}: not an http(s) URL"
            )));
        }
        if secret_key.is_empty() {
            return Err(ScwError::Invalid("the Scaleway secret key is empty".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("plex-burst/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ScwError::Invalid(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: api_url.trim_end_matches('/').to_string(),
            token: secret_key,
            retry: RetryPolicy::default(),
        })
    }

    /// The same client with another retry policy.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Client {
        self.retry = RetryPolicy {
            attempts: policy.attempts.max(1),
            ..policy
        };
        self
    }

    /// The base URL calls go to, without a trailing slash.
    pub fn api_url(&self) -> &str {
        &self.base
    }

    /// Sends one call with the retry rule of the module docs; a 2xx answer
    /// is returned, anything else is the typed error quoting the answer.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        payload: Payload,
    ) -> Result<Answer, ScwError> {
        let call = format!("{method} {path}");
        let idempotent = method != Method::POST;
        let mut failed = 0u32;
        loop {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .header("X-Auth-Token", self.token.expose());
            if !query.is_empty() {
                req = req.query(query);
            }
            req = match &payload {
                Payload::Empty => req,
                Payload::Json(b) => req.header(CONTENT_TYPE, "application/json").body(b.clone()),
                Payload::Text(t) => req.header(CONTENT_TYPE, "text/plain").body(t.clone()),
            };
            let (error, retry, wait_hint) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Ok(body) if (200..300).contains(&status) => {
                            return Ok(Answer {
                                body: body.to_vec(),
                                headers,
                            });
                        }
                        Ok(body) => {
                            let text = String::from_utf8_lossy(&body);
                            let retry = match status {
                                429 | 503 => true,
                                500..=599 => idempotent,
                                _ => false,
                            };
                            (
                                ScwError::from_answer(&call, status, &text),
                                retry,
                                retry_after(&headers),
                            )
                        }
                        // The status came but the body broke off: a POST
                        // was received, so only an idempotent call is sent
                        // again.
                        Err(e) => (ScwError::transport(&call, e), idempotent, None),
                    }
                }
                Err(e) => {
                    let retry = idempotent || e.is_connect();
                    (ScwError::transport(&call, e), retry, None)
                }
            };
            failed += 1;
            if !retry || failed >= self.retry.attempts {
                return Err(error);
            }
            let wait = wait_hint.unwrap_or_else(|| self.retry.backoff(failed));
            tracing::warn!(
                "{error}; attempt {failed} of {}, retrying in {}",
                self.retry.attempts,
                humantime::format_duration(round_ms(wait))
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// `GET` and decode.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ScwError> {
        let answer = self.send(Method::GET, path, query, Payload::Empty).await?;
        decode(&format!("GET {path}"), &answer.body)
    }

    /// `GET` and decode; a 404 is `None`.
    pub(crate) async fn get_opt<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, ScwError> {
        match self.get_json(path, &[]).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A call with a JSON body, decoding the JSON answer.
    pub(crate) async fn json_call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ScwError> {
        let call = format!("{method} {path}");
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ScwError::Invalid(format!("cannot encode the body of {call}: {e}")))?;
        let answer = self.send(method, path, &[], Payload::Json(bytes)).await?;
        decode(&call, &answer.body)
    }

    /// A call with a JSON body whose answer is not needed.
    pub(crate) async fn json_call_unit<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<(), ScwError> {
        let call = format!("{method} {path}");
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ScwError::Invalid(format!("cannot encode the body of {call}: {e}")))?;
        self.send(method, path, &[], Payload::Json(bytes))
            .await
            .map(drop)
    }

    /// `DELETE`; a 404 counts as done, so deleting is idempotent (a
    /// retried DELETE whose first try went through answers 404).
    pub(crate) async fn delete(&self, path: &str) -> Result<(), ScwError> {
        match self.send(Method::DELETE, path, &[], Payload::Empty).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every item of a paginated list: the array `field` of each page.
    pub(crate) async fn list_all<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        field: &str,
        paging: Paging,
    ) -> Result<Vec<T>, ScwError> {
        let call = format!("GET {path}");
        let mut items: Vec<T> = Vec::new();
        for page in 1..=MAX_PAGES {
            let mut q = query.to_vec();
            let size_key = match paging {
                Paging::Instance => "per_page",
                Paging::Standard => "page_size",
            };
            q.push((size_key, PAGE_SIZE.to_string()));
            q.push(("page", page.to_string()));
            let answer = self.send(Method::GET, path, &q, Payload::Empty).await?;
            let mut v: Value = decode(&call, &answer.body)?;
            let total = match paging {
                Paging::Instance => answer
                    .headers
                    .get("x-total-count")
                    .and_then(|h| h.to_str().ok())
                    .and_then(|h| h.trim().parse::<usize>().ok()),
                Paging::Standard => v
                    .get("total_count")
                    .and_then(Value::as_u64)
                    .map(|n| n as usize),
            };
            let list = match v.get_mut(field).map(Value::take) {
                Some(Value::Array(a)) => a,
                Some(Value::Null) | None => Vec::new(),
                Some(other) => {
                    return Err(ScwError::decode(
                        &call,
                        format!("{field:?} is not a list but {other}"),
                    ));
                }
            };
            let n = list.len();
            for (i, item) in list.into_iter().enumerate() {
                let item = serde_path_to_error::deserialize(item)
                    .map_err(|e| ScwError::decode(&call, format!("{field}[{i}]: {e}")))?;
                items.push(item);
            }
            let done = match total {
                Some(total) => items.len() >= total || n == 0,
                None => n < PAGE_SIZE,
            };
            if done {
                return Ok(items);
            }
        }
        Err(ScwError::decode(
            &call,
            format!("still more items after {MAX_PAGES} pages"),
        ))
    }
}

/// Decodes a JSON answer, naming the path of a mismatch.
pub(crate) fn decode<T: DeserializeOwned>(call: &str, body: &[u8]) -> Result<T, ScwError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        ScwError::decode(
            call,
            format!(
                "{e}; the answer began {}",
                super::error::snippet(&String::from_utf8_lossy(body))
            ),
        )
    })
}

/// `Retry-After` in seconds (integer or decimal), capped.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let secs: f64 = text.parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// A path segment from a caller (an id, a key): refused when it would
/// change the path, so `delete_server("")` cannot hit the collection.
pub(crate) fn seg<'a>(what: &str, value: &'a str) -> Result<&'a str, ScwError> {
    if value.is_empty()
        || value.contains(['/', '?', '#', '%'])
        || value.chars().any(char::is_whitespace)
    {
        return Err(ScwError::Invalid(format!("invalid {what} {value:?}")));
    }
    Ok(value)
}

/// Polls `fetch` every `poll` until `done` says so, for at most `timeout`.
/// `fetch` answering `None` (the resource is gone) is [`ScwError::Gone`];
/// `done` may fail (a resource in `error`). `describe` names the last state
/// for the timeout error.
pub(crate) async fn poll_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut fetch: F,
    done: impl Fn(&T) -> Result<bool, ScwError>,
    describe: impl Fn(&T) -> String,
) -> Result<T, ScwError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, ScwError>>,
{
    let start = Instant::now();
    loop {
        let Some(current) = fetch().await? else {
            return Err(ScwError::Gone { what: what.into() });
        };
        if done(&current)? {
            return Ok(current);
        }
        if start.elapsed() + poll > timeout {
            return Err(ScwError::Timeout {
                what: format!("{what} (last state: {})", describe(&current)),
                after: timeout,
            });
        }
        tokio::time::sleep(poll).await;
    }
}

/// Polls until `fetch` answers `None`.
pub(crate) async fn poll_gone<T, F, Fut>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut fetch: F,
    describe: impl Fn(&T) -> String,
) -> Result<(), ScwError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, ScwError>>,
{
    let start = Instant::now();
    loop {
        let Some(current) = fetch().await? else {
            return Ok(());
        };
        if start.elapsed() + poll > timeout {
            return Err(ScwError::Timeout {
                what: format!("{what} to be deleted (last state: {})", describe(&current)),
                after: timeout,
            });
        }
        tokio::time::sleep(poll).await;
    }
}

/// Tags as the Instance API filters them: one comma-separated value.
pub(crate) fn instance_tags(tags: &[&str]) -> Option<(&'static str, String)> {
    (!tags.is_empty()).then(|| ("tags", tags.join(",")))
}

#[cfg(test)]
mod tests {
    use super::super::mock::{Mock, Reply};
    use super::*;

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }

    fn client(mock: &Mock) -> Client {
        Client::new(&mock.url, Secret::new("SCW-SECRET-TOKEN-1234"))
            .unwrap()
            .with_retry(fast())
    }

    #[tokio::test]
    async fn sends_token_and_json_and_builds_url() {
        let mock = Mock::start(vec![Reply::json(200, r#"{"ok":true}"#)]).await;
        let c = Client::new(
            &format!("{}/", mock.url),
            Secret::new("SCW-SECRET-TOKEN-1234"),
        )
        .unwrap();
        let v: Value = c
            .get_json(
                "/instance/v1/zones/fr-par-1/servers",
                &[("tags", "a,b".into())],
            )
            .await
            .unwrap();
        assert_eq!(v["ok"], true);
        let seen = mock.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].path, "/instance/v1/zones/fr-par-1/servers");
        assert_eq!(seen[0].query, "tags=a%2Cb");
        assert_eq!(seen[0].header("x-auth-token"), "SCW-SECRET-TOKEN-1234");
    }

    #[tokio::test]
    async fn retries_503_then_succeeds() {
        let mock = Mock::start(vec![
            Reply::json(503, r#"{"message":"busy"}"#),
            Reply::json(502, "bad gateway"),
            Reply::json(200, "{}"),
        ])
        .await;
        let _: Value = client(&mock).get_json("/x", &[]).await.unwrap();
        assert_eq!(mock.seen().len(), 3);
    }

    #[tokio::test]
    async fn post_retried_on_429_and_503_only() {
        let mock = Mock::start(vec![
            Reply::json(429, r#"{"message":"rate limited"}"#),
            Reply::json(503, "{}"),
            Reply::json(201, r#"{"id":"1"}"#),
        ])
        .await;
        let v: Value = client(&mock)
            .json_call(Method::POST, "/create", &serde_json::json!({"a": 1}))
            .await
            .unwrap();
        assert_eq!(v["id"], "1");
        assert_eq!(mock.seen().len(), 3);

        // A 500 on POST may have created something: no second try.
        let mock = Mock::start(vec![
            Reply::json(500, r#"{"message":"internal error"}"#),
            Reply::json(201, "{}"),
        ])
        .await;
        let e = client(&mock)
            .json_call::<_, Value>(Method::POST, "/create", &serde_json::json!({}))
            .await
            .unwrap_err();
        assert_eq!(mock.seen().len(), 1);
        assert!(e.to_string().contains("(500): internal error"), "{e}");
    }

    #[tokio::test]
    async fn no_retry_on_400_and_error_quotes_message_not_token() {
        let mock = Mock::start(vec![
            Reply::json(
                400,
                r#"{"type":"invalid_arguments","message":"invalid argument(s)","details":[{"argument_name":"name","reason":"required"}]}"#,
            ),
            Reply::json(200, "{}"),
        ])
        .await;
        let e = client(&mock)
            .json_call::<_, Value>(
                Method::POST,
                "/instance/v1/zones/fr-par-1/servers",
                &serde_json::json!({}),
            )
            .await
            .unwrap_err();
        assert_eq!(mock.seen().len(), 1);
        let text = e.to_string();
        assert_eq!(
            text,
            "Scaleway refused POST /instance/v1/zones/fr-par-1/servers (400 invalid_arguments): \
             invalid argument(s) (invalid arguments: name (required))"
        );
        assert!(!format!("{text} {e:?}").contains("SCW-SECRET-TOKEN-1234"));
    }

    #[tokio::test]
    async fn gives_up_after_the_attempts() {
        let mock = Mock::start(vec![Reply::json(503, r#"{"message":"down"}"#); 10]).await;
        let e = client(&mock)
            .get_json::<Value>("/x", &[])
            .await
            .unwrap_err();
        assert_eq!(mock.seen().len(), 4);
        assert!(e.is_transient());
    }

    #[tokio::test]
    async fn honours_retry_after() {
        let mock = Mock::start(vec![
            Reply::json(429, "{}").header("Retry-After", "0.3"),
            Reply::json(200, "{}"),
        ])
        .await;
        let start = Instant::now();
        let _: Value = client(&mock).get_json("/x", &[]).await.unwrap();
        // The policy's own backoff is at most 5 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(300),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(mock.seen().len(), 2);
    }

    #[tokio::test]
    async fn connection_refused_is_retried_even_for_post() {
        // A port nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let c = Client::new(&url, Secret::new("SCW-SECRET-TOKEN-1234"))
            .unwrap()
            .with_retry(fast());
        let start = Instant::now();
        let e = c
            .json_call::<_, Value>(Method::POST, "/p", &serde_json::json!({}))
            .await
            .unwrap_err();
        assert!(matches!(e, ScwError::Transport { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with("cannot reach Scaleway for POST /p: cannot connect"),
            "{text}"
        );
        assert!(!text.contains("SCW-SECRET"));
        // Three backoffs happened (>= 0.5+1+2 ms with jitter halves).
        assert!(start.elapsed() >= Duration::from_millis(3));
    }

    #[tokio::test]
    async fn pagination_instance_and_standard() {
        let page = |n: usize, from: usize| {
            let items: Vec<Value> = (from..from + n)
                .map(|i| serde_json::json!({"id": i}))
                .collect();
            serde_json::json!({ "servers": items }).to_string()
        };
        let mock = Mock::start(vec![
            Reply::json(200, &page(100, 0)).header("X-Total-Count", "150"),
            Reply::json(200, &page(50, 100)).header("X-Total-Count", "150"),
        ])
        .await;
        let all: Vec<Value> = client(&mock)
            .list_all("/s", &[("tags", "t".into())], "servers", Paging::Instance)
            .await
            .unwrap();
        assert_eq!(all.len(), 150);
        let seen = mock.seen();
        assert_eq!(seen[0].query, "tags=t&per_page=100&page=1");
        assert_eq!(seen[1].query, "tags=t&per_page=100&page=2");

        let mock = Mock::start(vec![
            Reply::json(200, r#"{"volumes":[{"id":1},{"id":2}],"total_count":3}"#),
            Reply::json(200, r#"{"volumes":[{"id":3}],"total_count":3}"#),
        ])
        .await;
        let all: Vec<Value> = client(&mock)
            .list_all("/v", &[], "volumes", Paging::Standard)
            .await
            .unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(mock.seen()[1].query, "page_size=100&page=2");
    }

    #[tokio::test]
    async fn decode_errors_name_the_field() {
        let mock = Mock::start(vec![Reply::json(200, r#"{"servers":[{"id":5}]}"#)]).await;
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct S {
            id: String,
        }
        let e = client(&mock)
            .list_all::<S>("/s", &[], "servers", Paging::Instance)
            .await
            .unwrap_err();
        assert!(matches!(e, ScwError::Decode { .. }));
        assert!(
            e.to_string().contains("servers[0]: id: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn bad_urls_and_segments_refused() {
        assert!(Client::new("ftp://x", Secret::new("k")).is_err());
        assert!(Client::new("not a url", Secret::new("k")).is_err());
        assert!(Client::new("https://api.scaleway.com", Secret::new("")).is_err());
        assert!(seg("id", "").is_err());
        assert!(seg("id", "a/b").is_err());
        assert!(seg("id", "11111111-2222-3333-4444-555555555555").is_ok());
        let c = Client::new(
            "https://api.scaleway.com",
            Secret::new("SCW-SECRET-TOKEN-1234"),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("SCW-SECRET"));
    }

    #[test]
    fn retry_after_forms() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(RETRY_AFTER, v.parse().unwrap());
            retry_after(&m)
        };
        assert_eq!(h("2"), Some(Duration::from_secs(2)));
        assert_eq!(h("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(h("86400"), Some(MAX_RETRY_AFTER));
        // An HTTP date or garbage falls back to the backoff.
        assert_eq!(h("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(h("-1"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 6,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        for _ in 0..20 {
            let b1 = p.backoff(1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100));
            let b3 = p.backoff(3);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400));
            assert!(p.backoff(30) <= Duration::from_millis(1000));
        }
    }
}
