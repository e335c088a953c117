//! Image references, normalised the way Docker does it.
//!
//! `busybox` becomes `docker.io/library/busybox:latest`; `host:5000/a/b@sha256:...`
//! keeps its registry and digest. The first path component is a registry when it
//! contains `.` or `:`, is `localhost`, or has uppercase letters (Docker's rule).

use crate::digest::Digest;
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// Docker Hub's canonical registry name.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Docker Hub's API host.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The tag used when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// A normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// Registry host (and port), e.g. `docker.io`, `localhost:5000`.
    pub registry: String,
    /// Repository path within the registry, e.g. `library/busybox`.
    pub repository: String,
    /// Tag; `latest` when the input named neither tag nor digest.
    pub tag: Option<String>,
    /// Digest, when the input named one.
    pub digest: Option<Digest>,
}

fn invalid(input: &str, reason: impl Into<String>) -> Error {
    Error::InvalidReference {
        input: input.to_string(),
        reason: reason.into(),
    }
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        // a separator run
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Domain: components `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?` joined by `.`, or a
/// bracketed IPv6 address, optionally followed by `:port`.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return false;
        };
        let addr = &rest[..end];
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(':') {
            Some(p) => ("", Some(p)),
            None if after.is_empty() => ("", None),
            None => return false,
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if d.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

impl Reference {
    /// Parse and normalise a reference as `docker pull` would.
    pub fn parse(s: &str) -> Result<Reference> {
        if s.is_empty() {
            return Err(invalid(s, "repository name must not be empty"));
        }
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid(
                s,
                "cannot specify 64-byte hexadecimal strings as a repository name",
            ));
        }
        // digest
        let (rest, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let dg = Digest::parse(d).map_err(|_| {
                    invalid(
                        s,
                        format!("invalid digest {d:?} (only sha256 is supported)"),
                    )
                })?;
                (n, Some(dg))
            }
            None => (s, None),
        };
        // tag: a ':' after the last '/'
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                if !valid_tag(t) {
                    return Err(invalid(s, format!("invalid tag {t:?}")));
                }
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(invalid(s, "repository name must not be empty"));
        }
        // domain
        let (mut registry, mut repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.to_lowercase() != first =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if registry == LEGACY_DEFAULT_REGISTRY {
            registry = DEFAULT_REGISTRY.to_string();
        }
        if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            repository = format!("{OFFICIAL_PREFIX}{repository}");
        }
        // Docker limits the normalised name (`docker.io/library/x`), not the
        // one typed: a short name within 255 characters can exceed it.
        if registry.len() + 1 + repository.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(invalid(
                s,
                format!("repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"),
            ));
        }
        if repository.to_lowercase() != repository {
            return Err(invalid(
                s,
                format!("repository name ({repository}) must be lowercase"),
            ));
        }
        if !valid_domain(&registry) {
            return Err(invalid(s, format!("invalid registry name {registry:?}")));
        }
        if let Some(bad) = repository.split('/').find(|c| !valid_path_component(c)) {
            return Err(invalid(
                s,
                format!("invalid repository path component {bad:?}"),
            ));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some(DEFAULT_TAG.to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    fn suffix(&self) -> String {
        let mut s = String::new();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
        s
    }

    /// The full form: `docker.io/library/busybox:latest` (tag and/or `@digest`).
    pub fn full(&self) -> String {
        format!("{}{}", self.name(), self.suffix())
    }

    /// `registry/repository` without tag or digest, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form docker shows: `busybox:latest`, `host:5000/a/b:tag`.
    pub fn familiar(&self) -> String {
        format!("{}{}", self.familiar_repository(), self.suffix())
    }

    /// The repository as docker shows it: `busybox`, `user/app`, `host:5000/a/b`.
    pub fn familiar_repository(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            match self.repository.strip_prefix(OFFICIAL_PREFIX) {
                Some(r) if !r.contains('/') => r.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The same repository with this tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }

    /// The same repository with this digest (and no tag).
    pub fn with_digest(&self, d: Digest) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(d),
        }
    }

    /// The API host for the registry: `docker.io` -> `registry-1.docker.io`, else the registry itself.
    pub fn api_host(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            DOCKER_HUB_API_HOST.to_string()
        } else {
            self.registry.clone()
        }
    }

    /// What to ask the registry's manifest endpoint for: the digest if any, else the tag.
    pub fn tag_or_digest(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full())
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    /// Found by the `reference` fuzz target: a 244-character name parsed,
    /// but its normalised form (`docker.io/library/...`, 262) did not.
    #[test]
    fn length_limit_applies_to_the_normalised_name() {
        let found = format!(
            "locaio-oc.ilo.klocai-oc.ilo.klocaio-oc.ilo.keo8o.ker.ilib.ao-oc{}.ilo.aaaaaakeo",
            "a".repeat(166)
        );
        let err = Reference::parse(&found).unwrap_err().to_string();
        assert!(err.contains("more than 255 characters"), "{err}");
        // Exactly 255 once normalised: accepted, and it prints to a string that parses back.
        let longest = "a".repeat(255 - "docker.io/library/".len());
        let r = Reference::parse(&longest).unwrap();
        assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
        assert!(Reference::parse(&format!("{longest}a")).is_err());
        let longest_host = format!("example.com/{}", "b".repeat(255 - 12));
        assert!(Reference::parse(&longest_host).is_ok());
        assert!(Reference::parse(&format!("{longest_host}b")).is_err());
    }

    #[test]
    fn normalisation_table() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "busybox:1.36",
            ),
            (
                "library/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            ("user/app:v1", "docker.io/user/app:v1", "user/app:v1"),
            (
                "docker.io/library/a/b",
                "docker.io/library/a/b:latest",
                "library/a/b:latest",
            ),
            ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
            (
                "localhost:5000/x:t",
                "localhost:5000/x:t",
                "localhost:5000/x:t",
            ),
            (
                "host:5000/a/b:tag",
                "host:5000/a/b:tag",
                "host:5000/a/b:tag",
            ),
            (
                "example.com/a",
                "example.com/a:latest",
                "example.com/a:latest",
            ),
            (
                "Example.com/a",
                "Example.com/a:latest",
                "Example.com/a:latest",
            ),
            ("[::1]:5000/a", "[::1]:5000/a:latest", "[::1]:5000/a:latest"),
            (
                "a__b/c.d-e--f",
                "docker.io/a__b/c.d-e--f:latest",
                "a__b/c.d-e--f:latest",
            ),
            (
                "a:Tag_1.0-x",
                "docker.io/library/a:Tag_1.0-x",
                "a:Tag_1.0-x",
            ),
        ];
        for (input, full, familiar) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.full(), *full, "{input}");
            assert_eq!(r.familiar(), *familiar, "{input}");
            assert_eq!(r.to_string(), *full);
            // full form parses back to itself
            assert_eq!(Reference::parse(full).expect("reparse"), r);
        }
        let r = Reference::parse(&format!("host:5000/a/b@{D}")).expect("digest ref");
        assert_eq!(r.registry, "host:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref().map(|d| d.as_str()), Some(D));
        assert_eq!(r.full(), format!("host:5000/a/b@{D}"));
        assert_eq!(r.api_host(), "host:5000");
        let r = Reference::parse(&format!("busybox:1@{D}")).expect("tag+digest");
        assert_eq!(r.full(), format!("docker.io/library/busybox:1@{D}"));
        assert_eq!(r.familiar(), format!("busybox:1@{D}"));
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.tag_or_digest(), D);
        let t = r.with_tag("2");
        assert_eq!(t.full(), "docker.io/library/busybox:2");
        assert_eq!(t.familiar_repository(), "busybox");
    }

    #[test]
    fn errors() {
        let long = "a".repeat(256);
        let hex64 = "a".repeat(64);
        let longtag = format!("x:{}", "a".repeat(129));
        let bad: Vec<&str> = vec![
            "",
            ":tag",
            "Busybox",
            "docker.io/Library/busybox",
            "busybox:",
            "busybox:-tag",
            "busybox:.tag",
            &longtag,
            "busybox:ta g",
            "busybox@sha256:abc",
            "busybox@md5:abc",
            "a//b",
            "a/",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "host:port/a",
            "exa_mple.com/a",
            &long,
            &hex64,
        ];
        for input in bad {
            match Reference::parse(input) {
                Err(Error::InvalidReference { .. }) => {}
                other => panic!("{input:?} should be refused, got {other:?}"),
            }
        }
    }
}
