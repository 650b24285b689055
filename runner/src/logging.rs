//! Structured, timestamped logs: to the journal under systemd, plain text on
//! a terminal (lessons.md, rule 26).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// Installs the global subscriber. `RUST_LOG` overrides the default level.
/// The AWS SDK's own logs stay at `warn`: at debug they would print request
/// headers, credentials included.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,aws_smithy_runtime=warn,aws_sdk_s3=warn,aws_config=warn,hyper=warn")
    });
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        registry
            .with(journald.with_syslog_identifier("plex-burst-runner".into()))
            .init();
        return;
    }
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .init();
}
