//! The `runner` command line: clap types only; `main.rs` dispatches.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use runner::plexdb::PathMapping;

#[derive(Debug, Parser)]
#[command(name = "runner", version, about = "plex-burst's on-instance engine")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run (or resume) the job a run.toml describes, then print its report.
    Run {
        #[arg(long, short, default_value = "/etc/plex-burst/run.toml")]
        config: PathBuf,
    },
    /// Watchdog (its own unit): end the instance at the run's deadline plus
    /// [termination] dead_man_grace, whatever the runner is doing.
    DeadMan {
        #[arg(long, short, default_value = "/etc/plex-burst/run.toml")]
        config: PathBuf,
    },
    /// Validate a run.toml and print the effective configuration, secrets masked.
    CheckConfig { file: PathBuf },
    /// Inspect or fix a Plex library database file.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Move a Databases folder to or from S3 as a run does (pull and push alone).
    Archive {
        #[command(subcommand)]
        command: ArchiveCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Integrity check that works on a Plex DB (per-table, or Plex SQLite).
    Check {
        db: PathBuf,
        /// Use Plex's own SQLite build instead of the per-table check.
        #[arg(long, conflicts_with = "plex_image")]
        plex_sqlite: Option<PathBuf>,
        /// Use the `Plex SQLite` inside this Plex image (`docker run`).
        #[arg(long)]
        plex_image: Option<String>,
        /// Threads for the per-table check (default: one per core).
        #[arg(long, value_name = "N")]
        jobs: Option<NonZeroUsize>,
    },
    /// Items per library and per type, deleted/unavailable, Sonic progress.
    Stats { db: PathBuf },
    /// Every library root and media root, and whether it lies under the mount.
    Coverage {
        db: PathBuf,
        #[arg(long)]
        mount: PathBuf,
        #[command(flatten)]
        maps: Mappings,
    },
    /// Rewrite leading path components (backup first, one transaction).
    Remap {
        db: PathBuf,
        #[command(flatten)]
        maps: Mappings,
        /// Where the backup goes (default: beside the DB).
        #[arg(long)]
        backup_dir: Option<PathBuf>,
        /// Count the rows that would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Copy into INTO the watch state HOME recorded after --since (one transaction).
    MergeWatch {
        home: PathBuf,
        into: PathBuf,
        /// Unix seconds: only home rows touched after this are merged.
        #[arg(long)]
        since: i64,
        /// Count what would be merged; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Rebuild a damaged DB by recovery into a new file (backup kept).
    Repair {
        db: PathBuf,
        #[arg(long)]
        backup_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct Mappings {
    /// A path mapping FROM=TO (whole leading path components); repeatable.
    #[arg(long = "map", value_name = "FROM=TO")]
    pub maps: Vec<PathMapping>,
}

#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Stream an archive from S3 into a Databases folder, verified, swapped in atomically.
    Pull {
        /// The run.toml whose [s3] section says where and how.
        #[arg(long, short)]
        config: PathBuf,
        key: String,
        dest: PathBuf,
        /// A manifest object to check the archive and every file against.
        #[arg(long)]
        manifest_key: Option<String>,
    },
    /// Stream a Databases folder to S3 as tar.zst, then its manifest beside it.
    Push {
        #[arg(long, short)]
        config: PathBuf,
        src: PathBuf,
        key: String,
    },
}
