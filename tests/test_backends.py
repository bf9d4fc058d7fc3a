"""Every backend against the NumPy reference, through the public API; dispatch.

* Every backend module named in ``proxlib._dispatch.BACKEND_MODULES`` defines
  every kernel of ``proxlib.backends.KERNELS`` (imported when it can be, read
  with ``ast`` otherwise, e.g. ``cupy_gpu`` on a machine without CuPy).
* ONE test body, parametrised by public operator x backend x dtype, runs the
  operator on Hypothesis inputs (ties, zeros, zero rows, one row, one column,
  N-D and ragged groups, scales 1e-150 / 1e150) under ``use_backend(name)``
  and compares with the same call on the ``numpy`` reference: the result's
  type (and device), dtype and shape, its values (tolerance from the dtype),
  and that no input was modified.  CuPy runs where a GPU is, else skips.
* Larger inputs for the compiled backend, which take the parallel paths,
  the OWL key sort and scatter and many-row chunks that the small Hypothesis inputs
  do not reach.
* Dispatch: numba is the automatic choice for NumPy arrays when it imports;
  ``PROXLIB_BACKEND`` and ``use_backend`` override it; unknown names and
  ``cupy`` for NumPy arrays raise.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import math
import pathlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import _cvx as R
import _device
import proxlib
from proxlib import _dispatch
from proxlib.backends import KERNELS

BACKEND_DIR = pathlib.Path(proxlib.__file__).parent / "backends"
RTOL = {"float64": 1e-12, "float32": 1e-5}
# One scale per input: the data are O(1) numbers times this (float32 cannot hold 1e+-150).
SCALES = {"float64": (1.0, 1e-150, 1e150), "float32": (1.0, 1e-18, 1e18)}


def _has_cupy_device() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _backend_param(name):
    marks = []
    if name == "cupy" and not _has_cupy_device():
        marks.append(pytest.mark.skip(reason="needs CuPy and a GPU"))
    elif name != "cupy" and name not in proxlib.available_backends():
        marks.append(pytest.mark.skip(reason=f"backend {name!r} does not import here"))
    return pytest.param(name, marks=marks)


BACKENDS = [_backend_param(name) for name in _dispatch.BACKEND_MODULES]
#: torch CPU tensors through Numba's serial kernels (``torch_dev.CPU_KERNELS``,
#: the default route of CPU tensors; "torch" in BACKENDS runs the torch
#: operations that every other device runs, see conftest.py)
TORCH_ON_NUMBA = pytest.param(
    "torch+numba",
    marks=pytest.mark.skipif(
        not {"torch", "numba"} <= set(proxlib.available_backends()), reason="needs torch and numba"
    ),
)
DTYPES = ["float64", "float32"]


# ------------------------------------------------------------------ every kernel everywhere


def _defined_names(module_name: str) -> set[str]:
    """Names bound at the top level of a backend module: by importing it, or,
    when its dependencies are missing, by reading its source."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        path = BACKEND_DIR / (module_name.rsplit(".", 1)[1] + ".py")
        assert path.exists(), f"{module_name} has no source file {path}"
        names = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
        return names
    return {name for name in dir(module) if callable(getattr(module, name))}


@pytest.mark.parametrize("name", sorted(_dispatch.BACKEND_MODULES))
def test_backend_module_defines_every_kernel(name):
    missing = sorted(set(KERNELS) - _defined_names(_dispatch.BACKEND_MODULES[name]))
    assert not missing, f"backend {name!r} lacks kernels {missing}"


def test_the_kernel_list_is_what_the_reference_exports():
    from proxlib.backends import numpy_ref

    assert set(KERNELS) == set(numpy_ref.__all__)


# ------------------------------------------------------------------ strategies


@st.composite
def data_arrays(draw, dtype, shape):
    """O(1) values with ties and zeros (halves) or arbitrary floats, some rows
    zeroed, times one scale."""
    if draw(st.booleans()):
        elements = st.integers(-6, 6).map(lambda k: k / 2)
    else:
        elements = st.floats(-10, 10, allow_nan=False, allow_subnormal=False, width=32)
    A = draw(arrays(np.float64, shape, elements=elements))
    if A.ndim >= 2 and draw(st.booleans()):
        zero = draw(arrays(np.bool_, A.shape[0]))
        A[zero] = 0.0
    scale = draw(st.sampled_from(SCALES[dtype]))
    return (A * scale).astype(dtype), scale


def shapes(min_dims=1, max_dims=3):
    return st.one_of(
        st.tuples(st.integers(1, 5), st.integers(1, 6)),  # rows x columns, incl. one row / one column
        st.lists(st.integers(1, 4), min_size=min_dims, max_size=max_dims).map(tuple),
    )


# step; a huge one overflows the thresholds to inf (float32 and float64), which must give zeros alike
positive = st.sampled_from([1.0, 0.5, 3.0, 1.0, 0.5, 3.0, 1e300])
factor = st.one_of(st.just(0.0), st.floats(1e-3, 3.0), st.sampled_from([0.25, 1.0]))
log_factor = st.one_of(st.just(0.0), st.floats(-4, 4).map(lambda e: 10.0**e))


@dataclass
class Case:
    call: Callable[..., Any]  # call(xp, arrays...) -> result
    arrays: tuple  # NumPy inputs (data first), moved to the backend's namespace
    shape: tuple
    dtype: str
    scale: float


def _nonincreasing(draw, n, hi):
    w = draw(arrays(np.float64, n, elements=st.one_of(st.floats(0, 2), st.sampled_from([0.0, 0.5, 1.0]))))
    return -np.sort(-w) * hi


@st.composite
def owl_cases(draw, dtype):
    v, scale = draw(data_arrays(dtype, draw(shapes())))
    w = _nonincreasing(draw, v.size, scale).astype(dtype)
    step = draw(positive)
    return Case(lambda xp, v, w: proxlib.prox_owl(v, w, step), (v, w), v.shape, dtype, scale)


@st.composite
def growl_cases(draw, dtype):
    W, scale = draw(data_arrays(dtype, draw(shapes(2, 3))))
    m = W.size // W.shape[0]
    w = _nonincreasing(draw, W.shape[0], scale * math.sqrt(m)).astype(dtype)
    step = draw(positive)
    return Case(lambda xp, W, w: proxlib.prox_growl(W, w, step), (W, w), W.shape, dtype, scale)


@st.composite
def group_inputs(draw, dtype):
    """(W, groups or None, group_weights, scale): dense rows, N-D, or ragged labels."""
    if draw(st.booleans()):  # ragged: a vector with integer labels (any order)
        n = draw(st.integers(1, 12))
        v, scale = draw(data_arrays(dtype, (n,)))
        labels = draw(arrays(np.int64, n, elements=st.integers(0, 3)))
        n_labels = int(labels.max()) + 1
        gw = draw(st.sampled_from([None, "sqrt", "array"]))
        if gw == "array":
            gw = draw(arrays(np.float64, n_labels, elements=st.floats(0, 2)))
        return v, labels, gw, scale
    W, scale = draw(data_arrays(dtype, draw(shapes())))
    gw = draw(st.sampled_from([None, "sqrt", "array"]))
    if gw == "array":
        gw = draw(arrays(np.float64, W.shape[0] if W.ndim > 1 else 1, elements=st.floats(0, 2)))
    return W, None, gw, scale


def _group_call(fn, groups, gw, *args):
    def call(xp, W):
        g = None if groups is None else xp.asarray(groups)
        c = xp.asarray(gw) if isinstance(gw, np.ndarray) else gw
        return fn(W, *args, groups=g, group_weights=c)

    return call


@st.composite
def group_lasso_cases(draw, dtype):
    W, groups, gw, scale = draw(group_inputs(dtype))
    lam = draw(factor) * scale * math.sqrt(W.size)
    call = _group_call(proxlib.prox_group_lasso, groups, gw, lam, draw(positive))
    return Case(call, (W,), W.shape, dtype, scale)


@st.composite
def exclusive_cases(draw, dtype):
    W, groups, gw, scale = draw(group_inputs(dtype))
    lam = draw(log_factor)  # the exclusive parameter is scale-free
    call = _group_call(proxlib.prox_exclusive_lasso, groups, gw, lam, draw(positive))
    return Case(call, (W,), W.shape, dtype, scale)


@st.composite
def group_exclusive_cases(draw, dtype):
    W, groups, gw, scale = draw(group_inputs(dtype))
    a = draw(factor) * scale * math.sqrt(W.size)  # lam (1 - mu): scales with the data
    b = draw(log_factor)  # lam mu: scale-free
    lam = a + b
    mu = b / lam if lam > 0 else draw(st.floats(0, 1))
    call = _group_call(proxlib.prox_group_exclusive, groups, gw, lam, min(mu, 1.0), draw(positive))
    return Case(call, (W,), W.shape, dtype, scale)


@st.composite
def weighted_l1_cases(draw, dtype):
    v, scale = draw(data_arrays(dtype, draw(shapes())))
    step = draw(positive)
    if draw(st.booleans()):  # one scalar weight
        w_scalar = draw(factor) * scale
        return Case(lambda xp, v: proxlib.prox_weighted_l1(v, w_scalar, step), (v,), v.shape, dtype, scale)
    w = (draw(arrays(np.float64, v.shape, elements=st.floats(0, 2))) * scale).astype(dtype)
    return Case(lambda xp, v, w: proxlib.prox_weighted_l1(v, w, step), (v, w), v.shape, dtype, scale)


@st.composite
def weighted_l2sq_cases(draw, dtype):
    v, scale = draw(data_arrays(dtype, draw(shapes())))
    w = draw(arrays(np.float64, v.shape, elements=st.floats(0, 4))).astype(dtype)  # scale-free
    step = draw(positive)
    return Case(lambda xp, v, w: proxlib.prox_weighted_l2sq(v, w, step), (v, w), v.shape, dtype, scale)


@st.composite
def lp_cases(draw, dtype):
    v, scale = draw(data_arrays(dtype, draw(shapes())))
    p = draw(st.sampled_from([0.0, 0.5, 2.0 / 3.0, 1.0, 0.3, 0.9]))
    lam = draw(factor) * scale ** (2.0 - p)  # the threshold then scales with the data
    step = draw(positive)
    return Case(lambda xp, v: proxlib.prox_lp(v, lam, p, step), (v,), v.shape, dtype, scale)


OPERATORS = {
    "prox_owl": owl_cases,
    "prox_growl": growl_cases,
    "prox_group_lasso": group_lasso_cases,
    "prox_exclusive_lasso": exclusive_cases,
    "prox_group_exclusive": group_exclusive_cases,
    "prox_weighted_l1": weighted_l1_cases,
    "prox_weighted_l2sq": weighted_l2sq_cases,
    "prox_lp": lp_cases,
}


def test_every_public_operator_is_covered():
    public = {name for name in proxlib.__all__ if name.startswith("prox_")}
    approximations = {"prox_exclusive_lasso_thesis", "prox_group_exclusive_sequential"}  # built on the others
    assert public - approximations == set(OPERATORS)


# ------------------------------------------------------------------ parity


class _Torch:
    """Stands for a namespace whose ``asarray`` makes torch tensors on the
    tests' device (CPU, or ``PROXLIB_TEST_DEVICE``: see ``_device.py``)."""

    asarray = staticmethod(_device.tensor)


def _namespace(backend):
    if backend == "cupy":
        import cupy

        return cupy
    if backend.startswith("torch"):
        return _Torch
    return np


@contextlib.contextmanager
def _using(backend):
    """``proxlib.use_backend(backend)``; "torch+numba": torch with its CPU
    tensors on Numba's serial kernels."""
    if backend != "torch+numba":
        with proxlib.use_backend(backend):
            yield
        return
    from proxlib.backends import torch_dev

    saved, torch_dev.CPU_KERNELS = torch_dev.CPU_KERNELS, "numba"
    try:
        with proxlib.use_backend("torch"):
            yield
    finally:
        torch_dev.CPU_KERNELS = saved


def _to_numpy(x):
    if hasattr(x, "detach"):
        return _device.to_numpy(x)
    return x.get() if hasattr(x, "get") else np.asarray(x)


def assert_matches_reference(got, ref, dtype, scale):
    """|got - ref| <= rtol |ref| + rtol * scale: relative to the entry and to the
    data's magnitude (entries that cancel to near zero carry the data's
    rounding), plus a few subnormal units (their spacing is absolute)."""
    rtol = RTOL[dtype]
    atol = rtol * scale + 8 * float(np.finfo(dtype).smallest_subnormal)
    np.testing.assert_allclose(
        _to_numpy(got).astype(np.float64), np.asarray(ref, dtype=np.float64), rtol=rtol, atol=atol
    )


def _owl_zero_and_constant(backend, v, c):
    """prox_owl of v with zero and with constant weights c on the backend, as NumPy arrays."""
    xp = _namespace(backend)
    with _using(backend):
        x0 = proxlib.prox_owl(xp.asarray(v), xp.asarray(np.zeros_like(v)))
        xc = proxlib.prox_owl(xp.asarray(v), xp.asarray(np.full_like(v, c)))
    return _to_numpy(x0), _to_numpy(xc)


@pytest.mark.parametrize("backend", [*BACKENDS, TORCH_ON_NUMBA])
@given(problem=R.near_ties())
def test_owl_near_ties_with_zero_or_constant_weights_are_exact(backend, problem):
    """The prox of the zero penalty is v, and constant weights give the
    correctly rounded |v| - c, where magnitudes lie an ulp or a few apart.
    Before the PAVAs kept a run of tied values exact (Numba: means clamped
    between the two it pools; NumPy: runs handed to SciPy as weighted
    points), about one such vector in ten (NumPy) or five (Numba) came out
    changed by up to 2 ulps."""
    v, c = problem
    x0, xc = _owl_zero_and_constant(backend, v, c)
    np.testing.assert_array_equal(x0, v)
    np.testing.assert_array_equal(xc, np.sign(v) * np.maximum(np.abs(v) - c, 0.0))


@pytest.mark.parametrize("backend", [*BACKENDS, TORCH_ON_NUMBA])
def test_owl_long_near_tied_vectors_are_exact(backend):
    # 70,000 entries: Numba's long path, whose PAVA runs on two halves and
    # merges them; 40 magnitudes, each jittered by up to 3 ulps (quantised
    # weights after a few updates).  The old PAVAs changed ~80% of the entries.
    rng = np.random.default_rng(7)
    n = 70_000
    v = rng.choice(rng.uniform(0.5, 20.0, 40), n)
    v += rng.integers(-3, 4, n) * np.spacing(v)
    v *= rng.choice([-1.0, 1.0], n)
    x0, xc = _owl_zero_and_constant(backend, v, 1 / 3)
    np.testing.assert_array_equal(x0, v)
    np.testing.assert_array_equal(xc, np.sign(v) * np.maximum(np.abs(v) - 1 / 3, 0.0))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the public API forming step * lam
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the reference's lp at lam = inf
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", [*BACKENDS, TORCH_ON_NUMBA])
@pytest.mark.parametrize("op", sorted(OPERATORS))
@given(data=st.data())
def test_operator_on_backend_matches_numpy_reference(op, backend, dtype, data):
    case = data.draw(OPERATORS[op](dtype), label="case")
    with proxlib.use_backend("numpy"):
        ref = case.call(np, *case.arrays)
    xp = _namespace(backend)
    inputs = tuple(xp.asarray(a) for a in case.arrays)
    before = tuple(_to_numpy(a).copy() for a in inputs)
    with _using(backend):
        got = case.call(xp, *inputs)
    assert type(got) is type(inputs[0]), f"{backend} returned {type(got).__name__}"
    if backend != "numpy" and backend != "numba":
        assert got.device == inputs[0].device
    assert str(got.dtype).removeprefix("torch.") == dtype
    assert got.shape == case.shape
    for a, b in zip(inputs, before):
        np.testing.assert_array_equal(_to_numpy(a), b, err_msg="an input was modified")
    assert not any(np.shares_memory(_to_numpy(got), _to_numpy(a)) for a in inputs) or backend == "cupy"
    if backend.startswith("torch"):
        assert not got.requires_grad
    assert_matches_reference(got, ref, dtype, case.scale)


# ------------------------------------------------------------------ larger inputs (compiled backends)

LARGE = {
    # rows x columns large enough for the parallel row kernels and several chunks of rows
    "prox_group_lasso": lambda W, scale: proxlib.prox_group_lasso(W, 0.8 * scale * math.sqrt(W.shape[1])),
    "prox_growl": lambda W, scale: proxlib.prox_growl(
        W, np.linspace(1.5, 0.0, W.shape[0]).astype(W.dtype) * W.dtype.type(scale * math.sqrt(W.shape[1]))
    ),
    "prox_exclusive_lasso": lambda W, scale: proxlib.prox_exclusive_lasso(W, 1.0 / W.shape[1]),
    "prox_exclusive_lasso_big_b": lambda W, scale: proxlib.prox_exclusive_lasso(W, 1e6),
    "prox_group_exclusive": lambda W, scale: proxlib.prox_group_exclusive(
        W, 0.3 * scale * math.sqrt(W.shape[1]) + 1.0 / W.shape[1], 1.0 / (0.3 * scale * W.shape[1] ** 1.5 + 1.0)
    ),
    # long vectors: the parallel elementwise kernels, OWL's table and parallel map
    "prox_owl": lambda W, scale: proxlib.prox_owl(W, np.linspace(2.0, 0.0, W.size).astype(W.dtype) * W.dtype.type(scale)),
    "prox_owl_sparse": lambda W, scale: proxlib.prox_owl(W, np.full(W.size, 1.5 * scale, dtype=W.dtype)),
    "prox_weighted_l1": lambda W, scale: proxlib.prox_weighted_l1(W, 0.5 * scale),
    "prox_weighted_l2sq": lambda W, scale: proxlib.prox_weighted_l2sq(W, np.abs(W) / W.dtype.type(scale)),
    "prox_lp": lambda W, scale: proxlib.prox_lp(W, 0.3 * scale**1.5, 0.5),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["gaussian", "ties"])
@pytest.mark.parametrize("op", sorted(LARGE))
def test_large_inputs_on_numba_match_numpy_reference(op, kind, dtype):
    if "numba" not in proxlib.available_backends():
        pytest.skip("numba does not import here")
    rng = np.random.default_rng(sum(map(ord, op + kind + dtype)))
    shape = (96, 700) if dtype == "float64" else (40, 1900)
    W = rng.standard_normal(shape)
    if kind == "ties":
        W = np.round(W * 2) / 2  # many equal magnitudes and zeros
        W[::7] = 0.0  # zero rows
    scale = 1e150 if (kind == "ties" and dtype == "float64") else 1.0
    W = (W * scale).astype(dtype)
    W0 = W.copy()
    with proxlib.use_backend("numpy"):
        ref = LARGE[op](W, scale)
    with proxlib.use_backend("numba"):
        got = LARGE[op](W, scale)
    np.testing.assert_array_equal(W, W0)
    assert type(got) is np.ndarray and got.dtype == W.dtype and got.shape == W.shape
    assert_matches_reference(got, ref, dtype, scale)


@pytest.mark.parametrize("backend", BACKENDS)
def test_owl_gives_equal_magnitudes_equal_outputs(backend):
    rng = np.random.default_rng(3)
    base = rng.standard_normal(50_000)
    v = np.where(rng.random(base.size) < 0.5, base, np.round(base * 4) / 4)  # many ties
    v *= rng.choice([-1.0, 1.0], v.size)
    w = np.sort(rng.random(v.size))[::-1] * 0.2
    xp = _namespace(backend)
    with proxlib.use_backend(backend):
        x = _to_numpy(proxlib.prox_owl(xp.asarray(v), xp.asarray(w)))
    a = np.abs(v)
    order = np.argsort(a, kind="stable")
    same = a[order][1:] == a[order][:-1]
    assert np.array_equal(np.abs(x)[order][1:][same], np.abs(x)[order][:-1][same])


# ------------------------------------------------------------------ dispatch


def test_numba_is_the_automatic_choice_for_numpy_arrays(monkeypatch):
    monkeypatch.delenv("PROXLIB_BACKEND", raising=False)
    expected = "numba" if "numba" in proxlib.available_backends() else "numpy"
    assert _dispatch.backend_for(np.zeros(3)).NAME == expected


def test_numpy_reference_is_the_fallback_when_numba_is_missing(monkeypatch):
    monkeypatch.delenv("PROXLIB_BACKEND", raising=False)
    monkeypatch.setitem(_dispatch._loaded, "numba", None)
    assert _dispatch.backend_for(np.zeros(3)).NAME == "numpy"
    np.testing.assert_array_equal(proxlib.prox_weighted_l1(np.array([2.0, -0.5]), 1.0), [1.0, -0.0])


def test_environment_variable_picks_the_backend(monkeypatch):
    monkeypatch.setenv("PROXLIB_BACKEND", "numpy")
    assert _dispatch.backend_for(np.zeros(3)).NAME == "numpy"


def test_environment_variable_is_read_at_every_call_by_either_lookup(monkeypatch):
    # the fast lookup (the environment's own dict) and the fallback
    # (os.environ.get) see the same settings, made after import
    for key in (_dispatch._ENV_KEY, None):
        monkeypatch.setattr(_dispatch, "_ENV_KEY", key)
        monkeypatch.setenv("PROXLIB_BACKEND", "numpy")
        assert _dispatch.backend_for(np.zeros(3)).NAME == "numpy"
        monkeypatch.delenv("PROXLIB_BACKEND")
        assert _dispatch._requested() is None


def test_use_backend_overrides_the_environment_and_restores(monkeypatch):
    if "numba" not in proxlib.available_backends():
        pytest.skip("numba does not import here")
    monkeypatch.setenv("PROXLIB_BACKEND", "numba")
    with proxlib.use_backend("numpy"):
        assert _dispatch.backend_for(np.zeros(3)).NAME == "numpy"
        with proxlib.use_backend(None):  # None: back to the automatic (here: environment) choice
            assert _dispatch.backend_for(np.zeros(3)).NAME == "numba"
    assert _dispatch.backend_for(np.zeros(3)).NAME == "numba"


def test_unknown_backend_names_raise(monkeypatch):
    with pytest.raises(ValueError, match="unknown proxlib backend"):
        with proxlib.use_backend("fortran"):
            pass
    for bad in (["numpy"], 3):  # (a list raised "unhashable type: 'list'", naming nothing)
        with pytest.raises(TypeError, match="use_backend's name must be a backend name"):
            with proxlib.use_backend(bad):
                pass
    monkeypatch.setenv("PROXLIB_BACKEND", "fortran")
    with pytest.raises(ValueError, match="unknown proxlib backend"):
        proxlib.prox_weighted_l1(np.ones(3), 1.0)


def test_cupy_backend_on_a_numpy_array_raises(monkeypatch):
    monkeypatch.delenv("PROXLIB_BACKEND", raising=False)
    with proxlib.use_backend("cupy"):
        with pytest.raises(ValueError, match="cannot run on a NumPy array"):
            proxlib.prox_weighted_l1(np.ones(3), 1.0)
    monkeypatch.setenv("PROXLIB_BACKEND", "cupy")
    with pytest.raises(ValueError, match="cannot run on a NumPy array"):
        proxlib.prox_group_lasso(np.ones((2, 2)), 1.0)


def test_use_backend_is_restored_when_the_block_raises(monkeypatch):
    # a use_backend block left by an exception must not leave its backend on
    monkeypatch.delenv("PROXLIB_BACKEND", raising=False)
    with pytest.raises(ZeroDivisionError):
        with proxlib.use_backend("numpy"):
            1 / 0
    assert _dispatch._requested() is None


def test_an_override_for_numpy_arrays_on_a_torch_tensor_raises(monkeypatch):
    # documented: numba/numpy named for a tensor raises instead of falling back
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("PROXLIB_BACKEND", raising=False)
    for name in ("numpy", "numba"):
        with proxlib.use_backend(name), pytest.raises(ValueError, match="cannot run on a torch tensor"):
            _dispatch.backend_for(torch.zeros(3))


def test_cupy_arrays_are_recognised_by_their_types_module(monkeypatch):
    # the array kind comes from the type's module: a CuPy ndarray (module
    # cupy._core.core) must not be taken for a NumPy array
    monkeypatch.setattr(_dispatch, "_KIND_OF_TYPE", {})
    fake = type("ndarray", (), {"__module__": "cupy._core.core"})
    assert _dispatch.array_kind(fake()) == "cupy"
    assert _dispatch.array_kind(np.zeros(1)) == "numpy" and _dispatch.array_kind([1.0]) == "numpy"


def test_device_of_a_tensor_is_its_own_device():
    # device(x) allocates next to x: a tensor off the CPU is not on "cpu"
    torch = pytest.importorskip("torch")
    assert _dispatch.device(torch.empty(2, device="meta")) == torch.device("meta")
    assert _dispatch.device(np.zeros(2)) == "cpu"


# ------------------------------------------------------- fused finiteness check

FUSED_CHECK_OPS = {
    "group_lasso": lambda W, **kw: proxlib.prox_group_lasso(W, 0.1, **kw),
    "growl": lambda W, **kw: proxlib.prox_growl(W, np.full(W.shape[0], 0.1), **kw),
    "exclusive_lasso": lambda W, **kw: proxlib.prox_exclusive_lasso(W, 0.1, **kw),
    "group_exclusive": lambda W, **kw: proxlib.prox_group_exclusive(W, 0.1, 0.5, **kw),
}


@pytest.mark.parametrize("op", sorted(FUSED_CHECK_OPS))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (1, 5), (4, 7), (64, 600)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_row_kernels_detect_nonfinite_input_from_their_row_norms(op, backend, dtype, shape, bad):
    """group lasso and GrOWL check finiteness inside the kernel (a row norm is
    finite iff its entries are), the exclusive operators from the row sums
    their first pass forms (a non-finite sum is then told apart from an
    overflow of finite entries).  Every position must be caught, including a
    NaN alone in a one-column row (once reported as a zero row); with
    check_finite=False the non-finite value propagates to the output instead;
    finite entries, however large, and rows whose sums overflow pass."""
    xp = _namespace(backend)
    rng = np.random.default_rng(0)
    W = rng.standard_normal(shape).astype(dtype)
    positions = {(0, 0), (shape[0] - 1, shape[1] - 1), (shape[0] // 2, shape[1] // 2)}
    fn = FUSED_CHECK_OPS[op]
    with proxlib.use_backend(backend):
        for pos in positions:
            Y = W.copy()
            Y[pos] = bad
            Yx = xp.asarray(Y)
            with pytest.raises(ValueError, match="W contains NaN or Inf"):
                fn(Yx)
            with np.errstate(all="ignore"):
                out = _to_numpy(fn(Yx, check_finite=False))
            assert not np.isfinite(out).all()
        big = W.copy()
        big[0, 0] = np.finfo(dtype).max  # finite, however large: accepted
        assert np.isfinite(_to_numpy(fn(xp.asarray(big)))).all()
        big[-1, :] = np.finfo(dtype).max  # a row whose sum (and square sum) overflows
        assert np.isfinite(_to_numpy(fn(xp.asarray(big)))).all()


# name -> (prox(v, per-entry weight w or None, **kw): the public function, thresholds that may be per entry)
ELEMENTWISE_MAPS = {
    "weighted_l1": lambda v, w, **kw: proxlib.prox_weighted_l1(v, 0.3 if w is None else w, 0.5, **kw),
    "weighted_l2sq": lambda v, w, **kw: proxlib.prox_weighted_l2sq(v, 0.3 if w is None else w, 0.5, **kw),
    "lp p=0": lambda v, w, **kw: proxlib.prox_lp(v, 0.3, 0.0, 0.5, **kw),
    "lp p=1/2": lambda v, w, **kw: proxlib.prox_lp(v, 0.3, 0.5, 0.5, **kw),
    "lp p=0.3": lambda v, w, **kw: proxlib.prox_lp(v, 0.3, 0.3, 0.5, **kw),
    "lp p=1": lambda v, w, **kw: proxlib.prox_lp(v, 0.3, 1.0, 0.5, **kw),
}


@pytest.mark.parametrize("op", sorted(ELEMENTWISE_MAPS))
@pytest.mark.parametrize("backend", [*BACKENDS, TORCH_ON_NUMBA])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [5, 70_000])  # (Numba's parallel kernels from 2^15 entries)
def test_elementwise_maps_pass_nonfinite_input_through(op, backend, dtype, n):
    """With check_finite=False a NaN stays NaN and +-inf stays +-inf (as
    through the optimizer's own update), with scalar and per-entry
    thresholds, Euclidean and in a diagonal metric, on every backend:
    Numba's soft threshold and every backend's lp once turned NaN into 0
    (``|x| > t`` is False for NaN), hiding a diverged parameter, and lp
    turned +-inf into 0 (NumPy) or 0.178 (Numba).  The finite entries are
    those of the finite input."""
    xp = _namespace(backend)
    rng = np.random.default_rng(n)
    v = rng.standard_normal(n).astype(dtype)
    bad = [0, n // 2, n - 1]
    v[bad] = [np.nan, np.inf, -np.inf]
    finite = v.copy()
    finite[bad] = 1.0
    rest = np.ones(n, dtype=bool)
    rest[bad] = False
    fn = ELEMENTWISE_MAPS[op]
    weights = [None] + ([rng.uniform(0.0, 1.0, n)] if op.startswith("weighted") else [])
    metrics = [None, rng.uniform(0.5, 2.0, n).astype(dtype)]
    for w in weights:
        for d in metrics:
            kw = {} if d is None else {"metric": xp.asarray(d)}
            with _using(backend), np.errstate(all="ignore"):
                out = _to_numpy(fn(xp.asarray(v), w, check_finite=False, **kw))
                want = _to_numpy(fn(xp.asarray(finite), w, **kw))
            assert np.isnan(out[0]) and out[n // 2] == np.inf and out[n - 1] == -np.inf, (w is None, d is None)
            np.testing.assert_array_equal(out[rest], want[rest])


@pytest.mark.parametrize("op", sorted(ELEMENTWISE_MAPS))
@pytest.mark.parametrize("backend", [*BACKENDS, TORCH_ON_NUMBA])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 5, 70_000])  # (Numba's parallel kernels from 2^15 entries)
def test_elementwise_maps_detect_nonfinite_input(op, backend, dtype, n):
    """With check_finite (the default) a NaN, +inf or -inf anywhere raises
    the ValueError naming ``v``, with scalar and per-entry thresholds, on
    every backend: Numba's kernels count them in their own pass (the
    separate check before the kernel cost more than the kernel), the
    others check before.  Finite entries, however large, pass, also where
    the thresholds are beyond the kernels' range, and at lam = 0; and there
    an infinity is still caught (lp then solves the problem rescaled, the
    entries too large to rescale set aside: infinities the kernel's own
    count would not see)."""
    xp = _namespace(backend)
    rng = np.random.default_rng(n)
    v = rng.standard_normal(n).astype(dtype)
    fn = ELEMENTWISE_MAPS[op]
    weights = [None] + ([rng.uniform(0.0, 1.0, n)] if op.startswith("weighted") else [])
    for w in weights:
        for pos in sorted({0, n // 2, n - 1}):
            for bad in (np.nan, np.inf, -np.inf):
                y = v.copy()
                y[pos] = bad
                with _using(backend), pytest.raises(ValueError, match="v contains NaN or Inf"):
                    fn(xp.asarray(y), w)
        big = v.copy()
        big[-1] = np.finfo(dtype).max
        big[0] = -np.finfo(dtype).max
        with _using(backend):
            assert np.isfinite(_to_numpy(fn(xp.asarray(big), w))).all()
    if op.startswith("lp"):
        p = {"lp p=0": 0.0, "lp p=1/2": 0.5, "lp p=0.3": 0.3, "lp p=1": 1.0}[op]
        for lam in (0.0, 1e-310, 1e305):  # (lam 0: a copy; beyond [2^-1000, 2^1000]: solved rescaled, by up to 2^1000)
            with _using(backend):
                assert np.isfinite(_to_numpy(proxlib.prox_lp(xp.asarray(big), lam, p))).all()
            for bad in (np.nan, np.inf, -np.inf):
                y = big.copy()
                y[n // 2] = bad
                with _using(backend), pytest.raises(ValueError, match="v contains NaN or Inf"):
                    proxlib.prox_lp(xp.asarray(y), lam, p)


@pytest.mark.parametrize("kernel", ["weighted_l1", "weighted_l2sq", "lp"])
@pytest.mark.parametrize("n", [5, 70_000])
def test_numba_elementwise_check_writes_nothing_in_place(kernel, n):
    """Numba's elementwise kernels with check_finite: into a new array the
    count comes from the map's own pass (the array written, then
    discarded); in place (out is v, or overlaps it) they check before
    writing, so that a NaN leaves v as it was."""
    NB = pytest.importorskip("proxlib.backends.numba_cpu")
    rng = np.random.default_rng(1)
    args = (np.full(1, 0.3),) if kernel != "lp" else (0.3, 0.5)
    fn = getattr(NB, kernel)
    assert fn.checks_finite
    for bad in (np.nan, np.inf, -np.inf):
        v = rng.standard_normal(n)
        v[n // 2] = bad
        with pytest.raises(NB.NonFiniteInput):
            fn(v, *args, check_finite=True)
        before = v.copy()
        with pytest.raises(NB.NonFiniteInput):
            fn(v, *args, out=v, check_finite=True)
        np.testing.assert_array_equal(v, before)
        with pytest.raises(NB.NonFiniteInput):
            fn(v[1:], *args, out=v[:-1], check_finite=True)  # (overlapping, not the same start)
        np.testing.assert_array_equal(v, before)
        v[n // 2] = 1.0
        want = fn(v.copy(), *args)
        np.testing.assert_array_equal(fn(v, *args, out=v, check_finite=True), want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lp_exact_tie_rule_on_every_backend(backend):
    """p = 1/2, lam = 8: tau = 1.5 * 8^(2/3) = 6 and x* = 4 with f(4) = 2 + 8*2 =
    18 = f(0): an exact tie, where the documented rule returns 0 (a kernel that
    compared |v| with the rounded tau = 5.999999999999999 returned 4).  One float
    above the tie, x* wins."""
    xp = _namespace(backend)
    with proxlib.use_backend(backend):
        tie = _to_numpy(proxlib.prox_lp(xp.asarray([6.0, -6.0]), 8.0, 0.5))
        above = _to_numpy(proxlib.prox_lp(xp.asarray([np.nextafter(6.0, 7.0)]), 8.0, 0.5))
    np.testing.assert_array_equal(tie, [0.0, 0.0])
    assert abs(above[0] - 4.0) <= 1e-7  # x* moves like sqrt(|v| - tau) off the tie


def test_numpy_weights_with_negative_strides_on_torch_tensors():
    """Weights such as np.sort(w)[::-1] (negative strides) work with torch input."""
    torch = pytest.importorskip("torch")
    w = np.sort(np.random.default_rng(0).random(6))[::-1]
    v = np.random.default_rng(1).standard_normal(6)
    with proxlib.use_backend("numpy"):
        ref = proxlib.prox_owl(v, w)
    np.testing.assert_allclose(proxlib.prox_owl(torch.as_tensor(v), w).numpy(), ref, rtol=1e-15)
    G = np.random.default_rng(2).standard_normal((6, 3))
    np.testing.assert_allclose(proxlib.prox_growl(torch.as_tensor(G), w).numpy(), proxlib.prox_growl(G, w), rtol=1e-12)


def test_every_torch_kernel_runs_on_both_cpu_routes():
    """Every kernel of ``KERNELS`` (the diagonal-metric ones included) runs on
    CPU tensors through both routes of ``torch_dev.CPU_KERNELS`` and they
    agree; only the kernels with a serial Numba variant leave torch."""
    torch = pytest.importorskip("torch")
    if "numba" not in proxlib.available_backends():
        pytest.skip("numba does not import here")
    from proxlib.backends import KERNELS, numba_cpu, torch_dev

    g = torch.Generator().manual_seed(0)
    W = torch.randn(5, 7, generator=g, dtype=torch.float64)
    D = torch.rand(5, 7, generator=g, dtype=torch.float64) + 0.5
    w = torch.sort(torch.rand(5, generator=g, dtype=torch.float64), descending=True).values
    t = torch.full((5,), 0.7, dtype=torch.float64)
    b = torch.full((5,), 0.3, dtype=torch.float64)
    v, d = W.reshape(-1), D.reshape(-1)
    calls = {
        "owl": (v, torch.linspace(1.0, 0.0, 35, dtype=torch.float64)),
        "growl": (W, w),
        "group_lasso": (W, t),
        "exclusive_lasso": (W, b),
        "group_exclusive": (W, t, b),
        "weighted_l1": (v, torch.full((1,), 0.4, dtype=torch.float64)),
        "weighted_l2sq": (v, torch.full((1,), 0.4, dtype=torch.float64)),
        "lp": (v, 0.3, 0.5),
        "weighted_l1_metric": (v, d, torch.full((1,), 0.4, dtype=torch.float64)),
        "weighted_l2sq_metric": (v, d, torch.full((1,), 0.4, dtype=torch.float64)),
        "lp_metric": (v, d, 0.3, 0.5),
        "group_lasso_metric": (W, D, t),
        "exclusive_lasso_metric": (W, D, b),
        "group_exclusive_metric": (W, D, t, b),
    }
    assert set(calls) == set(KERNELS)
    for name, args in calls.items():
        got = {}
        for route in ("torch", "numba"):
            saved, torch_dev.CPU_KERNELS = torch_dev.CPU_KERNELS, route
            try:
                got[route] = getattr(torch_dev, name)(*args)
            finally:
                torch_dev.CPU_KERNELS = saved
        assert type(got["numba"]) is torch.Tensor and got["numba"].shape == args[0].shape, name
        torch.testing.assert_close(got["numba"], got["torch"], rtol=1e-12, atol=1e-15, msg=name)
        serial = "parallel" in __import__("inspect").signature(getattr(numba_cpu, name)).parameters
        assert (name in torch_dev._SERIAL_ON_NUMBA) == serial, name


def test_prox_owl_names_the_pava_that_runs_on_a_cpu_tensor(monkeypatch):
    """prox_owl's Notes said a torch CPU tensor's pool-adjacent-violators
    pass runs SciPy's; on the default route (``CPU_KERNELS = "auto"``) it
    is Numba's serial kernel (SciPy's only with ``"torch"``): the Notes
    name both, and the routes do what they say."""
    torch = pytest.importorskip("torch")
    if "numba" not in proxlib.available_backends():
        pytest.skip("numba does not import here")
    from proxlib.backends import numba_cpu, numpy_ref, torch_dev

    calls = []
    for mod, name, tag in ((numba_cpu, "owl", "numba"), (numba_cpu, "owl_checked", "numba"), (numpy_ref, "owl", "scipy")):
        f = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _f=f, _t=tag, **k: (calls.append(_t), _f(*a, **k))[1])
    v = torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)
    for route, want in (("auto", "numba"), ("torch", "scipy")):
        monkeypatch.setattr(torch_dev, "CPU_KERNELS", route)
        calls.clear()
        proxlib.prox_owl(v, np.array([3.0, 0.5, 0.0]))
        assert calls == [want], route
    notes = " ".join(proxlib.prox_owl.__doc__.split("Notes")[1].split())
    assert "Numba's serial kernel" in notes and '"auto"' in notes and "SciPy" in notes


@pytest.mark.parametrize("name", ["group_lasso", "exclusive", "group_exclusive"])
@pytest.mark.parametrize("metric", [False, True])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_unchecked_rows_holding_nan_or_inf_pass_through_on_every_backend(name, metric, order, dtype):
    """check_finite=False: a row holding NaN or +-Inf comes back as it is
    (its finite entries too) on every backend and route, with or without a
    metric and a finite or infinite b; the other rows are solved as alone.
    (The group lasso's Numba kernel zeroed a NaN row around its NaN, the
    reference made it all NaN.)"""
    rng = np.random.default_rng(3)
    W = np.asarray(rng.standard_normal((6, 5)), dtype=dtype, order=order)
    W[0, 1], W[2, 0], W[3, 4], W[5, 2] = np.inf, np.nan, -np.inf, np.nan
    W[5, 3] = np.inf
    bad = [0, 2, 3, 5]
    kw = dict(check_finite=False, metric=np.full(W.shape, 2.0) if metric else None)
    fn = {
        "group_lasso": lambda X, **k: proxlib.prox_group_lasso(X, 0.7, **k),
        "exclusive": lambda X, **k: proxlib.prox_exclusive_lasso(X, 0.7, **k),
        "group_exclusive": lambda X, **k: proxlib.prox_group_exclusive(X, 0.7, 0.4, **k),
    }[name]
    good = np.setdiff1d(np.arange(6), bad)
    results = {}
    for backend in proxlib.available_backends():
        if backend == "cupy":
            continue
        if backend == "torch":
            import torch

            from proxlib.backends import torch_dev

            for route in ("torch", "auto"):
                saved, torch_dev.CPU_KERNELS = torch_dev.CPU_KERNELS, route
                try:
                    results[f"torch {route}"] = fn(torch.from_numpy(W.copy(order=order)), **kw).numpy()
                finally:
                    torch_dev.CPU_KERNELS = saved
        else:
            with proxlib.use_backend(backend):
                results[backend] = fn(W, **kw)
    for where, X in results.items():
        np.testing.assert_array_equal(X[bad], W[bad], err_msg=where)
        alone = fn(np.ascontiguousarray(W[good]), **kw) if not metric else fn(np.ascontiguousarray(W[good]), check_finite=False, metric=np.full((len(good), 5), 2.0))
        np.testing.assert_allclose(X[good], alone, rtol=1e-12 if dtype == np.float64 else 1e-6, atol=0, err_msg=where)


@pytest.mark.parametrize("name", ["group_lasso", "growl"])
@pytest.mark.parametrize("k", [-525, -600, 1019])
def test_torch_row_kernels_are_exact_at_extreme_float64_scales(name, k):
    """The torch route's row kernels at the scales where the unscaled sum of
    squares is not enough (``_stages.norms_from_sumsq``, ``growl_factor``):
    the group lasso and GrOWL are positively homogeneous, so W 2^k with
    thresholds 2^k must give 2^k times the result at O(1) (powers of two:
    exact).  2^-525: squares subnormal (sums near 2^-1048, 24 bits left);
    2^-600: squares underflow to 0 (the norm's scale s kept apart); 2^1019:
    norms near 2^1020, whose OWL sums overflow unless the common scale is
    taken out.  The NumPy reference shares these stages, so it cannot tell."""
    torch = pytest.importorskip("torch")
    from proxlib.backends import torch_dev

    rng = np.random.default_rng(5)
    W = rng.uniform(0.5, 1.0, (32, 8)) * rng.choice([-1.0, 1.0], (32, 8))
    t = np.linspace(2.5, 0.0, 32) if name == "growl" else np.full(32, 2.2)
    kernel = getattr(torch_dev, name)
    at_one = kernel(torch.from_numpy(W), torch.from_numpy(t)).numpy()
    assert np.count_nonzero(at_one) > 0 and not np.array_equal(at_one, W)
    got = kernel(torch.from_numpy(W * 2.0**k), torch.from_numpy(t * 2.0**k)).numpy()
    np.testing.assert_allclose(got, at_one * 2.0**k, rtol=1e-14, atol=0)
