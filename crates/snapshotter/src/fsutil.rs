//! Small filesystem helpers: xattrs through libc, lexical path normalization, fd-relative
//! recursive removal.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Longest path the kernel accepts (PATH_MAX includes the NUL).
pub(crate) const PATH_MAX: usize = libc::PATH_MAX as usize - 1;
/// Longest single name the kernel accepts.
pub(crate) const NAME_MAX: usize = 255;

/// Opens directory `dir` without following a symlink in its last component
/// and returns it with a path to it (`/proc/self/fd/N`, valid while the fd
/// lives). Names looked up under that path resolve from the open directory,
/// not by walking `dir` again, so a directory that a running container swaps
/// for a symlink meanwhile is never followed out of the tree.
pub(crate) fn pinned_dir(dir: &Path) -> std::io::Result<(OwnedFd, std::path::PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)?;
    let fd = OwnedFd::from(file);
    let path = std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    Ok((fd, path))
}

/// Lexically normalizes a tar path into components.
///
/// Leading `/` are stripped (absolute paths are confined to the root), `.` and empty
/// components are dropped, `..` pops a component; a `..` that would climb above the root
/// is an error.
pub(crate) fn normalize(raw: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if raw.contains(&0) {
        return Err("path contains a NUL byte".into());
    }
    if raw.len() > PATH_MAX {
        return Err(format!(
            "path is {} bytes, longer than PATH_MAX ({PATH_MAX})",
            raw.len()
        ));
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("path climbs above the root with `..`".into());
                }
            }
            c => {
                if c.len() > NAME_MAX {
                    return Err(format!(
                        "path component is {} bytes, longer than NAME_MAX ({NAME_MAX})",
                        c.len()
                    ));
                }
                out.push(c.to_vec());
            }
        }
    }
    Ok(out)
}

/// Joins components with `/` (empty -> ".").
pub(crate) fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    if comps.is_empty() {
        return b".".to_vec();
    }
    comps.join(&b'/')
}

fn cstring(b: &[u8]) -> Result<CString, Errno> {
    CString::new(b).map_err(|_| Errno::EINVAL)
}

/// `/proc/self/fd/<dirfd>/<name>`: a path naming `name` inside an already-open directory,
/// for the l*xattr calls that have no *at variant. The directory is resolved by the
/// kernel from the fd (no path walk), and `name` is a single component whose final
/// symlink, if any, the l* calls do not follow.
pub(crate) fn fd_path(dir: BorrowedFd<'_>, name: &[u8]) -> Result<CString, Errno> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    cstring(&p)
}

/// Sets an xattr on an open file or directory.
pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> Result<(), Errno> {
    let n = cstring(name.as_bytes())?;
    // SAFETY: `n` is a valid NUL-terminated string, `value` a valid buffer of the given
    // length, and `fd` a live descriptor borrowed for the duration of the call.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(r).map(drop)
}

/// Whether an open file or directory has the xattr `name` (`Ok(false)` also when the
/// filesystem has no xattrs of that kind).
pub(crate) fn fhas_xattr(fd: BorrowedFd<'_>, name: &str) -> Result<bool, Errno> {
    let n = cstring(name.as_bytes())?;
    // SAFETY: `n` is a valid NUL-terminated string; a null buffer of size 0 asks only
    // for the value's size; `fd` is a live descriptor borrowed for the call.
    let r = unsafe { libc::fgetxattr(fd.as_raw_fd(), n.as_ptr(), std::ptr::null_mut(), 0) };
    match Errno::result(r) {
        Ok(_) => Ok(true),
        Err(Errno::ENODATA | Errno::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sets an xattr on a path without following a final symlink.
pub(crate) fn lsetxattr(path: &CStr, name: &str, value: &[u8]) -> Result<(), Errno> {
    let n = cstring(name.as_bytes())?;
    // SAFETY: both strings are valid and NUL-terminated; `value` is a valid buffer.
    let r = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(r).map(drop)
}

/// Lists the xattr names of a path (not following a final symlink).
pub(crate) fn llistxattr(path: &Path) -> Result<Vec<String>, Errno> {
    let p = cstring(path.as_os_str().as_encoded_bytes())?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `p` is NUL-terminated; `buf` is a writable buffer of `buf.len()` bytes.
        let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match Errno::result(r) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect());
            }
            Err(Errno::ERANGE) => buf.resize(buf.len() * 4, 0),
            Err(Errno::ENOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    }
}

/// Reads one xattr of a path (not following a final symlink); `None` if absent.
pub(crate) fn lgetxattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>, Errno> {
    let p = cstring(path.as_os_str().as_encoded_bytes())?;
    let n = cstring(name.as_bytes())?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: both strings are NUL-terminated; `buf` is writable for `buf.len()` bytes.
        let r =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match Errno::result(r) {
            Ok(len) => {
                buf.truncate(len as usize);
                return Ok(Some(buf));
            }
            Err(Errno::ERANGE) => buf.resize(buf.len() * 4, 0),
            Err(Errno::ENODATA) | Err(Errno::ENOTSUP) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Removes `name` inside `dir` whatever it is, recursing into directories through fds
/// opened with `O_NOFOLLOW`, so a symlink is removed, never followed.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    let st = match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
    }
    let fd: OwnedFd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let children = list_dir(fd.as_fd())?;
    for child in children {
        remove_all_at(fd.as_fd(), &child)?;
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

/// Names in a directory (without `.` and `..`).
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let dup: OwnedFd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(dup)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_confines_and_refuses() {
        assert_eq!(
            normalize(b"/etc/x").unwrap(),
            vec![b"etc".to_vec(), b"x".to_vec()]
        );
        assert_eq!(
            normalize(b"./a/./b/../c/").unwrap(),
            vec![b"a".to_vec(), b"c".to_vec()]
        );
        assert!(normalize(b"./").unwrap().is_empty());
        assert!(normalize(b"../../etc/x")
            .unwrap_err()
            .contains("climbs above"));
        assert!(normalize(b"a/../../x")
            .unwrap_err()
            .contains("climbs above"));
        assert!(normalize(&vec![b'a'; 300])
            .unwrap_err()
            .contains("NAME_MAX"));
        assert!(normalize(&b"ab/".repeat(2000))
            .unwrap_err()
            .contains("PATH_MAX"));
    }
}
