//! Copy-up: an image directory's content into a new, empty volume.
//!
//! The image side is opened from a descriptor of the container's root with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so a symlink in the
//! image cannot lead outside the root; below that, every entry is opened
//! relative to its parent's descriptor with `O_NOFOLLOW`. Symlinks are copied
//! as symlinks; owners, modes (with setuid/setgid/sticky) and times are kept;
//! device nodes and fifos are recreated; hard links become separate files.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags, FileStat,
    Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, symlinkat, Gid, Uid};

use crate::{errno, io, Result};

/// Whether a directory has no entries.
pub(crate) fn is_empty(dir: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(dir)
        .map_err(io(format!("read {}", dir.display())))?
        .next()
        .is_none())
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

fn perm(st: &FileStat) -> Mode {
    Mode::from_bits_truncate(st.st_mode & 0o7777)
}

fn times(st: &FileStat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

/// Owner, then mode (chown clears setuid bits), then times, of an open file.
fn finish_fd(fd: BorrowedFd<'_>, st: &FileStat, what: &Path) -> Result<()> {
    fchown(
        fd,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    )
    .map_err(errno(format!("chown {}", what.display())))?;
    fchmod(fd, perm(st)).map_err(errno(format!("chmod {}", what.display())))?;
    let (a, m) = times(st);
    futimens(fd, &a, &m).map_err(errno(format!("set times of {}", what.display())))
}

/// Copy the directory `image_path` of the mounted `rootfs` into `data`.
/// Returns false (copying nothing) when the image has no directory there
/// or it is empty.
pub(crate) fn copy_up(rootfs: &Path, image_path: &Path, data: &Path) -> Result<bool> {
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno(format!("open {}", rootfs.display())))?;
    let rel = image_path.strip_prefix("/").unwrap_or(image_path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let src = match openat2(
        root.as_fd(),
        rel,
        OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(false),
        Err(e) => {
            return Err(errno(format!(
                "open {} in the container",
                image_path.display()
            ))(e))
        }
    };
    let names = entries(&src, image_path)?;
    if names.is_empty() {
        return Ok(false);
    }
    let dst = nix::fcntl::open(
        data,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno(format!("open {}", data.display())))?;
    copy_dir(&src, &dst, names, image_path)?;
    let st = nix::sys::stat::fstat(src.as_fd())
        .map_err(errno(format!("stat {}", image_path.display())))?;
    finish_fd(dst.as_fd(), &st, data)?;
    Ok(true)
}

fn entries(dir: &OwnedFd, path: &Path) -> Result<Vec<OsString>> {
    let fd = openat(
        dir.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno(format!("open {}", path.display())))?;
    let mut d = nix::dir::Dir::from_fd(fd).map_err(errno(format!("read {}", path.display())))?;
    let mut names: Vec<OsString> = d
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    Ok(names)
}

fn copy_dir(src: &OwnedFd, dst: &OwnedFd, names: Vec<OsString>, path: &Path) -> Result<()> {
    for name in names {
        let what = path.join(&name);
        let name = name.as_os_str();
        let st = match fstatat(src.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(errno(format!("stat {}", what.display()))(e)),
        };
        let k = kind(&st);
        if k == SFlag::S_IFDIR {
            mkdirat(dst.as_fd(), name, Mode::from_bits_truncate(0o700))
                .map_err(errno(format!("create {}", what.display())))?;
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let s = openat(src.as_fd(), name, flags, Mode::empty())
                .map_err(errno(format!("open {}", what.display())))?;
            let d = openat(dst.as_fd(), name, flags, Mode::empty())
                .map_err(errno(format!("open copy of {}", what.display())))?;
            let children = entries(&s, &what)?;
            copy_dir(&s, &d, children, &what)?;
            finish_fd(d.as_fd(), &st, &what)?;
        } else if k == SFlag::S_IFREG {
            let s = openat(
                src.as_fd(),
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno(format!("open {}", what.display())))?;
            let d = openat(
                dst.as_fd(),
                name,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(errno(format!("create copy of {}", what.display())))?;
            let mut s = std::fs::File::from(s);
            let mut d = std::fs::File::from(d);
            std::io::copy(&mut s, &mut d).map_err(io(format!("copy {}", what.display())))?;
            finish_fd(d.as_fd(), &st, &what)?;
        } else if k == SFlag::S_IFLNK {
            let target = nix::fcntl::readlinkat(src.as_fd(), name)
                .map_err(errno(format!("readlink {}", what.display())))?;
            symlinkat(target.as_os_str(), dst.as_fd(), name)
                .map_err(errno(format!("create symlink {}", what.display())))?;
            fchownat(
                dst.as_fd(),
                name,
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(errno(format!("chown {}", what.display())))?;
            let (a, m) = times(&st);
            let _ = utimensat(dst.as_fd(), name, &a, &m, UtimensatFlags::NoFollowSymlink);
        } else if k == SFlag::S_IFCHR || k == SFlag::S_IFBLK || k == SFlag::S_IFIFO {
            mknodat(dst.as_fd(), name, k, perm(&st), st.st_rdev)
                .map_err(errno(format!("create {}", what.display())))?;
            fchownat(
                dst.as_fd(),
                name,
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(errno(format!("chown {}", what.display())))?;
            fchmodat(dst.as_fd(), name, perm(&st), FchmodatFlags::NoFollowSymlink)
                .or_else(|e| {
                    // Some kernels refuse AT_SYMLINK_NOFOLLOW for chmod; the
                    // entry was just created by us and is not a symlink.
                    if e == Errno::EOPNOTSUPP || e == Errno::EINVAL {
                        fchmodat(dst.as_fd(), name, perm(&st), FchmodatFlags::FollowSymlink)
                    } else {
                        Err(e)
                    }
                })
                .map_err(errno(format!("chmod {}", what.display())))?;
            let (a, m) = times(&st);
            let _ = utimensat(dst.as_fd(), name, &a, &m, UtimensatFlags::NoFollowSymlink);
        }
        // Sockets are not copied (as Docker's copy-up).
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn copies_files_dirs_symlinks_and_modes_without_escaping() {
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("rootfs");
        let img = rootfs.join("srv");
        std::fs::create_dir_all(img.join("sub")).unwrap();
        std::fs::write(img.join("file"), b"hello").unwrap();
        std::fs::set_permissions(img.join("file"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", img.join("link")).unwrap();
        std::fs::set_permissions(img.join("sub"), std::fs::Permissions::from_mode(0o1750)).unwrap();
        // A symlinked image path resolves inside the root, never on the host.
        std::os::unix::fs::symlink("/srv", rootfs.join("alias")).unwrap();
        std::os::unix::fs::symlink("/etc", rootfs.join("hostetc")).unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        assert!(copy_up(&rootfs, Path::new("/alias"), &data).unwrap());
        assert_eq!(std::fs::read(data.join("file")).unwrap(), b"hello");
        let meta = std::fs::metadata(data.join("file")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(
            std::fs::read_link(data.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            std::fs::metadata(data.join("sub")).unwrap().mode() & 0o7777,
            0o1750
        );
        let before = std::fs::metadata(img.join("file")).unwrap().mtime();
        assert_eq!(meta.mtime(), before);
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        // /hostetc -> /etc inside the root: no such directory there.
        assert!(!copy_up(&rootfs, Path::new("/hostetc"), &other).unwrap());
        assert!(is_empty(&other).unwrap());
        assert!(!copy_up(&rootfs, Path::new("/missing"), &other).unwrap());
    }
}
