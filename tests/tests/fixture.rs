//! The fixture generator against real SQLite and a real file system: the DB
//! must be, in structure, the real Plex DB of its version (compared with
//! the real DBs in the shared folder), look to stock SQLite like one, match
//! its spec, and match the media tree written beside it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use plex_burst_tests::fixture::{
    self, ACCOUNT_IDS, LibraryKind, Spec, TreeFilter, generate_db, generate_db_for, real_db_path,
    write_app_support, write_app_support_sized, write_media_subset, write_media_tree,
};
use rusqlite::Connection;
use sha2::{Digest, Sha256};

fn tiny_db(dir: &Path) -> (PathBuf, Spec, fixture::Summary) {
    let spec = Spec::tiny();
    let path = dir.join("com.plexapp.plugins.library.db");
    let summary = generate_db(&path, &spec).expect("tiny fixture generates");
    (path, spec, summary)
}

fn open(path: &Path) -> Connection {
    Connection::open(path).expect("fixture DB opens")
}

fn count(conn: &Connection, sql: &str) -> u64 {
    conn.query_row(sql, [], |row| row.get::<_, i64>(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}")) as u64
}

fn strings(conn: &Connection, sql: &str) -> Vec<String> {
    let mut statement = conn.prepare(sql).expect("query prepares");
    statement
        .query_map([], |row| row.get(0))
        .expect("query runs")
        .map(|r| r.expect("row reads"))
        .collect()
}

/// Tables with their own b-tree (not virtual tables).
fn ordinary_tables(conn: &Connection) -> Vec<String> {
    strings(
        conn,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND rootpage > 0 ORDER BY name",
    )
}

// ---------------------------------------------------------------- structure

/// Opens a copy of the real DB of `version` (with its `-wal`): the shared
/// originals are never opened. Panics, saying what is missing, when the
/// shared folder is absent: this test never skips.
fn real_db_copy(version: &str, dir: &Path) -> Connection {
    let real = real_db_path(version);
    assert!(
        real.is_file(),
        "the real Plex {version} DB is missing: {} (set {} to the shared folder)",
        real.display(),
        fixture::SHARED_ENV
    );
    let copy = dir.join(format!("real-{version}.db"));
    for suffix in ["", "-wal"] {
        let from = PathBuf::from(format!("{}{suffix}", real.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", copy.display()));
            std::fs::copy(&from, &to).unwrap();
            let mut permissions = std::fs::metadata(&to).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            permissions.set_readonly(false);
            std::fs::set_permissions(&to, permissions).unwrap();
        }
    }
    open(&copy)
}

/// Rows of `sql` as `|`-joined text.
fn rows(conn: &Connection, sql: &str) -> Vec<String> {
    let mut statement = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let columns = statement.column_count();
    let mut rows = statement.query([]).unwrap();
    let mut out = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        let cells: Vec<String> = (0..columns)
            .map(|i| match row.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Null => "NULL".to_string(),
                rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                rusqlite::types::ValueRef::Real(x) => x.to_string(),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                rusqlite::types::ValueRef::Blob(b) => format!("blob({})", b.len()),
            })
            .collect();
        out.push(cells.join("|"));
    }
    out
}

/// Every structural fact of a DB, keyed: `sqlite_master` rows (SQL text
/// included), columns of every table, index columns and properties, and
/// the header values. Virtual tables whose module stock SQLite lacks are
/// known by their SQL alone.
fn structure(conn: &Connection) -> BTreeMap<String, String> {
    let mut facts = BTreeMap::new();
    for row in rows(
        conn,
        "SELECT type || ' ' || name, tbl_name || ' | ' || coalesce(sql, 'NULL') FROM sqlite_master",
    ) {
        let (key, value) = row.split_once('|').unwrap();
        facts.insert(format!("sqlite_master {key}"), value.to_string());
    }
    let readable = "SELECT name FROM sqlite_master WHERE type = 'table'
         AND (rootpage > 0 OR sql LIKE '%USING fts4(%' AND sql NOT LIKE '%tokenize=%' OR sql LIKE '%USING rtree(%')";
    for table in strings(conn, readable) {
        for row in rows(
            conn,
            &format!(
                "SELECT cid, name, type, \"notnull\", dflt_value, pk, hidden FROM pragma_table_xinfo('{table}')"
            ),
        ) {
            let (cid, rest) = row.split_once('|').unwrap();
            facts.insert(format!("column {table}.{cid:0>3}"), rest.to_string());
        }
        for row in rows(
            conn,
            &format!("SELECT name, \"unique\", origin, partial FROM pragma_index_list('{table}')"),
        ) {
            let (index, rest) = row.split_once('|').unwrap();
            facts.insert(
                format!("index_list {table}.{index}"),
                format!("unique|origin|partial = {rest}"),
            );
            for column in rows(
                conn,
                &format!(
                    "SELECT seqno, cid, name, \"desc\", coll, \"key\" FROM pragma_index_xinfo('{index}')"
                ),
            ) {
                let (seqno, rest) = column.split_once('|').unwrap();
                facts.insert(format!("index_xinfo {index}.{seqno:0>3}"), rest.to_string());
            }
        }
    }
    for pragma in [
        "page_size",
        "journal_mode",
        "user_version",
        "application_id",
        "auto_vacuum",
        "encoding",
    ] {
        let value = rows(conn, &format!("PRAGMA {pragma}")).join(",");
        facts.insert(format!("pragma {pragma}"), value);
    }
    facts
}

/// The differences between two fact maps, one readable line each.
fn differences(ours: &BTreeMap<String, String>, real: &BTreeMap<String, String>) -> Vec<String> {
    let keys: BTreeSet<&String> = ours.keys().chain(real.keys()).collect();
    keys.into_iter()
        .filter_map(|key| match (ours.get(key), real.get(key)) {
            (Some(a), Some(b)) if a == b => None,
            (Some(a), Some(b)) => Some(format!("{key}:\n    fixture: {a}\n    real:    {b}")),
            (Some(a), None) => Some(format!("{key}: only in the fixture: {a}")),
            (None, Some(b)) => Some(format!("{key}: only in the real DB: {b}")),
            (None, None) => None,
        })
        .collect()
}

/// `sqlite_stat1` as ANALYZE leaves it: the real DB's (table, index) pairs
/// are there for every table the fixture fills, and every pair the fixture
/// has names one of its indexes (or none) on a table with rows. Numbers
/// differ with the data.
fn stat1_differences(ours: &Connection, real: &Connection) -> Vec<String> {
    let pairs = |conn: &Connection| -> BTreeSet<(String, String)> {
        rows(conn, "SELECT tbl, coalesce(idx, '') FROM sqlite_stat1")
            .into_iter()
            .map(|r| {
                let (t, i) = r.split_once('|').unwrap();
                (t.to_string(), i.to_string())
            })
            .collect()
    };
    // A table the fixture lacks is reported with the structure.
    let filled = |table: &str| {
        ours.query_row(&format!("SELECT count(*) > 0 FROM \"{table}\""), [], |r| {
            r.get::<_, bool>(0)
        })
        .unwrap_or(false)
    };
    let (our_pairs, real_pairs) = (pairs(ours), pairs(real));
    let mut out = Vec::new();
    if real_pairs.is_empty() || our_pairs.is_empty() {
        out.push(format!(
            "sqlite_stat1: fixture {} rows, real {} rows",
            our_pairs.len(),
            real_pairs.len()
        ));
    }
    for (table, index) in real_pairs.difference(&our_pairs) {
        if filled(table) {
            out.push(format!(
                "sqlite_stat1 lacks {table}|{index} (the table has rows)"
            ));
        }
    }
    let indexes: BTreeSet<(String, String)> = rows(
        ours,
        "SELECT tbl_name, name FROM sqlite_master WHERE type = 'index'",
    )
    .into_iter()
    .map(|r| {
        let (t, i) = r.split_once('|').unwrap();
        (t.to_string(), i.to_string())
    })
    .collect();
    for (table, index) in &our_pairs {
        let known = index.is_empty() || indexes.contains(&(table.clone(), index.clone()));
        if !known || !filled(table) {
            out.push(format!(
                "sqlite_stat1 has {table}|{index}: no such index or no rows"
            ));
        }
    }
    for (table, index) in &indexes {
        if filled(table) && !our_pairs.contains(&(table.clone(), index.clone())) {
            out.push(format!(
                "sqlite_stat1 lacks {table}|{index}: ANALYZE incomplete"
            ));
        }
    }
    let stat4 = count(
        ours,
        "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat4'",
    );
    if stat4 > 0 {
        out.push("sqlite_stat4 present (no real Plex DB has one)".into());
    }
    out
}

fn assert_same_structure_as_real(version: &str) {
    let dir = tempfile::tempdir().unwrap();
    let real = real_db_copy(version, dir.path());
    let path = dir.path().join("fixture.db");
    generate_db_for(&path, &Spec::tiny(), version).expect("tiny fixture generates");
    let ours = open(&path);
    let mut found = differences(&structure(&ours), &structure(&real));
    found.extend(stat1_differences(&ours, &real));
    assert!(
        found.is_empty(),
        "the fixture in the {version} schema differs from the real {version} DB in {} ways:\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn the_structure_is_that_of_the_real_1_41_db() {
    // The pinned Plex version (plexdouble::cli::DEFAULT_VERSION) is 1.41.3.
    assert_same_structure_as_real("1.41.3");
}

#[test]
fn the_structure_is_that_of_the_real_1_43_db() {
    assert_same_structure_as_real("1.43.3");
}

#[test]
fn the_default_schema_is_the_newest_real_one_with_plex_s_virtual_tables_and_triggers() {
    assert_eq!(fixture::DEFAULT_PLEX_VERSION, "1.43.3");
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = tiny_db(dir.path());
    let conn = open(&path);
    let virtual_tables = strings(
        &conn,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND rootpage = 0 AND sql LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
    );
    assert_eq!(
        virtual_tables,
        [
            "fts4_metadata_titles",
            "fts4_metadata_titles_icu",
            "fts4_tag_titles",
            "fts4_tag_titles_icu",
            "locations",
            "spellfix_metadata_titles",
            "spellfix_tag_titles"
        ]
    );
    let mut triggers = strings(
        &conn,
        "SELECT name FROM sqlite_master WHERE type = 'trigger'",
    );
    triggers.sort();
    let mut expected: Vec<String> = ["fts4_metadata_titles", "fts4_tag_titles"]
        .iter()
        .flat_map(|t| {
            [
                "after_insert",
                "after_update",
                "before_update",
                "before_delete",
            ]
            .map(|w| format!("{t}_{w}_icu"))
        })
        .collect();
    expected.sort();
    assert_eq!(triggers, expected);
    let icu = strings(
        &conn,
        "SELECT sql FROM sqlite_master WHERE name = 'index_title_sort_icu'",
    );
    assert_eq!(
        icu,
        ["CREATE INDEX 'index_title_sort_icu' ON 'metadata_items' ('title_sort' COLLATE icu_root)"]
    );
    let error = generate_db_for(&dir.path().join("old.db"), &Spec::tiny(), "1.32.5")
        .unwrap_err()
        .to_string();
    assert!(error.contains("1.40"), "{error}");
}

#[test]
fn per_table_integrity_passes_and_plain_integrity_check_fails_like_a_real_plex_db() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = tiny_db(dir.path());
    let conn = open(&path);
    // Without Plex's collation the collated index cannot be checked, as on
    // a real DB; with it, it is in order.
    let error = conn
        .query_row("PRAGMA integrity_check(\"metadata_items\")", [], |r| {
            r.get::<_, String>(0)
        })
        .unwrap_or_else(|e| e.to_string());
    assert!(
        error.contains("no such collation sequence: icu_root"),
        "{error}"
    );
    runner::plexdb::collation::register(&conn).unwrap();
    let tables = ordinary_tables(&conn);
    assert!(tables.len() > 60, "only {} tables", tables.len());
    for table in &tables {
        let result: String = conn
            .query_row(&format!("PRAGMA integrity_check(\"{table}\")"), [], |row| {
                row.get(0)
            })
            .unwrap_or_else(|e| panic!("integrity_check({table}): {e}"));
        assert_eq!(result, "ok", "table {table}");
    }
    for pragma in ["PRAGMA integrity_check", "PRAGMA quick_check"] {
        let outcome = conn.prepare(pragma).and_then(|mut s| {
            s.query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        });
        let text = match outcome {
            Ok(rows) => rows.join("\n"),
            Err(error) => error.to_string(),
        };
        assert!(
            text.contains("unknown tokenizer: collating"),
            "{pragma}: {text}"
        );
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // Plex searches through the `_icu` tables: the plain full-text index
    // stock SQLite could read is left empty, as in every real DB.
    assert_eq!(
        count(&conn, "SELECT count(*) FROM fts4_metadata_titles_segdir"),
        0
    );
}

#[test]
fn title_writes_fail_with_stock_sqlite_while_path_and_watch_state_writes_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let (path, spec, _) = tiny_db(dir.path());
    let conn = open(&path);
    for write in [
        "UPDATE metadata_items SET title = 'Renamed' WHERE id = 1",
        "UPDATE metadata_items SET added_at = added_at + 1 WHERE id = 1",
        "INSERT INTO tags(tag, tag_type) VALUES('New', 1)",
        "DELETE FROM tags WHERE id = 1",
    ] {
        let error = conn.execute(write, []).expect_err(write).to_string();
        assert!(
            error.contains("unknown tokenizer: collating"),
            "{write}: {error}"
        );
    }
    let root = &spec.media_root;
    let moved = conn
        .execute(
            "UPDATE media_parts SET file = '/mnt/media' || substr(file, length(?1) + 1) WHERE file LIKE ?1 || '/%'",
            [root],
        )
        .expect("media_parts has no trigger");
    assert!(moved > 0);
    conn.execute(
        "UPDATE section_locations SET root_path = '/mnt/media/Movies' WHERE root_path = ?1",
        [format!("{root}/Movies")],
    )
    .expect("section_locations has no trigger");
    conn.execute(
        "UPDATE metadata_item_settings SET view_count = view_count + 1",
        [],
    )
    .expect("no trigger");
    conn.execute(
        "UPDATE metadata_item_views SET viewed_at = viewed_at + 1",
        [],
    )
    .expect("no trigger");
}

#[test]
fn libraries_and_counts_match_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let (path, spec, summary) = tiny_db(dir.path());
    let conn = open(&path);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM library_sections"),
        spec.libraries.len() as u64
    );
    for (index, library) in spec.libraries.iter().enumerate() {
        let id = index as i64 + 1;
        let (name, section_type, agent, uuid): (String, i64, String, String) = conn
            .query_row(
                "SELECT name, section_type, agent, uuid FROM library_sections WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(name, library.name);
        let expected_type = match library.kind {
            LibraryKind::Movie => 1,
            LibraryKind::Show => 2,
            LibraryKind::Music => 8,
            LibraryKind::Photo => 13,
        };
        assert_eq!(section_type, expected_type, "{name}");
        assert!(agent.contains('.'), "{name}: agent {agent}");
        assert_eq!(uuid.len(), 36, "{name}: uuid {uuid}");

        let roots = strings(
            &conn,
            &format!(
                "SELECT root_path FROM section_locations WHERE library_section_id = {id} ORDER BY id"
            ),
        );
        let expected_roots: Vec<String> = library
            .locations
            .iter()
            .map(|l| {
                if l.path.starts_with('/') {
                    l.path.clone()
                } else {
                    format!("{}/{}", spec.media_root, l.path)
                }
            })
            .collect();
        assert_eq!(roots, expected_roots, "{name}");

        let leaf_type = match library.kind {
            LibraryKind::Movie => 1,
            LibraryKind::Show => 4,
            LibraryKind::Music => 10,
            LibraryKind::Photo => 13,
        };
        let live_expected: u64 = library.locations.iter().map(|l| u64::from(l.items)).sum();
        let leaves = |deleted: &str| {
            count(
                &conn,
                &format!(
                    "SELECT count(*) FROM metadata_items WHERE library_section_id = {id} AND metadata_type = {leaf_type} AND deleted_at IS {deleted}"
                ),
            )
        };
        assert_eq!(leaves("NULL"), live_expected, "{name}: live leaves");
        assert_eq!(
            leaves("NOT NULL"),
            u64::from(library.deleted),
            "{name}: deleted leaves"
        );
        assert_eq!(summary.libraries[index].items, live_expected);

        // Every leaf has one media item and one part, deleted alongside it,
        // in one of the library's locations.
        let parts = count(
            &conn,
            &format!(
                "SELECT count(*) FROM metadata_items m JOIN media_items i ON i.metadata_item_id = m.id
                 JOIN media_parts p ON p.media_item_id = i.id
                 JOIN section_locations l ON l.id = i.section_location_id
                 WHERE m.library_section_id = {id} AND (m.deleted_at IS NULL) = (p.deleted_at IS NULL)
                   AND (m.deleted_at IS NULL) = (i.deleted_at IS NULL) AND l.library_section_id = {id}
                   AND substr(p.file, 1, length(l.root_path) + 1) = l.root_path || '/'"
            ),
        );
        assert_eq!(
            parts,
            live_expected + u64::from(library.deleted),
            "{name}: media parts"
        );
    }
    // Hierarchies: every child's parent exists in the same library.
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM metadata_items c LEFT JOIN metadata_items p ON p.id = c.parent_id
             WHERE c.parent_id IS NOT NULL AND (p.id IS NULL OR p.library_section_id != c.library_section_id)"
        ),
        0
    );
    for (child, parent) in [(4, 3), (3, 2), (10, 9), (9, 8), (13, 14)] {
        let wrong = count(
            &conn,
            &format!(
                "SELECT count(*) FROM metadata_items c JOIN metadata_items p ON p.id = c.parent_id WHERE c.metadata_type = {child} AND p.metadata_type != {parent}"
            ),
        );
        assert_eq!(wrong, 0, "type {child} under type {parent}");
    }
    let guids = strings(
        &conn,
        "SELECT guid FROM metadata_items WHERE metadata_type IN (1, 10)",
    );
    assert!(
        guids
            .iter()
            .all(|g| g.starts_with("plex://movie/") || g.starts_with("plex://track/"))
    );
    assert_eq!(
        count(&conn, "SELECT count(DISTINCT guid) FROM metadata_items"),
        count(&conn, "SELECT count(*) FROM metadata_items")
    );
    let by_type: BTreeMap<String, u64> = summary.metadata_items_by_type.clone();
    assert_eq!(
        by_type.values().sum::<u64>(),
        count(&conn, "SELECT count(*) FROM metadata_items")
    );
    // External subtitles point at files beside their media.
    let urls = strings(&conn, "SELECT url FROM media_streams WHERE url IS NOT NULL");
    assert!(!urls.is_empty());
    assert!(
        urls.iter()
            .all(|u| u.starts_with(&format!("file://{}/", spec.media_root)) && u.ends_with(".srt")),
        "{urls:?}"
    );
    assert!(count(&conn, "SELECT count(*) FROM schema_migrations") >= 50);
    assert!(count(&conn, "SELECT count(*) FROM taggings") > 0);
}

#[test]
fn sonic_markers_cover_the_requested_fraction_in_json_as_plex_1_40_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (path, spec, summary) = tiny_db(dir.path());
    let conn = open(&path);
    let music = spec
        .libraries
        .iter()
        .find(|l| l.kind == LibraryKind::Music)
        .unwrap();
    // Library tracks: theme songs (section -2) are never analysed.
    let tracks = count(
        &conn,
        "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL AND library_section_id > 0",
    );
    let analysed = count(
        &conn,
        "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL AND extra_data LIKE '%musicAnalysisVersion%'",
    );
    let expected = (tracks as f64 * music.sonic_fraction).round() as u64;
    assert_eq!(analysed, expected, "{analysed} of {tracks} tracks analysed");
    assert_eq!((summary.tracks, summary.sonic_analysed), (tracks, analysed));
    // From 1.40 every extra_data is JSON with the URL-encoded form in `url`.
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM metadata_items WHERE NOT json_valid(extra_data) OR json_extract(extra_data, '$.url') IS NULL"
        ),
        0
    );
    let marked = count(
        &conn,
        "SELECT count(*) FROM metadata_items WHERE json_extract(extra_data, '$.\"ms:musicAnalysisVersion\"') = '1'
           AND json_extract(extra_data, '$.url') LIKE '%ms\\%3AmusicAnalysisVersion=1%' ESCAPE '\\'",
    );
    assert_eq!(marked, analysed);
    let loudness_only = count(
        &conn,
        "SELECT count(*) FROM metadata_items WHERE extra_data LIKE '%loudnessAnalysisVersion%' AND extra_data NOT LIKE '%musicAnalysisVersion%'",
    );
    assert!(
        loudness_only > 0,
        "some unanalysed tracks carry another analysis marker"
    );
}

#[test]
fn rows_carry_real_plex_encodings_theme_songs_and_trailers() {
    let dir = tempfile::tempdir().unwrap();
    let (path, spec, summary) = tiny_db(dir.path());
    let conn = open(&path);
    // Subtitle URLs are percent-encoded, as Plex 1.32+ writes them.
    let urls = strings(&conn, "SELECT url FROM media_streams WHERE url IS NOT NULL");
    assert!(urls.iter().any(|u| u.contains("%20")), "{urls:?}");
    assert!(urls.iter().all(|u| !u.contains(' ')), "{urls:?}");
    // Film agents' attributes, JSON with the URL-encoded form in `url`.
    let rated = strings(
        &conn,
        "SELECT extra_data FROM metadata_items WHERE extra_data LIKE '%audienceRatingImage%' LIMIT 1",
    );
    assert!(
        rated[0].starts_with(r#"{"at:audienceRatingImage":""#)
            && rated[0].contains(r#""url":"at%3AaudienceRatingImage="#),
        "{rated:?}"
    );
    assert!(
        count(
            &conn,
            r#"SELECT count(*) FROM metadata_items WHERE extra_data = '{"url":""}'"#
        ) > 0
    );

    // changed_at is one per-DB change counter, not a time.
    let (low, high) = conn
        .query_row(
            "SELECT min(v), max(v) FROM (SELECT changed_at v FROM metadata_items
             UNION ALL SELECT resources_changed_at FROM metadata_items
             UNION ALL SELECT changed_at FROM metadata_item_settings)",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )
        .unwrap();
    assert!(100 < low && high < 100_000, "{low}..{high}");
    assert_eq!(
        count(
            &conn,
            "SELECT count(DISTINCT changed_at) FROM metadata_items"
        ),
        count(&conn, "SELECT count(*) FROM metadata_items"),
        "each change gets its own counter value"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM library_sections s WHERE content_changed_at !=
               (SELECT max(changed_at) FROM metadata_items m WHERE m.library_section_id = s.id)"
        ),
        0
    );

    // Theme songs: tracks of section -2 with files in Plex's own folder.
    let themes = strings(
        &conn,
        "SELECT p.file FROM metadata_items m JOIN media_items i ON i.metadata_item_id = m.id
         JOIN media_parts p ON p.media_item_id = i.id
         WHERE m.library_section_id = -2 AND m.metadata_type = 10",
    );
    assert!(!themes.is_empty());
    assert_eq!(themes.len() as u64, summary.theme_tracks);
    assert!(
        themes
            .iter()
            .all(|f| f.starts_with(&format!("{}/Metadata/", fixture::PLEX_DATA_DIR))),
        "{themes:?}"
    );
    // Extras: clips in no library whose part has an empty file.
    let extras = count(
        &conn,
        "SELECT count(*) FROM metadata_items m JOIN media_items i ON i.metadata_item_id = m.id
         JOIN media_parts p ON p.media_item_id = i.id
         WHERE m.metadata_type = 12 AND m.library_section_id IS NULL AND p.file = ''
           AND m.extra_data LIKE '%ex:extraType%'",
    );
    assert!(extras > 0);
    assert_eq!(extras, summary.extras);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM metadata_relations r JOIN metadata_items m ON m.id = r.metadata_item_id WHERE m.metadata_type = 1"
        ),
        extras
    );
    // Neither is library media: the stats leave them out of libraries and Sonic.
    let stats = runner::plexdb::stats::collect(&path).expect("stats");
    assert_eq!(stats.outside_libraries["track"].live, summary.theme_tracks);
    assert_eq!(stats.outside_libraries["clip"].live, extras);
    assert_eq!(stats.sonic.tracks, summary.tracks);
    let music: u64 = spec.libraries[0]
        .locations
        .iter()
        .map(|l| u64::from(l.items))
        .sum();
    assert_eq!(summary.tracks, music);
}

#[test]
fn watch_state_exists_for_both_accounts_keyed_by_guid() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, summary) = tiny_db(dir.path());
    let conn = open(&path);
    let accounts: Vec<i64> = {
        let mut statement = conn.prepare("SELECT id FROM accounts ORDER BY id").unwrap();
        statement
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(accounts, ACCOUNT_IDS);
    for account in ACCOUNT_IDS {
        let settings = count(
            &conn,
            &format!("SELECT count(*) FROM metadata_item_settings WHERE account_id = {account}"),
        );
        let views = count(
            &conn,
            &format!("SELECT count(*) FROM metadata_item_views WHERE account_id = {account}"),
        );
        assert!(
            settings > 0 && views > 0,
            "account {account}: {settings} settings, {views} views"
        );
        assert_eq!(summary.settings_per_account[&account], settings);
        assert_eq!(summary.views_per_account[&account], views);
    }
    for table in ["metadata_item_settings", "metadata_item_views"] {
        let orphans = count(
            &conn,
            &format!(
                "SELECT count(*) FROM {table} s WHERE NOT EXISTS (SELECT 1 FROM metadata_items m WHERE m.guid = s.guid)"
            ),
        );
        assert_eq!(orphans, 0, "{table} rows whose guid names no item");
    }
}

/// A digest of every row of every ordinary table.
fn content_digest(path: &Path) -> String {
    let conn = open(path);
    let mut hasher = Sha256::new();
    for table in ordinary_tables(&conn) {
        hasher.update(table.as_bytes());
        let mut statement = conn
            .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY rowid"))
            .unwrap();
        let columns = statement.column_count();
        let mut rows = statement.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                hasher.update(format!("{:?}|", row.get_ref(i).unwrap()).as_bytes());
            }
        }
    }
    hex::encode(hasher.finalize())
}

#[test]
fn the_same_seed_gives_the_same_content_and_another_seed_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::tiny();
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    let c = dir.path().join("c.db");
    let summary_a = generate_db(&a, &spec).unwrap();
    let summary_b = generate_db(&b, &spec).unwrap();
    spec.seed += 1;
    generate_db(&c, &spec).unwrap();
    assert_eq!(summary_a, summary_b);
    assert_eq!(content_digest(&a), content_digest(&b));
    assert_ne!(content_digest(&a), content_digest(&c));
}

#[test]
fn generation_refuses_to_overwrite_and_leaves_nothing_behind_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("existing.db");
    std::fs::write(&path, b"precious").unwrap();
    let error = generate_db(&path, &Spec::tiny()).unwrap_err().to_string();
    assert!(
        error.contains("existing.db") && error.contains("already exists"),
        "{error}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");

    let mut bad = Spec::tiny();
    bad.libraries[1].locations[0].path = "TV/../..".into();
    let error = generate_db(&dir.path().join("bad.db"), &bad)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("TV Shows") && error.contains("TV/../.."),
        "{error}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["existing.db"]);
}

/// A percent-encoded URL path, decoded.
fn percent_decoded(url: &str) -> String {
    let bytes = url.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&url[i + 1..i + 3], 16).expect("hex escape"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8 path")
}

/// Relative paths of all files under `root`.
fn files_under(root: &Path) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                files.insert(
                    entry
                        .path()
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    files
}

/// Checks the first bytes against the format the extension names.
fn assert_valid_header(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let name = path.to_string_lossy();
    assert!(
        (100..4096).contains(&bytes.len()),
        "{name}: {} bytes",
        bytes.len()
    );
    let extension = path.extension().unwrap().to_string_lossy().to_lowercase();
    match extension.as_str() {
        "mkv" => {
            assert_eq!(bytes[..4], [0x1A, 0x45, 0xDF, 0xA3], "{name}: EBML magic");
            assert!(
                bytes.windows(8).any(|w| w == b"matroska"),
                "{name}: DocType"
            );
        }
        "mp4" | "m4v" => {
            assert_eq!(&bytes[4..8], b"ftyp", "{name}");
            let size = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            assert!(
                size >= 16 && size.is_multiple_of(4) && size < bytes.len(),
                "{name}: ftyp size {size}"
            );
        }
        "flac" => {
            assert_eq!(&bytes[..4], b"fLaC", "{name}");
            assert_eq!(bytes[4] & 0x7F, 0, "{name}: first block is STREAMINFO");
            assert_eq!(bytes[5..8], [0, 0, 34], "{name}: STREAMINFO length");
            let rate = (u32::from(bytes[18]) << 12)
                | (u32::from(bytes[19]) << 4)
                | (u32::from(bytes[20]) >> 4);
            assert_eq!(rate, 44_100, "{name}: sample rate");
        }
        "mp3" => {
            assert_eq!(&bytes[..3], b"ID3", "{name}");
            assert!(bytes[3] >= 2 && bytes[3] <= 4, "{name}: ID3v2 version");
            assert!(
                bytes[6..10].iter().all(|b| b & 0x80 == 0),
                "{name}: syncsafe size"
            );
        }
        "jpg" => {
            assert_eq!(bytes[..4], [0xFF, 0xD8, 0xFF, 0xE0], "{name}: SOI + APP0");
            assert_eq!(&bytes[6..11], b"JFIF\0", "{name}");
            assert_eq!(bytes[bytes.len() - 2..], [0xFF, 0xD9], "{name}: EOI");
        }
        "srt" => assert!(bytes.starts_with(b"1\n00:00:01,000 --> "), "{name}"),
        other => panic!("{name}: unexpected extension {other}"),
    }
}

#[test]
fn the_media_tree_holds_exactly_the_live_files_the_db_names_under_the_media_root() {
    let dir = tempfile::tempdir().unwrap();
    let (path, spec, _) = tiny_db(dir.path());
    let tree = dir.path().join("media");
    let written = write_media_tree(&tree, &spec).unwrap();
    let conn = open(&path);
    let prefix = format!("{}/", spec.media_root);
    let mut expected = BTreeSet::new();
    let live = strings(
        &conn,
        "SELECT file FROM media_parts WHERE deleted_at IS NULL",
    )
    .into_iter()
    .chain(
        strings(
            &conn,
            "SELECT substr(url, 8) FROM media_streams WHERE url LIKE 'file://%'",
        )
        .into_iter()
        .map(|url| percent_decoded(&url)),
    );
    let mut outside = 0;
    for file in live {
        match file.strip_prefix(&prefix) {
            Some(relative) => {
                expected.insert(relative.to_string());
            }
            None => outside += 1,
        }
    }
    assert!(
        outside > 0,
        "the second Photos location lies outside the media root"
    );
    let on_disk = files_under(&tree);
    assert_eq!(on_disk, expected);
    assert_eq!(
        written.media_files + written.subtitle_files,
        on_disk.len() as u64
    );
    let extensions: BTreeSet<String> = on_disk
        .iter()
        .filter_map(|f| f.rsplit_once('.').map(|(_, e)| e.to_string()))
        .collect();
    for wanted in ["mkv", "flac", "mp3", "jpg", "srt"] {
        assert!(
            extensions.contains(wanted),
            "no .{wanted} in {extensions:?}"
        );
    }
    for file in &on_disk {
        assert_valid_header(&tree.join(file));
    }
    let deleted = strings(
        &conn,
        "SELECT file FROM media_parts WHERE deleted_at IS NOT NULL",
    );
    assert!(!deleted.is_empty());
    assert!(
        deleted
            .iter()
            .all(|f| !tree.join(f.strip_prefix(&prefix).unwrap()).exists()),
        "deleted parts have no file"
    );

    // Writing again finds everything in place and changes nothing.
    let again = write_media_tree(&tree, &spec).unwrap();
    assert_eq!(
        (again.media_files, again.already_present),
        (0, written.media_files)
    );
}

#[test]
fn a_media_subset_respects_max_files_and_the_library_filter() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::tiny();
    let tree = dir.path().join("subset");
    let filter = TreeFilter {
        max_files: Some(20),
        libraries: None,
    };
    let summary = write_media_subset(&tree, &spec, &filter).unwrap();
    assert_eq!(summary.media_files, 20);
    let files: Vec<String> = files_under(&tree)
        .into_iter()
        .filter(|f| !f.ends_with(".srt"))
        .collect();
    assert_eq!(files.len(), 20);
    for library in &spec.libraries {
        assert!(
            files
                .iter()
                .any(|f| f.starts_with(&format!("{}/", library.name))),
            "{} has a file",
            library.name
        );
    }

    let only = dir.path().join("only-movies");
    let filter = TreeFilter {
        max_files: None,
        libraries: Some(vec!["Movies".into()]),
    };
    let summary = write_media_subset(&only, &spec, &filter).unwrap();
    let movies = spec.libraries.iter().find(|l| l.name == "Movies").unwrap();
    assert_eq!(summary.media_files, u64::from(movies.locations[0].items));
    assert!(files_under(&only).iter().all(|f| f.starts_with("Movies/")));

    let filter = TreeFilter {
        max_files: None,
        libraries: Some(vec!["Films".into()]),
    };
    let error = write_media_subset(&dir.path().join("x"), &spec, &filter)
        .unwrap_err()
        .to_string();
    assert!(error.contains("\"Films\""), "{error}");
}

#[test]
fn the_app_support_folder_is_shaped_like_plex() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::tiny();
    let app = write_app_support(dir.path(), &spec).unwrap();
    let base = dir
        .path()
        .join("Library/Application Support/Plex Media Server");
    assert_eq!(app.dir, base);
    let databases = base.join("Plug-in Support/Databases");
    let library = databases.join("com.plexapp.plugins.library.db");
    assert_eq!(app.library_db, library);
    let backup = databases.join(format!(
        "com.plexapp.plugins.library.db-{}",
        fixture::BACKUP_DATE
    ));
    assert_eq!(
        std::fs::read(&library).unwrap(),
        std::fs::read(&backup).unwrap()
    );
    let blobs = open(&databases.join("com.plexapp.plugins.library.blobs.db"));
    let check: String = blobs
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    assert!(count(&blobs, "SELECT count(*) FROM blobs") > 0);
    assert!(
        databases
            .join(format!(
                "com.plexapp.plugins.library.blobs.db-{}",
                fixture::BACKUP_DATE
            ))
            .is_file()
    );
    let preferences = std::fs::read_to_string(base.join("Preferences.xml")).unwrap();
    for attribute in [
        "MachineIdentifier=\"",
        "ProcessedMachineIdentifier=\"",
        "PlexOnlineToken=\"",
    ] {
        assert!(
            preferences.contains(attribute),
            "Preferences.xml lacks {attribute}"
        );
    }
    assert!(base.join("Logs/Plex Media Server.log").is_file());
    assert!(files_under(&base.join("Metadata")).len() >= 3);
    assert_eq!(
        count(&open(&library), "SELECT count(*) FROM library_sections"),
        spec.libraries.len() as u64
    );
    let error = write_app_support(dir.path(), &spec)
        .unwrap_err()
        .to_string();
    assert!(error.contains("already exists"), "{error}");
}

#[test]
fn a_sized_databases_folder_adds_up_with_sonic_blobs_and_dated_backups() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::tiny();
    let size = fixture::FolderSize {
        total_bytes: 60_000_000,
        dated_backups: 2,
    };
    let app = write_app_support_sized(dir.path(), &spec, size).unwrap();
    let mut total = 0;
    let mut dated = BTreeSet::new();
    for entry in std::fs::read_dir(&app.databases).unwrap() {
        let entry = entry.unwrap();
        total += entry.metadata().unwrap().len();
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((db, date)) = name.rsplit_once(".db-") {
            dated.insert(format!("{db}.db {date}"));
        }
    }
    // Within 5% of the size asked for: SQLite pages round each DB up.
    let asked = size.total_bytes as f64;
    assert!(
        (total as f64 - asked).abs() < asked * 0.05,
        "{total} bytes for {asked}"
    );
    assert_eq!(
        dated,
        BTreeSet::from([
            "com.plexapp.plugins.library.blobs.db 2026-11-17".to_string(),
            "com.plexapp.plugins.library.blobs.db 2026-11-20".to_string(),
            "com.plexapp.plugins.library.db 2026-11-17".to_string(),
            "com.plexapp.plugins.library.db 2026-11-20".to_string(),
        ])
    );
    // One Sonic blob per analysed track, linked to it.
    let blobs = open(&app.databases.join("com.plexapp.plugins.library.blobs.db"));
    let library = open(&app.library_db);
    let analysed = strings(
        &library,
        "SELECT CAST(id AS TEXT) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL
         AND extra_data LIKE '%musicAnalysisVersion%' ORDER BY id",
    );
    let linked = strings(
        &blobs,
        "SELECT CAST(linked_id AS TEXT) FROM blobs WHERE linked_type = 'metadata_item' ORDER BY linked_id",
    );
    assert_eq!(linked, analysed);
    assert!(!analysed.is_empty());
    let check: String = blobs
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // Too small a folder is refused in one line, naming the sizes.
    let error = write_app_support_sized(
        &dir.path().join("small"),
        &spec,
        fixture::FolderSize {
            total_bytes: 1_000_000,
            dated_backups: 3,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("too small"), "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");
}

#[test]
fn music_carries_its_tag_volume_and_audio_streams_their_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, summary) = tiny_db(dir.path());
    let conn = open(&path);
    let tagged = |kind: i64, tag_type: i64| {
        count(
            &conn,
            &format!(
                "SELECT count(DISTINCT m.id) FROM metadata_items m JOIN taggings g ON g.metadata_item_id = m.id
                 JOIN tags t ON t.id = g.tag_id WHERE m.metadata_type = {kind} AND t.tag_type = {tag_type}"
            ),
        )
    };
    let items = |kind: i64| {
        count(
            &conn,
            &format!(
                "SELECT count(*) FROM metadata_items WHERE metadata_type = {kind} AND library_section_id > 0"
            ),
        )
    };
    // Moods (300) on artists, albums and tracks; styles (301) on artists
    // and albums; similar artists (305); every library track's guid (314).
    for (kind, tag_type) in [
        (8, 300),
        (9, 300),
        (10, 300),
        (8, 301),
        (9, 301),
        (8, 305),
        (10, 314),
    ] {
        assert_eq!(
            tagged(kind, tag_type),
            items(kind),
            "type {kind}, tag {tag_type}"
        );
    }
    assert_eq!(
        count(
            &conn,
            "SELECT count(DISTINCT tag) FROM tags WHERE tag_type = 314 AND tag LIKE 'mbid://%'"
        ),
        items(10)
    );
    // No item is tagged twice with one tag.
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM (SELECT 1 FROM taggings GROUP BY metadata_item_id, tag_id HAVING count(*) > 1)"
        ),
        0
    );
    // Every audio stream has its attributes, in JSON with the `url` mirror;
    // loudness ones exactly where loudness was analysed.
    let audio = count(
        &conn,
        "SELECT count(*) FROM media_streams WHERE stream_type_id = 2",
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM media_streams WHERE stream_type_id = 2
                      AND json_extract(extra_data, '$.\"ma:samplingRate\"') IN ('44100', '48000')
                      AND json_extract(extra_data, '$.url') LIKE 'ma%3AaudioChannelLayout=%'"
        ),
        audio
    );
    let loud = count(
        &conn,
        "SELECT count(*) FROM media_streams s JOIN media_items i ON i.id = s.media_item_id
         JOIN metadata_items m ON m.id = i.metadata_item_id
         WHERE s.stream_type_id = 2 AND s.extra_data LIKE '%ma:loudness\"%'
           AND m.extra_data LIKE '%loudnessAnalysisVersion%'",
    );
    assert_eq!(
        loud,
        count(
            &conn,
            "SELECT count(*) FROM media_streams WHERE extra_data LIKE '%ma:loudness\"%'"
        )
    );
    assert!(
        loud >= summary.sonic_analysed,
        "{loud} < {}",
        summary.sonic_analysed
    );
}

#[test]
fn a_scaled_spec_scales_every_count() {
    let quarter = Spec::user_size().scaled_by(0.25).unwrap();
    let items: u32 = quarter.libraries[0].locations.iter().map(|l| l.items).sum();
    assert_eq!(items, 114_134);
    assert_eq!(quarter.libraries[4].locations[1].items, 842);
    assert!(Spec::tiny().scaled_by(0.0).is_err());
    assert!(Spec::tiny().scaled_by(f64::NAN).is_err());
}

#[test]
fn the_cli_prints_the_summary_and_names_a_missing_real_schema_db() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cli.db");
    let output = Command::new(env!("CARGO_BIN_EXE_plex-fixture"))
        .args([
            "db",
            "--preset",
            "tiny",
            "--seed",
            "9",
            "--media-root",
            "/srv/media",
            "--schema",
            "1.41.3",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["summary"]["libraries"][0]["name"], "Music");
    assert_eq!(report["schema"], "1.41.3");
    let conn = open(&out);
    let roots = strings(
        &conn,
        "SELECT root_path FROM section_locations WHERE library_section_id = 1",
    );
    assert_eq!(roots, ["/srv/media/Music"]);

    let output = Command::new(env!("CARGO_BIN_EXE_plex-fixture"))
        .env(fixture::SHARED_ENV, dir.path().join("nowhere"))
        .args(["db", "--preset", "tiny"])
        .arg(dir.path().join("never.db"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nowhere/reference/real-plex-dbs/1.43.3/com.plexapp.plugins.library.db"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one-line error: {stderr}");
    assert!(!dir.path().join("never.db").exists());
}

/// The user's size (mission.md). Slow (about half a minute of CPU): run
/// with `cargo test --release -p plex-burst-tests --test fixture -- --ignored`.
#[test]
#[ignore]
fn the_user_size_preset_matches_the_mission_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user.db");
    let summary = generate_db(&path, &Spec::user_size()).unwrap();
    let conn = open(&path);
    let live = |section: &str, kind: i64| {
        count(
            &conn,
            &format!(
                "SELECT count(*) FROM metadata_items m JOIN library_sections s ON s.id = m.library_section_id
                 WHERE s.name = '{section}' AND m.metadata_type = {kind} AND m.deleted_at IS NULL"
            ),
        )
    };
    let table = [
        ("Music", 10, 456_534),
        ("TV Shows", 4, 738),
        ("Movies", 1, 315),
        ("A voir", 1, 32),
        ("Photos", 13, 28_338),
        ("Kids - Movies", 1, 5),
        ("Kids - TV Shows", 4, 200),
        ("Adult", 1, 57),
    ];
    for (section, kind, expected) in table {
        assert_eq!(live(section, kind), expected, "{section}");
    }
    let analysed = count(
        &conn,
        "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL AND extra_data LIKE '%musicAnalysisVersion%'",
    );
    assert_eq!(analysed, 81_035);
    assert_eq!(summary.sonic_analysed, 81_035);
    let second_location = count(
        &conn,
        "SELECT count(*) FROM media_parts WHERE file LIKE '/data/photos2/%'",
    );
    assert_eq!(second_location, 3_368);
}
