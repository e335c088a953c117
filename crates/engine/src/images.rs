//! Images as a user sees them: pull, push, list, inspect, tag, remove, prune,
//! history, save, load and import, on top of berth-image-store.
//!
//! Blobs are garbage-collected when no image record references them. A
//! store-wide lock (`<root>/gc.lock`) is held shared by commands that add
//! blobs and records (pull, load, import) and exclusively by those that
//! delete blobs (rmi, prune), so a collection never removes the blobs of an
//! image another process is still recording.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use berth_image_store::content::ContentStore;
use berth_image_store::digest::Digest;
use berth_image_store::images::{referenced_blobs, resolve_image, Image, ImageRecord, ImageStore};
use berth_image_store::reference::Reference;
use berth_image_store::registry::{Follower, Registry, RegistryOptions};
use berth_snapshotter::{Kind, Snapshotter};
use serde::Serialize;

use crate::error::{Error, Result};

/// One row of `berth images`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    /// Repository as Docker shows it (`busybox`, `localhost:5000/a/b`).
    pub repository: String,
    /// Tag, or `<none>` for digest-only names.
    pub tag: String,
    /// Manifest digest.
    pub digest: Digest,
    /// Image id: the config digest.
    pub id: Digest,
    /// Creation time from the image config, RFC 3339.
    pub created: Option<String>,
    /// Bytes of the image's blobs (compressed layers plus config).
    pub size: u64,
    /// The config's labels (for `--filter label=`).
    #[serde(skip)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// One row of `history`.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    /// The image id on the newest row; older rows have no image of their own.
    pub id: Option<Digest>,
    /// When the step ran (RFC 3339).
    pub created: String,
    /// The step (a Dockerfile instruction, a command, `berth import`).
    pub created_by: String,
    /// Bytes the step's layer takes unpacked (0 for an empty layer).
    pub size: u64,
    /// The entry's comment.
    pub comment: String,
}

/// What a pull tells the unpacking thread.
enum PullEvent {
    /// The config bytes and the manifest's layers.
    Config(Vec<u8>, Vec<oci_spec::image::Descriptor>),
    /// Layer N started downloading: a reader of it as it arrives.
    Stream(usize, Follower),
    /// Layer N is in the content store.
    Layer(usize),
    /// Layer N was unpacked into the parentless snapshot named (`None`: its
    /// snapshot existed already), or failed to unpack.
    Unpacked(usize, Result<Option<String>>),
    /// The download part of the pull is over (successfully or not).
    Done,
}

/// Layers unpacked at once during a pull: as many as download at once (the
/// default of the cli), since an unpack that follows a download mostly waits.
const UNPACK_WORKERS: usize = 4;

/// One unpack job: the layer, its diff id, its chain id, and a reader of its blob
/// while it downloads (`None`: read the blob from the store).
type Job = (
    oci_spec::image::Descriptor,
    String,
    String,
    Option<Follower>,
);

/// Forwards a pull's progress to the unpacking thread.
struct Pipeline(std::sync::Mutex<std::sync::mpsc::Sender<PullEvent>>);

impl berth_image_store::registry::PullObserver for Pipeline {
    fn config(&self, config: &[u8], layers: &[oci_spec::image::Descriptor]) {
        if let Ok(tx) = self.0.lock() {
            let _ = tx.send(PullEvent::Config(config.to_vec(), layers.to_vec()));
        }
    }

    fn layer_ready(&self, index: usize, _layer: &oci_spec::image::Descriptor) {
        if let Ok(tx) = self.0.lock() {
            let _ = tx.send(PullEvent::Layer(index));
        }
    }

    fn layer_stream(&self, index: usize, _layer: &oci_spec::image::Descriptor, f: Follower) {
        if let Ok(tx) = self.0.lock() {
            let _ = tx.send(PullEvent::Stream(index, f));
        }
    }
}

/// Archive formats of `save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save`'s format, which `docker load` accepts.
    Docker,
    /// An OCI image layout in a tar.
    Oci,
}

/// The image half of the engine.
pub struct Images {
    root: PathBuf,
    content: ContentStore,
    store: ImageStore,
    snapshots: Snapshotter,
}

/// Chain ids of an image's layers, bottom first: the names of their committed
/// snapshots (`chain(L0) = diff_id(L0)`, `chain(Ln) = sha256(chain(Ln-1) + " " + diff_id(Ln))`),
/// so images that share lower layers share their snapshots.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()).to_string(),
        };
        out.push(next);
    }
    out
}

impl Images {
    /// Open (creating if needed) the image state under `root`.
    pub fn open(root: &Path) -> Result<Images> {
        std::fs::create_dir_all(root).map_err(Error::io(format!("create {}", root.display())))?;
        let images = Images {
            root: root.to_path_buf(),
            content: ContentStore::open(&root.join("content"))?,
            store: ImageStore::open(&root.join("images"))?,
            snapshots: Snapshotter::open(&root.join("snapshots"))?,
        };
        let unflushed = images.snapshots.settle(FLUSH_AFTER)?;
        images.restore_unflushed(&unflushed)?;
        Ok(images)
    }

    /// Unpack again, from their blobs, the layers whose files were not known to
    /// be on disk when the machine restarted (`suspects`; a commit does not wait
    /// for the disk, see [`Snapshotter::settle`]), under the exclusive store
    /// lock, so concurrent commands wait for it. Once per process. Such layers
    /// that no image has are garbage: removed when the lock is free, else
    /// restored by a build that reuses them from its cache.
    fn restore_unflushed(&self, suspects: &[String]) -> Result<()> {
        static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if suspects.is_empty() || DONE.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let layers_of_images = || -> Result<std::collections::BTreeMap<String, _>> {
            let mut layers = std::collections::BTreeMap::new();
            for (_, image) in self.all()? {
                let diff_ids = image.config.rootfs().diff_ids();
                for ((layer, diff_id), chain) in
                    image.layers.iter().zip(diff_ids).zip(chain_ids(diff_ids))
                {
                    layers
                        .entry(chain)
                        .or_insert((layer.clone(), diff_id.clone()));
                }
            }
            Ok(layers)
        };
        let layers = layers_of_images()?;
        if suspects.iter().any(|k| layers.contains_key(k)) {
            let _lock = self.lock(true)?;
            let layers = layers_of_images()?;
            for key in self.snapshots.unflushed_before_restart()? {
                let Some((layer, diff_id)) = layers.get(&key) else {
                    continue;
                };
                eprintln!(
                    "berth: unpacking layer {} again: its files were not yet on disk when the machine restarted",
                    layer.digest()
                );
                let blob = self
                    .content
                    .read(&Digest::parse(layer.digest().as_ref())?)?;
                self.snapshots
                    .restore(&key, berth_snapshotter::buffered(blob), diff_id)?;
            }
        }
        if suspects.iter().any(|k| !layers.contains_key(k)) {
            if let Some(_lock) = self.try_lock_exclusive()? {
                self.release_snapshots()?;
            }
        }
        Ok(())
    }

    /// The content store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The store-wide collection lock (see the module doc).
    pub(crate) fn lock(&self, exclusive: bool) -> Result<File> {
        let (path, file) = self.lock_file()?;
        let locked = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        locked.map_err(Error::io(format!("lock {}", path.display())))?;
        Ok(file)
    }

    /// The file of the store-wide collection lock, opened.
    fn lock_file(&self) -> Result<(PathBuf, File)> {
        let path = self.root.join("gc.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io(format!("open {}", path.display())))?;
        Ok((path, file))
    }

    /// The store-wide collection lock, exclusive, if no one holds it now.
    fn try_lock_exclusive(&self) -> Result<Option<File>> {
        let (path, file) = self.lock_file()?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(Error::io(format!("lock {}", path.display()))(e))
            }
        }
    }

    /// Pull `reference` from its registry and record it. Returns the normalised reference and the image.
    pub fn pull(&self, reference: &str, opts: RegistryOptions) -> Result<(Reference, Image)> {
        let reference = Reference::parse(reference)?;
        let _lock = self.lock(false)?;
        let registry = Registry::new(opts)?;
        let before: BTreeSet<Digest> = self.content.list()?.into_iter().map(|(d, _)| d).collect();
        // Layers are unpacked on other threads as they arrive, committed in order.
        let (pulled, unpacked) = std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel();
            let results = tx.clone();
            let worker = scope.spawn(move || self.unpack_as_ready(rx, results));
            let observer = Pipeline(std::sync::Mutex::new(tx));
            let pulled = registry.pull_observed(&self.content, &reference, &observer);
            if let Ok(tx) = observer.0.lock() {
                let _ = tx.send(PullEvent::Done);
            }
            drop(observer);
            let unpacked = worker
                .join()
                .unwrap_or_else(|_| Err(Error::Invalid("the unpacking thread panicked".into())));
            (pulled, unpacked)
        });
        let pulled = match pulled
            .map_err(Error::from)
            .and_then(|p| unpacked.map(|_| p))
        {
            Ok(p) => p,
            Err(e) => {
                // Verified blobs of a failed pull (its manifest, its config) are
                // not left behind; partial downloads stay in the ingest area so
                // the next pull resumes them.
                self.remove_new_unreferenced(&before)?;
                return Err(e);
            }
        };
        let digest = Digest::parse(pulled.manifest.digest().as_ref())?;
        let image = resolve_image(&self.content, &digest)?;
        if let Err(e) = self.unpack(&image) {
            self.remove_new_unreferenced(&before)?;
            return Err(e);
        }
        put_name(
            &self.store,
            &self.content,
            ImageRecord {
                name: reference.full(),
                target: pulled.manifest.clone(),
                created: now(),
            },
        )?;
        Ok((reference, image))
    }

    /// Push a local image to the registry its name points at.
    pub fn push(&self, reference: &str, opts: RegistryOptions) -> Result<Digest> {
        let reference = Reference::parse(reference)?;
        let record = self
            .store
            .get(&reference.full())?
            .ok_or_else(|| Error::NoSuchImage(reference.familiar()))?;
        // Another name of the same image in the same registry is a source for
        // cross-repository blob mounts (the registry then copies nothing).
        let mount_from = self
            .store
            .list()?
            .into_iter()
            .filter(|r| r.target.digest() == record.target.digest())
            .filter_map(|r| Reference::parse(&r.name).ok())
            .find(|r| r.registry == reference.registry && r.repository != reference.repository)
            .map(|r| r.repository);
        let registry = Registry::new(opts)?;
        Ok(registry.push(
            &self.content,
            &record.target,
            &reference,
            mount_from.as_deref(),
        )?)
    }

    fn image_of(&self, record: &ImageRecord) -> Result<Image> {
        let digest = Digest::parse(record.target.digest().as_ref())?;
        Ok(resolve_image(&self.content, &digest)?)
    }

    /// Every image record with its resolved image.
    fn all(&self) -> Result<Vec<(ImageRecord, Image)>> {
        let mut out = Vec::new();
        for record in self.store.list()? {
            let image = self.image_of(&record)?;
            out.push((record, image));
        }
        Ok(out)
    }

    /// Whether no image here answers to `name_or_id` (other lookup errors,
    /// such as an ambiguous id prefix, are errors).
    pub fn is_missing(&self, name_or_id: &str) -> Result<bool> {
        match self.find(name_or_id) {
            Ok(_) => Ok(false),
            Err(Error::NoSuchImage(_)) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Records matching a name (`busybox`, `busybox:1`, `host/a@sha256:..`) or an image id (prefix).
    pub fn find(&self, name_or_id: &str) -> Result<Vec<(ImageRecord, Image)>> {
        if let Ok(reference) = Reference::parse(name_or_id) {
            if let Some(record) = self.store.get(&reference.full())? {
                let image = self.image_of(&record)?;
                return Ok(vec![(record, image)]);
            }
        }
        let prefix = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        let is_hex = !prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_hexdigit());
        if is_hex {
            let matches: Vec<_> = self
                .all()?
                .into_iter()
                .filter(|(_, image)| image.config_digest.hex().starts_with(prefix))
                .collect();
            let ids: BTreeSet<&str> = matches.iter().map(|(_, i)| i.config_digest.hex()).collect();
            if ids.len() > 1 {
                return Err(Error::AmbiguousImage {
                    prefix: prefix.into(),
                    count: ids.len(),
                });
            }
            if !matches.is_empty() {
                return Ok(matches);
            }
        }
        Err(Error::NoSuchImage(name_or_id.to_string()))
    }

    /// The rows of `berth images`, newest first.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let mut rows = Vec::new();
        for (record, image) in self.all()? {
            let (repository, tag) = display_name(&record.name);
            let size =
                image.layers.iter().map(|l| l.size()).sum::<u64>() + image.manifest.config().size();
            rows.push(ImageSummary {
                repository,
                tag,
                digest: image.manifest_digest.clone(),
                id: image.config_digest.clone(),
                created: image.config.created().clone(),
                size,
                labels: image_labels(&image),
            });
        }
        rows.sort_by(|a, b| {
            b.created
                .cmp(&a.created)
                .then(a.repository.cmp(&b.repository))
        });
        Ok(rows)
    }

    /// The image config's `config` object as stored: it keeps what the OCI
    /// type drops (Healthcheck, OnBuild, Shell of built images).
    pub fn raw_config(&self, image: &Image) -> Option<serde_json::Value> {
        let f = self.content().read(&image.config_digest).ok()?;
        let v: serde_json::Value = serde_json::from_reader(std::io::BufReader::new(f)).ok()?;
        Some(v["config"].clone()).filter(|c| c.is_object())
    }

    /// `image inspect`: Docker's fields for one image.
    pub fn inspect(&self, name_or_id: &str) -> Result<serde_json::Value> {
        let matches = self.find(name_or_id)?;
        let (_, image) = &matches[0];
        let records: Vec<ImageRecord> = self
            .all()?
            .into_iter()
            .filter(|(_, i)| i.config_digest == image.config_digest)
            .map(|(r, _)| r)
            .collect();
        let mut tags = Vec::new();
        let mut digests = BTreeSet::new();
        for r in records.iter().filter(|r| !r.name.starts_with(DANGLING)) {
            let reference = Reference::parse(&r.name)?;
            if reference.tag.is_some() {
                tags.push(reference.familiar());
            }
            digests.insert(format!(
                "{}@{}",
                reference.familiar_repository(),
                image.manifest_digest
            ));
        }
        let config = &image.config;
        let diff_ids: Vec<String> = config.rootfs().diff_ids().clone();
        let raw_config = self.raw_config(image);
        Ok(serde_json::json!({
            "Id": image.config_digest.to_string(),
            "RepoTags": tags,
            "RepoDigests": digests,
            "Created": config.created(),
            "Author": config.author(),
            "Architecture": config.architecture().to_string(),
            "Os": config.os().to_string(),
            "Config": raw_config.unwrap_or_else(|| serde_json::json!(config.config())),
            "RootFS": {"Type": "layers", "Layers": diff_ids},
            "Size": image.layers.iter().map(|l| l.size()).sum::<u64>(),
            "Manifest": image.manifest_digest.to_string(),
        }))
    }

    /// `tag SOURCE TARGET`.
    pub fn tag(&self, source: &str, target: &str) -> Result<()> {
        let matches = self.find(source)?;
        let (record, _) = &matches[0];
        let target = tag_reference(target)?;
        put_name(
            &self.store,
            &self.content,
            ImageRecord {
                name: target.full(),
                target: record.target.clone(),
                created: now(),
            },
        )
    }

    /// `rmi`: untag by name; by id remove every tag (with `force` when there are several).
    /// Returns Docker's "Untagged: ..." and "Deleted: ..." lines.
    ///
    /// `in_use` holds the ids of images containers use: removing the last name
    /// of such an image needs `force`, and then the image stays as a dangling
    /// one (`<none>`) so its containers keep working, as Docker does.
    pub fn remove(
        &self,
        name_or_id: &str,
        force: bool,
        in_use: &BTreeSet<String>,
    ) -> Result<Vec<String>> {
        let _lock = self.lock(true)?;
        let matches = self.find(name_or_id)?;
        let by_name = !name_or_id.starts_with(DANGLING)
            && Reference::parse(name_or_id)
                .map(|r| matches.iter().any(|(rec, _)| rec.name == r.full()))
                .unwrap_or(false);
        if !by_name && matches.len() > 1 && !force {
            return Err(Error::MultipleTags {
                id: matches[0].1.config_digest.hex()[..12].to_string(),
            });
        }
        let image = &matches[0].1;
        let id = image.config_digest.to_string();
        let names_left = self
            .store
            .list()?
            .into_iter()
            .filter(|r| !matches.iter().any(|(m, _)| m.name == r.name))
            .filter(|r| {
                self.image_of(r)
                    .is_ok_and(|i| i.config_digest == image.config_digest)
            })
            .count();
        let keep_dangling = in_use.contains(&id) && names_left == 0;
        if keep_dangling && !force {
            return Err(Error::Conflict(format!(
                "conflict: unable to remove {name_or_id} (must force): a container is using its image {}",
                &image.config_digest.hex()[..12]
            )));
        }
        let mut lines = Vec::new();
        for (record, _) in &matches {
            self.store.remove(&record.name)?;
            if !record.name.starts_with(DANGLING) {
                lines.push(format!("Untagged: {}", familiar(&record.name)));
            }
        }
        if keep_dangling {
            self.store.put(ImageRecord {
                name: dangling_name(&image.config_digest),
                target: matches[0].0.target.clone(),
                created: now(),
            })?;
        }
        let (deleted, _) = self.collect_garbage()?;
        lines.extend(deleted.into_iter().map(|d| format!("Deleted: {d}")));
        Ok(lines)
    }

    /// Delete blobs that were not in `before` and that no image references.
    fn remove_new_unreferenced(&self, before: &BTreeSet<Digest>) -> Result<()> {
        let keep = self.kept_blobs()?;
        for (digest, _) in self.content.list()? {
            if !before.contains(&digest) && !keep.contains(&digest) {
                self.content.delete(&digest)?;
            }
        }
        Ok(())
    }

    /// Unpack an image's layers into committed snapshots named by chain id,
    /// skipping those that exist (shared with another image). Each layer's
    /// uncompressed digest must equal the config's diff id.
    pub fn unpack(&self, image: &Image) -> Result<()> {
        let diff_ids: Vec<String> = image.config.rootfs().diff_ids().clone();
        if diff_ids.len() != image.layers.len() {
            return Err(Error::Invalid(format!(
                "image {}: {} layers but {} diff ids in its config",
                image.config_digest,
                image.layers.len(),
                diff_ids.len()
            )));
        }
        let mut parent: Option<String> = None;
        for ((layer, diff_id), chain) in
            image.layers.iter().zip(&diff_ids).zip(chain_ids(&diff_ids))
        {
            self.unpack_layer(layer, diff_id, &chain, parent.as_deref())?;
            parent = Some(chain);
        }
        Ok(())
    }

    /// Unpack one layer blob into the committed snapshot `chain` on `parent`
    /// (nothing to do if it exists), checking its uncompressed digest.
    fn unpack_layer(
        &self,
        layer: &oci_spec::image::Descriptor,
        diff_id: &str,
        chain: &str,
        parent: Option<&str>,
    ) -> Result<()> {
        match self.unpack_detached(layer, diff_id, chain, None)? {
            Some(key) => self.commit_unpacked(&key, chain, parent),
            None => Ok(()),
        }
    }

    /// Unpack one layer blob (from `stream` while it downloads, or else from the
    /// store) into a new parentless active snapshot and check its uncompressed digest;
    /// returns the snapshot's key, or `None` when the committed snapshot `chain`
    /// already exists. Parentless because a layer's unpacking reads nothing below it:
    /// layers unpack side by side and commit in order later.
    fn unpack_detached(
        &self,
        layer: &oci_spec::image::Descriptor,
        diff_id: &str,
        chain: &str,
        stream: Option<Follower>,
    ) -> Result<Option<String>> {
        if self
            .snapshots
            .stat(chain)
            .is_ok_and(|i| i.kind == Kind::Committed)
        {
            return Ok(None);
        }
        let key = format!("unpack-{}-{}", std::process::id(), chain);
        self.snapshots.prepare(&key, None)?;
        let digest = Digest::parse(layer.digest().as_ref())?;
        let applied = match stream {
            // The follower buffers itself (it hands out the received chunks).
            Some(f) => self.snapshots.apply(&key, f).map_err(Error::from),
            None => self
                .content
                .read(&digest)
                .map_err(Error::from)
                .and_then(|blob| {
                    Ok(self
                        .snapshots
                        .apply(&key, berth_snapshotter::buffered(blob))?)
                }),
        };
        let stats = match applied {
            Ok(stats) => stats,
            Err(e) => {
                let _ = self.snapshots.remove(&key);
                return Err(e);
            }
        };
        if stats.digest != diff_id {
            let _ = self.snapshots.remove(&key);
            return Err(Error::Invalid(format!(
                "layer {digest}: unpacked content is {} but the image config says {diff_id}",
                stats.digest
            )));
        }
        Ok(Some(key))
    }

    /// Commit the unpacked parentless snapshot `key` as `chain` on `parent`.
    fn commit_unpacked(&self, key: &str, chain: &str, parent: Option<&str>) -> Result<()> {
        match self.snapshots.commit_onto(chain, key, parent) {
            Ok(()) => Ok(()),
            // Another process unpacked the same layer meanwhile: use theirs.
            Err(berth_snapshotter::Error::AlreadyExists(_)) => Ok(self.snapshots.remove(key)?),
            Err(e) => {
                let _ = self.snapshots.remove(key);
                Err(e.into())
            }
        }
    }

    /// Unpack layers as a pull downloads them, several at once ([`UNPACK_WORKERS`]),
    /// each while it downloads when the pull offers a reader of it, and commit them
    /// bottom first.
    fn unpack_as_ready(
        &self,
        events: std::sync::mpsc::Receiver<PullEvent>,
        results: std::sync::mpsc::Sender<PullEvent>,
    ) -> Result<()> {
        type Plan = (Vec<oci_spec::image::Descriptor>, Vec<String>, Vec<String>);
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<(usize, Job)>();
        let jobs_rx = std::sync::Mutex::new(jobs_rx);
        std::thread::scope(|scope| {
            for _ in 0..UNPACK_WORKERS {
                let (jobs_rx, results) = (&jobs_rx, results.clone());
                scope.spawn(move || loop {
                    let job = jobs_rx
                        .lock()
                        .map_err(|_| ())
                        .and_then(|r| r.recv().map_err(|_| ()));
                    let Ok((i, (layer, diff_id, chain, stream))) = job else {
                        break;
                    };
                    let r = self.unpack_detached(&layer, &diff_id, &chain, stream);
                    let _ = results.send(PullEvent::Unpacked(i, r));
                });
            }
            drop(results);
            let mut plan: Option<Plan> = None;
            // Layers to unpack (with a reader while they download), and those queued.
            let mut ready: std::collections::BTreeMap<usize, Option<Follower>> =
                std::collections::BTreeMap::new();
            let mut scheduled = BTreeSet::new();
            let (mut queued, mut next) = (0usize, 0usize);
            let mut unpacked: std::collections::BTreeMap<usize, Option<String>> =
                std::collections::BTreeMap::new();
            let mut pulled = false;
            let mut failed: Option<Error> = None;
            let mut jobs_tx = Some(jobs_tx);
            for event in &events {
                match event {
                    PullEvent::Config(config, layers) => {
                        let config: std::result::Result<oci_spec::image::ImageConfiguration, _> =
                            serde_json::from_slice(&config);
                        match config {
                            // `unpack` after the pull reports a mismatch properly.
                            Ok(c) if c.rootfs().diff_ids().len() == layers.len() => {
                                let diff_ids = c.rootfs().diff_ids().clone();
                                let chains = chain_ids(&diff_ids);
                                plan = Some((layers, diff_ids, chains));
                            }
                            Ok(_) => {}
                            Err(e) => {
                                failed.get_or_insert(Error::Invalid(format!("image config: {e}")));
                            }
                        }
                    }
                    PullEvent::Stream(i, f) => {
                        ready.insert(i, Some(f));
                    }
                    PullEvent::Layer(i) => {
                        ready.entry(i).or_insert(None);
                    }
                    PullEvent::Unpacked(i, r) => {
                        queued -= 1;
                        match r {
                            Ok(key) => {
                                unpacked.insert(i, key);
                            }
                            Err(e) => {
                                failed.get_or_insert(e);
                            }
                        }
                    }
                    PullEvent::Done => pulled = true,
                }
                if let (Some((layers, diff_ids, chains)), None) = (&plan, &failed) {
                    for (i, stream) in std::mem::take(&mut ready) {
                        if let Some(tx) = jobs_tx.as_ref().filter(|_| scheduled.insert(i)) {
                            let (l, d, c) = (&layers[i], &diff_ids[i], &chains[i]);
                            let job = (l.clone(), d.clone(), c.clone(), stream);
                            if tx.send((i, job)).is_ok() {
                                queued += 1;
                            }
                        }
                    }
                    while let Some(key) = unpacked.remove(&next) {
                        let parent = next.checked_sub(1).map(|p| chains[p].as_str());
                        if let Some(key) = key {
                            if let Err(e) = self.commit_unpacked(&key, &chains[next], parent) {
                                failed = Some(e);
                                break;
                            }
                        }
                        next += 1;
                    }
                }
                if (pulled || failed.is_some()) && queued == 0 {
                    break;
                }
            }
            // Stop the workers; drop what was unpacked but not committed.
            jobs_tx.take();
            for key in unpacked.into_values().flatten() {
                let _ = self.snapshots.remove(&key);
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
    }

    /// Name of the committed snapshot holding an image's top layer (its rootfs).
    pub fn top_snapshot(&self, image: &Image) -> Option<String> {
        chain_ids(image.config.rootfs().diff_ids()).pop()
    }

    /// The snapshotter holding the unpacked layers.
    pub fn snapshotter(&self) -> &Snapshotter {
        &self.snapshots
    }

    /// Remove committed layer snapshots no image needs (children first).
    pub(crate) fn release_snapshots(&self) -> Result<()> {
        let keep = self.needed_chains()?;
        loop {
            let infos = self.snapshots.walk()?;
            let parents: BTreeSet<String> = infos.iter().filter_map(|i| i.parent.clone()).collect();
            let removable: Vec<String> = infos
                .iter()
                .filter(|i| {
                    i.kind == Kind::Committed
                        && !keep.contains(&i.name)
                        && !parents.contains(&i.name)
                })
                .map(|i| i.name.clone())
                .collect();
            if removable.is_empty() {
                return Ok(());
            }
            for name in removable {
                self.snapshots.remove(&name)?;
            }
        }
    }

    /// The layer blobs of the build cache: kept while their entries are, so
    /// removing an image does not make its next build start over (as
    /// Docker's build cache survives `rmi`); `builder prune` lets them go.
    fn build_cache_blobs(&self) -> Result<BTreeSet<Digest>> {
        let cache = berth_builder::CacheStore::open(&self.root.join("builder"))
            .and_then(|c| c.entries())
            .map_err(Error::io("read the build cache"))?;
        Ok(cache
            .values()
            .filter_map(|e| e.layer.as_ref())
            .filter_map(|l| Digest::parse(&l.digest).ok())
            .collect())
    }

    /// Blobs that must stay: what images reference and the build cache's layers.
    fn kept_blobs(&self) -> Result<BTreeSet<Digest>> {
        let mut keep = referenced_blobs(&self.content, &self.store)?;
        keep.extend(self.build_cache_blobs()?);
        Ok(keep)
    }

    /// Under the exclusive store lock, delete the blobs and snapshots nothing
    /// needs (after the build cache was emptied); returns the bytes freed.
    pub fn remove_unused_blobs(&self) -> Result<u64> {
        let _lock = self.lock(true)?;
        Ok(self.collect_garbage()?.1)
    }

    /// Delete blobs no image (or build cache entry) references, and the
    /// snapshots no image needs. Returns the deleted digests and bytes freed.
    fn collect_garbage(&self) -> Result<(Vec<Digest>, u64)> {
        self.release_snapshots()?;
        let keep = self.kept_blobs()?;
        let mut deleted = Vec::new();
        let mut freed = 0;
        for (digest, size) in self.content.list()? {
            if !keep.contains(&digest) {
                self.content.delete(&digest)?;
                freed += size;
                deleted.push(digest);
            }
        }
        Ok((deleted, freed))
    }

    /// `image prune`: remove dangling images, with `all` every image, but never
    /// one in `in_use` (image ids containers use); then the blobs and snapshots
    /// nothing references. Returns what was removed, as Docker prints it
    /// (`untagged: NAME`, `deleted: IMAGE-ID` for a dangling image), and bytes freed.
    pub fn prune(
        &self,
        all: bool,
        in_use: &BTreeSet<String>,
        filter: &crate::prune::PruneFilter,
    ) -> Result<(Vec<String>, u64)> {
        let _lock = self.lock(true)?;
        let mut removed = Vec::new();
        for record in self.store.list()? {
            if !all && !record.name.starts_with(DANGLING) {
                continue;
            }
            let keep = match self.image_of(&record) {
                Ok(i) => {
                    in_use.contains(&i.config_digest.to_string())
                        || !filter.allows(i.config.created().as_deref(), &image_labels(&i))
                }
                // Its blobs are gone: nothing to filter on.
                Err(_) => false,
            };
            if keep {
                continue;
            }
            self.store.remove(&record.name)?;
            removed.push(match record.name.strip_prefix(DANGLING) {
                Some(config) => format!("deleted: {config}"),
                None => format!("untagged: {}", familiar(&record.name)),
            });
        }
        let (_, freed) = self.collect_garbage()?;
        Ok((removed, freed))
    }

    /// `history`: one row per history entry of the image's config, newest first.
    pub fn history(&self, name_or_id: &str) -> Result<Vec<HistoryRow>> {
        let matches = self.find(name_or_id)?;
        let (_, image) = &matches[0];
        let chains = chain_ids(image.config.rootfs().diff_ids());
        let mut layer = 0;
        let mut rows: Vec<HistoryRow> = Vec::new();
        for h in image.config.history().iter().flatten() {
            let empty = h.empty_layer().unwrap_or(false);
            let size = if empty {
                0
            } else {
                // The unpacked size, as Docker shows it; else the blob's.
                let size = chains
                    .get(layer)
                    .and_then(|c| self.snapshotter().usage(c).ok())
                    .map(|u| u.bytes)
                    .or_else(|| image.layers.get(layer).map(|l| l.size()))
                    .unwrap_or(0);
                layer += 1;
                size
            };
            rows.push(HistoryRow {
                id: None,
                created: h.created().clone().unwrap_or_default(),
                created_by: h.created_by().clone().unwrap_or_default(),
                size,
                comment: h.comment().clone().unwrap_or_default(),
            });
        }
        rows.reverse();
        if let Some(top) = rows.first_mut() {
            top.id = Some(image.config_digest.clone());
        }
        Ok(rows)
    }

    /// `save`: write the named images to `out` as one archive.
    pub fn save(&self, names: &[String], format: ArchiveFormat, out: impl Write) -> Result<()> {
        let mut docker = Vec::new();
        let mut oci = Vec::new();
        for name in names {
            let matches = self.find(name)?;
            let (record, image) = matches
                .into_iter()
                .next()
                .ok_or_else(|| Error::NoSuchImage(name.clone()))?;
            let shown = familiar(&record.name);
            let digest = image.manifest_digest.clone();
            oci.push((
                shown.clone(),
                resolve_image(&self.content, &digest)?,
                digest,
            ));
            docker.push((shown, image));
        }
        match format {
            ArchiveFormat::Docker => {
                berth_image_store::archive::save_docker_archive(&self.content, &docker, out)?
            }
            ArchiveFormat::Oci => {
                berth_image_store::archive::save_oci_archive(&self.content, &oci, out)?
            }
        }
        Ok(())
    }

    /// `load`: read an archive (docker-archive or OCI layout tar) and record its images.
    /// Returns the loaded names (or ids for unnamed images).
    pub fn load(&self, input: impl Read) -> Result<Vec<String>> {
        let _lock = self.lock(false)?;
        let loaded = berth_image_store::archive::load_archive(&self.content, input)?;
        let mut out = Vec::new();
        for (name, descriptor) in loaded {
            let reference = name.as_deref().map(Reference::parse).transpose()?;
            let image = self.unpack_and_record(descriptor, reference.as_ref())?;
            out.push(match reference {
                Some(r) => format!("Loaded image: {}", r.familiar()),
                None => format!("Loaded image ID: {}", image.config_digest),
            });
        }
        Ok(out)
    }

    /// `import`: a rootfs tarball as a one-layer image, optionally named.
    pub fn import(
        &self,
        input: impl Read,
        name: Option<&str>,
        config: oci_spec::image::Config,
    ) -> Result<Digest> {
        let _lock = self.lock(false)?;
        let descriptor = berth_image_store::archive::import_rootfs(&self.content, input, config)?;
        let reference = name.map(Reference::parse).transpose()?;
        Ok(self
            .unpack_and_record(descriptor, reference.as_ref())?
            .config_digest)
    }

    /// Unpack the image whose manifest `target` describes and record it under
    /// `name` (moving the name, see [`put_name`]) or, without one, as a
    /// dangling image, so it is not collected. Returns the image.
    fn unpack_and_record(
        &self,
        target: oci_spec::image::Descriptor,
        name: Option<&Reference>,
    ) -> Result<Image> {
        let digest = Digest::parse(target.digest().as_ref())?;
        let image = resolve_image(&self.content, &digest)?;
        self.unpack(&image)?;
        let record = ImageRecord {
            name: match name {
                Some(r) => r.full(),
                None => dangling_name(&image.config_digest),
            },
            target,
            created: now(),
        };
        match name {
            Some(_) => put_name(&self.store, &self.content, record)?,
            None => self.store.put(record)?,
        }
        Ok(image)
    }

    /// Record a new image made of `layers` (blobs already in the content store)
    /// and `config`: writes its config and OCI manifest, unpacks the layers
    /// it does not share, and names it `name` (or records it as dangling).
    /// The caller holds the images lock (shared) from writing the layer
    /// blobs on, so no prune collects them first. Returns the image id.
    /// The config is JSON, to hold fields the OCI type drops (Healthcheck, Shell).
    pub(crate) fn add_image(
        &self,
        config: &serde_json::Value,
        layers: Vec<oci_spec::image::Descriptor>,
        name: Option<&str>,
    ) -> Result<Digest> {
        use berth_image_store::manifest::{MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST};
        let reference = name.map(tag_reference).transpose()?;
        let cfg =
            serde_json::to_vec(config).map_err(|e| Error::Invalid(format!("image config: {e}")))?;
        let cfg_digest = self.content.write_blob(&cfg)?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": cfg_digest, "size": cfg.len()},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|e| Error::Invalid(format!("image manifest: {e}")))?;
        let digest = self.content.write_blob(&bytes)?;
        let target = oci_spec::image::Descriptor::new(
            oci_spec::image::MediaType::ImageManifest,
            bytes.len() as u64,
            digest.to_oci(),
        );
        Ok(self
            .unpack_and_record(target, reference.as_ref())?
            .config_digest)
    }

    /// Check blobs and image records (see [`berth_image_store::check::check`]).
    pub(crate) fn check_content(&self, verify: bool) -> Result<berth_image_store::check::Report> {
        Ok(berth_image_store::check::check_with(
            &self.content,
            &self.store,
            verify,
            &self.build_cache_blobs()?,
        )?)
    }

    /// Chain ids of every image's layers: the committed snapshots images need.
    pub(crate) fn needed_chains(&self) -> Result<BTreeSet<String>> {
        let mut keep = BTreeSet::new();
        for (_, image) in self.all()? {
            keep.extend(chain_ids(image.config.rootfs().diff_ids()));
        }
        Ok(keep)
    }

    /// Number of blobs and their total size (for tests and `system df`).
    pub fn blob_usage(&self) -> Result<(usize, u64)> {
        let blobs = self.content.list()?;
        Ok((blobs.len(), blobs.iter().map(|(_, s)| s).sum()))
    }
}

/// How long after its commit a layer's files are flushed by the next command
/// (by then the kernel has mostly written them back, so the flush is short).
const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Point `record.name` at its image, as one atomic change of the records. The
/// image the name pointed at before stays, if no other name has it, as a
/// dangling image (Docker's `<none>:<none>`): containers may use it, and
/// `image prune` removes it when none does. The image named now is no longer
/// dangling.
pub(crate) fn put_name(
    store: &ImageStore,
    content: &ContentStore,
    record: ImageRecord,
) -> Result<()> {
    let config_of = |r: &ImageRecord| -> berth_image_store::error::Result<Digest> {
        Ok(resolve_image(content, &Digest::parse(r.target.digest().as_ref())?)?.config_digest)
    };
    let named = config_of(&record)?;
    store.update(|records| {
        records.remove(&dangling_name(&named));
        let Some(old) = records.insert(record.name.clone(), record) else {
            return Ok(());
        };
        let Ok(displaced) = config_of(&old) else {
            // Its blobs are gone already: nothing to keep.
            return Ok(());
        };
        let named_elsewhere = records.values().any(|r| {
            r.target.digest() == old.target.digest()
                || config_of(r).ok().as_ref() == Some(&displaced)
        });
        if !named_elsewhere {
            let name = dangling_name(&displaced);
            records.insert(
                name.clone(),
                ImageRecord {
                    name,
                    target: old.target,
                    created: now(),
                },
            );
        }
        Ok(())
    })?;
    Ok(())
}

/// An image's config labels.
pub(crate) fn image_labels(image: &Image) -> std::collections::BTreeMap<String, String> {
    image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// Parse a name to give an image: a reference without a digest.
pub(crate) fn tag_reference(name: &str) -> Result<Reference> {
    let r = Reference::parse(name)?;
    if r.digest.is_some() {
        return Err(Error::Invalid(format!(
            "refusing to create a tag with a digest: {r}"
        )));
    }
    Ok(r)
}

/// Record name of an image that has no name (loaded or imported without one).
fn dangling_name(config: &Digest) -> String {
    format!("{DANGLING}{config}")
}

const DANGLING: &str = "dangling:";

/// (repository, tag) as `images` shows a record name.
fn display_name(name: &str) -> (String, String) {
    if name.starts_with(DANGLING) {
        return ("<none>".into(), "<none>".into());
    }
    match Reference::parse(name) {
        Ok(r) => (
            r.familiar_repository(),
            r.tag.clone().unwrap_or_else(|| "<none>".into()),
        ),
        Err(_) => (name.to_string(), "<none>".into()),
    }
}

fn familiar(name: &str) -> String {
    match display_name(name) {
        (repo, tag) if repo == "<none>" => format!("{repo}:{tag}"),
        _ => Reference::parse(name)
            .map(|r| r.familiar())
            .unwrap_or_else(|_| name.to_string()),
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
