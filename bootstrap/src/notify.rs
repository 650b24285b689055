//! Bootstrap's own notifications (`[[notify]]`): a result installed at
//! home, leftovers found by `sweep`, and `bootstrap notify test`, which
//! sends one to every target and says how each went.

use anyhow::{Result, bail};
use runner::notify::{Event, EventKind, Notifier};

use crate::config::BootstrapConfig;

/// Sends `event` to the targets that want it, waiting (boundedly) for the
/// outcome: the command that reports is about to exit.
pub async fn tell(cfg: &BootstrapConfig, event: Event) {
    if cfg.notify().is_empty() {
        return;
    }
    Notifier::new(cfg.notify().to_vec(), Default::default())
        .send(&event.sender("bootstrap"))
        .await;
}

/// `bootstrap notify test`.
pub async fn test(cfg: &BootstrapConfig) -> Result<()> {
    if cfg.notify().is_empty() {
        bail!(
            "bootstrap.toml has no [[notify]] target: nothing to test (README, \"Notifications\")"
        );
    }
    let event = Event::new(
        EventKind::Test,
        None,
        "test",
        "A test from `bootstrap notify test`: this target gets plex-burst's notifications.".into(),
    )
    .sender("bootstrap");
    let deliveries = Notifier::new(cfg.notify().to_vec(), Default::default())
        .send(&event)
        .await;
    let mut failed = 0;
    for d in &deliveries {
        let tries = if d.attempts == 1 {
            "1 attempt".to_string()
        } else {
            format!("{} attempts", d.attempts)
        };
        match &d.outcome {
            Ok(()) => println!(
                "sent      {} ({tries}, {:.1} s)",
                d.target,
                d.took.as_secs_f64()
            ),
            Err(e) => {
                failed += 1;
                println!(
                    "NOT SENT  {}: {e} ({tries}, {:.1} s)",
                    d.target,
                    d.took.as_secs_f64()
                );
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} notification targets did not get the test",
            deliveries.len()
        );
    }
    Ok(())
}
