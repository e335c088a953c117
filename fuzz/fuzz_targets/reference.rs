//! Image references (`berth pull NAME`, FROM lines, `tag`): parsing never
//! panics, and a parsed reference prints to a string that parses back to it.
#![no_main]

use berth_image_store::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = Reference::parse(s) {
        let printed = r.to_string();
        let again = Reference::parse(&printed)
            .unwrap_or_else(|e| panic!("{s:?} parsed to {printed:?}, which does not parse: {e}"));
        assert_eq!(again.to_string(), printed, "not a fixed point for {s:?}");
    }
});
