//! Test harnesses, doubles and fixture generators for plex-burst.

pub mod bins;
pub mod bootstrap_world;
pub mod browser;
pub mod faultproxy;
pub mod fixture;
pub mod http;
pub mod leaks;
pub mod notifyreceiver;
pub mod plex_image;
pub mod plexdouble;
pub mod real_dbs;
pub mod recorded;
pub mod s3server;
pub mod scwdouble;

/// The address the test servers listen on: loopback, unless
/// `PB_TEST_LISTEN_HOST` names another (the VM test's servers must be
/// reachable from the guest, on the gateway of its network namespace).
pub fn listen_host() -> String {
    std::env::var("PB_TEST_LISTEN_HOST").unwrap_or_else(|_| "127.0.0.1".into())
}
