//! The watch-state merge between copies of real Plex DBs
//! (`reference/real-plex-dbs` in the shared folder): what Plex really
//! writes (counters in `changed_at`, text times in 1.19), not what the
//! fixture generator makes. Expectations are computed here in plain SQL
//! over the two inputs, never by the merge's own code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use plex_burst_tests::real_dbs::{self, DB_NAME};
use runner::plexdb::watchstate::{self, WatchStateReport};
use rusqlite::types::Value;
use rusqlite::{Connection, params};

/// The columns a merge copies from home's settings rows.
const WATCH: [&str; 9] = [
    "rating",
    "view_offset",
    "view_count",
    "last_viewed_at",
    "updated_at",
    "skip_count",
    "last_skipped_at",
    "extra_data",
    "last_rated_at",
];
/// A counter value as big as real ones get (1.40.3 has 7.6e18).
const HUGE_COUNTER: i64 = 8_900_000_000_000_000_000;

type Row = BTreeMap<String, Value>;

/// Every real DB's version but the damaged one.
fn versions() -> Vec<String> {
    real_dbs::sound().into_iter().map(|d| d.version).collect()
}

/// A writable copy of a real DB, with its `-wal`, as `dir/name/<db>`.
fn copy(version: &str, dir: &Path, name: &str) -> PathBuf {
    real_dbs::version(version).copy_into(&dir.join(name))
}

/// The rows of a query, each by column name.
fn rows(conn: &Connection, sql: &str) -> Vec<Row> {
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let names: Vec<String> = stmt.column_names().map(|n| n.to_string()).collect();
    stmt.query_map([], |r| {
        Ok(names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), r.get::<_, Value>(i).unwrap()))
            .collect::<Row>())
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn by_id(rows: Vec<Row>) -> BTreeMap<i64, Row> {
    rows.into_iter()
        .map(|r| match r["id"] {
            Value::Integer(id) => (id, r),
            ref other => panic!("id {other:?}"),
        })
        .collect()
}

fn int(value: &Value) -> i64 {
    match value {
        Value::Integer(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

fn one(conn: &Connection, sql: &str) -> Value {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// The largest change counter of a DB's main tables.
fn counter_max(conn: &Connection) -> i64 {
    int(&one(
        conn,
        "SELECT max(v) FROM (
           SELECT max(changed_at) v FROM metadata_items
           UNION ALL SELECT max(resources_changed_at) FROM metadata_items
           UNION ALL SELECT max(changed_at) FROM metadata_item_settings
           UNION ALL SELECT max(changed_at) FROM library_sections
           UNION ALL SELECT max(content_changed_at) FROM library_sections
           UNION ALL SELECT max(changed_at) FROM play_queue_generators)",
    ))
}

/// `row` without the given columns.
fn without(row: &Row, columns: &[&str]) -> Row {
    row.iter()
        .filter(|(k, _)| !columns.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A time as the DB stores it: text in 1.19, unix seconds later.
fn stored_time(text_times: bool, at: i64) -> Value {
    if text_times {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at as u64);
        let text = humantime::format_rfc3339_seconds(time).to_string();
        Value::Text(text.trim_end_matches('Z').replace('T', " "))
    } else {
        Value::Integer(at)
    }
}

#[test]
fn every_real_db_merges_into_a_copy_of_itself() {
    const SINCE: i64 = 1_800_000_000; // after every time in the real DBs
    for version in versions() {
        let dir = tempfile::tempdir().unwrap();
        let (home, cloud) = (
            copy(&version, dir.path(), "home"),
            copy(&version, dir.path(), "cloud"),
        );

        // Everything considered, everything already there.
        let same = watchstate::merge(&home, &cloud, 0).unwrap();
        assert_eq!(same.changes(), 0, "{version}: {same:?}");
        assert_eq!(
            same.settings_updated + same.settings_kept_newer,
            0,
            "{version}"
        );

        // Home watches after the snapshot.
        let h = Connection::open(&home).unwrap();
        let first = rows(
            &h,
            "SELECT * FROM metadata_item_settings s
             WHERE EXISTS (SELECT 1 FROM metadata_items m WHERE m.guid = s.guid) ORDER BY id LIMIT 1",
        )
        .remove(0);
        let text_times = matches!(first["updated_at"], Value::Text(_));
        let watched_at = stored_time(text_times, SINCE + 60);
        h.execute(
            "UPDATE metadata_item_settings SET view_offset = 4321, view_count = coalesce(view_count, 0) + 1,
                last_viewed_at = ?1, updated_at = ?1, changed_at = ?2 WHERE id = ?3",
            params![watched_at, HUGE_COUNTER, first["id"]],
        )
        .unwrap();
        h.execute(
            "INSERT INTO metadata_item_views(account_id, guid, metadata_type, library_section_id, title, viewed_at)
             VALUES(?1, ?2, 1, 999, 'again', ?3)",
            params![first["account_id"], first["guid"], watched_at],
        )
        .unwrap();
        let fresh = one(
            &h,
            "SELECT guid FROM metadata_items WHERE guid IS NOT NULL AND guid <> ''
             AND guid NOT IN (SELECT guid FROM metadata_item_settings WHERE guid IS NOT NULL)
             ORDER BY id LIMIT 1",
        );
        let started_at = stored_time(text_times, SINCE + 90);
        h.execute(
            "INSERT INTO metadata_item_settings(account_id, guid, view_offset, view_count, last_viewed_at,
                created_at, updated_at, changed_at) VALUES(?1, ?2, 1000, 0, ?3, ?3, ?3, ?4)",
            params![first["account_id"], fresh, started_at, HUGE_COUNTER + 1],
        )
        .unwrap();
        let home_settings = by_id(rows(&h, "SELECT * FROM metadata_item_settings"));
        drop(h);

        let c = Connection::open(&cloud).unwrap();
        let settings_before = by_id(rows(&c, "SELECT * FROM metadata_item_settings"));
        let views_before = by_id(rows(&c, "SELECT * FROM metadata_item_views"));
        let counter_before = counter_max(&c);
        // The merge files history under the cloud's section of the item.
        let section = match one(
            &c,
            &format!(
                "SELECT library_section_id FROM metadata_items WHERE guid = {}
                 ORDER BY deleted_at IS NOT NULL, id LIMIT 1",
                sql_text(&first["guid"])
            ),
        ) {
            Value::Null => Value::Integer(999),
            found => found,
        };
        drop(c);

        let report = watchstate::merge(&home, &cloud, SINCE).unwrap();
        assert_eq!(
            report,
            WatchStateReport {
                since: SINCE,
                settings_updated: 1,
                settings_inserted: 1,
                views_inserted: 1,
                ..WatchStateReport::default()
            },
            "{version}"
        );

        let c = Connection::open(&cloud).unwrap();
        let settings = by_id(rows(&c, "SELECT * FROM metadata_item_settings"));
        let first_id = int(&first["id"]);
        let mut counters = BTreeSet::new();
        for (id, before) in &settings_before {
            let after = &settings[id];
            if *id == first_id {
                let home_row = &home_settings[id];
                assert_eq!(
                    without(after, &["changed_at"]),
                    without(home_row, &["changed_at"]),
                    "{version}: the watched row takes home's values"
                );
                counters.insert(int(&after["changed_at"]));
            } else {
                assert_eq!(after, before, "{version}: row {id} untouched");
            }
        }
        let new: Vec<&Row> = settings
            .iter()
            .filter(|(id, _)| !settings_before.contains_key(id))
            .map(|(_, r)| r)
            .collect();
        assert_eq!(new.len(), 1, "{version}: one row inserted");
        let home_new = home_settings.values().find(|r| r["guid"] == fresh).unwrap();
        assert_eq!(
            without(new[0], &["id", "changed_at"]),
            without(home_new, &["id", "changed_at"]),
            "{version}"
        );
        counters.insert(int(&new[0]["changed_at"]));
        assert_eq!(
            counters.len(),
            2,
            "{version}: distinct counters {counters:?}"
        );
        assert!(
            counters
                .iter()
                .all(|c| *c > counter_before && *c < HUGE_COUNTER),
            "{version}: counters {counters:?} must follow the cloud's {counter_before}, not home's"
        );

        let views = by_id(rows(&c, "SELECT * FROM metadata_item_views"));
        assert_eq!(views.len(), views_before.len() + 1, "{version}");
        for (id, before) in &views_before {
            assert_eq!(&views[id], before, "{version}: view {id} untouched");
        }
        let added = views
            .iter()
            .find(|(id, _)| !views_before.contains_key(id))
            .unwrap()
            .1;
        assert_eq!(added["guid"], first["guid"], "{version}");
        assert_eq!(added["account_id"], first["account_id"], "{version}");
        assert_eq!(added["viewed_at"], watched_at, "{version}");
        assert_eq!(added["title"], Value::Text("again".into()), "{version}");
        assert_eq!(
            added["library_section_id"], section,
            "{version}: the cloud's section"
        );
    }
}

/// A value as an SQL literal (text or integer).
fn sql_text(value: &Value) -> String {
    match value {
        Value::Text(t) => format!("'{}'", t.replace('\'', "''")),
        Value::Integer(i) => i.to_string(),
        other => panic!("{other:?}"),
    }
}

/// 1.43.3: the cloud ran from a snapshot at `SINCE`; meanwhile the
/// household watched, rated and started things at home, some rows changed
/// at home before the snapshot (with a huge counter), and one item was
/// watched later still in the cloud's copy.
#[test]
fn a_real_household_is_merged_row_by_row() {
    const VERSION: &str = "1.43.3";
    // Between the real rows: some were touched before, some after.
    const SINCE: i64 = 1_704_251_000;
    const T: i64 = 1_790_000_000;
    let dir = tempfile::tempdir().unwrap();
    let (home, cloud) = (
        copy(VERSION, dir.path(), "home"),
        copy(VERSION, dir.path(), "cloud"),
    );

    let h = Connection::open(&home).unwrap();
    let episode: String = h
        .query_row(
            "SELECT guid FROM metadata_items WHERE metadata_type = 4 ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    h.execute_batch(&format!(
        "-- watched again, with its history row
         UPDATE metadata_item_settings SET view_count = view_count + 1, last_viewed_at = {T}, updated_at = {T}
           WHERE id = 17;
         INSERT INTO metadata_item_views(account_id, guid, metadata_type, library_section_id, title, viewed_at, device_id)
           SELECT account_id, guid, 1, 999, 'again', {T}, 1 FROM metadata_item_settings WHERE id = 17;
         -- stopped half-way
         UPDATE metadata_item_settings SET view_offset = 345000, updated_at = {T} + 5 WHERE id = 43;
         -- rated
         UPDATE metadata_item_settings SET rating = 8.0, last_rated_at = {T} + 30 WHERE id = 39;
         -- changed before the snapshot: a counter, not a time, says newer
         UPDATE metadata_item_settings SET view_count = 42, changed_at = {HUGE_COUNTER} WHERE id = 5;
         UPDATE metadata_item_settings SET view_offset = 7, updated_at = {SINCE} - 60 WHERE id = 6;
         INSERT INTO metadata_item_views(account_id, guid, metadata_type, library_section_id, title, viewed_at)
           SELECT account_id, guid, 1, 1, 'old', {SINCE} - 50 FROM metadata_item_settings WHERE id = 6;
         -- also watched in the cloud's copy, later
         UPDATE metadata_item_settings SET view_offset = 111000, updated_at = {T} + 10 WHERE id = 20;
         -- a guest on a new device starts an episode
         INSERT INTO accounts(id, name, created_at, updated_at) VALUES(2, 'guest', {T}, {T});
         INSERT INTO devices(id, identifier, name, created_at, updated_at, platform)
           VALUES(99, 'guest-phone', 'Phone', {T}, {T}, 'Android');
         INSERT INTO metadata_item_settings(account_id, guid, view_offset, view_count, last_viewed_at,
             created_at, updated_at, changed_at)
           VALUES(2, '{episode}', 60000, 0, {T} + 40, {T} + 40, {T} + 40, {HUGE_COUNTER} + 1);
         INSERT INTO metadata_item_views(account_id, guid, metadata_type, library_section_id, title, viewed_at, device_id)
           VALUES(2, '{episode}', 4, 1, 'pilot', {T} + 41, 99);"
    ))
    .unwrap();
    drop(h);
    let c = Connection::open(&cloud).unwrap();
    c.execute_batch(&format!(
        "UPDATE metadata_item_settings SET view_offset = 222000, updated_at = {T} + 20, last_viewed_at = {T} + 20
           WHERE id = 20;"
    ))
    .unwrap();
    drop(c);
    let before = copy_file(&cloud, dir.path(), "before");

    // Expectations, in SQL over home and the cloud's copy before the merge.
    let x = Connection::open_in_memory().unwrap();
    x.execute_batch(&format!(
        "ATTACH '{}' AS home; ATTACH '{}' AS cloud;",
        home.display(),
        before.display()
    ))
    .unwrap();
    let t = "max(coalesce(updated_at, 0), coalesce(last_viewed_at, 0), coalesce(last_rated_at, 0), coalesce(last_skipped_at, 0))";
    let takes_home = format!("h.id IS NOT NULL AND h.t > {SINCE} AND h.t >= c.t");
    let chosen: Vec<String> = WATCH
        .iter()
        .map(|w| format!("CASE WHEN {takes_home} THEN h.{w} ELSE c.{w} END AS {w}"))
        .collect();
    let expected_kept = by_id(rows(
        &x,
        &format!(
            "WITH h AS (SELECT *, {t} AS t FROM home.metadata_item_settings),
                  c AS (SELECT *, {t} AS t FROM cloud.metadata_item_settings)
             SELECT c.id, c.account_id, c.guid, c.created_at, {},
                    CASE WHEN {takes_home} THEN 1 ELSE 0 END AS from_home
             FROM c LEFT JOIN h ON h.guid IS c.guid AND h.account_id IS c.account_id",
            chosen.join(", ")
        ),
    ));
    let expected_new = rows(
        &x,
        &format!(
            "SELECT account_id, guid, created_at, {} FROM home.metadata_item_settings h
             WHERE {t} > {SINCE} AND NOT EXISTS (SELECT 1 FROM cloud.metadata_item_settings c
               WHERE c.guid IS h.guid AND c.account_id IS h.account_id)",
            WATCH.join(", ")
        ),
    );
    let view_columns = "account_id, guid, metadata_type, grandparent_title, parent_index, parent_title, \"index\",
        title, thumb_url, viewed_at, grandparent_guid, originally_available_at, device_id, view_type";
    let expected_views = rows(
        &x,
        &format!(
            "SELECT {view_columns}, library_section_id FROM cloud.metadata_item_views
             UNION ALL
             SELECT {view_columns}, coalesce((SELECT m.library_section_id FROM cloud.metadata_items m
                 WHERE m.guid = h.guid ORDER BY m.deleted_at IS NOT NULL, m.id LIMIT 1), h.library_section_id)
             FROM home.metadata_item_views h WHERE h.viewed_at > {SINCE} AND NOT EXISTS (
               SELECT 1 FROM cloud.metadata_item_views c
               WHERE c.guid IS h.guid AND c.account_id IS h.account_id AND c.viewed_at IS h.viewed_at)
             ORDER BY viewed_at, guid, account_id"
        ),
    );
    let views_present = one(
        &x,
        &format!(
            "SELECT count(*) FROM home.metadata_item_views h WHERE h.viewed_at > {SINCE} AND EXISTS (
               SELECT 1 FROM cloud.metadata_item_views c
               WHERE c.guid IS h.guid AND c.account_id IS h.account_id AND c.viewed_at IS h.viewed_at)"
        ),
    );
    let cloud_settings = by_id(rows(&x, "SELECT * FROM cloud.metadata_item_settings"));
    let counter_before = counter_max(&Connection::open(&before).unwrap());
    drop(x);

    let preview = watchstate::preview(&home, &cloud, SINCE).unwrap();
    let report = watchstate::merge(&home, &cloud, SINCE).unwrap();
    assert_eq!(
        WatchStateReport {
            dry_run: false,
            ..preview
        },
        report
    );

    // Every settings row of the result.
    let r = Connection::open(&cloud).unwrap();
    let result = by_id(rows(&r, "SELECT * FROM metadata_item_settings"));
    let mut updated = 0;
    let mut counters = BTreeSet::new();
    for (id, expected) in &expected_kept {
        let got = &result[id];
        let mut wanted = without(expected, &["from_home"]);
        let changed = WATCH.iter().any(|w| wanted[*w] != cloud_settings[id][*w]);
        if changed {
            updated += 1;
            counters.insert(int(&got["changed_at"]));
        } else {
            wanted.insert(
                "changed_at".into(),
                cloud_settings[id]["changed_at"].clone(),
            );
        }
        let mut got = got.clone();
        if changed {
            got.remove("changed_at");
        }
        assert_eq!(got, wanted, "settings row {id}");
    }
    let new: Vec<Row> = result
        .iter()
        .filter(|(id, _)| !expected_kept.contains_key(id))
        .map(|(_, r)| {
            counters.insert(int(&r["changed_at"]));
            without(r, &["id", "changed_at"])
        })
        .collect();
    assert_eq!(new, expected_new, "inserted settings rows");
    // What the scenario means, so that the SQL above cannot drift from it.
    assert_eq!((updated, new.len()), (3, 1), "ids 17, 43, 39; the guest");
    assert_eq!(result[&5]["view_count"], cloud_settings[&5]["view_count"]);
    assert_eq!(result[&6]["view_offset"], cloud_settings[&6]["view_offset"]);
    assert_ne!(result[&6]["view_offset"], Value::Integer(7));
    assert_eq!(
        int(&result[&20]["view_offset"]),
        222000,
        "the cloud's later watch kept"
    );
    assert_eq!(counters.len(), 4, "distinct counters {counters:?}");
    assert!(
        counters
            .iter()
            .all(|c| *c > counter_before && *c <= counter_before + 4),
        "counters {counters:?} must follow the cloud's {counter_before}"
    );

    // Every history row of the result, in order.
    let got_views = rows(
        &r,
        &format!(
            "SELECT {view_columns}, library_section_id FROM metadata_item_views
             ORDER BY viewed_at, guid, account_id"
        ),
    );
    assert_eq!(got_views, expected_views);
    assert_eq!(got_views.len(), 11 + 2);

    assert_eq!(
        report,
        WatchStateReport {
            since: SINCE,
            settings_updated: 3,
            settings_inserted: 1,
            settings_unchanged: report.settings_unchanged,
            settings_kept_newer: 1,
            views_inserted: 2,
            views_present: int(&views_present) as u64,
            accounts_added: 1,
            devices_added: 1,
            ..WatchStateReport::default()
        }
    );
    // Real rows touched after the snapshot, equal in both: left alone.
    assert!(report.settings_unchanged > 20, "{report:?}");
    assert_eq!(
        one(&r, "SELECT name FROM accounts WHERE id = 2"),
        Value::Text("guest".into())
    );
    assert_eq!(
        one(&r, "SELECT identifier FROM devices WHERE id = 99"),
        Value::Text("guest-phone".into())
    );
    drop(r);

    let again = watchstate::merge(&home, &cloud, SINCE).unwrap();
    assert_eq!(again.changes(), 0, "{again:?}");
}

/// A copy of a closed DB (no `-wal` left) as `dir/name/<db>`.
fn copy_file(db: &Path, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    assert!(!Path::new(&format!("{}-wal", db.display())).exists());
    std::fs::copy(db, to.join(DB_NAME)).unwrap();
    to.join(DB_NAME)
}

/// 1.19.5 keeps text date-times: they are parsed (UTC), so a row updated at
/// home after the snapshot is merged and one updated before is not.
#[test]
fn text_timestamps_of_old_plex_are_parsed() {
    const VERSION: &str = "1.19.5";
    const SINCE: i64 = 1_597_485_600; // 2020-08-15 10:00:00 UTC
    let dir = tempfile::tempdir().unwrap();
    let (home, cloud) = (
        copy(VERSION, dir.path(), "home"),
        copy(VERSION, dir.path(), "cloud"),
    );
    let h = Connection::open(&home).unwrap();
    let text: String = h
        .query_row(
            "SELECT typeof(updated_at) FROM metadata_item_settings WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(text, "text", "1.19.5 stores text times");
    h.execute_batch(
        "UPDATE metadata_item_settings SET view_offset = 999000, updated_at = '2020-08-15 10:30:00',
           last_viewed_at = '2020-08-15 10:30:00' WHERE id = 2;
         UPDATE metadata_item_settings SET view_offset = 555000, view_count = 3,
           updated_at = '2020-08-15 09:59:59.500' WHERE id = 1;
         INSERT INTO metadata_item_views(account_id, guid, metadata_type, title, viewed_at)
           SELECT account_id, guid, 1, 'after', '2020-08-15 10:31:00' FROM metadata_item_settings WHERE id = 2;
         INSERT INTO metadata_item_views(account_id, guid, metadata_type, title, viewed_at)
           SELECT account_id, guid, 1, 'before', '2020-08-15 09:45:00' FROM metadata_item_settings WHERE id = 1;",
    )
    .unwrap();
    drop(h);

    let report = watchstate::merge(&home, &cloud, SINCE).unwrap();
    assert_eq!(
        (
            report.settings_updated,
            report.views_inserted,
            report.changes()
        ),
        (1, 1, 2),
        "{report:?}"
    );
    let c = Connection::open(&cloud).unwrap();
    let settings = by_id(rows(&c, "SELECT * FROM metadata_item_settings"));
    assert_eq!(settings[&2]["view_offset"], Value::Integer(999000));
    assert_eq!(
        settings[&2]["updated_at"],
        Value::Text("2020-08-15 10:30:00".into())
    );
    assert!(
        int(&settings[&2]["changed_at"]) > 570,
        "above 1.19.5's counter"
    );
    assert_eq!(settings[&1]["view_offset"], Value::Integer(66000));
    assert_eq!(settings[&1]["changed_at"], Value::Integer(329));
    let titles = rows(&c, "SELECT title, viewed_at FROM metadata_item_views");
    assert_eq!(titles.len(), 1, "{titles:?}");
    assert_eq!(titles[0]["title"], Value::Text("after".into()));
}

/// A text time that is no date-time refuses the merge in one line naming
/// table, column and value, and writes nothing.
#[test]
fn an_unreadable_old_timestamp_refuses_the_merge() {
    let dir = tempfile::tempdir().unwrap();
    let (home, cloud) = (
        copy("1.19.5", dir.path(), "home"),
        copy("1.19.5", dir.path(), "cloud"),
    );
    let h = Connection::open(&home).unwrap();
    h.execute(
        "UPDATE metadata_item_settings SET updated_at = '15/08/2020 10:30' WHERE id = 1",
        [],
    )
    .unwrap();
    drop(h);
    let files = |db: &Path| {
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        (std::fs::read(db).unwrap(), std::fs::read(wal).ok())
    };
    let before = files(&cloud);
    let error = watchstate::merge(&home, &cloud, 1_597_485_600)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("metadata_item_settings.updated_at holds \"15/08/2020 10:30\""),
        "{error}"
    );
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(files(&cloud) == before, "the cloud's DB was written");
}
