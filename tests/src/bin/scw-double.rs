//! `scw-double`: a Scaleway API double (Instance, Block, Marketplace, IAM)
//! with the instance metadata service, for tests and the demo.

use std::process::ExitCode;

use clap::Parser;
use plex_burst_tests::scwdouble::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Api(args) => plex_burst_tests::scwdouble::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("scw-double: {error:#}");
            ExitCode::FAILURE
        }
    }
}
