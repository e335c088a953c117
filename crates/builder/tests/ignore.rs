//! `.dockerignore` tests, mostly from Docker's documentation.

use berth_builder::DockerIgnore;

fn ex(patterns: &str, path: &str) -> bool {
    DockerIgnore::parse(patterns).unwrap().is_excluded(path)
}

#[test]
fn docs_example() {
    // https://docs.docker.com/build/concepts/context/#dockerignore-files
    let p = "# comment\n*/temp*\n*/*/temp*\ntemp?\n";
    assert!(ex(p, "somedir/temporary.txt"));
    assert!(ex(p, "somedir/temp"));
    assert!(ex(p, "somedir/subdir/temporary.txt"));
    assert!(ex(p, "tempa"));
    assert!(ex(p, "tempb"));
    assert!(!ex(p, "temporary.txt"), "*/temp* needs one directory level");
    assert!(!ex(p, "tempab"));
    assert!(!ex(p, "a/b/c/temp"));
}

#[test]
fn double_star() {
    assert!(ex("**/*.go", "main.go"));
    assert!(ex("**/*.go", "a/b/c.go"));
    assert!(ex("a/**/z", "a/z"));
    assert!(ex("a/**/z", "a/b/c/z"));
    assert!(ex("**", "anything/at/all"));
    assert!(!ex("*.go", "a/b.go"), "* does not cross /");
}

#[test]
fn exceptions_last_match_wins() {
    // Docker docs: *.md then !README.md
    let p = "*.md\n!README.md\n";
    assert!(ex(p, "CHANGES.md"));
    assert!(!ex(p, "README.md"));
    // *.md / !README*.md / README-secret.md
    let p = "*.md\n!README*.md\nREADME-secret.md\n";
    assert!(ex(p, "README-secret.md"));
    assert!(!ex(p, "README-public.md"));
    assert!(ex(p, "other.md"));
    // Order matters: the exception first is overridden.
    let p = "*.md\nREADME-secret.md\n!README*.md\n";
    assert!(!ex(p, "README-secret.md"));
}

#[test]
fn parent_directories_and_reinclusion() {
    let p = "secrets\n";
    assert!(ex(p, "secrets"));
    assert!(
        ex(p, "secrets/key.pem"),
        "a matching parent directory excludes its contents"
    );
    assert!(!ex(p, "notsecrets/key"));
    let p = "docs\n!docs/keep.txt\n";
    assert!(ex(p, "docs/other.txt"));
    assert!(!ex(p, "docs/keep.txt"));
}

#[test]
fn cleaning_and_classes() {
    assert!(ex("/abs", "abs"));
    assert!(ex("./rel/", "rel/x"));
    assert!(ex("a//b/../c", "a/c"));
    assert!(ex("  spaced  ", "spaced"));
    assert!(ex("file[0-9]", "file7"));
    assert!(!ex("file[0-9]", "filex"));
    assert!(ex("file[^0-9]", "filex"));
    assert!(ex("file[!0-9]", "filex"));
    assert!(ex("lit\\*", "lit*"));
    assert!(!ex("lit\\*", "litx"));
    assert!(ex("{a,b}", "{a,b}"), "braces are literal");
    assert!(!ex("{a,b}", "a"));
    assert!(!ex("# not a pattern\n", "# not a pattern"));
    assert!(!ex("", "x"));
}

#[test]
fn patterns_are_cleaned() {
    let d = DockerIgnore::parse("/a/\n! ./b\n#c\n\n").unwrap();
    assert_eq!(d.patterns(), vec!["a".to_string(), "!b".to_string()]);
    assert!(d.has_exceptions());
}

#[test]
fn dockerfile_and_dockerignore_can_be_matched() {
    // They are still read by the builder, but COPY does not see them.
    let d = DockerIgnore::parse("Dockerfile\n.dockerignore\n").unwrap();
    assert!(d.is_excluded("Dockerfile"));
    assert!(d.is_excluded(".dockerignore"));
}

#[test]
fn per_dockerfile_ignore_file_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".dockerignore"), "a\n").unwrap();
    std::fs::write(dir.path().join("Dockerfile.dev.dockerignore"), "b\n").unwrap();
    let d =
        DockerIgnore::for_context(dir.path(), Some(&dir.path().join("Dockerfile.dev"))).unwrap();
    assert_eq!(d.patterns(), vec!["b".to_string()]);
    let d = DockerIgnore::for_context(dir.path(), Some(&dir.path().join("Dockerfile"))).unwrap();
    assert_eq!(d.patterns(), vec!["a".to_string()]);
    let empty = tempfile::tempdir().unwrap();
    assert!(DockerIgnore::for_context(empty.path(), None)
        .unwrap()
        .patterns()
        .is_empty());
}
