//! Snapshot metadata: one JSON file, read under a shared lock, updated under an
//! exclusive lock with write-to-temp + fsync + rename.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::snapshotter::Kind;

pub(crate) const META_FILE: &str = "metadata.json";
pub(crate) const LOCK_FILE: &str = "metadata.lock";

/// One snapshot's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub id: u64,
    pub kind: Kind,
    pub parent: Option<String>,
    pub created: SystemTime,
    /// A committed snapshot whose files may still be only in the page cache: the
    /// boot id it was committed under (see [`crate::Snapshotter::settle`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unflushed: Option<String>,
}

/// The whole metadata file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub version: u32,
    pub next_id: u64,
    pub snapshots: BTreeMap<String, Record>,
}

impl Meta {
    /// Keys of the snapshots whose parent is `key`.
    pub fn children(&self, key: &str) -> Vec<String> {
        self.snapshots
            .iter()
            .filter(|(_, r)| r.parent.as_deref() == Some(key))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The record for `key`.
    pub fn get(&self, key: &str) -> Result<&Record> {
        self.snapshots
            .get(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))
    }

    /// Ids of `key`'s ancestors, nearest first (not including `key` itself).
    pub fn parent_ids(&self, key: &str) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        let mut cur = self.get(key)?.parent.clone();
        while let Some(p) = cur {
            let r = self.get(&p)?;
            ids.push(r.id);
            if ids.len() > self.snapshots.len() {
                return Err(Error::Diff {
                    path: PathBuf::from(META_FILE),
                    reason: format!("parent cycle at snapshot {p:?}"),
                });
            }
            cur = r.parent.clone();
        }
        Ok(ids)
    }
}

/// Handle on the metadata file of one snapshotter root.
#[derive(Debug)]
pub(crate) struct Store {
    root: PathBuf,
}

/// A held lock plus the metadata read under it.
pub(crate) struct Locked {
    _lock: File,
    pub meta: Meta,
}

impl Store {
    pub fn new(root: &Path) -> Self {
        Store {
            root: root.to_path_buf(),
        }
    }

    fn lock_file(&self) -> Result<File> {
        let p = self.root.join(LOCK_FILE);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(&p)
            .map_err(|e| Error::io("open metadata lock", &p, e))
    }

    fn read(&self) -> Result<Meta> {
        let p = self.root.join(META_FILE);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Metadata { path: p, source: e }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Meta {
                version: 1,
                next_id: 1,
                snapshots: BTreeMap::new(),
            }),
            Err(e) => Err(Error::io("read snapshot metadata", &p, e)),
        }
    }

    /// Takes the shared lock and reads the metadata.
    pub fn shared(&self) -> Result<Locked> {
        let f = self.lock_file()?;
        f.lock_shared()
            .map_err(|e| Error::io("lock (shared)", self.root.join(LOCK_FILE), e))?;
        Ok(Locked {
            meta: self.read()?,
            _lock: f,
        })
    }

    /// Takes the exclusive lock and reads the metadata.
    pub fn exclusive(&self) -> Result<Locked> {
        let f = self.lock_file()?;
        f.lock()
            .map_err(|e| Error::io("lock (exclusive)", self.root.join(LOCK_FILE), e))?;
        Ok(Locked {
            meta: self.read()?,
            _lock: f,
        })
    }

    /// Writes `meta` atomically. The caller must hold the exclusive lock.
    pub fn write(&self, meta: &Meta) -> Result<()> {
        let p = self.root.join(META_FILE);
        let tmp = self.root.join(format!("{META_FILE}.tmp"));
        let data = serde_json::to_vec_pretty(meta).map_err(|e| Error::Metadata {
            path: p.clone(),
            source: e,
        })?;
        let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(&data)
            .map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, &p).map_err(|e| Error::io("rename metadata into place", &p, e))?;
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync", &self.root, e))?;
        Ok(())
    }
}
