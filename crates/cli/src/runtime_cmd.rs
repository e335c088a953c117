//! `berth runtime ...`: the OCI runtime with runc's command line, so scripts
//! and shims written for runc work with berth.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use berth_runtime::{CreateOptions, ExecOptions, Runtime};
use clap::{Args, Subcommand};
use nix::sys::signal::Signal;
use oci_spec::runtime::Process;

/// `berth runtime` and its global flags (runc's).
#[derive(Args, Debug)]
pub struct RuntimeArgs {
    /// Directory for container state (runc's --root).
    #[arg(long, default_value = "/run/berth/runtime", global = true)]
    root: PathBuf,
    /// Accepted for runc compatibility: log file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Accepted for runc compatibility: log format (text or json).
    #[arg(long, global = true)]
    log_format: Option<String>,
    /// Accepted for runc compatibility.
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: RuntimeCommand,
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// Bundle directory (holds config.json).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Unix socket that receives the pty master of a terminal process.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// File to write the container init's pid to.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Accepted for runc compatibility (berth falls back from pivot_root by itself).
    #[arg(long)]
    no_pivot: bool,
    /// Accepted for runc compatibility.
    #[arg(long)]
    no_new_keyring: bool,
    /// Container id.
    id: String,
}

#[derive(Subcommand, Debug)]
enum RuntimeCommand {
    /// Write a default config.json into the bundle directory.
    Spec {
        /// Bundle directory.
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Create a container; its process waits for `start`.
    Create(CreateArgs),
    /// Start a created container.
    Start {
        /// Container id.
        id: String,
    },
    /// Print a container's state as JSON.
    State {
        /// Container id.
        id: String,
    },
    /// Send a signal (default SIGTERM) to a container.
    Kill {
        /// Signal every process of the container.
        #[arg(short, long)]
        all: bool,
        /// Container id.
        id: String,
        /// Signal name or number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container.
    Delete {
        /// Kill it first if it still runs.
        #[arg(short, long)]
        force: bool,
        /// Container id.
        id: String,
    },
    /// Create, start and wait for a container, then delete it.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return after start, leaving the container running.
        #[arg(short, long)]
        detach: bool,
    },
    /// Run another process in a running container.
    Exec(ExecArgs),
    /// List containers.
    List {
        /// Output format: table or json.
        #[arg(short, long, default_value = "table")]
        format: String,
        /// Print ids only.
        #[arg(short, long)]
        quiet: bool,
    },
}

#[derive(Args, Debug)]
struct ExecArgs {
    /// Unix socket that receives the pty master.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Working directory in the container.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Extra environment variable (KEY=VALUE).
    #[arg(short, long)]
    env: Vec<String>,
    /// Give the process a terminal.
    #[arg(short, long)]
    tty: bool,
    /// User as UID[:GID].
    #[arg(short, long)]
    user: Option<String>,
    /// Extra group ids.
    #[arg(short = 'g', long)]
    additional_gids: Vec<u32>,
    /// Process description (process.json) instead of the command line.
    #[arg(short, long)]
    process: Option<PathBuf>,
    /// Do not wait for the process.
    #[arg(short, long)]
    detach: bool,
    /// File to write the process's pid to.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Set no_new_privs for the process.
    #[arg(long)]
    no_new_privs: bool,
    /// Container id.
    id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Run `berth runtime ...`; returns the process exit code.
pub fn main(args: RuntimeArgs) -> i32 {
    let runtime = Runtime::new(&args.root);
    match dispatch(&runtime, args.command) {
        Ok(code) => code,
        Err(err) => {
            let code = err
                .downcast_ref::<berth_runtime::Error>()
                .map(|e| e.exit_code())
                .unwrap_or(1);
            eprintln!("berth: {}", one_line(&err));
            code
        }
    }
}

/// An error and its causes on one line, without repeating a cause its parent already names.
pub(crate) fn one_line(err: &anyhow::Error) -> String {
    let parts: Vec<String> = err.chain().map(|e| e.to_string()).collect();
    let mut out: Vec<String> = Vec::new();
    for p in parts {
        if !out.iter().any(|o| o.contains(&p)) {
            out.push(p);
        }
    }
    out.join(": ")
}

fn create_options(args: &CreateArgs) -> CreateOptions {
    CreateOptions {
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        console_socket: args.console_socket.clone(),
        pid_file: args.pid_file.clone(),
    }
}

fn dispatch(runtime: &Runtime, command: RuntimeCommand) -> anyhow::Result<i32> {
    match command {
        RuntimeCommand::Spec { bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} exists: remove it first", path.display());
            }
            let spec = berth_runtime::spec::default_spec();
            let text = serde_json::to_string_pretty(&spec)?;
            std::fs::write(&path, text + "\n")
                .with_context(|| format!("write {}", path.display()))?;
        }
        RuntimeCommand::Create(args) => {
            runtime.create(&create_options(&args))?;
        }
        RuntimeCommand::Start { id } => runtime.start(&id)?,
        RuntimeCommand::State { id } => {
            let state = runtime.state(&id)?;
            println!("{}", serde_json::to_string_pretty(&state)?);
        }
        RuntimeCommand::Kill { all, id, signal } => {
            runtime.kill(&id, parse_signal(&signal)?, all)?
        }
        RuntimeCommand::Delete { force, id } => runtime.delete(&id, force)?,
        RuntimeCommand::Run { create, detach } => {
            let opts = create_options(&create);
            if let Some(exit) = runtime.run(&opts, detach)? {
                if exit.oom_killed {
                    eprintln!("berth: container {}: a process was killed by the OOM killer (memory limit reached)", opts.id);
                }
                return Ok(exit.code);
            }
        }
        RuntimeCommand::Exec(args) => return exec(runtime, args),
        RuntimeCommand::List { format, quiet } => {
            let states = runtime.list()?;
            let mut out = std::io::stdout().lock();
            if quiet {
                for s in &states {
                    writeln!(out, "{}", s.id)?;
                }
            } else if format == "json" {
                writeln!(out, "{}", serde_json::to_string(&states)?)?;
            } else if format == "table" {
                writeln!(
                    out,
                    "{:<20} {:<8} {:<10} {:<40} CREATED",
                    "ID", "PID", "STATUS", "BUNDLE"
                )?;
                for s in &states {
                    writeln!(
                        out,
                        "{:<20} {:<8} {:<10} {:<40} {}",
                        s.id,
                        s.pid,
                        s.status,
                        s.bundle.display(),
                        s.created
                    )?;
                }
            } else {
                bail!("unknown format {format:?}: use table or json");
            }
        }
    }
    Ok(0)
}

fn exec(runtime: &Runtime, args: ExecArgs) -> anyhow::Result<i32> {
    let process = match &args.process {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            serde_json::from_str::<Process>(&text)
                .with_context(|| format!("{}: invalid process", path.display()))?
        }
        None => {
            if args.command.is_empty() {
                bail!("exec needs a command (or --process)");
            }
            let state = runtime.state(&args.id)?;
            let spec_text =
                std::fs::read_to_string(state.bundle.join("config.json")).unwrap_or_default();
            let base = berth_runtime::spec::parse_spec(&spec_text)
                .ok()
                .and_then(|s| s.process().clone())
                .unwrap_or_default();
            let mut process = base;
            process.set_args(Some(args.command.clone()));
            process.set_terminal(Some(args.tty));
            if let Some(cwd) = &args.cwd {
                process.set_cwd(cwd.clone());
            }
            let mut env = process.env().clone().unwrap_or_default();
            env.extend(args.env.iter().cloned());
            process.set_env(Some(env));
            if let Some(user) = &args.user {
                let (uid, gid) = match user.split_once(':') {
                    Some((u, g)) => (u.parse()?, g.parse()?),
                    None => (user.parse().context("--user must be UID[:GID]")?, 0),
                };
                let u = process.user_mut();
                u.set_uid(uid);
                u.set_gid(gid);
            }
            if !args.additional_gids.is_empty() {
                process
                    .user_mut()
                    .set_additional_gids(Some(args.additional_gids.clone()));
            }
            if args.no_new_privs {
                process.set_no_new_privileges(Some(true));
            }
            process
        }
    };
    let opts = ExecOptions {
        console_socket: args.console_socket.clone(),
        pid_file: args.pid_file.clone(),
        detach: args.detach,
    };
    Ok(runtime
        .exec(&args.id, process, &opts)?
        .map(|e| e.code)
        .unwrap_or(0))
}

fn parse_signal(s: &str) -> anyhow::Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).with_context(|| format!("unknown signal {s}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .with_context(|| format!("unknown signal {s}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_runc() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("BOGUS").is_err());
    }
}
