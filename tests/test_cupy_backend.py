"""The CuPy backend: its algorithms on the CPU, and the real thing where a GPU is.

CI has no GPU, so the GPU logic is written as array-namespace code and tested
here with NumPy:

* ``_gpu_owl`` (the OWL prox and isotonic step, shared with torch tensors):
  ``tests/test_device_owl.py``, on NumPy arrays, CPU torch tensors and the
  interpreted Triton kernel;
* ``_stages``: the single-pass row operators with the generic primitives,
  including the rows whose unscaled sum of squares would under- or overflow;
* ``cupy_gpu`` itself, imported with NumPy standing in for CuPy, so that its
  wiring runs too; a static check that no host transfer is written anywhere
  on the CuPy path; and that it defines every kernel.

The tests marked ``gpu`` need CuPy and a device and skip cleanly otherwise:
every public operator with CuPy input returns a CuPy array on the input's
device with the input's dtype and shape and the NumPy reference's values;
no array is copied to the host on the way; fused and generic paths agree.
"""

from __future__ import annotations

import ast
import importlib
import math
import pathlib
import types

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import proxlib
from proxlib import _dispatch
from proxlib.backends import KERNELS, _gpu_owl, _stages, numpy_ref
from test_device_owl import owl_problems  # OWL inputs shared with the device-OWL tests

BACKENDS = pathlib.Path(proxlib.__file__).parent / "backends"
TOL = {np.float64: 1e-12, np.float32: 1e-5}

# ------------------------------------------------------------------ strategies

_POOL = [0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0]


def _elements():
    return st.one_of(st.sampled_from(_POOL), st.floats(-10.0, 10.0, allow_nan=False, allow_subnormal=False))


def _close(got, ref, scale, dtype, flushed=0.0):
    """Within the dtype's tolerance of ``ref`` (relative, and to ``scale``),
    plus ``flushed``: an absolute allowance for subnormals that the arithmetic
    flushed to zero (:func:`_close_on_cupy`)."""
    tol = TOL[np.dtype(dtype).type]
    np.testing.assert_allclose(
        np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64), rtol=tol, atol=tol * scale + flushed
    )


#: CuPy compiles every kernel with ``-ftz=true``, which a caller cannot turn
#: off (cupy/cupy#9576): on a GPU, float32 subnormals in its arithmetic read
#: and come out as 0.  Found on the first GPU run: OWL of [1e-45] with weight 0
#: gave 0 (torch tensors on CUDA keep subnormals and pass the same tests).
_CUPY_FLUSH = {np.float64: 0.0, np.float32: float(np.finfo(np.float32).smallest_normal)}


def _close_on_cupy(got, ref, scale, dtype):
    """:func:`_close` for results of CuPy's arithmetic: a float32 entry may
    also differ from the reference by a flushed subnormal (below the smallest
    normal float32); float64 as ``_close``."""
    _close(got, ref, scale, dtype, flushed=_CUPY_FLUSH[np.dtype(dtype).type])


def _scale(*arrays_):
    return max([float(np.max(np.abs(a.astype(np.float64)), initial=0.0)) for a in arrays_] + [1e-300])


# ---------------------------------------------------- row operators (NumPy)


@st.composite
def row_problems(draw):
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    G = draw(st.integers(1, 6))
    m = draw(st.integers(0, 5))
    W = draw(arrays(np.float64, (G, m), elements=_elements()))
    # rows of very different magnitudes in one matrix: tiny and huge rows take
    # the scaled fallback in float64
    exps = [-200, -170, -30, 0, 30, 170, 200] if dtype == np.float64 else [-20, 0, 20]
    W *= 10.0 ** np.array(draw(st.lists(st.sampled_from(exps), min_size=G, max_size=G)))[:, None]
    # thresholds comparable to each row's norm
    a = draw(arrays(np.float64, G, elements=st.floats(0.0, 3.0))) * np.abs(W).max(axis=1, initial=0.0) * np.sqrt(m)
    w = np.array(sorted(draw(st.lists(st.floats(0.0, 3.0), min_size=G, max_size=G)), reverse=True))
    w *= float(np.max(np.abs(W), initial=0.0)) + 1.0
    return W.astype(dtype), a.astype(dtype), w.astype(dtype)


@given(problem=row_problems())
def test_single_pass_row_operators_match_reference(problem):
    W, a, w = problem
    prims = _stages.GENERIC
    ref_norms = np.asarray(
        [math.hypot(*r) if r.size else 0.0 for r in W.astype(np.float64)]
    )  # hypot: exact up to rounding at any scale
    nrm = _stages.row_norms(W, prims)
    np.testing.assert_allclose(nrm, ref_norms, rtol=1e-14, atol=0)
    row_scale = np.abs(W.astype(np.float64)).max(axis=1, keepdims=True, initial=0.0)
    for got, ref, scale in [
        (_stages.group_lasso(W, a, prims), numpy_ref.group_lasso(W, a), row_scale),  # rows independent
        (_stages.growl(W, w, _gpu_owl.owl, prims), numpy_ref.growl(W, w), _scale(W, w)),  # rows coupled
    ]:
        assert got.dtype == W.dtype and got.shape == W.shape
        tol = TOL[W.dtype.type]
        err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        assert np.all(err <= tol * (np.abs(ref.astype(np.float64)) + scale)), (got, ref)


# ------------------------------------------------ the cupy_gpu module itself


def _top_level_names(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return tree, names


def test_cupy_module_defines_every_kernel():
    tree, names = _top_level_names(BACKENDS / "cupy_gpu.py")
    assert set(KERNELS) <= names
    all_node = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "__all__")
    # __all__ is either the literal list of kernel names or derived from KERNELS.
    value = all_node.value
    if isinstance(value, ast.Call):
        assert ast.unparse(value) == "list(KERNELS)"
    else:
        assert sorted(ast.literal_eval(value)) == sorted(KERNELS)


_GPU_PATH = ["cupy_gpu.py", "_gpu_owl.py", "_triton_isotonic.py", "_stages.py", "_xp_kernels.py"]


@pytest.mark.parametrize("module", _GPU_PATH)
def test_no_host_transfer_is_written_on_the_cupy_path(module):
    """No module on the CuPy path imports NumPy or calls anything that copies a
    device array to the host; scalar reads (int()/bool() of a reduction) are
    the only device-to-host traffic, and are listed in the modules' docs."""
    tree = ast.parse((BACKENDS / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not any(a.name.split(".")[0] == "numpy" for a in node.names), module
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] != "numpy", module
        if isinstance(node, ast.Attribute):
            assert node.attr not in {"get", "asnumpy", "tolist", "item", "tobytes", "__array__"}, (module, node.attr)
        if isinstance(node, ast.Name):
            assert node.id not in {"np", "numpy", "float"}, (module, node.id, node.lineno)


@pytest.fixture
def cupy_gpu_on_numpy(cupy_gpu_against):
    """``proxlib.backends.cupy_gpu`` imported with NumPy standing in for CuPy."""
    return cupy_gpu_against(np)


def _kernel_cases(dtype):
    rng = np.random.default_rng(11)
    v = rng.standard_normal(50).astype(dtype)
    v[:10] = np.round(v[:10])
    W = rng.standard_normal((7, 9)).astype(dtype)
    W[2] = 0
    g = np.sort(rng.random(7))[::-1].astype(dtype)
    return {
        "owl": (v, np.sort(rng.random(50))[::-1].astype(dtype)),
        "growl": (W, g),
        "group_lasso": (W, (2 * rng.random(7)).astype(dtype)),
        "exclusive_lasso": (W, rng.random(7).astype(dtype)),
        "group_exclusive": (W, rng.random(7).astype(dtype), rng.random(7).astype(dtype)),
        "weighted_l1": (v, rng.random(50).astype(dtype)),
        "weighted_l2sq": (v, rng.random(1).astype(dtype)),
        "lp": (v, 0.3, 0.5),
    }


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cupy_module_runs_every_kernel_with_numpy_standing_in(cupy_gpu_on_numpy, monkeypatch, dtype, fused):
    mod = cupy_gpu_on_numpy
    monkeypatch.setattr(mod, "FUSED", fused)
    monkeypatch.setattr(mod, "_cuda_prims", lambda: _stages.GENERIC)  # CUDA kernels need a GPU
    for name, args in _kernel_cases(dtype).items():
        got = getattr(mod, name)(*args)
        ref = getattr(numpy_ref, name)(*args)
        assert type(got) is np.ndarray and got.dtype == args[0].dtype and got.shape == args[0].shape, name
        _close(got, ref, _scale(args[0]), dtype)


def _stand_in_soft_threshold(v, w):
    # the CUDA source, line for line: T mag = fabs(v) - w; T c = mag < 0 ? 0 : mag; x = v < 0 ? -c : (v >= 0 ? c : v)
    mag = np.abs(v) - w
    c = np.where(mag < 0, v.dtype.type(0), mag)
    return np.where(v < 0, -c, np.where(v >= 0, c, v)).astype(v.dtype)


class _CupyKernelsOnNumpy(types.ModuleType):
    """NumPy standing in for CuPy, with ``ElementwiseKernel`` and
    ``ReductionKernel`` that take their arguments as CuPy's do: the inputs,
    then optionally the outputs, positionally (a None among them is CuPy's
    ``TypeError: Unsupported type NoneType``), ``axis=`` for a reduction.  The
    kernels are known by name and computed with NumPy as their CUDA source
    reads (the sources themselves are compiled in test_nvrtc.py)."""

    _MAPS = {
        "proxlib_scale_rows": lambda w, f: (w.astype(np.float64) * f).astype(w.dtype),
        "proxlib_soft_threshold": lambda v, w: _stand_in_soft_threshold(v, w),
        "proxlib_l2sq_shrink": lambda v, w: (v / (v.dtype.type(1) + v.dtype.type(2) * w)).astype(v.dtype),
    }

    def __init__(self):
        super().__init__("cupy")
        self.__dict__.update({k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
        self.calls = []

    def ElementwiseKernel(self, in_params, out_params, operation, name):  # noqa: N802 - CuPy's name
        n_in = len(in_params.split(","))
        fn = self._MAPS[name]

        def call(*args):
            if any(a is None for a in args):
                raise TypeError("Unsupported type <class 'NoneType'>")
            assert len(args) in (n_in, n_in + 1), (name, len(args))
            self.calls.append((name, len(args) - n_in))
            res = fn(*args[:n_in])
            if len(args) == n_in:
                return res
            args[n_in][...] = np.broadcast_to(res, args[n_in].shape)
            return args[n_in]

        return call

    def ReductionKernel(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name):  # noqa: N802
        assert name == "proxlib_row_sumsq"

        def call(x, axis):
            self.calls.append((name, 0))
            return np.sum(np.square(x.astype(np.float64)), axis=axis)

        return call


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_primitives_are_called_as_cupy_calls_its_kernels(cupy_gpu_against, dtype):
    # The fused path's wiring, which "NumPy standing in" above replaces by the
    # generic primitives: on the first GPU run it passed out=None to CuPy.
    fake = _CupyKernelsOnNumpy()
    mod = cupy_gpu_against(fake)
    mod._cuda_prims.cache_clear()
    try:
        for name, args in _kernel_cases(dtype).items():
            if name not in ("group_lasso", "growl", "weighted_l1", "weighted_l2sq"):
                continue  # the staged operators: the ones on the fused primitives
            got = getattr(mod, name)(*args)
            _close(got, getattr(numpy_ref, name)(*args), _scale(args[0]), dtype)
        prims = mod._cuda_prims()
        W, f = _kernel_cases(dtype)["growl"][0], np.linspace(0.0, 1.0, 7)
        into = np.empty_like(W)
        assert prims.scale_rows(W, f, out=into) is into
        np.testing.assert_array_equal(into, prims.scale_rows(W, f))
        assert {n for n, _ in fake.calls} == {"proxlib_row_sumsq", "proxlib_scale_rows", "proxlib_soft_threshold", "proxlib_l2sq_shrink"}
        assert {k for n, k in fake.calls if n == "proxlib_scale_rows"} == {0, 1}  # with and without an output
    finally:
        mod._cuda_prims.cache_clear()


# The fused elementwise sources compiled for the host: CuPy compiles them for
# the GPU only, and the NumPy stand-in above restates them by hand, so a
# difference between a source and the generic primitive it replaces (NaN,
# the sign of zero) would only show on a GPU.  float32 subnormals aside
# (CuPy's -ftz=true, module doc of cupy_gpu), the host's IEEE arithmetic is
# the device's for these operations.
_HOST_PRIMITIVES = {  # kernel name -> (generic primitive, per-row second argument)
    "proxlib_scale_rows": (_stages.GENERIC.scale_rows, True),
    "proxlib_soft_threshold": (_stages.GENERIC.soft_threshold, False),
    "proxlib_l2sq_shrink": (_stages.GENERIC.l2sq_shrink, False),
}


def _host_elementwise(tmp_path, in_params, out_params, operation, name):
    """The ElementwiseKernel source as a host function per dtype (T = float, double),
    compiled by the system C++ compiler; ``call(dtype, *inputs)`` (equal shapes)."""
    import ctypes
    import shutil
    import subprocess

    from test_nvrtc import _params

    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    ins, outs = _params(in_params), _params(out_params)
    assert not any(raw for raw, _, _ in ins + outs) and len(outs) == 1, name
    ctypes_of = {"float64": "double", "float32": "float"}
    src = ["#include <cmath>", "using std::fabs; using std::copysign; using std::sqrt;"]
    for T, suffix in (("float", "f32"), ("double", "f64")):
        def c(t, T=T):
            return T if t not in ctypes_of else ctypes_of[t]
        sig = [f"const {c(t)}* _in_{v}" for _, t, v in ins] + [f"{c(outs[0][1])}* _out", "long long n"]
        reads = " ".join(f"const {c(t)} {v} = _in_{v}[i];" for _, t, v in ins)
        src.append(f'extern "C" void {name}_{suffix}({", ".join(sig)}) {{ typedef {T} T;\n'
                   f"  for (long long i = 0; i < n; ++i) {{ {reads} {c(outs[0][1])} {outs[0][2]}; {operation}; _out[i] = {outs[0][2]}; }}\n}}")  # fmt: skip
    cpp, lib = tmp_path / f"{name}.cpp", tmp_path / f"{name}.so"
    cpp.write_text("\n".join(src) + "\n")
    subprocess.run([cxx, "-O1", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC", "-o", str(lib), str(cpp)], check=True)
    dll = ctypes.CDLL(str(lib))

    def call(dtype, *inputs):
        suffix = "f32" if dtype == np.float32 else "f64"
        arrs = [np.ascontiguousarray(a, dtype=dtype if t not in ctypes_of else np.dtype(t)) for a, (_, t, _) in zip(inputs, ins)]
        out = np.empty(arrs[0].shape, dtype=dtype)
        getattr(dll, f"{name}_{suffix}")(*(a.ctypes.data_as(ctypes.c_void_p) for a in arrs + [out]), ctypes.c_longlong(out.size))
        return out

    return call


def _same_bits(got, want, msg):
    """Equal values, NaN where NaN (any payload), and the same sign of zero."""
    assert got.dtype == want.dtype, msg
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=msg)
    np.testing.assert_array_equal(got[~nan], want[~nan], err_msg=msg)
    np.testing.assert_array_equal(np.signbit(got[~nan]), np.signbit(want[~nan]), err_msg=msg)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_elementwise_sources_give_the_generic_primitives_bits(tmp_path, dtype):
    """Each ElementwiseKernel of cupy_gpu, compiled for the host, against the
    generic primitive it stands for on every pair of special values: NaN
    (kept, as on every other backend: prox_lp's doc), +-inf, +-0, ties
    |v| = w, huge and tiny numbers.  (The soft threshold's source mapped NaN
    to 0 and wrote +0 where the primitive writes -0.)"""
    from test_nvrtc import cupy_kernels

    found = {args[-1]: args for module, kind, args, _ in cupy_kernels() if module == "cupy_gpu.py" and kind == "ElementwiseKernel"}
    assert set(found) == set(_HOST_PRIMITIVES)
    big = float(np.finfo(dtype).max)
    vals = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0, 1e-30, -1e30, big, -big], dtype=dtype)
    thr = np.array([0.0, 0.5, 1.0, 3.0, 1e-30, 1e30, big, np.inf], dtype=dtype)
    v = np.repeat(vals, thr.size).reshape(vals.size, thr.size)
    w = np.tile(thr, (vals.size, 1))
    for name, (primitive, per_row) in _HOST_PRIMITIVES.items():
        host = _host_elementwise(tmp_path, *found[name])
        with np.errstate(all="ignore"):
            if per_row:  # scale_rows(W, f): row r of W times the float64 factor f_r
                f = np.array([0.0, 0.5, 1.0, 2.0, 1e-300, 1e300, np.inf, np.nan], dtype=np.float64)
                W = np.tile(vals, (f.size, 1))
                want = primitive(W, f)
                got = host(dtype, W, np.broadcast_to(f[:, None], W.shape))
            else:
                want = primitive(v, w)
                got = host(dtype, v, w)
        _same_bits(got, want, name)


def test_cupy_backend_is_unavailable_without_cupy():
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("cupy is installed here")
    assert "cupy" not in _dispatch.available_backends()
    with pytest.raises(ImportError):
        importlib.import_module("proxlib.backends.cupy_gpu")


# ------------------------------------------------------- real CuPy (GPU only)


def _gpu_skip_reason():
    if importlib.util.find_spec("cupy") is None:
        return "cupy is not installed"
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device"
    except Exception as exc:  # CUDA driver or runtime missing
        return f"no usable CUDA device ({type(exc).__name__})"
    return None


_NO_GPU = _gpu_skip_reason()
needs_gpu = pytest.mark.skipif(_NO_GPU is not None, reason=f"GPU tests: {_NO_GPU}")


@pytest.fixture
def cp():
    if _NO_GPU is not None:
        pytest.skip(_NO_GPU)
    import cupy

    return cupy


def _public_cases(dtype, rng, n=300):
    """(name, call, numpy arguments): one call per public operator."""
    v = rng.standard_normal(n) * rng.choice([1.0, 10.0], n)
    v[: n // 5] = np.round(v[: n // 5])  # ties and zeros
    W = rng.standard_normal((24, 17))
    W[3] = 0.0
    W[5] = -W[4]  # tied norms
    W[6] *= 1e-3
    owl_w = np.sort(rng.random(n))[::-1]
    growl_w = np.sort(rng.random(24) * 5)[::-1]
    return [
        ("prox_owl", lambda v, w: proxlib.prox_owl(v, w, 0.7), (v, owl_w)),
        ("prox_growl", lambda W, w: proxlib.prox_growl(W, w, 0.7), (W, growl_w)),
        ("prox_group_lasso", lambda W: proxlib.prox_group_lasso(W, 1.5), (W,)),
        ("prox_exclusive_lasso", lambda W: proxlib.prox_exclusive_lasso(W, 0.4), (W,)),
        ("prox_group_exclusive", lambda W: proxlib.prox_group_exclusive(W, 0.8, 0.4), (W,)),
        ("prox_weighted_l1", lambda v, w: proxlib.prox_weighted_l1(v, w), (v, rng.random(n))),
        ("prox_weighted_l2sq", lambda v: proxlib.prox_weighted_l2sq(v, 0.3), (v,)),
        ("prox_lp", lambda v: proxlib.prox_lp(v, 0.5, 0.5), (v,)),
    ]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gpu_public_operators_match_numpy_reference(cp, monkeypatch, dtype, fused):
    from proxlib.backends import cupy_gpu

    monkeypatch.setattr(cupy_gpu, "FUSED", fused)
    rng = np.random.default_rng(5)
    for name, call, args in _public_cases(dtype, rng):
        host = tuple(a.astype(dtype) for a in args)
        with proxlib.use_backend("numpy"):
            ref = call(*host)
        dev = tuple(cp.asarray(a) for a in host)
        got = call(*dev)
        assert isinstance(got, cp.ndarray), name
        assert got.device == dev[0].device, name
        assert got.dtype == host[0].dtype and got.shape == host[0].shape, name
        _close_on_cupy(cp.asnumpy(got), ref, _scale(*host), dtype)


@needs_gpu
@given(problem=owl_problems())
def test_gpu_owl_matches_numpy_reference_on_hypothesis_inputs(problem):
    import cupy as cp

    v, w = problem
    x = proxlib.prox_owl(cp.asarray(v), cp.asarray(w))
    assert isinstance(x, cp.ndarray) and x.dtype == v.dtype and x.shape == v.shape
    with proxlib.use_backend("numpy"):
        ref = proxlib.prox_owl(v, w)
    _close_on_cupy(cp.asnumpy(x), ref, _scale(v, w), v.dtype)


@pytest.mark.parametrize("n", [10**6, 10**7])
def test_gpu_owl_large(cp, n):
    rng = np.random.default_rng(n)
    v = rng.standard_normal(n)
    w = 0.1 * np.sqrt(2 * np.log(2 * n / np.arange(1, n + 1)))
    x = proxlib.prox_owl(cp.asarray(v), cp.asarray(w))
    with proxlib.use_backend("numpy"):
        ref = proxlib.prox_owl(v, w)
    _close(cp.asnumpy(x), ref, _scale(v, w), np.float64)


def test_gpu_path_copies_no_array_to_the_host(cp, monkeypatch):
    """Every public operator runs with array device-to-host copies forbidden.

    ``cupy.asnumpy`` and ``ndarray.get`` raise for any array of more than one
    element; scalar reads (loop conditions, output sizes) stay allowed.
    """
    real_get = cp.ndarray.get
    real_asnumpy = cp.asnumpy

    def guarded_get(self, *args, **kwargs):
        if self.size > 1:
            raise AssertionError(f"device-to-host copy of {self.shape} array")
        return real_get(self, *args, **kwargs)

    def guarded_asnumpy(a, *args, **kwargs):
        if getattr(a, "size", 0) > 1:
            raise AssertionError(f"device-to-host copy of {a.shape} array")
        return real_asnumpy(a, *args, **kwargs)

    try:
        monkeypatch.setattr(cp.ndarray, "get", guarded_get)
    except (TypeError, AttributeError):
        pytest.skip("this CuPy's ndarray.get cannot be patched")
    monkeypatch.setattr(cp, "asnumpy", guarded_asnumpy)
    with pytest.raises(AssertionError):  # the guard itself works
        cp.arange(3).get()
    rng = np.random.default_rng(9)
    for dtype in (np.float64, np.float32):
        for name, call, args in _public_cases(dtype, rng, n=5000):
            dev = tuple(cp.asarray(a.astype(dtype)) for a in args)
            out = call(*dev)
            assert isinstance(out, cp.ndarray), name


def test_gpu_result_stays_on_the_input_device(cp):
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two devices")
    rng = np.random.default_rng(2)
    with cp.cuda.Device(1):
        for name, call, args in _public_cases(np.float64, rng):
            dev = tuple(cp.asarray(a) for a in args)
            with cp.cuda.Device(0):  # a different current device
                out = call(*dev)
            assert out.device.id == 1, name


def test_gpu_fused_row_kernels_handle_extreme_rows(cp, monkeypatch):
    from proxlib.backends import cupy_gpu

    rng = np.random.default_rng(4)
    W = rng.standard_normal((6, 33)) * np.array([1e-200, 1e-170, 1.0, 1e170, 1e200, 0.0])[:, None]
    a = np.abs(W).max(axis=1) * 2.0
    w = np.sort(rng.random(6))[::-1] * 1e200
    for fused in (True, False):
        monkeypatch.setattr(cupy_gpu, "FUSED", fused)
        got = cupy_gpu.group_lasso(cp.asarray(W), cp.asarray(a))
        _close(cp.asnumpy(got), numpy_ref.group_lasso(W, a), 1.0, np.float64)
        got = cupy_gpu.growl(cp.asarray(W), cp.asarray(w))
        _close(cp.asnumpy(got), numpy_ref.growl(W, w), 1e200, np.float64)
