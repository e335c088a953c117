//! rename, top, pause/unpause, stats, cp, system df/prune, info and version
//! on real containers from the busybox test image.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_integration::{assets, privileged, text, Engine};
use serde_json::Value;

fn cleanup(e: &Engine) {
    let ids = e.ok(&["ps", "-a", "-q", "--no-trunc"]);
    for id in ids.split_whitespace() {
        let _ = e.run(&["rm", "-f", id]);
    }
}

/// The host path of a running container's root filesystem.
fn rootfs(e: &Engine, id: &str) -> PathBuf {
    e.root().join("containers").join(id).join("rootfs")
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rename_moves_the_name() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let id = e
        .ok(&["run", "-d", "--name", "old", "bb", "sleep", "1000"])
        .trim()
        .to_string();
    e.ok(&["create", "--name", "taken", "bb", "true"]);
    e.fails(&["rename", "old", "taken"], "already in use");
    e.fails(&["rename", "old", "bad/name"], "invalid container name");
    e.fails(&["rename", "nosuch", "x1"], "no such container");
    // Refused attempts changed nothing.
    assert_eq!(e.inspect("old")["Id"], id.as_str());

    e.ok(&["rename", "old", "new"]);
    assert_eq!(e.inspect("new")["Id"], id.as_str());
    assert_eq!(e.inspect("new")["Name"], "/new");
    e.fails(&["inspect", "old"], "old");
    // The renamed container keeps running and answers to its new name.
    assert_eq!(e.ok(&["exec", "new", "echo", "hi"]), "hi\n");
    let ps = e.ok(&["ps", "--format", "{{.Names}}"]);
    assert_eq!(ps.trim(), "new");
    // `table` templates get Docker's column names and aligned columns.
    let ps = e.ok(&["ps", "--format", "table {{.Names}}\\t{{.ID}}"]);
    let short = &id[..12];
    assert_eq!(
        ps,
        format!("NAMES        CONTAINER ID\nnew          {short}\n")
    );
    // The old name is free again.
    e.ok(&["create", "--name", "old", "bb", "true"]);
    // Noun form.
    e.ok(&["container", "rename", "new", "newer"]);
    assert_eq!(e.inspect("newer")["Id"], id.as_str());
    cleanup(&e);
}

/// As Docker: a command given several containers does each one it can, names
/// each failure on a line of its own, and exits non-zero at the end.
#[test]
fn several_names_go_on_after_a_failure() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    for name in ["c1", "c2"] {
        e.ok(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            name,
            "bb",
            "sleep",
            "100",
        ]);
    }
    let state = |name: &str| e.inspect(name)["State"]["Status"].clone();
    for (args, after) in [
        (&["pause"][..], "paused"),
        (&["unpause"][..], "running"),
        (&["stop", "-t", "0"][..], "exited"),
        (&["start"][..], "running"),
        (&["kill"][..], "exited"),
    ] {
        let mut argv = args.to_vec();
        argv.extend(["c1", "nosuch", "c2"]);
        let out = e.run(&argv);
        assert_eq!(out.status.code(), Some(125), "{argv:?}");
        assert_eq!(text(&out.stdout), "c1\nc2\n", "{argv:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{argv:?}: {err}");
        assert!(err.contains("nosuch"), "{argv:?}: {err}");
        wait_for(&format!("{argv:?}: both {after}"), || {
            state("c1") == after && state("c2") == after
        });
    }
    let out = e.run(&["wait", "c1", "nosuch", "c2"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(text(&out.stdout), "137\n137\n");
    let out = e.run(&["rm", "c1", "nosuch", "c2"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(text(&out.stdout), "c1\nc2\n");
    assert_eq!(e.ok(&["ps", "-a", "-q"]), "");
    e.ok(&["tag", "bb", "t1"]);
    e.ok(&["tag", "bb", "t2"]);
    let out = e.run(&["rmi", "t1", "nosuch", "t2"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        text(&out.stdout),
        "Untagged: t1:latest\nUntagged: t2:latest\n"
    );
    assert_eq!(e.ok(&["images", "--format", "{{.Repository}}"]), "bb\n");
}

/// `inspect -f` runs a Go template on each object of every kind, with
/// Docker's functions; list formats take the same templates.
#[test]
fn inspect_format_runs_a_go_template_on_each_object() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "tpl",
        "-e",
        "FOO=1",
        "-l",
        "com.x=y",
        "bb",
        "sleep",
        "100",
    ]);
    let pid: i32 = e
        .ok(&["inspect", "-f", "{{.State.Pid}}", "tpl"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        std::fs::read(format!("/proc/{pid}/cmdline")).unwrap(),
        b"sleep\x00100\0",
        "{{.State.Pid}} is the container's process"
    );
    let env: Vec<String> = serde_json::from_str(&e.ok(&[
        "container",
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        "tpl",
    ]))
    .unwrap();
    assert!(env.contains(&"FOO=1".to_string()), "{env:?}");
    let out = e.ok(&[
        "inspect",
        "-f",
        r#"{{index .Config.Labels "com.x"}} {{if .State.Running}}up{{end}} {{upper .Name}} {{join .Config.Cmd ","}}"#,
        "tpl",
    ]);
    assert_eq!(out, "y up /TPL sleep,100\n");
    assert_eq!(
        e.ok(&["image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", "bb"])
            .trim(),
        "linux/amd64"
    );
    e.ok(&["volume", "create", "tplvol"]);
    assert_eq!(
        e.ok(&["volume", "inspect", "-f", "{{.Name}} {{.Driver}}", "tplvol"]),
        "tplvol local\n"
    );
    assert_eq!(
        e.ok(&[
            "network",
            "inspect",
            "-f",
            "{{.Name}} {{.Driver}}",
            "bridge"
        ]),
        "bridge bridge\n"
    );

    // Found objects print, each missing one is an error line, the exit code says so.
    let out = e.run(&["inspect", "-f", "{{.Name}}", "tpl", "nosuch", "tpl"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(text(&out.stdout), "/tpl\n/tpl\n");
    assert!(
        text(&out.stderr).contains("nosuch"),
        "{}",
        text(&out.stderr)
    );
    // A bad template or a field the object lacks: a clear error, nothing printed.
    for bad in ["{{.Name", "{{.NoSuchField}}", "{{nosuchfunc .Name}}"] {
        let out = e.run(&["inspect", "-f", bad, "tpl"]);
        assert_eq!(out.status.code(), Some(125), "{bad}");
        assert_eq!(text(&out.stdout), "", "{bad}");
        assert_eq!(
            text(&out.stderr).lines().count(),
            1,
            "{bad}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("template"),
            "{bad}: {}",
            text(&out.stderr)
        );
    }

    let row: Value = serde_json::from_str(&e.ok(&["ps", "--format", "{{json .}}"])).unwrap();
    assert_eq!(row["Names"], "tpl");
    assert_eq!(e.ok(&["ps", "--format", "{{.Names | upper}}"]), "TPL\n");
    e.ok(&["rm", "-f", "tpl"]);
    e.ok(&["volume", "rm", "tplvol"]);
}

#[test]
fn top_lists_the_containers_processes_with_host_pids() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "top1",
        "bb",
        "sh",
        "-c",
        "sleep 1234 & wait",
    ]);
    let init = e.inspect("top1")["State"]["Pid"].as_i64().unwrap();
    let mut out = String::new();
    wait_for("sleep in top", || {
        out = e.ok(&["top", "top1"]);
        out.contains("sleep 1234")
    });
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["PID", "PPID", "USER", "TIME", "CMD"], "{out}");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    let pids: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(pids.contains(&init), "init {init} in {out}");
    let sleep = rows.iter().find(|r| r[4] == "sleep").unwrap();
    // Host pids: the sleep's parent is the init, seen from the host.
    assert_eq!(sleep[1].parse::<i64>().unwrap(), init, "{out}");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", sleep[0])).unwrap();
    assert!(text(&cmdline).starts_with("sleep\u{0}1234"), "{out}");
    assert_eq!(sleep[2], "root");
    // ps options go to the host's ps, as Docker's: its header, and only the
    // container's processes.
    let ef = e.ok(&["container", "top", "top1", "-ef"]);
    assert!(ef.starts_with("UID ") && ef.contains("sleep 1234"), "{ef}");
    assert_eq!(ef.lines().count(), 3, "header and the two processes: {ef}");
    let o = e.ok(&["top", "top1", "-o", "pid,comm"]);
    let mut lines = o.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["PID", "COMMAND"]
    );
    let mut comms: Vec<&str> = lines
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    comms.sort();
    assert_eq!(comms, ["sh", "sleep"], "{o}");
    e.fails(&["top", "top1", "-o", "comm"], "no PID column");
    // A stopped container has no processes.
    e.ok(&["create", "--name", "idle", "bb", "true"]);
    e.fails(&["top", "idle"], "not running");
    cleanup(&e);
}

#[test]
fn pause_freezes_and_unpause_resumes() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let id = e
        .ok(&[
            "run",
            "-d",
            "--name",
            "pz",
            "bb",
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; usleep 20000; done",
        ])
        .trim()
        .to_string();
    let counter = rootfs(&e, &id).join("tmp/n");
    let read = || -> u64 {
        std::fs::read_to_string(&counter)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    wait_for("the counter to start", || read() > 2);

    assert_eq!(e.ok(&["pause", "pz"]), "pz\n");
    let ps = e.ok(&["ps", "--format", "{{.Names}} {{.State}} {{.Status}}"]);
    assert!(ps.starts_with("pz paused Up "), "{ps}");
    assert!(ps.trim_end().ends_with("(Paused)"), "{ps}");
    assert_eq!(
        e.ok(&["ps", "-q", "--filter", "status=paused"]).trim(),
        &id[..12]
    );
    let state = &e.inspect("pz")["State"];
    assert_eq!(state["Paused"], true);
    assert_eq!(state["Status"], "paused");
    assert_eq!(state["Running"], true);
    let frozen_at = read();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(read(), frozen_at, "a paused container's counter advanced");
    e.fails(&["pause", "pz"], "already paused");
    let info = e.ok(&["info", "--format", "json"]);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["ContainersPaused"], 1, "{info}");
    assert_eq!(info["ContainersRunning"], 0, "{info}");

    assert_eq!(e.ok(&["unpause", "pz"]), "pz\n");
    wait_for("the counter to advance", || read() > frozen_at + 3);
    assert_eq!(e.inspect("pz")["State"]["Paused"], false);
    let ps = e.ok(&["ps", "--format", "{{.State}}"]);
    assert_eq!(ps.trim(), "running");
    e.fails(&["unpause", "pz"], "not paused");

    // exec into a paused container is refused; stop thaws it so it can be stopped.
    e.ok(&["container", "pause", "pz"]);
    e.fails(&["exec", "pz", "true"], "paused");
    let t0 = std::time::Instant::now();
    e.ok(&["stop", "-t", "2", "pz"]);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "a paused container did not stop"
    );
    assert_eq!(e.inspect("pz")["State"]["Status"], "exited");
    e.ok(&["start", "pz"]);
    // A paused container can be removed by force.
    e.ok(&["container", "pause", "pz"]);
    e.ok(&["rm", "-f", "pz"]);
    assert_eq!(e.ok(&["ps", "-a", "-q"]).trim(), "");
    e.ok(&["create", "--name", "cc", "bb", "true"]);
    e.fails(&["pause", "cc"], "not running");
    cleanup(&e);
}

#[test]
fn stats_show_the_memory_limit_and_pids() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let id = e
        .ok(&[
            "run",
            "-d",
            "--name",
            "st",
            "--memory",
            "64m",
            "bb",
            "sh",
            "-c",
            "sleep 1000 & sleep 1000 & wait",
        ])
        .trim()
        .to_string();
    e.ok(&["run", "-d", "--name", "un", "bb", "sleep", "1000"]);
    wait_for("three processes", || {
        e.ok(&["top", "st"]).lines().count() == 4
    });
    let table = e.ok(&["stats", "--no-stream", "st"]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("CONTAINER ID"), "{table}");
    let row = lines.next().unwrap();
    assert!(row.starts_with(&id[..12]), "{table}");
    assert!(row.contains(" / 64MiB"), "{table}");
    assert!(row.trim_end().ends_with(" 3"), "pids: {table}");

    let json = e.ok(&["stats", "--no-stream", "--format", "json"]);
    let rows: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "every running container: {json}");
    let s = rows.iter().find(|r| r["Name"] == "st").unwrap();
    assert_eq!(s["ID"], &id[..12]);
    assert_eq!(s["PIDs"], "3");
    let usage = s["MemUsage"].as_str().unwrap();
    assert!(usage.ends_with(" / 64MiB"), "{usage}");
    assert!(!usage.starts_with("0B"), "some memory is used: {usage}");
    assert!(s["CPUPerc"].as_str().unwrap().ends_with('%'));
    // Without --memory the limit is the host's memory, not a huge number.
    let u = rows.iter().find(|r| r["Name"] == "un").unwrap();
    assert!(u["MemUsage"].as_str().unwrap().ends_with("GiB"), "{u}");
    let t = e.ok(&[
        "container",
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}}:{{.PIDs}}",
        "un",
    ]);
    assert_eq!(t.trim(), "un:1");
    cleanup(&e);
}

#[test]
fn cp_copies_files_and_directories_both_ways() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let host = e.tmp.path().join("host");
    std::fs::create_dir_all(host.join("dir/sub")).unwrap();
    std::fs::write(host.join("file.txt"), "from the host\n").unwrap();
    std::fs::write(host.join("dir/sub/inner.txt"), "inner\n").unwrap();
    std::os::unix::fs::symlink("sub/inner.txt", host.join("dir/link")).unwrap();
    let h = |p: &str| host.join(p).to_str().unwrap().to_string();

    e.ok(&["run", "-d", "--name", "cc", "bb", "sleep", "1000"]);
    // Host -> container: a file into a directory, a file to a new name, a directory.
    e.ok(&["cp", &h("file.txt"), "cc:/tmp"]);
    e.ok(&["cp", &h("file.txt"), "cc:/tmp/renamed.txt"]);
    e.ok(&["cp", &h("dir"), "cc:/tmp/newdir"]);
    e.ok(&["cp", &h("dir"), "cc:/tmp"]);
    let out = e.ok(&[
        "exec", "cc", "sh", "-c",
        "cat /tmp/file.txt /tmp/renamed.txt /tmp/newdir/sub/inner.txt /tmp/dir/link; readlink /tmp/dir/link; stat -c %u /tmp/file.txt",
    ]);
    assert_eq!(
        out,
        "from the host\nfrom the host\ninner\ninner\nsub/inner.txt\n0\n"
    );
    // A directory onto a file is refused; a missing parent too.
    e.fails(
        &["cp", &h("dir"), "cc:/tmp/file.txt"],
        "directory to a file",
    );
    e.fails(
        &["cp", &h("file.txt"), "cc:/no/such/x"],
        "no such directory",
    );

    // Container -> host: a file, a directory, a directory's contents.
    e.ok(&[
        "exec",
        "cc",
        "sh",
        "-c",
        "mkdir -p /data/a && echo made > /data/a/f && echo top > /data/g",
    ]);
    e.ok(&["cp", "cc:/data/g", &h("g.txt")]);
    assert_eq!(
        std::fs::read_to_string(host.join("g.txt")).unwrap(),
        "top\n"
    );
    e.ok(&["cp", "cc:/data", &h("out")]);
    assert_eq!(
        std::fs::read_to_string(host.join("out/a/f")).unwrap(),
        "made\n"
    );
    std::fs::create_dir(host.join("existing")).unwrap();
    e.ok(&["cp", "cc:/data", &h("existing")]);
    assert_eq!(
        std::fs::read_to_string(host.join("existing/data/g")).unwrap(),
        "top\n"
    );
    std::fs::create_dir(host.join("contents")).unwrap();
    e.ok(&["cp", "cc:/data/.", &h("contents")]);
    assert_eq!(
        std::fs::read_to_string(host.join("contents/a/f")).unwrap(),
        "made\n"
    );
    e.fails(
        &["cp", "cc:/nope", &h("x")],
        "could not find the file /nope",
    );

    // Tar streams both ways.
    let tar_out = e.command(&["cp", "cc:/data", "-"]).output().unwrap();
    assert!(tar_out.status.success());
    let listing = std::process::Command::new("tar")
        .arg("-t")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&tar_out.stdout)?;
            c.wait_with_output()
        })
        .unwrap();
    let names = text(&listing.stdout);
    assert!(names.contains("data/a/f"), "{names}");
    let tarball = e.tmp.path().join("in.tar");
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(host.join("dir"))
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let st = e
        .command(&["cp", "-", "cc:/tmp/newdir"])
        .stdin(std::fs::File::open(&tarball).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        e.ok(&["exec", "cc", "cat", "/tmp/newdir/sub/inner.txt"]),
        "inner\n"
    );

    // A stopped container: its layer is mounted for the copy, then unmounted.
    e.ok(&["stop", "-t", "0", "cc"]);
    e.ok(&["cp", "cc:/tmp/renamed.txt", &h("stopped.txt")]);
    assert_eq!(
        std::fs::read_to_string(host.join("stopped.txt")).unwrap(),
        "from the host\n"
    );
    e.ok(&["cp", &h("g.txt"), "cc:/while-stopped.txt"]);
    let root = e.root();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(root.to_str().unwrap()),
        "cp left a mount: {mounts}"
    );
    e.ok(&["start", "cc"]);
    assert_eq!(e.ok(&["exec", "cc", "cat", "/while-stopped.txt"]), "top\n");
    cleanup(&e);
}

#[test]
fn cp_never_reads_host_files_through_the_container() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&["run", "-d", "--name", "cc", "bb", "sleep", "1000"]);
    e.ok(&[
        "exec", "cc", "sh", "-c",
        "ln -s /etc/shadow /evil; ln -s ../../../../../../etc /up; ln -s /proc/1/root/etc/hostname /magic; echo mine > /etc/marker",
    ]);
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let host_root_line = host_passwd
        .lines()
        .find(|l| l.starts_with("root:"))
        .unwrap();
    let container_passwd =
        std::fs::read_to_string(assets().join("busybox-rootfs/etc/passwd")).unwrap();
    assert!(!container_passwd.contains("berth-host-marker"));

    let get = |path: &str, extra: &[&str]| -> (Option<i32>, Vec<u8>) {
        let mut args = vec!["cp"];
        args.extend_from_slice(extra);
        args.push(path);
        args.push("-");
        let out = e.command(&args).output().unwrap();
        (out.status.code(), out.stdout)
    };
    // `..` is clamped at the container's root: this is the container's passwd.
    let (code, tar) = get("cc:/etc/../../../etc/passwd", &[]);
    assert_eq!(code, Some(0));
    let data = text(&tar);
    assert!(data.contains("berth test user"), "the container's passwd");
    if !container_passwd.contains(host_root_line) {
        assert!(!data.contains(host_root_line), "host passwd leaked");
    }
    // A symlink is copied as a symlink...
    let (code, tar) = get("cc:/evil", &[]);
    assert_eq!(code, Some(0));
    assert!(text(&tar).contains("/etc/shadow"), "the link itself");
    // ...and followed (-L) only inside the container, which has no /etc/shadow.
    let (code, tar) = get("cc:/evil", &["-L"]);
    assert_eq!(code, Some(125), "{}", text(&tar));
    assert!(tar.is_empty());
    // Symlinks in the middle of a path resolve inside the root too.
    let (code, tar) = get("cc:/up/shadow", &[]);
    assert_eq!(code, Some(125));
    assert!(tar.is_empty());
    let (code, tar) = get("cc:/up/marker", &[]);
    assert_eq!(code, Some(0));
    assert!(text(&tar).contains("mine\n"));
    // Magic links (/proc/PID/root) are not followed.
    let (code, _) = get("cc:/magic", &["-L"]);
    assert_eq!(code, Some(125));

    // Writes through a container symlink stay inside the container.
    let host = e.tmp.path().join("payload");
    std::fs::write(&host, "payload\n").unwrap();
    let target = e.tmp.path().join("victim");
    e.ok(&[
        "exec",
        "cc",
        "ln",
        "-s",
        target.to_str().unwrap(),
        "/escape",
    ]);
    e.ok(&["exec", "cc", "ln", "-s", "/../../../../tmp", "/tmpescape"]);
    e.ok(&["cp", host.to_str().unwrap(), "cc:/escape"]);
    assert!(
        !target.exists(),
        "cp wrote through a container symlink to the host"
    );
    // The dangling link was replaced by the file, as Docker does.
    assert_eq!(e.ok(&["exec", "cc", "cat", "/escape"]), "payload\n");
    let marker = format!("berth-cp-{}", std::process::id());
    let host_marker = e.tmp.path().join(&marker);
    std::fs::write(&host_marker, "x").unwrap();
    e.ok(&["cp", host_marker.to_str().unwrap(), "cc:/tmpescape/"]);
    assert!(!PathBuf::from("/tmp").join(&marker).exists());
    assert_eq!(e.ok(&["exec", "cc", "cat", &format!("/tmp/{marker}")]), "x");
    cleanup(&e);
}

/// `system df` rows by type: (total, active, size, reclaimable).
fn df(e: &Engine) -> Vec<(String, u64, u64, String, String)> {
    let out = e.ok(&["system", "df", "--format", "json"]);
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["Type"].as_str().unwrap().to_string(),
                v["TotalCount"].as_str().unwrap().parse().unwrap(),
                v["Active"].as_str().unwrap().parse().unwrap(),
                v["Size"].as_str().unwrap().to_string(),
                v["Reclaimable"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn system_df_follows_images_and_containers() {
    if !privileged() {
        return;
    }
    let e = Engine::new();
    let empty = df(&e);
    let types: Vec<&str> = empty.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        types,
        ["Images", "Containers", "Local Volumes", "Build Cache"]
    );
    assert_eq!((empty[0].1, empty[0].3.as_str()), (0, "0B"));
    let table = e.ok(&["system", "df"]);
    assert!(table.starts_with("TYPE"), "{table}");
    assert!(table.contains("RECLAIMABLE"), "{table}");

    let tar = e.busybox_oci_tar();
    let out = e.ok(&["load", "-i", tar.to_str().unwrap()]);
    let id = out
        .split("Loaded image ID: ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    e.ok(&["tag", &id, "bb"]);
    let loaded = df(&e);
    assert_eq!((loaded[0].1, loaded[0].2), (1, 0), "{loaded:?}");
    assert_ne!(loaded[0].3, "0B");
    assert!(loaded[0].4.ends_with("(100%)"), "unused: {loaded:?}");
    assert_eq!(loaded[1].1, 0);

    e.ok(&[
        "run",
        "-d",
        "--name",
        "run1",
        "bb",
        "sh",
        "-c",
        "head -c 300000 /dev/zero > /big; sleep 1000",
    ]);
    e.ok(&["run", "--name", "done", "bb", "true"]);
    wait_for("the write", || {
        df(&e)[1].3 != "0B" && df(&e)[1].3 != loaded[1].3
    });
    let used = df(&e);
    assert_eq!((used[0].1, used[0].2), (1, 1), "{used:?}");
    assert!(
        used[0].4.starts_with("0B"),
        "an image in use is not reclaimable: {used:?}"
    );
    assert_eq!((used[1].1, used[1].2), (2, 1), "{used:?}");
    let info = e.ok(&["info"]);
    assert!(
        info.contains(" Containers: 2\n  Running: 1\n  Paused: 0\n  Stopped: 1\n"),
        "{info}"
    );
    assert!(info.contains(" Storage Driver: overlayfs\n"), "{info}");
    assert!(info.contains(" Images: 1\n"), "{info}");
    cleanup(&e);
    let after = df(&e);
    assert_eq!((after[1].1, after[1].3.as_str()), (0, "0B"), "{after:?}");
}

#[test]
fn system_prune_removes_stopped_containers_and_dangling_images() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    // A dangling image: an unnamed import.
    let dangling = e
        .ok(&[
            "import",
            assets().join("busybox-rootfs.tar").to_str().unwrap(),
        ])
        .trim()
        .to_string();
    assert!(e.ok(&["images", "-q"]).lines().count() == 2);
    let running = e
        .ok(&["run", "-d", "--name", "running", "bb", "sleep", "1000"])
        .trim()
        .to_string();
    let stopped = {
        e.ok(&[
            "run",
            "--name",
            "stopped",
            "bb",
            "sh",
            "-c",
            "echo data > /f",
        ]);
        e.inspect("stopped")["Id"].as_str().unwrap().to_string()
    };
    let created = e.ok(&["create", "bb", "true"]).trim().to_string();

    let out = e.ok(&["system", "prune", "-f"]);
    assert!(out.starts_with("Deleted Containers:\n"), "{out}");
    assert!(out.contains(&stopped) && out.contains(&created), "{out}");
    assert!(!out.contains(&running), "{out}");
    assert!(out.contains("Deleted Images:\n"), "{out}");
    let short = dangling.trim_start_matches("sha256:");
    assert!(out.contains(&format!("deleted: sha256:{short}")), "{out}");
    assert!(out.contains("Total reclaimed space: "), "{out}");
    assert!(!out.contains("Total reclaimed space: 0B"), "{out}");
    let left = e.ok(&["ps", "-a", "-q", "--no-trunc"]);
    assert_eq!(left.trim(), running, "only the running container is left");
    assert_eq!(e.ok(&["exec", "running", "echo", "alive"]), "alive\n");
    let images = e.ok(&["images", "--format", "json"]);
    assert_eq!(images.lines().count(), 1, "{images}");
    assert!(
        images.contains("\"bb\""),
        "the tagged image stays: {images}"
    );
    let listed = e.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(listed, "bb:latest\n", "Go-template format");

    // -a: images used by a container stay; the rest go.
    let out = e.ok(&["system", "prune", "-a", "-f", "--volumes"]);
    assert!(!out.contains("Deleted Containers"), "{out}");
    assert_eq!(e.ok(&["images", "-q"]).lines().count(), 1);
    e.ok(&["rm", "-f", "running"]);
    let out = e.ok(&["system", "prune", "-a", "-f"]);
    assert!(out.contains("untagged: bb:latest"), "{out}");
    assert_eq!(e.ok(&["images", "-q"]).trim(), "");
    assert!(e.blobs().is_empty(), "blobs left: {:?}", e.blobs());
    assert!(
        e.snapshot_dirs().is_empty(),
        "snapshots left: {:?}",
        e.snapshot_dirs()
    );
    let out = e.ok(&["system", "prune", "-f"]);
    assert_eq!(out, "Total reclaimed space: 0B\n");
}

#[test]
fn version_and_info_and_bad_input() {
    if !privileged() {
        return;
    }
    let e = Engine::new();
    let v = e.ok(&["version"]);
    assert!(v.starts_with("Client: berth\n Version:"), "{v}");
    assert!(v.contains("\nServer: "), "{v}");
    let j: Value = serde_json::from_str(&e.ok(&["version", "--format", "json"])).unwrap();
    assert_eq!(j["Client"]["Version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        e.ok(&["version", "--format", "{{.Server.Version}}"]).trim(),
        env!("CARGO_PKG_VERSION")
    );
    let info: Value = serde_json::from_str(&e.ok(&["system", "info", "--format", "json"])).unwrap();
    assert_eq!(info["Driver"], "overlayfs");
    assert!(
        matches!(info["CgroupVersion"].as_u64(), Some(1 | 2)),
        "{info}"
    );
    assert_eq!(info["Containers"], 0);
    e.fails(&["cp", "a:/x", "b:/y"], "between containers");
    e.fails(&["cp", "/x", "/y"], "at least one container");
    e.fails(&["cp", "nosuch:/x", "/tmp"], "no such container");
    e.fails(&["pause", "nosuch"], "no such container");
    e.fails(&["stats", "--no-stream", "nosuch"], "no such container");
    let out = e.run(&["rename", "only-one"]);
    assert_eq!(out.status.code(), Some(125));
}

/// The entries of a gzip layer tar, through GNU tar.
fn layer_entries(blob: &std::path::Path) -> Option<Vec<String>> {
    let out = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(blob)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| text(&out.stdout).lines().map(str::to_string).collect())
}

/// `diff` lists a container's changes as Docker's, `commit` makes them one
/// new layer (without the mount points berth made) under the container's
/// configuration plus `--change`, of a stopped, running or paused container;
/// `export` writes the filesystem that `import` takes back; bad input is one
/// clear line and leaves no image, blob or file.
#[test]
fn diff_commit_and_export() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "--name",
        "c1",
        "--network",
        "none",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "-l",
        "team=x",
        "bb",
        "sh",
        "-c",
        "echo hi > /tmp/x; rm /bin/vi; mkdir /etc/app; echo conf > /etc/app/c",
    ]);
    assert_eq!(
        e.ok(&["diff", "c1"]),
        "C /bin\nD /bin/vi\nC /etc\nA /etc/app\nA /etc/app/c\nC /tmp\nA /tmp/x\n"
    );

    let blobs_before: Vec<String> = e.blobs().into_iter().map(|(b, _)| b).collect();
    let id = e.ok(&[
        "commit",
        "-m",
        "the message",
        "-a",
        "Ann <ann@example.org>",
        "-c",
        r#"CMD ["cat", "/tmp/x"]"#,
        "-c",
        "ENV LEVEL=2",
        "c1",
        "snap:1",
    ]);
    let id = id.trim();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    let new: Vec<String> = e
        .blobs()
        .into_iter()
        .filter(|(b, ok)| {
            assert!(ok, "blob {b} does not verify");
            !blobs_before.contains(b)
        })
        .map(|(b, _)| b)
        .collect();
    assert_eq!(new.len(), 3, "a layer, a config and a manifest: {new:?}");
    let layers: Vec<Vec<String>> = new
        .iter()
        .filter_map(|b| layer_entries(&e.root().join("content/blobs/sha256").join(b)))
        .collect();
    assert_eq!(
        layers,
        [vec![
            "bin/",
            "bin/.wh.vi",
            "etc/",
            "etc/app/",
            "etc/app/c",
            "tmp/",
            "tmp/x"
        ]],
        "the layer holds the changes and not the mount points berth made"
    );
    assert_eq!(
        e.ok(&["run", "--rm", "--network", "none", "snap:1"]),
        "hi\n"
    );
    assert_eq!(
        e.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "snap:1",
            "sh",
            "-c",
            "pwd; echo $FOO $LEVEL; cat /etc/app/c; test -e /bin/vi || echo no vi",
        ]),
        "/tmp\nbar 2\nconf\nno vi\n"
    );
    let image = e.inspect("snap:1");
    assert_eq!(image["Id"], id);
    assert_eq!(image["Author"], "Ann <ann@example.org>");
    assert_eq!(image["Config"]["Labels"]["team"], "x", "{image}");
    let history = e.ok(&["history", "snap:1"]);
    let top = history.lines().nth(1).unwrap();
    assert!(top.starts_with(&id[7..19]), "{history}");
    assert!(top.ends_with("the message"), "{history}");
    assert_eq!(
        e.ok(&["history", "-q", "snap:1"]).lines().nth(1),
        Some("<missing>")
    );
    // A container of the committed image starts with nothing changed.
    e.ok(&[
        "run",
        "--name",
        "fresh",
        "--network",
        "none",
        "snap:1",
        "true",
    ]);
    assert_eq!(e.ok(&["diff", "fresh"]), "");

    // A running container: frozen while read, running after; a paused one stays paused.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "--network",
        "none",
        "bb",
        "sh",
        "-c",
        "echo up > /up; exec sleep 100",
    ]);
    wait_for("/up", || {
        e.run(&["exec", "live", "cat", "/up"]).status.success()
    });
    e.ok(&["commit", "live", "live:1"]);
    let state = &e.inspect("live")["State"];
    assert_eq!(
        (state["Running"].clone(), state["Paused"].clone()),
        (true.into(), false.into())
    );
    e.ok(&["pause", "live"]);
    e.ok(&["container", "commit", "--pause=false", "live", "live:2"]);
    assert_eq!(e.inspect("live")["State"]["Paused"], true);
    e.ok(&["unpause", "live"]);
    for tag in ["live:1", "live:2"] {
        assert_eq!(
            e.ok(&["run", "--rm", "--network", "none", tag, "cat", "/up"]),
            "up\n"
        );
    }

    // export -o, then import: the same files.
    let tar = e.tmp.path().join("live.tar");
    e.ok(&["export", "-o", tar.to_str().unwrap(), "live"]);
    let listed = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    let listed = text(&listed.stdout);
    assert!(listed.lines().any(|l| l == "up"), "{listed}");
    assert!(listed.lines().any(|l| l == "bin/busybox"), "{listed}");
    e.ok(&["import", tar.to_str().unwrap(), "exported"]);
    assert_eq!(
        e.ok(&["run", "--rm", "--network", "none", "exported", "cat", "/up"]),
        "up\n"
    );

    // Bad input: one line, exit 125, nothing made.
    let images = e.ok(&["images", "-q", "--no-trunc"]);
    let blobs = e.blobs();
    e.fails(&["commit", "nosuch", "x"], "no such container");
    e.fails(
        &["commit", "c1", &format!("x@sha256:{}", "0".repeat(64))],
        "digest",
    );
    e.fails(
        &["commit", "-c", "RUN true", "c1", "x"],
        "RUN is not supported",
    );
    let missing = e.tmp.path().join("missing.tar");
    e.fails(
        &["export", "-o", missing.to_str().unwrap(), "nosuch"],
        "no such container",
    );
    assert!(!missing.exists());
    let partial = std::fs::read_dir(e.tmp.path())
        .unwrap()
        .flatten()
        .find(|f| f.file_name().to_string_lossy().contains("berth-partial"));
    assert!(partial.is_none(), "a partial file was left: {partial:?}");
    e.fails(&["diff", "nosuch"], "no such container");
    assert_eq!(e.ok(&["images", "-q", "--no-trunc"]), images);
    assert_eq!(e.blobs(), blobs);
    cleanup(&e);
    e.assert_no_mounts();
}

/// `update` changes a running container's cgroup limits at once (the kernel
/// enforces the new pids limit) and a stopped one's for its next start; bad
/// or missing settings change nothing.
#[test]
fn update_changes_limits_of_running_and_stopped_containers() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let run_args = [
        "run",
        "-d",
        "--name",
        "up",
        "--network",
        "none",
        "--memory",
        "64m",
    ];
    e.ok(&[&run_args[..], &["bb", "sleep", "1000"]].concat());
    let limit = || e.ok(&["stats", "--no-stream", "--format", "{{.MemUsage}}", "up"]);
    assert!(limit().trim_end().ends_with(" / 64MiB"), "{}", limit());
    assert_eq!(
        e.ok(&[
            "update",
            "--memory",
            "128m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "3",
            "up"
        ]),
        "up\n"
    );
    assert!(limit().trim_end().ends_with(" / 128MiB"), "{}", limit());
    let host = &e.inspect("up")["HostConfig"];
    assert_eq!(
        (
            host["Memory"].clone(),
            host["NanoCpus"].clone(),
            host["PidsLimit"].clone()
        ),
        (134217728.into(), 500000000.into(), 3.into())
    );
    let forks = "for i in 1 2 3; do sleep 30 & done; wait";
    let out = e.run(&["exec", "up", "sh", "-c", forks]);
    assert!(
        text(&out.stderr).contains("fork"),
        "pids limit 3: {}",
        text(&out.stderr)
    );
    e.ok(&["update", "--pids-limit", "0", "up"]);
    let out = e.run(&["exec", "-d", "up", "sh", "-c", forks]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Bad settings: refused, nothing recorded.
    e.fails(&["update", "up"], "nothing to update");
    e.fails(&["update", "--memory", "1m", "up"], "6m");
    e.fails(&["update", "--cpus", "lots", "up"], "--cpus");
    e.fails(
        &["update", "--memory", "32m", "nosuch"],
        "no such container",
    );
    assert_eq!(e.inspect("up")["HostConfig"]["Memory"], 134217728);

    // A stopped container takes the new limit at its next start.
    e.ok(&["stop", "-t", "0", "up"]);
    e.ok(&[
        "update",
        "--memory",
        "96m",
        "--restart",
        "on-failure:2",
        "up",
    ]);
    e.ok(&["start", "up"]);
    assert!(limit().trim_end().ends_with(" / 96MiB"), "{}", limit());
    let policy = &e.inspect("up")["HostConfig"]["RestartPolicy"];
    assert_eq!(policy["Name"], "on-failure");
    assert_eq!(policy["MaximumRetryCount"], 2);
    // 0 lifts a limit of a running container (the cgroup is not left at the old one).
    e.ok(&["update", "--memory", "0", "up"]);
    assert!(limit().trim_end().ends_with("GiB"), "{}", limit());
    e.ok(&["create", "--rm", "--name", "gone", "bb", "true"]);
    e.fails(&["update", "--restart", "always", "gone"], "--rm");

    // A restart by the policy keeps the updated limits.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "again",
        "--network",
        "none",
        "--memory",
        "64m",
        "--restart",
        "always",
        "--device-cgroup-rule",
        "c 42:* rw",
        "bb",
        "sh",
        "-c",
        "sleep 1; exit 1",
    ]);
    e.ok(&["update", "--memory", "96m", "again"]);
    // The bundle a restart reuses keeps the device rules.
    let id = e.inspect("again")["Id"].as_str().unwrap().to_string();
    let bundle = e
        .tmp
        .path()
        .join(format!("run/containers/{id}/bundle/config.json"));
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    let rules = spec["linux"]["resources"]["devices"].as_array().unwrap();
    assert!(
        rules.iter().any(|r| r["major"] == 42 && r["allow"] == true),
        "{rules:?}"
    );
    wait_for("a restart", || {
        e.inspect("again")["RestartCount"].as_u64() >= Some(1)
    });
    wait_for("the restarted container", || {
        e.ok(&["stats", "--no-stream", "--format", "{{.MemUsage}}", "again"])
            .trim_end()
            .ends_with(" / 96MiB")
    });
    cleanup(&e);
}

/// The prune commands' `--filter until=|label=|label!=`, as Docker's: only
/// what every filter allows goes; volumes take labels, not `until`.
#[test]
fn prune_filters_choose_what_goes() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let names = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = e.ok(args).split_whitespace().map(str::to_string).collect();
        v.sort();
        v
    };
    // Containers: one made before a moment, two after it, one labelled.
    e.ok(&["create", "--name", "old", "bb", "true"]);
    std::thread::sleep(Duration::from_millis(1100));
    let moment = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        .to_string();
    std::thread::sleep(Duration::from_millis(100));
    e.ok(&["create", "--name", "team", "-l", "team=x", "bb", "true"]);
    e.ok(&["create", "--name", "other", "-l", "team=y", "bb", "true"]);
    let all = ["ps", "-a", "--format", "{{.Names}}"];
    // ps before=/since= name a container and compare creation times.
    let listed = |f: &str| names(&[&all[..], &["-f", f]].concat());
    assert_eq!(listed("since=old"), ["other", "team"]);
    assert_eq!(listed("before=team"), ["old"]);
    e.fails(&["ps", "-f", "since=nosuch"], "no such container");
    e.ok(&[
        "container",
        "prune",
        "-f",
        "--filter",
        &format!("until={moment}"),
    ]);
    assert_eq!(names(&all), ["other", "team"], "until: only the older one");
    e.ok(&["container", "prune", "-f", "--filter", "label=team=x"]);
    assert_eq!(names(&all), ["other"]);
    e.ok(&["container", "prune", "-f", "--filter", "label!=team=y"]);
    assert_eq!(names(&all), ["other"], "label!: the labelled one stays");
    e.fails(
        &["container", "prune", "--filter", "until=later"],
        "invalid time",
    );
    e.fails(
        &["container", "prune", "--filter", "dangling=true"],
        "invalid filter",
    );

    // Images: two dangling imports, told apart by a label.
    let tar = assets().join("busybox-rootfs.tar");
    let tar = tar.to_str().unwrap();
    let x = e.ok(&["import", "--change", "LABEL team=x", tar]);
    let y = e.ok(&["import", "--change", "LABEL team=y", tar]);
    // images before=/since= compare with the named image's creation time.
    let bb_id = e.ok(&["images", "-q", "bb"]);
    let newer = e.ok(&["images", "-q", "-f", "since=bb"]);
    assert!(
        newer.contains(&x.trim()[7..19]) && !newer.contains(bb_id.trim()),
        "{newer}"
    );
    assert_eq!(
        e.ok(&["images", "-q", "-f", &format!("before={}", x.trim())]),
        bb_id
    );
    let out = e.ok(&["image", "prune", "-f", "--filter", "label=team=x"]);
    assert!(out.contains(&format!("deleted: {}", x.trim())), "{out}");
    assert!(!out.contains(y.trim()), "{out}");
    let out = e.ok(&["image", "prune", "-f", "--filter", "until=2000-01-01"]);
    assert!(!out.contains(y.trim()), "until: a new image stays: {out}");
    assert_eq!(
        e.ok(&["images", "-q", "-f", "dangling=true"]).trim(),
        &y.trim()[7..19]
    );

    // Volumes: labels only.
    e.ok(&["volume", "create", "--label", "team=x", "vx"]);
    e.ok(&["volume", "create", "vy"]);
    e.ok(&["volume", "prune", "-a", "-f", "--filter", "label=team=x"]);
    assert_eq!(names(&["volume", "ls", "-q"]), ["vy"]);
    e.fails(
        &["volume", "prune", "-f", "--filter", "until=1h"],
        "invalid filter",
    );

    // system prune with a filter: the labelled container goes, the rest stays.
    e.ok(&["create", "--name", "sys", "-l", "gone=1", "bb", "true"]);
    e.ok(&["system", "prune", "-f", "--filter", "label=gone"]);
    assert_eq!(names(&all), ["other"]);
    cleanup(&e);
}

/// `ps -s` and the other fields of Docker's `ps` templates: Size (the
/// writable layer and, virtual, with the image), RunningFor, Labels, Mounts,
/// Networks.
#[test]
fn ps_shows_sizes_and_docker_template_fields() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "sz",
        "--network",
        "none",
        "-l",
        "team=x",
        "-v",
        "vol:/data",
        "bb",
        "sleep",
        "100",
    ]);
    e.ok(&[
        "exec",
        "sz",
        "dd",
        "if=/dev/zero",
        "of=/big",
        "bs=1k",
        "count=200",
    ]);
    let table = e.ok(&["ps", "-s"]);
    let header = table.lines().next().unwrap();
    assert!(header.trim_end().ends_with("SIZE"), "{table}");
    let size = e.ok(&["ps", "--format", "{{.Size}}"]);
    let (rw, virt) = size.trim().split_once(" (virtual ").unwrap();
    let kb = |s: &str| -> f64 {
        let n: f64 = s
            .trim_end_matches(|c: char| c.is_alphabetic() || c == ')')
            .parse()
            .unwrap();
        if s.contains("MB") {
            n * 1000.0
        } else {
            n
        }
    };
    assert!(kb(rw) >= 204.8 && kb(rw) < 400.0, "{size}");
    assert!(
        kb(virt) > kb(rw) + 1000.0,
        "the image's layers count too: {size}"
    );
    assert_eq!(
        e.ok(&["ps", "--format", "{{.Labels}}|{{.Mounts}}|{{.Networks}}"]),
        "team=x|vol|none\n"
    );
    assert!(e
        .ok(&["ps", "--format", "{{.RunningFor}}"])
        .trim_end()
        .ends_with(" ago"));
    e.ok(&["rm", "-f", "sz"]);
}
