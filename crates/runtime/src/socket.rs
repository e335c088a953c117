//! Unix sockets at paths of any length.
//!
//! `sun_path` holds 108 bytes, and state directories under a long `--root`
//! (tests use temp dirs) exceed that. The socket's directory is opened and the
//! socket reached through `/proc/self/fd/N/NAME`, which is always short.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// Longest path used directly (the kernel's limit is 108 with the NUL).
const DIRECT_MAX: usize = 100;

fn via_dir<T>(path: &Path, f: impl FnOnce(&Path) -> std::io::Result<T>) -> std::io::Result<T> {
    if path.as_os_str().len() <= DIRECT_MAX {
        return f(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return f(path);
    };
    let dir = File::open(dir)?;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    f(&short)
}

/// Bind a listening socket at `path`, however long.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    via_dir(path, |p| UnixListener::bind(p))
}

/// Connect to the socket at `path`, however long.
pub fn connect(path: &Path) -> std::io::Result<UnixStream> {
    via_dir(path, |p| UnixStream::connect(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_work() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a".repeat(60)).join("b".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join("x.sock");
        assert!(path.as_os_str().len() > 108);
        let listener = bind(&path).unwrap();
        let _client = connect(&path).unwrap();
        assert!(listener.accept().is_ok());
        assert!(path.exists());
    }
}
