//! Upper dir -> the list of changed paths `docker diff` prints.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::apply::OPAQUE_XATTR;
use crate::error::{Error, Result};
use crate::fsutil::{lgetxattr, pinned_dir};

/// How a path changed relative to the layers below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// New: no layer below has it (`A`).
    Added,
    /// Present below and replaced, or a directory with changes inside (`C`).
    Changed,
    /// Removed: an overlay whiteout hides it (`D`).
    Deleted,
}

impl ChangeKind {
    /// Docker's letter for the kind: `A`, `C` or `D`.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One changed path, absolute as seen in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What happened to it.
    pub kind: ChangeKind,
    /// Its path, as `/etc/motd`.
    pub path: PathBuf,
}

/// The changes the overlay upper dir `upper` makes over `lowers` (nearest
/// first), in depth-first order with each directory's names sorted, as
/// `docker diff` lists them. Mount points in `skip` that are empty regular
/// files are left out (see [`crate::diff_dir_skipping`]), and so is a
/// directory that is only there to hold them: one the layers below have,
/// with the same mode and owner, and with no change listed inside.
pub fn changes(upper: &Path, lowers: &[PathBuf], skip: &[&Path]) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    let walk = Walk { lowers, skip };
    walk.dir(upper, Path::new("/"), false, &mut out)?;
    Ok(out)
}

struct Walk<'a> {
    lowers: &'a [PathBuf],
    skip: &'a [&'a Path],
}

impl Walk<'_> {
    fn dir(&self, dir: &Path, rel: &Path, under_opaque: bool, out: &mut Vec<Change>) -> Result<()> {
        let (_pin, pinned) = pinned_dir(dir).map_err(|e| Error::io("open dir", dir, e))?;
        let dir = pinned.as_path();
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io("read dir", dir, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io("read dir", dir, e))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = dir.join(&name);
            let shown = rel.join(&name);
            let md = std::fs::symlink_metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
            if md.file_type().is_char_device() && md.rdev() == 0 {
                out.push(Change {
                    kind: ChangeKind::Deleted,
                    path: shown,
                });
                continue;
            }
            if md.is_file() && md.len() == 0 && self.skip.contains(&shown.as_path()) {
                continue;
            }
            let below = if under_opaque {
                None
            } else {
                lower_metadata(self.lowers, &shown)
            };
            let at = out.len();
            out.push(Change {
                kind: if below.is_some() {
                    ChangeKind::Changed
                } else {
                    ChangeKind::Added
                },
                path: shown.clone(),
            });
            if md.is_dir() {
                let opaque = lgetxattr(&path, OPAQUE_XATTR)
                    .map_err(|e| Error::io("read xattrs", &path, e.into()))?
                    .as_deref()
                    == Some(b"y");
                self.dir(&path, &shown, under_opaque || opaque, out)?;
                let same_as_below = below.is_some_and(|b| {
                    b.is_dir() && (b.mode(), b.uid(), b.gid()) == (md.mode(), md.uid(), md.gid())
                });
                if !opaque && same_as_below && out.len() == at + 1 {
                    out.pop();
                }
            }
        }
        Ok(())
    }
}

/// What the merged lower layers show at `path`, if anything: the nearest
/// layer that has it or a whiteout for it decides.
fn lower_metadata(lowers: &[PathBuf], path: &Path) -> Option<std::fs::Metadata> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    for lower in lowers {
        // A symlink on the way (an image's `/etc -> /x`) is not followed out of the layer.
        let through_link = rel.ancestors().skip(1).any(|a| {
            !a.as_os_str().is_empty()
                && std::fs::symlink_metadata(lower.join(a))
                    .is_ok_and(|m| m.file_type().is_symlink())
        });
        if through_link {
            return None;
        }
        if let Ok(md) = std::fs::symlink_metadata(lower.join(rel)) {
            let whiteout = md.file_type().is_char_device() && md.rdev() == 0;
            return (!whiteout).then_some(md);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_in_place_of_a_directory_is_not_walked() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "host").unwrap();
        let upper = t.path().join("upper");
        std::fs::create_dir_all(&upper).unwrap();
        std::os::unix::fs::symlink(&outside, upper.join("link")).unwrap();
        // The walk lists the symlink itself and never what it points at.
        let got = changes(&upper, &[], &[]).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        // A directory opened by the walk must really be one: a symlink is refused.
        assert!(crate::fsutil::pinned_dir(&upper.join("link")).is_err());
    }

    #[test]
    fn added_changed_and_deleted_paths_in_walk_order() {
        let t = tempfile::tempdir().unwrap();
        let (upper, lower) = (t.path().join("upper"), t.path().join("lower"));
        for d in ["etc", "tmp"] {
            std::fs::create_dir_all(lower.join(d)).unwrap();
        }
        std::fs::write(lower.join("etc/motd"), "old").unwrap();
        std::fs::write(lower.join("etc/gone"), "x").unwrap();
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::create_dir_all(upper.join("tmp/new")).unwrap();
        std::fs::write(upper.join("etc/motd"), "new").unwrap();
        std::fs::write(upper.join("tmp/new/f"), "").unwrap();
        nix::sys::stat::mknod(
            &upper.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        // Mount points the runtime made, and /run holding only one of them.
        std::fs::create_dir_all(lower.join("run")).unwrap();
        std::fs::create_dir_all(upper.join("run")).unwrap();
        std::fs::write(upper.join("run/mnt"), "").unwrap();
        std::fs::write(upper.join("tmp/new/hosts"), "").unwrap();
        let skip = [Path::new("/run/mnt"), Path::new("/tmp/new/hosts")];
        let got: Vec<String> = changes(&upper, &[lower], &skip)
            .unwrap()
            .iter()
            .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
            .collect();
        assert_eq!(
            got,
            [
                "C /etc",
                "D /etc/gone",
                "C /etc/motd",
                "C /tmp",
                "A /tmp/new",
                "A /tmp/new/f"
            ]
        );
    }
}
