//! `.dockerignore` files: the first line is a path to test, the rest the
//! file. Parsing and matching never panic.
#![no_main]

use berth_builder::DockerIgnore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (path, text) = s.split_once('\n').unwrap_or(("a/b", s));
    if let Ok(ig) = DockerIgnore::parse(text) {
        let _ = ig.patterns();
        let _ = ig.is_excluded(path);
        let _ = ig.is_excluded("Dockerfile");
        let _ = ig.is_excluded(".dockerignore");
    }
});
