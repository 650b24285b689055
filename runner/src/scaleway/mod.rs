//! The Scaleway API client: Instance, Block Storage, Marketplace and IAM
//! over `https://api.scaleway.com`, and the metadata service seen from
//! inside an instance. Facts come from `shared/reference/scaleway.md`.
//!
//! The runner uses it to read its own metadata and terminate its own
//! instance; bootstrap to bake images, launch runs and sweep leftovers.
//!
//! - [`Client`] carries the secret key (`X-Auth-Token`), retries what is safe
//!   to retry (see `client.rs`) and turns every refusal into a [`ScwError`]
//!   quoting Scaleway's message. Methods live per API: [`instance`],
//!   [`block`], [`marketplace`], [`iam`].
//! - [`Metadata`] talks to `169.254.42.42`; user data calls come from a
//!   source port below 1024 as the service demands.
//! - [`Zone`] is a validated zone name.

pub mod block;
pub mod client;
pub mod error;
pub mod iam;
pub mod instance;
pub mod marketplace;
pub mod metadata;
#[cfg(test)]
mod mock;
pub mod security_group;
pub mod zone;

pub use block::{Snapshot, Volume};
pub use client::{Client, DEFAULT_API_URL, RetryPolicy};
pub use error::ScwError;
pub use iam::{ApiKey, Application, Policy};
pub use instance::{
    CreateImage, CreateServer, Image, RootVolume, Server, ServerAction, ServerState, ServerType,
    ServerVolume, SizeConstraint, VolumeType,
};
pub use metadata::{DEFAULT_METADATA_URL, Metadata, MetadataConf};
pub use security_group::{CreateSecurityGroup, SecurityGroup, SecurityGroupRule};
pub use zone::{ZONES, Zone};
