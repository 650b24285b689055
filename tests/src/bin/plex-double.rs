//! `plex-double`: a Plex Media Server double (`server`) and a plex.tv
//! double (`plextv`) for tests, the demo and a local VM; in the stand-in
//! Plex image also its `/init`, `/healthcheck.sh`, `Plex Media Server` and
//! `Plex SQLite`, told apart by the name it is started by.

use std::process::ExitCode;

use clap::Parser;
use plex_burst_tests::plexdouble::cli::{Cli, Command};
use plex_burst_tests::plexdouble::{container, plextv, pms, sqlite_shell};

fn main() -> ExitCode {
    let cli = Cli::parse_from(container::command_line(std::env::args_os().collect()));
    let result = match cli.command {
        Command::Server(args) => pms::run(args),
        Command::Plextv(args) => plextv::run(args),
        Command::ScannerChild(_) => pms::scanner_process::child_main(),
        Command::Init => container::init(),
        Command::Healthcheck => return container::healthcheck(),
        Command::Sqlite(args) => return sqlite_shell::main(&args.args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("plex-double: {error:#}");
            ExitCode::FAILURE
        }
    }
}
