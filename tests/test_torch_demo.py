"""``python -m proxlib.demo --quick`` end to end, and torch stays optional."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["PROXLIB_BACKEND"] = "numpy"  # no JIT warm-up in a subprocess; backends are tested elsewhere
    return env


def test_import_proxlib_does_not_import_torch():
    code = "import sys, proxlib; import proxlib.groupings, proxlib.penalties; print(sorted(m for m in ('torch', 'cupy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_demo_quick_runs_end_to_end(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    cmd = [sys.executable, "-m", "proxlib.demo", "--quick", "--out", str(tmp_path), "--threads", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("baseline", "weight decay", "group-Lasso", "GrOWL"):
        assert f"| {name} |" in out.stdout
    assert "parameter sharing" in out.stdout and "compression" in out.stdout
    png = tmp_path / "tying.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["results"]) >= {"baseline", "weight decay", "group-Lasso", "GrOWL"}
    for r in res["results"].values():
        assert 0.0 <= r["sparsity"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0 and r["compression"] >= 1.0
