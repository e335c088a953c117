//! `berth`: a daemonless, Docker-compatible container engine.

mod runtime_cmd;

use clap::{Parser, Subcommand};

/// Command line of `berth`.
#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "A daemonless, Docker-compatible container engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The OCI runtime, with runc's command line (create, start, state, kill, delete, run, exec, list, spec).
    Runtime(runtime_cmd::RuntimeArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Runtime(args) => runtime_cmd::main(args),
    };
    std::process::exit(code);
}
