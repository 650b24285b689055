//! `bootstrap`'s library: each subcommand is a module the CLI dispatches to
//! and the tests call. The engine (S3, archive, Plex DB, Scaleway client)
//! is the runner's library, shared with the instance.

pub mod bucket_policy;
pub mod canary;
pub mod check;
pub mod cloud;
pub mod config;
pub mod cost;
pub mod estimate;
pub mod fetch;
pub mod grants;
pub mod guard;
pub mod home;
pub mod iam;
pub mod image;
pub mod launch;
pub mod notify;
pub mod plex_account;
pub mod progress;
pub mod records;
pub mod runs;
pub mod snapshot;
pub mod status;
pub mod sweep;
pub mod userdata;
