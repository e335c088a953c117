//! Image records (names -> manifest descriptors) and image resolution.
//!
//! Records live in `<root>/images.json`, a map name -> record, updated under an
//! exclusive lock on `<root>/images.lock` and written atomically (temp file, fsync,
//! rename, fsync dir), so many `berth` processes can use it at once.

use crate::content::ContentStore;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::manifest::{parse_manifest, select_platform, Manifest};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// One image name and what it points at.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// Full reference with tag or digest, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// The manifest (after platform selection).
    pub target: Descriptor,
    /// RFC 3339 time when the record was made.
    pub created: String,
}

impl ImageRecord {
    /// A record made now.
    pub fn new(name: impl Into<String>, target: Descriptor) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            target,
            created: now_rfc3339(),
        }
    }

    /// The target manifest's digest.
    pub fn digest(&self) -> Result<Digest> {
        Digest::of_descriptor(&self.target)
    }
}

/// The current time as RFC 3339 (seconds precision, UTC).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The image name index.
#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
    db: PathBuf,
    lock: PathBuf,
}

type Records = BTreeMap<String, ImageRecord>;

impl ImageStore {
    /// Open the store at `root`, creating the directory.
    pub fn open(root: &Path) -> Result<ImageStore> {
        fs::create_dir_all(root).ctx(|| format!("creating {}", root.display()))?;
        Ok(ImageStore {
            root: root.to_path_buf(),
            db: root.join("images.json"),
            lock: root.join("images.lock"),
        })
    }

    fn load(&self) -> Result<Records> {
        match fs::read(&self.db) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| Error::Json {
                context: format!("parsing {}", self.db.display()),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Records::new()),
            Err(e) => Err(Error::io(format!("reading {}", self.db.display()), e)),
        }
    }

    fn save(&self, records: &Records) -> Result<()> {
        let tmp = self
            .root
            .join(format!("images.json.tmp-{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(records).map_err(|source| Error::Json {
            context: format!("serialising {}", self.db.display()),
            source,
        })?;
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.db)?;
            File::open(&self.root)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(format!("writing {}", self.db.display()), e)
        })
    }

    /// Run `f` on the records under the exclusive lock and save them if it succeeds.
    ///
    /// For read-modify-write operations that must be atomic (e.g. untag-then-delete).
    pub fn update<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, ImageRecord>) -> Result<T>,
    ) -> Result<T> {
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock)
            .ctx(|| format!("opening {}", self.lock.display()))?;
        crate::content::lock_exclusive(&lock).ctx(|| format!("locking {}", self.lock.display()))?;
        let mut records = self.load()?;
        let before = records.clone();
        let out = f(&mut records)?;
        if records != before {
            self.save(&records)?;
        }
        drop(lock);
        Ok(out)
    }

    /// The record named `name` (exactly as stored: the full reference).
    pub fn get(&self, name: &str) -> Result<Option<ImageRecord>> {
        Ok(self.load()?.remove(name))
    }

    /// All records, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.load()?.into_values().collect())
    }

    /// Add or replace the record with this name (tagging is a put with a new name).
    pub fn put(&self, record: ImageRecord) -> Result<()> {
        self.update(|r| {
            r.insert(record.name.clone(), record);
            Ok(())
        })
    }

    /// Remove the record with this name, returning it.
    pub fn remove(&self, name: &str) -> Result<Option<ImageRecord>> {
        self.update(|r| Ok(r.remove(name)))
    }
}

/// A resolved image: manifest, config and layers read from the content store.
#[derive(Clone, Debug)]
pub struct Image {
    /// Digest of the (platform) manifest.
    pub manifest_digest: Digest,
    /// The manifest.
    pub manifest: ImageManifest,
    /// Digest of the config blob: the image id.
    pub config_digest: Digest,
    /// The image config.
    pub config: ImageConfiguration,
    /// Layer descriptors, base first.
    pub layers: Vec<Descriptor>,
}

impl Image {
    /// Image id as docker shows it: the config digest.
    pub fn id(&self) -> &Digest {
        &self.config_digest
    }

    /// The first 12 hex digits of the id.
    pub fn short_id(&self) -> &str {
        self.config_digest.short()
    }

    /// Uncompressed layer digests (diff ids) from the config.
    pub fn diff_ids(&self) -> Result<Vec<Digest>> {
        self.config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|s| Digest::parse(s))
            .collect()
    }

    /// Total size of the manifest's layers (compressed, as stored).
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size()).sum()
    }
}

fn read_manifest(content: &ContentStore, d: &Digest) -> Result<Manifest> {
    let bytes = content.read_verified(d)?;
    parse_manifest(&bytes, None)
}

/// Resolve an image from its manifest digest. An index is resolved to this host's
/// platform (the returned `manifest_digest` is then the platform manifest's).
pub fn resolve_image(content: &ContentStore, manifest_digest: &Digest) -> Result<Image> {
    let mut digest = manifest_digest.clone();
    for _ in 0..4 {
        let manifest = match read_manifest(content, &digest)? {
            Manifest::Index(idx) => {
                let d = select_platform(&idx, manifest_digest.as_str())?;
                digest = Digest::of_descriptor(&d)?;
                continue;
            }
            Manifest::Image(m) => m,
        };
        let bad = |reason: String| Error::InvalidManifest {
            digest_or_ref: digest.to_string(),
            reason,
        };
        let config_digest = Digest::of_descriptor(manifest.config())?;
        let config_bytes = content.read_verified(&config_digest)?;
        if config_bytes.len() as u64 != manifest.config().size() {
            return Err(Error::SizeMismatch {
                digest: config_digest,
                expected: manifest.config().size(),
                actual: config_bytes.len() as u64,
            });
        }
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| bad(format!("image config {config_digest} is malformed: {e}")))?;
        let layers = manifest.layers().clone();
        if config.rootfs().diff_ids().len() != layers.len() {
            return Err(bad(format!(
                "manifest has {} layers but config {config_digest} lists {} diff ids",
                layers.len(),
                config.rootfs().diff_ids().len()
            )));
        }
        return Ok(Image {
            manifest_digest: digest,
            manifest,
            config_digest,
            config,
            layers,
        });
    }
    Err(Error::InvalidManifest {
        digest_or_ref: manifest_digest.to_string(),
        reason: "indexes nested too deeply".to_string(),
    })
}

/// Blobs referenced by any image record (manifests including indexes, configs,
/// layers) -- for prune/GC. Children of an index that are not in the store are skipped.
pub fn referenced_blobs(content: &ContentStore, images: &ImageStore) -> Result<BTreeSet<Digest>> {
    let mut set = BTreeSet::new();
    for rec in images.list()? {
        let d = rec.digest()?;
        add_manifest_refs(content, &d, &mut set, 0)?;
    }
    Ok(set)
}

fn add_manifest_refs(
    content: &ContentStore,
    d: &Digest,
    set: &mut BTreeSet<Digest>,
    depth: u32,
) -> Result<()> {
    if !set.insert(d.clone()) || depth > 4 {
        return Ok(());
    }
    let m = match read_manifest(content, d) {
        Ok(m) => m,
        Err(Error::BlobNotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    match m {
        Manifest::Index(idx) => {
            for child in idx.manifests() {
                let cd = Digest::of_descriptor(child)?;
                add_manifest_refs(content, &cd, set, depth + 1)?;
            }
        }
        Manifest::Image(m) => {
            set.insert(Digest::of_descriptor(m.config())?);
            for l in m.layers() {
                set.insert(Digest::of_descriptor(l)?);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::MediaType;

    fn desc(n: u8) -> Descriptor {
        Descriptor::new(
            MediaType::ImageManifest,
            n as u64,
            Digest::of(&[n]).to_oci(),
        )
    }

    #[test]
    fn put_get_list_remove() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = ImageStore::open(tmp.path()).expect("open");
        assert!(s.list().expect("list").is_empty());
        s.put(ImageRecord::new("docker.io/library/a:latest", desc(1)))
            .expect("put");
        s.put(ImageRecord::new("docker.io/library/b:1", desc(2)))
            .expect("put");
        let a = s
            .get("docker.io/library/a:latest")
            .expect("get")
            .expect("present");
        assert_eq!(a.target, desc(1));
        assert_eq!(a.digest().expect("digest"), Digest::of(&[1]));
        assert!(humantime::parse_rfc3339(&a.created).is_ok());
        assert_eq!(s.list().expect("list").len(), 2);
        assert!(s
            .remove("docker.io/library/a:latest")
            .expect("rm")
            .is_some());
        assert!(s
            .remove("docker.io/library/a:latest")
            .expect("rm")
            .is_none());
        assert_eq!(s.list().expect("list").len(), 1);
        // reopened
        let s2 = ImageStore::open(tmp.path()).expect("open");
        assert_eq!(s2.list().expect("list")[0].name, "docker.io/library/b:1");
    }

    #[test]
    fn concurrent_puts_lose_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut hs = Vec::new();
        for t in 0..4u8 {
            let root = tmp.path().to_path_buf();
            hs.push(std::thread::spawn(move || {
                let s = ImageStore::open(&root).expect("open");
                for i in 0..20u8 {
                    s.put(ImageRecord::new(format!("x/t{t}:{i}"), desc(i)))
                        .expect("put");
                }
            }));
        }
        for h in hs {
            h.join().expect("join");
        }
        let s = ImageStore::open(tmp.path()).expect("open");
        assert_eq!(s.list().expect("list").len(), 80);
    }
}
