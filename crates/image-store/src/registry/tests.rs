//! Integration tests against a real docker-registry and fake registries on 127.0.0.1.

use super::testutil::*;
use super::*;
use crate::content::ContentStore;
use crate::reference::Reference;
use std::sync::atomic::Ordering;

fn registry() -> Registry {
    Registry::new(RegistryOptions::default()).unwrap()
}

fn registry_with(host: &str, user: &str, pass: &str) -> Registry {
    let d = tempfile::tempdir().unwrap();
    let mut creds = Credentials::load(&d.path().join("auth.json"), None).unwrap();
    creds.store(host, user, pass).unwrap();
    Registry::new(RegistryOptions {
        credentials: creds,
        ..Default::default()
    })
    .unwrap()
}

fn store() -> (tempfile::TempDir, ContentStore) {
    let d = tempfile::tempdir().unwrap();
    let s = ContentStore::open(&d.path().join("content")).unwrap();
    (d, s)
}

fn small_image() -> TestImage {
    TestImage::new(vec![
        layer_tar_gz("hello.txt", b"hello berth\n"),
        layer_tar_gz("big.bin", &noise(600_000, 7)),
    ])
}

fn assert_all_verify(s: &ContentStore) {
    for (d, _) in s.list().unwrap() {
        s.read_verified(&d).unwrap();
    }
}

#[test]
fn push_then_pull_roundtrip_on_open_registry() {
    let reg = RegistryServer::start(None);
    let (_d1, src) = store();
    let img = small_image();
    let desc = img.store_into(&src);
    let r = registry();
    let reference = Reference::parse(&format!("{}/test/roundtrip:v1", reg.host)).unwrap();
    let pushed = r.push(&src, &desc, &reference, None).unwrap();
    assert_eq!(pushed, img.manifest_digest);
    assert_eq!(r.stats.blob_uploads.load(Ordering::SeqCst), 3);

    // Second push: every blob exists, nothing uploaded.
    let heads = r.stats.blob_heads.load(Ordering::SeqCst);
    r.push(&src, &desc, &reference, None).unwrap();
    assert_eq!(
        r.stats.blob_uploads.load(Ordering::SeqCst),
        3,
        "second push re-uploaded blobs"
    );
    assert_eq!(r.stats.blob_heads.load(Ordering::SeqCst), heads + 3);

    // Cross-repository mount into another repository.
    let other = Reference::parse(&format!("{}/test/other:v1", reg.host)).unwrap();
    r.push(&src, &desc, &other, Some("test/roundtrip")).unwrap();
    assert_eq!(r.stats.blob_mounts.load(Ordering::SeqCst), 3);
    assert_eq!(r.stats.blob_uploads.load(Ordering::SeqCst), 3);

    // Pull into a fresh store.
    let (_d2, dst) = store();
    let res = r.pull(&dst, &reference).unwrap();
    assert_eq!(
        res.manifest.digest().to_string(),
        img.manifest_digest.to_string()
    );
    assert_eq!(res.config, img.config_digest);
    assert_eq!(res.layers.len(), 2);
    assert!(res.index.is_none());
    assert_eq!(res.reference.digest.as_ref(), Some(&img.manifest_digest));
    assert_eq!(dst.list().unwrap(), src.list().unwrap());
    assert_all_verify(&dst);
    let total: u64 =
        img.layers.iter().map(|(b, _)| b.len() as u64).sum::<u64>() + img.config.len() as u64;
    assert_eq!(res.bytes_downloaded, total);

    // Pull again: nothing to download. Pull of the mounted copy by digest works too.
    assert_eq!(r.pull(&dst, &reference).unwrap().bytes_downloaded, 0);
    let (_d3, dst3) = store();
    r.pull(&dst3, &other.with_digest(img.manifest_digest.clone()))
        .unwrap();
    assert_eq!(blob_count(&dst3), 4);
}

#[test]
fn htpasswd_registry_requires_login() {
    let reg = RegistryServer::start(Some(("user", "s3cret")));
    let (_d, src) = store();
    let img = small_image();
    let desc = img.store_into(&src);
    let reference = Reference::parse(&format!("{}/private/img:1", reg.host)).unwrap();

    let anon = registry();
    let e = anon.push(&src, &desc, &reference, None).unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");

    let authed = registry_with(&reg.host, "user", "s3cret");
    authed.push(&src, &desc, &reference, None).unwrap();

    let (_d2, dst) = store();
    let e = anon.pull(&dst, &reference).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(
        msg.contains("unauthorized") && msg.contains(&format!("berth login {}", reg.host)),
        "{msg}"
    );
    assert_eq!(blob_count(&dst), 0);

    let wrong = registry_with(&reg.host, "user", "nope");
    let msg = wrong.pull(&dst, &reference).unwrap_err().to_string();
    assert!(msg.contains("rejected"), "{msg}");

    let res = authed.pull(&dst, &reference).unwrap();
    assert_eq!(
        res.manifest.digest().to_string(),
        img.manifest_digest.to_string()
    );
    assert_all_verify(&dst);

    anon.check_login(&reg.host, "user", "s3cret").unwrap();
    let e = anon.check_login(&reg.host, "user", "bad").unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
}

#[test]
fn bearer_token_flow_and_cross_host_redirect() {
    let img = small_image();
    let storage = FakeServer::start({
        let img = img.clone();
        move |req| {
            let d = req.path.trim_start_matches("/storage/");
            match img.layers.iter().find(|(_, ld)| ld.to_string() == d) {
                Some((b, _)) => Reply::new(200, b.clone()),
                None => Reply::new(404, ""),
            }
        }
    });
    let storage_host = storage.host.clone();
    let server = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reg = FakeServer::start({
        let img = img.clone();
        let me = server.clone();
        move |req| {
            let host = me.lock().unwrap().clone();
            if req.path.starts_with("/token") {
                return Reply::new(200, r#"{"access_token":"tok-123","expires_in":300}"#);
            }
            if req.header("authorization") != Some("Bearer tok-123") {
                return Reply::new(401, r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#).header(
                    "WWW-Authenticate",
                    &format!(r#"Bearer realm="http://{host}/token",service="fake,registry",scope="repository:lib/app:pull""#),
                );
            }
            // Layers live on "storage" (another origin): redirect there.
            if let Some((_, d)) = img
                .layers
                .iter()
                .find(|(_, d)| req.path.ends_with(&d.to_string()))
            {
                return Reply::new(307, "")
                    .header("Location", &format!("http://{storage_host}/storage/{d}"));
            }
            img.serve("lib/app", "latest", req)
                .unwrap_or_else(|| Reply::new(404, ""))
        }
    });
    *server.lock().unwrap() = reg.host.clone();
    let r = registry();
    let (_d, dst) = store();
    let reference = Reference::parse(&format!("{}/lib/app", reg.host)).unwrap();
    let res = r.pull(&dst, &reference).unwrap();
    assert_eq!(
        res.manifest.digest().to_string(),
        img.manifest_digest.to_string()
    );
    assert_eq!(blob_count(&dst), 4);
    assert_all_verify(&dst);

    let token_reqs: Vec<_> = reg
        .requests()
        .into_iter()
        .filter(|q| q.path.starts_with("/token"))
        .collect();
    assert_eq!(token_reqs.len(), 1, "token is cached per scope");
    assert!(
        token_reqs[0]
            .path
            .contains("scope=repository%3Alib%2Fapp%3Apull"),
        "{}",
        token_reqs[0].path
    );
    assert!(
        token_reqs[0].path.contains("service=fake%2Cregistry"),
        "{}",
        token_reqs[0].path
    );
    assert!(
        token_reqs[0].header("authorization").is_none(),
        "anonymous token request"
    );
    let st = storage.requests();
    assert_eq!(st.len(), 2);
    assert!(
        st.iter().all(|q| q.header("authorization").is_none()),
        "Authorization leaked to another host"
    );
}

#[test]
fn bearer_with_credentials_and_rejection() {
    let img = small_image();
    let me = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reg = FakeServer::start({
        let me = me.clone();
        let img = img.clone();
        move |req| {
            let host = me.lock().unwrap().clone();
            if req.path.starts_with("/token") {
                // base64("alice:pw")
                return if req.header("authorization") == Some("Basic YWxpY2U6cHc=") {
                    Reply::new(200, r#"{"token":"t0k"}"#)
                } else {
                    Reply::new(401, "bad credentials")
                };
            }
            if req.header("authorization") != Some("Bearer t0k") {
                return Reply::new(401, "").header(
                    "WWW-Authenticate",
                    &format!(r#"Bearer realm="http://{host}/token""#),
                );
            }
            img.serve("p/q", "1", req)
                .unwrap_or_else(|| Reply::new(404, ""))
        }
    });
    *me.lock().unwrap() = reg.host.clone();
    let reference = Reference::parse(&format!("{}/p/q:1", reg.host)).unwrap();
    let (_d, dst) = store();
    let e = registry().pull(&dst, &reference).unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    assert_eq!(blob_count(&dst), 0);
    registry_with(&reg.host, "alice", "pw")
        .pull(&dst, &reference)
        .unwrap();
    assert_eq!(blob_count(&dst), 4);
}

/// A fake open registry serving `img` as repo `x/y:t`, with `tweak` overriding replies.
fn fake(
    img: &TestImage,
    tweak: impl Fn(&Req) -> Option<Reply> + Send + Sync + 'static,
) -> FakeServer {
    let img = img.clone();
    FakeServer::start(move |req| {
        tweak(req)
            .or_else(|| img.serve("x/y", "t", req))
            .unwrap_or_else(|| Reply::new(404, r#"{"errors":[]}"#))
    })
}

#[test]
fn corrupt_blob_is_rejected_and_leaves_nothing() {
    let img = small_image();
    let bad = img.layers[1].1.clone();
    let bad_path = format!("/v2/x/y/blobs/{bad}");
    let size = img.layers[1].0.len();
    let srv = fake(&img, move |req| {
        (req.path == bad_path).then(|| Reply::new(200, noise(size, 99)))
    });
    let (_d, dst) = store();
    let e = Registry::new(RegistryOptions {
        max_concurrent: 1,
        ..Default::default()
    })
    .unwrap()
    .pull(
        &dst,
        &Reference::parse(&format!("{}/x/y:t", srv.host)).unwrap(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            RegistryError::Store(crate::error::Error::DigestMismatch { .. })
        ),
        "{msg}"
    );
    assert!(msg.contains(&bad.to_string()), "{msg}");
    assert!(dst.info(&bad).unwrap().is_none());
    // No manifest or config committed; only the verified first layer may remain.
    assert!(dst.info(&img.manifest_digest).unwrap().is_none());
    assert!(dst.info(&img.config_digest).unwrap().is_none());
    assert!(blob_count(&dst) <= 1);
}

#[test]
fn truncated_blob_fails_cleanly() {
    let img = TestImage::new(vec![layer_tar_gz("a", &noise(100_000, 3))]);
    let (body, d) = img.layers[0].clone();
    let p = format!("/v2/x/y/blobs/{d}");
    // Consistent but short Content-Length: ends "normally" with too few bytes.
    let srv = fake(&img, move |req| {
        (req.path == p).then(|| Reply::new(200, body[..body.len() / 3].to_vec()))
    });
    let (_d, dst) = store();
    let e = registry()
        .pull(
            &dst,
            &Reference::parse(&format!("{}/x/y:t", srv.host)).unwrap(),
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            RegistryError::Store(crate::error::Error::SizeMismatch { .. })
        ),
        "{msg}"
    );
    assert!(msg.contains(&d.to_string()), "{msg}");
    assert_eq!(blob_count(&dst), 0);
}

#[test]
fn oversized_blob_is_rejected() {
    let img = TestImage::new(vec![layer_tar_gz("a", b"x")]);
    let (mut body, d) = img.layers[0].clone();
    body.extend_from_slice(&[0; 1000]);
    let p = format!("/v2/x/y/blobs/{d}");
    let srv = fake(&img, move |req| {
        (req.path == p).then(|| Reply::new(200, body.clone()))
    });
    let (_d, dst) = store();
    let e = registry()
        .pull(
            &dst,
            &Reference::parse(&format!("{}/x/y:t", srv.host)).unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Store(crate::error::Error::SizeMismatch { .. })
        ),
        "{e}"
    );
    assert_eq!(blob_count(&dst), 0);
}

#[test]
fn malformed_manifest_and_missing_tag() {
    let img = small_image();
    let srv = fake(&img, |req| {
        req.path.ends_with("/manifests/broken").then(|| {
            Reply::new(200, "{\"schemaVersion\": 2, \"layers\": [oops")
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        })
    });
    let r = registry();
    let (_d, dst) = store();
    let e = r
        .pull(
            &dst,
            &Reference::parse(&format!("{}/x/y:broken", srv.host)).unwrap(),
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            RegistryError::Store(crate::error::Error::InvalidManifest { .. })
        ),
        "{msg}"
    );
    assert!(msg.contains("x/y:broken"), "{msg}");
    let e = r
        .pull(
            &dst,
            &Reference::parse(&format!("{}/x/y:nosuch", srv.host)).unwrap(),
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::NotFound { .. }), "{msg}");
    assert!(
        msg.contains("x/y:nosuch") && msg.contains(&srv.host),
        "{msg}"
    );
    assert_eq!(blob_count(&dst), 0);
}

#[test]
fn manifest_digest_mismatch_by_digest_reference() {
    let img = small_image();
    let other = TestImage::new(vec![layer_tar_gz("z", b"z")]);
    let want = other.manifest_digest.clone();
    let m = img.manifest.clone();
    let srv = fake(&img, move |req| {
        req.path
            .contains(&format!("manifests/{want}"))
            .then(|| Reply::new(200, m.clone()))
    });
    let (_d, dst) = store();
    let reference =
        Reference::parse(&format!("{}/x/y@{}", srv.host, other.manifest_digest)).unwrap();
    let e = registry().pull(&dst, &reference).unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Store(crate::error::Error::DigestMismatch { .. })
        ),
        "{e}"
    );
    assert_eq!(blob_count(&dst), 0);
}

#[test]
fn refused_connection_is_connect_error() {
    let port = free_port();
    let (_d, dst) = store();
    let e = registry()
        .pull(
            &dst,
            &Reference::parse(&format!("127.0.0.1:{port}/a/b:c")).unwrap(),
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::Connect { .. }), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert_eq!(blob_count(&dst), 0);
}

#[test]
fn interrupted_download_resumes_with_range() {
    let img = TestImage::new(vec![layer_tar_gz("big", &noise(300_000, 5))]);
    let (body, d) = img.layers[0].clone();
    let half = body.len() / 2;
    let p = format!("/v2/x/y/blobs/{d}");
    let srv = fake(&img, move |req| {
        if req.path != p {
            return None;
        }
        match req
            .header("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
        {
            Some(start) => {
                let s: usize = start.parse().unwrap();
                Some(Reply::new(206, body[s..].to_vec()).header(
                    "Content-Range",
                    &format!("bytes {s}-{}/{}", body.len() - 1, body.len()),
                ))
            }
            None => Some(Reply {
                cut_after: Some(half),
                ..Reply::new(200, body.clone())
            }),
        }
    });
    let (_dir, dst) = store();
    let reference = Reference::parse(&format!("{}/x/y:t", srv.host)).unwrap();
    let r = registry();
    let e = r.pull(&dst, &reference).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::Interrupted { .. }), "{msg}");
    assert!(
        msg.contains(&d.to_string()) && msg.contains("again"),
        "{msg}"
    );
    assert_eq!(blob_count(&dst), 0);

    let res = r.pull(&dst, &reference).unwrap();
    assert_eq!(blob_count(&dst), 3);
    assert_all_verify(&dst);
    let ranges: Vec<String> = srv
        .requests()
        .iter()
        .filter_map(|q| q.header("range").map(str::to_string))
        .collect();
    assert_eq!(ranges, vec![format!("bytes={half}-")]);
    assert_eq!(
        res.bytes_downloaded,
        (img.layers[0].0.len() - half + img.config.len()) as u64
    );
}

#[test]
fn resume_restarts_when_server_ignores_range() {
    let img = TestImage::new(vec![layer_tar_gz("big", &noise(200_000, 6))]);
    let (body, d) = img.layers[0].clone();
    let p = format!("/v2/x/y/blobs/{d}");
    let first = std::sync::atomic::AtomicBool::new(true);
    let srv = fake(&img, move |req| {
        (req.path == p).then(|| {
            let cut = first.swap(false, Ordering::SeqCst).then_some(1000);
            Reply {
                cut_after: cut,
                ..Reply::new(200, body.clone())
            }
        })
    });
    let (_dir, dst) = store();
    let reference = Reference::parse(&format!("{}/x/y:t", srv.host)).unwrap();
    let r = registry();
    assert!(r.pull(&dst, &reference).is_err());
    r.pull(&dst, &reference).unwrap();
    assert_all_verify(&dst);
    assert_eq!(blob_count(&dst), 3);
    assert!(srv
        .requests()
        .iter()
        .any(|q| q.header("range") == Some("bytes=1000-")));
}

#[test]
fn index_selects_platform_and_stores_index() {
    let img = small_image();
    let arch = if cfg!(target_arch = "x86_64") {
        "amd64"
    } else {
        "arm64"
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": crate::digest::Digest::of(b"nope").to_string(), "size": 4, "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": img.manifest_digest.to_string(), "size": img.manifest.len(), "platform": {"os": "linux", "architecture": arch}},
        ]
    }))
    .unwrap();
    let index_digest = crate::digest::Digest::of(&index);
    let srv = fake(&img, move |req| {
        req.path.ends_with("/manifests/multi").then(|| {
            Reply::new(200, index.clone())
                .header("Content-Type", "application/vnd.oci.image.index.v1+json")
        })
    });
    let (_d, dst) = store();
    let r = Registry::new(RegistryOptions {
        progress: true,
        ..Default::default()
    })
    .unwrap();
    let res = r
        .pull(
            &dst,
            &Reference::parse(&format!("{}/x/y:multi", srv.host)).unwrap(),
        )
        .unwrap();
    assert_eq!(
        res.index.unwrap().digest().to_string(),
        index_digest.to_string()
    );
    assert_eq!(
        res.manifest.digest().to_string(),
        img.manifest_digest.to_string()
    );
    assert_eq!(blob_count(&dst), 5);
    assert_all_verify(&dst);
}

#[test]
fn concurrent_pulls_of_the_same_image_share_the_ingest() {
    let img = TestImage::new((0..4).map(|i| noise(400_000, i)).collect());
    let srv = fake(&img, |_| None);
    let (_d, dst) = store();
    let reference = Reference::parse(&format!("{}/x/y:t", srv.host)).unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| registry().pull(&dst, &reference)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        assert!(r.is_ok(), "{:?}", r.as_ref().err().map(ToString::to_string));
    }
    assert_eq!(blob_count(&dst), 6);
    assert_all_verify(&dst);
    // The ingest lock serialises the pullers: each layer is downloaded exactly once in total.
    let layer_bytes: u64 = img.layers.iter().map(|(b, _)| b.len() as u64).sum();
    let total: u64 = results
        .iter()
        .map(|r| r.as_ref().unwrap().bytes_downloaded)
        .sum();
    assert!(
        total >= layer_bytes && total <= layer_bytes + 3 * img.config.len() as u64,
        "{total}"
    );
}

/// ~50 MB blob pushed to and pulled from the local docker-registry; prints MB/s.
/// Run: cargo test --release -- --ignored --nocapture pull_throughput
#[test]
#[ignore]
fn pull_throughput_50mb() {
    let reg = RegistryServer::start(None);
    let (_d1, src) = store();
    let img = TestImage::new(vec![noise(50 << 20, 11)]);
    let desc = img.store_into(&src);
    let r = registry();
    let reference = Reference::parse(&format!("{}/bench/big:1", reg.host)).unwrap();
    r.push(&src, &desc, &reference, None).unwrap();
    for _ in 0..3 {
        let (_d2, dst) = store();
        let t = std::time::Instant::now();
        let res = r.pull(&dst, &reference).unwrap();
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "pulled {} bytes in {secs:.3}s: {:.1} MB/s",
            res.bytes_downloaded,
            res.bytes_downloaded as f64 / secs / 1e6
        );
    }
    let (_d3, _) = store();
    let data = &img.layers[0].0;
    let t = std::time::Instant::now();
    let digest = crate::digest::Digest::of(data);
    let path = _d3.path().join("raw");
    std::fs::write(&path, data).unwrap();
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(digest, img.layers[0].1);
    eprintln!(
        "raw limit (sha256 + write + fsync): {:.1} MB/s",
        data.len() as f64 / secs / 1e6
    );
}

#[test]
fn observer_hears_config_first_then_every_layer() {
    use std::sync::Mutex;
    struct Log(Mutex<Vec<String>>);
    impl super::PullObserver for Log {
        fn config(&self, config: &[u8], layers: &[oci_spec::image::Descriptor]) {
            let ok = serde_json::from_slice::<serde_json::Value>(config).is_ok();
            self.0
                .lock()
                .unwrap()
                .push(format!("config {ok} {}", layers.len()));
        }
        fn layer_ready(&self, index: usize, _layer: &oci_spec::image::Descriptor) {
            self.0.lock().unwrap().push(format!("layer {index}"));
        }
    }
    let img = TestImage::new((0..3).map(|i| noise(200_000, i)).collect());
    let srv = fake(&img, |_| None);
    let (_d, dst) = store();
    let reference = Reference::parse(&format!("{}/x/y:t", srv.host)).unwrap();
    let log = Log(Mutex::new(Vec::new()));
    registry().pull_observed(&dst, &reference, &log).unwrap();
    let events = log.0.into_inner().unwrap();
    assert_eq!(events[0], "config true 3", "{events:?}");
    let mut layers: Vec<&String> = events[1..].iter().collect();
    layers.sort();
    assert_eq!(layers, vec!["layer 0", "layer 1", "layer 2"], "{events:?}");
}

/// Plain-http registries never load the system CA store (~15 ms); the first https
/// request builds the TLS client once.
#[test]
fn tls_client_is_built_on_the_first_https_request() {
    let r = registry();
    let http = reqwest::Url::parse("http://127.0.0.1:5000/v2/").unwrap();
    let https = reqwest::Url::parse("https://registry.example/v2/").unwrap();
    let _ = r.http(&http).unwrap();
    assert!(r.tls.get().is_none());
    let first: *const reqwest::Client = r.http(&https).unwrap();
    assert!(r.tls.get().is_some());
    assert!(std::ptr::eq(first, r.http(&https).unwrap()));
    assert!(!std::ptr::eq(first, r.http(&http).unwrap()));
}

/// A thread reading a layer's follower to its end.
type FollowerThread = std::thread::JoinHandle<std::io::Result<Vec<u8>>>;

/// Reads every layer's follower to its end on a thread of its own.
struct Followers(std::sync::Mutex<Vec<(usize, FollowerThread)>>);

impl super::PullObserver for Followers {
    fn layer_stream(&self, index: usize, _layer: &oci_spec::image::Descriptor, mut f: Follower) {
        use std::io::Read;
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            f.read_to_end(&mut got).map(|_| got)
        });
        self.0.lock().unwrap().push((index, t));
    }
}

impl Followers {
    fn results(self) -> Vec<(usize, std::io::Result<Vec<u8>>)> {
        let mut r: Vec<_> = self
            .0
            .into_inner()
            .unwrap()
            .into_iter()
            .map(|(i, t)| (i, t.join().unwrap()))
            .collect();
        r.sort_by_key(|(i, _)| *i);
        r
    }
}

#[test]
fn followers_read_exactly_the_verified_layers_also_when_resumed() {
    let img = TestImage::new(vec![
        layer_tar_gz("a", &noise(700_000, 1)),
        layer_tar_gz("b", &noise(50_000, 2)),
    ]);
    let (body, d) = img.layers[0].clone();
    let half = body.len() / 2;
    let p = format!("/v2/x/y/blobs/{d}");
    let cut = std::sync::atomic::AtomicBool::new(true);
    let srv = fake(&img, move |req| {
        if req.path != p {
            return None;
        }
        let start = req
            .header("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .map(|s| s.parse::<usize>().unwrap());
        Some(match start {
            Some(s) => Reply::new(206, body[s..].to_vec()).header(
                "Content-Range",
                &format!("bytes {s}-{}/{}", body.len() - 1, body.len()),
            ),
            None => Reply {
                cut_after: cut
                    .swap(false, std::sync::atomic::Ordering::Relaxed)
                    .then_some(half),
                ..Reply::new(200, body.clone())
            },
        })
    });
    let (_dir, dst) = store();
    let reference = Reference::parse(&format!("{}/x/y:t", srv.host)).unwrap();
    let r = registry();
    // Interrupted: that layer's follower fails, never ends early.
    let first = Followers(Default::default());
    assert!(r.pull_observed(&dst, &reference, &first).is_err());
    for (i, got) in first.results() {
        if i == 0 {
            assert!(got.is_err());
        } else {
            assert!(got.unwrap() == img.layers[i].0);
        }
    }
    // Resumed: the follower reads the first half from the ingest file, the rest as
    // it arrives.
    let second = Followers(Default::default());
    r.pull_observed(&dst, &reference, &second).unwrap();
    let got = second.results();
    assert_eq!(got.len(), 1, "only the interrupted layer downloads again");
    let (i, bytes) = got.into_iter().next().unwrap();
    assert_eq!(i, 0);
    assert!(bytes.unwrap() == img.layers[0].0);
    assert_all_verify(&dst);
}
