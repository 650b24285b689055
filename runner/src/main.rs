//! `runner`: dispatch only. The work is in the `runner` library.

mod cli;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;

use cli::{ArchiveCommand, Cli, Command, DbCommand};
use runner::config::RunConfig;
use runner::{plexdb, transfer};

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    // The dead-man's journal lines must not pass for the runner's.
    runner::logging::init_as(match cli.command {
        Command::DeadMan { .. } => "plex-burst-deadman",
        _ => "plex-burst-runner",
    });
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            // One line a user understands: the chain of causes, outermost
            // first, masked (a cause may quote a URL or a header).
            eprintln!("{}", runner::mask::text(&format!("error: {e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// glibc gives every thread that allocates an arena of its own and keeps
/// freed memory there: with the S3 engine's many threads, RSS would grow far
/// past the bytes actually buffered. Two arenas keep it near them.
fn limit_malloc_arenas() {
    // SAFETY: called first thing, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// A quarantined run finished its work but published nothing to install.
const EXIT_QUARANTINED: u8 = 3;

fn dispatch(command: Command) -> Result<ExitCode> {
    let done = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    match command {
        Command::Run { config } => run(&config),
        Command::DeadMan { config } => done(dead_man(&config)),
        Command::CheckConfig { file } => done(check_config(&file)),
        Command::Db { command } => done(db(command)),
        Command::Archive { command } => done(archive(command)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(config: &Path) -> Result<ExitCode> {
    let cfg = RunConfig::load(config)?;
    let rt = runtime()?;
    let report = rt.block_on(runner::run::execute(cfg));
    // A stopped run may leave extraction or packing threads winding down:
    // give them a moment, never the rest of their work.
    rt.shutdown_timeout(std::time::Duration::from_secs(10));
    let report = report?;
    print!("{}", runner::mask::text(&report.to_string()));
    Ok(match report.quarantine {
        Some(_) => ExitCode::from(EXIT_QUARANTINED),
        None => ExitCode::SUCCESS,
    })
}

/// Fails only on a bad config: everything after is logged and retried.
fn dead_man(config: &Path) -> Result<()> {
    let cfg = RunConfig::load(config)?;
    runtime()?.block_on(runner::run::deadman::watch(&cfg));
    Ok(())
}

fn check_config(file: &Path) -> Result<()> {
    let cfg = RunConfig::load(file)?;
    print!("{}", cfg.effective_toml());
    eprintln!("{}: valid", file.display());
    Ok(())
}

/// The DB toolkit's reports are printed as JSON: readable, and scriptable.
fn db(command: DbCommand) -> Result<()> {
    match command {
        DbCommand::Check {
            db,
            plex_sqlite,
            plex_image,
            jobs,
        } => {
            let tool = plex_sqlite
                .map(plexdb::PlexSqlite::Program)
                .or(plex_image.map(plexdb::PlexSqlite::Image));
            let report = match jobs {
                Some(jobs) => plexdb::integrity::check_with(&db, tool.as_ref(), jobs)?,
                None => plexdb::integrity::check(&db, tool.as_ref())?,
            };
            print_json(&report)
        }
        DbCommand::Stats { db } => print_json(&plexdb::stats::collect(&db)?),
        DbCommand::Coverage { db, mount, maps } => {
            let report = plexdb::coverage::report(&db, &maps.maps, &mount)?;
            print_json(&report)?;
            Ok(report.ensure_covered()?)
        }
        DbCommand::Remap {
            db,
            maps,
            backup_dir,
            dry_run,
        } => {
            let mappings = maps.maps;
            if mappings.is_empty() {
                bail!("give at least one --map FROM=TO");
            }
            if dry_run {
                print_json(&plexdb::remap::dry_run(&db, &mappings)?)
            } else {
                print_json(&plexdb::remap::apply(
                    &db,
                    &mappings,
                    &backup_dir.unwrap_or_else(|| beside(&db)),
                )?)
            }
        }
        DbCommand::MergeWatch {
            home,
            into,
            since,
            dry_run,
        } => print_json(&if dry_run {
            plexdb::watchstate::preview(&home, &into, since)?
        } else {
            plexdb::watchstate::merge(&home, &into, since)?
        }),
        DbCommand::Repair { db, backup_dir } => print_json(&plexdb::repair::recover(
            &db,
            &backup_dir.unwrap_or_else(|| beside(&db)),
        )?),
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn archive(command: ArchiveCommand) -> Result<()> {
    match command {
        ArchiveCommand::Pull {
            config,
            key,
            dest,
            manifest_key,
        } => {
            let cfg = RunConfig::load(&config)?;
            runtime()?.block_on(async {
                let bucket = runner::s3::Bucket::new(
                    &cfg.s3_connection(),
                    cfg.s3_bucket(),
                    Default::default(),
                );
                let manifest = match manifest_key {
                    Some(k) => Some(transfer::fetch_manifest(&bucket, &k).await?),
                    None => None,
                };
                let limits = cfg.pull_limits();
                let pulled =
                    transfer::pull_bounded(&bucket, &key, &dest, manifest, limits, |_| {}).await?;
                println!(
                    "pulled s3://{}/{key} ({} bytes, sha256 {}) into {}: {} files, {} bytes",
                    bucket.name(),
                    pulled.download.bytes,
                    pulled.download.sha256,
                    dest.display(),
                    pulled.unpack.files.len(),
                    pulled.unpack.bytes_written
                );
                Ok(())
            })
        }
        ArchiveCommand::Push { config, src, key } => {
            let cfg = RunConfig::load(&config)?;
            runtime()?.block_on(async {
                let bucket = runner::s3::Bucket::new(&cfg.s3_connection(), cfg.s3_bucket(), Default::default());
                let pushed = transfer::push(&bucket, &src, &key, Default::default(), |_| {}).await?;
                println!(
                    "pushed {} to s3://{}/{key}: {} files, {} bytes in {} parts, sha256 {}; manifest {}",
                    src.display(),
                    bucket.name(),
                    pushed.manifest.files.len(),
                    pushed.upload.bytes,
                    pushed.upload.parts,
                    pushed.upload.sha256,
                    pushed.manifest_key
                );
                Ok(())
            })
        }
    }
}

/// The default backup folder: beside the DB, so it is on the same disk.
fn beside(db: &Path) -> PathBuf {
    db.parent()
        .unwrap_or(Path::new("."))
        .join("plex-burst-backups")
}
