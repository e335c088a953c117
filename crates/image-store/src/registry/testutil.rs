//! Test fixtures: a real `docker-registry` on 127.0.0.1, a tiny fake HTTP registry,
//! and an image builder.

use crate::content::ContentStore;
use crate::digest::Digest;
use oci_spec::image::{Descriptor, MediaType};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's `docker-registry` (distribution 2.8) on 127.0.0.1:<free port>, killed on drop.
pub struct RegistryServer {
    child: Child,
    _dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`
    pub host: String,
}

impl RegistryServer {
    /// Start it, with htpasswd basic auth when `auth` is given; waits until /v2/ answers.
    pub fn start(auth: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        if let Some((u, p)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd (apache2-utils) installed");
            assert!(out.status.success());
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, out.stdout).unwrap();
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth\n    path: {}\n",
                file.display()
            ));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry installed (apt-get install docker-registry)");
        let mut s = Self {
            child,
            _dir: dir,
            host,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = raw_get_status(&s.host, "/v2/") {
                assert!(
                    status == 200 || status == 401,
                    "unexpected /v2/ status {status}"
                );
                break;
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("docker-registry exited early: {st}");
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not come up on {}",
                s.host
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s.host = s.host.clone();
        s
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn raw_get_status(host: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A request as the fake server saw it (header names lower-cased).
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// What the fake server answers.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send only this many body bytes (Content-Length still says the full length), then close.
    pub cut_after: Option<usize>,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            body: body.into(),
            ..Default::default()
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

type Handler = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;

/// A minimal HTTP/1.1 server on 127.0.0.1 (one connection per request), stopped on drop.
pub struct FakeServer {
    pub host: String,
    pub requests: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Handler = Arc::new(handler);
        let (reqs, st) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (h, r) = (handler.clone(), reqs.clone());
                std::thread::spawn(move || {
                    let _ = serve_conn(conn, &h, &r);
                });
            }
        });
        Self {
            host,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_conn(conn: TcpStream, handler: &Handler, log: &Mutex<Vec<Req>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let req = Req {
        method,
        path,
        headers,
    };
    log.lock().unwrap().push(req.clone());
    let reply = handler(&req);
    let mut out = conn;
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if req.method != "HEAD" {
        let n = reply
            .cut_after
            .unwrap_or(reply.body.len())
            .min(reply.body.len());
        out.write_all(&reply.body[..n])?;
    }
    out.flush()?;
    let _ = out.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// An image held in memory: manifest, config and layers.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub layers: Vec<(Vec<u8>, Digest)>,
}

/// A gzip tarball with one file `name` holding `content`.
pub fn layer_tar_gz(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, content).unwrap();
    b.into_inner().unwrap().finish().unwrap()
}

/// Deterministic pseudo-random bytes (incompressible-ish).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl TestImage {
    /// An OCI image with the given (already compressed) layer blobs.
    pub fn new(layers: Vec<Vec<u8>>) -> Self {
        let layers: Vec<(Vec<u8>, Digest)> = layers
            .into_iter()
            .map(|l| {
                let d = Digest::of(&l);
                (l, d)
            })
            .collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(_, d)| d.to_string()).collect::<Vec<_>>()},
        }))
        .unwrap();
        let config_digest = Digest::of(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
            "layers": layers.iter().map(|(b, d)| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.to_string(), "size": b.len()
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        let manifest_digest = Digest::of(&manifest);
        Self {
            manifest,
            manifest_digest,
            config,
            config_digest,
            layers,
        }
    }

    /// Store every blob in `store`; returns the manifest descriptor.
    pub fn store_into(&self, store: &ContentStore) -> Descriptor {
        store.write_blob(&self.config).unwrap();
        for (l, _) in &self.layers {
            store.write_blob(l).unwrap();
        }
        store.write_blob(&self.manifest).unwrap();
        self.descriptor()
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            MediaType::ImageManifest,
            self.manifest.len() as u64,
            self.manifest_digest
                .to_string()
                .parse::<oci_spec::image::Digest>()
                .unwrap(),
        )
    }

    /// Serve this image as `repo:tag` for GET/HEAD; None for other paths.
    pub fn serve(&self, repo: &str, tag: &str, req: &Req) -> Option<Reply> {
        let p = &req.path;
        let mpaths = [
            format!("/v2/{repo}/manifests/{tag}"),
            format!("/v2/{repo}/manifests/{}", self.manifest_digest),
        ];
        if mpaths.contains(p) {
            return Some(
                Reply::new(200, self.manifest.clone())
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                    .header("Docker-Content-Digest", &self.manifest_digest.to_string()),
            );
        }
        if *p == format!("/v2/{repo}/blobs/{}", self.config_digest) {
            return Some(Reply::new(200, self.config.clone()));
        }
        for (b, d) in &self.layers {
            if *p == format!("/v2/{repo}/blobs/{d}") {
                return Some(Reply::new(200, b.clone()));
            }
        }
        None
    }
}

/// Number of blobs in a store.
pub fn blob_count(store: &ContentStore) -> usize {
    store.list().unwrap().len()
}
