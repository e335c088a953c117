//! Plain downloads of a URL, for the builder's `ADD <url>`, through the
//! registry client's HTTP stack (its runtime, TLS setup and proxies).
//! Redirects are followed; the body is streamed to a file.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use reqwest::header::{CONTENT_DISPOSITION, LAST_MODIFIED, LOCATION};
use reqwest::Url;

use super::client::Registry;

/// Redirects followed before giving up (as Go's HTTP client).
const MAX_REDIRECTS: usize = 10;

/// What [`Registry::download`] fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// The file's name: the response's `Content-Disposition` filename, else
    /// the last segment of the URL's path, else `download` (as BuildKit).
    pub name: String,
    /// The response's `Last-Modified`, if it had a valid one.
    pub last_modified: Option<SystemTime>,
    /// Bytes written.
    pub size: u64,
}

fn fail(url: &str, what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("download {url}: {what}"))
}

/// The name a download is saved under (see [`Download::name`]).
pub fn file_name(url: &Url, content_disposition: Option<&str>) -> String {
    let param = |name: &str| {
        content_disposition?.split(';').find_map(|part| {
            let (k, v) = part.trim().split_once('=')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    // RFC 6266: `filename*=UTF-8''<percent-encoded>` wins over `filename=`.
    let extended = param("filename*").and_then(|v| {
        let (charset, rest) = v.split_once('\'')?;
        let (_lang, encoded) = rest.split_once('\'')?;
        // Every `%` must start an escape (as Go's mime package requires).
        let escapes_ok = encoded.split('%').skip(1).all(|after| {
            after.len() >= 2 && after.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit)
        });
        if !escapes_ok {
            return None;
        }
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(encoded).collect();
        if charset.eq_ignore_ascii_case("utf-8") {
            String::from_utf8(bytes).ok()
        } else if charset.eq_ignore_ascii_case("us-ascii") {
            String::from_utf8(bytes).ok().filter(|n| n.is_ascii())
        } else if charset.eq_ignore_ascii_case("iso-8859-1") {
            Some(bytes.iter().map(|&b| b as char).collect())
        } else {
            None
        }
    });
    let from_header = extended
        .map(std::borrow::Cow::Owned)
        .or_else(|| param("filename").map(|v| std::borrow::Cow::Borrowed(v.trim_matches('"'))));
    let from_path = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy());
    [from_header, from_path]
        .into_iter()
        .flatten()
        // Only a plain name: no directories, nothing that walks out.
        .map(|n| n.rsplit('/').next().unwrap_or(&n).to_string())
        .find(|n| !n.is_empty() && n != "." && n != "..")
        .unwrap_or_else(|| "download".to_string())
}

impl Registry {
    /// Fetch `url` (http or https) into the new file `dest`, following
    /// redirects. Fails, saying why, on a status other than 2xx (as BuildKit).
    pub fn download(&self, url: &str, dest: &Path) -> std::io::Result<Download> {
        let original = Url::parse(url).map_err(|e| fail(url, e))?;
        let mut current = original.clone();
        let mut redirects = 0;
        let resp = loop {
            if !matches!(current.scheme(), "http" | "https") {
                return Err(fail(url, format!("unsupported scheme in {current}")));
            }
            let client = self.http(&current).map_err(|e| fail(url, e))?;
            let resp = self
                .rt
                .block_on(async { client.get(current.clone()).send().await })
                .map_err(|e| fail(url, error_chain(&e)))?;
            let status = resp.status();
            if status.is_redirection() {
                redirects += 1;
                let next = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| current.join(l).ok());
                match next {
                    Some(next) if redirects <= MAX_REDIRECTS => current = next,
                    Some(_) => return Err(fail(url, "too many redirects")),
                    None => return Err(fail(url, format!("HTTP {status} without a Location"))),
                }
                continue;
            }
            if !status.is_success() {
                return Err(fail(url, format!("HTTP {status}")));
            }
            break resp;
        };
        let header = |h| resp.headers().get(h).and_then(|v| v.to_str().ok());
        let name = file_name(&original, header(CONTENT_DISPOSITION));
        let last_modified = header(LAST_MODIFIED).and_then(|v| httpdate::parse_http_date(v).ok());
        let mut file = std::fs::File::create_new(dest)
            .map_err(|e| fail(url, format!("create {}: {e}", dest.display())))?;
        let mut resp = resp;
        let mut size = 0u64;
        loop {
            match self.rt.block_on(resp.chunk()) {
                Ok(Some(chunk)) => {
                    file.write_all(&chunk)
                        .map_err(|e| fail(url, format!("write {}: {e}", dest.display())))?;
                    size += chunk.len() as u64;
                }
                Ok(None) => break,
                Err(e) => return Err(fail(url, error_chain(&e))),
            }
        }
        if let Some(t) = last_modified {
            file.set_modified(t)
                .map_err(|e| fail(url, format!("set the time of {}: {e}", dest.display())))?;
        }
        Ok(Download {
            name,
            last_modified,
            size,
        })
    }
}

/// An error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        msg.push_str(&format!(": {c}"));
        cause = c.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_buildkit_picks_them() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(file_name(&u("http://h/a/b/tool.tgz?x=1"), None), "tool.tgz");
        assert_eq!(file_name(&u("http://h/a/b/"), None), "download");
        assert_eq!(file_name(&u("http://h/my%20file.txt"), None), "my file.txt");
        assert_eq!(file_name(&u("http://h/a%2F..%2Fb"), None), "b");
        assert_eq!(file_name(&u("http://h/%2E%2E"), None), "download");
        assert_eq!(file_name(&u("http://h"), None), "download");
        assert_eq!(
            file_name(
                &u("http://h/get?id=3"),
                Some("attachment; filename=\"r.txt\"")
            ),
            "r.txt"
        );
        // A header naming a path or nothing usable falls back.
        assert_eq!(
            file_name(
                &u("http://h/x.bin"),
                Some("attachment; filename=\"../../etc/passwd\"")
            ),
            "passwd"
        );
        assert_eq!(
            file_name(&u("http://h/x.bin"), Some("attachment; filename=..")),
            "x.bin"
        );
        assert_eq!(file_name(&u("http://h/x.bin"), Some("inline")), "x.bin");
        // RFC 6266's extended form wins, percent-decoded in its charset.
        let both = "attachment; filename=\"plain.txt\"; filename*=UTF-8''na%C3%AFve%20r.txt";
        assert_eq!(file_name(&u("http://h/x.bin"), Some(both)), "naïve r.txt");
        let latin = "attachment; filename*=iso-8859-1'en'caf%E9.txt";
        assert_eq!(file_name(&u("http://h/x.bin"), Some(latin)), "café.txt");
        let walks = "attachment; filename*=UTF-8''..%2F..%2Fetc%2Fshadow";
        assert_eq!(file_name(&u("http://h/x.bin"), Some(walks)), "shadow");
        let ascii = "attachment; filename*=us-ascii''a%20b.txt";
        assert_eq!(file_name(&u("http://h/x.bin"), Some(ascii)), "a b.txt");
        let bad = "attachment; filename*=UTF-8''a%zz.txt; filename=ok.txt";
        assert_eq!(file_name(&u("http://h/x.bin"), Some(bad)), "ok.txt");
        let unknown = "attachment; filename*=koi8-r''x; filename=y.txt";
        assert_eq!(file_name(&u("http://h/x.bin"), Some(unknown)), "y.txt");
    }
}
