//! `berth volume create|ls|inspect|rm|prune`, with Docker's flags and output.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use crate::table::Table;
use anyhow::bail;
use berth_engine::containers::Containers;
use berth_engine::volumes::{Error as VolumeError, Volume};
use clap::{Args, Subcommand};

use crate::format::{json_line, Templated};
use crate::system_cmd::human_size;

/// `berth volume <verb>`.
#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume.
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show volumes as JSON.
    Inspect(crate::inspect::InspectArgs),
    /// Remove volumes (never one a container uses).
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused anonymous volumes (with -a: every unused volume).
    Prune(PruneArgs),
}

/// `volume create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Volume name (default: a random 64-hex name).
    name: Option<String>,
    /// Volume name (as the positional argument).
    #[arg(long = "name", conflicts_with = "name")]
    name_flag: Option<String>,
    /// Driver (only `local`).
    #[arg(short, long, default_value = "local")]
    driver: String,
    /// Set a label (KEY=VALUE).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Driver option: type=, device=, o= (e.g. type=tmpfs).
    #[arg(short, long = "opt")]
    opts: Vec<String>,
}

/// `volume ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only names.
    #[arg(short, long)]
    quiet: bool,
    /// Filter: dangling=true|false, name=, label=KEY[=VALUE], driver=.
    #[arg(short, long)]
    filter: Vec<String>,
    /// json, table, or a template like '{{.Name}}'.
    #[arg(long)]
    format: Option<String>,
}

/// `volume rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Do not fail on volumes that do not exist (in-use volumes are still kept).
    #[arg(short, long)]
    force: bool,
    /// Volume names.
    #[arg(required = true)]
    names: Vec<String>,
}

/// `volume prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Every unused volume, not only anonymous ones.
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
    /// Filter: label=KEY[=VALUE], label!=KEY[=VALUE].
    #[arg(long)]
    filter: Vec<String>,
}

fn key_values(what: &str, items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for i in items {
        let (k, v) = i.split_once('=').unwrap_or((i.as_str(), ""));
        if k.is_empty() {
            bail!("invalid {what} {i:?}: use KEY=VALUE");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Run a `volume` subcommand.
pub fn run(containers: &Containers, command: VolumeCommand) -> anyhow::Result<i32> {
    match command {
        VolumeCommand::Create(a) => create(containers, a),
        VolumeCommand::Ls(a) => ls(containers, a),
        VolumeCommand::Inspect(a) => inspect(containers, a),
        VolumeCommand::Rm(a) => rm(containers, a),
        VolumeCommand::Prune(a) => prune(containers, a),
    }
}

fn create(containers: &Containers, a: CreateArgs) -> anyhow::Result<i32> {
    if a.driver != "local" {
        bail!(
            "volume driver {:?} is not available: berth has the local driver",
            a.driver
        );
    }
    let labels = key_values("--label", &a.labels)?;
    let opts = key_values("--opt", &a.opts)?;
    let name = a.name.or(a.name_flag);
    let (v, _) = containers.volumes().create(name.as_deref(), labels, opts)?;
    println!("{}", v.name);
    Ok(0)
}

/// Docker's inspect JSON of a volume.
pub fn volume_json(v: &Volume) -> serde_json::Value {
    let map_or_null = |m: &BTreeMap<String, String>| {
        if m.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::json!(m)
        }
    };
    serde_json::json!({
        "CreatedAt": v.created_at,
        "Driver": v.driver,
        "Labels": map_or_null(&v.labels),
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": map_or_null(&v.options),
        "Scope": "local",
    })
}

fn ls(containers: &Containers, a: LsArgs) -> anyhow::Result<i32> {
    let used = containers.volumes_in_use()?;
    let filters =
        crate::filter::Filters::parse(&a.filter, &["dangling", "name", "label", "driver"])?;
    filters.check_bool("dangling")?;
    let keep = |v: &Volume| {
        filters
            .pass(|k, val| {
                Ok(match k {
                    "dangling" => used.contains(&v.name) != matches!(val, "true" | "1"),
                    "name" => v.name.contains(val),
                    "driver" => v.driver == val,
                    _ => crate::filter::label_matches(&v.labels, val),
                })
            })
            .unwrap_or(false)
    };
    let volumes: Vec<Volume> = containers
        .volumes()
        .list()?
        .into_iter()
        .filter(keep)
        .collect();
    let mut out = std::io::stdout().lock();
    let fields = |v: &Volume| {
        vec![
            ("Availability", "N/A".to_string()),
            ("Driver", v.driver.clone()),
            ("Group", "N/A".to_string()),
            ("Labels", crate::filter::labels_text(&v.labels)),
            ("Links", "N/A".to_string()),
            ("Mountpoint", v.mountpoint.to_string_lossy().into_owned()),
            ("Name", v.name.clone()),
            ("Scope", "local".to_string()),
            ("Size", "N/A".to_string()),
            ("Status", "N/A".to_string()),
        ]
    };
    if a.quiet {
        for v in &volumes {
            writeln!(out, "{}", v.name)?;
        }
        return Ok(0);
    }
    match a.format.as_deref() {
        Some("json") => {
            for v in &volumes {
                writeln!(out, "{}", json_line(&fields(v)))?;
            }
        }
        Some(t) if t != "table" => {
            let names = [
                "Availability",
                "Driver",
                "Group",
                "Labels",
                "Links",
                "Mountpoint",
                "Name",
                "Scope",
                "Size",
                "Status",
            ];
            let mut rows = Templated::new(t, &names, &[("Name", "VOLUME NAME")])?;
            for v in &volumes {
                rows.row(&mut out, &fields(v))?;
            }
            rows.finish(&mut out)?;
        }
        _ => {
            let mut table = Table::new(&["DRIVER", "VOLUME NAME"]);
            for v in &volumes {
                table.row(vec![v.driver.clone(), v.name.clone()]);
            }
            table.write(&mut out)?;
        }
    }
    Ok(0)
}

fn inspect(containers: &Containers, a: crate::inspect::InspectArgs) -> anyhow::Result<i32> {
    crate::inspect::print(&a, |n| Ok(volume_json(&containers.volumes().get(n)?)))
}

fn rm(containers: &Containers, a: RmArgs) -> anyhow::Result<i32> {
    let mut code = 0;
    for n in &a.names {
        match containers.remove_volume(n) {
            Ok(()) => println!("{n}"),
            Err(berth_engine::Error::Volume(VolumeError::NoSuchVolume(_))) if a.force => {}
            Err(e) => {
                eprintln!("berth: {e}");
                code = 125;
            }
        }
    }
    Ok(code)
}

fn prune(containers: &Containers, a: PruneArgs) -> anyhow::Result<i32> {
    let filter = berth_engine::prune::PruneFilter::parse(
        &a.filter,
        berth_engine::prune::PruneFilter::LABEL_KEYS,
    )?;
    if !a.force && std::io::stdin().is_terminal() {
        let what = if a.all {
            "all volumes not used by at least one container"
        } else {
            "all anonymous volumes not used by at least one container"
        };
        eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let removed = containers.prune_volumes(a.all, &filter)?;
    let mut out = std::io::stdout().lock();
    if !removed.is_empty() {
        writeln!(out, "Deleted Volumes:")?;
        for (name, _) in &removed {
            writeln!(out, "{name}")?;
        }
        writeln!(out)?;
    }
    let total: u64 = removed.iter().map(|(_, b)| b).sum();
    writeln!(out, "Total reclaimed space: {}", human_size(total))?;
    Ok(0)
}
