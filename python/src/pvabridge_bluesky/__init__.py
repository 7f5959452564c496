"""Run streaming DM workflows through the pvabridge handshake from Bluesky.

* :class:`StreamingWorkflow`: an ophyd-async device for one run slot of ``pvabridge serve``;
* :class:`StreamingRequest`: what a run asks of the workflow (the slot's ``Request``);
* :class:`SimDetector`: an ADSimDetector with a PVA plugin (``pvabridge simdet --ad-prefix`` or
  a real IOC through QSRV);
* :mod:`pvabridge_bluesky.plans`: ``streaming_run`` and ``wait_for_workflow``;
* :func:`screen_path`: the Phoebus display of a slot.
"""

from importlib.resources import files
from pathlib import Path

from ._detector import AcquireState, SimDetector
from ._workflow import (
    FINAL_STATES,
    HandshakeCommand,
    HandshakeState,
    SlotBusy,
    StreamingRequest,
    StreamingWorkflow,
    WorkflowCommand,
    WorkflowError,
    is_active,
)


def screen_path() -> Path:
    """The Phoebus display of a run slot (open it with the macro ``P`` set to the prefix)."""
    return Path(str(files(__name__) / "screens" / "streaming_workflow.bob"))


__all__ = [
    "FINAL_STATES",
    "AcquireState",
    "HandshakeCommand",
    "HandshakeState",
    "SimDetector",
    "SlotBusy",
    "StreamingRequest",
    "StreamingWorkflow",
    "WorkflowCommand",
    "WorkflowError",
    "is_active",
    "screen_path",
]
