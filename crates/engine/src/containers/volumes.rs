//! Containers and volumes: which mounts a new container gets (`-v`,
//! `--mount`, `--volumes-from`, the image's `VOLUME`s), their OCI mounts at
//! start (with copy-up), and the volume commands that need to know which
//! containers use a volume (`volume rm`, `volume prune`, `rm -v`).

use std::path::{Path, PathBuf};

use berth_volumes::{MountKind, MountSpec, VolumeStore};

use super::record::ContainerRecord;
use super::{Containers, CreateRequest};
use crate::error::{Error, Result};

fn clean(p: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

impl Containers {
    /// The volume store.
    pub fn volumes(&self) -> &VolumeStore {
        &self.volumes
    }

    /// The mounts a new container gets, checked, before anything is
    /// created: `--volumes-from` first, then `-v`/`--mount` (which replace
    /// one from another container at the same path; two of them at one
    /// path are an error), then an anonymous volume for each image `VOLUME`
    /// no mount covers.
    pub(super) fn plan_mounts(
        &self,
        req: &CreateRequest,
        image: &oci_spec::image::ImageConfiguration,
    ) -> Result<Vec<MountSpec>> {
        let mut user: Vec<MountSpec> = Vec::new();
        for m in &req.mounts {
            if user.iter().any(|u| u.clean_target() == m.clean_target()) {
                return Err(Error::Invalid(format!(
                    "duplicate mount point: {}",
                    m.clean_target().display()
                )));
            }
            m.check_host()?;
            user.push(m.clone());
        }
        let mut out: Vec<MountSpec> = Vec::new();
        for from in &req.volumes_from {
            let (name, mode) = match from.rsplit_once(':') {
                Some((n, m)) if m == "ro" || m == "rw" => (n, Some(m)),
                Some(_) => {
                    return Err(Error::Invalid(format!(
                        "invalid --volumes-from {from:?}: use CONTAINER[:ro|rw]"
                    )))
                }
                None => (from.as_str(), None),
            };
            let other = self.get(name)?;
            for m in other.mounts.iter().filter(|m| m.kind != MountKind::Tmpfs) {
                let target = m.clean_target();
                if user.iter().chain(&out).any(|u| u.clean_target() == target) {
                    continue;
                }
                let mut m = m.clone();
                if let Some(mode) = mode {
                    m.readonly = mode == "ro";
                }
                out.push(m);
            }
        }
        out.extend(user);
        let tmpfs: Vec<PathBuf> = req
            .options
            .tmpfs
            .iter()
            .map(|t| clean(t.split(':').next().unwrap_or("")))
            .collect();
        let image_volumes = image
            .config()
            .as_ref()
            .and_then(|c| c.volumes().clone())
            .unwrap_or_default();
        for path in image_volumes {
            if !path.starts_with('/') || clean(&path) == Path::new("/") {
                continue;
            }
            let target = clean(&path);
            if out.iter().any(|m| m.clean_target() == target) || tmpfs.contains(&target) {
                continue;
            }
            out.push(berth_volumes::parse_volume_flag(
                &target.to_string_lossy(),
                Path::new("/"),
            )?);
        }
        Ok(out)
    }

    /// Create what the planned mounts need: anonymous volumes (named now),
    /// named volumes that do not exist yet, missing `-v` host directories.
    /// The volumes created are added to `created` (undone if the create fails).
    pub(super) fn materialize_mounts(
        &self,
        planned: Vec<MountSpec>,
        created: &mut Vec<String>,
    ) -> Result<Vec<MountSpec>> {
        let mut out = Vec::with_capacity(planned.len());
        for mut m in planned {
            match m.kind {
                MountKind::Volume => {
                    let name = (!m.source.is_empty()).then_some(m.source.as_str());
                    let (v, new) = self.volumes.create(
                        name,
                        m.volume_labels.clone(),
                        m.volume_options.clone(),
                    )?;
                    if new {
                        created.push(v.name.clone());
                    }
                    m.source = v.name;
                }
                MountKind::Bind
                    if m.create_host_dir && std::fs::symlink_metadata(&m.source).is_err() =>
                {
                    std::fs::create_dir_all(&m.source)
                        .map_err(Error::io(format!("create {}", m.source)))?;
                }
                _ => {}
            }
            out.push(m);
        }
        Ok(out)
    }

    /// The OCI mounts of a container's volumes, binds and tmpfs mounts,
    /// parents before children. Volumes are acquired for the container
    /// (driver mounts made, copy-up done from the mounted `rootfs`).
    pub(super) fn volume_mounts(
        &self,
        record: &ContainerRecord,
        rootfs: &Path,
    ) -> Result<Vec<oci_spec::runtime::Mount>> {
        let mut mounts: Vec<&MountSpec> = record.mounts.iter().collect();
        mounts.sort_by_key(|m| m.clean_target().components().count());
        let mut out = Vec::with_capacity(mounts.len());
        for m in mounts {
            out.push(match m.kind {
                MountKind::Volume => {
                    let data = self.volumes.acquire(
                        &m.source,
                        &record.id,
                        rootfs,
                        Path::new(&m.target),
                        m.nocopy,
                    )?;
                    m.to_oci(&data)
                }
                MountKind::Bind => {
                    if std::fs::symlink_metadata(&m.source).is_err() {
                        if m.create_host_dir {
                            std::fs::create_dir_all(&m.source)
                                .map_err(Error::io(format!("create {}", m.source)))?;
                        } else {
                            return Err(Error::Invalid(format!(
                                "bind source path does not exist: {}",
                                m.source
                            )));
                        }
                    }
                    m.to_oci(Path::new(&m.source))
                }
                MountKind::Tmpfs => m.to_oci(Path::new("")),
            });
        }
        Ok(out)
    }

    /// Remove a (removed) container's anonymous volumes no other container uses.
    pub(super) fn remove_anonymous_volumes(&self, record: &ContainerRecord) {
        for m in &record.mounts {
            if m.kind == MountKind::Volume
                && m.anonymous
                && self
                    .volume_users(&m.source)
                    .is_ok_and(|u| u.iter().all(|id| *id == record.id))
            {
                let _ = self.volumes.remove(&m.source, &[]);
            }
        }
    }

    fn all_records(&self) -> Result<Vec<ContainerRecord>> {
        Ok(self
            .store
            .ids()?
            .into_iter()
            .filter_map(|id| self.store.load(&id).ok())
            .collect())
    }

    /// Ids of the containers (in any state) whose mounts use volume `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .all_records()?
            .into_iter()
            .filter(|r| {
                r.mounts
                    .iter()
                    .any(|m| m.kind == MountKind::Volume && m.source == name)
            })
            .map(|r| r.id)
            .collect())
    }

    /// Names of the volumes some container (in any state) uses.
    pub fn volumes_in_use(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .all_records()?
            .into_iter()
            .flat_map(|r| r.mounts)
            .filter(|m| m.kind == MountKind::Volume)
            .map(|m| m.source)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// `volume rm`: refused while any container (running or not) uses it.
    pub fn remove_volume(&self, name: &str) -> Result<()> {
        let users = self.volume_users(name)?;
        Ok(self.volumes.remove(name, &users)?)
    }

    /// `volume prune [-a]`: unused anonymous volumes (with `all`: every
    /// unused volume); returns names and bytes freed.
    pub fn prune_volumes(
        &self,
        all: bool,
        filter: &crate::prune::PruneFilter,
    ) -> Result<Vec<(String, u64)>> {
        let used = self.volumes_in_use()?;
        Ok(self.volumes.prune(all, &used, &|v| {
            filter.allows(Some(&v.created_at), &v.labels)
        })?)
    }
}
