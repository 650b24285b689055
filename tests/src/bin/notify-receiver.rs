//! `notify-receiver --listen ADDR`: the notification receivers of
//! `plex_burst_tests::notifyreceiver` as a process (the demo's stand-in
//! for an ntfy server and friends). Each request is printed on stdout as
//! one JSON line: service, path, status, title and message.

use std::time::Duration;

use clap::Parser;
use plex_burst_tests::notifyreceiver::Receiver;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
}

fn main() {
    let args = Args::parse();
    let receiver = Receiver::start_on(args.listen);
    eprintln!("notify-receiver: listening on {}", receiver.url(""));
    let mut printed = 0;
    loop {
        let got = receiver.received();
        for r in &got[printed..] {
            let title = r.header("title").map(str::to_string);
            let line = serde_json::json!({
                "service": r.service, "path": r.path, "status": r.status,
                "title": title, "message": r.text(),
            });
            println!("{line}");
        }
        printed = got.len();
        std::thread::sleep(Duration::from_millis(100));
    }
}
