//! Manifests, indexes and image configs from a registry or an archive: the
//! first byte picks the Content-Type the registry claimed; parsing, platform
//! selection and the config parse never panic.
#![no_main]

use berth_image_store::manifest::{parse_manifest, select_platform, Manifest};
use libfuzzer_sys::fuzz_target;
use oci_spec::image::ImageConfiguration;

const TYPES: &[Option<&str>] = &[
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("application/json"),
    Some("text/html"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let content_type = TYPES[usize::from(which) % TYPES.len()];
    match parse_manifest(body, content_type) {
        Ok(Manifest::Index(index)) => {
            let _ = select_platform(&index, "fuzz:latest");
        }
        Ok(_) | Err(_) => {}
    }
    let _ = serde_json::from_slice::<ImageConfiguration>(body);
});
