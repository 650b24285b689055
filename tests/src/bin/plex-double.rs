//! `plex-double`: a Plex Media Server double (`server`) and a plex.tv
//! double (`plextv`) for tests, the demo and a local VM.

use std::process::ExitCode;

use clap::Parser;
use plex_burst_tests::plexdouble::cli::{Cli, Command};
use plex_burst_tests::plexdouble::{plextv, pms};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => pms::run(args),
        Command::Plextv(args) => plextv::run(args),
        Command::ScannerChild(_) => pms::scanner_process::child_main(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("plex-double: {error:#}");
            ExitCode::FAILURE
        }
    }
}
