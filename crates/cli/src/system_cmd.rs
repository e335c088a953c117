//! rename, top, pause, unpause, stats, cp, system df, system prune, system check,
//! info and version: Docker's names, flags and output.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use berth_engine::containers::ops::{CopyIn, CopyOptions, CopyOut, StatsSample, UsageRow};
use berth_engine::containers::record::{ContainerRecord, RestartPolicy, Status};
use berth_engine::containers::update::ResourceUpdate;
use berth_engine::containers::Containers;
use clap::Args;

use crate::format::{json_line, GoTemplate, Templated};

/// Docker's decimal sizes (`units.HumanSize`): 4 significant digits, kB/MB/GB.
pub fn human_size(bytes: u64) -> String {
    scaled(bytes, 1000.0, &["B", "kB", "MB", "GB", "TB", "PB"])
}

/// Docker's binary sizes (`units.BytesSize`): KiB/MiB/GiB.
pub fn binary_size(bytes: u64) -> String {
    scaled(bytes, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB", "PiB"])
}

fn scaled(bytes: u64, base: f64, units: &[&str]) -> String {
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= base && i < units.len() - 1 {
        v /= base;
        i += 1;
    }
    format!("{}{}", significant4(v), units[i])
}

/// `%.4g` for the values sizes take (0 <= v < 10000).
fn significant4(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = (v.abs().log10().floor() as i32 + 1).max(1);
    let decimals = (4 - digits).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `rename OLD NEW`.
pub fn rename(containers: &Containers, old: &str, new: &str) -> anyhow::Result<i32> {
    containers.rename(old, new)?;
    Ok(0)
}

/// `top CONTAINER [ps OPTIONS]` (ps options are accepted and ignored).
pub fn top(containers: &Containers, name: &str, ps_args: &[String]) -> anyhow::Result<i32> {
    let rows = containers.top(name)?;
    let mut out = std::io::stdout().lock();
    if !ps_args.is_empty() {
        let pids: std::collections::HashSet<i32> = rows.iter().map(|r| r.pid).collect();
        for line in ps_lines(ps_args, &pids)? {
            writeln!(out, "{line}")?;
        }
        return Ok(0);
    }
    let w_user = rows.iter().map(|r| r.user.len()).max().unwrap_or(0).max(4) + 3;
    writeln!(
        out,
        "{:<10}{:<10}{:<w_user$}{:<12}CMD",
        "PID", "PPID", "USER", "TIME"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<10}{:<10}{:<w_user$}{:<12}{}",
            r.pid, r.ppid, r.user, r.time, r.cmd
        )?;
    }
    Ok(0)
}

/// `top CONTAINER PS-OPTIONS`, as Docker's: the host's `ps` with those
/// options, its header and the lines of the container's processes (found by
/// the PID column).
fn ps_lines(
    ps_args: &[String],
    pids: &std::collections::HashSet<i32>,
) -> anyhow::Result<Vec<String>> {
    let out = std::process::Command::new("ps")
        .args(ps_args)
        .output()
        .map_err(|e| anyhow::anyhow!("run ps (procps) for top: {e}"))?;
    if !out.status.success() {
        bail!(
            "ps {}: {}",
            ps_args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let Some(pid_col) = header.split_whitespace().position(|h| h == "PID") else {
        bail!("ps {}: no PID column in its output", ps_args.join(" "));
    };
    let mut kept = vec![header.to_string()];
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            kept.push(line.to_string());
        }
    }
    Ok(kept)
}

/// `pause CONTAINER...`.
pub fn pause(containers: &Containers, names: &[String]) -> anyhow::Result<i32> {
    Ok(crate::each_name(names, |n| {
        containers.pause(n)?;
        Ok(n.to_string())
    }))
}

/// `update` flags.
#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    resources: crate::container_cmd::ResourceFlags,
    /// Restart policy: no, on-failure[:max-retries], always, unless-stopped.
    #[arg(long)]
    restart: Option<String>,
    /// The containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `update CONTAINER...`: new limits, at once for running containers.
pub fn update(containers: &Containers, args: UpdateArgs) -> anyhow::Result<i32> {
    let change = ResourceUpdate {
        memory: args.resources.memory,
        memory_swap: args.resources.memory_swap,
        cpus: args.resources.cpus,
        pids_limit: args.resources.pids_limit,
        restart: args
            .restart
            .as_deref()
            .map(RestartPolicy::parse)
            .transpose()?,
    };
    if change.is_empty() {
        anyhow::bail!(
            "nothing to update: give --memory, --memory-swap, --cpus, --pids-limit or --restart"
        );
    }
    Ok(crate::each_name(&args.containers, |n| {
        containers.update_resources(n, &change)?;
        Ok(n.to_string())
    }))
}

/// `unpause CONTAINER...`.
pub fn unpause(containers: &Containers, names: &[String]) -> anyhow::Result<i32> {
    Ok(crate::each_name(names, |n| {
        containers.unpause(n)?;
        Ok(n.to_string())
    }))
}

/// `stats` flags.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default: running).
    #[arg(short, long)]
    all: bool,
    /// Print one reading and exit.
    #[arg(long)]
    no_stream: bool,
    /// Do not truncate ids.
    #[arg(long)]
    no_trunc: bool,
    /// json, table, or a template like '{{.Name}}\t{{.MemUsage}}'.
    #[arg(long)]
    format: Option<String>,
    /// Containers (default: all running).
    containers: Vec<String>,
}

/// The fields of a `stats` row, and the column names Docker gives them.
const STATS_FIELDS: &[&str] = &[
    "ID",
    "Container",
    "Name",
    "CPUPerc",
    "MemUsage",
    "MemPerc",
    "PIDs",
];
const STATS_COLUMNS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
];

fn stats_fields(
    r: &ContainerRecord,
    no_trunc: bool,
    prev: Option<&StatsSample>,
    now: Option<&StatsSample>,
) -> Vec<(&'static str, String)> {
    let id = if no_trunc {
        r.id.clone()
    } else {
        r.id[..12].to_string()
    };
    let (cpu, usage, mem_perc, pids) = match now {
        Some(s) => {
            let cpu = match prev {
                Some(p) => {
                    let wall = s.at.duration_since(p.at).as_nanos() as f64;
                    let used = s.cpu_ns.saturating_sub(p.cpu_ns) as f64;
                    if wall > 0.0 {
                        used / wall * 100.0
                    } else {
                        0.0
                    }
                }
                None => 0.0,
            };
            let perc = if s.mem_limit > 0 {
                s.mem_usage as f64 / s.mem_limit as f64 * 100.0
            } else {
                0.0
            };
            (
                format!("{cpu:.2}%"),
                format!(
                    "{} / {}",
                    binary_size(s.mem_usage),
                    binary_size(s.mem_limit)
                ),
                format!("{perc:.2}%"),
                s.pids.to_string(),
            )
        }
        None => ("0.00%".into(), "0B / 0B".into(), "0.00%".into(), "0".into()),
    };
    vec![
        ("ID", id.clone()),
        ("Container", id),
        ("Name", r.name.clone()),
        ("CPUPerc", cpu),
        ("MemUsage", usage),
        ("MemPerc", mem_perc),
        ("PIDs", pids),
    ]
}

/// `stats [--no-stream] [CONTAINER...]`.
pub fn stats(containers: &Containers, args: StatsArgs) -> anyhow::Result<i32> {
    let select = |containers: &Containers| -> anyhow::Result<Vec<ContainerRecord>> {
        if args.containers.is_empty() {
            let mut all = containers.list()?;
            if !args.all {
                all.retain(|r| r.state.status == Status::Running);
            }
            Ok(all)
        } else {
            args.containers
                .iter()
                .map(|n| containers.get(n).map_err(anyhow::Error::from))
                .collect()
        }
    };
    let sample = |records: &[ContainerRecord]| -> HashMap<String, StatsSample> {
        records
            .iter()
            .filter_map(|r| Some((r.id.clone(), containers.stats_sample(r).ok()?)))
            .collect()
    };
    let mut records = select(containers)?;
    let mut prev = sample(&records);
    loop {
        std::thread::sleep(Duration::from_millis(if args.no_stream {
            500
        } else {
            1000
        }));
        let now = sample(&records);
        let mut out = std::io::stdout().lock();
        if !args.no_stream && args.format.is_none() {
            // Redraw in place, as Docker's stream does.
            write!(out, "\x1b[2J\x1b[H")?;
        }
        match args.format.as_deref() {
            Some("json") => {
                for r in &records {
                    let f = stats_fields(r, args.no_trunc, prev.get(&r.id), now.get(&r.id));
                    writeln!(out, "{}", json_line(&f))?;
                }
            }
            Some(t) if t != "table" => {
                let mut rows = Templated::new(t, STATS_FIELDS, STATS_COLUMNS)?;
                for r in &records {
                    let f = stats_fields(r, args.no_trunc, prev.get(&r.id), now.get(&r.id));
                    rows.row(&mut out, &f)?;
                }
                rows.finish(&mut out)?;
            }
            _ => {
                let w_id = if args.no_trunc { 66 } else { 15 };
                let w_name = records
                    .iter()
                    .map(|r| r.name.len())
                    .max()
                    .unwrap_or(0)
                    .max(4)
                    + 3;
                writeln!(
                    out,
                    "{:<w_id$}{:<w_name$}{:<10}{:<22}{:<10}PIDS",
                    "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %"
                )?;
                for r in &records {
                    let f = stats_fields(r, args.no_trunc, prev.get(&r.id), now.get(&r.id));
                    writeln!(
                        out,
                        "{:<w_id$}{:<w_name$}{:<10}{:<22}{:<10}{}",
                        f[0].1, f[2].1, f[3].1, f[4].1, f[5].1, f[6].1
                    )?;
                }
            }
        }
        out.flush()?;
        if args.no_stream {
            return Ok(0);
        }
        prev = now;
        if args.containers.is_empty() {
            records = select(containers)?;
        }
    }
}

/// `cp` flags.
#[derive(Args, Debug)]
pub struct CpArgs {
    /// Archive mode: keep uid/gid.
    #[arg(short, long)]
    archive: bool,
    /// Follow a symlink given as SRC_PATH.
    #[arg(short = 'L', long)]
    follow_link: bool,
    /// Suppress progress output (berth prints none).
    #[arg(short, long)]
    quiet: bool,
    /// CONTAINER:SRC_PATH, a host path, or - (a tar stream on stdin).
    #[arg(allow_hyphen_values = true)]
    src: String,
    /// CONTAINER:DEST_PATH, a host path, or - (a tar stream on stdout).
    #[arg(allow_hyphen_values = true)]
    dest: String,
}

/// Docker's split of a cp argument: `CONTAINER:PATH`, or a local path (an
/// absolute path, or one without a colon; write `./a:b` for a local `a:b`).
fn split_cp_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') || arg.starts_with('.') {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.is_empty() => (Some(c), p),
        _ => (None, arg),
    }
}

/// `cp SRC DEST`.
pub fn cp(containers: &Containers, args: CpArgs) -> anyhow::Result<i32> {
    let opts = CopyOptions {
        archive: args.archive,
        follow_link: args.follow_link,
    };
    match (split_cp_arg(&args.src), split_cp_arg(&args.dest)) {
        ((Some(_), _), (Some(_), _)) => bail!("copying between containers is not supported"),
        ((None, _), (None, _)) => {
            bail!("must specify at least one container source: use CONTAINER:PATH on one side")
        }
        ((Some(c), path), (None, dest)) => {
            let path = if path.is_empty() { "/" } else { path };
            if dest == "-" {
                let mut stdout = std::io::stdout().lock();
                containers.copy_out(c, path, CopyOut::Stream(&mut stdout), &opts)?;
                stdout.flush()?;
            } else {
                containers.copy_out(c, path, CopyOut::Host(Path::new(dest)), &opts)?;
            }
        }
        ((None, src), (Some(c), path)) => {
            let path = if path.is_empty() { "/" } else { path };
            if src == "-" {
                let mut stdin = std::io::stdin().lock();
                containers.copy_in(c, path, CopyIn::Stream(&mut stdin), &opts)?;
            } else {
                containers.copy_in(c, path, CopyIn::Host(Path::new(src)), &opts)?;
            }
        }
    }
    Ok(0)
}

/// `system df` flags.
#[derive(Args, Debug)]
pub struct DfArgs {
    /// Show details (accepted; berth shows the summary).
    #[arg(short, long)]
    verbose: bool,
    /// json, table, or a template like '{{.Type}}\t{{.Size}}'.
    #[arg(long)]
    format: Option<String>,
}

/// `system df`.
pub fn df(containers: &Containers, args: DfArgs) -> anyhow::Result<i32> {
    let usage = containers.disk_usage()?;
    let rows: [(&str, UsageRow); 4] = [
        ("Images", usage.images),
        ("Containers", usage.containers),
        ("Local Volumes", usage.volumes),
        ("Build Cache", usage.build_cache),
    ];
    let mut out = std::io::stdout().lock();
    let fields = |t: &str, u: &UsageRow| {
        let perc = (u.reclaimable * 100)
            .checked_div(u.size)
            .map(|p| format!(" ({p}%)"))
            .unwrap_or_default();
        vec![
            ("Type", t.to_string()),
            ("TotalCount", u.total.to_string()),
            ("Active", u.active.to_string()),
            ("Size", human_size(u.size)),
            (
                "Reclaimable",
                format!("{}{perc}", human_size(u.reclaimable)),
            ),
        ]
    };
    match args.format.as_deref() {
        Some("json") => {
            for (t, u) in &rows {
                writeln!(out, "{}", json_line(&fields(t, u)))?;
            }
        }
        Some(t) if t != "table" => {
            let mut lines = Templated::new(
                t,
                &["Type", "TotalCount", "Active", "Size", "Reclaimable"],
                &[("TotalCount", "TOTAL")],
            )?;
            for (name, u) in &rows {
                lines.row(&mut out, &fields(name, u))?;
            }
            lines.finish(&mut out)?;
        }
        _ => {
            writeln!(
                out,
                "{:<15}{:<10}{:<10}{:<10}RECLAIMABLE",
                "TYPE", "TOTAL", "ACTIVE", "SIZE"
            )?;
            for (t, u) in &rows {
                let f = fields(t, u);
                writeln!(
                    out,
                    "{:<15}{:<10}{:<10}{:<10}{}",
                    f[0].1, f[1].1, f[2].1, f[3].1, f[4].1
                )?;
            }
        }
    }
    Ok(0)
}

/// `system prune` flags.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove every image no container uses, not only dangling ones.
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
    /// Prune unused anonymous volumes too (with -a: every unused volume).
    #[arg(long)]
    volumes: bool,
    /// Filter: until=TIME (created before; not volumes), label=KEY[=VALUE],
    /// label!=KEY[=VALUE]. With a filter the build cache stays.
    #[arg(long)]
    filter: Vec<String>,
}

/// `system prune`.
pub fn prune(containers: &Containers, args: PruneArgs) -> anyhow::Result<i32> {
    let filter = berth_engine::prune::PruneFilter::parse(
        &args.filter,
        berth_engine::prune::PruneFilter::KEYS,
    )?;
    if !args.force && std::io::stdin().is_terminal() {
        let images = if args.all {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        };
        let volumes = if args.volumes {
            if args.all {
                "\n  - all volumes not used by at least one container"
            } else {
                "\n  - all anonymous volumes not used by at least one container"
            }
        } else {
            ""
        };
        eprint!(
            "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container{volumes}\n  - {images}\n  - all build cache\n\nAre you sure you want to continue? [y/N] "
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let report = containers.system_prune(args.all, args.volumes, &filter)?;
    let mut out = std::io::stdout().lock();
    if !report.containers.is_empty() {
        writeln!(out, "Deleted Containers:")?;
        for id in &report.containers {
            writeln!(out, "{id}")?;
        }
        writeln!(out)?;
    }
    if !report.networks.is_empty() {
        writeln!(out, "Deleted Networks:")?;
        for name in &report.networks {
            writeln!(out, "{name}")?;
        }
        writeln!(out)?;
    }
    if !report.volumes.is_empty() {
        writeln!(out, "Deleted Volumes:")?;
        for name in &report.volumes {
            writeln!(out, "{name}")?;
        }
        writeln!(out)?;
    }
    if !report.images.is_empty() {
        writeln!(out, "Deleted Images:")?;
        for line in &report.images {
            writeln!(out, "{line}")?;
        }
        writeln!(out)?;
    }
    if report.build_cache > 0 {
        writeln!(out, "Deleted build cache objects: {}\n", report.build_cache)?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        human_size(report.reclaimed)
    )?;
    Ok(0)
}

/// `system check` flags.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Remove the leftovers found (orphans and partial writes; never anything an
    /// image or container needs).
    #[arg(long)]
    repair: bool,
}

/// `system check`: one line per problem and leftover, a summary line; exit 1 when
/// the state is inconsistent.
pub fn check(containers: &Containers, args: CheckArgs) -> anyhow::Result<i32> {
    let r = containers.check(args.repair)?;
    let mut out = std::io::stdout().lock();
    for line in &r.removed {
        writeln!(out, "removed: {line}")?;
    }
    for line in &r.problems {
        writeln!(out, "problem: {line}")?;
    }
    for line in &r.leftovers {
        writeln!(out, "leftover: {line}")?;
    }
    let verdict = if r.problems.is_empty() {
        "consistent"
    } else {
        "INCONSISTENT"
    };
    let removed = if args.repair {
        format!(", {} removed", r.removed.len())
    } else {
        String::new()
    };
    writeln!(
        out,
        "{verdict}: {} blobs, {} images, {} snapshots, {} containers checked; {} problems, {} leftovers{removed}",
        r.blobs,
        r.images,
        r.snapshots,
        r.containers,
        r.problems.len(),
        r.leftovers.len()
    )?;
    Ok(if r.problems.is_empty() { 0 } else { 1 })
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn arch() -> &'static str {
    std::env::consts::ARCH
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `info` flags.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// json, or a template like '{{.Containers}}'.
    #[arg(short, long)]
    format: Option<String>,
}

/// `info`.
pub fn info(
    containers: &Containers,
    root: &Path,
    run_root: &Path,
    args: InfoArgs,
) -> anyhow::Result<i32> {
    let counts = containers.counts()?;
    let cgroup = match berth_runtime::cgroups::detect_layout() {
        Ok(berth_runtime::cgroups::Layout::Unified) => "2",
        Ok(_) => "1",
        Err(_) => "none",
    };
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = berth_engine::containers::ops::host_memory();
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fields: Vec<(&str, String)> = vec![
        (
            "Containers",
            (counts.running + counts.paused + counts.stopped).to_string(),
        ),
        ("ContainersRunning", counts.running.to_string()),
        ("ContainersPaused", counts.paused.to_string()),
        ("ContainersStopped", counts.stopped.to_string()),
        ("Images", counts.images.to_string()),
        ("ServerVersion", env!("CARGO_PKG_VERSION").to_string()),
        ("Driver", "overlayfs".to_string()),
        ("CgroupDriver", "cgroupfs".to_string()),
        ("CgroupVersion", cgroup.to_string()),
        ("KernelVersion", kernel()),
        ("OperatingSystem", os_name()),
        ("OSType", "linux".to_string()),
        ("Architecture", arch().to_string()),
        ("NCPU", cpus.to_string()),
        ("MemTotal", mem.to_string()),
        ("Name", hostname.clone()),
        ("DockerRootDir", root.display().to_string()),
        ("RunRoot", run_root.display().to_string()),
    ];
    let json = || {
        let mut map = serde_json::Map::new();
        for (k, v) in &fields {
            let value = v
                .parse::<u64>()
                .map(serde_json::Value::from)
                .unwrap_or_else(|_| serde_json::Value::from(v.clone()));
            map.insert(k.to_string(), value);
        }
        map.insert("Runtimes".into(), serde_json::json!({"berth": {}}));
        serde_json::Value::Object(map)
    };
    match args.format.as_deref() {
        Some("json") => println!("{}", json()),
        Some(t) => println!("{}", GoTemplate::parse(t)?.render(&json())?),
        None => {
            let v = |k: &str| {
                fields
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            println!("Client:");
            println!(" Version:    {}", env!("CARGO_PKG_VERSION"));
            println!(" Context:    default");
            println!();
            println!("Server:");
            println!(" Containers: {}", v("Containers"));
            println!("  Running: {}", counts.running);
            println!("  Paused: {}", counts.paused);
            println!("  Stopped: {}", counts.stopped);
            println!(" Images: {}", counts.images);
            println!(
                " Server Version: {} (daemonless)",
                env!("CARGO_PKG_VERSION")
            );
            println!(" Storage Driver: overlayfs");
            println!(" Cgroup Driver: cgroupfs");
            println!(" Cgroup Version: {cgroup}");
            println!(" Runtimes: berth");
            println!(" Default Runtime: berth");
            println!(" Kernel Version: {}", kernel());
            println!(" Operating System: {}", os_name());
            println!(" OSType: linux");
            println!(" Architecture: {}", arch());
            println!(" CPUs: {cpus}");
            println!(" Total Memory: {}", binary_size(mem));
            println!(" Name: {hostname}");
            println!(" Root Dir: {}", root.display());
            println!(" Run Root: {}", run_root.display());
        }
    }
    Ok(0)
}

/// `version` flags.
#[derive(Args, Debug)]
pub struct VersionArgs {
    /// json, or a template like '{{.Client.Version}}'.
    #[arg(short, long)]
    format: Option<String>,
}

/// `version`: Docker's Client and Server blocks; berth has no daemon, so the
/// server is this same binary.
pub fn version(args: VersionArgs) -> anyhow::Result<i32> {
    let version = env!("CARGO_PKG_VERSION");
    let os_arch = format!("linux/{}", go_arch());
    let v = serde_json::json!({
        "Client": {
            "Platform": {"Name": "berth"},
            "Version": version,
            "Os": "linux",
            "Arch": go_arch(),
            "Context": "default",
        },
        "Server": {
            "Platform": {"Name": "berth (daemonless)"},
            "Version": version,
            "Os": "linux",
            "Arch": go_arch(),
            "KernelVersion": kernel(),
            "Components": [
                {"Name": "Engine", "Version": version},
                {"Name": "runtime", "Version": version, "Details": {"Name": "berth (built in)"}},
            ],
        },
    });
    match args.format.as_deref() {
        Some("json") => println!("{v}"),
        Some(t) => println!("{}", GoTemplate::parse(t)?.render(&v)?),
        None => {
            println!("Client: berth");
            println!(" Version:           {version}");
            println!(" OS/Arch:           {os_arch}");
            println!(" Context:           default");
            println!();
            println!("Server: berth (daemonless: the same binary)");
            println!(" Engine:");
            println!("  Version:          {version}");
            println!("  OS/Arch:          {os_arch}");
            println!("  Kernel Version:   {}", kernel());
            println!(" runtime:");
            println!("  Version:          {version} (built in)");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_234_000), "1.234MB");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(binary_size(64 * 1024 * 1024), "64MiB");
        assert_eq!(binary_size(1536 * 1024), "1.5MiB");
        assert_eq!(binary_size(12_345_678), "11.77MiB");
    }

    #[test]
    fn cp_args_split_like_docker() {
        assert_eq!(split_cp_arg("c1:/etc"), (Some("c1"), "/etc"));
        assert_eq!(split_cp_arg("/tmp/a:b"), (None, "/tmp/a:b"));
        assert_eq!(split_cp_arg("./a:b"), (None, "./a:b"));
        assert_eq!(split_cp_arg("-"), (None, "-"));
        assert_eq!(split_cp_arg("file"), (None, "file"));
    }
}
