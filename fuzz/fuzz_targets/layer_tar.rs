//! Layer tar streams through the real unpack (`berth_snapshotter::apply_layer`)
//! into a temporary root. Nothing may land outside it: the root sits four
//! directories deep in a scratch directory whose only other entry is a
//! sentinel file, and after every input the scratch tree must hold exactly
//! that chain, the root and the unchanged sentinel.
//!
//! Input: `Raw` bytes are a whole (maybe compressed) layer, as seeds from real
//! images are; `Entries` builds a tar whose header names and link targets are
//! written raw, so `..`, absolute paths, symlink and hardlink tricks and
//! whiteouts are all reachable.
#![no_main]

use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(Vec<u8>),
    Entries(Vec<Entry>),
}

#[derive(Arbitrary, Debug)]
struct Entry {
    kind: Kind,
    name: Vec<u8>,
    link: Vec<u8>,
    mode: u16,
    data: Vec<u8>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Fifo,
    Char,
    Other(u8),
}

fn header_bytes(e: &Entry) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    let (kind, size) = match e.kind {
        Kind::File => (tar::EntryType::Regular, e.data.len()),
        Kind::Dir => (tar::EntryType::Directory, 0),
        Kind::Symlink => (tar::EntryType::Symlink, 0),
        Kind::Hardlink => (tar::EntryType::Link, 0),
        Kind::Fifo => (tar::EntryType::Fifo, 0),
        Kind::Char => (tar::EntryType::Char, 0),
        Kind::Other(b) => (tar::EntryType::new(b), e.data.len()),
    };
    h.set_entry_type(kind);
    h.set_size(size as u64);
    h.set_mode(u32::from(e.mode) & 0o7777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    let mut raw = *h.as_bytes();
    let name = &e.name[..e.name.len().min(100)];
    raw[..100].fill(0);
    raw[..name.len()].copy_from_slice(name);
    let link = &e.link[..e.link.len().min(100)];
    raw[157..257].fill(0);
    raw[157..157 + link.len()].copy_from_slice(link);
    // checksum: the sum of the header with the checksum field as spaces
    raw[148..156].fill(b' ');
    let sum: u32 = raw.iter().map(|&b| u32::from(b)).sum();
    let field = format!("{sum:06o}\0 ");
    raw[148..156].copy_from_slice(field.as_bytes());
    raw
}

fn build_tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries.iter().take(64) {
        out.extend_from_slice(&header_bytes(e));
        if matches!(e.kind, Kind::File | Kind::Other(_)) {
            out.extend_from_slice(&e.data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Every path under `dir`, relative, sorted; symlinks are not followed.
fn tree(dir: &Path, base: &Path, out: &mut Vec<String>) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        out.push(p.strip_prefix(base).unwrap().display().to_string());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            tree(&p, base, out);
        }
    }
}

/// The scratch tree, made once per process in `$BERTH_FUZZ_SCRATCH` (which
/// `cargo xtask fuzz` points at a tmpfs and removes afterwards: a process
/// that libFuzzer ends runs no destructors), else on /dev/shm. Directory
/// churn on a disk file system is most of the cost otherwise.
fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let parent = std::env::var_os("BERTH_FUZZ_SCRATCH")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "/dev/shm".into());
        let dir = tempfile::Builder::new()
            .prefix("berth-fuzz-layer-")
            .tempdir_in(&parent)
            .or_else(|_| tempfile::tempdir())
            .expect("scratch dir");
        fs::create_dir_all(dir.path().join("a/b/c")).expect("create scratch tree");
        fs::write(dir.path().join("a/b/c/sentinel"), b"keep").expect("sentinel");
        fs::write(dir.path().join("a/sentinel"), b"keep").expect("sentinel");
        dir
    })
}

fuzz_target!(|input: Input| {
    let layer = match &input {
        Input::Raw(b) => b.clone(),
        Input::Entries(e) => build_tar(e),
    };
    let base = scratch().path();
    let root = base.join("a/b/c/root");
    fs::create_dir(&root).expect("create root");
    let _ = berth_snapshotter::apply_layer(&root, layer.as_slice());

    let mut outside = Vec::new();
    tree(base, base, &mut outside);
    outside.retain(|p| !p.starts_with("a/b/c/root/"));
    outside.sort();
    assert_eq!(
        outside,
        [
            "a",
            "a/b",
            "a/b/c",
            "a/b/c/root",
            "a/b/c/sentinel",
            "a/sentinel"
        ],
        "the layer wrote outside its root"
    );
    for s in ["a/b/c/sentinel", "a/sentinel"] {
        assert_eq!(fs::read(base.join(s)).unwrap(), b"keep", "{s} changed");
    }
    // The root itself must still be a directory, not replaced by a link.
    let md = fs::symlink_metadata(&root).expect("root still exists");
    assert!(md.is_dir(), "the root was replaced");
    fs::remove_dir_all(&root).expect("remove root");
});
