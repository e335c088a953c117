//! Crafted-tarball corpus: every case must leave everything outside the snapshot root
//! unchanged, and is either refused with a clear error or confined. Needs root.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use berth_snapshotter::Error;
use common::{Env, RawTar};
use tar::EntryType;

/// Applies `tar` to a fresh active snapshot, checking the outside is unchanged.
fn apply(
    env: &Env,
    key: &str,
    parent: Option<&str>,
    tar: &[u8],
) -> (
    std::path::PathBuf,
    Result<berth_snapshotter::ApplyStats, Error>,
) {
    let before = env.outside_hash();
    let fs_dir = env.active(key, parent);
    let r = env.snap.apply(key, tar);
    assert_eq!(
        before,
        env.outside_hash(),
        "something outside the snapshot root changed"
    );
    (fs_dir, r)
}

fn refused(r: Result<berth_snapshotter::ApplyStats, Error>, needle: &str) -> String {
    let e = r.expect_err("layer should have been refused");
    let msg = e.to_string();
    assert!(
        msg.contains(needle),
        "error {msg:?} does not mention {needle:?}"
    );
    msg
}

#[test]
fn dotdot_path_is_refused() {
    let env = Env::new();
    let evil = format!("{}canary/evil", Env::up_to_tmp());
    let tar = RawTar::new()
        .file("ok", b"x")
        .file(&evil, b"pwned")
        .finish();
    let (_fs, r) = apply(&env, "k", None, &tar);
    let msg = refused(r, "climbs above the root");
    assert!(msg.contains("canary/evil"), "{msg}");
    assert!(!env.canary.join("evil").exists());
    assert!(!env.tmp.path().join("root/canary").exists());
    // Also `../../etc/x` literally.
    let env = Env::new();
    let (_fs, r) = apply(
        &env,
        "k",
        None,
        &RawTar::new().file("../../etc/x", b"pwned").finish(),
    );
    refused(r, "climbs above the root");
    assert!(!env.tmp.path().join("root/etc").exists());
}

#[test]
fn absolute_path_is_confined() {
    let env = Env::new();
    let host = format!("/etc/berth-snap-canary-{}", std::process::id());
    let tar = RawTar::new().file(&host, b"confined").finish();
    let (fs_dir, r) = apply(&env, "k", None, &tar);
    r.expect("absolute paths are confined, not refused");
    assert!(
        !std::path::Path::new(&host).exists(),
        "wrote to the host's /etc"
    );
    let inside = fs_dir.join(host.trim_start_matches('/'));
    assert_eq!(fs::read(inside).unwrap(), b"confined");
}

#[test]
fn symlink_to_etc_then_file_through_it_is_refused() {
    let env = Env::new();
    let canary_abs = env.canary.display().to_string();
    let tar = RawTar::new()
        .symlink("a", "/etc")
        .symlink("c", &canary_abs)
        .file("a/x", b"pwned")
        .finish();
    let (fs_dir, r) = apply(&env, "k", None, &tar);
    refused(r, "symlink");
    // The symlinks exist as data inside the root.
    assert_eq!(
        fs::read_link(fs_dir.join("a")).unwrap().to_str(),
        Some("/etc")
    );
    assert!(!std::path::Path::new("/etc/x").exists() || fs::read("/etc/x").unwrap() != b"pwned");
    // Through the symlink to the canary (absolute host path): refused as well.
    let env = Env::new();
    let tar = RawTar::new()
        .symlink("c", &canary_abs)
        .file("c/x", b"pwned")
        .finish();
    let (_fs, r) = apply(&env, "k", None, &tar);
    refused(r, "symlink");
    assert!(!env.canary.join("x").exists());
}

#[test]
fn symlink_chain_to_dotdot_is_refused() {
    let env = Env::new();
    let tar = RawTar::new()
        .symlink("d1", "..")
        .symlink("d2", "d1/..")
        .symlink("d3", "d2/../..")
        .file("d3/canary/evil", b"pwned")
        .finish();
    let (fs_dir, r) = apply(&env, "k", None, &tar);
    refused(r, "symlink");
    assert_eq!(
        fs::read_link(fs_dir.join("d3")).unwrap().to_str(),
        Some("d2/../..")
    );
    let env = Env::new();
    let tar = RawTar::new()
        .symlink("d1", "..")
        .file("d1/d1/d1/canary/evil", b"pwned")
        .finish();
    let (_fs, r) = apply(&env, "k", None, &tar);
    refused(r, "symlink");
    // A hardlink through the chain too.
    let env = Env::new();
    let tar = RawTar::new()
        .symlink("d1", "..")
        .hardlink("h", "d1/d1/d1/canary/file")
        .finish();
    let (_fs, r) = apply(&env, "k", None, &tar);
    refused(r, "symlink");
}

#[test]
fn hardlink_to_etc_passwd_is_refused() {
    let env = Env::new();
    let nlink = fs::metadata("/etc/passwd").unwrap().nlink();
    let tar = RawTar::new().hardlink("p", "/etc/passwd").finish();
    let (fs_dir, r) = apply(&env, "k", None, &tar);
    refused(r, "does not exist inside the layer root");
    assert!(fs::symlink_metadata(fs_dir.join("p")).is_err());
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), nlink);
    // Relative escape towards the canary.
    let env = Env::new();
    let t = format!("{}canary/file", Env::up_to_tmp());
    let (_fs, r) = apply(&env, "k", None, &RawTar::new().hardlink("p", &t).finish());
    refused(r, "climbs above the root");
    assert_eq!(fs::metadata(env.canary.join("file")).unwrap().nlink(), 1);
    // An etc/passwd created by the layer itself is a fine (confined) target.
    let env = Env::new();
    let tar = RawTar::new()
        .file("etc/passwd", b"inside\n")
        .hardlink("p", "/etc/passwd")
        .finish();
    let (fs_dir, r) = apply(&env, "k", None, &tar);
    r.unwrap();
    assert_eq!(fs::metadata(fs_dir.join("p")).unwrap().nlink(), 2);
    assert_eq!(fs::read(fs_dir.join("p")).unwrap(), b"inside\n");
}

#[test]
fn hardlink_to_escaping_symlink_is_confined() {
    let env = Env::new();
    let canary_file = env.canary.join("file").display().to_string();
    let tar = RawTar::new()
        .symlink("s", &canary_file)
        .symlink("s2", "../../../canary/file")
        .hardlink("h", "s")
        .hardlink("h2", "s2")
        .finish();
    let (fs_dir, r) = apply(&env, "k", None, &tar);
    r.expect("a hardlink to a symlink links the symlink itself");
    let h = fs::symlink_metadata(fs_dir.join("h")).unwrap();
    let s = fs::symlink_metadata(fs_dir.join("s")).unwrap();
    assert!(h.file_type().is_symlink());
    assert_eq!((h.ino(), h.nlink()), (s.ino(), 2));
    assert_eq!(
        fs::read_link(fs_dir.join("h2")).unwrap().to_str(),
        Some("../../../canary/file")
    );
    assert_eq!(fs::metadata(env.canary.join("file")).unwrap().nlink(), 1);
}

#[test]
fn file_over_escaping_symlink_replaces_the_link() {
    let env = Env::new();
    let canary_file = env.canary.join("file").display().to_string();
    let tar = RawTar::new()
        .symlink("s", &canary_file)
        .file("s", b"pwned")
        .finish();
    let (fs_dir, r) = apply(&env, "k", None, &tar);
    r.unwrap();
    let md = fs::symlink_metadata(fs_dir.join("s")).unwrap();
    assert!(md.is_file());
    assert_eq!(fs::read(fs_dir.join("s")).unwrap(), b"pwned");
    assert_eq!(fs::read(env.canary.join("file")).unwrap(), b"canary file\n");
}

#[test]
fn symlink_from_lower_layer_is_not_followed_by_upper_layer() {
    let env = Env::new();
    let canary_abs = env.canary.display().to_string();
    // Layer 1 (parent snapshot) plants symlinks.
    let l1 = RawTar::new()
        .symlink("lnk", &canary_abs)
        .symlink("up", "../../../canary")
        .finish();
    let (_fs1, r) = apply(&env, "l1", None, &l1);
    r.unwrap();
    env.snap.commit("layer1", "l1").unwrap();
    // Layer 2 is applied to the child's own upper dir: the lower symlinks are not there,
    // so `lnk/x` creates a real directory `lnk` in the upper dir (Docker semantics).
    let l2 = RawTar::new()
        .file("lnk/x", b"confined")
        .file("up/y", b"confined")
        .finish();
    let (fs2, r) = apply(&env, "l2", Some("layer1"), &l2);
    r.unwrap();
    assert!(fs::symlink_metadata(fs2.join("lnk")).unwrap().is_dir());
    assert_eq!(fs::read(fs2.join("lnk/x")).unwrap(), b"confined");
    assert!(!env.canary.join("x").exists() && !env.canary.join("y").exists());
    // Mounted, the upper dir hides the lower symlink.
    let mnt = env.tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let before = env.outside_hash();
    {
        let _g =
            berth_snapshotter::MountGuard::mount(&env.snap.mounts("l2").unwrap(), &mnt).unwrap();
        assert!(fs::symlink_metadata(mnt.join("lnk")).unwrap().is_dir());
        assert_eq!(fs::read(mnt.join("lnk/x")).unwrap(), b"confined");
    }
    assert_eq!(before, env.outside_hash());
    // Both entries in one tar: refused.
    let env = Env::new();
    let tar = RawTar::new()
        .symlink("lnk", &canary_abs)
        .file("lnk/x", b"pwned")
        .finish();
    let (_fs, r) = apply(&env, "k", None, &tar);
    refused(r, "symlink");
}

#[test]
fn name_over_path_max_is_refused() {
    let env = Env::new();
    let long = ["d"; 2100].join("/") + "/file";
    assert!(long.len() > 4096);
    let (fs_dir, r) = apply(&env, "k", None, &RawTar::new().file(&long, b"x").finish());
    refused(r, "PATH_MAX");
    assert!(!fs_dir.join("d").exists());
    // A single component over NAME_MAX.
    let env = Env::new();
    let (_fs, r) = apply(
        &env,
        "k",
        None,
        &RawTar::new().file(&"n".repeat(300), b"x").finish(),
    );
    refused(r, "NAME_MAX");
    // A symlink target over PATH_MAX.
    let env = Env::new();
    let (_fs, r) = apply(
        &env,
        "k",
        None,
        &RawTar::new().symlink("s", &"t/".repeat(2100)).finish(),
    );
    refused(r, "PATH_MAX");
}

#[test]
fn device_nodes_are_confined() {
    let env = Env::new();
    let tar = RawTar::new()
        .device("dev/null", EntryType::Char, 1, 3)
        .device("dev/loop9", EntryType::Block, 7, 9)
        .device("dev/fifo", EntryType::Fifo, 0, 0)
        .device("/dev/abs-null", EntryType::Char, 1, 3)
        .finish();
    let (fs_dir, r) = apply(&env, "k", None, &tar);
    r.unwrap();
    let md = fs::symlink_metadata(fs_dir.join("dev/null")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!(
        (
            nix::sys::stat::major(md.rdev()),
            nix::sys::stat::minor(md.rdev())
        ),
        (1, 3)
    );
    assert!(fs::symlink_metadata(fs_dir.join("dev/loop9"))
        .unwrap()
        .file_type()
        .is_block_device());
    assert!(fs::symlink_metadata(fs_dir.join("dev/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(fs::symlink_metadata(fs_dir.join("dev/abs-null"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(!std::path::Path::new("/dev/abs-null").exists());
    // A device aimed outside: refused.
    let env = Env::new();
    let tar = RawTar::new()
        .device("../../../canary/dev", EntryType::Char, 1, 3)
        .finish();
    let (_fs, r) = apply(&env, "k", None, &tar);
    refused(r, "climbs above the root");
}

#[test]
fn huge_sparse_header_is_refused() {
    const TB: u64 = 1 << 40;
    // GNU sparse entry claiming a 1 TB file, with only a few bytes of stream.
    let env = Env::new();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_path("sparse").unwrap();
    h.set_size(512);
    h.set_mode(0o644);
    {
        let g = h.as_gnu_mut().unwrap();
        g.sparse[0].offset = *b"00000000000\0";
        g.sparse[0].numbytes = *b"00000001000\0";
        // base-256 encoding: 1 TB does not fit the octal field
        g.realsize = [0; 12];
        g.realsize[0] = 0x80;
        g.realsize[4..].copy_from_slice(&TB.to_be_bytes());
    }
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[7u8; 100]); // truncated stream
    let (fs_dir, r) = apply(&env, "k", None, &tar);
    let e = r.expect_err("sparse entry must be refused");
    let msg = e.to_string();
    assert!(
        msg.contains("sparse") || msg.contains("truncated") || msg.contains("reading layer"),
        "{msg}"
    );
    assert!(fs::symlink_metadata(fs_dir.join("sparse")).is_err());
    // A regular entry declaring 1 TB with a truncated stream: clear error, no file left.
    let env = Env::new();
    let mut raw = RawTar::new();
    raw.entry(
        b"huge",
        EntryType::Regular,
        None,
        &[1u8; 4096],
        0o644,
        Some(TB),
        &[],
    );
    let (fs_dir, r) = apply(&env, "k", None, &raw.buf);
    let msg = refused(r, "truncated");
    assert!(msg.contains(&TB.to_string()), "{msg}");
    assert!(fs::symlink_metadata(fs_dir.join("huge")).is_err());
    assert!(env.snap.usage("k").unwrap().bytes < 1 << 20);
    // PAX-format GNU sparse: refused.
    let env = Env::new();
    let mut raw = RawTar::new();
    raw.entry(
        b"psparse",
        EntryType::Regular,
        None,
        b"",
        0o644,
        None,
        &[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.realsize", b"1099511627776"),
        ],
    );
    let (_fs, r) = apply(&env, "k", None, &raw.finish());
    refused(r, "sparse");
}

#[test]
fn dir_over_file_and_file_over_dir_follow_docker() {
    let env = Env::new();
    let tar = RawTar::new()
        .file("a", b"file")
        .dir("a")
        .file("a/in", b"x")
        .dir("b")
        .file("b/old", b"x")
        .file("b", b"now a file")
        .dir("c")
        .file("c/keep", b"k")
        .dir("c")
        .finish();
    let (fs_dir, r) = apply(&env, "k", None, &tar);
    r.unwrap();
    assert!(fs_dir.join("a").is_dir());
    assert_eq!(fs::read(fs_dir.join("b")).unwrap(), b"now a file");
    assert_eq!(fs::read(fs_dir.join("c/keep")).unwrap(), b"k");
}

#[test]
fn metadata_and_xattrs_are_applied() {
    let env = Env::new();
    let mut raw = RawTar::new();
    let cap = [
        1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    raw.entry(
        b"bin/ping",
        EntryType::Regular,
        None,
        b"elf",
        0o4755,
        None,
        &[
            ("SCHILY.xattr.security.capability", &cap),
            ("SCHILY.xattr.trusted.evil", b"1"),
            ("uid", b"1234"),
            ("gid", b"5678"),
        ],
    );
    raw.entry(b"tmp/", EntryType::Directory, None, b"", 0o1777, None, &[]);
    raw.file("tmp/f", b"x"); // changes tmp's mtime; it is restored at the end
    let (fs_dir, r) = apply(&env, "k", None, &raw.finish());
    let st = r.unwrap();
    let md = fs::symlink_metadata(fs_dir.join("bin/ping")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o4755);
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    assert_eq!(md.mtime(), 1_700_000_000);
    let tmp = fs::symlink_metadata(fs_dir.join("tmp")).unwrap();
    assert_eq!(tmp.mode() & 0o7777, 0o1777);
    assert_eq!(tmp.mtime(), 1_700_000_000);
    assert_eq!(st.skipped_xattrs_total, 1);
    assert!(
        st.skipped_xattrs[0].contains("trusted.evil"),
        "{:?}",
        st.skipped_xattrs
    );
    let l = common::tree_listing(&fs_dir).join("\n");
    assert!(
        l.contains("bin/ping mode=104755 uid=1234 gid=5678")
            && l.contains("x:security.capability="),
        "{l}"
    );
    assert!(!l.contains("trusted.evil"), "{l}");
}

/// Files get exactly the owner and mode their headers give, whatever the directory
/// they land in would give a new file (set-group-ID, default ACL, the umask), also
/// when that directory changes between its files.
#[test]
fn new_files_get_exactly_their_owner_and_mode() {
    let env = Env::new();
    // A default ACL granting "other" nothing: user::rwx group::r-x other::---.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(0x01u16, 7u16), (0x04, 5), (0x20, 0)] {
        acl.extend(tag.to_le_bytes());
        acl.extend(perm.to_le_bytes());
        acl.extend(u32::MAX.to_le_bytes());
    }
    let mut raw = RawTar::new();
    let file = |raw: &mut RawTar, path: &str, mode: u32, gid: &[u8]| {
        raw.entry(
            path.as_bytes(),
            EntryType::Regular,
            None,
            b"x",
            mode,
            None,
            &[("gid", gid)],
        );
    };
    raw.entry(
        b"sg/",
        EntryType::Directory,
        None,
        b"",
        0o2775,
        None,
        &[("gid", b"77")],
    );
    file(&mut raw, "sg/root", 0o644, b"0");
    file(&mut raw, "sg/group", 0o640, b"77");
    file(&mut raw, "sg/masked", 0o666, b"0");
    raw.entry(b"later/", EntryType::Directory, None, b"", 0o755, None, &[]);
    file(&mut raw, "later/before", 0o644, b"0");
    // The directory turns set-group-ID between its files.
    raw.entry(
        b"later/",
        EntryType::Directory,
        None,
        b"",
        0o2755,
        None,
        &[("gid", b"88")],
    );
    file(&mut raw, "later/after", 0o644, b"0");
    let acl_dir: &[(&str, &[u8])] = &[("SCHILY.xattr.system.posix_acl_default", &acl)];
    raw.entry(
        b"acl/",
        EntryType::Directory,
        None,
        b"",
        0o755,
        None,
        acl_dir,
    );
    file(&mut raw, "acl/f", 0o644, b"0");
    let (fs_dir, r) = apply(&env, "k", None, &raw.finish());
    r.unwrap();
    for (path, mode, gid) in [
        ("sg/root", 0o644, 0),
        ("sg/group", 0o640, 77),
        ("sg/masked", 0o666, 0),
        ("later/before", 0o644, 0),
        ("later/after", 0o644, 0),
        ("acl/f", 0o644, 0),
    ] {
        let md = fs::symlink_metadata(fs_dir.join(path)).unwrap();
        assert_eq!(
            (md.mode() & 0o7777, md.uid(), md.gid()),
            (mode, 0, gid),
            "{path}"
        );
    }
}

/// A directory replaced by a file cannot take the next files in its old place.
#[test]
fn file_under_a_replaced_directory_is_refused() {
    let env = Env::new();
    let tar = RawTar::new()
        .file("d/x", b"x")
        .file("d", b"now a file")
        .file("d/y", b"y")
        .finish();
    let (fs_dir, r) = apply(&env, "k", None, &tar);
    refused(r, "not a directory");
    assert_eq!(fs::read(fs_dir.join("d")).unwrap(), b"now a file");
}

#[test]
fn compressed_layers_are_detected_and_digest_is_of_uncompressed() {
    use sha2::Digest;
    let tar = RawTar::new().file("a", b"hello").finish();
    let want = format!("sha256:{}", common::hex(&sha2::Sha256::digest(&tar)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    for (i, data) in [tar.clone(), gz, zst].into_iter().enumerate() {
        let env = Env::new();
        let (fs_dir, r) = apply(&env, &format!("k{i}"), None, &data);
        let st = r.unwrap();
        assert_eq!(st.digest, want);
        assert_eq!(st.size, tar.len() as u64);
        assert_eq!(fs::read(fs_dir.join("a")).unwrap(), b"hello");
        // A reader that hands out a byte at a time: the magic is collected, not peeked.
        let env = Env::new();
        let fs_dir = env.active("slow", None);
        let st = env
            .snap
            .apply("slow", std::io::BufReader::with_capacity(1, &data[..]))
            .unwrap();
        assert_eq!(
            (st.digest.as_str(), st.size),
            (want.as_str(), tar.len() as u64)
        );
        assert_eq!(fs::read(fs_dir.join("a")).unwrap(), b"hello");
    }
}
