//! The metadata service, seen from inside an instance
//! (`http://169.254.42.42`): who am I (`/conf`), my user data, boot
//! check-in.
//!
//! The service only serves user data to a TCP source port below 1024 (a
//! root process): those calls go over a minimal hand-written HTTP/1.1
//! exchange on a socket bound to such a port first. `/conf` and `/state`
//! have no such rule and use reqwest.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::client::RetryPolicy;
use super::error::ScwError;
use super::zone::Zone;

/// Where the metadata service answers inside an instance.
pub const DEFAULT_METADATA_URL: &str = "http://169.254.42.42";

/// The largest answer read over the raw connection.
const MAX_ANSWER: u64 = 16 << 20;
const RAW_TIMEOUT: Duration = Duration::from_secs(30);

/// What `/conf?format=json` says about this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataConf {
    /// The server's UUID.
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub commercial_type: String,
    pub project: String,
    pub tags: Vec<String>,
    /// From `zone`, else `location.zone_id`; `None` if neither is given.
    pub zone: Option<String>,
}

impl MetadataConf {
    /// The zone as a [`Zone`]; an error if absent or unknown.
    pub fn instance_zone(&self) -> Result<Zone, ScwError> {
        match &self.zone {
            Some(z) => z.parse(),
            None => Err(ScwError::Invalid(
                "the metadata service did not say which zone this instance is in".into(),
            )),
        }
    }
}

#[derive(Deserialize)]
struct ConfWire {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    commercial_type: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    location: Option<LocationWire>,
}

#[derive(Deserialize)]
struct LocationWire {
    #[serde(default)]
    zone_id: Option<String>,
}

/// A metadata service client.
#[derive(Clone, Debug)]
pub struct Metadata {
    http: reqwest::Client,
    base: String,
    /// For the raw calls: where to connect, and the `Host` header.
    host: url::Host<String>,
    port: u16,
    host_header: String,
    retry: RetryPolicy,
}

impl Metadata {
    /// A client for `base_url` (normally [`DEFAULT_METADATA_URL`]).
    pub fn new(base_url: &str) -> Result<Metadata, ScwError> {
        let bad = |why: &str| ScwError::Invalid(format!("bad metadata URL {base_url:?}: {why}"));
        let url = url::Url::parse(base_url).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "http" {
            return Err(bad("the metadata service speaks plain http"));
        }
        let host = url.host().ok_or_else(|| bad("no host"))?.to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        // A link-local service: never through an HTTP(S)_PROXY.
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(RAW_TIMEOUT)
            .build()
            .map_err(|e| ScwError::Invalid(format!("cannot build an HTTP client: {e}")))?;
        Ok(Metadata {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            host,
            port,
            host_header,
            retry: RetryPolicy {
                attempts: 4,
                base_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(4),
            },
        })
    }

    /// The same client with another retry policy (for no answer or a 5xx).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Metadata {
        self.retry = RetryPolicy {
            attempts: policy.attempts.max(1),
            ..policy
        };
        self
    }

    /// This instance's identity: `GET /conf?format=json`.
    pub async fn conf(&self) -> Result<MetadataConf, ScwError> {
        let call = "metadata GET /conf";
        let body = self
            .retrying(call, || async {
                let resp = self
                    .http
                    .get(format!("{}/conf", self.base))
                    .query(&[("format", "json")])
                    .send()
                    .await
                    .map_err(|e| ScwError::transport(call, e))?;
                let status = resp.status().as_u16();
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| ScwError::transport(call, e))?;
                Ok((status, body.to_vec()))
            })
            .await?;
        let w: ConfWire = super::client::decode(call, &body)?;
        let zone = w
            .zone
            .filter(|z| !z.is_empty())
            .or_else(|| w.location.and_then(|l| l.zone_id))
            .filter(|z| !z.is_empty());
        Ok(MetadataConf {
            id: w.id,
            name: w.name,
            hostname: w.hostname,
            commercial_type: w.commercial_type,
            project: w.project,
            tags: w.tags,
            zone,
        })
    }

    /// Tells Scaleway the instance booted: `PATCH /state {"state_detail":"booted"}`.
    pub async fn check_in_booted(&self) -> Result<(), ScwError> {
        let call = "metadata PATCH /state";
        self.retrying(call, || async {
            let resp = self
                .http
                .patch(format!("{}/state", self.base))
                .json(&json!({ "state_detail": "booted" }))
                .send()
                .await
                .map_err(|e| ScwError::transport(call, e))?;
            let status = resp.status().as_u16();
            let body = resp
                .bytes()
                .await
                .map_err(|e| ScwError::transport(call, e))?;
            Ok((status, body.to_vec()))
        })
        .await
        .map(drop)
    }

    /// The user data `key` (e.g. `cloud-init`), or `None` if unset.
    pub async fn user_data(&self, key: &str) -> Result<Option<String>, ScwError> {
        let key = super::client::seg("user data key", key)?;
        let call = format!("metadata GET /user_data/{key}");
        match self
            .raw_retrying(&call, "GET", &format!("/user_data/{key}"))
            .await
        {
            Ok(body) => String::from_utf8(body)
                .map(Some)
                .map_err(|_| ScwError::decode(&call, "the user data is not UTF-8")),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes the user data `key` (e.g. the one holding a run's secrets,
    /// once read); already absent is success.
    pub async fn delete_user_data(&self, key: &str) -> Result<(), ScwError> {
        let key = super::client::seg("user data key", key)?;
        let call = format!("metadata DELETE /user_data/{key}");
        match self
            .raw_retrying(&call, "DELETE", &format!("/user_data/{key}"))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The names of the instance's user data keys: `GET /user_data?format=json`.
    pub async fn user_data_keys(&self) -> Result<Vec<String>, ScwError> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Keys {
            Wrapped { user_data: Vec<String> },
            Bare(Vec<String>),
        }
        let call = "metadata GET /user_data";
        let body = self
            .raw_retrying(call, "GET", "/user_data?format=json")
            .await?;
        Ok(match super::client::decode::<Keys>(call, &body)? {
            Keys::Wrapped { user_data } => user_data,
            Keys::Bare(keys) => keys,
        })
    }

    /// Runs `attempt` (status and body) until a non-retryable outcome; a
    /// 2xx body is returned, another status the typed error.
    async fn retrying<F, Fut>(&self, call: &str, mut attempt: F) -> Result<Vec<u8>, ScwError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(u16, Vec<u8>), ScwError>>,
    {
        let mut failed = 0;
        loop {
            let error = match attempt().await {
                Ok((status, body)) if (200..300).contains(&status) => return Ok(body),
                Ok((status, body)) => {
                    ScwError::from_answer(call, status, &String::from_utf8_lossy(&body))
                }
                Err(e) => e,
            };
            failed += 1;
            let again = matches!(error, ScwError::Transport { .. })
                || matches!(error, ScwError::Api { status, .. } if status == 429 || status >= 500);
            if !again || failed >= self.retry.attempts {
                return Err(error);
            }
            tracing::warn!(
                "{error}; attempt {failed} of {}, retrying",
                self.retry.attempts
            );
            tokio::time::sleep(self.retry.backoff(failed)).await;
        }
    }

    async fn raw_retrying(
        &self,
        call: &str,
        method: &str,
        target: &str,
    ) -> Result<Vec<u8>, ScwError> {
        self.retrying(call, || self.raw(call, method, target)).await
    }

    /// One request from a privileged source port; the status and body.
    async fn raw(
        &self,
        call: &str,
        method: &str,
        target: &str,
    ) -> Result<(u16, Vec<u8>), ScwError> {
        let mut stream = self.connect_privileged(call).await?;
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: plex-burst\r\nAccept: */*\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.host_header
        );
        let exchange = async {
            stream.write_all(request.as_bytes()).await?;
            let mut raw = Vec::new();
            (&mut stream)
                .take(MAX_ANSWER + 1)
                .read_to_end(&mut raw)
                .await?;
            Ok::<_, std::io::Error>(raw)
        };
        let raw = match tokio::time::timeout(RAW_TIMEOUT, exchange).await {
            Ok(Ok(raw)) => raw,
            Ok(Err(e)) => return Err(ScwError::transport(call, e)),
            Err(_) => return Err(ScwError::transport(call, "no answer within 30s")),
        };
        if raw.len() as u64 > MAX_ANSWER {
            return Err(ScwError::decode(
                call,
                format!("answer larger than {MAX_ANSWER} bytes"),
            ));
        }
        parse_response(&raw).map_err(|detail| ScwError::decode(call, detail))
    }

    /// A connection whose local port is below 1024: tries ports from a
    /// random start, skipping ones in use.
    async fn connect_privileged(&self, call: &str) -> Result<TcpStream, ScwError> {
        let target = self.resolve(call).await?;
        let start: u16 = rand::random_range(1..=1023);
        let mut last_busy = None;
        for i in 0..1023u16 {
            let port = 1 + (start - 1 + i) % 1023;
            let (socket, any) = match target {
                SocketAddr::V4(_) => (TcpSocket::new_v4(), IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                SocketAddr::V6(_) => (TcpSocket::new_v6(), IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            };
            let socket = socket.map_err(|e| ScwError::transport(call, e))?;
            match socket.bind(SocketAddr::new(any, port)) {
                Ok(()) => {}
                Err(e) if busy(&e) => {
                    last_busy = Some(e);
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                    return Err(ScwError::NotPrivileged {
                        call: call.to_string(),
                        detail: e.to_string(),
                    });
                }
                Err(e) => return Err(ScwError::transport(call, e)),
            }
            match tokio::time::timeout(Duration::from_secs(5), socket.connect(target)).await {
                Ok(Ok(stream)) => return Ok(stream),
                // This port already has a connection to the same address
                // (e.g. in TIME_WAIT): take the next.
                Ok(Err(e)) if busy(&e) => last_busy = Some(e),
                Ok(Err(e)) => return Err(ScwError::transport(call, e)),
                Err(_) => return Err(ScwError::transport(call, "connect timed out after 5s")),
            }
        }
        let detail = last_busy.map(|e| e.to_string()).unwrap_or_default();
        Err(ScwError::transport(
            call,
            format!("every source port below 1024 is busy ({detail})"),
        ))
    }

    async fn resolve(&self, call: &str) -> Result<SocketAddr, ScwError> {
        match &self.host {
            url::Host::Ipv4(ip) => Ok(SocketAddr::new(IpAddr::V4(*ip), self.port)),
            url::Host::Ipv6(ip) => Ok(SocketAddr::new(IpAddr::V6(*ip), self.port)),
            url::Host::Domain(name) => tokio::net::lookup_host((name.as_str(), self.port))
                .await
                .map_err(|e| ScwError::transport(call, e))?
                .next()
                .ok_or_else(|| ScwError::transport(call, format!("{name} has no address"))),
        }
    }
}

fn busy(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::AddrInUse | ErrorKind::AddrNotAvailable)
}

/// Parses a whole HTTP/1.x answer read until the server closed: the status
/// and the body (Content-Length, chunked, or up to the end). Interim 1xx
/// answers are skipped.
fn parse_response(mut raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    loop {
        let end = find(raw, b"\r\n\r\n").ok_or("the answer has no complete header")?;
        let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the header is not text")?;
        let rest = &raw[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let code = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") || code.len() != 3 {
            return Err(format!("bad status line {status_line:?}"));
        }
        let status: u16 = code
            .parse()
            .map_err(|_| format!("bad status line {status_line:?}"))?;
        if (100..200).contains(&status) {
            raw = rest;
            continue;
        }
        let mut length: Option<usize> = None;
        let mut chunked = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!("bad header line {line:?}"));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse()
                        .map_err(|_| format!("bad Content-Length {value:?}"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            dechunk(rest)?
        } else if let Some(n) = length {
            if rest.len() < n {
                return Err(format!(
                    "the answer broke off: {} of {n} body bytes",
                    rest.len()
                ));
            }
            rest[..n].to_vec()
        } else {
            rest.to_vec()
        };
        return Ok((status, body));
    }
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = find(data, b"\r\n").ok_or("a chunk size line is cut")?;
        let line = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let hex = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size {line:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            // Trailers, if any, are ignored.
            return Ok(body);
        }
        if data.len() < size + 2 || &data[size..size + 2] != b"\r\n" {
            return Err("a chunk is cut".into());
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::super::mock::{Mock, Reply};
    use super::*;
    use tokio::net::TcpListener;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// A one-connection HTTP server that records the request line and the
    /// peer port, then sends `answer` and closes.
    async fn raw_server(answer: &'static [u8]) -> (String, tokio::task::JoinHandle<(u16, String)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = tokio::spawn(async move {
            let (mut sock, peer) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while find(&req, b"\r\n\r\n").is_none() {
                let n = sock.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before finishing its request");
                req.extend_from_slice(&buf[..n]);
            }
            sock.write_all(answer).await.unwrap();
            sock.shutdown().await.unwrap();
            (peer.port(), String::from_utf8(req).unwrap())
        });
        (url, handle)
    }

    #[tokio::test]
    async fn user_data_comes_from_a_privileged_port() {
        let (url, server) = raw_server(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
              7\r\n#cloud-\r\n7;ext=1\r\nconfig\n\r\n0\r\n\r\n",
        )
        .await;
        let md = Metadata::new(&url).unwrap();
        let result = md.user_data("cloud-init").await;
        if !is_root() {
            assert!(
                matches!(result, Err(ScwError::NotPrivileged { .. })),
                "{result:?}"
            );
            server.abort();
            return;
        }
        assert_eq!(result.unwrap().as_deref(), Some("#cloud-config\n"));
        let (port, request) = server.await.unwrap();
        assert!(port < 1024, "source port {port}");
        let host = url.trim_start_matches("http://");
        assert!(
            request.starts_with(&format!(
                "GET /user_data/cloud-init HTTP/1.1\r\nHost: {host}\r\n"
            )),
            "{request}"
        );
        assert!(request.contains("Connection: close\r\n"));
    }

    #[tokio::test]
    async fn missing_key_is_none_and_delete_and_keys() {
        if !is_root() {
            return;
        }
        let (url, server) =
            raw_server(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found").await;
        assert_eq!(
            Metadata::new(&url)
                .unwrap()
                .user_data("nope")
                .await
                .unwrap(),
            None
        );
        server.await.unwrap();

        let (url, server) = raw_server(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        Metadata::new(&url)
            .unwrap()
            .delete_user_data("secrets")
            .await
            .unwrap();
        let (port, request) = server.await.unwrap();
        assert!(port < 1024);
        assert!(
            request.starts_with("DELETE /user_data/secrets HTTP/1.1\r\n"),
            "{request}"
        );

        let (url, server) = raw_server(
            b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{\"user_data\": [\"cloud-init\", \"secrets\"]}",
        )
        .await;
        let keys = Metadata::new(&url).unwrap().user_data_keys().await.unwrap();
        assert_eq!(keys, ["cloud-init", "secrets"]);
        let (_, request) = server.await.unwrap();
        assert!(
            request.starts_with("GET /user_data?format=json HTTP/1.1\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn refusal_is_quoted() {
        if !is_root() {
            return;
        }
        let (url, server) = raw_server(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 29\r\n\r\n{\"message\":\"privileged only\"}",
        )
        .await;
        let e = Metadata::new(&url)
            .unwrap()
            .user_data("cloud-init")
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Scaleway refused metadata GET /user_data/cloud-init (403): privileged only"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn conf_zone_from_location_and_check_in() {
        let mock = Mock::start(vec![
            Reply::json(
                200,
                r#"{"id":"srv-1","name":"run","hostname":"run","commercial_type":"POP2-HC-16C-32G",
                    "project":"p","tags":["plex-burst"],"state":"running",
                    "location":{"zone_id":"fr-par-2","platform_id":"14"},"volumes":{}}"#,
            ),
            Reply::json(
                200,
                r#"{"id":"srv-2","zone":"nl-ams-1","location":{"zone_id":"fr-par-2"}}"#,
            ),
            Reply::text(200, ""),
        ])
        .await;
        let md = Metadata::new(&mock.url).unwrap();
        let conf = md.conf().await.unwrap();
        assert_eq!(conf.id, "srv-1");
        assert_eq!(conf.zone.as_deref(), Some("fr-par-2"));
        assert_eq!(conf.instance_zone().unwrap().as_str(), "fr-par-2");
        assert_eq!(conf.tags, ["plex-burst"]);
        assert_eq!(md.conf().await.unwrap().zone.as_deref(), Some("nl-ams-1"));
        md.check_in_booted().await.unwrap();
        let seen = mock.seen();
        assert_eq!(
            (seen[0].path.as_str(), seen[0].query.as_str()),
            ("/conf", "format=json")
        );
        assert_eq!(
            (seen[2].method.as_str(), seen[2].path.as_str()),
            ("PATCH", "/state")
        );
        assert_eq!(
            seen[2].json(),
            serde_json::json!({"state_detail": "booted"})
        );
    }

    #[test]
    fn parses_answers() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA").unwrap(),
            (200, b"abc".to_vec())
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 201 Created\r\n\r\nrest")
                .unwrap(),
            (201, b"rest".to_vec())
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\na\r\n0123456789\r\n0\r\nX: y\r\n\r\n")
                .unwrap(),
            (200, b"0123456789".to_vec())
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
                .is_err()
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Len").is_err());
    }

    #[test]
    fn bad_urls() {
        assert!(Metadata::new("https://169.254.42.42").is_err());
        assert!(Metadata::new("nope").is_err());
        let md = Metadata::new("http://[fd00:42::42]").unwrap();
        assert_eq!(md.host_header, "[fd00:42::42]");
        assert_eq!(md.port, 80);
    }
}
