//! A deliberately misbehaving registry for tests: a tiny HTTP/1.1 server on
//! 127.0.0.1 that serves fixed manifests and blobs, and can lie about them
//! (wrong bytes, truncated bodies, garbage manifests, slow bodies).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How to answer one path.
#[derive(Clone)]
pub struct Route {
    /// Status code.
    pub status: u16,
    /// Content-Type header.
    pub content_type: String,
    /// The body (the whole thing; `truncate_at` may cut it).
    pub body: Vec<u8>,
    /// Announce `body.len()` but close the connection after this many bytes.
    pub truncate_at: Option<usize>,
    /// Sleep this long after each 64 KiB chunk.
    pub throttle: Option<Duration>,
}

impl Route {
    /// A 200 answer.
    pub fn ok(content_type: &str, body: Vec<u8>) -> Route {
        Route {
            status: 200,
            content_type: content_type.into(),
            body,
            truncate_at: None,
            throttle: None,
        }
    }
}

/// Requests seen: the request line and its Range header.
pub type RequestLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A running fake registry; stops accepting on drop.
pub struct FakeRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    /// Every request line and its Range header, in order.
    pub requests: RequestLog,
    stop: Arc<AtomicBool>,
}

impl FakeRegistry {
    /// Start serving `routes` (path -> answer); other paths get 404.
    pub fn start(routes: HashMap<String, Route>) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let routes = Arc::new(Mutex::new(routes));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, q, s) = (routes.clone(), requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (r, q) = (r.clone(), q.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &r, &q);
                });
            }
        });
        FakeRegistry {
            addr,
            routes,
            requests,
            stop,
        }
    }

    /// Replace or add a route.
    pub fn set(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.into(), route);
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve(
    stream: TcpStream,
    routes: &Mutex<HashMap<String, Route>>,
    requests: &Mutex<Vec<(String, Option<String>)>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut range = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header == "\r\n" {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                if k.eq_ignore_ascii_case("range") {
                    range = Some(v.trim().to_string());
                }
            }
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        requests
            .lock()
            .unwrap()
            .push((format!("{method} {path}"), range.clone()));
        let route = routes.lock().unwrap().get(&path).cloned();
        let Some(route) = route else {
            let body = b"{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"not found\"}]}";
            write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )?;
            if method != "HEAD" {
                stream.write_all(body)?;
            }
            continue;
        };
        let start = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|s| *s < route.body.len() && route.status == 200);
        let (status, body) = match start {
            Some(s) => ("206 Partial Content".to_string(), &route.body[s..]),
            None => (format!("{} X", route.status), &route.body[..]),
        };
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nDocker-Content-Digest: {}\r\n",
            route.content_type,
            body.len(),
            digest_of(&route.body)
        );
        if let Some(s) = start {
            head.push_str(&format!(
                "Content-Range: bytes {s}-{}/{}\r\n",
                route.body.len() - 1,
                route.body.len()
            ));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        if method == "HEAD" {
            continue;
        }
        let limit = route
            .truncate_at
            .map(|t| t.min(body.len()))
            .unwrap_or(body.len());
        for chunk in body[..limit].chunks(64 * 1024) {
            stream.write_all(chunk)?;
            if let Some(t) = route.throttle {
                std::thread::sleep(t);
            }
        }
        if limit < body.len() {
            return Ok(());
        }
    }
}

/// `sha256:<hex>` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(data);
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}
