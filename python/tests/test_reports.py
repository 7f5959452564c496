"""The reports of a run followed in the background, on a slot device in ophyd-async's mock mode
(the Stages table is the handshake engineer's PV; here its values are set by hand)."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.run_engine import call_in_bluesky_event_loop
from ophyd_async.core import Table, init_devices, set_mock_value

from pvabridge_bluesky import HandshakeState, StreamingWorkflow


@pytest.fixture(scope="module")
def slot():
    RunEngine({})
    with init_devices(mock=True):
        wf = StreamingWorkflow("mock:wf:")
    set_mock_value(wf.state, HandshakeState.PROCESSING)
    set_mock_value(wf.frames_expected, 20)
    set_mock_value(wf.frames_received, 20)
    set_mock_value(wf.job_status, "running")
    set_mock_value(
        wf.stages,
        Table(name=np.array(["01-CONSUME", "02-REDUCE"]), status=np.array(["done", "running"])),
    )
    return wf


def test_a_concise_report_is_one_line_and_a_full_one_has_the_stages(slot):
    concise = call_in_bluesky_event_loop(slot.report(concise=True))
    assert concise.startswith("mock:wf:: PROCESSING, frames 20/20 received, 0 missed")
    assert "\n" not in concise and "02-REDUCE" not in concise
    full = call_in_bluesky_event_loop(slot.report(concise=False)).splitlines()
    assert full[0] == concise
    assert full[1:] == ["  name=01-CONSUME, status=done", "  name=02-REDUCE, status=running"]


def test_following_reports_each_period_until_a_final_state(slot, caplog):
    caplog.set_level(logging.INFO, logger="pvabridge_bluesky")

    async def follow_then_finish():
        follower = asyncio.ensure_future(slot.follow(reporting_period=0.05, concise=False))
        await asyncio.sleep(0.3)
        assert not follower.done()
        set_mock_value(slot.state, HandshakeState.FAILED)
        return await asyncio.wait_for(follower, timeout=5)

    assert call_in_bluesky_event_loop(follow_then_finish()) is HandshakeState.FAILED
    reports = [r for r in caplog.records if r.name == "pvabridge_bluesky"]
    assert sum("PROCESSING" in r.getMessage() for r in reports) >= 3
    assert all("02-REDUCE" in r.getMessage() for r in reports)
    assert reports[-1].levelno == logging.ERROR and "FAILED" in reports[-1].getMessage()
