//! `bootstrap`: the operator CLI that runs at home. `cli.rs` holds the
//! command line, this file only dispatches; the work is in the library.

mod cli;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;

use bootstrap::config::BootstrapConfig;
use bootstrap::{fetch, image, launch, snapshot, status, sweep};
use cli::{Cli, Command, ImageCommand, NotifyCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, causes chained: what failed and why, masked (a
            // cause may quote a presigned URL or an API's reply).
            eprintln!("{}", runner::mask::text(&format!("error: {e:#}")));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let cfg = BootstrapConfig::load(&cli.config)?;
    match cli.command {
        Command::Check => bootstrap::check::check(&cfg),
        Command::Image {
            command: ImageCommand::Build { plex_version },
        } => image::build_command(&cfg, plex_version.as_deref()).await,
        Command::Snapshot { stop_plex } => snapshot::snapshot(&cfg, stop_plex).await,
        Command::Launch {
            dry_run,
            canary,
            reference,
            no_build,
        } => {
            let opts = launch::LaunchOptions {
                dry_run,
                canary,
                reference,
                no_build,
            };
            launch::launch(&cfg, &opts).await
        }
        Command::Status {
            run: Some(run),
            link,
            open,
            ..
        } if link || open => status::report_link(&cfg, &run, open).await,
        Command::Status {
            run, watch, every, ..
        } => {
            let watch = watch.then(|| Duration::from_secs(every.max(1)));
            status::status(&cfg, run.as_deref(), watch).await
        }
        Command::Fetch {
            run,
            wait,
            dry_run,
            delete_checkpoints,
            trust_bucket_record,
            canary,
        } => {
            if canary {
                return fetch::fetch_canary(&cfg, run.as_deref(), wait).await;
            }
            let opts = fetch::FetchOptions {
                wait,
                dry_run,
                delete_checkpoints,
                trust_bucket_record,
            };
            fetch::fetch(&cfg, run.as_deref(), &opts).await
        }
        Command::Sweep { yes } => sweep::sweep(&cfg, yes).await,
        Command::Notify {
            command: NotifyCommand::Test,
        } => bootstrap::notify::test(&cfg).await,
    }
}
