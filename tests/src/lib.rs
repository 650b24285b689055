
pub mod fixture;
pub mod faultproxy;
pub mod s3server;
