//! plex-burst's engine: everything the `runner` binary does on the instance,
//! and the parts `bootstrap` reuses at home (S3, archive format, Plex DB).
//!
//! One home per concept: see `docs/architecture.md`.

pub mod archive;
pub mod config;
pub mod logging;
pub mod mask;
pub mod mount;
pub mod notify;
pub mod pipe;
pub mod plex;
pub mod plexdb;
pub mod run;
pub mod s3;
pub mod scaleway;
pub mod secret;
pub mod systemd;
pub mod transfer;
