//! The archive format against real files, real tar/zstd/gzip (the GNU
//! binaries for archives "made by the user") and real filesystems.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use runner::archive::{
    self, ArchiveError, Compression, DatedBackups, Expectation, Manifest, PackOptions,
    UnpackReport, Unsafe,
};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

// ---------------------------------------------------------------- helpers

/// Deterministic bytes that compress like database pages (about 3:1).
fn db_like(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(len + 128);
    while out.len() < len {
        let r = next();
        let row = format!(
            "{}|Movie {}|/data/media/Movies/{:x}/file.mkv|{}\n",
            r % 1_000_000,
            (r >> 20) % 5000,
            (r >> 32) % 0xFFFF,
            r >> 48
        );
        out.extend_from_slice(row.as_bytes());
    }
    out.truncate(len);
    out
}

/// A Plex-like `Databases` folder at `dir` (created), returned as a map.
fn write_databases(dir: &Path, seed: u64) -> BTreeMap<String, Vec<u8>> {
    let files = BTreeMap::from([
        (
            "com.plexapp.plugins.library.db".to_string(),
            db_like(3 << 20, seed),
        ),
        (
            "com.plexapp.plugins.library.blobs.db".to_string(),
            db_like(700_000, seed + 1),
        ),
        ("com.plexapp.plugins.library.db-shm".to_string(), Vec::new()),
        (
            "backups/com.plexapp.plugins.library.db-2026-11-20".to_string(),
            db_like(100_000, seed + 2),
        ),
    ]);
    for (rel, data) in &files {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        fs::write(&path, data).expect("write fixture file");
    }
    files
}

/// Every file under `dir` (relative path → contents); links and other
/// types are recorded too so that nothing can hide.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).expect("list") {
            let path = entry.expect("entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(root, &path, out);
            } else if meta.is_file() {
                out.insert(rel, fs::read(&path).expect("read"));
            } else {
                out.insert(rel, format!("{:?}", meta.file_type()).into_bytes());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn files_only(snapshot: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    snapshot
        .into_iter()
        .filter(|(k, _)| !k.ends_with('/'))
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn pack_to_vec(dir: &Path, opts: &PackOptions) -> (Vec<u8>, Manifest) {
    let mut out = Vec::new();
    let manifest = archive::pack(dir, &mut out, opts).expect("pack");
    (out, manifest)
}

/// Names in `parent` that an extraction could have left behind.
fn leftovers(parent: &Path) -> Vec<String> {
    fs::read_dir(parent)
        .expect("list parent")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".partial-") || name.contains(".previous-"))
        .collect()
}

/// A destination that already holds a (different) Databases folder.
struct ExistingDest {
    _tmp: TempDir,
    dest: PathBuf,
    before: BTreeMap<String, Vec<u8>>,
}

impl ExistingDest {
    fn new() -> Self {
        let tmp = TempDir::new().expect("tempdir");
        let dest = tmp
            .path()
            .join("Plex Media Server/Plug-in Support/Databases");
        fs::create_dir_all(&dest).expect("mkdir");
        fs::write(
            dest.join("com.plexapp.plugins.library.db"),
            b"the user's database",
        )
        .expect("write");
        fs::write(dest.join("only-in-old"), b"old").expect("write");
        let before = snapshot(&dest);
        Self {
            _tmp: tmp,
            dest,
            before,
        }
    }

    /// Unpacks, expects a refusal, and checks that nothing changed.
    fn refuse(&self, archive_bytes: &[u8], expect: &Expectation<'_>) -> ArchiveError {
        let error =
            archive::unpack(archive_bytes, &self.dest, expect).expect_err("must be refused");
        self.assert_untouched(&error);
        error
    }

    fn assert_untouched(&self, error: &ArchiveError) {
        let message = error.to_string();
        assert!(!message.contains('\n'), "not one line: {message}");
        assert_eq!(
            snapshot(&self.dest),
            self.before,
            "destination changed after: {message}"
        );
        let parent = self.dest.parent().expect("parent");
        assert_eq!(
            leftovers(parent),
            Vec::<String>::new(),
            "left behind after: {message}"
        );
    }
}

enum Member<'a> {
    File(&'a [u8]),
    Dir,
    Symlink(&'a str),
    Hardlink(&'a str),
    CharDevice,
    Fifo,
}

/// A tar stream written header by header, so that it can hold what no
/// well-behaved tool writes (`..`, absolute names, devices).
fn raw_tar(members: &[(&str, Member<'_>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, member) in members {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        let (kind, data, link): (tar::EntryType, &[u8], &str) = match member {
            Member::File(data) => (tar::EntryType::Regular, data, ""),
            Member::Dir => (tar::EntryType::Directory, b"", ""),
            Member::Symlink(target) => (tar::EntryType::Symlink, b"", target),
            Member::Hardlink(target) => (tar::EntryType::Link, b"", target),
            Member::CharDevice => (tar::EntryType::Char, b"", ""),
            Member::Fifo => (tar::EntryType::Fifo, b"", ""),
        };
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_cksum();
        builder.append(&header, data).expect("append");
    }
    builder.into_inner().expect("finish tar")
}

fn zst(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

fn run(cmd: &mut Command) {
    let status = cmd.status().expect("spawn");
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// `tarball` made by GNU tar as a user would: `tar czf tarball -C dir what`.
fn tar_czf(tarball: &Path, dir: &Path, what: &str) {
    run(Command::new("tar")
        .arg("czf")
        .arg(tarball)
        .arg("-C")
        .arg(dir)
        .arg(what));
}

/// A user-like Plex data folder under `root/<prefix>`, with things around
/// the Databases folder that must be skipped (one of them a symlink out).
fn write_plex_tree(root: &Path, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let pms = root.join(prefix);
    let files = write_databases(&pms.join("Plug-in Support/Databases"), 7);
    for (rel, data) in [
        ("Preferences.xml", &b"<Preferences/>"[..]),
        ("Metadata/Movies/a/Info.xml", b"<x/>"),
        ("Plug-in Support/Data/com.plexapp.system/state", b"s"),
        ("Plug-in Support/Caches/x", b"c"),
    ] {
        let path = pms.join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, data).expect("write");
    }
    symlink("/etc", pms.join("Metadata/escape")).expect("symlink");
    files
}

/// How many members of a GNU tar listing lie outside the Databases folder.
fn members_outside(listing: &str) -> u64 {
    listing
        .lines()
        .filter(|line| !line.contains("Plug-in Support/Databases"))
        .count() as u64
}

fn assert_unpacked_tree(report: &UnpackReport, dest: &Path, expected: &BTreeMap<String, Vec<u8>>) {
    assert_eq!(files_only(snapshot(dest)), *expected);
    let reported: BTreeMap<String, (u64, String)> = report
        .files
        .iter()
        .map(|f| (f.path.clone(), (f.size, f.sha256.clone())))
        .collect();
    let wanted: BTreeMap<String, (u64, String)> = expected
        .iter()
        .map(|(k, v)| (k.clone(), (v.len() as u64, sha256_hex(v))))
        .collect();
    assert_eq!(reported, wanted);
    assert_eq!(
        report.bytes_written,
        expected.values().map(|v| v.len() as u64).sum::<u64>()
    );
}

// ------------------------------------------------------------ round trips

#[test]
fn pack_then_unpack_with_manifest_into_new_and_existing_folders() {
    let tmp = TempDir::new().expect("tempdir");
    let source = tmp.path().join("src/Databases");
    let files = write_databases(&source, 1);
    let (bytes, manifest) = pack_to_vec(&source, &PackOptions::default());

    assert_eq!(manifest.archive.size, bytes.len() as u64);
    assert_eq!(manifest.archive.sha256, sha256_hex(&bytes));
    assert_eq!(manifest.archive.compression, Compression::Zstd);
    let paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort_unstable();
    assert_eq!(paths, sorted, "manifest files are sorted");
    let reloaded = Manifest::from_json(&manifest.to_json().expect("json")).expect("valid manifest");
    assert_eq!(reloaded, manifest);

    let expect = Expectation {
        manifest: Some(&manifest),
        archive_sha256: Some(manifest.archive.sha256.clone()),
        ..Default::default()
    };
    let fresh = tmp.path().join("new/Plug-in Support/Databases");
    let report = archive::unpack(&bytes[..], &fresh, &expect).expect("unpack into a new folder");
    assert_unpacked_tree(&report, &fresh, &files);
    assert_eq!(report.root_prefix, "");
    assert_eq!(report.skipped_entries, 0);
    assert_eq!(report.archive_bytes, bytes.len() as u64);
    assert_eq!(report.archive_sha256, manifest.archive.sha256);

    let existing = ExistingDest::new();
    let report =
        archive::unpack(&bytes[..], &existing.dest, &expect).expect("unpack over a folder");
    assert_unpacked_tree(&report, &existing.dest, &files); // "only-in-old" is gone
    assert_eq!(
        leftovers(existing.dest.parent().expect("parent")),
        Vec::<String>::new()
    );
}

#[test]
fn an_extraction_killed_earlier_leaves_nothing_after_the_next() {
    let tmp = TempDir::new().expect("tempdir");
    let source = tmp.path().join("src/Databases");
    let files = write_databases(&source, 3);
    let (bytes, _) = pack_to_vec(&source, &PackOptions::default());
    // What a SIGKILL in the middle of an unpack by another process leaves.
    let parent = tmp.path().join("dst");
    let stale = parent.join(".Databases.partial-999999");
    std::fs::create_dir_all(&stale).expect("stale dir");
    std::fs::write(stale.join("com.plexapp.plugins.library.db"), b"half").expect("stale file");

    let dest = parent.join("Databases");
    let report = archive::unpack(&bytes[..], &dest, &Expectation::default()).expect("unpack");
    assert_unpacked_tree(&report, &dest, &files);
    assert_eq!(leftovers(&parent), Vec::<String>::new());
}

#[test]
fn packing_is_byte_identical_across_runs_and_thread_counts() {
    let tmp = TempDir::new().expect("tempdir");
    let source = tmp.path().join("Databases");
    fs::create_dir_all(&source).expect("mkdir");
    // Large enough for many zstd jobs, so worker scheduling could show.
    fs::write(
        source.join("com.plexapp.plugins.library.db"),
        db_like(48 << 20, 3),
    )
    .expect("write");
    fs::write(
        source.join("com.plexapp.plugins.library.blobs.db"),
        db_like(9 << 20, 4),
    )
    .expect("write");

    let outputs: Vec<(Vec<u8>, Manifest)> = [1, 2, 2, 4]
        .into_iter()
        .map(|threads| {
            pack_to_vec(
                &source,
                &PackOptions {
                    threads,
                    ..PackOptions::default()
                },
            )
        })
        .collect();
    let (first, first_manifest) = &outputs[0];
    for (bytes, manifest) in &outputs[1..] {
        assert!(bytes == first, "two packs of the same folder differ");
        assert_eq!(manifest.files, first_manifest.files);
        assert_eq!(manifest.archive, first_manifest.archive);
    }
}

#[test]
fn reads_a_gnu_tar_gz_with_a_user_prefix() {
    let tmp = TempDir::new().expect("tempdir");
    let root = tmp.path().join("home");
    let prefix = "Library/Application Support/Plex Media Server";
    let files = write_plex_tree(&root, prefix);
    let tarball = tmp.path().join("plex.tar.gz");
    tar_czf(&tarball, &root, "Library");
    let listing = Command::new("tar")
        .arg("tzf")
        .arg(&tarball)
        .output()
        .expect("tar tzf");
    let bytes = fs::read(&tarball).expect("read tarball");

    let dest = tmp.path().join("restore/Databases");
    let report = archive::unpack(
        fs::File::open(&tarball).expect("open"),
        &dest,
        &Expectation::default(),
    )
    .expect("unpack a GNU tar.gz");
    assert_unpacked_tree(&report, &dest, &files);
    assert_eq!(report.root_prefix, prefix);
    assert_eq!(report.compression, Compression::Gzip);
    assert_eq!(
        report.skipped_entries,
        members_outside(&String::from_utf8_lossy(&listing.stdout))
    );
    assert!(
        report.skipped_entries >= 8,
        "the fixture has things to skip"
    );
    assert_eq!(report.archive_bytes, bytes.len() as u64);
    assert_eq!(report.archive_sha256, sha256_hex(&bytes));
}

#[test]
fn reads_a_gnu_tar_gz_with_a_dot_prefix() {
    let tmp = TempDir::new().expect("tempdir");
    let root = tmp.path().join("home");
    let files = write_plex_tree(
        &root,
        "config/Library/Application Support/Plex Media Server",
    );
    let tarball = tmp.path().join("plex.tar.gz");
    tar_czf(&tarball, &root, ".");

    let dest = tmp.path().join("Databases");
    let report = archive::unpack(
        fs::File::open(&tarball).expect("open"),
        &dest,
        &Expectation::default(),
    )
    .expect("unpack a ./-prefixed tar.gz");
    assert_unpacked_tree(&report, &dest, &files);
    assert_eq!(
        report.root_prefix,
        "config/Library/Application Support/Plex Media Server"
    );
}

#[test]
fn reads_a_tar_zst_made_by_gnu_tar() {
    let tmp = TempDir::new().expect("tempdir");
    let root = tmp.path().join("home");
    let prefix = "var/lib/plexmediaserver/Library/Application Support/Plex Media Server";
    let files = write_plex_tree(&root, prefix);
    let tarball = tmp.path().join("plex.tar.zst");
    run(Command::new("tar")
        .arg("-I")
        .arg("zstd -T0")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&root)
        .arg("var"));

    let dest = tmp.path().join("Databases");
    let report = archive::unpack(
        fs::File::open(&tarball).expect("open"),
        &dest,
        &Expectation::default(),
    )
    .expect("unpack a GNU tar.zst");
    assert_unpacked_tree(&report, &dest, &files);
    assert_eq!(report.root_prefix, prefix);
    assert_eq!(report.compression, Compression::Zstd);

    // And GNU tar reads ours.
    let (bytes, _) = pack_to_vec(&dest, &PackOptions::default());
    let ours = tmp.path().join("ours.tar.zst");
    fs::write(&ours, bytes).expect("write");
    let out = tmp.path().join("gnu");
    fs::create_dir(&out).expect("mkdir");
    run(Command::new("tar")
        .arg("-I")
        .arg("zstd")
        .arg("-xf")
        .arg(&ours)
        .arg("-C")
        .arg(&out));
    assert_eq!(
        files_only(snapshot(&out.join("Plug-in Support/Databases"))),
        files
    );
}

#[test]
fn a_symlinked_destination_keeps_its_link() {
    let tmp = TempDir::new().expect("tempdir");
    let source = tmp.path().join("src");
    let files = write_databases(&source, 5);
    let (bytes, manifest) = pack_to_vec(&source, &PackOptions::default());
    let real = tmp.path().join("ssd/Databases");
    fs::create_dir_all(&real).expect("mkdir");
    fs::write(real.join("old.db"), b"old").expect("write");
    let link = tmp.path().join("Databases");
    symlink(&real, &link).expect("symlink");

    let expect = Expectation {
        manifest: Some(&manifest),
        archive_sha256: None,
        ..Default::default()
    };
    archive::unpack(&bytes[..], &link, &expect).expect("unpack through a link");
    assert!(
        fs::symlink_metadata(&link)
            .expect("stat")
            .file_type()
            .is_symlink()
    );
    assert_eq!(files_only(snapshot(&real)), files);
}

// ---------------------------------------------------------------- refusals

fn packed_sample() -> (Vec<u8>, Manifest) {
    let tmp = TempDir::new().expect("tempdir");
    write_databases(tmp.path(), 11);
    pack_to_vec(tmp.path(), &PackOptions::default())
}

#[test]
fn refuses_truncated_archives_at_any_offset() {
    let (bytes, manifest) = packed_sample();
    let dest = ExistingDest::new();
    for cut in [
        1,
        3,
        100,
        4096,
        bytes.len() / 3,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        for expect in [
            Expectation::default(),
            Expectation {
                manifest: Some(&manifest),
                archive_sha256: None,
                ..Default::default()
            },
        ] {
            let error = dest.refuse(&bytes[..cut], &expect);
            assert!(
                matches!(error, ArchiveError::Truncated { after } if after == cut as u64),
                "cut at {cut}: {error}"
            );
        }
    }
    let error = dest.refuse(&[], &Expectation::default());
    assert!(
        matches!(error, ArchiveError::NotAnArchive { .. }),
        "{error}"
    );
}

#[test]
fn refuses_a_truncated_gnu_tar_gz() {
    let tmp = TempDir::new().expect("tempdir");
    let root = tmp.path().join("home");
    write_plex_tree(&root, "Plex Media Server");
    let tarball = tmp.path().join("plex.tar.gz");
    tar_czf(&tarball, &root, ".");
    let bytes = fs::read(&tarball).expect("read");
    let dest = ExistingDest::new();
    for cut in [1, 20, bytes.len() / 2, bytes.len() - 1] {
        let error = dest.refuse(&bytes[..cut], &Expectation::default());
        assert!(
            matches!(error, ArchiveError::Truncated { after } if after == cut as u64),
            "cut at {cut}: {error}"
        );
        assert_eq!(
            error.to_string(),
            format!("archive is truncated (stream ended after {cut} bytes)")
        );
    }
}

#[test]
fn refuses_what_is_not_an_archive() {
    let dest = ExistingDest::new();
    let plain_tar = raw_tar(&[("Plug-in Support/Databases/a.db", Member::File(b"x"))]);
    for bytes in [&plain_tar[..], b"PK\x03\x04 a zip file", b"hello"] {
        let error = dest.refuse(bytes, &Expectation::default());
        assert!(
            matches!(error, ArchiveError::NotAnArchive { .. }),
            "{error}"
        );
    }
}

#[test]
fn refuses_a_corrupt_byte_in_the_middle() {
    let (mut zstd_bytes, _) = packed_sample();
    let middle = zstd_bytes.len() / 2;
    zstd_bytes[middle] ^= 0x55;

    let tmp = TempDir::new().expect("tempdir");
    write_databases(&tmp.path().join("Plug-in Support/Databases"), 2);
    let tarball = tmp.path().join("x.tar.gz");
    tar_czf(&tarball, tmp.path(), "Plug-in Support");
    let mut gzip_bytes = fs::read(&tarball).expect("read");
    let middle = gzip_bytes.len() / 2;
    gzip_bytes[middle] ^= 0x55;

    let dest = ExistingDest::new();
    for bytes in [zstd_bytes, gzip_bytes] {
        let error = dest.refuse(&bytes, &Expectation::default());
        assert!(matches!(error, ArchiveError::Corrupt { .. }), "{error}");
    }
}

#[test]
fn refuses_digest_and_listing_mismatches() {
    let (bytes, manifest) = packed_sample();
    let dest = ExistingDest::new();

    let wrong = Expectation {
        manifest: None,
        archive_sha256: Some("0".repeat(64)),
        ..Default::default()
    };
    let error = dest.refuse(&bytes, &wrong);
    assert!(
        matches!(error, ArchiveError::ArchiveDigestMismatch { .. }),
        "{error}"
    );

    let mut tampered = manifest.clone();
    tampered.archive.sha256 = "1".repeat(64);
    let error = dest.refuse(
        &bytes,
        &Expectation {
            manifest: Some(&tampered),
            archive_sha256: None,
            ..Default::default()
        },
    );
    assert!(
        matches!(error, ArchiveError::ArchiveDigestMismatch { .. }),
        "{error}"
    );

    let mut tampered = manifest.clone();
    tampered.files[1].sha256 = "2".repeat(64);
    let error = dest.refuse(
        &bytes,
        &Expectation {
            manifest: Some(&tampered),
            archive_sha256: None,
            ..Default::default()
        },
    );
    assert!(
        matches!(&error, ArchiveError::FileDigestMismatch { path, .. } if *path == manifest.files[1].path),
        "{error}"
    );

    let mut tampered = manifest.clone();
    tampered.files[0].size += 1;
    let error = dest.refuse(
        &bytes,
        &Expectation {
            manifest: Some(&tampered),
            archive_sha256: None,
            ..Default::default()
        },
    );
    assert!(
        matches!(error, ArchiveError::FileSizeMismatch { .. }),
        "{error}"
    );

    let mut tampered = manifest.clone();
    let dropped = tampered.files.remove(2);
    let error = dest.refuse(
        &bytes,
        &Expectation {
            manifest: Some(&tampered),
            archive_sha256: None,
            ..Default::default()
        },
    );
    assert!(
        matches!(&error, ArchiveError::UnexpectedFile { path } if *path == dropped.path),
        "{error}"
    );

    let mut tampered = manifest.clone();
    tampered.files.push(archive::FileEntry {
        path: "extra.db".into(),
        size: 1,
        sha256: "3".repeat(64),
    });
    let error = dest.refuse(
        &bytes,
        &Expectation {
            manifest: Some(&tampered),
            archive_sha256: None,
            ..Default::default()
        },
    );
    assert!(
        matches!(&error, ArchiveError::MissingFile { path } if path == "extra.db"),
        "{error}"
    );
}

#[test]
fn refuses_unsafe_entries() {
    let dest = ExistingDest::new();
    let outside = dest.dest.parent().expect("parent").join("pwned");
    let absolute = format!("{}", outside.display());
    let good = (
        "Plug-in Support/Databases/com.plexapp.plugins.library.db",
        Member::File(b"new db"),
    );
    let cases: Vec<(Vec<(&str, Member<'_>)>, Unsafe)> = vec![
        (
            vec![("../../etc/passwd", Member::File(b"root::0:0"))],
            Unsafe::ParentComponent,
        ),
        (
            vec![("Plug-in Support/Databases/../../pwned", Member::File(b"x"))],
            Unsafe::ParentComponent,
        ),
        (
            vec![(absolute.as_str(), Member::File(b"x"))],
            Unsafe::Absolute,
        ),
        (
            vec![(
                "Plug-in Support/Databases/escape",
                Member::Symlink("../../../../etc"),
            )],
            Unsafe::SymbolicLink {
                target: "../../../../etc".into(),
            },
        ),
        (
            vec![(
                "Plug-in Support/Databases/link.db",
                Member::Hardlink("/etc/passwd"),
            )],
            Unsafe::HardLink {
                target: "/etc/passwd".into(),
            },
        ),
        (
            vec![("Plug-in Support/Databases/null", Member::CharDevice)],
            Unsafe::Special {
                kind: "character device",
            },
        ),
        (
            vec![("Plug-in Support/Databases/pipe", Member::Fifo)],
            Unsafe::Special { kind: "fifo" },
        ),
        (
            vec![(
                "Plug-in Support/Databases/com.plexapp.plugins.library.db",
                Member::File(b"again"),
            )],
            Unsafe::Duplicate,
        ),
    ];
    for (members, reason) in cases {
        let mut all = vec![(good.0, Member::File(b"new db"))];
        all.extend(members);
        let error = dest.refuse(&zst(&raw_tar(&all)), &Expectation::default());
        assert!(
            matches!(&error, ArchiveError::UnsafeEntry { reason: r, .. } if *r == reason),
            "expected {reason:?}, got {error}"
        );
        assert!(error.to_string().ends_with(": refused"), "{error}");
        assert!(!outside.exists(), "something was written outside: {error}");
    }
    let message = dest
        .refuse(
            &zst(&raw_tar(&[("../../etc/passwd", Member::File(b"x"))])),
            &Expectation::default(),
        )
        .to_string();
    assert_eq!(
        message,
        "archive entry \"../../etc/passwd\" escapes the destination: refused"
    );
}

/// Plex's dated backups (`<db>-YYYY-MM-DD`, their `-wal`/`-shm`) are read
/// past, never written, and counted; the manifest still verifies the rest.
/// Near misses are ordinary files and land as such.
#[test]
fn plex_dated_backups_are_read_past_and_the_manifest_still_verifies() {
    let tmp = TempDir::new().expect("tempdir");
    let home = tmp.path().join("home");
    let source = home.join("Plug-in Support/Databases");
    let mut kept = write_databases(&source, 5);
    let dated = [
        ("com.plexapp.plugins.library.db-2026-11-20", 400_000),
        ("com.plexapp.plugins.library.db-2026-11-20-wal", 1_000),
        ("com.plexapp.plugins.library.blobs.db-2024-02-29", 90_000),
    ];
    let near_misses = [
        "com.plexapp.plugins.library.db-2026-02-30",
        "com.plexapp.plugins.library.db-2026-1-20",
        "com.plexapp.plugins.library.db-2026-11-20.tmp",
        "com.plexapp.plugins.library.db-2026-11-20-journal",
        "Preferences.xml-2026-11-20",
    ];
    for (seed, (name, len)) in dated.iter().enumerate() {
        fs::write(source.join(name), db_like(*len, 20 + seed as u64)).expect("write");
    }
    for (seed, name) in near_misses.iter().enumerate() {
        let data = db_like(5_000, 40 + seed as u64);
        fs::write(source.join(name), &data).expect("write");
        kept.insert(name.to_string(), data);
    }
    let left_out = DatedBackups {
        files: dated.len() as u64,
        bytes: dated.iter().map(|(_, len)| *len as u64).sum(),
    };

    // Ours, with a manifest that lists every file, dated backups included.
    let (bytes, manifest) = pack_to_vec(&source, &PackOptions::default());
    assert_eq!(manifest.files.len(), kept.len() + dated.len());
    let expect = Expectation {
        manifest: Some(&manifest),
        archive_sha256: Some(manifest.archive.sha256.clone()),
        ..Default::default()
    };
    let existing = ExistingDest::new();
    let report = archive::unpack(&bytes[..], &existing.dest, &expect).expect("unpack");
    assert_unpacked_tree(&report, &existing.dest, &kept);
    assert_eq!(report.dated_backups, left_out);
    assert_eq!(
        leftovers(existing.dest.parent().expect("parent")),
        Vec::<String>::new()
    );

    // The user's own tar.gz, no manifest.
    let tarball = tmp.path().join("plex.tar.gz");
    tar_czf(&tarball, &home, ".");
    let dest = tmp.path().join("restore/Databases");
    let report = archive::unpack(
        fs::File::open(&tarball).expect("open"),
        &dest,
        &Expectation::default(),
    )
    .expect("unpack a GNU tar.gz");
    assert_unpacked_tree(&report, &dest, &kept);
    assert_eq!(report.dated_backups, left_out);
}

/// A dated backup is skipped only after the checks every entry passes: a
/// hostile name, link, device or duplicate under that name is refused, and
/// a manifest must list it with its size.
#[test]
fn an_entry_named_like_a_dated_backup_is_checked_as_any_other() {
    let dest = ExistingDest::new();
    let outside = dest.dest.parent().expect("parent").join("x.db-2026-01-01");
    let absolute = format!("{}", outside.display());
    let good = "Plug-in Support/Databases/com.plexapp.plugins.library.db";
    let dated = "Plug-in Support/Databases/com.plexapp.plugins.library.db-2026-01-01";
    let cases: Vec<(Vec<(&str, Member<'_>)>, Unsafe)> = vec![
        (
            vec![("../x.db-2026-01-01", Member::File(b"x"))],
            Unsafe::ParentComponent,
        ),
        (
            vec![(
                "Plug-in Support/Databases/../x.db-2026-01-01",
                Member::File(b"x"),
            )],
            Unsafe::ParentComponent,
        ),
        (
            vec![(absolute.as_str(), Member::File(b"x"))],
            Unsafe::Absolute,
        ),
        (
            vec![(dated, Member::Symlink("../../x"))],
            Unsafe::SymbolicLink {
                target: "../../x".into(),
            },
        ),
        (
            vec![(dated, Member::Hardlink("/etc/passwd"))],
            Unsafe::HardLink {
                target: "/etc/passwd".into(),
            },
        ),
        (
            vec![(dated, Member::Fifo)],
            Unsafe::Special { kind: "fifo" },
        ),
        (
            vec![(dated, Member::File(b"one")), (dated, Member::File(b"two"))],
            Unsafe::Duplicate,
        ),
    ];
    for (members, reason) in cases {
        let mut all = vec![(good, Member::File(b"new db"))];
        all.extend(members);
        let error = dest.refuse(&zst(&raw_tar(&all)), &Expectation::default());
        assert!(
            matches!(&error, ArchiveError::UnsafeEntry { reason: r, .. } if *r == reason),
            "expected {reason:?}, got {error}"
        );
        assert!(!outside.exists(), "something was written outside: {error}");
    }

    let tmp = TempDir::new().expect("tempdir");
    write_databases(tmp.path(), 13);
    let name = "com.plexapp.plugins.library.db-2026-01-01";
    fs::write(tmp.path().join(name), b"yesterday's pages").expect("write");
    let (bytes, manifest) = pack_to_vec(tmp.path(), &PackOptions::default());
    let at = manifest
        .files
        .iter()
        .position(|f| f.path == name)
        .expect("listed");
    let refuse = |edit: &dyn Fn(&mut Manifest)| {
        let mut tampered = manifest.clone();
        edit(&mut tampered);
        dest.refuse(
            &bytes,
            &Expectation {
                manifest: Some(&tampered),
                ..Default::default()
            },
        )
    };
    let error = refuse(&|m| {
        m.files.remove(at);
    });
    assert!(
        matches!(&error, ArchiveError::UnexpectedFile { path } if path == name),
        "{error}"
    );
    let error = refuse(&|m| m.files[at].size += 1);
    assert!(
        matches!(&error, ArchiveError::FileSizeMismatch { path, .. } if path == name),
        "{error}"
    );
}

#[test]
fn refuses_archives_without_one_clear_databases_folder() {
    let dest = ExistingDest::new();
    let none = raw_tar(&[
        ("Plex Media Server/Preferences.xml", Member::File(b"<P/>")),
        ("Metadata/", Member::Dir),
    ]);
    let error = dest.refuse(&zst(&none), &Expectation::default());
    assert!(
        matches!(error, ArchiveError::NoDatabasesFolder { skipped: 2 }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("no \"Plug-in Support/Databases\" folder in the archive")
    );

    let two = raw_tar(&[
        ("a/Plug-in Support/Databases/x.db", Member::File(b"1")),
        ("b/Plug-in Support/Databases/x.db", Member::File(b"2")),
    ]);
    let error = dest.refuse(&zst(&two), &Expectation::default());
    assert!(
        matches!(error, ArchiveError::AmbiguousRoot { .. }),
        "{error}"
    );

    let empty = raw_tar(&[
        ("Plug-in Support/Databases/", Member::Dir),
        ("Preferences.xml", Member::File(b"p")),
    ]);
    let error = dest.refuse(&zst(&empty), &Expectation::default());
    assert!(
        matches!(error, ArchiveError::EmptyDatabasesFolder { .. }),
        "{error}"
    );
}

#[test]
fn a_failing_source_is_reported_as_such() {
    let (bytes, manifest) = packed_sample();
    let dest = ExistingDest::new();
    let (tx, rx) = runner::pipe::pipe(4);
    let half = bytes.len() / 2;
    let producer = std::thread::spawn(move || {
        for chunk in bytes[..half].chunks(64 * 1024) {
            tx.send(bytes::Bytes::copy_from_slice(chunk)).expect("send");
        }
        tx.fail(&io::Error::new(
            io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        ));
    });
    let error = archive::unpack(
        rx,
        &dest.dest,
        &Expectation {
            manifest: Some(&manifest),
            archive_sha256: None,
            ..Default::default()
        },
    )
    .expect_err("a failed source must fail the unpack");
    producer.join().expect("producer");
    dest.assert_untouched(&error);
    assert!(
        matches!(error, ArchiveError::Read { after, .. } if after == half as u64),
        "{error}"
    );
}

#[test]
fn pack_refuses_symlinks_and_skips_fifos() {
    let tmp = TempDir::new().expect("tempdir");
    let files = write_databases(tmp.path(), 9);
    run(Command::new("mkfifo").arg(tmp.path().join("a.fifo")));
    let (_, manifest) = pack_to_vec(tmp.path(), &PackOptions::default());
    let packed: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(packed, files.keys().map(String::as_str).collect::<Vec<_>>());

    symlink("/etc/passwd", tmp.path().join("linked.db")).expect("symlink");
    let error =
        archive::pack(tmp.path(), io::sink(), &PackOptions::default()).expect_err("symlink");
    assert!(
        matches!(error, ArchiveError::SymlinkInFolder { .. }),
        "{error}"
    );
}

// --------------------------------------------------------------- resources

/// A small tmpfs, unmounted on drop. A test that needs one fails when it
/// cannot be mounted (not root): a full disk is a claim CI must prove.
struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = TempDir::new().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Self { dir },
            other => panic!(
                "the disk-full test needs a small tmpfs and cannot mount one ({other:?}): run the tests as root"
            ),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_fails_cleanly_and_names_the_file() {
    let disk = SmallDisk::mount("2m");
    let dest = disk.dir.path().join("Databases");
    fs::create_dir(&dest).expect("mkdir");
    fs::write(
        dest.join("com.plexapp.plugins.library.db"),
        b"the user's database",
    )
    .expect("write");
    let before = snapshot(&dest);

    let tmp = TempDir::new().expect("tempdir");
    let big: Vec<u8> = {
        let mut state = 0x1234_5678_9abc_def1u64;
        (0..(4 << 20))
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    fs::write(tmp.path().join("com.plexapp.plugins.library.db"), &big).expect("write");
    let (bytes, manifest) = pack_to_vec(tmp.path(), &PackOptions::default());

    // Without a manifest, the default cap (the free space less a margin)
    // stops it before the disk is full …
    let error = archive::unpack(&bytes[..], &dest, &Expectation::default()).expect_err("capped");
    assert!(
        matches!(
            &error,
            ArchiveError::ExpandsBeyond {
                cap: archive::Cap::FreeSpace { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("the destination's free space (2.0 MiB) less a margin"),
        "{error}"
    );
    assert_eq!(snapshot(&dest), before);
    assert_eq!(leftovers(disk.dir.path()), Vec::<String>::new());

    // … a cap larger than the disk meets the full disk while writing …
    let uncapped = Expectation {
        limits: archive::Limits {
            max_expanded: Some(u64::MAX),
            ..Default::default()
        },
        ..Default::default()
    };
    let error = archive::unpack(&bytes[..], &dest, &uncapped).expect_err("disk full");
    assert!(
        matches!(&error, ArchiveError::DiskFull { file, need, .. }
            if file == "com.plexapp.plugins.library.db" && *need > 0 && *need < big.len() as u64),
        "{error}"
    );
    assert!(
        error.to_string().starts_with("disk full while extracting"),
        "{error}"
    );
    assert_eq!(snapshot(&dest), before);
    assert_eq!(leftovers(disk.dir.path()), Vec::<String>::new());

    // … and up front, from the manifest.
    let expect = Expectation {
        manifest: Some(&manifest),
        archive_sha256: None,
        ..Default::default()
    };
    let error = archive::unpack(&bytes[..], &dest, &expect).expect_err("disk full");
    assert!(matches!(error, ArchiveError::DiskFull { .. }), "{error}");
    assert_eq!(snapshot(&dest), before);
    assert_eq!(leftovers(disk.dir.path()), Vec::<String>::new());
}

const MEMORY_CHILD: &str = "large_files_stream_through_bounded_memory_child";

/// Runs the measurement in a fresh process, where peak RSS means something.
#[test]
fn large_files_stream_through_bounded_memory() {
    let exe = std::env::current_exe().expect("test binary");
    let output = Command::new(exe)
        .args([
            MEMORY_CHILD,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("run the child");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "child failed:\n{log}");
    assert!(log.contains("1 passed"), "child did not run:\n{log}");
}

fn peak_rss_bytes() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .expect("value")
        .parse()
        .expect("number");
    kib * 1024
}

fn reset_peak_rss() {
    fs::write("/proc/self/clear_refs", "5").expect("reset peak RSS");
}

#[test]
#[ignore = "run in its own process by large_files_stream_through_bounded_memory"]
fn large_files_stream_through_bounded_memory_child() {
    const SIZE: u64 = 1 << 30;
    const BOUND: u64 = 128 << 20;
    let tmp = TempDir::new().expect("tempdir");
    let source = tmp.path().join("src");
    fs::create_dir(&source).expect("mkdir");
    // Sparse, with real data every 64 MiB, so that reading it is cheap.
    let file = fs::File::create(source.join("com.plexapp.plugins.library.db")).expect("create");
    file.set_len(SIZE).expect("set_len");
    let stamp = db_like(1 << 20, 1);
    for i in 0..(SIZE >> 26) {
        std::os::unix::fs::FileExt::write_all_at(&file, &stamp, i << 26).expect("write");
    }
    drop(file);

    let archive_path = tmp.path().join("a.tar.zst");
    reset_peak_rss();
    let manifest = archive::pack(
        &source,
        io::BufWriter::new(fs::File::create(&archive_path).expect("create")),
        &PackOptions::default(),
    )
    .expect("pack");
    let pack_peak = peak_rss_bytes();

    reset_peak_rss();
    let dest = tmp.path().join("Databases");
    let expect = Expectation {
        manifest: Some(&manifest),
        archive_sha256: None,
        ..Default::default()
    };
    let report = archive::unpack(fs::File::open(&archive_path).expect("open"), &dest, &expect)
        .expect("unpack");
    let unpack_peak = peak_rss_bytes();

    println!(
        "1 GiB file: pack peak RSS {} MiB, unpack peak RSS {} MiB",
        pack_peak >> 20,
        unpack_peak >> 20
    );
    assert_eq!(report.bytes_written, SIZE);
    assert!(pack_peak < BOUND, "pack peaked at {pack_peak} bytes");
    assert!(unpack_peak < BOUND, "unpack peaked at {unpack_peak} bytes");
    io::stdout().flush().expect("flush");
}

/// Received files are data: 0600 files in 0700 folders, whatever modes
/// (world-writable, setuid) the archive gives them.
#[test]
fn extracted_files_are_private_whatever_the_archive_says() {
    use std::os::unix::fs::PermissionsExt;
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind, mode) in [
        (
            "Plug-in Support/Databases/",
            tar::EntryType::Directory,
            0o777,
        ),
        (
            "Plug-in Support/Databases/backups/",
            tar::EntryType::Directory,
            0o1777,
        ),
        (
            "Plug-in Support/Databases/com.plexapp.plugins.library.db",
            tar::EntryType::Regular,
            0o4777,
        ),
        (
            "Plug-in Support/Databases/backups/old.db",
            tar::EntryType::Regular,
            0o2666,
        ),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_path(name).expect("name");
        header.set_entry_type(kind);
        header.set_mode(mode);
        let data: &[u8] = if kind == tar::EntryType::Regular {
            b"pages"
        } else {
            b""
        };
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).expect("append");
    }
    let bytes = zst(&builder.into_inner().expect("tar"));
    let tmp = TempDir::new().expect("tempdir");
    let dest = tmp.path().join("Databases");
    archive::unpack(&bytes[..], &dest, &Expectation::default()).expect("unpack");
    let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o7777;
    assert_eq!(mode(&dest), 0o700);
    assert_eq!(mode(&dest.join("backups")), 0o700);
    assert_eq!(mode(&dest.join("com.plexapp.plugins.library.db")), 0o600);
    assert_eq!(mode(&dest.join("backups/old.db")), 0o600);
}
