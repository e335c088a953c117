//! Parser tests: every instruction form, directives, errors with line:col.

use std::time::Duration;

use berth_builder::{parse, parse_named, Command, CopySource, Healthcheck, Instruction};

fn one(src: &str) -> Instruction {
    let df = parse(&format!("FROM base\n{src}")).unwrap_or_else(|e| panic!("{src}: {e}"));
    assert_eq!(df.nodes.len(), 2, "{src}");
    df.nodes[1].instruction.clone()
}

fn s(v: &str) -> String {
    v.to_string()
}

#[test]
fn instruction_table() {
    let table: Vec<(&str, Instruction)> = vec![
        ("RUN echo hi", Instruction::Run {
            command: Command::Shell(s("echo hi")),
            mounts: vec![],
            network: None,
            security: None,
            heredocs: vec![],
        }),
        ("CMD [\"a\", \"b c\"]", Instruction::Cmd(Command::Exec(vec![s("a"), s("b c")]))),
        ("CMD echo $HOME", Instruction::Cmd(Command::Shell(s("echo $HOME")))),
        // Invalid JSON falls back to shell form, as Docker does.
        ("CMD [\"a\", ]", Instruction::Cmd(Command::Shell(s("[\"a\", ]")))),
        ("ENTRYPOINT [\"/bin/app\"]", Instruction::Entrypoint(Command::Exec(vec![s("/bin/app")]))),
        ("ENV A=1 B=\"two words\"", Instruction::Env(vec![(s("A"), s("1")), (s("B"), s("\"two words\""))])),
        ("ENV LEGACY value with spaces", Instruction::Env(vec![(s("LEGACY"), s("value with spaces"))])),
        ("ARG V", Instruction::Arg(vec![(s("V"), None)])),
        ("ARG V=1 W", Instruction::Arg(vec![(s("V"), Some(s("1"))), (s("W"), None)])),
        ("WORKDIR /app", Instruction::Workdir(s("/app"))),
        ("USER 1000:1000", Instruction::User(s("1000:1000"))),
        ("EXPOSE 80 443/tcp", Instruction::Expose(vec![s("80"), s("443/tcp")])),
        ("VOLUME [\"/a\", \"/b\"]", Instruction::Volume(vec![s("/a"), s("/b")])),
        ("VOLUME /a /b", Instruction::Volume(vec![s("/a"), s("/b")])),
        ("LABEL a=b \"c d\"=e", Instruction::Label(vec![(s("a"), s("b")), (s("\"c d\""), s("e"))])),
        ("STOPSIGNAL SIGTERM", Instruction::Stopsignal(s("SIGTERM"))),
        ("HEALTHCHECK NONE", Instruction::Healthcheck(Healthcheck::None)),
        ("HEALTHCHECK --interval=1m30s --timeout=5s --start-period=500ms --retries=3 CMD curl -f x", Instruction::Healthcheck(Healthcheck::Cmd {
            command: Command::Shell(s("curl -f x")),
            interval: Some(Duration::from_secs(90)),
            timeout: Some(Duration::from_secs(5)),
            start_period: Some(Duration::from_millis(500)),
            start_interval: None,
            retries: Some(3),
        })),
        ("SHELL [\"/bin/bash\", \"-c\"]", Instruction::Shell(vec![s("/bin/bash"), s("-c")])),
        ("MAINTAINER Jane <j@x>", Instruction::Maintainer(s("Jane <j@x>"))),
    ];
    for (src, want) in table {
        assert_eq!(one(src), want, "{src}");
    }
}

#[test]
fn from_forms() {
    let df =
        parse("ARG V=1\nFROM --platform=linux/amd64 alpine:${V} AS Build\nFROM scratch\n").unwrap();
    assert_eq!(
        df.nodes[0].instruction,
        Instruction::Arg(vec![(s("V"), Some(s("1")))])
    );
    assert_eq!(
        df.nodes[1].instruction,
        Instruction::From {
            image: s("alpine:${V}"),
            name: Some(s("Build")),
            platform: Some(s("linux/amd64")),
        }
    );
    assert_eq!(
        df.nodes[2].instruction,
        Instruction::From {
            image: s("scratch"),
            name: None,
            platform: None
        }
    );
}

/// A UTF-8 byte-order mark is ignored, as Docker does (the fuzzer once found
/// a panic on `BOM FROM '`).
#[test]
fn byte_order_mark_is_ignored() {
    let plain = parse("FROM base\nRUN true\n").unwrap();
    let marked = parse("\u{feff}FROM base\nRUN true\n").unwrap();
    assert_eq!(plain.nodes, marked.nodes);
    let _ = parse("\u{feff} FROM '");
}

#[test]
fn run_flags_and_mounts() {
    let Instruction::Run { mounts, network, security, command, .. } =
        one("RUN --mount=type=cache,target=/root/.cache --mount=type=bind,from=build,source=/o,target=/i --network=none --security=sandbox make")
    else {
        panic!()
    };
    assert_eq!(mounts.len(), 2);
    assert_eq!(mounts[0].field("type"), Some("cache"));
    assert_eq!(mounts[1].field("from"), Some("build"));
    assert_eq!(network.as_deref(), Some("none"));
    assert_eq!(security.as_deref(), Some("sandbox"));
    assert_eq!(command, Command::Shell(s("make")));
}

#[test]
fn copy_and_add() {
    let Instruction::Copy(c) = one("COPY --from=build --chown=1:2 --chmod=0755 --link a b* /dst/")
    else {
        panic!()
    };
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.chown.as_deref(), Some("1:2"));
    assert_eq!(c.chmod.as_deref(), Some("0755"));
    assert!(c.link);
    assert_eq!(
        c.sources,
        vec![CopySource::Path(s("a")), CopySource::Path(s("b*"))]
    );
    assert_eq!(c.dest, "/dst/");
    let Instruction::Copy(c) = one("COPY [\"with space\", \"/d\"]") else {
        panic!()
    };
    assert_eq!(c.sources, vec![CopySource::Path(s("with space"))]);
    let Instruction::Add(a) = one("ADD --checksum=sha256:abc https://x/y.tgz /y") else {
        panic!()
    };
    assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
    assert_eq!(a.sources, vec![CopySource::Path(s("https://x/y.tgz"))]);
}

#[test]
fn heredocs() {
    let df = parse("FROM a\nRUN <<EOT bash\nset -e\necho $X\nEOT\nCOPY <<'EOF' /x\nliteral $Y\nEOF\nRUN <<-EOT\n\techo tab\n\tEOT\n").unwrap();
    let Instruction::Run {
        command, heredocs, ..
    } = &df.nodes[1].instruction
    else {
        panic!()
    };
    assert_eq!(command, &Command::Shell(s("<<EOT bash")));
    assert_eq!(heredocs[0].content, "set -e\necho $X\n");
    assert!(heredocs[0].expand);
    assert_eq!(df.nodes[1].text, "RUN <<EOT bash\nset -e\necho $X\nEOT");
    let Instruction::Copy(c) = &df.nodes[2].instruction else {
        panic!()
    };
    let CopySource::Heredoc(h) = &c.sources[0] else {
        panic!()
    };
    assert_eq!(h.content, "literal $Y\n");
    assert!(!h.expand, "quoted delimiter disables expansion");
    assert_eq!(df.nodes[2].span.line, 6);
    let Instruction::Run { heredocs, .. } = &df.nodes[3].instruction else {
        panic!()
    };
    assert_eq!(heredocs[0].content, "echo tab\n");
}

#[test]
fn directives_continuations_comments() {
    let src = "# syntax=docker/dockerfile:1\n# escape=`\n\nFROM a\n# comment\nRUN echo one `\n  two\n\n  # comment inside is dropped\nENV A=1 `\n    B=2\nWORKDIR C:\\dir\n";
    let df = parse(src).unwrap();
    assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(df.escape, '`');
    assert_eq!(df.nodes.len(), 4);
    assert_eq!(df.nodes[1].span.line, 6);
    assert_eq!(df.nodes[1].span.column, 1);
    assert_eq!(
        df.nodes[2].instruction,
        Instruction::Env(vec![(s("A"), s("1")), (s("B"), s("2"))])
    );
    assert_eq!(df.nodes[2].span.line, 10);
    assert_eq!(df.nodes[3].instruction, Instruction::Workdir(s("C:\\dir")));
    // Default escape: backslash continuation.
    let df = parse("FROM a\nRUN a \\\n b\n").unwrap();
    assert_eq!(df.escape, '\\');
    assert_eq!(df.nodes[1].text, "RUN a \\\n b");
    // A directive after an instruction is just a comment.
    let df = parse("FROM a\n# escape=`\nRUN x\n").unwrap();
    assert_eq!(df.escape, '\\');
}

#[test]
fn lowercase_keywords_and_indent() {
    let df = parse("from a as b\n   run x\n").unwrap();
    assert_eq!(df.nodes[1].span.line, 2);
    assert_eq!(df.nodes[1].span.column, 4);
    assert_eq!(df.nodes[1].text, "run x");
}

#[test]
fn onbuild_nested() {
    let Instruction::Onbuild(n) = one("ONBUILD COPY . /src") else {
        panic!()
    };
    assert!(matches!(n.instruction, Instruction::Copy(_)));
    assert_eq!(n.span.column, 9);
    assert_eq!(n.text, "COPY . /src");
}

#[test]
fn error_messages() {
    let cases = [
        ("FROM a\nRUN x\nFROMM b\n", "Dockerfile:3:1: unknown instruction \"FROMM\" (did you mean FROM?)"),
        ("FROM a\nCOPPY a b\n", "Dockerfile:2:1: unknown instruction \"COPPY\" (did you mean COPY?)"),
        ("FROM a\nXYZZYQ a\n", "Dockerfile:2:1: unknown instruction \"XYZZYQ\""),
        ("RUN x\nFROM a\n", "Dockerfile:1:1: RUN before the first FROM (only ARG may come before FROM)"),
        ("FROM\n", "Dockerfile:1:1: FROM instruction requires at least one argument: \"FROM\""),
        ("FROM a\nCOPY --foo=1 a b\n", "Dockerfile:2:6: unknown flag \"--foo\" for COPY (allowed: --from, --chown, --chmod, --link, --parents, --exclude)"),
        ("FROM a\nADD --from=x a b\n", "Dockerfile:2:5: unknown flag \"--from\" for ADD (allowed: --chown, --chmod, --link, --checksum, --keep-git-dir, --exclude)"),
        ("FROM --plat=x a\n", "Dockerfile:1:6: unknown flag \"--plat\" for FROM (allowed: --platform)"),
        ("FROM a\nCOPY --chown a b\n", "Dockerfile:2:6: flag \"--chown\" of COPY needs a value (--chown=...)"),
        ("FROM a\nSHELL [\"a\"\n", "Dockerfile:2:7: invalid JSON: \"SHELL [\"a\"\""),
        ("FROM a\nSHELL a b\n", "Dockerfile:2:7: expected JSON array: \"SHELL a b\""),
        ("FROM a\nENV A\n", "Dockerfile:2:5: ENV needs a value: \"ENV A\" (use A=value)"),
        ("FROM a\nENV A=1 B\n", "Dockerfile:2:5: ENV: can't find = in \"B\"; use name=value"),
        ("# nothing\n", "Dockerfile:1:1: no FROM instruction (a Dockerfile needs at least one stage)"),
        ("FROM a\nCOPY a\n", "Dockerfile:2:1: COPY instruction requires at least two arguments: \"COPY a\""),
        ("FROM a\nHEALTHCHECK --interval=abc CMD x\n", "Dockerfile:2:13: --interval takes a duration like 30s or 1m30s, not \"abc\""),
        ("FROM a\nHEALTHCHECK --interval=2562048h CMD x\n", "Dockerfile:2:13: --interval takes a duration like 30s or 1m30s, not \"2562048h\""),
        ("FROM a\nHEALTHCHECK --timeout=1e400s CMD x\n", "Dockerfile:2:13: --timeout takes a duration like 30s or 1m30s, not \"1e400s\""),
        ("\u{feff}\u{feff} FROM a\n", "Dockerfile:1:1: a second byte-order mark (U+FEFF) before the first instruction"),
        ("FROM a\nHEALTHCHECK --retries=x CMD x\n", "Dockerfile:2:13: --retries must be a whole number, not \"x\""),
        ("FROM a\nHEALTHCHECK FOO\n", "Dockerfile:2:13: expected CMD or NONE: \"HEALTHCHECK FOO\""),
        ("FROM a AS x\nFROM b AS x\n", "Dockerfile:2:11: duplicate stage name 'x': \"FROM b AS x\""),
        ("# escape=x\nFROM a\n", "Dockerfile:1:10: invalid escape 'x': \"# escape=x\""),
        ("FROM a\nRUN <<EOF\nabc\n", "Dockerfile:4:1: expected end of here-document (EOF), but reached eof"),
        ("FROM a\nONBUILD FROM b\n", "Dockerfile:2:9: FROM isn't allowed as an ONBUILD trigger"),
        ("FROM a\nARG 1x=2\n", "Dockerfile:2:5: invalid ARG name \"1x\""),
    ];
    for (src, want) in cases {
        let err = parse(src).expect_err(src);
        assert_eq!(err.to_string(), want, "{src:?}");
        assert!(!err.to_string().contains('\n'));
    }
}

#[test]
fn error_carries_file_and_text() {
    let e = parse_named("sub/Dockerfile.dev", "FROM a\n  RUNN x\n").unwrap_err();
    assert_eq!(e.file, "sub/Dockerfile.dev");
    assert_eq!((e.line, e.column), (2, 3));
    assert_eq!(e.text, "  RUNN x");
    assert_eq!(
        e.to_string(),
        "sub/Dockerfile.dev:2:3: unknown instruction \"RUNN\" (did you mean RUN?)"
    );
}

/// Found by the `dockerfile` fuzz target: after a byte-order mark the
/// parser's column fell inside a character, and building the error panicked.
#[test]
fn error_position_after_a_byte_order_mark() {
    let input =
        b"\xef\xbb\xbf echo E` aNV\x0c\x0c\x0c\x0c\x0c\x0c\x0c\x0c\x0c\r\x0c\x0c\x0c\x0c\x0c\x0ct";
    let text = std::str::from_utf8(input).unwrap();
    let err = berth_builder::parse(text).unwrap_err();
    assert_eq!(err.line, 1, "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");
    // A BOM before a valid Dockerfile is fine, as in Docker.
    berth_builder::parse("\u{feff}FROM busybox\nRUN true\n").unwrap();
}
