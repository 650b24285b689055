//! The header read every scanned file must pass: open it and read its
//! first bytes within a timeout. A degraded mount makes such reads fail
//! or hang; a hung read must never hang the server, so each read runs on
//! a reader thread that is abandoned (left blocked) after the timeout,
//! and past a cap of abandoned readers the rest of the scan's files count
//! as unreadable without being tried.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// First bytes read; the file's size.
    Readable(u64),
    Missing,
    Failed(String),
    TimedOut,
    /// Not tried: too many reads of this scan hung already.
    NotTried,
    /// Not tried: the scan was cancelled or the server is stopping.
    Stopped,
}

impl Outcome {
    pub fn size(&self) -> Option<u64> {
        match self {
            Outcome::Readable(size) => Some(*size),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    /// Reads in flight at once.
    pub lanes: usize,
    /// Hung reads after which the remaining files are not tried.
    pub max_hung: usize,
}

/// Probes every path; `outcomes[i]` is for `paths[i]`. `stop` is polled
/// between files, `progress` gets the count done every 100 ms.
pub fn probe_all(
    paths: &[PathBuf],
    limits: Limits,
    stop: &(dyn Fn() -> bool + Sync),
    progress: &dyn Fn(usize),
) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let hung = AtomicUsize::new(0);
    let mut outcomes = vec![Outcome::Stopped; paths.len()];
    std::thread::scope(|scope| {
        let lanes: Vec<_> = (0..limits.lanes.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut lane = Lane::default();
                    let mut results = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(path) = paths.get(i) else {
                            return results;
                        };
                        let outcome = if stop() {
                            Outcome::Stopped
                        } else if hung.load(Ordering::SeqCst) >= limits.max_hung {
                            Outcome::NotTried
                        } else {
                            lane.probe(path, limits.timeout)
                        };
                        if outcome == Outcome::TimedOut {
                            hung.fetch_add(1, Ordering::SeqCst);
                        }
                        results.push((i, outcome));
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        while lanes.iter().any(|lane| !lane.is_finished()) {
            progress(done.load(Ordering::SeqCst));
            std::thread::sleep(Duration::from_millis(100));
        }
        for lane in lanes {
            // A lane only ends by returning its results.
            if let Ok(results) = lane.join() {
                for (i, outcome) in results {
                    outcomes[i] = outcome;
                }
            }
        }
    });
    progress(done.load(Ordering::SeqCst));
    outcomes
}

/// One read in flight at a time, on a reader thread that is replaced when
/// it hangs.
#[derive(Default)]
struct Lane {
    reader: Option<(Sender<PathBuf>, Receiver<Outcome>)>,
}

impl Lane {
    fn probe(&mut self, path: &Path, timeout: Duration) -> Outcome {
        if self.reader.is_none() {
            match spawn_reader() {
                Ok(reader) => self.reader = Some(reader),
                Err(error) => return Outcome::Failed(format!("no reader thread: {error}")),
            }
        }
        let Some((paths, outcomes)) = &self.reader else {
            return Outcome::Failed("no reader thread".into());
        };
        if paths.send(path.to_path_buf()).is_err() {
            self.reader = None;
            return Outcome::Failed("reader thread ended".into());
        }
        match outcomes.recv_timeout(timeout) {
            Ok(outcome) => outcome,
            Err(RecvTimeoutError::Timeout) => {
                // Abandon it: the thread stays blocked in the read and ends
                // by itself if the read ever returns.
                self.reader = None;
                Outcome::TimedOut
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.reader = None;
                Outcome::Failed("reader thread ended".into())
            }
        }
    }
}

fn spawn_reader() -> std::io::Result<(Sender<PathBuf>, Receiver<Outcome>)> {
    let (path_tx, path_rx) = mpsc::channel::<PathBuf>();
    let (outcome_tx, outcome_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("header-read".into())
        .spawn(move || {
            for path in path_rx {
                if outcome_tx.send(read_header(&path)).is_err() {
                    return;
                }
            }
        })?;
    Ok((path_tx, outcome_rx))
}

fn read_header(path: &Path) -> Outcome {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == ErrorKind::NotFound => return Outcome::Missing,
        Err(error) => return Outcome::Failed(error.to_string()),
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut header = [0u8; 64];
    match file.read(&mut header) {
        Ok(0) => Outcome::Failed("empty file".into()),
        Ok(_) => Outcome::Readable(size),
        Err(error) => Outcome::Failed(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hung_reads_time_out_and_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.mkv");
        std::fs::write(&good, b"\x1a\x45\xdf\xa3 header").unwrap();
        let empty = dir.path().join("empty.mkv");
        std::fs::write(&empty, b"").unwrap();
        let mut paths = vec![good.clone(), empty, dir.path().join("absent.mkv")];
        for n in 0..3 {
            let fifo = dir.path().join(format!("fifo{n}.mkv"));
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
            paths.push(fifo);
        }
        paths.push(good);
        let limits = Limits {
            timeout: Duration::from_millis(300),
            lanes: 1,
            max_hung: 2,
        };
        // The FIFOs never get a writer: probe_all returns only if it gave
        // up on them. Two minutes is a hang guard, not a timing test.
        let (done, outcomes) = mpsc::channel();
        std::thread::spawn(move || done.send(probe_all(&paths, limits, &|| false, &|_| {})));
        let outcomes = outcomes
            .recv_timeout(Duration::from_secs(120))
            .expect("hang guard: probe_all waited for reads that never return");
        assert!(matches!(outcomes[0], Outcome::Readable(11)), "{outcomes:?}");
        assert!(matches!(outcomes[1], Outcome::Failed(_)), "{outcomes:?}");
        assert_eq!(outcomes[2], Outcome::Missing);
        assert_eq!(outcomes[3], Outcome::TimedOut);
        assert_eq!(outcomes[4], Outcome::TimedOut);
        assert_eq!(outcomes[5], Outcome::NotTried);
        assert_eq!(
            outcomes[6],
            Outcome::NotTried,
            "past the cap nothing is tried"
        );
    }
}
