"""The lock that lets two test workers share the Slurm cluster (tests/conftest.py, cluster_lock): tests
using it overlap, a test taking a daemon down runs alone, and it is not starved by a stream of users."""

import threading
import time

from tests.conftest import cluster_lock


def _hold(where, exclusive, name, log, seconds, started=None):
    with cluster_lock(exclusive, where):
        log.append(f"{name}+")
        if started is not None:
            started.set()
        time.sleep(seconds)
        log.append(f"{name}-")


def test_shared_holders_overlap(tmp_path):
    log: list[str] = []
    a = threading.Thread(target=_hold, args=(tmp_path, False, "a", log, 0.5))
    a.start()
    time.sleep(0.1)
    _hold(tmp_path, False, "b", log, 0.0)
    a.join()
    assert log == ["a+", "b+", "b-", "a-"], log


def test_a_writer_waits_for_users_and_later_users_wait_for_the_writer(tmp_path):
    log: list[str] = []
    in_a = threading.Event()
    a = threading.Thread(target=_hold, args=(tmp_path, False, "a", log, 0.8, in_a))
    w = threading.Thread(target=_hold, args=(tmp_path, True, "w", log, 0.3))
    a.start()
    in_a.wait(10)
    w.start()
    time.sleep(0.3)  # the writer is queued behind a
    b = threading.Thread(target=_hold, args=(tmp_path, False, "b", log, 0.0))
    b.start()
    for t in (a, w, b):
        t.join(20)
    assert log == ["a+", "a-", "w+", "w-", "b+", "b-"], log
