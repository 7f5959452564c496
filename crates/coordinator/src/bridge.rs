//! The runtime of the coordinator: serves the PV set of each run slot, applies what clients put
//! to the slot's [`Machine`], carries out its actions against DM, polls DM (which never pushes),
//! shows the machine on the PVs, and keeps each slot's record in its state file and in a watch
//! channel ([`Bridge::records`]) for whoever runs the bridge in-process.
//!
//! Commands are applied inside the put: when a `Command` put returns, the state has already
//! changed (or the put failed with the reason), and `Command` reads NONE again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use dm::error::status as dm_status;
use dm::{DmClient, DmError, JobQuery};
use pva::server::{
    AccessPolicy, AccessRules, Server, ServerError, ServerOptions, Source, StaticSource,
};
use pva::ServerConfig;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::machine::{
    Action, DmFailure, DmQuery, Input, JobPoll, Machine, MachineConfig, SlotRecord,
};
use crate::members::MemberReport;
use crate::pvs::{HandshakePvs, PutHooks};
use crate::request::{RunRequest, RUN_ID_ARG};
use crate::state::Command;
use crate::state_file::{self, StateFileError};

/// How often the heartbeat counts and the deadlines are checked.
const TICK: Duration = Duration::from_secs(1);
/// How many times the run metadata is offered to a catalog that could not be reached.
const SEND_ATTEMPTS: u32 = 3;
/// The wait between those attempts.
const SEND_RETRY: Duration = Duration::from_secs(2);

/// How to run the bridge.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// One run slot per prefix, e.g. `bdp:wf1:`.
    pub prefixes: Vec<String>,
    /// Timeouts and the default experiment of the run catalog.
    pub machine: MachineConfig,
    /// Where each slot keeps its state file.
    pub state_dir: PathBuf,
    /// The time between polls of DM (apstools uses 1 s).
    pub poll_period: Duration,
    /// Who may write which PV (e.g. [`crate::fields::access_rules`]); `None` lets any client
    /// write the writable PVs.
    pub access: Option<Arc<AccessRules>>,
    /// The DM run catalog service, when it is not the processing service's (same login).
    pub catalog: Option<DmClient>,
}

impl BridgeConfig {
    /// Slots for `prefixes`, state files in `state_dir`, default timeouts and a 1 s poll.
    pub fn new(prefixes: Vec<String>, state_dir: impl Into<PathBuf>) -> Self {
        BridgeConfig {
            prefixes,
            machine: MachineConfig::default(),
            state_dir: state_dir.into(),
            poll_period: Duration::from_secs(1),
            access: None,
            catalog: None,
        }
    }
}

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// No prefix was given.
    #[error("give at least one PV prefix (a run slot)")]
    NoPrefix,
    /// A prefix is unusable.
    #[error("prefix {0:?} must be non-empty and contain no whitespace")]
    BadPrefix(String),
    /// The same prefix twice.
    #[error("prefix {0:?} is given twice")]
    DuplicatePrefix(String),
    /// The poll period makes no sense.
    #[error("the DM poll period must be positive")]
    BadPollPeriod,
    /// A state file could not be read.
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    /// The PVA server did not start.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// A running bridge. Stop it with [`Bridge::stop`] so that every slot saves its record.
pub struct Bridge {
    server: Server,
    slots: JoinSet<()>,
    shutdown: watch::Sender<bool>,
    prefixes: Vec<String>,
    /// Each slot's record, in the order of `prefixes`.
    records: Vec<watch::Receiver<SlotRecord>>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("tcp", &self.server.tcp_addr())
            .field("udp", &self.server.udp_addr())
            .field("prefixes", &self.prefixes)
            .finish()
    }
}

/// What reaches a slot's task.
enum Event {
    /// Actions from a put handler.
    Actions(Vec<Action>),
    /// DM's answer to an action.
    Answer(Input),
    /// DM's answer to a query (a poll or a search).
    QueryAnswer(Input),
}

/// One slot: its machine (shared with the put handlers), PVs, state file and channel to its
/// task.
struct Slot {
    prefix: String,
    machine: Arc<Mutex<Machine>>,
    pvs: HandshakePvs,
    record_file: Arc<RecordFile>,
    events: mpsc::UnboundedSender<Event>,
}

/// A slot's state file, written whenever its record changed: by the slot's task and by a put
/// that changed the state, always before the PVs show the change, so that what a client saw
/// survives a restart of the bridge. The same record goes to the slot's watch channel.
struct RecordFile {
    state_dir: PathBuf,
    /// The text last written.
    saved: Mutex<String>,
    /// The record last saved, for [`Bridge::records`].
    records: watch::Sender<SlotRecord>,
}

impl RecordFile {
    fn save(&self, record: &SlotRecord) {
        let text = serde_json::to_string(record).expect("a record always serializes");
        let mut saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        if *saved == text {
            return;
        }
        self.records.send_if_modified(|current| {
            let changed = current != record;
            if changed {
                current.clone_from(record);
            }
            changed
        });
        match state_file::save(&self.state_dir, record) {
            Ok(()) => *saved = text,
            Err(err) => tracing::error!("slot {}: {err}", record.prefix),
        }
    }
}

fn lock(machine: &Mutex<Machine>) -> MutexGuard<'_, Machine> {
    machine.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The wall-clock time in seconds since the epoch, the machine's time.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

fn check_prefixes(prefixes: &[String]) -> Result<(), BridgeError> {
    if prefixes.is_empty() {
        return Err(BridgeError::NoPrefix);
    }
    for (i, prefix) in prefixes.iter().enumerate() {
        if prefix.is_empty() || prefix.chars().any(char::is_whitespace) {
            return Err(BridgeError::BadPrefix(prefix.clone()));
        }
        if prefixes[..i].contains(prefix) {
            return Err(BridgeError::DuplicatePrefix(prefix.clone()));
        }
    }
    Ok(())
}

impl Bridge {
    /// Restore each slot from its state file (or start it IDLE), serve the PVs with `pva`, and
    /// start following DM through `dm`.
    pub async fn start(
        config: BridgeConfig,
        dm: DmClient,
        pva: ServerConfig,
    ) -> Result<Bridge, BridgeError> {
        check_prefixes(&config.prefixes)?;
        if config.poll_period.is_zero() {
            return Err(BridgeError::BadPollPeriod);
        }
        let source = Arc::new(StaticSource::new());
        let mut ready_slots = Vec::new();
        for prefix in &config.prefixes {
            let machine = match state_file::load(&config.state_dir, prefix)? {
                Some(record) => {
                    tracing::info!(
                        "slot {prefix} resuming in {} from {}: {}",
                        record.state,
                        state_file::path_for(&config.state_dir, prefix).display(),
                        record.message
                    );
                    Machine::restore(record, config.machine.clone())
                }
                None => Machine::new(prefix.clone(), config.machine.clone(), now()),
            };
            let (sender, receiver) = mpsc::unbounded_channel();
            let slot = Slot::new(prefix.clone(), machine, &config.state_dir, sender);
            slot.pvs.add_to(&source);
            ready_slots.push((slot, receiver));
        }
        let options = ServerOptions {
            access: config
                .access
                .clone()
                .map(|rules| rules as Arc<dyn AccessPolicy>),
            ..ServerOptions::default()
        };
        let server =
            Server::start_with(pva, vec![source.clone() as Arc<dyn Source>], options).await?;
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let mut slots = JoinSet::new();
        tokio::spawn(check_login(dm.clone()));
        let records = ready_slots
            .iter()
            .map(|(slot, _)| slot.record_file.records.subscribe())
            .collect();
        for (slot, receiver) in ready_slots {
            let task = SlotTask {
                slot,
                events: receiver,
                dm: dm.clone(),
                catalog: config.catalog.clone().unwrap_or_else(|| dm.clone()),
                poll_period: config.poll_period,
            };
            slots.spawn(task.run(shutdown_receiver.clone()));
        }
        tracing::info!(
            "coordinator serving {} on TCP {} and UDP {}, DM at {}",
            config.prefixes.join(" "),
            server.tcp_addr(),
            server.udp_addr(),
            dm.base_url()
        );
        Ok(Bridge {
            server,
            slots,
            shutdown,
            prefixes: config.prefixes,
            records,
        })
    }

    /// The TCP address clients connect to.
    pub fn tcp_addr(&self) -> std::net::SocketAddr {
        self.server.tcp_addr()
    }

    /// The UDP address searches go to.
    pub fn udp_addr(&self) -> std::net::SocketAddr {
        self.server.udp_addr()
    }

    /// The prefixes served.
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// The record of slot `prefix` (what its state file holds) as a watch channel, which
    /// changes whenever the slot saves a changed record, before the PVs show the change;
    /// `None` for a prefix the bridge does not serve. The channel keeps its last record after
    /// [`Bridge::stop`].
    pub fn records(&self, prefix: &str) -> Option<watch::Receiver<SlotRecord>> {
        let slot = self.prefixes.iter().position(|p| p == prefix)?;
        Some(self.records[slot].clone())
    }

    /// Stop every slot (each saves its record) and the server.
    pub async fn stop(mut self) {
        self.shutdown.send_replace(true);
        while self.slots.join_next().await.is_some() {}
        self.server.stop().await;
    }
}

/// Log in to DM at once, so that a wrong login or an unreachable service shows in the log at
/// startup, and a first START finds a session open.
async fn check_login(dm: DmClient) {
    match dm.login().await {
        Ok(()) => tracing::info!("logged in to DM at {}", dm.base_url()),
        Err(err) => tracing::warn!(
            "cannot log in to DM at {} yet ({err}); runs will try again when they start",
            dm.base_url()
        ),
    }
}

impl Slot {
    fn new(
        prefix: String,
        mut machine: Machine,
        state_dir: &Path,
        events: mpsc::UnboundedSender<Event>,
    ) -> Slot {
        let view = machine.view(now());
        // After a restart START may reuse the request on show.
        machine.handle(Input::Request(view.request.clone()), now());
        let record_file = Arc::new(RecordFile {
            state_dir: state_dir.to_path_buf(),
            saved: Mutex::new(String::new()),
            records: watch::Sender::new(machine.record().clone()),
        });
        let machine = Arc::new(Mutex::new(machine));
        let shown = Arc::new(OnceLock::new());
        let hooks = make_hooks(&prefix, &machine, &record_file, &events, &shown);
        let pvs = HandshakePvs::new(&prefix, &view, hooks);
        let _ = shown.set(pvs.clone());
        Slot {
            prefix,
            machine,
            pvs,
            record_file,
            events,
        }
    }
}

/// The hooks of a slot's PVs. A command changes the State PV before its put returns: `shown`
/// holds the PVs once they exist.
fn make_hooks(
    prefix: &str,
    machine: &Arc<Mutex<Machine>>,
    record_file: &Arc<RecordFile>,
    events: &mpsc::UnboundedSender<Event>,
    shown: &Arc<OnceLock<HandshakePvs>>,
) -> PutHooks {
    // Applies an input that may be refused and saves the record it led to. For a command
    // (`at_once`), what it led to (State, Message, Status, ...) is shown before the put returns;
    // other inputs show with the slot's next round.
    let apply = |what: &'static str, at_once: bool| {
        let machine = machine.clone();
        let record_file = record_file.clone();
        let events = events.clone();
        let prefix = prefix.to_string();
        let shown = shown.clone();
        move |step: &dyn Fn(&mut Machine) -> Result<Vec<Action>, String>| {
            let mut machine = lock(&machine);
            let result = step(&mut machine);
            record_file.save(machine.record());
            if let Some(pvs) = shown.get().filter(|_| at_once) {
                pvs.show_now(&machine.view(now()));
            }
            drop(machine);
            match result {
                Ok(actions) => {
                    let _ = events.send(Event::Actions(actions));
                    Ok(())
                }
                Err(refused) => {
                    tracing::info!("slot {prefix} {what} refused: {refused}");
                    Err(refused)
                }
            }
        }
    };
    let command = {
        let apply = apply("command", true);
        let prefix = prefix.to_string();
        move |command: Command| {
            apply(&|m| m.command(command, now()).map_err(|e| e.to_string()))?;
            tracing::info!("slot {prefix} command {command}");
            Ok(())
        }
    };
    let workflow_command = {
        let apply = apply("workflow command", true);
        let prefix = prefix.to_string();
        move |command| {
            apply(&|m| {
                m.workflow_command(command, now())
                    .map_err(|e| e.to_string())
            })?;
            tracing::info!("slot {prefix} workflow command {command}");
            Ok(())
        }
    };
    let ready = {
        let apply = apply("Ready", true);
        move |ready| apply(&|m| m.set_ready(ready, now()))
    };
    let report = {
        let apply = apply("Report", false);
        move |report: MemberReport| apply(&|m| m.report(report.clone(), now()))
    };
    let feed = {
        let apply = apply("input", false);
        move |input: Input| apply(&|m| Ok(m.handle(input.clone(), now())))
    };
    let request = {
        let machine = machine.clone();
        move |text: &str| {
            let mut machine = lock(&machine);
            let state = machine.state();
            if state.is_active() {
                return Err(format!(
                    "a run is in progress (state {state}); the Request is read at START"
                ));
            }
            if !text.trim().is_empty() {
                RunRequest::parse(text).map_err(|err| err.to_string())?;
            }
            machine.handle(Input::Request(text.to_string()), now());
            Ok(())
        }
    };
    let message_feed = feed.clone();
    PutHooks {
        command: Box::new(command),
        request: Box::new(request),
        ready: Box::new(ready),
        progress: Box::new(move |frames| feed(Input::Progress(frames))),
        workflow_message: Box::new(move |text| {
            message_feed(Input::WorkflowMessage(text.to_string()))
        }),
        workflow_command: Box::new(workflow_command),
        report: Box::new(report),
    }
}

/// The task that runs one slot.
struct SlotTask {
    slot: Slot,
    events: mpsc::UnboundedReceiver<Event>,
    dm: DmClient,
    catalog: DmClient,
    poll_period: Duration,
}

impl SlotTask {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut heartbeat: i64 = 0;
        let mut query_in_flight = false;
        let mut next_query = Instant::now();
        let resumed = self.feed(Input::Tick);
        self.execute(resumed);
        self.save();
        loop {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(Event::Actions(actions)) => self.execute(actions),
                    Some(Event::Answer(input)) => {
                        let actions = self.feed(input);
                        self.execute(actions);
                    }
                    Some(Event::QueryAnswer(input)) => {
                        query_in_flight = false;
                        let actions = self.feed(input);
                        self.execute(actions);
                    }
                    None => break,
                },
                _ = ticker.tick() => {
                    heartbeat += 1;
                    let actions = self.feed(Input::Tick);
                    self.execute(actions);
                }
                // Poll at the poll period even when nothing else wakes the slot.
                _ = tokio::time::sleep_until(next_query), if !query_in_flight => {}
                _ = shutdown.changed() => break,
            }
            if !query_in_flight && Instant::now() >= next_query {
                next_query = Instant::now() + self.poll_period;
                let query = lock(&self.slot.machine).dm_query();
                if let Some(query) = query {
                    query_in_flight = true;
                    self.ask(query);
                }
            }
            // Saved before it is shown, so that a state a client has seen survives a restart.
            self.save();
            {
                // Shown under the machine's lock, so that a command's put, which shows the
                // state it led to, never sees an older one shown after it.
                let machine = lock(&self.slot.machine);
                self.slot.pvs.show(&machine.view(now()), heartbeat);
            }
        }
        self.save();
    }

    fn feed(&self, input: Input) -> Vec<Action> {
        if let Input::JobPolled(JobPoll::Unreachable(message)) | Input::JobFound(Err(message)) =
            &input
        {
            tracing::warn!("slot {} DM unreachable: {message}", self.slot.prefix);
        }
        lock(&self.slot.machine).handle(input, now())
    }

    /// Save the record under the machine's lock, so that a put's newer save is never
    /// overwritten by an older record.
    fn save(&self) {
        let machine = lock(&self.slot.machine);
        self.slot.record_file.save(machine.record());
    }

    fn execute(&self, actions: Vec<Action>) {
        let prefix = &self.slot.prefix;
        for action in actions {
            match action {
                Action::Transitioned { from, to, message } => {
                    tracing::info!("slot {prefix} {from} -> {to}: {message}");
                }
                Action::StartJob { workflow, args } => {
                    tracing::info!("slot {prefix} starting a job of DM workflow {workflow}");
                    let dm = self.dm.clone();
                    self.answer(false, async move {
                        let result = dm.start_job(&workflow, &args).await;
                        Input::JobStarted(result.map(Box::new).map_err(start_failure))
                    });
                }
                Action::StopJob { job_id } => {
                    tracing::info!("slot {prefix} stopping DM job {job_id}");
                    let dm = self.dm.clone();
                    self.answer(false, async move {
                        let result = dm.stop_job(&job_id).await;
                        Input::JobStopped(result.map(Box::new).map_err(stop_failure))
                    });
                }
                Action::SendRun { run_id, run } => {
                    tracing::info!(
                        "slot {prefix} sending run {} of experiment {} to the DM run catalog",
                        run.run_id,
                        run.experiment_name
                    );
                    let dm = self.catalog.clone();
                    self.answer(false, async move {
                        let mut attempt = 1;
                        let result = loop {
                            match dm.add_run(&run).await {
                                Err(err) if err.is_transient() && attempt < SEND_ATTEMPTS => {
                                    attempt += 1;
                                    tokio::time::sleep(SEND_RETRY).await;
                                }
                                other => break other.map(|_| ()).map_err(|e| e.to_string()),
                            }
                        };
                        Input::RunSent { run_id, result }
                    });
                }
            }
        }
    }

    fn ask(&self, query: DmQuery) {
        let dm = self.dm.clone();
        match query {
            DmQuery::Poll { job_id } => self.answer(true, async move {
                Input::JobPolled(match dm.get_job(&job_id).await {
                    Ok(job) => JobPoll::Seen(Box::new(job)),
                    Err(err) if is_not_found(&err) => JobPoll::NotFound(err.to_string()),
                    Err(err) => JobPoll::Unreachable(err.to_string()),
                })
            }),
            DmQuery::Find { run_id } => self.answer(true, async move {
                let filter = Map::from_iter([(RUN_ID_ARG.to_string(), Value::String(run_id))]);
                let query = JobQuery {
                    skip: None,
                    limit: Some(1),
                    filter: Some(filter),
                };
                Input::JobFound(
                    dm.list_jobs(&query)
                        .await
                        .map(|jobs| jobs.into_iter().next().map(Box::new))
                        .map_err(|e| e.to_string()),
                )
            }),
        }
    }

    /// Run `work` apart and hand its answer to the slot.
    fn answer(&self, query: bool, work: impl std::future::Future<Output = Input> + Send + 'static) {
        let events = self.slot.events.clone();
        tokio::spawn(async move {
            let input = work.await;
            let event = if query {
                Event::QueryAnswer(input)
            } else {
                Event::Answer(input)
            };
            let _ = events.send(event);
        });
    }
}

/// A failed start: without a clear answer (no answer in time, a broken connection, a server
/// error, a reply not understood) DM may have made the job anyway.
fn start_failure(err: DmError) -> DmFailure {
    let message = err.to_string();
    if err.is_transient() || matches!(err, DmError::Decode { .. }) {
        DmFailure::NoAnswer(message)
    } else {
        DmFailure::Refused(message)
    }
}

/// A failed stop: only a request that got no answer at all is worth repeating until DM is back
/// (a stop path the service does not have answers with an error, again and again).
fn stop_failure(err: DmError) -> DmFailure {
    let message = err.to_string();
    if matches!(err, DmError::Timeout { .. } | DmError::Transport { .. }) {
        DmFailure::NoAnswer(message)
    } else {
        DmFailure::Refused(message)
    }
}

fn is_not_found(err: &DmError) -> bool {
    match err {
        DmError::Service { code, .. } => *code == dm_status::OBJECT_NOT_FOUND,
        DmError::Http { status, .. } => *status == 404,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked() {
        assert!(matches!(check_prefixes(&[]), Err(BridgeError::NoPrefix)));
        let two = ["a:".to_string(), "a:".to_string()];
        assert!(matches!(
            check_prefixes(&two),
            Err(BridgeError::DuplicatePrefix(_))
        ));
        assert!(matches!(
            check_prefixes(&["a b".to_string()]),
            Err(BridgeError::BadPrefix(_))
        ));
        assert!(check_prefixes(&["a:".to_string(), "b:".to_string()]).is_ok());
    }
}
