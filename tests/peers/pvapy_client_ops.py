"""Drive a PVA server with the pvapy client (pvAccessCPP) and print one JSON object per op.

Usage: pvapy_client_ops.py OP PV [ARG]... [-- OP PV [ARG]...]...
  get PV               -> {"op":"get","pv":PV,"value":{...}}
  put PV VALUE         -> puts VALUE (JSON) into .value, then {"op":"put","value": read back}
  monitor PV N         -> collects N updates of .value: {"op":"monitor","values":[...]}
  info PV              -> {"op":"info","type": introspection dict}
Every wait is bounded; errors print {"error": "..."} and exit 1.
"""
import json
import sys
import threading

import pvaccess as pva


def plain(v):
    if isinstance(v, pva.ScalarType):
        return str(v).rsplit(".", 1)[-1]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, pva.PvObject):
        return plain(v.toDict())
    return v


def fix_bytes(d, t):
    """pvapy hands out BYTE fields as one-character strings; turn them back into numbers."""
    if isinstance(d, dict) and isinstance(t, dict):
        return {k: fix_bytes(v, t.get(k)) for k, v in d.items()}
    if t == pva.ScalarType.BYTE and isinstance(d, str) and len(d) == 1:
        n = ord(d)
        return n - 256 if n > 127 else n
    return d


def main(argv):
    ops, cur = [], []
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
            ch = pva.Channel(pv)
            ch.setTimeout(5.0)
            if kind == "get":
                v = ch.get("field()")
                value = fix_bytes(v.toDict(), v.getIntrospectionDict())
                print(json.dumps({"op": "get", "pv": pv, "value": plain(value)}))
            elif kind == "put":
                new = json.loads(args[0])
                if isinstance(new, dict):
                    cur = ch.get("field()")
                    cur.set({"value": new})
                    ch.put(cur)
                elif isinstance(new, bool):
                    # pvapy parses booleans from the lowercase words only.
                    ch.put("true" if new else "false")
                else:
                    ch.put(new)
                v = ch.get("field()")
                value = fix_bytes(v.toDict(), v.getIntrospectionDict())
                print(json.dumps({"op": "put", "pv": pv, "value": plain(value["value"])}))
            elif kind == "monitor":
                want = int(args[0])
                seen = []
                done = threading.Event()

                def cb(v):
                    seen.append(plain(v.toDict()["value"]))
                    if len(seen) >= want:
                        done.set()

                ch.subscribe("s", cb)
                ch.startMonitor("field()")
                ok = done.wait(20.0)
                ch.stopMonitor()
                ch.unsubscribe("s")
                print(json.dumps({"op": "monitor", "pv": pv, "complete": ok, "values": seen}))
            elif kind == "info":
                t = ch.getIntrospectionDict()
                print(json.dumps({"op": "info", "pv": pv, "type": plain(t)}))
            else:
                raise ValueError("unknown op " + kind)
            sys.stdout.flush()
    except Exception as e:  # report, never hang
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
