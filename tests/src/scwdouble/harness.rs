//! Starting the Scaleway double from tests: its own process on free
//! loopback ports (API and, when asked, metadata), waited for until it
//! answers, killed on drop. Also a small blocking HTTP client that can
//! send bodies and, for the metadata service's user data, connect from a
//! privileged source port (tests run as root).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::ids::uuid_v4;
use crate::bins::workspace_bin;
pub use crate::plexdouble::harness::{Reply, free_port, wait_for};

/// How to start the double.
#[derive(Debug, Clone)]
pub struct ScwOptions {
    pub transition_delay: Duration,
    pub quota_servers: Option<u64>,
    pub quota_volumes_gb: Option<u64>,
    /// A shell command run each time a server becomes running.
    pub on_poweron: Option<String>,
    /// Whether to start the metadata service too.
    pub metadata: bool,
    /// More command-line arguments.
    pub args: Vec<String>,
    /// `(access key, secret key)` pairs handed out, in order, by
    /// `POST /api-keys` (a test world's S3 server accepts them too).
    pub api_key_pool: Vec<(String, String)>,
}

impl Default for ScwOptions {
    fn default() -> ScwOptions {
        ScwOptions {
            transition_delay: Duration::from_millis(200),
            quota_servers: None,
            quota_volumes_gb: None,
            on_poweron: None,
            metadata: false,
            args: Vec::new(),
            api_key_pool: Vec::new(),
        }
    }
}

pub struct ScwDouble {
    child: Child,
    stderr: tempfile::NamedTempFile,
    api_url: String,
    metadata_url: Option<String>,
    secret_key: String,
    organization_id: String,
    project_id: String,
}

impl ScwDouble {
    /// Starts `scw-double api` with a fresh admin key, organization and
    /// project, and waits until it answers.
    pub fn start(opts: ScwOptions) -> ScwDouble {
        let api = format!("127.0.0.1:{}", free_port());
        let metadata = opts.metadata.then(|| format!("127.0.0.1:{}", free_port()));
        let (secret_key, organization_id, project_id) = (uuid_v4(), uuid_v4(), uuid_v4());
        let mut args = vec![
            "api".to_string(),
            "--listen".into(),
            api.clone(),
            "--organization-id".into(),
            organization_id.clone(),
            "--project-id".into(),
            project_id.clone(),
            "--transition-delay".into(),
            format!("{}ms", opts.transition_delay.as_millis()),
        ];
        if let Some(addr) = &metadata {
            args.extend(["--metadata-listen".into(), addr.clone()]);
        }
        if let Some(n) = opts.quota_servers {
            args.extend(["--quota-servers".into(), n.to_string()]);
        }
        if let Some(n) = opts.quota_volumes_gb {
            args.extend(["--quota-volumes-gb".into(), n.to_string()]);
        }
        if let Some(command) = &opts.on_poweron {
            args.extend(["--on-poweron".into(), command.clone()]);
        }
        args.extend(opts.args.iter().cloned());

        let stderr = tempfile::NamedTempFile::new().expect("a temporary file");
        let mut command = Command::new(workspace_bin("scw-double"));
        // Only what the test sets: nothing inherited configures the double.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SCW_DOUBLE_") {
                command.env_remove(key);
            }
        }
        // The key goes through the environment, not argv (ps shows argv).
        command
            .args(&args)
            .env("SCW_DOUBLE_SECRET_KEY", &secret_key)
            .env(
                "SCW_DOUBLE_API_KEY_POOL",
                opts.api_key_pool
                    .iter()
                    .map(|(a, s)| format!("{a}:{s}"))
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.reopen().expect("the stderr file"));
        let child = command.spawn().expect("scw-double starts");
        let double = ScwDouble {
            child,
            stderr,
            api_url: format!("http://{api}"),
            metadata_url: metadata.map(|m| format!("http://{m}")),
            secret_key,
            organization_id,
            project_id,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let api_up = http("GET", &double.url("/__double/state"), &[], None)
                .is_ok_and(|r| r.status == 200);
            let metadata_up = double
                .metadata_url
                .as_ref()
                .is_none_or(|url| http("GET", &format!("{url}/conf"), &[], None).is_ok());
            if api_up && metadata_up {
                return double;
            }
            assert!(
                Instant::now() < deadline,
                "scw-double did not answer; stderr:\n{}",
                double.stderr()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The metadata service's base URL, when started with `metadata`.
    pub fn metadata_url(&self) -> Option<&str> {
        self.metadata_url.as_deref()
    }

    /// The admin secret key (every permission).
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    pub fn organization_id(&self) -> &str {
        &self.organization_id
    }

    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.api_url)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// An API call with the admin key; `body` is sent as JSON.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        self.api_as(&self.secret_key, method, path, body)
    }

    /// An API call with `secret` as `X-Auth-Token`.
    pub fn api_as(&self, secret: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let text = body.map(Value::to_string);
        let mut headers = vec![("X-Auth-Token", secret)];
        if text.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        http(
            method,
            &self.url(path),
            &headers,
            text.as_deref().map(str::as_bytes),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}; stderr:\n{}", self.stderr()))
    }

    /// Every call recorded so far, in order.
    pub fn calls(&self) -> Vec<Value> {
        let reply = self.api("GET", "/__double/calls", None);
        assert_eq!(reply.status, 200, "{}", reply.body);
        serde_json::from_str(&reply.body).expect("a JSON array")
    }

    /// The whole state, without secrets.
    pub fn state(&self) -> Value {
        let reply = self.api("GET", "/__double/state", None);
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    /// The next `times` calls matching get `status` (`method` "*" = any).
    pub fn fail(&self, method: &str, path_prefix: &str, status: u16, times: u32) {
        let method = (method != "*").then_some(method);
        let rule =
            json!({"method": method, "path_prefix": path_prefix, "status": status, "times": times});
        let reply = self.api("POST", "/__double/fail", Some(&rule));
        assert_eq!(reply.status, 204, "{}", reply.body);
    }

    /// The guest powers itself off (the server stays running and billed).
    pub fn guest_halt(&self, server_id: &str) {
        let reply = self.api(
            "POST",
            &format!("/__double/servers/{server_id}/guest-halt"),
            None,
        );
        assert_eq!(reply.status, 204, "{}", reply.body);
    }

    /// The metadata service answers for this server from now on.
    pub fn bind_metadata(&self, server_id: &str) {
        let body = json!({ "server_id": server_id });
        let reply = self.api("POST", "/__double/metadata/bind", Some(&body));
        assert_eq!(reply.status, 204, "{}", reply.body);
    }
}

impl Drop for ScwDouble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`).
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Reply> {
    let (addr, path) = split_url(url)?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    exchange(stream, method, addr, path, headers, body)
}

/// Like `http`, from a privileged source port (< 1024) as root's
/// processes on an instance do; the port used comes with the answer.
/// Ports taken (or still in TIME_WAIT) are skipped.
pub fn http_privileged(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<(Reply, u16)> {
    let (addr, path) = split_url(url)?;
    let start = rand::random_range(600..1000u16);
    let mut last = None;
    for port in (start..1024).chain(512..start) {
        match connect_from(addr, port) {
            Ok(stream) => return Ok((exchange(stream, method, addr, path, headers, body)?, port)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
                ) =>
            {
                last = Some(e)
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no privileged port free")))
}

/// A connection from 127.0.0.1:`port` (std cannot bind before connecting;
/// tokio's socket can).
fn connect_from(addr: SocketAddr, port: u16) -> std::io::Result<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
        let stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(addr)).await??;
        stream.into_std()
    })?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

fn split_url(url: &str) -> std::io::Result<(SocketAddr, &str)> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_string());
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid("only http:// URLs"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = host.parse().map_err(|_| invalid("host must be ip:port"))?;
    Ok((addr, path))
}

fn exchange(
    mut stream: TcpStream,
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Reply> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse(&raw).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad HTTP answer: {}", String::from_utf8_lossy(&raw)),
        )
    })
}

fn parse(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = unchunk(&body)?;
    }
    Some(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn unchunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}
