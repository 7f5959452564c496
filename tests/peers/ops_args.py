"""The command line of the client-ops peers: operations separated by "--", each OP PV ARGS...,
run in turn."""
import json
import sys


def split_ops(argv):
    """The operations of argv, each a list of its words."""
    ops, cur = [], []
    for a in argv:
        if a == "--":
            ops.append(cur)
            cur = []
        else:
            cur.append(a)
    if cur:
        ops.append(cur)
    return ops


def run_ops(argv, do_op):
    """Run do_op(kind, pv, args) for each operation of argv in turn; an error is reported as one
    JSON line {"error": ...} and gives exit status 1, so a peer never hangs a test."""
    try:
        for op in split_ops(argv):
            do_op(op[0], op[1], op[2:])
            sys.stdout.flush()
    except Exception as e:  # report, never hang
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
        return 1
    return 0
