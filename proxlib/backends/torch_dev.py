"""torch backend: every kernel of ``KERNELS`` with torch operations, on the tensor's device.

The same code runs on CPU, CUDA and any other torch device, so the tests on
CPU tensors (``CPU_KERNELS = "torch"``) exercise exactly what runs on a GPU.
By default float32/float64 CPU tensors go instead to Numba's *serial* kernels
on the tensor's memory when Numba imports (``CPU_KERNELS``: faster on CPU,
and without a thread pool of their own); a training step's term runs them in
place on the parameter (:func:`numba_in_place`), and a public ``prox_*``
call runs the NumPy path on the tensor's NumPy view with them
(:func:`numba_view`; the same bits, without the torch layers).  In the torch
operations no NumPy, Numba or CuPy is involved except where a step is better
done otherwise on a device, named here:

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
  synchronisation (group lasso; GrOWL adds the reads of its OWL over the
  norms and, for float64 data, one read that decides the OWL's common scale:
  :func:`._stages.growl_factor`): none for float32 data; for float64 data one scalar read decides
  whether a row's norm needs its scale kept apart (Triton: a norm beyond the
  largest float64; torch operations: an unscaled sum of squares that under-
  or overflowed), and those rows are recomputed scaled.
  ``check_finite=True`` adds one scalar read.
* **exclusive lasso, group+exclusive, lp**: the array-API reference kernels of
  :mod:`._xp_kernels` run by torch (they sort each row).  Host reads: none for
  the exclusive lasso; lp's Newton steps read one scalar per four steps, and
  so does the group+exclusive root search as array code; on CUDA tensors,
  when Triton imports, that search is one Triton kernel with no host read
  (:mod:`._triton_shrink`, ``_xp_kernels.ROOT_SEARCH``: the same bits).  On
  a CPU tensor group+exclusive also gathers the rows that need the search
  (one read and a ``nonzero``; an accelerator searches every row instead,
  :func:`_gathers_rows`), so on CUDA it reads nothing.  On a CPU
  tensor the row sort is NumPy's on the tensor's memory (SIMD-sorted; torch's
  CPU sort is several times slower); elsewhere ``torch.sort``.  With
  ``_xp_kernels.EXCLUSIVE_ROWS`` (off by default until it has run on a GPU)
  the whole exclusive lasso or group+exclusive of rows up to 2048 long is
  one Triton kernel (:mod:`._triton_exclusive`): one launch, no host read.
* **the prox in a diagonal metric** (``*_metric``): the array-API kernels of
  :mod:`._metric_kernels`.  On a CPU tensor (``CPU_KERNELS``) Numba's serial
  kernels take all six instead, written straight into ``out=``: the
  weighted l1 and weighted squared l2 (one pass, the same float64
  operations entry by entry: the same bits), the group lasso and
  group+exclusive (row by row, the same search steps; their row sums in
  another order: the array code's result to a few units in the last place),
  the exclusive lasso (row by row, the same order, sums and support: the
  NumPy array code's bits) and lp (one pass, each entry's prox as the array
  code's, its powers libm's: to an ulp or so).  Host reads (the array
  code's): none for the separable ones but lp's Newton steps (one per
  four); the row kernels (group lasso, exclusive,
  group+exclusive) on an accelerator read once which of their cases occur,
  then one scalar per four steps of each root search, with no ``nonzero``;
  on a CPU tensor they gather each case's rows (a read and a ``nonzero`` per
  case) and read one scalar per root step (:func:`_gathers_rows`).  With
  ``_metric_kernels.METRIC_ROWS`` (off by default until it has run on a
  GPU) the row kernels in a metric (group lasso, exclusive, group+exclusive)
  are one Triton kernel, whole, with no read (:mod:`._triton_metric`; for
  float16 data the group lasso's root search alone).
* **OWL** (and GrOWL's OWL over the row norms): the isotonic regression at its
  core is sequential (pool-adjacent-violators).  On a CPU tensor it runs on
  the tensor's memory with SciPy's PAVA (the NumPy reference, single-threaded,
  so it never competes with torch's threads; Numba's serial kernel under
  ``CPU_KERNELS = "auto"``).  On an accelerator, a vector of up to
  ``OWL_ON_HOST_MAX`` entries (GrOWL's row norms) is copied to the host,
  solved there the same way and copied back (one synchronisation); a longer
  one runs on the device, the parallel isotonic regression of
  :mod:`._gpu_owl`.

Every kernel runs under ``torch.no_grad()``: results do not require grad.  It
accepts any strides and an optional ``out=`` tensor of the data's shape and
dtype that receives the result (this is how :class:`proxlib.torch.ProximalStep`
writes into a parameter without a copy).  Threads: torch's own intra-op pool
only (Numba's serial kernels start none), so nothing competes with a training
loop for the cores.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
import torch

from .. import _range
from .. import _validate as V
from .._dispatch import array_namespace
from . import KERNELS, NonFiniteInput, numba_layout
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


def _scaled_row_norms(W):
    """``(nrm, s)`` as :func:`._stages.scaled_row_norms` (row r's norm is
    ``nrm[r] * s[r]``; ``s`` None for float32 data: 1).  Triton: its
    overflow- and underflow-safe norms, one read of ``W``; a float64 row
    whose norm exceeds the largest float64 (rows of entries near 1e308) is
    recomputed scaled, which costs one scalar read for float64 data (none
    for float32, whose norms fit float64)."""
    tm = _triton_group_lasso(W)
    if tm is not None:  # the norms of a training step's group lasso and GrOWL batches, on these rows
        return tm.row_norms(W)
    tr = _triton_rows(W)
    if tr is None:
        return _stages.norms_from_sumsq(_row_sumsq(W), W)
    nrm = tr.row_norms(W)
    if W.dtype != torch.float64:
        return nrm, None  # (s = 1)
    s = torch.ones_like(nrm)
    beyond = torch.isinf(nrm)
    if bool(beyond.any()):
        idx = torch.nonzero(beyond)[:, 0]
        nrm[idx], s[idx] = _k.scaled_row_norms(W[idx, :], array_namespace(W))
    return nrm, s


def _scale_rows(W, f, out=None):
    tm = _triton_group_lasso(W)
    if tm is not None:  # (the map of a training step's batches, on these rows)
        return tm.scale_rows(W, f, out=out)
    return torch.mul(W, f.to(W.dtype)[:, None], out=out)


def _soft_threshold(v, w, out=None):
    # v - clamp(v, -w, w) = sign(v) (|v| - w)_+, rounded once, for w >= 0
    return torch.sub(v, torch.clamp(v, min=-w, max=w), out=out)


def _l2sq_shrink(v, w, out=None):
    return torch.div(v, 1 + 2 * w, out=out)


PRIMITIVES = SimpleNamespace(
    row_sumsq=_row_sumsq,
    scaled_row_norms=_scaled_row_norms,
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


#: OWL vectors of at most this many entries on an accelerator are solved on
#: the host (:func:`_owl_on_host`): GrOWL's vector of row norms (one entry per
#: row) always is.  Measured on the first GPU run (H200, ResNet-18's 20
#: convolutions of 64-512 channels): the device's isotonic regression, O(log
#: n) rounds of launches and a scalar read each, took about 1.8 ms a layer
#: (GrOWL's step fell from 43 to 13 ms with this route); on the host Numba's
#: serial kernel takes 23-125 us at 512-4096 entries (a 2-core Xeon), plus
#: two small copies and one synchronisation.
OWL_ON_HOST_MAX = 4096


def _owl_on_host(v, w):
    """OWL prox of the 1-D tensor ``v`` (thresholds ``w``, on v's device) by
    the host: Numba's serial kernel when it imports and ``CPU_KERNELS``
    allows it, else SciPy's pool-adjacent-violators (the NumPy reference);
    on CPU tensors no copy, elsewhere a copy to the host and back (one
    synchronisation)."""
    host_v, host_w = (np.ascontiguousarray(t.detach().cpu().numpy()) for t in (v, w))
    return torch.from_numpy(host_owl(host_v, host_w)).to(v.device)


def host_owl(v, w):
    """OWL prox of the contiguous NumPy vector ``v`` (thresholds ``w``, the
    same dtype) on the host, as :func:`_owl_on_host` solves it: Numba's
    serial kernel when it imports and ``CPU_KERNELS`` allows it, else
    SciPy's pool-adjacent-violators (the NumPy reference)."""
    nb = _host_numba()
    return nb.owl(v, w, parallel=False) if nb is not None else numpy_ref.owl(v, w)


def _host_numba():
    """:mod:`.numba_cpu` where the host's OWL runs on it (:func:`host_owl`,
    :func:`host_growl_factors`), else None (``CPU_KERNELS = "torch"`` or
    Numba missing: the NumPy reference)."""
    return None if CPU_KERNELS == "torch" else _numba_cpu()


def host_growl_factors(nrm, s, w, starts, orders=None):
    """GrOWL's factors of several tensors' row norms at once on the host
    (``nrm``, ``s`` or None, ``w``: float64 NumPy vectors, the tensors'
    segments [starts[i], starts[i + 1])): each segment's
    :func:`._stages.growl_factor` with :func:`host_owl`, the same bits, in
    one Numba call (:func:`.numba_cpu.growl_segments`; ``orders``: the
    sorted orders it keeps from call to call); None where :func:`host_owl`
    would not use Numba or the call declines (the caller then solves
    segment by segment)."""
    nb = _host_numba()
    return None if nb is None else nb.growl_segments(nrm, s, w, starts, orders)


def solved_on_host(n: int, device: torch.device) -> bool:
    """Whether an OWL vector of ``n`` entries on ``device`` is solved by the
    host (:func:`_owl_on_host`): always on the CPU, up to
    ``OWL_ON_HOST_MAX`` entries elsewhere."""
    return device.type == "cpu" or n <= OWL_ON_HOST_MAX


def _owl_vector(v, w):
    """OWL prox of a 1-D tensor (``w`` already times the step, same dtype/device):
    on the host for CPU tensors and short vectors (``OWL_ON_HOST_MAX``), else
    the parallel isotonic regression of :mod:`._gpu_owl` on the device."""
    if solved_on_host(v.shape[0], v.device):
        return _owl_on_host(v, w)
    from . import _gpu_owl

    return _gpu_owl.owl(v, w)


# ------------------------------------------------------------------ kernels


#: Who runs the kernels on CPU tensors of float32/float64:
#:
#: * ``"auto"`` (default): Numba's serial kernels (``parallel=False``: no
#:   thread pool, so nothing competes with torch's intra-op threads) on the
#:   tensor's memory when Numba imports, the torch operations otherwise;
#: * ``"torch"``: the torch operations, the code path every other device runs
#:   (the tests run it on CPU tensors this way);
#: * ``"numba"``: Numba's serial kernels, an error when Numba does not import.
#:
#: Why Numba on CPU: these kernels are single passes over the data with
#: float64 accumulators in registers, and the row-sorting operators sort each
#: row on its own, where torch operations materialise a float64 copy, a sorted
#: copy and the intermediate arrays of every step, and read one scalar per
#: iteration of the group+exclusive root search.  Results agree with the
#: torch operations to the accuracy both are tested to (the exact operator
#: rounded; see ``tests/test_backends.py``).  The same switch picks the
#: Numba passes of a sharded parameter's split rows on a CPU shard
#: (:mod:`.numba_split`, :mod:`proxlib.torch.sharded`).
CPU_KERNELS = "auto"


#: the kernels in a diagonal metric that Numba compiles (written into
#: ``out=``): the weighted l1's, weighted squared l2's and lp's one pass,
#: the group lasso's, exclusive lasso's and group+exclusive's rows
_SEPARABLE_METRIC_ON_NUMBA = ("weighted_l1_metric", "weighted_l2sq_metric", "lp_metric")
_METRIC_ON_NUMBA = _SEPARABLE_METRIC_ON_NUMBA + ("group_lasso_metric", "exclusive_lasso_metric", "group_exclusive_metric")

#: the kernels with a serial Numba variant (``parallel=False``)
_SERIAL_ON_NUMBA = tuple(name for name in KERNELS if not name.endswith("_metric")) + _METRIC_ON_NUMBA


@functools.cache
def _numba_cpu():
    """:mod:`.numba_cpu`, or None when it does not import."""
    try:
        from . import numba_cpu
    except Exception:  # noqa: BLE001 - numba missing or broken: the torch operations run
        return None
    return numba_cpu


def runs_torch_ops(name: str, x) -> bool:
    """Whether the kernel ``name`` computes ``x`` with the torch operations
    (not Numba's serial kernels on a CPU tensor: ``CPU_KERNELS``)."""
    return _cpu_kernel(name, x) is None


def _check_route() -> None:
    if CPU_KERNELS not in ("auto", "torch", "numba"):
        raise ValueError(f"torch_dev.CPU_KERNELS must be 'auto', 'torch' or 'numba', got {CPU_KERNELS!r}")


def _cpu_kernel(name: str, x):
    """The serial Numba kernel ``name`` when it runs ``x`` (``CPU_KERNELS``), else None."""
    _check_route()
    if CPU_KERNELS == "torch" or name not in _SERIAL_ON_NUMBA or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    nb = _numba_cpu()
    if nb is None:
        if CPU_KERNELS == "numba":
            raise RuntimeError("torch_dev.CPU_KERNELS = 'numba' but numba does not import")
        return None
    return getattr(nb, name)


def numba_view(name: str, x):
    """A NumPy view of the tensor ``x`` where the kernel ``name`` runs it on
    Numba (``CPU_KERNELS``: a float32/float64 CPU tensor), else None: a plain
    tensor or parameter (not a subclass such as DTensor), dense and strided,
    without torch's lazy negation.  The public functions then run their
    NumPy path on that view with :data:`SERIAL_NUMBA`'s kernels
    (:func:`proxlib._registry.apply`): this module's route's bits (Numba's
    serial kernels on the same memory), without its torch layers (about
    55-180 us a call on 10 or 64 x 10 entries on this project's 2-core Zen 1
    VM: ``benchmarks/CALL_OVERHEAD.md``)."""
    if type(x) is not torch.Tensor and type(x) is not torch.nn.Parameter:
        return None
    if x.layout is not torch.strided or x.is_nested or x.is_neg() or _cpu_kernel(name, x) is None:
        return None
    return x.detach().numpy()


class _SerialNumba:
    """Numba's kernels with ``parallel=False``, by name (looked up at each
    call, as a plan looks up its backend's kernel): the backend of a CPU
    tensor's NumPy view (:func:`numba_view`), serial as the tensor's kernels
    are, so nothing competes with torch's threads.  Its plans keep
    F-contiguous matrices as they are (``reads_columns``): Numba's row
    kernels read them as columns, as a training step's in-place kernels
    and this module's route do (the same bits)."""

    __name__ = "numba_serial"
    reads_columns = True

    def __getattr__(self, name):
        kernel = getattr(_numba_cpu(), name)
        run = functools.partial(kernel, parallel=False)
        run.checks_finite = getattr(kernel, "checks_finite", False)
        return run


SERIAL_NUMBA = _SerialNumba()


_ELEMENTWISE = ("weighted_l1", "weighted_l2sq", "lp")

#: the kernels that :func:`_on_numba` runs on flattened tensors
_FLAT_ON_NUMBA = _ELEMENTWISE + _SEPARABLE_METRIC_ON_NUMBA

#: kernels that take a per-row threshold hint kept between a term's steps
_HINTED = ("exclusive_lasso", "group_exclusive")

#: kernels that the in-place runner (:func:`numba_in_place`) takes: Numba's
#: serial kernels with ``out=`` (OWL is a sort and a scatter: no gain in place)
_IN_PLACE_ON_NUMBA = tuple(name for name in _SERIAL_ON_NUMBA if name != "owl")


def numba_in_place(pen, view: torch.Tensor, terms: tuple):
    """A prepared in-place run of Numba's serial kernel for the registry
    penalty ``pen`` on ``view``, or None where it does not apply.

    ``view`` is the data as the kernel reads it (rows, or the tensor for an
    elementwise kernel) and a view of a CPU parameter's memory, float32 or
    float64; ``terms`` the penalty's thresholds (:func:`proxlib._range.terms`,
    arrays in the kernel's layout).  The returned ``run(step, check_finite)``
    overwrites ``view`` with the prox of ``step * pen``: the thresholds are
    formed as the public function forms them (:func:`_run_in_place`), and the
    kernel (:func:`numba_cpu.serial_in_place`) writes through a NumPy view of
    the same memory, with no copy: rows that are C-contiguous are processed
    as rows, rows that are the columns of a C-contiguous matrix (the
    ``"channel"`` and ``"shape"`` groupings of a Linear weight) column-wise
    (see :mod:`.numba_cpu`): their sums are then added in another order than
    the public function's (which copies such rows out), so in float64 the
    results may differ from its in the last bits (both exact to the
    rounding of the sums; a convolution's ``"channel"`` rows are summed in
    the row kernels' order), and so may float32 group+exclusive's on
    columns of 64 entries or more, whose support sums come from the
    first pass once the step's hints decide them
    (``numba_cpu._exclusive_cols``).  ``check_finite`` goes to the kernels that check
    their input themselves (``pen.fused_finite_check``); the others are
    checked by the caller.  The caller bumps the parameter's version counter
    (the write bypasses autograd's).  None when: Numba does not import, the
    kernel has no in-place variant, the device or dtype is another, the view
    is neither C- nor F-contiguous (e.g. the ``"channel"`` rows of a
    convolution, which are a permutation: :func:`numba_in_place_channels`
    takes those for the group lasso and GrOWL), or per-entry elementwise
    thresholds do not follow the view's memory order, or ``CPU_KERNELS`` is
    ``"torch"`` (callers rebuild when it changes)."""
    name = pen.kernel
    _check_route()
    if CPU_KERNELS == "torch" or name not in _IN_PLACE_ON_NUMBA or view.device.type != "cpu" or view.dtype not in (torch.float32, torch.float64):
        return None
    nb = _numba_cpu()
    if nb is None:
        return None
    if name in _ELEMENTWISE:
        if not view.is_contiguous() or any(t.array is not None and t.array.numel() > 1 and t.array.shape != view.shape for t in terms):
            return None
        arr = view.detach().reshape(-1).numpy()
        terms = tuple(_range.Threshold(t.scalars, t.array.reshape(-1), t.degree, t.top) if t.array is not None else t for t in terms)
    else:
        if view.ndim != 2:
            return None
        arr = view.detach().numpy()
        if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
            return None
    hint = None
    if name in _HINTED and arr.ndim == 2 and arr.flags.f_contiguous:
        # rows that are columns: the kernel keeps each row's threshold guess
        # for the next step here (numba_cpu._check_hint; never changes the support)
        hint = np.zeros(arr.shape[0])
    run = _run_in_place(pen, name, arr, terms, hint)
    run.hint = hint  # (for inspection)
    return run


def numba_in_place_channels(pen, leaf: torch.Tensor, terms: tuple):
    """:func:`numba_in_place` for the ``"channel"`` rows of a convolution
    weight (``leaf`` of >= 3 dimensions, C-contiguous: row c is
    ``leaf[:, c]``, a permutation of its memory that no 2-D view gives): the
    group lasso and GrOWL kernels of Numba that read those rows in memory
    order (``numba_cpu.group_lasso_channels``, ``growl_channels``) write into
    the parameter, where the generic route copied the rows out and back.
    None where that does not apply (as for :func:`numba_in_place`)."""
    name = pen.kernel
    _check_route()
    if (CPU_KERNELS == "torch" or name not in ("group_lasso", "growl") or leaf.device.type != "cpu"
            or leaf.dtype not in (torch.float32, torch.float64) or leaf.ndim < 3 or not leaf.is_contiguous()):
        return None
    if _numba_cpu() is None:
        return None
    arr = leaf.detach().numpy().reshape(leaf.shape[0], leaf.shape[1], -1)  # a view (C-contiguous)
    return _run_in_place(pen, name + "_channels", arr, terms)


def _run_in_place(pen, kernel_name: str, arr, terms: tuple, hint=None):
    """The prepared ``run(step, check_finite)`` of the in-place runners:
    Numba's ``kernel_name`` on ``arr`` (:func:`numba_cpu.serial_in_place`)
    at the thresholds the public function passes its kernel at ``step``
    (:func:`proxlib._range.thresholds_in_range`: the same bits), formed
    again only when the step changes (no kernel writes to its thresholds):
    with a constant learning rate a step runs no NumPy operation, whose
    first one after a training step costs 40-60 us on a cold cache
    (measured on the benchmark's MLP), as much as a small layer's whole
    prox.  A step whose thresholds are beyond the kernels' range is solved
    as the public function solves it (:func:`proxlib._range.solve`'s exact
    transformations, on a copy) and written back.  ``hint``: the exclusive
    operators' threshold hints, scaled with the step when it changes (a
    threshold is about proportional to the step: a learning-rate schedule
    keeps them provable).  A step that changes (a learning-rate schedule)
    runs no NumPy operation either where its thresholds are inside the
    kernels' range by the one-call lanes' margin (the usual case; the others
    take proxlib._range's rule): the arrays' largest entries are known
    (:func:`proxlib._range.topped`), the thresholds are formed by a few
    Python operations and one compiled call per array into vectors kept for
    them (:func:`numba_cpu.threshold_former`: the same bits), and the hints
    are scaled by one (before, 25-40 us per term after a training step)."""
    nb = _numba_cpu()
    call = nb.serial_in_place(kernel_name, arr, pen.fixed(), hint)
    terms = tuple(_range.topped(_range.Threshold(t.scalars, t.array.detach().cpu().numpy(), t.degree, t.top)
                                if isinstance(t.array, torch.Tensor) else t) for t in terms)
    fused = pen.fused_finite_check
    thresholds = _range.AtStep(terms, form=nb.threshold_former(terms, arr))

    def run(step: float, check_finite: bool = False) -> None:
        last, thr = thresholds._last  # (the step unchanged: its thresholds, without AtStep's call, on a cold cache)
        if step != last:
            thr = thresholds(step, arr)
            if hint is not None and last:  # (after a step 0 the hints are 0: none to scale)
                # (a ratio beyond float64, e.g. 1e300 / 1e-300: inf or NaN hints, which the kernel takes as none)
                nb.scale_row(hint, step / last, hint)
        if thr is not None:
            call(thr, check_finite and fused)
        else:  # (_range.solve's data: a transformed copy, or arr itself, overwritten in place then)
            arr[...] = _range.solve(pen, _range.Data(arr), step, kernel_name,
                                    lambda name, data, t: _overwritten(nb.serial_in_place(name, data, pen.fixed()), data, t, check_finite and fused), terms)

    return run


def _overwritten(call, data, thr, check_finite: bool):
    """``data`` after ``call(thr, check_finite)`` (a serial_in_place call on it)."""
    call(thr, check_finite)
    return data


def _on_numba(kernel, flat, x, args, kwargs, out=None):
    """``kernel`` (serial) on NumPy views of the CPU tensors (copied only
    where the Numba kernels require it); a new tensor, or ``out`` written
    by the kernel where given (a CPU tensor of ``x``'s shape and dtype that
    the kernel writes where it lies: :func:`writes_out`).
    Elementwise kernels (``flat``) take vectors there: tensors of any shape
    are flattened (weights of one entry or one per entry) and the result
    reshaped."""
    data = (x.reshape(-1) if flat else x).numpy()
    data = numba_layout(data)
    arrays = [data] + [_numba_array(a.reshape(-1) if flat else a) if isinstance(a, torch.Tensor) else a for a in args]
    if out is not None:
        kernel(*arrays, parallel=False, out=out.detach().view(data.shape).numpy(), **kwargs)
        return out
    X = torch.from_numpy(kernel(*arrays, parallel=False, **kwargs))
    return X.reshape(x.shape) if flat else X


def _numba_array(t: torch.Tensor):
    """A NumPy view of the CPU tensor ``t`` as the Numba kernels take it
    (vectors C-contiguous, matrices C- or F-contiguous: copied otherwise)."""
    return numba_layout(t.numpy())


def writes_out(name: str, x, out) -> bool:
    """Whether the Numba kernel ``name`` writes straight into ``out`` for
    ``x``: a kernel of :data:`_METRIC_ON_NUMBA`, ``out`` a tensor of x's
    shape, dtype and device, C-contiguous for the elementwise kernels, C-
    or F-contiguous for the row kernels (which read each row into scratch
    before writing it: ``out`` may be ``x``)."""
    if out is None or name not in _METRIC_ON_NUMBA or out.dtype != x.dtype or out.shape != x.shape or out.device != x.device:
        return False
    if name in _FLAT_ON_NUMBA:
        return out.is_contiguous()
    return out.ndim == 2 and (out.is_contiguous() or out.t().is_contiguous())


def _kernel(fn):
    """Run under no_grad on detached tensors (on CPU, through ``CPU_KERNELS``);
    write into ``out`` when given."""

    @functools.wraps(fn)
    def run(x, *args, out=None, **kwargs):
        with torch.no_grad():
            x = x.detach()
            args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
            name = fn.__name__
            cpu = _cpu_kernel(name, x)
            if cpu is not None:
                X = _on_numba(cpu, name in _FLAT_ON_NUMBA, x, args, kwargs, out if writes_out(name, x, out) else None)
            else:
                X = fn(x, *args, out=out, **kwargs)
            if out is not None and X is not out:
                out.copy_(X)
                return out
            return X

    return run


@_kernel
def owl(v, w, out=None):
    return _owl_vector(v, w)


@_kernel
def growl(W, w, check_finite=False, out=None):
    return _stages.growl(W, w, _owl_vector, prims, check_finite, out=out)


@_kernel
def group_lasso(W, a, check_finite=False, out=None):
    tm = _triton_group_lasso(W)
    if tm is not None:  # the kernel that solves a training step's group lasso terms, on these rows
        return tm.group_lasso(W, a, check_finite, out)
    return _stages.group_lasso(W, a, prims, check_finite, out=out)


#: Who solves the group lasso and GrOWL rows of float32 and float64 torch
#: tensors: ``"triton"``: :mod:`._triton_multi`'s kernel on any torch tensor
#: (off CUDA in Triton's interpreter), which solves every row of every
#: tensor of a training step's group lasso terms in one launch (GrOWL's: its
#: norms in one, the host's OWL, its map in one), reading and writing the
#: tensors where they are (:mod:`proxlib.torch._batched`), and the public
#: functions' rows alike (the group lasso whole, and the norms and the map
#: of the stages: the same bits for the same rows); ``"auto"``: on CUDA
#: tensors only; ``"array"``: the stages' torch operations (the default
#: until the compiled kernel has run on a GPU: the tests compile it for
#: sm_90, ``benchmarks/gpu_session.sh`` runs it there).
GROUP_ROWS = "array"


def _triton_group_lasso(W):
    """:mod:`._triton_multi` where it solves the group lasso and GrOWL rows of
    ``W`` (``GROUP_ROWS``; float32 or float64, two dimensions), else None."""
    if W.dtype not in (torch.float32, torch.float64) or W.ndim != 2:
        return None
    return _k._triton_module(W, GROUP_ROWS, "_triton_multi")


@_kernel
def exclusive_lasso(W, b, check_finite=False, out=None):
    return _k.exclusive_lasso(W, b, sort=_sort_desc, check_finite=check_finite)


@_kernel
def group_exclusive(W, a, b, check_finite=False, out=None):
    return _k.group_exclusive(W, a, b, sort=_sort_desc, check_finite=check_finite, gather=_gathers_rows(W))


def _gathers_rows(W) -> bool:
    """Whether group+exclusive (and the metric row kernels) gather the rows
    of their root searches (a host read and ``nonzero``: the least work, for
    a CPU tensor) or search every row with no read but the search's own
    (an accelerator's tensor)."""
    return W.device.type == "cpu"


# The elementwise kernels take check_finite as Numba's do (``checks_finite``):
# CPU tensors on Numba's kernels count the non-finite entries in their pass,
# the torch operations check before (a reduction of their own).


def _finite_or_raise(x, check_finite: bool) -> None:
    if check_finite and not V.all_finite(x):
        raise NonFiniteInput("input contains NaN or Inf")


@_kernel
def weighted_l1(v, w, check_finite=False, out=None):
    _finite_or_raise(v, check_finite)
    return _stages.weighted_l1(v, w, prims, out=out)


@_kernel
def weighted_l2sq(v, w, check_finite=False, out=None):
    _finite_or_raise(v, check_finite)
    return _stages.weighted_l2sq(v, w, prims, out=out)


@_kernel
def lp(v, lam, p, check_finite=False, out=None):
    _finite_or_raise(v, check_finite)
    return _k.lp(v, lam, p)


for _fn in (weighted_l1, weighted_l2sq, lp):
    _fn.checks_finite = True
del _fn


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


def _rows_no_out(fn):
    """A row kernel of _metric_kernels, gathering rows where _gathers_rows says."""

    @functools.wraps(fn)
    def run(W, *args, out=None):
        return fn(W, *args, gather=_gathers_rows(W))

    return run


group_lasso_metric = _kernel(_rows_no_out(_mk.group_lasso_metric))
exclusive_lasso_metric = _kernel(_rows_no_out(_mk.exclusive_lasso_metric))
group_exclusive_metric = _kernel(_rows_no_out(_mk.group_exclusive_metric))
