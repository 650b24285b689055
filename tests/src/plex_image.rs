//! The stand-in of the `plexinc/pms-docker` image: an archive `docker load`
//! takes, built offline from this host's files. One layer holds the Plex
//! double as `/usr/lib/plexmediaserver/Plex Media Server` (`/init`,
//! `/healthcheck.sh` and `Plex SQLite` are symlinks to it, see
//! `plexdouble::container`), every shared library it needs with the
//! dynamic loader, so the image runs on any distro, and the host's CA
//! bundle.
//!
//! `Plex SQLite` is the double's shell (`plexdouble::sqlite_shell`), not
//! this host's sqlite3: a stock shell cannot check a Plex DB, whose
//! `icu_root` index needs Plex's collation.
//!
//! The archive is `docker save`'s layout: `manifest.json` (config file,
//! tags, layers), the image config named by its sha256, and the layer tar,
//! whose sha256 is the config's `rootfs.diff_ids` entry (moby's
//! image/tarexport/load.go checks both). Entries are sorted and dated
//! alike, so the same inputs give the same archive, byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::plexdouble::container::{HEALTHCHECK, INIT, PLEX_SQLITE, PMS_BINARY};

pub const REPOSITORY: &str = "plexinc/pms-docker";
/// Present (`"true"`) on the stand-in only: what tells it from the real one.
pub const STAND_IN_LABEL: &str = "org.plex-burst.stand-in";
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";
/// The CA bundle the real image has (ca-certificates, with curl) and the
/// double's TLS client reads (plex.tv is https).
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Every entry's date: none of the build's.
const MTIME: u64 = 0;
const CREATED: &str = "1970-01-01T00:00:00Z";

/// What goes into the image.
pub struct Spec<'a> {
    /// The tag: `plexinc/pms-docker:<version>`.
    pub version: &'a str,
    /// The `plex-double` binary (its debug sections are left out).
    pub double: &'a Path,
    /// Added to the image's environment, e.g. `PLEX_DOUBLE_PLEXTV_URL`
    /// (where the double finds plex.tv: the real Plex knows it).
    pub env: &'a [(&'a str, &'a str)],
}

/// A built archive.
#[derive(Debug, Clone)]
pub struct Image {
    pub archive: PathBuf,
    /// Hex sha256 of the archive file.
    pub sha256: String,
    pub tag: String,
    pub size: u64,
}

/// Writes the archive to `archive`.
pub fn build(spec: &Spec, archive: &Path) -> Result<Image> {
    let work = tempfile::tempdir()?;
    let pms = work.path().join("pms");
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&pms)
        .arg(spec.double))?;
    let mut root = Tree::default();
    for dir in ["config", "transcode", "data", "dev", "proc", "sys", "etc"] {
        root.dir(dir, 0o755);
    }
    root.dir("tmp", 0o1777);
    // useradd -U plex, after userdel ubuntu, takes the first free id, 1000
    // (the Dockerfile); usermod -G users.
    root.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/false\nplex:x:1000:1000::/config:/bin/false\n".to_vec(),
    );
    root.file(
        "etc/group",
        0o644,
        b"root:x:0:\nusers:x:100:plex\nplex:x:1000:\n".to_vec(),
    );
    root.file(PMS_BINARY, 0o755, read(&pms)?);
    root.file(CA_BUNDLE, 0o644, read(Path::new(CA_BUNDLE))?);
    root.symlink(INIT, PMS_BINARY);
    root.symlink(HEALTHCHECK, PMS_BINARY);
    root.symlink(PLEX_SQLITE, PMS_BINARY);
    for library in shared_libraries(&[&pms])? {
        root.file(&library.to_string_lossy(), 0o755, read(&library)?);
    }
    let layer = root.tar()?;
    let diff_id = hex_sha256(&layer);
    let tag = format!("{REPOSITORY}:{}", spec.version);
    let config = serde_json::to_vec(&config(spec, &diff_id))?;
    let config_name = format!("{}.json", hex_sha256(&config));
    let layer_name = format!("{diff_id}/layer.tar");
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": [layer_name],
    }]))?;
    let mut outer = Tree::default();
    outer.dir(&diff_id, 0o755);
    outer.file(&layer_name, 0o644, layer);
    outer.file(&config_name, 0o644, config);
    outer.file("manifest.json", 0o644, manifest);
    let bytes = outer.tar()?;
    std::fs::write(archive, &bytes)
        .with_context(|| format!("cannot write {}", archive.display()))?;
    Ok(Image {
        archive: archive.to_path_buf(),
        sha256: hex_sha256(&bytes),
        tag,
        size: bytes.len() as u64,
    })
}

/// The image config, as the real image's Dockerfile sets it: ENTRYPOINT,
/// ENV (with ubuntu's PATH), EXPOSE, VOLUME and HEALTHCHECK (`--interval=5s
/// --timeout=2s --retries=20`; `CMD`, not `CMD-SHELL`: there is no shell).
fn config(spec: &Spec, diff_id: &str) -> serde_json::Value {
    const SECOND: u64 = 1_000_000_000;
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "TERM=xterm".into(),
        "LANG=C.UTF-8".into(),
        "LC_ALL=C.UTF-8".into(),
        "CHANGE_CONFIG_DIR_OWNERSHIP=true".into(),
        "HOME=/config".into(),
    ];
    env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
    let ports = [
        "32400/tcp",
        "8324/tcp",
        "32469/tcp",
        "1900/udp",
        "32410/udp",
        "32412/udp",
        "32413/udp",
        "32414/udp",
    ];
    let exposed: serde_json::Map<String, serde_json::Value> =
        ports.iter().map(|p| (p.to_string(), json!({}))).collect();
    json!({
        "architecture": architecture(),
        "os": "linux",
        "created": CREATED,
        "config": {
            "Entrypoint": [INIT],
            "Env": env,
            "ExposedPorts": exposed,
            "Volumes": { "/config": {}, "/transcode": {} },
            "Healthcheck": {
                "Test": ["CMD", HEALTHCHECK],
                "Interval": 5 * SECOND,
                "Timeout": 2 * SECOND,
                "Retries": 20,
            },
            "Labels": { STAND_IN_LABEL: "true", VERSION_LABEL: spec.version },
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        "history": [{
            "created": CREATED,
            "created_by": "plex-burst: stand-in of plexinc/pms-docker (plex-double)",
        }],
    })
}

/// Docker's name for this machine's architecture.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The libraries `ldd` says the programs load, the loader among them, at
/// the paths it found them.
fn shared_libraries(programs: &[&Path]) -> Result<BTreeSet<PathBuf>> {
    let mut found = BTreeSet::new();
    for program in programs {
        let out = run(Command::new("ldd").arg(program))?;
        for line in out.lines() {
            let line = line.trim();
            if line.contains("not found") {
                bail!("{}: ldd finds no {line}", program.display());
            }
            // "libc.so.6 => /lib/.../libc.so.6 (0x..)" or "/lib64/ld-... (0x..)";
            // the vDSO has no file.
            let path = line.split_once("=>").map_or(line, |(_, p)| p.trim());
            if let Some(path) = path
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
            {
                found.insert(PathBuf::from(path));
            }
        }
    }
    Ok(found)
}

/// A file tree to be written as a tar: parents before children, every
/// entry root's, dated `MTIME`.
#[derive(Default)]
struct Tree {
    entries: BTreeMap<String, Entry>,
}

enum Entry {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(String),
}

impl Tree {
    fn dir(&mut self, path: &str, mode: u32) {
        self.parents(path);
        self.entries
            .insert(path.trim_matches('/').to_string(), Entry::Dir(mode));
    }

    fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.parents(path);
        self.entries
            .insert(path.trim_matches('/').to_string(), Entry::File(mode, data));
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.entries.insert(
            path.trim_matches('/').to_string(),
            Entry::Symlink(target.into()),
        );
    }

    fn parents(&mut self, path: &str) {
        let mut parent = Path::new(path.trim_matches('/')).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            self.entries
                .entry(dir.to_string_lossy().into_owned())
                .or_insert(Entry::Dir(0o755));
            parent = dir.parent();
        }
    }

    /// Sorted by path, which puts a directory before what it holds.
    fn tar(&self) -> Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, entry) in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(MTIME);
            header.set_uid(0);
            header.set_gid(0);
            match entry {
                Entry::Dir(mode) => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    tar.append_data(&mut header, format!("{path}/"), std::io::empty())?;
                }
                Entry::File(mode, data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    tar.append_data(&mut header, path, data.as_slice())?;
                }
                Entry::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, path, target)?;
                }
            }
        }
        Ok(tar.into_inner()?)
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Runs a host tool; its stdout, or why it failed.
fn run(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("cannot run {:?}", command.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            command.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_lists_parents_first_and_once() {
        let mut tree = Tree::default();
        tree.file("/usr/lib/x/a", 0o644, vec![1]);
        tree.symlink("/init", "/usr/lib/x/a");
        tree.dir("usr/lib-other", 0o755);
        let paths: Vec<&str> = tree.entries.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "init",
                "usr",
                "usr/lib",
                "usr/lib-other",
                "usr/lib/x",
                "usr/lib/x/a"
            ]
        );
    }
}
