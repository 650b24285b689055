//! Test harnesses, doubles and fixture generators for plex-burst.

pub mod bins;
pub mod faultproxy;
pub mod fixture;
pub mod http;
pub mod plexdouble;
pub mod s3server;
pub mod scwdouble;
