//! `berth`: a daemonless, Docker-compatible container engine.
// The flags' doc comments are their --help texts, written as Docker writes them
// ([hostip:][hostport:]containerport), not rustdoc links.
#![allow(rustdoc::broken_intra_doc_links)]

mod build_cmd;
mod commit_cmd;
mod container_cmd;
mod filter;
mod format;
mod image_cmd;
mod inspect;
mod monitor_cmd;
mod network_cmd;
mod runtime_cmd;
mod system_cmd;
mod table;
mod volume_cmd;

use std::path::PathBuf;

use berth_engine::prune::PruneFilter;
use clap::{Parser, Subcommand};
use image_cmd::{
    HistoryArgs, ImageCommand, ImageGlobals, ImportArgs, ListArgs, LoadArgs, LoginArgs, PullArgs,
    PushArgs, RmArgs, SaveArgs, TagArgs,
};

/// Command line of `berth`.
#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "A daemonless, Docker-compatible container engine"
)]
struct Cli {
    /// Persistent state: images, containers, volumes, networks.
    #[arg(long, env = "BERTH_ROOT", default_value = "/var/lib/berth")]
    root: PathBuf,
    /// Volatile state: pids, sockets, locks.
    #[arg(long, env = "BERTH_RUN_ROOT", default_value = "/run/berth")]
    run_root: PathBuf,
    #[command(flatten)]
    images: ImageGlobals,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Create and start a container.
    #[command(disable_help_flag = true)]
    Run(container_cmd::RunArgs),
    /// Create a container.
    #[command(disable_help_flag = true)]
    Create(container_cmd::CreateArgs),
    /// Start containers.
    Start(container_cmd::StartArgs),
    /// Stop containers (the stop signal, then SIGKILL after a timeout).
    Stop(StopArgs),
    /// Restart containers.
    Restart(StopArgs),
    /// Send a signal to containers.
    Kill(KillArgs),
    /// Remove containers.
    Rm(RmContainerArgs),
    /// List containers.
    Ps(container_cmd::PsArgs),
    /// Show a container's output.
    Logs(container_cmd::LogsArgs),
    /// Run a command in a running container.
    Exec(container_cmd::ExecArgs),
    /// Attach to a running container.
    Attach(AttachArgs),
    /// Wait for containers to stop and print their exit codes.
    Wait(WaitArgs),
    /// Rename a container.
    Rename(RenameArgs),
    /// Show the running processes of a container.
    Top(TopArgs),
    /// Pause all processes within containers.
    Pause(NamesArgs),
    /// Unpause all processes within containers.
    Unpause(NamesArgs),
    /// Show containers' resource usage (CPU, memory, pids).
    Stats(system_cmd::StatsArgs),
    /// Change containers' resource limits and restart policy.
    Update(system_cmd::UpdateArgs),
    /// Copy files/folders between a container and the host.
    Cp(system_cmd::CpArgs),
    /// List the files a container added (A), changed (C) or deleted (D).
    Diff(commit_cmd::DiffArgs),
    /// Create an image from a container's changes.
    Commit(commit_cmd::CommitArgs),
    /// Write a container's filesystem as a tar archive.
    Export(commit_cmd::ExportArgs),
    /// Show system-wide information.
    Info(system_cmd::InfoArgs),
    /// Show the berth version.
    Version(system_cmd::VersionArgs),
    /// Manage berth: disk usage, prune, info.
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
    /// Low-level information on containers or images, as JSON.
    Inspect(inspect::InspectArgs),
    /// Manage volumes.
    Volume {
        #[command(subcommand)]
        command: volume_cmd::VolumeCommand,
    },
    /// Manage networks.
    Network {
        #[command(subcommand)]
        command: network_cmd::NetworkCommand,
    },
    /// List a container's published ports.
    Port {
        /// The container.
        container: String,
        /// Only this private port (PORT[/PROTO]).
        private_port: Option<String>,
    },
    /// Manage containers.
    Container {
        #[command(subcommand)]
        command: ContainerCommand,
    },
    /// Run a container's monitor (internal).
    #[command(name = "__monitor", hide = true)]
    Monitor(monitor_cmd::MonitorArgs),
    /// Serve the embedded DNS while containers on user-defined networks run (internal).
    #[command(name = "__dns", hide = true)]
    Dns,
    /// Run a container's healthcheck while one run of it lasts (internal).
    #[command(name = "__health", hide = true)]
    Health {
        /// Container id.
        id: String,
        /// Host pid of the run's process.
        pid: i32,
    },
    /// The OCI runtime, with runc's command line (create, start, state, kill, delete, run, exec, list, spec).
    Runtime(runtime_cmd::RuntimeArgs),
    /// Manage images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// Push an image to a registry.
    Push(PushArgs),
    /// List images.
    Images(ListArgs),
    /// Create a tag TARGET that refers to SOURCE.
    Tag(TagArgs),
    /// Remove images.
    Rmi(RmArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Save images to a tar archive.
    Save(SaveArgs),
    /// Load images from a tar archive.
    Load(LoadArgs),
    /// Import a rootfs tarball as an image.
    Import(ImportArgs),
    /// Build an image from a Dockerfile.
    Build(build_cmd::BuildArgs),
    /// Manage the build cache.
    Builder {
        #[command(subcommand)]
        command: build_cmd::BuilderCommand,
    },
    /// Log in to a registry.
    Login(LoginArgs),
    /// Log out from a registry.
    Logout {
        /// Registry server (default docker.io).
        server: Option<String>,
    },
}

/// `berth container <verb>`.
#[derive(Subcommand, Debug)]
enum ContainerCommand {
    /// List containers.
    #[command(alias = "list", alias = "ps")]
    Ls(container_cmd::PsArgs),
    /// Remove every stopped container.
    Prune {
        /// Do not prompt (berth never prompts).
        #[arg(short, long)]
        force: bool,
        /// Filter: until=TIME (created before), label=KEY[=VALUE], label!=KEY[=VALUE].
        #[arg(long)]
        filter: Vec<String>,
    },
    /// Create and start a container.
    #[command(disable_help_flag = true)]
    Run(container_cmd::RunArgs),
    /// Create a container.
    #[command(disable_help_flag = true)]
    Create(container_cmd::CreateArgs),
    /// Start containers.
    Start(container_cmd::StartArgs),
    /// Show a container's output.
    Logs(container_cmd::LogsArgs),
    /// Run a command in a running container.
    Exec(container_cmd::ExecArgs),
    /// Low-level information on containers.
    Inspect(inspect::InspectArgs),
    /// Rename a container.
    Rename(RenameArgs),
    /// Show the running processes of a container.
    Top(TopArgs),
    /// Pause all processes within containers.
    Pause(NamesArgs),
    /// Unpause all processes within containers.
    Unpause(NamesArgs),
    /// Show containers' resource usage (CPU, memory, pids).
    Stats(system_cmd::StatsArgs),
    /// Change containers' resource limits and restart policy.
    Update(system_cmd::UpdateArgs),
    /// Copy files/folders between a container and the host.
    Cp(system_cmd::CpArgs),
    /// List the files a container added (A), changed (C) or deleted (D).
    Diff(commit_cmd::DiffArgs),
    /// Create an image from a container's changes.
    Commit(commit_cmd::CommitArgs),
    /// Write a container's filesystem as a tar archive.
    Export(commit_cmd::ExportArgs),
    /// Stop containers (the stop signal, then SIGKILL after a timeout).
    Stop(StopArgs),
    /// Send a signal to containers.
    Kill(KillArgs),
    /// Remove containers.
    #[command(alias = "remove")]
    Rm(RmContainerArgs),
    /// Restart containers.
    Restart(StopArgs),
    /// Wait for containers to stop and print their exit codes.
    Wait(WaitArgs),
    /// Attach to a running container.
    Attach(AttachArgs),
    /// List a container's published ports.
    Port {
        /// The container.
        container: String,
        /// Only this private port (PORT[/PROTO]).
        private_port: Option<String>,
    },
}

/// `berth system <verb>`.
#[derive(Subcommand, Debug)]
enum SystemCommand {
    /// Show disk usage.
    Df(system_cmd::DfArgs),
    /// Remove stopped containers, dangling (with -a: unused) images and, with --volumes, unused anonymous (with -a: all unused) volumes.
    Prune(system_cmd::PruneArgs),
    /// Show system-wide information.
    Info(system_cmd::InfoArgs),
    /// Verify blobs, images, snapshots and containers; --repair removes leftovers.
    Check(system_cmd::CheckArgs),
}

/// `stop` and `restart`.
#[derive(clap::Args, Debug)]
struct StopArgs {
    /// Seconds to wait before killing.
    #[arg(short = 't', long = "time")]
    timeout: Option<u64>,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `kill`.
#[derive(clap::Args, Debug)]
struct KillArgs {
    /// Signal (default SIGKILL).
    #[arg(short, long, default_value = "SIGKILL")]
    signal: String,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `rm`.
#[derive(clap::Args, Debug)]
struct RmContainerArgs {
    /// Kill running containers first.
    #[arg(short, long)]
    force: bool,
    /// Remove the container's anonymous volumes too (never named ones).
    #[arg(short, long)]
    volumes: bool,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `attach`.
#[derive(clap::Args, Debug)]
struct AttachArgs {
    /// Key sequence that detaches (default ctrl-p,ctrl-q).
    #[arg(long, default_value = container_cmd::DEFAULT_DETACH_KEYS)]
    detach_keys: String,
    /// Container.
    container: String,
}

/// `wait`.
#[derive(clap::Args, Debug)]
struct WaitArgs {
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `pause` and `unpause`.
#[derive(clap::Args, Debug)]
struct NamesArgs {
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `rename OLD NEW`.
#[derive(clap::Args, Debug)]
struct RenameArgs {
    /// The container.
    container: String,
    /// Its new name.
    new_name: String,
}

/// `top CONTAINER [ps OPTIONS]`.
#[derive(clap::Args, Debug)]
struct TopArgs {
    /// The container.
    container: String,
    /// ps options (accepted and ignored: berth shows PID, PPID, USER, TIME, CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_options: Vec<String>,
}

/// Docker's exit code for an error of the engine itself.
const ENGINE_ERROR: i32 = 125;

fn main() {
    if runtime_cmd::invoked_as_runc() {
        std::process::exit(runtime_cmd::runc_main());
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Usage errors exit 125 like Docker's; --help and --version exit 0.
            let code = if e.use_stderr() { ENGINE_ERROR } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    // Relative state directories would mean something else in the monitor and
    // in the runtime's bundle paths: make them absolute once, here.
    let (root, run_root) = match (
        std::path::absolute(&cli.root),
        std::path::absolute(&cli.run_root),
    ) {
        (Ok(root), Ok(run_root)) => (root, run_root),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("berth: --root/--run-root: {e}");
            std::process::exit(ENGINE_ERROR);
        }
    };
    let code = match engine_command(&root, &run_root, &cli.images, cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("berth: {}", runtime_cmd::one_line(&err));
            exit_code(&err)
        }
    };
    std::process::exit(code);
}

/// Apply `op` to each name as Docker does: print what it returns (the name,
/// mostly), report a failure on a line of its own and go on with the next.
/// The exit code is the last failure's (125 for most), 0 if none failed.
fn each_name(names: &[String], mut op: impl FnMut(&str) -> anyhow::Result<String>) -> i32 {
    let mut code = 0;
    for n in names {
        match op(n) {
            Ok(lines) => println!("{lines}"),
            Err(e) => {
                eprintln!("berth: {}", runtime_cmd::one_line(&e));
                code = exit_code(&e);
            }
        }
    }
    code
}

/// The exit code of a failed command: the engine's for its errors, else 125.
fn exit_code(err: &anyhow::Error) -> i32 {
    err.downcast_ref::<berth_engine::Error>()
        .map(|e| e.exit_code())
        .unwrap_or(ENGINE_ERROR)
}

fn engine_command(
    root: &std::path::Path,
    run_root: &std::path::Path,
    globals: &ImageGlobals,
    command: Command,
) -> anyhow::Result<i32> {
    use berth_engine::containers::Containers;
    let containers = || Containers::open(root, run_root);
    let image = match command {
        // The runtime reports its own errors, with runc's exit codes.
        Command::Runtime(args) => return Ok(runtime_cmd::main(args)),
        Command::Monitor(a) => return Ok(monitor_cmd::main(root, run_root, a)),
        Command::Dns => return Ok(berth_engine::containers::dns::main(root, run_root)),
        Command::Health { id, pid } => {
            return Ok(berth_engine::containers::health::main(
                root, run_root, &id, pid,
            ))
        }
        Command::Run(a)
        | Command::Container {
            command: ContainerCommand::Run(a),
        } => return container_cmd::run(&containers()?, a, globals),
        Command::Create(a)
        | Command::Container {
            command: ContainerCommand::Create(a),
        } => return container_cmd::create(&containers()?, a, globals),
        Command::Start(a)
        | Command::Container {
            command: ContainerCommand::Start(a),
        } => return container_cmd::start(&containers()?, a),
        Command::Stop(a)
        | Command::Container {
            command: ContainerCommand::Stop(a),
        } => return container_cmd::stop(&containers()?, a.timeout, &a.containers),
        Command::Restart(a)
        | Command::Container {
            command: ContainerCommand::Restart(a),
        } => return container_cmd::restart(&containers()?, a.timeout, &a.containers),
        Command::Kill(a)
        | Command::Container {
            command: ContainerCommand::Kill(a),
        } => return container_cmd::kill(&containers()?, &a.signal, &a.containers),
        Command::Rm(a)
        | Command::Container {
            command: ContainerCommand::Rm(a),
        } => {
            return container_cmd::rm(&containers()?, a.force, a.volumes, &a.containers);
        }
        Command::Ps(a)
        | Command::Container {
            command: ContainerCommand::Ls(a),
        } => return container_cmd::ps(&containers()?, a),
        Command::Logs(a)
        | Command::Container {
            command: ContainerCommand::Logs(a),
        } => return container_cmd::logs(&containers()?, a),
        Command::Exec(a)
        | Command::Container {
            command: ContainerCommand::Exec(a),
        } => return container_cmd::exec(&containers()?, a),
        Command::Attach(a)
        | Command::Container {
            command: ContainerCommand::Attach(a),
        } => return container_cmd::attach(&containers()?, &a.container, &a.detach_keys),
        Command::Wait(a)
        | Command::Container {
            command: ContainerCommand::Wait(a),
        } => return container_cmd::wait(&containers()?, &a.containers),
        Command::Rename(a)
        | Command::Container {
            command: ContainerCommand::Rename(a),
        } => return system_cmd::rename(&containers()?, &a.container, &a.new_name),
        Command::Top(a)
        | Command::Container {
            command: ContainerCommand::Top(a),
        } => return system_cmd::top(&containers()?, &a.container, &a.ps_options),
        Command::Pause(a)
        | Command::Container {
            command: ContainerCommand::Pause(a),
        } => return system_cmd::pause(&containers()?, &a.containers),
        Command::Unpause(a)
        | Command::Container {
            command: ContainerCommand::Unpause(a),
        } => return system_cmd::unpause(&containers()?, &a.containers),
        Command::Stats(a)
        | Command::Container {
            command: ContainerCommand::Stats(a),
        } => return system_cmd::stats(&containers()?, a),
        Command::Update(a)
        | Command::Container {
            command: ContainerCommand::Update(a),
        } => return system_cmd::update(&containers()?, a),
        Command::Cp(a)
        | Command::Container {
            command: ContainerCommand::Cp(a),
        } => return system_cmd::cp(&containers()?, a),
        Command::Diff(a)
        | Command::Container {
            command: ContainerCommand::Diff(a),
        } => return commit_cmd::diff(&containers()?, a),
        Command::Commit(a)
        | Command::Container {
            command: ContainerCommand::Commit(a),
        } => return commit_cmd::commit(&containers()?, a),
        Command::Export(a)
        | Command::Container {
            command: ContainerCommand::Export(a),
        } => return commit_cmd::export(&containers()?, a),
        Command::System {
            command: SystemCommand::Df(a),
        } => return system_cmd::df(&containers()?, a),
        Command::System {
            command: SystemCommand::Prune(a),
        } => return system_cmd::prune(&containers()?, a),
        Command::System {
            command: SystemCommand::Check(a),
        } => return system_cmd::check(&containers()?, a),
        Command::Info(a)
        | Command::System {
            command: SystemCommand::Info(a),
        } => return system_cmd::info(&containers()?, root, run_root, a),
        Command::Version(a) => return system_cmd::version(a),
        Command::Volume { command } => return volume_cmd::run(&containers()?, command),
        Command::Network { command } => return network_cmd::run(&containers()?, command),
        Command::Port {
            container,
            private_port,
        }
        | Command::Container {
            command:
                ContainerCommand::Port {
                    container,
                    private_port,
                },
        } => return container_cmd::port(&containers()?, &container, private_port.as_deref()),
        Command::Container {
            command: ContainerCommand::Prune { force: _, filter },
        } => {
            let filter = PruneFilter::parse(&filter, PruneFilter::KEYS)?;
            let removed = containers()?.prune(&filter)?;
            println!("Deleted Containers:");
            for id in removed {
                println!("{id}");
            }
            return Ok(0);
        }
        Command::Container {
            command: ContainerCommand::Inspect(args),
        } => {
            let c = containers()?;
            return inspect::print(&args, |n| Ok(container_cmd::inspect_json(&c, &c.get(n)?)));
        }
        Command::Inspect(args) => {
            // Containers first, then images, as Docker's generic inspect.
            let c = containers()?;
            return inspect::print(&args, |n| match c.get(n) {
                Ok(r) => Ok(container_cmd::inspect_json(&c, &r)),
                Err(berth_engine::Error::NoSuchContainer(_)) => c
                    .images()
                    .inspect(n)
                    .map_err(|_| anyhow::anyhow!("no such object: {n}")),
                Err(e) => Err(e.into()),
            });
        }
        Command::Build(a) => return build_cmd::build(root, run_root, a, globals),
        Command::Builder { command } => return build_cmd::builder(root, command),
        Command::Login(args) => return image_cmd::login(globals, args),
        Command::Logout { server } => return image_cmd::logout(server),
        Command::Image { command } => command,
        Command::Pull(a) => ImageCommand::Pull(a),
        Command::Push(a) => ImageCommand::Push(a),
        Command::Images(a) => ImageCommand::Ls(a),
        Command::Tag(a) => ImageCommand::Tag(a),
        Command::Rmi(a) => ImageCommand::Rm(a),
        Command::History(a) => ImageCommand::History(a),
        Command::Save(a) => ImageCommand::Save(a),
        Command::Load(a) => ImageCommand::Load(a),
        Command::Import(a) => ImageCommand::Import(a),
    };
    let containers = containers()?;
    let in_use = containers.images_in_use()?;
    image_cmd::run(containers.images(), &in_use, globals, image)
}
