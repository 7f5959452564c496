"""Play the Bluesky side with p4p while the workflow ends acquisition itself: START, wait for READY,
ACQ_STARTED, then follow State (without putting ACQ_DONE) until it leaves ACQUIRING, note Message,
put the late ACQ_DONE (which must succeed) and wait for a final state. Prints one JSON object.

Usage: p4p_workflow_ends.py PREFIX REQUEST_JSON
Every wait is bounded; an error prints {"error": "..."} and exits 1.
"""
import json
import sys
import time

from p4p.client.thread import Context

FINAL = {"DONE", "FAILED", "ABORTED", "TIMEOUT"}


def main(prefix, request):
    ctx = Context("pva")
    pv = lambda suffix: prefix + suffix
    seen = []

    def state():
        value = ctx.get(pv("State"), timeout=5.0)
        name = value.raw.value.choices[value.raw.value.index]
        if not seen or seen[-1] != name:
            seen.append(name)
        return name

    def wait_until(done, what, limit=30.0):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            name = state()
            if done(name):
                return name
            time.sleep(0.02)
        raise RuntimeError("timed out waiting for %s (last %s)" % (what, seen[-1:]))

    ctx.put(pv("Request"), {"value": request}, timeout=5.0)
    ctx.put(pv("Command"), {"value": "START"}, timeout=5.0)
    wait_until(lambda s: s == "READY", "READY")
    ctx.put(pv("Command"), {"value": "ACQ_STARTED"}, timeout=5.0)
    left = wait_until(lambda s: s != "ACQUIRING" and s != "READY", "State to leave ACQUIRING")
    message_on_leaving = str(ctx.get(pv("Message"), timeout=5.0))
    ctx.put(pv("Command"), {"value": "ACQ_DONE"}, timeout=5.0)
    final = wait_until(lambda s: s in FINAL, "a final state")
    print(json.dumps({
        "left": left,
        "messageOnLeaving": message_on_leaving,
        "lateAcqDone": "accepted",
        "states": seen,
        "final": final,
        "message": str(ctx.get(pv("Message"), timeout=5.0)),
    }))


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except Exception as err:  # one line for the test's assertion message
        print(json.dumps({"error": "%s: %s" % (type(err).__name__, err)}))
        sys.exit(1)
