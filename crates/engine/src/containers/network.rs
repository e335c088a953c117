//! Containers and networks: the engine's config file (host-global names of
//! the network store), checking `--network/--ip/-p` at create, attaching a
//! starting container's network namespace to its networks (the monitor does
//! it between the runtime's `create` and `start`, so the namespace exists
//! and the process has not run yet), the container's `/etc/hosts` and
//! `/etc/resolv.conf`, detaching on exit, removal and reconciliation, and
//! `network connect/disconnect/rm/prune`.

use std::net::Ipv4Addr;
use std::path::Path;

use berth_netns_bridge::{
    parse_port_spec, AttachOptions, Endpoint, Names, Network, NetworkStore, PortMapping, Subnet,
    DEFAULT_NETWORK,
};
use serde::{Deserialize, Serialize};

use super::record::{ContainerRecord, Status};
use super::Containers;
use crate::error::{Error, Result};
use crate::spec::NetworkMode;

/// `<root>/config.json`, all keys optional:
/// `{"bridge": "berth0", "bridge-prefix": "berth-", "nft-table": "berth",
///   "default-subnet": "10.123.0.0/16", "build-cache-max-bytes": 10000000000}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EngineConfig {
    /// Bridge device of the default network.
    pub bridge: Option<String>,
    /// Prefix of user-defined networks' bridge devices (default: `berth-`,
    /// or the `bridge` value followed by `-` when only that is given).
    pub bridge_prefix: Option<String>,
    /// nftables table (family `ip`).
    pub nft_table: Option<String>,
    /// Subnet of the default network, used when it is first created.
    pub default_subnet: Option<String>,
    /// Cap on the layers the build cache references; least recently used
    /// entries are evicted after each build (default 10 GB).
    pub build_cache_max_bytes: Option<u64>,
}

impl EngineConfig {
    /// Reads `<root>/config.json` (absent: defaults).
    pub fn load(root: &Path) -> Result<EngineConfig> {
        let path = root.join("config.json");
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EngineConfig::default()),
            Err(e) => Err(Error::io(format!("read {}", path.display()))(e)),
        }
    }

    /// The network store's host-global names.
    pub fn names(&self) -> Names {
        let mut n = Names::default();
        if let Some(b) = &self.bridge {
            n.default_bridge = b.clone();
            n.bridge_prefix = format!("{}-", &b[..b.len().min(10)]);
        }
        if let Some(p) = &self.bridge_prefix {
            n.bridge_prefix = p.clone();
        }
        if let Some(t) = &self.nft_table {
            n.nft_table = t.clone();
        }
        n
    }

    /// The configured default subnet, parsed.
    pub fn default_subnet(&self) -> Result<Option<Subnet>> {
        self.default_subnet
            .as_deref()
            .map(|s| s.parse::<Subnet>().map_err(Error::from))
            .transpose()
    }
}

/// A network a running container was connected to with `network connect`
/// (re-attached when the container starts again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectedNetwork {
    /// Network name.
    pub name: String,
    /// `--ip`.
    pub ip: Option<Ipv4Addr>,
    /// `--alias`.
    pub aliases: Vec<String>,
}

pub(super) const BASE_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// The `nameserver` entries of a resolv.conf, in order.
pub(super) fn nameservers(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next().map(str::to_string))
                .flatten()
        })
        .collect()
}

/// `/etc/hosts` lines of `--add-host`; `host-gateway` is `gateway` (the
/// container's bridge gateway), and left out where there is none.
pub fn extra_hosts_lines(opts: &crate::spec::RunOptions, gateway: Option<Ipv4Addr>) -> String {
    let mut out = String::new();
    for spec in &opts.extra_hosts {
        let Ok((host, ip)) = crate::spec::parse_extra_host(spec) else {
            continue;
        };
        let ip = if ip == crate::spec::HOST_GATEWAY {
            match gateway {
                Some(g) => g.to_string(),
                None => continue,
            }
        } else {
            ip
        };
        out.push_str(&format!("{ip}\t{host}\n"));
    }
    out
}

/// `base` (a resolv.conf) with `--dns` nameservers, `--dns-search` domains
/// (`.`: none) and `--dns-option` options replacing its own, as Docker's.
pub fn with_dns_flags(base: &str, opts: &crate::spec::RunOptions) -> String {
    let (dns, search, options) = (&opts.dns, &opts.dns_search, &opts.dns_options);
    if dns.is_empty() && search.is_empty() && options.is_empty() {
        return base.to_string();
    }
    let mut out = String::new();
    for line in base.lines() {
        let replaced = match line.split_whitespace().next() {
            Some("nameserver") => !dns.is_empty(),
            Some("search" | "domain") => !search.is_empty(),
            Some("options") => !options.is_empty(),
            _ => false,
        };
        if !replaced {
            out.push_str(line);
            out.push('\n');
        }
    }
    let search: Vec<&String> = search.iter().filter(|s| s.as_str() != ".").collect();
    if !search.is_empty() {
        out.push_str(&format!(
            "search {}\n",
            search
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    for d in dns {
        out.push_str(&format!("nameserver {d}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

fn is_loopback(ns: &str) -> bool {
    ns.parse::<std::net::IpAddr>()
        .map(|a| a.is_loopback())
        .unwrap_or(false)
}

/// The resolv.conf a container (or a build's RUN step) gets: the host's as it is
/// on the host's network, else through [`container_resolv_conf`].
pub fn resolv_conf(host_network: bool) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if host_network {
        return host;
    }
    container_resolv_conf(
        &host,
        std::fs::read_to_string("/run/systemd/resolve/resolv.conf")
            .ok()
            .as_deref(),
    )
}

/// The container's resolv.conf from the host's: loopback resolvers (such
/// as systemd-resolved's 127.0.0.53, unreachable from the container) are
/// replaced by the upstream servers of `/run/systemd/resolve/resolv.conf`
/// when that exists, otherwise dropped; no public resolver is ever added.
pub fn container_resolv_conf(host: &str, upstream: Option<&str>) -> String {
    let servers = nameservers(host);
    if !servers.iter().any(|s| is_loopback(s)) {
        return host.to_string();
    }
    let mut keep: Vec<String> = servers.into_iter().filter(|s| !is_loopback(s)).collect();
    if let Some(up) = upstream {
        let up: Vec<String> = nameservers(up)
            .into_iter()
            .filter(|s| !is_loopback(s))
            .collect();
        if !up.is_empty() {
            keep = up;
        }
    }
    let mut out = String::new();
    let mut written = false;
    for l in host.lines() {
        if l.split_whitespace().next() == Some("nameserver") {
            if !written {
                for s in &keep {
                    out.push_str(&format!("nameserver {s}\n"));
                }
                written = true;
            }
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The network a container attaches to at start, if any.
pub fn primary_network(mode: &NetworkMode) -> Option<&str> {
    match mode {
        NetworkMode::Bridge(n) => Some(n),
        _ => None,
    }
}

impl Containers {
    /// The network store.
    pub fn networks(&self) -> &NetworkStore {
        &self.networks
    }

    /// A network by name, creating the default `bridge` record on first use.
    pub fn network(&self, name: &str) -> Result<Network> {
        if name == DEFAULT_NETWORK {
            return Ok(self
                .networks
                .default_bridge_with(self.config.default_subnet()?)?);
        }
        Ok(self.networks.get(name)?)
    }

    /// Checks a new container's network options (before anything is
    /// created) and returns its `-p` list with `-P` expanded.
    pub(super) fn check_network_options(
        &self,
        options: &crate::spec::RunOptions,
        publish_all: bool,
        image: &oci_spec::image::ImageConfiguration,
    ) -> Result<Vec<String>> {
        let mut publish = options.publish.clone();
        if publish_all {
            let mut exposed = image
                .config()
                .as_ref()
                .and_then(|c| c.exposed_ports().clone())
                .unwrap_or_default();
            exposed.extend(options.expose.iter().cloned());
            for p in exposed {
                let spec = if p.contains('/') {
                    p
                } else {
                    format!("{p}/tcp")
                };
                // A port both the image and --expose name is published once.
                if !publish.contains(&spec) {
                    publish.push(spec);
                }
            }
        }
        if let NetworkMode::Join(target) = &options.network {
            if !target.starts_with('/') {
                self.get(target)?;
            }
        }
        let Some(name) = primary_network(&options.network) else {
            if !publish.is_empty() {
                return Err(Error::Invalid(
                    "conflicting options: port publishing and the container's network mode".into(),
                ));
            }
            if options.ip.is_some()
                || options.mac_address.is_some()
                || !options.network_aliases.is_empty()
            {
                return Err(Error::Invalid(
                    "--ip, --mac-address and --network-alias need a bridge network".into(),
                ));
            }
            return Ok(publish);
        };
        if matches!(name, "none" | "host") || name.is_empty() {
            return Err(Error::Invalid(format!("invalid network name {name:?}")));
        }
        let net = self.network(name)?;
        for p in &publish {
            parse_port_spec(p)?;
        }
        if let Some(ip) = &options.ip {
            let addr: Ipv4Addr = ip
                .parse()
                .map_err(|_| Error::Invalid(format!("invalid --ip {ip:?}: not an IPv4 address")))?;
            if !net.subnet.is_host(addr) || addr == net.gateway {
                return Err(Error::Invalid(format!(
                    "invalid --ip {ip}: not a usable address of network {} (subnet {}, gateway {})",
                    net.name, net.subnet, net.gateway
                )));
            }
        }
        if let Some(mac) = &options.mac_address {
            let parts: Vec<&str> = mac.split(':').collect();
            let ok = parts.len() == 6
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok());
            if !ok {
                return Err(Error::Invalid(format!("invalid --mac-address {mac:?}")));
            }
        }
        Ok(publish)
    }

    /// Every network endpoint of a container, with its network.
    pub fn endpoints_of(&self, id: &str) -> Vec<(Network, Endpoint)> {
        self.networks
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| n.endpoints.get(id).cloned().map(|e| (n, e)))
            .collect()
    }

    /// Published ports of a container (`ps`, `port`).
    pub fn ports_of(&self, id: &str) -> Vec<PortMapping> {
        self.endpoints_of(id)
            .into_iter()
            .flat_map(|(_, e)| e.ports)
            .collect()
    }

    /// Attaches a starting container (init `pid`, created but not started)
    /// to its network and to the networks it was connected to; writes its
    /// /etc/hosts and its peers'. All or nothing.
    pub(super) fn attach_networks(&self, record: &ContainerRecord, pid: i32) -> Result<()> {
        let Some(primary) = primary_network(&record.options.network) else {
            if record.options.network == NetworkMode::None {
                // Only `lo`, but up, as Docker's none mode.
                berth_netns_bridge::loopback_up(Path::new(&format!("/proc/{pid}/ns/net")))?;
            }
            return Ok(());
        };
        let netns = format!("/proc/{pid}/ns/net");
        let result = (|| -> Result<()> {
            self.network(primary)?;
            let mut ports = Vec::new();
            for p in &record.options.publish {
                ports.push(parse_port_spec(p)?);
            }
            let ip = record
                .options
                .ip
                .as_deref()
                .map(|s| {
                    s.parse::<Ipv4Addr>()
                        .map_err(|_| Error::Invalid(format!("invalid --ip {s:?}")))
                })
                .transpose()?;
            let mut aliases = vec![record.name.clone()];
            aliases.extend(record.options.network_aliases.iter().cloned());
            self.networks.attach(
                primary,
                &record.id,
                &netns,
                AttachOptions {
                    ip,
                    mac: record.options.mac_address.clone(),
                    aliases,
                    ports,
                },
            )?;
            for c in &record.connected {
                if c.name == primary {
                    continue;
                }
                let mut aliases = vec![record.name.clone()];
                aliases.extend(c.aliases.iter().cloned());
                self.networks.attach(
                    &c.name,
                    &record.id,
                    &netns,
                    AttachOptions {
                        ip: c.ip,
                        aliases,
                        ..Default::default()
                    },
                )?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.detach_networks(&record.id);
            return Err(e);
        }
        self.refresh_hosts(&record.id);
        if super::dns::uses_embedded_dns(record) {
            self.use_embedded_dns(record, pid, &format!("berth monitor {}", record.id));
        }
        Ok(())
    }

    /// Registers the run `pid` of `record` with the embedded DNS and points
    /// its resolv.conf there; if the registration fails, at the upstream
    /// servers instead, with a warning that starts with `who`.
    fn use_embedded_dns(&self, record: &ContainerRecord, pid: i32, who: &str) {
        let path = self.paths(&record.id).dir.join("resolv.conf");
        let plain = self.plain_resolv_conf(record);
        let content = match self.register_dns(record, pid) {
            Ok(()) => super::dns::embedded_resolv_conf(&plain),
            Err(e) => {
                // Names still resolve through /etc/hosts; DNS goes upstream.
                eprintln!("{who}: {e}; resolv.conf falls back to the upstream servers");
                plain
            }
        };
        // In place: the file is bind-mounted (an earlier run may have fallen back).
        if std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
            let _ = std::fs::write(&path, content);
        }
    }

    /// Detaches a container from every network (frees its addresses, veths
    /// and port rules) and rewrites its former peers' /etc/hosts. Errors
    /// are ignored: used on exit, removal and reconciliation.
    pub(super) fn detach_networks(&self, id: &str) {
        delete_veths(&self.release_networks(id));
    }

    /// [`Containers::detach_networks`] but for the veth pairs, whose host
    /// ends it returns: the caller deletes them with [`delete_veths`] when
    /// nothing waits for it (the monitor, after it has reported the exit).
    pub(super) fn release_networks(&self, id: &str) -> Vec<String> {
        let nets = self.networks.networks_of(id).unwrap_or_default();
        let veths = nets
            .iter()
            .filter_map(|n| self.networks.release(n, id).ok())
            .collect();
        self.refresh_peers(&nets, id);
        veths
    }

    fn refresh_peers(&self, nets: &[String], except: &str) {
        let mut peers = std::collections::BTreeSet::new();
        for n in nets {
            if let Ok(net) = self.networks.get(n) {
                if net.is_user_defined() {
                    peers.extend(net.endpoints.keys().filter(|k| *k != except).cloned());
                }
            }
        }
        for p in peers {
            self.write_hosts(&p);
        }
    }

    /// Rewrites a container's and its peers' /etc/hosts.
    fn refresh_hosts(&self, id: &str) {
        self.write_hosts(id);
        let nets = self.networks.networks_of(id).unwrap_or_default();
        self.refresh_peers(&nets, id);
    }

    /// The /etc/hosts of a container on bridge networks: localhost, its own
    /// addresses with its hostname, name and aliases, and (user-defined
    /// networks) the other members. Written in place: the file is
    /// bind-mounted into the running container.
    pub(super) fn hosts_content(&self, record: &ContainerRecord) -> String {
        let hostname = record
            .options
            .hostname
            .clone()
            .unwrap_or_else(|| record.id[..12].to_string());
        let mut out = BASE_HOSTS.to_string();
        let endpoints = self.endpoints_of(&record.id);
        for (net, ep) in &endpoints {
            let mut names = vec![hostname.clone()];
            if net.is_user_defined() {
                for a in &ep.aliases {
                    if !names.contains(a) {
                        names.push(a.clone());
                    }
                }
            }
            out.push_str(&format!("{}\t{}\n", ep.ip, names.join(" ")));
        }
        let gateway = endpoints.first().map(|(net, _)| net.gateway);
        out.push_str(&extra_hosts_lines(&record.options, gateway));
        for (net, _) in &endpoints {
            for h in self
                .networks
                .hosts_for(&net.name, &record.id)
                .unwrap_or_default()
            {
                out.push_str(&format!("{}\t{}\n", h.ip, h.names.join(" ")));
            }
        }
        out
    }

    fn write_hosts(&self, id: &str) {
        let Ok(record) = self.store.load(id) else {
            return;
        };
        if primary_network(&record.options.network).is_none() {
            return;
        }
        let path = self.paths(id).dir.join("hosts");
        if path.exists() {
            let _ = std::fs::write(&path, self.hosts_content(&record));
        }
    }

    fn running_pid(&self, name_or_id: &str) -> Result<ContainerRecord> {
        let record = self.get(name_or_id)?;
        if record.state.status != Status::Running || record.state.pid == 0 {
            return Err(Error::Conflict(format!(
                "container {} is not running",
                record.name
            )));
        }
        if primary_network(&record.options.network).is_none() {
            return Err(Error::Invalid(format!(
                "container {} has no bridge network namespace of its own (--network none, host or container:...)",
                record.name
            )));
        }
        Ok(record)
    }

    /// `network connect [--ip] [--alias] NET CONTAINER` (running containers).
    pub fn network_connect(
        &self,
        network: &str,
        container: &str,
        ip: Option<&str>,
        aliases: &[String],
    ) -> Result<()> {
        let net = self.network(network)?;
        let record = self.running_pid(container)?;
        let ip = ip
            .map(|s| {
                s.parse::<Ipv4Addr>()
                    .map_err(|_| Error::Invalid(format!("invalid --ip {s:?}")))
            })
            .transpose()?;
        let mut all = vec![record.name.clone()];
        all.extend(aliases.iter().cloned());
        self.networks.attach(
            &net.name,
            &record.id,
            format!("/proc/{}/ns/net", record.state.pid),
            AttachOptions {
                ip,
                aliases: all,
                ..Default::default()
            },
        )?;
        let name = net.name.clone();
        let updated = self.update(&record.id, |r| {
            r.connected.retain(|c| c.name != name);
            r.connected.push(ConnectedNetwork {
                name: name.clone(),
                ip,
                aliases: aliases.to_vec(),
            });
        })?;
        self.refresh_hosts(&record.id);
        // On a user-defined network now: the embedded DNS serves it (as
        // Docker's); registered again if it did already, as whether it may
        // ask outside (all its networks internal) can have changed.
        if net.is_user_defined() && super::dns::uses_embedded_dns(&updated) {
            self.use_embedded_dns(&updated, record.state.pid, "berth");
        }
        Ok(())
    }

    /// `network disconnect NET CONTAINER`.
    pub fn network_disconnect(&self, network: &str, container: &str) -> Result<()> {
        let net = self.networks.get(network)?;
        let record = self.get(container)?;
        self.networks.detach(&net.name, &record.id)?;
        self.update(&record.id, |r| r.connected.retain(|c| c.name != net.name))?;
        self.write_hosts(&record.id);
        self.refresh_peers(std::slice::from_ref(&net.name), &record.id);
        Ok(())
    }

    /// `network rm`: refused for the pre-defined networks (`bridge`, `host`,
    /// `none`) and while containers are attached.
    pub fn network_remove(&self, name: &str) -> Result<String> {
        if matches!(name, "host" | "none") {
            return Err(Error::Invalid(format!(
                "{name} is a pre-defined network and cannot be removed"
            )));
        }
        let net = self.networks.get(name)?;
        if !net.is_user_defined() {
            return Err(Error::Invalid(format!(
                "{} is a pre-defined network and cannot be removed",
                net.name
            )));
        }
        self.reconcile_networks();
        let net = self.networks.get(&net.name)?;
        if !net.endpoints.is_empty() {
            let names: Vec<String> = net
                .endpoints
                .keys()
                .map(|id| self.store.load(id).map(|r| r.name).unwrap_or(id.clone()))
                .collect();
            return Err(Error::Conflict(format!(
                "network {} has active endpoints: {}",
                net.name,
                names.join(", ")
            )));
        }
        self.networks.remove(&net.name)?;
        Ok(net.name)
    }

    /// Removes every user-defined network without containers; returns their names.
    pub fn network_prune(&self, filter: &crate::prune::PruneFilter) -> Result<Vec<String>> {
        self.reconcile_networks();
        let mut out = Vec::new();
        for n in self.networks.list()? {
            let created = humantime::format_rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(n.created),
            )
            .to_string();
            if n.is_user_defined()
                && n.endpoints.is_empty()
                && filter.allows(Some(&created), &n.labels)
                && self.networks.remove(&n.name).is_ok()
            {
                out.push(n.name);
            }
        }
        Ok(out)
    }

    /// Detaches endpoints whose container record is gone (a crash in the
    /// middle of `rm`); `get` already detaches containers whose monitor
    /// died, and a monitor detaches its container when it exits.
    pub fn reconcile_networks(&self) {
        for n in self.networks.list().unwrap_or_default() {
            for id in n.endpoints.keys() {
                if let Err(Error::NoSuchContainer(_)) = self.get(id) {
                    let _ = self.networks.detach(&n.name, id);
                }
            }
        }
    }
}

/// Delete the host ends of released veth pairs (see
/// [`Containers::release_networks`]); a pair already gone is fine, errors are ignored.
pub(super) fn delete_veths(veths: &[String]) {
    for v in veths {
        let _ = berth_netns_bridge::delete_veth(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_flags_replace_their_own_lines_only() {
        let base = "# host\nnameserver 10.0.0.1\nsearch a.example\noptions rotate\n";
        let mut opts = crate::spec::RunOptions::default();
        assert_eq!(with_dns_flags(base, &opts), base);
        opts.dns = vec!["10.9.9.9".into()];
        assert_eq!(
            with_dns_flags(base, &opts),
            "# host\nsearch a.example\noptions rotate\nnameserver 10.9.9.9\n"
        );
        opts.dns_search = vec![".".into()];
        opts.dns_options = vec!["ndots:1".into()];
        assert_eq!(
            with_dns_flags(base, &opts),
            "# host\nnameserver 10.9.9.9\noptions ndots:1\n"
        );
    }

    #[test]
    fn extra_hosts_resolve_host_gateway_where_there_is_one() {
        let opts = crate::spec::RunOptions {
            extra_hosts: vec!["db:10.1.2.3".into(), "gw:host-gateway".into()],
            ..Default::default()
        };
        assert_eq!(extra_hosts_lines(&opts, None), "10.1.2.3\tdb\n");
        assert_eq!(
            extra_hosts_lines(&opts, Some(Ipv4Addr::new(10, 88, 0, 1))),
            "10.1.2.3\tdb\n10.88.0.1\tgw\n"
        );
    }

    #[test]
    fn resolv_conf_replaces_loopback_resolvers() {
        let host = "nameserver 127.0.0.53\noptions edns0\nsearch lan\n";
        let up = "nameserver 192.0.2.53\nnameserver 127.0.0.1\n";
        assert_eq!(
            container_resolv_conf(host, Some(up)),
            "nameserver 192.0.2.53\noptions edns0\nsearch lan\n"
        );
        assert_eq!(
            container_resolv_conf(host, None),
            "options edns0\nsearch lan\n"
        );
        let plain = "nameserver 192.0.2.1\n";
        assert_eq!(container_resolv_conf(plain, Some(up)), plain);
        let mixed = "nameserver 127.0.0.1\nnameserver 198.51.100.1\n";
        assert_eq!(
            container_resolv_conf(mixed, None),
            "nameserver 198.51.100.1\n"
        );
    }

    #[test]
    fn config_names() {
        let c: EngineConfig =
            serde_json::from_str(r#"{"bridge":"bt1","nft-table":"berth_t1"}"#).unwrap();
        let n = c.names();
        assert_eq!(n.default_bridge, "bt1");
        assert_eq!(n.bridge_prefix, "bt1-");
        assert_eq!(n.nft_table, "berth_t1");
        assert!(serde_json::from_str::<EngineConfig>(r#"{"brdge":"x"}"#).is_err());
    }
}
