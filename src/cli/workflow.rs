//! `pvabridge workflow ...`: what a DM stage runs to take part in the handshake of a run slot.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use coordinator::{HandshakeClient, State};
use pva::client::Context;
use serde_json::json;

use super::common::positive_duration;

/// The environment variable that may give the handshake prefix instead of --handshake.
const HANDSHAKE_ENV: &str = "PVABRIDGE_HANDSHAKE";

/// Options of `pvabridge workflow`.
#[derive(Args, Debug)]
#[command(after_help = "\
A DM stage gets the slot's prefix in its argsDict as handshakePrefix, so a stage command reads e.g.
  pvabridge workflow ready --handshake $handshakePrefix
  pvabridge workflow wait-state DRAINING --handshake $handshakePrefix
  pvabridge workflow progress 100 --handshake $handshakePrefix
  pvabridge workflow message 'wrote results.h5' --handshake $handshakePrefix
  pvabridge workflow end-acquisition --handshake $handshakePrefix --reason 'enough data'
  pvabridge workflow fail --handshake $handshakePrefix --message 'sample lost'
or, for the whole streaming stage in one command,
  pvabridge workflow consume --handshake $handshakePrefix --channel $dataChannel --expected $expectedFrames
wait-state exits 0 once the slot is in one of the states, and non-zero when the run ends in another
final state or the wait runs out. PVs are found through the EPICS_PVA_* environment.")]
pub struct WorkflowArgs {
    /// The run slot's PV prefix, e.g. bdp:wf1:.
    #[arg(long, env = HANDSHAKE_ENV, value_name = "PREFIX", global = true)]
    handshake: Option<String>,
    /// How long one PV operation may take (connection included).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration, global = true)]
    timeout: Duration,
    #[command(subcommand)]
    command: WorkflowCommand,
}

#[derive(Subcommand, Debug)]
enum WorkflowCommand {
    /// The streaming stage: receive the detector stream, set Ready, write per-frame statistics,
    /// report Progress, and end once acquisition is over and every frame is accounted for.
    Consume(Box<super::workflow_consume::ConsumeArgs>),
    /// Tell the bridge the workflow is ready to receive (Ready=1).
    Ready {
        /// Withdraw readiness instead (Ready=0): READY goes back to WAIT_READY; refused once
        /// acquisition started.
        #[arg(long)]
        off: bool,
    },
    /// End acquisition from the workflow's side (WorkflowCommand END_ACQUISITION): in ACQUIRING
    /// the run goes to DRAINING as with Bluesky's ACQ_DONE; once acquisition ended it is a no-op;
    /// before ACQUIRING it is refused.
    EndAcquisition {
        /// Why (shown in WorkflowMessage and Message).
        #[arg(
            long,
            value_name = "TEXT",
            default_value = "the workflow ended acquisition"
        )]
        reason: String,
    },
    /// Fail the run (WorkflowCommand FAIL): FAILED at once with the reason in Message, and the
    /// DM job is stopped.
    Fail {
        /// Why (shown in WorkflowMessage and Message).
        #[arg(long, value_name = "TEXT")]
        message: String,
    },
    /// Report the frames processed so far.
    Progress {
        /// Frames processed.
        frames: u64,
    },
    /// Show free text to the operator (WorkflowMessage).
    Message {
        /// The text.
        text: String,
    },
    /// Wait until the slot is in one of the given states; print it.
    WaitState {
        /// States, e.g. ACQUIRING DRAINING (any of them ends the wait).
        #[arg(required = true, value_name = "STATE")]
        states: Vec<String>,
        /// The longest wait.
        #[arg(long, value_name = "DURATION", default_value = "600s", value_parser = positive_duration)]
        max_wait: Duration,
        /// Print {"state": ..., "message": ...} instead of the state name.
        #[arg(long)]
        json: bool,
    },
    /// Print the slot's Status structure.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Run one workflow command.
pub fn run(args: WorkflowArgs) -> anyhow::Result<ExitCode> {
    let Some(prefix) = args.handshake.clone() else {
        bail!("no run slot: pass --handshake PREFIX (or set {HANDSHAKE_ENV})");
    };
    let timeout = args.timeout;
    let wanted = match &args.command {
        WorkflowCommand::WaitState { states, .. } => states
            .iter()
            .map(|s| s.parse::<State>())
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let runtime = match args.command {
        WorkflowCommand::Consume(_) => super::common::consumer_runtime()?,
        _ => super::common::runtime()?,
    };
    runtime.block_on(async move {
        let ctx = Context::from_env()?;
        let slot = HandshakeClient::new(ctx.clone(), prefix).with_timeout(timeout);
        match args.command {
            WorkflowCommand::Consume(consume) => {
                return super::workflow_consume::run(&ctx, slot, *consume).await;
            }
            WorkflowCommand::Ready { off } => slot.set_ready(!off).await?,
            WorkflowCommand::Progress { frames } => slot.report_progress(frames).await?,
            WorkflowCommand::Message { text } => slot.set_workflow_message(&text).await?,
            WorkflowCommand::EndAcquisition { reason } => slot.end_acquisition(&reason).await?,
            WorkflowCommand::Fail { message } => {
                if message.trim().is_empty() {
                    bail!("--message must say why the run fails");
                }
                slot.fail(&message).await?;
            }
            WorkflowCommand::WaitState { max_wait, json, .. } => {
                let state = slot.wait_for_state(&wanted, max_wait).await?;
                if json {
                    let status = slot.status().await?;
                    println!("{}", json!({"state": state, "message": status.message}));
                } else {
                    println!("{state}");
                }
            }
            WorkflowCommand::Status { json } => {
                let status = slot.status().await?;
                if json {
                    println!("{}", serde_json::to_string(&status)?);
                } else {
                    println!(
                        "{} {} job={} ({}, stage {}) frames={}/{} missed={} ready={} progress={}: {}",
                        slot.prefix(),
                        status.state,
                        if status.job_id.is_empty() { "-" } else { &status.job_id },
                        if status.job_status.is_empty() { "-" } else { &status.job_status },
                        if status.stage_id.is_empty() { "-" } else { &status.stage_id },
                        status.frames_received,
                        status.frames_expected,
                        status.frames_missed,
                        u8::from(status.ready),
                        status.progress,
                        status.message
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
