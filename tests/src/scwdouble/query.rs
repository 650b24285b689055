//! Path and query arguments shared by the APIs: the zone, pagination and
//! tag filters, each wrong value a 400 naming it.

use super::catalogue;
use super::errors::ScwError;
pub use crate::plexdouble::web::Params;

/// The zone of a zonal path; legacy names are mapped.
pub fn zone(name: &str) -> Result<&'static str, ScwError> {
    catalogue::zone(name).ok_or_else(|| {
        ScwError::argument(
            "zone",
            "constraint",
            format!(
                "unknown zone {name:?}; known: {}",
                catalogue::ZONES.join(", ")
            ),
        )
    })
}

/// `(page, page_size)`: `page` from 1, the size under `size_name`
/// (`per_page` for Instance, `page_size` elsewhere), at most 100.
pub fn pagination(params: &Params, size_name: &str) -> Result<(usize, usize), ScwError> {
    let number = |name: &str, default: usize, max: usize| -> Result<usize, ScwError> {
        match params.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ScwError::argument(name, "constraint", format!("must be between 1 and {max}"))
                }),
        }
    };
    Ok((number("page", 1, usize::MAX)?, number(size_name, 50, 100)?))
}

/// The `tags` filter: comma-separated and/or repeated; a resource matches
/// when it carries all of them.
pub fn tags(params: &Params) -> Vec<String> {
    params
        .all("tags")
        .iter()
        .flat_map(|t| t.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn has_tags(resource: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|t| resource.contains(t))
}

/// A filter that, when given, must equal the value.
pub fn matches(params: &Params, name: &str, value: &str) -> bool {
    params.get(name).is_none_or(|wanted| wanted == value)
}

/// A filter that, when given, must be part of the value (Instance and
/// IAM `name` filters match substrings).
pub fn contains(params: &Params, name: &str, value: &str) -> bool {
    params.get(name).is_none_or(|wanted| value.contains(wanted))
}
