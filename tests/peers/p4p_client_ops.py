"""Drive a PVA server with the p4p client (pvxs) and print one JSON object per operation.

Usage: p4p_client_ops.py OP PV [ARG]...
  get PV               -> {"op":"get","pv":PV,"id":typeid,"value":...}
  put PV VALUE         -> puts VALUE into .value, then {"op":"put",...,"value": value read back}
  monitor PV N         -> collects N updates of .value: {"op":"monitor","values":[...]}
  info PV              -> {"op":"info","type":"<type text>"}
Ops may be chained with '--'. Every wait is bounded; errors print {"error": "..."} and exit 1.
"""
import json
import sys
import threading

import numpy as np
from p4p.client.thread import Context


def plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if hasattr(v, "todict"):
        return plain(v.todict())
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def main(argv):
    ctx = Context("pva", nt=False)
    ops = []
    cur = []
    for a in argv:
        if a == "--":
            ops.append(cur)
            cur = []
        else:
            cur.append(a)
    if cur:
        ops.append(cur)
    try:
        for op in ops:
            kind, pv, args = op[0], op[1], op[2:]
            if kind == "get":
                v = ctx.get(pv, timeout=5.0)
                print(json.dumps({"op": "get", "pv": pv, "id": v.getID(), "value": plain(v.todict())}))
            elif kind == "put":
                ctx.put(pv, {"value": json.loads(args[0])}, timeout=5.0)
                v = ctx.get(pv, timeout=5.0)
                print(json.dumps({"op": "put", "pv": pv, "value": plain(v["value"])}))
            elif kind == "monitor":
                want = int(args[0])
                seen = []
                done = threading.Event()

                def cb(v):
                    if isinstance(v, Exception):
                        return
                    seen.append(plain(v["value"]))
                    if len(seen) >= want:
                        done.set()

                sub = ctx.monitor(pv, cb, request="record[queueSize=100000]", notify_disconnect=True)
                print(json.dumps({"op": "monitor-started", "pv": pv}), flush=True)
                ok = done.wait(20.0)
                sub.close()
                print(json.dumps({"op": "monitor", "pv": pv, "complete": ok, "values": seen}))
            elif kind == "info":
                t = ctx.get(pv, timeout=5.0).type()
                print(json.dumps({"op": "info", "pv": pv, "type": str(t)}))
            else:
                raise ValueError("unknown op " + kind)
            sys.stdout.flush()
    except Exception as e:  # report, never hang
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
        return 1
    finally:
        ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
