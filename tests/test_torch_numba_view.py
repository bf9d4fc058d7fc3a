"""A public prox on a CPU tensor whose kernel is Numba's runs the NumPy path
on the tensor's NumPy view, with Numba's serial kernels
(``proxlib._registry.numba_view``, ``torch_dev.SERIAL_NUMBA``).

What it must keep: the NumPy array's result bit for bit (serial kernels,
the parallel ones' bits), a new tensor of the input's dtype and shape that
shares no memory with it, the input unchanged, no thread pool of Numba's
(``parallel=False`` on every kernel), the errors of the general path, and
the torch route wherever the view does not apply (``CPU_KERNELS =
"torch"``, torch tensors among the penalty's parameters, torch's lazy
negation, ``use_backend`` asking for another backend)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("numba")

import proxlib  # noqa: E402
from proxlib import _registry as R  # noqa: E402
from proxlib.backends import numba_cpu, torch_dev  # noqa: E402

# every registry operator as a penalty of the input (OWL's weights: one per entry, GrOWL's: one per row)
PENALTIES = {
    "weighted_l1": lambda x: proxlib.WeightedL1(0.1),
    "weighted_l2sq": lambda x: proxlib.WeightedL2Sq(0.3),
    "lp": lambda x: proxlib.Lp(0.05, 0.5),
    "group_lasso": lambda x: proxlib.GroupLasso(0.1),
    "exclusive_lasso": lambda x: proxlib.ExclusiveLasso(0.02),
    "group_exclusive": lambda x: proxlib.GroupExclusive(0.1, 0.05),
    "owl": lambda x: proxlib.OWL(proxlib.owl_weights_oscar(math.prod(x.shape), 0.1, 0.001)),
    "growl": lambda x: proxlib.GrOWL(proxlib.owl_weights_oscar(x.shape[0] if x.ndim > 1 else 1, 0.3, 0.01)),
}
# the operators whose public call takes a one-call lane (numba_cpu.<name>_checked)
_LANES = ("owl", "growl", "group_lasso", "exclusive_lasso", "group_exclusive", "weighted_l1", "weighted_l2sq", "lp")
# 70,000 entries: the NumPy path's parallel kernels (OWL's, the elementwise ones) against the view's serial ones
SHAPES = [(10,), (64, 10), (7, 10_000)]


@pytest.fixture
def numba_route(monkeypatch):
    """CPU tensors on Numba's kernels (the library's default; conftest.py
    sends the suite's to the torch operations)."""
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", "auto")


def test_every_operator_is_covered():
    assert set(PENALTIES) == set(R.OPERATORS)


def _inputs(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    a = rng.standard_normal(shape).astype(dtype)
    a[..., ::3] *= 1e-3  # (entries the operators zero)
    return a


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(PENALTIES))
def test_a_cpu_tensor_gets_the_numpy_arrays_result_bit_for_bit(numba_route, monkeypatch, name, shape, dtype):
    a = _inputs(shape, dtype)
    pen = PENALTIES[name](a)
    want = pen.prox(a, 0.5)
    for x in (torch.from_numpy(a.copy()), torch.from_numpy(a.copy()).requires_grad_()):
        before = x.detach().clone()
        got = pen.prox(x, 0.5)
        assert type(got) is torch.Tensor and got.dtype == x.dtype and got.shape == x.shape and not got.requires_grad
        np.testing.assert_array_equal(got.numpy(), want)
        assert torch.equal(x.detach(), before)
        assert not np.shares_memory(got.numpy(), x.detach().numpy())
    # the public function too (OWL's takes its one-call path), and a view that is not contiguous
    function = R.OPERATORS[name].function
    args = {"lp": (0.05, 0.5), "group_exclusive": (0.1, 0.05)}.get(name) or (pen.weights if hasattr(pen, "weights") else pen.lam,)
    np.testing.assert_array_equal(function(torch.from_numpy(a), *args, 0.5).numpy(), want)
    # the bits of the route it replaces (the torch backend's wrapper of Numba's serial kernels),
    # also on a transpose, whose F-ordered rows both give Numba's row kernels as they are (read as
    # columns, as a training step's in-place kernels read them)
    for t in (torch.from_numpy(a), torch.from_numpy(a).t()) if name != "growl" else (torch.from_numpy(a),):  # (GrOWL: weights per row)
        got = function(t, *args, 0.5)
        with monkeypatch.context() as m:
            m.setattr(R, "numba_view", lambda *a_: None)
            np.testing.assert_array_equal(got.numpy(), function(t, *args, 0.5).numpy())


@pytest.mark.parametrize("name", sorted(PENALTIES))
def test_the_view_runs_numbas_serial_kernels(numba_route, monkeypatch, name):
    """Every kernel the view's calls run is Numba's, with ``parallel=False``
    (Numba's thread pool would compete with torch's, as the issue measured:
    265-300 ms a step instead of 5 ms)."""
    calls = []

    def spy(kernel):
        @functools.wraps(kernel)
        def run(*args, **kwargs):
            calls.append((kernel.__name__, kwargs.get("parallel", True)))
            return kernel(*args, **kwargs)
        return run

    for kernel in {R.OPERATORS[n].penalty.kernel for n in PENALTIES} | {n + "_checked" for n in _LANES}:
        monkeypatch.setattr(numba_cpu, kernel, spy(getattr(numba_cpu, kernel)))
    for shape in SHAPES:
        a = _inputs(shape, "float64")
        PENALTIES[name](a).prox(torch.from_numpy(a), 0.5)
    assert calls and not any(parallel for _, parallel in calls), calls
    if name == "owl":  # (OWL's one compiled call, checks and thresholds included: 44-50 us a call at n = 10, not 185-207)
        assert {kernel for kernel, _ in calls} == {"owl_checked", "owl"}, calls
    if name in _LANES and name != "owl":
        # (the one-call lanes: checks and thresholds formed, then, serially, the row or map kernel
        # itself; lp's lane calls its kernel's function, its closed forms' constants formed there)
        assert {kernel for kernel, _ in calls} == {name + "_checked"} | ({"lp"} if name == "lp" else set()), calls


def test_where_the_view_does_not_apply_the_torch_route_answers(numba_route, monkeypatch):
    a = _inputs((64, 10), "float64")
    x = torch.from_numpy(a)
    # torch weights: the penalty's parameters are tensors (the torch route, its own kernels' result)
    w = proxlib.owl_weights_oscar(640, 0.1, 0.001)
    assert R.numba_view("owl", x, (torch.from_numpy(w),)) is None and R.numba_view("owl", x, (w,))[0] is not None
    got = proxlib.prox_owl(x, torch.from_numpy(w), 0.5)
    np.testing.assert_allclose(got.numpy(), proxlib.prox_owl(a, w, 0.5), rtol=1e-12, atol=0)
    # torch's lazy negation: the memory holds -x
    neg = torch._neg_view(torch.from_numpy(-a))
    assert neg.is_neg() and R.numba_view("group_lasso", neg) is None
    np.testing.assert_array_equal(proxlib.prox_group_lasso(neg, 0.1, 0.5).numpy(), proxlib.prox_group_lasso(a, 0.1, 0.5))
    # another backend asked for: its error, not the view's NumPy path
    with proxlib.use_backend("numpy"), pytest.raises(ValueError, match="cannot run on a torch tensor"):
        proxlib.prox_group_lasso(x, 0.1)
    # the torch operations asked for: no view
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", "torch")
    assert R.numba_view("group_lasso", x) is None


def test_errors_are_the_general_paths(numba_route):
    x = torch.tensor([1.0, float("nan"), 2.0])
    for call in (lambda: proxlib.prox_weighted_l1(x, 0.1), lambda: proxlib.prox_owl(x, np.ones(3)),
                 lambda: proxlib.prox_group_lasso(x.reshape(1, 3), 0.1)):
        with pytest.raises(ValueError, match="contains NaN or Inf"):
            call()
    with pytest.raises(ValueError, match="step"):
        proxlib.prox_group_lasso(torch.ones(2, 2), 0.1, -1.0)
    assert proxlib.prox_weighted_l1(x, 0.1, check_finite=False).isnan()[1]
