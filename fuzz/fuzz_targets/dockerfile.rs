//! Dockerfiles and variable expansion: parse, plan the stages (which expands
//! FROM lines with the global ARGs) and expand every line's text as a word.
//! None of it panics.
#![no_main]

use std::collections::BTreeMap;

use berth_builder::{expand, parse, plan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let lookup = |n: &str| match n {
        "A" => Some("a b".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    for line in s.lines().take(16) {
        let _ = expand(line, '\\', &lookup);
        let _ = expand(line, '`', &lookup);
    }
    if let Ok(df) = parse(s) {
        let mut args = BTreeMap::new();
        args.insert("A".to_string(), "x".to_string());
        let _ = plan(&df, None, &args);
        let _ = plan(&df, Some("a"), &BTreeMap::new());
    }
});
