//! `berth build`: steps, layers, the cache, multi-stage, errors.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

    // As Docker's: `build - < Dockerfile` builds without a context, and
    // `build -f - DIR` reads the Dockerfile from stdin with DIR as context.
    let stdin_build = |args: &[&str], input: &str| {
        let mut child = e
            .command(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    };
    stdin_build(
        &["build", "-q", "-t", "a4", "-"],
        "FROM bb\nRUN echo no-context > /m\nCMD [\"cat\", \"/m\"]\n",
    );
    assert_eq!(e.ok(&["run", "--rm", "a4"]), "no-context\n");
    std::fs::write(ctx.join("extra.txt"), "from the dir\n").unwrap();
    stdin_build(
        &["build", "-q", "-t", "a5", "-f", "-", p(&ctx)],
        "FROM bb\nCOPY extra.txt /e\nCMD [\"cat\", \"/e\"]\n",
    );
    assert_eq!(e.ok(&["run", "--rm", "a5"]), "from the dir\n");
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

    // Refused before anything is fetched (no server listens on port 1).
    let url = context(&e, "url", "FROM bb\nCOPY http://127.0.0.1:1/x /x\n");
    build_fails(
        &e,
        &["build", p(&url)],
        "Dockerfile:2:1: COPY: a source cannot be a URL",
    );
    let git = context(&e, "git", "FROM bb\nADD git@127.0.0.1:x/y.git /x\n");
    build_fails(&e, &["build", p(&git)], "only http and https URLs");

    let fail = context(&e, "fail", "FROM bb\nRUN echo ok\nRUN exit 3\n");
    build_fails(
        &e,
        &["build", "-t", "failed", p(&fail)],
        "Dockerfile:3:1: step 3/3 `RUN exit 3` returned a non-zero code: 3",
    );
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
    let out = e.run(&["build", "--explain-cache", p(&fail)]);
    let v = verdicts(&text(&out.stdout));
    assert_eq!(v[0], "HIT", "{}", text(&out.stdout));
    assert_eq!(v[1], "MISS: no cached step after the previous one");
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

fn host_platform() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "linux/amd64",
        "aarch64" => "linux/arm64",
        a => panic!("unexpected arch {a}"),
    }
}

fn sh(cmd: &str) {
    let st = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
}

/// The raw image config blob of `name`'s image.
fn raw_config(e: &Engine, name: &str) -> serde_json::Value {
    let id = e.inspect(name)["Id"].as_str().unwrap().to_string();
    let hex = id.trim_start_matches("sha256:");
    let blob = std::fs::read(e.root().join("content/blobs/sha256").join(hex)).unwrap();
    serde_json::from_slice(&blob).unwrap()
}

#[test]
fn every_instruction() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let df = format!(
        r#"# syntax=docker/dockerfile:1
# escape=\
ARG BASE=bb
FROM --platform={platform} ${{BASE}} AS base
MAINTAINER someone
FROM base AS app
ARG VERSION=1.0
ARG UNUSED
ENV APP_HOME=/srv/app \
    GREETING="hello world"
SHELL ["/bin/sh", "-c"]
WORKDIR $APP_HOME
RUN echo "version $VERSION" > version.txt
RUN <<EOF
echo heredoc-script > /srv/app/heredoc.txt
EOF
RUN <<EOT cat > /srv/app/attached.txt
attached $APP_HOME
EOT
RUN <<EOF
#!/bin/sh -e
echo shebang-script > /srv/app/shebang.txt
EOF
COPY --chown=1000:1000 --chmod=640 hello.txt ./
COPY <<INLINE /srv/app/inline.txt
inline body
INLINE
ADD archive.tar.gz /srv/app/extracted/
COPY --from=base /bin/busybox /srv/app/busybox-copy
COPY dir/ /srv/app/d/
LABEL org.example.k="v v" other=1
EXPOSE 8080/tcp 53/udp
VOLUME ["/data"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --retries=3 CMD ["true"]
ONBUILD COPY hello.txt /child.txt
ONBUILD ENV TRIGGERED=yes
USER 1000:1000
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo $GREETING; id -u; pwd; cat version.txt heredoc.txt attached.txt shebang.txt hello.txt extracted/in/x d/sub/b"]
"#,
        platform = host_platform()
    );
    let ctx = context(&e, "all", &df);
    sh(&format!(
        "mkdir -p {t}/in && echo from-archive > {t}/in/x && tar -C {t} -czf {c}/archive.tar.gz in",
        t = e.tmp.path().join("arch").display(),
        c = ctx.display()
    ));
    let iid = e.tmp.path().join("iid");
    let out = e.ok(&["build", "-t", "all:1", "--iidfile", p(&iid), p(&ctx)]);
    assert!(out.contains("Successfully tagged all:1"), "{out}");
    let id = std::fs::read_to_string(&iid).unwrap();
    assert_eq!(e.inspect("all:1")["Id"], id.as_str());
    let run = e.ok(&["run", "--rm", "all:1"]);
    assert_eq!(
        run,
        "hello world\n1000\n/srv/app\nversion 1.0\nheredoc-script\nattached /srv/app\nshebang-script\nhello\nfrom-archive\nb\n"
    );
    let inline = e.ok(&[
        "run",
        "--rm",
        "all:1",
        "ls -ln inline.txt && cat inline.txt",
    ]);
    assert!(inline.starts_with("-rw-r--r--    1 0        0"), "{inline}");
    assert!(inline.ends_with("\ninline body\n"), "{inline}");
    let ls = e.ok(&["run", "--rm", "all:1", "ls -ln hello.txt busybox-copy"]);
    assert!(ls.contains("-rw-r-----    1 1000     1000"), "{ls}");
    assert!(ls.contains("busybox-copy"), "{ls}");

    let cfg = raw_config(&e, "all:1");
    let c = &cfg["config"];
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"APP_HOME=/srv/app"), "{env:?}");
    assert!(env.contains(&"GREETING=hello world"), "{env:?}");
    assert!(
        !env.iter().any(|v| v.starts_with("VERSION")),
        "ARG persisted: {env:?}"
    );
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Labels"]["org.example.k"], "v v");
    assert_eq!(c["Labels"]["maintainer"], "someone");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object());
    assert!(c["ExposedPorts"]["53/udp"].is_object());
    assert!(c["Volumes"]["/data"].is_object());
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(c["Healthcheck"]["Test"], serde_json::json!(["CMD", "true"]));
    assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000u64);
    assert_eq!(c["Healthcheck"]["Retries"], 3);
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(
        c["OnBuild"],
        serde_json::json!(["COPY hello.txt /child.txt", "ENV TRIGGERED=yes"])
    );
    assert_eq!(
        e.inspect("all:1")["Config"]["Healthcheck"],
        c["Healthcheck"]
    );
    // The `#!` here-document's file is not part of any layer.
    assert_eq!(blob_with(&e, ".berth-heredoc"), None);

    // history: one row per instruction.
    let hist = e.ok(&["history", "--no-trunc", "all:1"]);
    for step in [
        "MAINTAINER someone",
        "ENV APP_HOME=/srv/app",
        "WORKDIR $APP_HOME",
        "RUN echo \"version $VERSION\" > version.txt",
        "RUN <<EOF",
        "COPY --chown=1000:1000 --chmod=640 hello.txt ./",
        "ADD archive.tar.gz /srv/app/extracted/",
        "COPY --from=base /bin/busybox /srv/app/busybox-copy",
        "HEALTHCHECK --interval=30s",
        "ONBUILD COPY hello.txt /child.txt",
        "USER 1000:1000",
        "CMD [\"echo",
    ] {
        assert!(hist.contains(step), "history lacks {step:?}:\n{hist}");
    }
    let rows = cfg["history"].as_array().unwrap();
    let layers = cfg["rootfs"]["diff_ids"].as_array().unwrap();
    let with_layer = rows.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(with_layer, layers.len(), "{rows:?}");

    // ONBUILD fires in a child build, before the child's steps, and is not inherited.
    let child = context(
        &e,
        "child",
        "FROM all:1\nUSER 0\nRUN cat /child.txt && echo $TRIGGERED > /tmp/t\n",
    );
    std::fs::write(child.join("hello.txt"), "from the child context\n").unwrap();
    let out = e.ok(&["build", "-t", "child", p(&child)]);
    assert!(out.contains("Trigger: COPY hello.txt /child.txt"), "{out}");
    assert!(out.contains("from the child context"), "{out}");
    assert_eq!(e.ok(&["run", "--rm", "child", "cat /tmp/t"]), "yes\n");
    assert!(raw_config(&e, "child")["config"]["OnBuild"].is_null());
    e.assert_no_mounts();
    assert_eq!(e.ok(&["ps", "-a", "-q"]).trim(), "");
}

/// The steps' HIT/MISS lines of an `--explain-cache` build.
fn verdicts(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("---> CACHE "))
        .map(str::to_string)
        .collect()
}

#[test]
fn cache_matrix() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let six = |fourth: &str| {
        format!(
            "FROM bb\nENV A=1\nRUN date >> /log && cat /proc/sys/kernel/random/uuid >> /log\nCOPY hello.txt /h\nRUN echo {fourth} >> /log\nRUN date >> /log && cat /proc/sys/kernel/random/uuid >> /log\nCMD [\"cat\", \"/log\", \"/h\"]\n"
        )
    };
    let ctx = context(&e, "six", &six("four"));
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--explain-cache", "-t", "six"];
        args.extend_from_slice(extra);
        args.push(p(&ctx));
        let out = e.ok(&args);
        (verdicts(&out), out)
    };
    let (v, out) = build(&[]);
    assert_eq!(v.len(), 6, "{out}");
    assert!(v.iter().all(|v| v.starts_with("MISS")), "{out}");
    let id = e.inspect("six")["Id"].clone();
    let log1 = e.ok(&["run", "--rm", "six"]);

    // No change: nothing runs, the same image id (the RUNs append the date).
    let (v, out) = build(&[]);
    assert_eq!(v, vec!["HIT"; 6], "{out}");
    assert!(!out.contains("Running in"), "{out}");
    assert_eq!(e.inspect("six")["Id"], id);

    // touch without a byte change: a hit.
    sh(&format!(
        "touch -d 2001-01-01 {}",
        ctx.join("hello.txt").display()
    ));
    let (v, out) = build(&[]);
    assert_eq!(v, vec!["HIT"; 6], "{out}");
    assert_eq!(e.inspect("six")["Id"], id);

    // Change the 4th step: 1-3 hit, 4-6 rerun; the 2nd step's date is kept.
    std::fs::write(ctx.join("Dockerfile"), six("FOUR")).unwrap();
    let (v, out) = build(&[]);
    assert_eq!(&v[..3], &["HIT", "HIT", "HIT"], "{out}");
    assert_eq!(
        v[3], "MISS: instruction changed (cached: `RUN echo four >> /log`)",
        "{out}"
    );
    assert_eq!(v[4], "MISS: the previous step was rebuilt", "{out}");
    assert_eq!(v[5], "MISS: the previous step was rebuilt", "{out}");
    assert_eq!(count(&out, "Running in"), 2, "{out}");
    let log2 = e.ok(&["run", "--rm", "six"]);
    // /log: date and uuid of step 2, step 4's word, date and uuid of step 5.
    let l1: Vec<&str> = log1.lines().collect();
    let l2: Vec<&str> = log2.lines().collect();
    assert_eq!(l1[..2], l2[..2], "step 2 reran");
    assert_eq!((l1[2], l2[2]), ("four", "FOUR"));
    assert_ne!(l1[4], l2[4], "step 5 did not rerun");

    // A byte change of the COPY source: a miss there, with the reason.
    std::fs::write(ctx.join("hello.txt"), "hellO\n").unwrap();
    let (v, out) = build(&[]);
    assert_eq!(&v[..2], &["HIT", "HIT"], "{out}");
    assert_eq!(
        v[2], "MISS: source files changed (content hash differs)",
        "{out}"
    );
    assert!(e.ok(&["run", "--rm", "six"]).ends_with("hellO\n"));

    // --no-cache: every step again.
    let (v, out) = build(&["--no-cache"]);
    assert_eq!(v, vec!["MISS: --no-cache"; 6], "{out}");
    assert_eq!(count(&out, "Running in"), 3, "{out}");

    // A build arg change names the arg; proxy args change nothing.
    let ctx2 = context(&e, "arg", "FROM bb\nARG V=1\nRUN echo $V > /v\n");
    e.ok(&["build", "-t", "argimg", p(&ctx2)]);
    let out = e.ok(&["build", "--explain-cache", "--build-arg", "V=2", p(&ctx2)]);
    let v = verdicts(&out);
    assert_eq!(v[0], "MISS: build args changed: V", "{out}");
    assert_eq!(v[1], "MISS: the previous step was rebuilt", "{out}");
    let out = e.ok(&[
        "build",
        "--progress",
        "plain",
        "--build-arg",
        "HTTP_PROXY=http://127.0.0.1:9",
        "-t",
        "argimg",
        p(&ctx2),
    ]);
    assert_eq!(verdicts(&out), vec!["HIT"; 2], "{out}");
    let hist = e.ok(&["history", "--no-trunc", "argimg"]);
    assert!(!hist.contains("127.0.0.1"), "{hist}");

    // A COPY here-document: its body is its content.
    let body = |b: &str| format!("FROM bb\nCOPY <<EOF /x\n{b}\nEOF\n");
    let hd = context(&e, "hd", &body("one"));
    let explain = |ctx: &Path| verdicts(&e.ok(&["build", "--explain-cache", p(ctx)]));
    assert!(explain(&hd)[0].starts_with("MISS"));
    assert_eq!(explain(&hd), ["HIT"]);
    std::fs::write(hd.join("Dockerfile"), body("two")).unwrap();
    assert_eq!(
        explain(&hd),
        ["MISS: instruction changed after expansion (a variable or here-document differs)"]
    );
}

#[test]
fn dockerignore_and_secret() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let ctx = context(
        &e,
        "ign",
        "FROM bb\nCOPY . /ctx\nCMD [\"find\", \"/ctx\"]\n",
    );
    std::fs::create_dir_all(ctx.join("docs")).unwrap();
    std::fs::write(ctx.join("docs/a.md"), "a").unwrap();
    std::fs::write(ctx.join("docs/keep.md"), "keep").unwrap();
    std::fs::write(ctx.join("secret.env"), "TOKEN=s3cr3t-4e1f9a\n").unwrap();
    std::fs::write(ctx.join("x.log"), "log").unwrap();
    std::fs::write(
        ctx.join(".dockerignore"),
        "# comment\nsecret.env\ndocs\n!docs/keep.md\n*.log\n",
    )
    .unwrap();
    e.ok(&["build", "-t", "ign", p(&ctx)]);
    let found = e.ok(&["run", "--rm", "ign"]);
    assert!(found.contains("/ctx/docs/keep.md"), "{found}");
    assert!(found.contains("/ctx/hello.txt"), "{found}");
    for gone in ["a.md", "secret.env", "x.log"] {
        assert!(!found.contains(gone), "{gone} copied: {found}");
    }
    // The secret's bytes are in no blob of the store (layers decompressed).
    assert_eq!(blob_with(&e, "s3cr3t-4e1f9a"), None);
    // Naming the ignored file fails and says why.
    std::fs::write(ctx.join("Dockerfile"), "FROM bb\nCOPY secret.env /\n").unwrap();
    build_fails(&e, &["build", p(&ctx)], "excluded by .dockerignore");
}

/// The first blob of the store (gzip layers decompressed) holding `needle`.
fn blob_with(e: &Engine, needle: &str) -> Option<String> {
    e.blobs().into_iter().map(|b| b.0).find(|hex| {
        let path = e.root().join("content/blobs/sha256").join(hex);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "gzip -dc {0} 2>/dev/null || cat {0}",
                path.display()
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(needle)
    })
}

/// What a build may store: blobs, snapshots, images, cache entries.
fn stored(e: &Engine) -> (Vec<(String, bool)>, Vec<PathBuf>, String, String) {
    let cache = std::fs::read_to_string(e.root().join("builder/cache.json")).unwrap_or_default();
    (e.blobs(), e.snapshot_dirs(), e.ok(&["images", "-q"]), cache)
}

#[test]
fn bad_dockerfiles() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown",
            "FROM bb\nRUN true\nFROMM bb\n",
            &["Dockerfile:3:1:", "unknown instruction \"FROMM\""],
        ),
        (
            "nofrom",
            "# only a comment\nARG A=1\n",
            &["Dockerfile:", "no FROM instruction"],
        ),
        (
            "runfirst",
            "RUN true\nFROM bb\n",
            &["Dockerfile:1:1:", "before the first FROM"],
        ),
        (
            "json",
            "FROM bb\nSHELL [\"/bin/sh\", \"-c\"\nRUN true\n",
            &["Dockerfile:2:", "invalid JSON"],
        ),
        (
            "heredoc",
            "FROM bb\nRUN true\nRUN <<EOF\necho never\n",
            &["Dockerfile:", "here-document"],
        ),
        (
            "nostage",
            // Neither a stage nor a local image: pulled, as Docker's, from
            // a loopback port where no registry listens.
            "FROM bb\nRUN true\nCOPY --from=127.0.0.1:1/nosuchstage /x /x\n",
            &[
                "Dockerfile:3:1:",
                "127.0.0.1:1/nosuchstage",
                "cannot connect",
            ],
        ),
        (
            "platform",
            "FROM bb\nRUN true\nFROM --platform=linux/s390x bb\n",
            &[
                "Dockerfile:3:1:",
                "--platform=linux/s390x does not match the host",
            ],
        ),
        (
            "outside",
            "FROM bb\nRUN true\nCOPY ../outside.txt /x\n",
            &["Dockerfile:3:1:", "outside the build context"],
        ),
    ];
    std::fs::write(e.tmp.path().join("outside.txt"), "x").unwrap();
    let before = stored(&e);
    for (name, df, needles) in cases {
        let ctx = context(&e, name, df);
        let out = e.run(&["build", "-t", name, p(&ctx)]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err:?}");
        for n in *needles {
            assert!(err.contains(n), "{name}: {err:?} lacks {n:?}");
        }
        assert!(
            !text(&out.stdout).contains("Running in"),
            "{name}: a step ran"
        );
        assert_eq!(stored(&e), before, "{name}: something was stored");
    }
}

#[test]
fn cache_survives_rmi_and_image_prune_until_builder_prune() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let ctx = context(&e, "ctx", "FROM bb\nRUN head -c 100000 /dev/urandom > /r\n");
    let base_blobs = e.blobs().len();
    e.ok(&["build", "-t", "r", p(&ctx)]);
    let built_blobs = e.blobs().len();
    assert!(built_blobs > base_blobs, "the build stored a layer");
    // Without the image, its layer stays for the cache (as Docker's build cache).
    e.ok(&["rmi", "r"]);
    e.ok(&["image", "prune", "-f"]);
    assert_eq!(
        e.blobs().len(),
        built_blobs - 2,
        "the image's config and manifest went"
    );
    let check = e.ok(&["system", "check"]);
    assert!(!check.contains("leftover:"), "{check}");
    e.ok(&["system", "check", "--repair"]);
    let out = e.ok(&["build", "--explain-cache", "-t", "r", p(&ctx)]);
    assert_eq!(verdicts(&out), ["HIT"], "{out}");
    // builder prune lets the layer go once no image holds it.
    e.ok(&["rmi", "r"]);
    let out = e.ok(&["builder", "prune", "-f"]);
    assert!(out.contains("Deleted 1 build cache entries"), "{out}");
    assert!(out.contains("Total reclaimed space:"), "{out}");
    assert_eq!(
        e.blobs().len(),
        built_blobs - 3,
        "layer, config, manifest gone"
    );
    let out = e.ok(&["build", "--explain-cache", "-t", "r", p(&ctx)]);
    assert!(out.contains("Running in"), "{out}");
}

#[test]
fn cache_size_cap_evicts_least_recently_used() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(e.root().join("config.json")).unwrap()).unwrap();
    // Room for one ~1 MB (incompressible) layer, not two.
    cfg["build-cache-max-bytes"] = serde_json::json!(1_500_000);
    std::fs::write(e.root().join("config.json"), cfg.to_string()).unwrap();
    let df = |n: &str| format!("FROM bb\nRUN head -c 1000000 /dev/urandom > /{n}\n");
    let a = context(&e, "a", &df("a"));
    let b = context(&e, "b", &df("b"));
    e.ok(&["build", "-t", "a", p(&a)]);
    e.ok(&["build", "-t", "b", p(&b)]);
    let cache: serde_json::Value =
        serde_json::from_slice(&std::fs::read(e.root().join("builder/cache.json")).unwrap())
            .unwrap();
    let entries = cache.as_object().unwrap();
    assert_eq!(entries.len(), 1, "a's entry kept: {entries:?}");
    let size: u64 = entries
        .values()
        .filter_map(|v| v["layer"]["size"].as_u64())
        .sum();
    assert!(size > 1_000_000 && size <= 1_500_000, "{size}");
    // b (most recent) hits; a was evicted and reruns, which then evicts b.
    let out = e.ok(&["build", "--explain-cache", "-t", "b", p(&b)]);
    assert_eq!(verdicts(&out), ["HIT"], "{out}");
    let out = e.ok(&["build", "--explain-cache", "-t", "a", p(&a)]);
    assert!(out.contains("Running in"), "{out}");
    let out = e.ok(&["build", "--explain-cache", "-t", "b", p(&b)]);
    assert!(out.contains("Running in"), "{out}");
    // builder prune empties it.
    let out = e.ok(&["builder", "prune", "-f"]);
    assert!(out.contains("Deleted 1 build cache entries"), "{out}");
}

#[test]
fn run_network_quiet_and_iidfile() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let probe = "readlink /proc/self/ns/net; cat /proc/net/dev";
    // (The first RUN fails unless `lo` is up in an isolated step, as Docker's.)
    let df = format!("FROM bb\nRUN ping -c1 -W2 127.0.0.1\nRUN ({probe}) > /default\nRUN --network=host ({probe}) > /host\nRUN --network=none ({probe}) > /none\nRUN grep -c nameserver /etc/resolv.conf > /resolvers && grep localhost /etc/hosts\n");
    let ctx = context(&e, "net", &df);
    let iid = e.tmp.path().join("iid");
    let id = e.ok(&["build", "-q", "--iidfile", p(&iid), "-t", "net", p(&ctx)]);
    assert_eq!(id.trim(), std::fs::read_to_string(&iid).unwrap());
    assert!(
        id.trim().starts_with("sha256:") && id.lines().count() == 1,
        "{id:?}"
    );
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host_ns = host_ns.to_str().unwrap();
    // (network namespace, interfaces) a RUN step saw.
    let seen = |img: &str, f: &str| -> (String, Vec<String>) {
        let t = e.ok(&["run", "--rm", img, "cat", f]);
        let ns = t.lines().next().unwrap().to_string();
        let ifs = t
            .lines()
            .skip(3)
            .map(|l| l.split(':').next().unwrap().trim().to_string())
            .collect();
        (ns, ifs)
    };
    let isolated = |(ns, ifs): (String, Vec<String>)| ns != host_ns && ifs == ["lo"];
    // The default is the bridge, as Docker's RUN: its own namespace with eth0.
    let (ns, ifs) = seen("net", "/default");
    assert!(
        ns != host_ns && ifs.contains(&"eth0".to_string()),
        "{ifs:?}"
    );
    assert!(isolated(seen("net", "/none")));
    // A networked step saw the host's resolvers and a hosts file, and the image
    // (which has neither) did not get the mount points in a layer.
    let resolvers = e.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "net",
        "cat",
        "/resolvers",
    ]);
    let host_resolvers = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("nameserver"))
        .count();
    assert_eq!(resolvers.trim(), host_resolvers.to_string());
    let snapshots = e.root().join("snapshots");
    for entry in std::fs::read_dir(&snapshots).unwrap().flatten() {
        for f in ["resolv.conf", "hosts"] {
            let p = entry.path().join("fs/etc").join(f);
            assert!(
                p.symlink_metadata().is_err(),
                "{} is in a layer",
                p.display()
            );
        }
    }
    assert_eq!(seen("net", "/host").0, host_ns);
    // --network host for every RUN without a flag (and not a cache hit of the
    // bridged steps); an unknown network is refused clearly.
    e.ok(&["build", "-q", "--network", "host", "-t", "net2", p(&ctx)]);
    assert_eq!(seen("net2", "/default").0, host_ns);
    assert!(isolated(seen("net2", "/none")));
    // bridge: an address on the engine's default network, the gateway (its own
    // bridge) answers, and the step's veth is gone afterwards.
    let prefix = e.default_subnet_prefix();
    let br = context(
        &e,
        "br",
        &format!("FROM bb\nRUN --network=bridge ip -4 -o addr show eth0 > /addr && ping -c1 -W2 {prefix}.1\n"),
    );
    e.ok(&["build", "-t", "br", p(&br)]);
    let addr = e.ok(&["run", "--rm", "--network", "none", "br", "cat", "/addr"]);
    assert!(addr.contains(&format!("inet {prefix}.")), "{addr}");
    let bridge = e.net_names().0;
    let members = std::process::Command::new("ip")
        .args(["-br", "link", "show", "master", &bridge])
        .output()
        .unwrap();
    assert_eq!(text(&members.stdout).trim(), "", "veth left on {bridge}");
    build_fails(
        &e,
        &["build", "--network", "wifi", p(&ctx)],
        "unknown build network",
    );
}

#[test]
fn built_image_pushes_saves_and_runs_elsewhere() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let ctx = context(
        &e,
        "ship",
        "FROM bb\nCOPY hello.txt /h\nRUN echo built >> /h\nCMD [\"cat\", \"/h\"]\n",
    );
    e.ok(&["build", "-q", "-t", "ship:1", p(&ctx)]);
    assert_eq!(e.ok(&["run", "--rm", "ship:1"]), "hello\nbuilt\n");
    let images = e.ok(&["images"]);
    assert!(images.contains("ship"), "{images}");

    // push, then pull and run in another store.
    let registry = berth_integration::registry::LocalRegistry::start(None);
    let name = format!("{}/test/ship:1", registry.addr);
    e.ok(&["tag", "ship:1", &name]);
    e.ok(&["push", "-q", &name]);
    let other = Engine::new();
    other.ok(&["pull", "-q", &name]);
    assert_eq!(other.ok(&["run", "--rm", &name]), "hello\nbuilt\n");

    // save, then load and run in a third store.
    let tar = e.tmp.path().join("ship.tar");
    e.ok(&["save", "-o", p(&tar), "ship:1"]);
    let third = Engine::new();
    third.ok(&["load", "-i", p(&tar)]);
    assert_eq!(third.ok(&["run", "--rm", "ship:1"]), "hello\nbuilt\n");
    let hist = third.ok(&["history", "--no-trunc", "ship:1"]);
    assert!(hist.contains("RUN echo built >> /h"), "{hist}");
}

#[test]
fn dockerfile_flag_inside_and_outside_the_context() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    // The context's own Dockerfile would fail: -f must win.
    let ctx = context(&e, "fctx", "FROM bb\nRUN false\n");
    std::fs::write(ctx.join(".dockerignore"), "hello.txt\n").unwrap();
    let outside = e.tmp.path().join("elsewhere.Dockerfile");
    std::fs::write(
        &outside,
        "FROM bb\nCOPY hello.txt /h\nCMD [\"cat\", \"/h\"]\n",
    )
    .unwrap();
    // `<Dockerfile>.dockerignore` is used instead of the context's.
    std::fs::write(
        e.tmp.path().join("elsewhere.Dockerfile.dockerignore"),
        "dir\n",
    )
    .unwrap();
    e.ok(&["build", "-q", "-f", p(&outside), "-t", "f1", p(&ctx)]);
    assert_eq!(e.ok(&["run", "--rm", "f1"]), "hello\n");
    std::fs::write(&outside, "FROM bb\nCOPY dir/a /a\n").unwrap();
    build_fails(
        &e,
        &["build", "-f", p(&outside), p(&ctx)],
        "excluded by .dockerignore",
    );

    std::fs::create_dir_all(ctx.join("docker")).unwrap();
    std::fs::write(
        ctx.join("docker/Dockerfile.dev"),
        "FROM bb\nCOPY dir/a /a\nCMD [\"cat\", \"/a\"]\n",
    )
    .unwrap();
    e.ok(&[
        "build",
        "-q",
        "-f",
        p(&ctx.join("docker/Dockerfile.dev")),
        "-t",
        "f2",
        p(&ctx),
    ]);
    assert_eq!(e.ok(&["run", "--rm", "f2"]), "a\n");
    // A missing -f file: one line, exit 1.
    build_fails(
        &e,
        &["build", "-f", "/nonexistent/Dockerfile", p(&ctx)],
        "cannot read Dockerfile",
    );
}

/// As Docker: rebuilding a tag leaves the image it named before as a dangling
/// `<none>` image, which a container may still use: `image prune` keeps it
/// while the container exists (the container starts again), and removes it
/// after. `images` filters find it.
#[test]
fn a_rebuilt_tag_leaves_the_old_image_dangling_and_kept_while_used() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let one = context(&e, "one", "FROM bb\nLABEL generation=one\n");
    let old = e
        .ok(&["build", "-q", "-t", "app", p(&one)])
        .trim()
        .to_string();
    e.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "user",
        "app",
        "sleep",
        "100",
    ]);
    let two = context(&e, "two", "FROM bb\nLABEL generation=two\n");
    let new = e
        .ok(&["build", "-q", "-t", "app", p(&two)])
        .trim()
        .to_string();
    assert_ne!(old, new);
    let short = |id: &str| id.trim_start_matches("sha256:")[..12].to_string();
    assert_eq!(
        e.ok(&["images", "-f", "dangling=true", "-q"]).trim(),
        short(&old)
    );
    assert_eq!(e.ok(&["images", "-q", "app"]).trim(), short(&new));
    assert_eq!(
        e.ok(&["images", "-q", "-f", "label=generation=one"]).trim(),
        short(&old)
    );
    let listed = e.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    assert!(
        listed.contains(&format!("<none>:<none> {}", short(&old))),
        "{listed}"
    );

    e.ok(&["image", "prune", "-f"]);
    e.ok(&["stop", "-t", "0", "user"]);
    e.ok(&["start", "user"]);
    assert_eq!(e.inspect("user")["Image"], old.as_str());

    e.ok(&["rm", "-f", "user"]);
    let out = e.ok(&["image", "prune", "-f"]);
    assert!(out.contains(&format!("deleted: {old}")), "{out}");
    assert_eq!(e.ok(&["images", "-f", "dangling=true", "-q"]), "");
    assert_eq!(e.ok(&["images", "-q", "app"]).trim(), short(&new));
    let (code, out) = {
        let o = e.run(&["system", "check"]);
        (o.status.code(), text(&o.stdout))
    };
    assert_eq!(code, Some(0), "{out}");
}

/// As `docker build`: a base image that is not here is pulled (from a real
/// registry on loopback), `--pull` pulls even one that is, and `--label`
/// labels the image.
#[test]
fn build_pulls_missing_bases_and_labels_the_image() {
    if !privileged() {
        return;
    }
    let registry = berth_integration::registry::LocalRegistry::start(None);
    let source = Engine::with_busybox();
    let base = format!("{}/base/bb:1", registry.addr);
    source.ok(&["tag", "bb", &base]);
    source.ok(&["push", "-q", &base]);

    let e = Engine::new();
    let ctx = context(&e, "app", &format!("FROM {base}\nRUN echo hi > /hi\n"));
    let out = e.ok(&["build", "-t", "app", "--label", "team=x", p(&ctx)]);
    assert!(out.contains(&format!("Pulling {base}")), "{out}");
    assert_eq!(e.ok(&["images", "-q"]).lines().count(), 2);
    assert_eq!(
        e.ok(&["run", "--rm", "--network", "none", "app", "cat", "/hi"]),
        "hi\n"
    );
    assert_eq!(
        e.ok(&["image", "inspect", "-f", "{{.Config.Labels.team}}", "app"]),
        "x\n"
    );
    // Here now: no pull; --pull pulls anyway, and fails once the registry is gone.
    let out = e.ok(&["build", "-t", "app", p(&ctx)]);
    assert!(!out.contains("Pulling"), "{out}");
    e.ok(&["build", "--pull", "-q", "-t", "app", p(&ctx)]);
    drop(registry);
    let out = e.run(&["build", "--pull", "-t", "app", p(&ctx)]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Dockerfile:1:1:") && err.contains(&base),
        "{err}"
    );
    e.ok(&["build", "-q", "-t", "app", p(&ctx)]);
}

/// A tiny HTTP server on 127.0.0.1 for `ADD <url>`: `/files/hello.txt` (the
/// shared body, with a Last-Modified), `/redirect` (302 to it), `/named?..`
/// (a Content-Disposition filename), 404 for anything else. Serves until the
/// test process ends.
fn http_server(body: Arc<Mutex<String>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut request = String::new();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok() && line.trim() != "" {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let body_now = body.lock().unwrap().clone();
            let (status, headers, content) = match path.as_str() {
                "/files/hello.txt" => (
                    "200 OK",
                    "Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\n".to_string(),
                    body_now,
                ),
                "/redirect" => (
                    "302 Found",
                    "Location: /files/hello.txt\r\n".to_string(),
                    String::new(),
                ),
                p if p.starts_with("/named?") => (
                    "200 OK",
                    "Content-Disposition: attachment; filename=\"named.txt\"\r\n".to_string(),
                    "named\n".to_string(),
                ),
                _ => ("404 Not Found", String::new(), "no\n".to_string()),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{content}",
                content.len()
            );
        }
    });
    port
}

#[test]
fn add_downloads_urls() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let body = Arc::new(Mutex::new("hello over http\n".to_string()));
    let port = http_server(body.clone());
    let base = format!("http://127.0.0.1:{port}");
    let dockerfile = format!(
        "FROM bb
ADD {base}/files/hello.txt /data/
ADD {base}/redirect /data/via-redirect.txt
ADD {base}/named?id=1 /data/
RUN stat -c '%a %Y' /data/hello.txt > /data/meta
CMD [\"sh\", \"-c\", \"cat /data/hello.txt /data/via-redirect.txt /data/named.txt /data/meta\"]
"
    );
    let ctx = context(&e, "addurl", &dockerfile);
    e.ok(&["build", "-t", "fetched", p(&ctx)]);
    // Mode 0600 and the Last-Modified time, as Docker's ADD gives them.
    assert_eq!(
        e.ok(&["run", "--rm", "fetched"]),
        "hello over http\nhello over http\nnamed\n600 1445412480\n"
    );
    // The same bytes: every step from the cache.
    let out = e.ok(&["build", "-t", "fetched", p(&ctx)]);
    assert_eq!(count(&out, "Using cache"), 5, "{out}");
    // Other bytes at the URL: its steps and those after them run again.
    *body.lock().unwrap() = "changed\n".to_string();
    let out = e.ok(&["build", "-t", "fetched", p(&ctx)]);
    assert_eq!(count(&out, "Using cache"), 0, "{out}");
    assert!(e
        .ok(&["run", "--rm", "fetched"])
        .starts_with("changed\nchanged\n"));

    // --checksum: the sha256 of what the URL serves passes; another fails
    // and says which.
    let sum = {
        let out = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(b"changed\n")?;
                c.wait_with_output()
            })
            .unwrap();
        format!(
            "sha256:{}",
            text(&out.stdout).split_whitespace().next().unwrap()
        )
    };
    let good = format!("sha256:{}", "0".repeat(64));
    let checked = context(
        &e,
        "addsum",
        &format!("FROM bb\nADD --checksum={sum} {base}/files/hello.txt /checked\n"),
    );
    e.ok(&["build", "-t", "checked", p(&checked)]);
    let wrong = context(
        &e,
        "addbadsum",
        &format!("FROM bb\nADD --checksum={good} {base}/files/hello.txt /checked\n"),
    );
    build_fails(&e, &["build", p(&wrong)], "Dockerfile:2:1: ADD");
    build_fails(&e, &["build", p(&wrong)], "checksum mismatch");

    // A 404 fails the build at its line, naming the status.
    let missing = context(&e, "add404", &format!("FROM bb\nADD {base}/nope /x\n"));
    build_fails(&e, &["build", p(&missing)], "HTTP 404");
    // Mixed with local files: refused, not half done.
    let mixed = context(
        &e,
        "addmixed",
        &format!("FROM bb\nADD hello.txt {base}/files/hello.txt /x/\n"),
    );
    build_fails(&e, &["build", p(&mixed)], "together with other sources");
}

#[test]
fn run_mounts() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let dockerfile = "FROM bb AS tools
RUN mkdir -p /opt && echo from-stage > /opt/tool.txt && ln -s /opt /link
FROM bb
RUN --mount=type=cache,target=/cache,sharing=locked echo run >> /cache/log && wc -l < /cache/log > /count
RUN --mount=type=bind,source=dir,target=/src cat /src/a /src/sub/b > /copied && ! touch /src/new 2>/dev/null && test ! -e /src/secret.key
RUN --mount=type=bind,from=tools,source=/link,target=/t cat /t/tool.txt > /fromstage
RUN --mount=type=tmpfs,target=/scratch,size=1m echo x > /scratch/f && grep -q ' /scratch tmpfs .*size=1024k' /proc/mounts
RUN test ! -e /cache && test ! -e /src && test ! -e /t && test ! -e /scratch
CMD [\"sh\", \"-c\", \"cat /count /copied /fromstage\"]
";
    let ctx = context(&e, "mounts", dockerfile);
    // What .dockerignore excludes is not in a bind of the context either.
    std::fs::write(ctx.join("dir/secret.key"), "k\n").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "dir/secret.key\n").unwrap();
    e.ok(&["build", "-t", "mounted", p(&ctx)]);
    assert_eq!(e.ok(&["run", "--rm", "mounted"]), "1\na\nb\nfrom-stage\n");
    // The cache mount outlives the build; the steps rerun with --no-cache see it.
    e.ok(&["build", "--no-cache", "-t", "mounted", p(&ctx)]);
    assert!(e.ok(&["run", "--rm", "mounted"]).starts_with("2\n"));
    // A bind mount's files are part of its step's key; a cache's are not.
    std::fs::write(ctx.join("dir/a"), "A\n").unwrap();
    let out = e.ok(&["build", "-t", "mounted", p(&ctx)]);
    assert_eq!(count(&out, "Using cache"), 2, "{out}");
    assert!(out.contains("Step 4/9 : RUN --mount=type=cache,target=/cache,sharing=locked echo run >> /cache/log && wc -l < /cache/log > /count\n ---> Using cache"), "{out}");
    assert_eq!(e.ok(&["run", "--rm", "mounted"]), "2\nA\nb\nfrom-stage\n");
    // builder prune empties the cache mounts too.
    e.ok(&["builder", "prune", "-f"]);
    e.ok(&["build", "--no-cache", "-t", "mounted", p(&ctx)]);
    assert!(e.ok(&["run", "--rm", "mounted"]).starts_with("1\n"));

    // Secrets: files for the step only, from --secret src= or env=; a
    // missing one is no mount unless required.
    let secret_file = e.tmp.path().join("token.txt");
    std::fs::write(&secret_file, "t0ken").unwrap();
    let secrets = context(
        &e,
        "secrets",
        "FROM bb
RUN --mount=type=secret,id=token cat /run/secrets/token > /seen && test ! -e /run/secrets/absent
RUN --mount=type=secret,id=absent true
RUN --mount=type=secret,id=fromenv,target=/etc/tok,mode=0440 stat -c %a /etc/tok > /mode && cat /etc/tok >> /seen
RUN --mount=type=secret,id=fromenv,env=TOK echo \"$TOK\" > /envseen && test ! -e /run/secrets/fromenv
RUN --mount=type=secret,id=token,env=T2,target=/tk echo \"$T2 $(cat /tk)\" >> /envseen
RUN test ! -e /run/secrets && test ! -e /etc/tok && test ! -e /tk && test -z \"$TOK$T2\"
CMD [\"cat\", \"/seen\", \"/mode\", \"/envseen\"]
",
    );
    let src = format!("id=token,src={}", secret_file.display());
    let out = e
        .command(&[
            "build",
            "-t",
            "secrets",
            "--secret",
            &src,
            "--secret",
            "id=fromenv,env=BERTH_TEST_SECRET",
            p(&secrets),
        ])
        .env("BERTH_TEST_SECRET", "fr0m-env")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        e.ok(&["run", "--rm", "secrets"]),
        "t0kenfr0m-env440\nfr0m-env\nt0ken t0ken\n"
    );
    // A secret variable is the step's only: not in the image's config.
    let config = e.ok(&["image", "inspect", "secrets"]);
    assert!(
        !config.contains("fr0m-env") && !config.contains("t0ken"),
        "{config}"
    );

    // rw binds: the step may write; its writes go nowhere.
    let rw = context(
        &e,
        "rwbinds",
        "FROM bb AS tools
RUN mkdir /opt && echo tool > /opt/tool.txt
FROM bb
RUN --mount=type=bind,source=dir,target=/src,rw echo changed > /src/a && cat /src/a > /rw && grep -q ' /src overlay ' /proc/mounts && test \"$(stat -c '%a %u' /src)\" = '750 1234'
RUN --mount=type=bind,source=dir,target=/src,readonly=false echo x > /src/new && cat /src/new >> /rw
RUN --mount=type=bind,source=dir,target=/src,rw,ro ! touch /src/new 2>/dev/null
RUN --mount=type=bind,from=tools,source=/opt,target=/t,readwrite echo w > /t/tool.txt && cat /t/tool.txt >> /rw
RUN --mount=type=bind,from=tools,source=/opt,target=/t cat /t/tool.txt >> /rw
CMD [\"cat\", \"/rw\"]
",
    );
    // The overlay's root looks like the source directory.
    std::fs::set_permissions(
        rw.join("dir"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    std::os::unix::fs::chown(rw.join("dir"), Some(1234), None).unwrap();
    e.ok(&["build", "-t", "rwbinds", p(&rw)]);
    assert_eq!(e.ok(&["run", "--rm", "rwbinds"]), "changed\nx\nw\ntool\n");
    assert!(!rw.join("dir/new").exists());
    assert_eq!(std::fs::read_to_string(rw.join("dir/a")).unwrap(), "a\n");

    // A cache seeded from a stage starts as a copy of that directory (its
    // symlinks resolved in the stage), is kept like any cache, and is not the
    // unseeded cache of the same id.
    let seeded = context(
        &e,
        "seeded",
        "FROM bb AS seedsrc
RUN mkdir -p /data/sub && echo seeded > /data/sub/f && ln -s /data /datalink
FROM bb
RUN --mount=type=cache,target=/c,from=seedsrc,source=/datalink cat /c/sub/f > /out && echo more >> /c/sub/f
RUN --mount=type=cache,target=/c,from=seedsrc,source=/datalink cat /c/sub/f >> /out
RUN --mount=type=cache,target=/c cat /c/sub/f >> /out 2>/dev/null || echo unseeded >> /out
CMD [\"cat\", \"/out\"]
",
    );
    e.ok(&["build", "-t", "seeded", p(&seeded)]);
    assert_eq!(
        e.ok(&["run", "--rm", "seeded"]),
        "seeded\nseeded\nmore\nunseeded\n"
    );

    // ssh: a socket forwarding to the --ssh agent, mode 0600 by default,
    // SSH_AUTH_SOCK naming the first; an agent not given is no mount.
    let agent = e.tmp.path().join("agent.sock");
    let _agent = std::os::unix::net::UnixListener::bind(&agent).unwrap();
    let ssh = context(
        &e,
        "ssh",
        "FROM bb
RUN --mount=type=ssh test -S /run/buildkit/ssh_agent.0 && echo \"$SSH_AUTH_SOCK\" > /ssh && stat -c '%a %u' /run/buildkit/ssh_agent.0 >> /ssh
RUN --mount=type=ssh,id=missing --mount=type=ssh,id=other,target=/agent,mode=0660,uid=1000 stat -c '%a %u' /agent >> /ssh && echo \"$SSH_AUTH_SOCK\" >> /ssh
RUN test ! -e /run/buildkit && test ! -e /agent && test -z \"$SSH_AUTH_SOCK\"
CMD [\"cat\", \"/ssh\"]
",
    );
    let other = format!("other={}", agent.display());
    let out = e
        .command(&[
            "build",
            "-t",
            "ssh",
            "--ssh",
            "default",
            "--ssh",
            &other,
            p(&ssh),
        ])
        .env("SSH_AUTH_SOCK", &agent)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        e.ok(&["run", "--rm", "ssh"]),
        // The skipped first mount still names SSH_AUTH_SOCK, as BuildKit's.
        "/run/buildkit/ssh_agent.0\n600 0\n660 1000\n/run/buildkit/ssh_agent.0\n"
    );
    build_fails(
        &e,
        &["build", "--ssh", "default=/etc/passwd", p(&ssh)],
        "is not a socket",
    );
    let needs = context(
        &e,
        "sshrequired",
        "FROM bb\nRUN --mount=type=ssh,id=nope,required true\n",
    );
    build_fails(
        &e,
        &["build", p(&needs)],
        "ssh agent nope is required but was not given",
    );
    let required = context(
        &e,
        "required",
        "FROM bb\nRUN --mount=type=secret,id=needed,required=true true\n",
    );
    build_fails(
        &e,
        &["build", p(&required)],
        "secret needed is required but was not given",
    );
    build_fails(
        &e,
        &[
            "build",
            "--secret",
            "id=x,src=/nonexistent/file",
            p(&required),
        ],
        "--secret",
    );

    for (name, flag, needle) in [
        (
            "outside",
            "type=bind,source=../..,target=/s",
            "outside the source",
        ),
        ("notarget", "type=cache", "no target"),
        (
            "seednotdir",
            "type=cache,target=/c,from=bb,source=/bin/busybox",
            "is not a directory in the stage",
        ),
        (
            "cachesource",
            "type=cache,target=/c,source=x",
            "needs from=",
        ),
        (
            "badbool",
            "type=bind,source=dir,target=/s,rw=maybe",
            "invalid value \"maybe\" for rw",
        ),
        (
            "bareenv",
            "type=secret,id=x,env",
            "must be a key=value pair",
        ),
        ("noid", "type=secret,env=X", "needs an id or a target"),
        ("sshsource", "type=ssh,source=/x", "do not take a source"),
        ("badtype", "type=nfs,target=/s", "unknown mount type"),
        (
            "badkey",
            "type=cache,target=/c,tagret=/x",
            "unexpected key \"tagret\"",
        ),
        ("badsize", "type=tmpfs,target=/c,size=lots", "invalid size"),
        (
            "badsharing",
            "type=cache,target=/c,sharing=all",
            "invalid sharing",
        ),
        (
            "excluded",
            "type=bind,source=dir/a,target=/s",
            "dir/a is excluded by .dockerignore",
        ),
        (
            "nostagepath",
            "type=bind,from=bb,source=/nonexistent,target=/s",
            "/nonexistent not found in the stage",
        ),
    ] {
        let bad = context(&e, name, &format!("FROM bb\nRUN --mount={flag} true\n"));
        std::fs::write(bad.join(".dockerignore"), "dir/a\n").unwrap();
        build_fails(&e, &["build", p(&bad)], needle);
    }
    // Nothing of the steps' views is left mounted or in the snapshotter.
    let tmp = e.tmp.path().to_str().unwrap().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&tmp), "{mounts}");
    let left: Vec<String> = e
        .snapshots()
        .into_iter()
        .filter(|s| s.starts_with("build-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
