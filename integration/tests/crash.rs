//! Store consistency: `system check` on corrupted stores, the crash matrix (commands
//! SIGKILLed at seeded random points) and concurrent mixed operations on one store.
//!
//! `BERTH_CRASH_TRIALS` (default 4) sets the trials per command of the matrix and
//! `BERTH_CRASH_SEED` the seed of the kill points (printed either way).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use berth_integration::registry::LocalRegistry;
use berth_integration::{host_links, path_str, privileged, text, Engine};

/// `system check`: (exit code, stdout).
fn check(e: &Engine, repair: bool) -> (i32, String) {
    let args: &[&str] = if repair {
        &["system", "check", "--repair"]
    } else {
        &["system", "check"]
    };
    // A lock a killed command's leftover still holds would make it wait forever.
    let out = tempfile::tempfile().expect("temp file");
    let mut child = e
        .command(args)
        .stdout(out.try_clone().expect("dup"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn berth");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth {args:?} did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    let mut out = out;
    std::io::Seek::rewind(&mut out).expect("rewind");
    std::io::Read::read_to_string(&mut out, &mut stdout).expect("read");
    (status.code().unwrap_or(-1), stdout)
}

fn assert_consistent(e: &Engine, context: &str) {
    let (code, out) = check(e, false);
    assert_eq!(code, 0, "{context}: system check found problems:\n{out}");
    assert!(out.contains("consistent:"), "{context}: {out}");
}

#[test]
fn check_reports_corruption_and_repair_removes_only_leftovers() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        "--network",
        "none",
        "bb",
        "sleep",
        "1000",
    ]);
    let (code, out) = check(&e, false);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("consistent: 3 blobs, 1 images, 2 snapshots, 1 containers checked; 0 problems, 0 leftovers"),
        "{out}"
    );

    // Leftovers of killed commands: an ingest, a snapshot dir, a container dir
    // without record (with the name it claimed). Reported, exit 0, removed by --repair.
    let root = e.root();
    std::fs::create_dir_all(root.join("content/ingest/deadbeef")).unwrap();
    std::fs::write(root.join("content/ingest/deadbeef/data"), b"partial").unwrap();
    std::fs::create_dir_all(root.join("snapshots/4242/fs/etc")).unwrap();
    let ghost = "ab".repeat(32);
    std::fs::create_dir_all(root.join("containers").join(&ghost)).unwrap();
    std::fs::write(root.join("containers/names/ghost"), &ghost).unwrap();
    let (code, out) = check(&e, false);
    assert_eq!(code, 0, "{out}");
    for needle in [
        "leftover: interrupted write",
        "leftover: snapshot file",
        "has no record",
    ] {
        assert!(out.contains(needle), "{needle:?} in {out}");
    }
    assert!(out.contains("0 problems, 3 leftovers"), "{out}");
    let (code, out) = check(&e, true);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 leftovers, 3 removed"), "{out}");
    assert!(!root.join("snapshots/4242").exists());
    assert!(!root.join("containers/names/ghost").exists());
    // The container and image are untouched and still work.
    assert_eq!(e.ok(&["exec", "c1", "echo", "alive"]).trim(), "alive");

    // A flipped byte in a layer blob is a problem: exit 1, and --repair keeps the blob.
    let layer = e
        .blobs()
        .into_iter()
        .map(|(hex, _)| root.join("content/blobs/sha256").join(hex))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[100] ^= 0x55;
    std::fs::write(&layer, &bytes).unwrap();
    let (code, out) = check(&e, true);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is corrupt"), "{out}");
    assert!(out.contains("INCONSISTENT"), "{out}");
    assert!(
        layer.exists(),
        "repair must not remove a blob an image needs"
    );
    bytes[100] ^= 0x55;
    std::fs::write(&layer, &bytes).unwrap();
    assert_consistent(&e, "blob restored");

    // A snapshot's parent deleted from the metadata: the container's chain is broken.
    let meta_path = root.join("snapshots/metadata.json");
    let saved = std::fs::read(&meta_path).unwrap();
    let mut meta: serde_json::Value = serde_json::from_slice(&saved).unwrap();
    let snaps = meta["snapshots"].as_object_mut().unwrap();
    let parent = snaps
        .iter()
        .find(|(k, _)| !k.starts_with("container-"))
        .map(|(k, _)| k.clone())
        .unwrap();
    snaps.remove(&parent);
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let (code, out) = check(&e, false);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("its parent {parent} is missing")),
        "{out}"
    );
    assert!(out.contains("its image's layer snapshot"), "{out}");
    std::fs::write(&meta_path, saved).unwrap();
    assert_consistent(&e, "metadata restored");
    // A half-written container record is a problem, and repair keeps its directory.
    e.ok(&["create", "--name", "c2", "--network", "none", "bb", "true"]);
    let c2 = e.inspect("c2")["Id"].as_str().unwrap().to_string();
    let record = root.join("containers").join(&c2).join("container.json");
    let saved = std::fs::read(&record).unwrap();
    std::fs::write(&record, &saved[..saved.len() / 2]).unwrap();
    let (code, out) = check(&e, true);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("problem: container record {c2}")),
        "{out}"
    );
    assert!(
        record.exists(),
        "repair must not remove an unreadable record"
    );
    std::fs::write(&record, saved).unwrap();
    assert_consistent(&e, "record restored");
    e.ok(&["rm", "-f", "c1", "c2"]);
    assert_consistent(&e, "after rm");
    e.assert_no_mounts();
}

/// A small xorshift generator: the kill points are reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed() -> u64 {
    std::env::var("BERTH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        })
}

/// Run `berth ARGS` and SIGKILL it after `delay`; true when it was still running.
/// The cgroup prefix of the build containers it may make goes into `ids`.
fn kill_after(e: &Engine, args: &[&str], delay: Duration, ids: &mut BTreeSet<String>) -> bool {
    let mut child = e
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn berth");
    ids.insert(format!("build-{}-", child.id()));
    let deadline = Instant::now() + delay;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return false;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let _ = child.wait();
    true
}

/// How long `berth ARGS` takes uninterrupted (it must succeed).
fn timed(e: &Engine, args: &[&str]) -> Duration {
    let start = Instant::now();
    e.ok(args);
    start.elapsed()
}

/// A re-run after a kill: success, or the object is already gone (the killed
/// command finished its work) with a one-line error saying so.
fn rerun_or_gone(e: &Engine, args: &[&str], gone: &str) {
    let out = e.run(args);
    if out.status.success() {
        return;
    }
    let err = text(&out.stderr);
    assert!(
        err.contains(gone) && err.trim_end().lines().count() == 1,
        "re-run of berth {args:?} failed: {err}"
    );
}

/// Everything of this engine still on the host: mounts under its root, veths on its
/// bridges, nft rules beyond `baseline`, cgroups and processes of `ids`.
fn host_leftovers(e: &Engine, baseline: &BTreeSet<String>, ids: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let root = e.tmp.path();
    for l in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        if l.contains(path_str(root)) {
            out.push(format!("mount {l}"));
        }
    }
    let (bridge, prefix, _) = e.net_names();
    for link in host_links() {
        if link != bridge && !link.starts_with(&prefix) {
            continue;
        }
        let ports = std::process::Command::new("ip")
            .args(["-br", "link", "show", "master", &link])
            .output()
            .expect("ip");
        for p in text(&ports.stdout).lines() {
            out.push(format!("veth on {link}: {p}"));
        }
    }
    for rule in nft_rules(e) {
        if !baseline.contains(&rule) {
            out.push(format!("nft rule {rule}"));
        }
    }
    let mut cgroups = Vec::new();
    collect_dirs(Path::new("/sys/fs/cgroup"), 0, &mut cgroups);
    for dir in cgroups {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if ids.iter().any(|id| name.starts_with(id.as_str())) {
            out.push(format!("cgroup {}", dir.display()));
        }
    }
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains(path_str(root))
            || ids.iter().any(|id| cgroup.contains(id.as_str()));
        if ours && berth_integration::process_alive(pid.parse().unwrap_or(0)) {
            out.push(format!(
                "process {pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    out
}

fn collect_dirs(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 6 {
        return;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.push(entry.path());
            collect_dirs(&entry.path(), depth + 1, out);
        }
    }
}

/// Rule lines of this engine's nft table (handles and counters cut).
fn nft_rules(e: &Engine) -> BTreeSet<String> {
    let (_, _, table) = e.net_names();
    let out = std::process::Command::new("nft")
        .args(["list", "table", "ip", &table])
        .stderr(Stdio::null())
        .output()
        .expect("nft");
    text(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with("table") && !l.starts_with("chain") && l != "}")
        .collect()
}

/// Container ids this engine knows of (records and directories).
fn known_ids(e: &Engine, ids: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(e.root().join("containers"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() == 64 {
            ids.insert(name);
        }
    }
}

struct Row {
    command: &'static str,
    trials: usize,
    killed: usize,
    max_ms: u64,
    leftovers: usize,
}

fn trials() -> usize {
    std::env::var("BERTH_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4)
}

#[test]
fn crash_matrix() {
    if !privileged() {
        return;
    }
    let seed = seed();
    let n = trials();
    println!(
        "crash matrix: seed {seed} (BERTH_CRASH_SEED), {n} trials per command (BERTH_CRASH_TRIALS)"
    );
    let mut rng = Rng(seed);
    let mut rows = Vec::new();
    let mut ids = BTreeSet::new();

    let e = Engine::with_busybox();
    // The nft rules of an engine with no containers: what may stay.
    e.ok(&["run", "--rm", "bb", "true"]);
    let baseline = nft_rules(&e);

    // Every kill point of a command falls in [0, its uninterrupted time * 1.2].
    let mut matrix = |command: &'static str,
                      ids: &mut BTreeSet<String>,
                      rng: &mut Rng,
                      setup: &dyn Fn(usize),
                      args: &dyn Fn(usize) -> Vec<String>,
                      rerun: &dyn Fn(usize)| {
        setup(0);
        let a = args(0);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let span = timed(&e, &a).as_millis() as u64 * 6 / 5 + 1;
        rerun(0);
        let mut killed = 0;
        let mut max_ms = 0;
        for t in 1..=n {
            setup(t);
            let a = args(t);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            let ms = rng.below(span);
            max_ms = max_ms.max(ms);
            known_ids(&e, ids);
            if kill_after(&e, &a, Duration::from_millis(ms), ids) {
                killed += 1;
            }
            known_ids(&e, ids);
            assert_consistent(&e, &format!("{command} killed after {ms} ms (seed {seed})"));
            rerun(t);
            known_ids(&e, ids);
            assert_consistent(
                &e,
                &format!("{command} re-run after a kill at {ms} ms (seed {seed})"),
            );
        }
        e.ok(&["system", "prune", "-f", "--volumes"]);
        let (code, out) = check(&e, false);
        assert_eq!(code, 0, "{out}");
        let mut left = host_leftovers(&e, &baseline, ids);
        if !out.contains(" 0 leftovers") {
            left.push(format!("store: {out}"));
        }
        assert!(
            left.is_empty(),
            "{command}: left after system prune (seed {seed}): {left:#?}"
        );
        rows.push(Row {
            command,
            trials: n,
            killed,
            max_ms,
            leftovers: left.len(),
        });
    };

    // pull, from a real registry on loopback.
    let registry = LocalRegistry::start(None);
    let remote = format!("{}/crash/busybox:1", registry.addr);
    e.ok(&["tag", "bb", &remote]);
    e.ok(&["push", "-q", &remote]);
    e.ok(&["rmi", &remote]);
    matrix(
        "pull",
        &mut ids,
        &mut rng,
        &|_| {
            let _ = e.run(&["rmi", &remote]);
        },
        &|_| vec!["pull".into(), "-q".into(), remote.clone()],
        &|_| {
            e.ok(&["pull", "-q", &remote]);
        },
    );

    // build: a RUN step and a COPY, without the cache so every trial works.
    let ctx = e.tmp.path().join("crash-ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb\nRUN echo built > /built && sleep 0.2\nCOPY f /f\n",
    )
    .unwrap();
    std::fs::write(ctx.join("f"), "file\n".repeat(1000)).unwrap();
    let build = vec![
        "build".to_string(),
        "-q".into(),
        "--no-cache".into(),
        "-t".into(),
        "crash-build".into(),
        path_str(&ctx).to_string(),
    ];
    matrix(
        "build",
        &mut ids,
        &mut rng,
        &|_| {},
        &|_| build.clone(),
        &|_| {
            let a: Vec<&str> = build.iter().map(String::as_str).collect();
            e.ok(&a);
        },
    );

    // run -d on the default bridge, with a published port.
    let run = |t: usize| -> Vec<String> {
        ["run", "-d", "-p", "127.0.0.1::80", "--name"]
            .iter()
            .map(|s| s.to_string())
            .chain([
                format!("crash-run-{t}"),
                "bb".into(),
                "sleep".into(),
                "1000".into(),
            ])
            .collect()
    };
    matrix("run -d", &mut ids, &mut rng, &|_| {}, &run, &|t| {
        let name = format!("crash-run-{t}");
        rerun_or_gone(&e, &["rm", "-f", &name], "no such container");
        let a = run(t);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        e.ok(&a);
        e.ok(&["rm", "-f", &name]);
    });

    // rm -f of a running container.
    matrix(
        "rm",
        &mut ids,
        &mut rng,
        &|t| {
            e.ok(&[
                "run",
                "-d",
                "--name",
                &format!("crash-rm-{t}"),
                "bb",
                "sleep",
                "1000",
            ]);
        },
        &|t| vec!["rm".into(), "-f".into(), format!("crash-rm-{t}")],
        &|t| {
            rerun_or_gone(
                &e,
                &["rm", "-f", &format!("crash-rm-{t}")],
                "no such container",
            );
            let names = e.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
            assert!(
                !names
                    .lines()
                    .any(|l| l.split(' ').next() == Some(&format!("crash-rm-{t}"))),
                "crash-rm-{t} is still listed after a re-run of rm: {names}"
            );
        },
    );

    // volume rm of a volume holding data.
    matrix(
        "volume rm",
        &mut ids,
        &mut rng,
        &|t| {
            let v = format!("crash-vol-{t}");
            e.ok(&["volume", "create", &v]);
            e.ok(&[
                "run",
                "--rm",
                "--network",
                "none",
                "-v",
                &format!("{v}:/data"),
                "bb",
                "sh",
                "-c",
                "seq 1 20000 > /data/numbers",
            ]);
        },
        &|t| vec!["volume".into(), "rm".into(), format!("crash-vol-{t}")],
        &|t| {
            rerun_or_gone(
                &e,
                &["volume", "rm", &format!("crash-vol-{t}")],
                "no such volume",
            );
            let vols = e.ok(&["volume", "ls", "-q"]);
            assert!(
                !vols.lines().any(|l| l.trim() == format!("crash-vol-{t}")),
                "crash-vol-{t} is still listed after a re-run of volume rm: {vols}"
            );
        },
    );

    // system prune with stopped containers, a network and a volume to remove.
    let subnets: Vec<String> = (0..n + 1).map(|t| e.subnet(t % 40)).collect();
    matrix(
        "system prune",
        &mut ids,
        &mut rng,
        &|t| {
            e.ok(&[
                "run",
                "--network",
                "none",
                "--name",
                &format!("crash-p-{t}"),
                "bb",
                "true",
            ]);
            e.ok(&["create", "bb", "true"]);
            e.ok(&[
                "network",
                "create",
                "--subnet",
                &subnets[t],
                &format!("crash-net-{t}"),
            ]);
            e.ok(&["volume", "create", &format!("crash-pv-{t}")]);
        },
        &|_| {
            vec![
                "system".into(),
                "prune".into(),
                "-f".into(),
                "--volumes".into(),
            ]
        },
        &|_| {
            e.ok(&["system", "prune", "-f", "--volumes"]);
        },
    );

    println!(
        "{:<14} {:>6} {:>7} {:>12} {:>10}",
        "command", "trials", "killed", "max kill ms", "leftovers"
    );
    for r in &rows {
        println!(
            "{:<14} {:>6} {:>7} {:>12} {:>10}",
            r.command, r.trials, r.killed, r.max_ms, r.leftovers
        );
    }
    let total: usize = rows.iter().map(|r| r.trials).sum();
    println!(
        "crash matrix: {} commands, {total} trials, {} killed mid-command, leftovers found: {}",
        rows.len(),
        rows.iter().map(|r| r.killed).sum::<usize>(),
        rows.iter().map(|r| r.leftovers).sum::<usize>()
    );
    drop(registry);
}

/// Pids of processes whose command line is exactly `argv`.
fn pids_running(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid: &i32| {
            std::fs::read(format!("/proc/{pid}/cmdline")).ok() == Some(want.clone())
        })
        .collect()
}

/// A build killed in its second step leaves the first step's layer snapshot
/// under the second step's working snapshot: one `system prune` removes both
/// (CI once found the layer left, when prune removed only the working one).
#[test]
fn prune_after_a_build_killed_in_a_later_step_leaves_nothing() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let ctx = e.tmp.path().join("killed-build");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb\nRUN echo one > /one\nRUN sleep 37.25\n",
    )
    .unwrap();
    let mut child = e
        .command(&["build", "-q", "--no-cache", "-t", "killed", path_str(&ctx)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn berth");
    berth_integration::wait_until(60, "the build's second step to run", || {
        !pids_running(&["sleep", "37.25"]).is_empty()
    });
    let _ = child.kill();
    let _ = child.wait();
    for pid in pids_running(&["sleep", "37.25"]) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    let (_, out) = check(&e, false);
    assert!(out.contains("is used by nothing"), "{out}");
    // Its scratch directories (state disk and run root) are leftovers too.
    let scratch = e.root().join(format!("builder/scratch-{}", child.id()));
    assert!(scratch.exists());
    assert_eq!(
        out.matches("belongs to a build that is gone").count(),
        2,
        "{out}"
    );
    e.ok(&["system", "prune", "-f"]);
    assert!(!scratch.exists());
    let (code, out) = check(&e, false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" 0 leftovers"), "after system prune: {out}");
}

/// Output of a failed operation is acceptable when it is one clear line.
fn clear_failure(out: &Output) -> Result<(), String> {
    let err = text(&out.stderr);
    let bad = [
        "panicked",
        "EOF while parsing",
        "RUST_BACKTRACE",
        "os error 2)",
    ];
    if out.status.code() != Some(125) && out.status.code() != Some(1) {
        return Err(format!("exit {:?}: {err}", out.status.code()));
    }
    if err.trim_end().lines().count() != 1 || bad.iter().any(|b| err.contains(b)) {
        return Err(format!("unclear error: {err:?}"));
    }
    Ok(())
}

#[test]
fn concurrent_mixed_operations() {
    if !privileged() {
        return;
    }
    const WORKERS: usize = 4;
    const OPS: usize = 25;
    let seed = seed();
    println!("concurrency: seed {seed}, {WORKERS} processes x {OPS} operations");
    let e = Engine::with_busybox();
    let registry = LocalRegistry::start(None);
    let remote = format!("{}/conc/busybox:1", registry.addr);
    e.ok(&["tag", "bb", &remote]);
    e.ok(&["push", "-q", &remote]);
    let subnets: Vec<String> = (0..WORKERS * 5).map(|k| e.subnet(k)).collect();

    let results = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                let e = &e;
                let remote = &remote;
                let subnets = &subnets;
                s.spawn(move || {
                    let mut rng = Rng(seed.wrapping_add(w as u64 * 0x9e37_79b9) | 1);
                    let mut log = Vec::new();
                    for i in 0..OPS {
                        let k = rng.below(8);
                        let shared = rng.below(4);
                        let args: Vec<String> = match k {
                            0 => vec![
                                "run".into(),
                                "-d".into(),
                                "--network".into(),
                                "none".into(),
                                "--name".into(),
                                format!("w{w}-{shared}"),
                                "bb".into(),
                                "sleep".into(),
                                "100".into(),
                            ],
                            1 => vec![
                                "rm".into(),
                                "-f".into(),
                                format!("w{}-{shared}", rng.below(WORKERS as u64)),
                            ],
                            2 => vec!["pull".into(), "-q".into(), remote.clone()],
                            3 => vec!["tag".into(), "bb".into(), format!("shared:{shared}")],
                            4 => vec!["rmi".into(), format!("shared:{shared}")],
                            5 => vec!["volume".into(), "create".into(), format!("vol-{shared}")],
                            6 => vec!["volume".into(), "rm".into(), format!("vol-{shared}")],
                            _ => {
                                if rng.below(2) == 0 {
                                    vec![
                                        "network".into(),
                                        "create".into(),
                                        "--subnet".into(),
                                        subnets[w * 5 + shared as usize].clone(),
                                        format!("net-{w}-{shared}"),
                                    ]
                                } else {
                                    vec!["network".into(), "rm".into(), format!("net-{w}-{shared}")]
                                }
                            }
                        };
                        let a: Vec<&str> = args.iter().map(String::as_str).collect();
                        let out = e.run(&a);
                        let verdict = if out.status.success() {
                            Ok(None)
                        } else {
                            clear_failure(&out).map(|_| Some(text(&out.stderr).trim().to_string()))
                        };
                        log.push((i, args.join(" "), verdict));
                    }
                    log
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect::<Vec<_>>()
    });
    let mut ok = 0;
    let mut failed = 0;
    let mut unclear = Vec::new();
    let mut messages = BTreeSet::new();
    for (w, log) in results.iter().enumerate() {
        for (i, op, verdict) in log {
            match verdict {
                Ok(None) => ok += 1,
                Ok(Some(message)) => {
                    failed += 1;
                    messages.insert(message.clone());
                }
                Err(why) => unclear.push(format!("worker {w} op {i} `{op}`: {why}")),
            }
        }
    }
    println!(
        "concurrency: {} operations, {ok} succeeded, {failed} failed with a clear error, {} unclear",
        WORKERS * OPS,
        unclear.len()
    );
    for m in messages.iter().take(12) {
        println!("  clear failure: {m}");
    }
    assert!(unclear.is_empty(), "{unclear:#?}");
    assert_consistent(&e, "after the concurrent operations");
    for id in e.ok(&["ps", "-a", "-q"]).split_whitespace() {
        e.ok(&["rm", "-f", id]);
    }
    e.ok(&["system", "prune", "-f", "--volumes"]);
    let (code, out) = check(&e, false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" 0 leftovers"), "{out}");
    e.assert_no_mounts();
    drop(registry);
}

/// `rm -f` while a `start` of the same container is under way: the removal
/// waits for the start to finish (then kills what it started) or wins before
/// it begins; either way both commands end clearly and nothing is left.
/// (Before the start claimed the record, rm removed the rootfs under a
/// starting container: "sleep: not found", "set sysctl ...: No such file".)
#[test]
fn rm_force_racing_a_start_ends_clearly_and_leaves_nothing() {
    if !privileged() {
        return;
    }
    const ROUNDS: u64 = 12;
    let e = Engine::with_busybox();
    let argv = ["sleep", "41.5"];
    let mut started = 0;
    for round in 0..ROUNDS {
        let name = format!("race{round}");
        e.ok(&[
            "create",
            "--network",
            "none",
            "--name",
            &name,
            "bb",
            argv[0],
            argv[1],
        ]);
        let (start, rm) = std::thread::scope(|s| {
            let start = s.spawn(|| e.run(&["start", &name]));
            // Spread the removal over the start's phases (spawn, mount, runtime).
            std::thread::sleep(Duration::from_millis(round * 4));
            let rm = e.run(&["rm", "-f", &name]);
            (start.join().expect("start"), rm)
        });
        expect_clear(&format!("round {round}: start"), &start);
        assert!(
            rm.status.success(),
            "round {round}: rm -f failed: {}",
            text(&rm.stderr)
        );
        if start.status.success() {
            started += 1;
        } else {
            println!("round {round}: start: {}", text(&start.stderr).trim());
        }
        assert!(
            e.run(&["inspect", &name]).status.code() != Some(0),
            "round {round}: the container is still there"
        );
        e.assert_no_mounts();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pids_running(&argv).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            pids_running(&argv),
            Vec::<i32>::new(),
            "round {round}: the process outlived rm -f"
        );
    }
    println!("rm -f racing start: {started} of {ROUNDS} starts succeeded before the removal");
    assert_consistent(&e, "after the races");
}

fn expect_clear(what: &str, out: &Output) {
    if !out.status.success() {
        if let Err(why) = clear_failure(out) {
            panic!("{what}: {why}");
        }
    }
}

/// An ext4 filesystem in a file, loop-mounted; unmounted when dropped.
struct LoopDisk {
    image: PathBuf,
    mounted: PathBuf,
}

impl LoopDisk {
    /// A new `size` ext4 in `image`, mounted on `at`.
    fn create(image: &Path, size: &str, at: &Path) -> LoopDisk {
        sh_ok("truncate", &["-s", size, path_str(image)]);
        sh_ok("mkfs.ext4", &["-q", "-F", path_str(image)]);
        LoopDisk::mount(image, at)
    }

    fn mount(image: &Path, at: &Path) -> LoopDisk {
        std::fs::create_dir_all(at).unwrap();
        sh_ok("mount", &["-o", "loop", path_str(image), path_str(at)]);
        LoopDisk {
            image: image.to_path_buf(),
            mounted: at.to_path_buf(),
        }
    }

    /// The disk as a power loss now would leave it: a copy of what has reached
    /// the device (data still in the page cache of its filesystem has not).
    fn as_after_power_loss(&self, copy: &Path, at: &Path) -> LoopDisk {
        sh_ok(
            "cp",
            &["--sparse=always", path_str(&self.image), path_str(copy)],
        );
        LoopDisk::mount(copy, at)
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.mounted)
            .status();
    }
}

fn sh_ok(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    berth_integration::expect_success(&format!("{cmd} {args:?}"), &out);
}

/// Regular files under `dir` (relative path, contents).
fn regular_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let t = entry.file_type().unwrap();
            if t.is_dir() {
                todo.push(entry.path());
            } else if t.is_file() {
                let rel = entry.path().strip_prefix(dir).unwrap().to_path_buf();
                out.push((rel, std::fs::read(entry.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// `berth --root ROOT ARGS` with `e`'s other settings; (success, stderr).
fn berth_at(e: &Engine, root: &Path, args: &[&str]) -> (bool, String) {
    let out = e.command_at(root, args).output().expect("run berth");
    (out.status.success(), text(&out.stderr))
}

/// Rewrites a snapshotter's metadata.json with `edit` applied to every record.
fn edit_snapshot_records(root: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = root.join("snapshots/metadata.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for record in meta["snapshots"].as_object_mut().unwrap().values_mut() {
        edit(record);
    }
    std::fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
}

/// Records still marked as not flushed to disk.
fn unflushed(root: &Path) -> usize {
    let meta = std::fs::read_to_string(root.join("snapshots/metadata.json")).unwrap();
    meta.matches("\"unflushed\"").count()
}

/// A power loss just after `load` loses nothing: a commit does not wait for the
/// disk, but its record keeps the boot id, and the first command after the
/// restart unpacks again, from the fsynced blob, every layer whose files may not
/// have reached the disk (containerd#8895: a layer recorded as unpacked came back
/// with empty files, and every image sharing it trusted them). A later command of
/// the same boot flushes them instead.
#[test]
fn a_power_loss_after_load_loses_no_layer_file() {
    if !privileged() {
        return;
    }
    let e = Engine::new();
    let tar = e.busybox_oci_tar();
    let root = e.root();
    let config = std::fs::read(root.join("config.json")).unwrap();
    let disk = LoopDisk::create(&e.tmp.path().join("disk.img"), "256M", &root);
    std::fs::write(root.join("config.json"), config).unwrap();
    std::fs::File::open(root.join("config.json"))
        .and_then(|f| f.sync_all())
        .unwrap();
    e.ok(&["load", "-i", path_str(&tar)]);
    assert_eq!(unflushed(&root), 1, "the layer's record is marked");
    let after =
        disk.as_after_power_loss(&e.tmp.path().join("after.img"), &e.tmp.path().join("after"));

    // What the power loss left, then the restart: a new boot id.
    let layer_files = |top: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(top.join("snapshots")).unwrap().flatten() {
            let fs = entry.path().join("fs");
            if fs.is_dir() {
                let id = PathBuf::from(entry.file_name());
                all.extend(regular_files(&fs).into_iter().map(|(p, d)| (id.join(p), d)));
            }
        }
        all.sort();
        all
    };
    let before = layer_files(&root);
    assert!(!before.is_empty(), "no layer files to check");
    let lost = before
        .iter()
        .filter(|f| !layer_files(&after.mounted).contains(f))
        .count();
    println!("files the power loss took: {lost} of {}", before.len());
    edit_snapshot_records(&after.mounted, |r| {
        if r.get("unflushed").is_some() {
            r["unflushed"] = "00000000-0000-0000-0000-000000000000".into();
        }
    });
    let (ok, err) = berth_at(&e, &after.mounted, &["images", "-q"]);
    assert!(ok, "{err}");
    assert!(err.contains("unpacking layer sha256:"), "{err}");
    assert_eq!(
        layer_files(&after.mounted),
        before,
        "files after the restore"
    );
    assert_eq!(unflushed(&after.mounted), 0);
    let (ok, err) = berth_at(&e, &after.mounted, &["images", "-q"]);
    assert!(
        ok && err.is_empty(),
        "a second command restores nothing: {err}"
    );
    drop(after);

    // Same boot: a command 30 s after the commit flushes and unmarks it.
    e.ok(&["images"]);
    assert_eq!(unflushed(&root), 1, "not yet due");
    edit_snapshot_records(&root, |r| {
        r["created"] = serde_json::json!({"secs_since_epoch": 1, "nanos_since_epoch": 0});
    });
    e.ok(&["images"]);
    assert_eq!(unflushed(&root), 0, "flushed");
    drop(disk);
}

/// After a restart, a build reusing from its cache a layer that no image has
/// (an earlier stage's) and whose files did not reach the disk gets the layer's
/// real files: the layer is unpacked again or dropped, never trusted.
#[test]
fn a_build_after_a_restart_does_not_trust_unflushed_cached_layers() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let ctx = e.tmp.path().join("stages");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb AS builder\nRUN echo made-in-stage > /made\n\
         FROM bb\nCOPY --from=builder /made /made\n",
    )
    .unwrap();
    let build = ["build", "-q", "-t", "staged", path_str(&ctx)];
    e.ok(&build);
    // The restart: every layer's files lost (here: /made emptied wherever it is),
    // and a new boot id.
    let root = e.root();
    for entry in std::fs::read_dir(root.join("snapshots")).unwrap().flatten() {
        let made = entry.path().join("fs/made");
        if made.exists() {
            std::fs::write(&made, b"").unwrap();
        }
    }
    edit_snapshot_records(&root, |r| {
        if r.get("unflushed").is_some() {
            r["unflushed"] = "00000000-0000-0000-0000-000000000000".into();
        }
    });
    e.ok(&build);
    let out = e.ok(&["run", "--rm", "--network", "none", "staged", "cat", "/made"]);
    assert_eq!(out, "made-in-stage\n");
    let meta = std::fs::read_to_string(root.join("snapshots/metadata.json")).unwrap();
    assert!(
        !meta.contains("00000000-0000-0000-0000-000000000000"),
        "a layer unflushed before the restart is still there: {meta}"
    );
}
