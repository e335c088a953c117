//! `berth run` flags: `-v`, `--mount` and `-p` specs. The first byte picks
//! the parser; none of them panics, and an accepted `-v`/`--mount` has an
//! absolute, normalised target.
#![no_main]

use std::path::{Component, Path};

use berth_netns_bridge::parse_port_spec;
use berth_volumes::{parse_mount_flag, parse_volume_flag, MountSpec};
use libfuzzer_sys::fuzz_target;

fn check_target(raw: &str, spec: &MountSpec) {
    let t = spec.clean_target();
    assert!(t.is_absolute(), "{raw:?}: relative target {t:?}");
    assert!(
        !t.components().any(|c| c == Component::ParentDir),
        "{raw:?}: target {t:?} has '..'"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(spec) = parse_volume_flag(s, Path::new("/work/dir")) {
                check_target(s, &spec);
            }
        }
        1 => {
            if let Ok(spec) = parse_mount_flag(s) {
                check_target(s, &spec);
            }
        }
        _ => {
            let _ = parse_port_spec(s);
        }
    }
});
