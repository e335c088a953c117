//! The build cache store: step key -> what the step produced, with the
//! inputs of the key (to explain a miss) and the time of last use (for the
//! size cap's least-recently-used eviction).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A layer a step produced, as stored in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    /// Digest of the (gzip) blob in the content store.
    pub digest: String,
    /// Size of the blob.
    pub size: u64,
    /// Media type of the blob.
    pub media_type: String,
    /// sha256 of the uncompressed tar.
    pub diff_id: String,
}

/// The inputs a step's cache key was computed from (see [`crate::cache_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CacheInputs {
    /// The previous step's key (the base image id for a stage's first step).
    pub parent: String,
    /// The instruction as written (first line), for messages.
    pub text: String,
    /// The expanded, typed instruction (`Instruction::cache_text`).
    pub instruction: String,
    /// The ARGs the step sees.
    pub args: BTreeMap<String, String>,
    /// COPY/ADD: the sources' content hash (or `--from` stage identity).
    pub content: Option<String>,
}

/// What a step produced: its layer (none for metadata-only steps), the image
/// config's `config` object after it, and its history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The layer, if the step made one.
    pub layer: Option<CachedLayer>,
    /// The `config` object of the image config after the step.
    pub config: Value,
    /// The step's history entry (`created`, `created_by`, `empty_layer`).
    pub history: Value,
    /// Milliseconds since the epoch of the last hit or store.
    #[serde(default)]
    pub last_used: u64,
    /// The inputs of the key (absent in entries of older versions).
    #[serde(default)]
    pub inputs: Option<CacheInputs>,
}

/// The build cache: key -> [`CacheEntry`] in one JSON file
/// (`<root>/builder/cache.json`), replaced atomically under a file lock.
#[derive(Debug, Clone)]
pub struct CacheStore {
    file: PathBuf,
    lock: PathBuf,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl CacheStore {
    /// Opens (creating the directory) the cache in `dir`.
    pub fn open(dir: &Path) -> io::Result<CacheStore> {
        fs::create_dir_all(dir)?;
        Ok(CacheStore {
            file: dir.join("cache.json"),
            lock: dir.join("cache.lock"),
        })
    }

    fn locked(&self, exclusive: bool) -> io::Result<File> {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)?;
        if exclusive {
            f.lock()?;
        } else {
            f.lock_shared()?;
        }
        Ok(f)
    }

    fn load(&self) -> io::Result<BTreeMap<String, CacheEntry>> {
        match fs::read(&self.file) {
            Ok(b) => Ok(serde_json::from_slice(&b).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e),
        }
    }

    fn save(&self, all: &BTreeMap<String, CacheEntry>) -> io::Result<()> {
        let tmp = self
            .file
            .with_extension(format!("json.{}.tmp", std::process::id()));
        let bytes = serde_json::to_vec(all).map_err(io::Error::other)?;
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &self.file)
    }

    /// Every entry (a snapshot of the file).
    pub fn entries(&self) -> io::Result<BTreeMap<String, CacheEntry>> {
        let _l = self.locked(false)?;
        self.load()
    }

    /// The entry for `key`, if any.
    pub fn get(&self, key: &str) -> io::Result<Option<CacheEntry>> {
        Ok(self.entries()?.remove(key))
    }

    /// Stores (or refreshes) the entry for `key`.
    pub fn put(&self, key: &str, mut entry: CacheEntry) -> io::Result<()> {
        let _l = self.locked(true)?;
        let mut all = self.load()?;
        entry.last_used = now_ms();
        all.insert(key.to_string(), entry);
        self.save(&all)
    }

    /// Marks the entries of `keys` used now.
    pub fn touch(&self, keys: &[String]) -> io::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let _l = self.locked(true)?;
        let mut all = self.load()?;
        let now = now_ms();
        for k in keys {
            if let Some(e) = all.get_mut(k) {
                e.last_used = now;
            }
        }
        self.save(&all)
    }

    /// Removes every entry; returns how many there were.
    pub fn clear(&self) -> io::Result<usize> {
        let _l = self.locked(true)?;
        let n = self.load()?.len();
        self.save(&BTreeMap::new())?;
        Ok(n)
    }

    /// Keeps the cache's layers within `max_bytes`: entries are taken from
    /// the most to the least recently used, and once the distinct layers
    /// taken exceed the cap, that entry and every older one are removed.
    /// Returns the number of entries removed.
    pub fn evict(&self, max_bytes: u64) -> io::Result<usize> {
        let _l = self.locked(true)?;
        let mut all = self.load()?;
        let drop = lru_victims(&all, max_bytes);
        if drop.is_empty() {
            return Ok(0);
        }
        for k in &drop {
            all.remove(k);
        }
        self.save(&all)?;
        Ok(drop.len())
    }
}

/// Total size of the distinct layers the entries reference.
pub fn cache_size(entries: &BTreeMap<String, CacheEntry>) -> u64 {
    let mut seen = BTreeSet::new();
    entries
        .values()
        .filter_map(|e| e.layer.as_ref())
        .filter(|l| seen.insert(l.digest.clone()))
        .map(|l| l.size)
        .sum()
}

fn lru_victims(all: &BTreeMap<String, CacheEntry>, max_bytes: u64) -> Vec<String> {
    let mut order: Vec<(&String, &CacheEntry)> = all.iter().collect();
    order.sort_by(|a, b| b.1.last_used.cmp(&a.1.last_used).then(a.0.cmp(b.0)));
    let mut seen = BTreeSet::new();
    let mut total = 0u64;
    let mut over = false;
    let mut out = Vec::new();
    for (k, e) in order {
        if !over {
            if let Some(l) = &e.layer {
                if seen.insert(l.digest.as_str()) {
                    total += l.size;
                }
            }
            over = total > max_bytes;
        }
        if over {
            out.push(k.clone());
        }
    }
    out
}

/// Why a step missed the cache, given its inputs and the cached entries
/// that follow the same previous step (`siblings`): the ARGs or the sources
/// changed (same instruction), the instruction changed after expansion (same
/// text), the instruction changed (the most recent entry of the same
/// keyword), or nothing comparable was cached after that step.
pub fn explain_miss(inputs: &CacheInputs, siblings: &[&CacheEntry]) -> String {
    let mut prev: Vec<(&CacheInputs, u64)> = siblings
        .iter()
        .filter_map(|e| e.inputs.as_ref().map(|i| (i, e.last_used)))
        .collect();
    // Most recently used first.
    prev.sort_by_key(|p| std::cmp::Reverse(p.1));
    let same_ins = prev
        .iter()
        .map(|p| p.0)
        .filter(|p| p.instruction == inputs.instruction)
        .max_by_key(|p| p.args.len());
    if let Some(p) = same_ins {
        let mut changed: Vec<String> = Vec::new();
        let names: BTreeSet<&String> = p.args.keys().chain(inputs.args.keys()).collect();
        for n in names {
            if p.args.get(n) != inputs.args.get(n) {
                changed.push(n.clone());
            }
        }
        if !changed.is_empty() {
            return format!("build args changed: {}", changed.join(", "));
        }
        if p.content != inputs.content {
            return "source files changed (content hash differs)".into();
        }
        return "inputs unchanged but no usable entry (its layer was removed)".into();
    }
    if prev.iter().any(|p| p.0.text == inputs.text) {
        return "instruction changed after expansion (a variable or here-document differs)".into();
    }
    let keyword = |t: &str| {
        t.split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase()
    };
    let mine = keyword(&inputs.text);
    if let Some(p) = prev.iter().find(|p| keyword(&p.0.text) == mine) {
        return format!("instruction changed (cached: `{}`)", p.0.text);
    }
    if prev.is_empty() && !siblings.is_empty() {
        return "no explainable entry (cache written by an older berth)".into();
    }
    if prev.is_empty() {
        return "no cached step after the previous one".into();
    }
    format!("no cached {mine} step after the previous one")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(size: Option<u64>, digest: &str, last_used: u64) -> CacheEntry {
        CacheEntry {
            layer: size.map(|size| CachedLayer {
                digest: digest.into(),
                size,
                media_type: "m".into(),
                diff_id: "d".into(),
            }),
            config: json!({}),
            history: json!({}),
            last_used,
            inputs: None,
        }
    }

    #[test]
    fn cache_store_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let c = CacheStore::open(d.path()).unwrap();
        assert!(c.get("k").unwrap().is_none());
        let e = CacheEntry {
            layer: None,
            config: json!({"Env": ["A=1"]}),
            history: json!({"created_by": "ENV A=1"}),
            last_used: 0,
            inputs: None,
        };
        c.put("k", e.clone()).unwrap();
        let got = c.get("k").unwrap().unwrap();
        assert_eq!(got.config, e.config);
        assert!(got.last_used > 0);
        assert_eq!(c.clear().unwrap(), 1);
        assert!(c.get("k").unwrap().is_none());
    }

    #[test]
    fn lru_eviction() {
        let mut all = BTreeMap::new();
        all.insert("old".to_string(), entry(Some(600), "a", 1));
        all.insert("meta-old".to_string(), entry(None, "", 2));
        all.insert("mid".to_string(), entry(Some(500), "b", 3));
        all.insert("new".to_string(), entry(Some(400), "c", 4));
        all.insert("shared".to_string(), entry(Some(400), "c", 5));
        assert_eq!(cache_size(&all), 1500);
        assert!(lru_victims(&all, 1500).is_empty());
        // 400 (c, counted once) + 500 fit in 1000; "old" does not.
        assert_eq!(lru_victims(&all, 1000), ["old"]);
        assert_eq!(
            lru_victims(&all, 100),
            ["shared", "new", "mid", "meta-old", "old"]
        );
        let d = tempfile::tempdir().unwrap();
        let c = CacheStore::open(d.path()).unwrap();
        for (k, e) in &all {
            c.put(k, e.clone()).unwrap();
        }
        assert_eq!(c.evict(u64::MAX).unwrap(), 0);
        assert_eq!(c.entries().unwrap().len(), 5);
    }

    #[test]
    fn explains_misses() {
        let inputs = |text: &str, arg: &str, content: Option<&str>| CacheInputs {
            parent: "p".into(),
            text: text.into(),
            instruction: format!("json {text}"),
            args: [("V".to_string(), arg.to_string())].into(),
            content: content.map(str::to_string),
        };
        let mut cached = entry(None, "", 1);
        cached.inputs = Some(inputs("RUN a", "1", None));
        let s = [&cached];
        assert_eq!(
            explain_miss(&inputs("RUN b", "1", None), &s),
            "instruction changed (cached: `RUN a`)"
        );
        assert_eq!(
            explain_miss(&inputs("RUN a", "2", None), &s),
            "build args changed: V"
        );
        let mut copy = entry(None, "", 1);
        copy.inputs = Some(inputs("COPY x /", "1", Some("h1")));
        assert_eq!(
            explain_miss(&inputs("COPY x /", "1", Some("h2")), &[&copy]),
            "source files changed (content hash differs)"
        );
        assert_eq!(
            explain_miss(&inputs("RUN a", "1", None), &[]),
            "no cached step after the previous one"
        );
        // The most recent entry of the same keyword is the one compared.
        let mut env = entry(None, "", 5);
        env.inputs = Some(inputs("ENV X=1", "1", None));
        let mut older = entry(None, "", 0);
        older.inputs = Some(inputs("RUN z", "1", None));
        assert_eq!(
            explain_miss(&inputs("RUN b", "1", None), &[&env, &older, &cached]),
            "instruction changed (cached: `RUN a`)"
        );
        assert_eq!(
            explain_miss(&inputs("COPY x /", "1", None), &[&env]),
            "no cached COPY step after the previous one"
        );
        // Same text, different expansion.
        let mut expanded = inputs("RUN a", "1", None);
        expanded.instruction = "json RUN a, other".into();
        assert_eq!(
            explain_miss(&expanded, &[&cached]),
            "instruction changed after expansion (a variable or here-document differs)"
        );
    }
}
