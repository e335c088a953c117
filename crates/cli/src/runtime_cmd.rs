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
    /// File that receives the runtime's log lines (errors, and more with --debug).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of the log lines: text or json (runc's, which containerd's shim reads).
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    /// Log what the runtime does, not only errors.
    #[arg(long, global = true)]
    debug: bool,
    /// Use systemd to manage cgroups: berth has no systemd driver, so this is refused.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility: rootless mode (true, false or auto).
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
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
    /// Pass on descriptors 3..3+N to the container process.
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
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
    /// List the processes of a container (json: an array of host pids).
    Ps {
        /// Output format: table or json.
        #[arg(short, long, default_value = "table")]
        format: String,
        /// Container id.
        id: String,
        /// Options for ps(1) with the table format (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Freeze every process of a container.
    Pause {
        /// Container id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// Container id.
        id: String,
    },
    /// Change a running container's resource limits.
    Update {
        /// Linux resources JSON of the runtime spec (`-` for stdin).
        #[arg(short, long)]
        resources: PathBuf,
        /// Container id.
        id: String,
    },
    /// Print what this runtime supports (the runtime-spec features JSON).
    Features,
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
    /// Pass on descriptors 3..3+N to the process.
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    /// Extra capability for the process (CAP_NAME), added to all its sets.
    #[arg(short, long)]
    cap: Vec<String>,
    /// Refused unless empty: berth has no SELinux support.
    #[arg(long)]
    process_label: Option<String>,
    /// Refused unless empty: berth has no AppArmor support.
    #[arg(long)]
    apparmor: Option<String>,
    /// Container id.
    id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// The program name under which `berth` behaves as `berth runtime`, so that
/// containerd, Docker and Podman can execute it as their runc.
pub const RUNC_NAME: &str = "berth-runc";

/// Whether this process was started as [`RUNC_NAME`] (through a link).
pub fn invoked_as_runc() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n == RUNC_NAME))
        .unwrap_or(false)
}

/// `berth-runc ARGS...`: runc's command line; returns the process exit code.
pub fn runc_main() -> i32 {
    #[derive(clap::Parser, Debug)]
    #[command(name = RUNC_NAME, about = "berth's OCI runtime with runc's command line")]
    struct RuncCli {
        #[command(flatten)]
        args: RuntimeArgs,
    }
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.len() == 2 && (argv[1] == "--version" || argv[1] == "-v") {
        print_version();
        return 0;
    }
    match <RuncCli as clap::Parser>::try_parse_from(argv) {
        Ok(cli) => main(cli.args),
        Err(e) => {
            let _ = e.print();
            i32::from(e.use_stderr())
        }
    }
}

/// `--version` in runc's shape: `NAME version X`, then `spec: Y`.
fn print_version() {
    println!(
        "{RUNC_NAME} version {}\nspec: 1.2.0",
        env!("CARGO_PKG_VERSION")
    );
}

/// Where log lines go (runc's `--log` and `--log-format`).
struct Log {
    file: Option<PathBuf>,
    json: bool,
    debug: bool,
}

impl Log {
    /// Append one line at `level` to the log file, if there is one.
    fn line(&self, level: &str, msg: &str) {
        let Some(path) = &self.file else { return };
        if level == "debug" && !self.debug {
            return;
        }
        let time = berth_runtime::state::now_rfc3339();
        let line = if self.json {
            serde_json::json!({ "level": level, "msg": msg, "time": time }).to_string()
        } else {
            format!("time={time:?} level={level} msg={msg:?}")
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Run `berth runtime ...`; returns the process exit code.
///
/// An error goes to stderr and, with `--log`, to the log file as runc's
/// `level=error` line, which containerd's shim reports to its client verbatim.
pub fn main(args: RuntimeArgs) -> i32 {
    let log = Log {
        file: args.log.clone(),
        json: args.log_format == "json",
        debug: args.debug,
    };
    let result = check_globals(&args).and_then(|()| {
        log.line("debug", &format!("{:?}", args.command));
        let runtime = Runtime::new(&args.root);
        dispatch(&runtime, args.command)
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            let code = err
                .downcast_ref::<berth_runtime::Error>()
                .map(|e| e.exit_code())
                .unwrap_or(1);
            let msg = format!("berth: {}", one_line(&err));
            log.line("error", &msg);
            eprintln!("{msg}");
            code
        }
    }
}

fn check_globals(args: &RuntimeArgs) -> anyhow::Result<()> {
    if !matches!(args.log_format.as_str(), "text" | "json") {
        bail!(
            "unknown --log-format {:?}: use text or json",
            args.log_format
        );
    }
    if args.systemd_cgroup {
        bail!("--systemd-cgroup: berth has no systemd cgroup driver; use cgroupfs (drop the flag, and give cgroupsPath as a path such as /default/ID)");
    }
    if matches!(args.rootless.as_deref(), Some("true")) {
        bail!("--rootless=true: berth's runtime runs as root only");
    }
    Ok(())
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
        preserve_fds: args.preserve_fds,
        listen_fds: listen_fds(),
    }
}

/// `LISTEN_FDS` of our environment (systemd socket activation), passed on as runc does.
fn listen_fds() -> u32 {
    std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
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
        RuntimeCommand::Ps {
            format,
            id,
            ps_args,
        } => ps(runtime, &id, &format, &ps_args)?,
        RuntimeCommand::Pause { id } => runtime.pause(&id)?,
        RuntimeCommand::Resume { id } => runtime.resume(&id)?,
        RuntimeCommand::Update { resources, id } => {
            let text = if resources == std::path::Path::new("-") {
                std::io::read_to_string(std::io::stdin()).context("read resources from stdin")?
            } else {
                std::fs::read_to_string(&resources)
                    .with_context(|| format!("read {}", resources.display()))?
            };
            let resources: oci_spec::runtime::LinuxResources = serde_json::from_str(&text)
                .context("invalid --resources: want the spec's linux.resources JSON")?;
            runtime.update(&id, &resources)?;
        }
        RuntimeCommand::Features => {
            let features = berth_runtime::features::features();
            println!("{}", serde_json::to_string_pretty(&features)?);
        }
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

/// runc's `ps`: json prints the container's host pids; table runs ps(1) and
/// keeps its header and the container's lines.
fn ps(runtime: &Runtime, id: &str, format: &str, ps_args: &[String]) -> anyhow::Result<()> {
    let pids = runtime.pids(id)?;
    match format {
        "json" => println!("{}", serde_json::to_string(&pids)?),
        "table" => {
            let args: Vec<String> = if ps_args.is_empty() {
                vec!["-ef".into()]
            } else {
                ps_args.to_vec()
            };
            let out = std::process::Command::new("ps")
                .args(&args)
                .output()
                .context("run ps")?;
            if !out.status.success() {
                bail!(
                    "ps {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .context("ps output has no PID column")?;
            println!("{header}");
            for line in lines {
                let pid = line
                    .split_whitespace()
                    .nth(col)
                    .and_then(|p| p.parse().ok());
                if pid.is_some_and(|p: i32| pids.contains(&p)) {
                    println!("{line}");
                }
            }
        }
        other => bail!("unknown format {other:?}: use table or json"),
    }
    Ok(())
}

fn exec(runtime: &Runtime, args: ExecArgs) -> anyhow::Result<i32> {
    if args.process_label.as_deref().is_some_and(|l| !l.is_empty()) {
        bail!("--process-label: berth has no SELinux support");
    }
    if args.apparmor.as_deref().is_some_and(|p| !p.is_empty()) {
        bail!("--apparmor: berth has no AppArmor support");
    }
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
    let mut process = process;
    add_caps(&mut process, &args.cap)?;
    let opts = ExecOptions {
        console_socket: args.console_socket.clone(),
        pid_file: args.pid_file.clone(),
        detach: args.detach,
        preserve_fds: args.preserve_fds,
    };
    Ok(runtime
        .exec(&args.id, process, &opts)?
        .map(|e| e.code)
        .unwrap_or(0))
}

/// Add `--cap` capabilities to every set of the process (bounding, effective, permitted, ...).
fn add_caps(process: &mut Process, names: &[String]) -> anyhow::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let mut extra = Vec::new();
    for name in names {
        let upper = name.to_ascii_uppercase();
        let full = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        let cap: oci_spec::runtime::Capability = full
            .parse()
            .map_err(|_| anyhow::anyhow!("--cap {name}: unknown capability"))?;
        extra.push(cap);
    }
    let mut caps = process.capabilities().clone().unwrap_or_default();
    let add = |set: &Option<oci_spec::runtime::Capabilities>| {
        let mut set = set.clone().unwrap_or_default();
        set.extend(extra.iter().copied());
        Some(set)
    };
    caps.set_bounding(add(caps.bounding()));
    caps.set_effective(add(caps.effective()));
    caps.set_permitted(add(caps.permitted()));
    caps.set_inheritable(add(caps.inheritable()));
    caps.set_ambient(add(caps.ambient()));
    process.set_capabilities(Some(caps));
    Ok(())
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
    fn log_lines_have_runcs_shape() {
        let dir = std::env::temp_dir().join(format!("berth-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("log");
        let text = Log {
            file: Some(file.clone()),
            json: false,
            debug: false,
        };
        text.line("debug", "not without --debug");
        text.line("error", "bad \"x\"");
        let json = Log {
            file: Some(file.clone()),
            json: true,
            debug: true,
        };
        json.line("debug", "shown");
        let written = std::fs::read_to_string(&file).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 2, "{written}");
        assert!(lines[0].starts_with("time=\""), "{written}");
        assert!(
            lines[0].ends_with(r#"level=error msg="bad \"x\"""#),
            "{written}"
        );
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["level"], "debug");
        assert_eq!(v["msg"], "shown");
    }

    #[test]
    fn signals_parse_like_runc() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("BOGUS").is_err());
    }
}
