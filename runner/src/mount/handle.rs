//! [`Mount`]: the rclone child and the FUSE mount it serves, from start to
//! stop. The runner's supervisor owns it; `probe` and `is_alive` take
//! `&self` and hold nothing across I/O (lessons.md 5).

use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::bucket::BucketReads;
use super::health::classify;
use super::logtail;
use super::mountinfo;
use super::probe::{self, ProbeLimits, ProbeTargets, Rclone};
use super::process::RcloneProcess;
use super::unmount::{clean_unmount, detach_top, lazy_unmount};
use super::watchdog::{Outcome, Watchdog};
use super::{Health, MountError, MountSpec, RcloneInvocation};

/// Calls on the mount that may stay blocked at once before the probe stops
/// starting new ones (see [`super::watchdog`]).
const MAX_BLOCKED_CALLS: usize = 64;
/// How often `start` looks for the mount in mountinfo.
const POLL: Duration = Duration::from_millis(100);

/// How hard [`Mount::remount`] tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemountPolicy {
    pub attempts: u32,
    /// Wait after the first failed attempt; doubles after each, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RemountPolicy {
    fn default() -> Self {
        RemountPolicy {
            attempts: 3,
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// A running `rclone mount`. Dropping it detaches the mount and kills
/// rclone (best effort); [`Mount::stop`] is the orderly way.
pub struct Mount {
    spec: MountSpec,
    invocation: RcloneInvocation,
    process: Option<RcloneProcess>,
    /// From spawning rclone until its mount is gone. With the invocation's
    /// unique device name, this makes sure a handle only ever unmounts its
    /// own mount (a dropped old handle must not take a newer one with it).
    owns_mount: bool,
    dog: Watchdog,
    /// The probe's reads that no cache answers.
    bucket: BucketReads,
}

impl Mount {
    /// Mounts `spec`: refuses a live mount already at the mount point
    /// (a dead FUSE mount left there is detached first), creates the folders
    /// it needs, starts rclone, and returns once the mount is in
    /// `/proc/self/mountinfo` and its root lists something, within
    /// `spec.limits.start`. On failure nothing is left mounted or running.
    pub async fn start(spec: MountSpec, cancel: &CancellationToken) -> Result<Mount, MountError> {
        let mut mount = Mount {
            invocation: RcloneInvocation::new(&spec),
            bucket: BucketReads::new(&spec),
            spec,
            process: None,
            owns_mount: false,
            dog: Watchdog::new(MAX_BLOCKED_CALLS),
        };
        mount.mount_once(cancel).await?;
        Ok(mount)
    }

    pub fn spec(&self) -> &MountSpec {
        &self.spec
    }

    /// The command line and environment (names only) rclone runs with.
    pub fn invocation(&self) -> &RcloneInvocation {
        &self.invocation
    }

    /// rclone's pid while this handle has a child.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(RcloneProcess::pid)
    }

    /// rclone runs and its FUSE mount is in place. Cheap, touches nothing
    /// on the mount; a live mount can still be degraded: see [`Mount::probe`].
    pub fn is_alive(&self) -> bool {
        self.process.as_ref().is_some_and(RcloneProcess::is_alive) && self.is_ours()
    }

    /// Checks the mount (lessons.md 1, 3): a live FUSE mount with rclone
    /// behind it; the root and `targets.dirs` list within
    /// `limits.list_timeout`; the anchor files give bytes within
    /// `limits.read_timeout` each, through the mount and from the bucket
    /// (rclone's cache may hold them), for at least the quorum. Takes at
    /// most [`ProbeLimits::bound`]. Never fails: problems are in the [`Health`].
    pub async fn probe(&self, targets: &ProbeTargets, limits: &ProbeLimits) -> Health {
        let rclone = match &self.process {
            Some(p) => match p.exit_status() {
                None => Rclone::Running,
                Some(how) => Rclone::Exited(how),
            },
            None => Rclone::NotStarted,
        };
        let health = probe::probe(
            &self.spec.mount_point,
            rclone,
            targets,
            limits,
            &self.dog,
            Some(&self.bucket),
        )
        .await;
        if !health.is_healthy() {
            tracing::warn!(mount_point = %self.spec.mount_point.display(), "{}", health.summary());
        }
        health
    }

    /// Stops rclone, detaches the mount, starts again and probes, up to
    /// `policy.attempts` times with backoff; returns the first healthy
    /// [`Health`]. Cancellable between and within steps.
    ///
    /// The caller must pause Plex work (or fail the phase cleanly) first: a
    /// remount under in-flight FUSE I/O can freeze the machine, and it
    /// empties rclone's dir-cache (lessons.md 4). Call it on a probe's
    /// verdict, never on one slow read. After a failure the last attempt's
    /// mount may still be up, unhealthy: probe again or [`Mount::stop`].
    pub async fn remount(
        &mut self,
        targets: &ProbeTargets,
        limits: &ProbeLimits,
        policy: &RemountPolicy,
        cancel: &CancellationToken,
    ) -> Result<Health, MountError> {
        let attempts = policy.attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            if cancel.is_cancelled() {
                return Err(MountError::Cancelled("remounting"));
            }
            tracing::warn!(attempt, attempts, mount_point = %self.spec.mount_point.display(), "remounting the media");
            let mounted = match self.teardown().await {
                Ok(()) => self.mount_once(cancel).await,
                Err(e) => Err(e),
            };
            match mounted {
                Ok(()) => {
                    let health = self.probe(targets, limits).await;
                    if health.is_healthy() {
                        tracing::info!("{}", health.summary());
                        return Ok(health);
                    }
                    last = health.summary();
                }
                Err(MountError::Cancelled(what)) => return Err(MountError::Cancelled(what)),
                Err(e) => last = e.to_string(),
            }
            if attempt < attempts {
                let wait = backoff(policy, attempt);
                tokio::select! {
                    () = cancel.cancelled() => return Err(MountError::Cancelled("waiting to remount")),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
        Err(MountError::RemountFailed {
            mount_point: self.spec.mount_point.clone(),
            attempts,
            last,
        })
    }

    /// Unmounts (cleanly, else lazily) and stops rclone (SIGTERM, then
    /// SIGKILL), each step bounded by `spec.limits`. Idempotent.
    pub async fn stop(&mut self) -> Result<(), MountError> {
        let result = self.teardown().await;
        match &result {
            Ok(()) => {
                tracing::info!(mount_point = %self.spec.mount_point.display(), "media unmounted")
            }
            Err(e) => tracing::error!("{e}"),
        }
        result
    }

    async fn mount_once(&mut self, cancel: &CancellationToken) -> Result<(), MountError> {
        self.prepare().await?;
        let process = RcloneProcess::spawn(&self.invocation, &self.spec.log_file)?;
        tracing::info!(pid = process.pid(), command = %self.invocation.command_line(), "rclone started");
        self.process = Some(process);
        self.owns_mount = true;
        if let Err(e) = self.wait_ready(cancel).await {
            if let Err(cleanup) = self.teardown().await {
                tracing::error!("after a failed start: {cleanup}");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Makes the mount point usable: a dead FUSE mount there is detached,
    /// anything else mounted there is refused; folders are created.
    async fn prepare(&self) -> Result<(), MountError> {
        let mp = &self.spec.mount_point;
        let prepare_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| MountError::Prepare { path, source }
        };
        if let Some(entry) =
            mountinfo::mount_at(mp).map_err(prepare_error(Path::new("/proc/self/mountinfo")))?
        {
            if !(entry.is_fuse() && self.is_dead(mp).await) {
                return Err(MountError::AlreadyMounted {
                    path: mp.clone(),
                    fstype: entry.fstype,
                    device: entry.device,
                });
            }
            tracing::warn!(mount_point = %mp.display(), device = %entry.device, "detaching a dead FUSE mount left at the mount point");
            self.detach(true).await?;
        }
        std::fs::create_dir_all(mp).map_err(prepare_error(mp))?;
        std::fs::create_dir_all(&self.spec.cache_dir)
            .map_err(prepare_error(&self.spec.cache_dir))?;
        if let Some(dir) = self.spec.log_file.parent() {
            std::fs::create_dir_all(dir).map_err(prepare_error(dir))?;
        }
        Ok(())
    }

    /// A FUSE mount whose daemon is gone answers "socket not connected" (or
    /// "connection aborted") at once; a live one answers, a hung one not.
    /// Opening the folder always asks the daemon (a `stat` may be answered
    /// from the kernel's attribute cache).
    async fn is_dead(&self, mp: &Path) -> bool {
        let path = mp.to_path_buf();
        let outcome = self
            .dog
            .run(
                "mount-stale-check",
                self.spec.limits.stale_check,
                move || std::fs::read_dir(path).map(|_| ()),
            )
            .await;
        matches!(outcome, Outcome::Done(Err(e))
            if matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED)))
    }

    /// Waits for the mount in mountinfo, then for its root to list.
    async fn wait_ready(&self, cancel: &CancellationToken) -> Result<(), MountError> {
        let mp = &self.spec.mount_point;
        let limit = self.spec.limits.start;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.process.as_ref().and_then(RcloneProcess::exit_status) {
                return Err(MountError::RcloneExited {
                    mount_point: mp.clone(),
                    status,
                    log_tail: logtail::tail(&self.spec.log_file),
                });
            }
            if self.is_ours() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(self.timeout("the mount never appeared in /proc/self/mountinfo"));
            }
            tokio::select! {
                () = cancel.cancelled() => return Err(MountError::Cancelled("waiting for the mount")),
                () = tokio::time::sleep(POLL) => {}
            }
        }
        let path = mp.clone();
        let left = deadline.saturating_duration_since(Instant::now()).max(POLL);
        let listing = self
            .dog
            .run("mount-ready", left, move || probe::list(&path, 1));
        let outcome = tokio::select! {
            () = cancel.cancelled() => return Err(MountError::Cancelled("listing the new mount")),
            outcome = listing => outcome,
        };
        let not_ready = |detail: String| MountError::NotReady {
            remote: self.spec.remote(),
            mount_point: mp.clone(),
            detail,
            log_tail: logtail::tail(&self.spec.log_file),
        };
        match outcome {
            Outcome::Done(Ok(0)) => Err(MountError::EmptyRoot {
                remote: self.spec.remote(),
                mount_point: mp.clone(),
            }),
            Outcome::Done(Ok(_)) => Ok(()),
            Outcome::Done(Err(e)) => Err(not_ready(classify(&e).1)),
            Outcome::TimedOut => Err(self.timeout("listing the mount root gave no answer")),
            Outcome::Refused(n) => Err(not_ready(format!(
                "{n} earlier calls are still blocked on it"
            ))),
            Outcome::Failed(why) => Err(not_ready(why)),
        }
    }

    fn timeout(&self, what: &str) -> MountError {
        MountError::Timeout {
            mount_point: self.spec.mount_point.clone(),
            after: self.spec.limits.start,
            what: what.into(),
            log_tail: logtail::tail(&self.spec.log_file),
        }
    }

    /// Ends rclone and this handle's mount; nothing left to do is Ok.
    async fn teardown(&mut self) -> Result<(), MountError> {
        let mp = self.spec.mount_point.clone();
        let limits = self.spec.limits;
        let mut result = Ok(());
        if let Some(mut process) = self.process.take() {
            if process.is_alive() {
                // A clean unmount lets rclone exit by itself; it fails while
                // Plex (or a stuck probe) holds a file open.
                let clean = self.is_ours() && {
                    let path = mp.clone();
                    let outcome = self
                        .dog
                        .run("mount-unmount", limits.unmount, move || {
                            clean_unmount(&path)
                        })
                        .await;
                    matches!(outcome, Outcome::Done(Ok(())))
                };
                if !(clean && process.wait_exit(limits.stop_grace).await) {
                    result = process.terminate(limits.stop_grace, limits.kill_wait).await;
                }
            }
            if let Some(how) = process.exit_status() {
                tracing::info!(pid = process.pid(), "rclone ended: {how}");
            }
            if result.is_err() {
                // Still running: keep the handle, so that Drop kills it.
                self.process = Some(process);
            }
        }
        if self.is_ours() {
            self.detach(false).await?;
        }
        self.owns_mount = false;
        result
    }

    /// Is the topmost mount at the mount point the one this handle made?
    fn is_ours(&self) -> bool {
        self.owns_mount
            && matches!(mountinfo::mount_at(&self.spec.mount_point),
                Ok(Some(top)) if top.is_fuse() && top.device == self.invocation.devname)
    }

    /// Lazy unmount on a thread, bounded: of every mount at the mount
    /// point with `all`, else of the topmost only.
    async fn detach(&self, all: bool) -> Result<(), MountError> {
        let mp = self.spec.mount_point.clone();
        let path = mp.clone();
        let outcome = self
            .dog
            .run("mount-detach", self.spec.limits.unmount, move || {
                if all {
                    lazy_unmount(&path)
                } else {
                    detach_top(&path)
                }
            })
            .await;
        let failed = |detail: String| MountError::Unmount { path: mp, detail };
        match outcome {
            Outcome::Done(result) => result,
            Outcome::TimedOut => Err(failed(super::health::no_answer(self.spec.limits.unmount))),
            Outcome::Refused(n) => Err(failed(format!("{n} calls are still blocked on the mount"))),
            Outcome::Failed(why) => Err(failed(why)),
        }
    }
}

impl Drop for Mount {
    /// Best effort: detach the mount this handle made (a lazy unmount never
    /// blocks), then the process handle kills rclone.
    fn drop(&mut self) {
        if self.is_ours()
            && let Err(e) = detach_top(&self.spec.mount_point)
        {
            tracing::error!("dropping the media mount: {e}");
        }
        self.process.take();
    }
}

fn backoff(policy: &RemountPolicy, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    policy
        .first_backoff
        .saturating_mul(factor)
        .min(policy.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RemountPolicy {
            attempts: 5,
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(12),
        };
        let waits: Vec<u64> = (1..=4).map(|a| backoff(&policy, a).as_secs()).collect();
        assert_eq!(waits, [5, 10, 12, 12]);
    }
}
