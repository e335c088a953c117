//! The embedded DNS, daemonless: containers on user-defined networks get
//! `nameserver 127.0.0.11` (as Docker's), and one `berth __dns` process per
//! state root answers there while any such container runs. It holds UDP
//! and TCP sockets on 127.0.0.11 inside each container's network namespace
//! (port 53 redirected to them),
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
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_netns_bridge::dns::{self, Reply};
use berth_runtime::socket;

use super::record::ContainerRecord;
use super::Containers;
use crate::error::{Error, Result};
use crate::spec::NetworkMode;

/// How long one upstream server gets to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a container uses the embedded DNS: it is on a user-defined
/// network, from the start or connected since (Docker's default bridge has
/// none).
pub fn uses_embedded_dns(record: &ContainerRecord) -> bool {
    let user_defined = |n: &str| n != berth_netns_bridge::DEFAULT_NETWORK;
    match &record.options.network {
        NetworkMode::Bridge(n) => {
            user_defined(n) || record.connected.iter().any(|c| user_defined(&c.name))
        }
        _ => false,
    }
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

/// Upstream servers as socket addresses on port 53: the first 3 that are
/// IP addresses.
fn upstream_addrs(servers: &[String]) -> Vec<SocketAddr> {
    servers
        .iter()
        .filter_map(|s| s.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .take(3)
        .collect()
}

fn dir(run_root: &Path) -> PathBuf {
    run_root.join("dns")
}

impl Containers {
    /// Have the embedded DNS serve the run `pid` of `record` (its network
    /// namespace must have `lo` up), starting the server if need be.
    pub(crate) fn register_dns(&self, record: &ContainerRecord, pid: i32) -> Result<()> {
        let path = dir(&self.run_root).join("control.sock");
        let mut last = String::new();
        for _ in 0..3 {
            let stream = match socket::connect(&path) {
                Ok(s) => s,
                Err(_) => {
                    self.spawn_dns()?;
                    match wait_connect(&path, Duration::from_secs(5)) {
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
        self.spawn_helper(&["__dns"], &d.join("log"))?;
        Ok(())
    }
}

fn wait_connect(path: &Path, limit: Duration) -> Option<UnixStream> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(s) = socket::connect(path) {
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
    /// Connections for queries over TCP.
    tcp: TcpListener,
    /// Where other names go (`--dns`, else the host's resolvers), at most 3.
    upstreams: Vec<SocketAddr>,
    /// Only on `--internal` networks: other names are not looked up outside.
    internal: bool,
    /// The network it was started on, which answers first.
    primary: String,
    /// Its TCP connections being served (at most [`MAX_TCP_PER_CONTAINER`]).
    tcp_open: Arc<AtomicUsize>,
}

/// Queries forwarded at once; beyond this, SERVFAIL at once.
const MAX_FORWARDS: usize = 256;
/// TCP connections served at once; beyond this, new ones are closed at once.
const MAX_TCP_CONNECTIONS: usize = 64;
/// TCP connections of one container served at once, so that one container
/// cannot take every slot.
const MAX_TCP_PER_CONTAINER: usize = 8;
/// How long a TCP connection may stay silent (before and between queries)
/// or take to send one query.
const TCP_IDLE: Duration = Duration::from_secs(5);
/// How long one TCP connection is served at most, however it trickles.
const TCP_LIFETIME: Duration = Duration::from_secs(30);
/// Datagrams taken from one container's socket per round, so a chatty
/// container cannot starve the others or the control socket.
const ROUND_BUDGET: usize = 32;

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

/// `<run-root>/dns/served`: who is served, so a server that replaces one
/// that died takes its containers back.
fn save_served(d: &Path, served: &[Served]) {
    let text: String = served
        .iter()
        .map(|s| format!("add {} {} {}\n", s.id, s.pid, s.start_ticks))
        .collect();
    let tmp = d.join("served.tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, d.join("served"));
    }
}

fn serve(root: &Path, run_root: &Path) -> Result<()> {
    let containers = Containers::open(root, run_root)?;
    let d = dir(run_root);
    std::fs::create_dir_all(&d).map_err(Error::io(format!("create {}", d.display())))?;
    // Only root may ask the server to enter namespaces.
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(Error::io(format!("chmod {}", d.display())))?;
    let lock = std::fs::File::create(d.join("lock")).map_err(Error::io("create the DNS lock"))?;
    let path = d.join("control.sock");
    // Another server holds the lock: leave it the work if it answers; if it
    // does not, it is on its way out (it unlinks the socket first), so wait
    // for its lock.
    let deadline = Instant::now() + Duration::from_secs(3);
    while lock.try_lock().is_err() {
        if socket::connect(&path).is_ok() || Instant::now() >= deadline {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let bind = || -> Result<UnixListener> {
        let _ = std::fs::remove_file(&path);
        let l = socket::bind(&path).map_err(Error::io(format!("bind {}", path.display())))?;
        l.set_nonblocking(true)
            .map_err(Error::io("control socket"))?;
        Ok(l)
    };
    let mut listener = bind()?;
    // Those a server before us served and whose runs go on.
    let mut served: Vec<Served> = Vec::new();
    for line in std::fs::read_to_string(d.join("served"))
        .unwrap_or_default()
        .lines()
    {
        let ticks = line.split_whitespace().nth(3).and_then(|t| t.parse().ok());
        if let Ok(s) = add(&containers, line) {
            if Some(s.start_ticks) == ticks {
                served.push(s);
            }
        }
    }
    save_served(&d, &served);
    let forwards = Arc::new(AtomicUsize::new(0));
    let tcp_connections = Arc::new(AtomicUsize::new(0));
    let mut idle_since = Some(Instant::now());
    let mut last_check = Instant::now();
    let mut buf = vec![0u8; 65535];
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(
                served
                    .iter()
                    .flat_map(|s| [s.socket.as_raw_fd(), s.tcp.as_raw_fd()]),
            )
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: poll on a vector of valid pollfds.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 500) };
        if accept_all(&containers, &listener, &mut served) {
            save_served(&d, &served);
        }
        for s in &served {
            for _ in 0..ROUND_BUDGET {
                let Ok((n, from)) = s.socket.recv_from(&mut buf) else {
                    break;
                };
                handle(&containers, s, &buf[..n], from, &forwards);
            }
            accept_tcp(&containers, s, &tcp_connections);
        }
        if last_check.elapsed() >= Duration::from_millis(500) {
            last_check = Instant::now();
            let before = served.len();
            served.retain(|s| super::pid_alive(s.pid, s.start_ticks));
            if served.len() != before {
                save_served(&d, &served);
            }
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
                    let _ = std::fs::remove_file(d.join("served"));
                    return Ok(());
                }
                save_served(&d, &served);
                listener = bind()?;
                idle_since = None;
            }
            _ => {}
        }
    }
}

/// Take every pending `add ID PID` request; whether any was added.
fn accept_all(containers: &Containers, listener: &UnixListener, served: &mut Vec<Served>) -> bool {
    let mut added = false;
    while let Ok((stream, _)) = listener.accept() {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut line = String::new();
        let mut reader = BufReader::new(&stream);
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        let reply = match add(containers, line.trim_end()) {
            Ok(s) => {
                served.retain(|old| old.id != s.id);
                served.push(s);
                added = true;
                "ok\n".to_string()
            }
            Err(e) => format!("err {e}\n"),
        };
        let _ = (&stream).write_all(reply.as_bytes());
    }
    added
}

/// Serve `add ID PID`: the run `PID` of container `ID`, whose network
/// namespace must be the one the container's endpoints were attached in.
fn add(containers: &Containers, line: &str) -> Result<Served> {
    let mut words = line.split_whitespace();
    let (Some("add"), Some(id), Some(pid)) = (words.next(), words.next(), words.next()) else {
        return Err(Error::Invalid(format!("bad request {line:?}")));
    };
    let pid: i32 = pid
        .parse()
        .map_err(|_| Error::Invalid(format!("bad pid {pid:?}")))?;
    let record = containers.store.load(id)?;
    let netns = format!("/proc/{pid}/ns/net");
    let endpoints = containers.endpoints_of(&record.id);
    if !endpoints.iter().any(|(_, e)| e.netns == Path::new(&netns)) {
        return Err(Error::Invalid(format!(
            "process {pid} is not container {}'s",
            record.name
        )));
    }
    // Internal only when no network it is on (the default bridge included)
    // reaches outside.
    let internal = endpoints.iter().all(|(n, _)| n.internal);
    let start_ticks = berth_runtime::state::proc_stat(pid)
        .map(|s| s.0)
        .ok_or_else(|| Error::Invalid(format!("process {pid} is gone")))?;
    let sockets = dns::bind_in_netns(Path::new(&netns))?;
    let upstreams = upstream_addrs(&if record.options.dns.is_empty() {
        super::network::nameservers(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        )
    } else {
        record.options.dns.clone()
    });
    Ok(Served {
        id: record.id,
        pid,
        start_ticks,
        socket: sockets.udp,
        tcp: sockets.tcp,
        upstreams,
        internal,
        primary: match &record.options.network {
            NetworkMode::Bridge(n) => n.clone(),
            _ => String::new(),
        },
        tcp_open: Arc::new(AtomicUsize::new(0)),
    })
}

/// The addresses `name` has for container `id`: those of its peers (and
/// itself) by name, alias or short id, or as `NAME.NETWORK`, on the first of
/// its user-defined networks that knows the name (as Docker's): `primary`
/// first, then the others by name.
fn lookup(
    networks: &berth_netns_bridge::NetworkStore,
    id: &str,
    primary: &str,
    name: &str,
) -> Option<Vec<std::net::Ipv4Addr>> {
    let mut networks: Vec<_> = networks
        .list()
        .ok()?
        .into_iter()
        .filter(|n| n.is_user_defined() && n.endpoints.contains_key(id))
        .collect();
    networks.sort_by(|a, b| (a.name != primary, &a.name).cmp(&(b.name != primary, &b.name)));
    networks.iter().find_map(|net| {
        let suffix = format!(".{}", net.name.to_ascii_lowercase());
        let wanted = name.strip_suffix(&suffix).unwrap_or(name);
        let mut ips = Vec::new();
        for e in net.endpoints.values() {
            let short = &e.container_id[..12.min(e.container_id.len())];
            let known = e.aliases.iter().any(|a| a.eq_ignore_ascii_case(wanted))
                || short.eq_ignore_ascii_case(wanted);
            if known && !ips.contains(&e.ip) {
                ips.push(e.ip);
            }
        }
        (!ips.is_empty()).then_some(ips)
    })
}

/// Answer one query from container `s`; a forwarded one in a thread of its own.
fn handle(
    containers: &Containers,
    s: &Served,
    query: &[u8],
    from: SocketAddr,
    forwards: &Arc<AtomicUsize>,
) {
    let reply = |bytes: Option<Vec<u8>>| {
        if let Some(b) = bytes {
            let _ = s.socket.send_to(&b, from);
        }
    };
    match dns::answer(query, |name| {
        lookup(containers.networks(), &s.id, &s.primary, name)
    }) {
        Reply::Answer(bytes) => reply(Some(bytes)),
        Reply::Drop => {}
        Reply::Forward if s.internal || s.upstreams.is_empty() => reply(dns::server_failure(query)),
        Reply::Forward => {
            if forwards.fetch_add(1, Ordering::SeqCst) >= MAX_FORWARDS {
                forwards.fetch_sub(1, Ordering::SeqCst);
                return reply(dns::server_failure(query));
            }
            let Ok(socket) = s.socket.try_clone() else {
                forwards.fetch_sub(1, Ordering::SeqCst);
                return;
            };
            let (upstreams, owned, count) = (s.upstreams.clone(), query.to_vec(), forwards.clone());
            let work = std::thread::Builder::new().spawn(move || {
                let reply = dns::forward(&owned, &upstreams, UPSTREAM_TIMEOUT)
                    .or_else(|| dns::server_failure(&owned));
                if let Some(bytes) = reply {
                    let _ = socket.send_to(&bytes, from);
                }
                count.fetch_sub(1, Ordering::SeqCst);
            });
            if work.is_err() {
                forwards.fetch_sub(1, Ordering::SeqCst);
                reply(dns::server_failure(query));
            }
        }
    }
}

/// Take the pending TCP connections of container `s`, each served by a
/// thread of its own.
fn accept_tcp(containers: &Containers, s: &Served, connections: &Arc<AtomicUsize>) {
    while let Ok((stream, _)) = s.tcp.accept() {
        let Some(slot) = Slot::take(&[
            (connections, MAX_TCP_CONNECTIONS),
            (&s.tcp_open, MAX_TCP_PER_CONTAINER),
        ]) else {
            continue;
        };
        let networks = containers.networks().clone();
        let (id, primary) = (s.id.clone(), s.primary.clone());
        let (upstreams, internal) = (s.upstreams.clone(), s.internal);
        // A failed spawn drops the closure, and with it the slot.
        let _ = std::thread::Builder::new().spawn(move || {
            let _slot = slot;
            let who = (id.as_str(), primary.as_str());
            serve_tcp(stream, &networks, who, &upstreams, internal);
        });
    }
}

/// Reads of a TCP stream that each wait at most [`TCP_IDLE`] and all end by
/// the deadline, however slowly the peer sends.
struct DeadlineReader<'a>(&'a TcpStream, std::time::Instant);

impl std::io::Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.1.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.0.set_read_timeout(Some(left.min(TCP_IDLE)))?;
        self.0.read(buf)
    }
}

/// One place in each of several bounded counters, given back when dropped.
struct Slot(Vec<Arc<AtomicUsize>>);

impl Slot {
    /// A place in every `(counter, limit)`, or `None` if one is full.
    fn take(counters: &[(&Arc<AtomicUsize>, usize)]) -> Option<Slot> {
        let mut slot = Slot(Vec::new());
        for (counter, limit) in counters {
            if counter.fetch_add(1, Ordering::SeqCst) >= *limit {
                counter.fetch_sub(1, Ordering::SeqCst);
                return None;
            }
            slot.0.push(Arc::clone(counter));
        }
        Some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        for counter in &self.0 {
            counter.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Answer the queries of one TCP connection of container `who` (its id and
/// primary network) until it closes, stays silent for [`TCP_IDLE`], has been
/// served for [`TCP_LIFETIME`] or sends something that is not a query.
fn serve_tcp(
    mut stream: TcpStream,
    networks: &berth_netns_bridge::NetworkStore,
    (id, primary): (&str, &str),
    upstreams: &[SocketAddr],
    internal: bool,
) {
    // Reads are bounded by `DeadlineReader`.
    if stream.set_nonblocking(false).is_err() || stream.set_write_timeout(Some(TCP_IDLE)).is_err() {
        return;
    }
    let deadline = std::time::Instant::now() + TCP_LIFETIME;
    loop {
        let mut reader = DeadlineReader(&stream, deadline);
        let Ok(Some(query)) = dns::read_tcp_message(&mut reader) else {
            return;
        };
        let reply = match dns::answer(&query, |name| lookup(networks, id, primary, name)) {
            Reply::Answer(bytes) => Some(bytes),
            Reply::Drop => return,
            Reply::Forward if internal || upstreams.is_empty() => dns::server_failure(&query),
            Reply::Forward => dns::forward_tcp(&query, upstreams, UPSTREAM_TIMEOUT)
                .or_else(|| dns::server_failure(&query)),
        };
        match reply {
            Some(bytes) if dns::write_tcp_message(&mut stream, &bytes).is_ok() => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickling_tcp_query_ends_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sender = std::thread::spawn(move || {
            let mut peer = std::net::TcpStream::connect(addr).unwrap();
            // A 100-byte message announced, then one byte every 50 ms.
            let _ = peer.write_all(&[0, 100]);
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(50));
                if peer.write_all(&[0]).is_err() {
                    break;
                }
            }
        });
        let (stream, _) = listener.accept().unwrap();
        let start = std::time::Instant::now();
        let deadline = start + Duration::from_millis(300);
        let got = dns::read_tcp_message(&mut DeadlineReader(&stream, deadline));
        assert!(got.is_err(), "{got:?}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        drop(stream);
        sender.join().unwrap();
    }

    #[test]
    fn slots_are_bounded_and_given_back() {
        let all = Arc::new(AtomicUsize::new(0));
        let one = Arc::new(AtomicUsize::new(0));
        let a = Slot::take(&[(&all, 3), (&one, 1)]).unwrap();
        assert!(Slot::take(&[(&all, 3), (&one, 1)]).is_none());
        assert_eq!(
            (all.load(Ordering::SeqCst), one.load(Ordering::SeqCst)),
            (1, 1)
        );
        drop(a);
        assert_eq!(
            (all.load(Ordering::SeqCst), one.load(Ordering::SeqCst)),
            (0, 0)
        );
    }

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
        let servers = super::super::network::nameservers(
            "nameserver 10.0.0.1\nnameserver ::1\nnameserver bad\n",
        );
        assert_eq!(
            upstream_addrs(&servers),
            vec![
                "10.0.0.1:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }
}
