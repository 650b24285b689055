use std::path::PathBuf;

use rusqlite::config::DbConfig;

use super::times::seconds;
use super::*;

const SINCE: i64 = 1_800_000_000;

/// The real `CREATE TABLE` statements of the tables a merge touches,
/// from the schema dump in the shared reference folder.
fn plex_db(path: &Path) -> Connection {
    let shared = std::env::var_os("PLEX_BURST_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let dump = std::fs::read_to_string(shared.join("reference/plex-library-schema.sql"))
        .expect("schema dump readable");
    let conn = Connection::open(path).unwrap();
    for table in [
        "library_sections",
        "section_locations",
        "metadata_items",
        "media_parts",
        SETTINGS,
        VIEWS,
        "accounts",
        "devices",
    ] {
        let create = dump
            .lines()
            .find(|l| l.starts_with(&format!("CREATE TABLE IF NOT EXISTS \"{table}\" ")))
            .unwrap_or_else(|| panic!("{table} in the dump"));
        conn.execute_batch(create).unwrap();
    }
    conn.execute_batch(
        "INSERT INTO accounts(id, name) VALUES (1, 'owner');
         INSERT INTO devices(id, identifier, name) VALUES (1, 'dev-1', 'TV');
         INSERT INTO library_sections(id, name, section_type) VALUES (1, 'Movies', 1), (2, 'Shows', 2);
         INSERT INTO metadata_items(id, library_section_id, metadata_type, guid, title)
           VALUES (1, 1, 1, 'plex://movie/a', 'A'), (2, 1, 1, 'plex://movie/b', 'B'),
                  (3, 2, 4, 'plex://episode/c', 'C');",
    )
    .unwrap();
    conn
}

/// A settings row; `changed_at` is the DB's next counter value, as Plex
/// keeps it (a counter, not a time).
fn setting(conn: &Connection, account: i64, guid: &str, count: i64, at: i64) {
    conn.execute(
        "INSERT INTO metadata_item_settings(account_id, guid, view_count, view_offset, last_viewed_at,
            created_at, updated_at, changed_at) VALUES (?1, ?2, ?3, 0, ?4, ?4, ?4,
            (SELECT coalesce(max(changed_at), 100) + 1 FROM metadata_item_settings))",
        params![account, guid, count, at],
    )
    .unwrap();
}

fn changed_at(conn: &Connection, guid: &str) -> i64 {
    conn.query_row(
        "SELECT changed_at FROM metadata_item_settings WHERE guid = ?1",
        [guid],
        |r| r.get(0),
    )
    .unwrap()
}

fn view(conn: &Connection, account: i64, guid: &str, at: i64, section: i64, device: i64) {
    conn.execute(
        "INSERT INTO metadata_item_views(account_id, guid, metadata_type, library_section_id, title,
            viewed_at, device_id) VALUES (?1, ?2, 1, ?3, 't', ?4, ?5)",
        params![account, guid, section, at, device],
    )
    .unwrap();
}

fn view_count(conn: &Connection, account: i64, guid: &str) -> Vec<i64> {
    conn.prepare(
        "SELECT view_count FROM metadata_item_settings WHERE account_id = ?1 AND guid = ?2",
    )
    .unwrap()
    .query_map(params![account, guid], |r| r.get(0))
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// `snap` is the state both had at `SINCE`; home then moved on.
fn pair() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (home, into) = (dir.path().join("home.db"), dir.path().join("into.db"));
    for path in [&home, &into] {
        let conn = plex_db(path);
        setting(&conn, 1, "plex://movie/a", 1, SINCE - 100);
        setting(&conn, 1, "plex://movie/b", 1, SINCE - 100);
        view(&conn, 1, "plex://movie/a", SINCE - 100, 1, 1);
    }
    (dir, home, into)
}

#[test]
fn home_changes_after_the_snapshot_are_merged() {
    let (_dir, home, into) = pair();
    let h = Connection::open(&home).unwrap();
    // Watched again at home after the snapshot.
    h.execute(
        "UPDATE metadata_item_settings SET view_count = 2, last_viewed_at = ?1, updated_at = ?1
         WHERE guid = 'plex://movie/a'",
        [SINCE + 10],
    )
    .unwrap();
    view(&h, 1, "plex://movie/a", SINCE + 10, 99, 1);
    // A new user, on a new device, watching an episode.
    h.execute_batch(
        "INSERT INTO accounts(id, name) VALUES (7, 'guest');
         INSERT INTO devices(id, identifier, name) VALUES (5, 'dev-5', 'Phone');",
    )
    .unwrap();
    setting(&h, 7, "plex://episode/c", 1, SINCE + 20);
    view(&h, 7, "plex://episode/c", SINCE + 20, 2, 5);
    // Something the target does not know at all.
    setting(&h, 1, "plex://movie/gone", 3, SINCE + 30);
    drop(h);
    let home_hash = std::fs::read(&home).unwrap();

    let preview_report = preview(&home, &into, SINCE).unwrap();
    let report = merge(&home, &into, SINCE).unwrap();
    assert_eq!(std::fs::read(&home).unwrap(), home_hash, "home was written");
    assert!(preview_report.dry_run && !report.dry_run);
    assert_eq!(
        WatchStateReport {
            dry_run: false,
            ..preview_report
        },
        report,
        "preview and merge disagree"
    );
    assert_eq!(report.settings_updated, 1, "{report:?}");
    assert_eq!(report.settings_inserted, 2, "{report:?}");
    assert_eq!(report.views_inserted, 2, "{report:?}");
    assert_eq!(report.accounts_added, 1, "{report:?}");
    assert_eq!(report.devices_added, 1, "{report:?}");
    assert_eq!(report.guids_not_found, 1, "{report:?}");

    let t = Connection::open(&into).unwrap();
    assert_eq!(view_count(&t, 1, "plex://movie/a"), [2]);
    assert_eq!(view_count(&t, 7, "plex://episode/c"), [1]);
    assert_eq!(view_count(&t, 1, "plex://movie/gone"), [3]);
    assert_eq!(
        count(
            &t,
            "SELECT count(*) FROM accounts WHERE id = 7 AND name = 'guest'"
        ),
        1
    );
    assert_eq!(count(&t, "SELECT count(*) FROM devices WHERE id = 5"), 1);
    // The section comes from the target's item, not home's row.
    assert_eq!(
        count(
            &t,
            &format!(
                "SELECT library_section_id FROM metadata_item_views WHERE viewed_at = {}",
                SINCE + 10
            )
        ),
        1
    );
    assert_eq!(count(&t, "SELECT count(*) FROM metadata_item_views"), 3);
}

#[test]
fn merging_twice_adds_nothing() {
    let (_dir, home, into) = pair();
    let h = Connection::open(&home).unwrap();
    setting(&h, 1, "plex://episode/c", 4, SINCE + 5);
    view(&h, 1, "plex://episode/c", SINCE + 5, 2, 1);
    drop(h);
    let first = merge(&home, &into, SINCE).unwrap();
    assert_eq!((first.settings_inserted, first.views_inserted), (1, 1));
    let before = std::fs::read(&into).unwrap();
    let second = merge(&home, &into, SINCE).unwrap();
    assert_eq!(second.changes(), 0, "{second:?}");
    assert_eq!((second.settings_unchanged, second.views_present), (1, 1));
    let t = Connection::open(&into).unwrap();
    assert_eq!(count(&t, "SELECT count(*) FROM metadata_item_views"), 2);
    assert_eq!(count(&t, "SELECT count(*) FROM metadata_item_settings"), 3);
    drop(t);
    assert_eq!(
        std::fs::read(&into).unwrap(),
        before,
        "a no-op merge rewrote the file"
    );
}

#[test]
fn older_home_rows_never_overwrite_and_a_newer_target_row_wins() {
    let (_dir, home, into) = pair();
    // Before the snapshot at home, different in the target: not copied.
    let h = Connection::open(&home).unwrap();
    h.execute(
        "UPDATE metadata_item_settings SET view_count = 9 WHERE guid = 'plex://movie/b'",
        [],
    )
    .unwrap();
    // Changed at home after the snapshot, but later still in the target.
    h.execute(
        "UPDATE metadata_item_settings SET view_count = 5, updated_at = ?1 WHERE guid = 'plex://movie/a'",
        [SINCE + 10],
    )
    .unwrap();
    drop(h);
    let t = Connection::open(&into).unwrap();
    t.execute(
        "UPDATE metadata_item_settings SET view_count = 6, updated_at = ?1 WHERE guid = 'plex://movie/a'",
        [SINCE + 20],
    )
    .unwrap();
    drop(t);

    let report = merge(&home, &into, SINCE).unwrap();
    assert_eq!(report.settings_kept_newer, 1, "{report:?}");
    assert_eq!(report.changes(), 0, "{report:?}");
    let t = Connection::open(&into).unwrap();
    assert_eq!(view_count(&t, 1, "plex://movie/b"), [1]);
    assert_eq!(view_count(&t, 1, "plex://movie/a"), [6]);
}

#[test]
fn a_rating_or_skip_counts_as_a_change() {
    let (_dir, home, into) = pair();
    let h = Connection::open(&home).unwrap();
    h.execute(
        "UPDATE metadata_item_settings SET rating = 8.0, last_rated_at = ?1 WHERE guid = 'plex://movie/b'",
        [SINCE + 1],
    )
    .unwrap();
    drop(h);
    let report = merge(&home, &into, SINCE).unwrap();
    assert_eq!(report.settings_updated, 1, "{report:?}");
    let t = Connection::open(&into).unwrap();
    let rating: f64 = t
        .query_row(
            "SELECT rating FROM metadata_item_settings WHERE guid = 'plex://movie/b'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rating, 8.0);
}

#[test]
fn a_failed_write_leaves_the_target_untouched() {
    let (_dir, home, into) = pair();
    let h = Connection::open(&home).unwrap();
    setting(&h, 1, "plex://episode/c", 4, SINCE + 5);
    view(&h, 1, "plex://episode/c", SINCE + 5, 2, 1);
    drop(h);
    // An index that fails the second table's insert (one view per account).
    let t = Connection::open(&into).unwrap();
    t.execute_batch("CREATE UNIQUE INDEX boom ON metadata_item_views(account_id);")
        .unwrap();
    drop(t);
    let before = std::fs::read(&into).unwrap();
    let error = merge(&home, &into, SINCE).unwrap_err();
    assert!(error.to_string().contains("UNIQUE"), "{error}");
    assert_eq!(std::fs::read(&into).unwrap(), before);
}

#[test]
fn a_trigger_on_a_written_table_refuses_the_merge() {
    for table in [SETTINGS, VIEWS, "accounts", "devices"] {
        let (_dir, home, into) = pair();
        let h = Connection::open(&home).unwrap();
        setting(&h, 1, "plex://episode/c", 4, SINCE + 5);
        drop(h);
        let t = Connection::open(&into).unwrap();
        t.execute_batch(&format!(
            "CREATE TRIGGER sneaky AFTER UPDATE ON {table} BEGIN SELECT 1; END;"
        ))
        .unwrap();
        drop(t);
        let before = std::fs::read(&into).unwrap();
        for error in [
            preview(&home, &into, SINCE).unwrap_err(),
            merge(&home, &into, SINCE).unwrap_err(),
        ] {
            let text = error.to_string();
            assert!(
                text.contains(&format!("refused: trigger \"sneaky\" on table {table}")),
                "{text}"
            );
            assert_eq!(text.lines().count(), 1, "{text}");
        }
        assert_eq!(std::fs::read(&into).unwrap(), before, "{table}");
    }
}

#[test]
fn connections_are_hardened() {
    let (_dir, _, into) = pair();
    let conn = open_read(&into).unwrap();
    assert!(conn.db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE).unwrap());
    assert!(
        !conn
            .db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA)
            .unwrap()
    );
    let trusted: i64 = conn
        .query_row("PRAGMA trusted_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(trusted, 0);
}

#[test]
fn a_huge_home_counter_never_beats_a_newer_target_row() {
    let (_dir, home, into) = pair();
    // Home: watched after the snapshot, with a counter near 7.6e18.
    let h = Connection::open(&home).unwrap();
    h.execute(
        "UPDATE metadata_item_settings SET view_count = 5, updated_at = ?1,
            changed_at = 7596562620373592267 WHERE guid = 'plex://movie/a'",
        [SINCE + 10],
    )
    .unwrap();
    drop(h);
    // Target: watched later still, with a small counter.
    let t = Connection::open(&into).unwrap();
    t.execute(
        "UPDATE metadata_item_settings SET view_count = 6, updated_at = ?1, changed_at = 150
         WHERE guid = 'plex://movie/a'",
        [SINCE + 20],
    )
    .unwrap();
    drop(t);
    let report = merge(&home, &into, SINCE).unwrap();
    assert_eq!(report.settings_kept_newer, 1, "{report:?}");
    assert_eq!(report.changes(), 0, "{report:?}");
    let t = Connection::open(&into).unwrap();
    assert_eq!(view_count(&t, 1, "plex://movie/a"), [6]);
    assert_eq!(changed_at(&t, "plex://movie/a"), 150);
}

#[test]
fn a_home_row_newer_only_by_its_counter_is_not_merged() {
    let (_dir, home, into) = pair();
    let h = Connection::open(&home).unwrap();
    h.execute(
        "UPDATE metadata_item_settings SET view_count = 9, view_offset = 1234,
            changed_at = 7596562620373592267 WHERE guid = 'plex://movie/b'",
        [],
    )
    .unwrap();
    drop(h);
    let before = std::fs::read(&into).unwrap();
    let report = merge(&home, &into, SINCE).unwrap();
    assert_eq!(report.changes(), 0, "{report:?}");
    assert_eq!(report.settings_unchanged + report.settings_kept_newer, 0);
    assert_eq!(std::fs::read(&into).unwrap(), before);
}

#[test]
fn written_rows_get_the_targets_next_counter_values() {
    let (_dir, home, into) = pair();
    let h = Connection::open(&home).unwrap();
    h.execute(
        "UPDATE metadata_item_settings SET view_count = 2, updated_at = ?1,
            changed_at = 7596562620373592267 WHERE guid = 'plex://movie/a'",
        [SINCE + 10],
    )
    .unwrap();
    setting(&h, 1, "plex://episode/c", 1, SINCE + 20);
    drop(h);
    // The counter is shared by the DB's tables: an item holds the maximum.
    let t = Connection::open(&into).unwrap();
    t.execute_batch(
        "UPDATE metadata_items SET changed_at = 500 WHERE id = 3;
         UPDATE metadata_items SET resources_changed_at = 499 WHERE id = 2;",
    )
    .unwrap();
    drop(t);
    merge(&home, &into, SINCE).unwrap();
    let t = Connection::open(&into).unwrap();
    assert_eq!(changed_at(&t, "plex://movie/a"), 501);
    assert_eq!(changed_at(&t, "plex://episode/c"), 502);
    assert_eq!(changed_at(&t, "plex://movie/b"), 102, "untouched row kept");
}

#[test]
fn text_date_times_are_parsed_as_utc() {
    let p = Path::new("x.db");
    let at = |v: &str| seconds(&Value::Text(v.into()), p, SETTINGS, "updated_at").unwrap();
    assert_eq!(at("2020-08-15 09:37:21"), Some(1_597_484_241));
    assert_eq!(at("2020-08-15T09:37:21Z"), Some(1_597_484_241));
    assert_eq!(at("2020-08-15 09:37:21.875"), Some(1_597_484_241));
    assert_eq!(at("1597484241"), Some(1_597_484_241));
    assert_eq!(
        seconds(&Value::Null, p, SETTINGS, "updated_at").unwrap(),
        None
    );
    for bad in ["15/08/2020", "2020-13-01 00:00:00", "yesterday", ""] {
        let error = seconds(&Value::Text(bad.into()), p, SETTINGS, "updated_at").unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("metadata_item_settings.updated_at holds {bad:?}")),
            "{error}"
        );
    }
}

#[test]
fn text_times_at_home_are_compared_with_since() {
    let (_dir, home, into) = pair();
    let h = Connection::open(&home).unwrap();
    // SINCE is 2027-01-15 08:00:00 UTC.
    h.execute_batch(
        "UPDATE metadata_item_settings SET view_count = 4, updated_at = '2027-01-15 08:00:01'
           WHERE guid = 'plex://movie/a';
         UPDATE metadata_item_settings SET view_count = 8, updated_at = '2027-01-15 07:59:59.900'
           WHERE guid = 'plex://movie/b';",
    )
    .unwrap();
    drop(h);
    let report = merge(&home, &into, SINCE).unwrap();
    assert_eq!(report.settings_updated, 1, "{report:?}");
    let t = Connection::open(&into).unwrap();
    assert_eq!(view_count(&t, 1, "plex://movie/a"), [4]);
    assert_eq!(view_count(&t, 1, "plex://movie/b"), [1]);
}

#[test]
fn an_unreadable_time_refuses_the_merge() {
    let (_dir, home, into) = pair();
    let h = Connection::open(&home).unwrap();
    h.execute(
        "UPDATE metadata_item_settings SET view_count = 4, last_viewed_at = 'last tuesday'
         WHERE guid = 'plex://movie/a'",
        [],
    )
    .unwrap();
    drop(h);
    let before = std::fs::read(&into).unwrap();
    let error = merge(&home, &into, SINCE).unwrap_err().to_string();
    assert!(
        error.contains("refused: metadata_item_settings.last_viewed_at holds \"last tuesday\""),
        "{error}"
    );
    assert_eq!(std::fs::read(&into).unwrap(), before);
}

#[test]
fn a_db_is_not_merged_into_itself() {
    let (_dir, home, _) = pair();
    let error = merge(&home, &home, SINCE).unwrap_err();
    assert!(error.to_string().contains("into itself"), "{error}");
}

#[test]
fn duplicates_at_home_are_merged_once_the_latest_winning() {
    let (_dir, home, into) = pair();
    let h = Connection::open(&home).unwrap();
    // Two equally recent rows for one key: the later row wins.
    setting(&h, 7, "plex://movie/a", 2, SINCE + 10);
    setting(&h, 7, "plex://movie/a", 3, SINCE + 10);
    // The latest row of another key first, an older one after it.
    setting(&h, 1, "plex://episode/c", 5, SINCE + 30);
    setting(&h, 1, "plex://episode/c", 4, SINCE + 20);
    // The same view twice.
    view(&h, 1, "plex://episode/c", SINCE + 30, 2, 1);
    view(&h, 1, "plex://episode/c", SINCE + 30, 2, 1);
    drop(h);

    let preview_report = preview(&home, &into, SINCE).unwrap();
    let report = merge(&home, &into, SINCE).unwrap();
    assert_eq!(
        WatchStateReport {
            dry_run: false,
            ..preview_report
        },
        report,
        "preview and merge disagree"
    );
    assert_eq!(report.settings_inserted, 2, "{report:?}");
    assert_eq!((report.views_inserted, report.views_present), (1, 1));
    let t = Connection::open(&into).unwrap();
    assert_eq!(view_count(&t, 7, "plex://movie/a"), [3]);
    assert_eq!(view_count(&t, 1, "plex://episode/c"), [5]);
    // Counter values in the order of each key's first row at home.
    let counter = |account: i64, guid: &str| -> i64 {
        t.query_row(
            "SELECT changed_at FROM metadata_item_settings WHERE account_id = ?1 AND guid = ?2",
            params![account, guid],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(counter(7, "plex://movie/a"), 103);
    assert_eq!(counter(1, "plex://episode/c"), 104);
    assert_eq!(count(&t, "SELECT count(*) FROM metadata_item_views"), 2);
}
