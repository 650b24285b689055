//! `runner::plexdb` against real SQLite files in Plex's schema: the fixture
//! generator's DBs (virtual tables with unknown modules, `_icu` triggers,
//! WAL mode) and small hand-made ones for the path edge cases.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use plex_burst_tests::fixture::{self, LibraryKind, Spec, generate_db, schema_dump_path};
use runner::plexdb::{
    self, PathMapping, PlexDbError, PlexSqlite, coverage, integrity, remap, repair, stats,
};
use rusqlite::Connection;
use sha2::{Digest, Sha256};

const DB_NAME: &str = "com.plexapp.plugins.library.db";

fn tiny_db(dir: &Path) -> (PathBuf, Spec, fixture::Summary) {
    let spec = Spec::tiny();
    let path = dir.join(DB_NAME);
    let summary = generate_db(&path, &spec).expect("tiny fixture generates");
    (path, spec, summary)
}

/// A DB with only the path-holding tables of the real schema (no triggers,
/// no virtual tables), for rows written by hand.
fn path_tables_db(path: &Path) -> Connection {
    let dump = std::fs::read_to_string(schema_dump_path()).expect("schema dump readable");
    let conn = Connection::open(path).expect("new DB");
    for table in [
        "library_sections",
        "section_locations",
        "metadata_items",
        "media_items",
        "media_parts",
        "directories",
        "media_streams",
    ] {
        let create = dump
            .lines()
            .find(|l| l.starts_with(&format!("CREATE TABLE IF NOT EXISTS \"{table}\" ")))
            .unwrap_or_else(|| panic!("{table} in the dump"));
        conn.execute_batch(create).expect("table creates");
    }
    conn.execute_batch("CREATE INDEX \"index_media_parts_on_file\" ON \"media_parts\" (\"file\" )")
        .expect("index");
    conn
}

fn mapping(from: &str, to: &str) -> PathMapping {
    PathMapping {
        from: from.into(),
        to: to.into(),
    }
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("file readable")))
}

fn dir_listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn column(conn: &Connection, sql: &str) -> Vec<Option<String>> {
    let mut stmt = conn.prepare(sql).expect("query prepares");
    stmt.query_map([], |r| r.get(0))
        .expect("query runs")
        .map(|r| r.expect("row"))
        .collect()
}

/// Every path-holding column, as `table.column` → values by id.
fn path_columns(db: &Path) -> BTreeMap<&'static str, Vec<Option<String>>> {
    let conn = Connection::open(db).expect("open");
    [
        (
            "section_locations.root_path",
            "SELECT root_path FROM section_locations ORDER BY id",
        ),
        (
            "media_parts.file",
            "SELECT file FROM media_parts ORDER BY id",
        ),
        (
            "directories.path",
            "SELECT path FROM directories ORDER BY id",
        ),
        (
            "media_streams.url",
            "SELECT url FROM media_streams ORDER BY id",
        ),
    ]
    .into_iter()
    .map(|(name, sql)| (name, column(&conn, sql)))
    .collect()
}

/// A leaf page of `table` near the middle of its B-tree: (page number,
/// cells on it, page size).
fn middle_leaf(db: &Path, table: &str) -> (u64, u64, u64) {
    let conn = Connection::open(db).expect("open");
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .expect("page size");
    let leaves: Vec<(i64, i64)> = conn
        .prepare("SELECT pageno, ncell FROM dbstat WHERE name = ?1 AND pagetype = 'leaf' ORDER BY pageno")
        .expect("dbstat")
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("dbstat runs")
        .map(|r| r.expect("row"))
        .collect();
    assert!(
        leaves.len() >= 3,
        "{table} needs several leaf pages, has {}",
        leaves.len()
    );
    let (page, cells) = leaves[leaves.len() / 2];
    (page as u64, cells as u64, page_size as u64)
}

fn overwrite(db: &Path, offset: u64, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(db)
        .expect("open for damage");
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(bytes).expect("damage written");
    file.sync_all().expect("sync");
}

// ---------------------------------------------------------------- integrity

#[test]
fn bundled_sqlite_is_recent_enough_to_check_virtual_tables() {
    // >= 3.44 is where a plain integrity_check starts failing on Plex DBs.
    assert!(
        rusqlite::version_number() >= 3_044_000,
        "bundled SQLite {}",
        rusqlite::version()
    );
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = tiny_db(dir.path());
    let conn = Connection::open(&db).unwrap();
    let plain = conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0));
    let message = format!("{plain:?}");
    assert!(
        message.contains("collating") || message.contains("spellfix1"),
        "plain check gave {message}"
    );
}

#[test]
fn a_valid_plex_db_passes_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = tiny_db(dir.path());
    let (hash, listing) = (sha256(&db), dir_listing(dir.path()));

    let report = integrity::check(&db, None).expect("valid DB passes");
    assert_eq!(report.method, integrity::CheckMethod::PerTable);
    let conn = plexdb::open_read_only(&db).unwrap();
    let ordinary = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND rootpage > 0",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as usize;
    drop(conn);
    // Every ordinary table (shadow tables included) plus the schema table.
    assert_eq!(report.tables_checked, ordinary + 1);
    for name in [
        "fts4_metadata_titles_icu",
        "fts4_tag_titles_icu",
        "spellfix_metadata_titles",
        "spellfix_tag_titles",
    ] {
        assert!(
            report.virtual_tables_skipped.iter().any(|t| t == name),
            "{name} not skipped: {report:?}"
        );
    }
    assert_eq!(sha256(&db), hash, "the check changed the file");
    assert_eq!(
        dir_listing(dir.path()),
        listing,
        "the check left files behind"
    );
}

#[test]
fn garbage_in_a_table_page_fails_naming_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = tiny_db(dir.path());
    let (page, _, page_size) = middle_leaf(&db, "media_parts");
    // The middle of the page: cell content, not its header.
    let start = (page - 1) * page_size + page_size / 2;
    overwrite(&db, start, &vec![0xA5; (page_size / 4) as usize]);

    match integrity::check(&db, None) {
        Err(PlexDbError::Corrupt { table, problem, .. }) => {
            assert_eq!(table.as_deref(), Some("media_parts"), "problem: {problem}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_broken_page_header_fails_with_a_one_line_message() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = tiny_db(dir.path());
    let (page, _, page_size) = middle_leaf(&db, "metadata_items");
    overwrite(&db, (page - 1) * page_size, &[0u8; 8]);

    let error = integrity::check(&db, None).expect_err("damaged DB must fail");
    let message = error.to_string();
    assert!(matches!(error, PlexDbError::Corrupt { .. }), "{error:?}");
    assert!(
        message.starts_with(&format!(
            "database is corrupt: {}: table \"metadata_items\": ",
            db.display()
        )),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn a_truncated_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = tiny_db(dir.path());
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let error = integrity::check(&db, None).expect_err("truncated DB must fail");
    assert!(matches!(error, PlexDbError::Corrupt { .. }), "{error:?}");
}

#[test]
fn files_that_are_not_plex_dbs_fail_with_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.db");
    std::fs::write(&text, "this is a text file, long enough to hold a header ......................................................").unwrap();
    let error = integrity::check(&text, None).expect_err("text is not a DB");
    assert_eq!(
        error.to_string(),
        format!("not a SQLite database: {}", text.display())
    );

    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, "").unwrap();
    assert!(matches!(
        integrity::check(&empty, None),
        Err(PlexDbError::Empty(_))
    ));

    let missing = dir.path().join("missing.db");
    assert!(matches!(
        integrity::check(&missing, None),
        Err(PlexDbError::NotFound(_))
    ));
    assert!(!missing.exists(), "a check created the missing file");

    let other = dir.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t(x)")
        .unwrap();
    let error = integrity::check(&other, None).expect_err("not a Plex DB");
    assert!(
        matches!(error, PlexDbError::NotPlexLibrary { .. }),
        "{error:?}"
    );
}

/// Debian's `sqlite3` (3.40, which does not check virtual tables) stands in
/// for `Plex SQLite`: the same shell interface.
#[test]
fn an_external_sqlite_shell_checks_the_whole_file() {
    let shell = PlexSqlite::Program("/usr/bin/sqlite3".into());
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = tiny_db(dir.path());
    // Unlike Plex SQLite, Debian's shell lacks the icu_root collation of the
    // fixture's (and every real DB's) title_sort index.
    Connection::open(&db)
        .unwrap()
        .execute_batch("DROP INDEX index_title_sort_icu")
        .unwrap();
    let hash = sha256(&db);
    let report = integrity::check(&db, Some(&shell)).expect("valid DB passes");
    assert_eq!(
        report.method,
        integrity::CheckMethod::PlexSqlite("/usr/bin/sqlite3".into())
    );
    assert_eq!(sha256(&db), hash);

    let (page, _, page_size) = middle_leaf(&db, "media_parts");
    overwrite(
        &db,
        (page - 1) * page_size + page_size / 2,
        &vec![0xA5; (page_size / 4) as usize],
    );
    let error = integrity::check(&db, Some(&shell)).expect_err("damage found");
    assert!(matches!(error, PlexDbError::Corrupt { .. }), "{error:?}");

    let missing = PlexSqlite::Program("/nonexistent/Plex SQLite".into());
    let error = integrity::check(&db, Some(&missing)).expect_err("no tool");
    assert!(matches!(error, PlexDbError::Tool { .. }), "{error:?}");
    // Where Plex's shell cannot run, the bundled check still judges.
    let error = integrity::check_best(&db, Some(&missing)).expect_err("damage found");
    assert!(
        matches!(&error, PlexDbError::Corrupt { table: Some(t), .. } if t == "media_parts"),
        "{error:?}"
    );
}

// -------------------------------------------------------------------- stats

#[test]
fn stats_match_the_generated_library() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec, summary) = tiny_db(dir.path());
    let stats = stats::collect(&db).expect("stats");

    assert_eq!(stats.libraries.len(), spec.libraries.len());
    let mut tracks = 0;
    let mut analysed = 0;
    for (index, library) in spec.libraries.iter().enumerate() {
        let got = stats
            .library(&library.name)
            .unwrap_or_else(|| panic!("{} missing", library.name));
        assert_eq!(got.id, index as i64 + 1);
        assert_eq!(got.section_type, library.kind.section_type());
        let leaf = library.kind.leaf_type().name();
        let live: u64 = library.locations.iter().map(|l| u64::from(l.items)).sum();
        assert_eq!(got.items[leaf].live, live, "{} live {leaf}", library.name);
        assert_eq!(
            got.items[leaf].deleted,
            u64::from(library.deleted),
            "{} deleted {leaf}",
            library.name
        );
        assert!(got.unavailable_locations.is_empty());
        if library.kind == LibraryKind::Music {
            let expected = (live as f64 * library.sonic_fraction).round() as u64;
            assert_eq!(
                got.sonic,
                stats::SonicProgress {
                    analysed: expected,
                    tracks: live
                }
            );
            tracks += live;
            analysed += expected;
        }
    }
    assert_eq!(stats.sonic, stats::SonicProgress { analysed, tracks });
    // A scan's cheap progress count agrees with the full statistics.
    for library in &stats.libraries {
        let rows: u64 = library.items.values().map(|c| c.live + c.deleted).sum();
        assert_eq!(
            stats::section_rows(&db, library.id).unwrap(),
            rows,
            "{}",
            library.name
        );
    }
    // Every type present, photos included (lessons.md 27).
    let totals: BTreeMap<String, u64> = stats
        .totals
        .iter()
        .map(|(k, c)| (k.clone(), c.live + c.deleted))
        .collect();
    assert_eq!(totals, summary.metadata_items_by_type);
    assert!(stats.live("photo") > 0);
    let json = serde_json::to_string(&stats).unwrap();
    assert_eq!(serde_json::from_str::<stats::Stats>(&json).unwrap(), stats);
}

#[test]
fn stats_report_unknown_types_deleted_parts_and_unavailable_roots() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_NAME);
    let conn = path_tables_db(&db);
    conn.execute_batch(
        "INSERT INTO library_sections(id, name, section_type) VALUES (1, 'Music', 8), (2, 'Odd', 99);
         INSERT INTO section_locations(library_section_id, root_path, available) VALUES
            (1, '/m/a', 1), (1, '/m/b', 0), (1, '/m/c', 'f'), (1, '/m/d', 't'), (2, '/o', 1);
         INSERT INTO metadata_items(id, library_section_id, metadata_type, extra_data, deleted_at) VALUES
            (1, 1, 10, 'ms%3AmusicAnalysisVersion=1', NULL),
            (2, 1, 10, '{\"musicAnalysisVersion\":\"1\"}', NULL),
            (3, 1, 10, NULL, NULL),
            (4, 1, 10, 'ms%3AmusicAnalysisVersion=1', 1700000000),
            (5, 2, 99, NULL, NULL),
            (6, NULL, 15, NULL, NULL);
         INSERT INTO media_items(id, library_section_id, metadata_item_id) VALUES (1, 1, 1), (2, 1, 2), (3, 1, 4);
         INSERT INTO media_parts(media_item_id, file, deleted_at) VALUES (1, '/m/a/1', NULL), (2, '/m/a/2', 5), (3, '/m/a/4', 5);",
    )
    .unwrap();
    drop(conn);
    let stats = stats::collect(&db).expect("stats");
    let music = stats.library("Music").unwrap();
    assert_eq!(
        music.items["track"],
        stats::ItemCount {
            live: 3,
            deleted: 1
        }
    );
    assert_eq!(
        music.sonic,
        stats::SonicProgress {
            analysed: 2,
            tracks: 3
        }
    );
    assert_eq!(music.deleted_parts, 2);
    assert_eq!(music.unavailable_locations, ["/m/b", "/m/c"]);
    let odd = stats.library("Odd").unwrap();
    assert_eq!(odd.section_type_name, "type_99");
    assert_eq!(odd.items["type_99"].live, 1);
    assert_eq!(stats.totals["playlist"].live, 1);
}

// -------------------------------------------------------------------- remap

/// Rows that tell whole components from substrings, `_`/`%` from
/// wildcards, case from case, URLs from paths.
fn tricky_paths_db(dir: &Path) -> PathBuf {
    let db = dir.join(DB_NAME);
    let conn = path_tables_db(&db);
    conn.execute_batch(
        "INSERT INTO library_sections(id, name, section_type) VALUES (1, 'TV', 2);
         INSERT INTO section_locations(id, library_section_id, root_path) VALUES
            (1, 1, '/Media/TV'), (2, 1, '/Media/TVShows'), (3, 1, '/Media/TV/'), (4, 1, '/media/tv');
         INSERT INTO media_parts(id, file) VALUES
            (1, '/Media/TV/Show/e1.mkv'), (2, '/Media/TVShows/x.mkv'), (3, '/Media/TV'), (4, '/Media/TVX/a'),
            (5, '/Media/T_/a'), (6, '/Media/T%/a'), (7, '/media/tv/a.mkv'), (8, '/x/Media/TV/a.mkv'),
            (9, 'Media/TV/rel.mkv'), (10, NULL), (11, '/Media/TV/Show/Deep/e2.mkv'), (12, '/Media/T_/b/c'),
            (13, '/mnt/tv/already.mkv');
         INSERT INTO directories(id, library_section_id, path) VALUES
            (1, 1, '/Media/TV/Show'), (2, 1, 'Show'), (3, 1, ''), (4, 1, '/Media/TVShows');
         INSERT INTO media_streams(id, url) VALUES
            (1, 'file:///Media/TV/Show/e1.srt'), (2, 'file:///Media/TVShows/x.srt'), (3, 'http://h/Media/TV/a'),
            (4, NULL), (5, '/Media/TV/raw.srt'), (6, 'FILE:///Media/TV/a.srt'), (7, 'file:///Media/T_/s.srt');",
    )
    .unwrap();
    db
}

fn tricky_mappings() -> Vec<PathMapping> {
    vec![
        mapping("/Media/TV/", "/mnt/tv"),
        mapping("/Media/TV/Show/Deep", "/deep"),
        // Would chain /Media/TV → /mnt/tv → /chained if applied in turn.
        mapping("/mnt/tv", "/chained"),
        mapping("/Media/T_", "/underscore"),
        mapping("/Nowhere", "/x"),
    ]
}

fn strings(values: &[Option<&str>]) -> Vec<Option<String>> {
    values.iter().map(|v| v.map(String::from)).collect()
}

#[test]
fn remap_rewrites_whole_leading_components_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = tricky_paths_db(dir.path());
    let backups = dir.path().join("backups");
    let report = remap::apply(&db, &tricky_mappings(), &backups).expect("remap");

    let after = path_columns(&db);
    assert_eq!(
        after["section_locations.root_path"],
        strings(&[
            Some("/mnt/tv"),
            Some("/Media/TVShows"),
            Some("/mnt/tv/"),
            Some("/media/tv")
        ])
    );
    assert_eq!(
        after["media_parts.file"],
        strings(&[
            Some("/mnt/tv/Show/e1.mkv"),
            Some("/Media/TVShows/x.mkv"),
            Some("/mnt/tv"),
            Some("/Media/TVX/a"),
            Some("/underscore/a"),
            Some("/Media/T%/a"),
            Some("/media/tv/a.mkv"),
            Some("/x/Media/TV/a.mkv"),
            Some("Media/TV/rel.mkv"),
            None,
            Some("/deep/e2.mkv"),
            Some("/underscore/b/c"),
            Some("/chained/already.mkv"),
        ])
    );
    assert_eq!(
        after["directories.path"],
        strings(&[
            Some("/mnt/tv/Show"),
            Some("Show"),
            Some(""),
            Some("/Media/TVShows")
        ])
    );
    assert_eq!(
        after["media_streams.url"],
        strings(&[
            Some("file:///mnt/tv/Show/e1.srt"),
            Some("file:///Media/TVShows/x.srt"),
            Some("http://h/Media/TV/a"),
            None,
            Some("/Media/TV/raw.srt"),
            Some("FILE:///Media/TV/a.srt"),
            Some("file:///underscore/s.srt"),
        ])
    );

    let rows = |i: usize| &report.mappings[i].rows;
    assert_eq!(rows(0)["section_locations.root_path"], 2);
    assert_eq!(rows(0)["media_parts.file"], 2);
    assert_eq!(rows(0)["directories.path"], 1);
    assert_eq!(rows(0)["media_streams.url"], 1);
    assert_eq!(report.mappings[1].total, 1);
    assert_eq!(report.mappings[2].total, 1);
    assert_eq!(report.mappings[3].total, 3);
    let unused: Vec<&str> = report.unused().map(|m| m.from.as_str()).collect();
    assert_eq!(unused, ["/Nowhere"]);
    assert_eq!(report.total_rows, 6 + 1 + 1 + 3);
    assert!(!report.dry_run);
}

#[test]
fn a_dry_run_counts_the_same_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = tricky_paths_db(dir.path());
    let (before, hash) = (path_columns(&db), sha256(&db));
    let planned = remap::dry_run(&db, &tricky_mappings()).expect("dry run");
    assert!(planned.dry_run && planned.backup.is_none());
    assert_eq!((path_columns(&db), sha256(&db)), (before, hash));

    let applied = remap::apply(&db, &tricky_mappings(), &dir.path().join("b")).expect("remap");
    assert_eq!(planned.mappings, applied.mappings);
    assert_eq!(planned.total_rows, applied.total_rows);
}

#[test]
fn the_backup_holds_the_db_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = tiny_db(dir.path());
    let before = path_columns(&db);
    let report = remap::apply(
        &db,
        &[mapping("/data/media", "/mnt/media")],
        &dir.path().join("backups"),
    )
    .expect("remap");
    let backup = report.backup.expect("a backup");
    assert!(backup.starts_with(dir.path().join("backups")));
    assert!(
        backup
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(DB_NAME)
    );
    assert_ne!(path_columns(&db), before);
    assert_eq!(path_columns(&backup), before);
    integrity::check(&backup, None).expect("the backup is a sound Plex DB");
    integrity::check(&db, None).expect("the remapped DB is sound");
}

#[test]
fn a_retried_remap_starts_again_from_the_first_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = tiny_db(dir.path());
    let backups = dir.path().join("backups");
    let before = path_columns(&db);
    assert_eq!(remap::restore_first_backup(&backups, &db).unwrap(), None);

    // A remap committed, then its process died before anyone recorded it;
    // the retry remaps again on top: both must end as one remap of the
    // original. `/data` → `/data/media` would chain if applied twice.
    let maps = [mapping("/data", "/data/media")];
    let first = remap::apply(&db, &maps, &backups).unwrap().backup.unwrap();
    let once = path_columns(&db);
    remap::apply(&db, &maps, &backups).unwrap();
    assert_ne!(path_columns(&db), once, "the second apply chained");

    assert_eq!(
        remap::restore_first_backup(&backups, &db).unwrap(),
        Some(first)
    );
    assert_eq!(path_columns(&db), before);
    assert_eq!(
        dir_listing(&backups).len(),
        1,
        "later backups are forgotten"
    );
    remap::apply(&db, &maps, &backups).unwrap();
    assert_eq!(path_columns(&db), once);
    integrity::check(&db, None).expect("the restored DB is sound");
}

#[test]
fn remap_counts_match_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec, summary) = tiny_db(dir.path());
    let mappings = [mapping(&spec.media_root, "/mnt/media")];
    let report = remap::apply(&db, &mappings, dir.path()).expect("remap");
    let under_root = |subtitle: bool| {
        summary
            .media_files
            .iter()
            .filter(|f| f.subtitle == subtitle && spec.relative_to_root(&f.path).is_some())
            .count() as u64
    };
    let locations = spec
        .libraries
        .iter()
        .flat_map(|l| &l.locations)
        .filter(|l| !l.path.starts_with('/'))
        .count() as u64;
    let rows = &report.mappings[0].rows;
    assert_eq!(rows["media_parts.file"], under_root(false));
    assert_eq!(rows["media_streams.url"], under_root(true));
    assert_eq!(rows["section_locations.root_path"], locations);
    assert_eq!(report.mappings[0].total, rows.values().sum::<u64>());
}

#[test]
fn a_failure_midway_rolls_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = tricky_paths_db(dir.path());
    // media_streams is written last: by then the other tables have changed.
    Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TRIGGER refuse BEFORE UPDATE ON media_streams BEGIN SELECT RAISE(ABORT, 'refused'); END")
        .unwrap();
    let before = path_columns(&db);
    let error =
        remap::apply(&db, &tricky_mappings(), &dir.path().join("b")).expect_err("trigger aborts");
    assert!(
        error.to_string().contains(&db.display().to_string()),
        "{error}"
    );
    assert_eq!(path_columns(&db), before);
}

#[test]
fn remap_refuses_triggers_that_need_plex_modules() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = tiny_db(dir.path());
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER parts_icu AFTER UPDATE ON media_parts BEGIN
               INSERT INTO fts4_metadata_titles_icu(docid, title) VALUES (new.id, new.file); END",
        )
        .unwrap();
    let before = path_columns(&db);
    let error = remap::apply(
        &db,
        &[mapping("/data/media", "/mnt")],
        &dir.path().join("b"),
    )
    .expect_err("refused");
    assert!(
        matches!(error, PlexDbError::UnsafeTrigger { ref trigger, .. } if trigger == "parts_icu"),
        "{error:?}"
    );
    assert_eq!(path_columns(&db), before);
    assert!(!dir.path().join("b").exists() || dir_listing(&dir.path().join("b")).is_empty());
}

#[test]
fn bad_mappings_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let db = tricky_paths_db(dir.path());
    for bad in [
        vec![mapping("Media", "/x")],
        vec![mapping("/a", "/x"), mapping("/a/", "/y")],
    ] {
        let error = remap::apply(&db, &bad, &dir.path().join("b")).expect_err("refused");
        assert!(matches!(error, PlexDbError::BadMapping { .. }), "{error:?}");
    }
    assert!(!dir.path().join("b").exists());
}

// ----------------------------------------------------------------- coverage

#[test]
fn a_location_outside_the_mount_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (db, spec, summary) = tiny_db(dir.path());
    let mappings = [mapping(&spec.media_root, "/mnt/media")];
    let report = coverage::report(&db, &mappings, Path::new("/mnt/media")).expect("coverage");

    let locations = spec.libraries.iter().flat_map(|l| &l.locations).count();
    assert_eq!(report.locations.len(), locations);
    let outside: Vec<&str> = report
        .locations
        .iter()
        .filter(|l| !l.covered)
        .map(|l| l.root_path.as_str())
        .collect();
    assert_eq!(outside, ["/data/photos2"]);
    // Every live media file is counted under the location that holds it.
    for location in &report.locations {
        let files = summary
            .media_files
            .iter()
            .filter(|f| {
                !f.subtitle && !f.deleted && f.path.starts_with(&format!("{}/", location.root_path))
            })
            .count() as u64;
        let root = report
            .file_roots
            .iter()
            .find(|r| r.root == location.root_path)
            .expect("root listed");
        assert!(root.is_location);
        assert_eq!(root.files, files, "{}", location.root_path);
        assert_eq!(root.outside == 0, location.covered);
    }
    let error = report
        .ensure_covered()
        .expect_err("photos2 is outside")
        .to_string();
    assert!(
        error.starts_with(
            "library \"Photos\" location /data/photos2 is outside the mount /mnt/media"
        ),
        "{error}"
    );
    assert!(!error.contains('\n'));

    let both = [
        mapping(&spec.media_root, "/mnt/media"),
        mapping("/data/photos2", "/mnt/media/photos2"),
    ];
    let report = coverage::report(&db, &both, Path::new("/mnt/media")).expect("coverage");
    assert!(report.uncovered().is_empty(), "{:?}", report.uncovered());
    report.ensure_covered().expect("all under the mount");
}

#[test]
fn files_under_no_location_are_grouped_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_NAME);
    let conn = path_tables_db(&db);
    conn.execute_batch(
        "INSERT INTO library_sections(id, name, section_type) VALUES (1, 'Movies', 1);
         INSERT INTO section_locations(id, library_section_id, root_path) VALUES (1, 1, '/data/movies');
         INSERT INTO media_items(id, library_section_id) VALUES (1, 1), (2, 1), (3, 1), (4, 1);
         INSERT INTO media_parts(media_item_id, file, deleted_at) VALUES
            (1, '/data/movies/A/a.mkv', NULL), (2, '/old/disk/B/b.mkv', NULL), (3, '/old/disk/C/c.mkv', NULL),
            (4, '/gone/x.mkv', 1700000000), (1, '/data/moviesX/d.mkv', NULL);",
    )
    .unwrap();
    drop(conn);
    let report =
        coverage::report(&db, &[mapping("/data", "/mnt")], Path::new("/mnt")).expect("coverage");
    assert!(report.locations.iter().all(|l| l.covered));
    let roots: Vec<(&str, bool, u64, u64)> = report
        .file_roots
        .iter()
        .map(|r| (r.root.as_str(), r.is_location, r.files, r.outside))
        .collect();
    assert_eq!(
        roots,
        [
            ("/data/movies", true, 1, 0),
            ("/data/moviesX", false, 1, 0),
            ("/old/disk", false, 2, 2)
        ]
    );
    let error = report
        .ensure_covered()
        .expect_err("stray files")
        .to_string();
    assert_eq!(
        error,
        "2 media files of library \"Movies\" under /old/disk (mapped to /old/disk/B/b.mkv) is outside the mount /mnt"
    );
}

// ------------------------------------------------------------------- repair

fn count(db: &Path, table: &str) -> u64 {
    let conn = Connection::open(db).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap() as u64
}

#[test]
fn repair_recovers_every_readable_row_and_keeps_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, summary) = tiny_db(dir.path());
    let stats_before = stats::collect(&db).expect("stats");
    let (page, cells, page_size) = middle_leaf(&db, "media_parts");
    overwrite(&db, (page - 1) * page_size, &[0u8; 8]);
    integrity::check(&db, None).expect_err("damaged");
    let damaged_hash = sha256(&db);

    let backups = dir.path().join("backups");
    let report = repair::recover(&db, &backups).expect("recovery");
    integrity::check(&db, None).expect("the recovered DB passes");
    assert_eq!(
        sha256(&report.backup),
        damaged_hash,
        "the backup is the damaged original"
    );

    let parts = report
        .tables
        .iter()
        .find(|t| t.name == "media_parts")
        .expect("media_parts reported");
    assert_eq!(
        parts.rows,
        summary.media_parts - cells,
        "only the damaged page's rows are lost"
    );
    assert_eq!(parts.unreadable_ranges, 1);
    assert_eq!(count(&db, "media_parts"), summary.media_parts - cells);
    assert_eq!(count(&db, "metadata_items"), summary.metadata_items);
    assert_eq!(report.unreadable_ranges, 1);
    // What stock SQLite cannot create came back verbatim.
    let conn = Connection::open(&db).unwrap();
    let carried: u64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name IN ('fts4_metadata_titles_icu', 'spellfix_tag_titles', 'fts4_metadata_titles_after_insert_icu')",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as u64;
    assert_eq!(carried, 3);
    drop(conn);
    let stats_after = stats::collect(&db).expect("stats after repair");
    assert_eq!(stats_after.totals, stats_before.totals);
}

#[test]
fn repair_of_an_unreadable_schema_fails_and_leaves_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = tiny_db(dir.path());
    // Page 1 holds the schema: break its B-tree header (after the 100-byte file header).
    overwrite(&db, 100, &[0u8; 8]);
    let hash = sha256(&db);
    let error = repair::recover(&db, &dir.path().join("b")).expect_err("nothing to recover from");
    assert!(
        error.to_string().contains(&db.display().to_string()),
        "{error}"
    );
    assert_eq!(sha256(&db), hash);
    assert!(!dir.path().join(format!("{DB_NAME}.recovering")).exists());
}

// -------------------------------------------------------------- user size

/// Timings at the user's size (456,534 tracks, ~490k items): run with
/// `cargo test -p plex-burst-tests --release --test plexdb -- --ignored --nocapture`.
#[test]
#[ignore = "builds a ~490k-item DB: a measurement, not a test"]
fn user_size_timings() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::user_size();
    let db = dir.path().join(DB_NAME);
    let started = std::time::Instant::now();
    generate_db(&db, &spec).expect("user-size fixture");
    println!("fixture: {:.1?}", started.elapsed());
    let time = |label: &str, f: &mut dyn FnMut()| {
        let started = std::time::Instant::now();
        f();
        println!("{label}: {:.2?}", started.elapsed());
    };
    let mappings = [
        mapping(&spec.media_root, "/mnt/media"),
        mapping("/data/photos2", "/mnt/media/photos2"),
    ];
    time("stats", &mut || {
        let stats = stats::collect(&db).unwrap();
        assert_eq!(stats.sonic.tracks, 456_534);
    });
    time("coverage", &mut || {
        coverage::report(&db, &mappings, Path::new("/mnt/media"))
            .unwrap()
            .ensure_covered()
            .unwrap()
    });
    time("remap dry run", &mut || {
        drop(remap::dry_run(&db, &mappings).unwrap())
    });
    time("remap (backup included)", &mut || {
        drop(remap::apply(&db, &mappings, dir.path()).unwrap())
    });
    time("integrity", &mut || {
        drop(integrity::check(&db, None).unwrap())
    });
    let _ = plexdb::open_read_only(&db).unwrap();
}

/// A downloaded DB is data: every connection the toolkit opens has
/// `trusted_schema` off and SQLite's defensive mode, so SQL in the file's
/// schema reaches no function with side effects, and the schema cannot be
/// rewritten through SQL.
#[test]
fn every_connection_the_toolkit_opens_distrusts_the_schema() {
    use rusqlite::functions::FunctionFlags;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = tiny_db(dir.path());
    // A view calling an application function that is not innocuous (it
    // counts its calls): a side effect the file chooses when it is read.
    let calls = Arc::new(AtomicU64::new(0));
    let side_effect = |conn: &Connection| {
        let calls = Arc::clone(&calls);
        conn.create_scalar_function("side_effect", 0, FunctionFlags::SQLITE_UTF8, move |_| {
            Ok(calls.fetch_add(1, Ordering::SeqCst) as i64)
        })
        .unwrap();
    };
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "PRAGMA trusted_schema = ON; CREATE VIEW innocent AS SELECT side_effect() AS n",
        )
        .unwrap();
        side_effect(&conn);
        conn.query_row("SELECT n FROM innocent", [], |r| r.get::<_, i64>(0))
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a trusted schema runs it");
    }
    for (how, conn) in [
        ("read-only", plexdb::open_read_only(&db).unwrap()),
        ("for write", plexdb::open_for_write(&db).unwrap()),
    ] {
        let trusted: i64 = conn
            .query_row("PRAGMA trusted_schema", [], |r| r.get(0))
            .unwrap();
        assert_eq!(trusted, 0, "{how}");
        side_effect(&conn);
        let error = conn
            .query_row("SELECT n FROM innocent", [], |r| r.get::<_, i64>(0))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unsafe use of side_effect()"),
            "{how}: {error}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{how}: not run");
        // Defensive mode: the schema cannot be made writable.
        conn.execute_batch("PRAGMA writable_schema = ON").unwrap();
        let error = conn
            .execute(
                "UPDATE sqlite_schema SET sql = '' WHERE name = 'innocent'",
                [],
            )
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(error.contains("may not be modified"), "{how}: {error}");
    }
}
