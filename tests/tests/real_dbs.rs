//! The Plex DB toolkit on library DBs that real Plex servers wrote (1.19
//! to 1.43, `reference/real-plex-dbs/` in the shared folder): check,
//! stats, coverage, repair and anchors as functions, and every `runner db`
//! subcommand as a user runs it. Each test works on copies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use plex_burst_tests::bins::workspace_bin;
use plex_burst_tests::real_dbs::{self, RealDb};
use runner::plexdb::{self, PathMapping, PlexDbError, anchors, coverage, integrity, repair, stats};
use rusqlite::Connection;

/// Where the copies' library roots are mapped to in the coverage tests.
const MOUNT: &str = "/mnt/burst media";

fn copy(db: &RealDb, scratch: &Path) -> PathBuf {
    db.copy_into(&scratch.join(&db.version))
}

/// A plain connection to a copy, for the expected values.
fn plain(db: &Path) -> Connection {
    Connection::open(db).expect("copy opens")
}

fn rows<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str) -> Vec<T> {
    let mut stmt = conn.prepare(sql).expect("query prepares");
    stmt.query_map([], |r| r.get(0))
        .expect("query runs")
        .map(|r| r.expect("row"))
        .collect()
}

#[test]
fn the_check_passes_every_sound_db_and_names_the_damage_of_the_broken_one() {
    let scratch = tempfile::tempdir().unwrap();
    for real in real_dbs::all() {
        let db = copy(&real, scratch.path());
        let result = integrity::check(&db, None);
        if real.is_damaged() {
            let error = result.expect_err("the damaged DB is found corrupt");
            let message = error.to_string();
            assert!(
                matches!(&error, PlexDbError::Corrupt { table: Some(t), .. } if t == "fts4_metadata_titles_icu_segdir"),
                "{}: {message}",
                real.version
            );
            assert!(message.contains("out of order"), "{message}");
            assert_eq!(message.lines().count(), 1, "{message}");
            continue;
        }
        let report = result.unwrap_or_else(|e| panic!("{}: {e}", real.version));
        assert_eq!(report.method, integrity::CheckMethod::PerTable);
        // The collated index is verified under icu_root; naturalsort (1.19)
        // is only approximated, so its order is said to be unverified.
        let unverified: Vec<&str> = report
            .order_not_verified
            .iter()
            .map(|u| u.index.as_str())
            .collect();
        if real.version.as_str() < "1.29" {
            assert_eq!(unverified, ["index_title_sort_naturalsort"], "{report:?}");
        } else {
            assert!(unverified.is_empty(), "{}: {report:?}", real.version);
        }
    }
}

#[test]
fn a_collated_index_out_of_our_order_but_whole_is_sound_and_one_with_wrong_rows_is_corrupt() {
    let scratch = tempfile::tempdir().unwrap();
    let db = copy(&real_dbs::version("1.43.3"), scratch.path());
    // Rebuild the index under a reversed icu_root: the rows are all there,
    // in an order our collation disagrees with (as another ICU's could).
    {
        let conn = plain(&db);
        conn.create_collation("icu_root", |a: &str, b: &str| {
            runner::plexdb::collation::icu_root(b, a)
        })
        .unwrap();
        conn.execute_batch("REINDEX index_title_sort_icu").unwrap();
    }
    let report = integrity::check(&db, None).expect("a whole index in another order is sound");
    let [unverified] = report.order_not_verified.as_slice() else {
        panic!("{report:?}")
    };
    assert_eq!(unverified.index, "index_title_sort_icu");
    assert!(
        unverified.reason.contains("out of order") && unverified.reason.contains("match"),
        "{unverified:?}"
    );

    // An index over another column under the same name: its rows differ.
    {
        let conn = plain(&db);
        plexdb::collation::register(&conn).unwrap();
        conn.execute_batch(
            "DROP INDEX index_title_sort_icu;
             CREATE INDEX index_title_sort_icu ON metadata_items (title COLLATE icu_root);
             PRAGMA writable_schema = ON;
             UPDATE sqlite_schema SET sql = replace(sql, '(title COLLATE', '(title_sort COLLATE')
               WHERE name = 'index_title_sort_icu';
             PRAGMA writable_schema = OFF;",
        )
        .unwrap();
        let differing: i64 = conn
            .query_row(
                "SELECT count(*) FROM metadata_items WHERE title IS NOT title_sort",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            differing > 0,
            "the test needs titles unlike their sort titles"
        );
    }
    let error = integrity::check(&db, None).expect_err("an index with other rows is corrupt");
    assert!(
        error.to_string().contains("index_title_sort_icu"),
        "{error}"
    );
}

/// Live and deleted items per (library id or None, type), by plain SQL.
fn expected_counts(conn: &Connection) -> BTreeMap<(Option<i64>, i64), (u64, u64)> {
    let mut stmt = conn
        .prepare(
            "SELECT CASE WHEN library_section_id IN (SELECT id FROM library_sections)
                    THEN library_section_id END, metadata_type,
                    sum(deleted_at IS NULL), sum(deleted_at IS NOT NULL)
             FROM metadata_items GROUP BY 1, 2",
        )
        .unwrap();
    stmt.query_map([], |r| {
        let (live, deleted): (i64, i64) = (r.get(2)?, r.get(3)?);
        Ok(((r.get(0)?, r.get(1)?), (live as u64, deleted as u64)))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn stats_agree_with_plain_sql_on_every_db() {
    let scratch = tempfile::tempdir().unwrap();
    for real in real_dbs::sound() {
        let db = copy(&real, scratch.path());
        let stats = stats::collect(&db).unwrap_or_else(|e| panic!("{}: {e}", real.version));
        let conn = plain(&db);
        let expected = expected_counts(&conn);
        let mut got: BTreeMap<(Option<i64>, i64), (u64, u64)> = BTreeMap::new();
        for library in &stats.libraries {
            for (name, count) in &library.items {
                got.insert((Some(library.id), code(name)), (count.live, count.deleted));
            }
        }
        for (name, count) in &stats.outside_libraries {
            got.insert((None, code(name)), (count.live, count.deleted));
        }
        assert_eq!(got, expected, "{}", real.version);
        assert!(
            !stats.totals.keys().any(|t| t.starts_with("type_")),
            "{}: an unnamed type in {:?}",
            real.version,
            stats.totals.keys()
        );
        let tracks: u64 = rows::<i64>(
            &conn,
            "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL
             AND library_section_id IN (SELECT id FROM library_sections)",
        )[0] as u64;
        assert_eq!(stats.sonic.tracks, tracks, "{}", real.version);
        let libraries: Vec<i64> = rows(&conn, "SELECT id FROM library_sections ORDER BY id");
        let ids: Vec<i64> = stats.libraries.iter().map(|l| l.id).collect();
        assert_eq!(ids, libraries, "{}", real.version);
    }
}

/// The `metadata_type` code of a type name in the stats.
fn code(name: &str) -> i64 {
    (0..2000)
        .find(|c| stats::type_name(*c) == name)
        .unwrap_or_else(|| panic!("{name} names no metadata type"))
}

/// Every library root of `db` mapped under [`MOUNT`].
fn mappings(conn: &Connection) -> Vec<PathMapping> {
    rows::<String>(
        conn,
        "SELECT DISTINCT root_path FROM section_locations ORDER BY 1",
    )
    .iter()
    .map(|root| PathMapping::new(root, &format!("{MOUNT}{root}")).expect("a real root maps"))
    .collect()
}

#[test]
fn coverage_sees_every_library_file_under_the_mount_once_mapped() {
    let scratch = tempfile::tempdir().unwrap();
    for real in real_dbs::sound() {
        let db = copy(&real, scratch.path());
        let conn = plain(&db);
        let maps = mappings(&conn);
        let report = coverage::report(&db, &maps, Path::new(MOUNT))
            .unwrap_or_else(|e| panic!("{}: {e}", real.version));
        report
            .ensure_covered()
            .unwrap_or_else(|e| panic!("{}: {e}", real.version));
        let files: u64 = report.file_roots.iter().map(|r| r.files).sum();
        let live: i64 = rows(
            &conn,
            "SELECT count(*) FROM media_parts WHERE deleted_at IS NULL AND file IS NOT NULL AND file != ''",
        )[0];
        assert_eq!(
            files + report.plex_own_files,
            live as u64,
            "{}",
            real.version
        );
        // Unmapped, nothing is under the mount.
        let unmapped = coverage::report(&db, &[], Path::new(MOUNT)).unwrap();
        assert!(unmapped.ensure_covered().is_err(), "{}", real.version);
    }
}

#[test]
fn repair_keeps_every_row_index_and_statistic_of_a_sound_db_and_salvages_the_broken_one() {
    let scratch = tempfile::tempdir().unwrap();
    for real in real_dbs::all() {
        let db = copy(&real, scratch.path());
        let schema = |db: &Path| -> Vec<String> {
            rows(
                &plain(db),
                "SELECT type || ' ' || name || ' ' || coalesce(sql, '') FROM sqlite_schema ORDER BY 1",
            )
        };
        let statistics = |db: &Path| -> Vec<String> {
            rows(
                &plain(db),
                "SELECT tbl || ' ' || coalesce(idx, '') || ' ' || stat FROM sqlite_stat1 ORDER BY 1",
            )
        };
        let (schema_before, stats_before) = (schema(&db), statistics(&db));
        let backups = scratch.path().join(format!("{}-backups", real.version));
        let report =
            repair::recover(&db, &backups).unwrap_or_else(|e| panic!("{}: {e}", real.version));
        assert!(report.backup.is_file(), "{}", real.version);
        integrity::check(&db, None)
            .unwrap_or_else(|e| panic!("{} after repair: {e}", real.version));
        assert_eq!(schema(&db), schema_before, "{}", real.version);
        assert_eq!(statistics(&db), stats_before, "{}", real.version);
        // Every row of every ordinary table of the backup is back: as its
        // B-tree holds them (1.41.3's damaged table holds 7 rows, rowids
        // out of order, which its stale index counts as 9).
        let backup = plain(&report.backup);
        for table in &report.tables {
            let before: i64 = backup
                .query_row(
                    &format!("SELECT count(*) FROM \"{}\" NOT INDEXED", table.name),
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(table.rows as i64, before, "{} {}", real.version, table.name);
        }
        assert_eq!(
            (report.unreadable_ranges, report.rows_missing),
            (0, 0),
            "{}",
            real.version
        );
        if real.is_damaged() {
            let segdir = report
                .tables
                .iter()
                .find(|t| t.name == "fts4_metadata_titles_icu_segdir")
                .unwrap();
            assert_eq!(segdir.rows, 7, "{segdir:?}");
        }
    }
}

#[test]
fn anchors_are_live_library_files_of_every_db() {
    let scratch = tempfile::tempdir().unwrap();
    for real in real_dbs::sound() {
        let db = copy(&real, scratch.path());
        let conn = plain(&db);
        let live: Vec<String> = rows(
            &conn,
            "SELECT file FROM media_parts WHERE deleted_at IS NULL AND file != ''",
        );
        let picked = anchors::sample(&db, 5, Path::new("/"))
            .unwrap_or_else(|e| panic!("{}: {e}", real.version));
        assert_eq!(picked.len(), live.len().min(5), "{}", real.version);
        for file in &picked {
            assert!(
                live.iter().any(|l| Path::new(l) == file),
                "{}: {} is no live file",
                real.version,
                file.display()
            );
        }
    }
}

/// `runner db ARGS...`: (exit status, stdout as JSON or Null, stderr).
fn runner_db(args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(workspace_bin("runner"))
        .arg("db")
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("runner runs");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_runner_db_subcommand_works_on_every_real_db() {
    let scratch = tempfile::tempdir().unwrap();
    for real in real_dbs::all() {
        let db = copy(&real, scratch.path());
        let path = db.to_str().unwrap();
        let v = &real.version;

        let (ok, report, stderr) = runner_db(&["check", path]);
        assert_eq!(ok, !real.is_damaged(), "{v}: {stderr}");
        if real.is_damaged() {
            assert!(
                stderr.trim().starts_with("error: database is corrupt"),
                "{v}: {stderr}"
            );
            let (ok, report, stderr) = runner_db(&["repair", path]);
            assert!(ok, "{v}: {stderr}");
            assert!(
                report["integrity"]["method"] == "per_table",
                "{v}: {report}"
            );
            let (ok, _, stderr) = runner_db(&["check", path]);
            assert!(ok, "{v} after repair: {stderr}");
            continue;
        }
        assert_eq!(report["method"], "per_table", "{v}: {report}");
        let (ok, serial, stderr) = runner_db(&["check", path, "--jobs", "1"]);
        assert!(ok, "{v}: {stderr}");
        assert_eq!(serial, report, "{v}: one worker, another report");

        // Home's watch state merged into a copy of itself: nothing to write.
        let home = scratch.path().join(format!("home-{v}.db"));
        std::fs::copy(&db, &home).unwrap();
        let home = home.to_str().unwrap();
        let (ok, mut previewed, stderr) =
            runner_db(&["merge-watch", home, path, "--since", "0", "--dry-run"]);
        assert!(ok, "{v}: {stderr}");
        let (ok, merged, stderr) = runner_db(&["merge-watch", home, path, "--since", "0"]);
        assert!(ok, "{v}: {stderr}");
        assert_eq!(previewed["dry_run"], true, "{v}: {previewed}");
        previewed["dry_run"] = false.into();
        assert_eq!(previewed, merged, "{v}: preview and merge disagree");
        for written in ["settings_inserted", "settings_updated", "views_inserted"] {
            assert_eq!(merged[written], 0, "{v}: {merged}");
        }

        let (ok, report, stderr) = runner_db(&["stats", path]);
        assert!(ok, "{v}: {stderr}");
        let items: i64 = rows(&plain(&db), "SELECT count(*) FROM metadata_items")[0];
        let total: i64 = report["totals"]
            .as_object()
            .unwrap()
            .values()
            .map(|c| c["live"].as_i64().unwrap() + c["deleted"].as_i64().unwrap())
            .sum();
        assert_eq!(total, items, "{v}: {report}");

        let maps = mappings(&plain(&db));
        let map_args: Vec<String> = maps
            .iter()
            .flat_map(|m| ["--map".to_string(), format!("{}={}", m.from, m.to)])
            .collect();
        let with_maps = |head: &[&str]| -> Vec<String> {
            head.iter()
                .map(|s| s.to_string())
                .chain(map_args.iter().cloned())
                .collect()
        };
        let args = with_maps(&["coverage", path, "--mount", MOUNT]);
        let (ok, report, stderr) = runner_db(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(ok, "{v}: {stderr}");
        assert!(
            report["locations"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["covered"] == true),
            "{v}: {report}"
        );

        let args = with_maps(&["remap", path, "--dry-run"]);
        let (ok, planned, stderr) = runner_db(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(ok, "{v}: {stderr}");
        let args = with_maps(&["remap", path]);
        let (ok, applied, stderr) = runner_db(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(ok, "{v}: {stderr}");
        assert_eq!(planned["total_rows"], applied["total_rows"], "{v}");
        let parts: i64 = rows(
            &plain(&db),
            "SELECT count(*) FROM media_parts WHERE file != ''",
        )[0];
        assert!(
            applied["total_rows"].as_i64().unwrap() >= parts,
            "{v}: {applied}"
        );
        let (ok, _, stderr) = runner_db(&["check", path]);
        assert!(ok, "{v} after remap: {stderr}");

        let (ok, report, stderr) = runner_db(&["repair", path]);
        assert!(ok, "{v}: {stderr}");
        assert_eq!(
            report["integrity"]["order_not_verified"]
                .as_array()
                .unwrap()
                .is_empty(),
            v.as_str() >= "1.29",
            "{v}: {report}"
        );
    }
}
