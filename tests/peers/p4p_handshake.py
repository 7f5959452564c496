"""Play the Bluesky side of a pvabridge run with the p4p client (pvxs), the way ophyd-async does:
read the PVI structure, put {"value": ...} to Request and to Command (choices by name), follow State until a final
state, then try a command that the bridge must refuse. Prints one JSON object.

Usage: p4p_handshake.py PREFIX REQUEST_JSON (as p4p_slot.play says).
"""
import json

from p4p.client.thread import RemoteError

from p4p_slot import FINAL, play


def main(ctx, slot, request):
    pv = slot.pv
    seen = slot.seen

    def wait_for(wanted):
        return slot.wait_until(lambda name: name in wanted, wanted)

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
    play(main)
