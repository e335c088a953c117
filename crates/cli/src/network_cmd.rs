//! `berth network create|ls|inspect|rm|prune|connect|disconnect`, with
//! Docker's flags and output.

use std::collections::BTreeMap;
use std::io::Write;

use crate::table::Table;
use anyhow::{bail, Context};
use berth_engine::containers::record::Status;
use berth_engine::containers::Containers;
use berth_engine::spec::NetworkMode;
use berth_netns_bridge::{Network, NetworkConfig, Subnet};
use clap::{Args, Subcommand};

/// `berth network <verb>`.
#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show networks as JSON.
    Inspect(crate::inspect::InspectArgs),
    /// Remove networks (never one in use, nor `bridge`).
    #[command(alias = "remove")]
    Rm {
        /// Network names or ids.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every user-defined network without containers.
    Prune {
        /// Do not prompt (berth never prompts).
        #[arg(short, long)]
        force: bool,
        /// Filter: until=TIME (created before), label=KEY[=VALUE], label!=KEY[=VALUE].
        #[arg(long)]
        filter: Vec<String>,
    },
    /// Connect a running container to a network.
    Connect(ConnectArgs),
    /// Disconnect a container from a network.
    Disconnect {
        /// Accepted for Docker compatibility.
        #[arg(short, long)]
        force: bool,
        /// Network.
        network: String,
        /// Container.
        container: String,
    },
}

/// `network create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Subnet in CIDR form (default: a free /16 from 10.123.0.0/16 upward).
    #[arg(long)]
    subnet: Option<String>,
    /// Gateway (default: the subnet's first address).
    #[arg(long)]
    gateway: Option<String>,
    /// No route to the outside.
    #[arg(long)]
    internal: bool,
    /// Set a label (KEY=VALUE).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Driver (only `bridge`).
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Network name.
    name: String,
}

/// `network ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only ids.
    #[arg(short, long)]
    quiet: bool,
    /// Show full ids.
    #[arg(long)]
    no_trunc: bool,
    /// Filter: driver=, id=, label=KEY[=VALUE], name=, type=custom|builtin,
    /// dangling=true|false.
    #[arg(short, long)]
    filter: Vec<String>,
    /// json, table, or a template like '{{.Name}}\t{{.Driver}}' (fields: ID,
    /// Name, Driver, Scope, Internal, Labels, CreatedAt).
    #[arg(long)]
    format: Option<String>,
}

/// One row of `network ls`.
struct NetworkRow {
    id: String,
    name: String,
    driver: &'static str,
    internal: bool,
    labels: BTreeMap<String, String>,
    created: String,
    builtin: bool,
    containers: usize,
}

impl NetworkRow {
    fn matches(&self, key: &str, value: &str) -> bool {
        match key {
            "driver" => self.driver == value,
            "id" => self.id.starts_with(value),
            "name" => self.name.contains(value),
            "type" => self.builtin == (value == "builtin"),
            // Pre-defined networks are never dangling.
            "dangling" => (!self.builtin && self.containers == 0) == matches!(value, "true" | "1"),
            _ => crate::filter::label_matches(&self.labels, value),
        }
    }

    fn fields(&self, no_trunc: bool) -> Vec<(&'static str, String)> {
        vec![
            ("CreatedAt", self.created.clone()),
            ("Driver", self.driver.to_string()),
            ("ID", self.short_id(no_trunc).to_string()),
            ("Internal", self.internal.to_string()),
            ("Labels", crate::filter::labels_text(&self.labels)),
            ("Name", self.name.clone()),
            ("Scope", "local".to_string()),
        ]
    }

    fn short_id(&self, no_trunc: bool) -> &str {
        if no_trunc {
            &self.id
        } else {
            &self.id[..12]
        }
    }
}

/// `network connect`.
#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Static IPv4 address.
    #[arg(long)]
    ip: Option<String>,
    /// Another name for the container on this network.
    #[arg(long)]
    alias: Vec<String>,
    /// Network.
    network: String,
    /// Container.
    container: String,
}

/// Docker's pre-defined networks besides `bridge`, with their drivers: network
/// modes (`--network host|none`) with no record behind them.
const MODE_NETWORKS: [(&str, &str); 2] = [("host", "host"), ("none", "null")];

/// `network ls`, Docker's order (by name), filters and formats.
fn ls(c: &Containers, a: LsArgs, out: &mut impl Write) -> anyhow::Result<i32> {
    let filters = crate::filter::Filters::parse(
        &a.filter,
        &["driver", "id", "label", "name", "type", "dangling"],
    )?;
    filters.check(
        "type",
        |v| matches!(v, "custom" | "builtin"),
        "custom or builtin",
    )?;
    filters.check_bool("dangling")?;
    c.network("bridge")?;
    let mut rows: Vec<NetworkRow> = c
        .networks()
        .list()?
        .into_iter()
        .map(|n| NetworkRow {
            builtin: !n.is_user_defined(),
            containers: n.endpoints.len(),
            created: humantime::format_rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(n.created),
            )
            .to_string(),
            id: n.id,
            name: n.name,
            driver: "bridge",
            internal: n.internal,
            labels: n.labels,
        })
        .collect();
    for (name, driver) in MODE_NETWORKS {
        rows.push(NetworkRow {
            id: mode_network_id(name),
            name: name.to_string(),
            driver,
            internal: false,
            labels: BTreeMap::new(),
            created: String::new(),
            builtin: true,
            containers: 0,
        });
    }
    let mut kept = Vec::new();
    for r in rows {
        if filters.pass(|k, v| Ok(r.matches(k, v)))? {
            kept.push(r);
        }
    }
    kept.sort_by(|x, y| x.name.cmp(&y.name));
    if a.quiet {
        for r in &kept {
            writeln!(out, "{}", r.short_id(a.no_trunc))?;
        }
        return Ok(0);
    }
    match a.format.as_deref() {
        Some("json") => {
            for r in &kept {
                writeln!(out, "{}", crate::format::json_line(&r.fields(a.no_trunc)))?;
            }
        }
        Some(t) if t != "table" => {
            let names = [
                "CreatedAt",
                "Driver",
                "ID",
                "Internal",
                "Labels",
                "Name",
                "Scope",
            ];
            let mut rows = crate::format::Templated::new(
                t,
                &names,
                &[("ID", "NETWORK ID"), ("Name", "NAME")],
            )?;
            for r in &kept {
                rows.row(out, &r.fields(a.no_trunc))?;
            }
            rows.finish(out)?;
        }
        _ => {
            let mut table = Table::new(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
            for r in &kept {
                table.row(vec![
                    r.short_id(a.no_trunc).to_string(),
                    r.name.clone(),
                    r.driver.to_string(),
                    "local".into(),
                ]);
            }
            table.write(out)?;
        }
    }
    Ok(0)
}

/// A stable id for a mode network (Docker's are random per daemon).
fn mode_network_id(name: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(format!("berth network {name}"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Docker's inspect JSON of the mode network `name` (running containers in
/// that mode as its members).
fn mode_network_json(
    c: &Containers,
    name: &str,
    driver: &str,
) -> anyhow::Result<serde_json::Value> {
    let mut members = serde_json::Map::new();
    for r in c.list()? {
        let member = match r.options.network {
            NetworkMode::Host => name == "host",
            NetworkMode::None => name == "none",
            _ => false,
        };
        if member && r.state.status == Status::Running {
            members.insert(
                r.id.clone(),
                serde_json::json!({"Name": r.name, "EndpointID": "", "MacAddress": "",
                    "IPv4Address": "", "IPv6Address": ""}),
            );
        }
    }
    Ok(serde_json::json!({
        "Name": name,
        "Id": mode_network_id(name),
        "Scope": "local",
        "Driver": driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": []},
        "Internal": false,
        "Attachable": false,
        "Containers": members,
        "Options": {},
        "Labels": {},
    }))
}

fn inspect_json(c: &Containers, n: &Network) -> serde_json::Value {
    let mut members = serde_json::Map::new();
    for (id, ep) in &n.endpoints {
        let name = c.get(id).map(|r| r.name).unwrap_or_default();
        members.insert(
            id.clone(),
            serde_json::json!({
                "Name": name,
                "EndpointID": ep.host_veth,
                "MacAddress": ep.mac,
                "IPv4Address": format!("{}/{}", ep.ip, n.subnet.prefix()),
                "IPv6Address": "",
            }),
        );
    }
    serde_json::json!({
        "Name": n.name,
        "Id": n.id,
        "Created": humantime::format_rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(n.created)).to_string(),
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [{"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()}],
        },
        "Internal": n.internal,
        "Attachable": false,
        "Containers": members,
        "Options": {"com.docker.network.bridge.name": n.bridge},
        "Labels": n.labels,
    })
}

/// Runs a `network` subcommand.
pub fn run(c: &Containers, command: NetworkCommand) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    match command {
        NetworkCommand::Create(a) => {
            if a.driver != "bridge" {
                bail!("invalid driver {:?}: only bridge is supported", a.driver);
            }
            let subnet = a
                .subnet
                .as_deref()
                .map(|s| s.parse::<Subnet>())
                .transpose()?;
            let gateway = a
                .gateway
                .as_deref()
                .map(|g| {
                    g.parse()
                        .with_context(|| format!("invalid gateway {g:?}: not an IPv4 address"))
                })
                .transpose()?;
            let mut labels = BTreeMap::new();
            for l in &a.labels {
                let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                labels.insert(k.to_string(), v.to_string());
            }
            // The default network exists before any user-defined one, so
            // that it keeps its configured subnet.
            c.network("bridge")?;
            let n = c.networks().create(NetworkConfig {
                name: a.name,
                subnet,
                gateway,
                internal: a.internal,
                labels,
            })?;
            writeln!(out, "{}", n.id)?;
        }
        NetworkCommand::Ls(a) => return ls(c, a, &mut out),
        NetworkCommand::Inspect(args) => {
            return crate::inspect::print(&args, |n| {
                match MODE_NETWORKS.iter().find(|(name, _)| *name == n) {
                    Some((name, driver)) => mode_network_json(c, name, driver),
                    None => Ok(inspect_json(c, &c.network(n)?)),
                }
            });
        }
        NetworkCommand::Rm { names } => {
            let mut failed: Option<berth_engine::Error> = None;
            for name in &names {
                match c.network_remove(name) {
                    Ok(_) => writeln!(out, "{name}")?,
                    Err(e) => {
                        if let Some(prev) = failed.replace(e) {
                            eprintln!("berth: {prev}");
                        }
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
        NetworkCommand::Prune { force: _, filter } => {
            let filter = berth_engine::prune::PruneFilter::parse(
                &filter,
                berth_engine::prune::PruneFilter::KEYS,
            )?;
            let removed = c.network_prune(&filter)?;
            if !removed.is_empty() {
                writeln!(out, "Deleted Networks:")?;
                for n in removed {
                    writeln!(out, "{n}")?;
                }
            }
        }
        NetworkCommand::Connect(a) => {
            c.network_connect(&a.network, &a.container, a.ip.as_deref(), &a.alias)?;
        }
        NetworkCommand::Disconnect {
            force: _,
            network,
            container,
        } => {
            c.network_disconnect(&network, &container)?;
        }
    }
    Ok(0)
}
