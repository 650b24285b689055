//! GDM ("good day mate"), Plex's local discovery: a client sends
//! `M-SEARCH * HTTP/1.0` to UDP 32414 (multicast 239.0.0.250 or straight to
//! the server) and each server answers, from that port, with an HTTP-like
//! header block (shape from python-plexapi's gdm.py: a `200 OK` first line,
//! then `Content-Type: plex/media-server`, `Resource-Identifier`, `Name`,
//! `Port`, `Updated-At`, `Version`). Answered only while `GdmEnabled` is
//! on, as real Plex does; a port already taken is logged and GDM stays off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::state::State;

/// Binds `addr` and answers searches until the server stops.
pub async fn spawn(state: Arc<State>, addr: SocketAddr, http_port: u16) {
    let socket = match tokio::net::UdpSocket::bind(addr).await {
        Ok(socket) => socket,
        Err(e) => {
            state.log.warn(format!(
                "GDM: cannot listen on udp {addr}: {e}; discovery off"
            ));
            return;
        }
    };
    state.log.info(format!("GDM: listening on udp {addr}"));
    tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        while !state.stopping.load(Ordering::SeqCst) {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            if !is_search(&buf[..n]) || !state.flag("GdmEnabled") {
                continue;
            }
            let answer = answer(&state, http_port);
            let _ = socket.send_to(answer.as_bytes(), from).await;
        }
    });
}

fn is_search(datagram: &[u8]) -> bool {
    datagram.starts_with(b"M-SEARCH * HTTP/1.")
}

fn answer(state: &State, http_port: u16) -> String {
    let (id, name) = {
        let prefs = state.prefs();
        let name = prefs
            .get("FriendlyName")
            .filter(|n| !n.is_empty())
            .unwrap_or("plex-double")
            .to_string();
        (prefs.machine_identifier().to_string(), name)
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    format!(
        "HTTP/1.0 200 OK\r\nContent-Type: plex/media-server\r\nResource-Identifier: {id}\r\n\
         Name: {name}\r\nPort: {http_port}\r\nUpdated-At: {now}\r\nVersion: {}\r\n\r\n",
        state.config.version
    )
}
