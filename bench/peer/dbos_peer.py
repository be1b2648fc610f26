"""The workflow workload of the `workflow` suite, run by the official DBOS Transact for Python.

Usage: python dbos_peer.py URL STEPS CALLERS SECONDS
Prints one JSON object: workflows completed, seconds, and latencies in ms.
"""
import json
import sys
import threading
import time

from dbos import DBOS, DBOSConfig

url, steps, callers, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])

config: DBOSConfig = {
    "name": "dbos-bench-peer",
    "system_database_url": url,
    "sys_db_pool_size": max(callers + 4, 10),
    "log_level": "WARNING",
}
DBOS(config=config)


@DBOS.step()
def noop(i: int) -> int:
    return i


@DBOS.workflow()
def steps_wf(n: int) -> int:
    for i in range(n):
        noop(i)
    return n


DBOS.launch()
# Warm up connections and code paths.
for _ in range(5):
    steps_wf(steps)

latencies = []
lock = threading.Lock()
deadline = time.monotonic() + seconds


def caller() -> None:
    mine = []
    while time.monotonic() < deadline:
        t = time.monotonic()
        assert steps_wf(steps) == steps
        mine.append((time.monotonic() - t) * 1000.0)
    with lock:
        latencies.extend(mine)


start = time.monotonic()
threads = [threading.Thread(target=caller) for _ in range(callers)]
for t in threads:
    t.start()
for t in threads:
    t.join()
took = time.monotonic() - start
DBOS.destroy()
print(json.dumps({"workflows": len(latencies), "seconds": took, "latencies_ms": latencies}))
