//! The home Plex as `bootstrap.toml`'s `[home]` section describes it.

use super::control::{HomePlex, PlexControl};
use super::layout::{HomeKind, HomeLayout};
use crate::config::{HomeControl, HomeLayoutKind, HomeSettings};

pub fn layout_of(home: &HomeSettings) -> HomeLayout {
    HomeLayout::new(&match &home.layout {
        HomeLayoutKind::Native => HomeKind::Native,
        HomeLayoutKind::Docker { config_dir } => HomeKind::Docker {
            config_dir: config_dir.clone(),
        },
        HomeLayoutKind::Custom { app_support_dir } => HomeKind::AppSupport(app_support_dir.clone()),
    })
}

/// The home server with its token from Preferences.xml; an unreadable
/// file is reported and the API is tried without a token (an unclaimed
/// server, or `allowedNetworks`, may still answer).
pub fn plex_of(home: &HomeSettings, layout: &HomeLayout) -> HomePlex {
    let control = match &home.control {
        HomeControl::Docker { container } => PlexControl::Docker {
            container: container.clone(),
        },
        HomeControl::Systemd { unit } => PlexControl::Systemd { unit: unit.clone() },
        HomeControl::Command { stop, start } => PlexControl::Command {
            stop: stop.clone(),
            start: start.clone(),
        },
    };
    let token = layout.token().unwrap_or_else(|e| {
        tracing::warn!("{e}; trying the home Plex without a token");
        None
    });
    HomePlex::new(control, Some(&home.url), token)
}
