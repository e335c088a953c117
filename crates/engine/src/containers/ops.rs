//! More container operations: rename, top, pause/unpause, stats, cp, and
//! system-wide usage and pruning.
//!
//! `cp` never follows a container's symlink out of its root filesystem:
//! container paths are cleaned lexically (as Docker's `filepath.Clean`), then
//! resolved from a descriptor of the root with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`, trees
//! are walked with `O_PATH | O_NOFOLLOW` descriptors (a symlink is copied as
//! a symlink), and data is written with the snapshotter's safe unpacker
//! ([`berth_snapshotter::apply_layer`]), which resolves every parent without
//! following symlinks. A stopped container's snapshot is mounted on a private
//! directory for the copy and unmounted after it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};

use super::record::{ContainerRecord, Status};
use super::{check_name, Containers};
use crate::error::{Error, Result};

/// One process of `top`.
#[derive(Debug, Clone)]
pub struct TopRow {
    /// Host pid.
    pub pid: i32,
    /// Host parent pid.
    pub ppid: i32,
    /// Real uid.
    pub uid: u32,
    /// User name on the host (or the uid).
    pub user: String,
    /// CPU time, `HH:MM:SS`.
    pub time: String,
    /// Command line (or `[comm]` for a process without one).
    pub cmd: String,
}

/// One reading of a container's cgroup counters.
#[derive(Debug, Clone, Copy)]
pub struct StatsSample {
    /// When it was read.
    pub at: Instant,
    /// Total CPU time used, nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use (without inactive file cache, as Docker shows it), bytes.
    pub mem_usage: u64,
    /// Memory limit, or the host's memory when there is none, bytes.
    pub mem_limit: u64,
    /// Number of processes.
    pub pids: u64,
}

/// One row of `system df`.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageRow {
    /// How many objects.
    pub total: usize,
    /// How many are in use.
    pub active: usize,
    /// Bytes on disk.
    pub size: u64,
    /// Bytes a prune could free.
    pub reclaimable: u64,
}

/// `system df`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskUsage {
    /// Images: their blobs and unpacked layer snapshots.
    pub images: UsageRow,
    /// Containers: their writable layers.
    pub containers: UsageRow,
    /// Volumes: their data; active when some container uses them.
    pub volumes: UsageRow,
    /// Build cache (none yet).
    pub build_cache: UsageRow,
}

/// What `system prune` removed.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Ids of removed containers.
    pub containers: Vec<String>,
    /// Docker's `untagged: ...` / `deleted: ...` lines.
    pub images: Vec<String>,
    /// Names of removed volumes.
    pub volumes: Vec<String>,
    /// Names of removed (unused, user-defined) networks.
    pub networks: Vec<String>,
    /// Build cache entries removed.
    pub build_cache: usize,
    /// Bytes freed on disk.
    pub reclaimed: u64,
}

/// Container counts for `info`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Running, not paused.
    pub running: usize,
    /// Paused.
    pub paused: usize,
    /// Created or exited.
    pub stopped: usize,
    /// Distinct images.
    pub images: usize,
}

/// `cp` flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// `-a`: keep uid/gid (otherwise files belong to the user at the destination).
    pub archive: bool,
    /// `-L`: follow a symlink given as the source.
    pub follow_link: bool,
}

/// Where `cp` out of a container writes.
pub enum CopyOut<'a> {
    /// A host path, with Docker's file/directory rules.
    Host(&'a Path),
    /// A tar stream (`-`).
    Stream(&'a mut dyn Write),
}

/// What `cp` into a container reads.
pub enum CopyIn<'a> {
    /// A host path.
    Host(&'a Path),
    /// A tar stream (`-`), extracted into an existing directory.
    Stream(&'a mut dyn Read),
}

fn not_running(name: &str) -> Error {
    Error::Conflict(format!("container {name} is not running"))
}

impl Containers {
    /// `rename OLD NEW`: running containers too; a name in use is refused.
    pub fn rename(&self, old: &str, new: &str) -> Result<()> {
        let new = new.trim_start_matches('/');
        check_name(new)?;
        let id = self.resolve(old)?;
        let _lock = self.store.lock(&id)?;
        let mut record = self.store.load(&id)?;
        if record.name == new {
            return Err(Error::Conflict(format!(
                "renaming container {} to its current name {new}",
                record.name
            )));
        }
        self.store.claim_name(new, &id)?;
        let old_name = std::mem::replace(&mut record.name, new.to_string());
        if let Err(e) = self.store.save(&record) {
            self.store.release_name(new);
            return Err(e);
        }
        self.store.release_name(&old_name);
        Ok(())
    }

    /// Whether a running container is paused (its cgroup frozen).
    pub fn is_paused(&self, record: &ContainerRecord) -> bool {
        record.state.status == Status::Running && self.runtime.paused(&record.id).unwrap_or(false)
    }

    /// Docker's state word: created, running, paused, exited, removing.
    pub fn state_name(&self, record: &ContainerRecord) -> String {
        if self.is_paused(record) {
            "paused".into()
        } else {
            record.state.status.to_string()
        }
    }

    fn running(&self, name_or_id: &str) -> Result<ContainerRecord> {
        let record = self.get(name_or_id)?;
        if record.state.status != Status::Running {
            return Err(not_running(&record.name));
        }
        Ok(record)
    }

    /// `pause`: freeze every process of a running container.
    pub fn pause(&self, name_or_id: &str) -> Result<()> {
        let record = self.running(name_or_id)?;
        if self.is_paused(&record) {
            return Err(Error::Conflict(format!(
                "container {} is already paused",
                record.name
            )));
        }
        Ok(self.runtime.pause(&record.id)?)
    }

    /// `unpause`: thaw a paused container.
    pub fn unpause(&self, name_or_id: &str) -> Result<()> {
        let record = self.running(name_or_id)?;
        if !self.is_paused(&record) {
            return Err(Error::Conflict(format!(
                "container {} is not paused",
                record.name
            )));
        }
        Ok(self.runtime.resume(&record.id)?)
    }

    /// Host pids of a running container's processes: its cgroup's, or else
    /// the processes in its init's pid namespace.
    pub fn pids(&self, record: &ContainerRecord) -> Result<Vec<i32>> {
        if let Ok(pids) = self.runtime.pids(&record.id) {
            if !pids.is_empty() {
                return Ok(pids);
            }
        }
        let ns = std::fs::read_link(format!("/proc/{}/ns/pid", record.state.pid)).map_err(
            Error::io(format!("read the pid namespace of {}", record.name)),
        )?;
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc")
            .map_err(Error::io("read /proc"))?
            .flatten()
        {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if std::fs::read_link(entry.path().join("ns/pid"))
                .ok()
                .as_ref()
                == Some(&ns)
            {
                out.push(pid);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// `top`: the processes of a running container, with host pids.
    pub fn top(&self, name_or_id: &str) -> Result<Vec<TopRow>> {
        let record = self.running(name_or_id)?;
        let users = host_users();
        // SAFETY: sysconf has no memory effects.
        let ticks = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
            t if t > 0 => t as u64,
            _ => 100,
        };
        let mut rows = Vec::new();
        for pid in self.pids(&record)? {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(close) = stat.rfind(')') else {
                continue;
            };
            let comm = stat
                .get(stat.find('(').map(|i| i + 1).unwrap_or(0)..close)
                .unwrap_or("")
                .to_string();
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let field = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            // After the comm: state(0) ppid(1) ... utime(11) stime(12).
            let ppid = field(1) as i32;
            let secs = (field(11) + field(12)) / ticks;
            let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("Uid:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|u| u.parse().ok())
                })
                .unwrap_or(0);
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = if cmdline.is_empty() {
                format!("[{comm}]")
            } else {
                cmdline
                    .split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            rows.push(TopRow {
                pid,
                ppid,
                uid,
                user: users.get(&uid).cloned().unwrap_or_else(|| uid.to_string()),
                time: format!(
                    "{:02}:{:02}:{:02}",
                    secs / 3600,
                    (secs / 60) % 60,
                    secs % 60
                ),
                cmd,
            });
        }
        Ok(rows)
    }

    /// Read a running container's cgroup counters (v1 or v2).
    pub fn stats_sample(&self, record: &ContainerRecord) -> Result<StatsSample> {
        if record.state.status != Status::Running {
            return Err(not_running(&record.name));
        }
        let dirs = self.runtime.cgroup_dirs(&record.id)?;
        let find = |file: &str| dirs.iter().map(|d| d.join(file)).find(|p| p.exists());
        let read_u64 = |file: &str| -> Option<u64> {
            std::fs::read_to_string(find(file)?)
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let keyed = |file: &str, key: &str| -> Option<u64> {
            let text = std::fs::read_to_string(find(file)?).ok()?;
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok())?
            })
        };
        let v2 = find("cgroup.controllers").is_some();
        let host_mem = host_memory();
        let (cpu_ns, usage, limit) = if v2 {
            let cpu = keyed("cpu.stat", "usage_usec").unwrap_or(0) * 1000;
            let current = read_u64("memory.current").unwrap_or(0);
            let inactive = keyed("memory.stat", "inactive_file").unwrap_or(0);
            let limit = read_u64("memory.max").unwrap_or(u64::MAX);
            (cpu, current.saturating_sub(inactive), limit)
        } else {
            let cpu = read_u64("cpuacct.usage").unwrap_or(0);
            let current = read_u64("memory.usage_in_bytes").unwrap_or(0);
            let inactive = keyed("memory.stat", "total_inactive_file").unwrap_or(0);
            let limit = read_u64("memory.limit_in_bytes").unwrap_or(u64::MAX);
            (cpu, current.saturating_sub(inactive), limit)
        };
        let pids = match read_u64("pids.current") {
            Some(n) => n,
            None => self.pids(record).map(|p| p.len() as u64).unwrap_or(0),
        };
        Ok(StatsSample {
            at: Instant::now(),
            cpu_ns,
            mem_usage: usage,
            mem_limit: if host_mem > 0 {
                limit.min(host_mem)
            } else {
                limit
            },
            pids,
        })
    }

    /// Container counts for `info`.
    pub fn counts(&self) -> Result<Counts> {
        let mut c = Counts::default();
        for r in self.list()? {
            if r.state.status == Status::Running {
                if self.is_paused(&r) {
                    c.paused += 1;
                } else {
                    c.running += 1;
                }
            } else {
                c.stopped += 1;
            }
        }
        c.images = self
            .images
            .list()?
            .iter()
            .map(|i| i.id.to_string())
            .collect::<BTreeSet<_>>()
            .len();
        Ok(c)
    }

    /// Bytes of a snapshot's own directory (0 if it is gone).
    fn snapshot_bytes(&self, key: &str) -> u64 {
        self.images
            .snapshotter()
            .usage(key)
            .map(|u| u.bytes)
            .unwrap_or(0)
    }

    /// `ps -s`: bytes of the container's writable layer, and of that plus its
    /// image's unpacked layers (Docker's "virtual" size).
    pub fn container_size(&self, record: &ContainerRecord) -> (u64, u64) {
        let rw = self.snapshot_bytes(&record.snapshot);
        let hex = record.image_id.trim_start_matches("sha256:");
        let image: u64 = match self.images.find(hex) {
            Ok(found) => found
                .first()
                .map(|(_, i)| {
                    crate::images::chain_ids(i.config.rootfs().diff_ids())
                        .iter()
                        .map(|c| self.snapshot_bytes(c))
                        .sum()
                })
                .unwrap_or(0),
            Err(_) => 0,
        };
        (rw, rw + image)
    }

    /// Everything on disk that prune can affect: blobs and snapshots.
    fn disk_total(&self) -> Result<u64> {
        let (_, blobs) = self.images.blob_usage()?;
        let snapshots: u64 = self
            .images
            .snapshotter()
            .walk()?
            .iter()
            .map(|i| self.snapshot_bytes(&i.name))
            .sum();
        Ok(blobs + snapshots)
    }

    /// `system df`.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let containers = self.list()?;
        let used_images: BTreeSet<&str> = containers.iter().map(|r| r.image_id.as_str()).collect();
        let blob_sizes: HashMap<String, u64> = self
            .images
            .content()
            .list()?
            .into_iter()
            .map(|(d, s)| (d.to_string(), s))
            .collect();
        let snapshots: BTreeMap<String, u64> = self
            .images
            .snapshotter()
            .walk()?
            .into_iter()
            .filter(|i| i.kind == berth_snapshotter::Kind::Committed)
            .map(|i| {
                let bytes = self.snapshot_bytes(&i.name);
                (i.name, bytes)
            })
            .collect();
        let ids: BTreeSet<String> = self
            .images
            .list()?
            .into_iter()
            .map(|i| i.id.to_string())
            .collect();
        let mut active_blobs = BTreeSet::new();
        let mut active_chains = BTreeSet::new();
        let mut active = 0;
        for id in &ids {
            if !used_images.contains(id.as_str()) {
                continue;
            }
            active += 1;
            let hex = id.strip_prefix("sha256:").unwrap_or(id);
            if let Some((_, image)) = self.images.find(hex)?.into_iter().next() {
                active_blobs.insert(image.manifest_digest.to_string());
                active_blobs.insert(image.config_digest.to_string());
                active_blobs.extend(image.layers.iter().map(|l| l.digest().to_string()));
                active_chains.extend(crate::images::chain_ids(image.config.rootfs().diff_ids()));
            }
        }
        let size = blob_sizes.values().sum::<u64>() + snapshots.values().sum::<u64>();
        let in_use = active_blobs
            .iter()
            .filter_map(|d| blob_sizes.get(d))
            .sum::<u64>()
            + active_chains
                .iter()
                .filter_map(|c| snapshots.get(c))
                .sum::<u64>();
        let mut usage = DiskUsage {
            images: UsageRow {
                total: ids.len(),
                active,
                size,
                reclaimable: size.saturating_sub(in_use),
            },
            ..DiskUsage::default()
        };
        let used = self.volumes_in_use()?;
        for v in self.volumes.list()? {
            let bytes = self.volumes.size(&v.name);
            usage.volumes.total += 1;
            usage.volumes.size += bytes;
            if used.contains(&v.name) {
                usage.volumes.active += 1;
            } else {
                usage.volumes.reclaimable += bytes;
            }
        }
        for r in &containers {
            let bytes = self.snapshot_bytes(&r.snapshot);
            usage.containers.total += 1;
            usage.containers.size += bytes;
            if r.state.status == Status::Running {
                usage.containers.active += 1;
            } else {
                usage.containers.reclaimable += bytes;
            }
        }
        Ok(usage)
    }

    /// `system prune`: stopped containers, with `volumes` the unused
    /// anonymous volumes (with `all`, every unused volume), then dangling
    /// images (with `all`, every image no container uses), then the build cache.
    pub fn system_prune(
        &self,
        all: bool,
        volumes: bool,
        filter: &crate::prune::PruneFilter,
    ) -> Result<PruneReport> {
        let before = self.disk_total()?;
        let mut report = PruneReport {
            containers: self.prune(filter)?,
            ..PruneReport::default()
        };
        report.networks = self.network_prune(filter)?;
        let mut volume_bytes = 0;
        if volumes {
            // Every unused volume, named or anonymous (the volumes issue asks
            // for this; Docker 23+ takes only anonymous ones without -a).
            // Volumes take the label filters, not `until` (as Docker's).
            let labels_only = crate::prune::PruneFilter {
                until: None,
                ..filter.clone()
            };
            for (name, bytes) in self.prune_volumes(true, &labels_only)? {
                report.volumes.push(name);
                volume_bytes += bytes;
            }
        }
        let used: BTreeSet<String> = self.list()?.into_iter().map(|r| r.image_id).collect();
        let mut seen = BTreeSet::new();
        for image in self.images.list()? {
            let id = image.id.to_string();
            if used.contains(&id)
                || !seen.insert(id.clone())
                || !filter.allows(image.created.as_deref(), &image.labels)
            {
                continue;
            }
            if all || image.repository == "<none>" {
                let lines = match self.images.remove(image.id.hex(), true, &used) {
                    Ok(lines) => lines,
                    Err(Error::NoSuchImage(_)) => continue,
                    Err(e) => return Err(e),
                };
                report.images.extend(lines.into_iter().map(|l| {
                    l.replacen("Untagged:", "untagged:", 1)
                        .replacen("Deleted:", "deleted:", 1)
                }));
            }
        }
        // As Docker's: the build cache goes too (and the layers only it kept),
        // unless filters ask for less: berth's cache entries carry no labels
        // to filter on, so then it stays.
        if filter.is_empty() {
            report.build_cache = crate::build::prune(&self.root)?.0;
        }
        // What interrupted commands left behind (mounts, runtime state, partial
        // writes, orphan snapshots): nothing an image or container needs.
        self.remove_leftovers()?;
        report.reclaimed = before.saturating_sub(self.disk_total()?) + volume_bytes;
        Ok(report)
    }

    /// Run `f` on the host path of a container's root filesystem: the live
    /// mount of a running container, or its snapshot mounted on a private
    /// directory for the time of `f` (the record stays locked meanwhile).
    fn with_rootfs<T>(
        &self,
        record: &ContainerRecord,
        f: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        if record.state.status == Status::Running {
            return f(&self.paths(&record.id).rootfs);
        }
        let _lock = self.store.lock(&record.id)?;
        let record = self.store.load(&record.id)?;
        if record.state.status == Status::Running {
            return f(&self.paths(&record.id).rootfs);
        }
        super::not_being_removed(&record)?;
        let dir =
            self.run_root
                .join("cp")
                .join(format!("{}-{}", &record.id[..12], std::process::id()));
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let result = (|| {
            let mounts = self.images.snapshotter().mounts(&record.snapshot)?;
            let guard = berth_snapshotter::MountGuard::mount(&mounts, &dir)?;
            let out = f(guard.target());
            drop(guard);
            out
        })();
        let _ = std::fs::remove_dir(&dir);
        result
    }

    /// `cp CONTAINER:PATH DEST`.
    pub fn copy_out(
        &self,
        name_or_id: &str,
        path: &str,
        dest: CopyOut<'_>,
        opts: &CopyOptions,
    ) -> Result<()> {
        let record = self.get(name_or_id)?;
        let src = CpPath::container(path);
        self.with_rootfs(&record, |rootfs| {
            let root = open_root(rootfs)?;
            let not_found = || {
                Error::Invalid(format!(
                    "could not find the file {path} in container {}",
                    record.name
                ))
            };
            let source = src
                .locate_in_root(&root, opts.follow_link)
                .map_err(|e| match e {
                    Errno::ENOENT | Errno::ENOTDIR => not_found(),
                    e => Error::Invalid(format!("{path} in container {}: {e}", record.name)),
                })?;
            let owner = match &dest {
                CopyOut::Host(_) if !opts.archive => Some((
                    nix::unistd::geteuid().as_raw(),
                    nix::unistd::getegid().as_raw(),
                )),
                _ => None,
            };
            match dest {
                CopyOut::Stream(w) => write_tar(&source, src.entry_name(None).as_deref(), owner, w),
                CopyOut::Host(host) => {
                    let dst = CpPath::host(host);
                    let (dir, name) = host_destination(&dst, &source)?;
                    extract(&source, src.entry_name(name), owner, &dir)
                }
            }
        })
    }

    /// `export`: the container's filesystem as a tar stream, owners kept; its
    /// volumes and the files berth binds in (`/etc/hosts`, ...) are not part of it.
    pub fn export(&self, name_or_id: &str, out: &mut dyn Write) -> Result<()> {
        let opts = CopyOptions {
            archive: true,
            follow_link: false,
        };
        self.copy_out(name_or_id, "/.", CopyOut::Stream(out), &opts)
    }

    /// `cp SRC CONTAINER:PATH`.
    pub fn copy_in(
        &self,
        name_or_id: &str,
        path: &str,
        src: CopyIn<'_>,
        opts: &CopyOptions,
    ) -> Result<()> {
        let record = self.get(name_or_id)?;
        if record.options.read_only && record.state.status == Status::Running {
            return Err(Error::Conflict(format!(
                "container {} has a read-only root filesystem",
                record.name
            )));
        }
        let dst = CpPath::container(path);
        self.with_rootfs(&record, |rootfs| {
            let root = open_root(rootfs)?;
            match src {
                CopyIn::Stream(r) => {
                    let dir = match resolve_in_root(&root, &dst.rel(), true) {
                        Ok(fd) if is_dir(&fstat(fd.as_fd()).map_err(sys("stat"))?) => fd,
                        Ok(_) => {
                            return Err(Error::Invalid(format!(
                                "destination {path} in container {} must be a directory",
                                record.name
                            )))
                        }
                        Err(_) => {
                            return Err(Error::Invalid(format!(
                                "could not find the directory {path} in container {}",
                                record.name
                            )))
                        }
                    };
                    extract_stream(r, &fd_path(&dir), &self.run_root)
                }
                CopyIn::Host(host) => {
                    let src = CpPath::host(host);
                    let source = src.locate_on_host(opts.follow_link)?;
                    let (dir, name) = container_destination(&root, &dst, &source).map_err(|e| {
                        Error::Invalid(format!("{e} (in container {})", record.name))
                    })?;
                    let owner = (!opts.archive).then_some((0, 0));
                    extract(&source, src.entry_name(name), owner, &fd_path(&dir))
                }
            }
        })
    }
}

/// uid -> name from the host's /etc/passwd.
fn host_users() -> HashMap<u32, String> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

/// MemTotal of /proc/meminfo in bytes (0 if unknown).
pub fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

// ---------------------------------------------------------------- cp internals

fn sys(what: &'static str) -> impl Fn(Errno) -> Error {
    move |e| Error::Invalid(format!("{what}: {e}"))
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// A path through a descriptor (for APIs that take paths): names the very inode.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn open_root(rootfs: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Invalid(format!("open {}: {e}", rootfs.display())))
}

/// Resolve `rel` inside the root `root`: `..` and symlinks (absolute ones
/// too) never leave it. With `follow` false a final symlink is not followed.
fn resolve_in_root(root: &OwnedFd, rel: &Path, follow: bool) -> nix::Result<OwnedFd> {
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    openat2(
        root.as_fd(),
        rel,
        OpenHow::new().flags(flags).resolve(
            ResolveFlag::RESOLVE_IN_ROOT
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        ),
    )
}

/// A `cp` path with the parts of its spelling that change the meaning.
struct CpPath {
    /// Container paths: cleaned and absolute; host paths: as given.
    path: PathBuf,
    /// Ends with `/`: must be a directory.
    trailing_slash: bool,
    /// Ends with `/.`: the contents of a directory, not the directory.
    contents: bool,
}

impl CpPath {
    fn container(raw: &str) -> CpPath {
        let mut clean = PathBuf::from("/");
        for c in Path::new(raw).components() {
            match c {
                Component::Normal(n) => clean.push(n),
                Component::ParentDir => {
                    clean.pop();
                }
                _ => {}
            }
        }
        CpPath {
            path: clean,
            trailing_slash: raw.ends_with('/'),
            contents: raw == "." || raw.ends_with("/."),
        }
    }

    fn host(p: &Path) -> CpPath {
        let raw = p.as_os_str().as_bytes();
        CpPath {
            path: p.to_path_buf(),
            trailing_slash: raw.ends_with(b"/"),
            contents: raw == b"." || raw.ends_with(b"/."),
        }
    }

    /// Relative to the container root.
    fn rel(&self) -> PathBuf {
        self.path
            .strip_prefix("/")
            .unwrap_or(&self.path)
            .to_path_buf()
    }

    /// The name the copy gets: the last component (`/` copies as its contents).
    fn base(&self) -> OsString {
        self.path
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_default()
    }

    /// Entry name for a copy of this source: the name the destination rules
    /// chose, else the source's own name, else (`/.`, `/`) its contents.
    fn entry_name(&self, dest_name: Option<OsString>) -> Option<OsString> {
        match dest_name {
            Some(n) => Some(n),
            None if self.contents => None,
            None => Some(self.base()).filter(|b| !b.is_empty()),
        }
    }

    /// The source object inside a container root, as an `O_PATH` descriptor.
    fn locate_in_root(&self, root: &OwnedFd, follow: bool) -> nix::Result<Source> {
        let fd = resolve_in_root(
            root,
            &self.rel(),
            follow || self.contents || self.trailing_slash,
        )?;
        Source::from_fd(fd)
    }

    /// The source object on the host (its parents resolved normally).
    fn locate_on_host(&self, follow: bool) -> Result<Source> {
        let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
        if !(follow || self.contents || self.trailing_slash) {
            flags |= OFlag::O_NOFOLLOW;
        }
        let fd = nix::fcntl::open(&self.path, flags, Mode::empty())
            .map_err(|e| Error::Invalid(format!("{}: {e}", self.path.display())))?;
        Source::from_fd(fd).map_err(sys("stat the source"))
    }
}

/// An object to copy: an `O_PATH` descriptor and its status.
struct Source {
    fd: OwnedFd,
    stat: FileStat,
}

impl Source {
    fn from_fd(fd: OwnedFd) -> nix::Result<Source> {
        let stat = fstat(fd.as_fd())?;
        Ok(Source { fd, stat })
    }
}

/// Docker's destination rules on the host: (directory to extract into, new name).
fn host_destination(dst: &CpPath, src: &Source) -> Result<(PathBuf, Option<OsString>)> {
    let src_dir = is_dir(&src.stat);
    match std::fs::metadata(&dst.path) {
        Ok(m) if m.is_dir() => Ok((dst.path.clone(), None)),
        Ok(_) if src_dir => Err(Error::Invalid(format!(
            "cannot copy a directory to a file: {}",
            dst.path.display()
        ))),
        Ok(_) if dst.trailing_slash => Err(Error::Invalid(format!(
            "{} is not a directory",
            dst.path.display()
        ))),
        Ok(_) => Ok((
            parent_of(&dst.path),
            dst.path.file_name().map(OsStr::to_os_string),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dst.trailing_slash && !src_dir {
                return Err(Error::Invalid(format!(
                    "the destination directory {} must exist",
                    dst.path.display()
                )));
            }
            let parent = parent_of(&dst.path);
            if !parent.is_dir() {
                return Err(Error::Invalid(format!(
                    "no such directory: {}",
                    parent.display()
                )));
            }
            Ok((parent, dst.path.file_name().map(OsStr::to_os_string)))
        }
        Err(e) => Err(Error::Invalid(format!("{}: {e}", dst.path.display()))),
    }
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Docker's destination rules inside a container: (directory fd, new name).
fn container_destination(
    root: &OwnedFd,
    dst: &CpPath,
    src: &Source,
) -> std::result::Result<(OwnedFd, Option<OsString>), String> {
    let src_dir = is_dir(&src.stat);
    let shown = dst.path.display();
    match resolve_in_root(root, &dst.rel(), true) {
        Ok(fd) => {
            let st = fstat(fd.as_fd()).map_err(|e| format!("stat {shown}: {e}"))?;
            if is_dir(&st) {
                return Ok((fd, None));
            }
            if src_dir {
                return Err(format!("cannot copy a directory to a file: {shown}"));
            }
            if dst.trailing_slash {
                return Err(format!("{shown} is not a directory"));
            }
        }
        Err(Errno::ENOENT) => {
            if dst.trailing_slash && !src_dir {
                return Err(format!("the destination directory {shown} must exist"));
            }
        }
        Err(e) => return Err(format!("{shown}: {e}")),
    }
    let name = dst.path.file_name().map(OsStr::to_os_string);
    let Some(name) = name else {
        return Err(format!("invalid destination {shown}"));
    };
    let parent = dst.path.parent().unwrap_or(Path::new("/"));
    let parent_rel = parent.strip_prefix("/").unwrap_or(parent);
    match resolve_in_root(root, parent_rel, true) {
        Ok(fd) if fstat(fd.as_fd()).is_ok_and(|s| is_dir(&s)) => Ok((fd, Some(name))),
        _ => Err(format!("no such directory: {}", parent.display())),
    }
}

/// Copy `source` into the directory `dir` (named `name`, or its contents
/// when `None`), through a tar stream and the safe unpacker.
fn extract(
    source: &Source,
    name: Option<OsString>,
    owner: Option<(u32, u32)>,
    dir: &Path,
) -> Result<()> {
    let (reader, mut writer) = std::io::pipe().map_err(Error::io("create a pipe"))?;
    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let r = write_tar(source, name.as_deref(), owner, &mut writer);
            drop(writer);
            r
        });
        let applied = berth_snapshotter::apply_layer(dir, berth_snapshotter::buffered(reader));
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(Error::Invalid("the copy thread panicked".into())));
        produced?;
        applied.map(|_| ()).map_err(Error::from)
    })
}

/// Extract a tar stream from the user into `dir`, refusing overlay whiteout names.
fn extract_stream(r: &mut dyn Read, dir: &Path, scratch: &Path) -> Result<()> {
    std::fs::create_dir_all(scratch).map_err(Error::io(format!("create {}", scratch.display())))?;
    let mut spool = tempfile_in(scratch)?;
    std::io::copy(r, &mut spool).map_err(Error::io("read the tar stream"))?;
    spool.rewind().map_err(Error::io("rewind the tar stream"))?;
    {
        let mut archive = tar::Archive::new(&mut spool);
        for entry in archive
            .entries()
            .map_err(|e| Error::Invalid(format!("read the tar stream: {e}")))?
        {
            let entry = entry.map_err(|e| Error::Invalid(format!("read the tar stream: {e}")))?;
            let path = entry.path_bytes();
            let last = path
                .rsplit(|b| *b == b'/')
                .find(|c| !c.is_empty())
                .unwrap_or(&[]);
            if last.starts_with(b".wh.") {
                return Err(Error::Invalid(format!(
                    "refusing to copy {}: names starting with .wh. are overlay whiteouts",
                    String::from_utf8_lossy(&path)
                )));
            }
        }
    }
    spool.rewind().map_err(Error::io("rewind the tar stream"))?;
    berth_snapshotter::apply_layer(dir, berth_snapshotter::buffered(spool))?;
    Ok(())
}

/// An anonymous temporary file in `dir` (O_TMPFILE).
fn tempfile_in(dir: &Path) -> Result<std::fs::File> {
    let fd = nix::fcntl::open(
        dir,
        OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| Error::Invalid(format!("create a temporary file in {}: {e}", dir.display())))?;
    Ok(std::fs::File::from(fd))
}

/// Write `source` as a tar: its entries named under `name`, or (`None`) the
/// contents of a directory at the top. `owner` replaces uid/gid.
fn write_tar(
    source: &Source,
    name: Option<&OsStr>,
    owner: Option<(u32, u32)>,
    out: &mut dyn Write,
) -> Result<()> {
    let mut walker = Walker {
        builder: tar::Builder::new(out),
        owner,
        links: HashMap::new(),
        skipped: Vec::new(),
    };
    walker.builder.follow_symlinks(false);
    let tar_err = |e: std::io::Error| Error::Io {
        context: "write the tar stream".into(),
        source: e,
    };
    match name {
        Some(n) => walker.entry(&source.fd, &source.stat, Path::new(n))?,
        None if is_dir(&source.stat) => walker.children(&source.fd, Path::new(""))?,
        None => {
            return Err(Error::Invalid(
                "the source must be a directory when its contents are copied (/.)".into(),
            ))
        }
    }
    for s in &walker.skipped {
        eprintln!("berth: skipped {s}: overlay whiteout names and sockets are not copied");
    }
    walker.builder.finish().map_err(tar_err)
}

struct Walker<'a> {
    builder: tar::Builder<&'a mut dyn Write>,
    owner: Option<(u32, u32)>,
    /// (dev, ino) of files with several links -> first tar path.
    links: HashMap<(u64, u64), PathBuf>,
    skipped: Vec<String>,
}

impl Walker<'_> {
    fn header(&self, st: &FileStat, typ: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(typ);
        h.set_mode(st.st_mode & 0o7777);
        let (uid, gid) = self.owner.unwrap_or((st.st_uid, st.st_gid));
        h.set_uid(uid.into());
        h.set_gid(gid.into());
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        h
    }

    fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
        move |e| Error::Io {
            context: format!("copy {}", path.display()),
            source: e,
        }
    }

    fn entry(&mut self, fd: &OwnedFd, st: &FileStat, path: &Path) -> Result<()> {
        let name = path.file_name().map(OsStr::as_bytes).unwrap_or(b"");
        if name.starts_with(b".wh.") {
            self.skipped.push(path.display().to_string());
            return Ok(());
        }
        let k = kind(st);
        if k != SFlag::S_IFDIR && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key).cloned() {
                let mut h = self.header(st, tar::EntryType::Link);
                return self
                    .builder
                    .append_link(&mut h, path, &first)
                    .map_err(Self::io(path));
            }
            self.links.insert(key, path.to_path_buf());
        }
        match k {
            SFlag::S_IFDIR => {
                let mut h = self.header(st, tar::EntryType::Directory);
                self.builder
                    .append_data(&mut h, path, std::io::empty())
                    .map_err(Self::io(path))?;
                self.children(fd, path)
            }
            SFlag::S_IFREG => {
                // Reopen the very inode for reading (no path lookup).
                let file = nix::fcntl::open(
                    &fd_path(fd),
                    OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Error::Invalid(format!("open {}: {e}", path.display())))?;
                let file = std::fs::File::from(file);
                let mut h = self.header(st, tar::EntryType::Regular);
                h.set_size(st.st_size as u64);
                // A file that changes size meanwhile must not corrupt the stream.
                let reader = file.take(st.st_size as u64);
                self.builder
                    .append_data(&mut h, path, PadTo::new(reader, st.st_size as u64))
                    .map_err(Self::io(path))
            }
            SFlag::S_IFLNK => {
                let target = nix::fcntl::readlinkat(fd.as_fd(), "")
                    .map_err(|e| Error::Invalid(format!("readlink {}: {e}", path.display())))?;
                let mut h = self.header(st, tar::EntryType::Symlink);
                self.builder
                    .append_link(&mut h, path, Path::new(&target))
                    .map_err(Self::io(path))
            }
            SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
                let typ = match k {
                    SFlag::S_IFCHR => tar::EntryType::Char,
                    SFlag::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut h = self.header(st, typ);
                if k != SFlag::S_IFIFO {
                    let _ = h.set_device_major(libc::major(st.st_rdev));
                    let _ = h.set_device_minor(libc::minor(st.st_rdev));
                }
                self.builder
                    .append_data(&mut h, path, std::io::empty())
                    .map_err(Self::io(path))
            }
            _ => {
                self.skipped.push(path.display().to_string());
                Ok(())
            }
        }
    }

    /// Every entry of the directory `fd`, under `path`, never following a symlink.
    fn children(&mut self, fd: &OwnedFd, path: &Path) -> Result<()> {
        let mut dir = nix::dir::Dir::openat(
            fd.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::Invalid(format!("read directory {}: {e}", path.display())))?;
        let mut names: Vec<OsString> = dir
            .iter()
            .filter_map(|e| e.ok())
            .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
            .filter(|n| n != "." && n != "..")
            .collect();
        names.sort();
        let dirfd: BorrowedFd<'_> = dir.as_fd();
        for name in names {
            let child = match openat(
                dirfd,
                name.as_os_str(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                // Removed meanwhile.
                Err(Errno::ENOENT) => continue,
                Err(e) => {
                    return Err(Error::Invalid(format!(
                        "open {}: {e}",
                        path.join(&name).display()
                    )))
                }
            };
            let st = match fstat(child.as_fd()) {
                Ok(st) => st,
                Err(e) => {
                    return Err(Error::Invalid(format!(
                        "stat {}: {e}",
                        path.join(&name).display()
                    )))
                }
            };
            self.entry(&child, &st, &path.join(&name))?;
        }
        Ok(())
    }
}

/// A reader that yields exactly `len` bytes: the inner data, then zeros if it ends early.
struct PadTo<R> {
    inner: R,
    left: u64,
}

impl<R: Read> PadTo<R> {
    fn new(inner: R, len: u64) -> Self {
        PadTo { inner, left: len }
    }
}

impl<R: Read> Read for PadTo<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let mut n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            buf[..want].fill(0);
            n = want;
        }
        self.left -= n as u64;
        Ok(n)
    }
}
