//! Pulls are bounded: a decompression bomb (20 GiB of zeros in under a
//! megabyte of zstd, or 20 MB of gzip) is pulled from the real S3 server and
//! stopped at its bound, with a line naming it, nothing written past the
//! bound and nothing left on disk. What is written is measured as the bytes
//! this process passed to write(2) (`wchar` in /proc/self/io), so the tests
//! of this file run one at a time.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use plex_burst_tests::s3server::S3Server;
use runner::archive::{self, FileEntry, Limits, Manifest, RATIO_FLOOR};
use runner::s3::Bucket;
use runner::transfer;
use tempfile::TempDir;

const BUCKET: &str = "bombs";
const DB: &str = "com.plexapp.plugins.library.db";
/// What each bomb claims to expand to.
const BOMB: u64 = 20 << 30;
/// What the process writes besides the extracted files during a pull (HTTP
/// requests, log lines).
const SLACK: u64 = 256 << 10;
/// Zeros per compressed frame or member; the bomb repeats it.
const BLOCK: usize = 64 << 20;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, Debug)]
enum Codec {
    Zstd,
    Gzip,
}

impl Codec {
    fn compress(self, data: &[u8]) -> Vec<u8> {
        match self {
            Codec::Zstd => zstd::encode_all(data, 3).unwrap(),
            Codec::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                gz.write_all(data).unwrap();
                gz.finish().unwrap()
            }
        }
    }

    fn key(self, name: &str) -> String {
        match self {
            Codec::Zstd => format!("{name}.tar.zst"),
            Codec::Gzip => format!("{name}.tar.gz"),
        }
    }
}

/// A tar header for a regular file of `size` bytes.
fn header(path: &str, size: u64, mode: u32) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_path(path).unwrap();
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(1_700_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    header.as_bytes().to_vec()
}

/// A whole tar member: header, data, padding to the 512-byte block.
fn member(path: &str, data: &[u8]) -> Vec<u8> {
    let mut out = header(path, data.len() as u64, 0o644);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

/// `prefix` (whole tar members), then a member at `path` whose header claims
/// [`BOMB`] bytes of zeros: zstd frames and gzip members may follow each
/// other in one stream, so one compressed block of zeros, repeated, makes
/// the bomb in a second.
fn bomb(codec: Codec, prefix: &[u8], path: &str) -> Vec<u8> {
    let mut head = prefix.to_vec();
    head.extend(header(path, BOMB, 0o644));
    let mut out = codec.compress(&head);
    let zeros = codec.compress(&vec![0u8; BLOCK]);
    for _ in 0..BOMB / BLOCK as u64 {
        out.extend_from_slice(&zeros);
    }
    out
}

/// Bytes this process has passed to write(2) so far (files and sockets).
fn written_so_far() -> u64 {
    let io = fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

struct Setup {
    _server: S3Server,
    bucket: Bucket,
    tmp: TempDir,
}

impl Setup {
    fn new() -> Self {
        let server = S3Server::start();
        server.create_bucket(BUCKET);
        let bucket = Bucket::new(&server.connection(), BUCKET, Default::default());
        let tmp = TempDir::new().unwrap();
        let dest = tmp.path().join("Databases");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join(DB), b"the previous database").unwrap();
        Setup {
            _server: server,
            bucket,
            tmp,
        }
    }

    fn dest(&self) -> std::path::PathBuf {
        self.tmp.path().join("Databases")
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        rt().block_on(
            self.bucket
                .put_bytes(key, bytes.into(), "application/octet-stream"),
        )
        .unwrap();
    }

    /// Pulls `key`, which must be refused; returns the error's last line and
    /// the bytes written meanwhile, after checking nothing changed on disk.
    fn refused(&self, key: &str, manifest: Option<Manifest>, limits: Limits) -> (String, u64) {
        let before = written_so_far();
        let error = rt()
            .block_on(transfer::pull_bounded(
                &self.bucket,
                key,
                &self.dest(),
                manifest,
                limits,
                |_| {},
            ))
            .expect_err("the bomb must be refused");
        let written = written_so_far() - before;
        let cause = error.root_cause().to_string();
        assert!(!cause.contains('\n'), "one line: {cause}");
        assert_eq!(
            fs::read(self.dest().join(DB)).unwrap(),
            b"the previous database"
        );
        assert_eq!(names(self.tmp.path()), ["Databases"], "left on disk");
        assert_eq!(names(&self.dest()), [DB]);
        (cause, written)
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn a_bomb_without_a_manifest_stops_at_the_expansion_ratio() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new();
    for codec in [Codec::Zstd, Codec::Gzip] {
        let bytes = bomb(codec, &[], &format!("Plug-in Support/Databases/{DB}"));
        let size = bytes.len();
        let key = codec.key("ratio");
        s.put(&key, bytes);
        let (cause, written) = s.refused(&key, None, Limits::default());
        assert!(
            cause.contains("the cap ([pull] max_expansion_ratio)"),
            "{codec:?}: {cause}"
        );
        assert!(
            written <= RATIO_FLOOR + SLACK,
            "{codec:?} ({size} bytes compressed): {written} bytes written"
        );
        eprintln!("{codec:?}: {size} bytes compressed, {written} bytes written: {cause}");
    }
}

#[test]
fn a_bomb_without_a_manifest_stops_at_the_configured_cap() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new();
    let cap = 32 << 20;
    let limits = Limits {
        max_expanded: Some(cap),
        ..Limits::default()
    };
    for codec in [Codec::Zstd, Codec::Gzip] {
        let key = codec.key("cap");
        s.put(
            &key,
            bomb(codec, &[], &format!("Plug-in Support/Databases/{DB}")),
        );
        let (cause, written) = s.refused(&key, None, limits);
        assert!(
            cause.contains("expands beyond 32.0 MiB, the cap ([pull] max_expanded_size)"),
            "{codec:?}: {cause}"
        );
        // Beyond the files: the HTTP requests and log lines of the pull.
        assert!(written <= cap + SLACK, "{codec:?}: {written} bytes written");
    }
}

/// The manifest lists the real files; the bomb hides outside `Databases`
/// (never written, but decompressed to the end today) or claims a size the
/// manifest does not give.
#[test]
fn a_bomb_beside_a_manifest_stops_at_what_the_manifest_lists() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new();
    let data = b"a real database, small".repeat(1000);
    let manifest = Manifest::new(
        None,
        vec![FileEntry {
            path: DB.into(),
            size: data.len() as u64,
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data)),
        }],
        archive::ArchiveDigest {
            size: 1,
            sha256: "0".repeat(64),
            compression: archive::Compression::Zstd,
        },
    );
    let files = member(&format!("Plug-in Support/Databases/{DB}"), &data);
    for codec in [Codec::Zstd, Codec::Gzip] {
        let key = codec.key("outside");
        s.put(&key, bomb(codec, &files, "Plug-in Support/Cache/bomb"));
        let (cause, written) = s.refused(&key, Some(manifest.clone()), Limits::default());
        assert!(
            cause.contains("what its manifest lists (1 file and their tar headers)"),
            "{codec:?}: {cause}"
        );
        assert!(written < 1 << 20, "{codec:?}: {written} bytes written");

        let key = codec.key("inside");
        s.put(
            &key,
            bomb(codec, &[], &format!("Plug-in Support/Databases/{DB}")),
        );
        let (cause, written) = s.refused(&key, Some(manifest.clone()), Limits::default());
        // Whichever sees it first: the bound, or the header's size.
        assert!(
            cause.contains("what its manifest lists")
                || cause.contains(&format!(
                    "is {BOMB} bytes, the manifest says {}",
                    data.len()
                )),
            "{codec:?}: {cause}"
        );
        assert!(written < 1 << 20, "{codec:?}: {written} bytes written");
    }
}

/// Entries outside `Databases` are skipped without being written anywhere,
/// not even to the staging folder.
#[test]
fn entries_outside_databases_are_never_written() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new();
    let db: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
    // Ours has no outsiders: a user's tar with 16 MiB of media caches does.
    let noise: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut tar = member("Plex Media Server/Cache/PhotoTranscoder/big.jpg", &noise);
    tar.extend(member(
        &format!("Plex Media Server/Plug-in Support/Databases/{DB}"),
        &db,
    ));
    tar.extend([0u8; 1024]);
    s.put("user.tar.zst", Codec::Zstd.compress(&tar));

    let before = written_so_far();
    let pulled = rt()
        .block_on(transfer::pull(&s.bucket, "user.tar.zst", &s.dest(), None))
        .unwrap();
    let written = written_so_far() - before;
    assert_eq!(pulled.unpack.skipped_entries, 1);
    assert_eq!(fs::read(s.dest().join(DB)).unwrap(), db);
    assert!(
        written < (db.len() as u64) + (1 << 20),
        "{written} bytes written for a {} byte DB",
        db.len()
    );
    assert_eq!(names(s.tmp.path()), ["Databases"]);
}

/// Plex's dated backups in a user's archive are read past: never written,
/// not even to the staging folder, and counted in the report. One that is
/// a bomb is stopped at the bound like any other entry.
#[test]
fn dated_backups_are_never_written_and_still_bounded() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new();
    let db: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let databases = "Plex Media Server/Plug-in Support/Databases";

    s.put(
        "dated-bomb.tar.zst",
        bomb(
            Codec::Zstd,
            &member(&format!("{databases}/{DB}"), &db),
            &format!("{databases}/{DB}-2026-01-01"),
        ),
    );
    let (cause, written) = s.refused("dated-bomb.tar.zst", None, Limits::default());
    assert!(
        cause.contains("the cap ([pull] max_expansion_ratio)"),
        "{cause}"
    );
    // Read past, not written: only the DB reached the staging folder.
    assert!(
        written <= db.len() as u64 + SLACK,
        "{written} bytes written"
    );

    let backup: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut tar = member(&format!("{databases}/{DB}"), &db);
    tar.extend(member(&format!("{databases}/{DB}-2026-11-20"), &backup));
    tar.extend([0u8; 1024]);
    s.put("dated.tar.zst", Codec::Zstd.compress(&tar));
    let before = written_so_far();
    let pulled = rt()
        .block_on(transfer::pull(&s.bucket, "dated.tar.zst", &s.dest(), None))
        .unwrap();
    let written = written_so_far() - before;
    assert_eq!(names(&s.dest()), [DB]);
    assert_eq!(fs::read(s.dest().join(DB)).unwrap(), db);
    assert_eq!(pulled.unpack.files.len(), 1);
    assert_eq!(
        pulled.unpack.dated_backups,
        archive::DatedBackups {
            files: 1,
            bytes: backup.len() as u64
        }
    );
    assert!(
        written < (db.len() as u64) + (1 << 20),
        "{written} bytes written for a {} byte DB",
        db.len()
    );
    assert_eq!(names(s.tmp.path()), ["Databases"]);
}
