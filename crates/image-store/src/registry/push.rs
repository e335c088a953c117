//! Push: blobs (existence check, cross-repository mount, monolithic upload), then the manifest.

use super::client::{same_origin, Ctx};
use super::pull::{label, to_digest};
use super::{Registry, RegistryError};
use crate::content::ContentStore;
use crate::digest::Digest;
use crate::manifest::{parse_manifest, Manifest};
use crate::reference::Reference;
use oci_spec::image::Descriptor;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Response, StatusCode, Url};
use std::io::Read as _;
use std::sync::atomic::Ordering;

const CHUNK: usize = 1 << 20;

impl Registry {
    /// Push the image whose manifest (or index) blob is `manifest` from `store` to
    /// `reference` (its tag, else its digest, else `latest`).
    ///
    /// For the config and each layer: HEAD the blob and skip it if present; else, when
    /// `mount_from` names another repository on the same registry, try a
    /// cross-repository mount; else upload it (POST, then one streaming PUT). For an
    /// index, each child manifest is pushed by digest first. Then the manifest is PUT
    /// with its media type. Returns the manifest digest.
    pub fn push(
        &self,
        store: &ContentStore,
        manifest: &Descriptor,
        reference: &Reference,
        mount_from: Option<&str>,
    ) -> Result<Digest, RegistryError> {
        let repo = &reference.repository;
        let mount_from = mount_from.filter(|m| *m != repo.as_str());
        let mut scope = format!("repository:{repo}:pull,push");
        if let Some(from) = mount_from {
            scope.push_str(&format!(" repository:{from}:pull"));
        }
        let ctx = self.repo_ctx(&reference.registry, repo, scope)?;
        let target = match (&reference.tag, &reference.digest) {
            (Some(t), _) => t.clone(),
            (None, Some(d)) => d.to_string(),
            (None, None) => "latest".into(),
        };
        self.push_manifest(store, &ctx, manifest, &target, mount_from)
    }

    fn push_manifest(
        &self,
        store: &ContentStore,
        ctx: &Ctx,
        desc: &Descriptor,
        target: &str,
        mount_from: Option<&str>,
    ) -> Result<Digest, RegistryError> {
        let digest = to_digest(desc.digest())?;
        let bytes = store.read_verified(&digest)?;
        let media_type = desc.media_type().to_string();
        match parse_manifest(&bytes, Some(&media_type))
            .map_err(|e| label(e, &digest.to_string()))?
        {
            Manifest::Image(m) => {
                self.push_blob(store, ctx, m.config(), mount_from)?;
                for l in m.layers() {
                    self.push_blob(store, ctx, l, mount_from)?;
                }
            }
            Manifest::Index(idx) => {
                for child in idx.manifests() {
                    self.push_manifest(store, ctx, child, child.digest().as_ref(), mount_from)?;
                }
            }
        }
        let url = self.url(ctx, &format!("v2/{}/manifests/{target}", ctx.repository))?;
        let what = format!("manifest {digest} for {}:{target}", ctx.repository);
        self.rt.block_on(async {
            let http = self.http(&url)?;
            let resp = self
                .send(ctx, || {
                    http.put(url.clone())
                        .header(CONTENT_TYPE, media_type.as_str())
                        .body(bytes.clone())
                })
                .await?;
            let resp = self.expect_ok(ctx, resp, &what).await?;
            check_digest_header(ctx, &resp, &digest)
        })?;
        Ok(digest)
    }

    fn url(&self, ctx: &Ctx, path: &str) -> Result<Url, RegistryError> {
        ctx.base.join(path).map_err(|e| RegistryError::Protocol {
            registry: ctx.registry.clone(),
            reason: format!("bad URL {path:?}: {e}"),
        })
    }

    fn push_blob(
        &self,
        store: &ContentStore,
        ctx: &Ctx,
        desc: &Descriptor,
        mount_from: Option<&str>,
    ) -> Result<(), RegistryError> {
        let digest = to_digest(desc.digest())?;
        let size = store.info(&digest)?.ok_or_else(|| {
            RegistryError::Store(crate::error::Error::BlobNotFound(digest.clone()))
        })?;
        let what = format!("blob {digest} in {}", ctx.repository);
        let head_url = self.blob_url(ctx, &digest)?;
        self.stats.blob_heads.fetch_add(1, Ordering::Relaxed);
        let exists = self.rt.block_on(async {
            let http = self.http(&head_url)?;
            let resp = self.send(ctx, || http.head(head_url.clone())).await?;
            match resp.status() {
                s if s.is_success() => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => self.expect_ok(ctx, resp, &what).await.map(|_| false),
            }
        })?;
        if exists {
            return Ok(());
        }
        let uploads = self.url(ctx, &format!("v2/{}/blobs/uploads/", ctx.repository))?;
        let location = self.rt.block_on(async {
            let mut url = uploads.clone();
            if let Some(from) = mount_from {
                url.query_pairs_mut()
                    .append_pair("mount", &digest.to_string())
                    .append_pair("from", from);
            }
            let http = self.http(&url)?;
            let resp = self
                .send(ctx, || http.post(url.clone()).header(CONTENT_LENGTH, "0"))
                .await?;
            if resp.status() == StatusCode::CREATED && mount_from.is_some() {
                self.stats.blob_mounts.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
            if resp.status() != StatusCode::ACCEPTED {
                let e = self
                    .expect_ok(ctx, resp, &format!("starting the upload of {what}"))
                    .await
                    .err();
                return Err(e.unwrap_or_else(|| RegistryError::Protocol {
                    registry: ctx.registry.clone(),
                    reason: format!("starting the upload of {what}: expected 202 Accepted"),
                }));
            }
            location(ctx, &resp, &uploads).map(Some)
        })?;
        let Some(mut location) = location else {
            return Ok(());
        };
        location
            .query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        self.stats.blob_uploads.fetch_add(1, Ordering::Relaxed);
        let path = store.blob_path(&digest);
        let http = self.http(&location)?;
        let make = || {
            let body = match std::fs::File::open(&path) {
                Ok(f) => reqwest::Body::wrap_stream(file_stream(f)),
                Err(e) => reqwest::Body::wrap_stream(futures_util::stream::once(async move {
                    Err::<Vec<u8>, _>(e)
                })),
            };
            http.put(location.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(body)
        };
        self.rt.block_on(async {
            let resp = if same_origin(&location, &ctx.base) {
                self.send(ctx, make).await?
            } else {
                make().send().await.map_err(|e| RegistryError::Connect {
                    registry: ctx.registry.clone(),
                    source: e,
                })?
            };
            let resp = self
                .expect_ok(ctx, resp, &format!("uploading {what}"))
                .await?;
            check_digest_header(ctx, &resp, &digest)
        })
    }
}

/// Stream a file in 1 MiB chunks (local reads are short; done inline).
fn file_stream(
    f: std::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    futures_util::stream::unfold(Some(f), |f| async move {
        let mut f = f?;
        let mut buf = vec![0u8; CHUNK];
        match f.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

fn location(ctx: &Ctx, resp: &Response, base: &Url) -> Result<Url, RegistryError> {
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| RegistryError::Protocol {
            registry: ctx.registry.clone(),
            reason: "upload started without a Location header".into(),
        })?;
    base.join(loc).map_err(|e| RegistryError::Protocol {
        registry: ctx.registry.clone(),
        reason: format!("upload Location {loc:?} is not a URL: {e}"),
    })
}

fn check_digest_header(ctx: &Ctx, resp: &Response, expected: &Digest) -> Result<(), RegistryError> {
    if let Some(h) = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        if h != expected.to_string() {
            return Err(RegistryError::Protocol {
                registry: ctx.registry.clone(),
                reason: format!("registry stored {h} where berth sent {expected}"),
            });
        }
    }
    Ok(())
}
