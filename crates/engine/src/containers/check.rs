//! `berth system check [--repair]`: the whole state checked at once.
//!
//! Each store checks its own data (the image store its blobs and image records, the
//! snapshotter its parent chains and directories); this module adds what only the
//! engine knows: which snapshots images and containers need, whether every
//! container's image, snapshots, volumes and networks exist, and what killed
//! commands left (container directories without a record, names of containers that
//! never got one, mounts of stopped containers, interrupted removals). Repair removes
//! only such leftovers, never anything an image or a container needs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use berth_snapshotter::Kind;
use berth_volumes::MountKind;

use super::record::Status;
use super::Containers;
use crate::error::Result;
use crate::spec::NetworkMode;

/// What `system check` found (and, with repair, removed).
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Blobs verified.
    pub blobs: usize,
    /// Image records checked.
    pub images: usize,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Container records checked.
    pub containers: usize,
    /// Inconsistencies, one line each; the store is consistent when this is empty.
    pub problems: Vec<String>,
    /// Leftovers of interrupted commands, one line each (removable).
    pub leftovers: Vec<String>,
    /// Leftovers removed by repair, one line each.
    pub removed: Vec<String>,
}

/// A leftover and how to remove it.
enum Fix {
    Content(berth_image_store::check::Leftover),
    SnapshotDirs,
    Snapshot(String),
    CommittedSnapshots,
    Unmount(PathBuf),
    RuntimeState(String),
    FinishRemoval(String),
    ContainerDir(String),
    Name(String),
    /// A scratch directory of a build whose process is gone.
    BuildScratch(PathBuf),
}

fn pid_of_key(key: &str, prefix: &str) -> Option<i32> {
    key.strip_prefix(prefix)?.split('-').next()?.parse().ok()
}

fn process_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Ids of the containers whose monitor process (`berth ... __monitor ID`) is alive:
/// one that is starting has its rootfs mounted before its record says running.
fn live_monitors() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if let Some(i) = args.iter().position(|a| *a == b"__monitor") {
            if let Some(id) = args.get(i + 1) {
                out.insert(String::from_utf8_lossy(id).into_owned());
            }
        }
    }
    out
}

/// Mount points (unescaped) of the host's mount table under `dir`.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort();
    out.dedup();
    // Deepest first, for unmounting.
    out.reverse();
    out
}

impl Containers {
    /// Check the whole state; with `repair`, remove the leftovers found and check again.
    pub fn check(&self, repair: bool) -> Result<CheckReport> {
        self.check_and_repair(repair, true)
    }

    /// Remove what interrupted commands left, without re-hashing every blob
    /// (`system prune`); returns what was removed.
    pub fn remove_leftovers(&self) -> Result<Vec<String>> {
        Ok(self.check_and_repair(true, false)?.removed)
    }

    fn check_and_repair(&self, repair: bool, verify: bool) -> Result<CheckReport> {
        // No pull, load, build or prune runs meanwhile: blobs not yet recorded by an
        // image are never taken for orphans.
        let _gc = self.images.lock(true)?;
        let (mut report, mut fixes) = self.check_once(verify)?;
        if !repair || fixes.is_empty() {
            return Ok(report);
        }
        let mut removed = Vec::new();
        let mut rounds = 1;
        // Removing a leftover can free another (a killed build's working
        // snapshot keeps its parent layer from counting as unneeded): repeat
        // while a round removes something, a few rounds at most.
        let mut after = loop {
            let mut progress = false;
            for (line, fix) in fixes {
                match self.apply_fix(fix) {
                    Ok(()) => {
                        progress = true;
                        removed.push(line)
                    }
                    Err(e) => report
                        .problems
                        .push(format!("could not remove ({line}): {e}")),
                }
            }
            let (after, next) = self.check_once(verify)?;
            if next.is_empty() || !progress || rounds == 4 {
                break after;
            }
            fixes = next;
            rounds += 1;
        };
        after.problems.extend(
            report
                .problems
                .into_iter()
                .filter(|p| p.starts_with("could not remove")),
        );
        after.removed = removed;
        Ok(after)
    }

    fn apply_fix(&self, fix: Fix) -> Result<()> {
        let snaps = self.images.snapshotter();
        match fix {
            Fix::Content(l) => {
                berth_image_store::check::repair(self.images.content(), &[l])?;
            }
            Fix::SnapshotDirs => snaps.cleanup()?,
            Fix::Snapshot(key) => match snaps.remove(&key) {
                Ok(()) | Err(berth_snapshotter::Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            },
            Fix::CommittedSnapshots => self.images.release_snapshots()?,
            Fix::Unmount(p) => berth_snapshotter::unmount(&p)?,
            Fix::BuildScratch(p) => {
                // Never through a mount (looked for under the real path).
                let real = p.canonicalize().unwrap_or_else(|_| p.clone());
                let mounted = mounts_under(&real);
                if !mounted.is_empty() {
                    return Err(crate::error::Error::Invalid(format!(
                        "{} still has mounts: {}",
                        p.display(),
                        mounted
                            .iter()
                            .map(|m| m.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                std::fs::remove_dir_all(&p)
                    .map_err(crate::error::Error::io(format!("remove {}", p.display())))?;
            }
            Fix::RuntimeState(id) => self.runtime.delete(&id, true)?,
            Fix::FinishRemoval(id) => {
                self.remove_with_volumes(&id, true, false)?;
            }
            Fix::ContainerDir(id) => {
                if self.store.lock_is_free(&id)
                    && !self.paths(&id).dir.join("container.json").exists()
                {
                    for (name, owner) in self.store.names() {
                        if owner == id {
                            self.store.release_name(&name);
                        }
                    }
                    let dir = self.paths(&id).dir;
                    std::fs::remove_dir_all(&dir)
                        .map_err(crate::Error::io(format!("remove {}", dir.display())))?;
                    let _ = std::fs::remove_dir_all(self.paths(&id).run_dir);
                }
            }
            Fix::Name(name) => self.store.release_name(&name),
        }
        Ok(())
    }

    fn check_once(&self, verify: bool) -> Result<(CheckReport, Vec<(String, Fix)>)> {
        let mut report = CheckReport::default();
        let mut fixes: Vec<(String, Fix)> = Vec::new();
        let leftover = |fixes: &mut Vec<(String, Fix)>, line: String, fix: Fix| {
            fixes.push((line, fix));
        };

        // Blobs and image records.
        let content = self.images.check_content(verify)?;
        report.blobs = content.blobs;
        report.images = content.images;
        report.problems.extend(content.problems);
        for l in content.leftovers {
            leftover(&mut fixes, l.to_string(), Fix::Content(l));
        }

        // Snapshots: the snapshotter's own view, then who needs each one.
        let snaps = self.images.snapshotter();
        let sc = snaps.check()?;
        report.snapshots = sc.snapshots;
        report.problems.extend(sc.problems);
        if !sc.leftovers.is_empty() {
            for p in &sc.leftovers {
                leftover(
                    &mut fixes,
                    format!("snapshot file {} belongs to no snapshot", p.display()),
                    Fix::SnapshotDirs,
                );
            }
        }
        let mut records = Vec::new();
        let mut unreadable = BTreeSet::new();
        for id in self.store.ids()? {
            match self.store.load(&id) {
                Ok(r) => records.push(r),
                Err(e) => {
                    report.problems.push(format!("container record {id}: {e}"));
                    unreadable.insert(id);
                }
            }
        }
        let infos = snaps.walk()?;
        let keys: BTreeSet<&str> = infos.iter().map(|i| i.name.as_str()).collect();
        let parents: BTreeSet<&str> = infos.iter().filter_map(|i| i.parent.as_deref()).collect();
        let container_snaps: BTreeSet<&str> = records.iter().map(|r| r.snapshot.as_str()).collect();
        let chains = self.images.needed_chains().ok();
        for info in &infos {
            let key = info.name.as_str();
            let unneeded = match info.kind {
                Kind::Committed => {
                    let needed_by_image = chains.as_ref().is_none_or(|c| c.contains(key));
                    let is_parent = parents.contains(key);
                    !needed_by_image && !is_parent
                }
                _ if container_snaps.contains(key) => false,
                _ => {
                    if let Some(id) = key.strip_prefix("container-") {
                        !self.paths(id).dir.join("container.json").exists()
                            && self.store.lock_is_free(id)
                    } else if let Some(pid) =
                        pid_of_key(key, "unpack-").or_else(|| pid_of_key(key, "build-"))
                    {
                        !process_exists(pid)
                    } else {
                        false
                    }
                }
            };
            if unneeded && info.kind != Kind::Committed {
                leftover(
                    &mut fixes,
                    format!("snapshot {key} ({}) is used by nothing", info.kind),
                    Fix::Snapshot(key.to_string()),
                );
            } else if unneeded {
                leftover(
                    &mut fixes,
                    format!("layer snapshot {key} is needed by no image"),
                    Fix::CommittedSnapshots,
                );
            }
        }

        // Containers and what they refer to.
        report.containers = records.len();
        let volumes: BTreeSet<String> = self
            .volumes
            .list()
            .map(|v| v.into_iter().map(|v| v.name).collect())
            .unwrap_or_default();
        let networks: BTreeSet<String> = self
            .networks
            .list()
            .map(|n| n.into_iter().map(|n| n.name).collect())
            .unwrap_or_default();
        for r in &records {
            let who = format!("container {} ({})", r.name, &r.id[..12]);
            if r.state.status == Status::Removing {
                leftover(
                    &mut fixes,
                    format!("{who} was being removed when its command was interrupted"),
                    Fix::FinishRemoval(r.id.clone()),
                );
                continue;
            }
            let mut problem = |what: String| report.problems.push(format!("{who}: {what}"));
            if !keys.contains(r.snapshot.as_str()) {
                problem(format!("its snapshot {} is missing", r.snapshot));
            }
            if let Some(top) = &r.image_top {
                if !keys.contains(top.as_str()) {
                    problem(format!("its image's layer snapshot {top} is missing"));
                }
            }
            let image_id = r.image_id.strip_prefix("sha256:").unwrap_or(&r.image_id);
            if self.images.find(image_id).is_err() {
                problem(format!("its image {} is missing", r.image_id));
            }
            for m in &r.mounts {
                if m.kind == MountKind::Volume
                    && !m.source.is_empty()
                    && !volumes.contains(&m.source)
                {
                    problem(format!("its volume {} is missing", m.source));
                }
            }
            let mut nets: Vec<&str> = r.connected.iter().map(|c| c.name.as_str()).collect();
            if let NetworkMode::Bridge(n) = &r.options.network {
                if n != berth_netns_bridge::DEFAULT_NETWORK {
                    nets.push(n);
                }
            }
            for n in nets {
                if !networks.contains(n) {
                    problem(format!("its network {n} is missing"));
                }
            }
        }
        let ids: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let containers_dir = self.root.join("containers");
        for entry in std::fs::read_dir(&containers_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() == 64
                && !ids.contains(name.as_str())
                && !unreadable.contains(&name)
                && self.store.lock_is_free(&name)
            {
                leftover(
                    &mut fixes,
                    format!("container directory {name} has no record (an interrupted create)"),
                    Fix::ContainerDir(name),
                );
            }
        }
        for (name, owner) in self.store.names() {
            let dir = self.paths(&owner).dir;
            if owner.len() == 64 && !dir.exists() {
                leftover(
                    &mut fixes,
                    format!("container name {name} points to no container"),
                    Fix::Name(name),
                );
            }
        }

        // Mounts of containers that are not running, of dead builds and copies.
        let monitors = live_monitors();
        let running: BTreeSet<&str> = records
            .iter()
            .filter(|r| r.state.status == Status::Running || monitors.contains(&r.id))
            .map(|r| r.id.as_str())
            .collect();
        for m in mounts_under(&containers_dir) {
            let id = m
                .strip_prefix(&containers_dir)
                .ok()
                .and_then(|p| p.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            if !running.contains(id.as_str()) {
                leftover(
                    &mut fixes,
                    format!(
                        "{} is mounted but its container is not running",
                        m.display()
                    ),
                    Fix::Unmount(m),
                );
            }
        }
        for sub in ["build", "cp"] {
            let base = self.run_root.join(sub);
            for m in mounts_under(&base) {
                let owner = m
                    .strip_prefix(&base)
                    .ok()
                    .and_then(|p| p.components().next())
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .unwrap_or_default();
                let pid = owner.rsplit('-').next().and_then(|p| p.parse().ok());
                if pid.is_some_and(|p| !process_exists(p)) {
                    leftover(
                        &mut fixes,
                        format!("{} is mounted by a process that is gone", m.display()),
                        Fix::Unmount(m),
                    );
                }
            }
        }
        // Scratch directories of builds whose process is gone: a tar context,
        // bulk scratch data, the run-root work directory.
        // (Also a cache directory a killed build was making: `<hex>.new-<pid>`.)
        type PidOf = fn(&str) -> Option<&str>;
        let scratch_dirs: [(PathBuf, PidOf); 4] = [
            (self.root.join("builder"), |n| n.strip_prefix("context-")),
            (self.root.join("builder"), |n| n.strip_prefix("scratch-")),
            (self.root.join("builder/mounts"), |n| {
                n.rsplit_once(".new-").map(|(_, p)| p)
            }),
            (self.run_root.join("build"), |n| Some(n)),
        ];
        for (base, pid_of) in scratch_dirs {
            for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let pid = pid_of(&name).and_then(|p| p.parse::<i32>().ok());
                if pid.is_some_and(|p| !process_exists(p)) {
                    leftover(
                        &mut fixes,
                        format!("{} belongs to a build that is gone", entry.path().display()),
                        Fix::BuildScratch(entry.path()),
                    );
                }
            }
        }
        // Runtime state (processes, cgroups) of containers without a record and of
        // builds whose process is gone.
        // (Also those a killed create left without a state record: listed by directory.)
        let runtime_ids: BTreeSet<String> = std::fs::read_dir(self.runtime.root())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        for id in &runtime_ids {
            let id = id.as_str();
            let orphan = if let Some(pid) = pid_of_key(id, "build-") {
                !process_exists(pid)
            } else {
                id.len() == 64
                    && !ids.contains(id)
                    && !self.paths(id).dir.join("container.json").exists()
                    && self.store.lock_is_free(id)
            };
            if orphan {
                leftover(
                    &mut fixes,
                    format!("runtime container {id} belongs to no container or live build"),
                    Fix::RuntimeState(id.to_string()),
                );
            }
        }
        // Stop processes and unmount first, remove last: order the fixes so.
        fixes.sort_by_key(|(_, f)| match f {
            Fix::RuntimeState(_) => 0,
            Fix::Unmount(_) => 0,
            Fix::FinishRemoval(_) => 1,
            Fix::ContainerDir(_) | Fix::Name(_) | Fix::BuildScratch(_) => 2,
            Fix::Snapshot(_) => 3,
            Fix::CommittedSnapshots => 4,
            Fix::SnapshotDirs => 5,
            Fix::Content(_) => 6,
        });
        report.leftovers = fixes.iter().map(|(l, _)| l.clone()).collect();
        Ok((report, fixes))
    }
}
