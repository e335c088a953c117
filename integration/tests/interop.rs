//! berth's runtime as the OCI runtime of real clients nobody here wrote:
//! containerd (through `ctr` and containerd-shim-runc-v2), Docker 20.10 and
//! Podman, each executing `berth-runc` with runc's command line.
//!
//! Each test installs its client from Debian when missing (and skips, saying
//! why, only if that fails), starts the daemons it needs with state, sockets
//! and bridge of its own, and stops them by pid.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_integration::daemon::{
    berth_runc, cgroup_parent_dirs, ensure_tool, in_pty, Daemon, Leftovers,
};
use berth_integration::{
    cgroup_dirs_named, expect_success, path_str, privileged, sh, text, unique_id, wait_until,
    Engine, Env,
};

/// The busybox test image as a docker-archive made by `berth save`, named `bb:latest`.
fn busybox_archive(engine: &Engine) -> PathBuf {
    let tar = engine.tmp.path().join("bb-docker-archive.tar");
    engine.ok(&["save", "-o", path_str(&tar), "bb"]);
    tar
}

/// Containers berth still knows under the runtime root the client gave it (should be
/// none after a test).
fn leftover_containers(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("berth's runtime root {}: {e}", root.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Remove the (now empty) parent cgroup `name` a client made in every hierarchy;
/// fails if a container's cgroup is still in it.
fn remove_parent_cgroup(name: &str) {
    for dir in cgroup_parent_dirs(name) {
        if let Err(e) = std::fs::remove_dir(&dir) {
            let gone = matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            );
            assert!(gone, "{}: {e}", dir.display());
        }
    }
}

/// The containerd configuration this test uses (docs/kubernetes.md shows it, plus
/// the CRI runtime handler a kubelet needs).
fn containerd_config(dir: &Path, runc: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
# ctr needs no CRI; a Kubernetes node keeps it and adds the handler below.
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth.options]
    BinaryName = "{runc}"
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        sock = dir.join("containerd.sock").display(),
        runc = runc.display(),
    )
}

#[test]
fn containerd_runs_execs_and_kills_through_berth_runc() {
    if !privileged() || !ensure_tool("containerd", "/usr/bin/containerd") {
        return;
    }
    let engine = Engine::with_busybox();
    let archive = busybox_archive(&engine);
    let runc = berth_runc(engine.tmp.path());
    let dir = engine.tmp.path().join("containerd");
    let _leftovers = Leftovers::new(&dir, &format!("berth-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(&config, containerd_config(&dir, &runc)).unwrap();
    let sock = dir.join("containerd.sock");
    let daemon = Daemon::start(
        "containerd",
        Command::new("containerd").arg("--config").arg(&config),
        &dir.join("containerd.log"),
        || sock.exists(),
    );
    // A namespace of our own: the shim keeps runc state in /run/containerd/runc/<ns>.
    let ns = format!("berth-it-{}", std::process::id());
    let runc_root = PathBuf::from("/run/containerd/runc").join(&ns);
    let ctr_line = format!("ctr -a {} -n {ns}", sock.display());
    let ctr = |args: &[&str]| -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(&sock)
            .args(["-n", &ns])
            .args(args)
            .output()
            .expect("run ctr")
    };
    let image = "docker.io/library/bb:latest";
    expect_success(
        "ctr image import",
        &ctr(&["image", "import", path_str(&archive)]),
    );
    let runc_flag = format!("--runc-binary={}", runc.display());
    let run = |id: &str, cmd: &[&str]| -> Output {
        let mut args = vec!["run", &runc_flag, "--rm", image, id];
        args.extend_from_slice(cmd);
        ctr(&args)
    };

    // Output and exit codes.
    let out = run("c-echo", &["echo", "hi"]);
    assert_eq!(expect_success("ctr run echo", &out).trim(), "hi");
    let out = run("c-exit", &["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));

    // An error inside berth reaches ctr's message verbatim (through --log-format json).
    let out = run("c-missing", &["nosuchbinary"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(r#"berth: exec: "nosuchbinary": executable file not found in $PATH"#),
        "ctr did not show berth's error: {err}"
    );

    // A terminal: the pty master travels over the shim's console socket.
    let out = in_pty(&format!(
        "{ctr_line} run -t {runc_flag} --rm {image} c-tty sh -c 'tty; [ -t 0 ] && echo stdin-is-tty; exit 3'"
    ));
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{shown}");
    assert!(
        shown.contains("/dev/pts/") && shown.contains("stdin-is-tty"),
        "{shown}"
    );

    // Detached: exec, ps, pause/resume, a signal the process handles, delete.
    expect_success(
        "ctr run -d",
        &ctr(&[
            "run",
            "-d",
            &runc_flag,
            image,
            "c-bg",
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 0.1; done",
        ]),
    );
    let out = ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "c-bg",
        "sh",
        "-c",
        "echo in-exec; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "in-exec");
    // An exec with a terminal gets its own pty through its own console socket.
    let out = in_pty(&format!(
        "{ctr_line} task exec -t --exec-id e2 c-bg sh -c 'tty; [ -t 1 ] && echo exec-tty; exit 5'"
    ));
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{shown}");
    assert!(
        shown.contains("/dev/pts/") && shown.contains("exec-tty"),
        "{shown}"
    );
    let ps = expect_success("ctr task ps", &ctr(&["task", "ps", "c-bg"]));
    assert!(ps.lines().count() >= 2, "no processes: {ps}");
    let status = || expect_success("ctr task ls", &ctr(&["task", "ls"]));
    expect_success("ctr task pause", &ctr(&["task", "pause", "c-bg"]));
    assert!(status().contains("PAUSED"), "{}", status());
    expect_success("ctr task resume", &ctr(&["task", "resume", "c-bg"]));
    assert!(status().contains("RUNNING"), "{}", status());
    expect_success(
        "ctr task kill",
        &ctr(&["task", "kill", "--all", "-s", "SIGTERM", "c-bg"]),
    );
    wait_until(10, "c-bg stops on SIGTERM", || status().contains("STOPPED"));
    expect_success("ctr task rm", &ctr(&["task", "rm", "c-bg"]));
    expect_success("ctr container rm", &ctr(&["container", "rm", "c-bg"]));

    assert_eq!(leftover_containers(&runc_root), Vec::<String>::new());
    drop(daemon);
    let _ = std::fs::remove_dir(&runc_root);
    // containerd's cgroupsPath is /<namespace>/<id>.
    remove_parent_cgroup(&ns);
}

/// A bridge of the test's own for dockerd (`--bridge`), deleted on drop.
struct Bridge(String);

impl Bridge {
    fn new() -> Bridge {
        let pid = std::process::id();
        let name = format!("bdk{:x}", pid);
        let addr = format!("10.199.{}.1/24", pid % 250);
        for args in [
            vec!["link", "add", &name, "type", "bridge"],
            vec!["addr", "add", &addr, "dev", &name],
            vec!["link", "set", &name, "up"],
        ] {
            let out = Command::new("ip").args(&args).output().expect("run ip");
            expect_success(&format!("ip {args:?}"), &out);
        }
        Bridge(name)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// The container's cgroup file `v1_file` (cgroup v1 `controller`) or `v2_file`, read on the host.
fn cgroup_value(pid: &str, controller: &str, v1_file: &str, v2_file: &str) -> String {
    let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read cgroup");
    for line in table.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next().unwrap_or(""), parts.next());
        let path = path.unwrap_or("").trim_start_matches('/');
        let file = if ctrls.split(',').any(|c| c == controller) {
            format!("/sys/fs/cgroup/{controller}/{path}/{v1_file}")
        } else if ctrls.is_empty() {
            format!("/sys/fs/cgroup/{path}/{v2_file}")
        } else {
            continue;
        };
        if let Ok(v) = std::fs::read_to_string(&file) {
            return v.trim().to_string();
        }
    }
    panic!("no {controller} cgroup for {pid}: {table}");
}

#[test]
fn docker_runs_execs_and_stops_through_berth_runc() {
    if !privileged() || !ensure_tool("docker.io", "/usr/sbin/dockerd") {
        return;
    }
    let engine = Engine::with_busybox();
    let archive = busybox_archive(&engine);
    let runc = berth_runc(engine.tmp.path());
    let dir = engine.tmp.path().join("docker");
    let _leftovers = Leftovers::new(&dir, &format!("berth-it-docker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bridge = Bridge::new();
    let sock = dir.join("docker.sock");
    let host = format!("unix://{}", sock.display());
    let cgroup_parent = format!("/berth-it-docker-{}", std::process::id());
    // /usr/bin/docker is the 20.10 client of docker.io (another client may come first in PATH).
    let docker = |args: &[&str]| -> Output {
        Command::new("/usr/bin/docker")
            .args(["--host", &host])
            .args(args)
            .env("DOCKER_CONFIG", dir.join("client"))
            .output()
            .expect("run docker")
    };
    let daemon = Daemon::start(
        "dockerd",
        Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(["--host", &host, "--bridge", &bridge.0])
            // Touch neither the host's firewall nor its forwarding.
            .args(["--iptables=false", "--ip6tables=false", "--ip-masq=false"])
            .args(["--ip-forward=false", "--cgroup-parent", &cgroup_parent])
            .arg(format!("--add-runtime=berth={}", runc.display())),
        &dir.join("dockerd.log"),
        || sock.exists() && docker(&["version"]).status.success(),
    );
    expect_success("docker load", &docker(&["load", "-i", path_str(&archive)]));
    let run = |args: &[&str]| -> Output {
        let mut all = vec!["run", "--runtime", "berth"];
        all.extend_from_slice(args);
        docker(&all)
    };

    let out = run(&["--rm", "bb", "echo", "hi"]);
    assert_eq!(expect_success("docker run echo", &out).trim(), "hi");
    let out = run(&["--rm", "bb", "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let out = run(&["--rm", "bb", "nosuchbinary"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(r#"berth: exec: "nosuchbinary": executable file not found in $PATH"#),
        "docker did not show berth's error: {err}"
    );

    // -d, exec, top, pause/unpause, stop (SIGTERM reaches the handler), rm.
    let script = "trap 'echo got-term; exit 0' TERM; echo started; while true; do sleep 0.1; done";
    expect_success(
        "docker run -d",
        &run(&["-d", "--name", "bg", "bb", "sh", "-c", script]),
    );
    let out = docker(&["exec", "bg", "sh", "-c", "echo in-exec; exit 6"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "in-exec");
    let top = expect_success("docker top", &docker(&["top", "bg"]));
    assert!(top.contains("while true"), "{top}");
    expect_success("docker pause", &docker(&["pause", "bg"]));
    expect_success("docker unpause", &docker(&["unpause", "bg"]));
    expect_success("docker stop", &docker(&["stop", "-t", "10", "bg"]));
    let code = expect_success(
        "inspect",
        &docker(&["inspect", "-f", "{{.State.ExitCode}}", "bg"]),
    );
    assert_eq!(code.trim(), "0", "stopped by SIGTERM, not SIGKILL");
    let logs = expect_success("docker logs", &docker(&["logs", "bg"]));
    assert!(logs.contains("got-term"), "{logs}");
    expect_success("docker rm", &docker(&["rm", "bg"]));

    // -it under a pty: the shim's console socket gets berth's pty master.
    let out = in_pty(&format!(
        "/usr/bin/docker --host {host} run --runtime berth -it --rm bb sh -c 'tty; [ -t 0 ] && echo stdin-is-tty; exit 9'"
    ));
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(9), "{shown}");
    assert!(
        shown.contains("/dev/pts/") && shown.contains("stdin-is-tty"),
        "{shown}"
    );

    // Limits: set on the container's cgroup, changed by `docker update`, and enforced.
    expect_success(
        "docker run -d limited",
        &run(&[
            "-d",
            "--name",
            "lim",
            "--memory",
            "48m",
            "--pids-limit",
            "7",
            "bb",
            "sleep",
            "60",
        ]),
    );
    let pid = expect_success(
        "inspect pid",
        &docker(&["inspect", "-f", "{{.State.Pid}}", "lim"]),
    );
    let pid = pid.trim();
    let memory = || cgroup_value(pid, "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(memory(), (48u64 << 20).to_string());
    assert_eq!(cgroup_value(pid, "pids", "pids.max", "pids.max"), "7");
    expect_success(
        "docker update",
        &docker(&["update", "--memory", "64m", "--memory-swap", "64m", "lim"]),
    );
    assert_eq!(memory(), (64u64 << 20).to_string());
    expect_success("docker rm -f", &docker(&["rm", "-f", "lim"]));
    let out = run(&[
        "--rm",
        "--memory",
        "32m",
        "--memory-swap",
        "32m",
        "bb",
        "sh",
        "-c",
        "a=$(head -c 96m /dev/zero | tr '\\0' x); echo survived",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("survived"));
    let out = run(&[
        "--rm",
        "--pids-limit",
        "5",
        "bb",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait",
    ]);
    assert!(
        text(&out.stderr).contains("can't fork"),
        "pids limit not enforced: {}",
        text(&out.stderr)
    );

    let ps = expect_success("docker ps -a", &docker(&["ps", "-aq"]));
    assert_eq!(ps.trim(), "", "containers left");
    assert_eq!(
        leftover_containers(&dir.join("exec/runtime-runc/moby")),
        Vec::<String>::new()
    );
    drop(daemon);
    // berth removed each container's cgroup: the parent docker made is empty and goes.
    remove_parent_cgroup(&cgroup_parent[1..]);
}

#[test]
fn podman_runs_execs_and_stops_through_berth_runc() {
    if !privileged() || !ensure_tool("podman", "/usr/bin/podman") {
        return;
    }
    let engine = Engine::with_busybox();
    let archive = busybox_archive(&engine);
    let runc = berth_runc(engine.tmp.path());
    let dir = engine.tmp.path().join("podman");
    let _leftovers = Leftovers::new(&dir, &format!("berth-it-podman-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let globals = format!(
        "--root {d}/root --runroot {d}/runroot --tmpdir {d}/tmp --runtime {r} \
         --cgroup-manager cgroupfs --events-backend file --storage-driver overlay",
        d = dir.display(),
        r = runc.display()
    );
    let podman = |args: &[&str]| -> Output {
        Command::new("podman")
            .args(globals.split_whitespace())
            .args(args)
            .output()
            .expect("run podman")
    };
    expect_success("podman load", &podman(&["load", "-i", path_str(&archive)]));
    // Podman asks for RLIMIT_NOFILE/NPROC of 1048576 by default, above this host's hard
    // limits (which root cannot raise without CAP_SYS_RESOURCE): ask for less.
    let cgroup_parent = format!("berth-it-podman-{}", std::process::id());
    let opts = format!(
        "--pull never --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
         --cgroup-parent /{cgroup_parent}"
    );
    let image = "docker.io/library/bb:latest";
    let run = |args: &[&str]| -> Output {
        let mut all: Vec<&str> = vec!["run"];
        all.extend(opts.split_whitespace());
        all.extend_from_slice(args);
        podman(&all)
    };

    let out = run(&["--rm", image, "echo", "hi"]);
    assert_eq!(expect_success("podman run echo", &out).trim(), "hi");
    let out = run(&["--rm", image, "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let out = run(&["--rm", image, "nosuchbinary"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(r#"berth: exec: "nosuchbinary": executable file not found in $PATH"#),
        "podman did not show berth's error: {err}"
    );

    let script = "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done";
    expect_success(
        "podman run -d",
        &run(&["-d", "--name", "bg", image, "sh", "-c", script]),
    );
    let out = podman(&["exec", "bg", "sh", "-c", "echo in-exec; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "in-exec");
    expect_success("podman stop", &podman(&["stop", "-t", "10", "bg"]));
    let code = expect_success(
        "inspect",
        &podman(&["inspect", "-f", "{{.State.ExitCode}}", "bg"]),
    );
    assert_eq!(code.trim(), "0", "stopped by SIGTERM, not SIGKILL");
    let logs = expect_success("podman logs", &podman(&["logs", "bg"]));
    assert!(logs.contains("got-term"), "{logs}");
    expect_success("podman rm", &podman(&["rm", "bg"]));

    // The sleep lets conmon drain the pty before the process exits.
    let out = in_pty(&format!(
        "podman {globals} run {opts} -it --rm {image} sh -c 'tty; [ -t 0 ] && echo stdin-is-tty; sleep 0.3; exit 2'"
    ));
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("/dev/pts/") && shown.contains("stdin-is-tty"),
        "{shown}"
    );

    let ps = expect_success("podman ps -a", &podman(&["ps", "-aq"]));
    assert_eq!(ps.trim(), "", "containers left");
    let _ = podman(&["rmi", "-af"]);
    // conmon's own cgroup sits beside the containers'.
    remove_parent_cgroup(&format!("{cgroup_parent}/conmon"));
    remove_parent_cgroup(&cgroup_parent);
}

/// `berth-runc ARGS` with the test's runtime root (runc's global flags first).
fn runc_cmd(env: &Env, runc: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(runc);
    cmd.arg("--root").arg(env.root()).args(args);
    cmd
}

#[test]
fn berth_runc_answers_runc_command_line() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let runc = berth_runc(env.tmp.path());

    let version = expect_success(
        "--version",
        &Command::new(&runc).arg("--version").output().unwrap(),
    );
    assert!(version.starts_with("berth-runc version "), "{version}");
    assert!(version.contains("\nspec: 1."), "{version}");
    let features = expect_success(
        "features",
        &runc_cmd(&env, &runc, &["features"]).output().unwrap(),
    );
    let features: serde_json::Value = serde_json::from_str(&features).expect("features JSON");
    assert_eq!(features["ociVersionMax"], "1.2.0");
    assert_eq!(features["linux"]["cgroup"]["systemd"], false);

    // Refused clearly, on one line.
    let out = runc_cmd(&env, &runc, &["--systemd-cgroup", "state", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("--systemd-cgroup") && err.trim().lines().count() == 1,
        "{err}"
    );

    // Errors go to --log as runc's JSON lines too.
    let log = env.tmp.path().join("log.json");
    let out = runc_cmd(
        &env,
        &runc,
        &[
            "--log",
            path_str(&log),
            "--log-format",
            "json",
            "state",
            "nosuch",
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log).unwrap().trim()).expect("a JSON line");
    assert_eq!(line["level"], "error");
    assert_eq!(line["msg"], "berth: container nosuch does not exist");
    assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    // As runc: forcing the removal of a missing container succeeds.
    expect_success(
        "delete --force",
        &runc_cmd(&env, &runc, &["delete", "--force", "nosuch"])
            .output()
            .unwrap(),
    );

    // A detached container: ps --format json, update, pause/resume.
    let bundle = env.bundle("b", |c| sh(c, "sleep 30"));
    let id = unique_id("runc");
    let run = env.run(&["run", "-d", "-b", path_str(&bundle), &id]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let pids = expect_success(
        "ps",
        &runc_cmd(&env, &runc, &["ps", "--format", "json", &id])
            .output()
            .unwrap(),
    );
    let pids: Vec<i32> = serde_json::from_str(&pids).expect("ps JSON");
    assert_eq!(pids, vec![env.pid(&id)]);
    let table = expect_success(
        "ps table",
        &runc_cmd(&env, &runc, &["ps", &id]).output().unwrap(),
    );
    // ps(1)'s header, then only the container's process (procps or busybox ps).
    let mut lines = table.lines();
    assert!(lines.next().is_some_and(|h| h.contains("PID")), "{table}");
    let rest: Vec<&str> = lines.collect();
    assert!(rest.len() == 1 && rest[0].contains("sleep 30"), "{table}");
    let resources = env.tmp.path().join("resources.json");
    std::fs::write(
        &resources,
        r#"{"pids": {"limit": 42}, "cpu": {"period": 0, "quota": 0}}"#,
    )
    .unwrap();
    expect_success(
        "update",
        &runc_cmd(
            &env,
            &runc,
            &["update", "--resources", path_str(&resources), &id],
        )
        .output()
        .unwrap(),
    );
    let pids_max: Vec<String> = cgroup_dirs_named(&id)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("pids.max")).ok())
        .map(|s| s.trim().to_string())
        .collect();
    assert_eq!(pids_max, vec!["42".to_string()]);
    expect_success(
        "pause",
        &runc_cmd(&env, &runc, &["pause", &id]).output().unwrap(),
    );
    expect_success(
        "resume",
        &runc_cmd(&env, &runc, &["resume", &id]).output().unwrap(),
    );
    expect_success(
        "delete -f",
        &runc_cmd(&env, &runc, &["delete", "-f", &id])
            .output()
            .unwrap(),
    );
}

#[test]
fn preserved_and_socket_activation_fds_reach_the_process() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let runc = berth_runc(env.tmp.path());
    let bundle = env.bundle("b", |c| {
        sh(
            c,
            "echo listen=$LISTEN_FDS pid=$LISTEN_PID >&3; echo second >&4; ls /proc/self/fd",
        )
    });
    let out3 = env.tmp.path().join("fd3");
    let out4 = env.tmp.path().join("fd4");
    let f3 = std::fs::File::create(&out3).unwrap();
    let f4 = std::fs::File::create(&out4).unwrap();
    let (r3, r4) = (f3.as_raw_fd(), f4.as_raw_fd());
    let mut cmd = runc_cmd(
        &env,
        &runc,
        &[
            "run",
            "--preserve-fds",
            "1",
            "-b",
            path_str(&bundle),
            &unique_id("fds"),
        ],
    );
    cmd.env("LISTEN_FDS", "1");
    // SAFETY: dup2 is async-signal-safe; it runs in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            // Copies above 10 first, so neither target clobbers the other source; dup2's
            // copies are not close-on-exec.
            let (a, b) = (
                libc::fcntl(r3, libc::F_DUPFD, 10),
                libc::fcntl(r4, libc::F_DUPFD, 10),
            );
            if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let fds = expect_success("run with fds", &out);
    assert_eq!(
        std::fs::read_to_string(&out3).unwrap().trim(),
        "listen=1 pid=1"
    );
    assert_eq!(std::fs::read_to_string(&out4).unwrap().trim(), "second");
    // Nothing beyond 0-4 (and ls's own directory fd) leaked in.
    let listed: Vec<i32> = fds
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    assert!(listed.iter().all(|fd| *fd <= 5), "{listed:?}");
}
