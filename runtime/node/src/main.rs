//! `abi-node`: one binary per machine. Parses the CLI, loads the topology and
//! runs the node's supervision tree until a signal or an escalation ends it.

mod alloc;
mod cli;
mod cluster;
mod cluster_cli;
mod config;
mod demo;
mod keys;
mod logging;
mod run;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's allocator (see [`alloc`]).
#[global_allocator]
static ALLOC: alloc::Mimalloc = alloc::Mimalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Run(args) => run::main(*args),
        cli::Command::Check { file } => config::check(&file),
        cli::Command::Init { dir, force } => config::init(&dir, force),
        cli::Command::Keys { command } => keys::main(command),
        cli::Command::Plugin {
            command: cli::PluginCommand::Inspect { file },
        } => match abi_gpu::inspect(&file) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        cli::Command::Certs { command } => cluster::certs(command),
        cli::Command::Cluster { target, command } => cluster_cli::main(&target, command),
        cli::Command::Demo { nodes, dir } => demo::main(nodes, &dir),
        cli::Command::Version => {
            println!("abi-node {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
