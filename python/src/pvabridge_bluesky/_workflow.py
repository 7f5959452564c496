"""The run slot of a pvabridge bridge as an ophyd-async device."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Annotated as A
from typing import Any

from ophyd_async.core import (
    AsyncStatus,
    DeviceConnector,
    SignalR,
    SignalRW,
    StandardReadable,
    StrictEnum,
    Table,
    observe_value,
)
from ophyd_async.core import StandardReadableFormat as Format
from ophyd_async.epics.core import PviDeviceConnector, PvSuffix
from ophyd_async.epics.core._pvi_connector import PviTree

logger = logging.getLogger("pvabridge_bluesky")


class HandshakeState(StrictEnum):
    """The choices of ``P State``, in index order."""

    IDLE = "IDLE"
    STARTING = "STARTING"
    WAIT_READY = "WAIT_READY"
    READY = "READY"
    ACQUIRING = "ACQUIRING"
    DRAINING = "DRAINING"
    PROCESSING = "PROCESSING"
    DONE = "DONE"
    FAILED = "FAILED"
    ABORTED = "ABORTED"
    TIMEOUT = "TIMEOUT"


class HandshakeCommand(StrictEnum):
    """The choices of ``P Command``; the bridge puts NONE back once it acted."""

    NONE = "NONE"
    START = "START"
    ACQ_STARTED = "ACQ_STARTED"
    ACQ_DONE = "ACQ_DONE"
    ABORT = "ABORT"
    RESET = "RESET"


class WorkflowCommand(StrictEnum):
    """The choices of ``P WorkflowCommand``, which the workflow writes."""

    NONE = "NONE"
    END_ACQUISITION = "END_ACQUISITION"
    FAIL = "FAIL"


#: The states a run ends in; the bridge always reaches one.
FINAL_STATES = frozenset(
    {HandshakeState.DONE, HandshakeState.FAILED, HandshakeState.ABORTED, HandshakeState.TIMEOUT}
)
#: The states after acquisition, while the workflow goes on.
AFTER_ACQUISITION = frozenset({HandshakeState.DRAINING, HandshakeState.PROCESSING})


def is_active(state: HandshakeState) -> bool:
    """True while a run is under way (neither IDLE nor a final state)."""
    return state is not HandshakeState.IDLE and state not in FINAL_STATES


class SlotBusy(RuntimeError):
    """The slot is busy with a run that is not over (staging refuses it)."""


class WorkflowError(RuntimeError):
    """A run ended in FAILED, ABORTED or TIMEOUT; the text is the bridge's Message."""

    def __init__(self, prefix: str, state: HandshakeState, message: str):
        super().__init__(f"{prefix}: the run ended {state.value}: {message}")
        self.state = state
        self.message = message


@dataclass
class StreamingRequest:
    """The run request the bridge's ``P Request`` takes (as camelCase JSON): the DM workflow to
    start and what to tell it. Fields left at None are left out, so the bridge's defaults apply.
    """

    #: The DM workflow to start.
    workflow: str
    #: Extra argsDict entries for the DM job.
    args_dict: dict[str, Any] = field(default_factory=dict)
    #: The Bluesky run uid: it names the run in the DM run catalog.
    run_uid: str | None = None
    #: How many frames the detector will send.
    expected_frames: int | None = None
    #: The PV the detector frames stream on.
    data_channel: str | None = None
    #: Seconds the bridge waits for the workflow to be ready.
    ready_timeout: float | None = None
    #: A DM stage whose start counts as ready, for workflows that never write ``Ready``.
    ready_stage: str | None = None
    #: The DM experiment whose run catalog gets the run.
    experiment_name: str | None = None
    #: The run's metadata (the start document); it goes to the DM run catalog.
    metadata: dict[str, Any] | None = None
    #: The detector's next uniqueId, when known.
    first_frame_id: int | None = None
    #: How many workflow consumers share the stream.
    consumers: int | None = None

    def to_json(self) -> str:
        """The JSON text for ``P Request``."""

        def camel(name: str) -> str:
            head, *rest = name.split("_")
            return head + "".join(word.capitalize() for word in rest)

        fields = {camel(key): value for key, value in asdict(self).items() if value is not None}
        if not self.args_dict:
            fields.pop("argsDict")
        return json.dumps(fields, default=str)


class _SlotConnector(PviDeviceConnector):
    """Connects the slot through ``P PVI``; a bridge that serves no PVI (or a gateway that hides
    it), or ``use_pvi=False``, is connected through the documented PV names instead. Optional
    signals the bridge does not serve are left as None."""

    pvi_timeout = 2.0

    def __init__(self, prefix: str, use_pvi: bool = True):
        super().__init__(prefix)
        self.use_pvi = use_pvi

    async def connect_real(self, device, timeout, force_reconnect):
        if not self.use_pvi:
            return await self._connect_by_name(device, timeout, force_reconnect)
        if self.pvi_tree is None:
            try:
                self.pvi_tree = await PviTree.build_device_tree(
                    pvi_pv=self.pvi_pv, timeout=min(timeout, self.pvi_timeout)
                )
            except Exception as err:  # any failure: no PVI to go by
                logger.info("%s: no PVI (%s); using the documented PV names", self.pvi_pv, err)
                return await self._connect_by_name(device, timeout, force_reconnect)
        return await super().connect_real(device, timeout, force_reconnect)

    async def _connect_by_name(self, device, timeout, force_reconnect):
        filler = self.filler
        for name, (_, signal_type) in list(filler._unfilled_backends.items()):
            filler.fill_child_signal(name, signal_type)
        # The optional signals (the filler lists every Optional attribute of the class).
        optional = {
            name: getattr(device, name)
            for name in sorted(filler._optional_devices)
            if name in filler._filled_backends
        }
        results = await asyncio.gather(
            *(s.connect(timeout=min(timeout, self.pvi_timeout)) for s in optional.values()),
            return_exceptions=True,
        )
        for name, result in zip(optional, results, strict=True):
            if isinstance(result, Exception):  # an optional PV that is not served
                logger.info("%s: %s is not served; left out", self.prefix, name)
                setattr(device, name, None)
        filler.check_filled(f"{self.prefix} (by name)")
        device.set_name(device.name)
        return await DeviceConnector.connect_real(self, device, timeout, force_reconnect)


class StreamingWorkflow(StandardReadable):
    """One run slot of a pvabridge bridge (``pvabridge serve --prefix P``), found through its
    PVI structure ``P PVI``, or through the documented PV names when the bridge serves none.

    It is ``Stageable`` (stage resets a slot in a final state and refuses an active one; unstage
    aborts a run still active), ``Preparable`` (``prepare(StreamingRequest)`` writes the Request,
    puts START and waits for READY), ``Flyable`` (kickoff puts ACQ_STARTED; complete puts ACQ_DONE
    and waits for a final state) and readable (State, frames received and missed, the job's
    status). Failures raise :class:`WorkflowError` with the bridge's Message.

    ``use_pvi=False`` goes by the documented PV names without asking for PVI; ``ready_margin``
    is how much longer than the Request's ready timeout ``prepare`` waits for READY (the bridge
    itself ends the run in TIMEOUT when the workflow is not ready in time).
    """

    state: A[SignalR[HandshakeState], PvSuffix("State"), Format.HINTED_UNCACHED_SIGNAL]
    command: A[SignalRW[HandshakeCommand], PvSuffix("Command")]
    request: A[SignalRW[str], PvSuffix("Request")]
    ready: A[SignalRW[int], PvSuffix("Ready")]
    progress: A[SignalRW[int], PvSuffix("Progress")]
    workflow_message: A[SignalRW[str], PvSuffix("WorkflowMessage")]
    workflow: A[SignalR[str], PvSuffix("Workflow")]
    owner: A[SignalR[str], PvSuffix("Owner")]
    job_id: A[SignalR[str], PvSuffix("JobId"), Format.UNCACHED_SIGNAL]
    job_status: A[SignalR[str], PvSuffix("JobStatus"), Format.HINTED_UNCACHED_SIGNAL]
    stage_id: A[SignalR[str], PvSuffix("StageId")]
    run_time: A[SignalR[float], PvSuffix("RunTime")]
    frames_expected: A[SignalR[int], PvSuffix("FramesExpected"), Format.UNCACHED_SIGNAL]
    frames_received: A[SignalR[int], PvSuffix("FramesReceived"), Format.HINTED_UNCACHED_SIGNAL]
    frames_missed: A[SignalR[int], PvSuffix("FramesMissed"), Format.HINTED_UNCACHED_SIGNAL]
    message: A[SignalR[str], PvSuffix("Message"), Format.UNCACHED_SIGNAL]
    heartbeat: A[SignalR[int], PvSuffix("Heartbeat")]
    # Optional: left None when the bridge does not serve them.
    stages: A[SignalR[Table] | None, PvSuffix("Stages")]
    workflow_command: A[SignalRW[WorkflowCommand] | None, PvSuffix("WorkflowCommand")]

    def __init__(
        self, prefix: str, name: str = "", use_pvi: bool = True, ready_margin: float = 10.0
    ):
        self._prefix = prefix
        self._ready_margin = ready_margin
        self._ready_timeout = 30.0
        super().__init__(name=name, connector=_SlotConnector(prefix, use_pvi))
        #: True once a plan handed the run over to be followed in the background (unstage and
        #: the plans' clean-up then leave it running).
        self.detached = False
        # True from this device's START until the next stage: only such a run is ever aborted by
        # unstage, never one another session started.
        self._started = False
        #: The task following a run handed over by ``streaming_run(..., wait=False)``.
        self.follower: asyncio.Future[HandshakeState] | None = None

    @property
    def prefix(self) -> str:
        """The slot's PV prefix."""
        return self._prefix

    async def _put(self, command: HandshakeCommand) -> None:
        await self.command.set(command)

    async def wait_for_state(
        self, wanted: frozenset[HandshakeState] | set[HandshakeState], timeout: float | None
    ) -> HandshakeState:
        """Wait until State is one of ``wanted``; a final state that is not wanted raises
        :class:`WorkflowError` with the bridge's Message (so a wait never outlives the run).
        ``timeout`` (seconds, None for none) raises ``asyncio.TimeoutError``."""
        async for state in observe_value(self.state, done_timeout=timeout):
            if state in wanted:
                return state
            if state in FINAL_STATES:
                raise WorkflowError(self._prefix, state, await self.message.get_value())
        raise asyncio.TimeoutError(f"{self._prefix}: State stopped updating")

    @AsyncStatus.wrap
    async def stage(self) -> None:
        """Make the slot ready for a run: RESET a final state; refuse a run under way."""
        state = await self.state.get_value()
        if is_active(state):
            message = await self.message.get_value()
            raise SlotBusy(
                f"{self._prefix} is busy with a run in {state.value} ({message}): "
                "wait for it to end or put ABORT first"
            )
        self.detached = False
        self._started = False
        if state in FINAL_STATES:
            await self._put(HandshakeCommand.RESET)
            await self.wait_for_state({HandshakeState.IDLE}, timeout=10.0)

    @AsyncStatus.wrap
    async def unstage(self) -> None:
        """ABORT a run this device started that is still under way, unless it was handed over to
        be followed in the background, and wait until it ended."""
        await self.abort_unless_final()

    async def abort_unless_final(self, timeout: float = 30.0) -> HandshakeState:
        """Put ABORT if the run this device started is under way (and not followed in the
        background); wait until it ended. Returns the state the slot is left in."""
        state = await self.state.get_value()
        if not (self._started and is_active(state)) or self.detached:
            return state
        logger.warning("%s: run in %s aborted", self._prefix, state.value)
        await self._put(HandshakeCommand.ABORT)
        try:
            return await self.wait_for_state(FINAL_STATES, timeout=timeout)
        except WorkflowError as err:
            return err.state

    @AsyncStatus.wrap
    async def prepare(self, value: StreamingRequest) -> None:
        """Write the request, put START and wait for READY (the workflow subscribed to the
        detector). Raises :class:`WorkflowError` when the run ends first."""
        if value.ready_timeout is not None:
            self._ready_timeout = value.ready_timeout
        await self.request.set(value.to_json())
        self._started = True
        await self._put(HandshakeCommand.START)
        await self.wait_for_state(
            {HandshakeState.READY}, timeout=self._ready_timeout + self._ready_margin
        )

    @AsyncStatus.wrap
    async def kickoff(self) -> None:
        """Tell the bridge acquisition starts (ACQ_STARTED)."""
        await self._put(HandshakeCommand.ACQ_STARTED)
        await self.wait_for_state(
            {HandshakeState.ACQUIRING, *AFTER_ACQUISITION, HandshakeState.DONE}, timeout=10.0
        )

    async def end_acquisition(self) -> None:
        """Put ACQ_DONE, unless the workflow already ended acquisition (END_ACQUISITION)."""
        state = await self.state.get_value()
        if state is HandshakeState.ACQUIRING:
            try:
                await self._put(HandshakeCommand.ACQ_DONE)
            except Exception:
                # Refused because acquisition ended meanwhile: that is what was asked for.
                if await self.state.get_value() is HandshakeState.ACQUIRING:
                    raise
        elif state in FINAL_STATES:
            raise WorkflowError(self._prefix, state, await self.message.get_value())

    @AsyncStatus.wrap
    async def complete(self) -> None:
        """End acquisition (ACQ_DONE; fine if the workflow ended it already) and wait for the
        run to end. Raises :class:`WorkflowError` unless it ends DONE."""
        await self.end_acquisition()
        await self.wait_for_state({HandshakeState.DONE}, timeout=None)

    async def report(self, concise: bool = True) -> str:
        """A one-line report (State, frames, DM job); with ``concise=False`` the Stages table as
        well, one line per stage."""
        state, received, expected, missed, job_status, message = await asyncio.gather(
            self.state.get_value(),
            self.frames_received.get_value(),
            self.frames_expected.get_value(),
            self.frames_missed.get_value(),
            self.job_status.get_value(),
            self.message.get_value(),
        )
        line = (
            f"{self._prefix}: {state.value}, frames {received}/{expected} received, "
            f"{missed} missed, DM job {job_status or '-'}: {message}"
        )
        if concise or self.stages is None:
            return line
        table = (await self.stages.get_value()).model_dump()
        columns = list(table)
        rows = zip(*(table[c] for c in columns), strict=True) if columns else []
        lines = [line] + [
            "  " + ", ".join(f"{c}={v}" for c, v in zip(columns, row, strict=True)) for row in rows
        ]
        return "\n".join(lines)

    async def follow(self, reporting_period: float = 10.0, concise: bool = True) -> HandshakeState:
        """Report the run through logging every ``reporting_period`` seconds until it ends, and
        once more when it ends; returns the final state."""
        while True:
            state = await self.state.get_value()
            if state in FINAL_STATES:
                break
            logger.info("%s", await self.report(concise))
            try:
                state = await self.wait_for_state(FINAL_STATES, timeout=reporting_period)
                break
            except asyncio.TimeoutError:
                continue
        final = await self.report(concise)
        if state is HandshakeState.DONE:
            logger.info("%s", final)
        else:
            logger.error("%s", final)
        return state
