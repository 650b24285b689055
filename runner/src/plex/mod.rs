//! Plex under supervision: its process ([`process`]), its HTTP API
//! ([`api`]), the prefs of a burst run ([`prefs`]), whether it is working
//! ([`idle`]), plex.tv ([`plextv`]), and the lifecycle tying them together
//! ([`server`]).

pub mod api;
mod error;
pub mod idle;
mod json;
pub mod plextv;
pub mod preferences;
pub mod prefs;
pub mod process;
pub mod server;
mod xml;

pub use error::PlexError;
pub use server::PlexServer;
