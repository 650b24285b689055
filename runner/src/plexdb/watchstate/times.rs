//! Times as Plex stores them: integer Unix seconds, or the text date-times
//! of old versions.

use std::path::Path;
use std::time::UNIX_EPOCH;

use rusqlite::types::Value;

use super::invalid;
use crate::plexdb::PlexDbError;

/// Unix seconds from a stored time: integer seconds (Plex 1.20 on) or the
/// text date-time of older versions (`2020-08-15 09:37:21`, UTC, maybe with
/// a fraction, `T` or `Z`). NULL is no time.
///
/// Anything else refuses the merge rather than skipping the row: a time we
/// cannot read may be after the snapshot, and guessing either way can drop
/// or overwrite what home watched. Every real DB seen (1.19 to 1.43)
/// parses, so this blocks no real user.
pub(super) fn seconds(
    value: &Value,
    path: &Path,
    table: &str,
    column: &str,
) -> Result<Option<i64>, PlexDbError> {
    let parsed = match value {
        Value::Null => return Ok(None),
        Value::Integer(i) => Some(*i),
        Value::Real(f) if f.is_finite() => Some(*f as i64),
        Value::Text(t) => t.trim().parse().ok().or_else(|| text_seconds(t.trim())),
        _ => None,
    };
    parsed.map(Some).ok_or_else(|| {
        let shown: String = match value {
            Value::Text(t) => format!("{:?}", t.chars().take(40).collect::<String>()),
            Value::Blob(_) => "a blob".into(),
            other => format!("{other:?}"),
        };
        invalid(
            path,
            std::io::ErrorKind::InvalidData,
            format!("watch-state merge refused: {table}.{column} holds {shown}, neither Unix seconds nor a date-time"),
        )
    })
}

fn text_seconds(text: &str) -> Option<i64> {
    let time = humantime::parse_rfc3339_weak(text).ok()?;
    i64::try_from(time.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()
}

/// The latest of a row's `values` of time `columns`; `None` if all NULL.
pub(super) fn latest(
    values: &[Value],
    columns: &[String],
    path: &Path,
    table: &str,
) -> Result<Option<i64>, PlexDbError> {
    let mut latest = None;
    for (value, column) in values.iter().zip(columns) {
        latest = latest.max(seconds(value, path, table, column)?);
    }
    Ok(latest)
}
