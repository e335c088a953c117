//! Image commands: pull, push, images, inspect, tag, rmi, history, prune,
//! save, load, import, login, logout. Docker's names, flags and output.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use crate::format::Templated;
use crate::system_cmd::human_size;
use crate::table::Table;
use anyhow::{bail, Context};
use berth_engine::images::{ArchiveFormat, ImageSummary, Images};
use berth_engine::prune::PruneFilter;
use berth_image_store::registry::{Credentials, Registry, RegistryOptions};
use clap::{Args, Subcommand};

/// Options every image command shares.
#[derive(Args, Debug, Clone)]
pub struct ImageGlobals {
    /// Registry host (host or host:port) to reach over plain http; localhost is always plain http.
    #[arg(long = "insecure-registry", global = true)]
    pub insecure_registries: Vec<String>,
}

/// `pull` flags.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Suppress progress output.
    #[arg(short, long)]
    quiet: bool,
    /// Image reference, e.g. busybox or localhost:5000/a/b:tag.
    name: String,
}

/// `push` flags.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// Suppress progress output.
    #[arg(short, long)]
    quiet: bool,
    /// Image reference.
    name: String,
}

/// `tag` arguments.
#[derive(Args, Debug)]
pub struct TagArgs {
    /// Existing image.
    source: String,
    /// New name.
    target: String,
}

/// `history` flags.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Do not truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Only show image ids.
    #[arg(short, long)]
    quiet: bool,
    /// Image name or id.
    name: String,
}

/// `save` flags.
#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to this file instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Archive format: docker (docker load's) or oci.
    #[arg(long, default_value = "docker")]
    format: String,
    /// Images to save.
    #[arg(required = true)]
    names: Vec<String>,
}

/// `load` flags.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from this file instead of stdin.
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Print only the loaded names.
    #[arg(short, long)]
    quiet: bool,
}

/// `import` flags.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Dockerfile-style change to the config (CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL, VOLUME).
    #[arg(short, long)]
    change: Vec<String>,
    /// Tarball path, or - for stdin.
    file: String,
    /// Name for the image.
    name: Option<String>,
}

/// The image commands, as `berth image <verb>` (the top-level forms map onto these).
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// Push an image to a registry.
    Push(PushArgs),
    /// List images.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show low-level information on images as JSON.
    Inspect(crate::inspect::InspectArgs),
    /// Create a tag TARGET that refers to SOURCE.
    Tag(TagArgs),
    /// Remove images.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Remove unused images and unreferenced blobs.
    Prune {
        /// Remove all images, not only dangling ones.
        #[arg(short, long)]
        all: bool,
        /// Do not prompt (berth never prompts; accepted for compatibility).
        #[arg(short, long)]
        force: bool,
        /// Filter: until=TIME (created before), label=KEY[=VALUE], label!=KEY[=VALUE].
        #[arg(long)]
        filter: Vec<String>,
    },
    /// Save images to a tar archive.
    Save(SaveArgs),
    /// Load images from a tar archive (docker-archive or OCI layout).
    Load(LoadArgs),
    /// Import a rootfs tarball as a one-layer image.
    Import(ImportArgs),
}

/// `images` / `image ls` flags.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only images whose repository (or `repository:tag`) matches, as `busybox`,
    /// `busybox:1.36` or `bu*`.
    reference: Option<String>,
    /// Show all images (berth keeps no intermediate images: the same list).
    #[arg(short, long)]
    all: bool,
    /// Filter: dangling=true|false, reference=PATTERN, label=KEY[=VALUE].
    #[arg(short, long)]
    filter: Vec<String>,
    /// Only show image ids.
    #[arg(short, long)]
    quiet: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Do not truncate ids.
    #[arg(long)]
    no_trunc: bool,
    /// Output format: table (default), json, or a template such as
    /// '{{.Repository}}:{{.Tag}}' (fields: ID, Repository, Tag, Digest, CreatedSince,
    /// CreatedAt, Size).
    #[arg(long)]
    format: Option<String>,
}

/// `rmi` flags.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Remove even if the image has several tags.
    #[arg(short, long)]
    force: bool,
    /// Images to remove.
    #[arg(required = true)]
    names: Vec<String>,
}

/// `login` flags.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Username.
    #[arg(short, long)]
    username: Option<String>,
    /// Password (prefer --password-stdin).
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    password_stdin: bool,
    /// Registry server (default docker.io).
    server: Option<String>,
}

/// Registries named insecure in a berth config file: `/etc/berth/config.json`
/// and `$XDG_CONFIG_HOME/berth/config.json` (or `~/.config/berth/config.json`),
/// key `"insecure-registries"` as in Docker's daemon.json.
fn configured_insecure_registries() -> anyhow::Result<Vec<String>> {
    let mut files = vec![PathBuf::from("/etc/berth/config.json")];
    match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) => files.push(PathBuf::from(dir).join("berth/config.json")),
        None => {
            if let Some(home) = std::env::var_os("HOME") {
                files.push(PathBuf::from(home).join(".config/berth/config.json"));
            }
        }
    }
    let mut out = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("read {}", file.display())),
        };
        out.extend(insecure_from_config(&text).with_context(|| format!("{}", file.display()))?);
    }
    Ok(out)
}

fn insecure_from_config(text: &str) -> anyhow::Result<Vec<String>> {
    let value: serde_json::Value = serde_json::from_str(text).context("invalid JSON")?;
    match value.get("insecure-registries") {
        None => Ok(Vec::new()),
        Some(list) => serde_json::from_value(list.clone())
            .context("\"insecure-registries\" must be a list of host[:port] strings"),
    }
}

/// Pull for `run`/`create`: progress (unless `quiet`) and Docker's status
/// lines on stderr, so the container's output alone is on stdout.
pub(crate) fn pull_to_stderr(
    images: &Images,
    name: &str,
    quiet: bool,
    globals: &ImageGlobals,
) -> anyhow::Result<()> {
    let (reference, image) = images.pull(name, registry_options(globals, quiet)?)?;
    if !quiet {
        eprintln!("Digest: {}", image.manifest_digest);
        eprintln!(
            "Status: Downloaded newer image for {}",
            reference.familiar()
        );
    }
    Ok(())
}

pub(crate) fn registry_options(
    globals: &ImageGlobals,
    quiet: bool,
) -> anyhow::Result<RegistryOptions> {
    let mut insecure = globals.insecure_registries.clone();
    insecure.extend(configured_insecure_registries()?);
    Ok(RegistryOptions {
        insecure_registries: insecure,
        credentials: Credentials::load_default()?,
        max_concurrent: 4,
        progress: !quiet && std::io::stderr().is_terminal(),
    })
}

fn short_id(d: &berth_image_store::digest::Digest, no_trunc: bool) -> String {
    if no_trunc {
        d.to_string()
    } else {
        d.hex()[..12].to_string()
    }
}

fn ago(rfc3339: Option<&str>) -> String {
    match crate::table::since(rfc3339) {
        s if s.is_empty() => "N/A".into(),
        s => format!("{s} ago"),
    }
}

/// Run an image command; returns the exit code.
/// `in_use` holds the ids of images that containers use (rmi and prune keep them).
pub fn run(
    images: &Images,
    in_use: &std::collections::BTreeSet<String>,
    globals: &ImageGlobals,
    command: ImageCommand,
) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    match command {
        ImageCommand::Pull(PullArgs { quiet, name }) => {
            let (reference, image) = images.pull(&name, registry_options(globals, quiet)?)?;
            if quiet {
                writeln!(out, "{}", reference.full())?;
            } else {
                writeln!(out, "Digest: {}", image.manifest_digest)?;
                writeln!(
                    out,
                    "Status: Downloaded newer image for {}",
                    reference.familiar()
                )?;
                writeln!(out, "{}", reference.full())?;
            }
        }
        ImageCommand::Push(PushArgs { quiet, name }) => {
            let digest = images.push(&name, registry_options(globals, quiet)?)?;
            writeln!(out, "{name}: digest: {digest}")?;
        }
        ImageCommand::Ls(args) => list(images, &args, &mut out)?,
        ImageCommand::Inspect(args) => {
            return crate::inspect::print(&args, |n| Ok(images.inspect(n)?));
        }
        ImageCommand::Tag(TagArgs { source, target }) => images.tag(&source, &target)?,
        ImageCommand::Rm(args) => {
            return Ok(crate::each_name(&args.names, |name| {
                Ok(images.remove(name, args.force, in_use)?.join("\n"))
            }));
        }
        ImageCommand::History(HistoryArgs {
            no_trunc,
            quiet,
            name,
        }) => {
            let rows = images.history(&name)?;
            if quiet {
                for r in &rows {
                    writeln!(out, "{}", history_id(r.id.as_ref(), no_trunc))?;
                }
                return Ok(0);
            }
            let mut table = Table::new(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]);
            for r in rows {
                let by = if no_trunc || r.created_by.chars().count() <= 45 {
                    r.created_by
                } else {
                    format!("{}...", r.created_by.chars().take(42).collect::<String>())
                };
                table.row(vec![
                    history_id(r.id.as_ref(), no_trunc),
                    ago(Some(&r.created)),
                    by,
                    human_size(r.size),
                    r.comment,
                ]);
            }
            table.write(&mut out)?;
        }
        ImageCommand::Prune {
            all,
            force: _,
            filter,
        } => {
            let filter = PruneFilter::parse(&filter, PruneFilter::KEYS)?;
            let (removed, freed) = images.prune(all, in_use, &filter)?;
            if !removed.is_empty() {
                writeln!(out, "Deleted Images:")?;
                for line in removed {
                    writeln!(out, "{line}")?;
                }
            }
            writeln!(out, "Total reclaimed space: {}", human_size(freed))?;
        }
        ImageCommand::Save(SaveArgs {
            output,
            format,
            names,
        }) => {
            let format = match format.as_str() {
                "docker" => ArchiveFormat::Docker,
                "oci" => ArchiveFormat::Oci,
                other => bail!("unknown format {other:?}: use docker or oci"),
            };
            crate::commit_cmd::write_archive(output.as_deref(), |w| {
                Ok(images.save(&names, format, w)?)
            })?;
        }
        ImageCommand::Load(LoadArgs { input, quiet: _ }) => {
            let lines = match input {
                Some(path) => {
                    let file = std::fs::File::open(&path)
                        .with_context(|| format!("open {}", path.display()))?;
                    images.load(std::io::BufReader::new(file))?
                }
                None => images.load(std::io::stdin().lock())?,
            };
            for line in lines {
                writeln!(out, "{line}")?;
            }
        }
        ImageCommand::Import(ImportArgs { change, file, name }) => {
            let config = parse_changes(&change)?;
            let reader: Box<dyn Read> = if file == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::fs::File::open(&file).with_context(|| format!("open {file}"))?)
            };
            let id = images.import(reader, name.as_deref(), config)?;
            writeln!(out, "{id}")?;
        }
    }
    Ok(0)
}

/// Whether image row `r` passes `images --filter key=value`.
fn image_matches(
    r: &ImageSummary,
    key: &str,
    value: &str,
    created_of: &dyn Fn(&str) -> Option<std::time::SystemTime>,
) -> anyhow::Result<bool> {
    let created = || Some(created_or_epoch(r.created.as_deref()));
    Ok(match key {
        "dangling" => (r.repository == "<none>") == matches!(value, "true" | "1"),
        "reference" => reference_matches(r, value)?,
        "before" => matches!((created(), created_of(value)), (Some(c), Some(b)) if c < b),
        "since" => matches!((created(), created_of(value)), (Some(c), Some(s)) if c > s),
        _ => crate::filter::label_matches(&r.labels, value),
    })
}

/// An image's creation time; one without (allowed by the spec) counts as
/// the oldest, as Docker's zero time does.
fn created_or_epoch(created: Option<&str>) -> std::time::SystemTime {
    created
        .and_then(|c| humantime::parse_rfc3339_weak(c).ok())
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// Docker's reference filter: a glob (`*` stops at `/`) on the repository, or
/// on `repository:tag` when the pattern has a tag.
fn reference_matches(r: &ImageSummary, pattern: &str) -> anyhow::Result<bool> {
    let glob = glob::Pattern::new(pattern)
        .with_context(|| format!("invalid reference pattern {pattern:?}"))?;
    let options = glob::MatchOptions {
        require_literal_separator: true,
        ..Default::default()
    };
    let tagged = pattern
        .rsplit_once(':')
        .is_some_and(|(_, t)| !t.contains('/'));
    let name = if tagged {
        format!("{}:{}", r.repository, r.tag)
    } else {
        r.repository.clone()
    };
    Ok(glob.matches_with(&name, options))
}

/// A history row's IMAGE: the image id on the newest row, `<missing>` on the
/// rows below (no image of their own), as Docker's for pulled images.
fn history_id(id: Option<&berth_image_store::digest::Digest>, no_trunc: bool) -> String {
    id.map_or_else(|| "<missing>".into(), |d| short_id(d, no_trunc))
}

fn list(images: &Images, args: &ListArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let filters = crate::filter::Filters::parse(
        &args.filter,
        &["dangling", "reference", "label", "before", "since"],
    )?;
    // before=/since= name an image; its creation time is what rows compare to.
    let mut times = std::collections::BTreeMap::new();
    for (key, value) in args.filter.iter().filter_map(|f| f.split_once('=')) {
        if matches!(key, "before" | "since") {
            let (_, image) = images.find(value)?.swap_remove(0);
            let created = created_or_epoch(image.config.created().as_deref());
            times.insert(value.to_string(), Some(created));
        }
    }
    let created_of = |v: &str| times.get(v).copied().flatten();
    filters.check_bool("dangling")?;
    filters.check(
        "reference",
        |v| glob::Pattern::new(v).is_ok(),
        "a pattern like busybox or bu*:1.*",
    )?;
    let mut rows = Vec::new();
    for r in images.list()? {
        let by_name = match &args.reference {
            Some(p) => reference_matches(&r, p)?,
            None => true,
        };
        if by_name && filters.pass(|k, v| image_matches(&r, k, v, &created_of))? {
            rows.push(r);
        }
    }
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for r in &rows {
            if seen.insert(r.id.clone()) {
                writeln!(out, "{}", short_id(&r.id, args.no_trunc))?;
            }
        }
        return Ok(());
    }
    match args.format.as_deref() {
        Some("json") => {
            for r in &rows {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
        }
        None | Some("table") => {
            let mut header = vec!["REPOSITORY", "TAG"];
            if args.digests {
                header.push("DIGEST");
            }
            header.extend(["IMAGE ID", "CREATED", "SIZE"]);
            let mut table = Table::new(&header);
            for r in &rows {
                let mut row = vec![r.repository.clone(), r.tag.clone()];
                if args.digests {
                    row.push(r.digest.to_string());
                }
                row.extend([
                    short_id(&r.id, args.no_trunc),
                    ago(r.created.as_deref()),
                    human_size(r.size),
                ]);
                table.row(row);
            }
            table.write(out)?;
        }
        Some(t) if t.contains("{{") => {
            let mut lines = Templated::new(
                t,
                &["ID", "Repository", "Tag", "Digest", "CreatedSince", "CreatedAt", "Size"],
                &[("ID", "IMAGE ID"), ("CreatedSince", "CREATED")],
            )?;
            for r in &rows {
                let fields = [
                    ("ID", short_id(&r.id, args.no_trunc)),
                    ("Repository", r.repository.clone()),
                    ("Tag", r.tag.clone()),
                    ("Digest", r.digest.to_string()),
                    ("CreatedSince", ago(r.created.as_deref())),
                    ("CreatedAt", r.created.clone().unwrap_or_default()),
                    ("Size", human_size(r.size)),
                ];
                lines.row(out, &fields)?;
            }
            lines.finish(out)?;
        }
        Some(other) => bail!(
            "unknown format {other:?}: use table, json or a template like '{{{{.Repository}}}}:{{{{.Tag}}}}'"
        ),
    }
    Ok(())
}

/// Parse `--change` lines into an image config.
pub(crate) fn parse_changes(changes: &[String]) -> anyhow::Result<oci_spec::image::Config> {
    let mut config = oci_spec::image::Config::default();
    let mut env: Vec<String> = Vec::new();
    let mut labels = std::collections::HashMap::new();
    let mut ports = Vec::new();
    for change in changes {
        let (instr, rest) = change
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((change.trim(), ""));
        let rest = rest.trim();
        let command = || -> anyhow::Result<Vec<String>> {
            if rest.starts_with('[') {
                serde_json::from_str(rest)
                    .with_context(|| format!("--change {change:?}: invalid JSON array"))
            } else {
                Ok(vec!["/bin/sh".into(), "-c".into(), rest.into()])
            }
        };
        match instr.to_ascii_uppercase().as_str() {
            "CMD" => {
                config.set_cmd(Some(command()?));
            }
            "ENTRYPOINT" => {
                config.set_entrypoint(Some(command()?));
            }
            "ENV" => {
                let kv = match rest.split_once('=') {
                    Some(_) => rest.to_string(),
                    None => rest.replacen(char::is_whitespace, "=", 1),
                };
                env.push(kv);
            }
            "WORKDIR" => {
                config.set_working_dir(Some(rest.to_string()));
            }
            "USER" => {
                config.set_user(Some(rest.to_string()));
            }
            "EXPOSE" => ports.extend(rest.split_whitespace().map(|p| if p.contains('/') { p.to_string() } else { format!("{p}/tcp") })),
            "VOLUME" => {
                let paths: Vec<String> = if rest.starts_with('[') {
                    serde_json::from_str(rest)
                        .with_context(|| format!("--change {change:?}: invalid JSON array"))?
                } else {
                    rest.split_whitespace().map(str::to_string).collect()
                };
                let mut all = config.volumes().clone().unwrap_or_default();
                all.extend(paths);
                config.set_volumes(Some(all));
            }
            "LABEL" => {
                let (k, v) = rest.split_once('=').with_context(|| format!("--change {change:?}: LABEL needs KEY=VALUE"))?;
                labels.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
            }
            other => bail!("--change {change:?}: {other} is not supported (use CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL or VOLUME)"),
        }
    }
    if !env.is_empty() {
        config.set_env(Some(env));
    }
    if !labels.is_empty() {
        config.set_labels(Some(labels));
    }
    if !ports.is_empty() {
        config.set_exposed_ports(Some(ports));
    }
    Ok(config)
}

/// `login`: check the credentials against the registry and store them.
pub fn login(globals: &ImageGlobals, args: LoginArgs) -> anyhow::Result<i32> {
    let server = args.server.unwrap_or_else(|| "docker.io".into());
    let user = match args.username {
        Some(u) => u,
        None => bail!("login needs --username (berth does not prompt)"),
    };
    let password = match (args.password, args.password_stdin) {
        (Some(p), false) => p,
        (None, true) => {
            let mut p = String::new();
            std::io::stdin().read_to_string(&mut p)?;
            p.trim_end_matches(['\n', '\r']).to_string()
        }
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (None, false) => {
            bail!("login needs --password-stdin or --password (berth does not prompt)")
        }
    };
    let opts = registry_options(globals, true)?;
    let registry = Registry::new(opts)?;
    registry.check_login(&server, &user, &password)?;
    let mut creds = Credentials::load_default()?;
    creds.store(&server, &user, &password)?;
    println!("Login Succeeded");
    Ok(0)
}

/// `logout`: remove stored credentials.
pub fn logout(server: Option<String>) -> anyhow::Result<i32> {
    let server = server.unwrap_or_else(|| "docker.io".into());
    let mut creds = Credentials::load_default()?;
    if creds.erase(&server)? {
        println!("Removing login credentials for {server}");
    } else {
        println!("Not logged in to {server}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_registries_from_config() {
        assert_eq!(
            insecure_from_config(r#"{"insecure-registries": ["reg.lan:5000", "10.0.0.9"]}"#)
                .unwrap(),
            vec!["reg.lan:5000".to_string(), "10.0.0.9".to_string()]
        );
        assert!(insecure_from_config("{}").unwrap().is_empty());
        assert!(insecure_from_config(r#"{"insecure-registries": "x"}"#).is_err());
        assert!(insecure_from_config("{").is_err());
    }

    #[test]
    fn sizes_print_like_docker() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_234_000), "1.234MB");
        assert_eq!(human_size(2_000_000), "2MB");
    }

    #[test]
    fn changes_become_config() {
        let c = parse_changes(&[
            "CMD [\"sh\"]".into(),
            "ENV A=1".into(),
            "WORKDIR /w".into(),
            "EXPOSE 80".into(),
        ])
        .unwrap();
        assert_eq!(c.cmd().as_ref().unwrap(), &vec!["sh".to_string()]);
        assert_eq!(c.env().as_ref().unwrap(), &vec!["A=1".to_string()]);
        assert_eq!(c.working_dir().as_deref(), Some("/w"));
        assert!(parse_changes(&["RUN x".into()]).is_err());
    }
}
