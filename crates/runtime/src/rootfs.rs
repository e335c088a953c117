//! The container's root filesystem: mounts from the spec, device nodes,
//! pivot_root, masked and read-only paths.
//!
//! Every mount target is resolved inside the rootfs with
//! `openat2(RESOLVE_IN_ROOT)` and mounted through its `/proc/self/fd` link,
//! so a symlink in the image cannot redirect a mount onto the host.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{mknodat, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use crate::error::{Error, Result, SysContext};

/// Parsed mount options: flags for mount(2), flags to clear, propagation and fs data.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MountOptions {
    /// Flags to set.
    pub flags: MsFlags,
    /// Propagation changes applied after the mount.
    pub propagation: Vec<MsFlags>,
    /// Whether this is a bind mount, and a recursive one.
    pub bind: Option<bool>,
    /// Filesystem-specific data (e.g. `mode=755,size=65536k`).
    pub data: String,
}

/// Parse OCI/fstab-style mount options.
pub(crate) fn parse_options(options: &[String]) -> MountOptions {
    let mut out = MountOptions {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        bind: None,
        data: String::new(),
    };
    let mut data = Vec::new();
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "defaults" | "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => {
                out.bind = Some(out.bind.unwrap_or(false));
                continue;
            }
            "rbind" => {
                out.bind = Some(true);
                continue;
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let mut p = match opt.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                if opt.starts_with('r') {
                    p |= MsFlags::MS_REC;
                }
                out.propagation.push(p);
                continue;
            }
            // Options runc accepts that change nothing here.
            "tmpcopyup" | "idmap" | "ridmap" | "recursive" => continue,
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        out.flags.insert(set);
        out.flags.remove(clear);
    }
    out.data = data.join(",");
    out
}

/// A directory handle for the rootfs, used to resolve paths inside it.
pub(crate) struct Root {
    dir: File,
}

fn proc_fd(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect()
}

impl Root {
    /// Open the rootfs directory.
    pub(crate) fn open(path: &Path) -> Result<Root> {
        let dir = File::open(path).ctx(|| format!("open rootfs {}", path.display()))?;
        Ok(Root { dir })
    }

    /// Open `rel` resolved inside the root (symlinks and `..` cannot leave it).
    fn open_in(&self, rel: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
        let rel = relative(rel);
        let rel = if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(self.dir.as_fd(), &rel, how)
    }

    /// Resolve `rel` inside the root the way the kernel would with the root
    /// as `/`: symlinks (absolute ones from the root) and `..` are followed
    /// but never leave it. Components that do not exist are kept as they are.
    /// The result has no symlinks (at the time of the check; every later open
    /// still uses RESOLVE_IN_ROOT).
    fn secure_join(&self, rel: &Path) -> Result<PathBuf> {
        let mut pending: std::collections::VecDeque<std::ffi::OsString> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        let mut resolved = PathBuf::new();
        let mut links = 0;
        while let Some(comp) = pending.pop_front() {
            if comp == ".." {
                resolved.pop();
                continue;
            }
            let candidate = resolved.join(&comp);
            match nix::fcntl::readlinkat(self.dir.as_fd(), &candidate) {
                Ok(target) => {
                    links += 1;
                    if links > 40 {
                        return Err(nix::Error::ELOOP)
                            .ctx(|| format!("resolve {} in rootfs", rel.display()));
                    }
                    let target = PathBuf::from(target);
                    if target.is_absolute() {
                        resolved = PathBuf::new();
                    }
                    for c in target.components().rev() {
                        match c {
                            Component::Normal(n) => pending.push_front(n.to_os_string()),
                            Component::ParentDir => pending.push_front("..".into()),
                            _ => {}
                        }
                    }
                }
                Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => resolved = candidate,
                Err(e) => {
                    return Err(e).ctx(|| format!("resolve {} in rootfs", candidate.display()))
                }
            }
        }
        Ok(resolved)
    }

    /// Create `rel` and its parents as directories inside the root; return an O_PATH handle.
    pub(crate) fn mkdir_all(&self, rel: &Path) -> Result<OwnedFd> {
        let rel = self.secure_join(rel)?;
        let mut cur = PathBuf::new();
        for comp in rel.components() {
            let parent = self
                .open_in(&cur, OFlag::O_PATH | OFlag::O_DIRECTORY)
                .ctx(|| format!("open {} in rootfs", cur.display()))?;
            cur.push(comp);
            match nix::sys::stat::mkdirat(
                parent.as_fd(),
                comp.as_os_str(),
                Mode::from_bits_truncate(0o755),
            ) {
                Ok(()) | Err(nix::Error::EEXIST) => {}
                Err(e) => return Err(e).ctx(|| format!("create {} in rootfs", cur.display())),
            }
        }
        self.open_in(&cur, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .ctx(|| format!("open {} in rootfs (not a directory?)", rel.display()))
    }

    /// Create `rel` as an empty file (parents as directories) inside the root; return an O_PATH handle.
    pub(crate) fn touch(&self, rel: &Path) -> Result<OwnedFd> {
        let rel = self.secure_join(rel)?;
        if let Ok(fd) = self.open_in(&rel, OFlag::O_PATH) {
            return Ok(fd);
        }
        let parent = self.mkdir_all(rel.parent().unwrap_or(Path::new("")))?;
        let name = rel.file_name().unwrap_or_default();
        match nix::fcntl::openat(
            parent.as_fd(),
            name,
            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o644),
        ) {
            Ok(fd) => drop(fd),
            Err(nix::Error::EEXIST) | Err(nix::Error::ELOOP) => {}
            Err(e) => return Err(e).ctx(|| format!("create {} in rootfs", rel.display())),
        }
        self.open_in(&rel, OFlag::O_PATH)
            .ctx(|| format!("open {} in rootfs", rel.display()))
    }
}

/// Mount `source` on the target handle `target`.
fn mount_at(
    source: Option<&str>,
    target: &OwnedFd,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> nix::Result<()> {
    mount(source, proc_fd(target).as_str(), fstype, flags, data)
}

/// Set up the root filesystem inside the new mount namespace, before pivot_root.
pub(crate) fn prepare(spec: &Spec, rootfs: &Path, bundle: &Path) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("") | Some("rslave") | Some("slave") => MsFlags::MS_SLAVE,
        Some("private") | Some("rprivate") => MsFlags::MS_PRIVATE,
        Some("shared") | Some("rshared") => MsFlags::MS_SHARED,
        Some("unbindable") | Some("runbindable") => MsFlags::MS_UNBINDABLE,
        Some(other) => return Err(Error::Init(format!("unknown rootfsPropagation {other:?}"))),
    };
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | propagation,
        None::<&str>,
    )
    .ctx(|| "set propagation of /".into())?;
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind mount rootfs {}", rootfs.display()))?;
    let root = Root::open(rootfs)?;
    let mut dev_is_tmpfs = false;
    for m in spec.mounts().iter().flatten() {
        mount_one(&root, bundle, m)
            .map_err(|e| Error::Init(format!("mount {}: {e}", m.destination().display())))?;
        if m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs") {
            dev_is_tmpfs = true;
        }
    }
    if dev_is_tmpfs {
        create_devices(&root, linux.devices().as_deref().unwrap_or(&[]))?;
    }
    Ok(())
}

fn mount_one(root: &Root, bundle: &Path, m: &Mount) -> Result<()> {
    let options = parse_options(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().clone().unwrap_or_default();
    let dest = m.destination();
    if typ == "bind" || options.bind.is_some() {
        let source = m.source().clone().unwrap_or_default();
        let source = if source.is_absolute() {
            source
        } else {
            bundle.join(source)
        };
        let meta =
            std::fs::metadata(&source).ctx(|| format!("bind source {}", source.display()))?;
        let target = if meta.is_dir() {
            root.mkdir_all(dest)?
        } else {
            root.touch(dest)?
        };
        let mut flags = MsFlags::MS_BIND;
        if options.bind.unwrap_or(false) {
            flags |= MsFlags::MS_REC;
        }
        mount(
            Some(&source),
            proc_fd(&target).as_str(),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .ctx(|| format!("bind {}", source.display()))?;
        let extra = options.flags - MsFlags::MS_REC;
        if !extra.is_empty() {
            let top = root.touch_or_dir(dest)?;
            mount_at(
                None,
                &top,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra,
                None,
            )
            .ctx(|| "remount bind with its options".into())?;
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        mount_cgroup(root, dest, &options)?;
    } else {
        let target = root.mkdir_all(dest)?;
        let source = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
        let data = (!options.data.is_empty()).then_some(options.data.as_str());
        let result = mount_at(source.to_str(), &target, Some(&typ), options.flags, data);
        match (result, typ.as_str()) {
            (Ok(()), _) => {}
            // Without a private network namespace the kernel refuses a new
            // sysfs; runc binds the host's instead, and so do we.
            (Err(nix::Error::EPERM), "sysfs") => {
                mount_at(
                    Some("/sys"),
                    &target,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )
                .ctx(|| "bind /sys".into())?;
                let top = root.mkdir_all(dest)?;
                mount_at(
                    None,
                    &top,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | options.flags,
                    None,
                )
                .ctx(|| "remount /sys".into())?;
            }
            (Err(e), _) => return Err(e).ctx(|| format!("mount {typ}")),
        }
    }
    if !options.propagation.is_empty() {
        let top = root.touch_or_dir(dest)?;
        for p in &options.propagation {
            mount_at(None, &top, None, *p, None).ctx(|| "set mount propagation".into())?;
        }
    }
    Ok(())
}

impl Root {
    fn touch_or_dir(&self, rel: &Path) -> Result<OwnedFd> {
        self.open_in(rel, OFlag::O_PATH)
            .ctx(|| format!("open {} in rootfs", rel.display()))
    }
}

/// Mount a cgroup filesystem for the container: cgroup2 on a unified host;
/// on v1 and hybrid hosts a tmpfs holding each v1 hierarchy (the container's
/// cgroup namespace makes its own cgroup their root).
fn mount_cgroup(root: &Root, dest: &Path, options: &MountOptions) -> Result<()> {
    let target = root.mkdir_all(dest)?;
    let flags = options.flags;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ctx(|| "read mountinfo".into())?;
    let hierarchies = cgroup_hierarchies(&mounts);
    if hierarchies.iter().all(|(fstype, _, _)| fstype == "cgroup2") {
        return mount_at(Some("cgroup2"), &target, Some("cgroup2"), flags, None)
            .ctx(|| "mount cgroup2".into());
    }
    mount_at(
        Some("tmpfs"),
        &target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )
    .ctx(|| "mount tmpfs for cgroups".into())?;
    for (fstype, name, opts) in &hierarchies {
        let sub = root.mkdir_all(&dest.join(name))?;
        let data = (!opts.is_empty()).then_some(opts.as_str());
        mount_at(Some(fstype), &sub, Some(fstype), flags, data)
            .ctx(|| format!("mount cgroup hierarchy {name}"))?;
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        let top = root.mkdir_all(dest)?;
        mount_at(
            None,
            &top,
            None,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            Some("mode=755"),
        )
        .ctx(|| "remount cgroup tmpfs read-only".into())?;
    }
    Ok(())
}

/// The host's cgroup hierarchies under /sys/fs/cgroup: (fstype, dir name, super options).
fn cgroup_hierarchies(mountinfo: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split_whitespace().nth(4).unwrap_or("");
        let mut right = right.split_whitespace();
        let fstype = right.next().unwrap_or("");
        let _source = right.next();
        let super_opts = right.next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let Some(name) = mount_point.strip_prefix("/sys/fs/cgroup") else {
            continue;
        };
        let name = name.trim_start_matches('/').to_string();
        let opts: Vec<&str> = super_opts
            .split(',')
            .filter(|o| fstype == "cgroup" && *o != "rw" && *o != "ro")
            .collect();
        out.push((fstype.to_string(), name, opts.join(",")));
    }
    out
}

const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Create the default device nodes and symlinks in a fresh /dev, plus the spec's devices.
fn create_devices(root: &Root, extra: &[LinuxDevice]) -> Result<()> {
    let dev = root.mkdir_all(Path::new("/dev"))?;
    for (name, major, minor) in DEFAULT_DEVICES {
        make_node(
            root,
            &dev,
            name,
            SFlag::S_IFCHR,
            *major,
            *minor,
            0o666,
            None,
        )?;
    }
    for d in extra {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => continue,
        };
        let rel = relative(d.path());
        let rel = rel
            .strip_prefix("dev")
            .map(Path::to_path_buf)
            .unwrap_or(rel);
        let parent =
            root.mkdir_all(&Path::new("/dev").join(rel.parent().unwrap_or(Path::new(""))))?;
        let name = rel
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let owner = Some((d.uid().unwrap_or(0), d.gid().unwrap_or(0)));
        make_node(
            root,
            &parent,
            &name,
            kind,
            d.major() as u64,
            d.minor() as u64,
            d.file_mode().unwrap_or(0o666),
            owner,
        )?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        match nix::unistd::symlinkat(target, dev.as_fd(), link) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(e).ctx(|| format!("create /dev/{link}")),
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn make_node(
    root: &Root,
    dir: &OwnedFd,
    name: &str,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let dev = nix::sys::stat::makedev(major, minor);
    match mknodat(dir.as_fd(), name, kind, Mode::from_bits_truncate(mode), dev) {
        Ok(()) | Err(nix::Error::EEXIST) => {}
        // Without CAP_MKNOD (e.g. in a user namespace), bind the host's node.
        Err(nix::Error::EPERM) => {
            let target = root.touch(&Path::new("/dev").join(name))?;
            mount(
                Some(format!("/dev/{name}").as_str()),
                proc_fd(&target).as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .ctx(|| format!("bind /dev/{name}"))?;
            return Ok(());
        }
        Err(e) => return Err(e).ctx(|| format!("mknod /dev/{name}")),
    }
    // mknod applies the umask; set the mode and owner exactly.
    nix::sys::stat::fchmodat(
        dir.as_fd(),
        name,
        Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
    .or_else(|e| {
        if e == nix::Error::EOPNOTSUPP {
            Ok(())
        } else {
            Err(e)
        }
    })
    .ctx(|| format!("chmod /dev/{name}"))?;
    if let Some((uid, gid)) = owner {
        nix::unistd::fchownat(
            dir.as_fd(),
            name,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ctx(|| format!("chown /dev/{name}"))?;
    }
    Ok(())
}

/// Make `rootfs` the root: pivot_root, then detach the old root. On a root
/// that cannot be pivoted (initramfs/ramfs, where pivot_root gives EINVAL)
/// fall back to moving the rootfs onto / and chroot, as `runc --no-pivot` does.
pub(crate) fn pivot(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs).ctx(|| format!("chdir {}", rootfs.display()))?;
    match nix::unistd::pivot_root(".", ".") {
        Ok(()) => {
            // The old root is stacked on "."; keep its unmount from reaching the host.
            mount(
                None::<&str>,
                ".",
                None::<&str>,
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
                None::<&str>,
            )
            .ctx(|| "make old root a slave".into())?;
            umount2(".", MntFlags::MNT_DETACH).ctx(|| "detach old root".into())?;
        }
        Err(nix::Error::EINVAL) => {
            mount(
                Some(rootfs),
                "/",
                None::<&str>,
                MsFlags::MS_MOVE,
                None::<&str>,
            )
            .ctx(|| "move rootfs onto / (no pivot_root on this filesystem)".into())?;
            nix::unistd::chroot(".").ctx(|| "chroot".into())?;
        }
        Err(e) => return Err(e).ctx(|| "pivot_root".into()),
    }
    nix::unistd::chdir("/").ctx(|| "chdir /".into())
}

/// Remount `path` (already a mount point) read-only, keeping its other flags.
fn remount_readonly(path: &str, extra: MsFlags) -> Result<()> {
    let st = nix::sys::statvfs::statvfs(path).ctx(|| format!("statvfs {path}"))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra;
    use nix::sys::statvfs::FsFlags;
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if st.flags().contains(fs) {
            flags |= ms;
        }
    }
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .ctx(|| format!("remount {path} read-only"))
}

/// After pivot_root: sysctls, the console, masked and read-only paths, read-only root.
pub(crate) fn finish(spec: &Spec, console: Option<&str>) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    for (key, value) in linux.sysctl().iter().flatten() {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value).ctx(|| format!("set sysctl {key}={value}"))?;
    }
    if let Some(slave) = console {
        if Path::new("/dev/pts").is_dir() {
            let root = Root::open(Path::new("/"))?;
            let target = root.touch(Path::new("/dev/console"))?;
            mount(
                Some(slave),
                proc_fd(&target).as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .ctx(|| "bind the terminal onto /dev/console".into())?;
        }
    }
    for path in linux.masked_paths().iter().flatten() {
        mask_path(path)?;
    }
    for path in linux.readonly_paths().iter().flatten() {
        match mount(
            Some(path.as_str()),
            path.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => remount_readonly(path, MsFlags::MS_REC)?,
            Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(e).ctx(|| format!("bind {path} for read-only")),
        }
    }
    let readonly_root = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    if readonly_root {
        remount_readonly("/", MsFlags::empty())?;
    }
    Ok(())
}

fn mask_path(path: &str) -> Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    let result = if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0k"),
        )
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    result.ctx(|| format!("mask {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> MountOptions {
        parse_options(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_parse_like_fstab() {
        let o = opts(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data, "mode=755,size=65536k");
        assert_eq!(o.bind, None);
        let o = opts(&["rbind", "ro", "rprivate"]);
        assert_eq!(o.bind, Some(true));
        assert_eq!(o.flags, MsFlags::MS_RDONLY);
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        let o = opts(&["ro", "rw"]);
        assert!(o.flags.is_empty());
    }

    #[test]
    fn cgroup_hierarchies_from_mountinfo() {
        let info = "30 24 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
33 30 0:29 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
        let h = cgroup_hierarchies(info);
        assert_eq!(
            h,
            vec![
                ("cgroup2".into(), "unified".into(), "".into()),
                ("cgroup".into(), "memory".into(), "memory".into()),
                ("cgroup".into(), "systemd".into(), "name=systemd".into()),
            ]
        );
    }

    #[test]
    fn paths_stay_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("../../..", dir.path().join("up")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        root.mkdir_all(Path::new("/escape/berth-test-dir")).unwrap();
        assert!(dir.path().join("etc/berth-test-dir").is_dir());
        assert!(!Path::new("/etc/berth-test-dir").exists());
        root.touch(Path::new("/up/berth-file")).unwrap();
        assert!(dir.path().join("berth-file").is_file());
    }
}
