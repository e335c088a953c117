//! The embedded DNS at 127.0.0.11: containers on a user-defined network
//! resolve each other's names and aliases by DNS (not only through
//! /etc/hosts), names of other networks stay unknown, and other names go to
//! the container's `--dns` server: here a fake one on the host's loopback,
//! so no query leaves the machine.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_integration::{privileged, text, wait_until, Engine};
use simple_dns::rdata::{RData, A};
use simple_dns::{Packet, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};

/// The address the fake upstream answers every `*.test` A query with.
const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);

/// The fake upstream's reply to `query`: an A record for `*.test` names,
/// NXDOMAIN for others.
fn fake_reply(query: &Packet) -> Vec<u8> {
    let mut reply = Packet::new_reply(query.id());
    reply.questions = query.questions.clone();
    if let Some(q) = query.questions.first() {
        let name = q.qname.to_string();
        if !name.trim_end_matches('.').ends_with(".test") {
            *reply.rcode_mut() = RCODE::NameError;
        } else if q.qtype == QTYPE::TYPE(TYPE::A) {
            reply.answers.push(ResourceRecord::new(
                q.qname.clone(),
                CLASS::IN,
                60,
                RData::A(A::from(UPSTREAM_ANSWER)),
            ));
        }
    }
    reply.build_bytes_vec().unwrap()
}

/// Read one length-prefixed DNS message from a TCP stream.
fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut m)?;
    Ok(m)
}

fn write_framed(stream: &mut TcpStream, m: &[u8]) -> std::io::Result<()> {
    let mut framed = (m.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(m);
    stream.write_all(&framed)
}

/// A DNS server on `addr`:53, UDP and TCP, that knows only `*.test` names;
/// stops when dropped.
struct FakeUpstream {
    /// Queries it was asked over UDP.
    asked: Arc<AtomicUsize>,
    /// Queries it was asked over TCP.
    asked_tcp: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl FakeUpstream {
    fn start(addr: Ipv4Addr) -> FakeUpstream {
        let socket = UdpSocket::bind((addr, 53)).expect("bind the fake upstream");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let asked = Arc::new(AtomicUsize::new(0));
        let count = asked.clone();
        let udp = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Packet::parse(&buf[..n]) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = socket.send_to(&fake_reply(&query), from);
            }
        });
        let listener = TcpListener::bind((addr, 53)).expect("listen for the fake upstream");
        listener.set_nonblocking(true).unwrap();
        let flag = stop.clone();
        let asked_tcp = Arc::new(AtomicUsize::new(0));
        let count = asked_tcp.clone();
        let tcp = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                while let Ok(m) = read_framed(&mut conn) {
                    let Ok(query) = Packet::parse(&m) else {
                        break;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = write_framed(&mut conn, &fake_reply(&query));
                }
            }
        });
        FakeUpstream {
            asked,
            asked_tcp,
            stop,
            threads: vec![udp, tcp],
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn ip_on(e: &Engine, name: &str, network: &str) -> String {
    e.inspect(name)["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string()
}

fn nslookup(e: &Engine, from: &str, name: &str) -> String {
    text(&e.run(&["exec", from, "nslookup", name]).stdout)
}

/// A query for the A records of `name`.
fn a_query(name: &str, id: u16) -> Vec<u8> {
    let mut q = Packet::new_query(id);
    q.questions.push(simple_dns::Question::new(
        simple_dns::Name::new_unchecked(name),
        TYPE::A.into(),
        CLASS::IN.into(),
        false,
    ));
    q.build_bytes_vec().unwrap()
}

/// Ask 127.0.0.11:53 over TCP, from inside the network namespace of the
/// process `pid`, for each of `names` on one connection: the A records of each.
fn tcp_lookup(pid: i64, names: &[&str]) -> Vec<Vec<Ipv4Addr>> {
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    std::thread::spawn(move || {
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let mut conn = TcpStream::connect(("127.0.0.11", 53)).expect("connect to 127.0.0.11:53");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            write_framed(&mut conn, &a_query(name, 0x4000 + i as u16)).unwrap();
            let reply = read_framed(&mut conn).expect("a reply over TCP");
            let reply = Packet::parse(&reply).unwrap();
            assert_eq!(reply.id(), 0x4000 + i as u16);
            out.push(
                reply
                    .answers
                    .iter()
                    .filter_map(|a| match &a.rdata {
                        RData::A(a) => Some(Ipv4Addr::from(a.address)),
                        _ => None,
                    })
                    .collect(),
            );
        }
        out
    })
    .join()
    .unwrap()
}

/// The `__dns` processes serving this engine's run root.
fn dns_servers(e: &Engine) -> usize {
    let run_root = e.tmp.path().join("run");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            args.contains(&&b"__dns"[..]) && args.contains(&run_root.as_os_str().as_encoded_bytes())
        })
        .count()
}

#[test]
fn containers_resolve_each_other_by_dns() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    // A loopback address of its own per test process, for the fake upstream.
    let upstream = Ipv4Addr::new(127, 0, 53, (std::process::id() % 200) as u8 + 20);
    let fake = FakeUpstream::start(upstream);
    let dns = upstream.to_string();
    e.ok(&["network", "create", "--subnet", &e.subnet(0), "n1"]);
    e.ok(&["network", "create", "--subnet", &e.subnet(1), "n2"]);
    let run = |name: &str, net: &str, extra: &[&str]| {
        let mut args = vec!["run", "-d", "--name", name, "--network", net, "--dns", &dns];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["bb", "sleep", "120"]);
        e.ok(&args);
    };
    run("a1", "n1", &[]);
    run("b1", "n1", &["--network-alias", "web"]);
    run("c1", "n2", &[]);

    let resolv = e.ok(&["exec", "a1", "cat", "/etc/resolv.conf"]);
    assert!(resolv.starts_with("nameserver 127.0.0.11\n"), "{resolv}");
    assert!(!resolv.contains(&dns), "{resolv}");
    let b1 = ip_on(&e, "b1", "n1");
    let b1_id = e.inspect("b1")["Id"].as_str().unwrap()[..12].to_string();
    for name in ["b1", "web", "B1", "b1.n1", &b1_id] {
        let out = nslookup(&e, "a1", name);
        assert!(out.contains(&format!("Address: {b1}")), "{name}: {out}");
    }
    let a1 = ip_on(&e, "a1", "n1");
    let out = nslookup(&e, "a1", "a1");
    assert!(
        out.contains(&format!("Address: {a1}")),
        "its own name: {out}"
    );
    // Another network's names are not ours: the query goes upstream, which
    // does not know it either.
    let asked = fake.asked.load(Ordering::SeqCst);
    let out = nslookup(&e, "c1", "b1");
    assert!(!out.contains(&b1) && out.contains("NXDOMAIN"), "{out}");
    assert!(fake.asked.load(Ordering::SeqCst) > asked);
    // Other names go to the --dns server.
    let out = nslookup(&e, "a1", "elsewhere.test");
    assert!(
        out.contains(&format!("Address: {UPSTREAM_ANSWER}")),
        "{out}"
    );
    // Over TCP (where a resolver retries a truncated answer) too, several
    // queries on one connection: its peers' names, and others forwarded over
    // TCP.
    let a1_pid = e.inspect("a1")["State"]["Pid"].as_i64().unwrap();
    let asked_tcp = fake.asked_tcp.load(Ordering::SeqCst);
    let answers = tcp_lookup(a1_pid, &["b1", "web.n1", "elsewhere.test"]);
    let b1_ip: Ipv4Addr = b1.parse().unwrap();
    assert_eq!(
        answers,
        vec![vec![b1_ip], vec![b1_ip], vec![UPSTREAM_ANSWER]]
    );
    assert_eq!(fake.asked_tcp.load(Ordering::SeqCst), asked_tcp + 1);

    // A name on several of a container's networks gets the addresses from
    // one of them (as Docker's): the network it was started on first;
    // NAME.NETWORK picks the other.
    e.ok(&["network", "connect", "n2", "b1"]);
    e.ok(&["network", "connect", "n2", "a1"]);
    let b1_n2 = ip_on(&e, "b1", "n2");
    let out = nslookup(&e, "a1", "b1");
    assert!(
        out.contains(&format!("Address: {b1}")) && !out.contains(&b1_n2),
        "{out}"
    );
    let out = nslookup(&e, "a1", "b1.n2");
    assert!(
        out.contains(&format!("Address: {b1_n2}")) && !out.contains(&format!("Address: {b1}\n")),
        "{out}"
    );
    let out = nslookup(&e, "c1", "b1");
    assert!(out.contains(&format!("Address: {b1_n2}")), "{out}");

    // A container started later is known at once; one on the default bridge
    // keeps the host's resolvers (as Docker's).
    run("d1", "n1", &[]);
    let d1 = ip_on(&e, "d1", "n1");
    let out = nslookup(&e, "a1", "d1");
    assert!(out.contains(&format!("Address: {d1}")), "{out}");
    e.ok(&[
        "run", "-d", "--name", "plain", "--dns", &dns, "bb", "sleep", "120",
    ]);
    let resolv = e.ok(&["exec", "plain", "cat", "/etc/resolv.conf"]);
    assert!(!resolv.contains("127.0.0.11"), "{resolv}");
    // Connected to a user-defined network, it switches to the embedded DNS
    // (as Docker's), which still forwards to its --dns server.
    e.ok(&["network", "connect", "n1", "plain"]);
    let resolv = e.ok(&["exec", "plain", "cat", "/etc/resolv.conf"]);
    assert!(resolv.starts_with("nameserver 127.0.0.11\n"), "{resolv}");
    let out = nslookup(&e, "plain", "b1");
    assert!(out.contains(&format!("Address: {b1}")), "{out}");
    let out = nslookup(&e, "plain", "elsewhere.test");
    assert!(
        out.contains(&format!("Address: {UPSTREAM_ANSWER}")),
        "{out}"
    );

    // Port 53 stays free for the container's own servers (the embedded DNS
    // listens on another port, port 53 redirected to it, as Docker's).
    let pid = e.inspect("a1")["State"]["Pid"].as_i64().unwrap();
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    let bound = std::thread::spawn(move || {
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        UdpSocket::bind(("0.0.0.0", 53)).map(|_| ())
    })
    .join()
    .unwrap();
    assert!(bound.is_ok(), "port 53 in the container: {bound:?}");

    // An internal network's containers get their peers' names but nothing
    // from outside.
    e.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        &e.subnet(2),
        "inside",
    ]);
    run("i1", "inside", &[]);
    run("i2", "inside", &[]);
    let out = nslookup(&e, "i1", "i2");
    assert!(
        out.contains(&format!("Address: {}", ip_on(&e, "i2", "inside"))),
        "{out}"
    );
    let asked = fake.asked.load(Ordering::SeqCst);
    let out = nslookup(&e, "i1", "elsewhere.test");
    assert!(!out.contains(&UPSTREAM_ANSWER.to_string()), "{out}");
    assert_eq!(
        fake.asked.load(Ordering::SeqCst),
        asked,
        "an internal query went out"
    );
    // One on the default bridge too reaches outside: other names still go out.
    e.ok(&[
        "run", "-d", "--name", "bridged", "--dns", &dns, "bb", "sleep", "120",
    ]);
    e.ok(&["network", "connect", "inside", "bridged"]);
    let out = nslookup(&e, "bridged", "elsewhere.test");
    assert!(
        out.contains(&format!("Address: {UPSTREAM_ANSWER}")),
        "{out}"
    );

    // A server that dies is replaced by the next container's start, which
    // takes back the containers it served.
    let server = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find(|p| {
            let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            cmd.split(|b| *b == 0).any(|a| a == b"__dns")
                && cmd
                    .windows(e.tmp.path().as_os_str().len())
                    .any(|w| w == e.tmp.path().as_os_str().as_encoded_bytes())
        })
        .expect("the DNS server");
    let server_pid: i32 = server.file_name().to_str().unwrap().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until(10, "the killed server to go", || dns_servers(&e) == 0);
    run("e1", "n1", &[]);
    let out = nslookup(&e, "a1", "e1");
    assert!(
        out.contains(&format!("Address: {}", ip_on(&e, "e1", "n1"))),
        "{out}"
    );

    // One server for them all, gone with the last of them.
    assert_eq!(dns_servers(&e), 1);
    e.ok(&[
        "rm", "-f", "a1", "b1", "c1", "d1", "e1", "i1", "i2", "plain", "bridged",
    ]);
    wait_until(15, "the DNS server to exit", || dns_servers(&e) == 0);
    e.ok(&["network", "rm", "n1", "n2", "inside"]);
}
