//! Registry `WWW-Authenticate` headers: parsing never panics.
#![no_main]

use berth_image_store::registry::parse_www_authenticate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_www_authenticate(s);
    }
});
