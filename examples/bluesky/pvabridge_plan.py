"""Drive a streaming DM workflow through the pvabridge handshake from a Bluesky plan.

The bridge (`pvabridge serve`) serves one run slot under a prefix, e.g. ``bl:wf1:``: the PVs
``bl:wf1:State``, ``Command``, ``Request``, ... and a ``PVI`` structure that lists them. This module
gives two ophyd-async devices for a slot -- one with explicit ``pva://`` signals, one found through
PVI -- a device for a detector with an areaDetector-like ``Acquire`` trigger (``pvabridge simdet
--trigger``), and the plan :func:`streaming_run`::

    RE(streaming_run(slot, detector, workflow="stream-stats", frames=100,
                     data_channel="bl:det:Image"))

The plan opens a Bluesky run, writes the run request (with the run's uid, and the run's metadata
for the DM run catalog) to ``Request``, puts START, waits for READY (the DM workflow has subscribed
to the detector), puts ACQ_STARTED, triggers the detector and waits until it finishes or the
workflow ends acquisition itself (State leaves ACQUIRING: the detector is then stopped), puts
ACQ_DONE (a no-op when the workflow came first), waits for a final state, records the bridge's
frame counts in the run, and closes the run: ``success`` when the bridge says DONE. The PVs are
described in docs/handshake.md.
"""

import asyncio
import json

import bluesky.plan_stubs as bps
from ophyd_async.core import (
    Device,
    SignalR,
    SignalRW,
    StandardReadable,
    StrictEnum,
    observe_value,
    wait_for_value,
)
from ophyd_async.epics.core import PviDeviceConnector, epics_signal_r, epics_signal_rw


class HandshakeState(StrictEnum):
    """The choices of ``PREFIX State``, in index order."""

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
    """The choices of ``PREFIX Command``; the bridge puts NONE back once it acted."""

    NONE = "NONE"
    START = "START"
    ACQ_STARTED = "ACQ_STARTED"
    ACQ_DONE = "ACQ_DONE"
    ABORT = "ABORT"
    RESET = "RESET"


FINAL_STATES = {
    HandshakeState.DONE,
    HandshakeState.FAILED,
    HandshakeState.ABORTED,
    HandshakeState.TIMEOUT,
}


class BridgeSlot(StandardReadable):
    """One run slot of the bridge, with each signal named by its PV."""

    def __init__(self, prefix: str, name: str = ""):
        pv = lambda suffix: f"pva://{prefix}{suffix}"  # noqa: E731
        self.command = epics_signal_rw(HandshakeCommand, pv("Command"))
        self.request = epics_signal_rw(str, pv("Request"))
        self.message = epics_signal_r(str, pv("Message"))
        self.job_id = epics_signal_r(str, pv("JobId"))
        self.job_status = epics_signal_r(str, pv("JobStatus"))
        with self.add_children_as_readables():
            self.state = epics_signal_r(HandshakeState, pv("State"))
            self.frames_expected = epics_signal_r(int, pv("FramesExpected"))
            self.frames_received = epics_signal_r(int, pv("FramesReceived"))
            self.frames_missed = epics_signal_r(int, pv("FramesMissed"))
        super().__init__(name=name)


class BridgeSlotPvi(Device):
    """The same slot, its signals found through ``PREFIX PVI`` (the bridge lists every signal
    there; those named here are checked for their types, the others are added as found)."""

    state: SignalR[HandshakeState]
    command: SignalRW[HandshakeCommand]
    request: SignalRW[str]
    message: SignalR[str]
    job_id: SignalR[str]
    job_status: SignalR[str]
    frames_expected: SignalR[int]
    frames_received: SignalR[int]
    frames_missed: SignalR[int]

    def __init__(self, prefix: str, name: str = ""):
        super().__init__(name=name, connector=PviDeviceConnector(prefix))


class SimDetector(Device):
    """``pvabridge simdet --pv PREFIXImage --trigger PREFIXAcquire``: put 1 to Acquire to take
    the configured frames; it reads 0 again when they are out."""

    def __init__(self, prefix: str, name: str = ""):
        self.acquire = epics_signal_rw(int, f"pva://{prefix}Acquire")
        super().__init__(name=name)


def _wait_for_state(slot, wanted, timeout):
    """A coroutine factory for ``bps.wait_for``: wait until State is one of ``wanted``; a final
    state that is not wanted ends the wait with the bridge's message, so a plan never waits for a
    run that is over."""

    async def wait():
        async for state in observe_value(slot.state, done_timeout=timeout):
            if state in wanted:
                return
            if state in FINAL_STATES:
                message = await slot.message.get_value()
                raise RuntimeError(f"the run ended in {state.value}: {message}")

    return wait


def _acquire(slot, detector, timeout):
    """A coroutine factory for ``bps.wait_for``: wait until the detector has taken its frames
    (Acquire reads 0 again) or the workflow ended acquisition (State left ACQUIRING); in the
    second case stop the detector."""

    async def acquire():
        taken = asyncio.ensure_future(wait_for_value(detector.acquire, 0, timeout=timeout))

        async def left_acquiring():
            async for state in observe_value(slot.state, done_timeout=timeout):
                if state != HandshakeState.ACQUIRING:
                    return

        ended = asyncio.ensure_future(left_acquiring())
        done, pending = await asyncio.wait({taken, ended}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            task.result()
        if ended in done:
            await detector.acquire.set(0)

    return acquire


def wait_for_state(slot, wanted, timeout):
    """Plan: wait until the slot is in one of ``wanted`` and return that state."""
    yield from bps.wait_for([_wait_for_state(slot, set(wanted), timeout)])
    return (yield from bps.rd(slot.state))


def streaming_run(
    slot,
    detector,
    workflow,
    frames,
    data_channel,
    args_dict=None,
    ready_timeout=30.0,
    run_timeout=300.0,
    md=None,
    experiment_name=None,
):
    """Plan: one streaming run of DM workflow ``workflow`` through the bridge slot ``slot``.

    Returns the final state. The run's stop document says ``success`` only when the bridge
    ended the run DONE; its ``reason`` is the bridge's message.
    """
    state = yield from bps.rd(slot.state)
    if state in FINAL_STATES:
        yield from bps.mv(slot.command, HandshakeCommand.RESET)
    metadata = {"workflow": workflow, "frames": frames, "data_channel": data_channel}
    metadata.update(md or {})
    uid = yield from bps.open_run(md=metadata)
    request = {
        "workflow": workflow,
        "runUid": uid,
        "expectedFrames": frames,
        "dataChannel": data_channel,
        "readyTimeout": ready_timeout,
        "argsDict": dict(args_dict or {}),
        "metadata": dict(metadata, uid=uid),
    }
    if experiment_name:
        request["experimentName"] = experiment_name
    yield from bps.mv(slot.request, json.dumps(request))
    yield from bps.mv(slot.command, HandshakeCommand.START)
    yield from wait_for_state(slot, {HandshakeState.READY}, ready_timeout + 10.0)
    yield from bps.mv(slot.command, HandshakeCommand.ACQ_STARTED)
    yield from bps.mv(detector.acquire, 1)
    yield from bps.wait_for([_acquire(slot, detector, run_timeout)])
    # Succeeds as a no-op when the workflow ended acquisition first.
    yield from bps.mv(slot.command, HandshakeCommand.ACQ_DONE)
    final = yield from wait_for_state(slot, FINAL_STATES, run_timeout)
    yield from bps.create(name="primary")
    for signal in (
        slot.state,
        slot.frames_expected,
        slot.frames_received,
        slot.frames_missed,
        slot.job_id,
        slot.job_status,
        slot.message,
    ):
        yield from bps.read(signal)
    yield from bps.save()
    message = yield from bps.rd(slot.message)
    yield from bps.close_run(
        exit_status="success" if final == HandshakeState.DONE else "fail",
        reason=message,
    )
    return final
