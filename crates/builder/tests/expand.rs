//! Variable expansion and ARG/ENV scoping tests.

use std::collections::BTreeMap;

use berth_builder::{
    expand, parse, unused_build_args, CopySource, ExpandError, GlobalArgs, Instruction, StageScope,
};

fn env() -> impl Fn(&str) -> Option<String> {
    |n: &str| match n {
        "A" => Some("a".into()),
        "EMPTY" => Some(String::new()),
        "SP" => Some("x y".into()),
        "F" => Some("dir/sub/file.tar.gz".into()),
        "STARS" => Some("a*b?c\\d}e/f".into()),
        "PCT" => Some("50%%".into()),
        _ => None,
    }
}

#[test]
fn expansion_table() {
    let table = [
        ("$A", "a"),
        ("${A}", "a"),
        ("pre${A}post", "preapost"),
        ("$A/b", "a/b"),
        ("$UNSET", ""),
        ("${UNSET}", ""),
        ("${UNSET:-def}", "def"),
        ("${EMPTY:-def}", "def"),
        ("${EMPTY-def}", ""),
        ("${UNSET-def}", "def"),
        ("${A:-def}", "a"),
        ("${A:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${UNSET:-${A}}", "a"),
        ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
        ("${UNSET:-$A-x}", "a-x"),
        ("${UNSET:-a b}", "a b"),
        ("\\$A", "$A"),
        ("\\${A}", "${A}"),
        ("'$A'", "$A"),
        ("\"$A\"", "a"),
        ("\"\\$A\"", "$A"),
        ("\"a\\b\"", "a\\b"),
        ("\"$SP\"", "x y"),
        ("a\\ b", "a b"),
        ("$", "$"),
        ("a$", "a$"),
        ("$-", "$-"),
        ("${UNSET:-'q $A'}", "q $A"),
        ("${A:?must}", "a"),
        // BuildKit's pattern forms: # and % the shortest, ## and %% the
        // longest prefix or suffix; / the first and // every longest match.
        ("${F#*/}", "sub/file.tar.gz"),
        ("${F##*/}", "file.tar.gz"),
        ("${F%.*}", "dir/sub/file.tar"),
        ("${F%%.*}", "dir/sub/file"),
        ("${F%/*}", "dir/sub"),
        ("${F#nomatch}", "dir/sub/file.tar.gz"),
        ("${F#d?r}", "/sub/file.tar.gz"),
        ("${F/sub/SUB}", "dir/SUB/file.tar.gz"),
        ("${F/./-}", "dir/sub/file-tar.gz"),
        ("${F//./-}", "dir/sub/file-tar-gz"),
        ("${F//[/(}", "dir/sub/file.tar.gz"),
        ("${F/s*b/X}", "dir/X/file.tar.gz"),
        ("${F/\\//:}", "dir:sub/file.tar.gz"),
        ("${F//\\//:}", "dir:sub:file.tar.gz"),
        ("${F/sub/$A}", "dir/a/file.tar.gz"),
        ("${F/*/$}", "$"),
        ("${UNSET#x}", ""),
        ("${UNSET/x/y}", ""),
        ("${STARS#a\\*}", "b?c\\d}e/f"),
        ("${STARS%\\}e/f}", "a*b?c\\d"),
        ("${STARS/\\?/Q}", "a*bQc\\d}e/f"),
        ("${STARS/\\\\/B}", "a*b?cBd}e/f"),
        ("${STARS%%\\**}", "a"),
        // A quoted % is the pattern, not the longest-match form.
        ("${PCT%\"%\"}", "50%"),
        ("${PCT%%\"%\"}", "50%"),
        ("${PCT%\"%%\"}", "50"),
    ];
    for (word, want) in table {
        assert_eq!(expand(word, '\\', &env()).unwrap(), want, "{word}");
    }
    // The word after ${A:- ...} ends at the first unquoted }
    assert_eq!(expand("${UNSET:-x}}", '\\', &env()).unwrap(), "x}");
}

#[test]
fn backtick_escape() {
    assert_eq!(expand("`$A", '`', &env()).unwrap(), "$A");
    assert_eq!(expand("C:\\$A", '`', &env()).unwrap(), "C:\\a");
}

#[test]
fn expansion_errors() {
    assert!(matches!(
        expand("${A", '\\', &env()),
        Err(ExpandError::BadSubstitution(_))
    ));
    assert!(matches!(
        expand("${}", '\\', &env()),
        Err(ExpandError::BadSubstitution(_))
    ));
    assert!(matches!(
        expand("'abc", '\\', &env()),
        Err(ExpandError::Unterminated("single-quote", _))
    ));
    assert!(matches!(
        expand("\"abc", '\\', &env()),
        Err(ExpandError::Unterminated("double-quote", _))
    ));
    for word in ["${A:#x}", "${A:%x}", "${A^x}"] {
        assert!(
            matches!(
                expand(word, '\\', &env()),
                Err(ExpandError::UnsupportedModifier { .. })
            ),
            "{word}"
        );
    }
    for word in ["${A#\\x}", "${A/\\q/r}"] {
        let err = expand(word, '\\', &env()).unwrap_err();
        assert!(
            matches!(err, ExpandError::BadPattern { .. }),
            "{word}: {err}"
        );
        assert!(err.to_string().contains("invalid escape"), "{err}");
    }
    for word in ["${F/a", "${F/a/b", "${F#a", "${F#a\\"] {
        assert!(
            matches!(
                expand(word, '\\', &env()),
                Err(ExpandError::BadSubstitution(_))
            ),
            "{word}"
        );
    }
    assert_eq!(
        expand("${UNSET:?need it}", '\\', &env())
            .unwrap_err()
            .to_string(),
        "UNSET: need it"
    );
    assert_eq!(
        expand("${EMPTY:?}", '\\', &env()).unwrap_err().to_string(),
        "EMPTY: is not allowed to be unset or empty"
    );
}

fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

type Pairs = Vec<(String, String)>;

/// Evaluates every instruction from the first FROM: (expanded, image env, args, run env).
fn run_stage(
    src: &str,
    build_args: &BTreeMap<String, String>,
) -> (Vec<Instruction>, Pairs, BTreeMap<String, String>, Pairs) {
    let df = parse(src).unwrap();
    let global = GlobalArgs::from_dockerfile(&df, build_args).unwrap();
    let mut scope = StageScope::new(
        &global,
        build_args,
        df.escape,
        vec![("PATH".into(), "/bin".into())],
    );
    let first_from = df
        .nodes
        .iter()
        .position(|n| matches!(n.instruction, Instruction::From { .. }))
        .unwrap();
    let mut out = Vec::new();
    for n in &df.nodes[first_from..] {
        out.push(scope.evaluate(&n.instruction).unwrap());
    }
    (out, scope.env().to_vec(), scope.args(), scope.run_env())
}

#[test]
fn global_args_only_in_from_unless_redeclared() {
    let src = "ARG VER=3.19\nARG OTHER=o\nFROM alpine:$VER\nWORKDIR /w/${VER}\nARG OTHER\nLABEL o=$OTHER\n";
    let (ins, _, a, _) = run_stage(src, &BTreeMap::new());
    assert_eq!(
        ins[0],
        Instruction::From {
            image: "alpine:3.19".into(),
            name: None,
            platform: None
        }
    );
    assert_eq!(
        ins[1],
        Instruction::Workdir("/w/".into()),
        "global ARG not visible without re-declaring"
    );
    assert_eq!(
        ins[3],
        Instruction::Label(vec![("o".into(), "o".into())]),
        "re-declared ARG takes the global value"
    );
    assert_eq!(a, args(&[("OTHER", "o")]));
}

#[test]
fn build_args_override_declared_defaults_only() {
    let ba = args(&[("VER", "3.20"), ("X", "bx"), ("UNDECLARED", "u")]);
    let src = "ARG VER=3.19\nFROM alpine:${VER}\nARG X=dx\nENV E=$X U=$UNDECLARED\n";
    let (ins, env, a, _) = run_stage(src, &ba);
    assert_eq!(
        ins[0],
        Instruction::From {
            image: "alpine:3.20".into(),
            name: None,
            platform: None
        }
    );
    assert_eq!(
        env,
        vec![
            ("PATH".into(), "/bin".into()),
            ("E".into(), "bx".into()),
            ("U".into(), String::new())
        ]
    );
    assert_eq!(a, args(&[("X", "bx")]));
    let df = parse(src).unwrap();
    assert_eq!(unused_build_args(&df, &ba), vec!["UNDECLARED".to_string()]);
}

#[test]
fn env_overrides_arg_and_pairs_expand_against_previous_env() {
    let src = "FROM a\nARG V=arg\nENV V=env\nWORKDIR /$V\nENV abc=hello\nENV abc=bye def=$abc\nENV P=$PATH:/usr/local/bin\n";
    let (ins, env, _, run_env) = run_stage(src, &BTreeMap::new());
    assert_eq!(ins[3], Instruction::Workdir("/env".into()));
    assert!(env.contains(&("def".into(), "hello".into())), "{env:?}");
    assert!(env.contains(&("abc".into(), "bye".into())));
    assert!(env.contains(&("P".into(), "/bin:/usr/local/bin".into())));
    // RUN sees V once, from ENV.
    assert_eq!(run_env.iter().filter(|(k, _)| k == "V").count(), 1);
    assert!(run_env.contains(&("V".into(), "env".into())));
}

#[test]
fn arg_default_uses_earlier_values_and_args_not_in_image_env() {
    let src = "FROM a\nARG A=1\nARG B=${A}2\nUSER u$B\n";
    let (ins, env, a, run_env) = run_stage(src, &BTreeMap::new());
    assert_eq!(ins[3], Instruction::User("u12".into()));
    assert_eq!(
        env,
        vec![("PATH".into(), "/bin".into())],
        "ARGs are not persisted"
    );
    assert_eq!(a, args(&[("A", "1"), ("B", "12")]));
    assert!(run_env.contains(&("B".into(), "12".into())));
}

#[test]
fn proxy_args_pass_to_run_without_declaration() {
    let ba = args(&[("HTTP_PROXY", "http://p:3128"), ("no_proxy", "localhost")]);
    let src = "FROM a\nRUN env\nWORKDIR /$HTTP_PROXY\n";
    let (ins, env, a, run_env) = run_stage(src, &ba);
    assert!(a.is_empty(), "not in cache-key args / history");
    assert!(
        !env.iter().any(|(k, _)| k == "HTTP_PROXY"),
        "not in image env"
    );
    assert!(run_env.contains(&("HTTP_PROXY".into(), "http://p:3128".into())));
    assert!(run_env.contains(&("no_proxy".into(), "localhost".into())));
    assert_eq!(ins[2], Instruction::Workdir("/".into()));
    let df = parse(src).unwrap();
    assert!(unused_build_args(&df, &ba).is_empty());
}

#[test]
fn run_cmd_not_expanded_copy_expanded() {
    let src = "FROM a\nARG D=/dst\nARG S=src\nRUN echo $D\nCMD echo $D\nCOPY --chown=${U:-0}:0 [\"$S/*.txt\", \"$D/with space/\"]\nEXPOSE ${PORT:-80}/tcp\nVOLUME [\"$D\"]\nSTOPSIGNAL ${SIG:-SIGQUIT}\nONBUILD RUN echo $D\n";
    let (ins, ..) = run_stage(src, &BTreeMap::new());
    let df = parse(src).unwrap();
    assert_eq!(ins[3], df.nodes[3].instruction, "RUN is left to the shell");
    assert_eq!(ins[4], df.nodes[4].instruction);
    let Instruction::Copy(c) = &ins[5] else {
        panic!()
    };
    assert_eq!(c.chown.as_deref(), Some("0:0"));
    assert_eq!(c.sources, vec![CopySource::Path("src/*.txt".into())]);
    assert_eq!(c.dest, "/dst/with space/");
    assert_eq!(ins[6], Instruction::Expose(vec!["80/tcp".into()]));
    assert_eq!(ins[7], Instruction::Volume(vec!["/dst".into()]));
    assert_eq!(ins[8], Instruction::Stopsignal("SIGQUIT".into()));
    assert_eq!(
        ins[9], df.nodes[9].instruction,
        "ONBUILD is recorded verbatim"
    );
}

#[test]
fn env_quotes_and_escapes() {
    let src = "FROM a\nENV A=\"a b\" B='$x' C=c\\ d D=\\$lit\n";
    let (_, env, ..) = run_stage(src, &BTreeMap::new());
    assert_eq!(
        &env[1..],
        &[
            ("A".into(), "a b".into()),
            ("B".into(), "$x".into()),
            ("C".into(), "c d".into()),
            ("D".into(), "$lit".into()),
        ]
    );
}
