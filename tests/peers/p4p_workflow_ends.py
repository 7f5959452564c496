"""Play the Bluesky side with p4p while the workflow ends acquisition itself: START, wait for READY,
ACQ_STARTED, then follow State (without putting ACQ_DONE) until it leaves ACQUIRING, note Message,
put the late ACQ_DONE (which must succeed) and wait for a final state. Prints one JSON object.

Usage: p4p_workflow_ends.py PREFIX REQUEST_JSON (as p4p_slot.play says).
"""
import json

from p4p_slot import FINAL, play


def main(ctx, slot, request):
    pv = slot.pv
    wait_until = slot.wait_until
    seen = slot.seen

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
    play(main)
