//! The dead-man (`runner dead-man`, its own systemd unit): ends the
//! instance when the runner does not, because it is frozen (SIGSTOP), hung,
//! crash-looping, or kept by `keep_on_failure`: billing must stop. It
//! shares no process, lock or state with the runner: it counts from its own
//! first start, recorded in its own state folder so that restarts and
//! reboots keep the deadline, and it waits on the wall clock.
//!
//! At `first start + deadlines.run + termination.dead_man_grace`, or as
//! soon as systemd gives up restarting the runner (unless
//! `keep_on_failure`), it marks the run failed in `status.json`, ships the
//! logs as the runner would (its own as `deadman.txt`), then terminates the
//! instance through the API with the run's key, retrying until that
//! succeeds. Only the terminate matters:
//! the status and the logs are best effort.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::checkpoint::{unix_now, write_atomically};
use super::logs::{self, Sources};
use super::status::{self, RunState, Status};
use super::{WorkPaths, instance};
use crate::config::{RunConfig, Termination};
use crate::notify::{Event, EventKind, Notifier};
use crate::s3::{Bucket, S3Error};

/// How the dead-man's verdict in `status.json` begins.
pub const ENDED_BY_DEAD_MAN: &str = "ended by the dead-man";

/// Why the dead-man ends the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The run's deadline (+ grace) passed with the instance still up.
    Deadline,
    /// systemd stopped restarting the runner (its unit's start limit):
    /// nothing would end the run before the deadline.
    RunnerGaveUp,
}

impl Why {
    fn words(self) -> &'static str {
        match self {
            Why::Deadline => "at the run's deadline (+ grace)",
            Why::RunnerGaveUp => {
                "before the deadline: systemd stopped restarting the runner after its failed starts"
            }
        }
    }

    /// The run's `last_error`.
    pub fn verdict(self) -> String {
        format!(
            "{ENDED_BY_DEAD_MAN} {}: the runner did not end the run",
            self.words()
        )
    }

    /// What a finished run's status says when only its instance outlived it.
    fn instance_ended(self) -> String {
        format!(
            "the instance was ended by the dead-man {}: the runner did not terminate it",
            self.words()
        )
    }
}
/// In the state folder: the first start, in Unix seconds.
const FIRST_START_FILE: &str = "first-start";
/// In the state folder: the dead-man's own log, shipped as `deadman.txt`.
const LOG_FILE: &str = "deadman.log";
/// The longest nap: a clock jump or a suspend is noticed within it.
const TICK: Duration = Duration::from_secs(30);
/// Between terminate attempts that failed.
const RETRY: Duration = Duration::from_secs(30);
/// The status and the logs may take this long: billing must stop even when
/// S3 is sick.
const REPORT_BUDGET: Duration = Duration::from_secs(600);
/// After a terminate the API accepted: if we are still up this much later,
/// it did not take, and we ask again.
const RECHECK: Duration = Duration::from_secs(600);

/// Watches the run until its deadline (+ grace) or until systemd gives up
/// on the runner, then ends it. Returns only
/// when there is nothing to watch (`provider = "none"`).
pub async fn watch(cfg: &RunConfig) {
    let Termination::Scaleway(scw) = cfg.termination() else {
        tracing::info!(
            "[termination] provider = \"none\": no instance to end, the dead-man has nothing to watch"
        );
        return;
    };
    let dir = state_dir(cfg.work_dir(), std::env::var_os("STATE_DIRECTORY"));
    let log = dir.join(LOG_FILE);
    if let Err(e) = crate::logging::also_to_file(&log) {
        tracing::warn!("cannot log to {}: {e}", log.display());
    }
    let started = first_start(&dir, unix_now());
    let deadline = deadline_unix(started, cfg.run_deadline(), scw.dead_man_grace);
    tracing::info!(
        "dead-man armed for run {}: the instance ends at {} (first start {} + run deadline {} + grace {})",
        cfg.run_id(),
        rfc3339(deadline),
        rfc3339(started),
        humantime::format_duration(cfg.run_deadline()),
        humantime::format_duration(scw.dead_man_grace)
    );
    // Kept on failure, the instance waits for the deadline whatever the
    // runner does.
    let why = wait_for_end(deadline, !scw.keep_on_failure).await;
    match why {
        Why::Deadline => tracing::warn!(
            "the run's deadline (+ grace) has passed and the instance is still up: the dead-man ends the run"
        ),
        Why::RunnerGaveUp => tracing::warn!(
            "systemd stopped restarting the runner ({} hit its start limit): the dead-man ends the run now rather than at {}",
            crate::systemd::RUNNER_UNIT,
            rfc3339(deadline)
        ),
    }
    let report = report(cfg, log, why);
    if tokio::time::timeout(REPORT_BUDGET, report).await.is_err() {
        tracing::warn!(
            "the status and the logs took over {}: terminating without them",
            humantime::format_duration(REPORT_BUDGET)
        );
    }
    // The root volume outlives the instance: the secrets leave it first
    // (the key the terminate needs is in memory).
    super::wipe::before_the_end(cfg, &WorkPaths::new(cfg));
    tracing::info!("dead-man step 3/3: terminating the instance");
    terminate(cfg).await;
}

/// Steps 1 and 2, best effort: the run marked ended, the logs shipped (the
/// dead-man's own `log` as `deadman.txt`).
async fn report(cfg: &RunConfig, log: PathBuf, why: Why) {
    let bucket = Bucket::new(&cfg.s3_connection(), cfg.s3_bucket(), Default::default());
    tracing::info!("dead-man step 1/3: marking the run ended in status.json");
    mark_ended(cfg, &bucket, why).await;
    let notifier = Notifier::new(cfg.notify().to_vec(), Default::default());
    let run = cfg.run_id().to_string();
    notifier
        .send(
            &Event::new(
                EventKind::EndedByDeadMan,
                Some(&run),
                "ended by the dead-man",
                match why {
                    Why::Deadline => format!(
                        "The run outlived its deadline ({} + grace) and the dead-man is ending its instance: the runner did not end the run.",
                        humantime::format_duration(cfg.run_deadline())
                    ),
                    Why::RunnerGaveUp => "The runner failed at every start until systemd stopped restarting it; the dead-man is ending the instance now rather than at the deadline.".to_owned(),
                },
            )
            .sender("dead-man")
            .next(format!("bootstrap status {run}")),
        )
        .await;
    tracing::info!("dead-man step 2/3: shipping the logs");
    let paths = WorkPaths::new(cfg);
    logs::ship_from(&Sources {
        cfg,
        bucket: &bucket,
        paths: &paths,
        extra: vec![("deadman.txt".into(), log)],
    })
    .await;
}

/// The state folder: systemd's `StateDirectory=` (the first, if several),
/// else `<work_dir>/deadman`.
fn state_dir(work_dir: &Path, state_directory: Option<OsString>) -> PathBuf {
    state_directory
        .as_deref()
        .and_then(|v| std::env::split_paths(v).find(|p| !p.as_os_str().is_empty()))
        .unwrap_or_else(|| work_dir.join("deadman"))
}

/// The first start recorded in `dir`, or `now`, recorded there for the
/// restarts to come. A record that cannot be read or written is reported
/// and the count starts now: later, never never.
fn first_start(dir: &Path, now: u64) -> u64 {
    let path = dir.join(FIRST_START_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse() {
            Ok(started) => return started,
            Err(_) => tracing::warn!(
                "{} holds {:?}, not Unix seconds: counting from now",
                path.display(),
                text.trim()
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot read {}: {e}; counting from now", path.display()),
    }
    let recorded = std::fs::create_dir_all(dir)
        .and_then(|()| write_atomically(&path, format!("{now}\n").as_bytes()));
    if let Err(e) = recorded {
        tracing::warn!(
            "cannot record the first start in {}: {e}; a restart will count from its own start",
            path.display()
        );
    }
    now
}

/// When the dead-man acts (Unix seconds).
pub fn deadline_unix(first_start: u64, run: Duration, grace: Duration) -> u64 {
    first_start.saturating_add(run.saturating_add(grace).as_secs())
}

/// How long to sleep before looking at the clock again; zero once due.
fn next_nap(deadline: u64, now: u64) -> Duration {
    Duration::from_secs(deadline.saturating_sub(now)).min(TICK)
}

/// Sleeps until the wall clock reaches `deadline` (Unix seconds), or,
/// when `watch_runner`, until systemd gives up restarting the runner.
async fn wait_for_end(deadline: u64, watch_runner: bool) -> Why {
    loop {
        let nap = next_nap(deadline, unix_now());
        if nap.is_zero() {
            return Why::Deadline;
        }
        if watch_runner && crate::systemd::gave_up_on(crate::systemd::RUNNER_UNIT) {
            return Why::RunnerGaveUp;
        }
        tokio::time::sleep(nap).await;
    }
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// Rewrites the run's `status.json` as [`ended_status`] says. Best effort.
async fn mark_ended(cfg: &RunConfig, bucket: &Bucket, why: Why) {
    let key = cfg.run_key("status.json");
    let existing = match bucket.get_bytes(&key).await {
        Ok(bytes) => match serde_json::from_slice::<Status>(&bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(
                    "s3://{}/{key} is unreadable ({e}): writing a fresh one",
                    bucket.name()
                );
                None
            }
        },
        Err(S3Error::NoSuchKey { .. }) => None,
        Err(e) => {
            tracing::warn!("cannot read the run's status ({e}): writing a fresh one");
            None
        }
    };
    let status = ended_status(existing, cfg.run_id().as_ref(), why);
    match bucket
        .put_bytes(&key, status.to_json().into(), "application/json")
        .await
    {
        Ok(()) => tracing::info!(
            "s3://{}/{key}: the run is {}",
            bucket.name(),
            format!("{:?}", status.state).to_lowercase()
        ),
        Err(e) => tracing::warn!("cannot update the run's status: {e}"),
    }
}

/// The status the dead-man leaves: the runner's (or a fresh one) failed,
/// with why; the runner's own last error, if any, is kept after it. A run
/// the runner finished (succeeded, quarantined) stays so: only its instance
/// outlived it, and that is said instead.
pub fn ended_status(existing: Option<Status>, run_id: &str, why: Why) -> Status {
    let mut status = existing.unwrap_or_else(|| Status::new(run_id));
    let verdict = why.verdict();
    match status.state {
        RunState::Succeeded | RunState::Quarantined => {
            status.detail = Some(why.instance_ended());
            status.updated_at = status::now_rfc3339();
        }
        RunState::Running | RunState::Failed => {
            let error = match status.last_error.take() {
                // Written by an earlier start of ours (a restart).
                Some(previous) if previous.starts_with(ENDED_BY_DEAD_MAN) => {
                    anyhow::anyhow!(previous)
                }
                Some(previous) => {
                    anyhow::anyhow!("{verdict} (the runner's last error: {previous})")
                }
                None => anyhow::anyhow!(verdict),
            };
            status.fail(&error);
        }
    }
    status
}

/// Whether `status` is the dead-man's verdict (the run ended by it). It
/// stands: a frozen runner woken by the shutdown's SIGTERM must not write
/// its own last words over it.
pub fn is_verdict(status: &Status) -> bool {
    status.state == RunState::Failed
        && status
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with(ENDED_BY_DEAD_MAN))
}

/// Terminates this instance, every [`RETRY`] until the API accepts, then
/// again every [`RECHECK`] while we are still up. Never returns.
async fn terminate(cfg: &RunConfig) {
    loop {
        match instance::terminate(cfg).await {
            Ok(()) => {
                tracing::info!(
                    "terminate accepted: the instance is going down (asked again in {} if it is still up)",
                    humantime::format_duration(RECHECK)
                );
                tokio::time::sleep(RECHECK).await;
            }
            Err(e) => {
                tracing::error!(
                    "cannot terminate this instance ({e:#}): retrying in {}",
                    humantime::format_duration(RETRY)
                );
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Phase;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_deadline_counts_from_the_recorded_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("deadman");
        assert_eq!(first_start(&state, 1_000), 1_000);
        // A restart (or a reboot) later keeps the first start.
        assert_eq!(first_start(&state, 5_000), 1_000);
        assert_eq!(
            deadline_unix(first_start(&state, 9_000), 72 * HOUR, HOUR),
            1_000 + 73 * 3600
        );
        assert_eq!(deadline_unix(u64::MAX - 1, HOUR, HOUR), u64::MAX);

        // A torn record restarts the count rather than never firing.
        std::fs::write(state.join(FIRST_START_FILE), "garbage").unwrap();
        assert_eq!(first_start(&state, 7_000), 7_000);
        assert_eq!(first_start(&state, 8_000), 7_000);
    }

    #[test]
    fn naps_are_short_and_end_at_the_deadline() {
        assert_eq!(next_nap(1_000, 0), TICK);
        assert_eq!(next_nap(1_000, 990), Duration::from_secs(10));
        assert!(next_nap(1_000, 1_000).is_zero());
        // The clock jumped past it (a suspend): due at once.
        assert!(next_nap(1_000, 50_000).is_zero());
    }

    #[test]
    fn the_state_folder_is_systemds_else_under_the_work_dir() {
        let work = Path::new("/var/lib/plex-burst");
        assert_eq!(
            state_dir(work, Some("/var/lib/plex-burst-deadman".into())),
            Path::new("/var/lib/plex-burst-deadman")
        );
        assert_eq!(
            state_dir(work, Some("/a:/b".into())),
            Path::new("/a"),
            "several StateDirectory= entries: the first"
        );
        assert_eq!(state_dir(work, None), work.join("deadman"));
        assert_eq!(state_dir(work, Some("".into())), work.join("deadman"));
    }

    #[test]
    fn a_running_status_is_failed_with_why_and_keeps_its_fields() {
        let mut running = Status::new("r1");
        running.phase = Some(Phase::Scan);
        running.phases_done = vec![Phase::Boot, Phase::Pull];
        running.detail = Some("scanning Music".into());
        let started_at = running.started_at.clone();

        let ended = ended_status(Some(running), "r1", Why::Deadline);
        assert_eq!(ended.state, RunState::Failed);
        assert_eq!(
            ended.last_error.as_deref(),
            Some(Why::Deadline.verdict().as_str())
        );
        assert_eq!(ended.phase, Some(Phase::Scan));
        assert_eq!(ended.phases_done, vec![Phase::Boot, Phase::Pull]);
        assert_eq!(ended.detail.as_deref(), Some("scanning Music"));
        assert_eq!(ended.started_at, started_at);
    }

    #[test]
    fn a_failed_status_keeps_the_runners_error_after_the_dead_mans() {
        let mut failed = Status::new("r1");
        failed.fail(&anyhow::anyhow!("phase scan failed: stalled"));
        let ended = ended_status(Some(failed), "r1", Why::Deadline);
        assert_eq!(ended.state, RunState::Failed);
        let error = ended.last_error.unwrap();
        assert!(error.starts_with(ENDED_BY_DEAD_MAN), "{error}");
        assert!(error.contains("phase scan failed: stalled"), "{error}");

        // A restarted dead-man rewrites it as it was.
        let again = ended_status(
            Some(Status {
                last_error: Some(error.clone()),
                ..Status::new("r1")
            }),
            "r1",
            Why::Deadline,
        );
        assert_eq!(again.last_error, Some(error));
    }

    #[test]
    fn only_the_dead_mans_own_ending_is_its_verdict() {
        assert!(is_verdict(&ended_status(None, "r1", Why::Deadline)));
        let mut failed = Status::new("r1");
        failed.fail(&anyhow::anyhow!(
            "the run's deadline (4m) passed during phase scan"
        ));
        assert!(!is_verdict(&failed));
        assert!(is_verdict(&ended_status(Some(failed), "r1", Why::Deadline)));
        assert!(!is_verdict(&Status::new("r1")));
        // A finished run whose instance outlived it stays finished.
        let mut done = Status::new("r1");
        done.state = RunState::Succeeded;
        assert!(!is_verdict(&ended_status(Some(done), "r1", Why::Deadline)));
    }

    #[test]
    fn a_runner_systemd_gave_up_on_is_ended_with_that_reason_and_its_last_error() {
        let mut failed = Status::new("r1");
        failed.fail(&anyhow::anyhow!("phase boot failed: no such bucket"));
        let ended = ended_status(Some(failed), "r1", Why::RunnerGaveUp);
        let error = ended.last_error.clone().unwrap();
        assert!(
            error.starts_with(
                "ended by the dead-man before the deadline: systemd stopped restarting the runner"
            ),
            "{error}"
        );
        assert!(error.ends_with("(the runner's last error: phase boot failed: no such bucket)"));
        assert!(is_verdict(&ended));
    }

    #[test]
    fn without_a_status_a_fresh_failed_one_is_written() {
        let ended = ended_status(None, "r1", Why::Deadline);
        assert_eq!(ended.run_id, "r1");
        assert_eq!(ended.state, RunState::Failed);
        assert_eq!(
            ended.last_error.as_deref(),
            Some(Why::Deadline.verdict().as_str())
        );
        assert!(ended.phase.is_none());
        // What bootstrap reads back.
        let json: serde_json::Value = serde_json::from_slice(&ended.to_json()).unwrap();
        assert_eq!(json["state"], "failed");
    }

    #[test]
    fn a_finished_run_stays_finished_and_says_its_instance_was_ended() {
        let mut done = Status::new("r1");
        done.state = RunState::Succeeded;
        done.result_key = Some("runs/r1/result/plex-db.tar.zst".into());
        let ended = ended_status(Some(done), "r1", Why::Deadline);
        assert_eq!(ended.state, RunState::Succeeded);
        assert!(ended.last_error.is_none());
        assert_eq!(
            ended.detail.as_deref(),
            Some(Why::Deadline.instance_ended().as_str())
        );
        assert_eq!(
            ended.result_key.as_deref(),
            Some("runs/r1/result/plex-db.tar.zst")
        );
    }
}
