//! A tiny static probe run inside containers by `integration/tests/escape.rs`.
//! It makes raw system calls busybox cannot make and prints what the kernel
//! answered, one `NAME: RESULT` line each (RESULT is `ok` or an errno name).
//! Built by the test with `rustc -C target-feature=+crt-static`, no crates.

use std::ffi::CString;
use std::io::Error;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

extern "C" {
    fn syscall(n: i64, ...) -> i64;
}

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const MOUNT: i64 = 165;
    pub const UNSHARE: i64 = 272;
    pub const KEYCTL: i64 = 250;
    pub const ADD_KEY: i64 = 248;
    pub const BPF: i64 = 321;
    pub const PERF_EVENT_OPEN: i64 = 298;
    pub const KEXEC_LOAD: i64 = 246;
    pub const OPEN_BY_HANDLE_AT: i64 = 304;
    pub const MKNODAT: i64 = 259;
    pub const OPENAT: i64 = 257;
}
#[cfg(target_arch = "aarch64")]
mod nr {
    pub const MOUNT: i64 = 40;
    pub const UNSHARE: i64 = 97;
    pub const KEYCTL: i64 = 219;
    pub const ADD_KEY: i64 = 217;
    pub const BPF: i64 = 280;
    pub const PERF_EVENT_OPEN: i64 = 241;
    pub const KEXEC_LOAD: i64 = 104;
    pub const OPEN_BY_HANDLE_AT: i64 = 265;
    pub const MKNODAT: i64 = 33;
    pub const OPENAT: i64 = 56;
}

const AT_FDCWD: i64 = -100;

fn errno_name(e: i32) -> String {
    match e {
        1 => "EPERM".into(),
        2 => "ENOENT".into(),
        13 => "EACCES".into(),
        14 => "EFAULT".into(),
        22 => "EINVAL".into(),
        26 => "ETXTBSY".into(),
        30 => "EROFS".into(),
        38 => "ENOSYS".into(),
        95 => "EOPNOTSUPP".into(),
        101 => "ENETUNREACH".into(),
        111 => "ECONNREFUSED".into(),
        n => format!("E{n}"),
    }
}

fn report(name: &str, ret: i64) {
    if ret < 0 {
        let e = Error::last_os_error().raw_os_error().unwrap_or(0);
        println!("{name}: {}", errno_name(e));
    } else {
        println!("{name}: ok");
    }
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// One system call by name, with arguments that reach the kernel's own
/// checks when the call is allowed (null pointers give EFAULT, not EPERM).
fn sys(name: &str) {
    let null = std::ptr::null::<u8>();
    // SAFETY: each call passes valid or null pointers the kernel checks.
    let ret = unsafe {
        match name {
            "mount" => {
                let (src, dst, ty) = (c("none"), c("/tmp"), c("tmpfs"));
                syscall(nr::MOUNT, src.as_ptr(), dst.as_ptr(), ty.as_ptr(), 0i64, null)
            }
            "unshare-user" => syscall(nr::UNSHARE, 0x1000_0000i64),
            "unshare-mnt" => syscall(nr::UNSHARE, 0x0002_0000i64),
            "keyctl" => syscall(nr::KEYCTL, 1i64, null),
            "add_key" => {
                let (ty, desc) = (c("user"), c("probe"));
                syscall(nr::ADD_KEY, ty.as_ptr(), desc.as_ptr(), null, 0i64, -4i64)
            }
            "bpf" => syscall(nr::BPF, 5i64, null, 0i64),
            "perf_event_open" => syscall(nr::PERF_EVENT_OPEN, null, 0i64, -1i64, -1i64, 0i64),
            "kexec_load" => syscall(nr::KEXEC_LOAD, 0i64, 0i64, null, 0i64),
            "open_by_handle_at" => syscall(nr::OPEN_BY_HANDLE_AT, AT_FDCWD, null, 0i64),
            other => {
                println!("{other}: unknown");
                return;
            }
        }
    };
    report(name, ret);
}

/// mknod a block device for the host's first disk (8:0), then open it.
fn mknod_open() {
    let path = c("/tmp/probe-sda");
    let dev = (8u64 << 8) | 0;
    // SAFETY: valid C string; mknodat does not keep the pointer.
    let ret = unsafe { syscall(nr::MKNODAT, AT_FDCWD, path.as_ptr(), 0o060600i64, dev) };
    report("mknod", ret);
    // SAFETY: as above.
    let ret = unsafe { syscall(nr::OPENAT, AT_FDCWD, path.as_ptr(), 0i64) };
    report("open-device", ret);
}

/// This process's descriptors, with their targets (the directory fd used
/// to read /proc/self/fd is left out).
fn fds() {
    let entries: Vec<_> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .collect();
    for e in entries {
        let n = e.file_name();
        if let Ok(t) = std::fs::read_link(e.path()) {
            if t.starts_with("/proc") && t.ends_with("fd") {
                continue;
            }
            println!("fd {}: {}", n.to_string_lossy(), t.display());
        }
    }
}

/// For SECS seconds, look at every process's /proc/PID/exe; print any whose
/// file is (DEV, INO) and whether it opens for writing.
fn exe_scan(dev: u64, ino: u64, secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut looked = 0u64;
    while Instant::now() < until {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let name = e.file_name();
            if !name.as_bytes().iter().all(u8::is_ascii_digit) {
                continue;
            }
            let exe = e.path().join("exe");
            looked += 1;
            if let Ok(md) = std::fs::metadata(&exe) {
                if md.dev() == dev && md.ino() == ino {
                    let w = std::fs::OpenOptions::new().write(true).open(&exe);
                    println!(
                        "reached: pid {} write: {}",
                        name.to_string_lossy(),
                        match w {
                            Ok(_) => "ok".to_string(),
                            Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
                        }
                    );
                }
            }
        }
    }
    println!("looked: {looked}");
}

fn connect(addr: &str) {
    match std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)) {
        Ok(_) => println!("connect: ok"),
        Err(e) => println!(
            "connect: {}",
            e.raw_os_error()
                .map_or_else(|| e.kind().to_string(), errno_name)
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["sys", names @ ..] => names.iter().for_each(|n| sys(n)),
        ["mknod-open"] => mknod_open(),
        ["fds"] => fds(),
        ["exe-scan", dev, ino, secs] => {
            exe_scan(dev.parse().unwrap(), ino.parse().unwrap(), secs.parse().unwrap())
        }
        ["connect", addr] => connect(addr),
        _ => {
            eprintln!("usage: probe sys NAME... | mknod-open | fds | exe-scan DEV INO SECS | connect ADDR");
            std::process::exit(2);
        }
    }
}
