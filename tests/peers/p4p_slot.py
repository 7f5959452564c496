"""What the p4p peer scripts that play the Bluesky side share: a slot's State read by name, a
bounded wait on it, and the one-line JSON error every script ends with when something fails.

Such a script is run as SCRIPT PREFIX REQUEST_JSON (see play); every wait is bounded, and an
error prints {"error": "..."} and exits 1."""
import json
import sys
import time

from p4p.client.thread import Context

FINAL = {"DONE", "FAILED", "ABORTED", "TIMEOUT"}


class Slot:
    """The PVs of one run slot through a p4p client context; remembers every state it saw."""

    def __init__(self, ctx, prefix):
        self.ctx = ctx
        self.prefix = prefix
        self.seen = []

    def pv(self, suffix):
        return self.prefix + suffix

    def state(self):
        value = self.ctx.get(self.pv("State"), timeout=5.0)
        name = value.raw.value.choices[value.raw.value.index]
        if not self.seen or self.seen[-1] != name:
            self.seen.append(name)
        return name

    def wait_until(self, done, what, limit=30.0):
        """Poll State until done(state) holds; a final state that does not is an error."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            name = self.state()
            if done(name):
                return name
            if name in FINAL:
                raise RuntimeError("run ended in %s waiting for %s" % (name, what))
            time.sleep(0.02)
        raise RuntimeError("timed out waiting for %s (last %s)" % (what, self.seen[-1:]))


def play(main):
    """Run main(ctx, slot, request) with a p4p client context and the slot named by the command
    line's PREFIX; REQUEST_JSON is the request, as text."""
    def with_slot(prefix, request):
        ctx = Context("pva")
        main(ctx, Slot(ctx, prefix), request)

    run(with_slot, sys.argv[1], sys.argv[2])


def run(main, *args):
    """Run main(*args); an exception prints {"error": ...} (one line for the test's assertion
    message) and exits 1."""
    try:
        main(*args)
    except Exception as err:
        print(json.dumps({"error": "%s: %s" % (type(err).__name__, err)}))
        sys.exit(1)
