"""Run streaming runs through pvabridge under a Bluesky RunEngine and print what they recorded.

    python run_stream.py --prefix bl:wf1: --detector bl:det: --workflow stream-stats --frames 100

needs a bridge serving the slot (`pvabridge serve --prefix bl:wf1: ...`), the workflow in DM
(`pvabridge dm add-workflow stream-stats.workflow.json`) and the detector
(`pvabridge simdet --pv bl:det:Image --trigger bl:det:Acquire --frames 100`). PVs are found through
the EPICS_PVA_* environment. Prints one JSON object; exits non-zero unless every run ended DONE.
"""

import argparse
import json
import sys

from bluesky import RunEngine
from ophyd_async.core import init_devices

from pvabridge_plan import (
    BridgeSlot,
    BridgeSlotPvi,
    HandshakeState,
    SimDetector,
    streaming_run,
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", required=True, help="the bridge's run slot, e.g. bl:wf1:")
    parser.add_argument("--detector", required=True, help="the detector's prefix, e.g. bl:det:")
    parser.add_argument("--workflow", default="stream-stats", help="the DM workflow")
    parser.add_argument("--frames", type=int, default=100, help="frames the detector takes")
    parser.add_argument("--runs", type=int, default=1, help="runs, one after the other")
    parser.add_argument(
        "--pvi",
        choices=["no", "yes", "alternate"],
        default="alternate",
        help="find the slot's signals through its PVI structure (alternate: odd runs by name, "
        "even runs through PVI)",
    )
    args = parser.parse_args()

    RE = RunEngine({})
    documents = []
    RE.subscribe(lambda name, doc: documents.append((name, doc)))
    with init_devices():
        slot = BridgeSlot(args.prefix)
        slot_pvi = BridgeSlotPvi(args.prefix)
        detector = SimDetector(args.detector)

    runs = []
    for i in range(args.runs):
        use_pvi = args.pvi == "yes" or (args.pvi == "alternate" and i % 2 == 1)
        documents.clear()
        RE(
            streaming_run(
                slot_pvi if use_pvi else slot,
                detector,
                workflow=args.workflow,
                frames=args.frames,
                data_channel=args.detector + "Image",
                args_dict={"sample": "simulated spots"},
            )
        )
        start = next(doc for name, doc in documents if name == "start")
        stop = next(doc for name, doc in documents if name == "stop")
        events = [doc for name, doc in documents if name == "event"]
        data = events[-1]["data"] if events else {}
        runs.append(
            {
                "uid": start["uid"],
                "pvi": use_pvi,
                "exitStatus": stop["exit_status"],
                "reason": stop.get("reason", ""),
                "events": len(events),
                "data": {key.split("-", 1)[-1]: value for key, value in data.items()},
            }
        )
    print(json.dumps({"runs": runs}))
    done = all(run["data"].get("state") == HandshakeState.DONE.value for run in runs)
    sys.exit(0 if done else 1)


if __name__ == "__main__":
    main()
