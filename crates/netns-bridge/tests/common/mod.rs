//! Test scaffolding: every test runs its kernel work in a fresh network
//! namespace (unshare(CLONE_NEWNET) on a dedicated thread), so the host's
//! own links, routes and nftables are never touched. Fake containers and the
//! "outside host" are `unshare --net sleep` processes killed on drop.
#![allow(dead_code, missing_docs)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `f` on a new thread inside a brand-new network namespace with `lo` up.
/// The namespace (and every bridge, veth and nft table in it) disappears when
/// the thread ends, also when `f` panics.
pub fn in_test_netns<F: FnOnce() + Send + 'static>(f: F) {
    let h = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET): run as root");
        sh("ip link set lo up");
        f()
    });
    if let Err(p) = h.join() {
        std::panic::resume_unwind(p)
    }
}

/// Runs a shell command in the calling thread's namespace; panics on failure.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell command; returns whether it succeeded.
pub fn sh_ok(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A process holding its own network namespace.
pub struct Ns {
    child: Child,
}

impl Ns {
    pub fn new() -> Ns {
        let mine = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let child = Command::new("unshare")
            .args(["--net", "sleep", "1000"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare");
        let ns = Ns { child };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(l) = std::fs::read_link(ns.path()) {
                if l != mine {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "namespace holder did not start");
            std::thread::sleep(Duration::from_millis(2));
        }
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.child.id()))
    }

    /// `nsenter --net=PATH <cmd>` through sh.
    pub fn sh_ok(&self, cmd: &str) -> bool {
        sh_ok(&format!("nsenter --net={} {cmd}", self.path().display()))
    }

    pub fn sh(&self, cmd: &str) -> String {
        sh(&format!("nsenter --net={} {cmd}", self.path().display()))
    }

    /// Runs `f` on a thread that joined this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let f_ns = File::open(self.path()).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&f_ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    pub fn listen(&self, addr: &str) -> TcpListener {
        let addr: SocketAddr = addr.parse().unwrap();
        self.run(move || TcpListener::bind(addr).unwrap())
    }

    pub fn connect(&self, addr: &str) -> std::io::Result<TcpStream> {
        let addr: SocketAddr = addr.parse().unwrap();
        self.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The "outside host": a namespace joined to the test namespace by a veth,
/// host side 203.0.113.1/24 (TEST-NET-3), outside side 203.0.113.2/24.
pub struct Outside {
    pub ns: Ns,
}

pub const HOST_ADDR: &str = "203.0.113.1";
pub const OUTSIDE_ADDR: &str = "203.0.113.2";

impl Outside {
    pub fn new() -> Outside {
        let ns = Ns::new();
        sh(&format!(
            "ip link add vout0 type veth peer name eth0 netns {pid} && \
             ip addr add {HOST_ADDR}/24 dev vout0 && ip link set vout0 up",
            pid = ns.child.id()
        ));
        ns.sh(&format!(
            "sh -c 'ip addr add {OUTSIDE_ADDR}/24 dev eth0 && ip link set eth0 up && ip link set lo up'"
        ));
        Outside { ns }
    }
}

/// Accepts one connection within `timeout`; returns the peer and echoes one
/// byte back.
pub fn accept_one(l: &TcpListener, timeout: Duration) -> Option<SocketAddr> {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((mut s, peer)) => {
                s.set_nonblocking(false).unwrap();
                let mut b = [0u8; 1];
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                if s.read_exact(&mut b).is_ok() {
                    let _ = s.write_all(&b);
                }
                return Some(peer);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Connects from `client` (a closure run where the socket must live) and
/// exchanges one byte with `l`; returns the peer address the server saw.
pub fn roundtrip(
    l: &TcpListener,
    connect: impl FnOnce() -> std::io::Result<TcpStream> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let h = std::thread::spawn(move || -> std::io::Result<()> {
        let mut s = connect()?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"x")?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        Ok(())
    });
    let peer = accept_one(l, Duration::from_secs(3));
    h.join().unwrap()?;
    peer.ok_or_else(|| std::io::Error::other("no connection arrived"))
}

/// Links of the calling thread's namespace (`ip -br link` names).
pub fn links() -> Vec<String> {
    sh("ip -br link")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect()
}

/// `nft list tables` of the calling thread's namespace.
pub fn nft_tables() -> String {
    sh("nft list tables")
}

/// A connect closure that runs in the namespace at `path`.
pub fn connect_in(
    path: PathBuf,
    addr: &str,
) -> impl FnOnce() -> std::io::Result<TcpStream> + Send + 'static {
    let addr: SocketAddr = addr.parse().unwrap();
    move || {
        let f = File::open(path)?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    }
}

/// A connect closure for the calling thread's namespace (the test "host").
pub fn connect_here(addr: &str) -> impl FnOnce() -> std::io::Result<TcpStream> + Send + 'static {
    let addr: SocketAddr = addr.parse().unwrap();
    move || TcpStream::connect_timeout(&addr, Duration::from_secs(2))
}
