//! The `Plex Media Scanner` process. Supervisors (the runner, and people)
//! judge "is Plex still working?" partly by whether a process of that name
//! exists, so while the double scans or analyses it keeps a child whose
//! argv[0] and comm are the scanner's: this binary re-executed with a
//! hidden subcommand that only waits.

use std::ffi::CStr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

pub const SCANNER_NAME: &str = "Plex Media Scanner";
const SUBCOMMAND: &str = "scanner-child";

pub struct ScannerProcess {
    child: Child,
}

impl ScannerProcess {
    /// `args` say what the real scanner would be doing (`--scan
    /// --section 3`); they only show in its command line.
    pub fn spawn(args: &[String]) -> Result<ScannerProcess> {
        // /proc/self/exe still works when the binary file was replaced
        // (e.g. rebuilt) while the server runs.
        let child = Command::new("/proc/self/exe")
            .arg0(SCANNER_NAME)
            .arg(SUBCOMMAND)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the Plex Media Scanner stand-in")?;
        Ok(ScannerProcess { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ScannerProcess {
    fn drop(&mut self) {
        // Already gone is fine.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's life: named like the scanner, it waits until killed or
/// until its parent dies (a crashed server must not leave it behind).
pub fn child_main() -> ! {
    let name: &CStr = c"Plex Media Scanner";
    // The kernel keeps 15 bytes of it as comm: "Plex Media Scan".
    let _ = nix::sys::prctl::set_name(name);
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let parent = nix::unistd::getppid();
    loop {
        if nix::unistd::getppid() != parent {
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
