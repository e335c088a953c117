//! Cache key and source hash tests.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use berth_builder::{cache_key, hash_sources, DockerIgnore, SourceHashError};

fn ctx() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("src/sub")).unwrap();
    fs::write(p.join("src/a.txt"), "a").unwrap();
    fs::write(p.join("src/sub/b.txt"), "b").unwrap();
    fs::write(p.join("top.txt"), "top").unwrap();
    fs::write(p.join("secret.key"), "k").unwrap();
    std::os::unix::fs::symlink("a.txt", p.join("src/link")).unwrap();
    d
}

fn h(p: &Path, srcs: &[&str], ig: &str) -> String {
    let srcs: Vec<String> = srcs.iter().map(|s| s.to_string()).collect();
    hash_sources(p, &srcs, &DockerIgnore::parse(ig).unwrap()).unwrap()
}

fn set_mtime(p: &Path, t: SystemTime) {
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn key_is_stable_and_sensitive() {
    let args = BTreeMap::from([("V".to_string(), "1".to_string())]);
    let k = cache_key("sha256:parent", "RUN make", &args, "linux/amd64", None);
    assert_eq!(k.len(), 64);
    assert_eq!(
        k,
        cache_key("sha256:parent", "RUN make", &args, "linux/amd64", None)
    );
    assert_ne!(
        k,
        cache_key("sha256:other", "RUN make", &args, "linux/amd64", None)
    );
    assert_ne!(
        k,
        cache_key("sha256:parent", "RUN make all", &args, "linux/amd64", None)
    );
    assert_ne!(
        k,
        cache_key(
            "sha256:parent",
            "RUN make",
            &BTreeMap::new(),
            "linux/amd64",
            None
        )
    );
    let args2 = BTreeMap::from([("V".to_string(), "2".to_string())]);
    assert_ne!(
        k,
        cache_key("sha256:parent", "RUN make", &args2, "linux/amd64", None)
    );
    assert_ne!(
        k,
        cache_key("sha256:parent", "RUN make", &args, "linux/arm64", None)
    );
    assert_ne!(
        k,
        cache_key("sha256:parent", "RUN make", &args, "linux/amd64", Some(""))
    );
    // Field boundaries are unambiguous.
    assert_ne!(
        cache_key("ab", "c", &BTreeMap::new(), "", None),
        cache_key("a", "bc", &BTreeMap::new(), "", None)
    );
}

#[test]
fn same_content_same_hash_across_dirs() {
    let a = ctx();
    let b = ctx();
    assert_eq!(
        h(a.path(), &["src", "top.txt"], ""),
        h(b.path(), &["src", "top.txt"], "")
    );
    // Order and duplicates of sources do not matter.
    assert_eq!(
        h(a.path(), &["top.txt", "src", "./src"], ""),
        h(a.path(), &["src", "top.txt"], "")
    );
}

#[test]
fn mtime_does_not_matter() {
    let d = ctx();
    let before = h(d.path(), &["src"], "");
    set_mtime(
        &d.path().join("src/a.txt"),
        SystemTime::UNIX_EPOCH + Duration::from_secs(12345),
    );
    set_mtime(
        &d.path().join("src/sub/b.txt"),
        SystemTime::now() + Duration::from_secs(3600),
    );
    // Rewrite identical bytes too (touch + same content).
    fs::write(d.path().join("src/a.txt"), "a").unwrap();
    assert_eq!(before, h(d.path(), &["src"], ""));
}

#[test]
fn content_mode_link_and_names_matter() {
    let d = ctx();
    let base = h(d.path(), &["src"], "");
    fs::write(d.path().join("src/sub/b.txt"), "B").unwrap();
    let changed = h(d.path(), &["src"], "");
    assert_ne!(base, changed, "content");
    fs::write(d.path().join("src/sub/b.txt"), "b").unwrap();
    assert_eq!(
        base,
        h(d.path(), &["src"], ""),
        "restored content, same hash"
    );
    fs::set_permissions(
        d.path().join("src/a.txt"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    assert_ne!(base, h(d.path(), &["src"], ""), "mode");
    fs::set_permissions(
        d.path().join("src/a.txt"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let base = h(d.path(), &["src"], "");
    fs::remove_file(d.path().join("src/link")).unwrap();
    std::os::unix::fs::symlink("sub/b.txt", d.path().join("src/link")).unwrap();
    assert_ne!(base, h(d.path(), &["src"], ""), "symlink target");
    let base = h(d.path(), &["src"], "");
    fs::rename(
        d.path().join("src/sub/b.txt"),
        d.path().join("src/sub/c.txt"),
    )
    .unwrap();
    assert_ne!(base, h(d.path(), &["src"], ""), "name");
    fs::write(d.path().join("src/new.txt"), "").unwrap();
}

#[test]
fn dockerignore_and_globs() {
    let d = ctx();
    let all = h(d.path(), &["."], "");
    let ignored = h(d.path(), &["."], "secret.key\n");
    assert_ne!(all, ignored);
    // Changing an ignored file does not change the hash.
    fs::write(d.path().join("secret.key"), "other").unwrap();
    assert_eq!(ignored, h(d.path(), &["."], "secret.key\n"));
    // An excluded source is "not found", as in Docker.
    let e = hash_sources(
        d.path(),
        &["secret.key".into()],
        &DockerIgnore::parse("*.key").unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, SourceHashError::NotFound(_)), "{e}");
    // Globs: *.txt at top level only.
    assert_eq!(h(d.path(), &["*.txt"], ""), h(d.path(), &["top.txt"], ""));
    assert_eq!(
        h(d.path(), &["src/*.txt"], ""),
        h(d.path(), &["src/a.txt"], "")
    );
    // Exceptions re-include inside an excluded directory.
    let with_exc = h(d.path(), &["."], "src\n!src/sub/b.txt\n");
    fs::write(d.path().join("src/a.txt"), "changed but excluded").unwrap();
    assert_eq!(with_exc, h(d.path(), &["."], "src\n!src/sub/b.txt\n"));
    fs::write(d.path().join("src/sub/b.txt"), "changed and included").unwrap();
    assert_ne!(with_exc, h(d.path(), &["."], "src\n!src/sub/b.txt\n"));
}

#[test]
fn errors() {
    let d = ctx();
    let none = DockerIgnore::default();
    assert!(matches!(
        hash_sources(d.path(), &["missing".into()], &none),
        Err(SourceHashError::NotFound(_))
    ));
    assert!(matches!(
        hash_sources(d.path(), &["*.nothing".into()], &none),
        Err(SourceHashError::NotFound(_))
    ));
    assert!(matches!(
        hash_sources(d.path(), &["../etc".into()], &none),
        Err(SourceHashError::OutsideContext(_))
    ));
    // A leading / means the context root, as in Docker.
    assert_eq!(
        h(d.path(), &["/top.txt"], ""),
        h(d.path(), &["top.txt"], "")
    );
}

#[test]
fn cache_text_is_after_expansion_and_spelling_independent() {
    use berth_builder::{parse, GlobalArgs, StageScope};
    let texts = |src: &str, v: &str| {
        let df = parse(src).unwrap();
        let ba = BTreeMap::from([("V".to_string(), v.to_string())]);
        let g = GlobalArgs::from_dockerfile(&df, &ba).unwrap();
        let mut s = StageScope::new(&g, &ba, df.escape, vec![]);
        df.nodes
            .iter()
            .map(|n| s.evaluate(&n.instruction).unwrap().cache_text())
            .collect::<Vec<_>>()
    };
    let a = texts("FROM x\nARG V\nenv   A=$V\nWORKDIR /$V\n", "1");
    let b = texts("FROM x\nARG V\nENV A=${V}\nworkdir /${V}\n", "1");
    assert_eq!(a, b);
    let c = texts("FROM x\nARG V\nENV A=$V\nWORKDIR /$V\n", "2");
    assert_ne!(a[2], c[2]);
    assert_ne!(a[3], c[3]);
}

#[test]
fn xattrs_matter() {
    use std::os::unix::ffi::OsStrExt;
    let d = ctx();
    let base = h(d.path(), &["src"], "");
    let file = d.path().join("src/a.txt");
    let c = std::ffi::CString::new(file.as_os_str().as_bytes()).unwrap();
    let set = |v: &[u8]| {
        // SAFETY: valid C strings and a buffer of the given length.
        unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                c"user.berth-test".as_ptr(),
                v.as_ptr().cast(),
                v.len(),
                0,
            )
        }
    };
    if set(b"1") != 0 {
        eprintln!(
            "skipped: no user xattrs here: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let one = h(d.path(), &["src"], "");
    assert_ne!(base, one, "an added xattr changes the hash");
    assert_eq!(set(b"2"), 0);
    assert_ne!(one, h(d.path(), &["src"], ""), "its value too");
    assert_eq!(set(b"1"), 0);
    assert_eq!(one, h(d.path(), &["src"], ""), "same value, same hash");
}
