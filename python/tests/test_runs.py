"""Streaming runs under a real RunEngine against real `pvabridge serve` and `pvabridge simdet`."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from bluesky.utils import RunEngineInterrupted
from conftest import DETECTOR, SLOT
from ophyd_async.core import AsyncStatus, init_devices
from p4p.client.thread import Context

from pvabridge_bluesky import (
    FINAL_STATES,
    HandshakeState,
    SimDetector,
    SlotBusy,
    StreamingWorkflow,
    WorkflowError,
)
from pvabridge_bluesky.plans import streaming_run, wait_for_workflow

FRAMES = 20
# Seconds the bridge waits for the workflow to be ready (its default is a minute).
READY_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def pva():
    """A p4p client of our own, to watch the slot from outside the RunEngine."""
    with Context("pva") as ctx:
        yield ctx


def slot_state(pva) -> HandshakeState:
    value = pva.get(SLOT + "State", timeout=10)
    return HandshakeState(value.raw.value.choices[value.raw.value.index])


def slot_value(pva, suffix: str):
    return pva.get(SLOT + suffix, timeout=10).raw.value


def docs(documents, name: str) -> list[dict]:
    return [doc for n, doc in documents if n == name]


def until(what, check, timeout: float = 20.0):
    """Wait until `check()` is truthy and return it; fail saying `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout} s for {what}; last: {result!r}")
        time.sleep(0.1)


def assert_clean_run(services, pva, documents, uid: str) -> None:
    """One run of FRAMES frames ended DONE with every frame accounted for."""
    assert slot_state(pva) is HandshakeState.DONE, slot_value(pva, "Message")
    (stop,) = [d for d in docs(documents, "stop") if d["run_start"] == uid]
    assert stop["exit_status"] == "success", stop
    streams = {d["uid"]: d["name"] for d in docs(documents, "descriptor") if d["run_start"] == uid}
    (final,) = [
        e["data"] for e in docs(documents, "event") if streams.get(e["descriptor"]) == "workflow"
    ]
    assert final["wf-state"] == "DONE"
    assert final["wf-frames_expected"] == FRAMES
    assert final["wf-frames_received"] == FRAMES, final
    assert final["wf-frames_missed"] == 0, final
    assert final["wf-job_status"] == "done"
    assert services.job(final["wf-job_id"])["status"] == "done"


def detector_done(pva) -> bool:
    return pva.get(DETECTOR + "cam1:Acquire_RBV", timeout=10).raw.value.index == 0


def job_of_run(services, pva) -> dict:
    return services.job(slot_value(pva, "JobId"))


def assert_aborted(services, pva, RE) -> None:
    """The slot went to ABORTED, its DM job was stopped and the RunEngine is idle."""
    until("the slot to be ABORTED", lambda: slot_state(pva) is HandshakeState.ABORTED)
    until("the DM job to be stopped", lambda: job_of_run(services, pva)["status"] == "aborted")
    assert RE.state == "idle"


def test_the_slot_device_is_built_from_the_slots_pvi(wf):
    tree = wf._connector.pvi_tree
    assert tree is not None, "the slot was connected by name, not through its PVI"
    assert {"state", "command", "request", "message", "job_id"} <= set(tree.signals)
    assert tree.signals["command"].write_pv == SLOT + "Command"


def test_a_clean_run_ends_done_with_the_start_document_in_the_dm_catalog(
    services, RE, wf, det, documents, pva
):
    md = {"sample": "Si(111)", "proposal": 4242}
    RE(plan(wf, [det], md=md))
    (start,) = docs(documents, "start")
    uid = start["uid"]
    assert_clean_run(services, pva, documents, uid)
    assert start["sample"] == "Si(111)" and start["plan_name"] == "streaming_run"
    # The detector was read once its acquisition was over: every frame counted.
    (primary,) = [e["data"] for e in docs(documents, "event") if "det-array_counter" in e["data"]]
    assert primary["det-array_counter"] == FRAMES

    # The run in the DM catalog, in DM's shape (DESIGN.md): runId "uid_" + uid[:8], and the
    # start document (with the plan's md) under metadata.
    def entry():
        return next(
            (e for e in services.catalog() if e.get("runId") == f"uid_{uid[:8]}"),
            None,
        )

    found = until(f"run uid_{uid[:8]} in the DM catalog", entry, timeout=10)
    assert found["experimentName"] == "pvabridge"
    assert found["metadata"]["uid"] == uid
    assert found["metadata"]["sample"] == "Si(111)"
    assert found["metadata"]["proposal"] == 4242
    assert found["metadata"]["plan_name"] == "streaming_run"


def test_a_runengine_abort_from_another_thread_aborts_the_run(
    services, RE, wf, det, documents, pva
):
    aborted = threading.Event()

    def abort_while_acquiring():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if slot_state(pva) is HandshakeState.ACQUIRING:
                RE.abort("operator abort")
                aborted.set()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=abort_while_acquiring, daemon=True)
    watcher.start()
    # 400 frames at 200 frames/s: two seconds of acquisition to abort in.
    with pytest.raises(RunEngineInterrupted):
        RE(plan(wf, [det], num_frames=400))
    watcher.join(timeout=10)
    assert aborted.is_set(), "the watcher never saw ACQUIRING"
    (stop,) = docs(documents, "stop")
    assert stop["exit_status"] == "abort"
    assert_aborted(services, pva, RE)

    assert_next_run_clean(services, RE, wf, det, documents, pva)


def plan(slot, detectors, workflow="stream-stats", **options):
    """streaming_run of `workflow` with the tests' defaults: FRAMES frames, READY_TIMEOUT."""
    options = {"num_frames": FRAMES, "ready_timeout": READY_TIMEOUT, **options}
    return streaming_run(slot, detectors, workflow=workflow, **options)


def assert_next_run_clean(services, RE, wf, det, documents, pva):
    """The RunEngine and the slot take the next run: once the detector has finished, a run of
    FRAMES frames ends clean."""
    until("the detector to finish", lambda: detector_done(pva))
    documents.clear()
    RE(plan(wf, [det]))
    (start,) = docs(documents, "start")
    assert_clean_run(services, pva, documents, start["uid"])


class ShutterFault(SimDetector):
    """A detector whose trigger fails once acquisition is under way."""

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        await self.acquire.set(True)
        raise RuntimeError("shutter closed during acquisition")


def test_a_plan_that_raises_during_acquisition_aborts_the_run(
    services, RE, wf, det, documents, pva
):
    with init_devices():
        faulty = ShutterFault(DETECTOR)
    with pytest.raises(Exception, match="shutter closed"):
        RE(plan(wf, [faulty]))
    (stop,) = docs(documents, "stop")
    assert stop["exit_status"] == "fail"
    assert_aborted(services, pva, RE)

    assert_next_run_clean(services, RE, wf, det, documents, pva)


def test_a_failing_workflow_makes_the_plan_raise_with_the_bridge_message(
    services, RE, wf, det, documents, pva
):
    with pytest.raises(WorkflowError) as raised:
        RE(plan(wf, [det], workflow="stream-then-fail"))
    message = slot_value(pva, "Message")
    assert slot_state(pva) is HandshakeState.FAILED
    assert raised.value.state is HandshakeState.FAILED
    # The Message when the run failed; the bridge adds what became of the catalog entry later.
    assert message.startswith(raised.value.message), (message, raised.value.message)
    assert raised.value.message in str(raised.value)
    assert "calibration file missing" in raised.value.message, message
    (stop,) = docs(documents, "stop")
    assert stop["exit_status"] == "fail"
    assert "calibration file missing" in stop["reason"]
    assert RE.state == "idle"


def test_wait_false_returns_during_processing_and_reports_in_the_log(
    services, RE, wf, det, documents, pva, caplog
):
    caplog.set_level(logging.INFO, logger="pvabridge_bluesky")
    returned = RE(
        plan(
            wf,
            [det],
            workflow="stream-then-reduce",
            args={"reduceSeconds": 3},
            wait=False,
            reporting_period=0.5,
            concise=False,
        )
    )
    assert RE.state == "idle"
    assert returned.plan_result in (HandshakeState.DRAINING, HandshakeState.PROCESSING)
    assert slot_state(pva) not in FINAL_STATES, "the plan returned after the run ended"
    (stop,) = docs(documents, "stop")
    assert stop["exit_status"] == "success"
    until("PROCESSING", lambda: slot_state(pva) is HandshakeState.PROCESSING, timeout=10)

    # The slot is busy: another run is refused, and the one under way goes on.
    with pytest.raises(SlotBusy, match="busy"):
        RE(plan(wf, [det]))
    assert RE.state == "idle"
    assert slot_state(pva) is HandshakeState.PROCESSING

    # A short wait stops the waiting, not the workflow.
    assert RE(wait_for_workflow(wf, timeout=0.3)).plan_result is HandshakeState.PROCESSING
    assert slot_state(pva) is HandshakeState.PROCESSING
    assert RE(wait_for_workflow(wf, timeout=30)).plan_result is HandshakeState.DONE
    assert wf.follower is not None

    def reports(needle: str) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "pvabridge_bluesky" and needle in r.getMessage()
        ]

    until("the final report", lambda: reports("DONE"), timeout=5)
    assert len(reports(": PROCESSING,")) >= 2, caplog.text


def test_consecutive_runs_in_one_runengine_session(services, RE, wf, det, documents, pva):
    """Three runs on one detector whose counter goes on (20, 40, 60), the middle one through a
    device that goes by the documented PV names instead of PVI."""
    with init_devices():
        by_name = StreamingWorkflow(SLOT, name="wf", use_pvi=False)
    for n, slot in enumerate((wf, by_name, wf), start=1):
        documents.clear()
        RE(plan(slot, [det]))
        (start,) = docs(documents, "start")
        assert_clean_run(services, pva, documents, start["uid"])
        (primary,) = [
            e["data"] for e in docs(documents, "event") if "det-array_counter" in e["data"]
        ]
        assert primary["det-array_counter"] == n * FRAMES
