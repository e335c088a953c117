//! Berth's own nftables table (`ip berth`), driven by `nft -j -f -`.
//!
//! Every rule carries a comment naming what it belongs to:
//! `berth net=<id12>` for a network's rules and
//! `berth net=<id12> ctr=<container id>` for a container's published ports,
//! so rules are removed one by one (by handle) without touching anything else.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::ports::PortMapping;
use crate::subnet::Subnet;

/// Default name of berth's table (family `ip`); a store can use another
/// one (see `Names`).
pub const TABLE: &str = "berth";
const FAMILY: &str = "ip";

fn nft_binary() -> &'static str {
    for p in ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"] {
        if std::path::Path::new(p).exists() {
            return p;
        }
    }
    "nft"
}

/// Runs `nft -j` with `args`, feeding `input` (if any) on stdin; returns stdout.
fn nft(args: &[&str], input: Option<&Value>) -> Result<String> {
    let mut cmd = Command::new(nft_binary());
    cmd.arg("-j").args(args);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        Error::Firewall(format!(
            "cannot run {}: {e} (install nftables)",
            nft_binary()
        ))
    })?;
    if let Some(v) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(v.to_string().as_bytes())
            .map_err(|e| Error::Firewall(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Firewall(format!("waiting for nft: {e}")))?;
    if !out.status.success() {
        return Err(Error::Firewall(format!(
            "nft {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            input.map(|v| format!(" (input: {v})")).unwrap_or_default()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn apply(cmds: Vec<Value>) -> Result<()> {
    if cmds.is_empty() {
        return Ok(());
    }
    nft(&["-f", "-"], Some(&json!({ "nftables": cmds })))?;
    Ok(())
}

fn meta(key: &str, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": {"meta": {"key": key}}, "right": right}})
}

fn payload(proto: &str, field: &str, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": {"payload": {"protocol": proto, "field": field}}, "right": right}})
}

fn prefix(net: &Subnet) -> Value {
    json!({"prefix": {"addr": net.addr().to_string(), "len": net.prefix()}})
}

fn rule(table: &str, chain: &str, comment: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {
        "family": FAMILY, "table": table, "chain": chain, "comment": comment, "expr": expr
    }}})
}

/// Tag of a network's rules.
pub fn net_tag(net_id: &str) -> String {
    format!("berth net={}", &net_id[..12.min(net_id.len())])
}

/// Tag of a container's port rules on a network.
pub fn ctr_tag(net_id: &str, container: &str) -> String {
    format!("{} ctr={container}", net_tag(net_id))
}

/// Creates the table and its base chains (idempotent).
pub fn ensure_table(table: &str) -> Result<()> {
    let chain = |name: &str, ty: &str, hook: &str, prio: i32| {
        json!({"add": {"chain": {
            "family": FAMILY, "table": table, "name": name,
            "type": ty, "hook": hook, "prio": prio, "policy": "accept"
        }}})
    };
    apply(vec![
        json!({"add": {"table": {"family": FAMILY, "name": table}}}),
        chain("forward", "filter", "forward", 0),
        chain("prerouting", "nat", "prerouting", -100),
        chain("output", "nat", "output", -100),
        chain("postrouting", "nat", "postrouting", 100),
    ])
}

/// In the calling thread's network namespace: redirect UDP and TCP DNS
/// queries for `addr`:53 to `addr`:`udp_port` and `addr`:`tcp_port` and make
/// the replies come from port 53 (as Docker's embedded DNS does), in a table
/// of its own that replaces an earlier one.
pub fn dns_redirect(addr: std::net::Ipv4Addr, udp_port: u16, tcp_port: u16) -> Result<()> {
    const TABLE: &str = "berth_dns";
    let chain = |name: &str, hook: &str, prio: i32| {
        json!({"add": {"chain": {
            "family": FAMILY, "table": TABLE, "name": name,
            "type": "nat", "hook": hook, "prio": prio, "policy": "accept"
        }}})
    };
    let addr = addr.to_string();
    let mut commands = vec![
        json!({"add": {"table": {"family": FAMILY, "name": TABLE}}}),
        json!({"delete": {"table": {"family": FAMILY, "name": TABLE}}}),
        json!({"add": {"table": {"family": FAMILY, "name": TABLE}}}),
        chain("output", "output", -100),
        chain("postrouting", "postrouting", 100),
    ];
    for (proto, port) in [("udp", udp_port), ("tcp", tcp_port)] {
        commands.push(rule(
            TABLE,
            "output",
            "dns",
            vec![
                payload("ip", "daddr", "==", json!(addr)),
                payload(proto, "dport", "==", json!(53)),
                json!({"dnat": {"addr": addr, "port": port}}),
            ],
        ));
        commands.push(rule(
            TABLE,
            "postrouting",
            "dns",
            vec![
                payload("ip", "saddr", "==", json!(addr)),
                payload(proto, "sport", "==", json!(port)),
                json!({"snat": {"addr": addr, "port": 53}}),
            ],
        ));
    }
    apply(commands)
}

/// Whether berth's table exists.
pub fn table_exists(table: &str) -> Result<bool> {
    let out = nft(&["list", "tables"], None)?;
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    Ok(v["nftables"].as_array().is_some_and(|a| {
        a.iter()
            .any(|e| e["table"]["name"] == table && e["table"]["family"] == FAMILY)
    }))
}

/// Deletes berth's whole table if it exists.
pub fn delete_table(table: &str) -> Result<()> {
    if table_exists(table)? {
        apply(vec![
            json!({"delete": {"table": {"family": FAMILY, "name": table}}}),
        ])?;
    }
    Ok(())
}

/// Installs a network's rules: no unsolicited traffic into the bridge from
/// elsewhere (isolation), masquerade for traffic leaving the subnet, and for
/// `internal` networks no way out at all.
pub fn add_network_rules(
    table: &str,
    net_id: &str,
    bridge: &str,
    subnet: &Subnet,
    internal: bool,
) -> Result<()> {
    let tag = net_tag(net_id);
    let into_bridge = || {
        vec![
            meta("oifname", "==", json!(bridge)),
            meta("iifname", "!=", json!(bridge)),
        ]
    };
    let mut cmds = Vec::new();
    let mut e = into_bridge();
    e.push(json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}));
    e.push(json!({"accept": null}));
    cmds.push(rule(table, "forward", &tag, e));
    if !internal {
        let mut e = into_bridge();
        e.push(json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}));
        e.push(json!({"accept": null}));
        cmds.push(rule(table, "forward", &tag, e));
    }
    let mut e = into_bridge();
    e.push(json!({"drop": null}));
    cmds.push(rule(table, "forward", &tag, e));
    if internal {
        cmds.push(rule(
            table,
            "forward",
            &tag,
            vec![
                meta("iifname", "==", json!(bridge)),
                meta("oifname", "!=", json!(bridge)),
                json!({"drop": null}),
            ],
        ));
    } else {
        cmds.push(rule(
            table,
            "postrouting",
            &tag,
            vec![
                payload("ip", "saddr", "==", prefix(subnet)),
                meta("oifname", "!=", json!(bridge)),
                json!({"masquerade": null}),
            ],
        ));
    }
    // Published ports reached through 127.0.0.1 (route_localnet) and
    // hairpin traffic from a member of the same bridge: masquerade so
    // replies come back through the host.
    cmds.push(rule(
        table,
        "postrouting",
        &tag,
        vec![
            meta("oifname", "==", json!(bridge)),
            payload(
                "ip",
                "saddr",
                "==",
                json!({"prefix": {"addr": "127.0.0.0", "len": 8}}),
            ),
            json!({"masquerade": null}),
        ],
    ));
    cmds.push(rule(
        table,
        "postrouting",
        &tag,
        vec![
            meta("oifname", "==", json!(bridge)),
            payload("ip", "saddr", "==", prefix(subnet)),
            json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}),
            json!({"masquerade": null}),
        ],
    ));
    apply(cmds)
}

/// Installs DNAT rules for a container's published ports (external traffic
/// in `prerouting`, the host's own traffic including 127.0.0.1 in `output`).
pub fn add_port_rules(
    table: &str,
    net_id: &str,
    container: &str,
    ip: Ipv4Addr,
    ports: &[PortMapping],
) -> Result<()> {
    let tag = ctr_tag(net_id, container);
    let mut cmds = Vec::new();
    for p in ports {
        for chain in ["prerouting", "output"] {
            let mut e = vec![json!({"match": {"op": "==",
                "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}})];
            if !p.host_ip.is_unspecified() {
                e.push(payload("ip", "daddr", "==", json!(p.host_ip.to_string())));
            }
            e.push(payload(
                &p.proto.to_string(),
                "dport",
                "==",
                json!(p.host_port),
            ));
            e.push(json!({"dnat": {"addr": ip.to_string(), "port": p.container_port}}));
            cmds.push(rule(table, chain, &tag, e));
        }
    }
    apply(cmds)
}

/// Deletes every rule whose comment is `tag` or starts with `tag` followed by
/// a space (so a network tag also removes its containers' rules).
pub fn delete_rules(table: &str, tag: &str) -> Result<()> {
    if !table_exists(table)? {
        return Ok(());
    }
    let out = nft(&["list", "table", FAMILY, table], None)?;
    let v: Value = serde_json::from_str(&out)
        .map_err(|e| Error::Firewall(format!("cannot parse nft listing: {e}")))?;
    let spaced = format!("{tag} ");
    let cmds: Vec<Value> = v["nftables"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.get("rule"))
        .filter(|r| {
            r["comment"]
                .as_str()
                .is_some_and(|c| c == tag || c.starts_with(&spaced))
        })
        .map(|r| {
            json!({"delete": {"rule": {"family": FAMILY, "table": table,
                "chain": r["chain"], "handle": r["handle"]}}})
        })
        .collect();
    apply(cmds)
}
