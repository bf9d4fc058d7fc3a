"""Child processes for the tests, bounded in time.

A test that starts a process must not be able to hang the suite: CI gives
the whole run 90 minutes and a stuck child would take all of them.  Every
child here runs in its own process group with a deadline; past it the whole
group is killed (grandchildren included: they would otherwise keep the
output pipes open and ``subprocess.run``'s own timeout would wait on them for
ever) and the test fails, naming the command and showing what it printed.
Output goes to files, not pipes, for the same reason.
"""

from __future__ import annotations

import datetime
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time

import pytest

#: how long a collective may wait in the multi-process tests (gloo's default
#: is 30 minutes; a mismatch between ranks then fails in seconds, not minutes)
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=120)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run(cmd: list[str], *, timeout: float, env: dict | None = None, cwd=None, check: bool = False):
    """``subprocess.run(cmd, capture_output=True, text=True)`` with a hard
    deadline: past ``timeout`` seconds the child's process group is killed
    and the test fails (with the command and the output so far)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                text=True, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            if proc.poll() is None:  # past the deadline, or an exception while waiting (pytest-timeout)
                _kill_group(proc)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(cmd, rc, out.read(), err.read())
    if rc is None:
        pytest.fail(f"timed out after {timeout:.0f} s: {cmd[:3]}...\nstdout:\n{result.stdout[-3000:]}\n"
                    f"stderr:\n{result.stderr[-3000:]}")
    if check and rc != 0:
        raise AssertionError(f"{cmd[:3]}... exited with {rc}:\n{result.stderr[-3000:]}")
    return result


def python(code: str, *args: str, timeout: float, **kwargs):
    """Run ``python -c code args...`` with :func:`run`."""
    return run([sys.executable, "-c", code, *args], timeout=timeout, **kwargs)


#: the start of a child's code (for :func:`python`) that joins a one-process
#: gloo group and makes ``mesh``, a 1-D CPU device mesh of it; the code that
#: follows ends with ``dist.destroy_process_group()``
ONE_RANK_MESH = r"""
import datetime, os, tempfile, torch, torch.distributed as dist
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
from torch.distributed.device_mesh import init_device_mesh
f = tempfile.NamedTemporaryFile(delete=False); f.close(); os.unlink(f.name)
dist.init_process_group("gloo", init_method="file://" + f.name, rank=0, world_size=1,
                        timeout=datetime.timedelta(seconds=60))
mesh = init_device_mesh("cpu", (1,))
"""


def _reported(error_file) -> str:
    """The traceback a rank reported before it got stuck (``spawn``'s error file), if any."""
    try:
        with open(error_file, "rb") as f:
            return "\n" + pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError, TypeError):
        return ""


def init_gloo(rank: int, world: int, init_file: str) -> None:
    """A worker's start: gloo over the loopback, one torch thread (two
    processes share this machine's cores), the process group from the file
    store ``init_file``."""
    import torch
    import torch.distributed as dist

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT)


def end_rank() -> None:
    """End a spawned rank whose work is done, skipping interpreter teardown.

    torch's gloo process group joins its worker threads in its destructor
    while holding the GIL, and a worker thread still releasing a finished
    collective's tensors waits for the GIL: the rank then never exits (seen
    here in about one run in six of the DDP test; the destructor runs when
    DDP's reducer or the last reference to the group goes).  So each rank
    meets the others at a barrier (no collective is left in flight, every
    rank has written what it writes) and leaves with ``os._exit(0)``: no
    destructor runs.  Ranks that fail raise as usual (``spawn`` reports the
    traceback, the deadline ends a teardown that hangs)."""
    import torch.distributed as dist

    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawn(fn, args: tuple, *, nprocs: int, timeout: float) -> None:
    """``torch.multiprocessing.spawn(fn, args, nprocs)`` with a deadline: past
    ``timeout`` seconds the ranks are killed and the test fails.  A rank that
    raises fails the test with its traceback (as ``spawn`` does)."""
    import torch.multiprocessing as mp

    ctx = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(f"{nprocs} ranks of {fn.__name__} still running after {timeout:.0f} s"
                            + "".join(_reported(path) for path in ctx.error_files))
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join()
