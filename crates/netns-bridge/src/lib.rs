//! Container networking for berth: bridge networks, a persistent IPAM, veth
//! pairs into container network namespaces, NAT, isolation and published ports.
//!
//! The entry point is [`NetworkStore`]. It keeps network records and address
//! allocations in one JSON file under a caller-chosen state directory, updated
//! under an exclusive file lock so concurrent `berth` processes never hand one
//! address (or one host port) to two containers. Kernel work is done in the
//! calling thread's network namespace: links, addresses and routes through
//! rtnetlink, firewall rules in berth's own nftables table `ip berth`.
//!
//! IPv4 only for now. See `docs/networking.md` for the design and its limits.

pub mod dns;
mod error;
mod firewall;
mod netlink;
mod ports;
mod subnet;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::{Error, Result};
pub use firewall::TABLE as NFT_TABLE;
pub use ports::{parse_port_spec, PortMapping, Proto};
pub use subnet::Subnet;

use error::io_err;
use netlink::Netlink;

/// Name of the default network.
pub const DEFAULT_NETWORK: &str = "bridge";
/// Bridge device of the default network.
pub const DEFAULT_BRIDGE: &str = "berth0";
/// First subnet of the pool default subnets are taken from (`10.123.0.0/16`,
/// then `10.124.0.0/16`, ... up to `10.254.0.0/16`); Docker's 172.17/16 is
/// never chosen, so both engines coexist.
pub const POOL_START: Ipv4Addr = Ipv4Addr::new(10, 123, 0, 0);

/// What `create` needs to know about a new network.
#[derive(Debug, Clone, Default)]
pub struct NetworkConfig {
    /// Network name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
    pub name: String,
    /// Subnet; `None` takes the first free /16 of the pool.
    pub subnet: Option<Subnet>,
    /// Gateway (the bridge's address); `None` is the subnet's first address.
    pub gateway: Option<Ipv4Addr>,
    /// An internal network has no route to the outside.
    pub internal: bool,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
}

/// A container's membership of a network, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The container's id.
    pub container_id: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC address (`aa:bb:cc:dd:ee:ff`).
    pub mac: String,
    /// Interface name inside the container (`eth0`, `eth1`, ...).
    pub interface: String,
    /// Host end of the veth pair (a port of the bridge).
    pub host_veth: String,
    /// Names the other members resolve this container by.
    pub aliases: Vec<String>,
    /// Published ports, host ports resolved.
    pub ports: Vec<PortMapping>,
    /// The network namespace path given at attach time.
    pub netns: PathBuf,
}

/// A network record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Linux bridge device (`berth0` for the default network, `berth-<id9>`).
    pub bridge: String,
    /// The network's subnet.
    pub subnet: Subnet,
    /// The gateway, the bridge's own address.
    pub gateway: Ipv4Addr,
    /// No route out when true.
    pub internal: bool,
    /// Labels given at creation.
    pub labels: BTreeMap<String, String>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Attached containers by id.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Last address handed out; allocation continues after it so a freed
    /// address is not reused at once.
    #[serde(default)]
    last_ip: Option<Ipv4Addr>,
}

impl Network {
    /// Whether this is a user-defined network (members resolve each other by name).
    pub fn is_user_defined(&self) -> bool {
        self.name != DEFAULT_NETWORK
    }
}

/// Options of one attachment.
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    /// Static address (`--ip`); must be a free host address of the subnet.
    pub ip: Option<Ipv4Addr>,
    /// Static MAC (`--mac-address`); derived from the address when `None`.
    pub mac: Option<String>,
    /// Names other members resolve this container by (container name,
    /// `--network-alias`); the short id is always added.
    pub aliases: Vec<String>,
    /// Ports to publish.
    pub ports: Vec<PortMapping>,
}

/// One `/etc/hosts` line: an address and its names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    /// The address.
    pub ip: Ipv4Addr,
    /// The names, first one canonical.
    pub names: Vec<String>,
}

/// The result of [`NetworkStore::attach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The network's name.
    pub network: String,
    /// The container's address.
    pub ip: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix: u8,
    /// The gateway (bridge address).
    pub gateway: Ipv4Addr,
    /// The container's MAC address.
    pub mac: String,
    /// Interface name inside the container.
    pub interface: String,
    /// Host end of the veth pair.
    pub host_veth: String,
    /// Published ports with random host ports resolved.
    pub ports: Vec<PortMapping>,
    /// `/etc/hosts` entries for the other members (user-defined networks only).
    pub hosts: Vec<HostEntry>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    networks: BTreeMap<String, Network>,
}

/// Host-global names a store uses: the default network's bridge device,
/// the prefix of user-defined networks' bridges and the nftables table.
/// Two stores on one host (a test's engine next to a user's berth) must use
/// different names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Bridge device of the default network (`berth0`).
    pub default_bridge: String,
    /// Prefix of user-defined networks' bridges (`berth-`); the rest of the
    /// 15-character interface name is hex digits of the network id.
    pub bridge_prefix: String,
    /// nftables table (family `ip`) holding the store's rules (`berth`).
    pub nft_table: String,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            default_bridge: DEFAULT_BRIDGE.into(),
            bridge_prefix: "berth-".into(),
            nft_table: firewall::TABLE.into(),
        }
    }
}

impl Names {
    /// Checks the names: interface names of at most 15 characters, a
    /// prefix leaving room for at least 4 hex digits, a table name of
    /// `[a-zA-Z0-9_]`.
    pub fn validate(&self) -> Result<()> {
        let ifname_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 15
                && n.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
        };
        if !ifname_ok(&self.default_bridge) {
            return Err(Error::InvalidName(format!(
                "bridge device {:?} (1-15 characters of [a-zA-Z0-9_.-])",
                self.default_bridge
            )));
        }
        if self.bridge_prefix.len() > 11 || !ifname_ok(&format!("{}0", self.bridge_prefix)) {
            return Err(Error::InvalidName(format!(
                "bridge prefix {:?} (at most 11 characters of [a-zA-Z0-9_.-])",
                self.bridge_prefix
            )));
        }
        if self.nft_table.is_empty()
            || self.nft_table.len() > 64
            || !self
                .nft_table
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            return Err(Error::InvalidName(format!(
                "nftables table {:?} (1-64 characters of [a-zA-Z0-9_])",
                self.nft_table
            )));
        }
        Ok(())
    }

    fn user_bridge(&self, id: &str) -> String {
        let n = 15 - self.bridge_prefix.len();
        format!("{}{}", self.bridge_prefix, &id[..n.min(id.len())])
    }
}

/// Persistent networks and IPAM, plus the kernel work behind them.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    dir: PathBuf,
    names: Names,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sysctl(path: &str, value: &str) -> Result<()> {
    let cur = std::fs::read_to_string(path).unwrap_or_default();
    if cur.trim() == value {
        return Ok(());
    }
    std::fs::write(path, value).map_err(io_err(format!("write {path}")))
}

fn valid_name(name: &str) -> bool {
    let mut b = name.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

/// Parses `aa:bb:cc:dd:ee:ff`; refuses multicast addresses.
fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bad = || Error::InvalidMac(s.to_string());
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 {
        return Err(bad());
    }
    Ok(mac)
}

fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn port_overlap(a: &PortMapping, b: &PortMapping) -> bool {
    a.proto == b.proto
        && a.host_port == b.host_port
        && (a.host_ip == b.host_ip || a.host_ip.is_unspecified() || b.host_ip.is_unspecified())
}

/// Tries to bind the host port; `Ok(port)` if it was free (0 = kernel's pick).
fn try_bind(ip: Ipv4Addr, port: u16, proto: Proto) -> std::io::Result<u16> {
    let addr = SocketAddrV4::new(ip, port);
    match proto {
        Proto::Tcp => TcpListener::bind(addr)
            .and_then(|l| l.local_addr())
            .map(|a| a.port()),
        Proto::Udp => UdpSocket::bind(addr)
            .and_then(|s| s.local_addr())
            .map(|a| a.port()),
    }
}

impl NetworkStore {
    /// Opens (creating if needed) the store under `state_dir`
    /// (e.g. `<root>/networks`).
    pub fn open(state_dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(state_dir, Names::default())
    }

    /// Like [`open`](Self::open) with other host-global names (bridge
    /// devices, nftables table), so several stores can share a host.
    pub fn open_with(state_dir: impl AsRef<Path>, names: Names) -> Result<Self> {
        names.validate()?;
        let dir = state_dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| Error::State {
            path: dir.clone(),
            source,
        })?;
        Ok(NetworkStore { dir, names })
    }

    /// The host-global names this store uses.
    pub fn names(&self) -> &Names {
        &self.names
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("networks.json")
    }

    fn lock(&self, exclusive: bool) -> Result<File> {
        let path = self.dir.join("networks.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::State {
                path: path.clone(),
                source,
            })?;
        if exclusive { f.lock() } else { f.lock_shared() }
            .map_err(|source| Error::State { path, source })?;
        Ok(f)
    }

    fn load(&self) -> Result<State> {
        let path = self.state_path();
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| Error::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(Error::State { path, source }),
        }
    }

    fn save(&self, st: &State) -> Result<()> {
        let path = self.state_path();
        let tmp = self.dir.join("networks.json.tmp");
        let err = |source| Error::State {
            path: path.clone(),
            source,
        };
        let data = serde_json::to_vec_pretty(st).expect("state serialises");
        let mut f = File::create(&tmp).map_err(err)?;
        f.write_all(&data).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Runs `f` on the state under the exclusive lock and saves the result if
    /// `f` succeeded and changed it (a save costs two fsyncs).
    fn update<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let _guard = self.lock(true)?;
        let mut st = self.load()?;
        let before = serde_json::to_vec(&st).expect("state serialises");
        let out = f(&mut st)?;
        if serde_json::to_vec(&st).expect("state serialises") != before {
            self.save(&st)?;
        }
        Ok(out)
    }

    fn read(&self) -> Result<State> {
        let _guard = self.lock(false)?;
        self.load()
    }

    fn find<'a>(st: &'a mut State, name: &str) -> Result<&'a mut Network> {
        if st.networks.contains_key(name) {
            return Ok(st.networks.get_mut(name).expect("present"));
        }
        let ids: Vec<String> = st
            .networks
            .values()
            .filter(|n| name.len() >= 3 && n.id.starts_with(name))
            .map(|n| n.name.clone())
            .collect();
        match ids.as_slice() {
            [one] => Ok(st.networks.get_mut(one).expect("present")),
            _ => Err(Error::NetworkNotFound(name.to_string())),
        }
    }

    /// Creates a network record. Nothing is done in the kernel until the
    /// first attach. Refuses an invalid name, a subnet that overlaps another
    /// network or a route of the host, and a gateway outside the subnet.
    pub fn create(&self, config: NetworkConfig) -> Result<Network> {
        if !valid_name(&config.name) {
            return Err(Error::InvalidName(config.name));
        }
        // Docker's pre-defined networks exist already (`host` and `none` are
        // network modes of their own, not records).
        if matches!(config.name.as_str(), DEFAULT_NETWORK | "host" | "none") {
            return Err(Error::NetworkExists(config.name));
        }
        self.update(|st| self.create_locked(st, config, None))
    }

    fn create_locked(
        &self,
        st: &mut State,
        config: NetworkConfig,
        bridge: Option<&str>,
    ) -> Result<Network> {
        if st.networks.contains_key(&config.name) {
            return Err(Error::NetworkExists(config.name));
        }
        let routes: Vec<Subnet> = Netlink::new()?
            .routes()?
            .into_iter()
            .map(|r| r.dst)
            .filter(|d| d.prefix() > 0)
            .collect();
        let check = |s: &Subnet| -> Result<()> {
            for n in st.networks.values() {
                if n.subnet.overlaps(s) {
                    return Err(Error::SubnetOverlapsNetwork {
                        subnet: s.to_string(),
                        other: n.subnet.to_string(),
                        network: n.name.clone(),
                    });
                }
            }
            if let Some(r) = routes.iter().find(|r| r.overlaps(s)) {
                return Err(Error::SubnetOverlapsHostRoute {
                    subnet: s.to_string(),
                    route: r.to_string(),
                });
            }
            Ok(())
        };
        let subnet = match config.subnet {
            Some(s) => {
                if s.prefix() > 30 {
                    return Err(Error::InvalidSubnet(format!(
                        "{s} (prefix longer than /30)"
                    )));
                }
                check(&s)?;
                s
            }
            None => (123u8..=254)
                .map(|b| Subnet::new(Ipv4Addr::new(10, b, 0, 0), 16).expect("valid"))
                .find(|s| check(s).is_ok())
                .ok_or(Error::PoolExhausted)?,
        };
        let gateway = config.gateway.unwrap_or_else(|| subnet.first_host());
        if !subnet.is_host(gateway) {
            return Err(Error::GatewayOutsideSubnet {
                gateway: gateway.to_string(),
                subnet: subnet.to_string(),
            });
        }
        let id = random_hex(32);
        let net = Network {
            bridge: bridge.map_or_else(|| self.names.user_bridge(&id), str::to_string),
            id,
            name: config.name.clone(),
            subnet,
            gateway,
            internal: config.internal,
            labels: config.labels,
            created: now(),
            endpoints: BTreeMap::new(),
            last_ip: None,
        };
        st.networks.insert(config.name, net.clone());
        Ok(net)
    }

    /// Ensures the default network `bridge` (device `berth0`) exists, taking
    /// the first free subnet of the pool, and returns it.
    pub fn default_bridge(&self) -> Result<Network> {
        self.default_bridge_with(None)
    }

    /// Like [`default_bridge`](Self::default_bridge) with the subnet from
    /// berth's configuration (used only when the network is first created).
    pub fn default_bridge_with(&self, subnet: Option<Subnet>) -> Result<Network> {
        self.update(|st| {
            if let Some(n) = st.networks.get(DEFAULT_NETWORK) {
                return Ok(n.clone());
            }
            let cfg = NetworkConfig {
                name: DEFAULT_NETWORK.into(),
                subnet,
                ..Default::default()
            };
            self.create_locked(st, cfg, Some(&self.names.default_bridge))
        })
    }

    /// The network named `name` (or whose id starts with `name`).
    pub fn get(&self, name: &str) -> Result<Network> {
        let mut st = self.read()?;
        Self::find(&mut st, name).map(|n| n.clone())
    }

    /// Every network, sorted by name.
    pub fn list(&self) -> Result<Vec<Network>> {
        Ok(self.read()?.networks.into_values().collect())
    }

    /// Removes a network: its bridge and its firewall rules, and berth's
    /// nftables table when no network is left. Refused while containers are
    /// attached.
    pub fn remove(&self, name: &str) -> Result<()> {
        self.update(|st| {
            let net = Self::find(st, name)?;
            if !net.endpoints.is_empty() {
                return Err(Error::NetworkInUse {
                    name: net.name.clone(),
                    containers: net.endpoints.keys().cloned().collect(),
                });
            }
            let net = net.clone();
            Netlink::new()?.delete_link_by_name(&net.bridge)?;
            firewall::delete_rules(&self.names.nft_table, &firewall::net_tag(&net.id))?;
            st.networks.remove(&net.name);
            if st.networks.is_empty() {
                firewall::delete_table(&self.names.nft_table)?;
            }
            Ok(())
        })
    }

    /// `/etc/hosts` entries of the other members of `network` as seen by
    /// `container` (empty on the default network, like Docker).
    pub fn hosts_for(&self, network: &str, container: &str) -> Result<Vec<HostEntry>> {
        let mut st = self.read()?;
        Ok(Self::hosts_locked(Self::find(&mut st, network)?, container))
    }

    fn hosts_locked(net: &Network, container: &str) -> Vec<HostEntry> {
        if !net.is_user_defined() {
            return Vec::new();
        }
        net.endpoints
            .values()
            .filter(|e| e.container_id != container)
            .map(|e| {
                let mut names = e.aliases.clone();
                let short = e.container_id[..12.min(e.container_id.len())].to_string();
                if !names.contains(&short) {
                    names.push(short);
                }
                HostEntry { ip: e.ip, names }
            })
            .collect()
    }

    /// Sets up the bridge, its address and rules if the bridge is missing.
    fn ensure_bridge(&self, nl: &mut Netlink, net: &Network) -> Result<u32> {
        if let Some(i) = nl.link_index(&net.bridge)? {
            return Ok(i);
        }
        sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        let idx = nl.create_bridge(&net.bridge)?;
        let setup = (|| -> Result<()> {
            nl.add_address(idx, net.gateway, &net.subnet)?;
            nl.set_up(idx)?;
            sysctl(
                &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", net.bridge),
                "1",
            )?;
            let table = &self.names.nft_table;
            firewall::ensure_table(table)?;
            firewall::delete_rules(table, &firewall::net_tag(&net.id))?;
            firewall::add_network_rules(table, &net.id, &net.bridge, &net.subnet, net.internal)
        })();
        if let Err(e) = setup {
            let _ = nl.delete_link(idx);
            return Err(e);
        }
        Ok(idx)
    }

    fn resolve_ports(st: &State, wanted: &[PortMapping]) -> Result<Vec<PortMapping>> {
        let mut taken: Vec<(PortMapping, String)> = st
            .networks
            .values()
            .flat_map(|n| n.endpoints.values())
            .flat_map(|e| e.ports.iter().map(move |p| (*p, e.container_id.clone())))
            .collect();
        let in_use = |p: &PortMapping, detail: String| Error::PortInUse {
            host_ip: p.host_ip.to_string(),
            port: p.host_port,
            proto: p.proto.to_string(),
            detail,
        };
        let mut out = Vec::new();
        for p in wanted {
            if p.container_port == 0 {
                return Err(Error::InvalidPortSpec {
                    spec: p.to_string(),
                    reason: "container port 0 is out of range 1-65535".into(),
                });
            }
            let mut m = *p;
            if m.host_port == 0 {
                let mut found = None;
                for _ in 0..64 {
                    let Ok(port) = try_bind(m.host_ip, 0, m.proto) else {
                        continue;
                    };
                    let cand = PortMapping {
                        host_port: port,
                        ..m
                    };
                    if !taken.iter().any(|(t, _)| port_overlap(t, &cand)) {
                        found = Some(cand);
                        break;
                    }
                }
                m = found.ok_or_else(|| in_use(&m, ": no free random port".into()))?;
            } else {
                if let Some((_, c)) = taken.iter().find(|(t, _)| port_overlap(t, &m)) {
                    return Err(in_use(&m, format!(" (published by container {c})")));
                }
                if let Err(e) = try_bind(m.host_ip, m.host_port, m.proto) {
                    return Err(in_use(&m, format!(" ({e})")));
                }
            }
            taken.push((m, String::new()));
            out.push(m);
        }
        Ok(out)
    }

    fn allocate(net: &Network, want: Option<Ipv4Addr>) -> Result<Ipv4Addr> {
        let used: BTreeSet<Ipv4Addr> = net.endpoints.values().map(|e| e.ip).collect();
        if let Some(ip) = want {
            if !net.subnet.is_host(ip) || ip == net.gateway {
                return Err(Error::AddressOutsideSubnet {
                    ip: ip.to_string(),
                    subnet: net.subnet.to_string(),
                });
            }
            if used.contains(&ip) {
                return Err(Error::AddressInUse {
                    ip: ip.to_string(),
                    network: net.name.clone(),
                });
            }
            return Ok(ip);
        }
        let base = u32::from(net.subnet.addr());
        let size = 1u64 << (32 - u32::from(net.subnet.prefix()));
        let start = net
            .last_ip
            .filter(|ip| net.subnet.contains(*ip))
            .map_or(0, |ip| u64::from(u32::from(ip) - base));
        for k in 1..=size {
            let off = (start + k) % size;
            let ip = Ipv4Addr::from(base + off as u32);
            if net.subnet.is_host(ip) && ip != net.gateway && !used.contains(&ip) {
                return Ok(ip);
            }
        }
        Err(Error::SubnetFull(net.subnet.to_string()))
    }

    /// Attaches a container's network namespace (`netns`, e.g.
    /// `/proc/PID/ns/net` or a bind-mounted netns file) to `network`:
    /// creates the bridge on first use, a veth pair with the container end
    /// named `ethN` inside the namespace, the address, `lo` and the
    /// interface up, a default route via the gateway (if the namespace has
    /// none yet), and DNAT rules for published ports. All or nothing: on
    /// failure nothing is left behind and nothing is recorded.
    pub fn attach(
        &self,
        network: &str,
        container_id: &str,
        netns: impl AsRef<Path>,
        opts: AttachOptions,
    ) -> Result<Attachment> {
        let netns = netns.as_ref().to_path_buf();
        self.update(|st| {
            let ports = Self::resolve_ports(st, &opts.ports)?;
            let net = Self::find(st, network)?;
            if container_id.is_empty() {
                return Err(Error::NotAttached {
                    container: String::new(),
                    network: net.name.clone(),
                });
            }
            if net.endpoints.contains_key(container_id) {
                return Err(Error::AlreadyAttached {
                    container: container_id.into(),
                    network: net.name.clone(),
                });
            }
            let ip = Self::allocate(net, opts.ip)?;
            let mac = match &opts.mac {
                Some(m) => parse_mac(m)?,
                None => {
                    let o = ip.octets();
                    [0x02, 0x42, o[0], o[1], o[2], o[3]]
                }
            };
            let ns = File::open(&netns).map_err(|source| Error::Netns {
                path: netns.clone(),
                source,
            })?;
            let mut nl = Netlink::new()?;
            let bridge = self.ensure_bridge(&mut nl, net)?;
            let host_veth = format!("vb{}", random_hex(5));
            let mut ns_nl = Netlink::in_netns(&ns)?;
            let names = ns_nl.link_names()?;
            let interface = (0..)
                .map(|i| format!("eth{i}"))
                .find(|n| !names.contains(n))
                .expect("some free name");
            let host_idx = nl.create_veth(&host_veth, bridge, &interface, mac, &ns)?;
            let setup = (|| -> Result<()> {
                nl.set_up(host_idx)?;
                if let Some(lo) = ns_nl.link_index("lo")? {
                    ns_nl.set_up(lo)?;
                }
                let idx = ns_nl
                    .link_index(&interface)?
                    .ok_or_else(|| Error::Netlink {
                        op: format!("find {interface} in {}", netns.display()),
                        source: std::io::Error::from_raw_os_error(libc::ENODEV),
                    })?;
                ns_nl.add_address(idx, ip, &net.subnet)?;
                ns_nl.set_up(idx)?;
                if !ns_nl.routes()?.iter().any(|r| r.dst.prefix() == 0) {
                    ns_nl.add_default_route(idx, net.gateway)?;
                }
                firewall::add_port_rules(&self.names.nft_table, &net.id, container_id, ip, &ports)
            })();
            if let Err(e) = setup {
                let _ = firewall::delete_rules(
                    &self.names.nft_table,
                    &firewall::ctr_tag(&net.id, container_id),
                );
                let _ = nl.delete_link(host_idx);
                return Err(e);
            }
            let mut aliases = opts.aliases.clone();
            aliases.dedup();
            net.endpoints.insert(
                container_id.to_string(),
                Endpoint {
                    container_id: container_id.to_string(),
                    ip,
                    mac: fmt_mac(&mac),
                    interface: interface.clone(),
                    host_veth: host_veth.clone(),
                    aliases,
                    ports: ports.clone(),
                    netns: netns.clone(),
                },
            );
            net.last_ip = Some(ip);
            Ok(Attachment {
                network: net.name.clone(),
                ip,
                prefix: net.subnet.prefix(),
                gateway: net.gateway,
                mac: fmt_mac(&mac),
                interface,
                host_veth,
                ports,
                hosts: Self::hosts_locked(net, container_id),
            })
        })
    }

    /// Detaches a container: deletes its veth pair (and so its address and
    /// route), its DNAT rules, and frees its address and host ports. Works
    /// when the namespace is already gone (crash reconciliation). The
    /// bridge stays until the network is removed, as in Docker.
    pub fn detach(&self, network: &str, container_id: &str) -> Result<()> {
        let host_veth = self.release(network, container_id)?;
        delete_veth(&host_veth)
    }

    /// The bookkeeping half of [`Self::detach`]: removes the container's
    /// DNAT rules and frees its address and host ports, and returns the name
    /// of the host end of its veth pair, which is left for the caller to
    /// delete with [`delete_veth`] once nothing waits on it (the kernel's
    /// deletion waits for an RCU grace period, tens of milliseconds). The
    /// freed address may be handed out again meanwhile: the old pair keeps it
    /// only inside the dying container's namespace.
    pub fn release(&self, network: &str, container_id: &str) -> Result<String> {
        self.update(|st| {
            let net = Self::find(st, network)?;
            let Some(ep) = net.endpoints.get(container_id).cloned() else {
                return Err(Error::NotAttached {
                    container: container_id.into(),
                    network: net.name.clone(),
                });
            };
            // Only published ports have rules of their own (listing the table
            // runs nft twice: tens of milliseconds).
            if !ep.ports.is_empty() {
                firewall::delete_rules(
                    &self.names.nft_table,
                    &firewall::ctr_tag(&net.id, container_id),
                )?;
            }
            net.endpoints.remove(container_id);
            Ok(ep.host_veth)
        })
    }

    /// Every network `container_id` is attached to (for teardown).
    pub fn networks_of(&self, container_id: &str) -> Result<Vec<String>> {
        Ok(self
            .read()?
            .networks
            .into_values()
            .filter(|n| n.endpoints.contains_key(container_id))
            .map(|n| n.name)
            .collect())
    }
}

/// Deletes the host end of a container's veth pair (and with it the peer);
/// a pair that is already gone is fine.
pub fn delete_veth(host_veth: &str) -> Result<()> {
    netlink::Netlink::new()?.delete_link_by_name(host_veth)
}

/// Bring `lo` up in the network namespace at `netns` (e.g. `/proc/PID/ns/net`):
/// what a `--network none` container gets, as Docker gives it.
pub fn loopback_up(netns: &Path) -> Result<()> {
    let ns =
        std::fs::File::open(netns).map_err(error::io_err(format!("open {}", netns.display())))?;
    let mut nl = netlink::Netlink::in_netns(&ns)?;
    if let Some(index) = nl.link_index("lo")? {
        nl.set_up(index)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs() {
        assert!(valid_name("n1") && valid_name("a_b.c-d"));
        assert!(!valid_name("") && !valid_name("-x") && !valid_name("a b"));
        assert_eq!(
            fmt_mac(&parse_mac("02:42:0a:7b:00:02").unwrap()),
            "02:42:0a:7b:00:02"
        );
        assert!(parse_mac("01:00:00:00:00:00").is_err());
        assert!(parse_mac("zz:00:00:00:00:00").is_err());
    }
}
