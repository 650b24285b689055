//! The plex.tv double: `plex-double plextv`. One account (its token given
//! on the command line), claim tokens that expire and work once, the
//! devices (servers) claimed with them, and a record of every call for
//! tests (`GET /__double/calls`), of every token it issued
//! (`GET /__double/tokens`: what a test greps logs for) and of each claim
//! token's state (`GET /__double/claims`).

mod routes;

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::plexdouble::cli::PlexTvArgs;

pub struct PlexTvState {
    pub account_token: String,
    pub plex_pass: bool,
    pub username: String,
    pub claim_ttl: Duration,
    claims: Mutex<HashMap<String, Claim>>,
    devices: Mutex<Vec<Device>>,
    next_device_id: AtomicI64,
    calls: Mutex<Vec<Call>>,
    /// Every claim token and server token handed out, in order.
    issued: Mutex<Vec<String>>,
}

struct Claim {
    issued: Instant,
    used: bool,
}

impl Claim {
    fn expired(&self, ttl: Duration) -> bool {
        self.issued.elapsed() > ttl
    }
}

/// A server registered on the account by a claim.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: i64,
    pub name: String,
    pub client_identifier: String,
    /// The server's own token, as plex.tv issued it.
    pub token: String,
    pub created_at: i64,
}

/// One request as the double received it (token values redacted).
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn run(args: PlexTvArgs) -> Result<()> {
    anyhow::ensure!(
        !args.account_token.is_empty(),
        "--account-token must not be empty"
    );
    let state = Arc::new(PlexTvState {
        account_token: args.account_token,
        plex_pass: args.plex_pass,
        username: args.username,
        claim_ttl: args.claim_ttl,
        claims: Mutex::default(),
        devices: Mutex::default(),
        next_device_id: AtomicI64::new(1),
        calls: Mutex::default(),
        issued: Mutex::default(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        eprintln!("plex.tv double listening on {}", listener.local_addr()?);
        axum::serve(listener, routes::router(state))
            .with_graceful_shutdown(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return std::future::pending().await;
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            })
            .await?;
        Ok(())
    })
}
