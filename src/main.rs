//! `pvabridge`: the command-line program. Each subcommand lives in its own module under `cli/`
//! and stays a thin layer over the crates.

mod cli;

/// mimalloc keeps freed memory for reuse: a stream of multi-megabyte frames then costs no page
/// faults per frame, where the system allocator returned each frame's pages to the kernel and
/// faulted new ones in (measured in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (its index in mimalloc's option list, v2 and v3 alike).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before returning it to the kernel. With its default,
/// a 2 MiB frame stream still faulted every frame's pages in anew (about 240,000 page faults
/// in a 3-second run, a quarter of the consumer's time); with 10 s, a few hundred.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

fn keep_freed_memory_longer() {
    // SAFETY: sets a plain integer option of the linked mimalloc, before any other thread
    // exists (first thing in `main`); mimalloc reads the option at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

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
    /// See it all work on this machine: bridge, embedded DM, a streaming workflow, the simulated
    /// detector and the Bluesky side, then a summary of the run.
    Demo(cli::demo::DemoArgs),
    /// Print the version and exit.
    Version,
    /// Run the coordinator: the handshake PVs of run slots, driving DM workflow jobs.
    Serve(Box<cli::serve::ServeArgs>),
    /// Take part in a run's handshake from a DM stage (consume, ready, progress, message, wait-state).
    Workflow(cli::workflow::WorkflowArgs),
    /// Run the embedded DM-compatible processing service (workflows without a facility).
    DmService(cli::dm::ServiceArgs),
    /// Talk to a DM processing service, like the `dm-*` tools of the DM distribution.
    Dm(cli::dm::DmArgs),
    /// Serve ad-hoc writable PVs (NTScalar, NTScalarArray, NTEnum) until interrupted.
    Host(cli::host::HostArgs),
    /// Read PVs once (like pvxget).
    Get(cli::get::GetArgs),
    /// Write a PV (like pvxput).
    Put(cli::put::PutArgs),
    /// Print every update of PVs (like pvxmonitor).
    Monitor(cli::monitor::MonitorArgs),
    /// Print the type of PVs (like pvxinfo).
    Info(cli::info::InfoArgs),
    /// Call a PV with arguments (RPC, like pvxcall).
    Call(cli::call::CallArgs),
    /// List the servers that answer searches, or the PVs a server serves (like pvxlist).
    List(cli::list::ListArgs),
    /// Publish simulated detector frames (NTNDArray), like areaDetector or pvapy-ad-sim-server.
    Simdet(cli::simdet::SimDetArgs),
    /// Receive a detector stream and account for every frame.
    Consume(cli::consume::ConsumeArgs),
    /// Serve a stream again to many consumers, or distribute it over them.
    Relay(cli::relay::RelayArgs),
}

fn main() -> std::process::ExitCode {
    keep_freed_memory_longer();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => cli::demo::run(args),
        Command::Version => cli::version::run(),
        Command::Serve(args) => cli::serve::run(*args),
        Command::Workflow(args) => cli::workflow::run(args),
        Command::DmService(args) => cli::dm::run_service(args),
        Command::Dm(args) => cli::dm::run(args),
        Command::Host(args) => cli::host::run(args),
        Command::Get(args) => cli::get::run(args),
        Command::Put(args) => cli::put::run(args),
        Command::Monitor(args) => cli::monitor::run(args),
        Command::Info(args) => cli::info::run(args),
        Command::Call(args) => cli::call::run(args),
        Command::List(args) => cli::list::run(args),
        Command::Simdet(args) => cli::simdet::run(args),
        Command::Consume(args) => cli::consume::run(args),
        Command::Relay(args) => cli::relay::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pvabridge: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
