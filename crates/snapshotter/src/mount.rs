//! Mount descriptions and the helpers that mount them (overlay and bind only).

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The kernel copies at most one page of mount data, NUL included.
pub(crate) const MAX_MOUNT_DATA: usize = 4095;

/// One mount, in the shape of containerd's `mount.Mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Filesystem type: `"overlay"` or `"bind"`.
    pub typ: String,
    /// Source: the directory for a bind, `"overlay"` for an overlay.
    pub source: PathBuf,
    /// Where to mount it; `None` means "the target given to [`mount_all`]".
    pub target: Option<PathBuf>,
    /// Mount options (`ro`, `rbind`, `lowerdir=...`, ...).
    pub options: Vec<String>,
    /// Directory that relative paths in `options` are resolved against. Set only for
    /// deep overlay chains whose absolute `lowerdir` list would not fit in a page: the
    /// lower dirs are then given as short link names relative to `<root>/l`.
    pub cwd: Option<PathBuf>,
}

impl Mount {
    /// Splits the options into mount flags and the filesystem data string.
    fn flags_and_data(&self) -> (MsFlags, String) {
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        for o in &self.options {
            match o.as_str() {
                "ro" => flags |= MsFlags::MS_RDONLY,
                "rw" => {}
                "bind" => flags |= MsFlags::MS_BIND,
                "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
                "nosuid" => flags |= MsFlags::MS_NOSUID,
                "nodev" => flags |= MsFlags::MS_NODEV,
                "noexec" => flags |= MsFlags::MS_NOEXEC,
                other => data.push(other),
            }
        }
        if self.typ == "bind" {
            flags |= MsFlags::MS_BIND;
        }
        (flags, data.join(","))
    }

    /// Mounts this one mount on `target` (or on `self.target` when set).
    pub fn mount(&self, target: &Path) -> Result<()> {
        let target = self.target.as_deref().unwrap_or(target);
        let (flags, data) = self.flags_and_data();
        let err = |source| Error::Mount {
            op: "mount",
            typ: self.typ.clone(),
            target: target.to_path_buf(),
            source,
        };
        if flags.contains(MsFlags::MS_BIND) {
            let bind = flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
            mount(Some(&self.source), target, None::<&str>, bind, None::<&str>).map_err(err)?;
            let extra = flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
            if !extra.is_empty() {
                let re = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra;
                if let Err(e) = mount(None::<&str>, target, None::<&str>, re, None::<&str>) {
                    let _ = umount2(target, MntFlags::MNT_DETACH);
                    return Err(err(e));
                }
            }
            return Ok(());
        }
        if data.len() > MAX_MOUNT_DATA {
            return Err(err(Errno::E2BIG));
        }
        match &self.cwd {
            None => mount(
                Some(&self.source),
                target,
                Some(self.typ.as_str()),
                flags,
                Some(data.as_str()),
            )
            .map_err(err),
            Some(cwd) => {
                // Relative lower dirs: mount from a thread with its own cwd (unshare of
                // CLONE_FS), so the process-wide cwd is never changed.
                let (src, tgt, typ, cwd) = (
                    self.source.clone(),
                    target.to_path_buf(),
                    self.typ.clone(),
                    cwd.clone(),
                );
                let r = std::thread::spawn(move || -> nix::Result<()> {
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
                    nix::unistd::chdir(&cwd)?;
                    mount(
                        Some(&src),
                        &tgt,
                        Some(typ.as_str()),
                        flags,
                        Some(data.as_str()),
                    )
                })
                .join()
                .unwrap_or(Err(Errno::EIO));
                r.map_err(err)
            }
        }
    }
}

/// Mounts `mounts` one after another on `target` (each later mount stacks on the
/// earlier ones, as containerd's `mount.All`). On failure the mounts made so far are
/// undone.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = m.mount(target) {
            for done in mounts[..i].iter().rev() {
                let _ = umount2(
                    done.target.as_deref().unwrap_or(target),
                    MntFlags::MNT_DETACH,
                );
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Unmounts everything mounted on `target` (stacked mounts included). Not being a
/// mount point is not an error.
pub fn unmount(target: &Path) -> Result<()> {
    for _ in 0..64 {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(Errno::EBUSY) => {
                // Busy: detach lazily so the mount goes away once unused.
                return umount2(target, MntFlags::MNT_DETACH).map_err(|source| Error::Mount {
                    op: "unmount",
                    typ: "any".into(),
                    target: target.to_path_buf(),
                    source,
                });
            }
            Err(source) => {
                return Err(Error::Mount {
                    op: "unmount",
                    typ: "any".into(),
                    target: target.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Mounts on creation and unmounts (everything on the target) when dropped.
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
}

impl MountGuard {
    /// Mounts `mounts` on `target` with [`mount_all`].
    pub fn mount(mounts: &[Mount], target: &Path) -> Result<Self> {
        mount_all(mounts, target)?;
        Ok(MountGuard {
            target: target.to_path_buf(),
        })
    }

    /// The mount point.
    pub fn target(&self) -> &Path {
        &self.target
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = unmount(&self.target);
    }
}
