//! The app-support folder as Plex lays it out, created on first start:
//! `Preferences.xml`, `Logs/Plex Media Server.log` and the library DB
//! under `Plug-in Support/Databases`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::fixture::{self, Spec};

pub const LIBRARY_DB: &str = "com.plexapp.plugins.library.db";

#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    pub preferences: PathBuf,
    pub log: PathBuf,
    pub library_db: PathBuf,
}

impl Layout {
    pub fn new(app_support: &Path) -> Layout {
        Layout {
            dir: app_support.to_path_buf(),
            preferences: app_support.join("Preferences.xml"),
            log: app_support.join("Logs/Plex Media Server.log"),
            library_db: app_support
                .join("Plug-in Support/Databases")
                .join(LIBRARY_DB),
        }
    }

    /// Creates the folders, and an empty library DB with the full Plex
    /// schema when there is none (an existing DB is used as is). Returns
    /// whether the DB was created.
    pub fn ensure(&self) -> Result<bool> {
        for dir in [self.log.parent(), self.library_db.parent()]
            .into_iter()
            .flatten()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        if self.library_db.exists() {
            return Ok(false);
        }
        // A fixture DB without libraries is exactly Plex's schema (tables,
        // indexes, virtual tables, `_icu` triggers) with its fixed rows
        // (migrations, the admin account): what a fresh server starts from.
        let empty = Spec {
            seed: rand::random(),
            media_root: "/data".into(),
            libraries: Vec::new(),
        };
        fixture::generate_db(&self.library_db, &empty)
            .with_context(|| format!("creating {}", self.library_db.display()))?;
        Ok(true)
    }
}
