//! Progress of a long transfer: a bar redrawn on one line on a terminal, a
//! plain line every tenth otherwise (a log stays readable).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A callback for [`runner::transfer::pull_with_progress`]: bytes so far of
/// `total`.
pub fn bytes(total: u64, what: &str) -> impl FnMut(u64) + Send + 'static {
    let what = what.to_owned();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_message(what.clone());
        bar
    });
    let mut last_tenth = 0;
    move |seen| match &bar {
        Some(bar) => {
            bar.set_position(seen);
            if seen >= total {
                bar.finish_and_clear();
            }
        }
        None => {
            let tenth = (seen * 10).checked_div(total).unwrap_or(10);
            if tenth > last_tenth {
                last_tenth = tenth;
                eprintln!("{what}: {}% ({:.1} MB)", tenth * 10, seen as f64 / 1e6);
            }
        }
    }
}
