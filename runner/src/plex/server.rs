//! A supervised Plex: started, proven ready (with the evidence of every
//! probe when it is not), checked against the pinned version, set up for a
//! burst run, claimed when asked, and stopped so that its DB can be read.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::api::{Account, PlexApi};
use super::error::PlexError;
use super::plextv::PlexTv;
use super::preferences::Preferences;
use super::prefs;
use super::process::{Launch, PlexProcess, log_tail};

pub struct PlexServer {
    launch: Launch,
    process: PlexProcess,
    api: PlexApi,
    machine_identifier: String,
    main_pid: Option<u32>,
}

/// What `start` needs beyond the launch: the pinned version, the claim.
pub struct StartOptions<'a> {
    pub pinned_version: &'a str,
    pub ready_within: Duration,
    /// How long requests answered "still starting up" are sent again.
    pub startup_retry: Duration,
    /// Claim with this plex.tv account (`None`: stay unclaimed).
    pub plextv: Option<&'a PlexTv>,
}

/// How long Plex takes to write its token after a claim (lessons.md 9).
const TOKEN_WAIT: Duration = Duration::from_secs(60);
const LOG_TAIL_LINES: usize = 30;

impl PlexServer {
    pub async fn start(launch: Launch, opts: StartOptions<'_>) -> Result<PlexServer> {
        let mut process = PlexProcess::start(&launch).await?;
        let mut api = PlexApi::new(&launch.url())?;
        api.set_startup_retry(opts.startup_retry);
        let ready = wait_ready(&api, &mut process, &launch, opts.ready_within).await;
        let identity = match ready {
            Ok(identity) => identity,
            Err(e) => {
                let _ = process.stop().await;
                return Err(e);
            }
        };
        let main_pid = process.main_pid().await;
        let mut server = PlexServer {
            machine_identifier: identity.machine_identifier.clone(),
            main_pid,
            launch,
            process,
            api: api.clone(),
        };
        // Migrations only go forward: a newer Plex would make a DB home
        // cannot open (lessons.md 24).
        if identity.version != opts.pinned_version {
            let _ = server.stop().await;
            bail!(
                "Plex reports version {} but the run is pinned to {} (the home server's): refusing to let it touch the DB",
                identity.version,
                opts.pinned_version
            );
        }
        // A server claimed on an earlier attempt of this run kept its token.
        if let Some(token) = server.preferences()?.and_then(|p| p.online_token()) {
            api.set_token(token);
            server.api = api;
        } else if let Some(plextv) = opts.plextv {
            server.claim(plextv).await?;
        }
        Ok(server)
    }

    pub fn api(&self) -> &PlexApi {
        &self.api
    }

    pub fn machine_identifier(&self) -> &str {
        &self.machine_identifier
    }

    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    /// What Plex is doing now.
    pub async fn busy(&self) -> Result<super::idle::Busy, PlexError> {
        super::idle::observe(&self.api, self.main_pid).await
    }

    fn preferences(&self) -> Result<Option<Preferences>> {
        Preferences::read(&self.launch.app_support)
    }

    /// `Some(reason)` if Plex is gone (crashed, killed).
    pub async fn exited(&mut self) -> Option<String> {
        self.process.exited().await
    }

    /// Claims the server: the claim token is fetched now, not earlier, as
    /// it lives only minutes (lessons.md 8); the server's own token then
    /// shows up in Preferences.xml after a while (lessons.md 9).
    async fn claim(&mut self, plextv: &PlexTv) -> Result<()> {
        // A fresh claim token for each attempt: one is used up by a claim
        // that Plex accepted but answered badly.
        let api = &self.api;
        let user = retry("read the plex.tv account", 5, || plextv.user()).await?;
        let answer = retry("claim the server", 5, || async {
            let claim_token = plextv.claim_token().await?;
            api.claim(&claim_token, plextv.account_token()).await
        })
        .await?;
        user.check_claimed(&answer).map_err(anyhow::Error::msg)?;
        let started = Instant::now();
        let token = loop {
            if let Some(t) = self.preferences()?.and_then(|p| p.online_token()) {
                break t;
            }
            if started.elapsed() > TOKEN_WAIT {
                bail!(
                    "Plex accepted the claim but no PlexOnlineToken appeared in {} within {}",
                    Preferences::path(&self.launch.app_support).display(),
                    humantime::format_duration(TOKEN_WAIT)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        self.api.set_token(token);
        let api = &self.api;
        let account = retry("read the Plex account", 6, || api.account()).await?;
        tracing::info!(user = %account.username, "Plex claimed");
        Ok(())
    }

    /// The account the server is signed in with, for the Plex Pass check.
    pub async fn account(&self) -> Result<Account, PlexError> {
        self.api.account().await
    }

    /// The prefs of a burst run (see [`prefs`]), each write checked and
    /// read back.
    /// Who may reach this Plex without a token (the `allowedNetworks` pref).
    pub fn allowed_networks(&self) -> String {
        self.process.allowed_networks()
    }

    pub async fn apply_prefs(&self, wanted: &[(String, String)]) -> Result<()> {
        let mut attempt = 1;
        loop {
            match prefs::apply(&self.api, wanted).await {
                Err(e)
                    if attempt < 6
                        && e.downcast_ref::<PlexError>()
                            .is_some_and(PlexError::is_transient) =>
                {
                    tracing::warn!(attempt, "setting prefs: {e:#}; trying again");
                    tokio::time::sleep(Duration::from_secs(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The tail of Plex's logs, for error reports.
    pub fn log_tail(&self) -> String {
        logs_tail(&self.launch)
    }

    /// Stops Plex; the DB is then closed and can be checkpointed.
    pub async fn stop(&mut self) -> Result<()> {
        self.process.stop().await.context("cannot stop Plex")
    }

    /// Whether the server holds a plex.tv token (claimed now or earlier).
    pub fn is_claimed(&self) -> bool {
        self.api.has_token()
    }

    /// Signs the server out of plex.tv: it drops its token. Removing it
    /// from the account's devices is home's job (`bootstrap fetch`), which
    /// holds the account token; the run gives its token up after the claim.
    pub async fn sign_out(&self) -> Result<()> {
        let answer = self.api.unclaim().await?;
        if answer.sign_in_state == "ok" {
            bail!("Plex answered the sign-out but still says it is signed in to plex.tv");
        }
        Ok(())
    }
}

/// Polls `/identity` until Plex answers, logging every probe's outcome
/// (lessons.md 10), and failing early when the process dies.
async fn wait_ready(
    api: &PlexApi,
    process: &mut PlexProcess,
    launch: &Launch,
    within: Duration,
) -> Result<super::api::Identity> {
    let started = Instant::now();
    let mut last = String::from("no probe yet");
    let mut probes = 0u32;
    loop {
        probes += 1;
        let outcome = match api.probe_identity().await {
            Ok((status, body)) if status.is_success() => match api.identity().await {
                Ok(identity) => return Ok(identity),
                Err(e) => format!("{e}; body {}", super::error::snippet(&body)),
            },
            Ok((status, body)) => format!("HTTP {status} {}", super::error::snippet(&body)),
            Err(e) => e.to_string(),
        };
        // A probe answered (or refused) within its timeout: the wait is
        // alive; `within` bounds it, the watchdog bounds a hung one.
        crate::systemd::beat();
        if outcome != last {
            tracing::info!(probe = probes, elapsed = ?started.elapsed(), "Plex not ready: {outcome}");
            last = outcome;
        } else {
            tracing::debug!(probe = probes, "Plex not ready: {last}");
        }
        if let Some(reason) = process.exited().await {
            bail!(
                "Plex stopped while starting ({reason}); last probe: {last}\n--- Plex logs ---\n{}",
                logs_tail(launch)
            );
        }
        if started.elapsed() > within {
            bail!(
                "Plex did not answer within {} ({probes} probes; last: {last})\n--- Plex logs ---\n{}",
                humantime::format_duration(within),
                logs_tail(launch)
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn logs_tail(launch: &Launch) -> String {
    let mut out = log_tail(&launch.server_log(), LOG_TAIL_LINES);
    if launch.console_log.exists() {
        let console = log_tail(&launch.console_log, 10);
        if !console.trim().is_empty() {
            out.push_str("\n--- console ---\n");
            out.push_str(&console);
        }
    }
    out
}

/// Runs `call` again while it fails with a transient error (Plex starting,
/// restarting, or answering 5xx), up to `attempts` times with backoff.
pub async fn retry<T, F, Fut>(what: &str, attempts: u32, mut call: F) -> Result<T, PlexError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PlexError>>,
{
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.is_transient() && attempt < attempts => {
                tracing::warn!(attempt, "{what}: {e}; trying again in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(15));
                attempt += 1;
            }
            other => return other,
        }
    }
}
