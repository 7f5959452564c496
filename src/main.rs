//! `pvabridge`: the command-line program. Each subcommand lives in its own module under `cli/`
//! and stays a thin layer over the crates.

mod cli;

use clap::{Parser, Subcommand};

/// PVAccess stack and streaming bridge between Bluesky and APS DM workflows.
#[derive(Parser)]
#[command(name = "pvabridge", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version and exit.
    Version,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => cli::version::run(),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pvabridge: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
