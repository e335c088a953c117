//! `RUN --mount=type=ssh`: a socket in the build's work directory, with the
//! mode and owner the mount asks for, that forwards each connection to the
//! ssh-agent socket given with `--ssh`. The agent's keys never leave it; the
//! step only talks to the agent, and only while it runs.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Connections forwarded at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;
/// How often the accept loop looks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(100);

/// A forwarding socket; when dropped it stops listening, cuts the connections
/// still open and removes its socket.
pub(super) struct AgentProxy {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    open: Open,
    thread: Option<JoinHandle<()>>,
}

/// The connections being forwarded, by number: the client's stream and, once
/// reached, the agent's.
type Open = Arc<Mutex<HashMap<u64, Vec<UnixStream>>>>;

/// The open connections, locked (a panicked holder left them consistent:
/// every change is one insert, push or remove).
fn lock(open: &Open) -> MutexGuard<'_, HashMap<u64, Vec<UnixStream>>> {
    open.lock().unwrap_or_else(|e| e.into_inner())
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
        let made =
            super::set_mode_owner(path, mode, owner).and_then(|()| listener.set_nonblocking(true));
        if let Err(e) = made {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let open = Open::default();
        let accept = Accept {
            listener,
            upstream: upstream.to_path_buf(),
            stop: stop.clone(),
            open: open.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("ssh-agent".into())
            .spawn(move || accept.run());
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        };
        Ok(AgentProxy {
            path: path.to_path_buf(),
            stop,
            open,
            thread: Some(thread),
        })
    }
}

/// The accept loop's side.
struct Accept {
    listener: UnixListener,
    upstream: PathBuf,
    stop: Arc<AtomicBool>,
    open: Open,
}

impl Accept {
    fn run(self) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        // One warning for an agent that cannot be reached, not one a connection.
        let warned = Arc::new(AtomicBool::new(false));
        let mut n = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            // At the cap, new connections wait in the listen backlog.
            if lock(&self.open).len() >= MAX_CONNECTIONS {
                std::thread::sleep(STOP_POLL);
                continue;
            }
            let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            let timeout =
                PollTimeout::try_from(STOP_POLL.as_millis() as i32).unwrap_or(PollTimeout::NONE);
            if !matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
                continue;
            }
            let Ok((client, _)) = self.listener.accept() else {
                continue;
            };
            let _ = client.set_nonblocking(false);
            n += 1;
            match client.try_clone() {
                Ok(c) => {
                    lock(&self.open).insert(n, vec![c]);
                }
                Err(_) => continue,
            }
            // The agent is reached from the connection's own thread, so a
            // hung agent never blocks the accept loop (or the step's end).
            let upstream = self.upstream.clone();
            let warned = warned.clone();
            let open = self.open.clone();
            let spawned = std::thread::Builder::new()
                .name("ssh-agent-conn".into())
                .spawn(move || {
                    match UnixStream::connect(&upstream) {
                        Ok(agent) => {
                            if let Ok(a) = agent.try_clone() {
                                match lock(&open).get_mut(&n) {
                                    Some(streams) => streams.push(a),
                                    // Cut already: the step is over.
                                    None => return,
                                }
                            }
                            forward(client, agent)
                        }
                        // The client sees a closed connection, as with a dead agent.
                        Err(e) => {
                            if !warned.swap(true, Ordering::SeqCst) {
                                eprintln!("berth: ssh agent {}: {e}", upstream.display());
                            }
                        }
                    }
                    lock(&open).remove(&n);
                });
            if spawned.is_err() {
                lock(&self.open).remove(&n);
            }
        }
    }
}

/// Copies both ways between `client` and `agent`, each direction until its
/// reader ends; then the other side's writing half is shut.
fn forward(client: UnixStream, agent: UnixStream) {
    let (Ok(client2), Ok(agent2)) = (client.try_clone(), agent.try_clone()) else {
        return;
    };
    let back = std::thread::Builder::new()
        .name("ssh-agent-conn".into())
        .spawn(move || pipe(agent2, client2));
    pipe(client, agent);
    if let Ok(t) = back {
        let _ = t.join();
    }
}

fn pipe(from: UnixStream, to: UnixStream) {
    let _ = io::copy(&mut &from, &mut &to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Connections still open end with the step, on both sides (an agent
        // that ignores the client's end would hold its thread otherwise).
        let open = std::mem::take(&mut *lock(&self.open));
        for s in open.values().flatten() {
            let _ = s.shutdown(std::net::Shutdown::Both);
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
    fn drop_cuts_open_connections_even_with_a_hung_agent() {
        let dir = tempfile::tempdir().unwrap();
        let agent_path = dir.path().join("agent");
        // An agent that never answers (nor accepts).
        let _agent = UnixListener::bind(&agent_path).unwrap();
        let at = dir.path().join("proxy");
        let proxy = AgentProxy::start(&agent_path, &at, 0o600, (0, 0)).unwrap();
        let mut c = UnixStream::connect(&at).unwrap();
        c.write_all(b"request").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let t = std::time::Instant::now();
        drop(proxy);
        assert!(t.elapsed() < Duration::from_secs(2), "drop returned");
        let mut got = Vec::new();
        assert_eq!(c.read_to_end(&mut got).unwrap(), 0, "cut");
        assert!(!at.exists());
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
