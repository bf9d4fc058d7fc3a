"""Regression tests for the public API's contracts: backends loaded outside
torch.compile, value() in float64, certificates' tolerances in half
precision, detached results for tensors that require grad, penalties checked
when made (and compared by value), half-precision results in their dtype,
lp's threshold, and messages that name the argument."""

from __future__ import annotations

import os
import pathlib

import _procs
import numpy as np
import pytest

import proxlib
from proxlib import _dispatch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("PROXLIB_BACKEND", None)
    return env


# ------------------------------------------------------------ 1. torch.compile first


_COMPILE_FIRST = """
import warnings
warnings.simplefilter("ignore")
import torch, proxlib
T = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
X = torch.compile(lambda x: proxlib.prox_group_lasso(x, 0.5))(T)
E = proxlib.prox_group_lasso(T, 0.5)
assert torch.equal(X, E), (X, E)
print("ok")
"""


def test_a_prox_compiled_first_in_a_process_works_and_leaves_torch_usable():
    """In a fresh process the first proxlib call made inside torch.compile
    imports the torch backend outside Dynamo's tracing (it used to fail, and
    the failure was cached: every later eager call failed too)."""
    pytest.importorskip("torch")
    out = _procs.python(_COMPILE_FIRST, timeout=300, env=_child_env(), cwd=str(ROOT))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_a_backend_failure_from_torchs_compiler_is_not_remembered(monkeypatch):
    """A backend import that fails inside torch's compiler is tried again at
    the next call; any other failure is remembered (and reported)."""
    compiler_error = type("InternalTorchDynamoError", (RuntimeError,), {"__module__": "torch._dynamo.exc"})
    calls = []

    def flaky(name):
        calls.append(name)
        if len(calls) == 1:
            raise ImportError("traced import failed") from compiler_error("tracing")
        return "module"

    monkeypatch.setattr(_dispatch, "_loaded", {})
    monkeypatch.setattr(_dispatch, "_why_unavailable", {})
    monkeypatch.setattr(_dispatch, "_import_now", flaky)
    assert _dispatch._load("numpy") is None
    assert _dispatch._load("numpy") == "module"
    assert calls == ["numpy", "numpy"]

    def broken(name):
        calls.append(name)
        raise ImportError("not installed")

    monkeypatch.setattr(_dispatch, "_import_now", broken)
    assert _dispatch._load("numba") is None
    assert _dispatch._load("numba") is None
    assert calls.count("numba") == 1
    assert "not installed" in _dispatch._why_unavailable["numba"]


# ------------------------------------------------------------ 2. value() in float64


@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_lp_value_at_p0_is_float64_on_every_backend(library, dtype):
    """Lp(lam, 0).value counts non-zeros times lam in float64 (torch's
    count_nonzero gives an int64 tensor, which times a float was float32)."""
    x = np.ones(11, dtype=dtype)
    if library == "torch":
        torch = pytest.importorskip("torch")
        x = torch.from_numpy(x)
    assert proxlib.Lp(0.7, 0).value(x) == 0.7 * 11
    assert type(proxlib.Lp(0.7, 0).value(x)) is float
