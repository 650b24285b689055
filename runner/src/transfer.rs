//! The data path: a Databases folder to or from an archive in S3, streamed
//! both ways with no intermediate file. The blocking side (tar, zstd, disk)
//! runs on its own thread, joined to the S3 engine by a bounded pipe.

use std::io;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use crate::archive::{self, Expectation, Limits, Manifest, PackOptions, UnpackReport};
use crate::pipe::{PipeWriter, pipe};
use crate::s3::{Bucket, Counted, DownloadReport, S3Error, UploadReport};

/// Chunks queued between the S3 side and the archive side. A download
/// chunk is a whole range (16 MiB), already bounded by the engine's own
/// in-flight limit: two more keep extraction fed without adding memory.
const PULL_PIPE_CHUNKS: usize = 2;
/// Upload chunks are zstd's output blocks (about 128 KiB each).
const PUSH_PIPE_CHUNKS: usize = 64;

/// Where the manifest of an archive lives: beside it, same stem.
pub fn manifest_key_for(archive_key: &str) -> String {
    let stem = [".tar.zst", ".tar.gz", ".tgz"]
        .iter()
        .find_map(|ext| archive_key.strip_suffix(ext))
        .unwrap_or(archive_key);
    format!("{stem}.manifest.json")
}

#[derive(Debug)]
pub struct Pulled {
    pub download: DownloadReport,
    pub unpack: UnpackReport,
}

/// Streams `key` into `dest` (a Databases folder). `dest` is replaced only
/// once every digest the manifest gives has checked out. Without a
/// manifest, the default [`Limits`] bound how far the archive may expand.
pub async fn pull(
    bucket: &Bucket,
    key: &str,
    dest: &Path,
    manifest: Option<Manifest>,
) -> Result<Pulled> {
    pull_bounded(bucket, key, dest, manifest, Limits::default(), |_| {}).await
}

/// [`pull`], telling `progress` how many bytes have arrived so far.
pub async fn pull_with_progress(
    bucket: &Bucket,
    key: &str,
    dest: &Path,
    manifest: Option<Manifest>,
    progress: impl FnMut(u64) + Send + 'static,
) -> Result<Pulled> {
    pull_bounded(bucket, key, dest, manifest, Limits::default(), progress).await
}

/// [`pull_with_progress`] within `limits` (the run's `[pull]`) when the
/// archive has no manifest.
pub async fn pull_bounded(
    bucket: &Bucket,
    key: &str,
    dest: &Path,
    manifest: Option<Manifest>,
    limits: Limits,
    progress: impl FnMut(u64) + Send + 'static,
) -> Result<Pulled> {
    let (writer, reader) = pipe(PULL_PIPE_CHUNKS);
    let dest_owned = dest.to_path_buf();
    let unpack = tokio::task::spawn_blocking(move || {
        let expect = Expectation {
            archive_sha256: manifest.as_ref().map(|m| m.archive.sha256.clone()),
            manifest: manifest.as_ref(),
            limits,
        };
        archive::unpack(reader, &dest_owned, &expect)
    });

    let download = bucket.download(key, Counted::new(writer, progress)).await;
    let unpacked = unpack.await.context("the extraction thread panicked")?;
    match (download, unpacked) {
        (Ok(download), Ok(unpack)) => {
            // Both sides hashed the same stream; a difference means bytes
            // went missing in between.
            if download.sha256 != unpack.archive_sha256 {
                bail!("internal error: the downloaded and the extracted streams differ ({key})");
            }
            Ok(Pulled { download, unpack })
        }
        // The extraction refused the archive (a bound, a digest) and closed
        // the pipe: the download failed only for having nowhere to write.
        (Err(S3Error::Io { .. }), Err(e)) if !matches!(e, archive::ArchiveError::Read { .. }) => {
            Err(anyhow!(e).context(format!("cannot extract s3://{}/{key}", bucket.name())))
        }
        // The download failed first: its error is the cause, the extraction
        // only saw the stream end.
        (Err(e), _) => {
            Err(anyhow!(e).context(format!("cannot download s3://{}/{key}", bucket.name())))
        }
        (Ok(_), Err(e)) => {
            Err(anyhow!(e).context(format!("cannot extract s3://{}/{key}", bucket.name())))
        }
    }
}

#[derive(Debug)]
pub struct Pushed {
    pub manifest: Manifest,
    pub upload: UploadReport,
    pub manifest_key: String,
}

/// Streams `src` (a Databases folder) to `key` as tar.zst, then writes its
/// manifest beside it. The manifest is written last: its presence means the
/// archive is complete.
/// `annotate` adds what only the caller knows (statistics, provenance) to
/// the manifest before it is written.
pub async fn push(
    bucket: &Bucket,
    src: &Path,
    key: &str,
    opts: PackOptions,
    annotate: impl FnOnce(&mut Manifest),
) -> Result<Pushed> {
    push_with_progress(bucket, src, key, opts, annotate, |_| {}).await
}

/// [`push`], telling `progress` how many archive bytes went into the
/// upload's pipe so far (the pipe is bounded: they are on their way).
pub async fn push_with_progress(
    bucket: &Bucket,
    src: &Path,
    key: &str,
    opts: PackOptions,
    annotate: impl FnOnce(&mut Manifest),
    progress: impl FnMut(u64) + Send + 'static,
) -> Result<Pushed> {
    let size_hint = folder_size(src)?;
    let (writer, reader) = pipe(PUSH_PIPE_CHUNKS);
    let src_owned = src.to_path_buf();
    let pack = tokio::task::spawn_blocking(move || pack_into(&src_owned, writer, &opts, progress));

    // zstd never grows DB content by more than a fraction of a percent: the
    // folder's size is a safe bound for choosing the part size.
    let upload = bucket
        .upload(
            key,
            reader,
            Some(size_hint + size_hint / 64 + (1 << 20)),
            "application/zstd",
        )
        .await;
    let packed = pack.await.context("the packing thread panicked")?;
    let (mut manifest, upload) = match (packed, upload) {
        (Ok(m), Ok(u)) => (m, u),
        // The packing failed first: the upload only saw the stream fail.
        (Err(e), _) if !reader_gone(&e) => {
            return Err(e.context(format!("cannot pack {}", src.display())));
        }
        // The upload failed first (the endpoint, the credentials, the
        // network): the packing only saw the pipe close behind it.
        (_, Err(e)) => {
            return Err(anyhow!(e).context(format!("cannot upload s3://{}/{key}", bucket.name())));
        }
        (Err(e), Ok(_)) => return Err(e.context(format!("cannot pack {}", src.display()))),
    };
    if upload.sha256 != manifest.archive.sha256 || upload.bytes != manifest.archive.size {
        bail!("internal error: the packed and the uploaded streams differ ({key})");
    }
    annotate(&mut manifest);
    let manifest_key = manifest_key_for(key);
    bucket
        .put_bytes(
            &manifest_key,
            manifest.to_json()?.into(),
            "application/json",
        )
        .await
        .with_context(|| {
            format!(
                "cannot write the manifest s3://{}/{manifest_key}",
                bucket.name()
            )
        })?;
    Ok(Pushed {
        manifest,
        upload,
        manifest_key,
    })
}

/// Fetches and validates the manifest at `key`.
pub async fn fetch_manifest(bucket: &Bucket, key: &str) -> Result<Manifest> {
    let bytes = bucket
        .get_bytes(key)
        .await
        .with_context(|| format!("cannot read the manifest s3://{}/{key}", bucket.name()))?;
    Manifest::from_json(&bytes).with_context(|| format!("manifest s3://{}/{key}", bucket.name()))
}

/// Packs into the pipe; a failure reaches the uploader as a stream error, so
/// a half-written archive is never completed in S3.
fn pack_into(
    src: &Path,
    mut writer: PipeWriter,
    opts: &PackOptions,
    progress: impl FnMut(u64),
) -> Result<Manifest> {
    let mut counted = Progressed {
        inner: &mut writer,
        written: 0,
        progress,
    };
    match archive::pack(src, &mut counted, opts) {
        Ok(manifest) => Ok(manifest),
        Err(e) => {
            writer.fail(&io::Error::other(e.to_string()));
            Err(e.into())
        }
    }
}

/// A writer that reports the running total after each write.
struct Progressed<W, F> {
    inner: W,
    written: u64,
    progress: F,
}

impl<W: io::Write, F: FnMut(u64)> io::Write for Progressed<W, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        (self.progress)(self.written);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether packing stopped only because the uploader stopped reading.
fn reader_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn folder_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            folder_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_sits_beside_the_archive() {
        assert_eq!(
            manifest_key_for("runs/r1/result/plex-db.tar.zst"),
            "runs/r1/result/plex-db.manifest.json"
        );
        assert_eq!(
            manifest_key_for("reference/home.tar.gz"),
            "reference/home.manifest.json"
        );
        assert_eq!(manifest_key_for("odd-name"), "odd-name.manifest.json");
    }
}
