//! A containerd-style content store.
//!
//! Layout: `<root>/blobs/sha256/<hex>` for committed blobs and
//! `<root>/ingest/<sha256(key)>/{data,key,lock}` for writes in progress. A blob only
//! becomes visible once its size and digest are verified, by an atomic rename.

use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Largest blob [`ContentStore::read_verified`] reads whole into memory.
pub const MAX_SMALL_BLOB: u64 = 64 << 20;
const WRITE_BUFFER: usize = 1 << 20;
/// Every this many bytes written to an ingest file, their writeback to disk starts
/// (`sync_file_range`), so that the fsync of [`Verified::persist`] has little left.
const WRITE_BEHIND: u64 = 8 << 20;

/// Content-addressed blob storage with verified, resumable writes.
#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
    blobs: PathBuf,
    ingest: PathBuf,
}

/// Remove an ingest directory. It is first renamed out of the way (atomic), so a
/// writer that re-creates the same ingest at that moment gets a fresh directory
/// instead of racing with the removal ("directory not empty").
fn remove_dir_if_present(dir: &Path) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tomb = dir.with_file_name(format!(
        ".removing-{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    match fs::rename(dir, &tomb) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("removing ingest {}", dir.display()), e)),
    }
    match fs::remove_dir_all(&tomb) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing ingest {}", tomb.display()), e)),
    }
}

/// Take an exclusive `flock`-style lock on `f`, blocking until it is free.
///
/// Uses std's `File::lock` (Rust 1.89); the lock belongs to the open file
/// description, so separate opens exclude each other even within one process, and it
/// is released when the file is closed (also when the process dies).
// The workspace's rust-version (1.85) predates File::lock; building needs 1.89+.
#[allow(clippy::incompatible_msrv)]
pub(crate) fn lock_exclusive(f: &File) -> io::Result<()> {
    f.lock()
}

/// Start the writeback to disk of `len` bytes of `f` at `offset`, without waiting for
/// it. Only a hint to make a later fsync cheaper: errors are ignored (the fsync, which
/// is what makes data durable, reports its own).
fn start_writeback(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range takes no pointers; the descriptor is borrowed from `f`,
    // open for the whole call.
    let _ = unsafe {
        nix::libc::sync_file_range(f.as_raw_fd(), offset, len, nix::libc::SYNC_FILE_RANGE_WRITE)
    };
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

impl ContentStore {
    /// Open the store at `root`, creating its directories.
    pub fn open(root: &Path) -> Result<ContentStore> {
        let blobs = root.join("blobs").join("sha256");
        let ingest = root.join("ingest");
        for d in [&blobs, &ingest] {
            fs::create_dir_all(d).ctx(|| format!("creating {}", d.display()))?;
        }
        Ok(ContentStore {
            root: root.to_path_buf(),
            blobs,
            ingest,
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `d` lives (whether or not it exists).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    /// The blob's size when it is present.
    pub fn info(&self, d: &Digest) -> Result<Option<u64>> {
        let p = self.blob_path(d);
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading metadata of blob {d}"), e)),
        }
    }

    /// Open a blob for reading.
    pub fn read(&self, d: &Digest) -> Result<File> {
        match File::open(self.blob_path(d)) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::BlobNotFound(d.clone())),
            Err(e) => Err(Error::io(format!("opening blob {d}"), e)),
        }
    }

    /// Read a small blob whole (manifests, configs), verifying its digest.
    pub fn read_verified(&self, d: &Digest) -> Result<Vec<u8>> {
        let f = self.read(d)?;
        let len = f
            .metadata()
            .ctx(|| format!("reading metadata of blob {d}"))?
            .len();
        if len > MAX_SMALL_BLOB {
            return Err(Error::InvalidManifest {
                digest_or_ref: d.to_string(),
                reason: format!(
                    "blob of {len} bytes is too large to read whole (max {MAX_SMALL_BLOB})"
                ),
            });
        }
        let mut buf = Vec::with_capacity(len as usize);
        f.take(MAX_SMALL_BLOB + 1)
            .read_to_end(&mut buf)
            .ctx(|| format!("reading blob {d}"))?;
        let actual = Digest::of(&buf);
        if &actual != d {
            return Err(Error::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        Ok(buf)
    }

    fn ingest_dir(&self, key: &str) -> PathBuf {
        self.ingest.join(Digest::of(key.as_bytes()).hex())
    }

    /// Open (or resume) the ingest for `key`.
    ///
    /// Holds an exclusive lock on the ingest's lock file for the writer's lifetime, so a
    /// second process writing the same key blocks until the first is done. If `expected`
    /// is given and that blob exists once the lock is held (a concurrent writer won),
    /// [`Writer::already_exists`] is true, writes are discarded and `commit` just returns
    /// the digest. When the ingest already holds data (an interrupted write), the writer
    /// resumes: it rehashes the existing bytes and [`Writer::offset`] tells how many bytes
    /// to skip (for an HTTP Range request). If that is the whole expected size, nothing
    /// more needs writing before `commit`.
    pub fn writer(&self, key: &str, expected: Option<(Digest, u64)>) -> Result<Writer> {
        let dir = self.ingest_dir(key);
        let lock_path = dir.join("lock");
        let mut attempts = 0u32;
        let lock = loop {
            attempts += 1;
            fs::create_dir_all(&dir)
                .ctx(|| format!("creating ingest {} for {key:?}", dir.display()))?;
            let f = match OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock_path)
            {
                Ok(f) => f,
                // the directory was removed by a writer that just finished: retry
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 1000 => continue,
                Err(e) => return Err(Error::io(format!("opening {}", lock_path.display()), e)),
            };
            lock_exclusive(&f)
                .ctx(|| format!("locking ingest {} for {key:?}", lock_path.display()))?;
            // The holder before us may have removed the ingest dir (and its lock file)
            // while we waited: only the lock file still at the path counts.
            let ours = f
                .metadata()
                .ctx(|| format!("stat {}", lock_path.display()))?;
            match fs::metadata(&lock_path) {
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => break f,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("stat {}", lock_path.display()), e)),
            }
            if attempts >= 1000 {
                return Err(Error::io(
                    format!("locking ingest {}", lock_path.display()),
                    io::Error::other("lock file keeps being replaced"),
                ));
            }
        };
        fs::write(dir.join("key"), key)
            .ctx(|| format!("writing key of ingest {}", dir.display()))?;

        if let Some(d) = expected.as_ref().map(|(d, _)| d.clone()) {
            if self.info(&d)?.is_some() {
                return Ok(Writer {
                    blobs: self.blobs.clone(),
                    dir,
                    data: None,
                    hasher: Hasher::new(),
                    offset: 0,
                    written: 0,
                    behind: 0,
                    expected,
                    existing: Some(d),
                    _lock: lock,
                });
            }
        }

        let data_path = dir.join("data");
        let mut data = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data_path)
            .ctx(|| format!("opening {}", data_path.display()))?;
        let mut hasher = Hasher::new();
        let mut have = data
            .metadata()
            .ctx(|| format!("stat {}", data_path.display()))?
            .len();
        if matches!(&expected, Some((_, size)) if have > *size) {
            data.set_len(0)
                .ctx(|| format!("truncating {}", data_path.display()))?;
            have = 0;
        }
        if have > 0 {
            data.seek(SeekFrom::Start(0))
                .ctx(|| format!("seeking {}", data_path.display()))?;
            let n = io::copy(&mut (&data).take(have), &mut hasher)
                .ctx(|| format!("rehashing {}", data_path.display()))?;
            have = n;
        }
        data.seek(SeekFrom::Start(have))
            .ctx(|| format!("seeking {}", data_path.display()))?;
        data.set_len(have)
            .ctx(|| format!("truncating {}", data_path.display()))?;
        Ok(Writer {
            blobs: self.blobs.clone(),
            dir,
            data: Some(BufWriter::with_capacity(WRITE_BUFFER, data)),
            hasher,
            offset: have,
            written: have,
            behind: have,
            expected,
            existing: None,
            _lock: lock,
        })
    }

    /// Write, verify and commit `data` in one go.
    pub fn write_blob(&self, data: &[u8]) -> Result<Digest> {
        let d = Digest::of(data);
        if self.info(&d)? == Some(data.len() as u64) {
            return Ok(d);
        }
        let mut w = self.writer(
            &format!("write-blob-{d}"),
            Some((d.clone(), data.len() as u64)),
        )?;
        if !w.already_exists() {
            w.truncate()?;
            w.write_all(data).ctx(|| format!("writing blob {d}"))?;
        }
        w.commit()
    }

    /// Delete a blob.
    pub fn delete(&self, d: &Digest) -> Result<()> {
        match fs::remove_file(self.blob_path(d)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::BlobNotFound(d.clone())),
            Err(e) => Err(Error::io(format!("deleting blob {d}"), e)),
        }
    }

    /// All blobs with their sizes, sorted by digest.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.blobs).ctx(|| format!("listing {}", self.blobs.display()))?;
        for entry in rd {
            let entry = entry.ctx(|| format!("listing {}", self.blobs.display()))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Ok(d) = Digest::from_hex(&name) else {
                continue;
            };
            match entry.metadata() {
                Ok(m) => out.push((d, m.len())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("stat blob {d}"), e)),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Ingests in progress or interrupted: (key, bytes held).
    pub fn ingests(&self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.ingest).ctx(|| format!("listing {}", self.ingest.display()))?;
        for entry in rd {
            let entry = entry.ctx(|| format!("listing {}", self.ingest.display()))?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".removing-")
            {
                continue;
            }
            let p = entry.path();
            let key = fs::read_to_string(p.join("key")).unwrap_or_default();
            let size = fs::metadata(p.join("data")).map(|m| m.len()).unwrap_or(0);
            out.push((key, size));
        }
        out.sort();
        Ok(out)
    }

    /// Remove the ingest of `key` (waiting for any writer that holds it).
    pub fn abort_ingest(&self, key: &str) -> Result<()> {
        self.writer(key, None)?.abort()
    }
}

/// A write in progress into the content store; see [`ContentStore::writer`].
///
/// Dropping it without `commit` or `abort` keeps the ingest for a later resume.
#[derive(Debug)]
pub struct Writer {
    blobs: PathBuf,
    dir: PathBuf,
    data: Option<BufWriter<File>>,
    hasher: Hasher,
    offset: u64,
    written: u64,
    /// Bytes at the start of the file whose writeback was started (or that were there
    /// when the writer opened): [`start_writeback`] goes on from here.
    behind: u64,
    expected: Option<(Digest, u64)>,
    existing: Option<Digest>,
    _lock: File,
}

impl Writer {
    /// Bytes the ingest already held when opened: skip this many (HTTP Range).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes written so far (including resumed ones).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The expected blob was already in the store when the writer was opened
    /// (a concurrent writer won); nothing needs to be written.
    pub fn already_exists(&self) -> bool {
        self.existing.is_some()
    }

    /// Opens the ingest data for reading, to follow it while it is written (bytes
    /// reach the file on [`Write::flush`]); `None` when the blob already existed and
    /// nothing is written.
    pub fn open_data(&self) -> Result<Option<File>> {
        if self.data.is_none() {
            return Ok(None);
        }
        let p = self.dir.join("data");
        File::open(&p)
            .map(Some)
            .ctx(|| format!("opening {} to read", p.display()))
    }

    /// Discard what the ingest holds (e.g. the server ignored Range) and start from 0.
    pub fn truncate(&mut self) -> Result<()> {
        if let Some(data) = self.data.as_mut() {
            let ctx = || format!("truncating ingest {}", self.dir.display());
            data.flush().ctx(ctx)?;
            let f = data.get_mut();
            f.set_len(0).ctx(ctx)?;
            f.seek(SeekFrom::Start(0)).ctx(ctx)?;
        }
        self.hasher = Hasher::new();
        self.offset = 0;
        self.written = 0;
        self.behind = 0;
        Ok(())
    }

    /// Verify size and digest against the expectation (if given), fsync the data,
    /// rename it atomically into `blobs/` (fsync the directory), remove the ingest:
    /// [`Writer::verify`], then [`Verified::persist`].
    ///
    /// On mismatch the ingest is removed and `DigestMismatch`/`SizeMismatch` returned;
    /// nothing becomes visible. If the blob already exists, ours is dropped and the
    /// digest returned.
    pub fn commit(self) -> Result<Digest> {
        self.commit_new().map(|(d, _)| d)
    }

    /// Like [`Writer::commit`], also telling whether this call created the blob
    /// (false when it already existed).
    pub fn commit_new(self) -> Result<(Digest, bool)> {
        self.verify()?.persist()
    }

    /// The first half of [`Writer::commit`]: flush the data to the ingest file and
    /// verify size and digest against the expectation (if given).
    ///
    /// On mismatch the ingest is removed and `DigestMismatch`/`SizeMismatch` returned.
    /// Once verified, the ingest file holds exactly the blob and nothing changes it
    /// any more (the ingest lock stays held), so a reader of that file may trust its
    /// bytes from then on; the blob is not durable nor in the store before
    /// [`Verified::persist`].
    pub fn verify(mut self) -> Result<Verified> {
        if let Some(d) = self.existing.take() {
            return Ok(Verified {
                dir: self.dir,
                blobs: self.blobs,
                file: None,
                digest: d,
                _lock: self._lock,
            });
        }
        let Some(mut data) = self.data.take() else {
            return Err(Error::io(
                format!("committing ingest {}", self.dir.display()),
                io::Error::other("writer has no data file"),
            ));
        };
        if let Err(e) = data.flush() {
            return Err(Error::io(
                format!("writing ingest {}", self.dir.display()),
                e,
            ));
        }
        let hasher = std::mem::take(&mut self.hasher);
        let actual = hasher.finish();
        if let Some((expected, size)) = &self.expected {
            if self.written != *size {
                drop(data);
                remove_dir_if_present(&self.dir)?;
                return Err(Error::SizeMismatch {
                    digest: expected.clone(),
                    expected: *size,
                    actual: self.written,
                });
            }
            if &actual != expected {
                drop(data);
                remove_dir_if_present(&self.dir)?;
                return Err(Error::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        let file = data.into_inner().map_err(|e| {
            Error::io(
                format!("writing ingest {}", self.dir.display()),
                e.into_error(),
            )
        })?;
        Ok(Verified {
            dir: self.dir,
            blobs: self.blobs,
            file: Some(file),
            digest: actual,
            _lock: self._lock,
        })
    }

    /// Start the writeback of what the buffer passed on to the file since the last
    /// time, once that is [`WRITE_BEHIND`] bytes or more.
    fn write_behind(&mut self) {
        let Some(data) = self.data.as_ref() else {
            return;
        };
        let in_file = self.written - data.buffer().len() as u64;
        if in_file >= self.behind + WRITE_BEHIND {
            start_writeback(data.get_ref(), self.behind, in_file - self.behind);
            self.behind = in_file;
        }
    }

    /// Remove the ingest and its data.
    pub fn abort(mut self) -> Result<()> {
        drop(self.data.take());
        remove_dir_if_present(&self.dir)
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(data) = self.data.as_mut() else {
            // the blob already exists: discard
            return Ok(buf.len());
        };
        if let Some((d, size)) = &self.expected {
            if self.written + buf.len() as u64 > *size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("more data than the expected {size} bytes of {d}"),
                ));
            }
        }
        let n = data.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        self.write_behind();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.data.as_mut() {
            Some(d) => d.flush()?,
            None => return Ok(()),
        }
        self.write_behind();
        Ok(())
    }
}

/// A verified write ([`Writer::verify`]): the ingest file holds exactly the blob,
/// which is neither durable nor in the store yet. Dropped without
/// [`Verified::persist`], the ingest stays (a later writer rehashes and commits it).
#[derive(Debug)]
pub struct Verified {
    blobs: PathBuf,
    dir: PathBuf,
    /// The ingest data; `None` when the blob already existed.
    file: Option<File>,
    digest: Digest,
    _lock: File,
}

impl Verified {
    /// The verified digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The second half of [`Writer::commit`]: fsync the data, rename it atomically
    /// into `blobs/` (fsync the directory), remove the ingest. Tells whether this
    /// call created the blob (false when it already existed: ours is dropped).
    pub fn persist(self) -> Result<(Digest, bool)> {
        let Some(file) = self.file else {
            remove_dir_if_present(&self.dir)?;
            return Ok((self.digest, false));
        };
        file.sync_all()
            .ctx(|| format!("syncing ingest {}", self.dir.display()))?;
        drop(file);
        let target = self.blobs.join(self.digest.hex());
        let created = !target.exists();
        if created {
            let src = self.dir.join("data");
            fs::rename(&src, &target)
                .ctx(|| format!("renaming {} to {}", src.display(), target.display()))?;
            sync_dir(&self.blobs)?;
        }
        remove_dir_if_present(&self.dir)?;
        Ok((self.digest, created))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn write_read_list_delete() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cs = ContentStore::open(tmp.path()).expect("open");
        let d = cs.write_blob(b"hello").expect("write");
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(cs.info(&d).expect("info"), Some(5));
        assert_eq!(cs.read_verified(&d).expect("read"), b"hello");
        assert_eq!(cs.list().expect("list"), vec![(d.clone(), 5)]);
        // idempotent
        assert_eq!(cs.write_blob(b"hello").expect("again"), d);
        assert!(cs.ingests().expect("ingests").is_empty());
        cs.delete(&d).expect("delete");
        assert!(matches!(cs.delete(&d), Err(Error::BlobNotFound(_))));
        assert!(matches!(cs.read(&d), Err(Error::BlobNotFound(_))));
        assert_eq!(cs.info(&d).expect("info"), None);
    }

    #[test]
    fn corrupted_blob_fails_read_verified() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cs = ContentStore::open(tmp.path()).expect("open");
        let d = cs.write_blob(b"hello").expect("write");
        fs::write(cs.blob_path(&d), b"jello").expect("corrupt");
        assert!(matches!(
            cs.read_verified(&d),
            Err(Error::DigestMismatch { .. })
        ));
    }

    #[test]
    fn resume_after_interrupted_write() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cs = ContentStore::open(tmp.path()).expect("open");
        let blob = data(3 << 20);
        let d = Digest::of(&blob);
        let half = blob.len() / 2;
        {
            let mut w = cs
                .writer("layer-x", Some((d.clone(), blob.len() as u64)))
                .expect("writer");
            assert_eq!(w.offset(), 0);
            w.write_all(&blob[..half]).expect("write half");
            // dropped without commit: the ingest stays
        }
        assert_eq!(cs.info(&d).expect("info"), None);
        assert_eq!(
            cs.ingests().expect("ingests"),
            vec![("layer-x".to_string(), half as u64)]
        );
        let mut w = cs
            .writer("layer-x", Some((d.clone(), blob.len() as u64)))
            .expect("reopen");
        assert_eq!(w.offset(), half as u64);
        w.write_all(&blob[half..]).expect("write rest");
        assert_eq!(w.commit().expect("commit"), d);
        assert_eq!(cs.read_verified(&d).expect("read"), blob);
        assert!(cs.ingests().expect("ingests").is_empty());

        // truncate restarts from 0
        let other = data(1000);
        let od = Digest::of(&other);
        {
            let mut w = cs.writer("o", Some((od.clone(), 1000))).expect("w");
            w.write_all(&other[..300]).expect("write");
        }
        let mut w = cs.writer("o", Some((od.clone(), 1000))).expect("w");
        assert_eq!(w.offset(), 300);
        w.truncate().expect("truncate");
        assert_eq!(w.offset(), 0);
        w.write_all(&other).expect("write all");
        assert_eq!(w.commit().expect("commit"), od);
    }

    #[test]
    fn verify_then_persist() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cs = ContentStore::open(tmp.path()).expect("open");
        // Larger than WRITE_BEHIND, written in pieces: writeback starts on the way.
        let blob = data((WRITE_BEHIND as usize) * 2 + 12345);
        let d = Digest::of(&blob);
        let size = blob.len() as u64;
        let mut w = cs.writer("v", Some((d.clone(), size))).expect("writer");
        for chunk in blob.chunks(300_000) {
            w.write_all(chunk).expect("write");
        }
        let data_file = w.open_data().expect("open").expect("a data file");
        let v = w.verify().expect("verify");
        assert_eq!(v.digest(), &d);
        // Verified: the file holds the blob, which is not in the store yet.
        let mut got = Vec::new();
        (&data_file).read_to_end(&mut got).expect("read");
        assert!(got == blob);
        assert_eq!(cs.info(&d).expect("info"), None);
        assert_eq!(v.persist().expect("persist"), (d.clone(), true));
        assert_eq!(cs.info(&d).expect("info"), Some(size));
        assert!(cs.ingests().expect("ingests").is_empty());

        // A verified write dropped before persisting stays as an ingest to resume.
        let small = data(1000);
        let sd = Digest::of(&small);
        let mut w = cs.writer("s", Some((sd.clone(), 1000))).expect("writer");
        w.write_all(&small).expect("write");
        drop(w.verify().expect("verify"));
        assert_eq!(cs.info(&sd).expect("info"), None);
        let w = cs.writer("s", Some((sd.clone(), 1000))).expect("writer");
        assert_eq!(w.offset(), 1000);
        assert_eq!(w.commit_new().expect("commit"), (sd.clone(), true));

        // An existing blob: verify and persist just drop ours.
        let w = cs
            .writer("again", Some((sd.clone(), 1000)))
            .expect("writer");
        assert!(w.already_exists());
        assert_eq!(
            w.verify().expect("verify").persist().expect("persist"),
            (sd, false)
        );
        assert!(cs.ingests().expect("ingests").is_empty());
    }

    #[test]
    fn mismatch_leaves_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cs = ContentStore::open(tmp.path()).expect("open");
        let good = data(1000);
        let d = Digest::of(&good);
        let mut bad = good.clone();
        bad[10] ^= 1;
        let mut w = cs.writer("k", Some((d.clone(), 1000))).expect("writer");
        w.write_all(&bad).expect("write");
        match w.commit() {
            Err(Error::DigestMismatch { expected, actual }) => {
                assert_eq!(expected, d);
                assert_eq!(actual, Digest::of(&bad));
            }
            other => panic!("expected a digest mismatch, got {other:?}"),
        }
        assert!(cs.list().expect("list").is_empty());
        assert!(cs.ingests().expect("ingests").is_empty());
        assert_eq!(
            fs::read_dir(tmp.path().join("ingest")).expect("rd").count(),
            0
        );

        // truncated
        let mut w = cs.writer("k", Some((d.clone(), 1000))).expect("writer");
        w.write_all(&good[..999]).expect("write");
        assert!(matches!(
            w.commit(),
            Err(Error::SizeMismatch {
                expected: 1000,
                actual: 999,
                ..
            })
        ));
        // too long: refused while writing
        let mut w = cs.writer("k", Some((d.clone(), 1000))).expect("writer");
        assert!(w.write_all(&data(1001)).is_err());
        w.abort().expect("abort");
        assert!(cs.list().expect("list").is_empty());
        assert_eq!(
            fs::read_dir(tmp.path().join("ingest")).expect("rd").count(),
            0
        );
    }

    #[test]
    fn concurrent_writers_same_blob() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let blob = std::sync::Arc::new(data(2 << 20));
        let d = Digest::of(&blob);
        let mut handles = Vec::new();
        for i in 0..8 {
            let root = tmp.path().to_path_buf();
            let blob = blob.clone();
            let d = d.clone();
            handles.push(std::thread::spawn(move || -> Result<Digest> {
                // separate store instances: separate open file descriptions, like processes
                let cs = ContentStore::open(&root)?;
                // half of them use the same key (serialised by the lock), half their own
                let key = if i % 2 == 0 {
                    "shared".to_string()
                } else {
                    format!("own-{i}")
                };
                let mut w = cs.writer(&key, Some((d.clone(), blob.len() as u64)))?;
                if w.offset() > 0 {
                    w.truncate()?;
                }
                for chunk in blob.chunks(64 * 1024) {
                    w.write_all(chunk).ctx(|| "write".to_string())?;
                    std::thread::yield_now();
                }
                w.commit()
            }));
        }
        for h in handles {
            assert_eq!(h.join().expect("thread").expect("commit"), d);
        }
        let cs = ContentStore::open(tmp.path()).expect("open");
        assert_eq!(
            cs.list().expect("list"),
            vec![(d.clone(), blob.len() as u64)]
        );
        assert_eq!(cs.read_verified(&d).expect("verified").len(), blob.len());
        assert_eq!(
            fs::read_dir(tmp.path().join("blobs/sha256"))
                .expect("rd")
                .count(),
            1
        );
        assert!(cs.ingests().expect("ingests").is_empty());
    }

    #[test]
    fn second_writer_waits_then_sees_blob() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cs = ContentStore::open(tmp.path()).expect("open");
        let blob = data(5000);
        let d = Digest::of(&blob);
        let mut w1 = cs.writer("k", Some((d.clone(), 5000))).expect("w1");
        let (tx, rx) = std::sync::mpsc::channel();
        let root = tmp.path().to_path_buf();
        let d2 = d.clone();
        let t = std::thread::spawn(move || {
            let cs2 = ContentStore::open(&root).expect("open");
            let w2 = cs2.writer("k", Some((d2, 5000))).expect("w2");
            tx.send(()).expect("send");
            (w2.already_exists(), w2.commit().expect("commit"))
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            rx.try_recv().is_err(),
            "second writer must block while the first holds the lock"
        );
        w1.write_all(&blob).expect("write");
        w1.commit().expect("commit");
        let (existed, got) = t.join().expect("join");
        assert!(existed);
        assert_eq!(got, d);
        assert!(cs.ingests().expect("ingests").is_empty());
    }
}
