//! A double of the Scaleway APIs plex-burst uses (Instance, Block,
//! Marketplace, IAM) and of the instance metadata service, run as the
//! `scw-double` binary by tests and the demo in place of Scaleway.
//!
//! It follows `shared/reference/scaleway.md`, strictly: unknown or
//! missing body fields are 400s naming them, actions are refused in the
//! wrong state, keys made through IAM only do what their policies allow,
//! and states change asynchronously. A double that accepted anything
//! would prove nothing about the runner's client.
//!
//! Layout: `cli` (flags), `state` (the world), `catalogue` (zones, server
//! types), `auth` (keys and permission sets), `calls` (log, faults, auth
//! in front of every call), `body`/`query`/`errors`/`render`/`ids` (wire
//! shapes), `lifecycle` (delayed transitions, the poweron hook),
//! `instance`, `block`, `marketplace`, `iam`, `metadata`, `control`
//! (`/__double/*`), `harness` (starting it from tests).

pub mod auth;
pub mod block;
pub mod body;
pub mod calls;
pub mod catalogue;
pub mod cli;
pub mod control;
pub mod errors;
pub mod faults;
pub mod harness;
pub mod iam;
pub mod ids;
pub mod instance;
pub mod lifecycle;
pub mod marketplace;
pub mod metadata;
pub mod query;
pub mod render;
pub mod s3front;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::http::{StatusCode, Uri};

use cli::ApiArgs;
use errors::ScwError;
use state::{Config, Double, Shared};

/// The API routes behind the call log, faults and authentication.
pub fn api_router(double: Shared) -> Router {
    Router::new()
        .merge(instance::router())
        .merge(block::router())
        .merge(marketplace::router())
        .merge(iam::router())
        .merge(control::router())
        .fallback(|uri: Uri| async move {
            ScwError::other(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no API route {}", uri.path()),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            double.clone(),
            calls::gate,
        ))
        .with_state(double)
}

pub fn run(mut args: ApiArgs) -> Result<()> {
    anyhow::ensure!(
        args.secret_keys.iter().all(|k| ids::is_uuid(k)),
        "every --secret-key must be a UUID (values not shown: they are secrets)"
    );
    for key in &mut args.secret_keys {
        *key = key.to_ascii_lowercase();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: ApiArgs) -> Result<()> {
    let api = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let metadata = match args.metadata_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (metadata)"))?,
        ),
        None => None,
    };
    let url = |addr: SocketAddr| format!("http://{addr}");
    // Kept alive until the process ends: the hook's user-data files.
    let temporary = match &args.work_dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("cannot make a work folder")?),
    };
    let work_dir = match (&args.work_dir, &temporary) {
        (Some(dir), _) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.clone()
        }
        (None, Some(temp)) => temp.path().to_path_buf(),
        (None, None) => unreachable!("a temporary folder is made when none is given"),
    };
    let metadata_url = match &metadata {
        Some(listener) => Some(url(listener.local_addr()?)),
        None => None,
    };
    let double = Arc::new(Double::new(Config {
        organization_id: args.organization_id,
        project_id: args.project_id,
        admin_keys: args.secret_keys,
        delay: args.transition_delay,
        quota_servers: args.quota_servers,
        quota_volumes_gb: args.quota_volumes_gb,
        on_poweron: args.on_poweron,
        api_url: url(api.local_addr()?),
        metadata_url: metadata_url.clone(),
        work_dir,
        owner_access_keys: args.owner_access_keys,
    }));
    for pair in args.api_key_pool.iter().filter(|p| !p.is_empty()) {
        // Checked here, not by clap, whose errors would print the value.
        let Some((access, secret)) = pair.split_once(':') else {
            anyhow::bail!("--api-key-pool: an entry is not ACCESS:SECRET");
        };
        double
            .world()
            .key_pool
            .push_back((access.to_owned(), secret.to_owned()));
    }
    // Addresses only: the keys are secrets.
    eprintln!("scw-double: API on {}", double.config.api_url);
    if let Some(url) = &metadata_url {
        eprintln!("scw-double: metadata service on {url}");
    }

    if let (Some(front), Some(backend)) = (args.s3_front, args.s3_backend) {
        let listener = tokio::net::TcpListener::bind(front)
            .await
            .with_context(|| format!("cannot listen on {front} (S3 front)"))?;
        eprintln!("scw-double: S3 front on http://{front}, before {backend}");
        tokio::spawn(s3front::serve(double.clone(), listener, backend));
    }
    let shutdown = shutdown_signal();
    let api_server = axum::serve(api, api_router(double.clone()));
    match metadata {
        None => {
            api_server.with_graceful_shutdown(shutdown).await?;
        }
        Some(listener) => {
            let metadata_server = axum::serve(
                listener,
                metadata::router(double.clone())
                    .into_make_service_with_connect_info::<SocketAddr>(),
            );
            tokio::select! {
                result = api_server.into_future() => result?,
                result = metadata_server.into_future() => result?,
                () = shutdown => {}
            }
        }
    }
    drop(temporary);
    Ok(())
}

async fn shutdown_signal() {
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
}
