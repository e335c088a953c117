//! The embedded DNS, daemonless: containers on user-defined networks get
//! `nameserver 127.0.0.11` (as Docker's), and one `berth __dns` process per
//! state root answers there while any such container runs. It holds a UDP
//! socket bound to 127.0.0.11:53 inside each container's network namespace,
//! answers the names (and aliases and short ids) of the container's peers on
//! its user-defined networks, read from the network records at each query,
//! and forwards every other query to the container's `--dns` servers or the
//! host's resolvers (it runs in the host's namespace, so a host resolver on
//! loopback works too).
//!
//! A container's monitor registers it before the container's process runs
//! (`add ID PID` on `<run-root>/dns/control.sock`, answered `ok` once the
//! socket is bound), starting the server if none answers. The server holds
//! `<run-root>/dns/lock` while it lives, drops a container's socket when its
//! run ends, and exits once it serves no container.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_netns_bridge::dns::{self, Reply};

use super::record::ContainerRecord;
use super::Containers;
use crate::error::{Error, Result};
use crate::spec::NetworkMode;

/// How long one upstream server gets to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a container uses the embedded DNS: its network is user-defined
/// (Docker's default bridge has none).
pub fn uses_embedded_dns(record: &ContainerRecord) -> bool {
    matches!(&record.options.network, NetworkMode::Bridge(n) if n != berth_netns_bridge::DEFAULT_NETWORK)
}

/// The resolv.conf of a container that uses the embedded DNS: 127.0.0.11,
/// the search domains and options of `base` (the one it would get
/// otherwise), and `ndots:0` unless options set ndots.
pub fn embedded_resolv_conf(base: &str) -> String {
    let mut out = format!("nameserver {}\n", dns::DNS_ADDRESS);
    let mut ndots = false;
    for line in base.lines() {
        match line.split_whitespace().next() {
            Some("search" | "domain") => {
                out.push_str(line);
                out.push('\n');
            }
            Some("options") => {
                ndots |= line.contains("ndots:");
                out.push_str(line);
                out.push('\n');
            }
            _ => {}
        }
    }
    if !ndots {
        out.push_str("options ndots:0\n");
    }
    out
}

/// The nameservers of a resolv.conf, as socket addresses on port 53.
fn nameservers(resolv: &str) -> Vec<SocketAddr> {
    resolv
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|s| s.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

fn dir(run_root: &Path) -> PathBuf {
    run_root.join("dns")
}

impl Containers {
    /// Have the embedded DNS serve the run `pid` of `record` (its network
    /// namespace must have `lo` up), starting the server if need be.
    pub(crate) fn register_dns(&self, record: &ContainerRecord, pid: i32) -> Result<()> {
        let socket = dir(&self.run_root).join("control.sock");
        let mut last = String::new();
        for _ in 0..3 {
            let stream = match UnixStream::connect(&socket) {
                Ok(s) => s,
                Err(_) => {
                    self.spawn_dns()?;
                    match wait_connect(&socket, Duration::from_secs(5)) {
                        Some(s) => s,
                        None => {
                            last = "the DNS server did not come up".into();
                            continue;
                        }
                    }
                }
            };
            match request(stream, &format!("add {} {pid}\n", record.id)) {
                Ok(reply) if reply == "ok" => return Ok(()),
                Ok(reply) if reply.is_empty() => last = "the DNS server went away".into(),
                Ok(reply) => {
                    return Err(Error::Invalid(format!(
                        "embedded DNS: {}",
                        reply.trim_start_matches("err ")
                    )))
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(Error::Invalid(format!("embedded DNS: {last}")))
    }

    fn spawn_dns(&self) -> Result<()> {
        let d = dir(&self.run_root);
        std::fs::create_dir_all(&d).map_err(Error::io(format!("create {}", d.display())))?;
        let exe = std::env::current_exe().map_err(Error::io("find the berth binary"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("log"))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let mut cmd = Command::new(exe);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--run-root")
            .arg(&self.run_root)
            .arg("__dns")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        Containers::spawn_detached(cmd).map_err(Error::io("start the DNS server"))?;
        Ok(())
    }
}

fn wait_connect(socket: &Path, limit: Duration) -> Option<UnixStream> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(s) = UnixStream::connect(socket) {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn request(mut stream: UnixStream, line: &str) -> std::io::Result<String> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    Ok(reply.trim_end().to_string())
}

/// One container the server answers for.
struct Served {
    id: String,
    pid: i32,
    start_ticks: u64,
    socket: UdpSocket,
    upstreams: Vec<SocketAddr>,
}

/// Entry point of `berth __dns`. Returns the process exit code.
pub fn main(root: &Path, run_root: &Path) -> i32 {
    match serve(root, run_root) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth dns: {e}");
            1
        }
    }
}

fn serve(root: &Path, run_root: &Path) -> Result<()> {
    let containers = Containers::open(root, run_root)?;
    let d = dir(run_root);
    std::fs::create_dir_all(&d).map_err(Error::io(format!("create {}", d.display())))?;
    let lock = std::fs::File::create(d.join("lock")).map_err(Error::io("create the DNS lock"))?;
    let path = d.join("control.sock");
    // Another server holds the lock: leave it the work if it answers; if it
    // does not, it is on its way out (it unlinks the socket first), so wait
    // for its lock.
    let deadline = Instant::now() + Duration::from_secs(3);
    while lock.try_lock().is_err() {
        if UnixStream::connect(&path).is_ok() || Instant::now() >= deadline {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let bind = || -> Result<UnixListener> {
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).map_err(Error::io(format!("bind {}", path.display())))?;
        l.set_nonblocking(true)
            .map_err(Error::io("control socket"))?;
        Ok(l)
    };
    let mut listener = bind()?;
    let mut served: Vec<Served> = Vec::new();
    let mut idle_since = Some(Instant::now());
    let mut last_check = Instant::now();
    let mut buf = vec![0u8; 4096];
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(served.iter().map(|s| s.socket.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: poll on a vector of valid pollfds.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 500) };
        accept_all(&containers, &listener, &mut served);
        for s in &served {
            while let Ok((n, from)) = s.socket.recv_from(&mut buf) {
                handle(&containers, s, &buf[..n], from);
            }
        }
        if last_check.elapsed() >= Duration::from_millis(500) {
            last_check = Instant::now();
            served.retain(|s| {
                berth_runtime::state::proc_stat(s.pid).is_some_and(|st| st.0 == s.start_ticks)
            });
        }
        match (served.is_empty(), idle_since) {
            (false, _) => idle_since = None,
            (true, None) => idle_since = Some(Instant::now()),
            (true, Some(t)) if t.elapsed() >= Duration::from_secs(2) => {
                // Leave: no new client can reach us once the path is gone; one
                // that connected just before is served, and keeps us on.
                let _ = std::fs::remove_file(&path);
                accept_all(&containers, &listener, &mut served);
                if served.is_empty() {
                    return Ok(());
                }
                listener = bind()?;
                idle_since = None;
            }
            _ => {}
        }
    }
}

/// Take every pending `add ID PID` request.
fn accept_all(containers: &Containers, listener: &UnixListener, served: &mut Vec<Served>) {
    while let Ok((stream, _)) = listener.accept() {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        let mut reader = BufReader::new(&stream);
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        let reply = match add(containers, line.trim_end()) {
            Ok(s) => {
                served.retain(|old| old.id != s.id);
                served.push(s);
                "ok\n".to_string()
            }
            Err(e) => format!("err {e}\n"),
        };
        let _ = (&stream).write_all(reply.as_bytes());
    }
}

fn add(containers: &Containers, line: &str) -> Result<Served> {
    let mut words = line.split_whitespace();
    let (Some("add"), Some(id), Some(pid), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(Error::Invalid(format!("bad request {line:?}")));
    };
    let pid: i32 = pid
        .parse()
        .map_err(|_| Error::Invalid(format!("bad pid {pid:?}")))?;
    let record = containers.store.load(id)?;
    let start_ticks = berth_runtime::state::proc_stat(pid)
        .map(|s| s.0)
        .ok_or_else(|| Error::Invalid(format!("process {pid} is gone")))?;
    let socket = dns::bind_in_netns(Path::new(&format!("/proc/{pid}/ns/net")))?;
    let upstreams = if record.options.dns.is_empty() {
        nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    } else {
        nameservers(
            &record
                .options
                .dns
                .iter()
                .map(|d| format!("nameserver {d}\n"))
                .collect::<String>(),
        )
    };
    Ok(Served {
        id: record.id,
        pid,
        start_ticks,
        socket,
        upstreams,
    })
}

/// Answer one query from container `s`; a forwarded one in a thread of its own.
fn handle(containers: &Containers, s: &Served, query: &[u8], from: SocketAddr) {
    let lookup = |name: &str| {
        let nets = containers.networks().networks_of(&s.id).ok()?;
        let mut ips = Vec::new();
        for net in nets {
            for entry in containers
                .networks()
                .hosts_for(&net, &s.id)
                .unwrap_or_default()
            {
                if entry.names.iter().any(|n| n.eq_ignore_ascii_case(name))
                    && !ips.contains(&entry.ip)
                {
                    ips.push(entry.ip);
                }
            }
        }
        (!ips.is_empty()).then_some(ips)
    };
    match dns::answer(query, lookup) {
        Reply::Answer(bytes) => {
            let _ = s.socket.send_to(&bytes, from);
        }
        Reply::Drop => {}
        Reply::Forward => {
            let (Ok(socket), upstreams, query) =
                (s.socket.try_clone(), s.upstreams.clone(), query.to_vec())
            else {
                return;
            };
            std::thread::spawn(move || {
                let reply = dns::forward(&query, &upstreams, UPSTREAM_TIMEOUT)
                    .or_else(|| dns::server_failure(&query));
                if let Some(bytes) = reply {
                    let _ = socket.send_to(&bytes, from);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_points_at_the_embedded_server() {
        let base = "nameserver 10.0.0.1\nsearch example.org\noptions edns0\n";
        assert_eq!(
            embedded_resolv_conf(base),
            "nameserver 127.0.0.11\nsearch example.org\noptions edns0\noptions ndots:0\n"
        );
        assert_eq!(
            embedded_resolv_conf("options ndots:2\n"),
            "nameserver 127.0.0.11\noptions ndots:2\n"
        );
        assert_eq!(
            nameservers("nameserver 10.0.0.1\nnameserver ::1\nnameserver bad\n"),
            vec![
                "10.0.0.1:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }
}
