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
    /// The context directory, or `-` for a tar on stdin.
    pub context: String,
}

/// Runs `berth build`.
pub fn build(
    root: &std::path::Path,
    run_root: &std::path::Path,
    a: BuildArgs,
) -> anyhow::Result<i32> {
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
    let context = if a.context == "-" {
        Context::Tar(Box::new(std::io::stdin()))
    } else {
        Context::Dir(PathBuf::from(&a.context))
    };
    let opts = BuildOptions {
        context,
        dockerfile: a.file,
        tags: a.tags,
        build_args,
        no_cache: a.no_cache,
        target: a.target,
        quiet: a.quiet,
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
            let n = berth_engine::build::prune(root)?;
            println!("Deleted {n} build cache entries");
            Ok(0)
        }
    }
}
