//! A minimal blocking HTTP/1.1 client for tests: exact statuses, any
//! header, any method, and (for the metadata service) a chosen source port.
//! One request per connection (`Connection: close`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub fn get(url: &str, headers: &[(&str, &str)]) -> std::io::Result<Reply> {
    request("GET", url, headers)
}

/// One request without a body.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> std::io::Result<Reply> {
    http(method, url, headers, None)
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
        match connect_from(addr, SocketAddr::from((Ipv4Addr::LOCALHOST, port))) {
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

/// Like `http`, from the loopback address `source` (127.0.0.0/8): another
/// guest, to a service that tells its callers by address.
pub fn http_from(
    source: Ipv4Addr,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Reply> {
    let (addr, path) = split_url(url)?;
    let stream = connect_from(addr, SocketAddr::from((source, 0)))?;
    exchange(stream, method, addr, path, headers, body)
}

/// A connection from `source` (std cannot bind before connecting; tokio's
/// socket can).
fn connect_from(addr: SocketAddr, source: SocketAddr) -> std::io::Result<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(source)?;
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
