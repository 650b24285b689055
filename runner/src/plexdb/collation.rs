//! The collations Plex's own SQLite build registers, for stock SQLite.
//!
//! Every real library DB has an index on `metadata_items.title_sort` under
//! a collation stock SQLite lacks: `icu_root` from Plex 1.29 on (measured
//! on 225 real DBs), `naturalsort` up to 1.19. Without them SQLite can
//! neither check that index nor write `metadata_items` (each insert or
//! update must place the row in it).
//!
//! - `icu_root` is ICU's root collation with numeric ordering on (`kn`),
//!   every other option at its default. ICU4X's root collation with those
//!   options orders the `index_title_sort_icu` of all 225 real DBs tried
//!   exactly as Plex wrote it (with numeric ordering off one of them,
//!   titles such as `IMG_0176` / `IMG_038FA`, is out of order).
//! - `naturalsort` is not documented anywhere we found. The one real index
//!   we hold (1.19.5) is consistent with a case-insensitive comparison in
//!   which digit runs compare by value; that is what is registered, and an
//!   index under it is reported as not verified for order
//!   ([`is_faithful`]).

use std::cmp::Ordering;
use std::sync::LazyLock;

use icu_collator::options::CollatorOptions;
use icu_collator::preferences::CollationNumericOrdering;
use icu_collator::{Collator, CollatorBorrowed, CollatorPreferences};
use rusqlite::Connection;

pub const ICU_ROOT: &str = "icu_root";
pub const NATURALSORT: &str = "naturalsort";

/// Collations SQLite itself provides.
const BUILT_IN: [&str; 3] = ["binary", "nocase", "rtrim"];

static ROOT: LazyLock<CollatorBorrowed<'static>> = LazyLock::new(|| {
    let mut prefs = CollatorPreferences::default();
    prefs.numeric_ordering = Some(CollationNumericOrdering::True);
    Collator::try_new(prefs, CollatorOptions::default())
        .expect("the root collation is compiled into icu_collator")
});

/// Registers Plex's collations on `conn`.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_collation(ICU_ROOT, icu_root)?;
    conn.create_collation(NATURALSORT, natural)
}

/// True for a collation SQLite has without registration.
pub fn is_built_in(name: &str) -> bool {
    BUILT_IN.iter().any(|b| b.eq_ignore_ascii_case(name))
}

/// True when the collation registered under `name` is known to order as
/// Plex's does, so that an index under it can be verified for order.
pub fn is_faithful(name: &str) -> bool {
    is_built_in(name) || name.eq_ignore_ascii_case(ICU_ROOT)
}

/// True for a collation [`register`] provides.
pub fn is_registered(name: &str) -> bool {
    [ICU_ROOT, NATURALSORT]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
}

/// Plex's `icu_root`.
pub fn icu_root(a: &str, b: &str) -> Ordering {
    ROOT.compare(a, b)
}

/// Our `naturalsort`: letters without case, digit runs by value, then the
/// bytes (so that only equal strings compare equal).
pub fn natural(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.chars().peekable(), b.chars().peekable());
    loop {
        match (x.peek().copied(), y.peek().copied()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let order = digit_run(&mut x).cmp_value(&digit_run(&mut y));
                if order != Ordering::Equal {
                    return order;
                }
            }
            (Some(c), Some(d)) => {
                let order = c.to_lowercase().cmp(d.to_lowercase());
                if order != Ordering::Equal {
                    return order;
                }
                x.next();
                y.next();
            }
        }
    }
}

/// A run of ASCII digits without its leading zeros.
struct DigitRun(String);

impl DigitRun {
    /// By value: a longer run (without leading zeros) is larger.
    fn cmp_value(&self, other: &DigitRun) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

fn digit_run(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> DigitRun {
    let mut run = String::new();
    while let Some(c) = chars.next_if(char::is_ascii_digit) {
        if !(run.is_empty() && c == '0') {
            run.push(c);
        }
    }
    DigitRun(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icu_root_is_numeric_and_ignores_case_first() {
        // As Plex ordered them in a real 1.42.2 DB: 38 before 176.
        assert_eq!(icu_root("IMG_038FA", "IMG_0176"), Ordering::Less);
        assert_eq!(icu_root("Track 2", "Track 10"), Ordering::Less);
        assert_eq!(icu_root("apple", "Banana"), Ordering::Less);
        assert_eq!(icu_root("Élan", "Zoo"), Ordering::Less);
        assert_eq!(icu_root("same", "same"), Ordering::Equal);
    }

    #[test]
    fn natural_sort_orders_digit_runs_by_value_and_ignores_case() {
        let mut titles = vec!["a10", "A2", "a02b", "b", "Helix", "gaybeeg", "a2"];
        titles.sort_by(|a, b| natural(a, b));
        assert_eq!(titles, ["A2", "a2", "a02b", "a10", "b", "gaybeeg", "Helix"]);
        assert_eq!(natural("x", "x"), Ordering::Equal);
        assert_eq!(natural("x1", "x"), Ordering::Greater);
    }

    #[test]
    fn registered_collations_serve_indexes() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        conn.execute_batch(
            "CREATE TABLE t(s); CREATE INDEX i ON t(s COLLATE icu_root);
             CREATE INDEX n ON t(s COLLATE naturalsort);
             INSERT INTO t VALUES ('b'), ('A'), ('a10'), ('a9');",
        )
        .unwrap();
        let sorted: Vec<String> = conn
            .prepare("SELECT s FROM t ORDER BY s COLLATE icu_root")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(sorted, ["A", "a9", "a10", "b"]);
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        assert!(is_faithful("ICU_ROOT") && !is_faithful(NATURALSORT));
        assert!(is_built_in("NOCASE") && !is_built_in(ICU_ROOT));
    }
}
