//! The embedded DNS's protocol half: UDP and TCP sockets on 127.0.0.11:53
//! inside a container's network namespace, answers for the names of the container's
//! network peers, and forwarding of every other query to upstream servers.
//! Which names exist, and who serves the sockets, is the engine's business.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use simple_dns::rdata::{RData, A};
use simple_dns::{Packet, PacketFlag, Question, ResourceRecord, CLASS, QCLASS, QTYPE, RCODE, TYPE};

use crate::error::{io_err, Result};

/// Where containers on user-defined networks find the embedded DNS, as in Docker.
pub const DNS_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// TTL of the answers for containers' names (Docker's).
const TTL: u32 = 600;

/// The embedded DNS's sockets in one container's network namespace.
#[derive(Debug)]
pub struct Sockets {
    /// Queries over UDP.
    pub udp: UdpSocket,
    /// Connections for queries over TCP (a resolver retries a truncated
    /// answer there).
    pub tcp: TcpListener,
}

/// Non-blocking UDP and TCP sockets for 127.0.0.11:53 in the network
/// namespace at `netns` (`/proc/PID/ns/net`), whose `lo` must be up. As
/// Docker's, they are bound to free ports, and nftables rules in that
/// namespace redirect port 53 to them, so the container's own programs can
/// still listen on port 53.
pub fn bind_in_netns(netns: &Path) -> Result<Sockets> {
    let ns = std::fs::File::open(netns).map_err(io_err(format!("open {}", netns.display())))?;
    let sockets = std::thread::spawn(move || -> Result<Sockets> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| io_err("setns")(e.into()))?;
        let udp =
            UdpSocket::bind((DNS_ADDRESS, 0)).map_err(io_err(format!("bind {DNS_ADDRESS}")))?;
        let tcp = TcpListener::bind((DNS_ADDRESS, 0))
            .map_err(io_err(format!("listen on {DNS_ADDRESS}")))?;
        let port = |a: std::io::Result<SocketAddr>| {
            a.map(|a| a.port()).map_err(io_err("DNS socket address"))
        };
        // A child forked from this thread runs nft in this namespace.
        crate::firewall::dns_redirect(
            DNS_ADDRESS,
            port(udp.local_addr())?,
            port(tcp.local_addr())?,
        )?;
        Ok(Sockets { udp, tcp })
    })
    .join()
    .map_err(|_| io_err("the netns thread")(std::io::Error::other("panicked")))??;
    sockets
        .udp
        .set_nonblocking(true)
        .and_then(|()| sockets.tcp.set_nonblocking(true))
        .map_err(io_err("set the DNS sockets non-blocking"))?;
    Ok(sockets)
}

/// Read one DNS message from a TCP stream (a 2-byte big-endian length, then
/// the message); `None` at a clean end of the stream.
pub fn read_tcp_message(stream: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut message = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut message)?;
    Ok(Some(message))
}

/// Write one DNS message to a TCP stream, length first.
pub fn write_tcp_message(stream: &mut impl Write, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::other("DNS message over 65535 bytes"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed)
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

/// [`forward`] over TCP, for a query that came over TCP: each of `upstreams`
/// in turn gets `timeout` to connect and answer.
pub fn forward_tcp(query: &[u8], upstreams: &[SocketAddr], timeout: Duration) -> Option<Vec<u8>> {
    if query.len() < 2 {
        return None;
    }
    let mut fallback = None;
    for upstream in upstreams {
        let Ok(mut stream) = TcpStream::connect_timeout(upstream, timeout) else {
            continue;
        };
        let deadline = std::time::Instant::now() + timeout;
        if stream.set_write_timeout(Some(timeout)).is_err()
            || write_tcp_message(&mut stream, query).is_err()
        {
            continue;
        }
        // Replies to other ids (none are expected) are skipped, until the deadline.
        let reply = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                break None;
            }
            match read_tcp_message(&mut stream) {
                Ok(Some(m)) if m.len() >= 2 && m[..2] == query[..2] => break Some(m),
                Ok(Some(_)) => continue,
                _ => break None,
            }
        };
        let Some(reply) = reply else {
            continue;
        };
        let failed = Packet::parse(&reply)
            .is_ok_and(|p| matches!(p.rcode(), RCODE::ServerFailure | RCODE::Refused));
        if !failed {
            return Some(reply);
        }
        fallback = Some(reply);
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

    #[test]
    fn forward_tcp_relays_the_upstream_reply_of_the_same_id() {
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = upstream.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = upstream.accept().unwrap();
            let q = read_tcp_message(&mut conn).unwrap().unwrap();
            let q = Packet::parse(&q).unwrap();
            // A stray reply first, then the real one.
            let stray = Packet::new_reply(q.id().wrapping_add(1));
            write_tcp_message(&mut conn, &stray.build_bytes_vec().unwrap()).unwrap();
            let mut r = Packet::new_reply(q.id());
            r.questions = q.questions.clone();
            write_tcp_message(&mut conn, &r.build_bytes_vec().unwrap()).unwrap();
            assert!(read_tcp_message(&mut conn).unwrap().is_none());
        });
        let q = query("example.org", TYPE::A);
        let reply = forward_tcp(&q, &[addr], Duration::from_secs(2)).unwrap();
        let reply = Packet::parse(&reply).unwrap();
        assert_eq!(reply.id(), 0x1234);
        assert_eq!(reply.questions.len(), 1);
        server.join().unwrap();
        // A closed port and a server that never answers give nothing.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let none = forward_tcp(
            &q,
            &[closed_addr, silent.local_addr().unwrap()],
            Duration::from_millis(200),
        );
        assert!(none.is_none());
    }

    #[test]
    fn tcp_messages_are_length_prefixed() {
        let mut out = Vec::new();
        write_tcp_message(&mut out, b"abc").unwrap();
        assert_eq!(out, b"\x00\x03abc");
        let mut input = &out[..];
        assert_eq!(read_tcp_message(&mut input).unwrap().unwrap(), b"abc");
        assert!(read_tcp_message(&mut input).unwrap().is_none());
        let mut cut: &[u8] = b"\x00\x05ab";
        assert!(read_tcp_message(&mut cut).is_err());
        assert!(write_tcp_message(&mut Vec::new(), &vec![0u8; 70000]).is_err());
    }
}
