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

use clap::{CommandFactory, Parser, Subcommand};

/// PVAccess stack and streaming bridge between Bluesky and APS DM workflows.
#[derive(Parser)]
#[command(name = "pvabridge", version, about, long_about = None, after_help = "\
Logging: RUST_LOG (e.g. RUST_LOG=pva=debug) filters the log lines on stderr for every command;
-d adds debug lines of pvabridge's crates; --log-format json writes them as JSON objects.
Durations take plain seconds or a unit: 2.5, 250ms, 30s, 5m, 1h.")]
struct Cli {
    #[command(flatten)]
    global: cli::common::GlobalArgs,
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
    /// Print the type of PVs and the server that has them (like pvxinfo).
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
    /// Print a shell completion script (e.g. `pvabridge completions bash > /etc/bash_completion.d/pvabridge`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages of pvabridge and every subcommand into DIR (pvabridge.1, pvabridge-get.1, ...).
    Man {
        /// The directory (created if missing).
        dir: std::path::PathBuf,
    },
}

impl Command {
    /// The log level when RUST_LOG is not set: services report what they do, tools stay quiet.
    fn default_log_level(&self) -> &'static str {
        match self {
            Command::Serve(_) | Command::DmService(_) => "info",
            _ => "warn",
        }
    }

    /// Whether the command speaks PVAccess (and `-v` prints the EPICS configuration).
    fn uses_pva(&self) -> bool {
        !matches!(
            self,
            Command::Version
                | Command::DmService(_)
                | Command::Dm(_)
                | Command::Completions { .. }
                | Command::Man { .. }
        )
    }
}

fn main() -> std::process::ExitCode {
    keep_freed_memory_longer();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if err.use_stderr() => {
            // One line and exit status 1 for bad input (as pvxs tools; 2 means interrupted):
            // clap's first paragraph names the option and the problem; `--help` teaches the rest.
            let text = err.render().to_string();
            let problem: Vec<&str> = text
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!(
                "pvabridge: {}",
                problem.join(" ").trim_start_matches("error: ")
            );
            return std::process::ExitCode::FAILURE;
        }
        Err(err) => err.exit(),
    };
    let result =
        cli::common::init_logging(&cli.global, cli.command.default_log_level()).and_then(|()| {
            if cli.global.verbose && cli.command.uses_pva() {
                eprintln!("Effective config\n{}", cli::common::effective_config()?);
            }
            run(cli.command, &cli.global)
        });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pvabridge: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(
    command: Command,
    global: &cli::common::GlobalArgs,
) -> anyhow::Result<std::process::ExitCode> {
    match command {
        Command::Demo(args) => cli::demo::run(args),
        Command::Version => cli::version::run(),
        Command::Serve(args) => cli::serve::run(*args),
        Command::Workflow(args) => cli::workflow::run(args),
        Command::DmService(args) => cli::dm::run_service(args),
        Command::Dm(args) => cli::dm::run(args),
        Command::Host(args) => cli::host::run(args),
        Command::Get(args) => cli::get::run(args),
        Command::Put(args) => cli::put::run(args, global.verbose),
        Command::Monitor(args) => cli::monitor::run(args),
        Command::Info(args) => cli::info::run(args),
        Command::Call(args) => cli::call::run(args),
        Command::List(args) => cli::list::run(args, global.verbose),
        Command::Simdet(args) => cli::simdet::run(args),
        Command::Consume(args) => cli::consume::run(args),
        Command::Relay(args) => cli::relay::run(args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "pvabridge",
                &mut std::io::stdout(),
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), &dir))
                .map_err(|e| anyhow::anyhow!("cannot write man pages to {}: {e}", dir.display()))?;
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}
