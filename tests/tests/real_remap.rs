//! `remap` on copies of the library DBs real Plex servers wrote: every path
//! column checked row by row against expectations computed here with a
//! plain reference implementation, the `file://` URLs kept in the form Plex
//! stored them (percent-encoded in 1.32.5 and 1.42.2), and the way back
//! giving the original bytes.

use std::collections::BTreeMap;
use std::path::Path;

use plex_burst_tests::real_dbs::{self, RealDb};
use runner::plexdb::{PathMapping, remap};
use rusqlite::Connection;

/// The path-holding columns the remap writes.
const COLUMNS: [(&str, &str); 4] = [
    ("section_locations", "root_path"),
    ("media_parts", "file"),
    ("directories", "path"),
    ("media_streams", "url"),
];

/// `table.column` → value by rowid.
type Snapshot = BTreeMap<String, BTreeMap<i64, Option<String>>>;

fn snapshot(db: &Path) -> Snapshot {
    let conn = Connection::open(db).expect("copy opens");
    COLUMNS
        .iter()
        .map(|(table, column)| {
            let sql = format!("SELECT rowid, {column} FROM {table}");
            let mut stmt = conn.prepare(&sql).expect("query prepares");
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("query runs")
                .map(|r| r.expect("row"))
                .collect();
            (format!("{table}.{column}"), rows)
        })
        .collect()
}

/// Reference percent-decoding: every `%XX` is a byte; None when that is not
/// UTF-8 or a `%` is not an escape.
fn decode(s: &str) -> Option<String> {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// True when `s` holds only what a percent-encoded URI path may hold.
fn fully_encoded(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b))
}

/// Reference mapping: the longest `from` equal to `path` or followed in it
/// by a `/` wins; (its index, the new path).
fn reference_map(path: &str, mappings: &[PathMapping]) -> Option<(usize, String)> {
    mappings
        .iter()
        .enumerate()
        .filter(|(_, m)| path == m.from || path.starts_with(&format!("{}/", m.from)))
        .max_by_key(|(_, m)| m.from.len())
        .map(|(i, m)| (i, format!("{}{}", m.to, &path[m.from.len()..])))
}

/// The path a stored URL stands for, and whether it was stored raw (a
/// space or non-ASCII byte shows it; else it is percent-encoded or reads
/// the same either way).
fn url_path(url: &str) -> Option<(String, bool)> {
    let stored = url.strip_prefix("file://")?;
    let raw = stored.bytes().any(|b| b == b' ' || !b.is_ascii());
    if raw {
        Some((stored.to_string(), true))
    } else {
        decode(stored).map(|p| (p, false))
    }
}

/// Home roots to mounts whose names need escaping (space, `%`, `#`, quote,
/// NFC and NFD accents), plus sibling decoys that must match nothing.
fn mappings_for(db: &Path) -> (Vec<PathMapping>, usize) {
    let conn = Connection::open(db).expect("copy opens");
    let mut stmt = conn
        .prepare("SELECT DISTINCT root_path FROM section_locations WHERE root_path LIKE '/%' ORDER BY id")
        .expect("query prepares");
    let roots: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("query runs")
        .map(|r| r.expect("row"))
        .collect();
    assert!(!roots.is_empty(), "{}: no library roots", db.display());
    let mut sources = roots.clone();
    for folder in folders_needing_escapes(&conn, &roots) {
        if !sources.contains(&folder) {
            sources.push(folder);
        }
    }
    let mut mappings: Vec<PathMapping> = sources
        .into_iter()
        .enumerate()
        .map(|(i, from)| PathMapping {
            from,
            to: format!("/mnt/media with space/{i} 100% #'\"caf\u{e9} cafe\u{301}"),
        })
        .collect();
    let real = mappings.len();
    for root in &roots {
        for decoy in [root[..root.len() - 1].to_string(), format!("{root}Shows")] {
            let usable = decoy.len() > 1 && !decoy.ends_with('/');
            if usable && !mappings.iter().any(|m| m.from == decoy) {
                let to = format!("/mnt/decoy/{}", mappings.len());
                mappings.push(PathMapping { from: decoy, to });
            }
        }
    }
    (mappings, real)
}

/// Media folders under `roots` whose own names need escaping in a URL (a
/// space, a quote, non-ASCII): subtitles' first, then media files'. As
/// longer prefixes they win over their root.
fn folders_needing_escapes(conn: &Connection, roots: &[String]) -> Vec<String> {
    let sql = "SELECT url FROM media_streams WHERE url LIKE 'file://%' ORDER BY id";
    let mut stmt = conn.prepare(sql).expect("query prepares");
    let urls: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("query runs")
        .map(|r| r.expect("row"))
        .collect();
    let mut stmt = conn
        .prepare("SELECT file FROM media_parts WHERE file LIKE '/%' ORDER BY id")
        .expect("query prepares");
    let files: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("query runs")
        .map(|r| r.expect("row"))
        .collect();
    let paths: Vec<String> = urls
        .iter()
        .filter_map(|u| url_path(u).map(|(p, _)| p))
        .chain(files)
        .collect();
    let needs: [fn(&str) -> bool; 3] = [
        |name| name.contains(' '),
        |name| name.contains('\''),
        |name| !name.is_ascii(),
    ];
    needs
        .iter()
        .filter_map(|needs| {
            paths.iter().find_map(|path| {
                let (folder, _) = path.rsplit_once('/')?;
                let name = folder.rsplit('/').next()?;
                let under_root = roots.iter().any(|r| folder.starts_with(&format!("{r}/")));
                (under_root && needs(name)).then(|| folder.to_string())
            })
        })
        .collect()
}

/// What every row must hold after `mappings`, and the rows each mapping
/// changes per column.
fn expected(before: &Snapshot, mappings: &[PathMapping]) -> (Snapshot, Vec<BTreeMap<String, u64>>) {
    let mut counts = vec![BTreeMap::new(); mappings.len()];
    let mut after = Snapshot::new();
    for (name, rows) in before {
        let is_url = name == "media_streams.url";
        let mut column = BTreeMap::new();
        for (id, value) in rows {
            let mapped = value.as_deref().and_then(|v| {
                if !is_url {
                    return reference_map(v, mappings);
                }
                let (path, raw) = url_path(v)?;
                let (i, new) = reference_map(&path, mappings)?;
                // The remap's own output is checked against `new` below;
                // here only a raw URL has a single right spelling.
                Some((i, if raw { format!("file://{new}") } else { new }))
            });
            if let Some((i, _)) = &mapped {
                *counts[*i].entry(name.clone()).or_insert(0) += 1;
            }
            column.insert(*id, mapped.map(|(_, v)| v).or_else(|| value.clone()));
        }
        after.insert(name.clone(), column);
    }
    (after, counts)
}

/// Checks `actual` row by row against `wanted`; an encoded URL must decode
/// to the wanted path and hold nothing unescaped.
fn check_rows(version: &str, before: &Snapshot, wanted: &Snapshot, actual: &Snapshot) -> u64 {
    let mut encoded_urls = 0;
    for (name, rows) in wanted {
        assert_eq!(
            rows.len(),
            actual[name].len(),
            "{version} {name}: row count"
        );
        for (id, want) in rows {
            let got = &actual[name][id];
            let old = &before[name][id];
            let encoded_url = name == "media_streams.url"
                && got != old
                && old
                    .as_deref()
                    .and_then(url_path)
                    .is_some_and(|(_, raw)| !raw);
            if !encoded_url {
                assert_eq!(got, want, "{version} {name} row {id}");
                continue;
            }
            let got = got.as_deref().expect("a URL");
            let path = got.strip_prefix("file://").expect("still a file URL");
            assert!(
                fully_encoded(path),
                "{version} row {id}: {got} is not fully encoded"
            );
            assert_eq!(
                decode(path).as_deref(),
                want.as_deref(),
                "{version} {name} row {id}"
            );
            encoded_urls += 1;
        }
    }
    encoded_urls
}

fn reversed(mappings: &[PathMapping]) -> Vec<PathMapping> {
    mappings
        .iter()
        .map(|m| PathMapping {
            from: m.to.clone(),
            to: m.from.clone(),
        })
        .collect()
}

/// Remaps a copy of `real` there and back; returns (rows mapped, encoded
/// URLs mapped).
fn there_and_back(real: &RealDb, scratch: &Path) -> (u64, u64) {
    let v = &real.version;
    let db = real.copy_into(&scratch.join(v));
    let before = snapshot(&db);
    let (mappings, real_count) = mappings_for(&db);
    let (wanted, counts) = expected(&before, &mappings);

    let planned = remap::dry_run(&db, &mappings).unwrap_or_else(|e| panic!("{v}: dry run: {e}"));
    assert_eq!(snapshot(&db), before, "{v}: the dry run wrote");
    let report = remap::apply(&db, &mappings, &scratch.join(format!("{v}-backups")))
        .unwrap_or_else(|e| panic!("{v}: remap: {e}"));
    assert_eq!(
        planned.mappings, report.mappings,
        "{v}: dry run and apply differ"
    );
    assert_eq!(planned.total_rows, report.total_rows, "{v}");
    for (m, want) in report.mappings.iter().zip(&counts) {
        let got: BTreeMap<String, u64> = m
            .rows
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        assert_eq!(&got, want, "{v}: rows of {} -> {}", m.from, m.to);
    }
    for decoy in &report.mappings[real_count..] {
        assert_eq!(decoy.total, 0, "{v}: sibling {} matched", decoy.from);
    }
    let encoded_urls = check_rows(v, &before, &wanted, &snapshot(&db));

    let back = reversed(&mappings[..real_count]);
    let report_back = remap::apply(&db, &back, &scratch.join(format!("{v}-backups-2")))
        .unwrap_or_else(|e| panic!("{v}: remap back: {e}"));
    assert_eq!(
        report_back.total_rows, report.total_rows,
        "{v}: back maps as many rows"
    );
    assert!(
        snapshot(&db) == before,
        "{v}: the way back did not give the original bytes"
    );
    eprintln!(
        "{v}: {} rows mapped ({:?}), {encoded_urls} encoded URLs",
        report.total_rows,
        counts
            .iter()
            .map(|c| c.values().sum::<u64>())
            .collect::<Vec<_>>()
    );
    (report.total_rows, encoded_urls)
}

#[test]
fn every_real_db_remaps_row_by_row_and_back_to_its_own_bytes() {
    let scratch = tempfile::tempdir().expect("scratch folder");
    let mut encoded_urls = 0;
    for real in real_dbs::sound() {
        let (rows, urls) = there_and_back(&real, scratch.path());
        assert!(rows > 0, "{}: nothing mapped", real.version);
        encoded_urls += urls;
    }
    // 1.32.5 holds 37 encoded subtitle URLs (`Season%201`), 1.42.2 one.
    assert!(
        encoded_urls >= 38,
        "only {encoded_urls} encoded URLs mapped"
    );
}

#[test]
fn the_encoded_subtitles_of_1_32_5_follow_their_media() {
    let scratch = tempfile::tempdir().expect("scratch folder");
    let db = real_dbs::version("1.32.5").copy_into(scratch.path());
    let mappings = [PathMapping {
        from: "/data/tvshows".into(),
        to: "/mnt/media with space/TV".into(),
    }];
    let report = remap::apply(&db, &mappings, &scratch.path().join("b")).expect("remap");
    let rows = &report.mappings[0].rows;
    assert!(rows["media_parts.file"] > 0);
    let conn = Connection::open(&db).expect("copy opens");
    let url: String = conn
        .query_row(
            "SELECT url FROM media_streams WHERE url LIKE '%Blackadder%S01E04%'",
            [],
            |r| r.get(0),
        )
        .expect("the subtitle");
    assert_eq!(
        url,
        "file:///mnt/media%20with%20space/TV/Blackadder/Season%201/Blackadder%20-%20S01E04%20-%20The%20Queen%20of%20Spain's%20Beard%20SDTV.en.srt"
    );
    let left: i64 = conn
        .query_row(
            "SELECT count(*) FROM media_streams WHERE url LIKE 'file:///data/tvshows/%'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(left, 0, "every TV subtitle moved");
    assert_eq!(rows["media_streams.url"], 35);
}
