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
    assert [name for name, _ in stages] == ["0_env", "1_step", "2_tests", "2_kernel_tests", "3_overhead", "4_profile", "5_bench"], summary
    assert all(rc == "0" for _, rc in stages), summary
    assert re.search(r"2_tests rc=0 \d+s \d+ passed", summary), summary  # tests ran, none failed
    for report in ("RESULTS_GPU.md", "OVERHEAD_GPU.md", "4_profile.log"):
        assert (tmp_path / report).stat().st_size > 0, report


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_session_ends_within_its_budget_and_still_summarises(tmp_path):
    """The lent machine's run() has a hard timeout (590 s for a 570 s
    budget): a stage that hangs must not take the later stages' time and the
    summary with it.  The budget cuts the stage that runs when it ends and
    skips the rest (rc=124 each, counted in the exit status), and the summary
    is printed inside it.  (Before, each stage kept its own limit whatever
    the time already spent: 550 s of limits plus timeout's 10 s grace per
    stage plus unbounded pip and nvidia-smi could outlast run()'s timeout.)"""
    import time

    budget = 25
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "GPU_SESSION_BUDGET": str(budget)}
    env.pop("PROXLIB_TEST_DEVICE", None)
    t0 = time.monotonic()
    run = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - t0
    assert elapsed <= budget + 5, (elapsed, run.stdout[-3000:])
    summary = run.stdout[run.stdout.index("=== SUMMARY"):]
    stages = re.findall(r"^(\d_\w+) rc=(\d+)", summary, flags=re.M)
    assert [name for name, _ in stages] == ["0_env", "1_step", "2_tests", "2_kernel_tests", "3_overhead", "4_profile", "5_bench"], summary
    assert run.returncode == sum(rc != "0" for _, rc in stages) >= 4, summary  # the last stages were skipped
    assert re.search(r"^5_bench rc=124 0s skipped", summary, flags=re.M), summary


def test_gpu_session_step_stage_runs_the_default_route_on_cuda():
    """Stage 1 compares the step on CUDA with the CPU's default route; on
    CUDA it must run what a user's step runs (``CPU_KERNELS = "auto"``:
    GrOWL's OWL of the row norms by Numba's kernel on the host), and only
    the dry run's CPU tensors the torch operations (``"torch"``).  (Before,
    it set ``"torch"`` on CUDA too: the NumPy reference solved GrOWL's
    norms there, and the default route was never run on a GPU.)"""
    text = SCRIPT.read_text()
    program = text[text.index("stage 1_step"):]
    program = program[program.index("<<'EOF'\n") + 8:program.index("\nEOF\n")]
    before_step = program[:program.index("\nprox.step()")]
    setting = re.findall(r"^torch_dev\.CPU_KERNELS = (.+?)(?:  #.*)?$", before_step, flags=re.M)[-1]
    assert eval(setting, {"dev": "cuda"}) == "auto", setting
    assert eval(setting, {"dev": "cpu"}) == "torch", setting
