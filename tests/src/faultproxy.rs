//! A loopback TCP proxy in front of an S3 server that injects the failures
//! real networks and real object stores produce: connection resets (before
//! the answer, or in the middle of a body), 500 / 503 SlowDown answers, and
//! stalls longer than a client's timeout.
//!
//! It reads each request head to decide, and asks the upstream for
//! `Connection: close`, so every connection carries exactly one request and
//! counting connections counts requests. It runs on a thread of its own
//! and stops, with all its connections, when dropped.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// What to do to a request that the plan picks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Reset the connection instead of answering.
    ResetBeforeResponse,
    /// Forward the answer's head and this many body bytes, then end the
    /// stream and reset. The bytes go out before the end, so the client
    /// receives exactly this many (a bare reset could discard some unread).
    ResetAfterBody(u64),
    /// Answer this status (500 or 503) with an S3 XML error body.
    Status(u16),
    /// Hold the request unanswered this long, then close.
    Stall(Duration),
    /// Forward the answer's head and this many body bytes, then send
    /// nothing more and hold the connection open (a stall mid-body).
    StallAfterBody(u64),
}

/// Which of the matching requests get the fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum When {
    Always,
    FirstN(u32),
    EveryKth(u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub fault: Fault,
    pub when: When,
    /// Only requests whose request line contains this (e.g. `"GET "`,
    /// `"partNumber="`); all requests when `None`.
    pub matching: Option<String>,
}

impl Plan {
    pub fn new(fault: Fault, when: When) -> Self {
        Plan {
            fault,
            when,
            matching: None,
        }
    }

    pub fn matching(mut self, text: &str) -> Self {
        self.matching = Some(text.to_string());
        self
    }
}

/// Counters since the last `set`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u32,
    pub matched: u32,
    pub injected: u32,
}

#[derive(Default)]
struct State {
    plan: Option<Plan>,
    counts: Counts,
}

impl State {
    fn decide(&mut self, request_line: &str) -> Option<Fault> {
        self.counts.requests += 1;
        let plan = self.plan.as_ref()?;
        if plan
            .matching
            .as_ref()
            .is_some_and(|m| !request_line.contains(m.as_str()))
        {
            return None;
        }
        self.counts.matched += 1;
        let n = self.counts.matched;
        let hit = match plan.when {
            When::Always => true,
            When::FirstN(first) => n <= first,
            When::EveryKth(k) => k > 0 && n.is_multiple_of(k),
        };
        hit.then(|| {
            self.counts.injected += 1;
            plan.fault.clone()
        })
    }
}

pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free loopback port, forwarding to `upstream`, no fault set.
    pub fn start(upstream: SocketAddr) -> io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("a valid address"), upstream)
    }

    pub fn start_on(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Self> {
        let std_listener = std::net::TcpListener::bind(listen)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let (shutdown, stop) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = state.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                // Dropping the runtime at the end of this thread ends every connection.
                runtime.block_on(async move {
                    match TcpListener::from_std(std_listener) {
                        Ok(listener) => serve(listener, upstream, shared, stop).await,
                        Err(e) => eprintln!("fault proxy: cannot listen: {e}"),
                    }
                });
            })?;
        Ok(FaultProxy {
            addr,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the plan (`None`: forward everything) and resets the counters.
    pub fn set(&self, plan: Option<Plan>) {
        let mut state = lock(&self.state);
        state.plan = plan;
        state.counts = Counts::default();
    }

    pub fn counts(&self) -> Counts {
        lock(&self.state).counts
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    let state = state.clone();
                    connections.spawn(async move {
                        let _ = handle(client, upstream, &state).await;
                    });
                }
                Err(e) => eprintln!("fault proxy: accept failed: {e}"),
            },
            // Reap finished connections so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Largest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;

async fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    state: &Mutex<State>,
) -> io::Result<()> {
    let Some((head, rest)) = read_head(&mut client).await? else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&head).into_owned();
    let request_line = text.lines().next().unwrap_or_default().to_string();
    let fault = lock(state).decide(&request_line);
    match fault {
        Some(Fault::ResetBeforeResponse) => {
            reset(client);
            Ok(())
        }
        Some(Fault::Status(status)) => answer_error(client, &text, rest.len(), status).await,
        Some(Fault::Stall(duration)) => {
            tokio::time::sleep(duration).await;
            Ok(())
        }
        Some(Fault::ResetAfterBody(n)) => {
            forward(client, upstream, &text, &rest, Some(Cut::Reset(n))).await
        }
        Some(Fault::StallAfterBody(n)) => {
            forward(client, upstream, &text, &rest, Some(Cut::Stall(n))).await
        }
        None => forward(client, upstream, &text, &rest, None).await,
    }
}

/// Reads up to the blank line ending a head; returns the head and the bytes
/// read past it. `None` if the peer closed first.
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok(Some((buf, rest)));
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The same head with `Connection: close`, so the upstream ends the
/// connection after one answer.
fn one_shot_head(head: &str) -> String {
    let mut out = String::with_capacity(head.len() + 20);
    for line in head.trim_end_matches("\r\n").split("\r\n") {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Where an answer's body is cut short, and how.
#[derive(Clone, Copy)]
enum Cut {
    Reset(u64),
    Stall(u64),
}

async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    head: &str,
    rest: &[u8],
    cut: Option<Cut>,
) -> io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(one_shot_head(head).as_bytes()).await?;
    server.write_all(rest).await?;
    let (mut client_rd, mut client_wr) = client.split();
    let (mut server_rd, mut server_wr) = server.split();
    // The request side may stay open until the client has read the answer,
    // so the answer alone decides when the exchange is over.
    let upload = async {
        let _ = tokio::io::copy(&mut client_rd, &mut server_wr).await;
        let _ = server_wr.shutdown().await;
        std::future::pending::<()>().await
    };
    let download = async {
        match cut {
            None => {
                tokio::io::copy(&mut server_rd, &mut client_wr).await?;
                client_wr.shutdown().await?;
                Ok(false)
            }
            Some(Cut::Reset(limit)) => copy_then_cut(&mut server_rd, &mut client_wr, limit).await,
            Some(Cut::Stall(limit)) => {
                copy_upto(&mut server_rd, &mut client_wr, limit).await?;
                // Held until the proxy stops.
                std::future::pending().await
            }
        }
    };
    let cut = tokio::select! {
        cut = download => cut,
        () = upload => unreachable!("the upload side never ends on its own"),
    };
    if cut? {
        // Let the client take the bytes and see the end; then reset.
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        reset(client);
    }
    Ok(())
}

/// Forwards the answer's head and `limit` body bytes, then ends the
/// stream. True when it stopped short of the end (the caller then resets
/// the connection).
async fn copy_then_cut(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    limit: u64,
) -> io::Result<bool> {
    let short = copy_upto(from, to, limit).await?;
    to.shutdown().await?;
    Ok(short)
}

/// Forwards the answer's head and at most `limit` body bytes. True when
/// it stopped short of the end.
async fn copy_upto(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    limit: u64,
) -> io::Result<bool> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut head = Vec::new();
    let mut body_sent: Option<u64> = None;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        let mut data = &buf[..n];
        if body_sent.is_none() {
            head.extend_from_slice(data);
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                if head.len() > MAX_HEAD {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "answer head too large",
                    ));
                }
                continue;
            };
            to.write_all(&head[..end + 4]).await?;
            let skip = n - (head.len() - (end + 4));
            data = &buf[skip..n];
            body_sent = Some(0);
        }
        let sent = body_sent.unwrap_or(0);
        let room = limit.saturating_sub(sent);
        if (data.len() as u64) > room {
            to.write_all(&data[..room as usize]).await?;
            return Ok(true);
        }
        to.write_all(data).await?;
        body_sent = Some(sent + data.len() as u64);
    }
}

/// Answers an S3-style error after reading the request body (so the client
/// is not cut off while sending it).
async fn answer_error(
    mut client: TcpStream,
    head: &str,
    already: usize,
    status: u16,
) -> io::Result<()> {
    let expects_continue =
        header(head, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let length: usize = header(head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if !expects_continue && length > already {
        let mut left = (length - already) as u64;
        let mut buf = vec![0u8; 64 * 1024];
        // A hang guard only: a client that stops sending still gets its answer.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while left > 0 {
                let n = client.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                left = left.saturating_sub(n as u64);
            }
            Ok::<_, io::Error>(())
        })
        .await;
    }
    let (reason, code, message) = match status {
        503 => (
            "Service Unavailable",
            "SlowDown",
            "Please reduce your request rate.",
        ),
        500 => (
            "Internal Server Error",
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
        _ => ("Error", "InternalError", "Injected by the fault proxy."),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
    );
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(answer.as_bytes()).await?;
    client.shutdown().await
}

/// Closes with a TCP reset rather than a clean end: a zero linger makes the
/// kernel send RST on close. (tokio deprecates `set_linger` because a
/// non-zero linger blocks on close; zero never does.)
#[allow(deprecated)]
fn reset(stream: TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// `FAULT[,first=N|,every=K][,match=TEXT]` where FAULT is `none`, `reset`,
/// `reset-after=BYTES`, `500`, `503`, `stall=SECONDS` or
/// `stall-after=BYTES`. Used by the
/// `s3-fault-proxy` binary.
pub fn parse_plan(spec: &str) -> Result<Option<Plan>, String> {
    // Only line ends are stripped: a `match=` text may end in a space (`GET `).
    let mut fields = spec.trim_start().trim_end_matches(['\n', '\r']).split(',');
    let fault = match fields.next().unwrap_or_default().trim() {
        "none" | "" => return Ok(None),
        "reset" => Fault::ResetBeforeResponse,
        "500" => Fault::Status(500),
        "503" => Fault::Status(503),
        other => match other.split_once('=') {
            Some(("reset-after", n)) => Fault::ResetAfterBody(number(n)?),
            Some(("stall", secs)) => Fault::Stall(Duration::from_secs(number(secs)?)),
            Some(("stall-after", n)) => Fault::StallAfterBody(number(n)?),
            _ => {
                return Err(format!(
                    "unknown fault {other:?} (none, reset, reset-after=N, 500, 503, stall=S, stall-after=N)"
                ));
            }
        },
    };
    let mut plan = Plan::new(fault, When::Always);
    for field in fields {
        match field.split_once('=') {
            Some(("first", n)) => plan.when = When::FirstN(number(n)? as u32),
            Some(("every", k)) => plan.when = When::EveryKth(number(k)? as u32),
            Some(("match", text)) => plan.matching = Some(text.to_string()),
            _ => {
                return Err(format!(
                    "unknown option {field:?} (first=N, every=K, match=TEXT)"
                ));
            }
        }
    }
    Ok(Some(plan))
}

fn number(text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requests={} matched={} injected={}",
            self.requests, self.matched, self.injected
        )
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_plan(s)?
            .map(|p| p.fault)
            .ok_or_else(|| "no fault given".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_from_the_command_line_form() {
        assert_eq!(parse_plan("none").unwrap(), None);
        assert_eq!(
            parse_plan("503,first=3").unwrap(),
            Some(Plan::new(Fault::Status(503), When::FirstN(3)))
        );
        assert_eq!(
            parse_plan("reset-after=1000,every=2,match=GET ").unwrap(),
            Some(Plan::new(Fault::ResetAfterBody(1000), When::EveryKth(2)).matching("GET "))
        );
        assert_eq!(
            parse_plan("stall-after=4096,first=1").unwrap(),
            Some(Plan::new(Fault::StallAfterBody(4096), When::FirstN(1)))
        );
        assert!(parse_plan("explode").is_err());
        assert!(parse_plan("500,often").is_err());
    }

    #[test]
    fn schedules_pick_the_right_requests() {
        let mut state = State {
            plan: Some(Plan::new(Fault::Status(500), When::EveryKth(3)).matching("GET ")),
            ..State::default()
        };
        let picked: Vec<bool> = (0..7)
            .map(|_| state.decide("GET /b/k HTTP/1.1").is_some())
            .collect();
        assert_eq!(picked, [false, false, true, false, false, true, false]);
        assert!(state.decide("PUT /b/k HTTP/1.1").is_none());
        assert_eq!(
            state.counts,
            Counts {
                requests: 8,
                matched: 7,
                injected: 2
            }
        );

        let mut state = State {
            plan: Some(Plan::new(Fault::ResetBeforeResponse, When::FirstN(2))),
            ..State::default()
        };
        let picked: Vec<bool> = (0..4)
            .map(|_| state.decide("HEAD / HTTP/1.1").is_some())
            .collect();
        assert_eq!(picked, [true, true, false, false]);
    }

    #[test]
    fn the_forwarded_head_asks_for_one_request_per_connection() {
        let head = "GET /b/k HTTP/1.1\r\nHost: x\r\nconnection: keep-alive\r\n\r\n";
        assert_eq!(
            one_shot_head(head),
            "GET /b/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
    }
}
