//! `plex-fixture`: writes fixture Plex library DBs, media trees and
//! app-support folders, and prints what it wrote as JSON.
//!
//! ```text
//! plex-fixture db --preset tiny --seed 7 --media-root /data/media OUT.db
//! plex-fixture db --preset demo --schema 1.41.3 OUT.db
//! plex-fixture media --preset user --max-files 5000 DIR
//! plex-fixture app-support --preset demo DIR
//! plex-fixture app-support --preset user --scale 0.25 --databases-gb 3.75 DIR
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use plex_burst_tests::fixture::{self, Spec, TreeFilter};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Generate Plex-schema fixture libraries")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a library DB (OUT must not exist).
    Db {
        #[command(flatten)]
        spec: SpecArgs,
        /// The Plex version whose real DB (in the shared folder's
        /// reference/real-plex-dbs) gives the schema.
        #[arg(long, default_value = fixture::DEFAULT_PLEX_VERSION)]
        schema: String,
        out: PathBuf,
    },
    /// Write the media tree matching the DB of the same spec under DIR.
    Media {
        #[command(flatten)]
        spec: SpecArgs,
        /// Write at most this many media files, spread over the libraries.
        #[arg(long)]
        max_files: Option<u64>,
        /// Only this library (repeatable).
        #[arg(long = "library")]
        libraries: Vec<String>,
        dir: PathBuf,
    },
    /// Write a Plex app-support folder (DB, backups, Preferences.xml, logs)
    /// under DIR.
    AppSupport {
        #[command(flatten)]
        spec: SpecArgs,
        /// Make the Databases folder this size (live DBs and dated backups):
        /// the blobs DB's Sonic data fills what the library DB leaves.
        #[arg(long)]
        databases_gb: Option<f64>,
        /// Dated backups of each DB, with --databases-gb.
        #[arg(long, default_value_t = fixture::FolderSize::USER.dated_backups, requires = "databases_gb")]
        dated_backups: u32,
        dir: PathBuf,
    },
}

#[derive(Args)]
struct SpecArgs {
    /// tiny, demo or user.
    #[arg(long, default_value = "tiny", conflicts_with = "spec")]
    preset: String,
    /// A JSON spec file instead of a preset.
    #[arg(long)]
    spec: Option<PathBuf>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    media_root: Option<String>,
    /// Every item count times this (e.g. 0.25 for a quarter of the user's
    /// library).
    #[arg(long)]
    scale: Option<f64>,
}

impl SpecArgs {
    fn resolve(&self) -> Result<Spec> {
        let mut spec = match &self.spec {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read spec {}", path.display()))?;
                serde_json::from_str(&text)
                    .with_context(|| format!("invalid spec {}", path.display()))?
            }
            None => Spec::preset(&self.preset)?,
        };
        if let Some(seed) = self.seed {
            spec.seed = seed;
        }
        if let Some(root) = &self.media_root {
            spec.media_root = root.clone();
        }
        match self.scale {
            Some(factor) => spec.scaled_by(factor),
            None => Ok(spec),
        }
    }
}

/// Each file of the Databases folder with its size in bytes.
fn folder_files(dir: &std::path::Path) -> Result<serde_json::Value> {
    let mut files = serde_json::Map::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        files.insert(name, entry.metadata()?.len().into());
    }
    Ok(files.into())
}

fn main() {
    if let Err(error) = run(Cli::parse()) {
        eprintln!("plex-fixture: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let started = Instant::now();
    let report = match cli.command {
        Command::Db { spec, schema, out } => {
            let summary = fixture::generate_db_for(&out, &spec.resolve()?, &schema)?;
            json!({ "db": out, "schema": schema, "summary": summary })
        }
        Command::Media {
            spec,
            max_files,
            libraries,
            dir,
        } => {
            let filter = TreeFilter {
                max_files,
                libraries: (!libraries.is_empty()).then_some(libraries),
            };
            let summary = fixture::write_media_subset(&dir, &spec.resolve()?, &filter)?;
            json!({ "dir": dir, "summary": summary })
        }
        Command::AppSupport {
            spec,
            databases_gb,
            dated_backups,
            dir,
        } => {
            let spec = spec.resolve()?;
            let app = match databases_gb {
                Some(gb) => {
                    let size = fixture::FolderSize {
                        total_bytes: (gb * 1e9) as u64,
                        dated_backups,
                    };
                    fixture::write_app_support_sized(&dir, &spec, size)?
                }
                None => fixture::write_app_support(&dir, &spec)?,
            };
            let files = folder_files(&app.databases)?;
            json!({ "app_support": app.dir, "library_db": app.library_db, "databases": files, "summary": app.summary })
        }
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!(
        "plex-fixture: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
