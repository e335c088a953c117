//! Helpers shared by the snapshotter's privileged tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_snapshotter::Snapshotter;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// A temp dir holding a snapshotter root and, beside it, a canary dir.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub canary: PathBuf,
    pub snap: Snapshotter,
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root (overlay mounts, mknod, trusted xattrs)"
    );
}

impl Env {
    pub fn new() -> Env {
        require_root();
        let tmp = tempfile::Builder::new()
            .prefix("berth-snap-test-")
            .tempdir()
            .unwrap();
        let root = tmp.path().join("root");
        let canary = tmp.path().join("canary");
        fs::create_dir_all(canary.join("etc")).unwrap();
        fs::write(canary.join("file"), b"canary file\n").unwrap();
        fs::write(canary.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("file", canary.join("link")).unwrap();
        let snap = Snapshotter::open(&root).unwrap();
        Env {
            tmp,
            root,
            canary,
            snap,
        }
    }

    /// Hash of the canary tree plus the host files an attack might touch.
    pub fn outside_hash(&self) -> String {
        let mut s = tree_listing(&self.canary).join("\n");
        for p in ["/etc/passwd", "/etc/shadow", "/etc/hostname"] {
            if let Ok(md) = fs::symlink_metadata(p) {
                s.push_str(&format!(
                    "\n{p} {} {} {}",
                    md.nlink(),
                    md.size(),
                    md.mtime()
                ));
            }
        }
        hex(&Sha256::digest(s.as_bytes()))
    }

    /// Prepares an active snapshot with no parent and returns its fs dir.
    pub fn active(&self, key: &str, parent: Option<&str>) -> PathBuf {
        self.snap.prepare(key, parent).unwrap();
        self.snap.fs_dir(key).unwrap()
    }

    /// `../` repeated so that, from a snapshot's fs dir (`<tmp>/root/<id>/fs`), the path
    /// reaches `<tmp>`.
    pub fn up_to_tmp() -> &'static str {
        "../../../"
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A sorted listing of a tree: path, type, mode, owner, size, nlink, rdev, mtime
/// (not for dirs when `dir_mtime` is false), content hash, link target, xattrs.
pub fn tree_listing(root: &Path) -> Vec<String> {
    listing(root, true)
}

pub fn listing(root: &Path, dir_mtime: bool) -> Vec<String> {
    let mut out = BTreeMap::new();
    walk(root, root, dir_mtime, &mut out);
    out.into_iter().map(|(k, v)| format!("{k} {v}")).collect()
}

fn walk(root: &Path, p: &Path, dir_mtime: bool, out: &mut BTreeMap<String, String>) {
    for e in fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let path = e.path();
        let md = fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let ft = md.file_type();
        let mut v = format!("mode={:o} uid={} gid={}", md.mode(), md.uid(), md.gid());
        if ft.is_file() {
            let mut data = Vec::new();
            fs::File::open(&path)
                .unwrap()
                .read_to_end(&mut data)
                .unwrap();
            v.push_str(&format!(
                " size={} nlink={} sha={}",
                md.size(),
                md.nlink(),
                &hex(&Sha256::digest(&data))[..16]
            ));
        }
        if ft.is_symlink() {
            v.push_str(&format!(" -> {}", fs::read_link(&path).unwrap().display()));
        }
        if ft.is_char_device() || ft.is_block_device() {
            v.push_str(&format!(" rdev={:x}", md.rdev()));
        }
        if !ft.is_dir() || dir_mtime {
            v.push_str(&format!(" mtime={}", md.mtime()));
        }
        // trusted.overlay.origin/impure are overlay's own bookkeeping, not content.
        for x in xattr_list(&path).into_iter().filter(|x| {
            !x.starts_with("trusted.overlay.origin") && !x.starts_with("trusted.overlay.impure")
        }) {
            v.push_str(&format!(" x:{x}"));
        }
        out.insert(rel, v);
        if ft.is_dir() {
            walk(root, &path, dir_mtime, out);
        }
    }
}

fn xattr_list(p: &Path) -> Vec<String> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated path and a writable buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return Vec::new();
    }
    buf.truncate(n as usize);
    let mut names: Vec<String> = buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let cn = std::ffi::CString::new(n.clone()).unwrap();
            let mut v = vec![0u8; 1024];
            // SAFETY: valid strings and a writable buffer of the given length.
            let k =
                unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
            v.truncate(k.max(0) as usize);
            format!("{n}={}", String::from_utf8_lossy(&v))
        })
        .collect()
}

/// Builds tars with raw headers (paths with `..`, absolute paths, anything).
#[derive(Default)]
pub struct RawTar {
    pub buf: Vec<u8>,
}

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

impl RawTar {
    pub fn new() -> Self {
        Self::default()
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(512) {
            self.buf.push(0);
        }
    }

    /// Appends an entry; long names / link targets and `pax` go into a PAX header.
    #[allow(clippy::too_many_arguments)]
    pub fn entry(
        &mut self,
        path: &[u8],
        typ: EntryType,
        link: Option<&[u8]>,
        data: &[u8],
        mode: u32,
        declared_size: Option<u64>,
        pax: &[(&str, &[u8])],
    ) -> &mut Self {
        let mut recs = Vec::new();
        let mut h = Header::new_ustar();
        h.set_entry_type(typ);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(declared_size.unwrap_or(data.len() as u64));
        {
            let u = h.as_ustar_mut().unwrap();
            if path.len() > 100 {
                recs.extend(pax_record("path", path));
                u.name[..10].copy_from_slice(b"longname.x");
            } else {
                u.name[..path.len()].copy_from_slice(path);
            }
            if let Some(l) = link {
                if l.len() > 100 {
                    recs.extend(pax_record("linkpath", l));
                } else {
                    u.linkname[..l.len()].copy_from_slice(l);
                }
            }
        }
        for (k, v) in pax {
            recs.extend(pax_record(k, v));
        }
        if !recs.is_empty() {
            let mut ph = Header::new_ustar();
            ph.set_entry_type(EntryType::XHeader);
            ph.set_size(recs.len() as u64);
            ph.set_mode(0o644);
            ph.as_ustar_mut().unwrap().name[..5].copy_from_slice(b"paxhd");
            ph.set_cksum();
            self.buf.extend_from_slice(ph.as_bytes());
            self.buf.extend_from_slice(&recs);
            self.pad();
        }
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.entry(
            path.as_bytes(),
            EntryType::Regular,
            None,
            data,
            0o644,
            None,
            &[],
        )
    }
    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.entry(
            path.as_bytes(),
            EntryType::Directory,
            None,
            b"",
            0o755,
            None,
            &[],
        )
    }
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(
            path.as_bytes(),
            EntryType::Symlink,
            Some(target.as_bytes()),
            b"",
            0o777,
            None,
            &[],
        )
    }
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(
            path.as_bytes(),
            EntryType::Link,
            Some(target.as_bytes()),
            b"",
            0o644,
            None,
            &[],
        )
    }
    pub fn device(&mut self, path: &str, typ: EntryType, major: u32, minor: u32) -> &mut Self {
        let mut h = Header::new_ustar();
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.entry(path.as_bytes(), typ, None, b"", 0o600, None, &[]);
        // Patch the device numbers into the header just written.
        let at = self.buf.len() - 512;
        let u = h.as_ustar().unwrap();
        let mut hh = Header::new_ustar();
        hh.as_mut_bytes().copy_from_slice(&self.buf[at..at + 512]);
        hh.as_ustar_mut().unwrap().dev_major = u.dev_major;
        hh.as_ustar_mut().unwrap().dev_minor = u.dev_minor;
        hh.set_cksum();
        self.buf[at..at + 512].copy_from_slice(hh.as_bytes());
        self
    }
    /// The archive with its end-of-archive blocks.
    pub fn finish(&self) -> Vec<u8> {
        let mut b = self.buf.clone();
        b.extend_from_slice(&[0u8; 1024]);
        b
    }
}
