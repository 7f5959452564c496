"""Read a run's workflow PVs with p4p as a Bluesky plan would: the names in PREFIX WorkflowPVs, then
each of them, waiting until the Stats PV shows RECEIVED frames received; also PREFIX Members and
FramesReceived. Prints one JSON object.

Usage: p4p_workflow_pvs.py PREFIX RECEIVED
Every wait is bounded; an error prints {"error": "..."} and exits 1.
"""
import json
import sys
import time

from p4p.client.thread import Context


def main(prefix, received):
    ctx = Context("pva", nt=False)
    deadline = time.monotonic() + 30.0
    names = []
    while not names:
        names = list(ctx.get(prefix + "WorkflowPVs", timeout=5.0).value)
        if time.monotonic() > deadline:
            raise RuntimeError("WorkflowPVs stayed empty")
        time.sleep(0.05)
    stats_name = [n for n in names if n.endswith("Stats")][0]
    while True:
        stats = ctx.get(stats_name, timeout=5.0)
        if stats["received"] >= received or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    members = ctx.get(prefix + "Members", timeout=5.0)
    columns = members.value.todict()
    print(json.dumps({
        "workflowPVs": names,
        "statsId": stats.getID(),
        "stats": {k: stats[k] for k in ("received", "missed", "processed", "fps", "uniqueId", "min", "max", "mean", "sum")},
        "members": {k: (v.tolist() if hasattr(v, "tolist") else list(v)) for k, v in columns.items()},
        "membersId": members.getID(),
        "framesReceived": ctx.get(prefix + "FramesReceived", timeout=5.0).value,
    }))


if __name__ == "__main__":
    try:
        main(sys.argv[1], int(sys.argv[2]))
    except Exception as err:  # one line for the test's assertion message
        print(json.dumps({"error": "%s: %s" % (type(err).__name__, err)}))
        sys.exit(1)
