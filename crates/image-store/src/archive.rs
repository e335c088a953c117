//! Image archives: `docker save` / `docker load` tarballs, OCI image layouts as tars,
//! and `docker import` of a rootfs tarball.
//!
//! Archives are untrusted: entry names with `..` or absolute paths are refused,
//! metadata sizes and entry counts are bounded, and every blob is verified against the
//! digest that names it (blob paths, manifests, config diff ids).

use crate::content::ContentStore;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use crate::images::{now_rfc3339, Image};
use crate::manifest::{
    detect_compression, host_platform, parse_manifest, Compression, Manifest,
    MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_LAYER_TAR,
    MEDIA_TYPE_OCI_LAYER_ZSTD, MEDIA_TYPE_OCI_MANIFEST,
};
use crate::reference::Reference;
use oci_spec::image::{Config, Descriptor, ImageConfiguration, ImageIndex, MediaType};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};

/// Largest metadata file (manifest.json, index.json, configs) kept in memory.
const MAX_META: u64 = 16 << 20;
/// Most entries accepted in an archive.
const MAX_ENTRIES: usize = 1_000_000;
/// Most images in one manifest.json / index.json.
const MAX_IMAGES: usize = 10_000;
/// Annotation holding a full image name (containerd, docker 25+).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// OCI annotation naming a reference in an image layout.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One image in a docker-archive `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn tar_err(what: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| Error::io(format!("writing archive entry {what}"), e)
}

fn json_bytes<T: Serialize>(v: &T, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|source| Error::Json {
        context: format!("serialising {what}"),
        source,
    })
}

struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

struct TarOut<W: Write> {
    builder: tar::Builder<W>,
    written: BTreeSet<String>,
}

impl<W: Write> TarOut<W> {
    fn new(out: W) -> Self {
        TarOut {
            builder: tar::Builder::new(out),
            written: BTreeSet::new(),
        }
    }

    fn header(size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        if !self.written.insert(path.to_string()) {
            return Ok(());
        }
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Directory);
        self.builder
            .append_data(&mut h, path, io::empty())
            .map_err(tar_err(path))
    }

    fn file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        if !self.written.insert(path.to_string()) {
            return Ok(());
        }
        let mut h = Self::header(data.len() as u64);
        self.builder
            .append_data(&mut h, path, data)
            .map_err(tar_err(path))
    }

    /// Copy a blob into `blobs/sha256/<hex>`, verifying size and digest on the way.
    fn blob(&mut self, content: &ContentStore, d: &Digest, size: u64) -> Result<String> {
        let path = format!("blobs/sha256/{}", d.hex());
        if self.written.contains(&path) {
            return Ok(path);
        }
        self.dir("blobs/")?;
        self.dir("blobs/sha256/")?;
        let actual_size = content
            .info(d)?
            .ok_or_else(|| Error::BlobNotFound(d.clone()))?;
        if actual_size != size {
            return Err(Error::SizeMismatch {
                digest: d.clone(),
                expected: size,
                actual: actual_size,
            });
        }
        let mut r = HashingReader {
            inner: content.read(d)?,
            hasher: Hasher::new(),
        };
        let mut h = Self::header(size);
        self.builder
            .append_data(&mut h, &path, &mut r)
            .map_err(tar_err(&path))?;
        let actual = r.hasher.finish();
        if &actual != d {
            return Err(Error::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        self.written.insert(path.clone());
        Ok(path)
    }

    fn finish(self) -> Result<()> {
        let mut w = self
            .builder
            .into_inner()
            .map_err(|e| Error::io("finishing archive", e))?;
        w.flush().map_err(|e| Error::io("flushing archive", e))
    }
}

fn manifest_descriptor(content: &ContentStore, d: &Digest) -> Result<Descriptor> {
    let bytes = content.read_verified(d)?;
    let m = parse_manifest(&bytes, None)?;
    Ok(Descriptor::new(
        MediaType::from(m.media_type().as_str()),
        bytes.len() as u64,
        d.to_oci(),
    ))
}

/// Write an image's manifest, config and layers as blobs.
fn write_image_blobs<W: Write>(
    t: &mut TarOut<W>,
    content: &ContentStore,
    img: &Image,
) -> Result<()> {
    let msize = content
        .info(&img.manifest_digest)?
        .ok_or_else(|| Error::BlobNotFound(img.manifest_digest.clone()))?;
    t.blob(content, &img.manifest_digest, msize)?;
    t.blob(content, &img.config_digest, img.manifest.config().size())?;
    for l in &img.layers {
        t.blob(content, &Digest::of_descriptor(l)?, l.size())?;
    }
    Ok(())
}

fn name_annotations(name: &str, tag_only: bool) -> HashMap<String, String> {
    let mut a = HashMap::new();
    match Reference::parse(name) {
        Ok(r) => {
            a.insert(ANNOTATION_IMAGE_NAME.to_string(), r.full());
            let refname = if tag_only {
                r.tag.clone().unwrap_or_else(|| r.full())
            } else {
                name.to_string()
            };
            a.insert(ANNOTATION_REF_NAME.to_string(), refname);
        }
        Err(_) => {
            a.insert(ANNOTATION_REF_NAME.to_string(), name.to_string());
        }
    }
    a
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Write a `docker save` archive, as `docker load` (any version) and skopeo accept it.
///
/// The layout is Docker 25's: `blobs/sha256/<hex>` for manifests, configs and layers
/// (layers as stored, possibly compressed), `manifest.json` naming them, `repositories`,
/// and also `oci-layout` + `index.json`, so the tar is an OCI layout too. Images with the
/// same config are written once, with all their tags in `RepoTags`. Names that carry no
/// tag (digest references) are not listed in `RepoTags`.
pub fn save_docker_archive(
    content: &ContentStore,
    images: &[(String, Image)],
    out: impl Write,
) -> Result<()> {
    let mut t = TarOut::new(out);
    let mut entries: Vec<(Image, Vec<String>, Vec<String>)> = Vec::new();
    for (name, img) in images {
        let pos = match entries
            .iter()
            .position(|(i, _, _)| i.manifest_digest == img.manifest_digest)
        {
            Some(p) => p,
            None => {
                entries.push((img.clone(), Vec::new(), Vec::new()));
                entries.len() - 1
            }
        };
        if name.is_empty() {
            continue;
        }
        entries[pos].2.push(name.clone());
        if let Ok(r) = Reference::parse(name) {
            if let Some(tag) = &r.tag {
                let tagged = format!("{}:{tag}", r.familiar_repository());
                if !entries[pos].1.contains(&tagged) {
                    entries[pos].1.push(tagged);
                }
            }
        }
    }
    let mut manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut index = Vec::new();
    for (img, tags, names) in &entries {
        write_image_blobs(&mut t, content, img)?;
        let config = format!("blobs/sha256/{}", img.config_digest.hex());
        let layers: Vec<String> = img
            .layers
            .iter()
            .map(|l| Digest::of_descriptor(l).map(|d| format!("blobs/sha256/{}", d.hex())))
            .collect::<Result<_>>()?;
        if let Some(top) = img.layers.last() {
            let top = Digest::of_descriptor(top)?;
            for tag in tags {
                if let Ok(r) = Reference::parse(tag) {
                    repositories
                        .entry(r.familiar_repository())
                        .or_default()
                        .insert(r.tag.clone().unwrap_or_default(), top.hex().to_string());
                }
            }
        }
        manifest.push(DockerManifestEntry {
            config,
            repo_tags: Some(tags.clone()),
            layers,
        });
        let desc = manifest_descriptor(content, &img.manifest_digest)?;
        if names.is_empty() {
            index.push(desc.clone());
        }
        for n in names {
            let mut d = desc.clone();
            d.set_annotations(Some(name_annotations(n, true)));
            index.push(d);
        }
    }
    t.file("index.json", &json_bytes(&oci_index(index), "index.json")?)?;
    t.file("manifest.json", &json_bytes(&manifest, "manifest.json")?)?;
    t.file("oci-layout", OCI_LAYOUT)?;
    t.file("repositories", &json_bytes(&repositories, "repositories")?)?;
    t.finish()
}

fn oci_index(manifests: Vec<Descriptor>) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::manifest::MEDIA_TYPE_OCI_INDEX,
        "manifests": manifests,
    })
}

/// Every blob under `d` (manifest or index, recursively), if all are present.
fn complete_tree(
    content: &ContentStore,
    d: &Digest,
    depth: u32,
    out: &mut Vec<(Digest, u64)>,
) -> Result<bool> {
    let Some(size) = content.info(d)? else {
        return Ok(false);
    };
    if depth > 4 {
        return Ok(false);
    }
    out.push((d.clone(), size));
    match parse_manifest(&content.read_verified(d)?, None)? {
        Manifest::Index(idx) => {
            for c in idx.manifests() {
                if !complete_tree(content, &Digest::of_descriptor(c)?, depth + 1, out)? {
                    return Ok(false);
                }
            }
        }
        Manifest::Image(m) => {
            for desc in std::iter::once(m.config()).chain(m.layers().iter()) {
                let dd = Digest::of_descriptor(desc)?;
                if content.info(&dd)? != Some(desc.size()) {
                    return Ok(false);
                }
                out.push((dd, desc.size()));
            }
        }
    }
    Ok(true)
}

/// Write an OCI image layout as a tar: `oci-layout`, `index.json` (entries annotated
/// with `org.opencontainers.image.ref.name` = the given name and
/// `io.containerd.image.name` = its full reference) and `blobs/sha256/*`.
///
/// The third element is the manifest digest to list (e.g. the record's target). If it
/// is an index whose blobs are not all in the store, the image's platform manifest is
/// listed instead.
pub fn save_oci_archive(
    content: &ContentStore,
    images: &[(String, Image, Digest)],
    out: impl Write,
) -> Result<()> {
    let mut t = TarOut::new(out);
    t.file("oci-layout", OCI_LAYOUT)?;
    let mut index = Vec::new();
    for (name, img, digest) in images {
        let mut blobs = Vec::new();
        let top =
            if digest != &img.manifest_digest && complete_tree(content, digest, 0, &mut blobs)? {
                for (d, size) in &blobs {
                    t.blob(content, d, *size)?;
                }
                digest.clone()
            } else {
                write_image_blobs(&mut t, content, img)?;
                img.manifest_digest.clone()
            };
        let mut desc = manifest_descriptor(content, &top)?;
        if !name.is_empty() {
            desc.set_annotations(Some(name_annotations(name, false)));
        }
        index.push(desc);
    }
    t.file("index.json", &json_bytes(&oci_index(index), "index.json")?)?;
    t.finish()
}

/// Normalise an archive path: refuse absolute paths and `..`, drop `.` components.
fn clean_path(raw: &str) -> Result<String> {
    if raw.starts_with('/') {
        return Err(Error::archive(format!("absolute path {raw:?} in archive")));
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::archive(format!(
                    "path {raw:?} in archive escapes it with \"..\""
                )))
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Files of an archive being loaded.
#[derive(Default)]
struct Staged {
    /// Small metadata files, in memory.
    meta: HashMap<String, Vec<u8>>,
    /// Other files, stored as blobs.
    blobs: HashMap<String, (Digest, u64)>,
    /// Symlinks and hardlinks: path -> target path (cleaned, archive-relative).
    links: HashMap<String, String>,
    /// Blobs this load created (removed again unless referenced by what was loaded).
    created: BTreeSet<Digest>,
}

impl Staged {
    fn resolve<'a>(&'a self, path: &'a str) -> Result<&'a str> {
        let mut p = path;
        for _ in 0..16 {
            match self.links.get(p) {
                Some(t) => p = t,
                None => return Ok(p),
            }
        }
        Err(Error::archive(format!("too many links resolving {path:?}")))
    }

    /// A file's bytes (bounded) whether kept in memory or stored.
    fn bytes(&self, content: &ContentStore, path: &str) -> Result<Vec<u8>> {
        let clean = clean_path(path)?;
        let p = self.resolve(&clean)?;
        if let Some(b) = self.meta.get(p) {
            return Ok(b.clone());
        }
        if let Some((d, _)) = self.blobs.get(p) {
            return content.read_verified(d);
        }
        Err(Error::archive(format!(
            "file {path:?} named in the archive's metadata is missing"
        )))
    }

    /// A file as a blob in the content store.
    fn blob(&mut self, content: &ContentStore, path: &str) -> Result<(Digest, u64)> {
        let clean = clean_path(path)?;
        let p = self.resolve(&clean)?.to_string();
        if let Some(v) = self.blobs.get(&p) {
            return Ok(v.clone());
        }
        if let Some(b) = self.meta.get(&p) {
            let len = b.len() as u64;
            let d = self.write_blob(content, &b.clone())?;
            return Ok((d, len));
        }
        Err(Error::archive(format!(
            "file {path:?} named in the archive's metadata is missing"
        )))
    }

    fn write_blob(&mut self, content: &ContentStore, data: &[u8]) -> Result<Digest> {
        let d = Digest::of(data);
        if content.info(&d)?.is_none() {
            let mut w = content.writer(
                &format!("load-{}-{}", std::process::id(), d),
                Some((d.clone(), data.len() as u64)),
            )?;
            if !w.already_exists() {
                w.truncate()?;
                w.write_all(data).ctx(|| format!("writing blob {d}"))?;
            }
            if w.commit_new()?.1 {
                self.created.insert(d.clone());
            }
        }
        Ok(d)
    }

    fn cleanup(&self, content: &ContentStore, keep: &BTreeSet<Digest>) {
        for d in self.created.difference(keep) {
            let _ = content.delete(d);
        }
    }
}

fn is_meta_name(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.ends_with(".json")
        || base == "repositories"
        || base == "oci-layout"
        || base == "json"
        || base == "VERSION"
}

fn stage<R: Read>(content: &ContentStore, input: R, st: &mut Staged) -> Result<()> {
    let mut ar = tar::Archive::new(input);
    let entries = ar
        .entries()
        .map_err(|e| Error::archive(format!("reading tar: {e}")))?;
    let mut count = 0usize;
    let mut seq = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::archive(format!("reading tar entry: {e}")))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(Error::archive(format!("more than {MAX_ENTRIES} entries")));
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = clean_path(&raw)?;
        if path.is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => continue,
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .ok_or_else(|| Error::archive(format!("link {raw:?} without a target")))?;
                let full = if kind == tar::EntryType::Symlink {
                    let parent = path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                    if target.starts_with('/') {
                        return Err(Error::archive(format!(
                            "symlink {raw:?} points to absolute {target:?}"
                        )));
                    }
                    // resolve ".." against the parent without leaving the archive
                    let mut parts: Vec<&str> =
                        parent.split('/').filter(|c| !c.is_empty()).collect();
                    for c in target.split('/') {
                        match c {
                            "" | "." => {}
                            ".." => {
                                if parts.pop().is_none() {
                                    return Err(Error::archive(format!(
                                        "symlink {raw:?} -> {target:?} escapes the archive"
                                    )));
                                }
                            }
                            c => parts.push(c),
                        }
                    }
                    parts.join("/")
                } else {
                    clean_path(&target)?
                };
                st.links.insert(path, full);
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            _ => continue,
        }
        let size = entry
            .header()
            .size()
            .map_err(|e| Error::archive(format!("entry {raw:?}: {e}")))?;
        let blob_name = path
            .strip_prefix("blobs/sha256/")
            .filter(|h| !h.contains('/'))
            .map(Digest::from_hex);
        if let Some(named) = blob_name {
            let d = named.map_err(|_| {
                Error::archive(format!("blob {raw:?} is not named by a sha256 digest"))
            })?;
            if content.info(&d)? != Some(size) {
                let mut w = content.writer(
                    &format!("load-{}-{}", std::process::id(), d),
                    Some((d.clone(), size)),
                )?;
                if !w.already_exists() {
                    w.truncate()?;
                    io::copy(&mut entry, &mut w)
                        .ctx(|| format!("reading archive entry {raw:?}"))?;
                }
                if w.commit_new()?.1 {
                    st.created.insert(d.clone());
                }
            }
            st.blobs.insert(path, (d, size));
        } else if size <= MAX_META && is_meta_name(&path) {
            let mut buf = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut buf)
                .ctx(|| format!("reading archive entry {raw:?}"))?;
            st.meta.insert(path, buf);
        } else {
            seq += 1;
            let mut w =
                content.writer(&format!("load-{}-{seq}-{path}", std::process::id()), None)?;
            w.truncate()?;
            io::copy(&mut entry, &mut w).ctx(|| format!("reading archive entry {raw:?}"))?;
            let (d, created) = w.commit_new()?;
            if created {
                st.created.insert(d.clone());
            }
            st.blobs.insert(path, (d, size));
        }
    }
    Ok(())
}

/// Load a docker-archive or an OCI layout tar (detected by `oci-layout`/`index.json`,
/// else `manifest.json`). Blobs land in the content store, verified. Docker-archive
/// images get a synthesised OCI manifest (layers keep their bytes, with OCI layer media
/// types by compression; uncompressed and gzip layers are checked against the config's
/// diff ids). Returns (name, manifest descriptor) pairs for the caller to record; the
/// name is a full reference, or `None` for an untagged image.
pub fn load_archive(
    content: &ContentStore,
    input: impl Read,
) -> Result<Vec<(Option<String>, Descriptor)>> {
    let input = decompressed(input, "archive")?;
    let mut st = Staged::default();
    let mut keep = BTreeSet::new();
    let result = stage(content, input, &mut st).and_then(|()| {
        if st.meta.contains_key("index.json") && (st.meta.contains_key("oci-layout") || !st.meta.contains_key("manifest.json")) {
            load_oci(content, &mut st, &mut keep)
        } else if st.meta.contains_key("manifest.json") {
            load_docker(content, &mut st, &mut keep)
        } else {
            Err(Error::archive(
                "neither an OCI image layout (oci-layout, index.json) nor a docker archive (manifest.json)",
            ))
        }
    });
    if result.is_err() {
        keep.clear();
    }
    st.cleanup(content, &keep);
    result
}

fn check_image_tree(
    content: &ContentStore,
    desc: &Descriptor,
    depth: u32,
    keep: &mut BTreeSet<Digest>,
) -> Result<()> {
    let d = Digest::of_descriptor(desc)?;
    if depth > 4 {
        return Err(Error::archive(format!("indexes nested too deeply at {d}")));
    }
    match content.info(&d)? {
        Some(s) if s == desc.size() => {}
        Some(s) => {
            return Err(Error::SizeMismatch {
                digest: d,
                expected: desc.size(),
                actual: s,
            })
        }
        None => {
            return Err(Error::archive(format!(
                "blob {d} is referenced but not in the archive"
            )))
        }
    }
    keep.insert(d.clone());
    match parse_manifest(
        &content.read_verified(&d)?,
        Some(desc.media_type().as_ref()),
    )? {
        Manifest::Index(idx) => {
            let mut present = 0;
            for c in idx.manifests() {
                let cd = Digest::of_descriptor(c)?;
                if content.info(&cd)?.is_some() {
                    check_image_tree(content, c, depth + 1, keep)?;
                    present += 1;
                }
            }
            if present == 0 {
                return Err(Error::archive(format!(
                    "index {d} has none of its manifests in the archive"
                )));
            }
        }
        Manifest::Image(m) => {
            let cd = Digest::of_descriptor(m.config())?;
            let cfg = content.read_verified(&cd)?;
            if cfg.len() as u64 != m.config().size() {
                return Err(Error::SizeMismatch {
                    digest: cd,
                    expected: m.config().size(),
                    actual: cfg.len() as u64,
                });
            }
            keep.insert(cd);
            for l in m.layers() {
                let ld = Digest::of_descriptor(l)?;
                match content.info(&ld)? {
                    Some(s) if s == l.size() => {}
                    Some(s) => {
                        return Err(Error::SizeMismatch {
                            digest: ld,
                            expected: l.size(),
                            actual: s,
                        })
                    }
                    None => {
                        return Err(Error::archive(format!(
                            "layer {ld} is referenced but not in the archive"
                        )))
                    }
                }
                keep.insert(ld);
            }
        }
    }
    Ok(())
}

fn load_oci(
    content: &ContentStore,
    st: &mut Staged,
    keep: &mut BTreeSet<Digest>,
) -> Result<Vec<(Option<String>, Descriptor)>> {
    if let Some(layout) = st.meta.get("oci-layout") {
        let v: serde_json::Value = serde_json::from_slice(layout)
            .map_err(|e| Error::archive(format!("oci-layout: {e}")))?;
        let ver = v
            .get("imageLayoutVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if !ver.starts_with("1.") {
            return Err(Error::archive(format!(
                "unsupported imageLayoutVersion {ver:?}"
            )));
        }
    }
    let index: ImageIndex = serde_json::from_slice(st.bytes(content, "index.json")?.as_slice())
        .map_err(|e| Error::archive(format!("index.json: {e}")))?;
    if index.manifests().len() > MAX_IMAGES {
        return Err(Error::archive("index.json lists too many manifests"));
    }
    let mut out = Vec::new();
    for desc in index.manifests() {
        check_image_tree(content, desc, 0, keep)?;
        let ann = desc.annotations().clone().unwrap_or_default();
        let name = ann
            .get(ANNOTATION_IMAGE_NAME)
            .and_then(|n| Reference::parse(n).ok())
            .or_else(|| {
                ann.get(ANNOTATION_REF_NAME)
                    .filter(|n| n.contains('/') || n.contains(':'))
                    .and_then(|n| Reference::parse(n).ok())
            })
            .map(|r| r.full());
        let mut d = desc.clone();
        d.set_annotations(None);
        out.push((name, d));
    }
    Ok(out)
}

fn layer_diff_id(content: &ContentStore, d: &Digest) -> Result<(Compression, Option<Digest>)> {
    let mut f = BufReader::new(content.read(d)?);
    let head = f.fill_buf().ctx(|| format!("reading layer {d}"))?.to_vec();
    match detect_compression(&head) {
        Compression::None => Ok((Compression::None, Some(d.clone()))),
        Compression::Gzip => {
            let mut h = Hasher::new();
            io::copy(&mut flate2::read::MultiGzDecoder::new(f), &mut h)
                .ctx(|| format!("decompressing layer {d}"))?;
            Ok((Compression::Gzip, Some(h.finish())))
        }
        Compression::Zstd => Ok((Compression::Zstd, None)),
    }
}

fn load_docker(
    content: &ContentStore,
    st: &mut Staged,
    keep: &mut BTreeSet<Digest>,
) -> Result<Vec<(Option<String>, Descriptor)>> {
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(st.bytes(content, "manifest.json")?.as_slice())
            .map_err(|e| Error::archive(format!("manifest.json: {e}")))?;
    if entries.len() > MAX_IMAGES {
        return Err(Error::archive("manifest.json lists too many images"));
    }
    let mut out = Vec::new();
    for e in &entries {
        let cfg_bytes = st.bytes(content, &e.config)?;
        let cfg: ImageConfiguration = serde_json::from_slice(&cfg_bytes)
            .map_err(|err| Error::archive(format!("image config {:?}: {err}", e.config)))?;
        let diff_ids: Vec<Digest> = cfg
            .rootfs()
            .diff_ids()
            .iter()
            .map(|s| Digest::parse(s))
            .collect::<Result<_>>()?;
        if diff_ids.len() != e.layers.len() {
            return Err(Error::archive(format!(
                "image config {:?} lists {} diff ids but manifest.json {} layers",
                e.config,
                diff_ids.len(),
                e.layers.len()
            )));
        }
        let cfg_digest = st.write_blob(content, &cfg_bytes)?;
        keep.insert(cfg_digest.clone());
        let mut layers = Vec::new();
        for (path, want) in e.layers.iter().zip(&diff_ids) {
            let (d, size) = st.blob(content, path)?;
            let (comp, diff_id) = layer_diff_id(content, &d)?;
            if let Some(got) = diff_id {
                if &got != want {
                    return Err(Error::DigestMismatch {
                        expected: want.clone(),
                        actual: got,
                    });
                }
            }
            let mt = match comp {
                Compression::None => MEDIA_TYPE_OCI_LAYER_TAR,
                Compression::Gzip => MEDIA_TYPE_OCI_LAYER_GZIP,
                Compression::Zstd => MEDIA_TYPE_OCI_LAYER_ZSTD,
            };
            keep.insert(d.clone());
            layers.push(serde_json::json!({"mediaType": mt, "digest": d, "size": size}));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": cfg_digest, "size": cfg_bytes.len()},
            "layers": layers,
        });
        let mbytes = json_bytes(&manifest, "synthesised manifest")?;
        let md = st.write_blob(content, &mbytes)?;
        keep.insert(md.clone());
        let desc = Descriptor::new(MediaType::ImageManifest, mbytes.len() as u64, md.to_oci());
        let tags = e.repo_tags.clone().unwrap_or_default();
        if tags.is_empty() {
            out.push((None, desc));
        } else {
            for t in tags {
                let r = Reference::parse(&t)?;
                out.push((Some(r.full()), desc.clone()));
            }
        }
    }
    Ok(out)
}

struct Tee<'a, R> {
    inner: R,
    out: &'a mut crate::content::Writer,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

fn oci_err(what: &str) -> impl FnOnce(oci_spec::OciSpecError) -> Error + '_ {
    move |e| Error::InvalidManifest {
        digest_or_ref: "import".to_string(),
        reason: format!("building {what}: {e}"),
    }
}

/// A tar stream without its outer compression: gzip or zstd (told by their
/// magic bytes), as `docker load` and `docker import` take them; xz and bzip2
/// are named in a clear error.
fn decompressed<'a>(input: impl Read + 'a, what: &str) -> Result<Box<dyn Read + 'a>> {
    // The magic bytes, however a pipe splits the first read.
    let mut input = input;
    let mut head = Vec::with_capacity(8);
    (&mut input)
        .take(8)
        .read_to_end(&mut head)
        .ctx(|| format!("reading the {what}"))?;
    let input = BufReader::with_capacity(1 << 20, std::io::Cursor::new(head.clone()).chain(input));
    Ok(match detect_compression(&head) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(input)
                .ctx(|| format!("reading the zstd {what}"))?,
        ),
        Compression::None if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) => {
            return Err(Error::archive(format!(
                "the {what} is xz-compressed, which berth does not read: decompress it (xz -d) or use gzip or zstd"
            )))
        }
        Compression::None if head.starts_with(b"BZh") => {
            return Err(Error::archive(format!(
                "the {what} is bzip2-compressed, which berth does not read: decompress it (bunzip2) or use gzip or zstd"
            )))
        }
        Compression::None => Box::new(input),
    })
}

/// `docker import`: a rootfs tarball (plain, gzip or zstd) as a one-layer image with the given
/// config; returns the manifest descriptor. The layer is stored uncompressed (its digest
/// is its diff id); the input must be a valid tar.
pub fn import_rootfs(
    content: &ContentStore,
    input: impl Read,
    config: Config,
) -> Result<Descriptor> {
    use oci_spec::image::{Arch, HistoryBuilder, ImageConfigurationBuilder, Os, RootFsBuilder};
    let reader = decompressed(input, "import input")?;
    let key = format!(
        "import-{}-{:?}-{}",
        std::process::id(),
        std::thread::current().id(),
        now_rfc3339()
    );
    let mut w = content.writer(&key, None)?;
    w.truncate()?;
    let res = (|| -> Result<()> {
        let mut ar = tar::Archive::new(Tee {
            inner: reader,
            out: &mut w,
        });
        let mut n = 0usize;
        for e in ar
            .entries()
            .map_err(|e| Error::archive(format!("import input is not a tar: {e}")))?
        {
            e.map_err(|e| Error::archive(format!("import input is not a valid tar: {e}")))?;
            n += 1;
        }
        if n == 0 {
            return Err(Error::archive("import input is an empty tar"));
        }
        let mut rest = ar.into_inner();
        io::copy(&mut rest, &mut io::sink()).ctx(|| "reading import input".to_string())?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = w.abort();
        return Err(e);
    }
    let size = w.written();
    let layer = w.commit()?;
    let (_, arch, variant) = host_platform();
    let now = now_rfc3339();
    let mut b = ImageConfigurationBuilder::default()
        .created(now.clone())
        .architecture(Arch::from(arch.as_str()))
        .os(Os::Linux)
        .config(config)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![layer.to_string()])
                .build()
                .map_err(oci_err("rootfs"))?,
        )
        .history(vec![HistoryBuilder::default()
            .created(now)
            .created_by("berth import")
            .comment("Imported from tarball")
            .build()
            .map_err(oci_err("history"))?]);
    if let Some(v) = variant {
        b = b.variant(v);
    }
    let cfg = b.build().map_err(oci_err("image config"))?;
    let cfg_bytes = json_bytes(&cfg, "image config")?;
    let cfg_digest = content.write_blob(&cfg_bytes)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": cfg_digest, "size": cfg_bytes.len()},
        "layers": [{"mediaType": MEDIA_TYPE_OCI_LAYER_TAR, "digest": layer, "size": size}],
    });
    let mbytes = json_bytes(&manifest, "manifest")?;
    let md = content.write_blob(&mbytes)?;
    Ok(Descriptor::new(
        MediaType::ImageManifest,
        mbytes.len() as u64,
        md.to_oci(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::{referenced_blobs, resolve_image, ImageRecord, ImageStore};
    use oci_spec::image::ConfigBuilder;
    use std::path::Path;
    use std::process::Command;

    fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1);
            b.append_data(&mut h, name, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gz");
        e.finish().expect("gz")
    }

    /// A two-layer image (plain tar + gzip tar) in the store; returns its manifest digest.
    fn build_image(cs: &ContentStore, tag: &str) -> Digest {
        let l1 = layer_tar(&[("hello.txt", format!("hello {tag}\n").as_bytes())]);
        let l2_plain = layer_tar(&[("etc/motd", b"welcome\n"), ("bin/sh", b"#!fake\n")]);
        let l2 = gzip(&l2_plain);
        let d1 = cs.write_blob(&l1).expect("l1");
        let d2 = cs.write_blob(&l2).expect("l2");
        let cfg = serde_json::json!({
            "architecture": host_platform().1, "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(&l1), Digest::of(&l2_plain)]},
            "history": [{"created_by": "test"}, {"created_by": "test2"}],
        });
        let cfg = serde_json::to_vec(&cfg).expect("cfg");
        let dc = cs.write_blob(&cfg).expect("cfg");
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": dc, "size": cfg.len()},
            "layers": [
                {"mediaType": MEDIA_TYPE_OCI_LAYER_TAR, "digest": d1, "size": l1.len()},
                {"mediaType": MEDIA_TYPE_OCI_LAYER_GZIP, "digest": d2, "size": l2.len()},
            ],
        });
        cs.write_blob(&serde_json::to_vec_pretty(&m).expect("m"))
            .expect("manifest")
    }

    fn store() -> (tempfile::TempDir, ContentStore) {
        let t = tempfile::tempdir().expect("tempdir");
        let cs = ContentStore::open(&t.path().join("content")).expect("open");
        (t, cs)
    }

    fn same_image(a: &Image, b: &Image) {
        assert_eq!(a.config_digest, b.config_digest);
        let da: Vec<_> = a.layers.iter().map(|l| l.digest().clone()).collect();
        let db: Vec<_> = b.layers.iter().map(|l| l.digest().clone()).collect();
        assert_eq!(da, db);
    }

    #[test]
    fn docker_archive_round_trip() {
        let (_t1, cs) = store();
        let md = build_image(&cs, "a");
        let img = resolve_image(&cs, &md).expect("resolve");
        let mut tar = Vec::new();
        save_docker_archive(
            &cs,
            &[
                ("busybox:latest".into(), img.clone()),
                ("me/app:v1".into(), img.clone()),
            ],
            &mut tar,
        )
        .expect("save");
        let (_t2, cs2) = store();
        let loaded = load_archive(&cs2, tar.as_slice()).expect("load");
        let names: Vec<_> = loaded.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(
            names,
            vec![
                Some("docker.io/library/busybox:latest".to_string()),
                Some("docker.io/me/app:v1".to_string())
            ]
        );
        let d = Digest::of_descriptor(&loaded[0].1).expect("digest");
        assert_eq!(d, md, "docker 25-style archive keeps the manifest");
        same_image(&img, &resolve_image(&cs2, &d).expect("resolve loaded"));
        assert_eq!(cs.list().expect("l"), cs2.list().expect("l"));
    }

    #[test]
    fn legacy_docker_archive_loads() {
        // docker < 25: <id>/layer.tar (a symlink for a shared layer), <hex>.json, manifest.json
        let (_t, cs) = store();
        let l1 = layer_tar(&[("a", b"1")]);
        let cfg = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(&l1), Digest::of(&l1)]},
        }))
        .expect("cfg");
        let cfg_name = format!("{}.json", Digest::of(&cfg).hex());
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": cfg_name, "RepoTags": ["localhost:5000/x:1"],
            "Layers": ["aaa/layer.tar", "bbb/layer.tar"],
        }]))
        .expect("m");
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in [
            ("aaa/layer.tar", &l1),
            (cfg_name.as_str(), &cfg),
            ("manifest.json", &manifest),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, p, data.as_slice()).expect("append");
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "bbb/layer.tar", "../aaa/layer.tar")
            .expect("link");
        let tar = b.into_inner().expect("tar");
        let loaded = load_archive(&cs, tar.as_slice()).expect("load");
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0.as_deref(), Some("localhost:5000/x:1"));
        let img =
            resolve_image(&cs, &Digest::of_descriptor(&loaded[0].1).expect("d")).expect("resolve");
        assert_eq!(img.config_digest, Digest::of(&cfg));
        assert_eq!(img.layers.len(), 2);
        assert_eq!(
            img.layers[0].media_type().to_string(),
            MEDIA_TYPE_OCI_LAYER_TAR
        );
        // blobs: layer, config, manifest; nothing else left behind
        assert_eq!(cs.list().expect("list").len(), 3);
        assert!(cs.ingests().expect("ingests").is_empty());
    }

    #[test]
    fn oci_archive_round_trip_and_index() {
        let (t, cs) = store();
        let md = build_image(&cs, "b");
        let img = resolve_image(&cs, &md).expect("resolve");
        let mut tar = Vec::new();
        save_oci_archive(
            &cs,
            &[("example.com/x/y:2".into(), img.clone(), md.clone())],
            &mut tar,
        )
        .expect("save");
        let (_t2, cs2) = store();
        let loaded = load_archive(&cs2, tar.as_slice()).expect("load");
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0.as_deref(), Some("example.com/x/y:2"));
        assert_eq!(Digest::of_descriptor(&loaded[0].1).expect("d"), md);
        same_image(&img, &resolve_image(&cs2, &md).expect("resolve"));

        // an index over the manifest: saved whole, loaded, resolved to the host platform
        let (os, arch, variant) = host_platform();
        let mut plat = serde_json::json!({"os": os, "architecture": arch});
        if let Some(v) = variant {
            plat["variant"] = v.into();
        }
        let msize = cs.info(&md).expect("info").expect("present");
        let idx = serde_json::json!({"schemaVersion": 2, "mediaType": crate::manifest::MEDIA_TYPE_OCI_INDEX,
            "manifests": [{"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": md, "size": msize, "platform": plat}]});
        let idx_d = cs
            .write_blob(&serde_json::to_vec(&idx).expect("idx"))
            .expect("write idx");
        let mut tar = Vec::new();
        save_oci_archive(
            &cs,
            &[("multi:1".into(), img.clone(), idx_d.clone())],
            &mut tar,
        )
        .expect("save");
        let (_t3, cs3) = store();
        let loaded = load_archive(&cs3, tar.as_slice()).expect("load");
        assert_eq!(Digest::of_descriptor(&loaded[0].1).expect("d"), idx_d);
        let r = resolve_image(&cs3, &idx_d).expect("resolve index");
        assert_eq!(r.manifest_digest, md);

        // referenced blobs
        let is = ImageStore::open(t.path()).expect("images");
        is.put(ImageRecord::new(
            "docker.io/library/multi:1",
            loaded[0].1.clone(),
        ))
        .expect("put");
        let refs =
            referenced_blobs(&cs3, &ImageStore::open(t.path()).expect("images")).expect("refs");
        let all: BTreeSet<Digest> = cs3
            .list()
            .expect("list")
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(refs, all);
    }

    fn raw_tar(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn refuses_unsafe_and_corrupt_archives() {
        let (_t, cs) = store();
        for name in [&b"../evil.json"[..], b"/etc/passwd", b"a/../../x"] {
            let tar = raw_tar(&[(name, b"{}")]);
            match load_archive(&cs, tar.as_slice()) {
                Err(Error::Archive { reason }) => assert!(reason.contains("path"), "{reason}"),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(name)),
            }
        }
        // a symlink escaping the archive
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "a/layer.tar", "../../etc/shadow")
            .expect("link");
        let tar = b.into_inner().expect("tar");
        assert!(matches!(
            load_archive(&cs, tar.as_slice()),
            Err(Error::Archive { .. })
        ));

        // a blob whose bytes do not match its name
        let good = Digest::of(b"good");
        let p = format!("blobs/sha256/{}", good.hex());
        let tar = raw_tar(&[(p.as_bytes(), b"evil")]);
        assert!(matches!(
            load_archive(&cs, tar.as_slice()),
            Err(Error::DigestMismatch { .. })
        ));
        // neither format
        let tar = raw_tar(&[(b"hello.txt", b"hi")]);
        assert!(matches!(
            load_archive(&cs, tar.as_slice()),
            Err(Error::Archive { .. })
        ));
        assert!(
            cs.list().expect("list").is_empty(),
            "nothing may be left behind"
        );
        assert!(cs.ingests().expect("ingests").is_empty());

        // an OCI layout whose manifest names a missing layer: blobs that came in are removed
        let (_t2, src) = store();
        let md = build_image(&src, "c");
        let img = resolve_image(&src, &md).expect("resolve");
        let mut tar = Vec::new();
        save_oci_archive(&src, &[("x:1".into(), img.clone(), md)], &mut tar).expect("save");
        let mut ar = tar::Archive::new(tar.as_slice());
        let skip = format!("blobs/sha256/{}", img.layers[0].digest().digest());
        let mut b = tar::Builder::new(Vec::new());
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").to_string_lossy().into_owned();
            if path == skip {
                continue;
            }
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("read");
            b.append(&h, data.as_slice()).expect("append");
        }
        let broken = b.into_inner().expect("tar");
        let err = load_archive(&cs, broken.as_slice()).expect_err("must fail");
        assert!(
            err.to_string().contains(img.layers[0].digest().digest()),
            "{err}"
        );
        assert!(
            cs.list().expect("list").is_empty(),
            "nothing may be left behind"
        );
    }

    #[test]
    fn archives_are_read_through_gzip_and_zstd_and_xz_is_named() {
        let plain = b"a tar stream".to_vec();
        let read = |bytes: Vec<u8>| -> Result<Vec<u8>> {
            let mut out = Vec::new();
            decompressed(std::io::Cursor::new(bytes), "archive")?
                .read_to_end(&mut out)
                .unwrap();
            Ok(out)
        };
        assert_eq!(read(plain.clone()).unwrap(), plain);
        assert_eq!(read(gzip(&plain)).unwrap(), plain);
        let zst = zstd::stream::encode_all(plain.as_slice(), 3).unwrap();
        assert_eq!(read(zst).unwrap(), plain);
        let xz = [&[0xfd, b'7', b'z', b'X', b'Z', 0][..], b"rest"].concat();
        let err = read(xz).err().unwrap().to_string();
        assert!(err.contains("xz-compressed"), "{err}");
    }

    #[test]
    fn import_rootfs_plain_and_gzip() {
        let (_t, cs) = store();
        let rootfs = layer_tar(&[("bin/busybox", b"elf"), ("etc/hostname", b"x\n")]);
        let cfg = ConfigBuilder::default()
            .cmd(vec!["/bin/sh".to_string()])
            .build()
            .expect("config");
        let d1 = import_rootfs(&cs, rootfs.as_slice(), cfg.clone()).expect("import plain");
        let img = resolve_image(&cs, &Digest::of_descriptor(&d1).expect("d")).expect("resolve");
        assert_eq!(img.layers.len(), 1);
        assert_eq!(
            Digest::of_descriptor(&img.layers[0]).expect("d"),
            Digest::of(&rootfs)
        );
        assert_eq!(img.diff_ids().expect("diff ids"), vec![Digest::of(&rootfs)]);
        assert_eq!(
            img.config.config().as_ref().and_then(|c| c.cmd().clone()),
            Some(vec!["/bin/sh".to_string()])
        );
        let d2 = import_rootfs(&cs, gzip(&rootfs).as_slice(), cfg.clone()).expect("import gzip");
        let img2 = resolve_image(&cs, &Digest::of_descriptor(&d2).expect("d")).expect("resolve");
        assert_eq!(img2.layers[0].digest(), img.layers[0].digest());
        let before = cs.list().expect("list");
        assert!(import_rootfs(&cs, &b"this is not a tar at all, just some text"[..], cfg).is_err());
        assert_eq!(cs.list().expect("list"), before);
        assert!(cs.ingests().expect("ingests").is_empty());
    }

    fn skopeo() -> bool {
        Command::new("skopeo")
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn run_skopeo(args: &[&str]) -> String {
        let out = Command::new("skopeo")
            .arg("--insecure-policy")
            .args(args)
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn write_file(p: &Path, data: &[u8]) {
        std::fs::write(p, data).expect("write file");
    }

    #[test]
    fn skopeo_interoperability() {
        if !skopeo() {
            eprintln!("skopeo not installed: skipping");
            return;
        }
        let (t, cs) = store();
        let md = build_image(&cs, "s");
        let img = resolve_image(&cs, &md).expect("resolve");

        // our docker-archive, inspected by skopeo
        let mut tar = Vec::new();
        save_docker_archive(&cs, &[("busybox:latest".into(), img.clone())], &mut tar)
            .expect("save");
        let da = t.path().join("docker.tar");
        write_file(&da, &tar);
        let out = run_skopeo(&["inspect", &format!("docker-archive:{}", da.display())]);
        assert!(out.contains(img.layers[0].digest().digest()), "{out}");
        run_skopeo(&[
            "inspect",
            "--config",
            &format!("docker-archive:{}:busybox:latest", da.display()),
        ]);

        // our oci-archive, inspected by skopeo
        let mut tar = Vec::new();
        save_oci_archive(
            &cs,
            &[("busybox:latest".into(), img.clone(), md.clone())],
            &mut tar,
        )
        .expect("save");
        let oa = t.path().join("oci.tar");
        write_file(&oa, &tar);
        let out = run_skopeo(&["inspect", &format!("oci-archive:{}", oa.display())]);
        assert!(out.contains(img.layers[1].digest().digest()), "{out}");

        // an OCI dir built here, converted by skopeo to a docker-archive, loaded by us
        let dir = t.path().join("ocidir");
        tar::Archive::new(tar.as_slice())
            .unpack(&dir)
            .expect("unpack");
        let from_skopeo = t.path().join("from-skopeo.tar");
        run_skopeo(&[
            "copy",
            &format!("oci:{}:busybox:latest", dir.display()),
            &format!("docker-archive:{}:myname:mytag", from_skopeo.display()),
        ]);
        let (_t2, cs2) = store();
        let f = std::fs::File::open(&from_skopeo).expect("open");
        let loaded = load_archive(&cs2, f).expect("load skopeo docker-archive");
        assert_eq!(loaded.len(), 1);
        assert_eq!(
            loaded[0].0.as_deref(),
            Some("docker.io/library/myname:mytag")
        );
        let got =
            resolve_image(&cs2, &Digest::of_descriptor(&loaded[0].1).expect("d")).expect("resolve");
        // skopeo rewrites the config when converting to Docker schema2; layers stay
        assert_eq!(got.diff_ids().expect("d"), img.diff_ids().expect("d"));

        // skopeo's oci-archive (from our docker-archive) loads too
        let skopeo_oci = t.path().join("skopeo-oci.tar");
        run_skopeo(&[
            "copy",
            &format!("docker-archive:{}", da.display()),
            &format!("oci-archive:{}:other:1", skopeo_oci.display()),
        ]);
        let (_t3, cs3) = store();
        let f = std::fs::File::open(&skopeo_oci).expect("open");
        let loaded = load_archive(&cs3, f).expect("load skopeo oci-archive");
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0.as_deref(), Some("docker.io/library/other:1"));
        let got =
            resolve_image(&cs3, &Digest::of_descriptor(&loaded[0].1).expect("d")).expect("resolve");
        assert_eq!(got.diff_ids().expect("d"), img.diff_ids().expect("d"));
    }
}
