//! Errors of the networking crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while managing networks and attachments.
///
/// Each variant names the value that was refused so a caller can print it
/// as one clear line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A subnet string is not of the form `a.b.c.d/len`.
    #[error("invalid subnet {0:?}: expected an IPv4 CIDR such as 10.124.0.0/16")]
    InvalidSubnet(String),
    /// An address string is not a valid IPv4 address.
    #[error("invalid IPv4 address {0:?}")]
    InvalidAddress(String),
    /// A MAC address string is not of the form `aa:bb:cc:dd:ee:ff`.
    #[error("invalid MAC address {0:?}")]
    InvalidMac(String),
    /// A network name is empty or contains characters Docker does not allow.
    #[error("invalid network name {0:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*")]
    InvalidName(String),
    /// The requested subnet overlaps an existing berth network.
    #[error("subnet {subnet} overlaps subnet {other} of network {network:?}")]
    SubnetOverlapsNetwork {
        /// The refused subnet.
        subnet: String,
        /// The existing network's subnet.
        other: String,
        /// The existing network's name.
        network: String,
    },
    /// The requested subnet overlaps a route of the host.
    #[error("subnet {subnet} overlaps host route {route}")]
    SubnetOverlapsHostRoute {
        /// The refused subnet.
        subnet: String,
        /// The host route it collides with.
        route: String,
    },
    /// No free subnet is left in berth's default pool.
    #[error("no free subnet left in the default pool (10.123.0.0/16 .. 10.254.0.0/16)")]
    PoolExhausted,
    /// The gateway is not a usable host address of the subnet.
    #[error("gateway {gateway} is not a usable address of subnet {subnet}")]
    GatewayOutsideSubnet {
        /// The refused gateway.
        gateway: String,
        /// The network's subnet.
        subnet: String,
    },
    /// A network with this name already exists.
    #[error("network with name {0:?} already exists")]
    NetworkExists(String),
    /// No network has this name.
    #[error("network {0:?} not found")]
    NetworkNotFound(String),
    /// The network still has attached containers.
    #[error("network {name:?} has active endpoints: {containers:?}")]
    NetworkInUse {
        /// The network's name.
        name: String,
        /// Containers still attached.
        containers: Vec<String>,
    },
    /// The container is already attached to the network.
    #[error("container {container:?} is already attached to network {network:?}")]
    AlreadyAttached {
        /// The container id.
        container: String,
        /// The network's name.
        network: String,
    },
    /// The container is not attached to the network.
    #[error("container {container:?} is not attached to network {network:?}")]
    NotAttached {
        /// The container id.
        container: String,
        /// The network's name.
        network: String,
    },
    /// A static address lies outside the network's subnet (or is its network,
    /// broadcast or gateway address).
    #[error("address {ip} is not a usable address of subnet {subnet}")]
    AddressOutsideSubnet {
        /// The refused address.
        ip: String,
        /// The network's subnet.
        subnet: String,
    },
    /// A static address is already held by another container.
    #[error("address {ip} is already in use on network {network:?}")]
    AddressInUse {
        /// The refused address.
        ip: String,
        /// The network's name.
        network: String,
    },
    /// Every address of the subnet is taken.
    #[error("no free address left in subnet {0}")]
    SubnetFull(String),
    /// A port specification could not be parsed.
    #[error("invalid port specification {spec:?}: {reason}")]
    InvalidPortSpec {
        /// The refused specification.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host port is already published or bound by another process.
    #[error("host port {host_ip}:{port}/{proto} is already in use{detail}")]
    PortInUse {
        /// Host address of the mapping.
        host_ip: String,
        /// The refused host port.
        port: u16,
        /// `tcp` or `udp`.
        proto: String,
        /// Who holds it, when known.
        detail: String,
    },
    /// A netlink request failed.
    #[error("netlink {op}: {source}")]
    Netlink {
        /// What was being done.
        op: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Running `nft` failed.
    #[error("nftables: {0}")]
    Firewall(String),
    /// The network namespace path could not be opened.
    #[error("network namespace {path}: {source}")]
    Netns {
        /// The path given by the caller.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Reading or writing berth's network state failed.
    #[error("network state {path}: {source}")]
    State {
        /// The file involved.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Berth's network state file could not be parsed.
    #[error("network state {path} is corrupt: {source}")]
    Corrupt {
        /// The file involved.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Another I/O error (sysctl, sockets).
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(op: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let op = op.into();
    move |source| Error::Io { op, source }
}
