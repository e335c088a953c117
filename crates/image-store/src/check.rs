//! Consistency check of the content store and the image records
//! (`berth system check`): every blob's digest, every image's manifest chain,
//! orphan blobs and interrupted ingests.

use crate::content::ContentStore;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use crate::images::{referenced_blobs, resolve_image, ImageStore};
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::PathBuf;

/// Something that can be removed without losing anything an image needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// A blob no image record references.
    OrphanBlob(Digest),
    /// An ingest no writer holds: the partial write of an interrupted command.
    Ingest(PathBuf),
    /// A file in the blob directory that is not named by a digest.
    Stray(PathBuf),
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leftover::OrphanBlob(d) => write!(f, "blob {d} is referenced by no image"),
            Leftover::Ingest(p) => write!(f, "interrupted write {}", p.display()),
            Leftover::Stray(p) => write!(f, "stray file {}", p.display()),
        }
    }
}

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct Report {
    /// Blobs verified.
    pub blobs: usize,
    /// Image records checked.
    pub images: usize,
    /// Inconsistencies, one line each (a corrupt blob, a broken manifest chain).
    pub problems: Vec<String>,
    /// Removable leftovers (see [`repair`]).
    pub leftovers: Vec<Leftover>,
}

fn hash_file(path: &std::path::Path) -> io::Result<Digest> {
    let mut f = File::open(path)?;
    let mut h = Hasher::new();
    io::copy(&mut f, &mut h)?;
    Ok(h.finish())
}

/// Whether no writer holds the ingest lock in `dir` (an absent lock counts as free).
fn ingest_is_idle(dir: &std::path::Path) -> bool {
    match OpenOptions::new().read(true).open(dir.join("lock")) {
        Ok(f) => f.try_lock().is_ok(),
        Err(_) => true,
    }
}

/// Verify every blob's digest and every image record's manifest chain (manifest,
/// platform manifest of an index, config, layers present with their sizes), and
/// list orphan blobs, idle ingests and stray files.
///
/// The caller should hold the engine's collection lock exclusively, so no pull is
/// between writing its blobs and recording its image.
pub fn check(content: &ContentStore, images: &ImageStore) -> Result<Report> {
    check_with(content, images, true, &BTreeSet::new())
}

/// [`check`], re-hashing the blobs only when `verify_digests` (finding leftovers
/// does not need it); blobs in `kept` (e.g. the build cache's layers) are
/// referenced too, never orphans.
pub fn check_with(
    content: &ContentStore,
    images: &ImageStore,
    verify_digests: bool,
    kept: &BTreeSet<Digest>,
) -> Result<Report> {
    let mut report = Report::default();
    let blobs_dir = content.root().join("blobs").join("sha256");
    let mut present = BTreeSet::new();
    for entry in fs::read_dir(&blobs_dir).ctx(|| format!("listing {}", blobs_dir.display()))? {
        let entry = entry.ctx(|| format!("listing {}", blobs_dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(d) = Digest::from_hex(&name) else {
            report.leftovers.push(Leftover::Stray(entry.path()));
            continue;
        };
        report.blobs += 1;
        if !verify_digests {
            present.insert(d);
            continue;
        }
        match hash_file(&entry.path()) {
            Ok(actual) if actual == d => {}
            Ok(actual) => report.problems.push(format!(
                "blob {d} is corrupt: its content hashes to {actual}"
            )),
            Err(e) => report
                .problems
                .push(format!("blob {d} cannot be read: {e}")),
        }
        present.insert(d);
    }
    for rec in images.list()? {
        report.images += 1;
        let name = &rec.name;
        let checked = rec
            .digest()
            .and_then(|d| resolve_image(content, &d))
            .and_then(|image| {
                for l in &image.layers {
                    let d = Digest::of_descriptor(l)?;
                    match content.info(&d)? {
                        None => return Err(Error::BlobNotFound(d)),
                        Some(size) if size != l.size() => {
                            return Err(Error::SizeMismatch {
                                digest: d,
                                expected: l.size(),
                                actual: size,
                            })
                        }
                        Some(_) => {}
                    }
                }
                Ok(())
            });
        if let Err(e) = checked {
            report.problems.push(format!("image {name}: {e}"));
        }
    }
    // Without the full set of referenced blobs nothing may be called an orphan.
    match referenced_blobs(content, images) {
        Ok(referenced) => report.leftovers.extend(
            present
                .into_iter()
                .filter(|d| !referenced.contains(d) && !kept.contains(d))
                .map(Leftover::OrphanBlob),
        ),
        Err(e) => report
            .problems
            .push(format!("orphan blobs not looked for: {e}")),
    }
    let ingest = content.root().join("ingest");
    for entry in fs::read_dir(&ingest).ctx(|| format!("listing {}", ingest.display()))? {
        let entry = entry.ctx(|| format!("listing {}", ingest.display()))?;
        let path = entry.path();
        let tomb = entry
            .file_name()
            .to_string_lossy()
            .starts_with(".removing-");
        if !path.is_dir() || tomb || ingest_is_idle(&path) {
            report.leftovers.push(Leftover::Ingest(path));
        }
    }
    Ok(report)
}

/// Remove `leftovers` found by [`check`]. An ingest a writer took up meanwhile is
/// left alone. Returns how many were removed.
pub fn repair(content: &ContentStore, leftovers: &[Leftover]) -> Result<usize> {
    let mut removed = 0;
    for l in leftovers {
        match l {
            Leftover::OrphanBlob(d) => match content.delete(d) {
                Ok(()) => removed += 1,
                Err(Error::BlobNotFound(_)) => {}
                Err(e) => return Err(e),
            },
            Leftover::Stray(p) => {
                fs::remove_file(p).ctx(|| format!("removing {}", p.display()))?;
                removed += 1;
            }
            Leftover::Ingest(p) if !p.is_dir() => {
                fs::remove_file(p).ctx(|| format!("removing {}", p.display()))?;
                removed += 1;
            }
            Leftover::Ingest(p) => {
                // Hold the ingest's lock while removing it, so a writer cannot resume it
                // under us; a writer that opens it afterwards sees it gone and starts anew.
                let lock = OpenOptions::new().read(true).open(p.join("lock")).ok();
                if lock.as_ref().is_some_and(|f| f.try_lock().is_err()) {
                    continue;
                }
                match fs::remove_dir_all(p) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(format!("removing {}", p.display()), e)),
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::ImageRecord;
    use oci_spec::image::{
        DescriptorBuilder, ImageConfigurationBuilder, ImageManifestBuilder, MediaType,
        RootFsBuilder,
    };
    use std::io::Write;

    /// A one-layer image in a fresh store; returns (content, images, layer digest).
    fn store_with_image(dir: &std::path::Path) -> (ContentStore, ImageStore, Digest) {
        let cs = ContentStore::open(&dir.join("content")).expect("content");
        let is = ImageStore::open(&dir.join("images")).expect("images");
        let layer = b"not really a tar, but a blob".to_vec();
        let ld = cs.write_blob(&layer).expect("layer");
        let config = ImageConfigurationBuilder::default()
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(vec![ld.to_string()])
                    .build()
                    .expect("rootfs"),
            )
            .build()
            .expect("config");
        let cbytes = serde_json::to_vec(&config).expect("json");
        let cd = cs.write_blob(&cbytes).expect("config blob");
        let desc = |mt: MediaType, d: &Digest, size: usize| {
            DescriptorBuilder::default()
                .media_type(mt)
                .digest(d.to_oci())
                .size(size as u64)
                .build()
                .expect("descriptor")
        };
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(desc(MediaType::ImageConfig, &cd, cbytes.len()))
            .layers(vec![desc(MediaType::ImageLayerGzip, &ld, layer.len())])
            .build()
            .expect("manifest");
        let mbytes = serde_json::to_vec(&manifest).expect("json");
        let md = cs.write_blob(&mbytes).expect("manifest blob");
        is.put(ImageRecord::new(
            "docker.io/library/t:1",
            desc(MediaType::ImageManifest, &md, mbytes.len()),
        ))
        .expect("put");
        (cs, is, ld)
    }

    #[test]
    fn a_clean_store_has_nothing_to_report() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (cs, is, _) = store_with_image(tmp.path());
        let r = check(&cs, &is).expect("check");
        assert_eq!((r.blobs, r.images), (3, 1));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert!(r.leftovers.is_empty(), "{:?}", r.leftovers);
    }

    #[test]
    fn corrupt_and_missing_blobs_are_problems() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (cs, is, ld) = store_with_image(tmp.path());
        let p = cs.blob_path(&ld);
        let mut bytes = fs::read(&p).expect("read");
        bytes[0] ^= 1;
        fs::write(&p, &bytes).expect("write");
        let r = check(&cs, &is).expect("check");
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].contains("is corrupt"), "{:?}", r.problems);
        fs::remove_file(&p).expect("rm");
        let r = check(&cs, &is).expect("check");
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].contains("not found"), "{:?}", r.problems);
        // repair never touches what an image needs
        assert_eq!(repair(&cs, &r.leftovers).expect("repair"), 0);
        assert_eq!(cs.list().expect("list").len(), 2);
    }

    #[test]
    fn leftovers_are_found_and_repaired_but_live_ingests_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (cs, is, _) = store_with_image(tmp.path());
        let orphan = cs.write_blob(b"orphan").expect("orphan");
        let mut w = cs.writer("interrupted", None).expect("writer");
        w.write_all(b"half").expect("write");
        drop(w);
        let live = cs.writer("live", None).expect("writer");
        fs::write(tmp.path().join("content/blobs/sha256/junk.tmp"), b"x").expect("stray");
        let r = check(&cs, &is).expect("check");
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.leftovers.len(), 3, "{:?}", r.leftovers);
        assert!(r.leftovers.contains(&Leftover::OrphanBlob(orphan)));
        assert_eq!(repair(&cs, &r.leftovers).expect("repair"), 3);
        let r = check(&cs, &is).expect("check");
        assert!(r.leftovers.is_empty(), "{:?}", r.leftovers);
        assert_eq!(cs.ingests().expect("ingests").len(), 1);
        live.abort().expect("abort");
        assert_eq!(cs.list().expect("list").len(), 3);
    }
}
