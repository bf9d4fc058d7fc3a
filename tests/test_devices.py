"""Allocation on the input's device, and backends that cannot load.

* Every array the core allocates (validation, the row layout, parameter
  arrays, thresholds, the kernels' scratch) is created with the input's
  device, not the current one.  Tested without a GPU: torch's default device
  is set to ``meta`` (a device with no data), so any allocation that forgets
  ``device=device(x)`` lands on ``meta`` and the first operation that mixes it
  with the CPU input raises.  (On a machine with two GPUs this is the input on
  ``cuda:1`` while ``cuda:0`` is current.)
* ``available_backends()`` leaves out CuPy when it imports but no driver or
  device is there, and says why when it is requested.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import proxlib
from proxlib import _dispatch

torch = pytest.importorskip("torch")

_V = np.array([3.0, -0.5, 1.0, 2.0, 0.0, -4.0])
_W = np.arange(12.0).reshape(3, 4) - 5.0
_CALLS = {
    "owl": lambda v, W: proxlib.prox_owl(v, np.linspace(2.0, 0.0, 6)),
    "growl": lambda v, W: proxlib.prox_growl(W, np.array([2.0, 1.0, 0.5])),
    "group_lasso": lambda v, W: proxlib.prox_group_lasso(W, 1.0, group_weights="sqrt"),
    "group_lasso_ragged": lambda v, W: proxlib.prox_group_lasso(
        v, 1.0, groups=np.array([0, 1, 0, 2, 2, 1]), group_weights=np.array([1.0, 2.0, 0.5])
    ),
    "exclusive_lasso": lambda v, W: proxlib.prox_exclusive_lasso(W, 1.0),
    "group_exclusive": lambda v, W: proxlib.prox_group_exclusive(W, 1.0, 0.5),
    "weighted_l1": lambda v, W: proxlib.prox_weighted_l1(v, np.array([1.0, 0, 1, 0, 1, 0])),
    "weighted_l2sq": lambda v, W: proxlib.prox_weighted_l2sq(v, 1.0),
    "lp": lambda v, W: proxlib.prox_lp(v, 1.0, 0.5),
    "thesis": lambda v, W: proxlib.prox_exclusive_lasso_thesis(W, 0.1),
    "sequential": lambda v, W: proxlib.prox_group_exclusive_sequential(W, 0.1, 0.5),
    # the beyond-range paths of proxlib._range allocate too
    "group_lasso_beyond": lambda v, W: proxlib.prox_group_lasso(W * 1e300, 1e300, step=1e300),
    "growl_beyond": lambda v, W: proxlib.prox_growl(W * 1e307, np.array([1e308, 1.0, 0.0]), step=10.0),
    "exclusive_beyond": lambda v, W: proxlib.prox_exclusive_lasso(W, 1e300, step=1e300),
    "group_exclusive_beyond": lambda v, W: proxlib.prox_group_exclusive(W, 1e300, 0.5, step=1e300),
    "l2sq_beyond": lambda v, W: proxlib.prox_weighted_l2sq(v, 1e300, step=1e300),
    "lp_tiny": lambda v, W: proxlib.prox_lp(v, 1e-300, 0.5, step=1e-300),
    "float32_promoted": lambda v, W: proxlib.prox_exclusive_lasso(W.float(), 1e30, step=1e30),
    "reweight": lambda v, W: proxlib.reweight_l2(v, 0.1).weights,
    "to_rows": lambda v, W: proxlib.to_rows(W.reshape(3, 2, 2), "channel"),
    "from_rows": lambda v, W: proxlib.from_rows(W.reshape(2, 6), (3, 2, 2), "channel"),
    "owl_weights": lambda v, W: proxlib.owl_weights_oscar(6, 1.0, 0.5, like=v),
}


@pytest.fixture
def meta_is_current():
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


@pytest.mark.parametrize("name", sorted(_CALLS))
def test_arrays_are_allocated_on_the_input_device_not_the_current_one(name, meta_is_current):
    v, W = torch.tensor(_V, device="cpu"), torch.tensor(_W, device="cpu")
    got = _CALLS[name](v, W)
    assert got.device.type == "cpu"
    torch.set_default_device(None)
    np.testing.assert_array_equal(got.numpy(), _CALLS[name](v, W).numpy())


def test_the_meta_device_catches_a_forgotten_device_argument(meta_is_current):
    # the premise of the test above: an allocation without device= is caught
    v = torch.tensor(_V, device="cpu")
    with pytest.raises(RuntimeError, match="meta"):
        v + torch.ones(6)


@pytest.fixture
def fake_cupy_without_a_driver(monkeypatch, cupy_gpu_against):
    """A ``cupy`` that imports but whose runtime finds no driver, as on a
    machine with ``cupy-cuda12x`` installed and no GPU."""

    class CUDARuntimeError(RuntimeError):
        pass

    def no_driver():
        raise CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_driver))
    cupy_gpu_against(fake)  # the backend module imports; the driver check is what fails
    monkeypatch.setattr(_dispatch, "_loaded", {k: v for k, v in _dispatch._loaded.items() if k != "cupy"})
    monkeypatch.setattr(_dispatch, "_why_unavailable", dict(_dispatch._why_unavailable))
    return fake


def test_cupy_without_a_driver_is_not_available(fake_cupy_without_a_driver):
    assert "cupy" not in proxlib.available_backends()
    assert "numpy" in proxlib.available_backends()
    with proxlib.use_backend("cupy"), pytest.raises(ImportError, match="insufficient"):
        _dispatch._module("cupy")


def test_cupy_with_no_device_is_not_available(fake_cupy_without_a_driver):
    fake_cupy_without_a_driver.cuda.runtime.getDeviceCount = lambda: 0
    assert "cupy" not in proxlib.available_backends()
    with pytest.raises(ImportError, match="no GPU"):
        _dispatch._module("cupy")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_device_row_sort_is_the_cpu_row_sort(dtype):
    """torch_dev's row sort takes NumPy's sort on CPU tensors and
    ``torch.sort(descending=True)`` on every other device, a line the CPU
    suite never runs: on the magnitudes it sorts (>= 0, with ties, zeros,
    subnormals, inf and NaN, which both put first), the two agree bit for
    bit."""
    from proxlib.backends import torch_dev

    rng = np.random.default_rng(4)
    A = np.abs(rng.standard_normal((40, 33)) * 10.0 ** rng.integers(-3, 4, (40, 1)))
    A[:, ::7] = A[:, :1]  # ties
    special = [0.0, np.inf, np.nan, float(np.finfo(np.float32).tiny) / 8, 5e-324]
    mask = rng.random(A.shape) < 0.1
    A[mask] = rng.choice(special, mask.sum())
    T = torch.tensor(A, dtype=dtype)
    host = torch_dev._sort_desc(T, None)
    device = torch.sort(T, dim=1, descending=True).values
    assert host.dtype == device.dtype == dtype
    np.testing.assert_array_equal(host.numpy().view(np.uint32 if dtype == torch.float32 else np.uint64),
                                  device.numpy().view(np.uint32 if dtype == torch.float32 else np.uint64))
