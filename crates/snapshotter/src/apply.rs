//! Safe unpacking of untrusted layer tars into a directory.
//!
//! The `tar` crate only *reads* entries here. Every write is made relative to a
//! directory fd obtained with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)` from the root, and the final component is
//! created with `*at` calls that never follow a symlink. See `docs/snapshotter.md`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, makedev, mkdirat, mknodat, utimensat, FchmodatFlags, Mode,
    SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{
    fchown, fchownat, getegid, geteuid, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags,
};
use sha2::{Digest, Sha256};
use tar::EntryType;

use crate::error::{Error, Result};
use crate::fsutil::{
    fd_path, fhas_xattr, fsetxattr, join, lsetxattr, normalize, remove_all_at, PATH_MAX,
};

/// The OCI whiteout prefix.
pub(crate) const WH_PREFIX: &[u8] = b".wh.";
/// The OCI opaque-directory marker.
pub(crate) const WH_OPAQUE: &[u8] = b".wh..wh..opq";
/// Overlay's opaque-directory xattr.
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Size of the buffer file data is copied through.
const COPY_BUFFER: usize = 256 << 10;
/// Size of the buffer a layer stream from a file or pipe is best read through.
const READ_BUFFER: usize = 256 << 10;
/// At most this many skipped xattrs are listed in [`ApplyStats::skipped_xattrs`].
const MAX_LISTED_SKIPS: usize = 64;

/// What [`apply_layer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Size of the uncompressed tar stream in bytes.
    pub size: u64,
    /// `sha256:<hex>` of the uncompressed tar stream: the layer's diff id.
    pub digest: String,
    /// Number of tar entries processed.
    pub entries: u64,
    /// Xattrs that were not applied because they are not on the allow list
    /// (`"<path>: <name>"`, at most 64 listed).
    pub skipped_xattrs: Vec<String>,
    /// Total number of skipped xattrs.
    pub skipped_xattrs_total: u64,
}

/// Xattrs a layer may set: file capabilities, ACLs and the `user.` namespace.
/// `trusted.*` (overlay's own, among others) and other `security.*` are skipped.
pub(crate) fn xattr_allowed(name: &str) -> bool {
    name.starts_with("user.")
        || name == "security.capability"
        || name == "system.posix_acl_access"
        || name == "system.posix_acl_default"
}

/// Counts and hashes what is read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.hasher.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
}

/// `r` behind a read buffer of the size [`apply_layer`] reads a layer from a file or
/// pipe best with (an 8 KiB `BufReader` would cost 32 times the reads).
pub fn buffered<R: Read>(r: R) -> BufReader<R> {
    BufReader::with_capacity(READ_BUFFER, r)
}

/// Wraps `r` in the decompressor its first bytes call for (gzip, zstd or none),
/// reading straight from `r`'s buffer.
fn decompress<'a>(mut r: impl BufRead + 'a) -> Result<Box<dyn Read + 'a>> {
    let layer_err = |source| Error::Layer {
        entry: None,
        source,
    };
    let peeked = loop {
        match r.fill_buf() {
            Ok(b) => break b.len(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(layer_err(e)),
        }
    };
    let (magic, input): (Vec<u8>, Box<dyn BufRead + 'a>) = if peeked >= 6 {
        // The usual case: the magic is in the buffer, nothing is consumed.
        let m = r.fill_buf().map_err(layer_err)?[..6].to_vec();
        (m, Box::new(r))
    } else {
        // A short first read: collect the magic, then put it back in front.
        let mut m = [0u8; 6];
        let mut n = 0;
        while n < m.len() {
            match r.read(&mut m[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(layer_err(e)),
            }
        }
        let m = m[..n].to_vec();
        (m.clone(), Box::new(Cursor::new(m).chain(r)))
    };
    let m = magic.as_slice();
    if m.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(input)))
    } else if m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let d = zstd::stream::read::Decoder::with_buffer(input).map_err(layer_err)?;
        Ok(Box::new(d))
    } else if m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) || m.starts_with(b"BZh") {
        Err(layer_err(io::Error::new(
            io::ErrorKind::InvalidData,
            "xz and bzip2 layers are not supported (OCI layers are tar, tar+gzip or tar+zstd)",
        )))
    } else {
        Ok(Box::new(input))
    }
}

/// Unpacks the layer tar `layer` (gzip, zstd or plain, detected from its first bytes)
/// into `dir`, converting OCI whiteouts to overlay whiteouts. The decompressor reads
/// straight from `layer`'s buffer: give a file or pipe through [`buffered`].
///
/// The safety rule (also in `docs/snapshotter.md`):
/// * paths are normalized lexically: a leading `/` is dropped (absolute paths are
///   confined to `dir`), `.` is dropped, `..` removes the previous component, and a `..`
///   that would climb above `dir` refuses the layer; paths over PATH_MAX, names over
///   NAME_MAX and NUL bytes are refused;
/// * the parent directory of every entry is opened from `dir` with
///   `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
///   RESOLVE_NO_XDEV)`: a parent path that goes through a symlink (planted by this
///   layer or already in `dir`) refuses the layer, symlinks are never followed;
///   missing parents are created (0755, root) like Docker does;
/// * the entry itself is created with `*at` calls on that fd, never following a final
///   symlink; an existing entry of another type is removed first (a directory over a
///   directory merges);
/// * hardlink targets follow the same rules, must already exist inside `dir` and are
///   linked without following a symlink (a hardlink to a symlink is another name of
///   that symlink);
/// * GNU sparse entries, unknown entry types and a regular file whose data ends before
///   its declared size refuse the layer (a partial file is removed).
///
/// On error the directory is left partially unpacked: remove the snapshot.
pub fn apply_layer(dir: &Path, layer: impl BufRead) -> Result<ApplyStats> {
    let root = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open layer root", dir, e.into()))?;
    let reader = Hashing {
        inner: decompress(layer)?,
        hasher: Sha256::new(),
        n: 0,
    };
    let mut archive = tar::Archive::new(reader);
    let mut x = Extractor {
        root,
        dirs: Vec::new(),
        skipped: Vec::new(),
        skipped_total: 0,
        entries: 0,
        buf: vec![0u8; COPY_BUFFER],
        parent: None,
        umask: process_umask(),
    };
    {
        let mut last = None::<String>;
        let entries = archive.entries().map_err(|e| Error::Layer {
            entry: None,
            source: e,
        })?;
        for e in entries {
            let mut e = e.map_err(|e| Error::Layer {
                entry: last.as_ref().map(|l| format!("after {l}")),
                source: e,
            })?;
            last = Some(String::from_utf8_lossy(&e.path_bytes()).into_owned());
            x.entry(&mut e)?;
            x.entries += 1;
        }
    }
    x.finish_dirs()?;
    // Hash the end-of-archive blocks and padding too: the diff id covers the stream.
    let mut inner = archive.into_inner();
    io::copy(&mut inner, &mut io::sink()).map_err(|e| Error::Layer {
        entry: None,
        source: e,
    })?;
    let digest = format!("sha256:{}", hex(&inner.hasher.finalize()));
    Ok(ApplyStats {
        size: inner.n,
        digest,
        entries: x.entries,
        skipped_xattrs: x.skipped,
        skipped_xattrs_total: x.skipped_total,
    })
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Metadata of one entry, PAX overrides applied.
struct Meta {
    uid: Uid,
    gid: Gid,
    mode: Mode,
    mtime: TimeSpec,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Extractor {
    root: OwnedFd,
    /// Directories whose mtime is set at the end (children change it meanwhile).
    dirs: Vec<(Vec<Vec<u8>>, TimeSpec)>,
    skipped: Vec<String>,
    skipped_total: u64,
    entries: u64,
    /// The buffer file data is copied through, reused for every file.
    buf: Vec<u8>,
    /// The directory of the last regular file, reused while the next ones are in it.
    parent: Option<Parent>,
    /// The process umask, when known: it decides whether a new file needs a chmod.
    umask: Option<u32>,
}

/// A directory kept open between consecutive regular files in it (tars list a
/// directory's files together), with what a file created in it gets unasked, so a
/// file that wants just that needs no fchown or fchmod.
struct Parent {
    comps: Vec<Vec<u8>>,
    fd: OwnedFd,
    /// Owner of a new file: the creator's user, and the directory's group when the
    /// directory is set-group-ID, else the creator's group.
    owner: (Uid, Gid),
    /// A new file gets its mode less the umask (no default ACL on the directory
    /// decides it instead).
    umasked: bool,
}

/// The process umask, from `/proc/self/status` (reading it with umask(2) would
/// change it for a moment under the other threads).
fn process_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let v = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(v.trim(), 8).ok()
}

fn how() -> OpenHow {
    OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_IN_ROOT
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        )
}

fn is_dir(mode: u32) -> bool {
    SFlag::from_bits_truncate(mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

impl Extractor {
    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = e.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let refuse = |reason: String| Error::UnsafeEntry {
            entry: name.clone(),
            reason,
        };
        let layer = |source: io::Error| Error::Layer {
            entry: Some(name.clone()),
            source,
        };
        let hdr = e.header().clone();
        let et = hdr.entry_type();
        if et.is_pax_global_extensions() {
            return Ok(());
        }
        if et.is_gnu_sparse() {
            return Err(refuse(
                "GNU sparse entries are not supported in layers".into(),
            ));
        }

        let mut xattrs = Vec::new();
        let (mut uid, mut gid, mut mtime) = (None, None, None);
        if let Some(exts) = e.pax_extensions().map_err(layer)? {
            for ext in exts {
                let ext = ext.map_err(layer)?;
                let k = ext.key_bytes();
                let num = || -> Option<i64> {
                    let v = std::str::from_utf8(ext.value_bytes()).ok()?;
                    v.split('.').next()?.parse().ok()
                };
                if let Some(n) = k.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((
                        String::from_utf8_lossy(n).into_owned(),
                        ext.value_bytes().to_vec(),
                    ));
                } else if k.starts_with(b"GNU.sparse.") {
                    return Err(refuse(
                        "GNU sparse files (PAX format) are not supported in layers".into(),
                    ));
                } else if k == b"uid" {
                    uid = Some(num().ok_or_else(|| refuse("bad PAX uid".into()))?);
                } else if k == b"gid" {
                    gid = Some(num().ok_or_else(|| refuse("bad PAX gid".into()))?);
                } else if k == b"mtime" {
                    mtime = Some(num().ok_or_else(|| refuse("bad PAX mtime".into()))?);
                }
            }
        }
        let id = |v: Option<i64>, h: io::Result<u64>, what: &str| -> Result<u32> {
            let v = match v {
                Some(v) => v,
                None => i64::try_from(h.map_err(layer)?).unwrap_or(-1),
            };
            u32::try_from(v).map_err(|_| refuse(format!("{what} {v} out of range")))
        };
        let meta = Meta {
            uid: Uid::from_raw(id(uid, hdr.uid(), "uid")?),
            gid: Gid::from_raw(id(gid, hdr.gid(), "gid")?),
            mode: Mode::from_bits_truncate(hdr.mode().map_err(layer)? & 0o7777),
            mtime: TimeSpec::new(
                match mtime {
                    Some(m) => m,
                    None => i64::try_from(hdr.mtime().map_err(layer)?).unwrap_or(i64::MAX),
                },
                0,
            ),
            xattrs,
        };

        let comps = normalize(&raw).map_err(refuse)?;
        let Some((last, parent_c)) = comps.split_last() else {
            // The root itself ("./"): only a directory may describe it.
            if et.is_dir() {
                let fd = openat(
                    self.root.as_fd(),
                    ".",
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(self.ex(&name, "open root"))?;
                self.set_fd_meta(fd.as_fd(), &meta, &name)?;
                self.dirs.push((Vec::new(), meta.mtime));
                return Ok(());
            }
            return Err(refuse("entry names the root but is not a directory".into()));
        };

        // This entry may replace or change the kept directory or one above it.
        if self
            .parent
            .as_ref()
            .is_some_and(|p| p.comps.starts_with(&comps))
        {
            self.parent = None;
        }
        if last.starts_with(WH_PREFIX) {
            self.parent = None;
            return self.whiteout(parent_c, last, &meta, &name);
        }
        if matches!(et, EntryType::Regular | EntryType::Continuous) {
            let parent = match self.parent.take() {
                Some(p) if p.comps == parent_c => p,
                _ => self.open_parent(parent_c, &name)?,
            };
            let r = self.regular(e, &parent, last, &meta, &name);
            self.parent = Some(parent);
            return r;
        }
        let parent = self.open_dir(parent_c, true, &name)?;
        let p = parent.as_fd();
        match et {
            EntryType::Directory => {
                let existed = self.clear(p, last, true, &name)?;
                if !existed {
                    mkdirat(p, last.as_slice(), Mode::from_bits_truncate(0o700))
                        .map_err(self.ex(&name, "mkdirat"))?;
                }
                let fd =
                    openat2(p, last.as_slice(), how()).map_err(|e| self.resolve_err(e, &name))?;
                self.set_fd_meta(fd.as_fd(), &meta, &name)?;
                self.dirs.push((comps.clone(), meta.mtime));
            }
            EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| refuse("symlink without a target".into()))?;
                if target.len() > PATH_MAX || target.contains(&0) {
                    return Err(refuse(
                        "symlink target longer than PATH_MAX or containing NUL".into(),
                    ));
                }
                self.clear(p, last, false, &name)?;
                symlinkat(std::ffi::OsStr::from_bytes(&target), p, last.as_slice())
                    .map_err(self.ex(&name, "symlinkat"))?;
                self.set_at_meta(p, last, &meta, &name, false)?;
            }
            EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .ok_or_else(|| refuse("hardlink without a target".into()))?;
                let tshow = String::from_utf8_lossy(&target).into_owned();
                let tcomps = normalize(&target)
                    .map_err(|r| refuse(format!("hardlink target {tshow:?}: {r}")))?;
                let Some((tlast, tparent_c)) = tcomps.split_last() else {
                    return Err(refuse("hardlink to the root".into()));
                };
                let tparent = match self.open_dir(tparent_c, false, &name) {
                    Ok(fd) => fd,
                    Err(Error::Extract {
                        source: Errno::ENOENT,
                        ..
                    }) => {
                        return Err(refuse(format!(
                            "hardlink target {tshow:?} does not exist inside the layer root"
                        )))
                    }
                    Err(Error::UnsafeEntry { reason, .. }) => {
                        return Err(refuse(format!("hardlink target {tshow:?}: {reason}")))
                    }
                    Err(e) => return Err(e),
                };
                let tst = match fstatat(
                    tparent.as_fd(),
                    tlast.as_slice(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                ) {
                    Ok(st) => st,
                    Err(Errno::ENOENT) => {
                        return Err(refuse(format!(
                            "hardlink target {tshow:?} does not exist inside the layer root"
                        )))
                    }
                    Err(e) => return Err(self.ex(&name, "fstatat hardlink target")(e)),
                };
                if is_dir(tst.st_mode) {
                    return Err(refuse(format!("hardlink target {tshow:?} is a directory")));
                }
                if let Ok(cur) = fstatat(p, last.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    if cur.st_dev == tst.st_dev && cur.st_ino == tst.st_ino {
                        return Ok(());
                    }
                }
                self.clear(p, last, false, &name)?;
                // No AT_SYMLINK_FOLLOW: a symlink target is linked itself, not followed.
                linkat(
                    tparent.as_fd(),
                    tlast.as_slice(),
                    p,
                    last.as_slice(),
                    AtFlags::empty(),
                )
                .map_err(self.ex(&name, "linkat"))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let kind = match et {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = hdr.device_major().map_err(layer)?.unwrap_or(0);
                let minor = hdr.device_minor().map_err(layer)?.unwrap_or(0);
                self.clear(p, last, false, &name)?;
                mknodat(
                    p,
                    last.as_slice(),
                    kind,
                    Mode::from_bits_truncate(0o600),
                    makedev(major.into(), minor.into()),
                )
                .map_err(self.ex(&name, "mknodat"))?;
                self.set_at_meta(p, last, &meta, &name, true)?;
            }
            other => {
                return Err(refuse(format!(
                    "unsupported tar entry type {:?}",
                    other.as_byte() as char
                )));
            }
        }
        Ok(())
    }

    /// Creates the regular file `last` in `parent` with the entry's data and metadata.
    fn regular<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        parent: &Parent,
        last: &[u8],
        meta: &Meta,
        name: &str,
    ) -> Result<()> {
        let p = parent.fd.as_fd();
        // Created with its mode when the kernel gives exactly that (no special bits,
        // none masked by the umask, no default ACL): then no fchmod.
        let mode = meta.mode.bits();
        let created_as_is =
            mode & 0o7000 == 0 && parent.umasked && self.umask.is_some_and(|u| mode & u == 0);
        let create_mode = if created_as_is {
            meta.mode
        } else {
            Mode::from_bits_truncate(0o600)
        };
        let create = || {
            openat(
                p,
                last,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                create_mode,
            )
        };
        // Mostly a new name: create first, clear what is there only if that fails
        // (saves a stat per file).
        let fd = match create() {
            Err(Errno::EEXIST) => {
                self.clear(p, last, false, name)?;
                create()
            }
            r => r,
        }
        .map_err(self.ex(name, "create file"))?;
        let mut f = File::from(fd);
        let declared = e.size();
        let r = match copy_exact(e, &mut f, declared, &mut self.buf) {
            Ok(got) if got == declared => Ok(()),
            Ok(got) => Err(Error::Truncated {
                entry: name.to_string(),
                declared,
                got,
            }),
            Err(CopyErr::Read(source)) => Err(Error::Layer {
                entry: Some(name.to_string()),
                source,
            }),
            Err(CopyErr::Write(source)) => Err(Error::io("write extracted file", name, source)),
        };
        if let Err(err) = r {
            drop(f);
            let _ = unlinkat(p, last, UnlinkatFlags::NoRemoveDir);
            return Err(err);
        }
        let chown = (meta.uid, meta.gid) != parent.owner;
        self.set_fd_meta_as(f.as_fd(), meta, name, chown, !created_as_is)?;
        futimens(f.as_fd(), &meta.mtime, &meta.mtime).map_err(self.ex(name, "futimens"))
    }

    /// Opens the directory `comps` (see [`Extractor::open_dir`]) to keep for the
    /// regular files in it.
    fn open_parent(&self, comps: &[Vec<u8>], name: &str) -> Result<Parent> {
        let fd = self.open_dir(comps, true, name)?;
        let st = nix::sys::stat::fstat(fd.as_fd()).map_err(self.ex(name, "fstat parent"))?;
        let gid = if st.st_mode & libc::S_ISGID != 0 {
            Gid::from_raw(st.st_gid)
        } else {
            getegid()
        };
        // An error reading the ACL: assume one, so every file gets its chmod.
        let umasked = !fhas_xattr(fd.as_fd(), "system.posix_acl_default").unwrap_or(true);
        Ok(Parent {
            comps: comps.to_vec(),
            fd,
            owner: (geteuid(), gid),
            umasked,
        })
    }

    fn ex<'a>(&self, name: &'a str, op: &'static str) -> impl Fn(Errno) -> Error + 'a {
        move |source| Error::Extract {
            entry: name.to_string(),
            op,
            source,
        }
    }

    fn resolve_err(&self, e: Errno, name: &str) -> Error {
        let reason = match e {
            Errno::ELOOP => "a parent path component is a symlink; symlinks are never followed during extraction",
            Errno::ENOTDIR => "a parent path component is not a directory",
            Errno::EXDEV => "the path crosses a mount point",
            Errno::EAGAIN => "the path changed during resolution",
            _ => return Error::Extract { entry: name.to_string(), op: "openat2", source: e },
        };
        Error::UnsafeEntry {
            entry: name.to_string(),
            reason: reason.into(),
        }
    }

    /// Opens the directory `comps` inside the root, creating missing components (0755)
    /// when `create` is set. Never follows a symlink, never leaves the root.
    fn open_dir(&self, comps: &[Vec<u8>], create: bool, name: &str) -> Result<OwnedFd> {
        match openat2(self.root.as_fd(), join(comps).as_slice(), how()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) if create => {}
            Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => return Err(self.diagnose(comps, e, name)),
            Err(e) => return Err(self.resolve_err(e, name)),
        }
        let mut cur =
            openat2(self.root.as_fd(), ".", how()).map_err(|e| self.resolve_err(e, name))?;
        for c in comps {
            let next = match openat2(cur.as_fd(), c.as_slice(), how()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    match mkdirat(cur.as_fd(), c.as_slice(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(self.ex(name, "mkdirat parent")(e)),
                    }
                    openat2(cur.as_fd(), c.as_slice(), how())
                        .map_err(|e| self.resolve_err(e, name))?
                }
                Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                    return Err(self.diagnose(comps, e, name))
                }
                Err(e) => return Err(self.resolve_err(e, name)),
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Names the parent component that made resolution fail (a symlink or a
    /// non-directory), for a clear error.
    fn diagnose(&self, comps: &[Vec<u8>], e: Errno, name: &str) -> Error {
        for i in 0..comps.len() {
            let Some((last, parent)) = comps[..=i].split_last() else {
                break;
            };
            let Ok(pfd) = openat2(self.root.as_fd(), join(parent).as_slice(), how()) else {
                break;
            };
            let Ok(st) = fstatat(pfd.as_fd(), last.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                break;
            };
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            let shown = String::from_utf8_lossy(&join(&comps[..=i])).into_owned();
            if kind == SFlag::S_IFLNK {
                return Error::UnsafeEntry {
                    entry: name.to_string(),
                    reason: format!("parent {shown:?} is a symlink; symlinks are never followed during extraction"),
                };
            }
            if kind != SFlag::S_IFDIR {
                return Error::UnsafeEntry {
                    entry: name.to_string(),
                    reason: format!("parent {shown:?} is not a directory"),
                };
            }
        }
        self.resolve_err(e, name)
    }

    /// Removes whatever is at `name` in `dir` unless both it and the new entry are
    /// directories; returns whether an existing directory is kept.
    fn clear(&self, dir: BorrowedFd<'_>, name: &[u8], want_dir: bool, entry: &str) -> Result<bool> {
        match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(self.ex(entry, "fstatat")(e)),
            Ok(st) if want_dir && is_dir(st.st_mode) => Ok(true),
            Ok(_) => {
                remove_all_at(dir, name).map_err(self.ex(entry, "remove existing path"))?;
                Ok(false)
            }
        }
    }

    fn skip_xattr(&mut self, entry: &str, name: &str) {
        self.skipped_total += 1;
        if self.skipped.len() < MAX_LISTED_SKIPS {
            self.skipped.push(format!("{entry}: {name}"));
        }
    }

    /// Owner, mode (after chown, which clears setuid/setgid) and xattrs (after chown,
    /// which clears file capabilities) on an open file or directory.
    fn set_fd_meta(&mut self, fd: BorrowedFd<'_>, m: &Meta, name: &str) -> Result<()> {
        self.set_fd_meta_as(fd, m, name, true, true)
    }

    /// [`Extractor::set_fd_meta`], leaving out the chown or chmod a new file does
    /// not need (it already has that owner or mode).
    fn set_fd_meta_as(
        &mut self,
        fd: BorrowedFd<'_>,
        m: &Meta,
        name: &str,
        chown: bool,
        chmod: bool,
    ) -> Result<()> {
        if chown {
            fchown(fd, Some(m.uid), Some(m.gid)).map_err(self.ex(name, "fchown"))?;
        }
        if chmod {
            fchmod(fd, m.mode).map_err(self.ex(name, "fchmod"))?;
        }
        for (k, v) in &m.xattrs {
            if !xattr_allowed(k) {
                self.skip_xattr(name, k);
                continue;
            }
            fsetxattr(fd, k, v).map_err(self.ex(name, "fsetxattr"))?;
        }
        Ok(())
    }

    /// Owner, mode, xattrs and times on `name` in `dir` without opening it (symlinks,
    /// devices, fifos, whiteouts).
    fn set_at_meta(
        &mut self,
        dir: BorrowedFd<'_>,
        last: &[u8],
        m: &Meta,
        name: &str,
        chmod: bool,
    ) -> Result<()> {
        fchownat(
            dir,
            last,
            Some(m.uid),
            Some(m.gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(self.ex(name, "fchownat"))?;
        if chmod {
            // Not a symlink: it was just created by mknodat in a directory only we write.
            fchmodat(dir, last, m.mode, FchmodatFlags::FollowSymlink)
                .map_err(self.ex(name, "fchmodat"))?;
        }
        for (k, v) in &m.xattrs {
            if !xattr_allowed(k) {
                self.skip_xattr(name, k);
                continue;
            }
            let p = fd_path(dir, last).map_err(self.ex(name, "xattr path"))?;
            match lsetxattr(&p, k, v) {
                Ok(()) => {}
                // user.* xattrs are not permitted on symlinks and special files.
                Err(Errno::EPERM) | Err(Errno::ENOTSUP) => self.skip_xattr(name, k),
                Err(e) => return Err(self.ex(name, "lsetxattr")(e)),
            }
        }
        utimensat(
            dir,
            last,
            &m.mtime,
            &m.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(self.ex(name, "utimensat"))?;
        Ok(())
    }

    fn whiteout(&mut self, parent_c: &[Vec<u8>], last: &[u8], m: &Meta, name: &str) -> Result<()> {
        let parent = self.open_dir(parent_c, true, name)?;
        let p = parent.as_fd();
        if last == WH_OPAQUE {
            return fsetxattr(p, OPAQUE_XATTR, b"y").map_err(self.ex(name, "set opaque xattr"));
        }
        if last.starts_with(b".wh..wh.") {
            // Other AUFS metadata (.wh..wh.plnk etc.): ignored, as Docker does.
            return Ok(());
        }
        let victim = &last[WH_PREFIX.len()..];
        if victim.is_empty() || victim == b"." || victim == b".." {
            return Err(Error::UnsafeEntry {
                entry: name.to_string(),
                reason: "whiteout of an invalid name".into(),
            });
        }
        remove_all_at(p, victim).map_err(self.ex(name, "remove whited-out path"))?;
        mknodat(p, victim, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
            .map_err(self.ex(name, "mknodat whiteout"))?;
        // Mode 0 like the whiteouts overlay itself creates; owner and mtime from the header.
        let m = Meta {
            uid: m.uid,
            gid: m.gid,
            mode: Mode::empty(),
            mtime: m.mtime,
            xattrs: Vec::new(),
        };
        self.set_at_meta(p, victim, &m, name, true)
    }

    /// Sets directory mtimes last, deepest entries first.
    fn finish_dirs(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for (comps, mtime) in dirs.iter().rev() {
            let name = String::from_utf8_lossy(&join(comps)).into_owned();
            let (parent, last): (OwnedFd, &[u8]) = match comps.split_last() {
                None => (
                    openat(
                        self.root.as_fd(),
                        ".",
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(self.ex(&name, "open root"))?,
                    b".",
                ),
                Some((last, parent_c)) => match self.open_dir(parent_c, false, &name) {
                    Ok(fd) => (fd, last.as_slice()),
                    // Replaced by a later entry: nothing to do.
                    Err(_) => continue,
                },
            };
            match fstatat(parent.as_fd(), last, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if is_dir(st.st_mode) => {}
                _ => continue,
            }
            utimensat(
                parent.as_fd(),
                last,
                mtime,
                mtime,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(self.ex(&name, "utimensat"))?;
        }
        Ok(())
    }
}

enum CopyErr {
    Read(io::Error),
    Write(io::Error),
}

/// Copies at most `limit` bytes, telling read errors from write errors.
fn copy_exact(
    r: &mut impl Read,
    w: &mut File,
    limit: u64,
    buf: &mut [u8],
) -> std::result::Result<u64, CopyErr> {
    let mut done = 0u64;
    while done < limit {
        let want = usize::try_from((limit - done).min(buf.len() as u64)).unwrap_or(buf.len());
        let k = match r.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyErr::Read(e)),
        };
        w.write_all(&buf[..k]).map_err(CopyErr::Write)?;
        done += k as u64;
    }
    Ok(done)
}
