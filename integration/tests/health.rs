//! Healthchecks: `--health-*` flags and the image's HEALTHCHECK, run in the
//! container by a process that lasts as long as the run it checks.

use std::time::Duration;

use berth_integration::{privileged, text, wait_until, Engine};
use serde_json::Value;

fn health(e: &Engine, name: &str) -> Value {
    let out = e.ok(&["inspect", "-f", "{{json .State.Health}}", name]);
    serde_json::from_str(out.trim()).expect("health json")
}

fn status(e: &Engine, name: &str) -> String {
    health(e, name)["Status"].as_str().unwrap_or("").to_string()
}

/// Pids of the `berth __health ID ...` processes of container `id`.
fn health_processes(id: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args
            .windows(2)
            .any(|w| w[0] == b"__health" && w[1] == id.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn status_follows_the_check_and_shows_in_ps() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let id = e
        .ok(&[
            "run",
            "-d",
            "--name",
            "hc",
            "--network",
            "none",
            "--health-cmd",
            "echo checking; test -e /tmp/ok",
            "--health-interval",
            "2s",
            "--health-retries",
            "3",
            "bb",
            "sleep",
            "60",
        ])
        .trim()
        .to_string();
    assert_eq!(status(&e, "hc"), "starting");
    assert!(e.ok(&["ps"]).contains("(health: starting)"));
    wait_until(40, "unhealthy after 3 failures", || {
        status(&e, "hc") == "unhealthy"
    });
    let h = health(&e, "hc");
    assert!(h["FailingStreak"].as_u64().unwrap() >= 3, "{h}");
    let last = h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], 1, "{h}");
    assert_eq!(last["Output"], "checking\n", "{h}");
    assert!(e.ok(&["ps"]).contains("(unhealthy)"));
    assert_eq!(
        e.ok(&["ps", "-q", "--filter", "health=unhealthy"]).trim(),
        &id[..12]
    );
    assert_eq!(e.ok(&["ps", "-q", "--filter", "health=healthy"]).trim(), "");

    e.ok(&["exec", "hc", "touch", "/tmp/ok"]);
    wait_until(20, "healthy once the check passes", || {
        status(&e, "hc") == "healthy"
    });
    let h = health(&e, "hc");
    assert_eq!(h["FailingStreak"], 0, "{h}");
    assert!(h["Log"].as_array().unwrap().len() <= 5, "{h}");
    assert!(e.ok(&["ps"]).contains("(healthy)"));
    assert_eq!(
        e.ok(&["ps", "-q", "--filter", "health=healthy"]).trim(),
        &id[..12]
    );
    let cfg = e.ok(&["inspect", "-f", "{{json .Config.Healthcheck}}", "hc"]);
    let cfg: Value = serde_json::from_str(cfg.trim()).unwrap();
    assert_eq!(
        cfg["Test"],
        serde_json::json!(["CMD-SHELL", "echo checking; test -e /tmp/ok"])
    );
    assert_eq!(cfg["Interval"], 2_000_000_000u64);
    assert_eq!(cfg["Retries"], 3);

    // The checker ends with the run, which is then unhealthy (as Docker's).
    assert_eq!(health_processes(&id).len(), 1);
    e.ok(&["kill", "hc"]);
    wait_until(10, "the health process to end", || {
        health_processes(&id).is_empty()
    });
    assert_eq!(status(&e, "hc"), "unhealthy");
    let bad = e.run(&["ps", "--filter", "health=sick"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(
        text(&bad.stderr).contains("health=\"sick\""),
        "{}",
        text(&bad.stderr)
    );
    e.ok(&["rm", "-f", "hc"]);
}

#[test]
fn a_check_that_times_out_is_killed_and_output_is_capped() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--network",
        "none",
        "--health-cmd",
        "echo started; exec sleep 30",
        "--health-interval",
        "5s",
        "--health-timeout",
        "300ms",
        "bb",
        "sleep",
        "60",
    ]);
    wait_until(20, "a first result", || {
        health(&e, "slow")["Log"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    });
    let h = health(&e, "slow");
    let first = &h["Log"][0];
    assert_eq!(first["ExitCode"], -1, "{h}");
    assert_eq!(
        first["Output"], "Health check exceeded timeout (300ms)",
        "{h}"
    );
    // The timed-out check's process is gone from the container.
    let ps = e.ok(&["exec", "slow", "ps"]);
    assert!(!ps.contains("sleep 30"), "{ps}");

    e.ok(&[
        "run",
        "-d",
        "--name",
        "loud",
        "--network",
        "none",
        "--health-cmd",
        "yes | head -c 5000",
        "--health-interval",
        "200ms",
        "bb",
        "sleep",
        "60",
    ]);
    wait_until(20, "a result", || status(&e, "loud") == "healthy");
    let out = health(&e, "loud")["Log"][0]["Output"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(out.len(), 4096 + 3);
    assert!(out.starts_with("y\ny\n") && out.ends_with("..."));
    e.ok(&["rm", "-f", "slow", "loud"]);
}

#[test]
fn image_healthcheck_start_period_and_no_healthcheck() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let ctx = e.tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb\nHEALTHCHECK --interval=200ms --start-period=60s --start-interval=200ms \
         --retries=1 CMD [\"sh\", \"-c\", \"test -e /tmp/up\"]\n",
    )
    .unwrap();
    e.ok(&["build", "-q", "-t", "hb", ctx.to_str().unwrap()]);

    // Failures within the start period do not count.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "boot",
        "--network",
        "none",
        "hb",
        "sleep",
        "60",
    ]);
    wait_until(20, "three failed checks", || {
        health(&e, "boot")["Log"]
            .as_array()
            .is_some_and(|l| l.len() >= 3)
    });
    let h = health(&e, "boot");
    assert_eq!(
        (h["Status"].as_str(), h["FailingStreak"].as_u64()),
        (Some("starting"), Some(0)),
        "{h}"
    );
    e.ok(&["exec", "boot", "touch", "/tmp/up"]);
    wait_until(20, "healthy", || status(&e, "boot") == "healthy");

    // --health-* overrides one field of the image's, --no-healthcheck all of it.
    e.ok(&[
        "create",
        "--name",
        "tuned",
        "--health-retries",
        "5",
        "hb",
        "true",
    ]);
    let cfg = e.ok(&["inspect", "-f", "{{json .Config.Healthcheck}}", "tuned"]);
    let cfg: Value = serde_json::from_str(cfg.trim()).unwrap();
    assert_eq!(cfg["Retries"], 5);
    assert_eq!(
        cfg["Test"],
        serde_json::json!(["CMD", "sh", "-c", "test -e /tmp/up"])
    );
    // A commit keeps the container's healthcheck, as Docker's.
    e.ok(&["commit", "tuned", "tuned:1"]);
    let image = e.ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Healthcheck}}",
        "tuned:1",
    ]);
    let image: Value = serde_json::from_str(image.trim()).unwrap();
    assert_eq!(image, cfg);
    let id = e
        .ok(&[
            "run",
            "-d",
            "--name",
            "off",
            "--network",
            "none",
            "--no-healthcheck",
            "hb",
            "sleep",
            "60",
        ])
        .trim()
        .to_string();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        e.ok(&["inspect", "-f", "{{json .State.Health}}", "off"])
            .trim(),
        "null"
    );
    assert!(health_processes(&id).is_empty());
    assert_eq!(
        e.ok(&["ps", "-q", "--filter", "health=none"]).trim(),
        &id[..12]
    );
    let both = e.run(&[
        "run",
        "--no-healthcheck",
        "--health-cmd",
        "true",
        "hb",
        "true",
    ]);
    assert_eq!(both.status.code(), Some(125));
    assert!(
        text(&both.stderr).contains("conflicts"),
        "{}",
        text(&both.stderr)
    );
    let bad = e.run(&["run", "--health-interval", "soon", "hb", "true"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(
        text(&bad.stderr).contains("--health-interval"),
        "{}",
        text(&bad.stderr)
    );
    e.ok(&["rm", "-f", "boot", "tuned", "off"]);
    e.ok(&["rmi", "tuned:1"]);
}
