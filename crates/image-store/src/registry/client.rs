//! The HTTP transport: scheme selection, the challenge/auth flow, redirects, and
//! status-to-error mapping.

use super::auth::{parse_www_authenticate, Challenge, TokenResponse};
use super::{RegistryError, RegistryOptions};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::header::{HeaderMap, AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Largest manifest or token response read into memory.
pub(super) const MAX_MANIFEST: usize = 4 << 20;
/// Redirect hops followed for a blob GET.
const MAX_REDIRECTS: usize = 10;

/// Request counters, used by the tests to check that work was skipped.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub blob_heads: AtomicU64,
    pub blob_uploads: AtomicU64,
    pub blob_mounts: AtomicU64,
    pub token_fetches: AtomicU64,
}

/// A registry client (blocking API).
///
/// Holds a small tokio runtime and `reqwest` clients (connection pooling): one for
/// plain http, and one with rustls and the system CA store, built on the first https
/// request (loading the CA store costs ~15 ms, which a pull from a local registry
/// need not pay); plus a cache of `Authorization` values per (registry, scope).
/// Its methods block the calling thread; do not call them from inside an async
/// runtime (use `spawn_blocking`).
pub struct Registry {
    pub(super) opts: RegistryOptions,
    pub(super) rt: tokio::runtime::Runtime,
    plain: reqwest::Client,
    /// The TLS client, or why it could not be built (kept to name on every https
    /// request).
    pub(super) tls: std::sync::OnceLock<Result<reqwest::Client, String>>,
    auth_cache: Mutex<HashMap<(String, String), String>>,
    pub(crate) stats: Stats,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("insecure_registries", &self.opts.insecure_registries)
            .finish_non_exhaustive()
    }
}

/// Everything a request needs to know about where it goes and how to authenticate.
#[derive(Debug, Clone)]
pub(super) struct Ctx {
    /// Registry as the user named it (for messages, credentials and the cache).
    pub registry: String,
    /// `http(s)://host[:port]` of the API endpoint.
    pub base: Url,
    pub repository: String,
    /// Token scopes, space separated (empty for `/v2/`).
    pub scope: String,
    pub creds: Option<(String, String)>,
    pub use_cache: bool,
}

/// What both clients share: no automatic redirects (the pull follows them itself,
/// dropping credentials across hosts), berth's user agent, timeouts.
fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
}

fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        r => r,
    }
}

fn excerpt(body: &str) -> String {
    let t: String = body.trim().chars().take(200).collect();
    t.replace(['\n', '\r'], " ")
}

impl Registry {
    /// Create a client. Fails only if the TLS configuration or runtime cannot be built.
    pub fn new(opts: RegistryOptions) -> Result<Self, RegistryError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("berth-registry")
            .enable_all()
            .build()
            .map_err(|e| RegistryError::Protocol {
                registry: String::new(),
                reason: format!("cannot start the I/O runtime: {e}"),
            })?;
        let plain = client_builder()
            .tls_built_in_native_certs(false)
            .build()
            .map_err(|e| RegistryError::Connect {
                registry: String::new(),
                source: e,
            })?;
        let mut opts = opts;
        opts.max_concurrent = opts.max_concurrent.max(1);
        Ok(Self {
            opts,
            rt,
            plain,
            tls: std::sync::OnceLock::new(),
            auth_cache: Mutex::new(HashMap::new()),
            stats: Stats::default(),
        })
    }

    /// The client for `url`: the plain one for http, the TLS one (built now if
    /// this is the first https request) otherwise; fails, naming the cause (e.g. no
    /// usable system CA store), when the TLS client cannot be built.
    pub(super) fn http(&self, url: &Url) -> Result<&reqwest::Client, RegistryError> {
        if url.scheme() == "http" {
            return Ok(&self.plain);
        }
        let tls = self.tls.get_or_init(|| {
            client_builder()
                .tls_built_in_native_certs(true)
                .build()
                .map_err(|e| {
                    let mut msg = e.to_string();
                    let mut cause = std::error::Error::source(&e);
                    while let Some(c) = cause {
                        msg.push_str(&format!(": {c}"));
                        cause = c.source();
                    }
                    msg
                })
        });
        tls.as_ref().map_err(|e| RegistryError::Protocol {
            registry: url.host_str().unwrap_or_default().to_string(),
            reason: format!("cannot set up TLS with the system CA store: {e}"),
        })
    }

    /// Whether `registry` (`host` or `host:port`) is spoken to over plain http.
    pub(super) fn is_insecure(&self, registry: &str) -> bool {
        let host = if let Some(rest) = registry.strip_prefix('[') {
            rest.split(']').next().unwrap_or(rest)
        } else {
            registry.rsplit_once(':').map_or(registry, |(h, p)| {
                if p.chars().all(|c| c.is_ascii_digit()) {
                    h
                } else {
                    registry
                }
            })
        };
        matches!(host, "localhost" | "127.0.0.1" | "::1")
            || host.starts_with("127.")
            || self
                .opts
                .insecure_registries
                .iter()
                .any(|r| r == registry || r == host)
    }

    pub(super) fn ctx(
        &self,
        registry: &str,
        repository: &str,
        scope: String,
        creds: Option<(String, String)>,
    ) -> Result<Ctx, RegistryError> {
        let host = api_host(registry);
        let scheme = if self.is_insecure(registry) {
            "http"
        } else {
            "https"
        };
        let base =
            Url::parse(&format!("{scheme}://{host}/")).map_err(|e| RegistryError::Protocol {
                registry: registry.into(),
                reason: format!("{host:?} is not a valid registry address: {e}"),
            })?;
        Ok(Ctx {
            registry: registry.into(),
            base,
            repository: repository.into(),
            scope,
            creds,
            use_cache: true,
        })
    }

    /// Ctx for pulling/pushing `repository` on `registry` with the configured credentials.
    pub(super) fn repo_ctx(
        &self,
        registry: &str,
        repository: &str,
        scope: String,
    ) -> Result<Ctx, RegistryError> {
        self.ctx(
            registry,
            repository,
            scope,
            self.opts.credentials.get(registry),
        )
    }

    /// Login check: `GET /v2/` through the auth flow with these credentials.
    pub fn check_login(&self, registry: &str, user: &str, pass: &str) -> Result<(), RegistryError> {
        let mut ctx = self.ctx(
            registry,
            "",
            String::new(),
            Some((user.into(), pass.into())),
        )?;
        ctx.use_cache = false;
        let url = ctx.base.join("v2/").expect("static path");
        self.rt.block_on(async {
            let http = self.http(&url)?;
            let resp = self.send(&ctx, || http.get(url.clone())).await?;
            self.expect_ok(&ctx, resp, "the API root /v2/")
                .await
                .map(drop)
        })
    }

    pub(super) fn unauthorized(&self, ctx: &Ctx) -> RegistryError {
        let mut hint = if ctx.creds.is_some() {
            format!(
                "the stored credentials were rejected; run `berth login {}` again",
                ctx.registry
            )
        } else {
            format!(
                "no credentials for this registry; run `berth login {}`",
                ctx.registry
            )
        };
        if ctx.creds.is_none() {
            if let Some(h) = self.opts.credentials.unsupported_helper() {
                hint.push_str(&format!(
                    " (docker's config.json uses credential helper {h:?}, which berth does not support)"
                ));
            }
        }
        if !ctx.repository.is_empty() {
            hint.push_str("; also check that the repository exists and you may access it");
        }
        RegistryError::Unauthorized {
            registry: ctx.registry.clone(),
            repository: ctx.repository.clone(),
            hint,
        }
    }

    fn connect_err(ctx: &Ctx, e: reqwest::Error) -> RegistryError {
        RegistryError::Connect {
            registry: ctx.registry.clone(),
            source: e,
        }
    }

    /// Send a request built by `make`, answering authentication challenges: anonymous
    /// (or the cached authorization) first; on 401 Basic or a Bearer token, then retry.
    pub(super) async fn send(
        &self,
        ctx: &Ctx,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let key = (ctx.registry.clone(), ctx.scope.clone());
        let cached = if ctx.use_cache {
            self.auth_cache.lock().expect("poisoned").get(&key).cloned()
        } else {
            None
        };
        let mut req = make();
        if let Some(a) = &cached {
            req = req.header(AUTHORIZATION, a);
        }
        let resp = req.send().await.map_err(|e| Self::connect_err(ctx, e))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        drop(resp);
        let Some(challenge) = challenge else {
            return Err(self.unauthorized(ctx));
        };
        let challenge = parse_www_authenticate(&challenge).map_err(|e| match e {
            RegistryError::Protocol { reason, .. } => RegistryError::Protocol {
                registry: ctx.registry.clone(),
                reason,
            },
            e => e,
        })?;
        let value = match challenge {
            Challenge::Basic { .. } => match &ctx.creds {
                Some((u, p)) => format!("Basic {}", B64.encode(format!("{u}:{p}"))),
                None => return Err(self.unauthorized(ctx)),
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => self.fetch_token(ctx, &realm, service, scope).await?,
        };
        let resp = make()
            .header(AUTHORIZATION, &value)
            .send()
            .await
            .map_err(|e| Self::connect_err(ctx, e))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            self.auth_cache.lock().expect("poisoned").remove(&key);
            return Err(self.unauthorized(ctx));
        }
        if ctx.use_cache {
            self.auth_cache.lock().expect("poisoned").insert(key, value);
        }
        Ok(resp)
    }

    async fn fetch_token(
        &self,
        ctx: &Ctx,
        realm: &str,
        service: Option<String>,
        challenge_scope: Option<String>,
    ) -> Result<String, RegistryError> {
        self.stats.token_fetches.fetch_add(1, Ordering::Relaxed);
        let url = Url::parse(realm).map_err(|e| RegistryError::Protocol {
            registry: ctx.registry.clone(),
            reason: format!("token realm {realm:?} is not a URL: {e}"),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RegistryError::Protocol {
                registry: ctx.registry.clone(),
                reason: format!("token realm {realm:?} is not an http(s) URL"),
            });
        }
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        let scopes = if ctx.scope.is_empty() {
            challenge_scope.unwrap_or_default()
        } else {
            ctx.scope.clone()
        };
        for s in scopes.split(' ').filter(|s| !s.is_empty()) {
            query.push(("scope", s.to_string()));
        }
        let mut req = self.http(&url)?.get(url).query(&query);
        if let Some((u, p)) = &ctx.creds {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.map_err(|e| Self::connect_err(ctx, e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.unauthorized(ctx));
        }
        let body = read_limited(ctx, resp, MAX_MANIFEST).await?;
        if !status.is_success() {
            return Err(RegistryError::Http {
                registry: ctx.registry.clone(),
                status: status.as_u16(),
                body_excerpt: format!(
                    "token server {realm}: {}",
                    excerpt(&String::from_utf8_lossy(&body))
                ),
            });
        }
        let t: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                registry: ctx.registry.clone(),
                reason: format!("token server {realm} answered invalid JSON: {e}"),
            })?;
        let token = t
            .token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Protocol {
                registry: ctx.registry.clone(),
                reason: format!("token server {realm} answered without `token` or `access_token`"),
            })?;
        Ok(format!("Bearer {token}"))
    }

    /// GET `url` (a blob), following redirects; Authorization is only sent to the
    /// registry's own origin.
    pub(super) async fn get_following(
        &self,
        ctx: &Ctx,
        url: Url,
        extra: HeaderMap,
    ) -> Result<Response, RegistryError> {
        let http = self.http(&url)?;
        let mut resp = self
            .send(ctx, || http.get(url.clone()).headers(extra.clone()))
            .await?;
        let mut current = url;
        for _ in 0..MAX_REDIRECTS {
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let loc = resp
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| RegistryError::Protocol {
                    registry: ctx.registry.clone(),
                    reason: format!("redirect {} without a Location header", resp.status()),
                })?;
            let next = current.join(loc).map_err(|e| RegistryError::Protocol {
                registry: ctx.registry.clone(),
                reason: format!("redirect to invalid location {loc:?}: {e}"),
            })?;
            resp = if same_origin(&next, &ctx.base) {
                let n = next.clone();
                let http = self.http(&n)?;
                self.send(ctx, || http.get(n.clone()).headers(extra.clone()))
                    .await?
            } else {
                self.http(&next)?
                    .get(next.clone())
                    .headers(extra.clone())
                    .send()
                    .await
                    .map_err(|e| Self::connect_err(ctx, e))?
            };
            current = next;
        }
        Err(RegistryError::Protocol {
            registry: ctx.registry.clone(),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Map a non-success status to an error; 404 becomes [`RegistryError::NotFound`] for `what`.
    pub(super) async fn expect_ok(
        &self,
        ctx: &Ctx,
        resp: Response,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                what: what.to_string(),
                registry: ctx.registry.clone(),
            });
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.unauthorized(ctx));
        }
        let body = read_limited(ctx, resp, 4096).await.unwrap_or_default();
        Err(RegistryError::Http {
            registry: ctx.registry.clone(),
            status: status.as_u16(),
            body_excerpt: format!("{what}: {}", excerpt(&String::from_utf8_lossy(&body))),
        })
    }
}

pub(super) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Read a whole body, refusing more than `limit` bytes.
pub(super) async fn read_limited(
    ctx: &Ctx,
    mut resp: Response,
    limit: usize,
) -> Result<Vec<u8>, RegistryError> {
    let too_big = || RegistryError::Protocol {
        registry: ctx.registry.clone(),
        reason: format!("response larger than {limit} bytes"),
    };
    if resp.content_length().is_some_and(|l| l > limit as u64) {
        return Err(too_big());
    }
    let mut out = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(|e| RegistryError::Protocol {
        registry: ctx.registry.clone(),
        reason: format!("reading the response failed: {e}"),
    })? {
        if out.len() + c.len() > limit {
            return Err(too_big());
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}
