//! The embedded DNS's protocol half: a UDP socket on 127.0.0.11:53 inside a
//! container's network namespace, answers for the names of the container's
//! network peers, and forwarding of every other query to upstream servers.
//! Which names exist, and who serves the sockets, is the engine's business.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use simple_dns::rdata::{RData, A};
use simple_dns::{Packet, PacketFlag, Question, ResourceRecord, CLASS, QCLASS, QTYPE, RCODE, TYPE};

use crate::error::{io_err, Result};

/// Where containers on user-defined networks find the embedded DNS, as in Docker.
pub const DNS_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// TTL of the answers for containers' names (Docker's).
const TTL: u32 = 600;

/// A non-blocking UDP socket for 127.0.0.11:53 in the network namespace at
/// `netns` (`/proc/PID/ns/net`), whose `lo` must be up. As Docker's, it is
/// bound to a free port, and nftables rules in that namespace redirect port
/// 53 to it, so the container's own programs can still listen on port 53.
pub fn bind_in_netns(netns: &Path) -> Result<UdpSocket> {
    let ns = std::fs::File::open(netns).map_err(io_err(format!("open {}", netns.display())))?;
    let socket = std::thread::spawn(move || -> Result<UdpSocket> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| io_err("setns")(e.into()))?;
        let socket =
            UdpSocket::bind((DNS_ADDRESS, 0)).map_err(io_err(format!("bind {DNS_ADDRESS}")))?;
        let port = socket
            .local_addr()
            .map_err(io_err("DNS socket address"))?
            .port();
        // A child forked from this thread runs nft in this namespace.
        crate::firewall::dns_redirect(DNS_ADDRESS, port)?;
        Ok(socket)
    })
    .join()
    .map_err(|_| io_err("the netns thread")(std::io::Error::other("panicked")))??;
    socket
        .set_nonblocking(true)
        .map_err(io_err("set the DNS socket non-blocking"))?;
    Ok(socket)
}

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back.
    Answer(Vec<u8>),
    /// Not a name of ours: ask the upstream servers.
    Forward,
    /// Not a DNS query: drop it.
    Drop,
}

/// Answer `query` if it asks for a name `lookup` knows (lower-case, without
/// the trailing dot): its A records (none for other types, so a resolver
/// asking for AAAA does not go on to search elsewhere).
pub fn answer(query: &[u8], lookup: impl Fn(&str) -> Option<Vec<Ipv4Addr>>) -> Reply {
    let Ok(packet) = Packet::parse(query) else {
        return Reply::Drop;
    };
    if packet.has_flags(PacketFlag::RESPONSE) {
        return Reply::Drop;
    }
    let [question] = packet.questions.as_slice() else {
        return Reply::Forward;
    };
    if !matches!(question.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY) {
        return Reply::Forward;
    }
    let name = question.qname.to_string();
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let Some(ips) = lookup(&name) else {
        return Reply::Forward;
    };
    let mut reply = Packet::new_reply(packet.id());
    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::RECURSION_AVAILABLE);
    if packet.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    reply.questions.push(Question::new(
        question.qname.clone(),
        question.qtype,
        question.qclass,
        false,
    ));
    if matches!(question.qtype, QTYPE::TYPE(TYPE::A) | QTYPE::ANY) {
        for ip in ips {
            reply.answers.push(ResourceRecord::new(
                question.qname.clone(),
                CLASS::IN,
                TTL,
                RData::A(A::from(ip)),
            ));
        }
    }
    match reply.build_bytes_vec() {
        Ok(bytes) => Reply::Answer(bytes),
        Err(_) => Reply::Drop,
    }
}

/// A SERVFAIL for `query` (when no upstream answered).
pub fn server_failure(query: &[u8]) -> Option<Vec<u8>> {
    let packet = Packet::parse(query).ok()?;
    let mut reply = Packet::new_reply(packet.id());
    *reply.rcode_mut() = RCODE::ServerFailure;
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
    reply.questions = packet.questions.clone();
    reply.build_bytes_vec().ok()
}

/// Ask each of `upstreams` in turn (`timeout` each) and return the first
/// reply that answers this query's id, going on to the next server after a
/// SERVFAIL or REFUSED (returned if no server does better); None when none
/// replied.
pub fn forward(query: &[u8], upstreams: &[SocketAddr], timeout: Duration) -> Option<Vec<u8>> {
    if query.len() < 2 {
        return None;
    }
    let mut buf = vec![0u8; 65535];
    let mut fallback = None;
    for upstream in upstreams {
        let local: SocketAddr = if upstream.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(socket) = UdpSocket::bind(local) else {
            continue;
        };
        if socket.set_read_timeout(Some(timeout)).is_err()
            || socket.connect(upstream).is_err()
            || socket.send(query).is_err()
        {
            continue;
        }
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            match socket.recv(&mut buf) {
                Ok(n) if n >= 2 && buf[..2] == query[..2] => {
                    let reply = buf[..n].to_vec();
                    let failed = Packet::parse(&reply)
                        .is_ok_and(|p| matches!(p.rcode(), RCODE::ServerFailure | RCODE::Refused));
                    if !failed {
                        return Some(reply);
                    }
                    fallback = Some(reply);
                    break;
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: TYPE) -> Vec<u8> {
        let mut q = Packet::new_query(0x1234);
        q.set_flags(PacketFlag::RECURSION_DESIRED);
        q.questions.push(Question::new(
            simple_dns::Name::new_unchecked(name),
            qtype.into(),
            CLASS::IN.into(),
            false,
        ));
        q.build_bytes_vec().unwrap()
    }

    fn lookup(name: &str) -> Option<Vec<Ipv4Addr>> {
        (name == "web").then(|| vec![Ipv4Addr::new(10, 1, 2, 3)])
    }

    #[test]
    fn known_names_get_a_records_in_any_case() {
        let Reply::Answer(bytes) = answer(&query("WEB.", TYPE::A), lookup) else {
            panic!("no answer");
        };
        let reply = Packet::parse(&bytes).unwrap();
        assert_eq!(reply.id(), 0x1234);
        assert_eq!(reply.rcode(), RCODE::NoError);
        assert_eq!(reply.answers.len(), 1);
        match &reply.answers[0].rdata {
            RData::A(a) => assert_eq!(Ipv4Addr::from(a.address), Ipv4Addr::new(10, 1, 2, 3)),
            other => panic!("{other:?}"),
        }
        let Reply::Answer(bytes) = answer(&query("web", TYPE::AAAA), lookup) else {
            panic!("no answer");
        };
        let reply = Packet::parse(&bytes).unwrap();
        assert!(reply.answers.is_empty());
        assert_eq!(reply.rcode(), RCODE::NoError);
    }

    #[test]
    fn other_names_are_forwarded_and_junk_dropped() {
        assert_eq!(
            answer(&query("example.org", TYPE::A), lookup),
            Reply::Forward
        );
        assert_eq!(answer(b"\x00\x01junk", lookup), Reply::Drop);
        let fail = server_failure(&query("example.org", TYPE::A)).unwrap();
        assert_eq!(Packet::parse(&fail).unwrap().rcode(), RCODE::ServerFailure);
    }

    #[test]
    fn forward_relays_the_upstream_reply() {
        let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = upstream.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = upstream.recv_from(&mut buf).unwrap();
            let q = Packet::parse(&buf[..n]).unwrap();
            let mut r = Packet::new_reply(q.id());
            r.questions = q.questions.clone();
            upstream
                .send_to(&r.build_bytes_vec().unwrap(), from)
                .unwrap();
        });
        let q = query("example.org", TYPE::A);
        let reply = forward(&q, &[addr], Duration::from_secs(2)).unwrap();
        assert_eq!(Packet::parse(&reply).unwrap().id(), 0x1234);
        server.join().unwrap();
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let none = forward(
            &q,
            &[silent.local_addr().unwrap()],
            Duration::from_millis(100),
        );
        assert!(none.is_none());
    }
}
