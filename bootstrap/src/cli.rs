//! The `bootstrap` command line: clap types only; `main.rs` dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bootstrap",
    version,
    about = "plex-burst at home: bake the image, launch a run, fetch the result"
)]
pub struct Cli {
    /// The configuration (see bootstrap/bootstrap.example.toml).
    #[arg(
        long,
        short,
        global = true,
        default_value = "bootstrap.toml",
        env = "PLEX_BURST_CONFIG"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate bootstrap.toml and print the run.toml a launch would send.
    Check,
    /// The image runs boot from.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Push a consistent copy of the home Plex DB as the runs' reference.
    Snapshot {
        /// Stop Plex for the copy (and start it again) instead of an online
        /// backup while it runs.
        #[arg(long)]
        stop_plex: bool,
    },
    /// Start a run: check, create a per-run key and the server, power on.
    Launch {
        /// Print the plan and the cost estimate; create nothing.
        #[arg(long)]
        dry_run: bool,
        /// A rehearsal for cents: the same launch on `[canary]`'s cheap
        /// type and short deadline, each library's first folder scanned,
        /// Sonic on a few tracks; `fetch --canary` judges it.
        #[arg(long)]
        canary: bool,
        /// Reference archive key (default: what `snapshot` writes).
        #[arg(long)]
        reference: Option<String>,
        /// Fail instead of baking a missing image.
        #[arg(long)]
        no_build: bool,
    },
    /// Where a run is (all runs without RUN).
    Status {
        run: Option<String>,
        /// Refresh until the run ends.
        #[arg(long)]
        watch: bool,
        /// Seconds between refreshes with --watch.
        #[arg(long, default_value_t = 60)]
        every: u64,
        /// Print a link to the run's report page (runs/RUN/report.html),
        /// valid for 6 hours: anyone holding it can read the page.
        #[arg(long, requires = "run", conflicts_with = "watch")]
        link: bool,
        /// Open the report page in the desktop's browser (the link is
        /// printed too, and alone if no browser opens).
        #[arg(long, requires = "run", conflicts_with = "watch")]
        open: bool,
    },
    /// Install a finished run's DB into the home Plex, then clean the cloud.
    Fetch {
        /// Default: the latest launched run.
        run: Option<String>,
        /// Wait for the run to finish first.
        #[arg(long)]
        wait: bool,
        /// Show what would change; touch nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also delete the run's checkpoints in S3.
        #[arg(long)]
        delete_checkpoints: bool,
        /// A run launched from another machine (no record kept here): act
        /// on the bucket's launch record, each deletion still checked.
        #[arg(long)]
        trust_bucket_record: bool,
        /// Judge a canary: download and check its result, merge it into a
        /// scratch copy (the home Plex is not touched), clean the cloud,
        /// print and record the verdict.
        #[arg(long, conflicts_with_all = ["dry_run", "delete_checkpoints"])]
        canary: bool,
    },
    /// List what plex-burst left billed in the cloud; delete with --yes.
    Sweep {
        #[arg(long)]
        yes: bool,
    },
    /// Notifications (`[[notify]]` in bootstrap.toml).
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test notification to every target and say how each went.
    Test,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Bake the image for the current recipe (reused when it exists).
    Build {
        /// The Plex version to pre-pull (default: the reference's).
        #[arg(long)]
        plex_version: Option<String>,
    },
}
