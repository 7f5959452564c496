"""What the p4p servers driven by a test through stdin share: READY once they serve, their
commands one a line, and a watchdog that stops them after a time limit whatever the test does."""
import sys
import threading
import time


def commands(server, limit=120.0):
    """Print READY, then yield the words of each non-empty line of stdin until it closes, and
    stop `server` then; a watchdog stops it after `limit` seconds in any case."""
    print("READY", flush=True)
    deadline = time.time() + limit

    def watchdog():
        while time.time() < deadline:
            time.sleep(0.5)
        server.stop()
        sys.exit(0)

    threading.Thread(target=watchdog, daemon=True).start()
    for line in sys.stdin:
        parts = line.split()
        if parts:
            yield parts
    server.stop()
