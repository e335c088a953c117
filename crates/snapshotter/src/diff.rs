//! Upper dir -> deterministic OCI layer tar.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use crate::apply::{hex, xattr_allowed, OPAQUE_XATTR, WH_OPAQUE, WH_PREFIX};
use crate::error::{Error, Result};
use crate::fsutil::{lgetxattr, llistxattr, pinned_dir};

/// What [`diff_dir`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffStats {
    /// `sha256:<hex>` of the tar written: the new layer's diff id.
    pub digest: String,
    /// Bytes written.
    pub size: u64,
}

/// Largest value of an 8-byte octal ustar field.
const MAX_OCTAL_8: u64 = 0o7_777_777;
/// Largest value of a 12-byte octal ustar field.
const MAX_OCTAL_12: u64 = 0o77_777_777_777;

struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    n: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.hasher.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the overlay upper dir `upper` as an uncompressed OCI layer tar to `out`.
///
/// * overlay whiteouts (0/0 character devices) become `.wh.NAME` entries, opaque
///   directories (`trusted.overlay.opaque=y`) get a `DIR/.wh..wh..opq` entry right after
///   the directory's own entry;
/// * deterministic: entries in depth-first order with the names of each directory sorted
///   bytewise; ustar headers with numeric uid/gid, no user/group names, mtime in whole
///   seconds as on disk, no atime/ctime; a PAX header only when a value does not fit
///   ustar (long path or link target, large ids, size or mtime) or for xattrs (the ones
///   [`crate::apply_layer`] accepts); hard links (same inode) become link entries to the
///   first name in that order. The same tree gives the same bytes, hence the same digest;
/// * an upper dir with overlay redirects or metacopy (not self-contained) is refused;
///   sockets are skipped.
pub fn diff_dir(upper: &Path, out: impl Write) -> Result<DiffStats> {
    diff_dir_skipping(upper, out, &[])
}

/// [`diff_dir`] leaving out the mount points in `skip` (paths in the
/// container, as `/etc/hosts`) where they are empty regular files: the files
/// a runtime creates to bind something over, which are not the container's
/// changes.
pub fn diff_dir_skipping(upper: &Path, out: impl Write, skip: &[&Path]) -> Result<DiffStats> {
    let skip: Vec<Vec<u8>> = skip.iter().map(|p| relative(p)).collect();
    let mut w = Hashing {
        inner: out,
        hasher: Sha256::new(),
        n: 0,
    };
    let mut links = HashMap::new();
    walk(upper, b"", &mut w, &mut links, &skip)?;
    w.write_all(&[0u8; 1024])
        .map_err(|e| Error::io("write layer tar", upper, e))?;
    w.flush()
        .map_err(|e| Error::io("write layer tar", upper, e))?;
    Ok(DiffStats {
        digest: format!("sha256:{}", hex(&w.hasher.finalize())),
        size: w.n,
    })
}

fn walk<W: Write>(
    dir: &Path,
    rel: &[u8],
    w: &mut W,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
    skip: &[Vec<u8>],
) -> Result<()> {
    let (_pin, pinned) = pinned_dir(dir).map_err(|e| Error::io("open dir", dir, e))?;
    let dir = pinned.as_path();
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .map_err(|e| Error::io("read dir", dir, e))?
        .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
        .collect::<io::Result<_>>()
        .map_err(|e| Error::io("read dir", dir, e))?;
    names.sort();
    let werr = |e| Error::io("write layer tar", dir, e);
    for name in names {
        let path = dir.join(std::ffi::OsStr::from_bytes(&name));
        let mut relp = rel.to_vec();
        relp.extend_from_slice(&name);
        let md = std::fs::symlink_metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        let ft = md.file_type();
        if ft.is_file() && md.len() == 0 && skip.contains(&relp) {
            continue;
        }
        let xattrs = read_xattrs(&path)?;
        if ft.is_char_device() && md.rdev() == 0 {
            let mut wh = rel.to_vec();
            wh.extend_from_slice(WH_PREFIX);
            wh.extend_from_slice(&name);
            let h = EntryHeader::new(&wh, EntryType::Regular, &md);
            h.write(w, io::empty(), 0).map_err(werr)?;
        } else if ft.is_dir() {
            let mut d = relp.clone();
            d.push(b'/');
            EntryHeader {
                xattrs: xattrs.kept,
                ..EntryHeader::new(&d, EntryType::Directory, &md)
            }
            .write(w, io::empty(), 0)
            .map_err(werr)?;
            if xattrs.opaque {
                let mut o = d.clone();
                o.extend_from_slice(WH_OPAQUE);
                EntryHeader {
                    mtime: 0,
                    ..EntryHeader::new(&o, EntryType::Regular, &md)
                }
                .write(w, io::empty(), 0)
                .map_err(werr)?;
            }
            walk(&path, &d, w, links, skip)?;
        } else if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = links.get(&(md.dev(), md.ino())) {
                    let h = EntryHeader {
                        link: Some(first.clone()),
                        ..EntryHeader::new(&relp, EntryType::Link, &md)
                    };
                    h.write(w, io::empty(), 0).map_err(werr)?;
                    continue;
                }
                links.insert((md.dev(), md.ino()), relp.clone());
            }
            let f = File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| Error::io("open", &path, e))?;
            let h = EntryHeader {
                xattrs: xattrs.kept,
                ..EntryHeader::new(&relp, EntryType::Regular, &md)
            };
            h.write(w, f, md.size())
                .map_err(|e| Error::io("archive file", &path, e))?;
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&path).map_err(|e| Error::io("readlink", &path, e))?;
            let h = EntryHeader {
                link: Some(t.as_os_str().as_bytes().to_vec()),
                xattrs: xattrs.kept,
                ..EntryHeader::new(&relp, EntryType::Symlink, &md)
            };
            h.write(w, io::empty(), 0).map_err(werr)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let typ = if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            };
            let h = EntryHeader {
                xattrs: xattrs.kept,
                ..EntryHeader::new(&relp, typ, &md)
            };
            h.write(w, io::empty(), 0).map_err(werr)?;
        }
        // Sockets are not part of layers (as in Docker).
    }
    Ok(())
}

/// `/etc/hosts` -> `etc/hosts`.
pub(crate) fn relative(path: &Path) -> Vec<u8> {
    let bytes = path.as_os_str().as_bytes();
    let start = bytes.iter().take_while(|&&b| b == b'/').count();
    bytes[start..].to_vec()
}

struct Xattrs {
    kept: Vec<(String, Vec<u8>)>,
    opaque: bool,
}

fn read_xattrs(path: &Path) -> Result<Xattrs> {
    let xerr = |e: nix::Error| Error::io("read xattrs", path, e.into());
    let mut names = llistxattr(path).map_err(xerr)?;
    names.sort();
    let mut x = Xattrs {
        kept: Vec::new(),
        opaque: false,
    };
    for n in names {
        if n == "trusted.overlay.redirect" || n == "trusted.overlay.metacopy" {
            return Err(Error::Diff {
                path: path.to_path_buf(),
                reason: format!("overlay {n} is set: the upper dir is not self-contained (mount with redirect_dir=off,metacopy=off)"),
            });
        }
        if n == OPAQUE_XATTR {
            x.opaque = lgetxattr(path, &n).map_err(xerr)?.as_deref() == Some(b"y");
        } else if xattr_allowed(&n) {
            if let Some(v) = lgetxattr(path, &n).map_err(xerr)? {
                x.kept.push((n, v));
            }
        }
    }
    Ok(x)
}

/// Everything that goes into one entry's header(s).
struct EntryHeader {
    path: Vec<u8>,
    typ: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    rdev: u64,
    link: Option<Vec<u8>>,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl EntryHeader {
    fn new(path: &[u8], typ: EntryType, md: &Metadata) -> Self {
        EntryHeader {
            path: path.to_vec(),
            typ,
            mode: md.mode() & 0o7777,
            uid: md.uid().into(),
            gid: md.gid().into(),
            mtime: u64::try_from(md.mtime()).unwrap_or(0),
            rdev: md.rdev(),
            link: None,
            xattrs: Vec::new(),
        }
    }

    /// Writes the (PAX +) ustar header, then `size` bytes of `data` and padding.
    fn write<W: Write>(&self, w: &mut W, data: impl Read, size: u64) -> io::Result<()> {
        let mut h = Header::new_ustar();
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        h.set_entry_type(self.typ);
        h.set_mode(self.mode);
        let mut num = |key: &str, v: u64, max: u64| {
            if v > max {
                pax.push((key.to_string(), v.to_string().into_bytes()));
                0
            } else {
                v
            }
        };
        let uid = num("uid", self.uid, MAX_OCTAL_8);
        let gid = num("gid", self.gid, MAX_OCTAL_8);
        let mtime = num("mtime", self.mtime, MAX_OCTAL_12);
        let sz = num("size", size, MAX_OCTAL_12);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        h.set_size(sz);
        if matches!(self.typ, EntryType::Char | EntryType::Block) {
            h.set_device_major(nix::sys::stat::major(self.rdev) as u32)?;
            h.set_device_minor(nix::sys::stat::minor(self.rdev) as u32)?;
        }
        let u = h
            .as_ustar_mut()
            .ok_or_else(|| io::Error::other("not a ustar header"))?;
        if !split_ustar_name(&self.path, &mut u.name, &mut u.prefix) {
            pax.push(("path".into(), self.path.clone()));
            let n = self.path.len().min(u.name.len());
            u.name[..n].copy_from_slice(&self.path[..n]);
        }
        if let Some(l) = &self.link {
            if l.len() > u.linkname.len() {
                pax.push(("linkpath".into(), l.clone()));
            }
            let n = l.len().min(u.linkname.len());
            u.linkname[..n].copy_from_slice(&l[..n]);
        }
        for (k, v) in &self.xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        if !pax.is_empty() {
            pax.sort();
            let mut body = Vec::new();
            for (k, v) in &pax {
                body.extend_from_slice(&pax_record(k, v));
            }
            let mut ph = Header::new_ustar();
            ph.set_entry_type(EntryType::XHeader);
            ph.set_mode(0o644);
            ph.set_size(body.len() as u64);
            ph.set_mtime(0);
            let base = self
                .path
                .rsplit(|b| *b == b'/')
                .find(|s| !s.is_empty())
                .unwrap_or(b"x");
            let mut pname = b"PaxHeaders.0/".to_vec();
            pname.extend_from_slice(base);
            pname.truncate(99);
            if let Some(pu) = ph.as_ustar_mut() {
                pu.name[..pname.len()].copy_from_slice(&pname);
            }
            ph.set_cksum();
            w.write_all(ph.as_bytes())?;
            w.write_all(&body)?;
            pad(w, body.len() as u64)?;
        }
        h.set_cksum();
        w.write_all(h.as_bytes())?;
        let got = io::copy(&mut data.take(size), w)?;
        if got != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file shrank while archiving: {got} of {size} bytes"),
            ));
        }
        pad(w, size)
    }
}

fn pad<W: Write>(w: &mut W, len: u64) -> io::Result<()> {
    let rem = (512 - len % 512) % 512;
    w.write_all(&[0u8; 512][..rem as usize])
}

/// Splits `path` into ustar `prefix` and `name`; false if it does not fit.
fn split_ustar_name(path: &[u8], name: &mut [u8; 100], prefix: &mut [u8; 155]) -> bool {
    if path.len() <= name.len() {
        name[..path.len()].copy_from_slice(path);
        return true;
    }
    // Split at a '/' so that prefix <= 155 and name <= 100 (and name not empty).
    let limit = path.len().min(prefix.len() + 1);
    for i in (0..limit).rev() {
        if path[i] == b'/'
            && i <= prefix.len()
            && path.len() - i - 1 <= name.len()
            && i + 1 < path.len()
        {
            prefix[..i].copy_from_slice(&path[..i]);
            name[..path.len() - i - 1].copy_from_slice(&path[i + 1..]);
            return true;
        }
    }
    false
}

/// One PAX record: "<len> <key>=<value>\n", len counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base + base.to_string().len();
    if len.to_string().len() > base.to_string().len() {
        len += 1;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_counts_itself() {
        let r = pax_record("path", b"abc");
        assert_eq!(r, b"12 path=abc\n");
        let v = vec![b'x'; 91];
        let r = pax_record("path", &v);
        assert_eq!(
            r.len().to_string(),
            String::from_utf8_lossy(&r[..r.iter().position(|b| *b == b' ').unwrap()])
        );
    }

    #[test]
    fn ustar_split() {
        let mut n = [0u8; 100];
        let mut p = [0u8; 155];
        let long = [b"d".repeat(120), b"f".repeat(50)].join(&b'/');
        assert!(split_ustar_name(&long, &mut n, &mut p));
        assert_eq!(&p[..120], &b"d".repeat(120)[..]);
        let (mut n, mut p) = ([0u8; 100], [0u8; 155]);
        assert!(!split_ustar_name(&b"x".repeat(300), &mut n, &mut p));
    }
}
