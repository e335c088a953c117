//! `berth`: a daemonless, Docker-compatible container engine.

mod image_cmd;
mod runtime_cmd;

use std::path::PathBuf;

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
    /// Log in to a registry.
    Login(LoginArgs),
    /// Log out from a registry.
    Logout {
        /// Registry server (default docker.io).
        server: Option<String>,
    },
}

/// Docker's exit code for an error of the engine itself.
const ENGINE_ERROR: i32 = 125;

fn main() {
    let cli = Cli::parse();
    let code = match engine_command(&cli.root, &cli.images, cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("berth: {}", runtime_cmd::one_line(&err));
            ENGINE_ERROR
        }
    };
    std::process::exit(code);
}

fn engine_command(
    root: &std::path::Path,
    globals: &ImageGlobals,
    command: Command,
) -> anyhow::Result<i32> {
    let image = match command {
        // The runtime reports its own errors, with runc's exit codes.
        Command::Runtime(args) => return Ok(runtime_cmd::main(args)),
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
    let images = berth_engine::images::Images::open(root)?;
    image_cmd::run(&images, globals, image)
}
