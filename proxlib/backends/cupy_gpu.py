"""CuPy backend: every kernel of ``KERNELS`` on the input's own GPU.

Importing this module raises ImportError when CuPy is not installed, which is
how ``proxlib._dispatch.available_backends()`` leaves it out.  The algorithms
live in modules that import without CuPy and are tested on the CPU with NumPy:

* ``owl``: ``_gpu_owl`` -- ``cupy.sort`` of the magnitudes, then a parallel
  isotonic step (lower convex hull of the prefix sums by peeling and bridging,
  O(log n) rounds), then a ``searchsorted`` that maps each entry to its block;
* ``group_lasso``, ``growl``, ``weighted_l1``, ``weighted_l2sq``: the staged
  operators of ``_stages`` with the fused CUDA primitives defined below (one
  read of ``W`` for the row norms, one read and one write for the result);
* ``exclusive_lasso``, ``group_exclusive``, ``lp``: the namespace-generic
  reference kernels of ``_xp_kernels`` run by CuPy (rows sorted on the device,
  thresholds batched over rows with cumulative sums);
* the ``*_metric`` kernels (the prox in a diagonal metric): ``_metric_kernels``
  run by CuPy, the row kernels with ``gather=False`` (every row of a case
  that occurs is solved, the others on a stand-in: no ``nonzero``).

Arrays never leave the device: there is no ``.get()``, ``asnumpy`` or NumPy
call on device data anywhere on these paths.  What does cross is a few
scalars: loop conditions (``bool(xp.any(...))``), the isotonic step's count
of reflex vertices per round and longest run per merge, and the output sizes
that boolean compaction and ``nonzero`` need; each is an 8-byte read and a
stream synchronisation.  Every kernel runs with the input's device current
(``_with_device``), so its scratch and result are allocated there, and array
arguments that live on another device are copied over device to device.

``FUSED = False`` runs the array-API generic primitives everywhere (the GPU
tests compare both paths).

float32 subnormals: CuPy compiles every kernel, its own and these, with
``-ftz=true`` and a caller cannot turn that off (cupy/cupy#9576), so in
float32 a subnormal input reads as 0 and a subnormal result comes out as 0
(an absolute error below 2^-126, the smallest normal float32).  float64 keeps
subnormals; so do torch tensors on CUDA, in both dtypes (the torch backend,
measured on an H200: the same tests pass there without this allowance).
"""

from __future__ import annotations

import contextlib
import functools
from types import SimpleNamespace

import cupy  # ImportError here marks the backend unavailable

from . import KERNELS
from . import _gpu_owl, _stages
from . import _xp_kernels as _k

__all__ = list(KERNELS)  # the same kernel names in every backend

NAME = "cupy"

#: Use the fused CUDA primitives for the row and elementwise operators.
FUSED = True


@functools.cache
def _cuda_prims() -> SimpleNamespace:
    """The primitives of ``_stages`` as fused CuPy kernels (built on first use,
    compiled by CuPy on first call and cached on disk).

    Each mirrors the function of the same name in ``_stages.GENERIC``
    operation for operation (products and differences formed in the same
    precision, rounded once), so results agree with it to the last bit except
    for the summation order of the row sums.
    """
    row_sumsq = cupy.ReductionKernel(
        "T x", "float64 y", "(double)x * (double)x", "a + b", "y = a", "0", "proxlib_row_sumsq"
    )
    scale_rows = cupy.ElementwiseKernel("T w, float64 f", "T x", "x = (T)((double)w * f)", "proxlib_scale_rows")
    # sign(v) (|v| - w)_+ as _xp_kernels.weighted_l1 forms it (clip, then
    # signed_like): NaN stays NaN, a negative v thresholded to zero gives -0
    soft_threshold = cupy.ElementwiseKernel(
        "T v, T w", "T x", "T mag = fabs(v) - w; T c = mag < (T)0 ? (T)0 : mag; x = v < (T)0 ? -c : (v >= (T)0 ? c : v)",
        "proxlib_soft_threshold",
    )
    l2sq_shrink = cupy.ElementwiseKernel("T v, T w", "T x", "x = v / ((T)1 + (T)2 * w)", "proxlib_l2sq_shrink")
    return SimpleNamespace(
        row_sumsq=lambda W: row_sumsq(W, axis=1),
        scale_rows=lambda W, f, out=None: _elementwise(scale_rows, W, f[:, None], out=out),
        soft_threshold=lambda v, w, out=None: _elementwise(soft_threshold, v, w, out=out),
        l2sq_shrink=lambda v, w, out=None: _elementwise(l2sq_shrink, v, w, out=out),
    )


def _elementwise(kernel, *inputs, out=None):
    """``kernel(*inputs)`` into a new array, or into ``out``: a CuPy
    ElementwiseKernel takes its outputs as further positional arguments and
    rejects a None among them (``TypeError: Unsupported type NoneType``, the
    first call on a GPU)."""
    return kernel(*inputs) if out is None else kernel(*inputs, out)


def _prims() -> SimpleNamespace:
    return _cuda_prims() if FUSED else _stages.GENERIC


def _with_device(kernel):
    """Run ``kernel`` with the data's device current, so that every allocation
    lands next to the input, and bring array arguments (weights) to that
    device (a device-to-device copy, and only if they live elsewhere)."""

    @functools.wraps(kernel)
    def run(x, *args, **kwargs):
        device = getattr(x, "device", None)
        # A NumPy stand-in (CPU tests) has no device context ("cpu" or none).
        ctx = device if hasattr(device, "__enter__") else contextlib.nullcontext()
        with ctx:
            args = tuple(cupy.asarray(a) if hasattr(a, "shape") else a for a in args)
            return kernel(x, *args, **kwargs)

    return run


@_with_device
def owl(v, w):
    return _gpu_owl.owl(v, w)


@_with_device
def growl(W, w, check_finite=False):
    return _stages.growl(W, w, _gpu_owl.owl, _prims(), check_finite)


@_with_device
def group_lasso(W, a, check_finite=False):
    return _stages.group_lasso(W, a, _prims(), check_finite)


@_with_device
def exclusive_lasso(W, b, check_finite=False):
    return _k.exclusive_lasso(W, b, check_finite=check_finite)


@_with_device
def group_exclusive(W, a, b, check_finite=False):
    return _k.group_exclusive(W, a, b, check_finite=check_finite, gather=False)


@_with_device
def weighted_l1(v, w):
    return _stages.weighted_l1(v, w, _prims())


@_with_device
def weighted_l2sq(v, w):
    return _stages.weighted_l2sq(v, w, _prims())


@_with_device
def lp(v, lam, p):
    return _k.lp(v, lam, p)


# the prox in a diagonal metric: the array-API kernels, on the data's device
from . import _metric_kernels as _mk  # noqa: E402

weighted_l1_metric = _with_device(_mk.weighted_l1_metric)
weighted_l2sq_metric = _with_device(_mk.weighted_l2sq_metric)
lp_metric = _with_device(_mk.lp_metric)
# the row kernels never gather rows (no nonzero: it waits for the device)
group_lasso_metric = _with_device(functools.partial(_mk.group_lasso_metric, gather=False))
exclusive_lasso_metric = _with_device(functools.partial(_mk.exclusive_lasso_metric, gather=False))
group_exclusive_metric = _with_device(functools.partial(_mk.group_exclusive_metric, gather=False))
