//! `update`: change a container's resource limits and restart policy, at
//! once in its cgroup when it runs, and in its record for later starts.

use super::record::{RestartPolicy, Status};
use super::{start_under_way, Containers};
use crate::error::{Error, Result};

/// What `update` changes; `None` leaves a setting as it is.
#[derive(Debug, Default, Clone)]
pub struct ResourceUpdate {
    /// `--memory`.
    pub memory: Option<String>,
    /// `--memory-swap`.
    pub memory_swap: Option<String>,
    /// `--cpus`.
    pub cpus: Option<String>,
    /// `--pids-limit`.
    pub pids_limit: Option<i64>,
    /// `--restart`.
    pub restart: Option<RestartPolicy>,
}

impl ResourceUpdate {
    /// Whether nothing is to change.
    pub fn is_empty(&self) -> bool {
        self.memory.is_none()
            && self.memory_swap.is_none()
            && self.cpus.is_none()
            && self.pids_limit.is_none()
            && self.restart.is_none()
    }
}

impl Containers {
    /// `update`: check the new settings together with the ones kept, apply
    /// the limits to a running container's cgroup, then record them. Nothing
    /// is recorded when the kernel refuses a limit (say, memory below what the
    /// container uses).
    pub fn update_resources(&self, name_or_id: &str, change: &ResourceUpdate) -> Result<()> {
        if change.is_empty() {
            return Err(Error::Invalid(
                "nothing to update: give --memory, --memory-swap, --cpus, --pids-limit or --restart"
                    .into(),
            ));
        }
        let id = self.get(name_or_id)?.id;
        let _lock = self.store.lock(&id)?;
        let mut record = self.store.load(&id)?;
        super::not_being_removed(&record)?;
        if start_under_way(&record) {
            return Err(Error::Conflict(format!(
                "container {} is starting; update it once it runs",
                record.name
            )));
        }
        let mut options = record.options.clone();
        if let Some(m) = &change.memory {
            options.memory = Some(m.clone());
        }
        if let Some(s) = &change.memory_swap {
            options.memory_swap = Some(s.clone());
        }
        if let Some(c) = &change.cpus {
            options.cpus = Some(c.clone());
        }
        if let Some(p) = change.pids_limit {
            options.pids_limit = Some(p);
        }
        let resources = crate::spec::build_resources(&options)?;
        if let Some(policy) = &change.restart {
            if record.auto_remove && *policy != RestartPolicy::No {
                return Err(Error::Invalid(
                    "Conflicting options: --restart and --rm".into(),
                ));
            }
            record.restart_policy = *policy;
        }
        if record.state.status == Status::Running {
            self.runtime
                .update(&record.id, &live_resources(&resources))?;
            // A restart by the policy reuses the bundle: it gets the new limits too.
            self.rewrite_bundle_resources(&record.id, &resources)?;
        }
        record.options = options;
        self.store.save(&record)
    }

    /// Put `resources` into the running container's bundle `config.json`
    /// (its device rules, which `update` does not change, are kept).
    fn rewrite_bundle_resources(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<()> {
        let path = self.paths(id).bundle.join("config.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let mut spec = berth_runtime::spec::parse_spec(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let mut linux = spec.linux().clone().unwrap_or_default();
        let mut resources = resources.clone();
        resources.set_devices(linux.resources().as_ref().and_then(|r| r.devices().clone()));
        linux.set_resources(Some(resources));
        spec.set_linux(Some(linux));
        let json = serde_json::to_vec(&spec)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let tmp = path.with_extension("json.update");
        std::fs::write(&tmp, json).map_err(Error::io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(Error::io(format!("write {}", path.display())))
    }
}

/// The limits to write into a live cgroup: where the new settings have no
/// limit (`--memory 0`, `--cpus 0`), an explicit "unlimited", so the old
/// limit does not stay.
fn live_resources(
    resources: &oci_spec::runtime::LinuxResources,
) -> oci_spec::runtime::LinuxResources {
    use oci_spec::runtime::LinuxMemory;
    let mut live = resources.clone();
    if live.memory().as_ref().and_then(|m| m.limit()).is_none() {
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(-1));
        memory.set_swap(Some(-1));
        live.set_memory(Some(memory));
    }
    if live.cpu().as_ref().and_then(|c| c.quota()).is_none() {
        let mut cpu = live.cpu().clone().unwrap_or_default();
        cpu.set_quota(Some(-1));
        live.set_cpu(Some(cpu));
    }
    live
}
