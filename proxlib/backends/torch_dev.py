"""torch backend: every kernel of ``KERNELS`` with torch operations, on the tensor's device.

The same code runs on CPU, CUDA and any other torch device, so the tests on
CPU tensors exercise exactly what runs on a GPU.  No NumPy, Numba or CuPy is
involved except where a step is better done otherwise on a device, named here:

* **row operators** (``group_lasso``, ``growl``, ``weighted_l1``,
  ``weighted_l2sq``): the staged operators of :mod:`._stages` (row statistics,
  one scalar per row, a row map) over the torch primitives below: the row
  sums of squares accumulated in float64, the map as one multiplication into
  the output (or, with ``out=``, into a given tensor such as the parameter
  itself).  On CUDA tensors, when Triton imports, the row norms are one
  Triton kernel (:mod:`._triton_rows`: one read of the data, float64
  accumulators, overflow- and underflow-safe for float64 data too); elsewhere
  torch operations over a float64 copy.  float32 data are multiplied by the
  float32-rounded factor: the result is within 2 units in the last place of
  the exact one (the reference, which rounds once from float64: 1).  Host
  synchronisation: none with the Triton kernel (group lasso; GrOWL adds the
  reads of its OWL over the norms) and none for float32 with torch
  operations; there, for float64, one scalar read decides whether a row's
  unscaled sum of squares under- or overflowed (then that row is recomputed
  scaled).  ``check_finite=True`` adds one scalar read.
* **exclusive lasso, group+exclusive, lp**: the array-API reference kernels of
  :mod:`._xp_kernels` run by torch (they sort each row; the group+exclusive
  root and lp's Newton steps read one scalar per iteration).  On a CPU tensor
  the row sort is NumPy's on the tensor's memory (SIMD-sorted; torch's CPU
  sort is several times slower); elsewhere ``torch.sort``.
* **OWL** (and GrOWL's OWL over the row norms): the isotonic regression at its
  core is sequential (pool-adjacent-violators).  On a CPU tensor it runs on
  the tensor's memory with SciPy's PAVA (the NumPy reference, single-threaded,
  so it never competes with torch's threads); on an accelerator the parallel
  isotonic regression of :mod:`._gpu_owl` runs on the device.

Every kernel runs under ``torch.no_grad()``: results do not require grad.  It
accepts any strides and an optional ``out=`` tensor of the data's shape and
dtype that receives the result (this is how :class:`proxlib.torch.ProximalStep`
writes into a parameter without a copy).  Threads: torch's own intra-op pool
only; no Numba, so nothing competes with a training loop for the cores.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
import torch

from . import KERNELS, check_row_norms
from . import _stages
from . import _xp_kernels as _k
from . import numpy_ref

__all__ = list(KERNELS)  # the same kernel names in every backend

NAME = "torch"


# ------------------------------------------------------------------ primitives


#: Who computes the row statistics: ``"auto"``: the Triton kernel of
#: :mod:`._triton_rows` for CUDA tensors when Triton imports, torch operations
#: otherwise; ``"triton"``: the kernel for any tensor (off CUDA in Triton's
#: interpreter: how the tests run the CUDA path on CPU tensors); ``"torch"``.
ROW_STATS = "auto"


def _triton_rows(W):
    """:mod:`._triton_rows` if it computes ``W``'s row statistics (``ROW_STATS``), else None."""
    if ROW_STATS == "torch" or (ROW_STATS == "auto" and W.device.type != "cuda"):
        return None
    try:
        from . import _triton_rows as tr
    except ImportError:
        if ROW_STATS == "triton":
            raise
        return None
    return tr


def _row_sumsq(W):
    tr = _triton_rows(W)
    if tr is not None:  # one read of W (torch would cast it to a float64 copy first)
        return tr.row_sumsq(W)
    return torch.sum(torch.square(W.to(torch.float64)), dim=1)


def _row_norms(W):
    """Overflow- and underflow-safe row norms (float64).  Triton: one read of
    ``W``, no host read for either dtype; torch: ``_stages.row_norms`` (for
    float64 data one scalar read)."""
    tr = _triton_rows(W)
    if tr is not None:
        return tr.row_norms(W)
    return _stages.row_norms(W, PRIMITIVES)


def _scale_rows(W, f, out=None):
    return torch.mul(W, f.to(W.dtype)[:, None], out=out)


def _soft_threshold(v, w, out=None):
    # v - clamp(v, -w, w) = sign(v) (|v| - w)_+, rounded once, for w >= 0
    return torch.sub(v, torch.clamp(v, min=-w, max=w), out=out)


def _l2sq_shrink(v, w, out=None):
    return torch.div(v, 1 + 2 * w, out=out)


PRIMITIVES = SimpleNamespace(
    row_sumsq=_row_sumsq,
    row_norms=_row_norms,
    scale_rows=_scale_rows,
    soft_threshold=_soft_threshold,
    l2sq_shrink=_l2sq_shrink,
)

#: The primitives in use: ``PRIMITIVES`` (default) or ``_stages.GENERIC``
#: (the array-API reference primitives; tests switch to compare both).
prims = PRIMITIVES


def _sort_desc(A, xp):
    """Rows sorted decreasingly: NumPy's sort on a CPU tensor's memory, else torch.sort."""
    if A.device.type == "cpu":
        return torch.from_numpy(np.sort(A.numpy(), axis=1)).flip(1)
    return torch.sort(A, dim=1, descending=True).values


def _owl_vector(v, w):
    """OWL prox of a 1-D tensor (``w`` already times the step, same dtype/device)."""
    if v.device.type == "cpu":
        return torch.from_numpy(numpy_ref.owl(v.numpy(), w.numpy()))
    from . import _gpu_owl

    return _gpu_owl.owl(v, w)


# ------------------------------------------------------------------ kernels


def _kernel(fn):
    """Run under no_grad on detached tensors; write into ``out`` when given."""

    @functools.wraps(fn)
    def run(x, *args, out=None, **kwargs):
        with torch.no_grad():
            x = x.detach()
            args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
            X = fn(x, *args, out=out, **kwargs)
            if out is not None and X is not out:
                out.copy_(X)
                return out
            return X

    return run


@_kernel
def owl(v, w, out=None):
    return _owl_vector(v, w)


def _rows_op(W, factor, check_finite, out):
    """``_stages.group_lasso`` / ``growl`` with the norms of a ``row_norms``
    primitive when ``prims`` has one (``_stages.row_norms`` would read a
    scalar for float64 data)."""
    own = getattr(prims, "row_norms", None)
    nrm = own(W) if own is not None else _stages.row_norms(W, prims)
    if check_finite:
        check_row_norms(nrm, torch)
    return prims.scale_rows(W, factor(nrm), out=out)


@_kernel
def growl(W, w, check_finite=False, out=None):
    return _rows_op(W, lambda nrm: _stages.growl_factor(nrm, w, _owl_vector), check_finite, out)


@_kernel
def group_lasso(W, a, check_finite=False, out=None):
    return _rows_op(W, lambda nrm: _stages.group_lasso_factor(nrm, a), check_finite, out)


@_kernel
def exclusive_lasso(W, b, out=None):
    return _k.exclusive_lasso(W, b, sort=_sort_desc)


@_kernel
def group_exclusive(W, a, b, out=None):
    return _k.group_exclusive(W, a, b, sort=_sort_desc)


@_kernel
def weighted_l1(v, w, out=None):
    return _stages.weighted_l1(v, w, prims, out=out)


@_kernel
def weighted_l2sq(v, w, out=None):
    return _stages.weighted_l2sq(v, w, prims, out=out)


@_kernel
def lp(v, lam, p, out=None):
    return _k.lp(v, lam, p)


# ------------------------------------------------------------------ diagonal metric
# the array-API kernels of _metric_kernels run by torch (out= receives the result)
from . import _metric_kernels as _mk  # noqa: E402


def _no_out(fn):
    @functools.wraps(fn)
    def run(x, *args, out=None):
        return fn(x, *args)

    return run


weighted_l1_metric = _kernel(_no_out(_mk.weighted_l1_metric))
weighted_l2sq_metric = _kernel(_no_out(_mk.weighted_l2sq_metric))
lp_metric = _kernel(_no_out(_mk.lp_metric))
group_lasso_metric = _kernel(_no_out(_mk.group_lasso_metric))
exclusive_lasso_metric = _kernel(_no_out(_mk.exclusive_lasso_metric))
group_exclusive_metric = _kernel(_no_out(_mk.group_exclusive_metric))
