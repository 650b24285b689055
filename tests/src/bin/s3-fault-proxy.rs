//! A fault-injecting proxy in front of an S3 server, for scripts.
//!
//! Prints `listening on http://ADDR` once ready. Each line read on stdin
//! replaces the plan (same syntax as `--plan`) and prints the counters of
//! the plan it replaces. Runs until killed or stdin ends with `--exit-on-eof`.

use std::io::{BufRead, Write};
use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use plex_burst_tests::faultproxy::{FaultProxy, parse_plan};

#[derive(Parser)]
#[command(about = "TCP proxy that injects S3 faults: resets, 500/503, stalls")]
struct Args {
    /// Address of the S3 server to forward to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// FAULT[,first=N|,every=K][,match=TEXT]; FAULT: none, reset,
    /// reset-after=BYTES, 500, 503, stall=SECONDS, stall-after=BYTES.
    #[arg(long, default_value = "none")]
    plan: String,
    /// Exit when stdin ends (default: keep running until killed).
    #[arg(long)]
    exit_on_eof: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = parse_plan(&args.plan)
        .map_err(anyhow::Error::msg)
        .context("--plan")?;
    let proxy = FaultProxy::start_on(args.listen, args.upstream)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    proxy.set(plan);
    let mut out = std::io::stdout();
    writeln!(out, "listening on {}", proxy.endpoint())?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading stdin")?;
        match parse_plan(&line) {
            Ok(plan) => {
                writeln!(out, "previous plan: {}", proxy.counts())?;
                proxy.set(plan);
            }
            Err(e) => writeln!(out, "ignored: {e}")?,
        }
        out.flush()?;
    }
    if !args.exit_on_eof {
        loop {
            std::thread::park();
        }
    }
    Ok(())
}
