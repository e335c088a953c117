//! `berth build` and `berth builder prune`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_engine::build::{BuildOptions, Context};

/// `berth build [OPTIONS] CONTEXT|-`.
#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Name (and optionally tag) of the image, repeatable.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Build-time variables (KEY=VALUE, or KEY to take it from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// The stage to build.
    #[arg(long)]
    pub target: Option<String>,
    /// Print only the image id.
    #[arg(short, long)]
    pub quiet: bool,
    /// Write the image id to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Progress output: auto, tty (Docker's classic step lines) or plain
    /// (the same plus a CACHE HIT/MISS line per step).
    #[arg(long, default_value = "auto", value_parser = ["auto", "plain", "tty"])]
    pub progress: String,
    /// Say for each step whether the cache was hit and, if not, which input changed.
    #[arg(long)]
    pub explain_cache: bool,
    /// Network of RUN steps: bridge (default, as Docker's), host or none.
    #[arg(long, default_value = "bridge")]
    pub network: String,
    /// Pull every base image, even one that is here (a missing one is always pulled).
    #[arg(long)]
    pub pull: bool,
    /// A label for the image (KEY=VALUE).
    #[arg(long)]
    pub label: Vec<String>,
    /// A secret for `RUN --mount=type=secret`: `id=ID,src=FILE` or
    /// `id=ID,env=VAR` (just `id=ID`: the variable ID if set, else the file
    /// ID, as buildx).
    #[arg(long)]
    pub secret: Vec<String>,
    /// An ssh-agent for `RUN --mount=type=ssh`: `default` or `ID` (the agent
    /// at $SSH_AUTH_SOCK), or `ID=SOCKET`.
    #[arg(long)]
    pub ssh: Vec<String>,
    /// The context directory, or `-` for a tar on stdin.
    pub context: String,
}

/// Runs `berth build`.
pub fn build(
    root: &std::path::Path,
    run_root: &std::path::Path,
    a: BuildArgs,
    globals: &crate::image_cmd::ImageGlobals,
) -> anyhow::Result<i32> {
    let mut labels = BTreeMap::new();
    for kv in &a.label {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        if k.is_empty() {
            eprintln!("berth: invalid --label {kv:?}: use KEY=VALUE");
            return Ok(1);
        }
        labels.insert(k.to_string(), v.to_string());
    }
    let mut build_args = BTreeMap::new();
    for kv in &a.build_args {
        match kv.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(kv) {
                    build_args.insert(kv.clone(), v);
                }
            }
        }
    }
    let mut secrets = BTreeMap::new();
    for spec in &a.secret {
        match read_secret(spec) {
            Ok((id, data)) => {
                secrets.insert(id, data);
            }
            Err(e) => {
                eprintln!("berth: --secret {spec:?}: {e}");
                return Ok(1);
            }
        }
    }
    let mut ssh = BTreeMap::new();
    for spec in &a.ssh {
        match read_ssh(spec, std::env::var_os("SSH_AUTH_SOCK")) {
            Ok((id, socket)) => {
                ssh.insert(id, socket);
            }
            Err(e) => {
                eprintln!("berth: --ssh {spec:?}: {e}");
                return Ok(1);
            }
        }
    }
    let context = if a.context == "-" {
        Context::Tar(Box::new(std::io::stdin()))
    } else {
        Context::Dir(PathBuf::from(&a.context))
    };
    let network = match a.network.parse() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("berth: {e}");
            return Ok(1);
        }
    };
    // `-f -`: the Dockerfile comes from stdin (then the context cannot).
    let from_stdin = a.file.as_deref() == Some(std::path::Path::new("-"));
    if from_stdin && a.context == "-" {
        eprintln!("berth: -f - and a context on stdin (-) cannot both read stdin");
        return Ok(1);
    }
    let dockerfile_text = if from_stdin {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        Some(text)
    } else {
        None
    };
    let opts = BuildOptions {
        context,
        dockerfile: a.file.filter(|_| !from_stdin),
        dockerfile_text,
        tags: a.tags,
        build_args,
        no_cache: a.no_cache,
        target: a.target,
        quiet: a.quiet,
        explain_cache: a.explain_cache || a.progress == "plain",
        network,
        labels,
        pull_always: a.pull,
        registry: Some(crate::image_cmd::registry_options(globals, a.quiet)?),
        secrets,
        ssh,
    };
    let mut out = std::io::stdout();
    let id = match berth_engine::build::build(root, run_root, opts, &mut out) {
        Ok(id) => id,
        // A failed build exits 1, as `docker build` does.
        Err(e) => {
            eprintln!("berth: {e}");
            return Ok(1);
        }
    };
    if let Some(f) = &a.iidfile {
        if let Err(e) = std::fs::write(f, id.to_string()) {
            eprintln!("berth: write {}: {e}", f.display());
            return Ok(1);
        }
    }
    if a.quiet {
        println!("{id}");
    }
    Ok(0)
}

/// `berth builder <verb>`.
#[derive(clap::Subcommand, Debug)]
pub enum BuilderCommand {
    /// Remove the build cache.
    Prune {
        /// Do not prompt (berth never prompts).
        #[arg(short, long)]
        force: bool,
    },
}

/// Runs `berth builder ...`.
pub fn builder(root: &std::path::Path, c: BuilderCommand) -> anyhow::Result<i32> {
    match c {
        BuilderCommand::Prune { force: _ } => {
            let (n, freed) = berth_engine::build::prune(root)?;
            println!("Deleted {n} build cache entries");
            println!(
                "Total reclaimed space: {}",
                crate::system_cmd::human_size(freed)
            );
            Ok(0)
        }
    }
}

/// A `--secret` flag: its id and bytes, as buildx reads it: from `src=FILE`
/// (also `source=`), `env=VAR` (or `type=env,src=VAR`), or with neither the
/// variable named as the id if it is set, else the file named as the id.
fn read_secret(spec: &str) -> Result<(String, Vec<u8>), String> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    let mut typ = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(v.to_string()),
            Some(("env", v)) => env = Some(v.to_string()),
            Some(("type", v @ ("file" | "env"))) => typ = Some(v),
            _ => {
                return Err(format!(
                    "unknown field {part:?} (use id=ID,src=FILE or id=ID,env=VAR)"
                ))
            }
        }
    }
    let id = id.filter(|i| !i.is_empty()).ok_or("no id=")?;
    if typ == Some("env") && env.is_none() {
        env = src.take();
    }
    let from_env = |var: &str| {
        std::env::var_os(var)
            .ok_or_else(|| format!("the environment has no {var}"))
            .map(|v| v.into_encoded_bytes())
    };
    let from_file = |path: &str| std::fs::read(path).map_err(|e| format!("read {path}: {e}"));
    match (src, env) {
        (Some(_), Some(_)) => Err("give src= or env=, not both".into()),
        (Some(path), None) => from_file(&path),
        (None, Some(var)) => from_env(&var),
        (None, None) if std::env::var_os(&id).is_some() => from_env(&id),
        (None, None) => from_file(&id),
    }
    .map(|data| (id, data))
}

/// An `--ssh` flag: its id and agent socket (`agent`, $SSH_AUTH_SOCK, when
/// the flag names none). Key files, which buildx loads into an agent of its
/// own, are refused: an agent's socket is what berth forwards.
fn read_ssh(spec: &str, agent: Option<std::ffi::OsString>) -> Result<(String, PathBuf), String> {
    use std::os::unix::fs::FileTypeExt;
    let (id, path) = match spec.split_once('=') {
        Some((id, paths)) if paths.contains(',') => {
            return Err(format!(
                "{id}: key files are not supported: add them to an ssh-agent and give its socket"
            ))
        }
        Some((id, "")) => return Err(format!("{id}: no socket after = (use {id}=SOCKET)")),
        Some((id, path)) => (id, PathBuf::from(path)),
        None => (
            spec,
            PathBuf::from(agent.ok_or("SSH_AUTH_SOCK is not set: give ID=SOCKET")?),
        ),
    };
    if id.is_empty() {
        return Err("no id (use default, or ID=SOCKET)".into());
    }
    let path = std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_socket() {
        return Err(format!(
            "{} is not a socket (key files are not supported: add them to an ssh-agent and give its socket)",
            path.display()
        ));
    }
    Ok((id.to_string(), path))
}

#[cfg(test)]
mod tests {
    use super::{read_secret, read_ssh};

    #[test]
    fn ssh_agents_are_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, b"key").unwrap();
        let env = Some(sock.clone().into_os_string());
        assert_eq!(
            read_ssh("default", env.clone()).unwrap(),
            ("default".into(), sock.clone())
        );
        let spec = format!("gh={}", sock.display());
        assert_eq!(read_ssh(&spec, None).unwrap(), ("gh".into(), sock.clone()));
        assert!(read_ssh("default", None)
            .unwrap_err()
            .contains("SSH_AUTH_SOCK"));
        let spec = format!("default={}", key.display());
        assert!(read_ssh(&spec, env.clone())
            .unwrap_err()
            .contains("not a socket"));
        let spec = format!("default={0},{0}", key.display());
        assert!(read_ssh(&spec, env.clone())
            .unwrap_err()
            .contains("key files"));
        assert!(read_ssh("=x", env.clone()).is_err());
        assert!(read_ssh("default=", env).unwrap_err().contains("no socket"));
    }

    #[test]
    fn secrets_are_read_as_buildx_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, b"from-file").unwrap();
        let spec = format!("id=t,src={}", file.display());
        assert_eq!(
            read_secret(&spec).unwrap(),
            ("t".into(), b"from-file".to_vec())
        );
        std::env::set_var("BERTH_TEST_SECRET_VAR", "from-env");
        for spec in [
            "id=t,env=BERTH_TEST_SECRET_VAR",
            "id=t,type=env,src=BERTH_TEST_SECRET_VAR",
        ] {
            assert_eq!(read_secret(spec).unwrap().1, b"from-env", "{spec}");
        }
        // Just an id: the variable of that name, else the file of that name.
        assert_eq!(
            read_secret("id=BERTH_TEST_SECRET_VAR").unwrap().1,
            b"from-env"
        );
        let spec = format!("id={}", file.display());
        assert_eq!(read_secret(&spec).unwrap().1, b"from-file");
        assert!(read_secret("id=t,bogus=1").is_err());
        assert!(read_secret("src=x").is_err());
    }
}
