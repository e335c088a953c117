//! Networking through the command line: the default bridge, NAT, published
//! ports, user-defined networks with names, network modes, IPAM under
//! concurrency and bad input.
//!
//! Every engine has its own bridge names, nft table and subnets (see
//! `Engine::new`); the "outside host" is a network namespace of the test's
//! own joined by a veth with a /30 of TEST-NET-3 (203.0.113.0/24) that no
//! other test uses. Traffic goes only to loopback, to the containers and to
//! that namespace.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_integration::{host_links, host_nft_tables, privileged, text, Engine};
use serde_json::Value;

/// A network namespace standing for another host, joined to the host by a
/// veth pair: host side `.1`, namespace side `.2` of a /30.
struct OutsideHost {
    ns: String,
    host_if: String,
    host_ip: Ipv4Addr,
    peer_ip: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
}

impl OutsideHost {
    fn new(e: &Engine) -> OutsideHost {
        assert!(e.index < 64);
        let tag = format!("{:x}x{:x}", std::process::id(), e.index);
        let base = 4 * e.index as u8;
        let o = OutsideHost {
            ns: format!("berth-out-{tag}"),
            host_if: format!("vo{tag}"),
            host_ip: Ipv4Addr::new(203, 0, 113, base + 1),
            peer_ip: Ipv4Addr::new(203, 0, 113, base + 2),
        };
        let peer = format!("vp{tag}");
        ip(&["netns", "add", &o.ns]);
        ip(&[
            "link", "add", &o.host_if, "type", "veth", "peer", "name", &peer, "netns", &o.ns,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", o.host_ip),
            "dev",
            &o.host_if,
        ]);
        ip(&["link", "set", &o.host_if, "up"]);
        ip(&[
            "-n",
            &o.ns,
            "addr",
            "add",
            &format!("{}/30", o.peer_ip),
            "dev",
            &peer,
        ]);
        ip(&["-n", &o.ns, "link", "set", &peer, "up"]);
        ip(&["-n", &o.ns, "link", "set", "lo", "up"]);
        o
    }

    /// Runs `f` on a thread inside the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in the outside host")
    }
}

impl Drop for OutsideHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// HTTP GET / on `addr`; the body, or the connection error.
fn http_get(addr: SocketAddrV4) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn http_get_eventually(addr: SocketAddrV4, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match http_get(addr) {
            Ok(body) if body.contains(needle) => return body,
            other => assert!(
                Instant::now() < deadline,
                "GET {addr} never served {needle:?}: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

const HTTPD: &str =
    "mkdir -p /www && echo hello-berth > /www/index.html && exec busybox httpd -f -p 80 -h /www";

fn container_ip(e: &Engine, name: &str, network: &str) -> Ipv4Addr {
    let v = e.inspect(name);
    v["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no address on {network}: {v}"))
        .parse()
        .expect("an IPv4 address")
}

fn exec(e: &Engine, name: &str, script: &str) -> std::process::Output {
    e.run(&["exec", name, "sh", "-c", script])
}

/// Host links and nft tables that do not belong to some test's engine or
/// outside host (other tests run in parallel).
fn host_snapshot() -> (Vec<String>, Vec<String>) {
    let mut links: Vec<String> = host_links()
        .into_iter()
        .filter(|l| !["bt", "bu", "vb", "vo"].iter().any(|p| l.starts_with(p)))
        .collect();
    links.sort();
    let tables = host_nft_tables()
        .into_iter()
        .filter(|t| !t.contains("berth_t"))
        .collect();
    (links, tables)
}

fn assert_engine_cleaned(bridge: &str, prefix: &str, table: &str) {
    let left: Vec<String> = host_links()
        .into_iter()
        .filter(|l| l == bridge || l.starts_with(prefix))
        .collect();
    assert!(left.is_empty(), "links left: {left:?}");
    let tables = host_nft_tables();
    assert!(
        !tables.iter().any(|t| t.ends_with(&format!(" {table}"))),
        "table {table} left: {tables:?}"
    );
}

#[test]
fn default_bridge_ping_masquerade_and_cleanup() {
    if !privileged() {
        return;
    }
    let before = host_snapshot();
    let e = Engine::with_busybox();
    let names = e.net_names();
    let outside = OutsideHost::new(&e);
    e.ok(&["run", "-d", "--name", "ca", "bb", "sleep", "1000"]);
    e.ok(&["run", "-d", "--name", "cb", "bb", "sleep", "1000"]);
    let ip_a = container_ip(&e, "ca", "bridge");
    let ip_b = container_ip(&e, "cb", "bridge");
    assert_ne!(ip_a, ip_b);
    assert!(ip_a
        .to_string()
        .starts_with(&format!("{}.", e.default_subnet_prefix())));
    let v = e.inspect("ca");
    let net = &v["NetworkSettings"]["Networks"]["bridge"];
    assert_eq!(net["Gateway"], format!("{}.1", e.default_subnet_prefix()));
    assert_eq!(net["IPPrefixLen"], 24);
    assert!(net["MacAddress"].as_str().unwrap().starts_with("02:42:"));
    assert_eq!(v["HostConfig"]["NetworkMode"], "bridge");
    // Its own name and address in /etc/hosts; resolv.conf has no loopback resolver.
    let hosts = e.ok(&["exec", "ca", "cat", "/etc/hosts"]);
    assert!(hosts.contains(&format!("{ip_a}\t")), "{hosts}");
    let resolv = e.ok(&["exec", "ca", "cat", "/etc/resolv.conf"]);
    assert!(!resolv.contains("nameserver 127."), "{resolv}");

    for (from, to) in [("ca", ip_b), ("cb", ip_a)] {
        let out = exec(&e, from, &format!("ping -c1 -W2 {to}"));
        assert!(
            out.status.success(),
            "{from} -> {to}: {}",
            text(&out.stdout)
        );
    }
    // The outside host is reachable, and sees the host's address (masquerade).
    let out = exec(&e, "ca", &format!("ping -c1 -W2 {}", outside.peer_ip));
    assert!(out.status.success(), "ping outside: {}", text(&out.stdout));
    let peer = outside.peer_ip;
    let server = {
        let ns = format!("/run/netns/{}", outside.ns);
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let f = std::fs::File::open(&ns).expect("open netns");
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let l = TcpListener::bind(SocketAddrV4::new(peer, 9000)).expect("bind in outside");
            tx.send(()).unwrap();
            let (mut s, from) = l.accept().expect("accept");
            let mut got = String::new();
            let _ = s.read_to_string(&mut got);
            (from, got)
        });
        rx.recv().unwrap();
        t
    };
    let out = exec(&e, "ca", &format!("echo hi-outside | nc {peer} 9000"));
    assert!(out.status.success(), "nc: {}", text(&out.stderr));
    let (from, got) = server.join().unwrap();
    assert_eq!(got.trim(), "hi-outside");
    assert_eq!(
        from.ip(),
        std::net::IpAddr::V4(outside.host_ip),
        "masqueraded"
    );

    e.ok(&["rm", "-f", "ca", "cb"]);
    let brif = std::fs::read_dir(format!("/sys/class/net/{}/brif", names.0))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(brif, 0, "no bridge ports left");
    drop(outside);
    drop(e);
    assert_engine_cleaned(&names.0, &names.1, &names.2);
    assert_eq!(host_snapshot(), before, "host links and tables unchanged");
}

#[test]
fn published_port_reachable_then_removed() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let outside = OutsideHost::new(&e);
    let port = free_port();
    let spec = format!("{port}:80");
    e.ok(&[
        "run", "-d", "--name", "web", "-p", &spec, "bb", "sh", "-c", HTTPD,
    ]);
    http_get_eventually(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port), "hello-berth");
    let host = SocketAddrV4::new(outside.host_ip, port);
    let body = outside.run(move || http_get(host));
    assert!(
        body.as_ref().is_ok_and(|b| b.contains("hello-berth")),
        "from the outside host: {body:?}"
    );
    assert_eq!(
        e.ok(&["port", "web"]).trim(),
        format!("80/tcp -> 0.0.0.0:{port}")
    );
    assert_eq!(
        e.ok(&["port", "web", "80"]).trim(),
        format!("0.0.0.0:{port}")
    );
    let ps = e.ok(&["ps"]);
    assert!(ps.contains(&format!("0.0.0.0:{port}->80/tcp")), "{ps}");
    let v = e.inspect("web");
    assert_eq!(
        v["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        port.to_string()
    );

    // The same host port again: a clear error.
    let out = e.run(&[
        "run", "-d", "--name", "web2", "-p", &spec, "bb", "sleep", "100",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("already in use"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    e.ok(&["rm", "-f", "web2"]);

    // A random host port.
    e.ok(&[
        "run", "-d", "--name", "web3", "-p", "80", "bb", "sh", "-c", HTTPD,
    ]);
    let p3: u16 = e
        .ok(&["port", "web3", "80/tcp"])
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    http_get_eventually(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p3), "hello-berth");

    // -P: every EXPOSEd port of the image on a random host port.
    let tar = berth_integration::assets().join("busybox-rootfs.tar");
    e.ok(&[
        "import",
        "--change",
        "EXPOSE 80",
        tar.to_str().unwrap(),
        "bbx",
    ]);
    e.ok(&[
        "run", "-d", "--name", "web4", "-P", "bbx", "sh", "-c", HTTPD,
    ]);
    let p4: u16 = e
        .ok(&["port", "web4", "80"])
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    http_get_eventually(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p4), "hello-berth");

    e.ok(&["rm", "-f", "web", "web3", "web4"]);
    let err = http_get(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p4)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let err = http_get(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let err = outside.run(move || http_get(host)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

#[test]
fn user_networks_names_isolation_and_connect() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "network",
        "create",
        "--subnet",
        &e.subnet(0),
        "--label",
        "k=v",
        "n1",
    ]);
    e.ok(&["network", "create", "--subnet", &e.subnet(1), "n2"]);
    let ls = e.ok(&["network", "ls"]);
    for n in ["bridge", "n1", "n2"] {
        assert!(ls.contains(&format!(" {n} ")), "{ls}");
    }
    // Docker's pre-defined mode networks are listed too, and are not records.
    let names: Vec<String> = ls
        .lines()
        .skip(1)
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        names,
        [
            "bridge bridge",
            "host host",
            "n1 bridge",
            "n2 bridge",
            "none null"
        ],
        "{ls}"
    );
    assert_eq!(e.ok(&["network", "ls", "-q"]).lines().count(), 5);
    // Filters as Docker's: one key's values are alternatives, keys all apply.
    let names = |filters: &[&str]| {
        let mut args = vec!["network", "ls", "--format", "{{.Name}}"];
        for f in filters {
            args.extend_from_slice(&["-f", f]);
        }
        e.ok(&args)
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&["type=custom"]), ["n1", "n2"]);
    assert_eq!(names(&["type=builtin"]), ["bridge", "host", "none"]);
    assert_eq!(names(&["label=k=v"]), ["n1"]);
    assert_eq!(names(&["driver=null", "driver=host"]), ["host", "none"]);
    assert_eq!(names(&["name=n", "driver=bridge"]), ["n1", "n2"]);
    assert_eq!(names(&["dangling=true"]), ["n1", "n2"]);
    e.fails(&["network", "ls", "-f", "type=other"], "custom or builtin");
    let json = e.ok(&["network", "ls", "--format", "json", "-f", "name=n1"]);
    let row: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(
        (row["Name"].as_str(), row["Labels"].as_str()),
        (Some("n1"), Some("k=v"))
    );
    e.fails(&["network", "create", "host"], "already exists");
    e.fails(&["network", "rm", "none"], "pre-defined");
    assert_eq!(
        e.ok(&["network", "inspect", "-f", "{{.Driver}}", "none"]),
        "null\n"
    );
    e.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "n1",
        "--network-alias",
        "www",
        "bb",
        "sh",
        "-c",
        HTTPD,
    ]);
    e.ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        "--network",
        "n1",
        "bb",
        "sleep",
        "1000",
    ]);
    e.ok(&[
        "run",
        "-d",
        "--name",
        "c2",
        "--network",
        "n2",
        "bb",
        "sleep",
        "1000",
    ]);
    let web_ip = container_ip(&e, "web", "n1");

    // (busybox wget -T crashes in the test image)
    let get =
        |from: &str, host: &str| exec(&e, from, &format!("busybox wget -q -O- http://{host}/"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = get("c1", "web");
        if text(&out.stdout).contains("hello-berth") {
            break;
        }
        assert!(Instant::now() < deadline, "web by name from n1: {out:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        text(&get("c1", "www").stdout).contains("hello-berth"),
        "alias"
    );
    // web's hosts file learnt c1 when c1 attached.
    let hosts = e.ok(&["exec", "web", "cat", "/etc/hosts"]);
    assert!(hosts.contains("c1"), "{hosts}");
    // From n2: neither resolvable nor reachable.
    assert!(!get("c2", "web").status.success());
    assert!(!exec(&e, "c2", &format!("ping -c1 -W1 {web_ip}"))
        .status
        .success());

    e.ok(&["network", "connect", "n2", "web"]);
    assert!(text(&get("c2", "web").stdout).contains("hello-berth"));
    let v = e.inspect("web");
    assert!(v["NetworkSettings"]["Networks"]["n2"]["IPAddress"].is_string());
    let inspect: Value = serde_json::from_str(&e.ok(&["network", "inspect", "n1"])).expect("json");
    assert_eq!(inspect[0]["Labels"]["k"], "v");
    assert_eq!(inspect[0]["IPAM"]["Config"][0]["Subnet"], e.subnet(0));
    assert_eq!(inspect[0]["Containers"].as_object().unwrap().len(), 2);

    e.fails(&["network", "rm", "n1"], "active endpoints");
    e.fails(&["network", "rm", "bridge"], "cannot be removed");
    e.ok(&["network", "disconnect", "n2", "web"]);
    assert!(!get("c2", "web").status.success());

    e.ok(&["rm", "-f", "web", "c1", "c2"]);
    e.ok(&["network", "rm", "n1"]);
    // prune takes the unused n2, not bridge.
    e.ok(&["network", "create", "--subnet", &e.subnet(2), "n3"]);
    let out = e.ok(&["system", "prune", "-f"]);
    assert!(out.contains("n3"), "{out}");
    let out = e.ok(&["network", "prune", "-f"]);
    assert!(!out.contains("bridge"), "{out}");
    assert_eq!(e.ok(&["network", "ls", "-q"]).lines().count(), 3);
}

#[test]
fn network_modes_none_host_and_container() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let out = e.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "bb",
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    // ... and lo is up: a server on 127.0.0.1 answers.
    let out = e.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "bb",
        "sh",
        "-c",
        "echo pong | nc -l -p 7777 & sleep 0.3; nc 127.0.0.1 7777 </dev/null",
    ]);
    assert_eq!(out.trim(), "pong");
    let out = e.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "bb",
        "ls",
        "/sys/class/net",
    ]);
    let mut host = host_links();
    host.sort();
    let mut seen: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    seen.sort();
    assert!(
        seen.contains(&"eth0".to_string()) && seen.contains(&"lo".to_string()),
        "{seen:?}"
    );
    // The `host` network lists its running containers, as Docker's does.
    let id = e.ok(&[
        "run",
        "-d",
        "--network",
        "host",
        "--name",
        "onhost",
        "bb",
        "sleep",
        "60",
    ]);
    let members: Value =
        serde_json::from_str(&e.ok(&["network", "inspect", "-f", "{{json .Containers}}", "host"]))
            .unwrap();
    assert_eq!(members[id.trim()]["Name"], "onhost", "{members}");
    e.ok(&["rm", "-f", "onhost"]);
    e.ok(&["run", "-d", "--name", "web", "bb", "sh", "-c", HTTPD]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = e.run(&[
            "run",
            "--rm",
            "--network",
            "container:web",
            "bb",
            "busybox",
            "wget",
            "-q",
            "-O-",
            "http://127.0.0.1/",
        ]);
        if text(&out.stdout).contains("hello-berth") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "container:web localhost: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    e.fails(
        &["run", "--rm", "--network", "none", "-p", "80", "bb", "true"],
        "port publishing",
    );
    e.ok(&["rm", "-f", "web"]);
    e.fails(
        &["run", "--rm", "--network", "container:web", "bb", "true"],
        "web",
    );
}

#[test]
fn thirty_parallel_containers_get_distinct_addresses() {
    if !privileged() {
        return;
    }
    let e = std::sync::Arc::new(Engine::with_busybox());
    e.ok(&["network", "create", "--subnet", &e.subnet(0), "n1"]);
    let inspect: Value = serde_json::from_str(&e.ok(&["network", "inspect", "n1"])).expect("json");
    let bridge = inspect[0]["Options"]["com.docker.network.bridge.name"]
        .as_str()
        .unwrap()
        .to_string();
    let threads: Vec<_> = (0..30)
        .map(|i| {
            let e = e.clone();
            std::thread::spawn(move || {
                let name = format!("p{i}");
                e.ok(&[
                    "run",
                    "-d",
                    "--name",
                    &name,
                    "--network",
                    "n1",
                    "bb",
                    "sleep",
                    "1000",
                ]);
                container_ip(&e, &name, "n1")
            })
        })
        .collect();
    let ips: std::collections::BTreeSet<Ipv4Addr> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(ips.len(), 30, "{ips:?}");
    let ports = || {
        std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(ports(), 30);
    let threads: Vec<_> = (0..30)
        .map(|i| {
            let e = e.clone();
            std::thread::spawn(move || e.ok(&["rm", "-f", &format!("p{i}")]))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(ports(), 0, "no bridge ports left");
    let inspect: Value = serde_json::from_str(&e.ok(&["network", "inspect", "n1"])).expect("json");
    assert!(inspect[0]["Containers"].as_object().unwrap().is_empty());
    let state: Value = serde_json::from_slice(
        &std::fs::read(e.root().join("networks/networks.json")).expect("state"),
    )
    .expect("json");
    for (name, n) in state["networks"].as_object().unwrap() {
        assert!(
            n["endpoints"].as_object().unwrap().is_empty(),
            "IPAM of {name} not empty: {n}"
        );
    }
    e.ok(&["network", "rm", "n1"]);
}

#[test]
fn bad_network_input_is_refused() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.fails(
        &["network", "create", "--subnet", "10.1.2.0/33", "x"],
        "invalid subnet",
    );
    e.fails(
        &["network", "create", "--subnet", "not-a-subnet", "x"],
        "invalid subnet",
    );
    e.ok(&["network", "create", "--subnet", &e.subnet(0), "n1"]);
    e.fails(
        &["network", "create", "--subnet", &e.subnet(0), "n2"],
        "overlaps",
    );
    e.fails(
        &["network", "create", "--subnet", &e.subnet(1), "n1"],
        "already exists",
    );
    e.fails(
        &["run", "--rm", "--network", "nosuch", "bb", "true"],
        "nosuch",
    );
    e.fails(
        &["run", "--rm", "-p", "70000:80", "bb", "true"],
        "out of range",
    );
    e.fails(
        &["run", "--rm", "-p", "8080:0", "bb", "true"],
        "out of range",
    );
    e.fails(
        &[
            "run",
            "--rm",
            "--network",
            "n1",
            "--ip",
            "10.99.0.5",
            "bb",
            "true",
        ],
        "not a usable address",
    );
    e.fails(&["network", "rm", "nosuch"], "nosuch");
    e.fails(&["network", "connect", "n1", "nosuch"], "nosuch");
    assert_eq!(e.ok(&["ps", "-a", "-q"]).trim(), "", "no container created");
    let ls = e.ok(&["network", "ls", "-q"]);
    assert_eq!(
        ls.lines().count(),
        4,
        "only bridge, host, none and n1: {ls}"
    );
    // A static address inside the subnet is honoured.
    let ip = e.subnet(0).replace(".0/24", ".77");
    let out = e.ok(&[
        "run",
        "--rm",
        "--network",
        "n1",
        "--ip",
        &ip,
        "--mac-address",
        "02:00:00:00:00:77",
        "bb",
        "ip",
        "addr",
    ]);
    assert!(out.contains(&format!("{ip}/24")), "{out}");
    assert!(out.contains("02:00:00:00:00:77"), "{out}");
    e.ok(&["network", "rm", "n1"]);
}

#[test]
fn restart_policy_reattaches_and_dead_monitor_detaches() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run", "-d", "--name", "rr", "--restart", "on-failure:1", "bb", "sh", "-c",
        "ip -o -4 addr show eth0 >> /tmp/addrs; [ -e /tmp/again ] && exec sleep 1000; touch /tmp/again; exit 1",
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = e.inspect("rr");
        if v["RestartCount"] == 1 && v["State"]["Running"] == true {
            let out = e.run(&["exec", "rr", "cat", "/tmp/addrs"]);
            if text(&out.stdout).lines().count() == 2 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "never restarted: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let addrs = e.ok(&["exec", "rr", "cat", "/tmp/addrs"]);
    assert!(addrs.lines().all(|l| l.contains("inet 10.201.")), "{addrs}");
    // Kill the monitor: the next command reconciles and detaches.
    let pid = e.inspect("rr")["State"]["Pid"].as_i64().unwrap() as i32;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: i32 = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ppid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let v = e.inspect("rr");
    assert_eq!(v["State"]["Running"], false);
    assert!(
        v["NetworkSettings"]["Networks"]
            .as_object()
            .unwrap()
            .is_empty(),
        "{v}"
    );
    let brif = std::fs::read_dir(format!("/sys/class/net/{}/brif", e.net_names().0))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(brif, 0);
    e.ok(&["rm", "-f", "rr"]);
}
