//! `Plex SQLite`: Plex's own build of the sqlite3 shell, which has the
//! modules and collations of a Plex DB, so its `PRAGMA integrity_check`
//! checks the whole file. It ships with every Plex: in a native install's
//! folder, and inside the Plex image, where a throw-away container runs it
//! on the DB's folder (no network; as the DB's owner, so the `-shm` it may
//! leave is Plex's to reuse).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::integrity::{CheckMethod, IntegrityReport};
use super::{PlexDbError, first_line};

/// Where Plex keeps its shell, in a native install and in the image.
pub const NATIVE_PATH: &str = "/usr/lib/plexmediaserver/Plex SQLite";

/// Where the container sees the DB's folder.
const IN_CONTAINER: &str = "/plex-burst-db";

/// How to run Plex's shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlexSqlite {
    /// A shell on this machine (a native install's, or any sqlite3 shell).
    Program(PathBuf),
    /// The shell inside a Plex image (`plexinc/pms-docker:1.41.3...`), run
    /// with `docker run --rm`.
    Image(String),
}

impl PlexSqlite {
    /// A native install's shell, when this machine has one.
    pub fn native() -> Option<PlexSqlite> {
        let path = Path::new(NATIVE_PATH);
        path.exists()
            .then(|| PlexSqlite::Program(path.to_path_buf()))
    }

    /// What ran, for reports.
    pub fn describe(&self) -> String {
        match self {
            PlexSqlite::Program(path) => path.display().to_string(),
            PlexSqlite::Image(image) => format!("{NATIVE_PATH} in {image}"),
        }
    }

    /// The command line checking `db`.
    pub fn command(&self, db: &Path) -> Result<Command, PlexDbError> {
        let sql = "PRAGMA integrity_check;";
        match self {
            PlexSqlite::Program(path) => {
                let mut cmd = Command::new(path);
                cmd.arg("-readonly").arg(db).arg(sql);
                Ok(cmd)
            }
            PlexSqlite::Image(image) => {
                let absolute = std::path::absolute(db).map_err(|e| PlexDbError::io(db, e))?;
                let (Some(dir), Some(name)) = (absolute.parent(), absolute.file_name()) else {
                    return Err(PlexDbError::NotADatabase(db.to_path_buf()));
                };
                let owner = std::fs::metadata(&absolute).map_err(|e| PlexDbError::io(db, e))?;
                let mut cmd = Command::new("docker");
                cmd.args([
                    "run",
                    "--rm",
                    "--pull",
                    "never",
                    "--network",
                    "none",
                    "--user",
                ])
                .arg(format!("{}:{}", owner.uid(), owner.gid()))
                .arg("--volume")
                .arg(format!("{}:{IN_CONTAINER}", dir.display()))
                .args(["--entrypoint", NATIVE_PATH, image, "-readonly"])
                .arg(Path::new(IN_CONTAINER).join(name))
                .arg(sql);
                Ok(cmd)
            }
        }
    }

    /// Runs the check: `ok`, or one line per problem.
    pub(super) fn check(&self, db: &Path) -> Result<IntegrityReport, PlexDbError> {
        let tool = PathBuf::from(self.describe());
        let output = self.command(db)?.output().map_err(|e| PlexDbError::Tool {
            tool: tool.clone(),
            path: db.into(),
            detail: format!("cannot run: {e}"),
        })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("*** in database"))
            .collect();
        if output.status.success() && lines == ["ok"] {
            return Ok(IntegrityReport {
                method: CheckMethod::PlexSqlite(self.describe()),
                tables_checked: 0,
                virtual_tables_skipped: vec![],
                order_not_verified: vec![],
            });
        }
        let path = db.to_path_buf();
        if stderr.contains("file is not a database") {
            return Err(PlexDbError::NotADatabase(path));
        }
        if output.status.success() || stderr.contains("malformed") || stderr.contains("corrupt") {
            let mut all = lines
                .iter()
                .map(|l| l.to_string())
                .chain(stderr.lines().map(first_line).filter(|l| !l.is_empty()));
            let problem = all
                .next()
                .unwrap_or_else(|| "integrity_check printed nothing".into());
            let more = all.count();
            return Err(PlexDbError::Corrupt {
                path,
                table: None,
                problem,
                more,
            });
        }
        let detail = first_line(&stderr);
        let detail = if detail.is_empty() {
            format!("exited with {}", output.status)
        } else {
            detail
        };
        Err(PlexDbError::Tool { tool, path, detail })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(cmd: &Command) -> Vec<String> {
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_image_runs_its_shell_on_the_db_folder_without_network_as_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("com.plexapp.plugins.library.db");
        std::fs::write(&db, b"x").unwrap();
        let meta = std::fs::metadata(&db).unwrap();
        let tool = PlexSqlite::Image("plexinc/pms-docker:1.41.3.9314-a0bfb8370".into());
        assert_eq!(
            argv(&tool.command(&db).unwrap()),
            [
                "docker".to_string(),
                "run".into(),
                "--rm".into(),
                "--pull".into(),
                "never".into(),
                "--network".into(),
                "none".into(),
                "--user".into(),
                format!("{}:{}", meta.uid(), meta.gid()),
                "--volume".into(),
                format!("{}:/plex-burst-db", dir.path().display()),
                "--entrypoint".into(),
                NATIVE_PATH.into(),
                "plexinc/pms-docker:1.41.3.9314-a0bfb8370".into(),
                "-readonly".into(),
                "/plex-burst-db/com.plexapp.plugins.library.db".into(),
                "PRAGMA integrity_check;".into(),
            ]
        );
        assert_eq!(
            tool.describe(),
            format!("{NATIVE_PATH} in plexinc/pms-docker:1.41.3.9314-a0bfb8370")
        );
    }
}
