"""The suite's bounded child processes (tests/_procs.py): a stuck child, and
the grandchildren it started, end at the deadline and fail the test."""

from __future__ import annotations

import os
import time

import _procs
import pytest

_STUCK = (
    "import subprocess, sys, time\n"
    "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print(g.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead for our purpose
        return f.read().split()[2] != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to see the grandchild")
def test_a_stuck_child_and_its_grandchild_are_killed_at_the_deadline():
    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="timed out after 3 s") as info:
        _procs.python(_STUCK, timeout=3)
    assert time.monotonic() - t0 < 60
    grandchild = int(str(info.value).split("stdout:\n")[1].split()[0])
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_output_and_exit_status_come_back():
    out = _procs.python("import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)", timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (3, "out\n", "err\n")
    with pytest.raises(AssertionError, match="exited with 3"):
        _procs.python("import sys; sys.exit(3)", timeout=60, check=True)


def _raise(rank: int) -> None:
    raise RuntimeError(f"rank {rank} failed")


def _sleep(rank: int) -> None:
    time.sleep(600)


def test_spawned_ranks_report_errors_and_end_at_the_deadline():
    pytest.importorskip("torch")
    import torch.multiprocessing as mp

    with pytest.raises(mp.ProcessRaisedException, match="failed"):
        _procs.spawn(_raise, (), nprocs=2, timeout=120)
    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="still running after 3 s"):
        _procs.spawn(_sleep, (), nprocs=2, timeout=3)
    assert time.monotonic() - t0 < 60
