//! Container cgroup management for cgroup v1, hybrid and unified (v2) hosts.
//!
//! The host layout is detected from `/proc/self/mountinfo` rather than trusted to
//! `cgroups-rs`: its `hierarchies::auto()` only checks whether `/sys/fs/cgroup` itself is a
//! cgroup2 mount, and its `V2` hierarchy hard-codes `/sys/fs/cgroup`. On a hybrid host
//! (v1 controllers plus an empty cgroup2 at `/sys/fs/cgroup/unified`) the v1 hierarchies hold
//! the controllers, so that is what we use; on a pure v2 host the single cgroup2 mount is used.
//!
//! `cgroups-rs` controllers (`MemController`, `CpuController`, ...) are constructed directly on
//! the directories computed here and used for writing resource limits, moving tasks and
//! freezing. Directory creation, `cgroup.subtree_control` handling, reading `cgroup.procs`,
//! OOM counters and removal are done with direct cgroupfs access; each place says why.
//!
//! Device rules are enforced by [`crate::devices`] (v1 devices controller, v2 eBPF).
//! Ignored parts of `linux.resources` (documented, not errors): `blockIO`, `hugepageLimits`, `network`, `rdma`,
//! `memory.kernel` (deprecated, rejected by modern kernels), realtime CPU and `cpu.idle`/`burst`.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use cgroups_rs::fs::blkio::BlkIoController;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::cpuset::CpuSetController;
use cgroups_rs::fs::devices::DevicesController;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{MaxValue, Subsystem};
use cgroups_rs::{CgroupPid, FreezerState};
use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources};

const MOUNTINFO: &str = "/proc/self/mountinfo";
const SELF_CGROUP: &str = "/proc/self/cgroup";
const DEFAULT_PARENT: &str = "berth";
/// v1 controllers a container joins, in the order tasks are added (blkio before memory, as
/// cgroup writeback wants; see cgroups-rs `V1::subsystems`).
const V1_CONTROLLERS: &[&str] = &[
    "blkio", "memory", "pids", "cpuset", "cpu", "cpuacct", "devices", "freezer",
];
/// v2 controllers enabled in the ancestors' `cgroup.subtree_control` (when available).
const V2_CONTROLLERS: &[&str] = &["cpu", "cpuset", "io", "memory", "pids"];

/// Errors from cgroup operations; each names the path or controller involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup or cgroup2 filesystem is mounted.
    #[error("no cgroup filesystem is mounted (checked {mountinfo})")]
    NoCgroupFs {
        /// The mount table that was read.
        mountinfo: PathBuf,
    },
    /// A controller needed for a requested resource is not available for this cgroup.
    #[error("cgroup controller {controller:?} is not available (needed for {needed_for})")]
    ControllerUnavailable {
        /// Controller name, e.g. "memory".
        controller: String,
        /// What needed it.
        needed_for: String,
    },
    /// The cgroups path is malformed (e.g. contains "..") or not visible in the mount.
    #[error("invalid cgroups path {path:?}: {reason}")]
    InvalidPath {
        /// The offending path.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// The container id cannot be used as a cgroup directory name.
    #[error("invalid container id {id:?} for a cgroup name: {reason}")]
    InvalidId {
        /// The offending id.
        id: String,
        /// Why it was refused.
        reason: String,
    },
    /// A systemd-style "slice:prefix:name" path was given.
    #[error("systemd cgroup paths are not supported without systemd: {path:?}")]
    SystemdPath {
        /// The offending path.
        path: String,
    },
    /// The cgroup does not exist on any hierarchy.
    #[error("cgroup {path} does not exist (looked at {dirs:?})")]
    NotFound {
        /// Cgroup path inside the hierarchy.
        path: PathBuf,
        /// Directories that were checked.
        dirs: Vec<PathBuf>,
    },
    /// Reading a cgroupfs or procfs file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// File that was read.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing a cgroupfs file failed.
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        /// File that was written.
        path: PathBuf,
        /// Value that was written.
        value: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The device rules could not be parsed or enforced.
    #[error("device rules for cgroup {path}: {reason}")]
    Devices {
        /// The cgroup directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Creating a cgroup directory failed.
    #[error("creating cgroup directory {path}: {source}")]
    CreateDir {
        /// Directory being created.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// Enabling a v2 controller in an ancestor's `cgroup.subtree_control` failed
    /// (EBUSY means the ancestor has processes: the "no internal processes" rule).
    #[error("enabling controller {controller:?} in {path}/cgroup.subtree_control: {source}")]
    EnableController {
        /// Controller name.
        controller: String,
        /// Ancestor cgroup directory.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// Removing a cgroup directory failed.
    #[error("removing cgroup directory {path}: {source}")]
    RemoveDir {
        /// Directory being removed.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The cgroup still had processes after retries and SIGKILL.
    #[error("cgroup {path} is still busy after retries (remaining pids {pids:?})")]
    Busy {
        /// Directory that could not be removed.
        path: PathBuf,
        /// Processes still listed in it.
        pids: Vec<i32>,
    },
    /// A cgroupfs or procfs file had unexpected contents.
    #[error("parsing {path}: {reason}")]
    Parse {
        /// File that was parsed.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A cgroups-rs controller operation failed.
    #[error("{controller} controller at {path}: {operation}: {source}")]
    Controller {
        /// Controller name.
        controller: String,
        /// Cgroup directory.
        path: PathBuf,
        /// What was attempted.
        operation: String,
        /// Underlying cgroups-rs error.
        #[source]
        source: Box<cgroups_rs::fs::error::Error>,
    },
    /// A `linux.resources` value is invalid or unsupported on this layout.
    #[error("invalid linux.resources.{field}: {reason}")]
    InvalidResource {
        /// Resource field, e.g. "memory.swap".
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// A pid argument was not a positive process id.
    #[error("invalid pid {pid} for cgroup {path}")]
    InvalidPid {
        /// The pid given.
        pid: i32,
        /// Cgroup path.
        path: PathBuf,
    },
    /// Sending a signal to a process of the cgroup failed.
    #[error("sending {signal} to pid {pid} in cgroup {path}: {source}")]
    Signal {
        /// Signal sent.
        signal: Signal,
        /// Target pid.
        pid: i32,
        /// Cgroup path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: Errno,
    },
}

type Result<T> = std::result::Result<T, CgroupError>;

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Only cgroup v1 hierarchies are mounted.
    V1,
    /// cgroup v1 hierarchies plus a cgroup2 mount (usually `/sys/fs/cgroup/unified`).
    Hybrid,
    /// Only cgroup2 is mounted (pure v2).
    Unified,
}

/// One cgroup or cgroup2 mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    /// Root of the mount inside the hierarchy (field 4).
    root: String,
    /// Mount point (field 5).
    point: PathBuf,
    /// "cgroup" or "cgroup2".
    fstype: String,
    /// Super options (controllers for v1).
    options: Vec<String>,
}

/// Undo mountinfo's octal escapes (`\040` for space etc.).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse the cgroup and cgroup2 entries of a mountinfo file.
fn parse_mountinfo(content: &str) -> Vec<MountEntry> {
    let mut v = Vec::new();
    for line in content.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split_whitespace().collect();
        let post: Vec<&str> = post.split_whitespace().collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let fstype = post[0];
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        v.push(MountEntry {
            root: unescape_mountinfo(pre[3]),
            point: PathBuf::from(unescape_mountinfo(pre[4])),
            fstype: fstype.to_string(),
            options: post[2].split(',').map(str::to_string).collect(),
        });
    }
    v
}

fn read_file(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

fn cgroup_mounts() -> Result<Vec<MountEntry>> {
    let mounts = parse_mountinfo(&read_file(Path::new(MOUNTINFO))?);
    if mounts.is_empty() {
        return Err(CgroupError::NoCgroupFs {
            mountinfo: PathBuf::from(MOUNTINFO),
        });
    }
    Ok(mounts)
}

fn layout_from_mounts(mounts: &[MountEntry]) -> Result<Layout> {
    let v1 = mounts.iter().any(|m| m.fstype == "cgroup");
    let v2 = mounts.iter().any(|m| m.fstype == "cgroup2");
    match (v1, v2) {
        (true, true) => Ok(Layout::Hybrid),
        (true, false) => Ok(Layout::V1),
        (false, true) => Ok(Layout::Unified),
        (false, false) => Err(CgroupError::NoCgroupFs {
            mountinfo: PathBuf::from(MOUNTINFO),
        }),
    }
}

/// Detect the host's cgroup layout from `/proc/self/mountinfo`.
pub fn detect_layout() -> Result<Layout> {
    layout_from_mounts(&cgroup_mounts()?)
}

/// Which hierarchies hold the controllers, as chosen for this host.
enum Backend {
    /// One entry per distinct v1 mount, with the wanted controllers it carries.
    V1(Vec<(Vec<String>, MountEntry)>),
    /// The cgroup2 mount.
    V2(MountEntry),
}

fn choose_backend(mounts: &[MountEntry]) -> Result<Backend> {
    let mut v1: Vec<(Vec<String>, MountEntry)> = Vec::new();
    for ctrl in V1_CONTROLLERS {
        let found = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == ctrl));
        if let Some(m) = found {
            if let Some(entry) = v1.iter_mut().find(|(_, e)| e.point == m.point) {
                entry.0.push((*ctrl).to_string());
            } else {
                v1.push((vec![(*ctrl).to_string()], m.clone()));
            }
        }
    }
    if !v1.is_empty() {
        return Ok(Backend::V1(v1));
    }
    let v2 = mounts
        .iter()
        .find(|m| m.fstype == "cgroup2" && m.point == Path::new("/sys/fs/cgroup"))
        .or_else(|| mounts.iter().find(|m| m.fstype == "cgroup2"));
    match v2 {
        Some(m) => Ok(Backend::V2(m.clone())),
        None => Err(CgroupError::NoCgroupFs {
            mountinfo: PathBuf::from(MOUNTINFO),
        }),
    }
}

/// Entries of `/proc/self/cgroup`: (controllers, path). v2's entry has no controllers.
fn parse_proc_cgroup(content: &str) -> Vec<(Vec<String>, String)> {
    content
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let ctrls = if ctrls.is_empty() {
                Vec::new()
            } else {
                ctrls.split(',').map(str::to_string).collect()
            };
            Some((ctrls, path.to_string()))
        })
        .collect()
}

/// Convert a hierarchy path from /proc/self/cgroup to the path visible under the mount
/// (strip the mount's root, which is not "/" for bind-mounted sub-hierarchies).
fn visible_path(mount: &MountEntry, hier_path: &str) -> Result<PathBuf> {
    let root = mount.root.trim_end_matches('/');
    let rest = if root.is_empty() {
        Some(hier_path)
    } else if hier_path == root {
        Some("/")
    } else {
        hier_path.strip_prefix(root).filter(|r| r.starts_with('/'))
    };
    match rest {
        Some(r) if !r.split('/').any(|c| c == "..") => Ok(PathBuf::from(r)),
        _ => Err(CgroupError::InvalidPath {
            path: hier_path.to_string(),
            reason: format!(
                "own cgroup is not visible under mount {} (root {})",
                mount.point.display(),
                mount.root
            ),
        }),
    }
}

/// The validated request: absolute hierarchy path, or a path relative to the own cgroup.
enum Requested {
    Absolute(PathBuf),
    Relative(PathBuf),
}

fn validate_id(id: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(CgroupError::InvalidId {
            id: id.to_string(),
            reason: reason.to_string(),
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id == "." || id == ".." {
        return bad("must not be \".\" or \"..\"");
    }
    if id.contains('/') || id.contains('\0') {
        return bad("must not contain '/' or NUL");
    }
    Ok(())
}

fn parse_request(id: &str, cgroups_path: Option<&str>) -> Result<Requested> {
    let raw = match cgroups_path {
        Some(p) if !p.is_empty() => p,
        _ => {
            validate_id(id)?;
            return Ok(Requested::Relative(Path::new(DEFAULT_PARENT).join(id)));
        }
    };
    let invalid = |reason: &str| CgroupError::InvalidPath {
        path: raw.to_string(),
        reason: reason.to_string(),
    };
    if !raw.starts_with('/') && raw.split(':').count() == 3 {
        return Err(CgroupError::SystemdPath {
            path: raw.to_string(),
        });
    }
    if raw.contains('\0') {
        return Err(invalid("contains NUL"));
    }
    let mut clean = PathBuf::new();
    for c in Path::new(raw).components() {
        match c {
            Component::ParentDir => return Err(invalid("\"..\" components are not allowed")),
            Component::Normal(n) => clean.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    if raw.starts_with('/') {
        if clean.as_os_str().is_empty() {
            return Err(invalid("the hierarchy root cannot be a container cgroup"));
        }
        Ok(Requested::Absolute(Path::new("/").join(clean)))
    } else {
        if clean.as_os_str().is_empty() {
            return Err(invalid("empty relative path"));
        }
        Ok(Requested::Relative(clean))
    }
}

/// One directory of the container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct CgDir {
    /// Controllers served by this directory (v1), or the v2 controllers we care about.
    controllers: Vec<String>,
    /// Mount point of its hierarchy.
    mount_point: PathBuf,
    /// The cgroup directory itself.
    dir: PathBuf,
}

fn join_visible(mount_point: &Path, visible: &Path) -> PathBuf {
    mount_point.join(visible.strip_prefix("/").unwrap_or(visible))
}

/// Where a container's cgroup was placed, as resolved by [`CgroupManager::create`].
///
/// Relative cgroup paths resolve against the creating process's own cgroup;
/// a later command (kill, exec, delete) may run in another cgroup, so the
/// runtime stores this with the container's state and reopens the cgroup
/// from it with [`CgroupManager::from_location`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupLocation {
    v2: bool,
    path: PathBuf,
    dirs: Vec<CgDir>,
}

/// One container's cgroup (on every v1 controller hierarchy it needs, or one v2 dir).
#[derive(Debug)]
pub struct CgroupManager {
    v2: bool,
    path: PathBuf,
    dirs: Vec<CgDir>,
}

impl CgroupManager {
    /// Compute (without touching the filesystem beyond reading) where the cgroup lives.
    fn plan(id: &str, cgroups_path: Option<&str>) -> Result<Self> {
        let backend = choose_backend(&cgroup_mounts()?)?;
        Self::plan_with(id, cgroups_path, backend)
    }

    /// [`Self::plan`] on a given backend.
    fn plan_with(id: &str, cgroups_path: Option<&str>, backend: Backend) -> Result<Self> {
        let req = parse_request(id, cgroups_path)?;
        let own = || -> Result<Vec<(Vec<String>, String)>> {
            Ok(parse_proc_cgroup(&read_file(Path::new(SELF_CGROUP))?))
        };
        match backend {
            Backend::V1(hiers) => {
                let own_entries = match req {
                    Requested::Relative(_) => Some(own()?),
                    Requested::Absolute(_) => None,
                };
                let mut dirs = Vec::new();
                let mut reported: Option<PathBuf> = None;
                for (controllers, mount) in hiers {
                    let path = match (&req, &own_entries) {
                        (Requested::Absolute(p), _) => p.clone(),
                        (Requested::Relative(rel), Some(entries)) => {
                            let first = controllers.first().map(String::as_str).unwrap_or("");
                            let own_path = entries
                                .iter()
                                .find(|(c, _)| c.iter().any(|x| x == first))
                                .map(|(_, p)| p.as_str())
                                .unwrap_or("/");
                            visible_path(&mount, own_path)?.join(rel)
                        }
                        (Requested::Relative(rel), None) => Path::new("/").join(rel),
                    };
                    // path() reports the memory hierarchy's path (they differ per
                    // controller when relative paths are used and the own cgroups differ).
                    if reported.is_none() || controllers.iter().any(|c| c == "memory") {
                        reported = Some(path.clone());
                    }
                    dirs.push(CgDir {
                        dir: join_visible(&mount.point, &path),
                        controllers,
                        mount_point: mount.point,
                    });
                }
                Ok(CgroupManager {
                    v2: false,
                    path: reported.unwrap_or_default(),
                    dirs,
                })
            }
            Backend::V2(mount) => {
                let path = match req {
                    Requested::Absolute(p) => p,
                    Requested::Relative(rel) => {
                        let entries = own()?;
                        let own_path = entries
                            .iter()
                            .find(|(c, _)| c.is_empty())
                            .map(|(_, p)| p.as_str())
                            .unwrap_or("/");
                        let mut base = visible_path(&mount, own_path)?;
                        // v2 "no internal processes": a non-root cgroup that has processes
                        // (the caller's own cgroup normally does: we are in it) cannot enable
                        // controllers for children, so relative paths fall back to the root.
                        if base != Path::new("/") {
                            let procs = join_visible(&mount.point, &base).join("cgroup.procs");
                            let busy = fs::read_to_string(&procs)
                                .map(|s| !s.trim().is_empty())
                                .unwrap_or(true);
                            if busy {
                                base = PathBuf::from("/");
                            }
                        }
                        base.join(rel)
                    }
                };
                let dir = join_visible(&mount.point, &path);
                Ok(CgroupManager {
                    v2: true,
                    path,
                    dirs: vec![CgDir {
                        controllers: V2_CONTROLLERS.iter().map(|s| s.to_string()).collect(),
                        mount_point: mount.point,
                        dir,
                    }],
                })
            }
        }
    }

    /// Create (or join an existing) cgroup for container `id`.
    ///
    /// `cgroups_path` is the OCI spec's `linux.cgroupsPath`: absolute paths are relative to the
    /// hierarchy root (the mount point); relative paths, and `None` (which becomes
    /// `berth/<id>`), are placed under the calling process's own cgroup. On v1 that is done per
    /// controller. On v2 the controllers are enabled in `cgroup.subtree_control` of each
    /// ancestor from the root down; because a non-root cgroup with processes cannot enable
    /// controllers for children, when the caller's own cgroup is not the root and has
    /// processes, relative paths are placed under the hierarchy root instead.
    /// The systemd form `slice:prefix:name` is refused, as are paths with `..`.
    pub fn create(id: &str, cgroups_path: Option<&str>) -> Result<Self> {
        let mgr = Self::plan(id, cgroups_path)?;
        mgr.make_dirs()?;
        Ok(mgr)
    }

    /// Create the planned directories (v1: with cpuset init; v2: enabling controllers).
    fn make_dirs(&self) -> Result<()> {
        let mgr = self;
        for d in &mgr.dirs {
            let rel = d
                .dir
                .strip_prefix(&d.mount_point)
                .map_err(|_| CgroupError::InvalidPath {
                    path: d.dir.display().to_string(),
                    reason: format!("not under mount {}", d.mount_point.display()),
                })?
                .to_path_buf();
            let comps: Vec<_> = rel.components().collect();
            let mut cur = d.mount_point.clone();
            for c in &comps {
                if mgr.v2 {
                    enable_v2_controllers(&cur)?;
                }
                let parent = cur.clone();
                cur.push(c.as_os_str());
                if cur.is_dir() {
                    continue;
                }
                // Done by hand rather than with cgroups-rs `Cgroup::create`: on v2 it
                // hard-codes /sys/fs/cgroup and ignores subtree_control failures, and on v1
                // it only logs failures to initialise cpuset.cpus/mems.
                match fs::create_dir(&cur) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(source) => {
                        return Err(CgroupError::CreateDir {
                            path: cur.clone(),
                            source,
                        })
                    }
                }
                if !mgr.v2 && d.controllers.iter().any(|c| c == "cpuset") {
                    // A new v1 cpuset cgroup starts with empty cpus/mems and refuses tasks
                    // until they are set: inherit the parent's.
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let mine = read_file(&cur.join(f))?;
                        if mine.trim().is_empty() {
                            let theirs = read_file(&parent.join(f))?;
                            write_file(&cur.join(f), theirs.trim())?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Reopen an existing container's cgroup from the same inputs, creating nothing.
    ///
    /// Relative paths resolve against the *calling* process's cgroup, so the caller must be in
    /// the same cgroup as the creator (or the spec must use an absolute path).
    pub fn open(id: &str, cgroups_path: Option<&str>) -> Result<Self> {
        let mgr = Self::plan(id, cgroups_path)?;
        if !mgr.dirs.iter().any(|d| d.dir.is_dir()) {
            return Err(CgroupError::NotFound {
                path: mgr.path.clone(),
                dirs: mgr.dirs(),
            });
        }
        Ok(mgr)
    }

    /// Where this cgroup lives, to be stored and reopened with [`Self::from_location`].
    pub fn location(&self) -> CgroupLocation {
        CgroupLocation {
            v2: self.v2,
            path: self.path.clone(),
            dirs: self.dirs.clone(),
        }
    }

    /// Reopen a cgroup from a stored [`CgroupLocation`], creating nothing.
    pub fn from_location(location: CgroupLocation) -> Self {
        CgroupManager {
            v2: location.v2,
            path: location.path,
            dirs: location.dirs,
        }
    }

    /// The directory serving `controller` (on v2 the single directory).
    fn dir_of(&self, controller: &str) -> Option<&CgDir> {
        if self.v2 {
            self.dirs.first()
        } else {
            self.dirs
                .iter()
                .find(|d| d.controllers.iter().any(|c| c == controller))
        }
    }

    fn need(&self, controller: &str, needed_for: &str) -> Result<&CgDir> {
        self.dir_of(controller)
            .ok_or_else(|| CgroupError::ControllerUnavailable {
                controller: controller.to_string(),
                needed_for: needed_for.to_string(),
            })
    }

    /// A cgroups-rs controller for one of our directories.
    fn subsystem(&self, controller: &str, d: &CgDir) -> Subsystem {
        let (p, r, v2) = (d.dir.clone(), d.mount_point.clone(), self.v2);
        match controller {
            "memory" => Subsystem::Mem(MemController::new(p, r, v2)),
            "pids" => Subsystem::Pid(PidController::new(p, r, v2)),
            "cpuset" => Subsystem::CpuSet(CpuSetController::new(p, r, v2)),
            "cpuacct" => Subsystem::CpuAcct(CpuAcctController::new(p, r)),
            "devices" => Subsystem::Devices(DevicesController::new(p, r)),
            "freezer" => Subsystem::Freezer(FreezerController::new(p, r, v2)),
            "blkio" | "io" => Subsystem::BlkIo(BlkIoController::new(p, r, v2)),
            _ => Subsystem::Cpu(CpuController::new(p, r, v2)),
        }
    }

    /// Enforce `linux.resources.devices` (plus the devices every container
    /// needs; see [`crate::devices`]): v1 through the devices controller (skipped
    /// when it is not mounted), v2 with an eBPF program on the cgroup.
    pub fn apply_devices(&self, spec_rules: &[oci_spec::runtime::LinuxDeviceCgroup]) -> Result<()> {
        let Some(d) = self.dir_of("devices") else {
            return Ok(());
        };
        if crate::devices::in_user_namespace() {
            return Ok(());
        }
        let fail = |reason: String| CgroupError::Devices {
            path: d.dir.clone(),
            reason,
        };
        let rules = crate::devices::rules(spec_rules).map_err(fail)?;
        if self.v2 {
            crate::devices::apply_v2(&d.dir, &rules)
                .map_err(|e| fail(format!("attaching the eBPF device program: {e}")))
        } else if crate::devices::v1_has(&d.dir, &rules) {
            Ok(())
        } else {
            crate::devices::apply_v1(&d.dir, &rules).map_err(|(path, value, source)| {
                CgroupError::Write {
                    path,
                    value,
                    source,
                }
            })
        }
    }

    /// Apply `linux.resources`: memory, cpu, cpuset, pids (and `unified` on v2).
    ///
    /// Devices are [`Self::apply_devices`]'s; blockIO, hugepages, network and rdma are
    /// ignored. On v1, `memory.swap` is only applied when
    /// `memory.memsw.limit_in_bytes` exists (swap accounting enabled); on v2 it is converted
    /// to `memory.swap.max = swap - limit` and skipped if that file does not exist.
    pub fn apply(&self, resources: &LinuxResources) -> Result<()> {
        if let Some(m) = resources.memory() {
            self.apply_memory(m)?;
        }
        if let Some(c) = resources.cpu() {
            self.apply_cpu(c)?;
        }
        if let Some(p) = resources.pids() {
            let d = self.need("pids", "linux.resources.pids")?;
            let v = if p.limit() > 0 {
                MaxValue::Value(p.limit())
            } else {
                MaxValue::Max
            };
            let pc = PidController::new(d.dir.clone(), d.mount_point.clone(), self.v2);
            ctl(pc.set_pid_max(v), "pids", d, format!("set pids.max={v}"))?;
        }
        if let Some(u) = resources.unified() {
            if !u.is_empty() {
                if !self.v2 {
                    return Err(CgroupError::InvalidResource {
                        field: "unified".into(),
                        reason: "requires cgroup v2".into(),
                    });
                }
                let d = &self.dirs[0];
                for (k, v) in u {
                    if k.is_empty() || k.contains('/') || k.starts_with('.') {
                        return Err(CgroupError::InvalidResource {
                            field: format!("unified.{k}"),
                            reason: "not a cgroup file name".into(),
                        });
                    }
                    write_file(&d.dir.join(k), v)?;
                }
            }
        }
        Ok(())
    }

    fn apply_memory(&self, m: &LinuxMemory) -> Result<()> {
        let wanted = m.limit().is_some()
            || m.reservation().is_some()
            || m.swap().is_some()
            || m.swappiness().is_some()
            || m.disable_oom_killer() == Some(true)
            || m.kernel_tcp().is_some();
        if !wanted {
            return Ok(());
        }
        let d = self.need("memory", "linux.resources.memory")?;
        let mc = MemController::new(d.dir.clone(), d.mount_point.clone(), self.v2);
        let limit = m.limit();
        if let (Some(l), Some(s)) = (limit, m.swap()) {
            if l > 0 && s > 0 && s < l {
                return Err(CgroupError::InvalidResource {
                    field: "memory.swap".into(),
                    reason: format!("memory+swap limit {s} is lower than memory limit {l}"),
                });
            }
        }
        if self.v2 {
            if let Some(l) = limit {
                let l = if l < 0 { -1 } else { l };
                ctl(mc.set_limit(l), "memory", d, format!("set memory.max={l}"))?;
            }
            if let Some(s) = m.swap() {
                let swap_max = if s < 0 {
                    -1
                } else {
                    match limit {
                        Some(l) if l > 0 => s - l,
                        _ => {
                            return Err(CgroupError::InvalidResource {
                                field: "memory.swap".into(),
                                reason: "a swap limit needs a memory limit on cgroup v2".into(),
                            })
                        }
                    }
                };
                if d.dir.join("memory.swap.max").exists() {
                    ctl(
                        mc.set_memswap_limit(swap_max),
                        "memory",
                        d,
                        format!("set memory.swap.max={swap_max}"),
                    )?;
                }
            }
            if let Some(r) = m.reservation() {
                if r >= 0 {
                    ctl(
                        mc.set_soft_limit(r),
                        "memory",
                        d,
                        format!("set memory.low={r}"),
                    )?;
                }
            }
            // swappiness, disable_oom_killer and kernel_tcp have no v2 equivalent. (cgroups-rs
            // `set_swappiness` would write the value into memory.swap.max on v2: not used.)
            return Ok(());
        }

        // v1
        let swap = if d.dir.join("memory.memsw.limit_in_bytes").exists() {
            m.swap()
        } else {
            None
        };
        let set_limit = |l: i64| {
            ctl(
                mc.set_limit(l),
                "memory",
                d,
                format!("set memory.limit_in_bytes={l}"),
            )
        };
        let set_swap = |s: i64| {
            ctl(
                mc.set_memswap_limit(s),
                "memory",
                d,
                format!("set memory.memsw.limit_in_bytes={s}"),
            )
        };
        match (limit, swap) {
            (Some(l), Some(s)) => {
                // The kernel requires limit <= memsw at every step: raise memsw first when
                // growing, lower the limit first when shrinking (as runc does).
                let cur = read_file(&d.dir.join("memory.limit_in_bytes"))?
                    .trim()
                    .parse::<i64>()
                    .unwrap_or(i64::MAX);
                if s == -1 || cur < s {
                    set_swap(s)?;
                    set_limit(l)?;
                } else {
                    set_limit(l)?;
                    set_swap(s)?;
                }
            }
            (Some(l), None) => set_limit(l)?,
            (None, Some(s)) => set_swap(s)?,
            (None, None) => {}
        }
        if let Some(r) = m.reservation() {
            ctl(
                mc.set_soft_limit(r),
                "memory",
                d,
                format!("set memory.soft_limit_in_bytes={r}"),
            )?;
        }
        if let Some(sw) = m.swappiness() {
            if sw > 100 {
                return Err(CgroupError::InvalidResource {
                    field: "memory.swappiness".into(),
                    reason: format!("{sw} is above 100"),
                });
            }
            if d.dir.join("memory.swappiness").exists() {
                ctl(
                    mc.set_swappiness(sw),
                    "memory",
                    d,
                    format!("set memory.swappiness={sw}"),
                )?;
            }
        }
        if m.disable_oom_killer() == Some(true) {
            ctl(mc.disable_oom_killer(), "memory", d, "disable OOM killer")?;
        }
        if let Some(t) = m.kernel_tcp() {
            if d.dir.join("memory.kmem.tcp.limit_in_bytes").exists() {
                ctl(
                    mc.set_tcp_limit(t),
                    "memory",
                    d,
                    format!("set memory.kmem.tcp.limit_in_bytes={t}"),
                )?;
            }
        }
        Ok(())
    }

    fn apply_cpu(&self, c: &LinuxCpu) -> Result<()> {
        // As runc, zero means "leave as is" (docker update sends zeros for what it does not change).
        let shares = c.shares().filter(|s| *s > 0);
        let quota = c.quota().filter(|q| *q != 0);
        let period = c.period().filter(|p| *p != 0);
        if shares.is_some() || quota.is_some() || period.is_some() {
            let d = self.need("cpu", "linux.resources.cpu")?;
            let cc = CpuController::new(d.dir.clone(), d.mount_point.clone(), self.v2);
            if let Some(s) = shares {
                // cgroups-rs writes the value as-is to cpu.weight on v2; converting is ours.
                let v = if self.v2 { shares_to_weight(s) } else { s };
                let file = if self.v2 { "cpu.weight" } else { "cpu.shares" };
                ctl(cc.set_shares(v), "cpu", d, format!("set {file}={v}"))?;
            }
            if self.v2 {
                if quota.is_some() || period.is_some() {
                    ctl(
                        cc.set_cfs_quota_and_period(quota, period),
                        "cpu",
                        d,
                        format!("set cpu.max from quota {:?} period {:?}", quota, period),
                    )?;
                }
            } else {
                if let Some(p) = period {
                    ctl(
                        cc.set_cfs_period(p),
                        "cpu",
                        d,
                        format!("set cpu.cfs_period_us={p}"),
                    )?;
                }
                if let Some(q) = quota {
                    let q = if q <= 0 { -1 } else { q };
                    ctl(
                        cc.set_cfs_quota(q),
                        "cpu",
                        d,
                        format!("set cpu.cfs_quota_us={q}"),
                    )?;
                }
            }
        }
        let cpus = c.cpus().as_deref().filter(|s| !s.is_empty());
        let mems = c.mems().as_deref().filter(|s| !s.is_empty());
        if cpus.is_some() || mems.is_some() {
            let d = self.need("cpuset", "linux.resources.cpu.cpus/mems")?;
            let cs = CpuSetController::new(d.dir.clone(), d.mount_point.clone(), self.v2);
            if let Some(m) = mems {
                ctl(cs.set_mems(m), "cpuset", d, format!("set cpuset.mems={m}"))?;
            }
            if let Some(s) = cpus {
                ctl(cs.set_cpus(s), "cpuset", d, format!("set cpuset.cpus={s}"))?;
            }
        }
        Ok(())
    }

    /// Move a process (all its threads) into the cgroup, on every hierarchy.
    pub fn add_task(&self, pid: i32) -> Result<()> {
        if pid <= 0 {
            return Err(CgroupError::InvalidPid {
                pid,
                path: self.path.clone(),
            });
        }
        let cpid = CgroupPid::from(pid as u64);
        for d in &self.dirs {
            let name = d.controllers.first().map(String::as_str).unwrap_or("cpu");
            let sub = self.subsystem(name, d);
            ctl(
                sub.to_controller().add_task_by_tgid(&cpid),
                name,
                d,
                format!("add pid {pid} to cgroup.procs"),
            )?;
        }
        Ok(())
    }

    /// PIDs currently in the cgroup or its descendants (from `cgroup.procs`), sorted.
    ///
    /// On v1 this is the union over all hierarchies.
    pub fn pids(&self) -> Result<Vec<i32>> {
        // Read directly: cgroups-rs `procs()` turns read errors into an empty list and
        // unparsable lines into pid 0, which would make kill_all silently miss processes.
        let mut out = Vec::new();
        let mut any = false;
        for d in &self.dirs {
            if d.dir.is_dir() {
                any = true;
                collect_procs(&d.dir, &mut out)?;
            }
        }
        if !any {
            return Err(CgroupError::NotFound {
                path: self.path.clone(),
                dirs: self.dirs(),
            });
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// How many times the OOM killer killed a task in this cgroup; 0 when unknown.
    ///
    /// v2: `oom_kill` of `memory.events`; v1: `oom_kill` of `memory.oom_control` (kernel >= 4.13).
    pub fn oom_kill_count(&self) -> u64 {
        // Read directly: cgroups-rs has no OOM counter for v2, and its v1 oom_control parser
        // is positional and panics on unexpected contents.
        let Some(d) = self.dir_of("memory") else {
            return 0;
        };
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        fs::read_to_string(d.dir.join(file))
            .ok()
            .and_then(|s| keyed_value(&s, "oom_kill"))
            .unwrap_or(0)
    }

    /// Kill every process in the cgroup (and its descendants) with `signal`.
    ///
    /// The cgroup is frozen while the pids are collected and signalled (so nothing forks past
    /// us), then thawed; a cgroup that was already frozen (paused) stays frozen unless the
    /// signal is SIGKILL. On v2, SIGKILL uses `cgroup.kill` when the kernel has it (>= 5.14).
    /// The calling process is never signalled.
    pub fn kill_all(&self, signal: Signal) -> Result<()> {
        if self.v2 && signal == Signal::SIGKILL {
            let f = self.dirs[0].dir.join("cgroup.kill");
            if f.exists() {
                return write_file(&f, "1");
            }
        }
        let me = std::process::id() as i32;
        let initial = self.pids()?;
        let freezer = if initial.contains(&me) {
            None
        } else {
            self.dir_of("freezer").filter(|d| {
                d.dir
                    .join(if self.v2 {
                        "cgroup.freeze"
                    } else {
                        "freezer.state"
                    })
                    .exists()
            })
        };
        let mut thaw = false;
        if let Some(d) = freezer {
            let fc = FreezerController::new(d.dir.clone(), d.mount_point.clone(), self.v2);
            if matches!(
                fc.state(),
                Ok(FreezerState::Frozen | FreezerState::Freezing)
            ) {
                // Already paused: keep it paused, except that SIGKILLed tasks must be thawed
                // to die.
                thaw = signal == Signal::SIGKILL;
            } else {
                thaw = self.freeze(d);
            }
        }
        let result = self.signal_all(signal, me);
        if let (true, Some(d)) = (thaw, freezer) {
            let fc = FreezerController::new(d.dir.clone(), d.mount_point.clone(), self.v2);
            ctl(fc.thaw(), "freezer", d, "thaw")?;
        }
        result
    }

    /// Best-effort freeze, waiting up to ~1s for it to complete. Returns whether the freeze
    /// was requested (so it must be undone).
    fn freeze(&self, d: &CgDir) -> bool {
        let fc = FreezerController::new(d.dir.clone(), d.mount_point.clone(), self.v2);
        if fc.freeze().is_err() {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            let done = if self.v2 {
                // cgroups-rs `state()` reads cgroup.freeze (the request), not completion.
                fs::read_to_string(d.dir.join("cgroup.events"))
                    .ok()
                    .and_then(|s| keyed_value(&s, "frozen"))
                    == Some(1)
            } else {
                matches!(fc.state(), Ok(FreezerState::Frozen))
            };
            if done {
                break;
            }
            sleep(Duration::from_millis(5));
        }
        true
    }

    fn signal_all(&self, signal: Signal, me: i32) -> Result<()> {
        for pid in self.pids()? {
            if pid == me || pid <= 0 {
                continue;
            }
            match signal::kill(Pid::from_raw(pid), signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(source) => {
                    return Err(CgroupError::Signal {
                        signal,
                        pid,
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Remove the cgroup directories (and any sub-cgroups the container made).
    ///
    /// Retries briefly while exiting tasks disappear, SIGKILLing leftovers. Missing
    /// directories are not an error; parent directories (e.g. "berth") are left alone.
    pub fn remove(&self) -> Result<()> {
        let mut first_err = None;
        for d in &self.dirs {
            if let Err(e) = remove_tree(&d.dir) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The cgroup path inside the hierarchy (e.g. "/process_api/x/berth/ID").
    ///
    /// On v1 with relative paths the path can differ per controller; this is the memory
    /// hierarchy's path (see [`CgroupManager::dirs`] for all of them).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Absolute directories of this cgroup (one per v1 hierarchy used, or one v2 directory).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.dir.clone()).collect()
    }
}

fn ctl<T>(
    r: cgroups_rs::fs::error::Result<T>,
    controller: &str,
    d: &CgDir,
    operation: impl Into<String>,
) -> Result<T> {
    r.map_err(|source| CgroupError::Controller {
        controller: controller.to_string(),
        path: d.dir.clone(),
        operation: operation.into(),
        source: Box::new(source),
    })
}

/// Standard cpu.shares (2..262144) to cpu.weight (1..10000) conversion (as runc/crun).
fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, cgroups_rs::CPU_SHARES_V1_MAX);
    1 + ((s - 2) * 9999) / 262142
}

/// Value of `key` in a flat-keyed cgroup file ("key value" per line).
fn keyed_value(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        if it.next()? == key {
            it.next()?.parse().ok()
        } else {
            None
        }
    })
}

/// Enable our v2 controllers (those available) in `dir`'s cgroup.subtree_control.
fn enable_v2_controllers(dir: &Path) -> Result<()> {
    let available = read_file(&dir.join("cgroup.controllers"))?;
    let enabled = read_file(&dir.join("cgroup.subtree_control"))?;
    for c in V2_CONTROLLERS {
        let has = |s: &str| s.split_whitespace().any(|x| x == *c);
        if !has(&available) || has(&enabled) {
            continue;
        }
        fs::write(dir.join("cgroup.subtree_control"), format!("+{c}")).map_err(|source| {
            CgroupError::EnableController {
                controller: (*c).to_string(),
                path: dir.to_path_buf(),
                source,
            }
        })?;
    }
    Ok(())
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut v = Vec::new();
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            v.push(e.path());
        }
    }
    Ok(v)
}

fn read_procs(dir: &Path) -> Result<Vec<i32>> {
    let f = dir.join("cgroup.procs");
    let s = match fs::read_to_string(&f) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(CgroupError::Read { path: f, source }),
    };
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse::<i32>().map_err(|e| CgroupError::Parse {
                path: f.clone(),
                reason: format!("bad pid {l:?}: {e}"),
            })
        })
        .collect()
}

fn collect_procs(dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    out.extend(read_procs(dir)?);
    for sub in subdirs(dir)? {
        collect_procs(&sub, out)?;
    }
    Ok(())
}

/// rmdir `dir` after its sub-cgroups, retrying on EBUSY and SIGKILLing leftovers.
fn remove_tree(dir: &Path) -> Result<()> {
    for sub in subdirs(dir)? {
        remove_tree(&sub)?;
    }
    let me = std::process::id() as i32;
    let mut delay = Duration::from_millis(10);
    for attempt in 0..12 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                if attempt >= 2 {
                    for pid in read_procs(dir)? {
                        if pid != me && pid > 0 {
                            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                        }
                    }
                }
                sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(200));
            }
            Err(source) => {
                return Err(CgroupError::RemoveDir {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(CgroupError::Busy {
            path: dir.to_path_buf(),
            pids: read_procs(dir).unwrap_or_default(),
        }),
        Err(source) => Err(CgroupError::RemoveDir {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };
    use std::sync::atomic::{AtomicU32, Ordering};

    static SEQ: AtomicU32 = AtomicU32::new(0);

    /// A unique single-level relative cgroups path, so no parent dirs are left behind.
    fn unique(tag: &str) -> String {
        format!(
            "berth-test-{}-{}-{}",
            std::process::id(),
            tag,
            SEQ.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// Removes the cgroup (and kills/reaps a child) even when an assertion fails.
    struct Guard {
        mgr: CgroupManager,
        child: Option<Pid>,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(c) = self.child.take() {
                let _ = signal::kill(c, Signal::SIGKILL);
                let _ = waitpid(c, None);
            }
            let _ = self.mgr.remove();
        }
    }

    /// Fork a child that waits for a byte on a pipe, then runs `body` and `_exit`s with its
    /// result. `body` must only use async-signal-safe calls.
    fn fork_waiting(body: fn() -> i32) -> (Pid, i32) {
        let mut fds = [0i32; 2];
        // SAFETY: fds is a valid array of two ints for pipe(2) to fill.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: tests run with --test-threads=1; the child only calls async-signal-safe
        // libc functions (read, close, mmap, fork, kill, waitpid, pause, _exit).
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let mut b = [0u8; 1];
                // SAFETY: plain syscalls on our own pipe fds and buffer.
                unsafe {
                    libc::close(fds[1]);
                    libc::read(fds[0], b.as_mut_ptr().cast(), 1);
                    libc::_exit(body())
                }
            }
            ForkResult::Parent { child } => {
                // SAFETY: closing the read end we own in the parent.
                unsafe { libc::close(fds[0]) };
                (child, fds[1])
            }
        }
    }

    fn release(fd: i32) {
        // SAFETY: writing one byte from a valid buffer to our pipe's write end, then closing it.
        unsafe {
            libc::write(fd, b"x".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }

    fn controller_dir(mgr: &CgroupManager, c: &str) -> PathBuf {
        mgr.dir_of(c).expect("controller dir").dir.clone()
    }

    fn read_trim(p: PathBuf) -> String {
        fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
            .trim()
            .to_string()
    }

    #[test]
    fn layout_matches_mountinfo() {
        let mi = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let fstypes: Vec<&str> = mi
            .lines()
            .filter_map(|l| l.split(" - ").nth(1)?.split_whitespace().next())
            .collect();
        let v1 = fstypes.contains(&"cgroup");
        let v2 = fstypes.contains(&"cgroup2");
        let expected = match (v1, v2) {
            (true, true) => Layout::Hybrid,
            (true, false) => Layout::V1,
            (false, true) => Layout::Unified,
            (false, false) => panic!("no cgroup mounts"),
        };
        assert_eq!(detect_layout().expect("detect"), expected);
    }

    #[test]
    fn parses_mountinfo_and_proc_cgroup() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  35 31 0:32 /docker/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                  41 31 0:38 / /sys/fs/cgroup/un\\040ified rw - cgroup2 cgroup2 rw\n";
        let m = parse_mountinfo(mi);
        assert_eq!(m.len(), 3);
        assert_eq!(m[2].point, PathBuf::from("/sys/fs/cgroup/un ified"));
        assert_eq!(layout_from_mounts(&m).expect("layout"), Layout::Hybrid);
        let Backend::V1(h) = choose_backend(&m).expect("backend") else {
            panic!("expected v1 backend")
        };
        // memory, then the combined cpu,cpuacct hierarchy once.
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].0, vec!["cpu".to_string(), "cpuacct".to_string()]);
        assert_eq!(
            visible_path(&m[0], "/docker/x/a").expect("visible"),
            PathBuf::from("/docker/x/a")
        );
        assert_eq!(
            visible_path(&h[0].1, "/docker/x/a").expect("visible"),
            PathBuf::from("/a")
        );
        assert!(visible_path(&h[0].1, "/other").is_err());
        let pc = parse_proc_cgroup("4:memory:/a:b\n0::/user.slice\n");
        assert_eq!(pc[0], (vec!["memory".to_string()], "/a:b".to_string()));
        assert_eq!(pc[1], (vec![], "/user.slice".to_string()));
    }

    #[test]
    fn weight_conversion() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262144), 10000);
    }

    #[test]
    fn refuses_bad_paths() {
        for p in ["../x", "/a/../b", "a/..", "berth/../../etc"] {
            assert!(
                matches!(
                    CgroupManager::create("c1", Some(p)),
                    Err(CgroupError::InvalidPath { .. })
                ),
                "{p} accepted"
            );
        }
        let e = CgroupManager::create("c1", Some("system.slice:berth:c1")).expect_err("systemd");
        assert!(matches!(e, CgroupError::SystemdPath { .. }));
        assert!(e
            .to_string()
            .contains("systemd cgroup paths are not supported without systemd"));
        assert!(matches!(
            CgroupManager::create("../x", None),
            Err(CgroupError::InvalidId { .. })
        ));
        assert!(matches!(
            CgroupManager::open("never-created-berth-test", Some("/berth-nonexistent-xyz")),
            Err(CgroupError::NotFound { .. })
        ));
    }

    #[test]
    fn create_apply_readback_remove() {
        let name = unique("apply");
        let mgr = CgroupManager::create("c1", Some(&name)).expect("create");
        let dirs = mgr.dirs();
        let g = Guard { mgr, child: None };
        assert!(!dirs.is_empty());
        for d in &dirs {
            assert!(d.is_dir(), "{} missing", d.display());
        }
        assert!(g.mgr.path().ends_with(&name));
        let res = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .build()
                    .expect("mem"),
            )
            .pids(
                LinuxPidsBuilder::default()
                    .limit(20i64)
                    .build()
                    .expect("pids"),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(50_000i64)
                    .period(100_000u64)
                    .shares(1024u64)
                    .cpus("0")
                    .build()
                    .expect("cpu"),
            )
            .build()
            .expect("res");
        g.mgr.apply(&res).expect("apply");
        let v2 = g.mgr.v2;
        let mem = controller_dir(&g.mgr, "memory");
        let cpu = controller_dir(&g.mgr, "cpu");
        if v2 {
            assert_eq!(read_trim(mem.join("memory.max")), "67108864");
            assert_eq!(read_trim(cpu.join("cpu.max")), "50000 100000");
            assert_eq!(read_trim(cpu.join("cpu.weight")), "39");
        } else {
            assert_eq!(read_trim(mem.join("memory.limit_in_bytes")), "67108864");
            assert_eq!(read_trim(cpu.join("cpu.cfs_quota_us")), "50000");
            assert_eq!(read_trim(cpu.join("cpu.cfs_period_us")), "100000");
            assert_eq!(read_trim(cpu.join("cpu.shares")), "1024");
        }
        assert_eq!(
            read_trim(controller_dir(&g.mgr, "pids").join("pids.max")),
            "20"
        );
        assert_eq!(
            read_trim(controller_dir(&g.mgr, "cpuset").join("cpuset.cpus")),
            "0"
        );
        // open() from the same process finds the same dirs.
        let again = CgroupManager::open("c1", Some(&name)).expect("open");
        assert_eq!(again.dirs(), dirs);
        g.mgr.remove().expect("remove");
        for d in &dirs {
            assert!(!d.exists(), "{} left behind", d.display());
        }
        // Removing twice is fine.
        g.mgr.remove().expect("remove again");
    }

    #[test]
    fn default_path_is_berth_id() {
        let id = unique("default");
        let mgr = CgroupManager::create(&id, None).expect("create");
        let g = Guard { mgr, child: None };
        assert!(g.mgr.path().ends_with(Path::new("berth").join(&id)));
        let dirs = g.mgr.dirs();
        g.mgr.remove().expect("remove");
        // Our test also cleans up the "berth" parents it caused (remove() leaves them).
        for d in &dirs {
            assert!(!d.exists());
            if let Some(parent) = d.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
    }

    fn sleeper() -> i32 {
        loop {
            // SAFETY: pause(2) has no preconditions.
            unsafe { libc::pause() };
        }
    }

    #[test]
    fn add_task_pids_kill_all() {
        let mgr = CgroupManager::create("c1", Some(&unique("kill"))).expect("create");
        let mut g = Guard { mgr, child: None };
        let (child, fd) = fork_waiting(sleeper);
        g.child = Some(child);
        g.mgr.add_task(child.as_raw()).expect("add_task");
        release(fd);
        assert_eq!(g.mgr.pids().expect("pids"), vec![child.as_raw()]);
        g.mgr.kill_all(Signal::SIGKILL).expect("kill_all");
        let st = waitpid(child, None).expect("waitpid");
        g.child = None;
        assert_eq!(st, WaitStatus::Signaled(child, Signal::SIGKILL, false));
        g.mgr.remove().expect("remove");
        assert!(g.mgr.dirs().iter().all(|d| !d.exists()));
    }

    #[test]
    fn kill_all_with_sigterm_thaws() {
        let mgr = CgroupManager::create("c1", Some(&unique("term"))).expect("create");
        let mut g = Guard { mgr, child: None };
        let (child, fd) = fork_waiting(sleeper);
        g.child = Some(child);
        g.mgr.add_task(child.as_raw()).expect("add_task");
        release(fd);
        g.mgr.kill_all(Signal::SIGTERM).expect("kill_all");
        let st = waitpid(child, None).expect("waitpid");
        g.child = None;
        assert_eq!(st, WaitStatus::Signaled(child, Signal::SIGTERM, false));
        g.mgr.remove().expect("remove");
    }

    fn hog() -> i32 {
        const SIZE: usize = 256 << 20;
        // SAFETY: anonymous private mapping; checked for MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return 3;
        }
        let base = p.cast::<u8>();
        let mut off = 0;
        while off < SIZE {
            // SAFETY: off < SIZE, inside the mapping created above.
            unsafe { base.add(off).write_volatile(1) };
            off += 4096;
        }
        0
    }

    #[test]
    fn real_oom_is_counted() {
        let mgr = CgroupManager::create("c1", Some(&unique("oom"))).expect("create");
        let mut g = Guard { mgr, child: None };
        let mut mem = LinuxMemoryBuilder::default().limit(32i64 << 20);
        let dir = controller_dir(&g.mgr, "memory");
        if g.mgr.v2 || dir.join("memory.memsw.limit_in_bytes").exists() {
            mem = mem.swap(32i64 << 20);
        }
        if !g.mgr.v2 && dir.join("memory.swappiness").exists() {
            mem = mem.swappiness(0u64);
        }
        let res = LinuxResourcesBuilder::default()
            .memory(mem.build().expect("mem"))
            .build()
            .expect("res");
        g.mgr.apply(&res).expect("apply");
        assert_eq!(g.mgr.oom_kill_count(), 0);
        let (child, fd) = fork_waiting(hog);
        g.child = Some(child);
        g.mgr.add_task(child.as_raw()).expect("add_task");
        release(fd);
        let st = waitpid(child, None).expect("waitpid");
        g.child = None;
        assert_eq!(st, WaitStatus::Signaled(child, Signal::SIGKILL, false));
        assert!(g.mgr.oom_kill_count() >= 1, "oom_kill not counted");
        g.mgr.remove().expect("remove");
    }

    fn forker() -> i32 {
        let mut kids = [0 as libc::pid_t; 20];
        let mut n = 0;
        let mut code = 1;
        while n < kids.len() {
            // SAFETY: fork in a single-threaded child; the grandchild only calls pause/_exit.
            let r = unsafe { libc::fork() };
            if r == 0 {
                sleeper();
            }
            if r < 0 {
                // SAFETY: reading errno right after the failed call.
                let e = unsafe { *libc::__errno_location() };
                code = if e == libc::EAGAIN { 0 } else { 2 };
                break;
            }
            kids[n] = r;
            n += 1;
        }
        for k in &kids[..n] {
            // SAFETY: signalling and reaping our own children.
            unsafe {
                libc::kill(*k, libc::SIGKILL);
                libc::waitpid(*k, std::ptr::null_mut(), 0);
            }
        }
        code
    }

    #[test]
    fn pids_limit_stops_forks() {
        let mgr = CgroupManager::create("c1", Some(&unique("pids"))).expect("create");
        let mut g = Guard { mgr, child: None };
        let res = LinuxResourcesBuilder::default()
            .pids(
                LinuxPidsBuilder::default()
                    .limit(5i64)
                    .build()
                    .expect("pids"),
            )
            .build()
            .expect("res");
        g.mgr.apply(&res).expect("apply");
        let (child, fd) = fork_waiting(forker);
        g.child = Some(child);
        g.mgr.add_task(child.as_raw()).expect("add_task");
        release(fd);
        let st = waitpid(child, None).expect("waitpid");
        g.child = None;
        assert_eq!(st, WaitStatus::Exited(child, 0), "fork never hit EAGAIN");
        g.mgr.remove().expect("remove");
    }

    /// On a hybrid host, exercise the v2 code paths (create, add_task, pids, freeze + signal,
    /// cgroup.kill, remove) on the controller-less cgroup2 mount. Pure v2 hosts cover these
    /// through the other tests.
    #[test]
    fn v2_paths_on_hybrid_unified_mount() {
        if detect_layout().expect("layout") != Layout::Hybrid {
            return;
        }
        let mounts = cgroup_mounts().expect("mounts");
        let Some(m) = mounts.iter().find(|m| m.fstype == "cgroup2") else {
            return;
        };
        let name = unique("v2");
        let mgr =
            CgroupManager::plan_with("c1", Some(&name), Backend::V2(m.clone())).expect("plan");
        assert!(mgr.v2);
        mgr.make_dirs().expect("make_dirs");
        let mut g = Guard { mgr, child: None };
        assert_eq!(g.mgr.dirs().len(), 1);
        assert!(g.mgr.dirs()[0].is_dir());
        for sig in [Signal::SIGTERM, Signal::SIGKILL] {
            let (child, fd) = fork_waiting(sleeper);
            g.child = Some(child);
            g.mgr.add_task(child.as_raw()).expect("add_task");
            release(fd);
            assert_eq!(g.mgr.pids().expect("pids"), vec![child.as_raw()]);
            g.mgr.kill_all(sig).expect("kill_all");
            let st = waitpid(child, None).expect("waitpid");
            g.child = None;
            assert_eq!(st, WaitStatus::Signaled(child, sig, false));
        }
        let freeze = g.mgr.dirs()[0].join("cgroup.freeze");
        assert_eq!(read_trim(freeze), "0", "left frozen");
        assert_eq!(g.mgr.oom_kill_count(), 0);
        g.mgr.remove().expect("remove");
        assert!(!g.mgr.dirs()[0].exists());
    }

    #[test]
    fn paused_cgroup_stays_paused_on_sigterm() {
        let mgr = CgroupManager::create("c1", Some(&unique("paused"))).expect("create");
        let mut g = Guard { mgr, child: None };
        let Some(d) = g.mgr.dir_of("freezer").cloned() else {
            return;
        };
        let (child, fd) = fork_waiting(sleeper);
        g.child = Some(child);
        g.mgr.add_task(child.as_raw()).expect("add_task");
        release(fd);
        let fc = FreezerController::new(d.dir.clone(), d.mount_point.clone(), g.mgr.v2);
        fc.freeze().expect("freeze");
        assert!(matches!(
            fc.state(),
            Ok(FreezerState::Frozen | FreezerState::Freezing)
        ));
        g.mgr.kill_all(Signal::SIGTERM).expect("kill_all");
        assert!(matches!(
            fc.state(),
            Ok(FreezerState::Frozen | FreezerState::Freezing)
        ));
        fc.thaw().expect("thaw");
        let st = waitpid(child, None).expect("waitpid");
        g.child = None;
        assert_eq!(st, WaitStatus::Signaled(child, Signal::SIGTERM, false));
        g.mgr.remove().expect("remove");
    }
}
