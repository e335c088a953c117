//! Manifests and indexes (OCI and Docker schema2), media types and platform selection.

use crate::digest::Digest;
use crate::error::{Error, Result};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

/// OCI image manifest.
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI layer, uncompressed tar.
pub const MEDIA_TYPE_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip-compressed tar.
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd-compressed tar.
pub const MEDIA_TYPE_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI non-distributable layer, uncompressed tar.
pub const MEDIA_TYPE_OCI_LAYER_NONDIST_TAR: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// OCI non-distributable layer, gzip.
pub const MEDIA_TYPE_OCI_LAYER_NONDIST_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// OCI non-distributable layer, zstd.
pub const MEDIA_TYPE_OCI_LAYER_NONDIST_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
/// Docker image manifest, schema 2.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer, gzip-compressed tar.
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker layer, uncompressed tar.
pub const MEDIA_TYPE_DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker foreign (non-distributable) layer, gzip.
pub const MEDIA_TYPE_DOCKER_FOREIGN_LAYER: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker schema 1 manifests (refused).
pub const MEDIA_TYPE_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// Docker schema 1 signed manifests (refused).
pub const MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The manifest media types we accept, in preference order (for an `Accept` header).
pub const ACCEPT_MANIFEST_TYPES: &[&str] = &[
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST,
];

/// The `Accept` header value for manifest requests.
pub fn accept_header() -> String {
    ACCEPT_MANIFEST_TYPES.join(", ")
}

/// Is this media type an index / manifest list?
pub fn is_index_media_type(mt: &str) -> bool {
    mt == MEDIA_TYPE_OCI_INDEX || mt == MEDIA_TYPE_DOCKER_MANIFEST_LIST
}

/// Is this media type a single-image manifest?
pub fn is_manifest_media_type(mt: &str) -> bool {
    mt == MEDIA_TYPE_OCI_MANIFEST || mt == MEDIA_TYPE_DOCKER_MANIFEST
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// The compression a layer media type implies, or `None` when it is not a known layer type.
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        MEDIA_TYPE_OCI_LAYER_TAR
        | MEDIA_TYPE_OCI_LAYER_NONDIST_TAR
        | MEDIA_TYPE_DOCKER_LAYER_TAR => Some(Compression::None),
        MEDIA_TYPE_OCI_LAYER_GZIP
        | MEDIA_TYPE_OCI_LAYER_NONDIST_GZIP
        | MEDIA_TYPE_DOCKER_LAYER_GZIP
        | MEDIA_TYPE_DOCKER_FOREIGN_LAYER => Some(Compression::Gzip),
        MEDIA_TYPE_OCI_LAYER_ZSTD | MEDIA_TYPE_OCI_LAYER_NONDIST_ZSTD => Some(Compression::Zstd),
        _ => None,
    }
}

/// Detect compression from a blob's first bytes (magic numbers).
pub fn detect_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// A parsed manifest document.
// The API keeps the oci-spec types unboxed; manifests are few and short-lived.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Manifest {
    /// A single-platform image manifest (OCI or Docker schema2).
    Image(ImageManifest),
    /// An index / manifest list.
    Index(ImageIndex),
}

impl Manifest {
    /// The document's media type (from its `mediaType` field, else the OCI default).
    pub fn media_type(&self) -> String {
        match self {
            Manifest::Image(m) => m
                .media_type()
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_else(|| MEDIA_TYPE_OCI_MANIFEST.to_string()),
            Manifest::Index(i) => i
                .media_type()
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_else(|| MEDIA_TYPE_OCI_INDEX.to_string()),
        }
    }
}

/// Parse a manifest by its `mediaType` field (or the given `Content-Type`), accepting
/// Docker schema2 manifests and manifest lists (they parse as the OCI types, keeping
/// their Docker media types). Digests are of the original bytes, so keep them.
pub fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest> {
    let bad = |reason: String| Error::InvalidManifest {
        digest_or_ref: Digest::of(bytes).to_string(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("not a JSON object".to_string()))?;
    let field_type = obj.get("mediaType").and_then(|v| v.as_str());
    let header_type = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "text/plain");
    let schema = obj.get("schemaVersion").and_then(|v| v.as_u64());
    if schema == Some(1)
        || matches!(
            field_type.or(header_type),
            Some(MEDIA_TYPE_DOCKER_SCHEMA1 | MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED)
        )
    {
        return Err(bad(
            "Docker image manifest schema 1 is not supported; push the image with a newer client"
                .to_string(),
        ));
    }
    if schema != Some(2) {
        return Err(bad(format!(
            "unsupported schemaVersion {}",
            obj.get("schemaVersion")
                .map(|v| v.to_string())
                .unwrap_or_else(|| "(missing)".into())
        )));
    }
    let is_index = match field_type.or(header_type) {
        Some(t) if is_index_media_type(t) => true,
        Some(t) if is_manifest_media_type(t) => false,
        Some(t) if field_type.is_some() => {
            return Err(bad(format!("unsupported manifest media type {t:?}")))
        }
        _ => {
            if obj.contains_key("manifests") {
                true
            } else if obj.contains_key("config") {
                false
            } else {
                return Err(bad("neither an image manifest nor an index".to_string()));
            }
        }
    };
    if is_index {
        let idx: ImageIndex =
            serde_json::from_value(value).map_err(|e| bad(format!("malformed index: {e}")))?;
        Ok(Manifest::Index(idx))
    } else {
        let m: ImageManifest = serde_json::from_value(value)
            .map_err(|e| bad(format!("malformed image manifest: {e}")))?;
        Digest::of_descriptor(m.config()).map_err(|e| bad(format!("config descriptor: {e}")))?;
        for l in m.layers() {
            Digest::of_descriptor(l).map_err(|e| bad(format!("layer descriptor: {e}")))?;
        }
        Ok(Manifest::Image(m))
    }
}

/// This host's platform: (os, architecture, variant) in Go/OCI names
/// (`linux`, `amd64`/`arm64`, `v8` for arm64).
pub fn host_platform() -> (String, String, Option<String>) {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "x86" => ("386", None),
        "arm" => ("arm", Some("v7")),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
        "riscv64" => ("riscv64", None),
        "s390x" => ("s390x", None),
        "loongarch64" => ("loong64", None),
        other => (other, None),
    };
    (
        "linux".to_string(),
        arch.to_string(),
        variant.map(str::to_string),
    )
}

fn platform_string(os: &str, arch: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    }
}

/// Pick this host's entry from an index; `NoMatchingPlatform` lists what exists.
pub fn select_platform(index: &ImageIndex, reference: &str) -> Result<Descriptor> {
    let (os, arch, variant) = host_platform();
    select_platform_for(index, reference, &os, &arch, variant.as_deref())
}

/// Pick the entry for the given platform from an index.
///
/// Variants match exactly, except that an entry without a variant matches any wanted
/// variant (and for arm64 `v8` is the default on both sides); an exact variant match is
/// preferred. Entries that are not image manifests or indexes (attestations,
/// `unknown/unknown`) are skipped. An index whose single entry has no platform at all
/// yields that entry.
pub fn select_platform_for(
    index: &ImageIndex,
    reference: &str,
    os: &str,
    arch: &str,
    variant: Option<&str>,
) -> Result<Descriptor> {
    let norm_variant = |a: &str, v: Option<&str>| -> Option<String> {
        match (a, v) {
            ("arm64", None) => Some("v8".to_string()),
            (_, Some("")) => None,
            (_, v) => v.map(str::to_string),
        }
    };
    let want_variant = norm_variant(arch, variant);
    let mut best: Option<(u8, &Descriptor)> = None;
    let mut available = Vec::new();
    for d in index.manifests() {
        let mt = d.media_type().to_string();
        if !is_manifest_media_type(&mt) && !is_index_media_type(&mt) {
            continue;
        }
        let Some(p) = d.platform() else {
            continue;
        };
        let (pos, parch) = (p.os().to_string(), p.architecture().to_string());
        if pos == "unknown" || parch == "unknown" {
            continue;
        }
        available.push(platform_string(&pos, &parch, p.variant().as_deref()));
        if pos != os || parch != arch {
            continue;
        }
        let have_variant = if p.variant().is_none() && arch != "arm64" {
            None
        } else {
            norm_variant(&parch, p.variant().as_deref())
        };
        let score = match (&want_variant, &have_variant) {
            (w, h) if w == h => 2,
            (_, None) => 1,
            _ => continue,
        };
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, d));
        }
    }
    if let Some((_, d)) = best {
        return Ok(d.clone());
    }
    if index.manifests().len() == 1 && index.manifests()[0].platform().is_none() {
        return Ok(index.manifests()[0].clone());
    }
    available.sort();
    available.dedup();
    Err(Error::NoMatchingPlatform {
        reference: reference.to_string(),
        wanted: platform_string(os, arch, variant),
        available,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
    const D4: &str = "sha256:4444444444444444444444444444444444444444444444444444444444444444";

    fn docker_manifest() -> String {
        format!(
            r#"{{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {{"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1457, "digest": "{D1}"}},
   "layers": [{{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2220094, "digest": "{D2}"}}]
}}"#
        )
    }

    fn docker_list() -> String {
        format!(
            r#"{{
  "manifests": [
    {{"digest": "{D1}", "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
      "platform": {{"architecture": "amd64", "os": "linux"}}, "size": 528}},
    {{"digest": "{D2}", "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
      "platform": {{"architecture": "arm", "os": "linux", "variant": "v7"}}, "size": 528}},
    {{"digest": "{D3}", "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
      "platform": {{"architecture": "arm64", "os": "linux", "variant": "v8"}}, "size": 528}},
    {{"digest": "{D4}", "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
      "platform": {{"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.5206"}}, "size": 528}}
  ],
  "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
  "schemaVersion": 2
}}"#
        )
    }

    fn oci_index() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
 {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D1}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},
 {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D3}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
 {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D4}","size":1,"platform":{{"architecture":"unknown","os":"unknown"}},
   "annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}}]}}"#
        )
    }

    #[test]
    fn parses_docker_schema2() {
        let m = parse_manifest(docker_manifest().as_bytes(), None).expect("parse");
        let Manifest::Image(m) = m else {
            panic!("expected an image manifest")
        };
        assert_eq!(m.config().digest().to_string(), D1);
        assert_eq!(m.layers().len(), 1);
        assert_eq!(
            m.layers()[0].media_type().to_string(),
            MEDIA_TYPE_DOCKER_LAYER_GZIP
        );
        assert_eq!(
            layer_compression(m.layers()[0].media_type().as_ref()),
            Some(Compression::Gzip)
        );
    }

    #[test]
    fn parses_oci_manifest_without_media_type_using_content_type() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{MEDIA_TYPE_OCI_CONFIG}","digest":"{D1}","size":2}},"layers":[]}}"#
        );
        let m = parse_manifest(
            body.as_bytes(),
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
        )
        .expect("parse");
        assert!(matches!(m, Manifest::Image(_)));
        assert_eq!(m.media_type(), MEDIA_TYPE_OCI_MANIFEST);
        // and by shape alone
        assert!(matches!(
            parse_manifest(body.as_bytes(), None),
            Ok(Manifest::Image(_))
        ));
    }

    #[test]
    fn parses_lists_and_selects_platforms() {
        let Manifest::Index(list) = parse_manifest(docker_list().as_bytes(), None).expect("list")
        else {
            panic!("expected index")
        };
        let d = select_platform_for(&list, "busybox", "linux", "amd64", None).expect("amd64");
        assert_eq!(d.digest().to_string(), D1);
        let d = select_platform_for(&list, "busybox", "linux", "arm64", Some("v8")).expect("arm64");
        assert_eq!(d.digest().to_string(), D3);
        let d = select_platform_for(&list, "busybox", "linux", "arm64", None).expect("arm64");
        assert_eq!(d.digest().to_string(), D3);
        let d = select_platform_for(&list, "busybox", "linux", "arm", Some("v7")).expect("arm");
        assert_eq!(d.digest().to_string(), D2);
        match select_platform_for(&list, "busybox", "linux", "s390x", None) {
            Err(Error::NoMatchingPlatform {
                wanted, available, ..
            }) => {
                assert_eq!(wanted, "linux/s390x");
                assert_eq!(
                    available,
                    vec![
                        "linux/amd64",
                        "linux/arm/v7",
                        "linux/arm64/v8",
                        "windows/amd64"
                    ]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        // host selection works on this machine
        select_platform(&list, "busybox").expect("host platform present");

        let Manifest::Index(idx) = parse_manifest(oci_index().as_bytes(), None).expect("index")
        else {
            panic!("expected index")
        };
        let d = select_platform_for(&idx, "x", "linux", "arm64", Some("v8")).expect("arm64");
        assert_eq!(d.digest().to_string(), D3);
        let d = select_platform_for(&idx, "x", "linux", "amd64", None).expect("amd64");
        assert_eq!(d.digest().to_string(), D1);
        let err = select_platform_for(&idx, "x", "linux", "riscv64", None).expect_err("none");
        assert!(err.to_string().contains("linux/arm64"), "{err}");
        assert!(!err.to_string().contains("unknown"), "{err}");
    }

    #[test]
    fn refuses_bad_documents() {
        for body in [
            "not json",
            "[]",
            r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.foo+json"}"#,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#,
            r#"{"schemaVersion":2}"#,
            r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha512:abcd","size":1},"layers":[]}"#,
        ] {
            match parse_manifest(body.as_bytes(), None) {
                Err(Error::InvalidManifest { .. }) => {}
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(accept_header().contains(MEDIA_TYPE_DOCKER_MANIFEST));
    }
}
