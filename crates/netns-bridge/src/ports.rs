//! Published ports: `-p [hostip:][hostport:]containerport[/proto]`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Transport protocol of a published port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl FromStr for Proto {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(Error::InvalidPortSpec {
                spec: s.to_string(),
                reason: "protocol must be tcp or udp".into(),
            }),
        }
    }
}

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address the port is published on; `0.0.0.0` means every address
    /// of the host (including 127.0.0.1).
    pub host_ip: Ipv4Addr,
    /// Host port; 0 asks for a random free port, chosen at attach time.
    pub host_port: u16,
    /// Port inside the container (1..=65535).
    pub container_port: u16,
    /// Transport protocol.
    pub proto: Proto,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}->{}/{}",
            self.host_ip, self.host_port, self.container_port, self.proto
        )
    }
}

fn port(spec: &str, s: &str, what: &str, allow_zero: bool) -> Result<u16, Error> {
    let bad = |reason: String| Error::InvalidPortSpec {
        spec: spec.to_string(),
        reason,
    };
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("{what} {s:?} is not a number")));
    }
    let n: u32 = s
        .parse()
        .map_err(|_| bad(format!("{what} {s} is out of range 1-65535")))?;
    if n > 65535 || (n == 0 && !allow_zero) {
        return Err(bad(format!("{what} {n} is out of range 1-65535")));
    }
    Ok(n as u16)
}

/// Parses a Docker `-p` value: `containerport`, `hostport:containerport`,
/// `hostip:hostport:containerport` or `hostip::containerport`, each with an
/// optional `/tcp` or `/udp`. A missing host port means a random one (0).
/// Port ranges are not supported yet.
pub fn parse_port_spec(spec: &str) -> Result<PortMapping, Error> {
    let bad = |reason: &str| Error::InvalidPortSpec {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (
            r,
            p.parse::<Proto>()
                .map_err(|_| bad("protocol must be tcp or udp"))?,
        ),
        None => (spec, Proto::Tcp),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (host_ip, host_port, container) = match parts.as_slice() {
        [c] => (Ipv4Addr::UNSPECIFIED, 0, *c),
        [h, c] => (
            Ipv4Addr::UNSPECIFIED,
            port(spec, h, "host port", false)?,
            *c,
        ),
        [ip, h, c] => {
            let ip: Ipv4Addr = ip.parse().map_err(|_| bad("host address is not IPv4"))?;
            let hp = if h.is_empty() {
                0
            } else {
                port(spec, h, "host port", false)?
            };
            (ip, hp, *c)
        }
        _ => return Err(bad("expected [hostip:][hostport:]containerport[/proto]")),
    };
    if container.contains('-') || parts.iter().any(|p| p.contains('-')) {
        return Err(bad("port ranges are not supported"));
    }
    Ok(PortMapping {
        host_ip,
        host_port,
        container_port: port(spec, container, "container port", false)?,
        proto,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let m = parse_port_spec("8080:80").unwrap();
        assert_eq!(
            (m.host_port, m.container_port, m.proto),
            (8080, 80, Proto::Tcp)
        );
        let m = parse_port_spec("127.0.0.1:53:53/udp").unwrap();
        assert_eq!(m.host_ip, Ipv4Addr::LOCALHOST);
        assert_eq!(m.proto, Proto::Udp);
        let m = parse_port_spec("80").unwrap();
        assert_eq!((m.host_port, m.container_port), (0, 80));
        let m = parse_port_spec("127.0.0.1::80").unwrap();
        assert_eq!(m.host_port, 0);
        for bad in [
            "", "0", "70000:80", "80:70000", "a:80", "80/sctp", "1:2:3:4", "x.y:1:2", "80-81:80",
        ] {
            assert!(parse_port_spec(bad).is_err(), "{bad}");
        }
        let e = parse_port_spec("70000:80").unwrap_err().to_string();
        assert!(e.contains("70000"), "{e}");
    }
}
