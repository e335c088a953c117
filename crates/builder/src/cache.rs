//! Cache keys and source content hashes.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use globset::GlobBuilder;
use sha2::{Digest, Sha256};

use crate::ignore::{clean, DockerIgnore};

/// Why sources could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum SourceHashError {
    /// A source is missing or excluded by `.dockerignore`.
    #[error("COPY source \"{0}\" not found in the build context (or excluded by .dockerignore)")]
    NotFound(String),
    /// A source escapes the context.
    #[error("COPY source \"{0}\" is outside the build context")]
    OutsideContext(String),
    /// A bad glob.
    #[error("bad source pattern \"{0}\": {1}")]
    Pattern(String, String),
    /// I/O failure.
    #[error("hashing {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The cache key of a step: sha256 (hex) over the parent step's key, the
/// instruction text after expansion, the ARGs the step can see (name and
/// value, sorted; proxy args excluded by the caller), the platform, and for
/// COPY/ADD the [`hash_sources`] digest. Every field is length-prefixed, so
/// no two different inputs share an encoding.
pub fn cache_key(
    parent_key: &str,
    instruction: &str,
    build_args: &BTreeMap<String, String>,
    platform: &str,
    content_hash: Option<&str>,
) -> String {
    let mut h = Sha256::new();
    field(&mut h, b"berth-build-cache-v1");
    field(&mut h, parent_key.as_bytes());
    field(&mut h, instruction.as_bytes());
    h.update((build_args.len() as u64).to_le_bytes());
    for (k, v) in build_args {
        field(&mut h, k.as_bytes());
        field(&mut h, v.as_bytes());
    }
    field(&mut h, platform.as_bytes());
    match content_hash {
        Some(c) => {
            h.update([1]);
            field(&mut h, c.as_bytes());
        }
        None => h.update([0]),
    }
    hex(&h.finalize())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SourceHashError + '_ {
    move |source| SourceHashError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A Merkle hash (sha256 hex) of `sources` (paths or globs relative to
/// `context`) as COPY would take them, skipping what `ignore` excludes.
/// Each entry's hash covers its relative path, type, mode, uid, gid, extended
/// attributes, and the file bytes, symlink target or sorted children; never
/// mtime/atime/ctime.
/// Sources are expanded, sorted and de-duplicated, so the result is
/// deterministic.
pub fn hash_sources(
    context: &Path,
    sources: &[String],
    ignore: &DockerIgnore,
) -> Result<String, SourceHashError> {
    let mut roots = expand_sources(context, sources, ignore)?;
    roots.sort();
    roots.dedup();
    let mut h = Sha256::new();
    field(&mut h, b"berth-sources-v1");
    for r in &roots {
        field(&mut h, r.as_bytes());
        field(&mut h, node_hash(context, r, ignore)?.as_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// `sources` (paths or globs relative to `root`) as the root-relative paths
/// COPY takes, in order: globs expanded (sorted), each source required to
/// match something `ignore` does not exclude, none leaving `root`.
pub(crate) fn expand_sources(
    root: &Path,
    sources: &[String],
    ignore: &DockerIgnore,
) -> Result<Vec<String>, SourceHashError> {
    let mut out = Vec::new();
    for src in sources {
        let rel = clean(src.trim_start_matches('/'));
        if rel == ".." || rel.starts_with("../") {
            return Err(SourceHashError::OutsideContext(src.clone()));
        }
        if rel.contains(['*', '?', '[']) {
            let m = GlobBuilder::new(&rel)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| SourceHashError::Pattern(src.clone(), e.kind().to_string()))?
                .compile_matcher();
            let mut all = Vec::new();
            walk(root, "", ignore, &mut all)?;
            let before = out.len();
            out.extend(all.into_iter().filter(|p| m.is_match(p)));
            if out.len() == before {
                return Err(SourceHashError::NotFound(src.clone()));
            }
        } else {
            let exists = fs::symlink_metadata(root.join(&rel)).is_ok();
            if !exists || (rel != "." && ignore.is_excluded(&rel)) {
                return Err(SourceHashError::NotFound(src.clone()));
            }
            out.push(rel);
        }
    }
    Ok(out)
}

/// Lists all non-excluded paths under `context/rel`, relative to the context.
pub(crate) fn walk(
    context: &Path,
    rel: &str,
    ignore: &DockerIgnore,
    out: &mut Vec<String>,
) -> Result<(), SourceHashError> {
    let dir = if rel.is_empty() {
        context.to_path_buf()
    } else {
        context.join(rel)
    };
    let mut entries: Vec<String> = fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(io_err(&dir))?;
    entries.sort();
    for name in entries {
        let p = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let excluded = ignore.is_excluded(&p);
        let md = fs::symlink_metadata(context.join(&p)).map_err(io_err(&context.join(&p)))?;
        if !excluded {
            out.push(p.clone());
        }
        if md.is_dir() && (!excluded || ignore.has_exceptions()) {
            walk(context, &p, ignore, out)?;
        }
    }
    Ok(())
}

/// Calls `f(buf)` (a list/get xattr call) with a buffer grown until it fits.
fn xattr_call(f: impl Fn(&mut [u8]) -> isize) -> std::io::Result<Option<Vec<u8>>> {
    loop {
        let need = f(&mut []);
        if need < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOTSUP | libc::ENODATA) => Ok(None),
                _ => Err(e),
            };
        }
        let mut buf = vec![0u8; need as usize];
        let n = f(&mut buf);
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => continue, // grew meanwhile
            Some(libc::ENOTSUP | libc::ENODATA) => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// The extended attributes of `path` (a symlink's own), sorted by name.
fn xattrs(path: &Path) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid C string; the buffer pointer and length match.
    let names =
        xattr_call(|b| unsafe { libc::llistxattr(c.as_ptr(), b.as_mut_ptr().cast(), b.len()) })?
            .unwrap_or_default();
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cn = std::ffi::CString::new(name)?;
        // SAFETY: as above, with the attribute name as a valid C string.
        let value = xattr_call(|b| unsafe {
            libc::lgetxattr(c.as_ptr(), cn.as_ptr(), b.as_mut_ptr().cast(), b.len())
        })?;
        if let Some(v) = value {
            out.push((name.to_vec(), v));
        }
    }
    out.sort();
    Ok(out)
}

fn node_hash(context: &Path, rel: &str, ignore: &DockerIgnore) -> Result<String, SourceHashError> {
    let path = if rel == "." {
        context.to_path_buf()
    } else {
        context.join(rel)
    };
    let md = fs::symlink_metadata(&path).map_err(io_err(&path))?;
    let mut h = Sha256::new();
    let ft = md.file_type();
    let kind: &[u8] = if ft.is_symlink() {
        b"symlink"
    } else if ft.is_dir() {
        b"dir"
    } else if ft.is_file() {
        b"file"
    } else {
        b"other"
    };
    field(&mut h, kind);
    h.update(md.mode().to_le_bytes());
    h.update(md.uid().to_le_bytes());
    h.update(md.gid().to_le_bytes());
    let attrs = xattrs(&path).map_err(io_err(&path))?;
    h.update((attrs.len() as u64).to_le_bytes());
    for (name, value) in &attrs {
        field(&mut h, name);
        field(&mut h, value);
    }
    if ft.is_symlink() {
        let target = fs::read_link(&path).map_err(io_err(&path))?;
        field(&mut h, target.as_os_str().as_encoded_bytes());
    } else if ft.is_file() {
        let mut f = fs::File::open(&path).map_err(io_err(&path))?;
        let mut content = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(io_err(&path))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            content.update(&buf[..n]);
        }
        h.update(size.to_le_bytes());
        h.update(content.finalize());
    } else if ft.is_dir() {
        let mut names: Vec<String> = fs::read_dir(&path)
            .map_err(io_err(&path))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()
            .map_err(io_err(&path))?;
        names.sort();
        for name in names {
            let child = if rel == "." {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let child_md = fs::symlink_metadata(context.join(&child)).map_err(io_err(&path))?;
            if ignore.is_excluded(&child) && !(child_md.is_dir() && ignore.has_exceptions()) {
                continue;
            }
            field(&mut h, name.as_bytes());
            field(&mut h, node_hash(context, &child, ignore)?.as_bytes());
        }
    } else {
        h.update(md.rdev().to_le_bytes());
    }
    Ok(hex(&h.finalize()))
}
