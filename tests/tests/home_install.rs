//! Installing a run's result into the home Plex (`bootstrap::home`), with
//! real parts: the fixture's DBs in Plex's schema (virtual tables, `_icu`
//! triggers, WAL), the PMS double as the home Plex, started and stopped
//! through `PlexControl::Command` by small shell scripts, and `sqlite3` as
//! a rogue writer. The scripts record the sha256 of every file of the home
//! `Databases` folder each time Plex stops and each time it starts, so a
//! rollback is checked on exactly what Plex starts on again.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bootstrap::home::backup::{BACKUP_MARK, list_backups};
use bootstrap::home::{
    HomeKind, HomeLayout, HomePlex, InstallError, InstallPlan, PlexControl, Step, consistent_copy,
    digest_of, install, plan_install,
};
use plex_burst_tests::bins::workspace_bin;
use plex_burst_tests::fixture::{BACKUP_DATE, LibraryKind, LibrarySpec, Spec, write_app_support};
use plex_burst_tests::plexdouble::harness::{free_port, get};
use runner::archive::DatedBackups;
use runner::plexdb::watchstate;
use runner::plexdb::{PathMapping, Stats, remap, stats};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, params};
use tempfile::TempDir;

const DB: &str = "com.plexapp.plugins.library.db";
/// Two items the cloud scan found that home does not have.
const CLOUD_NEW: [&str; 2] = ["plex://movie/cloud-new-1", "plex://movie/cloud-new-2"];

fn library(name: &str, kind: LibraryKind, items: u32) -> LibrarySpec {
    LibrarySpec {
        deleted: 1,
        ..LibrarySpec::single(name, kind, items, 0.0)
    }
}

fn spec() -> Spec {
    Spec {
        seed: 11,
        media_root: "/data/media".into(),
        libraries: vec![
            library("Movies", LibraryKind::Movie, 12),
            library("TV Shows", LibraryKind::Show, 10),
            library("Music", LibraryKind::Music, 150),
            library("Photos", LibraryKind::Photo, 6),
        ],
    }
}

/// sha256 by file name, as `sha256sum` prints it.
type Digests = BTreeMap<String, String>;

/// A home Plex (the PMS double) on a fixture app-support folder, and a
/// cloud result for it extracted beside its `Databases` folder.
struct Home {
    root: TempDir,
    databases: PathBuf,
    incoming: PathBuf,
    ctl: PathBuf,
    plex: HomePlex,
    snapshot_time: i64,
}

impl Home {
    /// Home running, the snapshot taken (the cloud result is that copy,
    /// with two new movies), then watch state made at home afterwards.
    fn new() -> Home {
        let root = tempfile::tempdir().unwrap();
        let app = write_app_support(&root.path().join("home"), &spec()).unwrap();
        let databases = app.databases.clone();
        let ctl = root.path().join("ctl");
        for dir in ["starts", "stops"] {
            std::fs::create_dir_all(ctl.join(dir)).unwrap();
        }
        let addr = format!("127.0.0.1:{}", free_port());
        write_scripts(&ctl, &app.dir, &databases, &addr);
        let layout = HomeLayout::new(&HomeKind::AppSupport(app.dir.clone()));
        assert_eq!(layout.databases_dir(), databases);
        let token = layout.token().unwrap();
        assert!(token.is_some(), "the fixture's home server is claimed");
        let control = PlexControl::Command {
            stop: vec![ctl.join("stop.sh").display().to_string()],
            start: vec![ctl.join("start.sh").display().to_string()],
        };
        let plex = HomePlex::new(control, Some(&format!("http://{addr}")), token);
        plex.start_and_wait(Duration::from_secs(30)).unwrap();

        let incoming = databases.with_file_name("Databases.incoming");
        let copy = consistent_copy(&databases, &incoming).unwrap();
        let home = Home {
            root,
            databases,
            incoming,
            ctl,
            plex,
            snapshot_time: copy.snapshot_time,
        };
        home.cloud_adds_movies();
        home
    }

    fn home_db(&self) -> PathBuf {
        self.databases.join(DB)
    }

    fn incoming_db(&self) -> PathBuf {
        self.incoming.join(DB)
    }

    /// The manifest's "after": the result's own stats.
    fn expected(&self) -> Stats {
        stats::collect(&self.incoming_db()).unwrap()
    }

    fn plan(&self, timeout: Duration) -> InstallPlan {
        let mut plan = InstallPlan::new(
            &self.databases,
            &self.incoming,
            self.snapshot_time,
            self.expected(),
        );
        plan.plex_timeout = timeout;
        plan
    }

    /// The cloud scan found two new movies (written as Plex does, with the
    /// `_icu` triggers off: stock SQLite lacks their tokenizer).
    fn cloud_adds_movies(&self) {
        let conn = Connection::open(self.incoming_db()).unwrap();
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)
            .unwrap();
        // Plex's own SQLite has the collation of the title_sort index.
        runner::plexdb::collation::register(&conn).unwrap();
        for (i, guid) in CLOUD_NEW.iter().enumerate() {
            conn.execute(
                "INSERT INTO metadata_items(library_section_id, metadata_type, guid, title, added_at, created_at, updated_at)
                 VALUES(1, 1, ?1, ?2, ?3, ?3, ?3)",
                params![guid, format!("Cloud film {i}"), self.snapshot_time],
            )
            .unwrap();
        }
    }

    /// What happened at home after the snapshot, on the live DB.
    fn watch_at_home(&self) -> Watched {
        let t = self.snapshot_time;
        let conn = Connection::open(self.home_db()).unwrap();
        let ids: Vec<(i64, String, i64)> = conn
            .prepare(
                "SELECT s.id, s.guid, s.view_count FROM metadata_item_settings s
                 JOIN metadata_items m ON m.guid = s.guid AND m.metadata_type = 1
                 WHERE s.account_id = 1 ORDER BY s.id LIMIT 2",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(ids.len(), 2, "the fixture has watch state for films");
        let (watched, older) = (ids[0].clone(), ids[1].clone());
        // Watched again, with a history row (its section deliberately wrong).
        conn.execute(
            "UPDATE metadata_item_settings SET view_count = view_count + 5, last_viewed_at = ?1, updated_at = ?1
             WHERE id = ?2",
            params![t + 10, watched.0],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO metadata_item_views(account_id, guid, metadata_type, library_section_id, title, viewed_at)
             VALUES(1, ?1, 1, 999, 'again', ?2)",
            params![watched.1, t + 10],
        )
        .unwrap();
        // A change without a newer timestamp: not watch state made since.
        conn.execute(
            "UPDATE metadata_item_settings SET view_count = 77 WHERE id = ?1",
            [older.0],
        )
        .unwrap();
        // The second account starts a film it never touched.
        let fresh: String = conn
            .query_row(
                "SELECT guid FROM metadata_items WHERE metadata_type = 1 AND deleted_at IS NULL
                 AND guid NOT IN (SELECT guid FROM metadata_item_settings WHERE account_id = 33117529)
                 ORDER BY id LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        conn.execute(
            "INSERT INTO metadata_item_settings(account_id, guid, view_offset, view_count, last_viewed_at, created_at, updated_at)
             VALUES(33117529, ?1, 600000, 0, ?2, ?2, ?2)",
            params![fresh, t + 20],
        )
        .unwrap();
        Watched {
            guid: watched.1,
            view_count: watched.2 + 5,
            older_guid: older.1,
            older_count: older.2,
            fresh_guid: fresh,
        }
    }

    /// What the stop script recorded each time Plex had stopped.
    fn stops(&self) -> Vec<Digests> {
        records(&self.ctl.join("stops"))
    }

    /// What the start script recorded each time before starting Plex.
    fn starts(&self) -> Vec<Digests> {
        records(&self.ctl.join("starts"))
    }

    /// Live items of a type in a section, from the running double's API.
    fn api_count(&self, section: i64, metadata_type: i64) -> u64 {
        let token = self.plex.token.as_ref().unwrap().expose().to_string();
        let reply = get(
            &format!(
                "{}/library/sections/{section}/all?type={metadata_type}",
                self.plex.url
            ),
            &[
                ("X-Plex-Token", &token),
                ("Accept", "application/json"),
                ("X-Plex-Container-Size", "0"),
            ],
        )
        .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["MediaContainer"]["totalSize"]
            .as_u64()
            .unwrap()
    }

    fn install(&self, plan: &InstallPlan) -> Result<bootstrap::home::InstallReport, InstallError> {
        install(plan, &self.plex)
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        // Stops the double this test started (by the pid its script saved).
        let _ = std::process::Command::new(self.ctl.join("stop.sh")).status();
    }
}

struct Watched {
    guid: String,
    view_count: i64,
    older_guid: String,
    older_count: i64,
    fresh_guid: String,
}

/// `start.sh` launches the double detached (as `docker start` returns at
/// once); a `crash-on-start` file in the Databases folder makes Plex "die"
/// at start instead. `stop.sh` kills it by pid and returns once it exited.
/// Both record the sha256 of every file of the Databases folder.
fn write_scripts(ctl: &Path, app: &Path, databases: &Path, addr: &str) {
    let vars = format!(
        "CTL='{}'\nDB='{}'\nAPP='{}'\nBIN='{}'\nADDR='{addr}'\n",
        ctl.display(),
        databases.display(),
        app.display(),
        workspace_bin("plex-double").display()
    );
    let record = r#"record() { n=$(ls "$CTL/$1" | wc -l); (cd "$DB" && sha256sum -- *) > "$CTL/$1/$(printf %03d "$n").txt"; }
"#;
    let start = format!(
        "#!/bin/sh\n{vars}{record}record starts\n\
         if [ -e \"$DB/crash-on-start\" ]; then echo 'Plex crashed at start' >&2; exit 0; fi\n\
         setsid \"$BIN\" server --app-support \"$APP\" --listen \"$ADDR\" </dev/null >>\"$CTL/plex.log\" 2>&1 &\n\
         echo $! > \"$CTL/pid\"\n"
    );
    let stop = format!(
        "#!/bin/sh\n{vars}{record}\
         if [ -f \"$CTL/pid\" ]; then\n\
           pid=$(cat \"$CTL/pid\")\n\
           kill \"$pid\" 2>/dev/null\n\
           i=0\n\
           while [ -e /proc/$pid ] && [ \"$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)\" != Z ]; do\n\
             i=$((i+1)); if [ $i -gt 400 ]; then echo \"plex (pid $pid) did not stop\" >&2; exit 1; fi\n\
             sleep 0.05\n\
           done\n\
           rm -f \"$CTL/pid\"\n\
         fi\n\
         record stops\n"
    );
    for (name, text) in [("start.sh", start), ("stop.sh", stop)] {
        let path = ctl.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn records(dir: &Path) -> Vec<Digests> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .filter_map(|l| l.split_once("  "))
                .map(|(hash, name)| (name.to_string(), hash.to_string()))
                .collect()
        })
        .collect()
}

fn one_value<T: rusqlite::types::FromSql>(db: &Path, sql: &str, p: impl rusqlite::Params) -> T {
    let conn = runner::plexdb::open_read_only(db).unwrap();
    conn.query_row(sql, p, |r| r.get(0)).unwrap()
}

fn view_count(db: &Path, account: i64, guid: &str) -> i64 {
    one_value(
        db,
        "SELECT view_count FROM metadata_item_settings WHERE account_id = ?1 AND guid = ?2",
        params![account, guid],
    )
}

/// Plex's dated backups in a folder (`<db>-2...`) by name: their sha256
/// and inode (the same file, not a copy).
fn dated_backups(dir: &Path) -> BTreeMap<String, (String, u64)> {
    use std::os::unix::fs::MetadataExt;
    all_files(dir)
        .into_iter()
        .filter(|(name, _)| name.contains(".db-2"))
        .map(|(name, sha)| {
            let inode = std::fs::metadata(dir.join(&name)).unwrap().ino();
            (name, (sha, inode))
        })
        .collect()
}

/// Every file of a folder by name, with its sha256.
fn all_files(dir: &Path) -> Digests {
    use sha2::{Digest, Sha256};
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let hash = hex::encode(Sha256::digest(std::fs::read(&p).unwrap()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), hash)
        })
        .collect()
}

fn expect_rollback(
    result: Result<bootstrap::home::InstallReport, InstallError>,
    step: Step,
) -> InstallError {
    let error = match result {
        Ok(_) => panic!("the install succeeded; expected a rollback at {step:?}"),
        Err(error) => error,
    };
    assert!(matches!(error, InstallError::RolledBack { .. }), "{error}");
    assert_eq!(error.step(), step, "{error}");
    let message = error.to_string();
    assert!(
        message.contains("the previous DB was restored"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
    error
}

/// The folder Plex started on after the rollback is the one it stopped
/// with when the install began, byte for byte (every file, -shm included).
fn assert_restored(home: &Home) {
    let (stops, starts) = (home.stops(), home.starts());
    let stopped = stops.first().expect("the install stopped Plex");
    let restarted = starts.last().expect("Plex was started again");
    assert!(!stopped.is_empty());
    assert!(
        stopped.contains_key(&format!("{DB}-{BACKUP_DATE}")),
        "the fixture's home has dated backups: {stopped:?}"
    );
    assert_eq!(
        restarted, stopped,
        "the restored folder differs from the one backed up"
    );
    assert!(home.plex.is_answering().unwrap(), "Plex runs again");
}

// ------------------------------------------------------------------ tests

#[test]
fn a_result_is_installed_with_the_watch_state_made_since_and_counts_verified() {
    let home = Home::new();
    let watched = home.watch_at_home();
    // Backups of earlier installs: two must go with keep_backups = 2.
    let parent = home.databases.parent().unwrap();
    let old: Vec<PathBuf> = ["20250101T000000Z", "20250601T000000Z", "20260101T000000Z"]
        .iter()
        .map(|s| parent.join(format!("Databases{BACKUP_MARK}{s}")))
        .collect();
    for dir in &old {
        std::fs::create_dir(dir).unwrap();
    }
    // The new files take the mode of those they replace.
    std::fs::set_permissions(home.home_db(), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(home.incoming_db(), std::fs::Permissions::from_mode(0o604)).unwrap();
    let movies_before = home.api_count(1, 1);

    let mut plan = home.plan(Duration::from_secs(30));
    plan.keep_backups = 2;
    let report = home.install(&plan).expect("install succeeds");

    // The new DB is in place, with what home did meanwhile.
    let db = home.home_db();
    let found: i64 = one_value(
        &db,
        "SELECT count(*) FROM metadata_items WHERE guid LIKE 'plex://movie/cloud-new-%'",
        [],
    );
    assert_eq!(found, 2, "the cloud's items are in the installed DB");
    assert_eq!(view_count(&db, 1, &watched.guid), watched.view_count);
    assert_eq!(view_count(&db, 33117529, &watched.fresh_guid), 0);
    assert_eq!(
        view_count(&db, 1, &watched.older_guid),
        watched.older_count,
        "a home row not touched since the snapshot overwrote the result's"
    );
    let section: i64 = one_value(
        &db,
        "SELECT library_section_id FROM metadata_item_views WHERE guid = ?1 AND viewed_at = ?2",
        params![watched.guid, home.snapshot_time + 10],
    );
    assert_eq!(section, 1, "the history row takes the item's section");
    let w = &report.watch_state;
    assert_eq!(
        (w.settings_updated, w.settings_inserted, w.views_inserted),
        (1, 1, 1),
        "{w:?}"
    );
    assert_eq!(
        std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert!(!home.incoming.exists(), "the result folder was consumed");

    // Plex answers with the new counts, and they were checked.
    assert_eq!(home.api_count(1, 1), movies_before + 2);
    assert!(
        report.counts_checked.len() >= 8,
        "{:?}",
        report.counts_checked
    );
    assert!(
        report
            .counts_checked
            .iter()
            .all(|c| c.live == Some(c.expected))
    );
    assert!(
        report
            .counts_checked
            .iter()
            .any(|c| c.type_name == "track" && c.expected == 150)
    );
    assert_eq!(report.plex_version, "1.41.3.9314-a0bfb8370");

    // The backup is the home DB as Plex left it (compared before reading
    // it: a reader rewrites the -shm), Plex's dated backups left in place,
    // and only 2 are kept.
    let mut stopped = home.stops()[0].clone();
    stopped.retain(|name, _| !name.contains(".db-2"));
    assert_eq!(
        all_files(&report.backup),
        stopped,
        "the backup is not the folder Plex stopped with"
    );
    let backup_db = report.backup.join(DB);
    assert_eq!(view_count(&backup_db, 1, &watched.older_guid), 77);
    let cloud: i64 = one_value(
        &backup_db,
        "SELECT count(*) FROM metadata_items WHERE guid LIKE 'plex://movie/cloud-new-%'",
        [],
    );
    assert_eq!(cloud, 0);
    assert_eq!(report.pruned, old[..2]);
    assert_eq!(
        list_backups(&home.databases).unwrap(),
        [old[2].clone(), report.backup.clone()]
    );
    let text = report.to_string();
    assert!(text.contains("1 settings updated, 1 added"), "{text}");
}

#[test]
fn plex_failing_to_start_on_the_new_db_puts_the_old_one_back_byte_for_byte() {
    let home = Home::new();
    home.watch_at_home();
    std::fs::write(home.incoming.join("crash-on-start"), b"").unwrap();
    let plan = home.plan(Duration::from_secs(4));
    let dated = dated_backups(&home.databases);

    let error = expect_rollback(home.install(&plan), Step::StartPlex);
    assert_eq!(
        dated_backups(&home.databases),
        dated,
        "Plex's dated backups are back, the very same files"
    );
    let message = error.to_string();
    assert!(
        message.contains("did not answer /identity within 4s"),
        "{message}"
    );
    assert_restored(&home);
    assert_eq!(
        home.starts().len(),
        3,
        "first start, the failed one, the restart"
    );
    // The backup became the Databases folder again; nothing else is left.
    assert!(list_backups(&home.databases).unwrap().is_empty());
    let parent = home.databases.parent().unwrap();
    let leftovers: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("Databases.") || n.starts_with(".Databases"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_db_changed_by_another_writer_during_the_install_is_refused_and_restored() {
    let home = Home::new();
    home.watch_at_home();
    // The integrity check runs Plex SQLite; here a stand-in that also
    // writes the home DB, as a Plex that was not really stopped would.
    let rogue = home.ctl.join("plex-sqlite");
    std::fs::write(
        &rogue,
        format!(
            "#!/bin/sh\nsqlite3 '{}' 'UPDATE metadata_item_settings SET view_count = view_count + 1 WHERE id = 1' >&2 || exit 1\necho ok\n",
            home.home_db().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rogue, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut plan = home.plan(Duration::from_secs(20));
    plan.plex_sqlite = Some(runner::plexdb::PlexSqlite::Program(rogue));

    let error = expect_rollback(home.install(&plan), Step::HomeUnchanged);
    let message = error.to_string();
    assert!(
        message.contains("the home DB changed while installing; is Plex really stopped?"),
        "{message}"
    );
    assert_restored(&home);
    // What the other writer wrote is not thrown away.
    let InstallError::RolledBack {
        kept: Some(kept), ..
    } = &error
    else {
        panic!("the changed folder was not kept: {error}")
    };
    assert_ne!(all_files(kept).get(DB), home.stops()[0].get(DB));
    assert!(message.contains(&kept.display().to_string()), "{message}");
}

#[test]
fn a_corrupt_result_is_refused_and_home_is_untouched() {
    let home = Home::new();
    home.watch_at_home();
    let plan = home.plan(Duration::from_secs(20));
    let (page, page_size) = middle_leaf(&home.incoming_db(), "media_parts");
    overwrite(
        &home.incoming_db(),
        (page - 1) * page_size + page_size / 2,
        &vec![0xA5; (page_size / 4) as usize],
    );

    let dated = dated_backups(&home.databases);

    let error = expect_rollback(home.install(&plan), Step::IntegrityCheck);
    assert_eq!(dated_backups(&home.databases), dated);
    let message = error.to_string();
    assert!(message.contains("database is corrupt"), "{message}");
    assert!(message.contains("media_parts"), "{message}");
    assert_restored(&home);
}

#[test]
fn plex_counts_that_differ_from_the_result_roll_back() {
    let home = Home::new();
    let mut plan = home.plan(Duration::from_secs(20));
    // The manifest promised one more film than the DB holds.
    let movies = plan.expected.libraries[0].items.get_mut("movie").unwrap();
    movies.live += 1;
    let error = expect_rollback(home.install(&plan), Step::VerifyCounts);
    let message = error.to_string();
    assert!(
        message.contains("Movies movie: 15 expected, Plex has 14"),
        "{message}"
    );
    assert_restored(&home);
}

#[test]
fn cloud_paths_are_mapped_back_to_home_paths() {
    let home = Home::new();
    // The cloud ran with the media under /mnt/cloud.
    let scratch = home.root.path().join("remap-scratch");
    let to_cloud = PathMapping::new("/data/media", "/mnt/cloud/media").unwrap();
    remap::apply(&home.incoming_db(), &[to_cloud], &scratch).unwrap();
    let cloud_paths: i64 = one_value(
        &home.incoming_db(),
        "SELECT count(*) FROM media_parts WHERE file LIKE '/mnt/cloud/media/%'",
        [],
    );
    assert!(cloud_paths > 100);

    let mut plan = home.plan(Duration::from_secs(30));
    plan.mappings = vec![PathMapping::new("/mnt/cloud/media", "/data/media").unwrap()];
    let report = home.install(&plan).expect("install succeeds");
    let remapped = report.remap.expect("mappings were applied");
    assert_eq!(
        remapped.mappings[0].rows["media_parts.file"],
        cloud_paths as u64
    );
    assert!(
        remapped.total_rows > cloud_paths as u64,
        "roots and folders too"
    );
    let left: i64 = one_value(
        &home.home_db(),
        "SELECT count(*) FROM media_parts WHERE file LIKE '/mnt/cloud/%'",
        [],
    );
    assert_eq!(left, 0);
    let roots: i64 = one_value(
        &home.home_db(),
        "SELECT count(*) FROM section_locations WHERE root_path LIKE '/data/media/%'",
        [],
    );
    assert_eq!(roots, 4);
    // The remap's own scratch copy is gone.
    let parent = home.databases.parent().unwrap();
    assert!(
        std::fs::read_dir(parent).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("remap"))
    );
}

#[test]
fn a_dry_run_says_what_would_change_and_writes_nothing() {
    let home = Home::new();
    let watched = home.watch_at_home();
    let mut plan = home.plan(Duration::from_secs(20));
    plan.mappings = vec![PathMapping::new("/data/media/Movies", "/srv/films").unwrap()];
    let parent = home.databases.parent().unwrap().to_path_buf();
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(&parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let (home_before, incoming_before, names_before) = (
        digest_of(&home.databases).unwrap(),
        all_files(&home.incoming),
        listing(),
    );

    let preview = plan_install(&plan).unwrap();

    // Plex keeps running (it owns the -shm), so the home side is compared
    // without it; the closed result is compared file by file.
    assert_eq!(digest_of(&home.databases).unwrap(), home_before);
    assert_eq!(all_files(&home.incoming), incoming_before);
    assert_eq!(listing(), names_before);
    assert_eq!(
        view_count(&home.incoming_db(), 1, &watched.guid),
        watched.view_count - 5
    );

    let w = &preview.watch_state;
    assert!(w.dry_run);
    assert_eq!(
        (w.settings_updated, w.settings_inserted, w.views_inserted),
        (1, 1, 1),
        "{w:?}"
    );
    let movies = preview
        .counts
        .iter()
        .find(|c| c.library == "Movies" && c.type_name == "movie")
        .unwrap();
    assert_eq!(movies.after, movies.now + 2);
    assert!(preview.remap.as_ref().unwrap().total_rows > 12);
    assert!(preview.space.needed > 0 && preview.space.available > preview.space.needed);
    let text = preview.to_string();
    assert!(text.contains("Movies movie: 12 now, 14 after"), "{text}");
    // And the merge agrees with its preview.
    let merged =
        watchstate::merge(&home.home_db(), &home.incoming_db(), home.snapshot_time).unwrap();
    assert_eq!(merged.changes(), w.changes());
}

#[test]
fn the_watch_state_merge_is_idempotent_on_real_plex_dbs() {
    let home = Home::new();
    home.watch_at_home();
    let first =
        watchstate::merge(&home.home_db(), &home.incoming_db(), home.snapshot_time).unwrap();
    assert_eq!(first.changes(), 3, "{first:?}");
    let files = all_files(&home.incoming);
    let second =
        watchstate::merge(&home.home_db(), &home.incoming_db(), home.snapshot_time).unwrap();
    assert_eq!(second.changes(), 0, "{second:?}");
    assert_eq!(
        (second.settings_unchanged, second.views_present),
        (2, 1),
        "{second:?}"
    );
    assert_eq!(
        all_files(&home.incoming),
        files,
        "a no-op merge changed the result"
    );
}

/// A leaf page in the middle of `table`'s B-tree, and the page size.
fn middle_leaf(db: &Path, table: &str) -> (u64, u64) {
    let conn = Connection::open(db).unwrap();
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    let leaves: Vec<i64> = conn
        .prepare("SELECT pageno FROM dbstat WHERE name = ?1 AND pagetype = 'leaf' ORDER BY pageno")
        .unwrap()
        .query_map([table], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(leaves.len() >= 3, "{table} has {} leaf pages", leaves.len());
    (leaves[leaves.len() / 2] as u64, page_size as u64)
}

fn overwrite(db: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

/// Whatever modes the result's files carry (world-writable, setuid), the
/// installed files have those of the files they replace (the library DB's
/// for new names), and the folder that of the folder it replaces.
#[test]
fn modes_in_the_result_never_reach_the_home_databases() {
    use std::os::unix::fs::MetadataExt;
    let home = Home::new();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    std::fs::set_permissions(home.home_db(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let dir_mode = mode(&home.databases);
    let extra = home.incoming.join("com.plexapp.plugins.library.extra.db");
    std::fs::write(&extra, b"new in the result").unwrap();
    for (path, bits) in [(home.incoming_db(), 0o4777), (extra, 0o2666)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(bits)).unwrap();
    }
    std::fs::set_permissions(&home.incoming, std::fs::Permissions::from_mode(0o1777)).unwrap();

    home.install(&home.plan(Duration::from_secs(30)))
        .expect("install succeeds");
    assert_eq!(mode(&home.home_db()), 0o640);
    assert_eq!(
        mode(&home.databases.join("com.plexapp.plugins.library.extra.db")),
        0o640
    );
    assert_eq!(mode(&home.databases), dir_mode);
    for entry in std::fs::read_dir(&home.databases).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path) & 0o7002, 0, "{}", path.display());
    }
}

/// The install leaves `[home] free_space_margin` free on the disk Plex
/// lives on (by default `runner::archive::margin` of the free space), and
/// refuses before touching anything when it cannot.
#[test]
fn the_install_keeps_a_margin_of_free_space() {
    let home = Home::new();
    let before = all_files(&home.databases);
    let preview = plan_install(&home.plan(Duration::from_secs(20))).unwrap();
    let space = &preview.space;
    assert_eq!(space.margin, runner::archive::margin(space.available));
    assert!(space.needed > space.margin, "{space:?}");

    let mut plan = home.plan(Duration::from_secs(20));
    plan.free_space_margin = Some(space.available);
    let error = home
        .install(&plan)
        .expect_err("no room left for the margin");
    assert!(
        matches!(
            error,
            InstallError::NothingChanged {
                step: Step::Preflight,
                ..
            }
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("[home] free_space_margin"), "{message}");
    assert!(!message.contains('\n'), "{message}");
    assert_eq!(all_files(&home.databases), before);
    assert!(home.stops().is_empty(), "Plex was not even stopped");
}

/// Plex's dated backups are the home server's: the install leaves them in
/// the live folder (the very same files), does not copy them to its
/// backup, and drops any the result brought.
#[test]
fn home_dated_backups_stay_in_place_uncopied_and_the_results_are_dropped() {
    let home = Home::new();
    let dated = dated_backups(&home.databases);
    assert_eq!(dated.len(), 2, "the fixture's library and blobs backups");
    let bytes: u64 = dated
        .keys()
        .map(|n| std::fs::metadata(home.databases.join(n)).unwrap().len())
        .sum();
    for name in [format!("{DB}-{BACKUP_DATE}"), format!("{DB}-2026-12-01")] {
        std::fs::write(home.incoming.join(name), b"the cloud's").unwrap();
    }

    let report = home
        .install(&home.plan(Duration::from_secs(30)))
        .expect("install succeeds");
    assert_eq!(dated_backups(&home.databases), dated);
    assert!(!home.databases.join(format!("{DB}-2026-12-01")).exists());
    let mut stopped = home.stops()[0].clone();
    stopped.retain(|name, _| !dated.contains_key(name));
    assert_eq!(
        all_files(&report.backup),
        stopped,
        "the backup is the folder Plex stopped with, less the dated backups"
    );
    assert_eq!(report.dated_backups_kept, DatedBackups { files: 2, bytes });
    let text = report.to_string();
    assert!(
        text.contains("kept in place, not copied: 2 dated backups of Plex"),
        "{text}"
    );
}

/// The backup leaves Plex's dated backups out, and so does the space it
/// needs.
#[test]
fn the_free_space_check_does_not_count_dated_backups() {
    let home = Home::new();
    let mut plan = home.plan(Duration::from_secs(20));
    plan.free_space_margin = Some(1 << 20);
    let needed = || plan_install(&plan).unwrap().space.needed;
    let before = needed();
    let pages = vec![7u8; 4 << 20];
    std::fs::write(home.databases.join(format!("{DB}-2026-11-21")), &pages).unwrap();
    assert_eq!(needed(), before);
    std::fs::write(home.databases.join("com.plexapp.dlna.db"), &pages).unwrap();
    assert_eq!(needed(), before + pages.len() as u64);
}
