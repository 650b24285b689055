//! The Plex Media Server double: `plex-double server`.
//!
//! Modules: `layout` (the app-support folder), `prefs` and `networks`
//! (Preferences.xml, `/:/prefs`, allowedNetworks), `log`, `db`, `library`
//! (sections), `scan` (the scanner), `trash` (unavailable and deleted
//! items), `analyze`, `butler` and `sonic` (background tasks), `gdm`
//! (local discovery), `startup` (the start-up window), `metadata` (the
//! update queue after scans), `activity`,
//! `work` and `scanner_process` (what a supervisor sees), `plextv_client`,
//! `routes` (HTTP), `state`.
//!
//! For tests and the bench, outside Plex's API: `GET /__double/db-writes`
//! answers `{"writes": N, "max_write_ms": X, "busy_retries": N}`, the
//! double's DB writes since start (or since `DELETE /__double/db-writes`),
//! the longest from asking for the write to its commit, and how often the
//! writer waited on a locked DB: what a reader of the live DB (a snapshot)
//! cost Plex's writes. The same line is logged at stop.

pub mod activity;
pub mod analyze;
pub mod butler;
pub mod db;
pub mod gdm;
pub mod items;
pub mod layout;
pub mod library;
pub mod log;
pub mod metadata;
pub mod networks;
pub mod plextv_client;
pub mod prefs;
pub mod refresh;
mod routes;
pub mod scan;
pub mod scanner_process;
pub mod sonic;
pub mod startup;
pub mod state;
pub mod trash;
pub mod work;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tokio::signal::unix::{SignalKind, signal};

use self::activity::Activities;
use self::butler::Butler;
use self::db::Db;
use self::layout::Layout;
use self::log::ServerLog;
use self::metadata::UpdateQueue;
use self::plextv_client::PlexTv;
use self::prefs::Preferences;
use self::scan::Queue;
use self::startup::Startup;
use self::state::{Config, State};
use crate::plexdouble::cli::ServerArgs;
use crate::plexdouble::faults::Faults;

/// How long a stop waits for workers before checkpointing anyway.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub fn run(args: ServerArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(args));
    // Hung header reads live on plain threads; nothing tokio owns blocks.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn serve(args: ServerArgs) -> Result<()> {
    let layout = Layout::new(&args.app_support);
    let db_created = layout.ensure()?;
    let mut prefs = Preferences::load_or_create(&layout.preferences, &args.pms_version)?;
    let allowed = args.allowed_networks.trim();
    if !allowed.is_empty() {
        networks::parse(allowed).map_err(|e| anyhow!("--allowed-networks: {e}"))?;
        prefs.set("allowedNetworks", allowed.to_string());
        prefs.save()?;
    }
    let log = ServerLog::open(&layout.log)?;
    log.info(format!(
        "Plex Media Server v{} (plex-double) starting, pid {}, app support {}",
        args.pms_version,
        std::process::id(),
        layout.dir.display()
    ));
    if db_created {
        log.info(format!(
            "Created an empty library DB at {}",
            layout.library_db.display()
        ));
    }
    for fault in &args.faults {
        log.warn(format!("fault in force: {fault:?}"));
    }
    let state = Arc::new(State {
        config: Config {
            version: args.pms_version.clone(),
            sonic_rate: args.sonic_rate,
            header_timeout: args.header_timeout,
            known_files: args.known_files,
            claim_delay: args.claim_delay,
            deep_analysis_duration: args.deep_analysis_duration,
            metadata_rate: args.metadata_rate,
        },
        db: Db::open(&layout.library_db)?,
        layout,
        prefs: std::sync::Mutex::new(prefs),
        log,
        activities: Arc::new(Activities::default()),
        queue: Queue::default(),
        metadata: UpdateQueue::default(),
        startup: Startup::new(args.startup_window),
        butler: Butler::default(),
        faults: Faults::new(&args.faults),
        stopping: Arc::new(AtomicBool::new(false)),
        plextv: PlexTv::new(&args.plextv_url)?,
        claim_pending: AtomicBool::new(false),
        runtime: tokio::runtime::Handle::current(),
    });

    if let Some(delay) = state.faults.crash_after {
        let crash_state = Arc::clone(&state);
        std::thread::Builder::new()
            .name("fault-crash-after".into())
            .spawn(move || {
                std::thread::sleep(delay);
                crash_state
                    .log
                    .error("fault crash-after: aborting now, mid-work");
                std::process::abort();
            })?;
    }

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    if let Some(delay) = state.faults.slow_start {
        state.log.warn(format!(
            "fault slow-start: not listening for {}",
            humantime::format_duration(delay)
        ));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = terminate.recv() => return stop(&state, Vec::new()).await,
            _ = interrupt.recv() => return stop(&state, Vec::new()).await,
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    state
        .log
        .info(format!("Listening on {}", listener.local_addr()?));
    let startup_state = Arc::clone(&state);
    state.startup.begin(move || {
        let line = startup::finished_line(std::process::id());
        startup_state.log.info(line);
    });
    let gdm_addr = SocketAddr::new(args.listen.ip(), args.gdm_port);
    gdm::spawn(Arc::clone(&state), gdm_addr, listener.local_addr()?.port()).await;
    let workers = vec![
        scan::spawn_worker(Arc::clone(&state))?,
        metadata::spawn_worker(Arc::clone(&state))?,
    ];
    let app = routes::router(Arc::clone(&state));
    let signal_state = Arc::clone(&state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        signal_state.log.info(format!("Received {name}: stopping"));
        signal_state.stopping.store(true, Ordering::SeqCst);
    })
    .await?;
    stop(&state, workers).await
}

/// Stops all work, waits (bounded) for workers, checkpoints the WAL.
async fn stop(state: &Arc<State>, workers: Vec<std::thread::JoinHandle<()>>) -> Result<()> {
    state.stopping.store(true, Ordering::SeqCst);
    state.queue.cancel_scans(None);
    state.butler.stop_all();
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline
        && (workers.iter().any(|w| !w.is_finished()) || state.butler.running_count() > 0)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let checkpoint_state = Arc::clone(state);
    tokio::task::spawn_blocking(move || checkpoint_state.db.checkpoint()).await??;
    state
        .log
        .info(format!("DB writes: {}", state.db.write_stats()));
    state.log.info("Stopped; library DB checkpointed");
    Ok(())
}
