//! Where a new file goes in the metadata hierarchy, read from its path
//! below the location root the way Plex's scanners read the usual layouts:
//! `Film (Year)/Film (Year).mkv`, `Show (Year)/Season 01/Show - s01e02 -
//! Title.mkv`, `Artist/Album (Year)/01 - Title.flac`, and photo folders
//! as nested photo albums.

use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub metadata_type: i64,
    pub title: String,
    pub index: Option<i64>,
    pub year: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Containers, outermost first.
    pub parents: Vec<Node>,
    pub leaf: Node,
}

fn node(metadata_type: i64, title: &str, index: Option<i64>, year: Option<i64>) -> Node {
    Node {
        metadata_type,
        title: title.to_string(),
        index,
        year,
    }
}

/// `relative` is the file's path below its location root.
pub fn place(section_type: i64, relative: &Path) -> Placement {
    let folders: Vec<String> = relative
        .parent()
        .map(|p| {
            p.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let stem = relative
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match section_type {
        2 => episode(&folders, &stem),
        8 => track(&folders, &stem),
        13 => photo(&folders, &stem),
        _ => {
            let (title, year) = split_year(&stem);
            Placement {
                parents: Vec::new(),
                leaf: node(1, title, None, year),
            }
        }
    }
}

fn episode(folders: &[String], stem: &str) -> Placement {
    let marker = episode_marker(stem);
    let show_folder = folders.first().map_or_else(
        || stem.split(" - ").next().unwrap_or(stem).to_string(),
        Clone::clone,
    );
    let (show, year) = split_year(&show_folder);
    let season = folders
        .iter()
        .find_map(|f| {
            f.strip_prefix("Season ")
                .and_then(|n| n.trim().parse().ok())
        })
        .or(marker.map(|(season, _, _)| season))
        .unwrap_or(1);
    let (index, title) = match marker {
        Some((_, episode, end)) => {
            let rest = stem[end..].trim_start_matches([' ', '-']).trim();
            let title = if rest.is_empty() {
                format!("Episode {episode}")
            } else {
                rest.to_string()
            };
            (Some(episode), title)
        }
        None => (None, stem.to_string()),
    };
    Placement {
        parents: vec![
            node(2, show, None, year),
            node(3, &format!("Season {season}"), Some(season), None),
        ],
        leaf: node(4, &title, index, year),
    }
}

/// `sNNeMM` (any case) in a name: (season, episode, end offset).
fn episode_marker(stem: &str) -> Option<(i64, i64, usize)> {
    let bytes = stem.as_bytes();
    for start in 0..bytes.len() {
        if !bytes[start].eq_ignore_ascii_case(&b's') {
            continue;
        }
        let season_end = digits_end(bytes, start + 1);
        if season_end == start + 1
            || season_end >= bytes.len()
            || !bytes[season_end].eq_ignore_ascii_case(&b'e')
        {
            continue;
        }
        let episode_end = digits_end(bytes, season_end + 1);
        if episode_end == season_end + 1 {
            continue;
        }
        let season = stem[start + 1..season_end].parse().ok()?;
        let episode = stem[season_end + 1..episode_end].parse().ok()?;
        return Some((season, episode, episode_end));
    }
    None
}

fn digits_end(bytes: &[u8], from: usize) -> usize {
    let mut end = from;
    while end < bytes.len() && bytes[end].is_ascii_digit() {
        end += 1;
    }
    end
}

fn track(folders: &[String], stem: &str) -> Placement {
    let artist = folders.first().map_or("Unknown Artist", String::as_str);
    let (album, year) = folders
        .get(1)
        .map_or(("Unknown Album", None), |f| split_year(f));
    let (index, title) = match stem.split_once(" - ") {
        Some((number, title)) if number.trim().parse::<i64>().is_ok() => {
            (number.trim().parse().ok(), title.trim().to_string())
        }
        _ => (None, stem.to_string()),
    };
    Placement {
        parents: vec![node(8, artist, None, None), node(9, album, None, year)],
        leaf: node(10, &title, index, None),
    }
}

fn photo(folders: &[String], stem: &str) -> Placement {
    Placement {
        parents: folders.iter().map(|f| node(14, f, None, None)).collect(),
        leaf: node(13, stem, None, None),
    }
}

/// `"Title (1999)"` → `("Title", Some(1999))`.
fn split_year(text: &str) -> (&str, Option<i64>) {
    if let Some(open) = text.rfind(" (")
        && let Some(inner) = text[open + 2..].strip_suffix(')')
        && inner.len() == 4
        && let Ok(year) = inner.parse()
    {
        return (&text[..open], Some(year));
    }
    (text, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_usual_layouts() {
        let movie = place(1, Path::new("Heat (1995)/Heat (1995).mkv"));
        assert_eq!(movie.leaf, node(1, "Heat", None, Some(1995)));
        assert!(movie.parents.is_empty());

        let episode = place(
            2,
            Path::new("Lost (2004)/Season 02/Lost (2004) - s02e05 - ...And Found.mkv"),
        );
        assert_eq!(
            episode.parents,
            vec![
                node(2, "Lost", None, Some(2004)),
                node(3, "Season 2", Some(2), None)
            ]
        );
        assert_eq!(episode.leaf, node(4, "...And Found", Some(5), Some(2004)));

        let track = place(
            8,
            Path::new("Nina Simone/Pastel Blues (1965)/03 - Be My Husband.flac"),
        );
        assert_eq!(
            track.parents,
            vec![
                node(8, "Nina Simone", None, None),
                node(9, "Pastel Blues", None, Some(1965))
            ]
        );
        assert_eq!(track.leaf, node(10, "Be My Husband", Some(3), None));

        let photo = place(13, Path::new("2019/2019-07 Lisbon/IMG_01234.jpg"));
        assert_eq!(photo.parents.len(), 2);
        assert_eq!(photo.leaf, node(13, "IMG_01234", None, None));

        let loose = place(8, Path::new("song.mp3"));
        assert_eq!(loose.parents[0].title, "Unknown Artist");
        assert_eq!(loose.leaf.title, "song");
    }
}
