//! Named volumes, bind mounts and tmpfs mounts, with Docker's semantics.
//!
//! - [`VolumeStore`]: volumes under `<root>/volumes/<name>/`: `volume.json`
//!   (driver `local`, labels, options, creation time, anonymous flag; written
//!   atomically) and the data in `_data`. Volumes created with the local
//!   driver's `type=`/`device=`/`o=` options have that filesystem mounted on
//!   `_data` while at least one container uses it ([`VolumeStore::acquire`],
//!   [`VolumeStore::release`]).
//! - [`MountSpec`]: `-v` and `--mount` parsed ([`parse_volume_flag`],
//!   [`parse_mount_flag`]) and turned into OCI mounts ([`MountSpec::to_oci`]).
//! - Copy-up: the first time an empty volume is mounted over an image
//!   directory with content, that content is copied in (owners, modes,
//!   times, symlinks as symlinks), reading the image through
//!   `openat2(RESOLVE_IN_ROOT)` so nothing outside the container's root is
//!   ever read.

mod copyup;
mod driver;
mod spec;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use spec::{
    parse_bytes, parse_go_bool, parse_mount_flag, parse_volume_flag, MountKind, MountSpec,
};

/// The label Docker (23+) puts on anonymous volumes.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// What can go wrong with volumes and mount specs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No volume has that name.
    #[error("no such volume: {0}")]
    NoSuchVolume(String),
    /// Bad user input (names, specs, options).
    #[error("{0}")]
    Invalid(String),
    /// The volume is used by containers.
    #[error("remove {name}: volume is in use - [{}]", users.join(", "))]
    InUse {
        /// The volume.
        name: String,
        /// The containers using it.
        users: Vec<String>,
    },
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

pub(crate) fn errno(context: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
    let context = context.into();
    move |e| Error::Io {
        context,
        source: std::io::Error::from(e),
    }
}

/// One volume's metadata (`<root>/volumes/<name>/volume.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Volume {
    /// Its name (64 hex characters for an anonymous volume).
    pub name: String,
    /// Always `local`.
    pub driver: String,
    /// `--label`.
    pub labels: BTreeMap<String, String>,
    /// The local driver's options (`--opt type=... device=... o=...`).
    pub options: BTreeMap<String, String>,
    /// RFC 3339 creation time (seconds, UTC).
    pub created_at: String,
    /// Created for a container (`-v /path`, an image `VOLUME`), not by name.
    pub anonymous: bool,
    /// Image content was copied in once; it is never copied again.
    #[serde(default)]
    pub copied_up: bool,
    /// Where its data is (filled in when read; not stored).
    #[serde(skip)]
    pub mountpoint: PathBuf,
}

/// Whether `name` is a valid volume name: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Fail with Docker's message unless `name` is a valid volume name.
pub fn check_name(name: &str) -> Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "create {name}: {name:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed; if you intended to pass a host directory, use an absolute path"
        )))
    }
}

/// 64 random hex characters (an anonymous volume's name).
pub fn random_name() -> Result<String> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("read /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The volumes under one state root.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    dir: PathBuf,
}

impl VolumeStore {
    /// Open (creating) the volume directory, e.g. `<root>/volumes`.
    pub fn open(dir: &Path) -> Result<VolumeStore> {
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        Ok(VolumeStore {
            dir: dir.to_path_buf(),
        })
    }

    /// `<dir>/<name>/_data`.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    /// Create a volume; `None` makes an anonymous one with a random name. A
    /// volume that exists already is returned as it is (as Docker does).
    /// Returns the volume and whether it was created now.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
    ) -> Result<(Volume, bool)> {
        let (name, anonymous) = match name {
            Some(n) => {
                check_name(n)?;
                (n.to_string(), false)
            }
            None => (random_name()?, true),
        };
        driver::validate_options(&options)?;
        let vdir = self.dir.join(&name);
        match std::fs::create_dir(&vdir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Another process may be writing its metadata: wait a moment.
                for _ in 0..50 {
                    match self.get(&name) {
                        Ok(v) => return Ok((v, false)),
                        Err(Error::NoSuchVolume(_)) => {
                            std::thread::sleep(std::time::Duration::from_millis(20))
                        }
                        Err(e) => return Err(e),
                    }
                }
                return self.get(&name).map(|v| (v, false));
            }
            Err(e) => return Err(io(format!("create {}", vdir.display()))(e)),
        }
        let mut labels = labels;
        if anonymous {
            labels.insert(ANONYMOUS_LABEL.to_string(), String::new());
        }
        let volume = Volume {
            name: name.clone(),
            driver: "local".into(),
            labels,
            options,
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            anonymous,
            copied_up: false,
            mountpoint: self.mountpoint(&name),
        };
        let result = std::fs::create_dir(&volume.mountpoint)
            .map_err(io(format!("create {}", volume.mountpoint.display())))
            .and_then(|_| self.save(&volume));
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&vdir);
            return Err(e);
        }
        Ok((volume, true))
    }

    fn save(&self, volume: &Volume) -> Result<()> {
        let vdir = self.dir.join(&volume.name);
        let tmp = vdir.join("volume.json.tmp");
        let data = serde_json::to_vec_pretty(volume)
            .map_err(|e| Error::Invalid(format!("encode volume {}: {e}", volume.name)))?;
        let mut f = File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
        f.write_all(&data)
            .and_then(|_| f.sync_all())
            .map_err(io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, vdir.join("volume.json"))
            .map_err(io(format!("rename {}", tmp.display())))
    }

    /// One volume.
    pub fn get(&self, name: &str) -> Result<Volume> {
        if !valid_name(name) {
            return Err(Error::NoSuchVolume(name.to_string()));
        }
        let path = self.dir.join(name).join("volume.json");
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoSuchVolume(name.to_string()))
            }
            Err(e) => return Err(io(format!("read {}", path.display()))(e)),
        };
        let mut v: Volume = serde_json::from_slice(&data)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        v.mountpoint = self.mountpoint(name);
        Ok(v)
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)
            .map_err(io(format!("read {}", self.dir.display())))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(v) = self.get(&name) {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Remove a volume unless `in_use_by` (the containers that use it) is
    /// non-empty. A driver mount left on `_data` is undone first; if it
    /// cannot be, nothing is removed.
    pub fn remove(&self, name: &str, in_use_by: &[String]) -> Result<()> {
        self.get(name)?;
        if !in_use_by.is_empty() {
            return Err(Error::InUse {
                name: name.to_string(),
                users: in_use_by.to_vec(),
            });
        }
        let _lock = self.lock(name)?;
        // Another process may have removed it while we waited for the lock.
        self.get(name)?;
        let data = self.mountpoint(name);
        if driver::is_mounted(&data) {
            nix::mount::umount2(&data, nix::mount::MntFlags::MNT_DETACH)
                .map_err(errno(format!("unmount {}", data.display())))?;
        }
        if driver::is_mounted(&data) {
            return Err(Error::Invalid(format!(
                "remove {name}: {} is still mounted",
                data.display()
            )));
        }
        let vdir = self.dir.join(name);
        // Rename first, so the volume disappears at once for other processes.
        let trash = self
            .dir
            .join(format!(".removing-{name}-{}", std::process::id()));
        match std::fs::rename(&vdir, &trash) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoSuchVolume(name.to_string()))
            }
            r => r.map_err(io(format!("remove {}", vdir.display())))?,
        }
        std::fs::remove_dir_all(&trash).map_err(io(format!("remove {}", trash.display())))
    }

    /// Remove the volumes no container uses (`in_use`): anonymous ones only,
    /// or every one with `all`, and of those only the ones `allowed` (a
    /// prune's filters) takes. Returns the removed names and bytes freed.
    pub fn prune(
        &self,
        all: bool,
        in_use: &[String],
        allowed: &dyn Fn(&Volume) -> bool,
    ) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for v in self.list()? {
            if in_use.contains(&v.name) || !(all || v.anonymous) || !allowed(&v) {
                continue;
            }
            let bytes = self.size(&v.name);
            match self.remove(&v.name, &[]) {
                Ok(()) => out.push((v.name, bytes)),
                Err(Error::NoSuchVolume(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Bytes used by a volume's data (not following symlinks nor crossing mounts).
    pub fn size(&self, name: &str) -> u64 {
        fn walk(path: &Path, dev: u64) -> u64 {
            use std::os::unix::fs::MetadataExt;
            let Ok(meta) = std::fs::symlink_metadata(path) else {
                return 0;
            };
            if meta.dev() != dev {
                return 0;
            }
            let mut total = meta.blocks() * 512;
            if meta.is_dir() {
                for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
                    total += walk(&e.path(), dev);
                }
            }
            total
        }
        use std::os::unix::fs::MetadataExt;
        let data = self.mountpoint(name);
        match std::fs::symlink_metadata(&data) {
            Ok(m) => walk(&data, m.dev()).saturating_sub(m.blocks() * 512),
            Err(_) => 0,
        }
    }

    fn lock(&self, name: &str) -> Result<File> {
        let path = self.dir.join(name).join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|_| Error::NoSuchVolume(name.to_string()))?;
        file.lock()
            .map_err(io(format!("lock {}", path.display())))?;
        Ok(file)
    }

    fn users(&self, name: &str) -> Vec<String> {
        std::fs::read(self.dir.join(name).join("users.json"))
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default()
    }

    fn set_users(&self, name: &str, users: &[String]) -> Result<()> {
        let path = self.dir.join(name).join("users.json");
        if users.is_empty() {
            let _ = std::fs::remove_file(&path);
            return Ok(());
        }
        let tmp = path.with_extension("json.tmp");
        let data = serde_json::to_vec(users)
            .map_err(|e| Error::Invalid(format!("encode users of {name}: {e}")))?;
        std::fs::write(&tmp, data).map_err(io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("rename {}", tmp.display())))
    }

    /// Make volume `name` ready for container `container`, under the
    /// volume's lock: mount the driver's filesystem on `_data` if the volume
    /// has one and it is not mounted yet (the container is counted as a
    /// user), then, unless `nocopy`, copy up `image_path` of the container's
    /// mounted `rootfs` when the volume never had content copied in and its
    /// data is empty. Returns the host path to bind into the container.
    pub fn acquire(
        &self,
        name: &str,
        container: &str,
        rootfs: &Path,
        image_path: &Path,
        nocopy: bool,
    ) -> Result<PathBuf> {
        let _lock = self.lock(name)?;
        let mut volume = self.get(name)?;
        let data = volume.mountpoint.clone();
        std::fs::create_dir_all(&data).map_err(io(format!("create {}", data.display())))?;
        if driver::needs_mount(&volume.options) {
            let mut users = self.users(name);
            if !driver::is_mounted(&data) {
                driver::mount(&volume.options, &data)?;
                users.clear();
            }
            if !users.iter().any(|u| u == container) {
                users.push(container.to_string());
            }
            self.set_users(name, &users)?;
        }
        if !nocopy && !volume.copied_up && copyup::is_empty(&data)? {
            let copied = copyup::copy_up(rootfs, image_path, &data)?;
            if copied {
                volume.copied_up = true;
                self.save(&volume)?;
            }
        }
        Ok(data)
    }

    /// Container `container` stopped: it no longer uses any volume; driver
    /// mounts that lost their last user are unmounted.
    pub fn release(&self, container: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry.path().join("users.json").exists() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(_lock) = self.lock(&name) else {
                continue;
            };
            let mut users = self.users(&name);
            if !users.iter().any(|u| u == container) {
                continue;
            }
            users.retain(|u| u != container);
            if users.is_empty() {
                let data = self.mountpoint(&name);
                if driver::is_mounted(&data) {
                    let _ = nix::mount::umount2(&data, nix::mount::MntFlags::MNT_DETACH);
                }
            }
            let _ = self.set_users(&name, &users);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["ab", "a1", "my-vol_1.x", "0abc"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["a", "", "-ab", "_ab", ".ab", "a/b", "a b", "a:b", "ä1"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn create_get_list_remove_prune() {
        let tmp = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(&tmp.path().join("volumes")).unwrap();
        let mut labels = BTreeMap::new();
        labels.insert("a".to_string(), "b".to_string());
        let (v, created) = store.create(Some("data"), labels, BTreeMap::new()).unwrap();
        assert!(created);
        assert_eq!(v.driver, "local");
        assert!(v.mountpoint.is_dir());
        let (again, created) = store
            .create(Some("data"), BTreeMap::new(), BTreeMap::new())
            .unwrap();
        assert!(!created);
        assert_eq!(again.labels.get("a").map(String::as_str), Some("b"));
        let (anon, _) = store
            .create(None, BTreeMap::new(), BTreeMap::new())
            .unwrap();
        assert_eq!(anon.name.len(), 64);
        assert!(anon.anonymous);
        assert!(anon.labels.contains_key(ANONYMOUS_LABEL));
        assert_eq!(store.list().unwrap().len(), 2);
        assert!(store
            .create(Some("bad/name"), BTreeMap::new(), BTreeMap::new())
            .is_err());
        let err = store.remove("data", &["c1".to_string()]).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        assert!(store.get("data").is_ok());
        // Prune: anonymous only by default, then all unused.
        let pruned = store.prune(false, &[], &|_| true).unwrap();
        assert_eq!(pruned.len(), 1);
        assert_eq!(pruned[0].0, anon.name);
        assert!(store
            .prune(true, &["data".to_string()], &|_| true)
            .unwrap()
            .is_empty());
        assert!(store.prune(true, &[], &|_| false).unwrap().is_empty());
        assert_eq!(store.prune(true, &[], &|_| true).unwrap().len(), 1);
        assert!(matches!(store.get("data"), Err(Error::NoSuchVolume(_))));
    }

    #[test]
    fn bad_driver_options_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(tmp.path()).unwrap();
        let mut opts = BTreeMap::new();
        opts.insert("colour".to_string(), "red".to_string());
        assert!(store.create(Some("x1"), BTreeMap::new(), opts).is_err());
        assert!(store.list().unwrap().is_empty());
    }
}
