//! `WWW-Authenticate` challenge parsing and token responses.

use super::RegistryError;
use std::collections::BTreeMap;

/// An authentication challenge from a registry's `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP Basic authentication.
    Basic {
        /// The protection realm, if given.
        realm: Option<String>,
    },
    /// Token authentication: fetch a token from `realm`.
    Bearer {
        /// URL of the token server.
        realm: String,
        /// The `service` parameter to pass to the token server.
        service: Option<String>,
        /// The `scope` the registry asked for, if any.
        scope: Option<String>,
    },
}

fn protocol(reason: String) -> RegistryError {
    RegistryError::Protocol {
        registry: String::new(),
        reason,
    }
}

/// Parse a `WWW-Authenticate` header value such as
/// `Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull,push"`
/// or `Basic realm="berth"`.
///
/// Quoted strings may contain commas and backslash escapes; several challenges in
/// one header are accepted and the first Bearer (else the first Basic) one is
/// returned. Never panics: malformed input gives [`RegistryError::Protocol`] (with an
/// empty `registry`, which callers fill in).
pub fn parse_www_authenticate(header: &str) -> Result<Challenge, RegistryError> {
    let challenges = parse_all(header)?;
    let pick = challenges
        .iter()
        .find(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .or_else(|| {
            challenges
                .iter()
                .find(|(s, _)| s.eq_ignore_ascii_case("basic"))
        });
    let Some((scheme, params)) = pick else {
        return Err(protocol(format!(
            "unsupported authentication challenge {:?}; berth supports Basic and Bearer",
            excerpt(header)
        )));
    };
    if scheme.eq_ignore_ascii_case("basic") {
        return Ok(Challenge::Basic {
            realm: params.get("realm").cloned(),
        });
    }
    let realm = params
        .get("realm")
        .filter(|r| !r.is_empty())
        .cloned()
        .ok_or_else(|| {
            protocol(format!(
                "Bearer challenge without a realm: {:?}",
                excerpt(header)
            ))
        })?;
    Ok(Challenge::Bearer {
        realm,
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

fn excerpt(s: &str) -> String {
    s.chars().take(200).collect()
}

type Parsed = Vec<(String, BTreeMap<String, String>)>;

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~/:".contains(c)
}

fn parse_all(header: &str) -> Result<Parsed, RegistryError> {
    let chars: Vec<char> = header.chars().collect();
    let mut i = 0;
    let mut out: Parsed = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && (chars[*i] == ' ' || chars[*i] == '\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && is_token_char(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    loop {
        // skip separators between challenges/params
        while i < chars.len() && (chars[i] == ',' || chars[i] == ' ' || chars[i] == '\t') {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let name = token(&mut i);
        if name.is_empty() {
            return Err(protocol(format!(
                "malformed WWW-Authenticate header {:?}",
                excerpt(header)
            )));
        }
        skip_ws(&mut i);
        if i < chars.len() && chars[i] == '=' {
            // a parameter of the current challenge
            let Some((_, params)) = out.last_mut() else {
                return Err(protocol(format!(
                    "WWW-Authenticate header {:?} has a parameter before any scheme",
                    excerpt(header)
                )));
            };
            i += 1;
            skip_ws(&mut i);
            let value = if i < chars.len() && chars[i] == '"' {
                i += 1;
                let mut v = String::new();
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(protocol(format!(
                                "unterminated quoted string in WWW-Authenticate header {:?}",
                                excerpt(header)
                            )))
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') if i + 1 < chars.len() => {
                            v.push(chars[i + 1]);
                            i += 2;
                        }
                        Some(c) => {
                            v.push(*c);
                            i += 1;
                        }
                    }
                }
                v
            } else {
                token(&mut i)
            };
            params.insert(name.to_ascii_lowercase(), value);
        } else {
            // a new scheme
            out.push((name, BTreeMap::new()));
            skip_ws(&mut i);
            let save = i;
            let t = token(&mut i);
            let mut k = i;
            while k < chars.len() && chars[k] == '=' {
                k += 1;
            }
            let mut end = k;
            while end < chars.len() && (chars[end] == ' ' || chars[end] == '\t') {
                end += 1;
            }
            if !t.is_empty() && (end == chars.len() || chars[end] == ',') {
                i = end; // token68 (`Basic abc==`): tolerated and ignored
            } else {
                i = save; // parameters follow
            }
            continue;
        }
        if i < chars.len() && !matches!(chars[i], ',' | ' ' | '\t') {
            return Err(protocol(format!(
                "unexpected character {:?} in WWW-Authenticate header {:?}",
                chars[i],
                excerpt(header)
            )));
        }
    }
    Ok(out)
}

/// The token server's JSON answer.
#[derive(serde::Deserialize)]
pub(crate) struct TokenResponse {
    pub token: Option<String>,
    pub access_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_quoted_commas() {
        let c = parse_www_authenticate(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            }
        );
    }

    #[test]
    fn basic_and_spaces_and_case() {
        assert_eq!(
            parse_www_authenticate(r#"basic  Realm = "berth, the realm""#).unwrap(),
            Challenge::Basic {
                realm: Some("berth, the realm".into())
            }
        );
        assert_eq!(
            parse_www_authenticate("Basic").unwrap(),
            Challenge::Basic { realm: None }
        );
    }

    #[test]
    fn missing_params_and_unquoted() {
        assert_eq!(
            parse_www_authenticate("Bearer realm=http://127.0.0.1:1/token").unwrap(),
            Challenge::Bearer {
                realm: "http://127.0.0.1:1/token".into(),
                service: None,
                scope: None
            }
        );
        let e = parse_www_authenticate(r#"Bearer service="x""#).unwrap_err();
        assert!(e.to_string().contains("without a realm"), "{e}");
    }

    #[test]
    fn escapes_and_multiple_challenges() {
        assert_eq!(
            parse_www_authenticate(r#"Basic realm="a\"b", Bearer realm="http://h/t""#).unwrap(),
            Challenge::Bearer {
                realm: "http://h/t".into(),
                service: None,
                scope: None
            }
        );
    }

    #[test]
    fn garbage_never_panics() {
        for g in [
            "",
            " ",
            ",",
            "=",
            "\"",
            "Bearer realm=\"unterminated",
            "realm=x",
            "Bearer ==,,=",
            "Negotiate abc",
            "Bearer realm=\"\\",
            "Bearer realm=\"x\"junk",
            "é\u{0}😀",
            "Basic abc==",
            "Bearer realm=\"a\",,,, scope=",
        ] {
            let _ = parse_www_authenticate(g);
        }
        assert!(parse_www_authenticate("Negotiate abc").is_err());
        assert!(parse_www_authenticate("").is_err());
        assert!(parse_www_authenticate("Bearer realm=\"unterminated").is_err());
        assert!(parse_www_authenticate("realm=x").is_err());
        // pseudo-fuzz: every prefix of a valid header
        let h = r#"Bearer realm="https://a/b?c=d,e",service="s",scope="repository:x:pull""#;
        for (i, _) in h.char_indices() {
            let _ = parse_www_authenticate(&h[..i]);
        }
        // random strings over the interesting alphabet
        let alphabet: Vec<char> = "Bearer Basic realm=\"\\,= \t:/xé".chars().collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let len = (x % 40) as usize;
            let s: String = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = parse_www_authenticate(&s);
        }
        // token68 basic is tolerated
        assert_eq!(
            parse_www_authenticate("Basic abc==").unwrap(),
            Challenge::Basic { realm: None }
        );
    }
}
