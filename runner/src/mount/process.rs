//! The rclone child. A small task owns it: it waits for the exit and
//! delivers signals, so that asking "is it alive?" needs neither `&mut` nor
//! a lock, and a signal can never reach a recycled pid (the task signals
//! only a child it has not reaped).

use std::fs::OpenOptions;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{MountError, RcloneInvocation};

pub(crate) struct RcloneProcess {
    pid: u32,
    /// `Some(how it ended)` once the child has exited.
    exit: watch::Receiver<Option<String>>,
    signals: mpsc::UnboundedSender<Signal>,
    task: JoinHandle<()>,
}

impl RcloneProcess {
    /// Starts rclone with its stderr appended to `log` (what it prints
    /// before it opens `--log-file`, e.g. a bad flag, lands there too).
    pub(crate) fn spawn(inv: &RcloneInvocation, log: &Path) -> Result<RcloneProcess, MountError> {
        let spawn_error = |source| MountError::Spawn {
            program: inv.program.clone(),
            source,
        };
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| MountError::Prepare {
                path: log.to_path_buf(),
                source,
            })?;
        let mut child = inv
            .to_command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own process group: a Ctrl-C meant for the runner must not
            // unmount the media under Plex; the runner decides the order.
            .process_group(0)
            // If this handle is lost, the child dies with it.
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error)?;
        let pid = child.id().unwrap_or_default();
        let (exit_tx, exit) = watch::channel(None);
        let (signals, mut signal_rx) = mpsc::unbounded_channel::<Signal>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    status = child.wait() => {
                        let how = match status {
                            Ok(status) => status.to_string(),
                            Err(e) => format!("wait failed: {e}"),
                        };
                        let _ = exit_tx.send(Some(how));
                        return;
                    }
                    Some(signal) = signal_rx.recv() => {
                        // `id()` is None once reaped: never a recycled pid.
                        if let Some(pid) = child.id() {
                            let _ = kill(Pid::from_raw(pid as i32), signal);
                        }
                    }
                }
            }
        });
        Ok(RcloneProcess {
            pid,
            exit,
            signals,
            task,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.exit.borrow().is_none()
    }

    /// How it ended, once it has.
    pub(crate) fn exit_status(&self) -> Option<String> {
        self.exit.borrow().clone()
    }

    pub(crate) fn signal(&self, signal: Signal) {
        let _ = self.signals.send(signal);
    }

    /// True when the child has exited within `limit`.
    pub(crate) async fn wait_exit(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.exit.wait_for(Option::is_some))
            .await
            .is_ok()
    }

    /// SIGTERM, `grace`, SIGKILL, `kill_wait`. Ok once it has exited.
    pub(crate) async fn terminate(
        &mut self,
        grace: Duration,
        kill_wait: Duration,
    ) -> Result<(), MountError> {
        if !self.is_alive() {
            return Ok(());
        }
        self.signal(Signal::SIGTERM);
        if self.wait_exit(grace).await {
            return Ok(());
        }
        tracing::warn!(pid = self.pid, "rclone ignored SIGTERM; sending SIGKILL");
        self.signal(Signal::SIGKILL);
        if self.wait_exit(kill_wait).await {
            return Ok(());
        }
        Err(MountError::Unkillable { pid: self.pid })
    }
}

impl Drop for RcloneProcess {
    /// Aborting the task drops the child, and `kill_on_drop` kills it (race
    /// free: tokio never signals a reaped child).
    fn drop(&mut self) {
        self.task.abort();
    }
}
