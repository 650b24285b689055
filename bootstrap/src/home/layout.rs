//! Where the home Plex keeps its data: the app-support folder of a native
//! install, of the official docker image's `/config`, or one given as is.

use std::path::{Path, PathBuf};

use runner::plex::preferences::Preferences;
use runner::secret::Secret;

use super::{BLOBS_DB, LIBRARY_DB};

/// A native Debian/Ubuntu package keeps its data here.
pub const NATIVE_APP_SUPPORT: &str =
    "/var/lib/plexmediaserver/Library/Application Support/Plex Media Server";

/// Below a docker `/config` volume (plexinc/pms-docker).
const DOCKER_APP_SUPPORT: &str = "Library/Application Support/Plex Media Server";

/// How the home Plex is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HomeKind {
    Native,
    /// `config_dir` is the host folder mounted as the container's `/config`.
    Docker {
        config_dir: PathBuf,
    },
    /// The `Plex Media Server` folder itself.
    AppSupport(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("no Plex library DB at {}: is the Plex data folder right?", .0.display())]
    NoLibrary(PathBuf),
    #[error("cannot read the home server's token: {0}")]
    Preferences(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeLayout {
    pub app_support_dir: PathBuf,
}

impl HomeLayout {
    pub fn new(kind: &HomeKind) -> HomeLayout {
        let app_support_dir = match kind {
            HomeKind::Native => PathBuf::from(NATIVE_APP_SUPPORT),
            HomeKind::Docker { config_dir } => config_dir.join(DOCKER_APP_SUPPORT),
            HomeKind::AppSupport(dir) => dir.clone(),
        };
        HomeLayout { app_support_dir }
    }

    /// `<app>/Plug-in Support/Databases`.
    pub fn databases_dir(&self) -> PathBuf {
        self.app_support_dir.join("Plug-in Support/Databases")
    }

    pub fn library_db(&self) -> PathBuf {
        self.databases_dir().join(LIBRARY_DB)
    }

    pub fn blobs_db(&self) -> PathBuf {
        self.databases_dir().join(BLOBS_DB)
    }

    pub fn preferences(&self) -> PathBuf {
        Preferences::path(&self.app_support_dir)
    }

    /// Fails unless the library DB is where this layout says.
    pub fn check(&self) -> Result<(), LayoutError> {
        let db = self.library_db();
        if db.is_file() {
            Ok(())
        } else {
            Err(LayoutError::NoLibrary(db))
        }
    }

    /// The home server's `PlexOnlineToken`, for its local API; `None` when
    /// it is unclaimed (or has no Preferences.xml yet). Never log it.
    pub fn token(&self) -> Result<Option<Secret>, LayoutError> {
        read_token(&self.app_support_dir)
    }
}

fn read_token(app_support: &Path) -> Result<Option<Secret>, LayoutError> {
    let prefs =
        Preferences::read(app_support).map_err(|e| LayoutError::Preferences(format!("{e:#}")))?;
    Ok(prefs.and_then(|p| p.online_token()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_give_the_plex_folders() {
        let native = HomeLayout::new(&HomeKind::Native);
        assert_eq!(
            native.library_db(),
            Path::new(
                "/var/lib/plexmediaserver/Library/Application Support/Plex Media Server/Plug-in Support/Databases/com.plexapp.plugins.library.db"
            )
        );
        let docker = HomeLayout::new(&HomeKind::Docker {
            config_dir: "/srv/plex/config".into(),
        });
        assert_eq!(
            docker.databases_dir(),
            Path::new(
                "/srv/plex/config/Library/Application Support/Plex Media Server/Plug-in Support/Databases"
            )
        );
        assert_eq!(
            docker.preferences(),
            Path::new(
                "/srv/plex/config/Library/Application Support/Plex Media Server/Preferences.xml"
            )
        );
        let given = HomeLayout::new(&HomeKind::AppSupport("/x/PMS".into()));
        assert_eq!(
            given.blobs_db(),
            Path::new("/x/PMS/Plug-in Support/Databases/com.plexapp.plugins.library.blobs.db")
        );
    }

    #[test]
    fn the_token_is_read_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let layout = HomeLayout::new(&HomeKind::AppSupport(dir.path().into()));
        assert!(layout.token().unwrap().is_none(), "no Preferences.xml yet");
        assert!(matches!(layout.check(), Err(LayoutError::NoLibrary(_))));
        std::fs::write(
            layout.preferences(),
            r#"<?xml version="1.0" encoding="utf-8"?><Preferences MachineIdentifier="m" PlexOnlineToken="TOKEN123abc"/>"#,
        )
        .unwrap();
        let token = layout.token().unwrap().expect("claimed");
        assert_eq!(token.expose(), "TOKEN123abc");
        assert!(!format!("{token:?} {token}").contains("TOKEN123abc"));
        std::fs::write(
            layout.preferences(),
            r#"<Preferences MachineIdentifier="m"/>"#,
        )
        .unwrap();
        assert!(layout.token().unwrap().is_none(), "unclaimed");
        std::fs::write(layout.preferences(), "<Preferences").unwrap();
        assert!(
            layout.token().is_err(),
            "garbage must not read as unclaimed"
        );
    }
}
