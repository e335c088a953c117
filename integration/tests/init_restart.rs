//! `run --init` (berth's init as pid 1: exit codes, zombie reaping, signal
//! forwarding) and `--restart` policies carried out by the monitor.

use std::time::{Duration, Instant};

use berth_integration::{privileged, text, wait_until, Engine};
use serde_json::Value;

/// The engine's record of a container (for fields `inspect` may not show yet).
fn record(e: &Engine, name: &str) -> Value {
    let id = e.inspect(name)["Id"].as_str().unwrap().to_string();
    let path = e.root().join("containers").join(id).join("container.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn status(e: &Engine, name: &str) -> String {
    e.inspect(name)["State"]["Status"]
        .as_str()
        .unwrap()
        .to_string()
}

fn log_lines(e: &Engine, name: &str) -> usize {
    e.ok(&["logs", name]).lines().count()
}

#[test]
fn init_is_pid_1_and_passes_exit_codes_through() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let out = e.ok(&["run", "--rm", "--init", "bb", "ps", "-o", "pid,ppid,comm"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(rows.contains(&vec!["1", "0", "berth-init"]), "{out}");
    assert!(
        rows.iter()
            .any(|r| r.get(1) == Some(&"1") && r.get(2) == Some(&"ps")),
        "the command is init's child: {out}"
    );
    // Without --init the command itself is pid 1.
    let out = e.ok(&["run", "--rm", "bb", "ps", "-o", "pid,comm"]);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "ps"]),
        "{out}"
    );

    let out = e.run(&["run", "--rm", "--init", "bb", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    // Killed by a signal: 128 + the signal, as a shell reports it.
    let out = e.run(&["run", "--rm", "--init", "bb", "sh", "-c", "kill -USR1 $$"]);
    assert_eq!(out.status.code(), Some(128 + 10), "{}", text(&out.stderr));
    let out = e.run(&["run", "--rm", "--init", "bb", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no-such-command"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(e.ok(&["ps", "-a", "-q"]).trim(), "");
}

/// Zombie (`Z`) lines of `ps` in a container.
fn zombies(e: &Engine, name: &str) -> Vec<String> {
    e.ok(&["exec", name, "ps", "-o", "stat,comm"])
        .lines()
        .filter(|l| l.trim_start().starts_with('Z'))
        .map(str::to_string)
        .collect()
}

#[test]
fn init_reaps_orphans() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    // The subshell's `sleep 0.1` is orphaned and reparents to pid 1; then
    // pid 1 is (or execs) `sleep 1000`, which never reaps it.
    let script = "(sleep 0.1 &); exec sleep 1000";
    e.ok(&["run", "-d", "--name", "plain", "bb", "sh", "-c", script]);
    e.ok(&[
        "run", "-d", "--name", "withinit", "--init", "bb", "sh", "-c", script,
    ]);
    wait_until(10, "the orphan's zombie without --init", || {
        zombies(&e, "plain").len() == 1
    });
    // By now the orphan in the other container has ended too.
    std::thread::sleep(Duration::from_millis(300));
    let z = zombies(&e, "withinit");
    assert!(z.is_empty(), "init reaps orphans: {z:?}");
    let ps = e.ok(&["exec", "withinit", "ps", "-o", "comm"]);
    assert_eq!(
        ps.lines().filter(|l| l.trim() == "sleep").count(),
        1,
        "only sleep 1000 is left: {ps}"
    );
    e.ok(&["rm", "-f", "plain", "withinit"]);
}

#[test]
fn init_forwards_the_stop_signal() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    // As pid 1, sleep has no handler and ignores SIGTERM: stop waits -t, then kills.
    e.ok(&["run", "-d", "--name", "plain", "bb", "sleep", "1000"]);
    let t0 = Instant::now();
    e.ok(&["stop", "-t", "2", "plain"]);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(1900), "stop waited: {took:?}");
    assert_eq!(e.inspect("plain")["State"]["ExitCode"], 137);

    // With --init, SIGTERM goes through init to sleep, which dies at once.
    e.ok(&[
        "run", "-d", "--name", "withinit", "--init", "bb", "sleep", "1000",
    ]);
    let t0 = Instant::now();
    e.ok(&["stop", "-t", "5", "withinit"]);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(2), "stop took {took:?}");
    let state = e.inspect("withinit");
    assert_eq!(state["State"]["Status"], "exited");
    assert_eq!(state["State"]["ExitCode"], 143, "128 + SIGTERM");
    e.ok(&["rm", "plain", "withinit"]);
}

#[test]
fn restart_on_failure_retries_n_times() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "bb",
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    wait_until(15, "flaky to give up", || status(&e, "flaky") == "exited");
    // Nothing restarts it afterwards.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(status(&e, "flaky"), "exited");
    assert_eq!(
        e.ok(&["logs", "flaky"]),
        "run\nrun\nrun\n",
        "1 run + 2 restarts"
    );
    assert_eq!(e.inspect("flaky")["State"]["ExitCode"], 1);
    let r = record(&e, "flaky");
    assert_eq!(r["state"]["restart_count"], 2);
    assert_eq!(r["restart_policy"]["name"], "on-failure");

    // A success is not a failure.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "fine",
        "--restart",
        "on-failure",
        "bb",
        "sh",
        "-c",
        "echo run",
    ]);
    wait_until(10, "fine to exit", || status(&e, "fine") == "exited");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(status(&e, "fine"), "exited");
    assert_eq!(log_lines(&e, "fine"), 1);
    assert_eq!(record(&e, "fine")["state"]["restart_count"], 0);

    // A foreground run returns with its first exit; the monitor restarts it.
    let out = e.run(&[
        "run",
        "--name",
        "fg",
        "--restart",
        "on-failure:1",
        "bb",
        "sh",
        "-c",
        "echo fg; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "fg\n");
    wait_until(10, "fg to give up", || {
        status(&e, "fg") == "exited" && record(&e, "fg")["state"]["restart_count"] == 1
    });
    assert_eq!(e.ok(&["logs", "fg"]), "fg\nfg\n");
    e.ok(&["rm", "flaky", "fine", "fg"]);
}

#[test]
fn restart_always_until_stopped() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "--restart",
        "always",
        "bb",
        "sh",
        "-c",
        "echo up; sleep 0.3",
    ]);
    let first_pid = e.inspect("svc")["State"]["Pid"].as_i64().unwrap();
    assert!(first_pid > 0);
    // Restarted after a clean exit, as a new process.
    wait_until(10, "a restart of svc", || {
        let s = e.inspect("svc");
        let pid = s["State"]["Pid"].as_i64().unwrap();
        log_lines(&e, "svc") >= 2 && pid > 0 && pid != first_pid
    });
    assert_eq!(status(&e, "svc"), "running");
    assert!(
        record(&e, "svc")["state"]["restart_count"]
            .as_u64()
            .unwrap()
            >= 1
    );
    // A stop through berth is final.
    e.ok(&["stop", "-t", "1", "svc"]);
    assert_eq!(status(&e, "svc"), "exited");
    let lines = log_lines(&e, "svc");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status(&e, "svc"), "exited", "stopped for good");
    assert_eq!(log_lines(&e, "svc"), lines, "no run after the stop");

    // `start` re-arms the policy and resets the count.
    e.ok(&["start", "svc"]);
    assert_eq!(record(&e, "svc")["state"]["restart_count"], 0);
    wait_until(10, "svc to restart after start", || {
        record(&e, "svc")["state"]["restart_count"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    // rm -f of a restarting container is not undone by its monitor.
    let id = e.inspect("svc")["Id"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    e.ok(&["rm", "-f", "svc"]);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(!e.root().join("containers").join(id).exists());
    assert_eq!(e.ok(&["ps", "-a", "-q"]).trim(), "");
}

#[test]
fn kill_with_another_signal_keeps_the_policy() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "hup",
        "--init",
        "--restart",
        "unless-stopped",
        "bb",
        "sleep",
        "1000",
    ]);
    let first_pid = e.inspect("hup")["State"]["Pid"].as_i64().unwrap();
    // SIGHUP through init ends sleep (129); the policy restarts it.
    e.ok(&["kill", "-s", "HUP", "hup"]);
    wait_until(10, "hup to be restarted", || {
        let s = e.inspect("hup");
        let pid = s["State"]["Pid"].as_i64().unwrap();
        pid > 0 && pid != first_pid
    });
    let r = record(&e, "hup");
    assert_eq!(r["state"]["restart_count"], 1);
    assert_eq!(r["state"]["exit_code"], 129);
    // SIGKILL (kill's default) is final, as Docker's.
    e.ok(&["kill", "hup"]);
    wait_until(10, "hup to exit", || status(&e, "hup") == "exited");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(status(&e, "hup"), "exited");
    assert_eq!(e.inspect("hup")["State"]["ExitCode"], 137);
    e.ok(&["rm", "hup"]);
}

#[test]
fn restart_flag_errors() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let out = e.run(&["run", "--rm", "--restart", "always", "bb", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("Conflicting options: --restart and --rm"),
        "{}",
        text(&out.stderr)
    );
    for bad in ["sometimes", "always:3", "on-failure:x"] {
        let out = e.run(&["run", "-d", "--restart", bad, "bb", "true"]);
        assert_eq!(out.status.code(), Some(125), "{bad}");
        assert!(
            text(&out.stderr).contains("restart policy"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(e.ok(&["ps", "-a", "-q"]).trim(), "", "nothing was created");
}
