//! `abi-node`: one binary per machine. Parses the CLI, loads the topology and
//! runs the node's supervision tree until a signal or an escalation ends it.

mod cli;
mod config;
mod keys;
mod logging;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Run(args) => run::main(*args),
        cli::Command::Check { file } => config::check(&file),
        cli::Command::Init { dir, force } => config::init(&dir, force),
        cli::Command::Keys { command } => keys::main(command),
        cli::Command::Version => {
            println!("abi-node {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
