//! Test harnesses, doubles and fixture generators for plex-burst.

pub mod bins;
pub mod fixture;
pub mod faultproxy;
pub mod s3server;
