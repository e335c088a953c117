//! `diff` and `commit`: what a container changed in its filesystem, listed or
//! made into a new image layer.

use std::collections::HashMap;
use std::path::Path;

use berth_image_store::digest::Digest;
use berth_image_store::images::now_rfc3339;
use berth_snapshotter::Change;
use oci_spec::image::{Config, Descriptor, HistoryBuilder, MediaType};

use super::record::{ContainerRecord, Status};
use super::Containers;
use crate::error::{Error, Result};
use crate::images::tag_reference;

/// What `commit` makes of a container.
#[derive(Debug, Default)]
pub struct CommitOptions {
    /// `REPOSITORY[:TAG]` for the new image; none: a dangling image.
    pub name: Option<String>,
    /// `--change` instructions, as a config holding only what they set.
    pub changes: Config,
    /// `-m`: the history entry's comment.
    pub message: Option<String>,
    /// `-a`: the image's author.
    pub author: Option<String>,
    /// `-p` (Docker's default): freeze a running container while its
    /// changes are read.
    pub pause: bool,
}

impl Containers {
    /// `diff`: the paths the container added (`A`), changed (`C`) or deleted
    /// (`D`) over its image.
    pub fn changes(&self, name_or_id: &str) -> Result<Vec<Change>> {
        let record = self.get(name_or_id)?;
        super::not_being_removed(&record)?;
        Ok(self
            .images
            .snapshotter()
            .changes(&record.snapshot, &mount_points())?)
    }

    /// `commit`: a new image of the container's image plus one layer holding
    /// the container's changes, with the container's configuration (its
    /// command, entrypoint, environment, working dir, user, labels and
    /// published ports) and then `opts.changes` applied. Returns the image id.
    pub fn commit(&self, name_or_id: &str, opts: &CommitOptions) -> Result<Digest> {
        if let Some(n) = &opts.name {
            tag_reference(n)?;
        }
        let record = self.get(name_or_id)?;
        // From the new layer blob until the image is recorded, a prune must not
        // collect what this writes.
        let _images = self.images.lock(false)?;
        let base = self
            .images
            .find(&record.image_id)
            .map_err(|_| {
                Error::Invalid(format!(
                    "the image of container {} ({}) is gone",
                    record.name, record.image
                ))
            })?
            .swap_remove(0)
            .1;
        // No start, stop or removal changes the container while its changes are read.
        let _lock = self.store.lock(&record.id)?;
        let record = self.store.load(&record.id)?;
        super::not_being_removed(&record)?;
        let freeze = opts.pause
            && record.state.status == Status::Running
            && !self.runtime.paused(&record.id).unwrap_or(false);
        if freeze {
            self.runtime.pause(&record.id)?;
        }
        let layer = self.write_layer(&record);
        if freeze {
            self.runtime.resume(&record.id)?;
        }
        let (layer, diff_id) = layer?;

        let mut config = base.config.clone();
        config.set_config(Some(committed_config(
            config.config().clone().unwrap_or_default(),
            &record,
            &opts.changes,
        )));
        config.rootfs_mut().diff_ids_mut().push(diff_id);
        let created = now_rfc3339();
        let mut history = config.history().clone().unwrap_or_default();
        let mut entry = HistoryBuilder::default()
            .created(created.clone())
            .created_by(record.command.join(" "));
        if let Some(m) = &opts.message {
            entry = entry.comment(m.clone());
        }
        if let Some(a) = &opts.author {
            entry = entry.author(a.clone());
        }
        history.push(
            entry
                .build()
                .map_err(|e| Error::Invalid(format!("history: {e}")))?,
        );
        config.set_history(Some(history));
        config.set_created(Some(created));
        config.set_author(opts.author.clone());
        let mut layers = base.layers.clone();
        layers.push(layer);
        // What the OCI type drops: the container's healthcheck (the image's,
        // with its --health-* flags) and the image's SHELL, as Docker keeps them.
        let mut json = serde_json::to_value(&config)
            .map_err(|e| Error::Invalid(format!("image config: {e}")))?;
        if let Some(c) = json.get_mut("config").and_then(|c| c.as_object_mut()) {
            if let Some(h) = &record.healthcheck {
                c.insert(
                    "Healthcheck".into(),
                    serde_json::to_value(h).unwrap_or_default(),
                );
            }
            if !record.shell.is_empty() {
                c.insert("Shell".into(), serde_json::json!(record.shell));
            }
        }
        self.images.add_image(&json, layers, opts.name.as_deref())
    }

    /// The container's snapshot as a gzip layer blob: its descriptor and diff id.
    fn write_layer(&self, record: &ContainerRecord) -> Result<(Descriptor, String)> {
        let content = self.images.content();
        let ingest = format!("commit-{}-{}", &record.id[..12], std::process::id());
        let mut w = content.writer(&ingest, None)?;
        w.truncate()?;
        let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
        let stats =
            self.images
                .snapshotter()
                .diff_skipping(&record.snapshot, &mut gz, &mount_points())?;
        let w = gz.finish().map_err(Error::io("compress the layer"))?;
        let size = w.written();
        let digest = w.commit()?;
        let descriptor = Descriptor::new(MediaType::ImageLayerGzip, size, digest.to_oci());
        Ok((descriptor, stats.digest))
    }
}

/// The mount points berth makes that are not a container's changes.
fn mount_points() -> Vec<&'static Path> {
    super::ETC_FILES.iter().map(Path::new).collect()
}

/// The image config a commit records: the image's, with what the container
/// was run with (as Docker's container config holds it), then the changes.
fn committed_config(mut config: Config, record: &ContainerRecord, changes: &Config) -> Config {
    let opts = &record.options;
    match &opts.entrypoint {
        Some(e) if e.iter().all(|s| s.is_empty()) => {
            config.set_entrypoint(None);
        }
        Some(e) => {
            config.set_entrypoint(Some(e.clone()));
        }
        None => {}
    }
    if !opts.cmd.is_empty() {
        config.set_cmd(Some(opts.cmd.clone()));
    } else if opts.entrypoint.is_some() {
        config.set_cmd(None);
    }
    let explicit_env: Vec<String> = opts
        .env
        .iter()
        .filter(|e| e.contains('='))
        .cloned()
        .collect();
    merge_env(&mut config, &explicit_env);
    if let Some(w) = &opts.workdir {
        config.set_working_dir(Some(w.clone()));
    }
    if let Some(u) = &opts.user {
        config.set_user(Some(u.clone()));
    }
    let labels: HashMap<String, String> = record.labels.clone().into_iter().collect();
    merge_labels(&mut config, labels);
    let published: Vec<String> = opts
        .publish
        .iter()
        .filter_map(|p| berth_netns_bridge::parse_port_spec(p).ok())
        .map(|p| format!("{}/{}", p.container_port, p.proto))
        .chain(opts.expose.iter().map(|p| {
            if p.contains('/') {
                p.clone()
            } else {
                format!("{p}/tcp")
            }
        }))
        .collect();
    merge_list(
        &mut config,
        published,
        Config::exposed_ports,
        Config::set_exposed_ports,
    );

    if let Some(e) = changes.entrypoint() {
        config.set_entrypoint(Some(e.clone()));
    }
    if let Some(c) = changes.cmd() {
        config.set_cmd(Some(c.clone()));
    }
    merge_env(&mut config, &changes.env().clone().unwrap_or_default());
    if let Some(w) = changes.working_dir() {
        config.set_working_dir(Some(w.clone()));
    }
    if let Some(u) = changes.user() {
        config.set_user(Some(u.clone()));
    }
    merge_labels(&mut config, changes.labels().clone().unwrap_or_default());
    merge_list(
        &mut config,
        changes.exposed_ports().clone().unwrap_or_default(),
        Config::exposed_ports,
        Config::set_exposed_ports,
    );
    merge_list(
        &mut config,
        changes.volumes().clone().unwrap_or_default(),
        Config::volumes,
        Config::set_volumes,
    );
    config
}

/// Set `KEY=VALUE` entries, replacing an entry of the same key in place.
fn merge_env(config: &mut Config, entries: &[String]) {
    if entries.is_empty() {
        return;
    }
    let base = config.env().clone().unwrap_or_default();
    config.set_env(Some(crate::spec::overlay_env(&base, entries)));
}

fn merge_labels(config: &mut Config, labels: HashMap<String, String>) {
    if labels.is_empty() {
        return;
    }
    let mut all = config.labels().clone().unwrap_or_default();
    all.extend(labels);
    config.set_labels(Some(all));
}

/// Add the items a list does not have yet (exposed ports, volumes).
fn merge_list(
    config: &mut Config,
    items: Vec<String>,
    get: fn(&Config) -> &Option<Vec<String>>,
    set: fn(&mut Config, Option<Vec<String>>) -> &mut Config,
) {
    if items.is_empty() {
        return;
    }
    let mut all = get(config).clone().unwrap_or_default();
    for i in items {
        if !all.contains(&i) {
            all.push(i);
        }
    }
    set(config, Some(all));
}
