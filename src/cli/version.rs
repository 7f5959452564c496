//! `pvabridge version`.

use std::process::ExitCode;

/// Print the program's name and version.
pub fn run() -> anyhow::Result<ExitCode> {
    println!("pvabridge {}", env!("CARGO_PKG_VERSION"));
    Ok(ExitCode::SUCCESS)
}
