//! The home Plex: where it keeps its data ([`layout`]), how to stop and
//! start it ([`control`]), a consistent copy of its DB for a run
//! ([`snapshot`]), backups of its `Databases` folder ([`backup`]), Plex's
//! own dated backups, which stay where they are ([`dated`]), and
//! installing a run's result without losing anything ([`install`], with
//! [`swap`], [`counts`] and the dry run in [`preview`]).

pub mod backup;
pub mod control;
pub mod counts;
pub mod dated;
mod display;
mod from_config;
pub mod install;
pub mod layout;
pub mod preview;
pub mod rehearse;
pub mod snapshot;
pub mod swap;

pub use backup::{Backup, BackupError, Digest, digest_of};
pub use control::{ControlError, HomePlex, PlexControl};
pub use from_config::{layout_of, plex_of};
pub use install::{InstallError, InstallPlan, InstallReport, Step, install};
pub use layout::{HomeKind, HomeLayout, LayoutError};
pub use preview::{InstallPreview, plan_install};
pub use snapshot::{SnapshotCopy, SnapshotError, consistent_copy, library_roots};

/// The library DB's file name.
pub const LIBRARY_DB: &str = "com.plexapp.plugins.library.db";
/// The blobs DB's file name.
pub const BLOBS_DB: &str = "com.plexapp.plugins.library.blobs.db";
