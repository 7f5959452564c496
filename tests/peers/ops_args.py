"""The command line of the client-ops peers: operations separated by "--", each OP PV ARGS..."""


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
