"""``megatron.data.preprocessing.ordered_pool.OrderedPool``: results in input order, worker failures raised instead
of waited for, and a shut-down that never hangs, whatever killed the workers and when."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from megatron.data.preprocessing.ordered_pool import OrderedPool, WorkerError

pytestmark = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
CTX = multiprocessing.get_context("fork")


def _square_setup(offset: int):
    def fn(x: int) -> int:
        if x < 0:
            raise ValueError(f"negative item {x}")
        time.sleep(0.001 * (x % 3))  # uneven durations, so workers finish out of order
        return x * x + offset

    return fn


def _pid_setup():
    return lambda _: os.getpid()


def _sleep_setup():
    def fn(seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()

    return fn


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its new parent to reap it has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 3])
def test_results_come_back_in_input_order(workers):
    """imap yields f(item) for every item in input order, for one worker or several with uneven task times."""
    with OrderedPool(CTX, workers, _square_setup, (7,)) as pool:
        assert list(pool.imap(range(50))) == [x * x + 7 for x in range(50)]


@pytest.mark.timeout(60)
def test_work_is_spread_over_all_workers():
    """Items go round-robin: with 3 workers, 9 items run in 3 distinct processes, none of them the parent."""
    with OrderedPool(CTX, 3, _pid_setup) as pool:
        pids = list(pool.imap(range(9)))
    assert len(set(pids)) == 3 and os.getpid() not in pids


@pytest.mark.timeout(60)
def test_a_worker_exception_is_raised_with_its_traceback():
    """An exception inside a worker surfaces in the parent as WorkerError carrying the worker's traceback, and
    leaving the block kills the other workers instead of waiting for them."""
    pool = OrderedPool(CTX, 2, _square_setup, (0,))
    with pytest.raises(WorkerError, match=r"(?s)worker process \d failed:.*ValueError: negative item -1"):
        with pool:
            list(pool.imap([1, 2, -1, 4, 5]))
    assert all(not proc.is_alive() for proc in pool._procs)


@pytest.mark.timeout(60)
def test_a_killed_worker_is_an_error_not_a_hang():
    """A worker SIGKILLed while it holds a task is reported as 'died (exit code -9)' instead of its result being
    awaited forever."""
    pool = OrderedPool(CTX, 2, _sleep_setup)
    with pytest.raises(WorkerError, match=r"worker process 0 died \(exit code -9\)"):
        with pool:
            results = pool.imap([30.0, 0.0, 30.0, 0.0])
            os.kill(pool._procs[0].pid, signal.SIGKILL)
            next(results)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_leaving_after_every_worker_was_terminated_does_not_hang(busy):
    """The process-group kill case: every worker dies of SIGTERM (idle, waiting on its task queue, or busy) and
    the parent's own exception then leaves the block; the shut-down returns within seconds
    (multiprocessing.Pool's terminate can wait forever on a lock a dead worker held)."""
    pool = OrderedPool(CTX, 2, _sleep_setup)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with pool:
            if busy:
                for tasks in pool._tasks:
                    tasks.put(30.0)
            time.sleep(0.5)
            for proc in pool._procs:
                os.kill(proc.pid, signal.SIGTERM)
            raise KeyboardInterrupt
    assert time.monotonic() - start < 20
    assert [proc.exitcode for proc in pool._procs] == [-signal.SIGTERM] * 2


@pytest.mark.timeout(60)
def test_normal_exit_stops_every_worker():
    """Leaving the block normally ends each worker with exit code 0 (a clean stop, not a kill)."""
    with OrderedPool(CTX, 2, _pid_setup) as pool:
        list(pool.imap(range(4)))
    assert [proc.exitcode for proc in pool._procs] == [0, 0]


@pytest.mark.timeout(90)
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc")
def test_workers_of_a_sigkilled_parent_exit_on_their_own(tmp_path):
    """A parent killed with SIGKILL (no clean-up runs) does not leave its idle workers behind: they notice the
    new parent within a few seconds and exit."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import multiprocessing, sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_ordered_pool import _pid_setup
        from megatron.data.preprocessing.ordered_pool import OrderedPool, WorkerError
        pool = OrderedPool(multiprocessing.get_context("fork"), 2, _pid_setup)
        print(*sorted(set(pool.imap(range(4)))), flush=True)
        time.sleep(120)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 30
        while any(map(_alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_alive, pids)), "orphaned workers are still running"
    finally:
        if proc.poll() is None:
            proc.kill()
