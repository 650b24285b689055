//! `bootstrap`: the operator CLI that runs at home. It bakes the image,
//! launches a run and fetches the result, reusing the engine library
//! (`runner`) for S3, the archive format and the Plex DB.
//!
//! Its subcommands arrive with the bootstrap issue; until then it only knows
//! its version, so that the workspace builds the binary users will run.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "bootstrap",
    version,
    about = "plex-burst at home: bake the image, launch a run, fetch the result",
    long_about = "plex-burst at home: bake the image, launch a run, fetch the result.\n\n\
                  This version has no subcommands yet; the runner (`runner --help`) carries the engine."
)]
struct Cli {}

fn main() {
    Cli::parse();
    eprintln!("bootstrap has no subcommands yet: see `bootstrap --help`");
    std::process::exit(2);
}
