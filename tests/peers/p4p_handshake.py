"""Play the Bluesky side of a pvabridge run with the p4p client (pvxs), the way ophyd-async does:
read the PVI structure, put {"value": ...} to Request and to Command (choices by name), follow State until a final
state, then try a command that the bridge must refuse. Prints one JSON object.

Usage: p4p_handshake.py PREFIX REQUEST_JSON
Every wait is bounded; an error prints {"error": "..."} and exits 1.
"""
import json
import sys
import time

from p4p.client.thread import Context, RemoteError

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

    def wait_for(wanted, limit=30.0):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            name = state()
            if name in wanted:
                return name
            if name in FINAL:
                raise RuntimeError("run ended in %s waiting for %s" % (name, wanted))
            time.sleep(0.05)
        raise RuntimeError("timed out waiting for %s (last %s)" % (wanted, seen[-1:]))

    pvi = ctx.get(pv("PVI"), timeout=5.0)
    entries = pvi.value.todict()
    ctx.put(pv("Request"), {"value": request}, timeout=5.0)
    ctx.put(pv("Command"), {"value": "START"}, timeout=5.0)
    command_after_start = ctx.get(pv("Command"), timeout=5.0).raw.value.index
    wait_for({"READY"})
    ctx.put(pv("Command"), {"value": "ACQ_STARTED"}, timeout=5.0)
    ctx.put(pv("Command"), {"value": "ACQ_DONE"}, timeout=5.0)
    final = wait_for(FINAL)
    try:
        ctx.put(pv("Command"), {"value": "ACQ_STARTED"}, timeout=5.0)
        refusal = None
    except RemoteError as err:
        refusal = str(err)
    status = ctx.get(pv("Status"), timeout=5.0)
    message = ctx.get(pv("Message"), timeout=5.0)
    print(json.dumps({
        "pviId": pvi.getID(),
        "pvi": entries,
        "commandAfterStart": command_after_start,
        "states": seen,
        "final": final,
        "refusal": refusal,
        "message": str(message),
        "messageId": message.raw.getID(),
        "status": {k: status[k] for k in ("state", "jobStatus", "framesExpected", "framesReceived", "framesMissed")},
    }))


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except Exception as err:  # one line for the test's assertion message
        print(json.dumps({"error": "%s: %s" % (type(err).__name__, err)}))
        sys.exit(1)
