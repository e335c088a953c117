//! The OCI runtime (`berth runtime ...`), seen from inside real containers.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use berth_integration::{
    cgroup_dirs_named, host_mounts_containing, path_str, privileged, process_alive, read_json, sh,
    text, unique_id, write_json, Env,
};
use serde_json::json;

/// Lines `key=value` of a script's output.
fn markers(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn isolation_seen_from_inside() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let script = r#"
echo pid=$$
echo pids=$(cd /proc && echo [0-9]*)
echo hostname=$(hostname)
echo links=$(ls /sys/class/net)
echo mounts=$(awk '{print $5}' /proc/self/mountinfo | sort -u | tr '\n' ' ')
echo procsys=$(echo 1 2>&1 > /proc/sys/kernel/domainname || echo refused)
echo keys_bytes=$(cat /proc/keys | wc -c)
echo timer_list_bytes=$(cat /proc/timer_list | wc -c)
echo rootfs=$(touch /probe 2>&1 || echo refused)
grep -E '^(CapEff|CapPrm|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\t' | tr ':' '='
unshare -n true 2>/tmp/unshare.err; echo unshare_rc=$? ; echo unshare_err=$(cat /tmp/unshare.err 2>/dev/null)
echo ordinary=$(echo hello | tr a-z A-Z)
"#;
    // /tmp is on the read-only rootfs: give the script a tmpfs there.
    let bundle = env.bundle("iso", |c| {
        sh(c, script);
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]
        }));
    });
    let out = env.run_container(&bundle, &unique_id("iso"));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    let m = markers(&stdout);
    assert_eq!(m["pid"], "1", "the spec's process is PID 1");
    // Only the script and its children are visible: small pids, no host processes.
    for pid in m["pids"].split_whitespace() {
        let pid: u32 = pid.parse().unwrap();
        assert!(pid < 20, "unexpected pid {pid} visible: {}", m["pids"]);
    }
    assert_eq!(m["hostname"], "berth-test");
    assert_eq!(m["links"], "lo", "a new network namespace has only lo");
    let allowed = |p: &str| {
        p == "/"
            || p == "/tmp"
            || p.starts_with("/proc")
            || p.starts_with("/dev")
            || p.starts_with("/sys")
    };
    for mount in m["mounts"].split_whitespace() {
        assert!(
            allowed(mount),
            "host mount {mount} visible in the container"
        );
    }
    assert!(
        m["procsys"].contains("refused"),
        "/proc/sys is writable: {}",
        m["procsys"]
    );
    assert_eq!(m["keys_bytes"], "0", "masked /proc/keys reads empty");
    assert_eq!(
        m["timer_list_bytes"], "0",
        "masked /proc/timer_list reads empty"
    );
    assert!(
        m["rootfs"].contains("Read-only"),
        "rootfs is writable: {}",
        m["rootfs"]
    );
    // AUDIT_WRITE (29), KILL (5), NET_BIND_SERVICE (10): the spec's set.
    let expected = format!("{:016x}", (1u64 << 29) | (1 << 5) | (1 << 10));
    assert_eq!(m["CapEff"], expected);
    assert_eq!(m["CapPrm"], expected);
    assert_eq!(m["CapBnd"], expected);
    assert_eq!(m["Seccomp"], "2");
    assert_eq!(m["NoNewPrivs"], "1");
    assert_ne!(m["unshare_rc"], "0", "unshare -n must fail");
    assert!(
        m["unshare_err"].contains("Operation not permitted"),
        "{}",
        m["unshare_err"]
    );
    assert_eq!(m["ordinary"], "HELLO");
}

#[test]
fn user_and_groups_from_spec() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("user", |c| {
        sh(
            c,
            "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); grep CapEff /proc/self/status",
        );
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [5, 7]});
    });
    let out = env.run_container(&bundle, &unique_id("user"));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", text(&out.stderr));
    assert!(stdout.contains("uid=1000 gid=1000"), "{stdout}");
    let groups: Vec<&str> = stdout
        .split("groups=")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    for g in ["1000", "5", "7"] {
        assert!(groups.contains(&g), "group {g} missing: {stdout}");
    }
}

#[test]
fn exit_codes_pass_through() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("exit", |c| sh(c, "exit 7"));
    let out = env.run_container(&bundle, &unique_id("exit"));
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
}

#[test]
fn sigkill_gives_137() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = unique_id("kill");
    let bundle = env.bundle("kill", |c| {
        c["process"]["args"] = json!(["sleep", "1000"]);
    });
    let mut child = env
        .berth(&["run", "-b", path_str(&bundle), &id])
        .spawn()
        .expect("spawn run");
    env.wait_status(&id, "running");
    let out = env.run(&["kill", &id, "KILL"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    assert_eq!(
        env.status(&id),
        None,
        "run deletes the container after it exits"
    );
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = unique_id("oom");
    let bundle = env.bundle("oom", |c| {
        // Doubles a string until the 24 MiB limit is hit.
        sh(c, "a=xxxxxxxxxxxxxxxx; while true; do a=$a$a; done");
        c["linux"]["resources"]["memory"] = json!({"limit": 25165824, "swap": 25165824});
    });
    let out = env.run_container(&bundle, &id);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(137), "{stderr}");
    assert!(
        stderr.contains("OOM killer"),
        "OOM kill not reported: {stderr}"
    );
    assert!(cgroup_dirs_named(&id).is_empty(), "cgroup left behind");
}

#[test]
fn fork_bomb_stops_at_pids_limit() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("pids", |c| {
        sh(
            c,
            "i=0; while [ $i -lt 40 ]; do sleep 2 & i=$((i+1)); done; wait; echo finished",
        );
        c["linux"]["resources"]["pids"] = json!({"limit": 8});
    });
    let out = env.run_container(&bundle, &unique_id("pids"));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("can't fork"),
        "no fork failed under pids.max=8: {stderr}"
    );
    assert!(
        !text(&out.stdout).contains("finished"),
        "all 40 forks succeeded"
    );
}

#[test]
fn terminal_is_a_real_tty() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("tty", |c| {
        c["process"]["terminal"] = json!(true);
        c["process"]["args"] = json!(["tty"]);
    });
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = pty.slave.as_raw_fd();
    let mut cmd = env.berth(&["run", "-b", path_str(&bundle), &unique_id("tty")]);
    cmd.stdin(pty.slave.try_clone().unwrap())
        .stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc_setsid_ctty(slave);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn berth under a pty");
    // Only berth may hold the slave, or the master never reports EIO.
    drop(cmd);
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut output = Vec::new();
    let mut buf = [0u8; 1024];
    // Reading the master gives EIO once every slave fd is closed.
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        output.extend_from_slice(&buf[..n]);
    }
    let status = child.wait().unwrap();
    let output = text(&output);
    assert!(status.success(), "{output}");
    assert!(output.contains("/dev/pts/0"), "tty printed: {output}");
}

fn libc_setsid_ctty(fd: i32) {
    let _ = nix::unistd::setsid();
    nix::ioctl_write_int_bad!(tiocsctty, nix::libc::TIOCSCTTY);
    // SAFETY: TIOCSCTTY on the pty slave we were given.
    let _ = unsafe { tiocsctty(fd, 0) };
}

#[test]
fn exec_joins_pid_namespace_and_filesystem() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = unique_id("exec");
    let bundle = env.bundle("exec", |c| {
        c["process"]["args"] = json!(["sleep", "1000"]);
    });
    let out = env.run(&["run", "-d", "-b", path_str(&bundle), &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(env.status(&id).as_deref(), Some("running"));
    let out = env.run(&["exec", &id, "sh", "-c", "echo shared > /dev/shm/marker"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = env.run(&[
        "exec", &id, "sh", "-c",
        "cat /dev/shm/marker; tr '\\0' ' ' < /proc/1/cmdline; echo; hostname; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\\t'",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "shared", "exec sees the container's filesystem");
    assert_eq!(
        lines[1].trim(),
        "sleep 1000",
        "PID 1 of exec's namespace is the container's init"
    );
    assert_eq!(lines[2], "berth-test");
    assert!(stdout.contains("Seccomp:2"), "{stdout}");
    let out = env.run(&["exec", &id, "no-such-tool"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(text(&out.stderr).contains("no-such-tool"));
    let out = env.run(&["exec", &id, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    let out = env.run(&["delete", "--force", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn lifecycle_and_delete_leave_nothing() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = unique_id("life");
    let bundle = env.bundle("life", |c| {
        c["process"]["args"] = json!(["sleep", "1000"]);
    });
    let pid_file = env.tmp.path().join("pid");
    let out = env.run(&[
        "create",
        "-b",
        path_str(&bundle),
        "--pid-file",
        path_str(&pid_file),
        &id,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(env.status(&id).as_deref(), Some("created"));
    let pid = env.pid(&id);
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), pid.to_string());
    assert!(!cgroup_dirs_named(&id).is_empty(), "container has a cgroup");
    let out = env.run(&["start", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(env.status(&id).as_deref(), Some("running"));
    let out = env.run(&["start", &id]);
    assert!(
        !out.status.success(),
        "a running container cannot be started again"
    );
    let out = env.run(&["delete", &id]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(&["list", "-q"]);
    assert_eq!(text(&out.stdout).trim(), id);
    let out = env.run(&["kill", &id, "KILL"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.status(&id).as_deref() != Some("stopped") {
        assert!(Instant::now() < deadline, "never stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = env.run(&["delete", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!process_alive(pid), "process remains");
    assert!(cgroup_dirs_named(&id).is_empty(), "cgroup remains");
    assert!(
        host_mounts_containing(path_str(&bundle)).is_empty(),
        "mount remains"
    );
    assert!(!env.root().join(&id).exists(), "state remains");
    assert_eq!(env.status(&id), None);
}

#[test]
fn forced_delete_of_running_container_leaves_nothing() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = unique_id("force");
    let bundle = env.bundle("force", |c| sh(c, "sleep 1000 & sleep 1000 & sleep 1000"));
    let out = env.run(&["run", "-d", "-b", path_str(&bundle), &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pid = env.pid(&id);
    let out = env.run(&["delete", "--force", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!process_alive(pid), "process remains");
    assert!(cgroup_dirs_named(&id).is_empty(), "cgroup remains");
    assert!(
        host_mounts_containing(path_str(&bundle)).is_empty(),
        "mount remains"
    );
    let out = env.run(&["list", "-q"]);
    assert_eq!(text(&out.stdout).trim(), "");
}

#[test]
fn bad_input_gives_one_line_and_leaves_nothing() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let good = env.bundle("good", |c| sh(c, "true"));
    let cases: Vec<(&str, std::path::PathBuf, &str)> = vec![
        (
            "missing-bundle",
            env.tmp.path().join("nope"),
            "no such directory",
        ),
        (
            "bad-json",
            {
                let b = env.bundle("badjson", |_| {});
                std::fs::write(b.join("config.json"), "{\"ociVersion\": \"1.0.2\", ").unwrap();
                b
            },
            "invalid config.json",
        ),
        (
            "no-binary",
            env.bundle("nobin", |c| {
                c["process"]["args"] = json!(["no-such-binary"])
            }),
            "no-such-binary",
        ),
        (
            "bad-ns",
            env.bundle("badns", |c| {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "bogus"}))
            }),
            "unknown namespace type \"bogus\"",
        ),
        (
            "no-rootfs",
            {
                let b = env.bundle("norootfs", |_| {});
                let mut c = read_json(&b.join("config.json"));
                c["root"]["path"] = json!("missing-rootfs");
                write_json(&b.join("config.json"), &c);
                b
            },
            "missing-rootfs",
        ),
    ];
    for (name, bundle, needle) in cases {
        let id = unique_id(name);
        let out = env.run(&["run", "-b", path_str(&bundle), &id]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{name} succeeded");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{name}: not one line: {stderr}"
        );
        assert!(
            stderr.contains(needle),
            "{name}: {stderr:?} does not name {needle:?}"
        );
        if name == "no-binary" {
            assert_eq!(out.status.code(), Some(127), "{stderr}");
        }
        assert!(!env.root().join(&id).exists(), "{name}: state left behind");
        assert!(
            cgroup_dirs_named(&id).is_empty(),
            "{name}: cgroup left behind"
        );
    }
    let out = env.run(&["list", "-q"]);
    assert_eq!(text(&out.stdout).trim(), "");
    let out = env.run_container(&good, &unique_id("good"));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn spec_seccomp_profile_is_enforced() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("seccomp", |c| {
        sh(c, "mkdir /tmp/x 2>&1; echo mkdir_rc=$?; echo still=running");
        c["root"]["readonly"] = json!(false);
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
    });
    let out = env.run_container(&bundle, &unique_id("seccomp"));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", text(&out.stderr));
    assert!(stdout.contains("Operation not permitted"), "{stdout}");
    assert!(stdout.contains("still=running"));
}

#[test]
fn hooks_see_the_state() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = unique_id("hooks");
    let log = env.tmp.path().join("hooks.log");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat >> {}; echo ' {name}' >> {}", log.display(), log.display())]});
    let bundle = env.bundle("hooks", |c| {
        sh(c, "true");
        c["hooks"] = json!({
            "createRuntime": [hook("createRuntime")],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")]
        });
    });
    let out = env.run_container(&bundle, &id);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = std::fs::read_to_string(&log).unwrap();
    for name in ["createRuntime", "poststart", "poststop"] {
        assert!(log.contains(name), "{name} hook did not run: {log}");
    }
    assert!(
        log.contains(&format!("\"id\":\"{id}\"")),
        "hooks got the state: {log}"
    );
}

#[test]
fn joins_namespace_by_path() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let first = unique_id("nsa");
    let a = env.bundle("nsa", |c| c["process"]["args"] = json!(["sleep", "1000"]));
    let out = env.run(&["run", "-d", "-b", path_str(&a), &first]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pid = env.pid(&first);
    let net = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let uts = std::fs::read_link(format!("/proc/{pid}/ns/uts")).unwrap();
    let b = env.bundle("nsb", |c| {
        sh(
            c,
            "readlink /proc/self/ns/net; readlink /proc/self/ns/uts; hostname",
        );
        c.as_object_mut().unwrap().remove("hostname");
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            match ns["type"].as_str() {
                Some("network") => ns["path"] = json!(format!("/proc/{pid}/ns/net")),
                Some("uts") => ns["path"] = json!(format!("/proc/{pid}/ns/uts")),
                _ => {}
            }
        }
    });
    let out = env.run_container(&b, &unique_id("nsb"));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], net.to_str().unwrap());
    assert_eq!(lines[1], uts.to_str().unwrap());
    assert_eq!(
        lines[2], "berth-test",
        "joined uts namespace has the first container's hostname"
    );
    let out = env.run(&["delete", "-f", &first]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn device_rules_are_enforced() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let major = berth_integration::free_char_major();
    let script = "for n in a b c; do cat /probe-$n >/dev/null 2>&1 && echo $n-read=ok || \
                  echo $n-read=$(cat /probe-$n 2>&1 | sed 's/.*: //'); \
                  (echo x > /probe-$n) 2>/dev/null && echo $n-write=ok || \
                  echo $n-write=$( (echo x > /probe-$n) 2>&1 | sed 's/.*: //'); done; \
                  echo null=$(echo x > /dev/null && echo ok)";
    let bundle = env.bundle("devices", |c| {
        sh(c, script);
        c["linux"]["resources"]["devices"] = json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": major, "minor": 0, "access": "r"},
            {"allow": true, "type": "c", "major": major, "minor": 1, "access": "rw"},
            {"allow": false, "type": "c", "major": major, "minor": 1, "access": "w"},
        ]);
    });
    for (n, minor) in [("a", 0), ("b", 1), ("c", 2)] {
        let node = bundle.join("rootfs").join(format!("probe-{n}"));
        let made = std::process::Command::new("mknod")
            .arg(&node)
            .args(["c", &major.to_string(), &minor.to_string()])
            .status()
            .expect("run mknod");
        assert!(made.success());
    }
    let out = env.run_container(&bundle, &unique_id("devices"));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", text(&out.stderr));
    let m = markers(&stdout);
    let through = "No such device or address";
    let refused = "Operation not permitted";
    // a: read only; b: read, its write allowed and then denied again (the last
    // rule wins); c: no rule but the first, deny all.
    assert_eq!(m["a-read"], through, "{stdout}");
    assert_eq!(m["a-write"], refused, "{stdout}");
    assert_eq!(m["b-read"], through, "{stdout}");
    assert_eq!(m["b-write"], refused, "{stdout}");
    assert_eq!(m["c-read"], refused, "{stdout}");
    assert_eq!(m["c-write"], refused, "{stdout}");
    assert_eq!(
        m["null"], "ok",
        "the runtime's default devices stay usable: {stdout}"
    );
}
