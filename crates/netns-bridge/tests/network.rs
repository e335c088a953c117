//! Privileged tests (root): each runs in its own network namespace.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use berth_netns_bridge::*;
use common::*;

fn store() -> (tempfile::TempDir, NetworkStore) {
    let d = tempfile::tempdir().unwrap();
    let s = NetworkStore::open(d.path().join("networks")).unwrap();
    (d, s)
}

fn net(name: &str, subnet: Option<&str>, internal: bool) -> NetworkConfig {
    NetworkConfig {
        name: name.into(),
        subnet: subnet.map(|s| s.parse().unwrap()),
        internal,
        ..Default::default()
    }
}

fn ping(from: &Ns, ip: impl std::fmt::Display) -> bool {
    from.sh_ok(&format!("busybox ping -c1 -W2 {ip}"))
}

#[test]
fn default_bridge_ping_masquerade_and_cleanup() {
    in_test_netns(|| {
        let (_d, s) = store();
        let outside = Outside::new();
        let bridge = s.default_bridge().unwrap();
        assert_eq!(bridge.bridge, DEFAULT_BRIDGE);
        assert_eq!(bridge.subnet.to_string(), "10.123.0.0/16");
        assert_eq!(s.default_bridge().unwrap().id, bridge.id, "idempotent");
        let (a, b) = (Ns::new(), Ns::new());
        let aa = s
            .attach("bridge", "aaaa", a.path(), AttachOptions::default())
            .unwrap();
        let ab = s
            .attach("bridge", "bbbb", b.path(), AttachOptions::default())
            .unwrap();
        assert_eq!(aa.ip, Ipv4Addr::new(10, 123, 0, 2));
        assert_eq!(ab.ip, Ipv4Addr::new(10, 123, 0, 3));
        assert_eq!(aa.gateway, Ipv4Addr::new(10, 123, 0, 1));
        assert_eq!(aa.interface, "eth0");
        assert_eq!(aa.mac, "02:42:0a:7b:00:02");
        assert!(
            aa.hosts.is_empty(),
            "no name resolution on the default bridge"
        );
        assert!(a.sh("ip -br link").contains("eth0"));
        assert!(a.sh("ip -br addr").contains("10.123.0.2/16"));
        assert!(a.sh("ip route").contains("default via 10.123.0.1 dev eth0"));
        assert!(a.sh("ip -br link show lo").contains("UP"));
        assert!(a.sh("ip link show eth0").contains("02:42:0a:7b:00:02"));
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .unwrap()
                .trim(),
            "1"
        );

        assert!(ping(&a, ab.ip), "a pings b");
        assert!(ping(&b, aa.ip), "b pings a");
        assert!(ping(&a, aa.gateway), "a pings gateway");

        // Masquerade: the outside host sees the host's address as source.
        let l = outside.ns.listen(&format!("{OUTSIDE_ADDR}:7000"));
        let peer = roundtrip(&l, connect_in(a.path(), &format!("{OUTSIDE_ADDR}:7000"))).unwrap();
        assert_eq!(peer.ip().to_string(), HOST_ADDR);
        assert!(ping(&b, OUTSIDE_ADDR));

        s.detach("bridge", "aaaa").unwrap();
        s.detach("bridge", "bbbb").unwrap();
        assert!(matches!(
            s.detach("bridge", "bbbb"),
            Err(Error::NotAttached { .. })
        ));
        assert!(s.get("bridge").unwrap().endpoints.is_empty());
        assert!(
            !links().iter().any(|l| l.starts_with("vb")),
            "{:?}",
            links()
        );
        assert!(
            links().contains(&"berth0".to_string()),
            "bridge kept until network removal"
        );
        s.remove("bridge").unwrap();
        assert!(!links().contains(&"berth0".to_string()));
        assert!(!nft_tables().contains("berth"), "{}", nft_tables());
        assert!(s.list().unwrap().is_empty());
    });
}

#[test]
fn published_ports_dnat_and_conflicts() {
    in_test_netns(|| {
        let (_d, s) = store();
        let outside = Outside::new();
        s.default_bridge().unwrap();
        let web = Ns::new();
        let ports = vec![
            parse_port_spec("18080:80").unwrap(),
            parse_port_spec("81").unwrap(),
        ];
        let att = s
            .attach(
                "bridge",
                "web",
                web.path(),
                AttachOptions {
                    ports,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(att.ports[0].host_port, 18080);
        let random = att.ports[1].host_port;
        assert!(random != 0 && att.ports[1].container_port == 81);
        let l = web.listen("0.0.0.0:80");
        // From the outside host, at the host's address.
        let peer = roundtrip(
            &l,
            connect_in(outside.ns.path(), &format!("{HOST_ADDR}:18080")),
        )
        .unwrap();
        assert_eq!(
            peer.ip().to_string(),
            OUTSIDE_ADDR,
            "DNAT keeps the client address"
        );
        // From the host itself through 127.0.0.1 and through its own address.
        roundtrip(&l, connect_here("127.0.0.1:18080")).unwrap();
        roundtrip(&l, connect_here(&format!("{HOST_ADDR}:18080"))).unwrap();
        let l81 = web.listen("0.0.0.0:81");
        roundtrip(&l81, connect_here(&format!("127.0.0.1:{random}"))).unwrap();

        // Same host port again: clear error, nothing attached.
        let other = Ns::new();
        let e = s
            .attach(
                "bridge",
                "other",
                other.path(),
                AttachOptions {
                    ports: vec![parse_port_spec("18080:80").unwrap()],
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(matches!(e, Error::PortInUse { port: 18080, .. }), "{e}");
        assert!(e.to_string().contains("18080"), "{e}");
        assert!(!other.sh("ip -br link").contains("eth0"));
        // A port bound by some other process is refused too.
        let _busy = std::net::TcpListener::bind("0.0.0.0:18090").unwrap();
        let e = s
            .attach(
                "bridge",
                "other",
                other.path(),
                AttachOptions {
                    ports: vec![parse_port_spec("18090:80").unwrap()],
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(matches!(e, Error::PortInUse { port: 18090, .. }), "{e}");

        s.detach("bridge", "web").unwrap();
        let e = connect_here("127.0.0.1:18080")().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        assert!(!sh("nft list table ip berth").contains("dport 18080"));
        // Now the port is free for another container.
        s.attach(
            "bridge",
            "other",
            other.path(),
            AttachOptions {
                ports: vec![parse_port_spec("18080:80").unwrap()],
                ..Default::default()
            },
        )
        .unwrap();
        s.detach("bridge", "other").unwrap();
        s.remove("bridge").unwrap();
        assert!(!nft_tables().contains("berth"));
    });
}

#[test]
fn user_networks_isolated_internal_and_hosts() {
    in_test_netns(|| {
        let (_d, s) = store();
        let _outside = Outside::new();
        let n1 = s.create(net("n1", None, false)).unwrap();
        let _n2 = s.create(net("n2", Some("10.200.5.0/24"), false)).unwrap();
        let inet = s.create(net("inner", None, true)).unwrap();
        assert_eq!(n1.subnet.to_string(), "10.123.0.0/16");
        assert_eq!(inet.subnet.to_string(), "10.124.0.0/16");
        assert!(n1.bridge.starts_with("berth-") && n1.bridge.len() <= 15);
        let (web, client, stranger, hidden) = (Ns::new(), Ns::new(), Ns::new(), Ns::new());
        let w = s
            .attach(
                "n1",
                "webid",
                web.path(),
                AttachOptions {
                    aliases: vec!["web".into()],
                    ..Default::default()
                },
            )
            .unwrap();
        let c = s
            .attach(
                "n1",
                "clientid",
                client.path(),
                AttachOptions {
                    aliases: vec!["client".into()],
                    ..Default::default()
                },
            )
            .unwrap();
        let st = s
            .attach(
                "n2",
                "strangerid",
                stranger.path(),
                AttachOptions::default(),
            )
            .unwrap();
        let h = s
            .attach(
                "inner",
                "hiddenid",
                hidden.path(),
                AttachOptions {
                    ip: Some("10.124.0.50".parse().unwrap()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(h.ip, Ipv4Addr::new(10, 124, 0, 50));
        assert!(w.hosts.is_empty());
        assert_eq!(
            c.hosts,
            vec![HostEntry {
                ip: w.ip,
                names: vec!["web".into(), "webid".into()]
            }]
        );
        let hw = s.hosts_for("n1", "webid").unwrap();
        assert_eq!(
            hw,
            vec![HostEntry {
                ip: c.ip,
                names: vec!["client".into(), "clientid".into()]
            }]
        );
        assert!(s.hosts_for("n2", "strangerid").unwrap().is_empty());

        assert!(ping(&client, w.ip));
        assert!(!ping(&stranger, w.ip), "n2 must not reach n1");
        assert!(!ping(&client, st.ip), "n1 must not reach n2");
        let l = web.listen("0.0.0.0:80");
        assert!(roundtrip(&l, connect_in(stranger.path(), &format!("{}:80", w.ip))).is_err());
        roundtrip(&l, connect_in(client.path(), &format!("{}:80", w.ip))).unwrap();
        // Both user networks reach the outside; the internal one does not.
        assert!(ping(&client, OUTSIDE_ADDR));
        assert!(ping(&stranger, OUTSIDE_ADDR));
        assert!(
            !ping(&hidden, OUTSIDE_ADDR),
            "internal network has no way out"
        );
        assert!(
            ping(&hidden, h.gateway),
            "internal network still reaches its gateway"
        );

        // A container joins a second network: it gains eth1 and can reach n2.
        let w2 = s
            .attach("n2", "webid", web.path(), AttachOptions::default())
            .unwrap();
        assert_eq!(w2.interface, "eth1");
        assert!(ping(&stranger, w2.ip));

        let e = s.remove("n1").unwrap_err();
        assert!(matches!(e, Error::NetworkInUse { .. }), "{e}");
        for (n, id) in [
            ("n1", "webid"),
            ("n1", "clientid"),
            ("n2", "strangerid"),
            ("n2", "webid"),
            ("inner", "hiddenid"),
        ] {
            s.detach(n, id).unwrap();
        }
        for n in ["n1", "n2", "inner"] {
            s.remove(n).unwrap();
        }
        assert!(
            !links()
                .iter()
                .any(|l| l.starts_with("berth") || l.starts_with("vb")),
            "{:?}",
            links()
        );
        assert!(!nft_tables().contains("berth"));
    });
}

#[test]
fn bad_input_is_refused_with_the_value() {
    in_test_netns(|| {
        let _outside = Outside::new(); // adds the host route 203.0.113.0/24
        let (_d, s) = store();
        assert!(matches!(
            "10.1.0.0/33".parse::<Subnet>(),
            Err(Error::InvalidSubnet(_))
        ));
        assert!(matches!(
            "10.1.0.1/16".parse::<Subnet>(),
            Err(Error::InvalidSubnet(_))
        ));
        assert!("nonsense"
            .parse::<Subnet>()
            .unwrap_err()
            .to_string()
            .contains("nonsense"));
        s.create(net("a", Some("10.50.0.0/16"), false)).unwrap();
        let e = s.create(net("b", Some("10.50.3.0/24"), false)).unwrap_err();
        assert!(matches!(e, Error::SubnetOverlapsNetwork { .. }), "{e}");
        assert!(e.to_string().contains("10.50.3.0/24"), "{e}");
        let e = s
            .create(net("c", Some("203.0.113.0/25"), false))
            .unwrap_err();
        assert!(matches!(e, Error::SubnetOverlapsHostRoute { .. }), "{e}");
        assert!(matches!(
            s.create(net("a", None, false)),
            Err(Error::NetworkExists(_))
        ));
        assert!(matches!(
            s.create(net("bad name", None, false)),
            Err(Error::InvalidName(_))
        ));
        let e = s
            .create(NetworkConfig {
                name: "g".into(),
                subnet: Some("10.60.0.0/16".parse().unwrap()),
                gateway: Some("10.61.0.1".parse().unwrap()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(e, Error::GatewayOutsideSubnet { .. }), "{e}");
        let ns = Ns::new();
        let e = s
            .attach("nope", "x", ns.path(), AttachOptions::default())
            .unwrap_err();
        assert!(
            matches!(e, Error::NetworkNotFound(ref n) if n == "nope"),
            "{e}"
        );
        for ip in ["10.51.0.2", "10.50.0.0", "10.50.255.255", "10.50.0.1"] {
            let e = s
                .attach(
                    "a",
                    "x",
                    ns.path(),
                    AttachOptions {
                        ip: Some(ip.parse().unwrap()),
                        ..Default::default()
                    },
                )
                .unwrap_err();
            assert!(matches!(e, Error::AddressOutsideSubnet { .. }), "{e}");
            assert!(e.to_string().contains(ip), "{e}");
        }
        let e = parse_port_spec("70000:80").unwrap_err();
        assert!(e.to_string().contains("70000"), "{e}");
        let zero = PortMapping {
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: 8080,
            container_port: 0,
            proto: Proto::Tcp,
        };
        let e = s
            .attach(
                "a",
                "x",
                ns.path(),
                AttachOptions {
                    ports: vec![zero],
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(matches!(e, Error::InvalidPortSpec { .. }), "{e}");
        let e = s
            .attach(
                "a",
                "x",
                ns.path(),
                AttachOptions {
                    mac: Some("nope".into()),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(matches!(e, Error::InvalidMac(_)), "{e}");
        let e = s
            .attach("a", "x", "/nonexistent/netns", AttachOptions::default())
            .unwrap_err();
        assert!(matches!(e, Error::Netns { .. }), "{e}");
        // Nothing was created by any of the refusals.
        assert!(s.get("a").unwrap().endpoints.is_empty());
        assert!(
            !links()
                .iter()
                .any(|l| l.starts_with("berth") || l.starts_with("vb")),
            "{:?}",
            links()
        );
        assert!(!nft_tables().contains("berth"));
        // Static IP and MAC are honoured; the same IP twice is refused.
        let at = s
            .attach(
                "a",
                "x",
                ns.path(),
                AttachOptions {
                    ip: Some("10.50.0.9".parse().unwrap()),
                    mac: Some("02:00:00:00:00:09".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(
            (at.ip, at.mac.as_str()),
            (Ipv4Addr::new(10, 50, 0, 9), "02:00:00:00:00:09")
        );
        let ns2 = Ns::new();
        let e = s
            .attach(
                "a",
                "y",
                ns2.path(),
                AttachOptions {
                    ip: Some(at.ip),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(matches!(e, Error::AddressInUse { .. }), "{e}");
        assert!(matches!(
            s.attach("a", "x", ns2.path(), AttachOptions::default()),
            Err(Error::AlreadyAttached { .. })
        ));
        s.detach("a", "x").unwrap();
        s.remove("a").unwrap();
        assert!(!nft_tables().contains("berth"));
    });
}

#[test]
fn ipam_thirty_concurrent_attaches_in_threads() {
    in_test_netns(|| {
        let (_d, s) = store();
        s.create(net("many", Some("10.77.0.0/24"), false)).unwrap();
        let holders: Vec<Ns> = (0..30).map(|_| Ns::new()).collect();
        let ips: Vec<Ipv4Addr> = std::thread::scope(|sc| {
            let hs: Vec<_> = holders
                .iter()
                .enumerate()
                .map(|(i, ns)| {
                    let s = s.clone();
                    let p = ns.path();
                    sc.spawn(move || {
                        s.attach("many", &format!("c{i}"), p, AttachOptions::default())
                            .unwrap()
                            .ip
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let distinct: BTreeSet<_> = ips.iter().collect();
        assert_eq!(distinct.len(), 30, "{ips:?}");
        let bridge = s.get("many").unwrap().bridge;
        assert_eq!(
            sh(&format!("ip -o link show master {bridge}"))
                .lines()
                .count(),
            30
        );
        std::thread::scope(|sc| {
            for i in 0..30 {
                let s = s.clone();
                sc.spawn(move || s.detach("many", &format!("c{i}")).unwrap());
            }
        });
        assert!(s.get("many").unwrap().endpoints.is_empty());
        assert_eq!(
            sh(&format!("ip -o link show master {bridge}"))
                .lines()
                .count(),
            0
        );
        s.remove("many").unwrap();
    });
}

const CHILD_ENV: &str = "BERTH_NET_TEST_CHILD";

/// Child mode of `ipam_concurrent_processes`: attaches 10 containers to
/// network `procs` in the store named by the environment, prints the
/// addresses and exits (its namespace holders die with it, as in a crash).
#[test]
fn child_attach_helper() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let tag = std::env::var("BERTH_NET_TEST_TAG").unwrap();
    let s = NetworkStore::open(&dir).unwrap();
    let holders: Vec<Ns> = (0..10).map(|_| Ns::new()).collect();
    let ips: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = holders
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let s = s.clone();
                let p = ns.path();
                let id = format!("{tag}-{i}");
                sc.spawn(move || {
                    s.attach("procs", &id, p, AttachOptions::default())
                        .unwrap()
                        .ip
                        .to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    println!("\nIPS={}", ips.join(","));
}

#[test]
fn ipam_concurrent_processes() {
    in_test_netns(|| {
        let (d, s) = store();
        s.create(net("procs", Some("10.78.0.0/24"), false)).unwrap();
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..3)
            .map(|k| {
                std::process::Command::new(&exe)
                    .args([
                        "--exact",
                        "child_attach_helper",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(CHILD_ENV, d.path().join("networks"))
                    .env("BERTH_NET_TEST_TAG", format!("p{k}"))
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut ips = Vec::new();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success());
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text
                .lines()
                .find_map(|l| l.split_once("IPS=").map(|(_, r)| r))
                .expect("child printed addresses");
            ips.extend(line.split(',').map(str::to_string));
        }
        let distinct: BTreeSet<_> = ips.iter().collect();
        assert_eq!((ips.len(), distinct.len()), (30, 30), "{ips:?}");
        let net = s.get("procs").unwrap();
        assert_eq!(net.endpoints.len(), 30);
        // The children are gone with their namespaces (a crash): detach still
        // frees every address.
        for id in net.endpoints.keys() {
            s.detach("procs", id).unwrap();
        }
        assert!(s.get("procs").unwrap().endpoints.is_empty());
        s.remove("procs").unwrap();
        assert!(!links()
            .iter()
            .any(|l| l.starts_with("vb") || l.starts_with("berth")));
    });
}

#[test]
fn host_namespace_is_untouched() {
    let before = (links(), nft_tables());
    in_test_netns(|| {
        let (_d, s) = store();
        s.default_bridge().unwrap();
        let a = Ns::new();
        s.attach(
            "bridge",
            "a",
            a.path(),
            AttachOptions {
                ports: vec![parse_port_spec("18081:80").unwrap()],
                ..Default::default()
            },
        )
        .unwrap();
        // Leave everything in place: the namespace dies with the thread.
    });
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!((links(), nft_tables()), before);
    assert!(!sh("ip netns list").contains("berth"));
}
