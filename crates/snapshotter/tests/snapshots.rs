//! Snapshotter behaviour with real overlay mounts. Needs root.

mod common;

use std::fs;
use std::path::Path;

use berth_snapshotter::{Error, Kind, MountGuard, Snapshotter};
use common::{listing, Env, RawTar};

/// Merged-view listing without dir mtimes (overlay may touch them on lookup).
fn merged(p: &Path) -> Vec<String> {
    listing(p, false)
}

fn mnt(env: &Env, name: &str) -> std::path::PathBuf {
    let p = env.tmp.path().join(name);
    fs::create_dir_all(&p).unwrap();
    p
}

#[test]
fn lifecycle_and_refusals() {
    let env = Env::new();
    let s = &env.snap;
    let m = s.prepare("a", None).unwrap();
    assert_eq!(m[0].typ, "bind");
    assert!(matches!(s.prepare("a", None), Err(Error::AlreadyExists(_))));
    assert!(
        matches!(s.prepare("b", Some("a")), Err(Error::WrongKind { .. })),
        "active parent"
    );
    s.commit("base", "a").unwrap();
    assert!(matches!(s.stat("a"), Err(Error::NotFound(_))));
    assert_eq!(s.stat("base").unwrap().kind, Kind::Committed);
    let m = s.prepare("c1", Some("base")).unwrap();
    assert_eq!(m[0].typ, "overlay");
    assert!(m[0].options.iter().any(|o| o.starts_with("upperdir=")));
    let v = s.view("v1", Some("base")).unwrap();
    assert_eq!(v[0].typ, "bind");
    assert!(v[0].options.contains(&"ro".to_string()));
    let e = s.remove("base").unwrap_err();
    assert!(matches!(e, Error::HasChildren { .. }), "{e}");
    assert!(e.to_string().contains("c1"));
    let names: Vec<_> = s
        .walk()
        .unwrap()
        .into_iter()
        .map(|i| (i.name, i.kind))
        .collect();
    assert_eq!(
        names,
        vec![
            ("base".into(), Kind::Committed),
            ("c1".into(), Kind::Active),
            ("v1".into(), Kind::View)
        ]
    );
    // A second handle (another process) sees the same metadata.
    let s2 = Snapshotter::open(&env.root).unwrap();
    assert_eq!(s2.stat("c1").unwrap().parent.as_deref(), Some("base"));
    s.remove("c1").unwrap();
    s.remove("v1").unwrap();
    s.remove("base").unwrap();
    assert!(s.walk().unwrap().is_empty());
    let left: Vec<_> = fs::read_dir(&env.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        left.iter().all(|n| n == "l" || n.starts_with("metadata")),
        "{left:?}"
    );
    assert_eq!(fs::read_dir(env.root.join("l")).unwrap().count(), 0);
    // A read-only view mount refuses writes.
    let fs_dir = env.active("x", None);
    fs::write(fs_dir.join("f"), b"1").unwrap();
    s.commit("xc", "x").unwrap();
    s.view("xv", Some("xc")).unwrap();
    let t = mnt(&env, "view");
    let _g = MountGuard::mount(&s.mounts("xv").unwrap(), &t).unwrap();
    assert_eq!(fs::read(t.join("f")).unwrap(), b"1");
    assert!(fs::write(t.join("g"), b"2").is_err());
}

#[test]
fn concurrent_handles_keep_metadata_consistent() {
    let env = Env::new();
    let root = env.root.clone();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || {
                let s = Snapshotter::open(&root).unwrap();
                for i in 0..10 {
                    let k = format!("t{t}-{i}");
                    s.prepare(&k, None).unwrap();
                    s.commit(&format!("c-{k}"), &k).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = env.snap.walk().unwrap();
    assert_eq!(all.len(), 80);
    assert!(all.iter().all(|i| i.kind == Kind::Committed));
    let dirs = fs::read_dir(&env.root)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .parse::<u64>()
                .is_ok()
        })
        .count();
    assert_eq!(dirs, 80);
}

/// Applies a chain of layers, committing each; returns the last committed name.
fn chain(env: &Env, layers: &[Vec<u8>]) -> String {
    let mut parent: Option<String> = None;
    for (i, l) in layers.iter().enumerate() {
        let key = format!("extract-{i}");
        env.snap.prepare(&key, parent.as_deref()).unwrap();
        env.snap.apply(&key, &l[..]).unwrap();
        let name = format!("layer-{i}");
        env.snap.commit(&name, &key).unwrap();
        parent = Some(name);
    }
    parent.unwrap()
}

fn three_layers() -> Vec<Vec<u8>> {
    let l1 = RawTar::new()
        .dir("etc")
        .file("etc/keep", b"keep")
        .file("etc/gone", b"gone")
        .dir("opt")
        .file("opt/old1", b"o1")
        .dir("opt/sub")
        .file("opt/sub/old2", b"o2")
        .dir("var")
        .file("var/v", b"v")
        .finish();
    let l2 = RawTar::new()
        .dir("etc")
        .file("etc/.wh.gone", b"")
        .dir("opt")
        .file("opt/.wh..wh..opq", b"")
        .file("opt/new", b"n")
        .file(".wh.var", b"")
        .finish();
    let l3 = RawTar::new()
        .dir("etc")
        .file("etc/added", b"a")
        .dir("var")
        .file("var/again", b"again")
        .finish();
    vec![l1, l2, l3]
}

/// Unpacks every layer at once into parentless snapshots (one thread each), then
/// commits them in order with `commit_onto`; returns the last committed name.
fn chain_in_parallel(env: &Env, layers: &[Vec<u8>]) -> String {
    std::thread::scope(|s| {
        for (i, l) in layers.iter().enumerate() {
            let root = env.root.clone();
            s.spawn(move || {
                let snap = Snapshotter::open(&root).unwrap();
                let key = format!("extract-{i}");
                snap.prepare(&key, None).unwrap();
                snap.apply(&key, &l[..]).unwrap();
            });
        }
    });
    let mut parent: Option<String> = None;
    for i in 0..layers.len() {
        let name = format!("layer-{i}");
        env.snap
            .commit_onto(&name, &format!("extract-{i}"), parent.as_deref())
            .unwrap();
        parent = Some(name);
    }
    parent.unwrap()
}

#[test]
fn layers_unpacked_side_by_side_and_committed_onto_give_the_same_tree() {
    let layers = three_layers();
    let (a, b) = (Env::new(), Env::new());
    let top_a = chain(&a, &layers);
    let top_b = chain_in_parallel(&b, &layers);
    let mut trees = Vec::new();
    for (env, top) in [(&a, &top_a), (&b, &top_b)] {
        assert_eq!(
            env.snap.stat("layer-2").unwrap().parent.as_deref(),
            Some("layer-1")
        );
        env.snap.view("v", Some(top)).unwrap();
        let t = mnt(env, "rootfs");
        let _g = MountGuard::mount(&env.snap.mounts("v").unwrap(), &t).unwrap();
        trees.push(merged(&t));
    }
    assert_eq!(trees[0], trees[1]);
    assert!(
        !trees[1].iter().any(|l| l.starts_with("etc/gone")),
        "{trees:?}"
    );
    // Refusals: a key that has a parent, a parent that is not committed.
    let s = &b.snap;
    s.prepare("has-parent", Some("layer-0")).unwrap();
    let e = s
        .commit_onto("x", "has-parent", Some("layer-0"))
        .unwrap_err();
    assert!(matches!(e, Error::WrongKind { .. }), "{e}");
    s.prepare("free", None).unwrap();
    let e = s.commit_onto("y", "free", Some("has-parent")).unwrap_err();
    assert!(matches!(e, Error::WrongKind { .. }), "{e}");
    let e = s.commit_onto("y", "free", Some("missing")).unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    s.commit_onto("y", "free", None).unwrap();
    assert_eq!(s.stat("y").unwrap().parent, None);
}

#[test]
fn whiteouts_give_exactly_the_final_tree() {
    let env = Env::new();
    let top = chain(&env, &three_layers());
    env.snap.prepare("ctr", Some(&top)).unwrap();
    let t = mnt(&env, "rootfs");
    let _g = MountGuard::mount(&env.snap.mounts("ctr").unwrap(), &t).unwrap();
    let mut names: Vec<String> = merged(&t)
        .into_iter()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "etc",
            "etc/added",
            "etc/keep",
            "opt",
            "opt/new",
            "var",
            "var/again"
        ]
    );
    assert_eq!(fs::read(t.join("var/again")).unwrap(), b"again");
    // The intermediate layer holds overlay whiteouts, not OCI ones.
    let l2 = env.snap.root().join(format!("{}", 2)).join("fs");
    let l2list = common::tree_listing(&l2).join("\n");
    assert!(l2list.contains("etc/gone mode=20000"), "{l2list}");
    assert!(
        l2list.contains("opt mode=40755 uid=0 gid=0")
            && l2list.contains("x:trusted.overlay.opaque=y"),
        "{l2list}"
    );
    assert!(!l2list.contains(".wh."), "{l2list}");
    if let Some(reference) = umoci_reference(&env, &three_layers()) {
        let mut rn: Vec<String> = merged(&reference)
            .into_iter()
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect();
        rn.sort();
        assert_eq!(names, rn, "umoci's unpack differs");
    }
}

/// Unpacks the layers with umoci (if installed) into a dir; None when unavailable.
fn umoci_reference(env: &Env, layers: &[Vec<u8>]) -> Option<std::path::PathBuf> {
    if std::process::Command::new("umoci")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("note: umoci not installed, reference comparison skipped");
        return None;
    }
    use sha2::Digest;
    let layout = env.tmp.path().join("oci");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = common::hex(&sha2::Sha256::digest(b));
        fs::write(blobs.join(&d), b).unwrap();
        (format!("sha256:{d}"), b.len())
    };
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", common::hex(&sha2::Sha256::digest(l))))
        .collect();
    let config = serde_json::json!({"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":diff_ids}});
    let (cd, cs) = put(config.to_string().as_bytes());
    let ls: Vec<_> = layers.iter().map(|l| { let (d, s) = put(l); serde_json::json!({"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":d,"size":s}) }).collect();
    let manifest = serde_json::json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":cs},"layers":ls});
    let (md, ms) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":md,"size":ms,"annotations":{"org.opencontainers.image.ref.name":"t"}}]});
    fs::write(layout.join("index.json"), index.to_string()).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let bundle = env.tmp.path().join("bundle");
    let out = std::process::Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:t", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(bundle.join("rootfs"))
}

#[test]
fn children_share_the_base_on_disk() {
    let env = Env::new();
    let big: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let base = RawTar::new().file("big", &big).finish();
    env.snap.prepare("b", None).unwrap();
    env.snap.apply("b", &base[..]).unwrap();
    env.snap.commit("sha256:base", "b").unwrap();
    // Two images on the same base.
    for img in ["a", "b"] {
        let k = format!("x-{img}");
        env.snap.prepare(&k, Some("sha256:base")).unwrap();
        env.snap
            .apply(
                &k,
                &RawTar::new().file(&format!("img-{img}"), b"x").finish()[..],
            )
            .unwrap();
        env.snap.commit(&format!("sha256:{img}"), &k).unwrap();
    }
    // Ten containers from image a, one from b, all mounted and reading the big file.
    let mut guards = Vec::new();
    for i in 0..11 {
        let img = if i < 10 { "a" } else { "b" };
        let k = format!("ctr{i}");
        env.snap
            .prepare(&k, Some(&format!("sha256:{img}")))
            .unwrap();
        let t = mnt(&env, &format!("m{i}"));
        guards.push(MountGuard::mount(&env.snap.mounts(&k).unwrap(), &t).unwrap());
        assert_eq!(fs::read(t.join("big")).unwrap().len(), big.len());
        fs::write(t.join("scratch"), b"own").unwrap();
    }
    let base_use = env.snap.usage("sha256:base").unwrap();
    assert!(base_use.bytes >= big.len() as u64, "{base_use:?}");
    let total: u64 = env
        .snap
        .walk()
        .unwrap()
        .iter()
        .map(|i| env.snap.usage(&i.name).unwrap().bytes)
        .sum();
    assert!(
        total < base_use.bytes + (1 << 20),
        "base stored more than once: total {total}, base {}",
        base_use.bytes
    );
    drop(guards);
    let du = std::process::Command::new("du")
        .args(["-s", "-B1"])
        .arg(&env.root)
        .output()
        .unwrap();
    let du: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        du < big.len() as u64 * 3 / 2,
        "du {du} of the snapshot root: the base is not stored once"
    );
}

#[test]
fn two_hundred_layer_chain_mounts() {
    let env = Env::new();
    let mut parent: Option<String> = None;
    for i in 1..=200 {
        let key = format!("e{i}");
        env.snap.prepare(&key, parent.as_deref()).unwrap();
        let tar = RawTar::new()
            .file(&format!("layer-{i}"), format!("content {i}").as_bytes())
            .finish();
        env.snap.apply(&key, &tar[..]).unwrap();
        let name = format!("sha256:{:064x}", i);
        env.snap.commit(&name, &key).unwrap();
        parent = Some(name);
    }
    let m = env.snap.prepare("top", parent.as_deref()).unwrap();
    let t = mnt(&env, "rootfs");
    let _g = MountGuard::mount(&m, &t).unwrap();
    assert_eq!(fs::read(t.join("layer-200")).unwrap(), b"content 200");
    assert_eq!(fs::read(t.join("layer-1")).unwrap(), b"content 1");
    let lower = m[0]
        .options
        .iter()
        .find(|o| o.starts_with("lowerdir="))
        .unwrap();
    assert_eq!(lower.split(':').count(), 200);
    assert!(
        m[0].cwd.is_some(),
        "absolute lowerdirs of 200 layers cannot fit a page"
    );
    let view = env.snap.view("v", parent.as_deref()).unwrap();
    let t2 = mnt(&env, "view");
    let _g2 = MountGuard::mount(&view, &t2).unwrap();
    assert_eq!(fs::read(t2.join("layer-1")).unwrap(), b"content 1");
}

#[test]
fn diff_round_trips_and_is_deterministic() {
    let base = RawTar::new()
        .dir("etc")
        .file("etc/a", b"a")
        .file("etc/modify", b"old")
        .file("etc/delete", b"bye")
        .dir("lib")
        .file("lib/x", b"x")
        .dir("lib/sub")
        .file("lib/sub/y", b"y")
        .finish();
    let env = Env::new();
    env.snap.prepare("b", None).unwrap();
    env.snap.apply("b", &base[..]).unwrap();
    env.snap.commit("base", "b").unwrap();
    env.snap.prepare("ctr", Some("base")).unwrap();
    {
        let t = mnt(&env, "rootfs");
        let _g = MountGuard::mount(&env.snap.mounts("ctr").unwrap(), &t).unwrap();
        fs::write(t.join("etc/new"), b"new file").unwrap();
        fs::write(t.join("etc/modify"), b"new content").unwrap();
        fs::remove_file(t.join("etc/delete")).unwrap();
        fs::remove_dir_all(t.join("lib")).unwrap();
        fs::create_dir(t.join("lib")).unwrap();
        fs::write(t.join("lib/only"), b"only").unwrap();
        fs::hard_link(t.join("etc/new"), t.join("etc/new-link")).unwrap();
        std::os::unix::fs::symlink("../etc/a", t.join("lib/ln")).unwrap();
        let long = t.join("d".repeat(120)).join("f".repeat(120));
        fs::create_dir_all(long.parent().unwrap()).unwrap();
        fs::write(&long, b"long").unwrap();
    }
    let mut tar1 = Vec::new();
    let d1 = env.snap.diff("ctr", &mut tar1).unwrap();
    let mut tar2 = Vec::new();
    let d2 = env.snap.diff("ctr", &mut tar2).unwrap();
    assert_eq!(d1, d2);
    assert_eq!(tar1, tar2);
    assert_eq!(d1.size, tar1.len() as u64);
    let mut names = Vec::new();
    for e in tar::Archive::new(&tar1[..]).entries().unwrap() {
        let e = e.unwrap();
        names.push(String::from_utf8_lossy(&e.path_bytes()).into_owned());
        assert!(e.header().username_bytes().is_none_or(|u| u.is_empty()));
    }
    for want in [
        "etc/.wh.delete",
        "lib/",
        "lib/.wh..wh..opq",
        "lib/only",
        "etc/new",
        "etc/new-link",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }

    // Apply onto the same parent in a fresh store: same upper tree, same merged tree.
    let env2 = Env::new();
    env2.snap.prepare("b", None).unwrap();
    env2.snap.apply("b", &base[..]).unwrap();
    env2.snap.commit("base", "b").unwrap();
    env2.snap.prepare("ctr", Some("base")).unwrap();
    let st = env2.snap.apply("ctr", &tar1[..]).unwrap();
    assert_eq!(st.digest, d1.digest);
    let up1 = env.snap.fs_dir("ctr").unwrap();
    let up2 = env2.snap.fs_dir("ctr").unwrap();
    assert_eq!(listing(&up1, true), listing(&up2, true));
    let (t1, t2) = (mnt(&env, "m1"), mnt(&env2, "m2"));
    let _g1 = MountGuard::mount(&env.snap.mounts("ctr").unwrap(), &t1).unwrap();
    let _g2 = MountGuard::mount(&env2.snap.mounts("ctr").unwrap(), &t2).unwrap();
    assert_eq!(merged(&t1), merged(&t2));
    assert!(!t2.join("etc/delete").exists() && !t2.join("lib/x").exists());
    // Diff of the re-applied snapshot gives the same layer again.
    let d3 = env2.snap.diff("ctr", std::io::sink()).unwrap();
    assert_eq!(d3, d1);
}

#[test]
fn check_finds_broken_chains_and_leftovers_and_cleanup_removes_leftovers() {
    let env = Env::new();
    let s = &env.snap;
    s.prepare("a", None).unwrap();
    s.commit("base", "a").unwrap();
    s.prepare("mid-a", Some("base")).unwrap();
    s.commit("mid", "mid-a").unwrap();
    s.prepare("c1", Some("mid")).unwrap();
    let r = s.check().unwrap();
    assert_eq!(r.snapshots, 3);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert!(r.leftovers.is_empty(), "{:?}", r.leftovers);

    // What crashed processes leave: a dir no record owns, a trash dir, a dangling link.
    fs::create_dir_all(env.root.join("999/fs")).unwrap();
    fs::create_dir_all(env.root.join("trash-7/fs")).unwrap();
    std::os::unix::fs::symlink("../998/fs", env.root.join("l/zz")).unwrap();
    let r = s.check().unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.leftovers.len(), 3, "{:?}", r.leftovers);
    s.cleanup().unwrap();
    let r = s.check().unwrap();
    assert!(r.leftovers.is_empty(), "{:?}", r.leftovers);

    // A parent deleted from the metadata behind the snapshotter's back.
    let meta_path = env.root.join("metadata.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&fs::read(&meta_path).unwrap()).unwrap();
    meta["snapshots"].as_object_mut().unwrap().remove("mid");
    fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let r = s.check().unwrap();
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(
        r.problems[0].contains("snapshot c1: its parent mid is missing"),
        "{:?}",
        r.problems
    );
    // mid's directory and link are now leftovers; c1 (which needs them) is broken,
    // and cleanup never touches a snapshot that is still recorded.
    assert_eq!(r.leftovers.len(), 2, "{:?}", r.leftovers);
    s.cleanup().unwrap();
    assert!(s.fs_dir("c1").unwrap().is_dir());
}
