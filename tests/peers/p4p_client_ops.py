"""Drive a PVA server with the p4p client (pvxs) and print one JSON object per operation.

Usage: p4p_client_ops.py OP PV [ARG]... [-- OP PV [ARG]...]...
  get PV [REQUEST]     -> {"op":"get","pv":PV,"id":typeid,"value":...,"spec":<its type>}
  put PV VALUE         -> puts VALUE into .value, then {"op":"put",...,"value": value read back}
  tryput PV VALUE      -> like put, but a refused put is a result, not a failure:
                          {"op":"tryput","pv":PV,"ok":false,"error":"<the server's message>"}
                          or {"op":"tryput","pv":PV,"ok":true}; the next operation runs either way
  set PV FIELDS        -> puts FIELDS, a JSON object of dotted paths (see below), then
                          {"op":"set","pv":PV,"value": the whole structure read back}
  monitor PV N [REQUEST]
                       -> one {"op":"update","pv":PV,"n":i,"value":...,"changed":[...]} per
                          update as it arrives, then after N updates
                          {"op":"monitor","pv":PV,"complete":bool,"values":[.value of each],
                           "events":[the Disconnected or error events seen, as text]}
  info PV              -> {"op":"info","pv":PV,"id":typeid,"type":"<type text>",
                          "spec":<the type as nested lists, as Type.aspy() gives it>}
REQUEST is pvRequest text, e.g. 'field(value,alarm)'.
Values print as p4p's todict() gives them: a union or any as the value it holds (null when
empty), arrays as lists. In FIELDS, {"@type": T, "value": V} is V as type T (a scalar type name
as pvData spells it, or an array type "T[]"); with "@union": M added, it selects member M of a
union (omit "@union" for an any). p4p has no GET_FIELD (info) call: "info" reports the type the
server sent when the get was created.
Every wait is bounded; errors print {"error": "..."} and exit 1.
"""
import json
import sys
import threading

import numpy as np
from ops_args import run_ops
from p4p.client.thread import Context, RemoteError

# Seconds one get, put or connection may take. Generous, because a loaded 2-core machine can
# take seconds to connect a channel; a failure still ends well inside the test's own bound.
OP_TIMEOUT = 15.0


DTYPES = {
    "boolean": "?",
    "byte": "i1",
    "short": "i2",
    "int": "i4",
    "long": "i8",
    "ubyte": "u1",
    "ushort": "u2",
    "uint": "u4",
    "ulong": "u8",
    "float": "f4",
    "double": "f8",
}


def plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if hasattr(v, "todict"):
        return plain(v.todict())
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def typed(spec):
    """The Python value p4p assigns for a FIELDS entry."""
    if isinstance(spec, dict) and "@type" in spec:
        t, v = spec["@type"], spec["value"]
        if t.endswith("[]"):
            v = np.array(v, dtype=object if t == "string[]" else DTYPES[t[:-2]])
        if "@union" in spec:
            return (spec["@union"], v)
        return v
    if isinstance(spec, list):
        return [typed(x) for x in spec]
    if isinstance(spec, dict):
        return {k: typed(x) for k, x in spec.items()}
    return spec


def wake_after_start(sub):
    """Look at a new p4p subscription's queue once more. p4p 4.3's thread Context drops a wake-up
    that pvxs delivers before monitor() has returned (Subscription._event asserts on a field
    not yet set), and pvxs wakes only when its queue turns non-empty, so such a monitor would
    never deliver anything. A fast server on loopback makes that race real. The extra look is
    harmless: a subscription's callbacks all run on one worker thread, in order."""
    sub._event()
    return sub


def main(argv):
    ctx = Context("pva", nt=False)

    def do_op(kind, pv, args):
        if kind == "get":
            v = ctx.get(pv, request=args[0] if args else None, timeout=OP_TIMEOUT)
            got = {"op": "get", "pv": pv, "id": v.getID(), "value": plain(v.todict())}
            got["spec"] = plain(v.type().aspy())
            print(json.dumps(got))
        elif kind == "put":
            ctx.put(pv, {"value": json.loads(args[0])}, timeout=OP_TIMEOUT)
            v = ctx.get(pv, timeout=OP_TIMEOUT)
            print(json.dumps({"op": "put", "pv": pv, "value": plain(v["value"])}))
        elif kind == "tryput":
            try:
                ctx.put(pv, {"value": json.loads(args[0])}, timeout=OP_TIMEOUT)
                print(json.dumps({"op": "tryput", "pv": pv, "ok": True}))
            except RemoteError as e:
                print(json.dumps({"op": "tryput", "pv": pv, "ok": False, "error": str(e)}))
        elif kind == "set":
            ctx.put(pv, typed(json.loads(args[0])), timeout=OP_TIMEOUT)
            v = ctx.get(pv, timeout=OP_TIMEOUT)
            print(json.dumps({"op": "set", "pv": pv, "value": plain(v.todict())}))
        elif kind == "monitor":
            want = int(args[0])
            seen = []
            events = []
            done = threading.Event()

            def cb(v):
                if done.is_set():
                    return
                if isinstance(v, Exception):
                    events.append("%s: %s" % (type(v).__name__, v))
                    return
                seen.append(plain(v.get("value")))
                update = {
                    "op": "update",
                    "pv": pv,
                    "n": len(seen),
                    "value": plain(v.todict()),
                    "changed": sorted(v.changedSet()),
                }
                print(json.dumps(update), flush=True)
                if len(seen) >= want:
                    done.set()

            request = args[1] if len(args) > 1 else "record[queueSize=100000]"
            sub = wake_after_start(ctx.monitor(pv, cb, request=request, notify_disconnect=True))
            ok = done.wait(20.0)
            sub.close()
            result = {"op": "monitor", "pv": pv, "complete": ok, "values": seen, "events": events}
            print(json.dumps(result))
        elif kind == "info":
            t = ctx.get(pv, timeout=OP_TIMEOUT).type()
            info = {"op": "info", "pv": pv, "id": t.getID(), "type": str(t), "spec": plain(t.aspy())}
            print(json.dumps(info))
        else:
            raise ValueError("unknown op " + kind)

    try:
        return run_ops(argv, do_op)
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
