//! `cargo xtask bench network`: what berth's bridge networking costs.
//!
//! 1. Start latency: `berth run --rm bb true` on the default bridge against
//!    `berth run --rm --network none bb true`, interleaved, plus `docker run` / `podman run`
//!    (default bridge) where installed and working.
//! 2. Throughput: 256 MiB from `dd if=/dev/zero | nc` in one container to `nc -l > /dev/null`
//!    in another over a user-defined network (veth, bridge, veth), against the same two busybox
//!    `nc` on the host's loopback and inside one container on its loopback.
//!
//! The scratch engine gets its own bridge names, nftables table and subnets in
//! `<root>/config.json`, so it never touches a user's `berth0` or `ip berth`; all of them are
//! deleted at the end, however the benchmark ends. Writes the `## Network` section of
//! docs/benchmarks.md.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{
    date_utc, engine_peer, find_in_path, git_describe, loadavg, loaded_reference, machine,
    mounts_under, version_of, write_section, Options, Stats, TempDir,
};
use crate::{images, util};

/// Heading of this benchmark's section in docs/benchmarks.md.
const SECTION: &str = "## Network";
const DEFAULT_RUNS: usize = 50;
const DEFAULT_WARMUP: usize = 3;
/// Timed transfers per path (bridge, loopback), interleaved, after one warm-up transfer each.
const TRANSFERS: usize = 5;
/// MiB sent per transfer (`dd bs=1M count=MIB`).
const MIB: u64 = 256;
const PORT: u16 = 5001;
/// The tag the busybox test image gets in the scratch berth store.
const IMAGE: &str = "bb";
/// The user-defined network of the throughput test, its subnet and the server's address.
const NET: &str = "benchnet";
const NET_SUBNET: &str = "10.197.77.0/24";
const SERVER_IP: &str = "10.197.77.10";
/// The scratch engine's default bridge subnet.
const DEFAULT_SUBNET: &str = "10.196.77.0/24";
const BUSYBOX: &str = "/bin/busybox";
pub(super) const USAGE: &str = "cargo xtask bench network [--runs N] [--warmup N] [--berth PATH]";

/// `cargo xtask bench network [--runs N] [--warmup N] [--berth PATH]`: N (default 50) timed
/// runs each of `berth run --rm bb true` on the default bridge and with `--network none`,
/// interleaved after a few warm-up rounds, then 5 interleaved 256 MiB transfers container to
/// container over a user-defined bridge network and host to host over loopback.
/// `--berth PATH` benchmarks that binary instead of building berth-cli (release).
pub(super) fn main(args: &[String]) -> Result<()> {
    let mut rest = Vec::new();
    let mut berth = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(p) = a.strip_prefix("--berth=") {
            berth = Some(PathBuf::from(p));
        } else if a == "--berth" {
            berth = Some(PathBuf::from(it.next().context("--berth needs a path")?));
        } else {
            rest.push(a.clone());
        }
    }
    let opts = Options::parse(&rest, DEFAULT_RUNS, DEFAULT_WARMUP, false, USAGE)?;
    bench(&opts, berth)
}

/// Host-global names of the scratch engine (from the pid, so never a user's).
struct Names {
    bridge: String,
    prefix: String,
    table: String,
}

impl Names {
    fn new() -> Names {
        let pid = std::process::id();
        Names {
            bridge: format!("bnb{pid:x}"),
            prefix: format!("bnu{pid:x}"),
            table: format!("berth_bench_{pid}"),
        }
    }
}

/// The scratch engine.
struct Env {
    berth: PathBuf,
    root: PathBuf,
    run_root: PathBuf,
}

impl Env {
    /// `berth --root R --run-root RR ARGS`.
    fn berth(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.berth);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--run-root")
            .arg(&self.run_root)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn argv(&self, args: &[&str]) -> Vec<String> {
        let s = |p: &Path| p.display().to_string();
        [
            s(&self.berth),
            "--root".into(),
            s(&self.root),
            "--run-root".into(),
            s(&self.run_root),
        ]
        .into_iter()
        .chain(args.iter().map(|a| a.to_string()))
        .collect()
    }
}

/// On every way out: remove the scratch engine's containers and network, its bridges and
/// nft table, unmount whatever is left under the scratch dir (before `TempDir` removes it),
/// and put `net.ipv4.ip_forward` back if berth turned it on.
struct Cleanup<'a> {
    env: &'a Env,
    names: &'a Names,
    tmp: &'a Path,
    ip_forward: Option<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let quiet = |mut c: Command| {
            let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        if let Ok(ids) = util::run(&mut self.env.berth(&["ps", "-aq", "--no-trunc"])) {
            for id in ids.split_whitespace() {
                quiet(self.env.berth(&["rm", "-f", id]));
            }
        }
        quiet(self.env.berth(&["network", "rm", NET]));
        for link in host_links() {
            if link == self.names.bridge || link.starts_with(&self.names.prefix) {
                let mut c = Command::new("ip");
                c.args(["link", "del", &link]);
                quiet(c);
            }
        }
        let mut c = Command::new("nft");
        c.args(["delete", "table", "ip", &self.names.table]);
        quiet(c);
        for m in mounts_under(self.tmp).into_iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        if let Some(old) = &self.ip_forward {
            let now = std::fs::read_to_string(IP_FORWARD).unwrap_or_default();
            if now.trim() != old.trim() {
                let _ = std::fs::write(IP_FORWARD, old);
            }
        }
    }
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Names of the host's network interfaces (`ip -br link`, `@peer` suffix cut).
fn host_links() -> Vec<String> {
    util::run(Command::new("ip").args(["-br", "link"]))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

fn nft_tables() -> Vec<String> {
    util::run(Command::new("nft").args(["list", "tables"]))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// One start-latency contender: a command line run again and again.
struct Contender {
    name: String,
    version: String,
    argv: Vec<String>,
    samples: Vec<Duration>,
}

impl Contender {
    fn run_once(&self) -> std::result::Result<Duration, String> {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let out = cmd.output();
        let elapsed = start.elapsed();
        match out {
            Ok(out) if out.status.success() => Ok(elapsed),
            Ok(out) => Err(format!(
                "{} exited with {}: {}",
                self.argv.join(" "),
                out.status,
                output_text(&out)
            )),
            Err(e) => Err(format!("{}: {e}", self.argv.join(" "))),
        }
    }
}

fn output_text(out: &std::process::Output) -> String {
    let text = [&out.stderr, &out.stdout]
        .iter()
        .map(|b| String::from_utf8_lossy(b).trim().to_string())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    if text.is_empty() {
        "(no output)".into()
    } else {
        text
    }
}

fn note(notes: &mut Vec<String>, n: String) {
    println!("bench: {n}");
    notes.push(n);
}

/// One run of each contender, starting with contender `first` (rotating the order so no
/// contender always runs right after another). The two berth contenders (0 and 1) must
/// work; a failing peer is reported and dropped.
fn round(
    contenders: &mut Vec<Contender>,
    first: usize,
    tag: &str,
    record: bool,
    notes: &mut Vec<String>,
) -> Result<()> {
    let n = contenders.len();
    let mut failed = Vec::new();
    for k in 0..n {
        let idx = (first + k) % n;
        let c = &mut contenders[idx];
        match c.run_once() {
            Ok(d) if record => c.samples.push(d),
            Ok(_) => {}
            Err(why) if idx < 2 => bail!("{} failed: {why}", c.name),
            Err(why) => {
                let phase = if record { "timed run" } else { "warm-up" };
                note(
                    notes,
                    format!("{}: excluded, failed in {phase} {tag}: {why}", c.name),
                );
                failed.push(idx);
            }
        }
    }
    failed.sort_unstable();
    for idx in failed.into_iter().rev() {
        contenders.remove(idx);
    }
    Ok(())
}

/// Whether a TCP socket (v4 or v6: busybox nc listens on `::`) listens on `port` in the
/// network namespace of `/proc/<pid>` (`self` for the host).
fn listening(pid: &str, port: u16) -> bool {
    let suffix = format!(":{port:04X}");
    ["tcp", "tcp6"]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(format!("/proc/{pid}/net/{f}"))
                .unwrap_or_default()
                .lines()
                .skip(1)
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&suffix) && f[3] == "0A"
        })
}

fn wait_listening(pid: &str, port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening(pid, port) {
        if Instant::now() > deadline {
            bail!("{what} is not listening on port {port} after 10 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// The client script: wait for the go signal on the `go` FIFO, send MIB MiB, write the
/// pipeline's status to the `done` FIFO. `dir` is the FIFO directory as the client sees it,
/// `bb` the prefix of the busybox applets.
fn client_script(dir: &str, bb: &str, ip: &str) -> String {
    format!(
        "read _ < {dir}/go; {bb}dd if=/dev/zero bs=1M count={MIB} 2>{dir}/dd.log | {bb}nc {ip} {PORT}; echo $? > {dir}/done"
    )
}

/// Time one transfer whose client is already waiting on `dir/go`: from writing the go
/// signal to reading the client's status from `dir/done`. The client's process start is
/// not in the time; the same two FIFOs and script are used on both paths.
fn timed_transfer(dir: &Path) -> Result<Duration> {
    let go = dir.join("go");
    let done = dir.join("done");
    // Reader of `done` first (its open blocks until the client writes the status).
    let (tx, rx) = mpsc::channel();
    let done2 = done.clone();
    std::thread::spawn(move || {
        let r = std::fs::File::open(&done2).and_then(|mut f| {
            let mut s = String::new();
            f.read_to_string(&mut s)?;
            Ok(s)
        });
        let _ = tx.send((r, Instant::now()));
    });
    // Wait until the client has the go FIFO open for reading.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut w = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&go)
        {
            Ok(f) => break f,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => {
                unblock(&done);
                return Err(e).with_context(|| format!("open {} for the go signal", go.display()));
            }
        }
    };
    let start = Instant::now();
    w.write_all(b"go\n")?;
    drop(w);
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok((Ok(status), end)) => {
            if status.trim() != "0" {
                bail!("the client's nc exited with status {}", status.trim());
            }
            let log = std::fs::read_to_string(dir.join("dd.log")).unwrap_or_default();
            // busybox dd: `256+0 records out` (full 1 MiB blocks).
            if !log.contains(&format!("{MIB}+0 records out")) {
                bail!("dd did not send {MIB} full 1 MiB blocks: {}", log.trim());
            }
            Ok(end - start)
        }
        Ok((Err(e), _)) => Err(e).context("read the client's status"),
        Err(_) => {
            unblock(&done);
            bail!("the transfer did not finish within 120 s")
        }
    }
}

/// Let a reader blocked in opening the `done` FIFO go.
fn unblock(done: &Path) {
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(done);
}

/// Throughput of one path: which, and its transfer times.
struct Transfers {
    name: &'static str,
    samples: Vec<Duration>,
}

/// Container to container over the user network: server `nc -l`, client waiting on the FIFOs.
/// The server's stdin is `sleep 3600 |`: busybox nc half-closes the connection as soon as its
/// stdin ends (`/dev/null` for a detached container), which would end the client at once.
fn bridge_transfer(env: &Env, dir: &Path, round: &str) -> Result<Duration> {
    let srv = format!("nsrv-{round}");
    let cli = format!("ncli-{round}");
    let result = (|| {
        let server_cmd = format!("sleep 3600 | nc -l -p {PORT} > /dev/null");
        util::run(&mut env.berth(&[
            "run",
            "-d",
            "--name",
            &srv,
            "--network",
            NET,
            "--ip",
            SERVER_IP,
            IMAGE,
            "sh",
            "-c",
            &server_cmd,
        ]))?;
        let inspect = util::run(&mut env.berth(&["inspect", &srv]))?;
        let v: serde_json::Value = serde_json::from_str(&inspect).context("parse inspect")?;
        let pid = v[0]["State"]["Pid"]
            .as_u64()
            .context("no State.Pid in berth inspect of the server")?;
        wait_listening(&pid.to_string(), PORT, "the server container")?;
        let volume = format!("{}:/x", dir.display());
        let script = client_script("/x", "", SERVER_IP);
        util::run(&mut env.berth(&[
            "run",
            "-d",
            "--name",
            &cli,
            "--network",
            NET,
            "-v",
            &volume,
            IMAGE,
            "sh",
            "-c",
            &script,
        ]))?;
        timed_transfer(dir)
    })();
    for name in [&cli, &srv] {
        let _ = env
            .berth(&["rm", "-f", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    result
}

/// Both `nc` in one container on its own loopback (same network, same start-up): what the
/// container itself (seccomp, cgroups, namespaces) costs, without the veth-bridge-veth path.
fn container_loopback_transfer(env: &Env, dir: &Path, round: &str) -> Result<Duration> {
    let name = format!("nlo-{round}");
    let result = (|| {
        let volume = format!("{}:/x", dir.display());
        let script = format!(
            "sleep 3600 | nc -l -p {PORT} > /dev/null & {}",
            client_script("/x", "", "127.0.0.1")
        );
        util::run(&mut env.berth(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            NET,
            "-v",
            &volume,
            IMAGE,
            "sh",
            "-c",
            &script,
        ]))?;
        let inspect = util::run(&mut env.berth(&["inspect", &name]))?;
        let v: serde_json::Value = serde_json::from_str(&inspect).context("parse inspect")?;
        let pid = v[0]["State"]["Pid"]
            .as_u64()
            .context("no State.Pid in berth inspect")?;
        wait_listening(&pid.to_string(), PORT, "the nc -l in the container")?;
        timed_transfer(dir)
    })();
    let _ = env
        .berth(&["rm", "-f", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    result
}

/// The same two busybox `nc` as host processes over 127.0.0.1.
fn loopback_transfer(dir: &Path) -> Result<Duration> {
    let mut server = Command::new(BUSYBOX)
        .args(["nc", "-l", "-p", &PORT.to_string()])
        // An open stdin that never ends (held below): busybox nc half-closes the
        // connection when its stdin ends, which would end the client at once.
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start the host nc -l")?;
    let mut client: Option<Child> = None;
    let result = (|| {
        wait_listening("self", PORT, "the host nc -l")?;
        let script = client_script(
            &dir.display().to_string(),
            &format!("{BUSYBOX} "),
            "127.0.0.1",
        );
        client = Some(
            Command::new(BUSYBOX)
                .args(["sh", "-c", &script])
                .stdin(Stdio::null())
                .spawn()
                .context("start the host client")?,
        );
        timed_transfer(dir)
    })();
    if let Some(mut c) = client {
        if result.is_err() {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
    if result.is_err() {
        let _ = server.kill();
    }
    drop(server.stdin.take());
    let _ = server.wait();
    result
}

fn mb_per_s(d: Duration) -> f64 {
    super::mb(MIB << 20) / d.as_secs_f64()
}

fn bench(opts: &Options, given_berth: Option<PathBuf>) -> Result<()> {
    let root = util::workspace_root();
    let target = util::target_dir();
    let berth = super::berth_binary(given_berth.as_deref())?;
    let berth_version = match &given_berth {
        None => format!(
            "{} (release build of {})",
            version_of(&berth, &["--version"]),
            git_describe(&root)
        ),
        Some(_) => format!(
            "{} (the binary given with --berth {})",
            version_of(&berth, &["--version"]),
            berth.display()
        ),
    };
    if find_in_path("nft").is_none() {
        bail!("nft is not installed (berth's bridge networking needs the nftables package)");
    }
    if listening("self", PORT) {
        bail!("something on the host already listens on port {PORT}");
    }
    let images = images::build(&target)?;

    let tmp = TempDir(std::env::temp_dir().join(format!("berth-bench-net-{}", std::process::id())));
    if tmp.0.exists() {
        std::fs::remove_dir_all(&tmp.0)?;
    }
    std::fs::create_dir_all(&tmp.0)?;
    let env = Env {
        berth: berth.clone(),
        root: tmp.0.join("root"),
        run_root: tmp.0.join("run"),
    };
    let names = Names::new();
    let links_before = host_links();
    // Dropped before `tmp`: containers, network, bridges, table and mounts go first.
    let _cleanup = Cleanup {
        env: &env,
        names: &names,
        tmp: &tmp.0,
        ip_forward: std::fs::read_to_string(IP_FORWARD).ok(),
    };
    std::fs::create_dir_all(&env.root)?;
    let config = serde_json::json!({
        "bridge": names.bridge,
        "bridge-prefix": names.prefix,
        "nft-table": names.table,
        "default-subnet": DEFAULT_SUBNET,
    });
    std::fs::write(
        env.root.join("config.json"),
        serde_json::to_string_pretty(&config)? + "\n",
    )?;

    let archive = tmp.0.join("busybox-oci.tar");
    util::run(
        Command::new("tar")
            .arg("-C")
            .arg(images.dir.join("busybox-oci"))
            .arg("-cf")
            .arg(&archive)
            .arg("."),
    )?;
    let loaded = util::run(&mut env.berth(&["load", "-i", &archive.display().to_string()]))?;
    let id = loaded_reference(&loaded)
        .with_context(|| format!("berth load printed no image: {}", loaded.trim()))?;
    util::run(&mut env.berth(&["tag", &id, IMAGE]))?;
    // Peers load the docker-archive `berth save` makes: docker 20.10 cannot load
    // an OCI layout.
    let peer_archive = tmp.0.join("busybox-docker.tar");
    util::run(&mut env.berth(&["save", "-o", &peer_archive.display().to_string(), IMAGE]))?;
    println!("bench: loaded the busybox test image as {IMAGE} ({id})");

    // 1. Start latency.
    let mut notes: Vec<String> = Vec::new();
    let mut contenders = vec![
        Contender {
            name: "berth run (bridge)".into(),
            version: berth_version.clone(),
            argv: env.argv(&["run", "--rm", IMAGE, "true"]),
            samples: Vec::new(),
        },
        Contender {
            name: "berth run --network none".into(),
            version: berth_version.clone(),
            argv: env.argv(&["run", "--rm", "--network", "none", IMAGE, "true"]),
            samples: Vec::new(),
        },
    ];
    let mut engine_images: Vec<(PathBuf, String)> = Vec::new();
    for name in ["docker", "podman"] {
        match engine_peer(name, &peer_archive) {
            Ok((bin, version, image)) => {
                engine_images.push((bin.clone(), image.clone()));
                contenders.push(Contender {
                    name: format!("{name} run (bridge)"),
                    version,
                    argv: [bin.display().to_string(), "run".into(), "--rm".into()]
                        .into_iter()
                        .chain(super::PEER_ULIMITS.map(String::from))
                        .chain([image, "true".into()])
                        .collect(),
                    samples: Vec::new(),
                });
            }
            Err(why) => note(&mut notes, format!("{name} run: skipped: {why}")),
        }
    }
    let versions: Vec<(String, String)> = contenders
        .iter()
        .map(|c| (c.name.clone(), c.version.clone()))
        .collect();
    let command_lines: Vec<String> = contenders.iter().map(|c| c.argv.join(" ")).collect();
    let load_before = loadavg();
    println!("bench: {} warm-up round(s)", opts.warmup.max(1));
    for i in 0..opts.warmup.max(1) {
        round(&mut contenders, i, &format!("warmup{i}"), false, &mut notes)?;
    }
    println!(
        "bench: {} timed run(s) each of {} (interleaved)",
        opts.runs,
        contenders
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for i in 0..opts.runs {
        round(&mut contenders, i, &i.to_string(), true, &mut notes)?;
        if (i + 1) % 25 == 0 && i + 1 < opts.runs {
            println!("bench: {}/{}", i + 1, opts.runs);
        }
    }

    // 2. Throughput.
    println!("bench: throughput, {TRANSFERS} transfer(s) of {MIB} MiB per path (interleaved)");
    util::run(&mut env.berth(&["network", "create", "--subnet", NET_SUBNET, NET]))?;
    let fifo_dir = tmp.0.join("fifo");
    std::fs::create_dir_all(&fifo_dir)?;
    for f in ["go", "done"] {
        util::run(Command::new("mkfifo").arg(fifo_dir.join(f)))?;
    }
    let mut paths = [
        Transfers {
            name: "container to container (user network bridge)",
            samples: Vec::new(),
        },
        Transfers {
            name: "host loopback (127.0.0.1)",
            samples: Vec::new(),
        },
        Transfers {
            name: "inside one container, its loopback (127.0.0.1)",
            samples: Vec::new(),
        },
    ];
    for i in 0..=TRANSFERS {
        let tag = if i == 0 {
            "warmup".to_string()
        } else {
            i.to_string()
        };
        for k in 0..paths.len() {
            let which = (i + k) % paths.len();
            let d = match which {
                0 => bridge_transfer(&env, &fifo_dir, &tag)
                    .with_context(|| format!("bridge transfer {tag}"))?,
                1 => loopback_transfer(&fifo_dir)
                    .with_context(|| format!("loopback transfer {tag}"))?,
                _ => container_loopback_transfer(&env, &fifo_dir, &tag)
                    .with_context(|| format!("in-container loopback transfer {tag}"))?,
            };
            if i > 0 {
                paths[which].samples.push(d);
            }
        }
    }
    let load_after = loadavg();
    util::run(&mut env.berth(&["network", "rm", NET]))?;
    for (bin, image) in &engine_images {
        let _ = Command::new(bin)
            .args(["rmi", "-f", image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    let left = util::run(&mut env.berth(&["ps", "-aq"]))?;
    if !left.trim().is_empty() {
        note(
            &mut notes,
            format!(
                "containers left behind by the runs: {}",
                left.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        );
    }
    let busybox_version = version_of(Path::new(BUSYBOX), &[])
        .split(", ")
        .next()
        .unwrap_or("?")
        .to_string();

    let stats: Vec<(String, Stats)> = contenders
        .iter()
        .map(|c| (c.name.clone(), Stats::of(&c.samples)))
        .collect();
    let latency_table = latency_table(&stats);
    let latency_lines = latency_lines(&stats);
    let (tput_table, tput_lines) = throughput(&paths);
    println!("\n{latency_table}");
    for l in &latency_lines {
        println!("{l}");
    }
    println!("\n{tput_table}");
    for l in &tput_lines {
        println!("{l}");
    }
    for n in &notes {
        println!("note: {n}");
    }

    let report = Report {
        opts,
        names: &names,
        machine: machine(),
        load: format!("{load_before} (before), {load_after} (after)"),
        versions,
        busybox: busybox_version,
        command_lines,
        env: &env,
        fifo_dir: &fifo_dir,
        latency_table,
        latency_lines,
        tput_table,
        tput_lines,
        notes,
    };
    let markdown = report.markdown();
    // Clean up now, so the section can say what was left behind.
    drop(_cleanup);
    let leftovers = leftovers(&env, &names, &tmp.0, &links_before);
    println!("bench: left behind: {leftovers}");
    let markdown = markdown.replace(LEFTOVERS, &leftovers);
    let docs = root.join("docs/benchmarks.md");
    write_section(&docs, SECTION, &markdown)?;
    println!(
        "bench: wrote the \"{SECTION}\" section of {}",
        docs.display()
    );
    Ok(())
}

/// Placeholder in the markdown for the leftovers check, done after the cleanup.
const LEFTOVERS: &str = "@@LEFTOVERS@@";

fn leftovers(env: &Env, names: &Names, tmp: &Path, links_before: &[String]) -> String {
    let mut found = Vec::new();
    let left = util::run(&mut env.berth(&["ps", "-aq"])).unwrap_or_default();
    if !left.trim().is_empty() {
        found.push(format!("containers {}", left.trim()));
    }
    // Only this engine's names: other berth engines (a concurrent test run) may come and go.
    let links: Vec<String> = host_links()
        .into_iter()
        .filter(|l| *l == names.bridge || l.starts_with(&names.prefix))
        .collect();
    if !links.is_empty() {
        found.push(format!("links {}", links.join(" ")));
    }
    let table = format!("table ip {}", names.table);
    if nft_tables().iter().any(|t| t.trim() == table) {
        found.push(table);
    }
    let veths: Vec<String> = host_links()
        .into_iter()
        .filter(|l| l.starts_with("vb") && !links_before.contains(l))
        .collect();
    if !veths.is_empty() {
        found.push(format!(
            "new host veths {} (possibly another engine's)",
            veths.join(" ")
        ));
    }
    let mounts = mounts_under(tmp);
    if !mounts.is_empty() {
        found.push(format!("mounts {}", mounts.join(" ")));
    }
    if found.is_empty() {
        format!(
            "nothing: no container in `berth ps -a`, no bridge `{}` or `{}*` and no new `vb*` veth in `ip -br link`, no table `ip {}` in `nft list tables`, no mount under the scratch dir (which is then removed)",
            names.bridge, names.prefix, names.table
        )
    } else {
        found.join("; ")
    }
}

fn latency_table(stats: &[(String, Stats)]) -> String {
    let mut t = String::from(
        "| command | runs | min ms | median ms | mean ms | p90 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, s) in stats {
        let _ = writeln!(
            t,
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            s.n, s.min, s.median, s.mean, s.p90, s.max
        );
    }
    t
}

fn latency_lines(stats: &[(String, Stats)]) -> Vec<String> {
    let mut v = Vec::new();
    let (bridge, none) = (&stats[0].1, &stats[1].1);
    let diff = bridge.median - none.median;
    v.push(format!(
        "- bridge - none (median): {:.2} ms - {:.2} ms = {diff:.2} ms added by the bridge's setup and teardown (aim: under 15 ms: {})",
        bridge.median,
        none.median,
        if diff < 15.0 { "met" } else { "missed" }
    ));
    v.push(format!(
        "- bridge / none (median): {:.2}; p90 difference {:.2} ms, min difference {:.2} ms",
        bridge.median / none.median,
        bridge.p90 - none.p90,
        bridge.min - none.min
    ));
    for (name, s) in &stats[2..] {
        v.push(format!(
            "- {name} / berth run (bridge) (median): {:.2} ms / {:.2} ms = {:.2}",
            s.median,
            bridge.median,
            s.median / bridge.median
        ));
    }
    v
}

fn throughput(paths: &[Transfers]) -> (String, Vec<String>) {
    let mut t = String::from(
        "| path | transfers | min s | median s | max s | MB/s (median) | MB/s (best) |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut medians = Vec::new();
    for p in paths {
        let s = Stats::of(&p.samples);
        let median = Duration::from_secs_f64(s.median / 1e3);
        let best = Duration::from_secs_f64(s.min / 1e3);
        medians.push(mb_per_s(median));
        let _ = writeln!(
            t,
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.0} | {:.0} |",
            p.name,
            s.n,
            s.min / 1e3,
            s.median / 1e3,
            s.max / 1e3,
            mb_per_s(median),
            mb_per_s(best)
        );
    }
    let lines = vec![
        format!(
            "- bridge / host loopback throughput (median): {:.0} MB/s / {:.0} MB/s = {:.2}",
            medians[0],
            medians[1],
            medians[0] / medians[1]
        ),
        format!(
            "- in-container loopback / host loopback (median): {:.0} MB/s / {:.0} MB/s = {:.2} (the container's own cost, without the bridge)",
            medians[2],
            medians[1],
            medians[2] / medians[1]
        ),
        format!(
            "- bridge / in-container loopback (median): {:.0} MB/s / {:.0} MB/s = {:.2} (the veth-bridge-veth path's cost)",
            medians[0],
            medians[2],
            medians[0] / medians[2]
        ),
    ];
    (t, lines)
}

struct Report<'a> {
    opts: &'a Options,
    names: &'a Names,
    machine: Vec<(String, String)>,
    load: String,
    versions: Vec<(String, String)>,
    busybox: String,
    command_lines: Vec<String>,
    env: &'a Env,
    fifo_dir: &'a Path,
    latency_table: String,
    latency_lines: Vec<String>,
    tput_table: String,
    tput_lines: Vec<String>,
    notes: Vec<String>,
}

impl Report<'_> {
    fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{SECTION}\n");
        let _ = writeln!(
            s,
            "What berth's bridge networking costs: the start-up time it adds to a container, and the throughput of the veth-bridge-veth path against the host's loopback. Regenerate with `cargo xtask bench network --runs {}` (add `--berth PATH` to benchmark a given binary).\n",
            self.opts.runs
        );
        let _ = writeln!(
            s,
            "The scratch engine (temporary `--root` and `--run-root`, the busybox test image loaded and tagged `{IMAGE}`) has its own host-global names in `<root>/config.json`: default bridge `{}`, user-network bridge prefix `{}`, nft table `ip {}`, default subnet `{DEFAULT_SUBNET}`; so it never touches a user's `berth0` or `ip berth`. Its bridges and table are deleted at the end.\n",
            self.names.bridge, self.names.prefix, self.names.table
        );
        let _ = writeln!(s, "- date: {}", date_utc());
        for (k, v) in &self.machine {
            let _ = writeln!(s, "- {k}: {v}");
        }
        let _ = writeln!(s, "- load average: {}", self.load);
        for (k, v) in &self.versions {
            let _ = writeln!(s, "- {k}: {v}");
        }
        let _ = writeln!(s, "- busybox (host and test image): {}", self.busybox);
        let nf = std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|_| "absent (br_netfilter not loaded)".into());
        let _ = writeln!(
            s,
            "- net.bridge.bridge-nf-call-iptables: {nf} (1: bridged IPv4 traffic passes the netfilter hooks, conntrack included)"
        );

        let _ = writeln!(s, "\n### Start latency\n");
        let _ = writeln!(
            s,
            "Wall-clock time of `run --rm {IMAGE} true`, from spawning the command to its exit, on the default bridge network (attach: veth pair, address, route, in the monitor between the runtime's create and start; detach after the exit: the rules and the address before the exit is reported, the veth pair by the monitor after it, so that deletion's RCU wait is not in the command's time but its CPU work overlaps the next run) against `--network none` (a fresh, empty network namespace). {} timed runs each after {} warm-up round(s), interleaved (one run of each in turn, the order rotating every round); output captured, stdin /dev/null.\n",
            self.opts.runs,
            self.opts.warmup.max(1)
        );
        s.push_str(&self.latency_table);
        s.push('\n');
        for l in &self.latency_lines {
            let _ = writeln!(s, "{l}");
        }
        let _ = writeln!(s, "\nCommand lines:\n\n```");
        for c in &self.command_lines {
            let _ = writeln!(s, "{c}");
        }
        let _ = writeln!(s, "```");

        let _ = writeln!(s, "\n### Throughput\n");
        let _ = writeln!(
            s,
            "{MIB} MiB ({:.1} MB) of zeros through busybox `nc`, per path {TRANSFERS} timed transfers after one warm-up, the three paths interleaved (the order rotating). Container to container: a server container on the user-defined network `{NET}` (`network create --subnet {NET_SUBNET}`, bridge `{}<id>`) at `--ip {SERVER_IP}` running `sleep 3600 | nc -l -p {PORT} > /dev/null`, and a client container on the same network, both started anew for every transfer. Host loopback: the same busybox binary as two host processes on 127.0.0.1 (the server's stdin an open pipe, for the same reason). Inside one container: server and client in one container on the same network, talking over the container's own loopback, to separate what the container costs (seccomp, namespaces) from what the veth-bridge-veth path costs. The client in both cases is the same script, started before the clock and waiting on a FIFO; the time runs from the host writing the go signal to the FIFO until it reads the pipeline's exit status from a second FIFO (after `nc` got the server's EOF, so all bytes were received), so no container start-up is counted; dd's record count (`{MIB}+0 records out`) and nc's exit status are checked. MB = 10^6 bytes.\n",
            super::mb(MIB << 20),
            self.names.prefix
        );
        s.push_str(&self.tput_table);
        s.push('\n');
        for l in &self.tput_lines {
            let _ = writeln!(s, "{l}");
        }
        let b = |a: &[&str]| self.env.argv(a).join(" ");
        let _ = writeln!(s, "\nCommand lines (`<i>` = the transfer):\n\n```");
        let _ = writeln!(
            s,
            "{}",
            b(&["network", "create", "--subnet", NET_SUBNET, NET])
        );
        let _ = writeln!(
            s,
            "{} --name nsrv-<i> --network {NET} --ip {SERVER_IP} {IMAGE} sh -c 'sleep 3600 | nc -l -p {PORT} > /dev/null'",
            b(&["run", "-d"])
        );
        let _ = writeln!(
            s,
            "{} --name ncli-<i> --network {NET} -v {}:/x {IMAGE} sh -c '{}'",
            b(&["run", "-d"]),
            self.fifo_dir.display(),
            client_script("/x", "", SERVER_IP)
        );
        let _ = writeln!(
            s,
            "{} --name nlo-<i> --network {NET} -v {}:/x {IMAGE} sh -c 'sleep 3600 | nc -l -p {PORT} > /dev/null & {}'",
            b(&["run", "-d"]),
            self.fifo_dir.display(),
            client_script("/x", "", "127.0.0.1")
        );
        let _ = writeln!(s, "{BUSYBOX} nc -l -p {PORT}");
        let _ = writeln!(
            s,
            "{BUSYBOX} sh -c '{}'",
            client_script(
                &self.fifo_dir.display().to_string(),
                &format!("{BUSYBOX} "),
                "127.0.0.1"
            )
        );
        let _ = writeln!(s, "```");

        let _ = writeln!(s, "\nPeers skipped or excluded:\n");
        if self.notes.is_empty() {
            let _ = writeln!(s, "- none");
        }
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s, "\nLeft behind after the benchmark: {LEFTOVERS}.\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limits() {
        let n = Names::new();
        assert!(n.bridge.len() <= 15);
        assert!(n.prefix.len() <= 11);
        assert_ne!(n.table, "berth");
    }

    #[test]
    fn client_script_shapes() {
        let s = client_script("/x", "", "10.0.0.1");
        assert!(s.starts_with("read _ < /x/go; dd if=/dev/zero bs=1M count=256"));
        assert!(s.ends_with("| nc 10.0.0.1 5001; echo $? > /x/done"));
    }
}
