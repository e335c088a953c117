//! `berth build`: steps, layers, the cache, multi-stage, errors.

use std::path::{Path, PathBuf};

use berth_integration::{privileged, text, Engine};

fn context(e: &Engine, name: &str, dockerfile: &str) -> PathBuf {
    let dir = e.tmp.path().join(name);
    std::fs::create_dir_all(dir.join("dir/sub")).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(dir.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(dir.join("dir/a"), "a\n").unwrap();
    std::fs::write(dir.join("dir/sub/b"), "b\n").unwrap();
    dir
}

fn p(d: &Path) -> &str {
    d.to_str().unwrap()
}

fn count(s: &str, needle: &str) -> usize {
    s.matches(needle).count()
}

const MAIN: &str = "FROM bb
ENV GREETING=hi
WORKDIR /app
COPY hello.txt /app/
COPY dir /app/d
RUN echo ran > /app/ran.txt && date >> /app/date.txt
CMD [\"sh\", \"-c\", \"echo $GREETING; cat /app/hello.txt /app/d/a /app/d/sub/b /app/ran.txt; pwd\"]
";

#[test]
fn build_run_and_cache() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let ctx = context(&e, "ctx", MAIN);
    let out = e.ok(&["build", "-t", "app", p(&ctx)]);
    assert!(out.contains("Running in"), "{out}");
    assert!(out.contains("Successfully tagged app"), "{out}");
    let run = e.ok(&["run", "--rm", "app"]);
    assert_eq!(run, "hi\nhello\na\nb\nran\n/app\n");
    let id = e.ok(&["build", "-q", "-t", "app", p(&ctx)]);
    assert!(id.trim().starts_with("sha256:"), "{id}");

    // Unchanged: every step from the cache, the same image id.
    let out = e.ok(&["build", "-t", "app", p(&ctx)]);
    assert!(!out.contains("Running in"), "{out}");
    assert_eq!(count(&out, "Using cache"), 6, "{out}");
    assert_eq!(e.ok(&["build", "-q", "-t", "app", p(&ctx)]), id);

    // touch without a change: still a hit.
    std::process::Command::new("touch")
        .args(["-d", "2001-01-01", p(&ctx.join("hello.txt"))])
        .status()
        .unwrap();
    let out = e.ok(&["build", "-t", "app", p(&ctx)]);
    assert_eq!(count(&out, "Using cache"), 6, "{out}");

    // A change to the first COPY: steps 1-3 hit (ENV, WORKDIR), 4.. rerun.
    std::fs::write(ctx.join("hello.txt"), "changed\n").unwrap();
    let out = e.ok(&["build", "-t", "app", p(&ctx)]);
    assert_eq!(count(&out, "Using cache"), 2, "{out}");
    assert_eq!(count(&out, "Running in"), 1, "{out}");
    let run = e.ok(&["run", "--rm", "app"]);
    assert!(run.contains("changed"), "{run}");

    // --no-cache: nothing from the cache.
    let out = e.ok(&["build", "--no-cache", "-t", "app", p(&ctx)]);
    assert_eq!(count(&out, "Using cache"), 0, "{out}");
    assert_eq!(count(&out, "Running in"), 1, "{out}");

    // history lists the steps.
    let hist = e.ok(&["history", "app"]);
    assert!(hist.contains("COPY dir /app/d"), "{hist}");
    e.assert_no_mounts();
    assert_eq!(e.ok(&["ps", "-a", "-q"]).trim(), "");
}

#[test]
fn build_args_and_stdin_context() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let ctx = context(
        &e,
        "args",
        "FROM bb\nARG V=default\nRUN echo $V > /v\nCMD [\"cat\", \"/v\"]\n",
    );
    e.ok(&["build", "-q", "-t", "a1", p(&ctx)]);
    assert_eq!(e.ok(&["run", "--rm", "a1"]), "default\n");
    let out = e.ok(&["build", "--build-arg", "V=given", "-t", "a2", p(&ctx)]);
    assert!(out.contains("Running in"), "{out}");
    assert_eq!(e.ok(&["run", "--rm", "a2"]), "given\n");

    // A tar on stdin.
    let tar = e.tmp.path().join("ctx.tar");
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&ctx)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let out = e
        .command(&["build", "-q", "-t", "a3", "-"])
        .stdin(std::fs::File::open(&tar).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(e.ok(&["run", "--rm", "a3"]), "default\n");
}

#[test]
fn multi_stage_and_target() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let df = "FROM bb AS builder
RUN echo artifact > /out && echo junk > /junk
FROM bb AS unused
RUN false
FROM bb
COPY --from=builder /out /got
CMD [\"cat\", \"/got\"]
";
    let ctx = context(&e, "ms", df);
    let out = e.ok(&["build", "-t", "ms", p(&ctx)]);
    assert!(!out.contains("RUN false"), "unused stage built: {out}");
    assert_eq!(e.ok(&["run", "--rm", "ms"]), "artifact\n");
    let out = e.run(&["run", "--rm", "ms", "ls", "/junk"]);
    assert!(!out.status.success());
    let out = e.ok(&["build", "--target", "builder", "-t", "ms-b", p(&ctx)]);
    assert!(!out.contains("COPY --from"), "{out}");
    assert_eq!(e.ok(&["run", "--rm", "ms-b", "cat", "/junk"]), "junk\n");
}

#[test]
fn build_errors() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let bad = context(&e, "bad", "FROM bb\nRUN true\nFROMM bb\n");
    build_fails(&e, &["build", "-t", "bad", p(&bad)], "Dockerfile:3:");
    assert!(!e.ok(&["images"]).contains("bad"));

    let url = context(&e, "url", "FROM bb\nADD http://example.com/x /x\n");
    build_fails(
        &e,
        &["build", p(&url)],
        "ADD of URLs is not supported offline",
    );

    let fail = context(&e, "fail", "FROM bb\nRUN echo ok\nRUN exit 3\n");
    build_fails(&e, &["build", "-t", "failed", p(&fail)], "non-zero code: 3");
    assert!(!e.ok(&["images"]).contains("failed"));
    e.assert_no_mounts();
    assert_eq!(e.ok(&["ps", "-a", "-q"]).trim(), "");
    let left: Vec<_> = std::fs::read_dir(e.tmp.path().join("run/runtime"))
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    assert!(left.is_empty(), "runtime state left: {left:?}");
    let meta = std::fs::read_to_string(e.root().join("snapshots/metadata.json")).unwrap();
    assert!(!meta.contains("build-"), "build snapshots left: {meta}");
    // The step before the failure is cached.
    let out = e.run(&["build", p(&fail)]);
    assert!(
        text(&out.stdout).contains("Using cache"),
        "{}",
        text(&out.stdout)
    );
}

/// A failed build: exit 1 (as `docker build`), one line on stderr naming `needle`.
fn build_fails(e: &Engine, args: &[&str], needle: &str) {
    let out = e.run(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "berth {args:?}: {err}");
    assert!(
        err.contains(needle),
        "berth {args:?}: {err:?} lacks {needle:?}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
}
