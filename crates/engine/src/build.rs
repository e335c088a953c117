//! `berth build`: runs a planned Dockerfile (crates/builder) step by step.
//!
//! Metadata instructions change the image config; RUN runs in a temporary
//! container (the runtime directly, network `none`) on a snapshot prepared on
//! the current layer chain; COPY/ADD apply a tar of the sources onto such a
//! snapshot mounted. The snapshot's diff becomes a gzip layer blob and is
//! committed as the snapshot of its chain id. Every step's result is cached
//! under its key (`<root>/builder/cache.json`); a hit runs nothing.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use berth_builder::{
    apply_metadata, cache_key, command_argv, copy_tar, explain_miss, hash_sources, parse_chmod,
    parse_named, plan, resolve_path, shell_of, CacheEntry, CacheInputs, CacheStore, CachedLayer,
    Command, CopySource, CopySpec, DockerIgnore, Heredoc, Instruction, Node, Plan, StageRef,
    StageScope,
};
use berth_image_store::digest::Digest;
use berth_image_store::images::{now_rfc3339, ImageRecord, ImageStore};
use berth_image_store::manifest::{
    MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_MANIFEST,
};
use berth_image_store::reference::Reference;
use berth_image_store::registry::{Registry, RegistryOptions};
use berth_netns_bridge::{AttachOptions, NetworkStore, DEFAULT_NETWORK};
use berth_snapshotter::Kind;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::images::{chain_ids, Images};
use crate::spec::{self, NetworkMode, RunOptions, SpecInputs};

mod ssh_agent;

/// Where the build context comes from.
pub enum Context {
    /// A directory.
    Dir(PathBuf),
    /// A tar stream (`-`: stdin), plain or compressed; a stream that is no
    /// tar is taken as the Dockerfile of an empty context, as Docker's
    /// `build - < Dockerfile`.
    Tar(Box<dyn Read>),
}

/// Whether a stream starting with `head` is a tar (gzip, zstd, or a ustar /
/// GNU tar header) rather than a Dockerfile.
fn looks_like_tar(head: &[u8]) -> bool {
    use berth_image_store::manifest::{detect_compression, Compression};
    detect_compression(head) != Compression::None
        || head.get(257..262) == Some(b"ustar")
        // An empty tar: two zero blocks.
        || (head.len() >= 512 && head[..512].iter().all(|&b| b == 0))
}

/// Largest Dockerfile read from a stream.
const MAX_DOCKERFILE: u64 = 16 << 20;

/// `berth build` options.
pub struct BuildOptions {
    /// The context.
    pub context: Context,
    /// `-f`: the Dockerfile (default `<context>/Dockerfile`; for a tar context, a path inside it).
    pub dockerfile: Option<PathBuf>,
    /// `-f -`: the Dockerfile's text, read from stdin (over `dockerfile`).
    pub dockerfile_text: Option<String>,
    /// `-t` names.
    pub tags: Vec<String>,
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--target`.
    pub target: Option<String>,
    /// `-q`: no progress, no RUN output.
    pub quiet: bool,
    /// `--explain-cache` (or `--progress plain`): a `CACHE HIT` / `CACHE MISS: why`
    /// line per step.
    pub explain_cache: bool,
    /// `--network` of RUN steps (a `RUN --network=` flag wins).
    pub network: BuildNetwork,
    /// `--label`s of the image (over its Dockerfile's LABELs).
    pub labels: BTreeMap<String, String>,
    /// `--pull`: pull every base image, even one that is here.
    pub pull_always: bool,
    /// How to reach registries to pull base images (`FROM`, `COPY --from`)
    /// that are not here; `None`: local images only.
    pub registry: Option<RegistryOptions>,
    /// `--secret`s by id, for `RUN --mount=type=secret`; never in a layer
    /// or a cache key.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// `--ssh` ssh-agent sockets by id, for `RUN --mount=type=ssh`.
    pub ssh: BTreeMap<String, PathBuf>,
}

/// The network of RUN steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BuildNetwork {
    /// A new network namespace with only loopback.
    None,
    /// The host's network namespace.
    Host,
    /// A new network namespace attached to the default `bridge` network
    /// for the step (detached afterwards), as Docker's RUN: the default.
    #[default]
    Bridge,
}

impl std::str::FromStr for BuildNetwork {
    type Err = Error;
    fn from_str(s: &str) -> Result<BuildNetwork> {
        match s {
            "none" => Ok(BuildNetwork::None),
            "host" => Ok(BuildNetwork::Host),
            "bridge" | "default" => Ok(BuildNetwork::Bridge),
            o => Err(invalid(format!(
                "unknown build network {o:?} (use none, host or bridge)"
            ))),
        }
    }
}

/// The default cap of the build cache's layers (`build-cache-max-bytes`).
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 10_000_000_000;

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// A stage being built: the full image config plus its layers.
#[derive(Clone)]
struct State {
    config: Value,
    layers: Vec<Value>,
    diff_ids: Vec<String>,
    history: Vec<Value>,
    key: String,
}

impl State {
    fn top(&self) -> Option<String> {
        chain_ids(&self.diff_ids).pop()
    }
    fn workdir(&self) -> String {
        self.config["config"]["WorkingDir"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("/")
            .to_string()
    }
}

fn platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    format!("linux/{arch}")
}

/// Removes a directory tree when dropped.
/// One `RUN --mount`, read from its flag: where it goes (absolute) and what.
#[derive(Debug, Clone)]
struct RunMount {
    target: String,
    kind: MountKind,
}

#[derive(Debug, Clone)]
enum MountKind {
    /// A path of the context (`from` None) or of another stage's or image's
    /// layers (`from` its top chain id, `source` inside it); read-only unless
    /// `rw`, whose writes go to a scratch copy and are dropped after the step.
    Bind {
        from: Option<String>,
        source: PathBuf,
        rw: bool,
    },
    /// A directory kept between builds (`<root>/builder/mounts/<sha256 of
    /// id>`, of id, stage and path when seeded); a new one starts with a copy
    /// of `seed` (a stage's top chain id and a directory in it), if given.
    Cache {
        dir: PathBuf,
        readonly: bool,
        mode: u32,
        owner: (u32, u32),
        seed: Option<(String, PathBuf)>,
    },
    /// A fresh tmpfs, `size` bytes at most.
    Tmpfs { size: Option<u64> },
    /// The `--secret` `id` as a read-only file (`mode`, `owner`).
    Secret {
        id: String,
        mode: u32,
        owner: (u32, u32),
    },
    /// The `--secret` `id` as the step's environment variable `name` (no mount).
    SecretEnv { id: String, name: String },
    /// A socket forwarding to the `--ssh` agent `socket` (`mode`, `owner`).
    Ssh {
        socket: PathBuf,
        mode: u32,
        owner: (u32, u32),
    },
    /// An optional ssh mount whose agent was not given: no mount.
    SshMissing,
}

/// `RUN --mount` keys that are booleans (alone they mean true).
const BOOL_KEYS: &[&str] = &["ro", "readonly", "rw", "readwrite", "required"];

/// Where the `type=cache` mounts of RUN steps live; `builder prune` empties it.
fn cache_mounts_dir(root: &Path) -> PathBuf {
    root.join("builder").join("mounts")
}

/// `rel` under `root`, refused if it leaves `root` through `..` or a symlink.
fn context_path(root: &Path, rel: &str) -> std::io::Result<PathBuf> {
    let root = root.canonicalize()?;
    let path = root.join(rel.trim_start_matches('/')).canonicalize()?;
    if !path.starts_with(&root) {
        return Err(std::io::Error::other(format!(
            "{rel} is outside the source"
        )));
    }
    Ok(path)
}

/// Whether no directory between `root` (exclusive) and `path` (exclusive) is
/// a symlink, so that acting on `path` stays inside `root`.
fn no_symlink_between(root: &Path, path: &Path) -> bool {
    path.parent().is_some_and(|parent| {
        parent
            .ancestors()
            .take_while(|d| *d != root && d.starts_with(root))
            .all(|d| d.symlink_metadata().is_ok_and(|m| m.is_dir()))
    })
}

/// Applies what `spec` copies on `dir`, through the tar file `tarfile`
/// (removed again); a copy error is reported after `prefix`.
fn apply_copy(spec: &CopySpec<'_>, tarfile: &Path, dir: &Path, prefix: &str) -> Result<()> {
    let res = (|| {
        let mut f = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(tarfile)
            .map_err(Error::io("create copy tar"))?;
        copy_tar(spec, std::io::BufWriter::new(&mut f))
            .map_err(|e| invalid(format!("{prefix}{e}")))?;
        f.rewind().map_err(Error::io("read copy tar"))?;
        berth_snapshotter::apply_layer(dir, berth_snapshotter::buffered(f))?;
        Ok(())
    })();
    let _ = std::fs::remove_file(tarfile);
    res
}

/// The mount point for `target` in `rootfs` and the topmost of it and its
/// directories that `rootfs` lacks: all that the runtime will create there.
/// `None` when the mount point exists already.
fn runtime_made(rootfs: &Path, target: &str) -> Option<(PathBuf, PathBuf)> {
    let point = rootfs.join(target.trim_start_matches('/'));
    let top = point
        .ancestors()
        .take_while(|d| *d != rootfs && d.symlink_metadata().is_err())
        .last()?
        .to_path_buf();
    Some((point, top))
}

/// Gives `path` the permission bits `mode` and the owner `owner` (uid, gid).
fn set_mode_owner(path: &Path, mode: u32, owner: (u32, u32)) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1))
}

/// Gives `path` the mode and owner of the directory (or file) `like`.
fn set_mode_owner_like(path: &Path, like: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(like)?;
    set_mode_owner(path, meta.mode() & 0o7777, (meta.uid(), meta.gid()))
}

/// Copies `path` (under `root`; the root itself for `root`) into the
/// directory `dir` as COPY copies it, owners kept, without what `ignore`
/// excludes, through the tar file `tar`.
fn copy_tree(
    root: &Path,
    path: &Path,
    ignore: Option<&DockerIgnore>,
    dir: &Path,
    tar: &Path,
) -> Result<()> {
    let rel = path
        .strip_prefix(root)
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sources = [if rel.is_empty() { ".".to_string() } else { rel }];
    let spec = CopySpec {
        root,
        sources: &sources,
        dest: "/",
        dest_is_dir: true,
        ignore,
        owner: None,
        keep_owner: true,
        mode: None,
        extract: false,
    };
    apply_copy(&spec, tar, dir, "")
}

/// What one RUN step mounts from the host: read-only views of snapshots and
/// secret files; unmounted and removed when dropped.
struct StepMounts {
    snapshotter: berth_snapshotter::Snapshotter,
    mounted: Vec<(String, PathBuf)>,
    files: Vec<PathBuf>,
    /// Filtered copies of the context.
    dirs: Vec<PathBuf>,
    /// ssh-agent forwarders.
    proxies: Vec<ssh_agent::AgentProxy>,
    /// Throwaway overlays over context directories (`rw` binds).
    overlays: Vec<berth_snapshotter::MountGuard>,
}

impl StepMounts {
    fn new(root: &Path) -> Result<StepMounts> {
        Ok(StepMounts {
            snapshotter: berth_snapshotter::Snapshotter::open(&root.join("snapshots"))?,
            mounted: Vec::new(),
            files: Vec::new(),
            dirs: Vec::new(),
            proxies: Vec::new(),
            overlays: Vec::new(),
        })
    }

    /// Mount the committed snapshot `chain` (empty: no layers) at `target`,
    /// as `key`: a read-only view, or when `writable` an active snapshot
    /// whose writes are dropped with it; returns `target`.
    fn mount(
        &mut self,
        key: &str,
        chain: &str,
        target: &Path,
        writable: bool,
    ) -> std::result::Result<PathBuf, String> {
        let parent = (!chain.is_empty()).then_some(chain);
        let mounts = if writable {
            self.snapshotter.prepare(key, parent)
        } else {
            self.snapshotter.view(key, parent)
        }
        .map_err(|e| e.to_string())?;
        let mounted = std::fs::create_dir_all(target)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                berth_snapshotter::mount_all(&mounts, target).map_err(|e| e.to_string())
            });
        if let Err(e) = mounted {
            let _ = std::fs::remove_dir(target);
            let _ = self.snapshotter.remove(key);
            return Err(e);
        }
        self.mounted.push((key.to_string(), target.to_path_buf()));
        Ok(target.to_path_buf())
    }
}

impl Drop for StepMounts {
    fn drop(&mut self) {
        self.proxies.clear();
        self.overlays.clear();
        for (key, target) in self.mounted.drain(..) {
            let _ = berth_snapshotter::unmount(&target);
            let _ = std::fs::remove_dir(&target);
            let _ = self.snapshotter.remove(&key);
        }
        for f in self.files.drain(..) {
            let _ = std::fs::remove_file(f);
        }
        for d in self.dirs.drain(..) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Points fds 0 (and 1, 2 when quiet) at /dev/null until dropped.
struct Stdio(Vec<(i32, i32)>);
impl Stdio {
    fn redirect(quiet: bool) -> Stdio {
        let mut saved = Vec::new();
        if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
            use std::os::fd::AsRawFd;
            let fds: &[i32] = if quiet { &[0, 1, 2] } else { &[0] };
            for &fd in fds {
                // SAFETY: plain fd duplication on this process's own descriptors.
                let copy = unsafe { libc::dup(fd) };
                if copy >= 0 {
                    // SAFETY: as above; `null` outlives the call.
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                    saved.push((fd, copy));
                }
            }
        }
        Stdio(saved)
    }
}
impl Drop for Stdio {
    fn drop(&mut self) {
        for (fd, copy) in self.0.drain(..) {
            // SAFETY: restores the descriptors saved in `redirect`.
            unsafe {
                libc::dup2(copy, fd);
                libc::close(copy);
            }
        }
    }
}

struct Builder<'a> {
    images: Images,
    root: PathBuf,
    cache: CacheStore,
    run_root: PathBuf,
    work: PathBuf,
    /// `<root>/builder/scratch-<pid>`: bulk scratch data, on the state disk.
    scratch: PathBuf,
    context: PathBuf,
    ignore: DockerIgnore,
    opts: &'a BuildOptions,
    out: &'a mut dyn Write,
    seq: usize,
    /// The step being run and the number of steps, for messages.
    step_no: (usize, usize),
    /// Whether the previous step of this stage missed the cache.
    prev_missed: bool,
    /// The key of the stage's base (its first step's parent).
    base_key: String,
    /// Keys hit in this build (their `last_used` is refreshed at the end).
    hits: Vec<String>,
    /// The cache as read at the first lookup, plus this build's entries.
    entries: Option<BTreeMap<String, CacheEntry>>,
    /// Deletions of RUN steps' veth pairs, running beside the next steps
    /// (the kernel's deletion waits for an RCU grace period); joined at the end.
    veth_deletions: Vec<std::thread::JoinHandle<()>>,
}

/// Runs a build; returns the image id (config digest).
pub fn build(
    root: &Path,
    run_root: &Path,
    opts: BuildOptions,
    out: &mut dyn Write,
) -> Result<Digest> {
    let images = Images::open(root)?;
    // Held shared for the whole build: no prune removes our new blobs meanwhile.
    let gc = images.lock(false)?;
    let work = run_root.join("build").join(std::process::id().to_string());
    std::fs::create_dir_all(&work).map_err(Error::io(format!("create {}", work.display())))?;
    {
        // Secret files and downloads pass through here: this user's only.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::io(format!("chmod {}", work.display())))?;
    }
    let _work_guard = TempDir(work.clone());
    // Bulk scratch data (context copies, downloads, the writes of `rw` binds)
    // goes to the state disk, as Docker's, not to the run root (often tmpfs).
    let scratch = root
        .join("builder")
        .join(format!("scratch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&scratch)
            .map_err(Error::io(format!("create {}", scratch.display())))?;
    }
    let _scratch_guard = TempDir(scratch.clone());
    let mut opts = opts;
    let (context, _ctx_guard, df_path) =
        match std::mem::replace(&mut opts.context, Context::Dir(PathBuf::new())) {
            Context::Dir(d) => {
                let df = opts
                    .dockerfile
                    .clone()
                    .unwrap_or_else(|| d.join("Dockerfile"));
                (d, None, df)
            }
            Context::Tar(r) => {
                let dir = root
                    .join("builder")
                    .join(format!("context-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir)
                    .map_err(Error::io(format!("create {}", dir.display())))?;
                let guard = TempDir(dir.clone());
                // The first block, however the pipe splits it, tells a tar from a Dockerfile.
                let mut r = r;
                let mut head = Vec::with_capacity(512);
                (&mut r)
                    .take(512)
                    .read_to_end(&mut head)
                    .map_err(Error::io("read the build context"))?;
                let input = std::io::Cursor::new(head.clone()).chain(r);
                if looks_like_tar(&head) {
                    berth_snapshotter::apply_layer(&dir, berth_snapshotter::buffered(input))
                        .map_err(|e| invalid(format!("reading the context tar: {e}")))?;
                } else if opts.dockerfile_text.is_none() {
                    // `build - < Dockerfile`: no context, the stream is the Dockerfile.
                    let mut text = String::new();
                    input
                        .take(MAX_DOCKERFILE + 1)
                        .read_to_string(&mut text)
                        .map_err(|e| invalid(format!("reading the Dockerfile from stdin: {e}")))?;
                    if text.len() as u64 > MAX_DOCKERFILE {
                        return Err(invalid(format!(
                            "the Dockerfile on stdin is larger than {MAX_DOCKERFILE} bytes"
                        )));
                    }
                    opts.dockerfile_text = Some(text);
                }
                let df = dir.join(
                    opts.dockerfile
                        .clone()
                        .unwrap_or_else(|| "Dockerfile".into()),
                );
                (dir, Some(guard), df)
            }
        };
    let text = match opts.dockerfile_text.take() {
        Some(t) => t,
        None => std::fs::read_to_string(&df_path)
            .map_err(|e| invalid(format!("cannot read Dockerfile {}: {e}", df_path.display())))?,
    };
    let name = df_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into());
    let df = parse_named(&name, &text).map_err(|e| invalid(e.to_string()))?;
    let plan =
        plan(&df, opts.target.as_deref(), &opts.build_args).map_err(|e| invalid(e.to_string()))?;
    let ignore =
        DockerIgnore::for_context(&context, Some(&df_path)).map_err(|e| invalid(e.to_string()))?;
    let cache = CacheStore::open(&root.join("builder")).map_err(Error::io("open build cache"))?;
    pull_bases(&images, &df.file, &plan, &opts, out)?;
    preflight(&images, &df.file, &plan)?;
    let cap = crate::containers::network::EngineConfig::load(root)?
        .build_cache_max_bytes
        .unwrap_or(DEFAULT_CACHE_MAX_BYTES);
    let mut b = Builder {
        images,
        root: root.to_path_buf(),
        cache,
        run_root: run_root.to_path_buf(),
        work,
        scratch,
        context,
        ignore,
        opts: &opts,
        out,
        seq: 0,
        step_no: (0, 0),
        prev_missed: false,
        base_key: String::new(),
        hits: Vec::new(),
        entries: None,
        veth_deletions: Vec::new(),
    };
    let res = run_plan(&mut b, &df, &plan);
    for t in b.veth_deletions.drain(..) {
        let _ = t.join();
    }
    let _ = b.cache.touch(&b.hits);
    let evicted = b.cache.evict(cap).unwrap_or(0);
    let id = b.commit_image(res?)?;
    if evicted > 0 {
        // The layers only the evicted entries kept: collected now that the
        // new image is recorded (its blobs are referenced).
        drop(gc);
        let _ = b.images.remove_unused_blobs();
    }
    Ok(id)
}

/// Builds the needed stages in order; returns the target's state.
fn run_plan(b: &mut Builder<'_>, df: &berth_builder::Dockerfile, plan: &Plan) -> Result<State> {
    let opts = b.opts;
    let total: usize = plan
        .needed
        .iter()
        .map(|i| plan.stages[*i].nodes.len() + 1)
        .sum();
    let mut step = 0;
    let mut built: BTreeMap<usize, State> = BTreeMap::new();
    for &i in &plan.needed {
        let stage = &plan.stages[i];
        step += 1;
        b.say(&format!(
            "Step {step}/{total} : {}",
            first_line(&stage.from.text)
        ));
        let (mut state, triggers) = match &stage.base {
            StageRef::Stage(s) => (
                built
                    .get(s)
                    .cloned()
                    .ok_or_else(|| invalid(format!("stage {s} was not built")))?,
                Vec::new(),
            ),
            StageRef::Image(name) => {
                let mut state = b.base(name)?;
                let triggers = onbuild_triggers(&mut state, &loc(&df.file, &stage.from))?;
                (state, triggers)
            }
        };
        b.prev_missed = false;
        b.base_key = state.key.clone();
        let env = env_of(&state.config);
        let mut scope = StageScope::new(&plan.global_args, &opts.build_args, df.escape, env);
        if !triggers.is_empty() {
            b.say(&format!(" # Executing {} build trigger(s)", triggers.len()));
        }
        for mut node in triggers {
            // Errors point at the FROM line that pulled the trigger in.
            node.span = stage.from.span;
            b.step_no = (step, total);
            b.say(&format!(" ---> Trigger: {}", first_line(&node.text)));
            b.step(
                &df.file,
                &node,
                &mut scope,
                &mut state,
                &built,
                &plan.stages,
            )?;
        }
        for node in &stage.nodes {
            step += 1;
            b.step_no = (step, total);
            b.say(&format!("Step {step}/{total} : {}", first_line(&node.text)));
            b.step(&df.file, node, &mut scope, &mut state, &built, &plan.stages)?;
        }
        built.insert(i, state);
    }
    built
        .remove(&plan.target)
        .ok_or_else(|| invalid("the target stage was not built"))
}

/// The ONBUILD triggers of a base image, parsed; clears them from the
/// state's config (a child image does not inherit them, as Docker).
fn onbuild_triggers(state: &mut State, at: &str) -> Result<Vec<Node>> {
    let list: Vec<String> = state.config["config"]["OnBuild"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if list.is_empty() {
        return Ok(Vec::new());
    }
    state.config["config"]["OnBuild"] = Value::Null;
    let mut out = Vec::new();
    for t in list {
        let df = parse_named("ONBUILD", &format!("FROM scratch\n{t}\n"))
            .map_err(|e| invalid(format!("{at}: base image trigger `{t}`: {e}")))?;
        let node = df
            .nodes
            .into_iter()
            .nth(1)
            .ok_or_else(|| invalid(format!("{at}: empty base image trigger `{t}`")))?;
        if matches!(
            node.instruction,
            Instruction::From { .. } | Instruction::Onbuild(_) | Instruction::Maintainer(_)
        ) {
            return Err(invalid(format!(
                "{at}: base image trigger `{t}` is not allowed"
            )));
        }
        out.push(node);
    }
    Ok(out)
}

/// Checks before anything runs what can be checked from the text: every
/// `FROM --platform` is the host's, every `COPY --from` names a stage or a
/// local image, and no literal source escapes the context. Errors name
/// `file:line:col`.
fn preflight(images: &Images, file: &str, plan: &Plan) -> Result<()> {
    let host = platform();
    for &i in &plan.needed {
        let stage = &plan.stages[i];
        if let Some(p) = stage.platform.as_deref().filter(|p| !p.is_empty()) {
            // `linux/amd64`, or with a variant (`linux/arm64/v8`).
            let os_arch: String = p.splitn(3, '/').take(2).collect::<Vec<_>>().join("/");
            if !os_arch.eq_ignore_ascii_case(&host) {
                return Err(invalid(format!(
                    "{}: FROM --platform={p} does not match the host platform {host} (berth builds for the host only)",
                    loc(file, &stage.from)
                )));
            }
        }
        for node in &stage.nodes {
            let (Instruction::Copy(a) | Instruction::Add(a)) = &node.instruction else {
                continue;
            };
            let at = loc(file, node);
            match &a.from {
                Some(from) if !from.contains('$') => {
                    if stage_index(&plan.stages, from).is_none() && images.find(from).is_err() {
                        return Err(invalid(format!(
                            "{at}: {} --from={from}: no stage named {from:?} and no local image {from:?}",
                            node.instruction.keyword()
                        )));
                    }
                }
                Some(_) => {}
                None => {
                    for src in &a.sources {
                        let CopySource::Path(p) = src else { continue };
                        if p.contains('$') || p.contains("://") {
                            continue;
                        }
                        let c = berth_builder::clean_path(p.trim_start_matches('/'));
                        if c == ".." || c.starts_with("../") {
                            return Err(invalid(format!(
                                "{at}: {} source {p:?} is outside the build context",
                                node.instruction.keyword()
                            )));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The images a build starts from: the needed stages' bases and the
/// `COPY --from` images that are no stage, each with where the Dockerfile
/// names it; without `scratch` and names still holding a `$` (resolved
/// later, and pulled then).
fn external_images(file: &str, plan: &Plan) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = Vec::new();
    let mut add = |n: &str, at: String| {
        if !n.eq_ignore_ascii_case("scratch")
            && !n.contains('$')
            && !names.iter().any(|(x, _)| x == n)
        {
            names.push((n.to_string(), at));
        }
    };
    for &i in &plan.needed {
        let stage = &plan.stages[i];
        if let StageRef::Image(name) = &stage.base {
            add(name, format!("{}: FROM {name}", loc(file, &stage.from)));
        }
        for node in &stage.nodes {
            if let Instruction::Copy(a) | Instruction::Add(a) = &node.instruction {
                if let Some(from) = a.from.as_deref() {
                    if stage_index(&plan.stages, from).is_none() {
                        let what = format!("{} --from={from}", node.instruction.keyword());
                        add(from, format!("{}: {what}", loc(file, node)));
                    }
                }
            }
        }
    }
    names
}

/// Pull the base images that are missing (with `--pull`, all of them), as
/// `docker build` does, before any step runs.
fn pull_bases(
    images: &Images,
    file: &str,
    plan: &Plan,
    opts: &BuildOptions,
    out: &mut dyn Write,
) -> Result<()> {
    if opts.registry.is_none() {
        return Ok(());
    }
    for (name, at) in external_images(file, plan) {
        if opts.pull_always || images.is_missing(&name)? {
            pull_one(images, &name, opts, out).map_err(|e| invalid(format!("{at}: {e}")))?;
        }
    }
    Ok(())
}

/// Pull one base image (nothing without registry options).
fn pull_one(images: &Images, name: &str, opts: &BuildOptions, out: &mut dyn Write) -> Result<()> {
    let Some(registry) = &opts.registry else {
        return Ok(());
    };
    if !opts.quiet {
        let _ = writeln!(out, "Pulling {name}");
    }
    let (reference, image) = images
        .pull(name, registry.clone())
        .map_err(|e| invalid(format!("pull {name}: {e}")))?;
    if !opts.quiet {
        let _ = writeln!(
            out,
            "Pulled {} ({})",
            reference.familiar(),
            image.manifest_digest
        );
    }
    Ok(())
}

/// Where a `#!` RUN here-document is mounted in the step's container (on
/// its /dev tmpfs, so nothing appears in the layer).
const HEREDOC_PATH: &str = "/dev/.berth-heredoc";

/// What a RUN step executes.
struct RunCommand {
    argv: Vec<String>,
    /// A `#!` here-document, mounted at [`HEREDOC_PATH`] and executed.
    script: Option<String>,
}

/// The argv of a RUN: exec or shell form; with here-documents as BuildKit
/// runs them: `RUN <<EOF` alone runs the body as the shell's script (a body
/// starting with `#!` is a file of its own, executed), any other command
/// gets the here-documents attached (the shell reads them).
fn run_argv(command: &Command, heredocs: &[Heredoc], text: &str, shell: &[String]) -> RunCommand {
    let plain = |argv| RunCommand { argv, script: None };
    let Command::Shell(line) = command else {
        return plain(command_argv(command, shell));
    };
    if heredocs.is_empty() {
        return plain(command_argv(command, shell));
    }
    let word = line.trim();
    let only = word
        .strip_prefix("<<")
        .map(|w| w.trim_start_matches('-').trim_matches(['"', '\'']))
        .is_some_and(|w| !w.is_empty() && w.chars().all(|c| c.is_alphanumeric() || c == '_'));
    if only && heredocs.len() == 1 {
        let body = &heredocs[0].content;
        if body.starts_with("#!") {
            return RunCommand {
                argv: vec![HEREDOC_PATH.into()],
                script: Some(body.clone()),
            };
        }
        return plain(command_argv(&Command::Shell(body.clone()), shell));
    }
    // The first line as the command, then the bodies and delimiters as written.
    let rest = text.split_once('\n').map_or("", |(_, r)| r);
    plain(command_argv(
        &Command::Shell(format!("{line}\n{rest}\n")),
        shell,
    ))
}

/// The delimiters of the here-documents on the first line of `text`
/// (`COPY <<A <<"B" /dest` -> `A`, `B`): the file names BuildKit gives them.
fn heredoc_names(text: &str) -> Vec<String> {
    first_line(text)
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("<<"))
        .map(|w| {
            w.trim_start_matches('-')
                .trim_matches(['"', '\''])
                .to_string()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

fn env_of(config: &Value) -> Vec<(String, String)> {
    config["config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str())
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.to_string(), String::new()),
        })
        .collect()
}

fn loc(file: &str, node: &Node) -> String {
    format!("{file}:{}:{}", node.span.line, node.span.column)
}

impl Builder<'_> {
    fn say(&mut self, line: &str) {
        if !self.opts.quiet {
            let _ = writeln!(self.out, "{line}");
            let _ = self.out.flush();
        }
    }

    /// `ADD URL...`: each URL downloaded (redirects followed, proxies from the
    /// environment) into a new directory under the name BuildKit gives it,
    /// mode 0600 and mtime from `Last-Modified` as Docker's; with `--checksum`
    /// (one URL) its sha256 must match. Returns the directory and the names.
    fn download(
        &mut self,
        at: &str,
        urls: &[String],
        checksum: Option<&str>,
    ) -> Result<(TempDir, Vec<String>)> {
        use std::os::unix::fs::PermissionsExt;
        let want = match checksum {
            None => None,
            Some(c) => match c.strip_prefix("sha256:") {
                Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    Some(hex.to_ascii_lowercase())
                }
                _ => {
                    return Err(invalid(format!(
                        "{at}: ADD --checksum={c}: expected sha256:<64 hex digits>"
                    )))
                }
            },
        };
        let client = Registry::new(self.opts.registry.clone().unwrap_or_default())
            .map_err(|e| invalid(format!("{at}: {e}")))?;
        let dir = self.scratch.join(format!("url-{}", self.seq));
        std::fs::create_dir_all(&dir).map_err(Error::io("create download dir"))?;
        let guard = TempDir(dir.clone());
        let mut names: Vec<String> = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            self.say(&format!(" ---> Downloading {url}"));
            let part = dir.join(format!(".part-{i}"));
            let got = client
                .download(url, &part)
                .map_err(|e| invalid(format!("{at}: ADD: {e}")))?;
            if names.contains(&got.name) {
                return Err(invalid(format!(
                    "{at}: ADD: two URLs give the file name {}",
                    got.name
                )));
            }
            if let Some(want) = &want {
                let mut f = File::open(&part).map_err(Error::io("read the download"))?;
                let mut hasher = berth_image_store::digest::Hasher::new();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = f.read(&mut buf).map_err(Error::io("read the download"))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
                let have = hasher.finish().hex().to_string();
                if &have != want {
                    return Err(invalid(format!(
                        "{at}: ADD {url}: checksum mismatch: sha256:{have}, expected sha256:{want}"
                    )));
                }
            }
            std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o600))
                .map_err(Error::io("chmod the download"))?;
            std::fs::rename(&part, dir.join(&got.name)).map_err(Error::io("name the download"))?;
            names.push(got.name);
        }
        Ok((guard, names))
    }

    /// Reads the `RUN --mount` flags: what each mounts where, and the part of
    /// the step's key their contents make (a bind mount's files; another
    /// stage's layers, also for a cache seeded from it).
    fn plan_mounts(
        &mut self,
        at: &str,
        mounts: &[berth_builder::Mount],
        workdir: &str,
        built: &BTreeMap<usize, State>,
        stages: &[berth_builder::Stage],
    ) -> Result<(Vec<RunMount>, Option<String>)> {
        let mut plans = Vec::new();
        let mut keys = Vec::new();
        for m in mounts {
            let bad = |what: String| invalid(format!("{at}: RUN --mount={}: {what}", m.spec));
            let mut fields = BTreeMap::new();
            // ro/readonly/rw/readwrite in order: the last one decides.
            let mut readonly = None;
            for part in m.spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = match part.split_once('=') {
                    Some(kv) => kv,
                    // Only the booleans may stand alone (meaning true).
                    None if BOOL_KEYS.contains(&part.to_ascii_lowercase().as_str()) => {
                        (part, "true")
                    }
                    None => {
                        return Err(bad(format!(
                            "invalid field {part:?}: must be a key=value pair"
                        )))
                    }
                };
                let k = k.to_ascii_lowercase();
                if BOOL_KEYS.contains(&k.as_str()) {
                    let b = berth_volumes::parse_go_bool(v)
                        .ok_or_else(|| bad(format!("invalid value {v:?} for {k}")))?;
                    match k.as_str() {
                        "ro" | "readonly" => readonly = Some(b),
                        "rw" | "readwrite" => readonly = Some(!b),
                        _ => {}
                    }
                }
                fields.insert(k, v.to_string());
            }
            // BuildKit's keys; any other is a typo it refuses too.
            const KEYS: &[&str] = &[
                "type",
                "target",
                "dst",
                "destination",
                "source",
                "src",
                "from",
                "ro",
                "readonly",
                "rw",
                "readwrite",
                "id",
                "sharing",
                "mode",
                "uid",
                "gid",
                "required",
                "size",
                "env",
            ];
            if let Some(k) = fields.keys().find(|k| !KEYS.contains(&k.as_str())) {
                return Err(bad(format!("unexpected key {k:?}")));
            }
            let field = |names: &[&str]| names.iter().find_map(|n| fields.get(*n).cloned());
            // Every sharing mode shares: concurrent steps see one cache directory.
            if let Some(v) = field(&["sharing"]) {
                if !matches!(v.as_str(), "shared" | "private" | "locked") {
                    return Err(bad(format!(
                        "invalid sharing {v:?} (shared, private, locked)"
                    )));
                }
            }
            let required = field(&["required"])
                .is_some_and(|v| berth_volumes::parse_go_bool(&v) == Some(true));
            let kind_name = field(&["type"]).unwrap_or_else(|| "bind".into());
            if kind_name == "ssh" && field(&["source", "src"]).is_some() {
                return Err(bad("ssh mounts do not take a source".into()));
            }
            let secret_id = field(&["id"]).or_else(|| {
                field(&["target", "dst", "destination"])
                    .map(|t| t.rsplit('/').next().unwrap_or_default().to_string())
            });
            if kind_name == "secret" && secret_id.is_none() {
                return Err(bad("a secret needs an id or a target".into()));
            }
            let env_only = kind_name == "secret"
                && field(&["env"]).is_some()
                && field(&["target", "dst", "destination"]).is_none();
            let target = match field(&["target", "dst", "destination"]) {
                Some(t) => t,
                // Unused: the secret only becomes a variable.
                None if env_only => "/run/secrets".into(),
                None if kind_name == "secret" => match &secret_id {
                    Some(id) => format!("/run/secrets/{id}"),
                    None => return Err(bad("no id or target".into())),
                },
                // BuildKit's default: the Nth ssh mount of the step.
                None if kind_name == "ssh" => format!(
                    "/run/buildkit/ssh_agent.{}",
                    plans
                        .iter()
                        .filter(|p: &&RunMount| {
                            matches!(p.kind, MountKind::Ssh { .. } | MountKind::SshMissing)
                        })
                        .count()
                ),
                None => return Err(bad("no target".into())),
            };
            // Secret and ssh targets do not follow WORKDIR (as BuildKit).
            let target = match kind_name.as_str() {
                "secret" | "ssh" => resolve_path("/", &target),
                _ => resolve_path(workdir, &target),
            };
            if target == "/" {
                return Err(bad("cannot mount on /".into()));
            }
            let mode_field = |default: u32| -> Result<u32> {
                match field(&["mode"]) {
                    Some(m) => parse_chmod(&m).map_err(|_| bad(format!("invalid mode {m:?}"))),
                    None => Ok(default),
                }
            };
            let owner = |name: &str| -> Result<u32> {
                field(&[name]).map_or(Ok(0), |v| {
                    v.parse().map_err(|_| bad(format!("invalid {name} {v:?}")))
                })
            };
            let kind = match kind_name.as_str() {
                "bind" => {
                    let rw = readonly == Some(false);
                    let source = field(&["source", "src"]).unwrap_or_else(|| "/".into());
                    let source = source.trim_start_matches('/').to_string();
                    match field(&["from"]) {
                        None => {
                            let path = context_path(&self.context, &source)
                                .map_err(|e| bad(e.to_string()))?;
                            if !source.is_empty()
                                && self.ignore.is_excluded(&berth_builder::clean_path(&source))
                            {
                                return Err(bad(format!("{source} is excluded by .dockerignore")));
                            }
                            let sources = [if source.is_empty() {
                                ".".to_string()
                            } else {
                                source
                            }];
                            keys.push(format!(
                                "bind {target} {}",
                                hash_sources(&self.context, &sources, &self.ignore)
                                    .map_err(|e| bad(e.to_string()))?
                            ));
                            MountKind::Bind {
                                from: None,
                                source: path,
                                rw,
                            }
                        }
                        Some(from) => {
                            let src = self
                                .stage_or_image(&from, stages, built)?
                                .ok_or_else(|| bad(format!("stage {from} not built")))?;
                            let chain = src.top().unwrap_or_default();
                            keys.push(format!("bind {target} {}|{chain}|{source}", src.key));
                            MountKind::Bind {
                                from: Some(chain),
                                source: PathBuf::from(source),
                                rw,
                            }
                        }
                    }
                }
                "cache" => {
                    let id = field(&["id"]).unwrap_or_else(|| target.clone());
                    let mode = mode_field(0o755)?;
                    let source = field(&["source", "src"]);
                    let seed = match field(&["from"]) {
                        None if source.is_some() => {
                            return Err(bad(
                                "source= on a cache needs from= (a subpath of the cache is not supported)"
                                    .into(),
                            ))
                        }
                        None => None,
                        Some(from) => {
                            let src = self
                                .stage_or_image(&from, stages, built)?
                                .ok_or_else(|| bad(format!("stage {from} not built")))?;
                            let chain = src.top().unwrap_or_default();
                            let source = source.unwrap_or_default();
                            let source = source.trim_start_matches('/').to_string();
                            // The seed shapes what the step sees first: in its key.
                            keys.push(format!("cache {target} {}|{chain}|{source}", src.key));
                            Some((chain, PathBuf::from(source)))
                        }
                    };
                    // A cache seeded from elsewhere is another cache.
                    let name = match &seed {
                        None => id,
                        Some((chain, source)) => {
                            format!("{id}\nfrom {chain} {}", source.display())
                        }
                    };
                    let hex = berth_image_store::digest::Digest::of(name.as_bytes())
                        .hex()
                        .to_string();
                    MountKind::Cache {
                        dir: cache_mounts_dir(&self.root).join(hex),
                        readonly: readonly == Some(true),
                        mode,
                        owner: (owner("uid")?, owner("gid")?),
                        seed,
                    }
                }
                "tmpfs" => {
                    let size = match field(&["size"]) {
                        Some(v) => Some(
                            berth_volumes::parse_bytes(&v)
                                .ok_or_else(|| bad(format!("invalid size {v:?}")))?,
                        ),
                        None => None,
                    };
                    MountKind::Tmpfs { size }
                }
                "secret" => {
                    let id = secret_id.unwrap_or_default();
                    let env = field(&["env"]);
                    if env
                        .as_deref()
                        .is_some_and(|n| n.is_empty() || n.contains('='))
                    {
                        return Err(bad(format!("invalid env {:?}", env.unwrap_or_default())));
                    }
                    if !self.opts.secrets.contains_key(&id) {
                        if required {
                            return Err(bad(format!(
                                "secret {id} is required but was not given (--secret id={id},src=FILE)"
                            )));
                        }
                        // As BuildKit: a missing optional secret is no mount,
                        // and its variable is set, empty.
                        if let Some(name) = env {
                            plans.push(RunMount {
                                target,
                                kind: MountKind::SecretEnv { id, name },
                            });
                        }
                        continue;
                    }
                    if let Some(name) = env {
                        let value = &self.opts.secrets[&id];
                        if std::str::from_utf8(value).is_err() || value.contains(&0) {
                            return Err(bad(format!(
                                "secret {id} is not text (UTF-8 without NUL bytes): it cannot be a variable"
                            )));
                        }
                        plans.push(RunMount {
                            target: target.clone(),
                            kind: MountKind::SecretEnv {
                                id: id.clone(),
                                name,
                            },
                        });
                        if env_only {
                            continue;
                        }
                    }
                    MountKind::Secret {
                        id,
                        mode: mode_field(0o400)?,
                        owner: (owner("uid")?, owner("gid")?),
                    }
                }
                "ssh" => {
                    let id = field(&["id"]).unwrap_or_else(|| "default".into());
                    let Some(socket) = self.opts.ssh.get(&id) else {
                        if required {
                            return Err(bad(format!(
                                "ssh agent {id} is required but was not given (--ssh {id}=SOCKET)"
                            )));
                        }
                        // As BuildKit: a missing optional agent is no mount
                        // (but counts for the default targets and SSH_AUTH_SOCK).
                        plans.push(RunMount {
                            target,
                            kind: MountKind::SshMissing,
                        });
                        continue;
                    };
                    MountKind::Ssh {
                        socket: socket.clone(),
                        mode: mode_field(0o600)?,
                        owner: (owner("uid")?, owner("gid")?),
                    }
                }
                other => return Err(bad(format!("unknown mount type {other:?}"))),
            };
            plans.push(RunMount { target, kind });
        }
        Ok((plans, (!keys.is_empty()).then(|| keys.join("\n"))))
    }

    /// The runtime mount for `m` (none for a secret that is only a variable);
    /// a bind from another stage mounts its layers first, and an `rw` bind of
    /// the context copies it first (kept in `views` until the step ends).
    fn mount_for_run(
        &mut self,
        m: &RunMount,
        views: &mut StepMounts,
    ) -> std::result::Result<Option<oci_spec::runtime::Mount>, String> {
        let mount = match &m.kind {
            MountKind::Bind {
                from: None,
                source,
                rw,
            } => {
                let access = if *rw { "rw" } else { "ro" };
                if self.ignore.patterns().is_empty() && !rw {
                    return Ok(Some(spec::bind_mount(source, &m.target, &["rbind", "ro"])));
                }
                // An `rw` directory: its writes go to a throwaway overlay, not
                // to a copy of it (a copy where overlay cannot be had).
                if self.ignore.patterns().is_empty() && source.is_dir() {
                    if let Ok(merged) = self.scratch_overlay(source, views) {
                        return Ok(Some(spec::bind_mount(&merged, &m.target, &["rbind", "rw"])));
                    }
                }
                // The step sees the context as COPY does: without what
                // .dockerignore excludes, so a copy of what is left; and its
                // writes to an `rw` bind go to that copy, which is dropped.
                let path = self
                    .filtered_context(source, views)
                    .map_err(|e| format!("copy the context for the mount: {e}"))?;
                spec::bind_mount(&path, &m.target, &["rbind", access])
            }
            MountKind::Bind {
                from: Some(chain),
                source,
                rw,
            } => {
                let key = self.next_key("mount");
                let target = self.work.join(&key);
                let root = views.mount(&key, chain, &target, *rw)?;
                // Symlinks resolve inside the stage, as they would in it.
                let path = spec::resolve_in_root(&root, source)
                    .filter(|p| p.symlink_metadata().is_ok())
                    .ok_or_else(|| {
                        format!("source /{} not found in the stage", source.display())
                    })?;
                let access = if *rw { "rw" } else { "ro" };
                spec::bind_mount(&path, &m.target, &["rbind", access])
            }
            MountKind::Cache {
                dir,
                readonly,
                mode,
                owner,
                seed,
            } => {
                if !dir.exists() {
                    let tmp = dir.with_extension(format!("new-{}", std::process::id()));
                    let _ = std::fs::remove_dir_all(&tmp);
                    let seeded = match seed {
                        None => Ok(()),
                        Some((chain, source)) => std::fs::create_dir_all(&tmp)
                            .map_err(|e| e.to_string())
                            .and_then(|()| self.seed_cache(chain, source, &tmp, views)),
                    };
                    if let Err(e) = seeded {
                        let _ = std::fs::remove_dir_all(&tmp);
                        return Err(format!("seed the cache: {e}"));
                    }
                    // A seeded cache's root keeps the stage directory's mode and
                    // owner (as BuildKit, which ignores mode/uid/gid then).
                    let made = std::fs::create_dir_all(&tmp)
                        .and_then(|()| match seed {
                            Some(_) => Ok(()),
                            None => set_mode_owner(&tmp, *mode, *owner),
                        })
                        // Never over a cache another build made meanwhile (a plain
                        // rename would replace an empty one it already mounted).
                        .and_then(|()| {
                            nix::fcntl::renameat2(
                                nix::fcntl::AT_FDCWD,
                                &tmp,
                                nix::fcntl::AT_FDCWD,
                                dir,
                                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
                            )
                            .map_err(std::io::Error::from)
                        });
                    if let Err(e) = made {
                        let _ = std::fs::remove_dir_all(&tmp);
                        if !dir.exists() {
                            return Err(format!("create the cache directory: {e}"));
                        }
                    }
                }
                let access = if *readonly { "ro" } else { "rw" };
                spec::bind_mount(dir, &m.target, &["rbind", access])
            }
            MountKind::Secret { id, mode, owner } => {
                use std::os::unix::fs::OpenOptionsExt;
                let name = self.next_key("secret");
                let path = self.work.join(name);
                let data = self.opts.secrets.get(id).ok_or("secret gone")?;
                views.files.push(path.clone());
                let mut f = File::options()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| format!("write secret {id}: {e}"))?;
                f.write_all(data)
                    .map_err(|e| format!("write secret {id}: {e}"))?;
                set_mode_owner(&path, *mode, *owner).map_err(|e| format!("secret {id}: {e}"))?;
                spec::bind_mount(&path, &m.target, &["bind", "ro"])
            }
            MountKind::SecretEnv { .. } | MountKind::SshMissing => return Ok(None),
            MountKind::Ssh {
                socket,
                mode,
                owner,
            } => {
                let name = self.next_key("ssh");
                let path = self.work.join(name);
                let proxy = ssh_agent::AgentProxy::start(socket, &path, *mode, *owner)
                    .map_err(|e| format!("forward the ssh agent {}: {e}", socket.display()))?;
                views.proxies.push(proxy);
                spec::bind_mount(&path, &m.target, &["bind"])
            }
            MountKind::Tmpfs { size } => {
                let mut options = vec!["nosuid".to_string(), "nodev".to_string()];
                if let Some(size) = size {
                    options.push(format!("size={size}"));
                }
                let mut mount = oci_spec::runtime::Mount::default();
                mount.set_destination(PathBuf::from(&m.target));
                mount.set_typ(Some("tmpfs".into()));
                mount.set_source(Some(PathBuf::from("tmpfs")));
                mount.set_options(Some(options));
                mount
            }
        };
        Ok(Some(mount))
    }

    /// An overlay with `lower` below and a scratch upper directory in the work
    /// directory, kept in `views` until the step ends; returns where it is.
    fn scratch_overlay(&mut self, lower: &Path, views: &mut StepMounts) -> Result<PathBuf> {
        let name = self.next_key("rw");
        // The step's writes on the state disk; the mount point in the run root
        // (where `berth check` finds mounts a killed build left).
        let (dir, data) = (self.work.join(&name), self.scratch.join(&name));
        for d in [dir.join("merged"), data.join("upper"), data.join("work")] {
            std::fs::create_dir_all(d).map_err(Error::io("create the overlay"))?;
        }
        // The overlay's root shows the upper directory's mode and owner: the
        // source's, as a plain bind would show them.
        set_mode_owner_like(&data.join("upper"), lower).map_err(Error::io("create the overlay"))?;
        views.dirs.push(dir.clone());
        views.dirs.push(data.clone());
        // A link with a plain name: the source's path may hold `,` or `:`.
        std::os::unix::fs::symlink(lower, dir.join("lower"))
            .map_err(Error::io("create the overlay"))?;
        let options = vec![
            format!("lowerdir={}", dir.join("lower").display()),
            format!("upperdir={}", data.join("upper").display()),
            format!("workdir={}", data.join("work").display()),
        ];
        let mount = berth_snapshotter::Mount {
            typ: "overlay".into(),
            source: PathBuf::from("overlay"),
            target: None,
            options,
            cwd: None,
        };
        let merged = dir.join("merged");
        views
            .overlays
            .push(berth_snapshotter::MountGuard::mount(&[mount], &merged)?);
        Ok(merged)
    }

    /// Copies the directory `source` of the committed snapshot `chain` into
    /// `dir` (owners, modes and links kept, symlinks resolving in the stage).
    fn seed_cache(
        &mut self,
        chain: &str,
        source: &Path,
        dir: &Path,
        views: &mut StepMounts,
    ) -> std::result::Result<(), String> {
        let key = self.next_key("seed");
        let target = self.work.join(&key);
        let root = views.mount(&key, chain, &target, false)?;
        let path = spec::resolve_in_root(&root, source)
            .filter(|p| p.is_dir())
            .ok_or_else(|| {
                format!(
                    "source /{} is not a directory in the stage",
                    source.display()
                )
            })?;
        let tar = self.scratch.join(format!("{key}.tar"));
        copy_tree(&root, &path, None, dir, &tar).map_err(|e| e.to_string())?;
        // The root too: the copy holds what is in it.
        set_mode_owner_like(dir, &path).map_err(|e| e.to_string())
    }

    /// A copy of the context path `source` (canonical) without what
    /// .dockerignore excludes, kept in `views` until the step ends.
    fn filtered_context(&mut self, source: &Path, views: &mut StepMounts) -> Result<PathBuf> {
        let context = self
            .context
            .canonicalize()
            .map_err(Error::io("read the context"))?;
        let name = self.next_key("bind");
        let dir = self.scratch.join(name);
        std::fs::create_dir(&dir).map_err(Error::io("create the mount copy"))?;
        views.dirs.push(dir.clone());
        copy_tree(
            &context,
            source,
            Some(&self.ignore),
            &dir,
            &dir.with_extension("tar"),
        )?;
        Ok(if source.is_dir() {
            dir
        } else {
            dir.join(source.file_name().unwrap_or_default())
        })
    }

    fn next_key(&mut self, what: &str) -> String {
        self.seq += 1;
        format!("build-{}-{}-{what}", std::process::id(), self.seq)
    }

    /// The state a `--from`/`from=` names: a stage of this Dockerfile (`None`
    /// if it is not built yet), else an image (or scratch).
    fn stage_or_image(
        &mut self,
        from: &str,
        stages: &[berth_builder::Stage],
        built: &BTreeMap<usize, State>,
    ) -> Result<Option<State>> {
        match stage_index(stages, from) {
            Some(i) => Ok(built.get(&i).cloned()),
            None => self.base(from).map(Some),
        }
    }

    /// The state of `FROM name` (an image, unpacked; or scratch).
    fn base(&mut self, name: &str) -> Result<State> {
        if name.eq_ignore_ascii_case("scratch") {
            let arch = platform().trim_start_matches("linux/").to_string();
            return Ok(State {
                config: json!({"architecture": arch, "os": "linux", "config": {},
                    "rootfs": {"type": "layers", "diff_ids": []}, "history": []}),
                layers: vec![],
                diff_ids: vec![],
                history: vec![],
                key: "scratch".into(),
            });
        }
        let found = match self.images.find(name) {
            // A name only known once ARGs were resolved: pulled now.
            Err(Error::NoSuchImage(_)) if self.opts.registry.is_some() => {
                pull_one(&self.images, name, self.opts, self.out)?;
                self.images.find(name)
            }
            other => other,
        };
        let (_, image) = found
            .map_err(|e| match e {
                Error::NoSuchImage(_) => invalid(format!("FROM {name}: no such image")),
                e => e,
            })?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NoSuchImage(name.into()))?;
        self.images.unpack(&image)?;
        // The raw config: the OCI type drops Healthcheck, OnBuild and Shell.
        let raw = self.images.content().read(&image.config_digest)?;
        let config: Value = serde_json::from_reader(std::io::BufReader::new(raw))
            .map_err(|e| invalid(format!("image config: {e}")))?;
        Ok(State {
            history: config["history"].as_array().cloned().unwrap_or_default(),
            diff_ids: image.config.rootfs().diff_ids().clone(),
            layers: image
                .layers
                .iter()
                .map(|l| serde_json::to_value(l).unwrap_or(Value::Null))
                .collect(),
            config,
            key: image.config_digest.to_string(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        file: &str,
        node: &Node,
        scope: &mut StageScope<'_>,
        state: &mut State,
        built: &BTreeMap<usize, State>,
        stages: &[berth_builder::Stage],
    ) -> Result<()> {
        let at = loc(file, node);
        let ins = scope
            .evaluate(&node.instruction)
            .map_err(|e| invalid(format!("{at}: {e}")))?;
        // Where COPY/ADD read from, and the content part of the key.
        // The --from snapshot chain.
        let mut from_root: Option<String> = None;
        // RUN --mount: what each gives the step.
        let mut run_mounts: Vec<RunMount> = Vec::new();
        // COPY/ADD here-documents and ADD URLs: files written (or downloaded)
        // into this directory under these names, copied from there.
        let mut generated: Option<(TempDir, Vec<String>)> = None;
        let content = match &ins {
            Instruction::Copy(a) | Instruction::Add(a) => {
                let mut paths = Vec::new();
                let mut docs = Vec::new();
                let mut urls = Vec::new();
                let is_add = matches!(ins, Instruction::Add(_));
                for s in &a.sources {
                    match s {
                        CopySource::Path(p) if p.contains("://") || p.starts_with("git@") => {
                            if !is_add {
                                return Err(invalid(format!(
                                    "{at}: COPY: a source cannot be a URL ({p}); use ADD"
                                )));
                            }
                            if !(p.starts_with("http://") || p.starts_with("https://")) {
                                return Err(invalid(format!(
                                    "{at}: ADD of {p}: only http and https URLs are supported (not git)"
                                )));
                            }
                            urls.push(p.clone());
                        }
                        CopySource::Path(p) => paths.push(p.clone()),
                        CopySource::Heredoc(h) => docs.push(h.content.clone()),
                    }
                }
                if a.checksum.is_some() && urls.len() != 1 {
                    return Err(invalid(format!(
                        "{at}: ADD --checksum needs exactly one URL source"
                    )));
                }
                if !urls.is_empty() {
                    if !paths.is_empty() || !docs.is_empty() {
                        return Err(invalid(format!(
                            "{at}: ADD of URLs together with other sources is not supported yet"
                        )));
                    }
                    let (dir, names) = self.download(&at, &urls, a.checksum.as_deref())?;
                    let names: Vec<String> = names.iter().map(|n| literal_source(n)).collect();
                    let hash = hash_sources(&dir.0, &names, &DockerIgnore::default())
                        .map_err(|e| invalid(format!("{at}: {e}")))?;
                    generated = Some((dir, names));
                    Some(hash)
                } else if !docs.is_empty() {
                    if !paths.is_empty() || a.from.is_some() {
                        return Err(invalid(format!(
                            "{at}: {} of here-documents together with other sources is not supported yet",
                            ins.keyword()
                        )));
                    }
                    let names = heredoc_names(&node.text);
                    if names.len() != docs.len() {
                        return Err(invalid(format!(
                            "{at}: cannot tell the here-documents' names apart"
                        )));
                    }
                    let dir = self.work.join(format!("heredoc-{}", self.seq));
                    std::fs::create_dir_all(&dir).map_err(Error::io("create heredoc dir"))?;
                    let guard = TempDir(dir.clone());
                    for (name, body) in names.iter().zip(&docs) {
                        use std::os::unix::fs::PermissionsExt;
                        let f = dir.join(name);
                        std::fs::write(&f, body).map_err(Error::io("write here-document"))?;
                        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))
                            .map_err(Error::io("chmod here-document"))?;
                    }
                    let names: Vec<String> = names.iter().map(|n| literal_source(n)).collect();
                    let hash = hash_sources(&dir, &names, &DockerIgnore::default())
                        .map_err(|e| invalid(format!("{at}: {e}")))?;
                    generated = Some((guard, names));
                    Some(hash)
                } else {
                    match &a.from {
                        None => Some(
                            hash_sources(&self.context, &paths, &self.ignore)
                                .map_err(|e| invalid(format!("{at}: {e}")))?,
                        ),
                        Some(from) => {
                            let src = self
                                .stage_or_image(from, stages, built)?
                                .ok_or_else(|| invalid(format!("{at}: stage {from} not built")))?;
                            let chain = src.top();
                            from_root = Some(chain.clone().unwrap_or_default());
                            // The source stage's layers identify its files.
                            Some(format!("{}|{}", src.key, chain.unwrap_or_default()))
                        }
                    }
                }
            }
            Instruction::Run { mounts, .. } if !mounts.is_empty() => {
                let (plans, key) =
                    self.plan_mounts(&at, mounts, &state.workdir(), built, stages)?;
                run_mounts = plans;
                key
            }
            _ => None,
        };
        let created_by = first_line(&node.text).to_string();
        // RUN's network (a `--network` flag wins over the build's) is part of its key.
        let net = match &ins {
            Instruction::Run {
                network: Some(n), ..
            } if n != "default" => n
                .parse()
                .map_err(|e: Error| invalid(format!("{at}: RUN --network: {e}")))?,
            // No flag, or `--network=default`: the build's.
            _ => self.opts.network,
        };
        let mut instruction = ins.cache_text();
        if matches!(ins, Instruction::Run { .. }) {
            match net {
                BuildNetwork::None => {}
                BuildNetwork::Host => instruction.push_str("\nnetwork=host"),
                BuildNetwork::Bridge => instruction.push_str("\nnetwork=bridge"),
            }
        }
        let inputs = CacheInputs {
            parent: state.key.clone(),
            text: created_by.clone(),
            instruction,
            args: scope.args(),
            content,
        };
        let key = cache_key(
            &inputs.parent,
            &inputs.instruction,
            &inputs.args,
            &platform(),
            inputs.content.as_deref(),
        );
        let why = if self.opts.no_cache {
            "--no-cache".to_string()
        } else {
            if self.entries.is_none() {
                self.entries = Some(
                    self.cache
                        .entries()
                        .map_err(Error::io("read build cache"))?,
                );
            }
            let all = self.entries.as_ref().expect("loaded");
            match all.get(&key).cloned() {
                Some(entry) if self.usable(&entry) => {
                    self.say(" ---> Using cache");
                    if self.opts.explain_cache {
                        self.say(" ---> CACHE HIT");
                    }
                    self.ensure_snapshot(state, &entry)?;
                    self.hits.push(key.clone());
                    self.prev_missed = false;
                    self.apply(state, entry, key);
                    return Ok(());
                }
                Some(_) => "its cached layer was removed (image prune)".to_string(),
                None if self.prev_missed => "the previous step was rebuilt".to_string(),
                None => {
                    let siblings: Vec<&CacheEntry> = all
                        .values()
                        .filter(|e| e.inputs.as_ref().is_some_and(|i| i.parent == inputs.parent))
                        .collect();
                    if siblings.is_empty() && inputs.parent == self.base_key {
                        "nothing cached on this base image (FROM changed or first build)".into()
                    } else {
                        explain_miss(&inputs, &siblings)
                    }
                }
            }
        };
        self.prev_missed = true;
        if self.opts.explain_cache {
            self.say(&format!(" ---> CACHE MISS: {why}"));
        }
        let mut inner = state.config["config"].clone();
        let layer = match &ins {
            Instruction::Run {
                command, heredocs, ..
            } => {
                let run = run_argv(command, heredocs, &node.text, &shell_of(&inner));
                let env = scope.run_env();
                Some(self.run_step(state, &run, &env, &at, &created_by, net, &run_mounts)?)
            }
            Instruction::Copy(a) | Instruction::Add(a) => {
                let extract = matches!(ins, Instruction::Add(_));
                let sources: Vec<String> = match &generated {
                    Some((_, names)) => names.clone(),
                    None => a
                        .sources
                        .iter()
                        .filter_map(|s| match s {
                            CopySource::Path(p) => Some(p.clone()),
                            CopySource::Heredoc(_) => None,
                        })
                        .collect(),
                };
                let dest = resolve_path(&state.workdir(), &a.dest);
                let mode = a
                    .chmod
                    .as_deref()
                    .map(parse_chmod)
                    .transpose()
                    .map_err(|e| invalid(format!("{at}: {e}")))?;
                Some(self.copy_step(
                    state,
                    &at,
                    &sources,
                    &dest,
                    a.chown.as_deref(),
                    mode,
                    extract && a.from.is_none() && generated.is_none(),
                    from_root.as_deref(),
                    generated.as_ref().map(|(d, _)| d.0.as_path()),
                )?)
            }
            Instruction::Workdir(_) => {
                apply_metadata(&mut inner, &ins, scope.env());
                let dir = inner["WorkingDir"].as_str().unwrap_or("/").to_string();
                self.workdir_step(state, &dir)?
            }
            _ => {
                apply_metadata(&mut inner, &ins, scope.env());
                None
            }
        };
        let mut history = json!({"created": now_rfc3339(), "created_by": created_by});
        if layer.is_none() {
            history["empty_layer"] = json!(true);
        }
        let entry = CacheEntry {
            layer,
            config: inner,
            history,
            last_used: 0,
            inputs: Some(inputs),
        };
        self.cache
            .put(&key, entry.clone())
            .map_err(Error::io("write build cache"))?;
        if let Some(all) = &mut self.entries {
            all.insert(key.clone(), entry.clone());
        }
        self.apply(state, entry, key);
        Ok(())
    }

    fn usable(&self, entry: &CacheEntry) -> bool {
        match &entry.layer {
            None => true,
            Some(l) => Digest::parse(&l.digest)
                .ok()
                .and_then(|d| self.images.content().info(&d).ok().flatten())
                .is_some(),
        }
    }

    fn apply(&self, state: &mut State, entry: CacheEntry, key: String) {
        if let Some(l) = &entry.layer {
            state
                .layers
                .push(json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size}));
            state.diff_ids.push(l.diff_id.clone());
        }
        state.config["config"] = entry.config;
        state.history.push(entry.history);
        state.key = key;
    }

    /// Makes sure the snapshot of a cached layer exists (unpacks the blob if not).
    fn ensure_snapshot(&mut self, state: &State, entry: &CacheEntry) -> Result<()> {
        let Some(l) = &entry.layer else {
            return Ok(());
        };
        let parent = state.top();
        let mut ids = state.diff_ids.clone();
        ids.push(l.diff_id.clone());
        let chain = chain_ids(&ids).pop().unwrap_or_default();
        let snaps = self.images.snapshotter();
        if snaps.stat(&chain).is_ok_and(|i| i.kind == Kind::Committed) {
            if snaps.unflushed_before_restart()?.contains(&chain) {
                // Its files may have been lost in the restart: unpack them again.
                let blob = self.images.content().read(&Digest::parse(&l.digest)?)?;
                snaps.restore(&chain, berth_snapshotter::buffered(blob), &l.diff_id)?;
            }
            return Ok(());
        }
        let key = self.next_key("unpack");
        let snaps = self.images.snapshotter();
        snaps.prepare(&key, parent.as_deref())?;
        let res = (|| -> Result<()> {
            let d = Digest::parse(&l.digest)?;
            let blob = self.images.content().read(&d)?;
            let stats = snaps.apply(&key, berth_snapshotter::buffered(blob))?;
            if stats.digest != l.diff_id {
                return Err(invalid(format!(
                    "cached layer {} does not match its diff id",
                    l.digest
                )));
            }
            Ok(())
        })();
        self.finish_snapshot(res.map(|_| ()), &key, &chain)
    }

    fn finish_snapshot(&self, res: Result<()>, key: &str, chain: &str) -> Result<()> {
        let snaps = self.images.snapshotter();
        if let Err(e) = res {
            let _ = snaps.remove(key);
            return Err(e);
        }
        match snaps.commit(chain, key) {
            Ok(()) => Ok(()),
            Err(berth_snapshotter::Error::AlreadyExists(_)) => Ok(snaps.remove(key)?),
            Err(e) => {
                let _ = snaps.remove(key);
                Err(e.into())
            }
        }
    }

    /// Prepares a snapshot on the state's top layer, mounts it, runs `f` on
    /// the mounted root; if `f` returns true, the diff becomes a layer.
    fn layer_step(
        &mut self,
        state: &State,
        what: &str,
        f: impl FnOnce(&mut Self, &Path) -> Result<bool>,
    ) -> Result<Option<CachedLayer>> {
        let key = self.next_key(what);
        let parent = state.top();
        let mounts = self.images.snapshotter().prepare(&key, parent.as_deref())?;
        let target = self.work.join(&key);
        let res = (|| -> Result<bool> {
            std::fs::create_dir_all(&target)
                .map_err(Error::io(format!("create {}", target.display())))?;
            berth_snapshotter::mount_all(&mounts, &target)?;
            let r = f(self, &target);
            let u = berth_snapshotter::unmount(&target);
            let changed = r?;
            u?;
            Ok(changed)
        })();
        let _ = std::fs::remove_dir(&target);
        let changed = match res {
            Ok(c) => c,
            Err(e) => {
                let _ = self.images.snapshotter().remove(&key);
                return Err(e);
            }
        };
        if !changed {
            self.images.snapshotter().remove(&key)?;
            return Ok(None);
        }
        let layer = (|| -> Result<CachedLayer> {
            let ingest = format!("{key}-layer");
            let mut w = self.images.content().writer(&ingest, None)?;
            w.truncate()?;
            let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
            let stats = self.images.snapshotter().diff(&key, &mut gz)?;
            let w = gz.finish().map_err(Error::io("compress layer"))?;
            let size = w.written();
            let digest = w.commit()?;
            Ok(CachedLayer {
                digest: digest.to_string(),
                size,
                media_type: MEDIA_TYPE_OCI_LAYER_GZIP.into(),
                diff_id: stats.digest,
            })
        })();
        let layer = match layer {
            Ok(l) => l,
            Err(e) => {
                let _ = self.images.snapshotter().remove(&key);
                return Err(e);
            }
        };
        let mut ids = state.diff_ids.clone();
        ids.push(layer.diff_id.clone());
        let chain = chain_ids(&ids).pop().unwrap_or_default();
        self.finish_snapshot(Ok(()), &key, &chain)?;
        Ok(Some(layer))
    }

    #[allow(clippy::too_many_arguments)]
    fn run_step(
        &mut self,
        state: &State,
        run: &RunCommand,
        env: &[(String, String)],
        at: &str,
        text: &str,
        net: BuildNetwork,
        mounts: &[RunMount],
    ) -> Result<CachedLayer> {
        let (step, total) = self.step_no;
        let image: oci_spec::image::ImageConfiguration =
            serde_json::from_value(state.config.clone())
                .map_err(|e| invalid(format!("image config: {e}")))?;
        let user = state.config["config"]["User"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(str::to_string);
        let workdir = state.workdir();
        let quiet = self.opts.quiet;
        let mut env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        // Secrets as variables, for this step only (never in the image).
        for m in mounts {
            if let MountKind::SecretEnv { id, name } = &m.kind {
                let value = self
                    .opts
                    .secrets
                    .get(id)
                    .map(|v| String::from_utf8_lossy(v));
                env.push(format!("{name}={}", value.unwrap_or_default()));
            }
        }
        // As BuildKit: SSH_AUTH_SOCK names the first ssh mount, unless set.
        let first_ssh = mounts
            .iter()
            .find(|m| matches!(m.kind, MountKind::Ssh { .. } | MountKind::SshMissing));
        if let Some(m) = first_ssh {
            if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                env.push(format!("SSH_AUTH_SOCK={}", m.target));
            }
        }
        let layer = self.layer_step(state, "run", |b, rootfs| {
            let id = format!("build-{}-{}", std::process::id(), b.seq);
            b.say(&format!(" ---> Running in {id}"));
            let bundle = b.work.join(format!("{id}-bundle"));
            std::fs::create_dir_all(&bundle).map_err(Error::io("create bundle"))?;
            let mut extra_mounts = Vec::new();
            // Snapshots of other stages a bind mount reads, released on return.
            let mut views = StepMounts::new(&b.root)?;
            // Mount points the runtime creates and the layer must not keep.
            let mut mount_points = Vec::new();
            for m in mounts {
                let mount = b
                    .mount_for_run(m, &mut views)
                    .map_err(|e| invalid(format!("{at}: RUN --mount: {e}")))?;
                if let Some(mount) = mount {
                    mount_points.extend(runtime_made(rootfs, &m.target));
                    extra_mounts.push(mount);
                }
            }
            if let Some(script) = &run.script {
                // A `#!` here-document: a file of its own, executed (BuildKit).
                use std::os::unix::fs::PermissionsExt;
                let path = bundle.join("heredoc");
                std::fs::write(&path, script).map_err(Error::io("write here-document"))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(Error::io("chmod here-document"))?;
                extra_mounts.push(spec::bind_mount(&path, HEREDOC_PATH, &["bind", "ro"]));
            }
            // A networked step resolves names as a container does: the host's
            // resolvers and a hosts file, mounted for the step only. Mount points
            // the image lacks are removed again, so the layer does not get them.
            if net != BuildNetwork::None {
                let resolv = crate::containers::network::resolv_conf(net == BuildNetwork::Host);
                let hosts = match net {
                    BuildNetwork::Host => std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
                    _ => format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n", &id[..id.len().min(12)]),
                };
                for (file, content) in [("resolv.conf", resolv), ("hosts", hosts)] {
                    let path = bundle.join(file);
                    std::fs::write(&path, content).map_err(Error::io("write step file"))?;
                    let dest = format!("/etc/{file}");
                    mount_points.extend(runtime_made(rootfs, &dest));
                    extra_mounts.push(spec::bind_mount(&path, &dest, &["bind", "ro"]));
                }
            }
            let opts = RunOptions {
                entrypoint: Some(run.argv.clone()),
                env,
                workdir: Some(workdir),
                user,
                network: match net {
                    BuildNetwork::None => NetworkMode::None,
                    BuildNetwork::Host => NetworkMode::Host,
                    BuildNetwork::Bridge => NetworkMode::Bridge(DEFAULT_NETWORK.into()),
                },
                ..Default::default()
            };
            let host_env = |_: &str| None;
            let inputs = SpecInputs {
                image: &image,
                rootfs,
                container_id: &id,
                host_env: &host_env,
                init_path: None,
                cgroups_path: Some(format!("berth/{id}")),
                extra_mounts,
            };
            let mut spec = spec::build_spec(&opts, &inputs)?;
            let mut root = spec.root().clone().unwrap_or_default();
            root.set_path(rootfs.to_path_buf());
            root.set_readonly(Some(false));
            spec.set_root(Some(root));
            let json =
                serde_json::to_vec(&spec).map_err(|e| invalid(format!("encode spec: {e}")))?;
            std::fs::write(bundle.join("config.json"), json).map_err(Error::io("write bundle"))?;
            let runtime = berth_runtime::Runtime::new(b.run_root.join("runtime"));
            let bridge = match net {
                BuildNetwork::Bridge => Some(b.bridge()?),
                _ => None,
            };
            let exit = {
                let _stdio = Stdio::redirect(quiet);
                let isolated = net == BuildNetwork::None;
                runtime.run_prepared(
                    &berth_runtime::CreateOptions {
                        id: id.clone(),
                        bundle: bundle.clone(),
                        console_socket: None,
                        pid_file: None,
                        ..Default::default()
                    },
                    false,
                    |pid| {
                        let ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
                        if let Some(store) = &bridge {
                            return store
                                .attach(DEFAULT_NETWORK, &id, &ns, AttachOptions::default())
                                .map(|_| ())
                                .map_err(|e| format!("attach the RUN step to the bridge: {e}"));
                        }
                        // `lo` up in the step's own namespace, as Docker's RUN has it.
                        if !isolated {
                            return Ok(());
                        }
                        berth_netns_bridge::loopback_up(&ns)
                            .map_err(|e| format!("bring up lo of the RUN step: {e}"))
                    },
                )
            };
            let _ = std::fs::remove_dir_all(&bundle);
            for (point, top) in &mount_points {
                // The empty file or directories the runtime made, up to the
                // topmost one it made; nothing the step wrote, and nothing
                // reached through a symlink the step left (it may point out).
                if !no_symlink_between(rootfs, point) {
                    continue;
                }
                if point.symlink_metadata().is_ok_and(|m| m.is_file() && m.len() == 0) {
                    let _ = std::fs::remove_file(point);
                }
                for d in point.ancestors().take_while(|d| d.starts_with(top)) {
                    match std::fs::remove_dir(d) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(_) => break,
                    }
                }
            }
            drop(views);
            if let Some(store) = &bridge {
                // Not attached if `prepare` failed before attaching.
                if let Ok(veth) = store.release(DEFAULT_NETWORK, &id) {
                    b.veth_deletions.push(std::thread::spawn(move || {
                        let _ = berth_netns_bridge::delete_veth(&veth);
                    }));
                }
            }
            let code = exit?.map(|e| e.code).unwrap_or(0);
            if code != 0 {
                return Err(invalid(format!(
                    "{at}: step {step}/{total} `{text}` returned a non-zero code: {code}"
                )));
            }
            Ok(true)
        })?;
        layer.ok_or_else(|| invalid("RUN made no layer"))
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_step(
        &mut self,
        state: &State,
        at: &str,
        sources: &[String],
        dest: &str,
        chown: Option<&str>,
        mode: Option<u32>,
        extract: bool,
        from: Option<&str>,
        heredocs: Option<&Path>,
    ) -> Result<CachedLayer> {
        // The `--from` root, mounted read-only for the copy.
        let view = match from {
            Some(chain) => {
                let key = self.next_key("from");
                let target = self.work.join(&key);
                let parent = (!chain.is_empty()).then_some(chain);
                let mounts = self.images.snapshotter().view(&key, parent)?;
                std::fs::create_dir_all(&target).map_err(Error::io("create view dir"))?;
                if let Err(e) = berth_snapshotter::mount_all(&mounts, &target) {
                    let _ = self.images.snapshotter().remove(&key);
                    return Err(e.into());
                }
                Some((key, target))
            }
            None => None,
        };
        let src_root = match (&view, heredocs) {
            (Some(v), _) => v.1.clone(),
            (None, Some(h)) => h.to_path_buf(),
            (None, None) => self.context.clone(),
        };
        let tarfile = self.scratch.join(format!("copy-{}.tar", self.seq));
        let res = self.layer_step(state, "copy", |b, rootfs| {
            let rel = dest.trim_start_matches('/');
            let dest_is_dir = rel.is_empty() || rootfs.join(rel).is_dir();
            let owner = match chown {
                Some(c) => {
                    let (u, g) = spec::resolve_user(rootfs, c)
                        .map_err(|e| invalid(format!("{at}: --chown={c}: {e}")))?;
                    Some((u64::from(u), u64::from(g)))
                }
                None => None,
            };
            let spec = CopySpec {
                root: &src_root,
                sources,
                dest,
                dest_is_dir,
                ignore: (from.is_none() && heredocs.is_none()).then_some(&b.ignore),
                owner,
                keep_owner: from.is_some(),
                mode,
                extract,
            };
            apply_copy(&spec, &tarfile, rootfs, &format!("{at}: "))?;
            Ok(true)
        });
        if let Some((key, target)) = view {
            let _ = berth_snapshotter::unmount(&target);
            let _ = std::fs::remove_dir(&target);
            let _ = self.images.snapshotter().remove(&key);
        }
        res?.ok_or_else(|| invalid("COPY made no layer"))
    }

    /// WORKDIR: a layer creating the directory, only if it is missing.
    fn workdir_step(&mut self, state: &State, dir: &str) -> Result<Option<CachedLayer>> {
        let rel = dir
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string();
        if rel.is_empty() {
            return Ok(None);
        }
        self.layer_step(state, "workdir", |_, rootfs| {
            if std::fs::symlink_metadata(rootfs.join(&rel)).is_ok() {
                return Ok(false);
            }
            let mut t = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(0);
            h.set_mtime(0);
            t.append_data(&mut h, format!("{rel}/"), std::io::empty())
                .map_err(Error::io("workdir tar"))?;
            let data = t.into_inner().map_err(Error::io("workdir tar"))?;
            berth_snapshotter::apply_layer(rootfs, &data[..])?;
            Ok(true)
        })
    }

    /// The network store, with the default bridge network created if needed.
    fn bridge(&self) -> Result<NetworkStore> {
        let config = crate::containers::network::EngineConfig::load(&self.root)?;
        let store = NetworkStore::open_with(self.root.join("networks"), config.names())?;
        store.default_bridge_with(config.default_subnet()?)?;
        Ok(store)
    }

    /// Writes config and manifest, records the names; returns the image id.
    fn commit_image(&mut self, state: State) -> Result<Digest> {
        let mut config = state.config;
        let created = state
            .history
            .last()
            .and_then(|h| h["created"].as_str().map(str::to_string))
            .unwrap_or_else(now_rfc3339);
        config["created"] = json!(created);
        config["rootfs"] = json!({"type": "layers", "diff_ids": state.diff_ids});
        config["history"] = json!(state.history);
        if !self.opts.labels.is_empty() {
            if !config["config"].is_object() {
                config["config"] = json!({});
            }
            let labels = &mut config["config"]["Labels"];
            if !labels.is_object() {
                *labels = json!({});
            }
            for (k, v) in &self.opts.labels {
                labels[k] = json!(v);
            }
        }
        if let Some(obj) = config.as_object_mut() {
            obj.remove("container");
            obj.remove("container_config");
        }
        let cfg = serde_json::to_vec(&config).map_err(|e| invalid(format!("config: {e}")))?;
        let content = self.images.content();
        let cfg_digest = content.write_blob(&cfg)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": cfg_digest, "size": cfg.len()},
            "layers": state.layers,
        });
        let mbytes =
            serde_json::to_vec(&manifest).map_err(|e| invalid(format!("manifest: {e}")))?;
        let md = content.write_blob(&mbytes)?;
        let desc = oci_spec::image::Descriptor::new(
            oci_spec::image::MediaType::ImageManifest,
            mbytes.len() as u64,
            md.to_oci(),
        );
        let store = ImageStore::open(&self.images_root())?;
        let mut names = Vec::new();
        for t in &self.opts.tags {
            let r = Reference::parse(t)?;
            names.push((r.full(), r.familiar()));
        }
        if names.is_empty() {
            names.push((format!("dangling:{cfg_digest}"), String::new()));
        }
        for (full, shown) in &names {
            let record = ImageRecord::new(full.clone(), desc.clone());
            if shown.is_empty() {
                store.put(record)?;
            } else {
                crate::images::put_name(&store, content, record)?;
            }
        }
        self.say(&format!("Successfully built {}", cfg_digest.short()));
        for (_, shown) in &names {
            if !shown.is_empty() {
                self.say(&format!("Successfully tagged {shown}"));
            }
        }
        Ok(cfg_digest)
    }

    fn images_root(&self) -> PathBuf {
        self.images
            .content()
            .root()
            .parent()
            .map(|p| p.join("images"))
            .unwrap_or_default()
    }
}

/// A file name as a COPY source that names just that file: a name with glob
/// characters (a download's "report [final].pdf") has them escaped.
fn literal_source(name: &str) -> String {
    if !name.contains(['*', '?', '[']) {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '{' | '}') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The index of the stage `from` names (name or number), if it is one.
fn stage_index(stages: &[berth_builder::Stage], from: &str) -> Option<usize> {
    let lower = from.to_ascii_lowercase();
    stages
        .iter()
        .find(|s| s.name.as_deref() == Some(lower.as_str()))
        .map(|s| s.index)
        .or_else(|| from.parse::<usize>().ok().filter(|i| *i < stages.len()))
}

/// Empties the build cache (`berth builder prune`) and deletes the layer
/// blobs only it kept; returns the entries removed and the bytes freed.
pub fn prune(root: &Path) -> Result<(usize, u64)> {
    let images = Images::open(root)?;
    let cache = CacheStore::open(&root.join("builder")).map_err(Error::io("open build cache"))?;
    let n = cache.clear().map_err(Error::io("clear build cache"))?;
    {
        // Not under a running build's RUN step: builds hold the lock shared.
        let _gc = images.lock(true)?;
        match std::fs::remove_dir_all(cache_mounts_dir(root)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove the RUN --mount=type=cache directories")(
                    e,
                ))
            }
            _ => {}
        }
    }
    let freed = images.remove_unused_blobs()?;
    Ok((n, freed))
}

#[cfg(test)]
mod tests {
    use super::{hash_sources, literal_source, no_symlink_between, DockerIgnore};

    #[test]
    fn symlinked_directories_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/sub")).unwrap();
        std::os::unix::fs::symlink("/", root.join("link")).unwrap();
        assert!(no_symlink_between(root, &root.join("etc/sub/file")));
        assert!(no_symlink_between(root, &root.join("etc")));
        assert!(!no_symlink_between(root, &root.join("link/etc/passwd")));
        assert!(!no_symlink_between(root, &root.join("missing/file")));
    }

    #[test]
    fn generated_names_are_sources_of_just_themselves() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["report [final].pdf", "report f.pdf", "a*b", "axb", "c\\d"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let hash =
            |src: &str| hash_sources(dir.path(), &[src.to_string()], &DockerIgnore::default());
        for name in ["report [final].pdf", "a*b", "c\\d"] {
            let literal = literal_source(name);
            assert!(hash(&literal).is_ok(), "{name}");
        }
        // Unescaped, the glob matches the other file: not the same sources.
        assert_ne!(
            hash(&literal_source("report [final].pdf")).unwrap(),
            hash("report [final].pdf").unwrap()
        );
        assert_ne!(hash(&literal_source("a*b")).unwrap(), hash("a*b").unwrap());
        assert_eq!(literal_source("plain.txt"), "plain.txt");
    }
}
