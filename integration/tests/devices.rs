//! Device access: a container may open only the runtime's default devices
//! unless given more (`--device`, `--device-cgroup-rule`, `--privileged`).
//! Enforced by the devices cgroup on v1 hosts and by an eBPF program on v2
//! ones (the VM suite runs this file on a cgroup v2 guest).
//!
//! The probe is a character device number no driver has: opening its node
//! fails with ENXIO when the cgroup lets the open through and with EPERM when
//! the cgroup refuses it, and touches no real device either way.

use berth_integration::{privileged, text, Engine};

const DENIED: &str = "Operation not permitted";
const LET_THROUGH: &str = "No such device or address";

fn open_probe(e: &Engine, extra: &[&str], major: u32) -> String {
    let script = format!("mknod /tmp/probe c {major} 0 && cat /tmp/probe");
    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["bb", "sh", "-c", &script]);
    let out = e.run(&args);
    assert_ne!(out.status.code(), Some(0));
    text(&out.stderr)
}

#[test]
fn only_default_devices_unless_given() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let major = berth_integration::free_char_major();

    // mknod is allowed, opening what it made is not.
    let err = open_probe(&e, &[], major);
    assert!(err.contains(DENIED), "default: {err}");
    let rule = format!("c {major}:* r");
    let err = open_probe(&e, &["--device-cgroup-rule", &rule], major);
    assert!(err.contains(LET_THROUGH), "with a rule: {err}");
    let err = open_probe(&e, &["--privileged"], major);
    assert!(err.contains(LET_THROUGH), "privileged: {err}");

    // The defaults work.
    let out = e.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "bb",
        "sh",
        "-c",
        "echo x > /dev/null && head -c 3 /dev/zero | wc -c && head -c 2 /dev/urandom | wc -c",
    ]);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["3", "2"]);

    // --device: the host's node at the container path, with the permissions
    // given (a node for the probe number, made for the test).
    let host_node = e.tmp.path().join("probe-node");
    let made = std::process::Command::new("mknod")
        .arg(&host_node)
        .args(["c", &major.to_string(), "0"])
        .status()
        .expect("run mknod");
    assert!(made.success());
    let device = format!("{}:/dev/probe:r", host_node.display());
    let out = e.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--device",
        &device,
        "bb",
        "sh",
        "-c",
        "ls -l /dev/probe; cat /dev/probe; echo x > /dev/probe",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stdout.contains(&format!("{major},   0")), "{stdout}");
    assert!(
        stderr.contains(&format!("'/dev/probe': {LET_THROUGH}")),
        "read was granted: {stderr}"
    );
    assert!(
        stderr.contains(&format!("create /dev/probe: {DENIED}")),
        "write was not granted: {stderr}"
    );
    let devices = e.ok(&["create", "--device", &device, "bb", "true"]);
    let json = e.ok(&[
        "inspect",
        "-f",
        "{{json .HostConfig.Devices}}",
        devices.trim(),
    ]);
    assert!(
        json.contains("\"PathInContainer\":\"/dev/probe\""),
        "{json}"
    );
    e.ok(&["rm", devices.trim()]);

    // exec'd processes are held to the same rules.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "held",
        "--network",
        "none",
        "bb",
        "sleep",
        "60",
    ]);
    let mk = format!("mknod /tmp/probe c {major} 0");
    e.ok(&["exec", "held", "sh", "-c", &mk]);
    let out = e.run(&["exec", "held", "cat", "/tmp/probe"]);
    assert!(text(&out.stderr).contains(DENIED), "{}", text(&out.stderr));
    e.ok(&["rm", "-f", "held"]);

    // Bad flags: one line, exit 125, nothing created.
    for (flag, value, says) in [
        (
            "--device",
            "/dev/no-such-device",
            "error gathering device information",
        ),
        ("--device", "/etc/hostname", "not a device"),
        ("--device", "/dev/null:/dev/n:rx", "permissions"),
        ("--device-cgroup-rule", "q 1:1 r", "TYPE MAJOR:MINOR PERMS"),
    ] {
        let out = e.run(&["run", "--rm", flag, value, "bb", "true"]);
        assert_eq!(out.status.code(), Some(125), "{flag} {value}");
        let err = text(&out.stderr);
        assert!(
            err.contains(says) && err.trim().lines().count() == 1,
            "{flag} {value}: {err}"
        );
    }
    assert_eq!(e.ok(&["ps", "-aq"]).trim(), "");
}
