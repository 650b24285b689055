//! Path rules: where an archive entry belongs, and which paths are refused.

use super::DATABASES_COMPONENTS;
use super::error::Unsafe;

/// Where an entry lies relative to the `Plug-in Support/Databases` folder.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Not under the folder: skipped.
    Outside,
    /// The folder itself (`<prefix>/Plug-in Support/Databases`).
    Root { prefix: String },
    /// Inside the folder, at `rel` (normalised, `/`-separated).
    Inside { prefix: String, rel: String },
}

/// Places a raw tar path. Absolute paths, `..` and NUL bytes are refused
/// wherever they occur; `.` and empty components are dropped (`./config/x`).
pub(crate) fn place(raw: &[u8]) -> Result<Placement, Unsafe> {
    if raw.contains(&0) {
        return Err(Unsafe::NulInName);
    }
    if raw.starts_with(b"/") {
        return Err(Unsafe::Absolute);
    }
    let components: Vec<&[u8]> = raw
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if components.iter().any(|c| *c == b"..") {
        return Err(Unsafe::ParentComponent);
    }
    let [parent, databases] = DATABASES_COMPONENTS.map(str::as_bytes);
    let Some(at) = components
        .windows(2)
        .position(|pair| pair[0] == parent && pair[1] == databases)
    else {
        return Ok(Placement::Outside);
    };
    let join = |parts: &[&[u8]]| -> Result<String, Unsafe> {
        let joined = parts.join(&b'/');
        String::from_utf8(joined).map_err(|_| Unsafe::NotUtf8)
    };
    let prefix = join(&components[..at])?;
    let rel = join(&components[at + 2..])?;
    Ok(if rel.is_empty() {
        Placement::Root { prefix }
    } else {
        Placement::Inside { prefix, rel }
    })
}

/// Checks a manifest path: relative, only normal components.
pub(crate) fn check_relative(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    if path.contains('\0') {
        return Err("has a NUL byte");
    }
    if path.starts_with('/') {
        return Err("is absolute");
    }
    for component in path.split('/') {
        match component {
            "" | "." => return Err("has an empty or \".\" component"),
            ".." => return Err("escapes the Databases folder"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inside(prefix: &str, rel: &str) -> Result<Placement, Unsafe> {
        Ok(Placement::Inside {
            prefix: prefix.into(),
            rel: rel.into(),
        })
    }

    #[test]
    fn finds_the_databases_folder_under_any_prefix() {
        assert_eq!(place(b"Plug-in Support/Databases/a.db"), inside("", "a.db"));
        assert_eq!(
            place(b"./config/Library/Application Support/Plex Media Server/Plug-in Support/Databases/x/a.db"),
            inside("config/Library/Application Support/Plex Media Server", "x/a.db")
        );
        assert_eq!(
            place(b"var/lib//Plug-in Support/Databases/"),
            Ok(Placement::Root {
                prefix: "var/lib".into()
            })
        );
        assert_eq!(place(b"Plug-in Support/Data/a.db"), Ok(Placement::Outside));
        assert_eq!(place(b"Databases/a.db"), Ok(Placement::Outside));
    }

    #[test]
    fn refuses_escapes_everywhere() {
        assert_eq!(place(b"../../etc/passwd"), Err(Unsafe::ParentComponent));
        assert_eq!(
            place(b"Plug-in Support/Databases/../../x"),
            Err(Unsafe::ParentComponent)
        );
        assert_eq!(place(b"/etc/passwd"), Err(Unsafe::Absolute));
        assert_eq!(place(b"a\0b"), Err(Unsafe::NulInName));
        assert_eq!(
            place(b"Plug-in Support/Databases/\xff.db"),
            Err(Unsafe::NotUtf8)
        );
    }

    #[test]
    fn manifest_paths_must_be_plain_relative() {
        assert!(check_relative("a/b.db").is_ok());
        for bad in ["", "/a", "a/../b", "./a", "a//b", "a\0"] {
            assert!(check_relative(bad).is_err(), "{bad:?} accepted");
        }
    }
}
