"""Bluesky plans for streaming runs through a pvabridge run slot.

``streaming_run`` is one Bluesky run of a DM workflow that receives the detector's frames while
they are taken; ``wait_for_workflow`` waits for a run handed over with ``wait=False``::

    RE(streaming_run(wf, [det], workflow="stream-stats", num_frames=100, md={"sample": "Si"}))
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Preparable
from bluesky.utils import FailedStatus

from ._workflow import (
    FINAL_STATES,
    HandshakeState,
    SlotBusy,
    StreamingRequest,
    StreamingWorkflow,
    WorkflowError,
)

logger = logging.getLogger("pvabridge_bluesky")

# The most a detector counter (areaDetector's ArrayCounter, uniqueId) holds before it wraps.
_COUNTER_MAX = 2**31 - 1


def _next_frame_id(detectors: list[Any], data_channel: str | None):
    """Plan: the uniqueId the detector that streams on ``data_channel`` gives its next frame
    (its frame counter + 1), or None when no detector says."""
    for det in detectors:
        if getattr(det, "data_channel", None) == data_channel and hasattr(det, "array_counter"):
            counter = yield from bps.rd(det.array_counter)
            return 1 if counter >= _COUNTER_MAX else int(counter) + 1
    return None


def _raising_workflow_errors(plan):
    """Run ``plan``, raising a status's :class:`WorkflowError` or :class:`SlotBusy` itself rather
    than the ``FailedStatus`` around it, so that the error a user sees is the bridge's Message."""
    try:
        return (yield from plan)
    except FailedStatus as err:
        if isinstance(err.__cause__, (WorkflowError, SlotBusy)):
            raise err.__cause__ from None
        raise


def _abort_unless_final(workflow_device: StreamingWorkflow):
    """Plan: put ABORT if the run has not reached a final state (and was not handed over to be
    followed in the background)."""
    yield from bps.wait_for([workflow_device.abort_unless_final])


def streaming_run(
    workflow_device: StreamingWorkflow,
    detectors: Iterable[Any],
    *,
    workflow: str,
    num_frames: int,
    args: Mapping[str, Any] | None = None,
    md: Mapping[str, Any] | None = None,
    wait: bool = True,
    reporting_period: float = 10.0,
    concise: bool = True,
    data_channel: str | None = None,
    experiment_name: str | None = None,
    ready_timeout: float | None = None,
):
    """One Bluesky run of the DM workflow ``workflow`` through the slot ``workflow_device``.

    The run's start document goes to the bridge as the Request's ``metadata`` (and so to the
    DM run catalog); ``args`` become the DM job's argsDict entries. The plan stages the slot,
    prepares each Preparable detector for ``num_frames`` frames, starts the workflow and waits
    until it is ready, triggers and reads the detectors (the primary stream), and then:

    * ``wait=True``: waits until the workflow ended, records the slot's final reading in the
      ``workflow`` stream and returns the final state (DONE); it raises
      :class:`~pvabridge_bluesky.WorkflowError` with the bridge's Message unless the run ends DONE
      (and :class:`~pvabridge_bluesky.SlotBusy` when the slot is busy with another run).
    * ``wait=False``: ends acquisition and returns; the run is followed in the background and
      reported through logging every ``reporting_period`` seconds (``concise``: state and frames;
      otherwise the Stages table too). It returns the state at hand-over (DRAINING or
      PROCESSING); wait for the end with :func:`wait_for_workflow`.

    Whenever the plan ends before the run reached a final state (an exception, a RunEngine abort
    or stop, Ctrl-C), it puts ABORT: the bridge stops the DM job and the slot ends ABORTED.

    ``data_channel`` defaults to the first detector's ``data_channel``.
    """
    detectors = list(detectors)
    if data_channel is None:
        data_channel = next(
            (d.data_channel for d in detectors if getattr(d, "data_channel", None)), None
        )
    _md = {
        "plan_name": "streaming_run",
        "detectors": [d.name for d in detectors],
        "workflow": workflow,
        "num_frames": num_frames,
        "handshake_prefix": workflow_device.prefix,
        "data_channel": data_channel,
        "plan_args": {"workflow": workflow, "num_frames": num_frames, "wait": wait},
    }
    _md.update(md or {})
    start: dict[str, Any] = {}
    # What the run ended in (run_decorator returns the run's uid, not the inner plan's result).
    outcome: dict[str, HandshakeState] = {}

    def keep_start(name: str, doc: dict[str, Any]) -> None:
        start.clear()
        start.update(doc)

    @bpp.run_decorator(md=_md)
    def run():
        first_frame_id = yield from _next_frame_id(detectors, data_channel)
        request = StreamingRequest(
            workflow=workflow,
            args_dict=dict(args or {}),
            run_uid=start["uid"],
            expected_frames=num_frames,
            data_channel=data_channel,
            ready_timeout=ready_timeout,
            experiment_name=experiment_name,
            metadata=dict(start),
            first_frame_id=first_frame_id,
        )
        for det in detectors:
            if isinstance(det, Preparable):
                yield from bps.prepare(det, num_frames, group="detectors")
        yield from bps.wait(group="detectors")
        yield from bps.prepare(workflow_device, request, wait=True)
        yield from bps.kickoff(workflow_device, wait=True)
        yield from bps.trigger_and_read(detectors)
        if wait:
            yield from bps.complete(workflow_device, wait=True)
            yield from bps.trigger_and_read([workflow_device], name="workflow")
            outcome["state"] = HandshakeState.DONE
            return
        yield from bps.wait_for([workflow_device.end_acquisition])
        yield from bps.wait_for([lambda: _follow(workflow_device, reporting_period, concise)])
        outcome["state"] = yield from bps.rd(workflow_device.state)

    plan = bpp.finalize_wrapper(run(), _abort_unless_final(workflow_device))
    plan = bpp.stage_wrapper(plan, [workflow_device, *detectors])
    yield from _raising_workflow_errors(bpp.subs_wrapper(plan, {"start": [keep_start]}))
    return outcome["state"]


async def _follow(workflow_device: StreamingWorkflow, reporting_period: float, concise: bool):
    """Hand the run over to a task on the RunEngine's event loop that reports it until it ends.
    The task is kept as ``workflow_device.follower``."""
    workflow_device.detached = True
    workflow_device.follower = asyncio.ensure_future(
        workflow_device.follow(reporting_period, concise)
    )


def wait_for_workflow(workflow_device: StreamingWorkflow, timeout: float | None = None):
    """Plan stub: wait until the slot's run is in a final state and return that state.

    ``timeout`` (seconds) stops the waiting, not the workflow: on timeout a warning is logged
    and the current (active) state is returned. The run itself goes on.
    """
    reached: dict[str, HandshakeState] = {}

    async def wait() -> None:
        try:
            reached["state"] = await workflow_device.wait_for_state(FINAL_STATES, timeout)
        except asyncio.TimeoutError:
            logger.warning(
                "%s: still running after %s s; stopped waiting (the workflow goes on)",
                workflow_device.prefix,
                timeout,
            )

    yield from bps.wait_for([wait])
    if "state" in reached:
        return reached["state"]
    return (yield from bps.rd(workflow_device.state))
