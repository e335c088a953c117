//! `RUN --mount=type=ssh`: a socket in the build's work directory, with the
//! mode and owner the mount asks for, that forwards each connection to the
//! ssh-agent socket given with `--ssh`. The agent's keys never leave it; the
//! step only talks to the agent, and only while it runs.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A forwarding socket; stops listening and removes its socket when dropped.
/// Connections still open then end when the step's processes are gone.
pub(super) struct AgentProxy {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AgentProxy {
    /// Listen at `path` (mode `mode`, owned by `owner`), forwarding to the
    /// agent socket `upstream`.
    pub(super) fn start(
        upstream: &Path,
        path: &Path,
        mode: u32,
        owner: (u32, u32),
    ) -> io::Result<AgentProxy> {
        let listener = UnixListener::bind(path)?;
        let made = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .and_then(|()| std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1)));
        if let Err(e) = made {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_path_buf();
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                // An agent that cannot be reached: the client sees a closed
                // connection, as with a dead agent.
                if let Ok(agent) = UnixStream::connect(&upstream) {
                    forward(client, agent);
                }
            }
        });
        Ok(AgentProxy {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

/// Copies both ways between `a` and `b` on two threads, each direction until
/// its reader ends; then the other side's writing half is shut.
fn forward(a: UnixStream, b: UnixStream) {
    let pipe = |from: UnixStream, to: UnixStream| {
        std::thread::spawn(move || {
            let _ = io::copy(&mut &from, &mut &to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        })
    };
    if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
        pipe(a, b2);
        pipe(b, a2);
    }
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the stop.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn forwards_both_ways_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let agent_path = dir.path().join("agent");
        let agent = UnixListener::bind(&agent_path).unwrap();
        // A fake agent: answers each request with its bytes reversed.
        let served = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut s, _) = agent.accept().unwrap();
                let mut req = Vec::new();
                s.read_to_end(&mut req).unwrap();
                req.reverse();
                s.write_all(&req).unwrap();
            }
        });
        let at = dir.path().join("proxy");
        let proxy = AgentProxy::start(&agent_path, &at, 0o600, (0, 0)).unwrap();
        let meta = std::fs::metadata(&at).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        for msg in [&b"hello"[..], b"again"] {
            let mut c = UnixStream::connect(&at).unwrap();
            c.write_all(msg).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            let mut want = msg.to_vec();
            want.reverse();
            assert_eq!(got, want);
        }
        served.join().unwrap();
        drop(proxy);
        assert!(!at.exists(), "the socket is removed");
    }

    #[test]
    fn a_dead_agent_closes_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("proxy");
        let _proxy = AgentProxy::start(&dir.path().join("none"), &at, 0o600, (0, 0)).unwrap();
        let mut c = UnixStream::connect(&at).unwrap();
        let mut got = Vec::new();
        assert_eq!(c.read_to_end(&mut got).unwrap(), 0);
    }
}
