//! Pull: resolve, select the platform, fetch config and layers (parallel, resumable).

use super::client::{read_limited, Ctx, MAX_MANIFEST};
use super::follow::{Feeder, Follower};
use super::progress::Progress;
use super::{PullResult, Registry, RegistryError};
use crate::content::ContentStore;
use crate::digest::Digest;
use crate::manifest::{parse_manifest, select_platform, Manifest};
use crate::reference::Reference;
use indicatif::ProgressBar;
use oci_spec::image::{Descriptor, MediaType};
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT as ACCEPT_H, CONTENT_RANGE, CONTENT_TYPE, RANGE,
};
use reqwest::StatusCode;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// `Accept` for manifest requests: OCI index and manifest, Docker manifest list and
/// schema2 manifest (schema1 is not supported).
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Largest config blob read into memory.
const MAX_CONFIG: u64 = 32 << 20;
/// While some received bytes are not queued for a layer's follower (over its budget),
/// the follower learns of new bytes flushed to the ingest file at least this often.
const FEED_STEP: u64 = 256 << 10;

pub(super) fn to_digest(d: &oci_spec::image::Digest) -> Result<Digest, RegistryError> {
    Ok(Digest::parse(d.as_ref())?)
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> RegistryError {
    move |source| {
        RegistryError::Store(crate::error::Error::Io {
            context: what,
            source,
        })
    }
}

/// Re-label a manifest parse error with the reference or digest it came from.
pub(super) fn label(e: crate::error::Error, what: &str) -> RegistryError {
    match e {
        crate::error::Error::InvalidManifest { reason, .. } => {
            RegistryError::Store(crate::error::Error::InvalidManifest {
                digest_or_ref: what.to_string(),
                reason,
            })
        }
        e => RegistryError::Store(e),
    }
}

impl Registry {
    /// Resolve `reference` (GET the manifest with the OCI and Docker schema2 Accept
    /// types), select this host's platform from an index, and store the index (if any),
    /// the selected manifest, its config and every layer in `store`, verified.
    ///
    /// Layers download in parallel (`max_concurrent`), each resumable: an ingest with
    /// data resumes with `Range: bytes=N-` (a 200 answer restarts it). Blobs already
    /// present are skipped; layers are stored as they are (no decompression). The
    /// small blobs (index, manifest, config) are committed only after every layer
    /// verified, so a failed pull leaves no manifest behind; layers that completed
    /// stay (they are valid content and make the next attempt cheaper), and so does
    /// the ingest of an interrupted layer, for resuming.
    pub fn pull(
        &self,
        store: &ContentStore,
        reference: &Reference,
    ) -> Result<PullResult, RegistryError> {
        self.pull_observed(store, reference, &super::NoObserver)
    }

    /// [`Registry::pull`], telling `observer` about the image config before the
    /// layers download and about each layer as soon as it is in the store, so a
    /// caller can unpack layers while later ones still download.
    pub fn pull_observed(
        &self,
        store: &ContentStore,
        reference: &Reference,
        observer: &dyn super::PullObserver,
    ) -> Result<PullResult, RegistryError> {
        let ctx = self.repo_ctx(
            &reference.registry,
            &reference.repository,
            format!("repository:{}:pull", reference.repository),
        )?;
        let target = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        };
        let (bytes, media_type) = self.rt.block_on(self.get_manifest(
            &ctx,
            &target,
            reference.digest.as_ref(),
            &reference.full(),
        ))?;
        let top_digest = Digest::of(&bytes);
        let mut to_commit: Vec<(Digest, Vec<u8>)> = Vec::new();
        let (index, manifest_desc, manifest) = match parse_manifest(&bytes, media_type.as_deref())
            .map_err(|e| label(e, &reference.full()))?
        {
            Manifest::Image(m) => {
                let mt = media_type_of(
                    media_type.as_deref(),
                    m.media_type().as_ref(),
                    MediaType::ImageManifest,
                );
                let desc = Descriptor::new(mt, bytes.len() as u64, oci_digest(&top_digest)?);
                to_commit.push((top_digest.clone(), bytes));
                (None, desc, m)
            }
            Manifest::Index(idx) => {
                let mt = media_type_of(
                    media_type.as_deref(),
                    idx.media_type().as_ref(),
                    MediaType::ImageIndex,
                );
                let index_desc = Descriptor::new(mt, bytes.len() as u64, oci_digest(&top_digest)?);
                let chosen = select_platform(&idx, &reference.full())?;
                let d = to_digest(chosen.digest())?;
                let what = reference.with_digest(d.clone()).full();
                let (mbytes, mct) =
                    self.rt
                        .block_on(self.get_manifest(&ctx, &d.to_string(), Some(&d), &what))?;
                if mbytes.len() as u64 != chosen.size() {
                    return Err(RegistryError::Store(crate::error::Error::SizeMismatch {
                        digest: d,
                        expected: chosen.size(),
                        actual: mbytes.len() as u64,
                    }));
                }
                let m = match parse_manifest(
                    &mbytes,
                    mct.as_deref().or(Some(chosen.media_type().as_ref())),
                )
                .map_err(|e| label(e, &what))?
                {
                    Manifest::Image(m) => m,
                    Manifest::Index(_) => {
                        return Err(RegistryError::Protocol {
                            registry: ctx.registry.clone(),
                            reason: format!(
                                "{what}: the index entry for this platform is another index"
                            ),
                        })
                    }
                };
                to_commit.push((top_digest.clone(), bytes));
                to_commit.push((d, mbytes));
                (Some(index_desc), chosen, m)
            }
        };

        let progress = Progress::new(self.opts.progress);
        // Config: small, fetched into memory and verified.
        let config_desc = manifest.config();
        let config = to_digest(config_desc.digest())?;
        let mut downloaded = 0u64;
        if store.info(&config)?.is_none() {
            if config_desc.size() > MAX_CONFIG {
                return Err(RegistryError::Protocol {
                    registry: ctx.registry.clone(),
                    reason: format!(
                        "config {config} claims {} bytes, more than berth accepts",
                        config_desc.size()
                    ),
                });
            }
            let data = self
                .rt
                .block_on(self.get_small_blob(&ctx, &config, config_desc.size()))?;
            downloaded += data.len() as u64;
            observer.config(&data, manifest.layers());
            to_commit.push((config.clone(), data));
        } else {
            observer.config(&store.read_verified(&config)?, manifest.layers());
        }

        downloaded += self.fetch_layers(store, &ctx, manifest.layers(), &progress, observer)?;

        for (d, data) in to_commit {
            let got = store.write_blob(&data)?;
            if got != d {
                return Err(RegistryError::Store(crate::error::Error::DigestMismatch {
                    expected: d,
                    actual: got,
                }));
            }
        }
        Ok(PullResult {
            reference: reference.with_digest(to_digest(manifest_desc.digest())?),
            manifest: manifest_desc,
            index,
            config,
            layers: manifest.layers().clone(),
            bytes_downloaded: downloaded,
        })
    }

    /// GET a manifest; verify it against `expect` when the reference names a digest.
    async fn get_manifest(
        &self,
        ctx: &Ctx,
        target: &str,
        expect: Option<&Digest>,
        what: &str,
    ) -> Result<(Vec<u8>, Option<String>), RegistryError> {
        let url = ctx
            .base
            .join(&format!("v2/{}/manifests/{target}", ctx.repository))
            .map_err(|e| RegistryError::Protocol {
                registry: ctx.registry.clone(),
                reason: format!("bad manifest URL: {e}"),
            })?;
        let http = self.http(&url)?;
        let resp = self
            .send(ctx, || {
                http.get(url.clone()).header(ACCEPT_H, MANIFEST_ACCEPT)
            })
            .await?;
        let resp = self
            .expect_ok(ctx, resp, &format!("manifest {what}"))
            .await?;
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
        let body = read_limited(ctx, resp, MAX_MANIFEST).await?;
        if let Some(d) = expect {
            let actual = Digest::of(&body);
            if &actual != d {
                return Err(RegistryError::Store(crate::error::Error::DigestMismatch {
                    expected: d.clone(),
                    actual,
                }));
            }
        }
        Ok((body, ct))
    }

    async fn get_small_blob(
        &self,
        ctx: &Ctx,
        d: &Digest,
        size: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let url = self.blob_url(ctx, d)?;
        let resp = self.get_following(ctx, url, HeaderMap::new()).await?;
        let resp = self.expect_ok(ctx, resp, &format!("blob {d}")).await?;
        let body = read_limited(ctx, resp, size as usize)
            .await
            .map_err(|e| match e {
                RegistryError::Protocol { .. } => {
                    RegistryError::Store(crate::error::Error::SizeMismatch {
                        digest: d.clone(),
                        expected: size,
                        actual: size + 1,
                    })
                }
                e => e,
            })?;
        if body.len() as u64 != size {
            return Err(RegistryError::Store(crate::error::Error::SizeMismatch {
                digest: d.clone(),
                expected: size,
                actual: body.len() as u64,
            }));
        }
        let actual = Digest::of(&body);
        if &actual != d {
            return Err(RegistryError::Store(crate::error::Error::DigestMismatch {
                expected: d.clone(),
                actual,
            }));
        }
        Ok(body)
    }

    pub(super) fn blob_url(&self, ctx: &Ctx, d: &Digest) -> Result<reqwest::Url, RegistryError> {
        ctx.base
            .join(&format!("v2/{}/blobs/{d}", ctx.repository))
            .map_err(|e| RegistryError::Protocol {
                registry: ctx.registry.clone(),
                reason: format!("bad blob URL: {e}"),
            })
    }

    /// Download the layers with up to `max_concurrent` worker threads; returns the bytes fetched.
    fn fetch_layers(
        &self,
        store: &ContentStore,
        ctx: &Ctx,
        layers: &[Descriptor],
        progress: &Progress,
        observer: &dyn super::PullObserver,
    ) -> Result<u64, RegistryError> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<Option<Result<u64, RegistryError>>>> =
            Mutex::new((0..layers.len()).map(|_| None).collect());
        let bars: Vec<ProgressBar> = layers
            .iter()
            .map(|l| progress.bar(l.digest().digest(), l.size()))
            .collect();
        let workers = self.opts.max_concurrent.min(layers.len());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= layers.len() {
                        break;
                    }
                    let stream = |f| observer.layer_stream(i, &layers[i], f);
                    let r = self.fetch_blob(store, ctx, &layers[i], &bars[i], &stream);
                    if r.is_ok() {
                        observer.layer_ready(i, &layers[i]);
                    }
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                        bars[i].abandon_with_message("failed");
                    }
                    results.lock().expect("poisoned")[i] = Some(r);
                });
            }
        });
        let mut total = 0;
        for r in results
            .into_inner()
            .expect("poisoned")
            .into_iter()
            .flatten()
        {
            total += r?;
        }
        Ok(total)
    }

    /// Fetch one blob into the store through a resumable ingest. Returns bytes fetched.
    /// Once the download starts, `stream` gets a follower of the blob.
    fn fetch_blob(
        &self,
        store: &ContentStore,
        ctx: &Ctx,
        desc: &Descriptor,
        bar: &ProgressBar,
        stream: &dyn Fn(Follower),
    ) -> Result<u64, RegistryError> {
        let digest = to_digest(desc.digest())?;
        let size = desc.size();
        if store.info(&digest)?.is_some() {
            bar.finish_with_message("already exists");
            return Ok(0);
        }
        let key = format!("pull-{}", digest.hex());
        let mut w = store.writer(&key, Some((digest.clone(), size)))?;
        // Another process may have finished it while we waited for the ingest lock.
        if store.info(&digest)?.is_some() {
            w.abort()?;
            bar.finish_with_message("already exists");
            return Ok(0);
        }
        let mut offset = w.offset();
        if offset > size {
            w.truncate()?;
            offset = 0;
        }
        if offset == size && size > 0 {
            match w.commit() {
                Ok(_) => {
                    bar.finish_with_message("done");
                    return Ok(0);
                }
                Err(_) => {
                    w = store.writer(&key, Some((digest.clone(), size)))?;
                    w.truncate()?;
                    offset = 0;
                }
            }
        }
        let url = self.blob_url(ctx, &digest)?;
        let what = format!("blob {digest} of {}", ctx.repository);
        let mut fetched = 0u64;
        let mut resp = loop {
            let mut headers = HeaderMap::new();
            if offset > 0 {
                headers.insert(
                    RANGE,
                    HeaderValue::from_str(&format!("bytes={offset}-")).expect("ascii"),
                );
            }
            let resp = self
                .rt
                .block_on(self.get_following(ctx, url.clone(), headers))?;
            match resp.status() {
                StatusCode::PARTIAL_CONTENT if offset > 0 => {
                    let start = resp
                        .headers()
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("bytes "))
                        .and_then(|v| v.split('-').next())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    if start == Some(offset) {
                        break resp;
                    }
                    // Not the range we asked for: start over.
                    w.truncate()?;
                    offset = 0;
                }
                StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                    w.truncate()?;
                    offset = 0;
                }
                StatusCode::OK => {
                    if offset > 0 {
                        w.truncate()?;
                        offset = 0;
                    }
                    break resp;
                }
                _ => {
                    return Err(self
                        .rt
                        .block_on(self.expect_ok(ctx, resp, &what))
                        .err()
                        .unwrap_or_else(|| RegistryError::Protocol {
                            registry: ctx.registry.clone(),
                            reason: format!("{what}: unexpected status"),
                        }))
                }
            }
        };
        bar.set_position(offset);
        let mut have = offset;
        let feeder = match w.open_data()? {
            Some(file) => {
                let (feeder, follower) = Feeder::new(file, offset);
                stream(follower);
                Some(feeder)
            }
            None => None,
        };
        let mut flushed = offset;
        // Some bytes after `flushed` were not queued for the follower: it needs
        // them flushed to read them from the file.
        let mut gap = false;
        let write_err = || io_err(format!("writing {digest} into the content store"));
        loop {
            match self.rt.block_on(resp.chunk()) {
                Ok(Some(chunk)) => {
                    if have + chunk.len() as u64 > size {
                        w.abort()?;
                        return Err(RegistryError::Store(crate::error::Error::SizeMismatch {
                            digest,
                            expected: size,
                            actual: have + chunk.len() as u64,
                        }));
                    }
                    if let Some(f) = &feeder {
                        gap |= !f.received(have, &chunk);
                    }
                    w.write_all(&chunk).map_err(write_err())?;
                    fetched += chunk.len() as u64;
                    have += chunk.len() as u64;
                    bar.inc(chunk.len() as u64);
                    if let Some(f) = feeder
                        .as_ref()
                        .filter(|_| gap && have - flushed >= FEED_STEP)
                    {
                        w.flush().map_err(write_err())?;
                        flushed = have;
                        gap = false;
                        f.written(flushed);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let received = have;
                    w.flush()
                        .map_err(io_err(format!("writing {digest} into the content store")))?;
                    drop(w);
                    return Err(RegistryError::Interrupted {
                        registry: ctx.registry.clone(),
                        digest,
                        received,
                        reason: e.to_string(),
                    });
                }
            }
        }
        w.flush().map_err(write_err())?;
        if let Some(f) = &feeder {
            f.written(have);
        }
        // The follower may end as soon as the blob is verified, before the fsync
        // and rename: the ingest file then holds exactly the blob's bytes, which
        // nothing changes any more, so it has read the right bytes; what it unpacks is
        // no less valid if persisting fails, and this pull fails then all the same.
        let verified = w.verify()?;
        if let Some(f) = feeder {
            f.done();
        }
        verified.persist()?;
        bar.finish_with_message("done");
        Ok(fetched)
    }
}

fn media_type_of(header: Option<&str>, field: Option<&MediaType>, default: MediaType) -> MediaType {
    match (field, header) {
        (Some(m), _) => m.clone(),
        (None, Some(h)) if !h.is_empty() && h != "application/json" && h != "text/plain" => {
            MediaType::from(h)
        }
        _ => default,
    }
}

pub(super) fn oci_digest(d: &Digest) -> Result<oci_spec::image::Digest, RegistryError> {
    d.to_string().parse().map_err(|e| RegistryError::Protocol {
        registry: String::new(),
        reason: format!("digest {d} not accepted by oci-spec: {e}"),
    })
}
