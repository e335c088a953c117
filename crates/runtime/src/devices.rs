//! Device access rules (`linux.resources.devices`): which device nodes a
//! container may create (`m`), read (`r`) and write (`w`).
//!
//! As runc does, the spec's rules are followed by a fixed list every
//! container needs (mknod of any node, the null/zero/full/random/urandom/tty
//! nodes the runtime creates, the pty devices, tun), and a device no rule
//! matches is refused; the last matching rule decides. On cgroup v1 the rules
//! are written, in order, to `devices.deny`/`devices.allow` after a deny-all
//! (or allow-all, when the first rule is one); there the kernel keeps a list
//! of exceptions, so a deny after a wider allow only takes away an exception
//! that matches it exactly. An `update` whose rules the cgroup already has
//! writes nothing (a rewrite would deny everything for a moment). Inside a
//! user namespace the rules are skipped, as runc does: the kernel lets only
//! the initial namespace's root set them. On cgroup v2 there are no such
//! files: the rules become a small eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE`, attached to the container's cgroup with
//! `BPF_F_ALLOW_MULTI` (so nested containers can add their own); programs this
//! runtime attached before to the same cgroup are detached once the new one is
//! in place.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// Access bits, as the kernel's `BPF_DEVCG_ACC_*`.
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// Device types, as the kernel's `BPF_DEVCG_DEV_*`.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

/// Which devices a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Character and block devices.
    All,
    /// Character devices.
    Char,
    /// Block devices.
    Block,
}

/// One rule, normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Allow (true) or deny.
    pub allow: bool,
    /// Device type.
    pub kind: Kind,
    /// Major number, None for any.
    pub major: Option<i64>,
    /// Minor number, None for any.
    pub minor: Option<i64>,
    /// `ACC_*` bits.
    pub access: u32,
}

impl Rule {
    const fn char(major: i64, minor: Option<i64>) -> Rule {
        Rule {
            allow: true,
            kind: Kind::Char,
            major: Some(major),
            minor,
            access: ACC_ALL,
        }
    }

    /// Whether it matches every device and every access.
    fn is_wildcard(&self) -> bool {
        self.kind == Kind::All
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == ACC_ALL
    }

    /// The v1 `devices.allow`/`devices.deny` line (`c 1:3 rwm`).
    fn v1_line(&self) -> String {
        let num = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
        let kind = match self.kind {
            Kind::All => 'a',
            Kind::Char => 'c',
            Kind::Block => 'b',
        };
        let mut access = String::new();
        for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if self.access & bit != 0 {
                access.push(c);
            }
        }
        format!("{kind} {}:{} {access}", num(self.major), num(self.minor))
    }
}

/// What every container may use besides its spec's rules (runc's list).
const ALWAYS_ALLOWED: &[Rule] = &[
    Rule {
        allow: true,
        kind: Kind::Char,
        major: None,
        minor: None,
        access: ACC_MKNOD,
    },
    Rule {
        allow: true,
        kind: Kind::Block,
        major: None,
        minor: None,
        access: ACC_MKNOD,
    },
    Rule::char(1, Some(3)),    // null
    Rule::char(1, Some(5)),    // zero
    Rule::char(1, Some(7)),    // full
    Rule::char(1, Some(8)),    // random
    Rule::char(1, Some(9)),    // urandom
    Rule::char(5, Some(0)),    // tty
    Rule::char(5, Some(2)),    // ptmx
    Rule::char(136, None),     // pts
    Rule::char(10, Some(200)), // tun (runc allows it again since 1.2.1)
];

/// Parse an access string (`rwm`, any order); an empty one means all.
fn parse_access(s: &str) -> Result<u32, String> {
    if s.is_empty() {
        return Ok(ACC_ALL);
    }
    let mut bits = 0;
    for c in s.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => return Err(format!("invalid device access {s:?}: use r, w and m")),
        };
    }
    Ok(bits)
}

/// The rules to enforce: the spec's, then the fixed list every container gets.
pub fn rules(spec: &[LinuxDeviceCgroup]) -> Result<Vec<Rule>, String> {
    let mut out = Vec::with_capacity(spec.len() + ALWAYS_ALLOWED.len());
    for r in spec {
        let kind = match r.typ() {
            None | Some(LinuxDeviceType::A) => Kind::All,
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Kind::Char,
            Some(LinuxDeviceType::B) => Kind::Block,
            // Fifos are not devices: the cgroup never asks about them.
            Some(LinuxDeviceType::P) => continue,
        };
        // A negative number means any (as some tools write -1).
        let number = |n: Option<i64>| match n {
            Some(n) if n < 0 => Ok(None),
            Some(n) if n > i32::MAX as i64 => Err(format!("device number {n} is out of range")),
            n => Ok(n),
        };
        out.push(Rule {
            allow: r.allow(),
            kind,
            major: number(r.major())?,
            minor: number(r.minor())?,
            access: parse_access(r.access().as_deref().unwrap_or(""))?,
        });
    }
    out.extend_from_slice(ALWAYS_ALLOWED);
    Ok(out)
}

/// Whether `rules` let a device of `kind` (Char or Block) `major:minor` be
/// opened for `access`: the last matching rule decides, none means no.
pub fn allows(rules: &[Rule], kind: Kind, major: i64, minor: i64, access: u32) -> bool {
    rules
        .iter()
        .rev()
        .find(|r| {
            (r.kind == Kind::All || r.kind == kind)
                && r.major.is_none_or(|m| m == major)
                && r.minor.is_none_or(|m| m == minor)
                && access & !r.access == 0
        })
        .is_some_and(|r| r.allow)
}

/// The lines `devices.list` shows once `rules` are written (allow-all is
/// `a *:* rwm`), sorted.
fn v1_list(rules: &[Rule]) -> Vec<String> {
    if rules.first().is_some_and(|r| r.is_wildcard() && r.allow) {
        return vec!["a *:* rwm".to_string()];
    }
    let mut lines: Vec<String> = rules
        .iter()
        .filter(|r| r.allow && !r.is_wildcard())
        .map(Rule::v1_line)
        .collect();
    lines.sort();
    lines.dedup();
    lines
}

/// Whether the v1 devices cgroup `dir` already enforces `rules` (only
/// allows are compared: with denies the list is not predictable).
pub fn v1_has(dir: &Path, rules: &[Rule]) -> bool {
    if rules.iter().skip(1).any(|r| !r.allow) {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(dir.join("devices.list")) else {
        return false;
    };
    let mut have: Vec<String> = text.lines().map(str::to_string).collect();
    have.sort();
    have.dedup();
    have == v1_list(rules)
}

/// Whether this process runs in a user namespace other than the initial one.
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
        .unwrap_or(false)
}

/// Write `rules` to a v1 devices cgroup directory.
pub fn apply_v1(
    dir: &Path,
    rules: &[Rule],
) -> Result<(), (std::path::PathBuf, String, std::io::Error)> {
    let write = |file: &str, line: &str| {
        let path = dir.join(file);
        std::fs::write(&path, line).map_err(|e| (path, line.to_string(), e))
    };
    let mut rest = rules;
    match rules.first() {
        Some(r) if r.is_wildcard() => {
            write(
                if r.allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                },
                "a",
            )?;
            rest = &rules[1..];
        }
        _ => write("devices.deny", "a")?,
    }
    for r in rest {
        let file = if r.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        if r.kind == Kind::All && (r.major.is_some() || r.minor.is_some() || r.access != ACC_ALL) {
            // The kernel takes `a` only as "everything": spell it per type.
            for kind in [Kind::Char, Kind::Block] {
                write(file, &Rule { kind, ..*r }.v1_line())?;
            }
        } else if r.is_wildcard() {
            write(file, "a")?;
        } else {
            write(file, &r.v1_line())?;
        }
    }
    Ok(())
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes used (BPF_CLASS | BPF_OP | BPF_SRC).
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// The eBPF program deciding like [`allows`]: r2 = type, r3 = access,
/// r4 = major, r5 = minor from `struct bpf_cgroup_dev_ctx`; then one block
/// per rule, last rule first, each returning its verdict when every test
/// passes and jumping to the next block otherwise; no match returns 0. A
/// rule that matches everything ends the program (the verifier refuses
/// unreachable instructions).
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut prog = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        // Tests as (instructions before the jump, register, value); each
        // jump skips to the end of the block when its register differs.
        let mut tests: Vec<(Vec<Insn>, u8, i32)> = Vec::new();
        match r.kind {
            Kind::All => {}
            Kind::Char => tests.push((vec![], 2, DEV_CHAR)),
            Kind::Block => tests.push((vec![], 2, DEV_BLOCK)),
        }
        if r.access != ACC_ALL {
            let denied = (ACC_ALL & !r.access) as i32;
            tests.push((
                vec![insn(MOV_X, 6, 3, 0, 0), insn(AND_K, 6, 0, 0, denied)],
                6,
                0,
            ));
        }
        if let Some(m) = r.major {
            tests.push((vec![], 4, m as i32));
        }
        if let Some(m) = r.minor {
            tests.push((vec![], 5, m as i32));
        }
        if tests.is_empty() {
            prog.push(insn(MOV_K, 0, 0, 0, r.allow as i32));
            prog.push(insn(EXIT, 0, 0, 0, 0));
            return prog;
        }
        let len: usize = tests.iter().map(|(pre, _, _)| pre.len() + 1).sum::<usize>() + 2;
        let mut written = 0;
        for (pre, reg, value) in tests {
            written += pre.len() + 1;
            prog.extend(pre);
            prog.push(insn(JNE_K, reg, 0, (len - written) as i16, value));
        }
        prog.push(insn(MOV_K, 0, 0, 0, r.allow as i32));
        prog.push(insn(EXIT, 0, 0, 0, 0));
    }
    prog.push(insn(MOV_K, 0, 0, 0, 0));
    prog.push(insn(EXIT, 0, 0, 0, 0));
    prog
}

// bpf(2) commands and constants.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr`, as large as the parts used here need (the kernel takes
/// a shorter one, zeros beyond it).
#[repr(C, align(8))]
struct Attr([u32; 32]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 32])
    }

    fn set_u64(&mut self, word: usize, v: u64) {
        self.0[word] = v as u32;
        self.0[word + 1] = (v >> 32) as u32;
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<i64> {
    // SAFETY: bpf(2) with an attribute block of the size given, that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Ids of the device programs attached to the cgroup `dir` itself.
fn attached(dir: &OwnedFd) -> std::io::Result<Vec<u32>> {
    let mut ids = [0u32; 64];
    let mut a = Attr::new();
    a.0[0] = dir.as_raw_fd() as u32; // target_fd
    a.0[1] = BPF_CGROUP_DEVICE; // attach_type
    a.set_u64(4, ids.as_mut_ptr() as u64); // prog_ids
    a.0[6] = ids.len() as u32; // prog_cnt
    bpf(BPF_PROG_QUERY, &mut a)?;
    let n = (a.0[6] as usize).min(ids.len());
    Ok(ids[..n].to_vec())
}

/// Load `rules` as a device program and attach it to the v2 cgroup `dir`,
/// then detach the device programs that were attached there before.
pub fn apply_v2(dir: &Path, rules: &[Rule]) -> std::io::Result<()> {
    let step = |what: &'static str| {
        move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{what}: {e}"))
    };
    let cgroup: OwnedFd = File::open(dir).map_err(step("open the cgroup"))?.into();
    let before = attached(&cgroup).map_err(step("BPF_PROG_QUERY"))?;
    let insns = program(rules);
    let license = c"Apache-2.0";
    let mut a = Attr::new();
    a.0[0] = BPF_PROG_TYPE_CGROUP_DEVICE;
    a.0[1] = insns.len() as u32;
    a.set_u64(2, insns.as_ptr() as u64);
    a.set_u64(4, license.as_ptr() as u64);
    let fd = bpf(BPF_PROG_LOAD, &mut a).map_err(step("BPF_PROG_LOAD"))?;
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut a = Attr::new();
    a.0[0] = cgroup.as_raw_fd() as u32; // target_fd
    a.0[1] = prog.as_raw_fd() as u32; // attach_bpf_fd
    a.0[2] = BPF_CGROUP_DEVICE;
    a.0[3] = BPF_F_ALLOW_MULTI;
    bpf(BPF_PROG_ATTACH, &mut a).map_err(step("BPF_PROG_ATTACH"))?;
    for id in before {
        let mut a = Attr::new();
        a.0[0] = id;
        let Ok(fd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut a) else {
            continue;
        };
        // SAFETY: as above, a new descriptor of ours.
        let old = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut a = Attr::new();
        a.0[0] = cgroup.as_raw_fd() as u32;
        a.0[1] = old.as_raw_fd() as u32;
        a.0[2] = BPF_CGROUP_DEVICE;
        bpf(BPF_PROG_DETACH, &mut a).map_err(step("BPF_PROG_DETACH"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_rule(
        allow: bool,
        typ: Option<LinuxDeviceType>,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(allow);
        r.set_typ(typ);
        r.set_major(major);
        r.set_minor(minor);
        r.set_access(Some(access.to_string()));
        r
    }

    #[test]
    fn last_matching_rule_decides_and_defaults_are_added() {
        let rules = rules(&[
            spec_rule(false, None, None, None, "rwm"),
            spec_rule(true, Some(LinuxDeviceType::C), Some(10), None, "rw"),
            spec_rule(false, Some(LinuxDeviceType::C), Some(10), Some(201), "w"),
        ])
        .unwrap();
        assert!(
            allows(&rules, Kind::Char, 1, 3, ACC_READ | ACC_WRITE),
            "null"
        );
        assert!(allows(&rules, Kind::Char, 136, 7, ACC_ALL), "pts");
        assert!(!allows(&rules, Kind::Char, 4, 1, ACC_READ), "tty1");
        assert!(!allows(&rules, Kind::Block, 8, 0, ACC_READ), "a disk");
        assert!(
            allows(&rules, Kind::Block, 8, 0, ACC_MKNOD),
            "mknod is allowed"
        );
        assert!(allows(&rules, Kind::Char, 10, 229, ACC_READ | ACC_WRITE));
        assert!(
            !allows(&rules, Kind::Char, 10, 229, ACC_MKNOD | ACC_READ),
            "m was not given"
        );
        assert!(allows(&rules, Kind::Char, 10, 201, ACC_READ));
        assert!(
            !allows(&rules, Kind::Char, 10, 201, ACC_WRITE),
            "a later deny wins"
        );
        let all = rules_of_privileged();
        assert!(allows(&all, Kind::Block, 8, 0, ACC_ALL));
    }

    fn rules_of_privileged() -> Vec<Rule> {
        rules(&[spec_rule(true, None, None, None, "rwm")]).unwrap()
    }

    #[test]
    fn bad_access_is_refused() {
        assert!(rules(&[spec_rule(true, None, None, None, "rx")]).is_err());
    }

    #[test]
    fn v1_lines() {
        let r = rules(&[]).unwrap();
        assert_eq!(r[0].v1_line(), "c *:* m");
        assert_eq!(r[2].v1_line(), "c 1:3 rwm");
        assert_eq!(r[r.len() - 2].v1_line(), "c 136:* rwm");
        assert_eq!(r.last().unwrap().v1_line(), "c 10:200 rwm");
    }

    #[test]
    fn v1_has_compares_the_allow_list() {
        let dir = std::env::temp_dir().join(format!("berth-devices-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let want = rules(&[spec_rule(false, None, None, None, "rwm")]).unwrap();
        let lines: Vec<String> = want.iter().skip(1).map(Rule::v1_line).rev().collect();
        std::fs::write(dir.join("devices.list"), lines.join("\n") + "\n").unwrap();
        assert!(v1_has(&dir, &want));
        std::fs::write(dir.join("devices.list"), "a *:* rwm\n").unwrap();
        assert!(!v1_has(&dir, &want));
        assert!(v1_has(&dir, &rules_of_privileged()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Runs the generated program on a context, as the kernel would.
    fn run(prog: &[Insn], kind: i32, access: u32, major: u32, minor: u32) -> bool {
        let ctx = [(access << 16) | kind as u32, major, minor];
        let mut reg = [0u64; 11];
        let mut pc = 0;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => {
                    assert_eq!(src, 1);
                    reg[dst] = ctx[i.off as usize / 4] as u64;
                }
                AND_K => reg[dst] &= i.imm as i64 as u64,
                RSH_K => reg[dst] >>= i.imm,
                MOV_K => reg[dst] = i.imm as i64 as u64,
                MOV_X => reg[dst] = reg[src],
                JNE_K => {
                    if reg[dst] != i.imm as i64 as u64 {
                        pc = (pc as i64 + i.off as i64) as usize;
                    }
                }
                EXIT => return reg[0] == 1,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    /// Every instruction can be reached from the first (the verifier
    /// refuses a program where one cannot).
    fn assert_all_reachable(prog: &[Insn]) {
        let mut seen = vec![false; prog.len()];
        let mut todo = vec![0usize];
        while let Some(pc) = todo.pop() {
            if pc >= prog.len() || std::mem::replace(&mut seen[pc], true) {
                continue;
            }
            match prog[pc].code {
                EXIT => {}
                JNE_K => todo.extend([pc + 1, (pc as i64 + 1 + prog[pc].off as i64) as usize]),
                _ => todo.push(pc + 1),
            }
        }
        assert!(
            seen.iter().all(|s| *s),
            "unreachable instructions: {seen:?}"
        );
    }

    #[test]
    fn program_agrees_with_the_rules() {
        let rules = rules(&[
            spec_rule(false, None, None, None, "rwm"),
            spec_rule(true, Some(LinuxDeviceType::C), Some(10), None, "rw"),
            spec_rule(false, Some(LinuxDeviceType::C), Some(10), Some(201), "w"),
            spec_rule(true, Some(LinuxDeviceType::B), Some(7), Some(0), "r"),
        ])
        .unwrap();
        let prog = program(&rules);
        assert_all_reachable(&prog);
        assert_all_reachable(&program(&rules_of_privileged()));
        assert_all_reachable(&program(&super::rules(&[]).unwrap()));
        for (kind, dk) in [(Kind::Char, DEV_CHAR), (Kind::Block, DEV_BLOCK)] {
            for major in [1, 4, 5, 7, 8, 10, 136] {
                for minor in [0, 1, 2, 3, 5, 7, 9, 200, 201, 229] {
                    for access in 1..=ACC_ALL {
                        assert_eq!(
                            run(&prog, dk, access, major, minor),
                            allows(&rules, kind, major as i64, minor as i64, access),
                            "{kind:?} {major}:{minor} access {access}"
                        );
                    }
                }
            }
        }
        let all = program(&rules_of_privileged());
        assert!(run(&all, DEV_BLOCK, ACC_ALL, 8, 0));
    }
}
