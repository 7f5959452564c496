"""Monitor one PV with p4p and print one JSON line per event, flushed, until a value reaches
STOP_AT or SECONDS pass: {"value": n} for updates, {"event": "disconnected"} when the server
goes away, {"event": "connected"} when it comes back, {"event": "finished"} when the server ends
the subscription (after which nothing comes).

Usage: p4p_monitor_stream.py PV STOP_AT SECONDS
"""
import json
import sys
import threading

from p4p.client.thread import Context, Disconnected, Finished


def main(pv, stop_at, seconds):
    ctx = Context("pva", nt=False)
    done = threading.Event()
    out_lock = threading.Lock()

    def emit(obj):
        with out_lock:
            print(json.dumps(obj), flush=True)

    def cb(v):
        if isinstance(v, Finished):
            emit({"event": "finished"})
        elif isinstance(v, Disconnected):
            emit({"event": "disconnected"})
        elif isinstance(v, Exception):
            emit({"event": "error", "text": str(v)})
        else:
            n = int(v["value"])
            emit({"value": n})
            if n >= stop_at:
                done.set()

    sub = ctx.monitor(pv, cb, request="record[queueSize=1000]", notify_disconnect=True)
    # p4p 4.3's thread Context drops a wake-up that comes before monitor() returns, and pvxs
    # wakes only when its queue turns non-empty: look at the queue once more.
    sub._event()
    done.wait(seconds)
    sub.close()
    ctx.close()
    return 0 if done.is_set() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
