"""Streaming runs through pvabridge under a Bluesky RunEngine, with the pvabridge-bluesky package.

    python run_stream.py --prefix bl:wf1: --detector bl:det: --workflow stream-stats --frames 100

needs a bridge serving the slot (`pvabridge serve --prefix bl:wf1: ...`), the workflow in DM
(`pvabridge dm add-workflow stream-stats.workflow.json`) and an ADSimDetector with a PVA plugin
(`pvabridge simdet --ad-prefix bl:det:`, or a real one served over PVA). PVs are found through the
EPICS_PVA_* environment. Prints one JSON object; exits non-zero unless every run ended DONE.
"""

import argparse
import json
import logging
import sys

from bluesky import RunEngine
from ophyd_async.core import init_devices
from pvabridge_bluesky import SimDetector, StreamingWorkflow, WorkflowError
from pvabridge_bluesky.plans import streaming_run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--prefix", required=True, help="the bridge's run slot, e.g. bl:wf1:"
    )
    parser.add_argument(
        "--detector", required=True, help="the detector's prefix, e.g. bl:det:"
    )
    parser.add_argument("--workflow", default="stream-stats", help="the DM workflow")
    parser.add_argument("--frames", type=int, default=100, help="frames per run")
    parser.add_argument("--runs", type=int, default=1, help="runs, one after the other")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    RE = RunEngine({})
    documents = []
    RE.subscribe(lambda name, doc: documents.append((name, doc)))
    with init_devices():
        wf = StreamingWorkflow(args.prefix)
        det = SimDetector(args.detector)

    runs = []
    for _ in range(args.runs):
        documents.clear()
        try:
            RE(
                streaming_run(
                    wf,
                    [det],
                    workflow=args.workflow,
                    num_frames=args.frames,
                    args={"sample": "simulated spots"},
                    md={"sample": "simulated spots"},
                )
            )
        except WorkflowError as err:
            print(err, file=sys.stderr)
        start = next(doc for name, doc in documents if name == "start")
        stop = next(doc for name, doc in documents if name == "stop")
        streams = {
            doc["uid"]: doc["name"] for name, doc in documents if name == "descriptor"
        }
        final = [
            doc["data"]
            for name, doc in documents
            if name == "event" and streams[doc["descriptor"]] == "workflow"
        ]
        runs.append(
            {
                "uid": start["uid"],
                "exitStatus": stop["exit_status"],
                "reason": stop.get("reason", ""),
                "seconds": round(stop["time"] - start["time"], 3),
                "data": {
                    key.split("-", 1)[-1]: value
                    for key, value in (final or [{}])[-1].items()
                },
            }
        )
    print(json.dumps({"runs": runs}, default=str))
    sys.exit(0 if all(run["exitStatus"] == "success" for run in runs) else 1)


if __name__ == "__main__":
    main()
