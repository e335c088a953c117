//! Containers through the docker-style command line: run, ps, logs, exec,
//! stop, start, rm, and what happens when things are killed.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use berth_integration::{privileged, process_alive, text, Engine};
use serde_json::Value;

#[test]
fn run_rm_prints_and_leaves_nothing() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let out = e.run(&["run", "--rm", "bb", "echo", "hi"]);
    assert_eq!(text(&out.stdout), "hi\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        e.ok(&["ps", "-a", "-q"]).trim(),
        "",
        "--rm leaves no container"
    );
    e.assert_no_mounts();
    let runtime_state = e.tmp.path().join("run/runtime");
    let left: Vec<_> = std::fs::read_dir(&runtime_state)
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    assert!(left.is_empty(), "runtime state left: {left:?}");

    let out = e.run(&["run", "--rm", "bb", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    let out = e.run(&["run", "--rm", "bb", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no-such-command"),
        "{}",
        text(&out.stderr)
    );
    // A file that is no program: 126, and the path named once.
    let out = e.run(&["run", "--rm", "bb", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "berth: exec: \"/etc/passwd\": permission denied\n"
    );
    assert_eq!(e.ok(&["ps", "-a", "-q"]).trim(), "");
}

#[test]
fn detached_lifecycle() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    // Ignores SIGTERM, so stop must kill it after -t.
    let id = e
        .ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "bb",
            "sh",
            "-c",
            "trap '' TERM; echo started; while true; do sleep 1; done",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    let ps = e.ok(&["ps", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(ps.trim(), "web running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !e.ok(&["logs", "web"]).contains("started") {
        assert!(Instant::now() < deadline, "no log output");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = e.ok(&[
        "exec",
        "web",
        "sh",
        "-c",
        "echo persisted > /data.txt; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    assert!(out.starts_with("sh -c"), "{out}");
    let t0 = Instant::now();
    e.ok(&["stop", "-t", "1", "web"]);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "stop waited for -t: {took:?}"
    );
    assert!(
        took < Duration::from_secs(8),
        "stop killed after -t: {took:?}"
    );
    let state = e.inspect("web");
    assert_eq!(state["State"]["Status"], "exited");
    assert_eq!(state["State"]["ExitCode"], 137);
    // As Docker: a status filter looks at every container, not only running ones.
    assert_eq!(e.ok(&["ps", "-q"]).trim(), "");
    assert_eq!(
        e.ok(&["ps", "-q", "--filter", "status=exited"]).trim(),
        &id[..12]
    );
    assert_eq!(e.ok(&["ps", "-q", "-f", "status=running"]).trim(), "");
    assert_eq!(e.ok(&["ps", "-aq", "-f", "exited=137"]).trim(), &id[..12]);
    assert_eq!(e.ok(&["ps", "-aq", "-f", "exited=0"]).trim(), "");
    e.fails(&["ps", "-f", "exited=x"], "invalid filter");
    e.ok(&["start", "web"]);
    let out = e.ok(&["exec", "web", "cat", "/data.txt"]);
    assert_eq!(
        out, "persisted\n",
        "the container layer survives stop/start"
    );
    // As Docker: starting a running container succeeds and changes nothing.
    let pid = e.inspect("web")["State"]["Pid"].clone();
    assert_eq!(e.ok(&["start", "web"]).trim(), "web");
    assert_eq!(e.inspect("web")["State"]["Pid"], pid, "start restarted it");
    let out = e.run(&["rm", "web"]);
    assert_eq!(
        out.status.code(),
        Some(125),
        "rm of a running container needs -f"
    );
    e.ok(&["rm", "-f", "web"]);
    assert_eq!(e.ok(&["ps", "-a", "-q"]).trim(), "");
    assert!(
        !e.root().join("containers").join(&id).exists(),
        "the container layer is gone"
    );
    e.assert_no_mounts();
    let out = e.run(&["exec", "web", "true"]);
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn containers_do_not_see_each_others_writes() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&["run", "-d", "--name", "ca", "bb", "sleep", "1000"]);
    e.ok(&["run", "-d", "--name", "cb", "bb", "sleep", "1000"]);
    e.ok(&["exec", "ca", "sh", "-c", "echo mine > /etc/only-a"]);
    assert_eq!(e.ok(&["exec", "ca", "cat", "/etc/only-a"]), "mine\n");
    let out = e.run(&["exec", "cb", "cat", "/etc/only-a"]);
    assert_ne!(out.status.code(), Some(0), "cb sees ca's write");
    e.ok(&["rm", "-f", "ca", "cb"]);
}

#[test]
fn parallel_runs_get_unique_ids_and_names() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let n = 50;
    let children: Vec<_> = (0..n)
        .map(|_| {
            e.command(&["run", "-d", "bb", "sleep", "1000"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        ids.insert(text(&out.stdout).trim().to_string());
    }
    assert_eq!(ids.len(), n, "unique ids");
    let names = e.ok(&["ps", "--format", "{{.Names}}"]);
    let names: std::collections::BTreeSet<&str> = names.lines().collect();
    assert_eq!(names.len(), n, "ps shows {n} containers with unique names");
    let all: Vec<String> = ids.into_iter().collect();
    let mut args = vec!["rm", "-f"];
    args.extend(all.iter().map(String::as_str));
    e.ok(&args);
    assert_eq!(e.ok(&["ps", "-a", "-q"]).trim(), "");
    e.assert_no_mounts();
}

#[test]
fn killed_monitor_is_reconciled() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&["run", "-d", "--name", "orphan", "bb", "sleep", "1000"]);
    let state = e.inspect("orphan");
    let pid = state["State"]["Pid"].as_i64().unwrap() as i32;
    let record: Value = serde_json::from_slice(
        &std::fs::read(
            e.root()
                .join("containers")
                .join(state["Id"].as_str().unwrap())
                .join("container.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let monitor = record["state"]["monitor_pid"].as_i64().unwrap() as i32;
    // Kill it in its steady state: berth-monitor, execed into from `berth __monitor`.
    berth_integration::wait_until(10, "berth-monitor to take over", || {
        exe_and_ppid(monitor).is_some_and(|(exe, _)| exe.ends_with("berth-monitor"))
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(monitor) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let ps = e.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(ps.trim(), "orphan exited", "{ps}");
    assert!(!process_alive(pid), "the container's process was stopped");
    e.ok(&["rm", "orphan"]);
    e.assert_no_mounts();
}

/// A monitor spawned to wait for an attach client (`start -a`, `run`) whose
/// spawning command dies first gives up instead of holding the container.
#[test]
fn monitor_waiting_for_a_dead_attacher_gives_up() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let id = e
        .ok(&[
            "create",
            "--name",
            "waiter",
            "--network",
            "none",
            "bb",
            "true",
        ])
        .trim()
        .to_string();
    // The spawner: a shell that starts the monitor in the background and exits.
    let script = format!(
        "'{}' --root '{}' --run-root '{}' __monitor {id} --wait-attach & sleep 0.3",
        berth_integration::berth_bin().display(),
        e.root().display(),
        e.tmp.path().join("run").display(),
    );
    let status = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let monitor_of = |id: &str| {
        std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
            let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            args.windows(2)
                .any(|w| w[0] == b"__monitor" && w[1] == id.as_bytes())
        })
    };
    berth_integration::wait_until(10, "the orphaned monitor to give up", || !monitor_of(&id));
    let error = e.inspect("waiter")["State"]["Error"].clone();
    assert!(
        error
            .as_str()
            .unwrap_or("")
            .contains("exited before attaching"),
        "{error}"
    );
    let started = Instant::now();
    e.ok(&["rm", "waiter"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "rm waited on a stale claim"
    );
}

#[test]
fn killed_foreground_run_leaves_the_container_running() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let mut child = e
        .command(&["run", "--name", "fg", "bb", "sleep", "1000"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !e.ok(&["ps", "--format", "{{.Names}}"]).contains("fg") {
        assert!(Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let ps = e.ok(&["ps", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(
        ps.trim(),
        "fg running",
        "the monitor keeps it running: {ps}"
    );
    e.ok(&["rm", "-f", "fg"]);
}

#[test]
fn bad_input_is_one_line_and_changes_nothing() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&["create", "--name", "taken", "bb", "true"]);
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--no-such-flag", "bb"], "--no-such-flag"),
        (
            &["run", "--pull", "never", "nosuchimage:1", "true"],
            "berth pull",
        ),
        (
            &["run", "--pull", "sometimes", "bb", "true"],
            "invalid --pull",
        ),
        (&["run", "--name", "taken", "bb", "true"], "already in use"),
        (&["run", "--memory", "12x", "bb", "true"], "12x"),
        (&["exec", "taken", "true"], "not running"),
    ];
    for (args, needle) in cases {
        let out = e.run(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} lacks {needle:?}"
        );
        if !args.contains(&"--no-such-flag") {
            assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        }
    }
    let ps = e.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(ps.trim(), "taken", "nothing else was created");
    e.ok(&["rm", "taken"]);
}

/// The container's process starts with no signal ignored or blocked, whatever berth
/// was started with (a shell's background job has SIGINT and SIGQUIT ignored; Rust
/// ignores SIGPIPE): otherwise ^C could not stop a command in it.
#[test]
fn container_process_starts_with_default_signals() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let mut cmd = e.command(&[
        "run",
        "--rm",
        "--network",
        "none",
        "bb",
        "cat",
        "/proc/self/status",
    ]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::libc::signal(nix::libc::SIGINT, nix::libc::SIG_IGN);
            nix::libc::signal(nix::libc::SIGQUIT, nix::libc::SIG_IGN);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = text(&out.stdout);
    let mask = |field: &str| {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        u64::from_str_radix(line[field.len()..].trim(), 16).unwrap()
    };
    // Every signal but 32 and 33 (bits 31 and 32), which glibc reserves.
    let glibc = 0b11 << 31;
    assert_eq!(mask("SigIgn:") & !glibc, 0, "ignored: {status}");
    assert_eq!(mask("SigBlk:") & !glibc, 0, "blocked: {status}");
}

#[test]
fn interactive_tty_session() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = pty.slave.as_raw_fd();
    let mut cmd = e.command(&["run", "-it", "--name", "tty", "bb", "sh"]);
    cmd.stdin(pty.slave.try_clone().unwrap())
        .stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let _ = nix::unistd::setsid();
            nix::ioctl_write_int_bad!(tiocsctty, nix::libc::TIOCSCTTY);
            let _ = tiocsctty(slave, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    drop(pty.slave);
    let master = std::fs::File::from(pty.master);
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut reader = master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let expect = |needle: &str, seen: &mut String| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "never saw {needle:?} in {seen:?}");
            if let Ok(chunk) = rx.recv_timeout(left) {
                seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        }
    };
    let write = |s: &[u8]| {
        use std::io::Write;
        (&master).write_all(s).unwrap();
    };
    expect("# ", &mut seen);
    write(b"echo $((6*7))\r");
    expect("42", &mut seen);
    // Ctrl-C interrupts the foreground command, not the shell.
    write(b"sleep 30\r");
    // (On a loaded machine the shell may take a while to start it.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while !e.run(&["exec", "tty", "pidof", "sleep"]).status.success() {
        assert!(Instant::now() < deadline, "sleep never started: {seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // All the shell printed before it started sleep (its prompt, its echo of the
    // command) is counted here, not taken for the prompt after Ctrl-C: the shell is
    // quiet while sleep runs, so what arrives until a pause is all of it.
    while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(300)) {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let prompts = seen.matches("# ").count();
    write(b"\x03");
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.matches("# ").count() == prompts {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no prompt after Ctrl-C in {seen:?}");
        if let Ok(chunk) = rx.recv_timeout(left) {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    write(b"echo after-$((1+1))\r");
    expect("after-2", &mut seen);
    write(b"tty\r");
    expect("/dev/pts/0", &mut seen);
    write(b"exit 5\r");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(5), "{seen}");
    e.ok(&["rm", "tty"]);
}

/// A process under a new pty; returns (child, master, output receiver).
fn spawn_under_pty(
    e: &Engine,
    args: &[&str],
) -> (
    std::process::Child,
    std::fs::File,
    std::sync::mpsc::Receiver<Vec<u8>>,
) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = pty.slave.as_raw_fd();
    let mut cmd = e.command(args);
    cmd.stdin(pty.slave.try_clone().unwrap())
        .stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let _ = nix::unistd::setsid();
            nix::ioctl_write_int_bad!(tiocsctty, nix::libc::TIOCSCTTY);
            let _ = tiocsctty(slave, 0);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(cmd);
    drop(pty.slave);
    let master = std::fs::File::from(pty.master);
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut reader = master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    (child, master, rx)
}

fn wait_for(rx: &std::sync::mpsc::Receiver<Vec<u8>>, seen: &mut String, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "never saw {needle:?} in {seen:?}");
        if let Ok(chunk) = rx.recv_timeout(left) {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[test]
fn detach_keys_and_reattach() {
    if !privileged() {
        return;
    }
    use std::io::Write;
    let e = Engine::with_busybox();
    let (mut child, master, rx) = spawn_under_pty(&e, &["run", "-it", "--name", "det", "bb", "sh"]);
    let mut seen = String::new();
    wait_for(&rx, &mut seen, "# ");
    (&master).write_all(b"echo before-$((2+3))\r").unwrap();
    wait_for(&rx, &mut seen, "before-5");
    // ctrl-p ctrl-q detaches: berth exits 0, the container keeps running.
    (&master).write_all(b"\x10\x11").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        e.ok(&["ps", "--format", "{{.Names}} {{.State}}"]).trim(),
        "det running"
    );
    let (mut child, master, rx) = spawn_under_pty(&e, &["attach", "det"]);
    let mut seen = String::new();
    std::thread::sleep(Duration::from_millis(300));
    (&master).write_all(b"echo again-$((3+4))\r").unwrap();
    wait_for(&rx, &mut seen, "again-7");
    (&master).write_all(b"exit 4\r").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4), "{seen}");
    e.ok(&["rm", "det"]);

    // --detach-keys replaces the sequence: ctrl-p ctrl-q then reaches the shell.
    let (mut child, master, rx) = spawn_under_pty(
        &e,
        &[
            "run",
            "-it",
            "--detach-keys",
            "ctrl-a,d",
            "--name",
            "det2",
            "bb",
            "sh",
        ],
    );
    let mut seen = String::new();
    wait_for(&rx, &mut seen, "# ");
    (&master)
        .write_all(b"\x10\x11echo still-$((1+1))\r")
        .unwrap();
    wait_for(&rx, &mut seen, "still-2");
    (&master).write_all(b"\x01d").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(
        e.ok(&["ps", "--format", "{{.Names}} {{.State}}"]).trim(),
        "det2 running"
    );
    e.fails(
        &["attach", "--detach-keys", "ctrl-1", "det2"],
        "invalid --detach-keys",
    );
    e.ok(&["rm", "-f", "det2"]);
}

#[test]
fn logs_follow_tail_and_timestamps() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "bb",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line$i; done; echo oops >&2; sleep 1; echo late",
    ]);
    let mut follow = e
        .command(&["logs", "-f", "talker"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = String::new();
    follow
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(follow.wait().unwrap().success());
    assert_eq!(
        out, "line1\nline2\nline3\nline4\nline5\nlate\n",
        "-f follows until the container exits"
    );
    let tail = e.ok(&["logs", "--tail", "2", "talker"]);
    assert_eq!(
        tail, "late\n",
        "stderr goes to stderr; the last 2 entries are oops and late"
    );
    let ts = e.ok(&["logs", "-t", "--tail", "1", "talker"]);
    assert!(ts.starts_with("20") && ts.contains("Z late"), "{ts}");
    let err = e.run(&["logs", "talker"]);
    assert_eq!(text(&err.stderr), "oops\n");
    // --since and --until split at the time of "late" (a second after the rest).
    let late = ts.split_whitespace().next().unwrap();
    assert_eq!(e.ok(&["logs", "--since", late, "talker"]), "late\n");
    assert_eq!(
        e.ok(&["logs", "--until", late, "talker"]),
        "line1\nline2\nline3\nline4\nline5\n"
    );
    assert_eq!(
        e.ok(&["logs", "--since", "1h", "--tail", "1", "talker"]),
        "late\n"
    );
    assert_eq!(e.ok(&["logs", "--until", "2000-01-01", "talker"]), "");
    // Without a zone, a time is local time (as Docker reads it): the same
    // clock reading is 3 h later in UTC 3 h west of Greenwich, and 3 h
    // earlier 3 h east of it.
    let zoneless = late.trim_end_matches('Z');
    let in_zone = |tz: &str| {
        let out = e
            .command(&["logs", "--since", zoneless, "talker"])
            .env("TZ", tz)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert_eq!(in_zone("UTC"), "late\n");
    assert_eq!(in_zone("<-03>3"), "");
    assert_eq!(
        in_zone("<+03>-3"),
        "line1\nline2\nline3\nline4\nline5\nlate\n"
    );
    e.fails(&["logs", "--since", "yesterday", "talker"], "invalid time");
    e.ok(&["rm", "talker"]);
}

#[test]
fn images_in_use_are_kept() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&["create", "--name", "user", "bb", "echo", "still-runs"]);
    let out = e.run(&["rmi", "bb"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("must force"),
        "{}",
        text(&out.stderr)
    );
    e.ok(&["image", "prune", "-a"]);
    assert!(
        e.ok(&["images"]).contains("bb"),
        "prune -a kept the image a container uses"
    );
    let out = e.ok(&["rmi", "-f", "bb"]);
    assert!(out.contains("Untagged: bb"), "{out}");
    assert!(
        e.ok(&["images"]).contains("<none>"),
        "the image stays as a dangling one"
    );
    let out = e.run(&["start", "-a", "user"]);
    assert_eq!(text(&out.stdout), "still-runs\n", "{}", text(&out.stderr));
    e.ok(&["rm", "user"]);
    e.ok(&["image", "prune"]);
    assert_eq!(
        e.ok(&["images", "-q"]).trim(),
        "",
        "the dangling image goes once unused"
    );
    assert!(e.blobs().is_empty());
    assert!(e.snapshot_dirs().is_empty());
}

/// The monitor's pid from the engine's record of `name`.
fn monitor_pid(e: &Engine, name: &str) -> i32 {
    let id = e.inspect(name)["Id"].as_str().unwrap().to_string();
    let path = e.root().join("containers").join(id).join("container.json");
    let record: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    record["state"]["monitor_pid"].as_i64().unwrap() as i32
}

/// The executable of a process and its parent's pid (`None` once it is gone).
fn exe_and_ppid(pid: i32) -> Option<(std::path::PathBuf, i32)> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ppid = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()?;
    Some((exe, ppid))
}

#[test]
fn slim_monitor_relays_and_hands_back() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let slim = berth_integration::berth_bin()
        .canonicalize()
        .unwrap()
        .with_file_name("berth-monitor");
    // Running: the monitor is berth-monitor (execed into, same pid), parent of the init.
    e.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "slim",
        "bb",
        "sh",
        "-c",
        "echo ready; echo warn >&2; read line; echo got $line; exit 3",
    ]);
    let init = e.inspect("slim")["State"]["Pid"].as_i64().unwrap() as i32;
    let monitor = monitor_pid(&e, "slim");
    berth_integration::wait_until(10, "berth-monitor to take over", || {
        exe_and_ppid(monitor).is_some_and(|(exe, _)| exe == slim)
    });
    assert_eq!(exe_and_ppid(init).unwrap().1, monitor, "the init's parent");
    let logs = |name: &str| {
        let out = e.run(&["logs", name]);
        (text(&out.stdout), text(&out.stderr))
    };
    berth_integration::wait_until(10, "logs", || {
        logs("slim") == ("ready\n".into(), "warn\n".into())
    });
    // Attach through berth-monitor: input in, output and the exit code (sent
    // by berth after the exec back) out.
    let mut attach = e
        .command(&["attach", "slim"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::io::Write::write_all(attach.stdin.as_mut().unwrap(), b"hello\n").unwrap();
    drop(attach.stdin.take());
    let out = attach.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "got hello\n");
    assert_eq!(out.status.code(), Some(3));
    let state = e.inspect("slim");
    assert_eq!(state["State"]["Status"], "exited");
    assert_eq!(state["State"]["ExitCode"], 3);
    // It reports the exit first, then deletes the veth pair and ends.
    berth_integration::wait_until(5, "the monitor to be gone", || !process_alive(monitor));
    assert_eq!(logs("slim"), ("ready\ngot hello\n".into(), "warn\n".into()));

    // Restarts: each run relayed by berth-monitor, the same monitor process throughout.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "again",
        "--restart",
        "on-failure:2",
        "bb",
        "sh",
        "-c",
        "echo run; sleep 1; exit 1",
    ]);
    let monitor = monitor_pid(&e, "again");
    let mut inits = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while e.inspect("again")["State"]["Status"] != "exited" {
        assert!(Instant::now() < deadline, "on-failure:2 never gave up");
        let pid = e.inspect("again")["State"]["Pid"].as_i64().unwrap() as i32;
        let slim_parent = exe_and_ppid(monitor).is_some_and(|(exe, _)| exe == slim)
            && exe_and_ppid(pid).is_some_and(|(_, ppid)| ppid == monitor);
        if pid > 0 && slim_parent {
            inits.insert(pid);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(inits.len(), 3, "3 runs under berth-monitor: {inits:?}");
    assert_eq!(e.ok(&["logs", "again"]), "run\nrun\nrun\n");
    assert_eq!(e.inspect("again")["State"]["ExitCode"], 1);

    // --rm in the foreground: output, exit code, and nothing left.
    let out = e.run(&["run", "--rm", "bb", "sh", "-c", "echo bye; exit 4"]);
    assert_eq!(text(&out.stdout), "bye\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(4));
    e.ok(&["rm", "slim", "again"]);
    assert_eq!(e.ok(&["ps", "-a", "-q"]).trim(), "");
    e.assert_no_mounts();
}

#[test]
fn without_berth_monitor_the_monitor_relays_itself() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    // A berth with no berth-monitor beside it (hard link, else a copy).
    let lone = e.tmp.path().join("lone/berth");
    std::fs::create_dir_all(lone.parent().unwrap()).unwrap();
    let bin = berth_integration::berth_bin().canonicalize().unwrap();
    if std::fs::hard_link(&bin, &lone).is_err() {
        std::fs::copy(&bin, &lone).unwrap();
    }
    let berth = |args: &[&str]| {
        let mut cmd = std::process::Command::new(&lone);
        cmd.arg("--root")
            .arg(e.root())
            .arg("--run-root")
            .arg(e.tmp.path().join("run"))
            .args(args)
            .stdin(std::process::Stdio::null());
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    berth(&[
        "run",
        "-d",
        "--name",
        "inproc",
        "bb",
        "sh",
        "-c",
        "echo one; sleep 1000",
    ]);
    let monitor = monitor_pid(&e, "inproc");
    let init = e.inspect("inproc")["State"]["Pid"].as_i64().unwrap() as i32;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        exe_and_ppid(monitor).unwrap().0,
        lone.canonicalize().unwrap()
    );
    assert_eq!(exe_and_ppid(init).unwrap().1, monitor);
    berth_integration::wait_until(10, "logs", || e.ok(&["logs", "inproc"]) == "one\n");
    berth(&["stop", "-t", "1", "inproc"]);
    assert_eq!(e.inspect("inproc")["State"]["ExitCode"], 137);
    let out = berth(&["run", "--rm", "bb", "sh", "-c", "echo two"]);
    assert_eq!(out, "two\n");
    berth(&["rm", "inproc"]);
    e.assert_no_mounts();
}

/// `--add-host`, `--dns*`, `--expose`, `--pid|--ipc|--uts host` and
/// `--cidfile`, as Docker's: what the container sees, the conflicts Docker
/// refuses, and a taken id file refused before anything is created.
#[test]
fn host_namespaces_dns_hosts_and_cidfile() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let run = |flags: &[&str], script: &str| {
        let mut args = vec!["run", "--rm", "--network", "none"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["bb", "sh", "-c", script]);
        e.ok(&args)
    };
    let out = run(
        &[
            "--add-host",
            "db:10.1.2.3",
            "--add-host",
            "v6=[::1]",
            "--dns",
            "10.0.0.53",
            "--dns-search",
            "example.org",
            "--dns-option",
            "ndots:2",
        ],
        "tail -n 2 /etc/hosts; grep -v '^#' /etc/resolv.conf",
    );
    assert_eq!(
        out,
        "10.1.2.3\tdb\n::1\tv6\nsearch example.org\nnameserver 10.0.0.53\noptions ndots:2\n"
    );

    // Namespaces: new ones by default, the host's on request.
    assert_eq!(run(&[], "echo $$"), "1\n");
    let host_init = std::fs::read_to_string("/proc/1/comm").unwrap();
    let seen = run(&["--pid", "host"], "echo $$; cat /proc/1/comm");
    let (pid, init) = seen.split_once('\n').unwrap();
    assert_ne!(pid, "1", "--pid host: not pid 1");
    assert_eq!(init, host_init, "--pid host sees the host's init");
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        run(&["--uts", "host"], "hostname; cat /etc/hostname"),
        format!("{host_name}{host_name}")
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_name
    );
    let shm = format!("berth-test-{}", std::process::id());
    run(&["--ipc", "host"], &format!("echo shared > /dev/shm/{shm}"));
    let host_shm = std::path::Path::new("/dev/shm").join(&shm);
    let shared = std::fs::read_to_string(&host_shm);
    let _ = std::fs::remove_file(&host_shm);
    assert_eq!(shared.unwrap(), "shared\n", "--ipc host shares /dev/shm");
    run(&[], &format!("echo private > /dev/shm/{shm}"));
    assert!(!host_shm.exists(), "a private /dev/shm reached the host");

    // -P publishes --expose ports too.
    e.ok(&[
        "create",
        "-P",
        "--expose",
        "7000/udp",
        "--expose",
        "7100-7102",
        "--name",
        "exp",
        "bb",
        "true",
    ]);
    let bindings = &e.inspect("exp")["HostConfig"]["PortBindings"];
    for port in ["7000/udp", "7100/tcp", "7101/tcp", "7102/tcp"] {
        assert!(bindings.get(port).is_some(), "{port}: {bindings}");
    }
    e.ok(&["rm", "exp"]);

    // --cidfile: the id is written; a file that exists is refused before any
    // container is made; a create that fails removes the file it claimed.
    let cid = e.tmp.path().join("cid");
    let cid_arg = cid.to_str().unwrap();
    let id = e.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--cidfile",
        cid_arg,
        "bb",
        "sleep",
        "100",
    ]);
    assert_eq!(std::fs::read_to_string(&cid).unwrap(), id.trim());
    e.fails(
        &["run", "-d", "--cidfile", cid_arg, "bb", "true"],
        "must not exist",
    );
    assert_eq!(e.ok(&["ps", "-aq"]).lines().count(), 1);
    e.ok(&["rm", "-f", id.trim()]);
    std::fs::remove_file(&cid).unwrap();
    e.fails(
        &[
            "create",
            "--cidfile",
            cid_arg,
            "--pull",
            "never",
            "nosuch:1",
        ],
        "not found locally",
    );
    assert!(!cid.exists(), "the claimed id file was left");

    for (args, needle) in [
        (
            &["run", "--uts", "host", "-h", "x", "bb", "true"][..],
            "--uts host",
        ),
        (
            &[
                "run",
                "--network",
                "host",
                "--dns",
                "10.0.0.1",
                "bb",
                "true",
            ],
            "--dns",
        ),
        (&["run", "--pid", "container:x", "bb", "true"], "--pid"),
        (&["run", "--ipc", "shared", "bb", "true"], "--ipc"),
        (
            &["run", "--add-host", "nocolon", "bb", "true"],
            "--add-host",
        ),
        (
            &["run", "--add-host", "h:not-an-ip", "bb", "true"],
            "--add-host",
        ),
        (&["run", "--dns", "resolver", "bb", "true"], "--dns"),
        (&["run", "--expose", "70000", "bb", "true"], "--expose"),
    ] {
        e.fails(args, needle);
    }
    assert_eq!(
        e.ok(&["ps", "-aq"]),
        "",
        "a refused run created a container"
    );
    e.assert_no_mounts();
}
