//! The overlayfs snapshotter.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::apply::{apply_layer, ApplyStats};
use crate::changes::{changes, Change};
use crate::diff::{diff_dir, diff_dir_skipping, DiffStats};
use crate::error::{Error, Result};
use crate::meta::{Meta, Record, Store, META_FILE};
use crate::mount::{Mount, MAX_MOUNT_DATA};

/// Directory holding the short link names of the `fs` dirs.
const LINK_DIR: &str = "l";
/// Prefix of snapshot dirs being deleted.
const TRASH_PREFIX: &str = "trash-";

/// The kind of a snapshot (containerd's `snapshots.Kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Read-only view of a committed parent.
    View,
    /// Writable; can be committed.
    Active,
    /// Immutable; can be a parent.
    Committed,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::View => "a view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        })
    }
}

/// What [`Snapshotter::stat`] and [`Snapshotter::walk`] report about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The key (or, for committed snapshots, the name given to `commit`).
    pub name: String,
    /// Key of the parent snapshot.
    pub parent: Option<String>,
    /// Its kind.
    pub kind: Kind,
    /// When it was prepared (for committed snapshots: when it was committed).
    pub created: SystemTime,
}

/// What [`Snapshotter::check`] found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Snapshots in the metadata.
    pub snapshots: usize,
    /// Inconsistencies, one line each.
    pub problems: Vec<String>,
    /// Directories, links and files no snapshot owns (removed by [`Snapshotter::cleanup`]).
    pub leftovers: Vec<PathBuf>,
}

/// Disk use of one snapshot's own directory (not its parents').
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes allocated on disk (512-byte blocks, hard links counted once).
    pub bytes: u64,
    /// Number of inodes (hard links counted once).
    pub inodes: u64,
}

/// Overlayfs snapshotter rooted at `<berth root>/snapshots`.
///
/// Layout: `<root>/metadata.json` (+ `metadata.lock`), `<root>/<id>/fs` (the snapshot's
/// contents, the overlay upper dir for an active one), `<root>/<id>/work` (overlay work
/// dir, active snapshots only), `<root>/l/<short>` -> `../<id>/fs` (short names for
/// lowerdir lists). Safe to use from many processes at once.
#[derive(Debug)]
pub struct Snapshotter {
    root: PathBuf,
    store: Store,
}

/// Short link name of a snapshot id: base 36, unique because ids never repeat.
fn short_name(id: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = id;
    let mut s = Vec::new();
    loop {
        s.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

impl Snapshotter {
    /// Flushes the snapshots' filesystem (`syncfs`).
    fn sync_contents(&self) -> Result<()> {
        let dir = File::open(&self.root).map_err(|e| Error::io("open", &self.root, e))?;
        nix::unistd::syncfs(&dir).map_err(|e| Error::io("syncfs", &self.root, e.into()))
    }

    /// Opens (creating if needed) a snapshotter at `root` (`<berth root>/snapshots`).
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root.join(LINK_DIR))
            .map_err(|e| Error::io("create snapshotter root", root, e))?;
        let root = root
            .canonicalize()
            .map_err(|e| Error::io("resolve snapshotter root", root, e))?;
        Ok(Snapshotter {
            store: Store::new(&root),
            root,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// Path of the directory holding the snapshot's own contents (the overlay upper dir
    /// of an active snapshot).
    pub fn fs_dir(&self, key: &str) -> Result<PathBuf> {
        let l = self.store.shared()?;
        Ok(self.dir(l.meta.get(key)?.id).join("fs"))
    }

    /// Prepares a writable snapshot `key` on top of the committed `parent` and returns
    /// the mounts for it: an overlay (lowerdir = parent chain, nearest first), or a
    /// read-write bind of an empty dir when there is no parent.
    pub fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::Active)
    }

    /// Creates a read-only view `key` of the committed `parent` and returns its mounts:
    /// a read-only bind for zero or one layers, a read-only overlay (lowerdir only)
    /// otherwise.
    pub fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::View)
    }

    fn create(&self, key: &str, parent: Option<&str>, kind: Kind) -> Result<Vec<Mount>> {
        let mut l = self.store.exclusive()?;
        let meta = &mut l.meta;
        if meta.snapshots.contains_key(key) {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        if let Some(p) = parent {
            committed(meta, p)?;
        }
        let id = meta.next_id.max(1);
        meta.next_id = id + 1;
        let dir = self.dir(id);
        // A leftover dir of a crashed process with this id: it is not in the metadata,
        // so nothing uses it.
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| Error::io("remove stale snapshot dir", &dir, e))?;
        }
        let fs = dir.join("fs");
        std::fs::create_dir_all(&fs).map_err(|e| Error::io("create snapshot dir", &fs, e))?;
        if kind == Kind::Active {
            let work = dir.join("work");
            std::fs::create_dir(&work).map_err(|e| Error::io("create snapshot dir", &work, e))?;
        }
        let link = self.root.join(LINK_DIR).join(short_name(id));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("../{id}/fs"), &link)
            .map_err(|e| Error::io("create short link", &link, e))?;
        meta.snapshots.insert(
            key.to_string(),
            Record {
                id,
                kind,
                parent: parent.map(str::to_string),
                created: SystemTime::now(),
                unflushed: None,
            },
        );
        let mounts = self.mounts_for(meta, key)?;
        self.store.write(meta)?;
        Ok(mounts)
    }

    /// The mounts of an active snapshot or a view (prepared earlier).
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let l = self.store.shared()?;
        self.mounts_for(&l.meta, key)
    }

    fn mounts_for(&self, meta: &Meta, key: &str) -> Result<Vec<Mount>> {
        let rec = meta.get(key)?;
        if rec.kind == Kind::Committed {
            return Err(Error::WrongKind {
                op: "mounts",
                key: key.to_string(),
                actual: rec.kind.to_string(),
                expected: "active or a view",
            });
        }
        let parents = meta.parent_ids(key)?;
        let fs = self.dir(rec.id).join("fs");
        let bind = |src: PathBuf, ro: bool| Mount {
            typ: "bind".into(),
            source: src,
            target: None,
            options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
            cwd: None,
        };
        if rec.kind == Kind::View {
            match parents.len() {
                0 => return Ok(vec![bind(fs, true)]),
                1 => return Ok(vec![bind(self.dir(parents[0]).join("fs"), true)]),
                _ => {}
            }
        } else if parents.is_empty() {
            return Ok(vec![bind(fs, false)]);
        }
        let mut base = vec!["index=off".to_string()];
        if rec.kind == Kind::Active {
            // Keep the upper dir self-contained, so `diff` needs only the upper dir.
            base.push("redirect_dir=off".into());
            base.push("metacopy=off".into());
            base.push(format!(
                "workdir={}",
                self.dir(rec.id).join("work").display()
            ));
            base.push(format!("upperdir={}", fs.display()));
        }
        let links = self.root.join(LINK_DIR);
        let lower = |abs: bool| {
            parents
                .iter()
                .map(|id| {
                    if abs {
                        links.join(short_name(*id)).display().to_string()
                    } else {
                        short_name(*id)
                    }
                })
                .collect::<Vec<_>>()
                .join(":")
        };
        let build = |lowerdir: String| {
            let mut o = base.clone();
            o.push(format!("lowerdir={lowerdir}"));
            o
        };
        let len = |o: &[String]| {
            o.iter()
                .map(|s| s.len() + 1)
                .sum::<usize>()
                .saturating_sub(1)
        };
        let abs = build(lower(true));
        let (options, cwd) = if len(&abs) <= MAX_MOUNT_DATA {
            (abs, None)
        } else {
            let rel = build(lower(false));
            if len(&rel) > MAX_MOUNT_DATA {
                return Err(Error::TooManyLayers {
                    key: key.to_string(),
                    layers: parents.len(),
                    len: len(&rel),
                    max: MAX_MOUNT_DATA,
                });
            }
            (rel, Some(links))
        };
        Ok(vec![Mount {
            typ: "overlay".into(),
            source: "overlay".into(),
            target: None,
            options,
            cwd,
        }])
    }

    /// Commits the active snapshot `key` as the committed snapshot `name` (e.g. the
    /// layer's chain id). Only metadata changes; the contents stay where they are.
    /// Fails with [`Error::AlreadyExists`] if `name` exists (another process committed
    /// the same layer first: remove `key` and use `name`).
    pub fn commit(&self, name: &str, key: &str) -> Result<()> {
        self.commit_inner(name, key, None)
    }

    /// Commits the active snapshot `key`, prepared without a parent, as the committed
    /// snapshot `name` on top of the committed `parent`.
    ///
    /// A layer unpacks into its own upper dir and reads nothing of the layers below it
    /// (whiteouts are device nodes and xattrs in that dir), so the layers of an image
    /// can be unpacked side by side into parentless snapshots and then committed in
    /// order with this. Errors as [`Snapshotter::commit`], and `WrongKind` when `key`
    /// already has a parent or `parent` is not committed.
    pub fn commit_onto(&self, name: &str, key: &str, parent: Option<&str>) -> Result<()> {
        self.commit_inner(name, key, Some(parent))
    }

    /// `commit`, optionally giving a parentless `key` the parent `onto`.
    fn commit_inner(&self, name: &str, key: &str, onto: Option<Option<&str>>) -> Result<()> {
        // Not flushed here (a pull would wait for the disk): marked with the boot
        // id, flushed by a later command of this boot, restored after a restart.
        let boot = boot_id();
        if boot.is_none() {
            self.sync_contents()?;
        }
        let mut l = self.store.exclusive()?;
        let meta = &mut l.meta;
        let mut rec = meta.get(key)?.clone();
        if let Some(parent) = onto {
            if rec.parent.is_some() {
                return Err(Error::WrongKind {
                    op: "commit onto a parent",
                    key: key.to_string(),
                    actual: "a snapshot with a parent".into(),
                    expected: "parentless",
                });
            }
            if let Some(p) = parent {
                committed(meta, p)?;
            }
            rec.parent = parent.map(str::to_string);
        }
        if rec.kind != Kind::Active {
            return Err(Error::WrongKind {
                op: "commit",
                key: key.to_string(),
                actual: rec.kind.to_string(),
                expected: "active",
            });
        }
        if meta.snapshots.contains_key(name) {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        meta.snapshots.remove(key);
        meta.snapshots.insert(
            name.to_string(),
            Record {
                kind: Kind::Committed,
                created: SystemTime::now(),
                unflushed: boot,
                ..rec.clone()
            },
        );
        self.store.write(meta)?;
        let work = self.dir(rec.id).join("work");
        let _ = std::fs::remove_dir_all(work);
        Ok(())
    }

    /// Removes a snapshot. Refuses one that is the parent of other snapshots. The
    /// snapshot must not be mounted.
    pub fn remove(&self, key: &str) -> Result<()> {
        let trash;
        {
            let mut l = self.store.exclusive()?;
            let meta = &mut l.meta;
            let rec = meta.get(key)?.clone();
            let children = meta.children(key);
            if !children.is_empty() {
                return Err(Error::HasChildren {
                    key: key.to_string(),
                    children,
                });
            }
            // The record goes first: a crash after this leaves a directory no record
            // owns (removed by `cleanup`), never a record without its directory.
            meta.snapshots.remove(key);
            self.store.write(meta)?;
            let dir = self.dir(rec.id);
            trash = self.root.join(format!("{TRASH_PREFIX}{}", rec.id));
            if dir.exists() {
                std::fs::rename(&dir, &trash)
                    .map_err(|e| Error::io("move snapshot dir to trash", &dir, e))?;
            }
            let _ = std::fs::remove_file(self.root.join(LINK_DIR).join(short_name(rec.id)));
        }
        // Delete outside the lock; a crash here leaves a trash dir for `cleanup`.
        if trash.exists() {
            std::fs::remove_dir_all(&trash)
                .map_err(|e| Error::io("remove snapshot dir", &trash, e))?;
        }
        Ok(())
    }

    /// Information about one snapshot.
    pub fn stat(&self, key: &str) -> Result<Info> {
        let l = self.store.shared()?;
        let r = l.meta.get(key)?;
        Ok(Info {
            name: key.to_string(),
            parent: r.parent.clone(),
            kind: r.kind,
            created: r.created,
        })
    }

    /// All snapshots, sorted by name.
    pub fn walk(&self) -> Result<Vec<Info>> {
        let l = self.store.shared()?;
        Ok(l.meta
            .snapshots
            .iter()
            .map(|(k, r)| Info {
                name: k.clone(),
                parent: r.parent.clone(),
                kind: r.kind,
                created: r.created,
            })
            .collect())
    }

    /// Disk use of the snapshot's own contents (its `fs` dir), like `du`: allocated
    /// blocks and inodes, hard links counted once. Parents are not included.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let fs = self.fs_dir(key)?;
        let mut seen = HashSet::new();
        let mut u = Usage::default();
        let mut stack = vec![fs];
        while let Some(p) = stack.pop() {
            let md = std::fs::symlink_metadata(&p).map_err(|e| Error::io("stat", &p, e))?;
            if !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            u.bytes += md.blocks() * 512;
            u.inodes += 1;
            if md.is_dir() {
                for e in std::fs::read_dir(&p).map_err(|e| Error::io("read dir", &p, e))? {
                    stack.push(e.map_err(|e| Error::io("read dir", &p, e))?.path());
                }
            }
        }
        Ok(u)
    }

    /// Unpacks a layer (gzip, zstd or plain tar) into the active snapshot `key` (into
    /// its own `fs` dir, the overlay upper dir) with the rules of [`apply_layer`].
    pub fn apply(&self, key: &str, layer: impl BufRead) -> Result<ApplyStats> {
        let (fs, kind) = {
            let l = self.store.shared()?;
            let r = l.meta.get(key)?;
            (self.dir(r.id).join("fs"), r.kind)
        };
        if kind != Kind::Active {
            return Err(Error::WrongKind {
                op: "apply",
                key: key.to_string(),
                actual: kind.to_string(),
                expected: "active",
            });
        }
        apply_layer(&fs, layer)
    }

    /// Flushes the files of the snapshots committed in this boot at least
    /// `older_than` ago (one `syncfs`, by then mostly written back by the
    /// kernel) and records them as flushed; returns the snapshots left unflushed
    /// by an earlier boot (see [`Snapshotter::unflushed_before_restart`]). One
    /// read of the metadata, for the start of every command.
    ///
    /// A commit does not wait for its files to reach the disk; its record keeps
    /// the boot id instead. Until a flush, a power loss could leave the record
    /// with empty files (containerd#8895, moby#49784), which is why a snapshot
    /// found unflushed from an earlier boot is not trusted.
    pub fn settle(&self, older_than: std::time::Duration) -> Result<Vec<String>> {
        let boot = boot_id();
        let (mut due, mut before_restart) = (Vec::new(), Vec::new());
        {
            let l = self.store.shared()?;
            for (key, r) in &l.meta.snapshots {
                if r.unflushed.is_none() {
                    continue;
                }
                if r.unflushed != boot {
                    before_restart.push(key.clone());
                } else if r.created.elapsed().unwrap_or_default() >= older_than {
                    due.push(key.clone());
                }
            }
        }
        if due.is_empty() {
            return Ok(before_restart);
        }
        self.sync_contents()?;
        let mut l = self.store.exclusive()?;
        for key in &due {
            if let Some(r) = l.meta.snapshots.get_mut(key) {
                if r.unflushed == boot {
                    r.unflushed = None;
                }
            }
        }
        self.store.write(&l.meta)?;
        Ok(before_restart)
    }

    /// Committed snapshots not known to have reached the disk before the machine
    /// restarted: their files may be empty or partial. Restore each with
    /// [`Snapshotter::restore`] from its layer.
    pub fn unflushed_before_restart(&self) -> Result<Vec<String>> {
        let boot = boot_id();
        let l = self.store.shared()?;
        Ok(l.meta
            .snapshots
            .iter()
            .filter(|(_, r)| r.unflushed.is_some() && r.unflushed != boot)
            .map(|(k, _)| k.clone())
            .collect())
    }

    /// Unpacks `layer` again into the committed snapshot `key`, replacing its
    /// files (its path stays, so the overlays on it stay valid), flushes it, and
    /// records it as flushed if the layer's digest is `diff_id`; else
    /// `Error::Layer` and the snapshot stays marked. The caller makes sure
    /// nothing uses the snapshot meanwhile.
    pub fn restore(&self, key: &str, layer: impl BufRead, diff_id: &str) -> Result<ApplyStats> {
        let (dir, kind) = {
            let l = self.store.shared()?;
            let r = l.meta.get(key)?;
            (self.dir(r.id), r.kind)
        };
        if kind != Kind::Committed {
            return Err(Error::WrongKind {
                op: "restore",
                key: key.to_string(),
                actual: kind.to_string(),
                expected: "committed",
            });
        }
        let (fs, old) = (dir.join("fs"), dir.join("fs.unflushed"));
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| Error::io("remove", &old, e))?;
        }
        if fs.exists() {
            std::fs::rename(&fs, &old).map_err(|e| Error::io("rename", &fs, e))?;
        }
        std::fs::create_dir(&fs).map_err(|e| Error::io("create", &fs, e))?;
        let stats = apply_layer(&fs, layer)?;
        if stats.digest != diff_id {
            return Err(Error::Layer {
                entry: None,
                source: std::io::Error::other(format!(
                    "restored content is {}, expected {diff_id}",
                    stats.digest
                )),
            });
        }
        let _ = std::fs::remove_dir_all(&old);
        self.sync_contents()?;
        let mut l = self.store.exclusive()?;
        if let Some(r) = l.meta.snapshots.get_mut(key) {
            r.unflushed = None;
        }
        self.store.write(&l.meta)?;
        Ok(stats)
    }

    /// Writes the changes of snapshot `key` relative to its parent as an uncompressed OCI
    /// layer tar (see [`diff_dir`]). The lower layers are not needed: the overlay is
    /// mounted with `redirect_dir=off,metacopy=off`, so the upper dir is self-contained.
    /// The snapshot should not be mounted by a running container while this runs.
    pub fn diff(&self, key: &str, out: impl Write) -> Result<DiffStats> {
        diff_dir(&self.fs_dir(key)?, out)
    }

    /// [`Snapshotter::diff`] leaving out the mount points in `skip` (see
    /// [`crate::diff_dir_skipping`]).
    pub fn diff_skipping(&self, key: &str, out: impl Write, skip: &[&Path]) -> Result<DiffStats> {
        diff_dir_skipping(&self.fs_dir(key)?, out, skip)
    }

    /// The paths snapshot `key` adds, changes or deletes over its parents, as
    /// `docker diff` lists them, leaving out the mount points in `skip` (see
    /// [`changes`]).
    pub fn changes(&self, key: &str, skip: &[&Path]) -> Result<Vec<Change>> {
        let (upper, lowers) = {
            let l = self.store.shared()?;
            let rec = l.meta.get(key)?;
            let lowers: Vec<PathBuf> = l
                .meta
                .parent_ids(key)?
                .into_iter()
                .map(|id| self.dir(id).join("fs"))
                .collect();
            (self.dir(rec.id).join("fs"), lowers)
        };
        changes(&upper, &lowers, skip)
    }

    /// Checks the metadata against the disk: every snapshot's parent exists, is
    /// committed and the chain has no cycle; its directory, work dir (active ones) and
    /// short link exist. Lists what [`Snapshotter::cleanup`] would remove as leftovers.
    pub fn check(&self) -> Result<CheckReport> {
        let l = self.store.shared()?;
        let meta = &l.meta;
        let mut report = CheckReport {
            snapshots: meta.snapshots.len(),
            ..CheckReport::default()
        };
        for (key, rec) in &meta.snapshots {
            let mut problem =
                |what: String| report.problems.push(format!("snapshot {key}: {what}"));
            if let Some(p) = &rec.parent {
                match meta.snapshots.get(p) {
                    None => problem(format!("its parent {p} is missing")),
                    Some(pr) if pr.kind != Kind::Committed => {
                        problem(format!("its parent {p} is {}, not committed", pr.kind))
                    }
                    Some(_) => {
                        if let Err(e) = meta.parent_ids(key) {
                            if !matches!(e, Error::NotFound(_)) {
                                problem(e.to_string());
                            }
                        }
                    }
                }
            }
            let dir = self.dir(rec.id);
            if !dir.join("fs").is_dir() {
                problem(format!(
                    "its directory {} is missing",
                    dir.join("fs").display()
                ));
            }
            if rec.kind == Kind::Active && !dir.join("work").is_dir() {
                problem(format!(
                    "its work directory {} is missing",
                    dir.join("work").display()
                ));
            }
            let link = self.root.join(LINK_DIR).join(short_name(rec.id));
            if std::fs::read_link(&link).ok() != Some(PathBuf::from(format!("../{}/fs", rec.id))) {
                problem(format!(
                    "its short link {} is missing or wrong",
                    link.display()
                ));
            }
        }
        let ids: HashSet<String> = meta.snapshots.values().map(|r| r.id.to_string()).collect();
        let links: HashSet<String> = meta.snapshots.values().map(|r| short_name(r.id)).collect();
        for e in std::fs::read_dir(&self.root).map_err(|e| Error::io("read dir", &self.root, e))? {
            let e = e.map_err(|e| Error::io("read dir", &self.root, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let numeric = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
            if (numeric && !ids.contains(&name))
                || name.starts_with(TRASH_PREFIX)
                || name == format!("{META_FILE}.tmp")
            {
                report.leftovers.push(e.path());
            }
        }
        let ldir = self.root.join(LINK_DIR);
        for e in std::fs::read_dir(&ldir).map_err(|e| Error::io("read dir", &ldir, e))? {
            let e = e.map_err(|e| Error::io("read dir", &ldir, e))?;
            if !links.contains(&*e.file_name().to_string_lossy()) {
                report.leftovers.push(e.path());
            }
        }
        report.leftovers.sort();
        Ok(report)
    }

    /// Removes what crashed processes left behind: snapshot dirs not in the metadata,
    /// trash dirs, dangling short links and a stale temporary metadata file.
    pub fn cleanup(&self) -> Result<()> {
        let l = self.store.exclusive()?;
        let ids: HashSet<String> = l
            .meta
            .snapshots
            .values()
            .map(|r| r.id.to_string())
            .collect();
        let links: HashSet<String> = l
            .meta
            .snapshots
            .values()
            .map(|r| short_name(r.id))
            .collect();
        let mut doomed = Vec::new();
        for e in std::fs::read_dir(&self.root).map_err(|e| Error::io("read dir", &self.root, e))? {
            let e = e.map_err(|e| Error::io("read dir", &self.root, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let numeric = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
            if (numeric && !ids.contains(&name)) || name.starts_with(TRASH_PREFIX) {
                doomed.push(e.path());
            } else if name == format!("{META_FILE}.tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let ldir = self.root.join(LINK_DIR);
        for e in std::fs::read_dir(&ldir).map_err(|e| Error::io("read dir", &ldir, e))? {
            let e = e.map_err(|e| Error::io("read dir", &ldir, e))?;
            if !links.contains(&*e.file_name().to_string_lossy()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        // Deleted under the lock: a crash orphan may carry the id the next `prepare`
        // would use.
        for d in doomed {
            std::fs::remove_dir_all(&d)
                .map_err(|e| Error::io("remove leftover snapshot dir", &d, e))?;
        }
        drop(l);
        Ok(())
    }
}

/// Fails unless `key` is a committed snapshot (what a parent must be).
fn committed(meta: &crate::meta::Meta, key: &str) -> Result<()> {
    let rec = meta.get(key)?;
    if rec.kind != Kind::Committed {
        return Err(Error::WrongKind {
            op: "use as parent",
            key: key.to_string(),
            actual: rec.kind.to_string(),
            expected: "committed",
        });
    }
    Ok(())
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), new at every restart.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_short_and_distinct() {
        assert_eq!(short_name(0), "0");
        assert_eq!(short_name(35), "z");
        assert_eq!(short_name(36), "10");
        let s: HashSet<_> = (0..5000).map(short_name).collect();
        assert_eq!(s.len(), 5000);
    }
}
