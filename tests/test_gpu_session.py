"""``benchmarks/gpu_session.sh``, the prepared GPU run, works: its dry run.

A lent GPU comes with minutes of device time and no second try worth
having, so the script it runs is tested here on every change: ``--dry-run``
runs every stage on the CPU (a sample of the device tests through
``PROXLIB_TEST_DEVICE=cpu``, the training step through the torch
operations against the CPU's default route,
``bench_gpu.py --dry-run``, the ResNet-18 overhead section on CPU tensors).
A stage that fails, a test selection that matches nothing (pytest's status
5), a renamed option of a benchmark: the summary says ``rc=`` non-zero and
the script's status counts it.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_session.sh"

pytest.importorskip("torch")


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_session_dry_run_passes_every_stage(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    env.pop("PROXLIB_TEST_DEVICE", None)
    run = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    summary = run.stdout[run.stdout.index("=== SUMMARY"):] if "=== SUMMARY" in run.stdout else run.stdout[-3000:]
    assert run.returncode == 0, summary + run.stderr[-2000:]
    stages = re.findall(r"^(\d_\w+) rc=(\d+)", summary, flags=re.M)
    assert [name for name, _ in stages] == ["0_env", "1_step", "2_tests", "3_overhead", "4_profile", "5_bench"], summary
    assert all(rc == "0" for _, rc in stages), summary
    assert re.search(r"2_tests rc=0 \d+s \d+ passed", summary), summary  # tests ran, none failed
    for report in ("RESULTS_GPU.md", "OVERHEAD_GPU.md", "4_profile.log"):
        assert (tmp_path / report).stat().st_size > 0, report
