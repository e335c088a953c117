//! Registry credentials: berth's `auth.json` plus Docker's `config.json` as a fallback.

use super::RegistryError;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Registry credentials.
///
/// Stored in berth's `$XDG_CONFIG_HOME/berth/auth.json` (or `~/.config/berth/auth.json`),
/// mode 0600, in Docker's `{"auths": {"host": {"auth": base64(user:pass)}}}` format.
/// `~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`) is read as a fallback; only
/// its `auths` entries are used: credential helpers (`credsStore`, `credHelpers`) are not
/// supported, and [`Credentials::unsupported_helper`] names the one configured there.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    path: Option<PathBuf>,
    /// The whole berth file, so unknown keys survive a rewrite.
    doc: Map<String, Value>,
    primary: BTreeMap<String, (String, String)>,
    fallback: BTreeMap<String, (String, String)>,
    helper: Option<String>,
}

/// Normalise a registry name as used in credential files: strip a scheme and path,
/// and map Docker Hub's aliases to `docker.io`.
fn normalize(registry: &str) -> String {
    let r = registry.trim();
    let r = r
        .strip_prefix("https://")
        .or_else(|| r.strip_prefix("http://"))
        .unwrap_or(r);
    let r = r.split('/').next().unwrap_or(r).to_ascii_lowercase();
    match r.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => r,
    }
}

fn err(path: &Path, reason: impl Into<String>) -> RegistryError {
    RegistryError::Credentials {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn decode_entry(
    path: &Path,
    host: &str,
    v: &Value,
) -> Result<Option<(String, String)>, RegistryError> {
    if let Some(a) = v
        .get("auth")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
    {
        let raw = B64
            .decode(a.trim())
            .map_err(|e| err(path, format!("entry {host:?}: `auth` is not valid base64 ({e}); run `berth login {host}` again")))?;
        let s = String::from_utf8(raw)
            .map_err(|_| err(path, format!("entry {host:?}: `auth` is not UTF-8")))?;
        let (u, p) = s.split_once(':').ok_or_else(|| {
            err(
                path,
                format!("entry {host:?}: `auth` is not base64(user:password)"),
            )
        })?;
        return Ok(Some((u.to_string(), p.to_string())));
    }
    if let (Some(u), Some(p)) = (
        v.get("username").and_then(Value::as_str),
        v.get("password").and_then(Value::as_str),
    ) {
        return Ok(Some((u.to_string(), p.to_string())));
    }
    Ok(None)
}

fn read_json(path: &Path) -> Result<Option<Map<String, Value>>, RegistryError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(path, format!("cannot read: {e}"))),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Map::new()));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(err(path, "not a JSON object; fix or remove the file")),
        Err(e) => Err(err(
            path,
            format!("invalid JSON ({e}); fix or remove the file"),
        )),
    }
}

fn entries(
    path: &Path,
    doc: &Map<String, Value>,
) -> Result<BTreeMap<String, (String, String)>, RegistryError> {
    let mut out = BTreeMap::new();
    match doc.get("auths") {
        None | Some(Value::Null) => {}
        Some(Value::Object(auths)) => {
            for (host, v) in auths {
                if let Some(c) = decode_entry(path, host, v)? {
                    out.insert(normalize(host), c);
                }
            }
        }
        Some(_) => {
            return Err(err(
                path,
                "`auths` is not an object; fix or remove the file",
            ))
        }
    }
    Ok(out)
}

impl Credentials {
    /// Load berth's credentials from `$XDG_CONFIG_HOME/berth/auth.json` (or
    /// `~/.config/berth/auth.json`) with `$DOCKER_CONFIG/config.json` (or
    /// `~/.docker/config.json`) as the read-only fallback. Missing files are fine.
    pub fn load_default() -> Result<Self, RegistryError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".config")))
            .ok_or_else(|| {
                err(
                    Path::new("auth.json"),
                    "neither XDG_CONFIG_HOME nor HOME is set",
                )
            })?;
        let docker = std::env::var_os("DOCKER_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.map(|h| h.join(".docker")))
            .map(|d| d.join("config.json"));
        Self::load(&config.join("berth").join("auth.json"), docker.as_deref())
    }

    /// Load credentials from `path` (berth's file, written by [`Credentials::store`]) and
    /// optionally a Docker `config.json` used for registries missing from `path`.
    /// Missing files are treated as empty.
    pub fn load(path: &Path, fallback: Option<&Path>) -> Result<Self, RegistryError> {
        let doc = read_json(path)?.unwrap_or_default();
        let primary = entries(path, &doc)?;
        let (mut fb, mut helper) = (BTreeMap::new(), None);
        if let Some(f) = fallback {
            if let Some(d) = read_json(f)? {
                fb = entries(f, &d)?;
                helper = d
                    .get("credsStore")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| {
                        d.get("credHelpers")
                            .and_then(Value::as_object)
                            .filter(|m| !m.is_empty())
                            .map(|_| "credHelpers".into())
                    });
            }
        }
        Ok(Self {
            path: Some(path.to_path_buf()),
            doc,
            primary,
            fallback: fb,
            helper,
        })
    }

    /// Username and password for `registry` (`host` or `host:port`; Docker Hub aliases
    /// are equivalent), from berth's file first, then Docker's.
    pub fn get(&self, registry: &str) -> Option<(String, String)> {
        let k = normalize(registry);
        self.primary
            .get(&k)
            .or_else(|| self.fallback.get(&k))
            .cloned()
    }

    /// The credential helper configured in Docker's config.json, which berth does not
    /// support (its credentials are invisible to berth).
    pub fn unsupported_helper(&self) -> Option<&str> {
        self.helper.as_deref()
    }

    /// Save credentials for `registry` in berth's file (created with mode 0600).
    pub fn store(&mut self, registry: &str, user: &str, pass: &str) -> Result<(), RegistryError> {
        let k = normalize(registry);
        let auths = self
            .doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        let auths = auths.as_object_mut().expect("just made an object");
        auths.retain(|h, _| normalize(h) != k);
        let mut entry = Map::new();
        entry.insert(
            "auth".into(),
            Value::String(B64.encode(format!("{user}:{pass}"))),
        );
        auths.insert(k.clone(), Value::Object(entry));
        self.write()?;
        self.primary.insert(k, (user.to_string(), pass.to_string()));
        Ok(())
    }

    /// Remove the credentials for `registry` from berth's file. Returns whether an
    /// entry existed there (Docker's file is never modified).
    pub fn erase(&mut self, registry: &str) -> Result<bool, RegistryError> {
        let k = normalize(registry);
        let mut found = false;
        if let Some(Value::Object(auths)) = self.doc.get_mut("auths") {
            let before = auths.len();
            auths.retain(|h, _| normalize(h) != k);
            found = auths.len() != before;
        }
        if found {
            self.write()?;
        }
        self.primary.remove(&k);
        Ok(found)
    }

    fn write(&self) -> Result<(), RegistryError> {
        let path = self
            .path
            .as_deref()
            .ok_or_else(|| err(Path::new("auth.json"), "no credentials file configured"))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| err(path, format!("cannot create {}: {e}", dir.display())))?;
        let tmp = dir.join(format!(".auth.json.{}.tmp", std::process::id()));
        let data = serde_json::to_vec_pretty(&Value::Object(self.doc.clone()))
            .expect("JSON value serialises");
        let res = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(&data)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        res.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(path, format!("cannot write: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_get_erase_and_fallback() {
        let d = tempfile::tempdir().unwrap();
        let berth = d.path().join("cfg/berth/auth.json");
        let docker = d.path().join("config.json");
        std::fs::write(
            &docker,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="},"q.io":{}},"credsStore":"desktop"}"#,
        )
        .unwrap();
        let mut c = Credentials::load(&berth, Some(&docker)).unwrap();
        assert_eq!(c.get("docker.io"), Some(("hub".into(), "secret".into())));
        assert_eq!(c.get("q.io"), None);
        assert_eq!(c.unsupported_helper(), Some("desktop"));
        c.store("localhost:5000", "user", "pa:ss").unwrap();
        let mode = std::fs::metadata(&berth).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let c2 = Credentials::load(&berth, None).unwrap();
        assert_eq!(
            c2.get("localhost:5000"),
            Some(("user".into(), "pa:ss".into()))
        );
        let text = std::fs::read_to_string(&berth).unwrap();
        assert!(text.contains(&B64.encode("user:pa:ss")), "{text}");
        assert!(c.erase("localhost:5000").unwrap());
        assert!(!c.erase("localhost:5000").unwrap());
        assert_eq!(
            Credentials::load(&berth, None)
                .unwrap()
                .get("localhost:5000"),
            None
        );
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("auth.json");
        std::fs::write(&p, "{not json").unwrap();
        let e = Credentials::load(&p, None).unwrap_err().to_string();
        assert!(e.contains("invalid JSON") && e.contains("auth.json"), "{e}");
        std::fs::write(&p, r#"{"auths":{"h":{"auth":"!!!"}}}"#).unwrap();
        let e = Credentials::load(&p, None).unwrap_err().to_string();
        assert!(e.contains("base64"), "{e}");
    }
}
