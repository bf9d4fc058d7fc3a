r"""The group lasso of many tensors in one Triton launch, read and written in place.

On a GPU a training step's group lasso is host-bound: with torch operations
each tensor costs a dozen operator calls (its rows formed, copied where they
are not a view, reduced, the factors broadcast and multiplied in), at 5-15 us
of the host's time each, against a few microseconds of device work (the
ResNet-18 step of ``benchmarks/PROFILE_GPU.md``: 318 operations for 20
tensors, 4.4 ms against a training step of 8.9 ms).  Here every row of every
tensor of a step is solved by ONE kernel that reads the tensors where they
are, through a table of row addresses made once and kept while the tensors
stay where they are:

.. math::

    x_r = \Bigl(1 - \frac{a_r}{\|w_r\|_2}\Bigr)_+ w_r
    \quad\text{for every row } r \text{ of every tensor,}

the prox of ``sum_r a_r ||w_r||_2``.

Rows.  A tensor's rows (its grouping's, :mod:`proxlib.groupings`, in the
order of its plan's rows) are described by :func:`row_layout`: row r holds
the entries at offsets ``base_r + u su + v sv`` (u < U, v < V) from the
tensor's first one -- a "filter" row of a convolution weight (out, in, kh,
kw) is (in, kh kw) entries, a "channel" row (out, kh kw), a "shape" row
(out, 1), and likewise for channels-last and other dense layouts.  The
layout is read off the offsets of the plan's own rows (so it is the plan's
row order and row content by construction) and used only where that
two-level form reproduces them exactly; other layouts keep the torch
operations.  The table holds, per row, the address of its first entry and
(U, V, su, sv): ``5 x 8`` bytes a row, a few hundred kilobytes for a
ResNet, on the device, made again only when a tensor's address, shape or
strides change (a training step keeps it with its terms' plans, which are
rebuilt then).

Arithmetic (the torch stages' expressions: :func:`._stages.scaled_row_norms`,
:func:`._stages.group_lasso_factor`, the map's product in the data's dtype):

* the norm as ``(y, s)``, ``||w_r|| = y s`` with s a power of two: float32
  rows sum their squares in float64 (exact squares, nothing over- or
  underflows: ``s = 1``); float64 rows by Blue's three accumulators
  (:func:`._triton_rows.blue_squares`, :func:`._triton_rows.blue_scaled_norm`:
  no overflow, full precision for rows of tiny entries);
* the factor ``f = 1 - (a/s)/y`` where ``y > a/s``, else 0 (1 for a NaN
  norm: an unchecked row holding NaN or Inf comes back as it is), float64;
* ``x = w * f`` in the data's dtype, f rounded to it once (as the torch
  route's ``mul_`` by the factors cast to the data's dtype).

The rows' sums add in another order than torch's reductions, so norms agree
with the torch route to their rounding (units in the last place of float64),
and the results to the parity tolerance, not bit for bit; a row's result
depends on that row alone (fixed tiles), so a step equals its terms applied
one after another, bit for bit.

Launches.  Without the finiteness check: one per dtype (norms, factors and
the map in each program: its rows are read twice, the second time mostly
from the cache).  With it: the norms into a (2, R) float64 buffer, one read
of their maximum (finite iff every row is: the one host synchronisation;
nothing is written before it), then the map.  GrOWL: the norms, the host's
OWL of each tensor's norms, the map with those factors (phase SCALE).  No
other host read, no scratch but the buffer and the tables.  The public
torch kernels (:func:`group_lasso`, and the stages' :func:`row_norms` and
:func:`scale_rows`) take a matrix's rows through the same kernel (row r:
U = 1, V = m) and write out of place without copying W where the output
has its strides.

Cost per entry: one read for the norm, one read (mostly from the cache)
and one write for the map; no division in the tile loops (each program
divides once to split its tile's lanes over the rows' two levels).

On CUDA tensors the kernel is compiled by Triton; on any other tensor, or
with ``TRITON_INTERPRET=1``, it runs in Triton's interpreter, which is how CI
tests it on CPU.  Importing this module raises ImportError when Triton is
missing.
"""

from __future__ import annotations

import functools

import numpy as np
import triton
import triton.language as tl

from ._triton_isotonic import _interpreting_everything, as_kernel
from ._triton_launch import run_kernel
from ._triton_rows import HELPERS

__all__ = ["row_layout", "RowTable", "launch", "group_lasso", "row_norms", "scale_rows"]

#: rows per program and entries per tile: fixed (a row's summation order, and
#: so its result, must not depend on what else is in the launch)
GPU_BLOCK_R, GPU_BLOCK = 4, 512
INTERPRET_BLOCK_R, INTERPRET_BLOCK = 64, 256

#: Launches of the kernel so far (compiled or interpreted); the tests read it.
launches = 0

# PHASE: what a launch does (SCALE: the rows times given factors, GrOWL's)
NORMS, MAP, BOTH, SCALE = 0, 1, 2, 3

_ADD = tl.standard._sum_combine
_MAX = tl.standard._elementwise_max


def tile_offsets(uc, vc, lu, lv, V, su, sv):
    """The offsets of a tile's entries j = c + lane of rows (U, V, su, sv),
    from (uc, vc) = (c // V, c % V) per row and (lu, lv) = (lane // V,
    lane % V) per lane: ``u su + v sv`` with v = vc + lv (less V once
    where it reaches V: vc, lv < V) and u = uc + lu (+1 there).  No
    division in the loop."""
    v = vc[:, None] + lv
    wrap = v >= V[:, None]
    v = tl.where(wrap, v - V[:, None], v)
    u = uc[:, None] + lu + wrap.to(tl.int64)
    return u * su[:, None] + v * sv[:, None]


def row_base(ADDR, r, live, F64: tl.constexpr):
    """Pointers to the first entries of the table's rows ``r`` (``ADDR``:
    :class:`RowTable`'s addresses; float64 data where ``F64``, else float32)."""
    if F64:  # (one return: the compiler types every return of a function)
        base = tl.load(ADDR + r, mask=live, other=0).to(tl.pointer_type(tl.float64))
    else:
        base = tl.load(ADDR + r, mask=live, other=0).to(tl.pointer_type(tl.float32))
    return base


def row_shape(SHAPE, r, live):
    """(U, V, su, sv) of the table's rows ``r`` (:class:`RowTable`'s
    layouts; rows past the table: U = 0, V = 1)."""
    U = tl.load(SHAPE + 4 * r, mask=live, other=0)
    V = tl.load(SHAPE + 4 * r + 1, mask=live, other=1)
    su = tl.load(SHAPE + 4 * r + 2, mask=live, other=0)
    sv = tl.load(SHAPE + 4 * r + 3, mask=live, other=0)
    return U, V, su, sv


def table_entries(ADDR, SHAPE, r, live, j, F64: tl.constexpr):
    """Pointers to entries ``j`` (int64 lanes) of the table's rows ``r``,
    (len(r), len(j)): ``base_r + (j // V) su + (j % V) sv`` (for a kernel
    that holds whole rows: one division per program)."""
    _, V, su, sv = row_shape(SHAPE, r, live)
    u = j[None, :] // V[:, None]
    return row_base(ADDR, r, live, F64)[:, None] + (u * su[:, None] + (j[None, :] - u * V[:, None]) * sv[:, None])


def next_tile(uc, vc, bu, bv, V):
    """(uc, vc) of the next tile, c + BLOCK: plus (bu, bv) = (BLOCK // V, BLOCK % V), carried."""
    vc = vc + bv
    wrap = vc >= V
    return uc + bu + wrap.to(tl.int64), tl.where(wrap, vc - V, vc)


def _group_lasso_rows(ADDR, SHAPE, A, Y, R, OUT, PHASE: tl.constexpr, F64: tl.constexpr,
                      BLOCK_R: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    """Rows ``pid*BLOCK_R ..`` of the table (ADDR: (R,) int64 addresses of
    the rows' first entries; SHAPE: (R, 4) int64 U, V, su, sv; A: (R,)
    float64 thresholds; Y: (2, R) float64 norms (y, s)).  PHASE NORMS: write
    (y, s); MAP: read them and write the rows times their factors; BOTH:
    both, without the buffer; SCALE: the rows times the factors A.  The
    results go ``OUT`` entries past the data (0: in place; another tensor of
    the same strides).  A row's entries are taken in the order j = u V + v,
    BLOCK at a time: its sums do not depend on its neighbours."""
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    live = r < R
    X = row_base(ADDR, r, live, F64)
    U, V, su, sv = row_shape(SHAPE, r, live)
    n = U * V
    top = tl.reduce(n, 0, _MAX)
    lane = tl.arange(0, BLOCK).to(tl.int64)
    lu = lane[None, :] // V[:, None]  # (once per program: no division in the loops)
    lv = lane[None, :] - lu * V[:, None]
    bu = BLOCK // V
    bv = BLOCK - bu * V
    if PHASE == 3:
        f = tl.load(A + r, mask=live, other=0.0)
    elif PHASE == 1:
        y = tl.load(Y + r, mask=live, other=0.0)
        s = tl.load(Y + R + r, mask=live, other=1.0)
    else:
        acc = tl.full([BLOCK_R, BLOCK], 0.0, tl.float64)
        acc_s = tl.full([BLOCK_R, BLOCK], 0.0, tl.float64)  # F64: Blue's small entries, scaled up
        acc_b = tl.full([BLOCK_R, BLOCK], 0.0, tl.float64)  # F64: Blue's big entries, scaled down
        uc = tl.full([BLOCK_R], 0, tl.int64)
        vc = tl.full([BLOCK_R], 0, tl.int64)
        for c in tl.range(0, top, BLOCK):
            off = tile_offsets(uc, vc, lu, lv, V, su, sv)
            x = tl.load(X[:, None] + off, mask=live[:, None] & (c + lane[None, :] < n[:, None]), other=0.0).to(tl.float64)
            if F64:
                acc, acc_s, acc_b = blue_squares(x, acc, acc_s, acc_b)
            else:
                acc += x * x
            uc, vc = next_tile(uc, vc, bu, bv, V)
        smed = tl.reduce(acc, 1, _ADD)
        if F64:
            y, s = blue_scaled_norm(smed, tl.reduce(acc_s, 1, _ADD), tl.reduce(acc_b, 1, _ADD))
        else:
            y = tl.sqrt(smed)
            s = tl.full([BLOCK_R], 1.0, tl.float64)
        if PHASE == 0:
            tl.store(Y + r, y, mask=live)
            tl.store(Y + R + r, s, mask=live)
    if PHASE != 0:
        if PHASE != 3:
            a = tl.load(A + r, mask=live, other=0.0) / s
            f = tl.where(y > a, 1.0 - a / y, tl.where(y != y, 1.0, 0.0))
        if F64:
            fd = f
        else:
            fd = f.to(tl.float32)
        uc = tl.full([BLOCK_R], 0, tl.int64)
        vc = tl.full([BLOCK_R], 0, tl.int64)
        for c in tl.range(0, top, BLOCK):
            off = tile_offsets(uc, vc, lu, lv, V, su, sv)
            mask = live[:, None] & (c + lane[None, :] < n[:, None])
            x = tl.load(X[:, None] + off, mask=mask, other=0.0)
            tl.store(X[:, None] + (off + OUT), x * fd[:, None], mask=mask)
            uc, vc = next_tile(uc, vc, bu, bv, V)


@functools.cache
def kernel(interpret: bool):
    """The kernel, compiled (``interpret=False``) or interpreted."""
    return as_kernel(_group_lasso_rows, interpret, helpers={**HELPERS, "tile_offsets": tile_offsets, "next_tile": next_tile, "row_base": row_base,
                                                             "row_shape": row_shape},
                     do_not_specialize=["R", "OUT"])


# ------------------------------------------------------------------ row layouts


def row_layout(offsets) -> tuple | None:
    """``(base, U, V, su, sv)`` with row r of ``offsets`` (a (G, m) int64
    NumPy array: the memory offsets of a tensor's rows' entries, in their
    order) equal to ``base[r] + (j // V) su + (j % V) sv`` for j < m = U V,
    or None where no such two-level form reproduces every row exactly."""
    G, m = offsets.shape
    if G == 0 or m == 0:
        return None
    first = offsets[0]
    V, sv = m, (int(first[1] - first[0]) if m > 1 else 0)
    if m > 1:
        steps = np.diff(first)
        breaks = np.flatnonzero(steps != sv)
        V = int(breaks[0]) + 1 if breaks.size else m
    if m % V:
        return None
    U = m // V
    su = int(first[V] - first[0]) if U > 1 else 0
    j = np.arange(m, dtype=np.int64)
    pattern = (j // V) * su + (j % V) * sv
    base = offsets[:, 0].copy()
    if not np.array_equal(offsets, base[:, None] + pattern[None, :]):
        return None
    return base, U, V, su, sv


class RowTable:
    """The device tables of a launch: rows' addresses and layouts of the
    tensors ``leaves`` (each with its :func:`row_layout`), in order."""

    def __init__(self, leaves: list, layouts: list, device):
        import torch

        addr, shape = [], []
        for leaf, (base, U, V, su, sv) in zip(leaves, layouts):
            addr.append(leaf.data_ptr() + base * leaf.element_size())
            shape.append(np.broadcast_to(np.array([U, V, su, sv], dtype=np.int64), (base.shape[0], 4)))
        self.rows = sum(a.shape[0] for a in addr)
        self.addr = torch.from_numpy(np.concatenate(addr)).to(device)
        self.shape = torch.from_numpy(np.ascontiguousarray(np.concatenate(shape))).to(device)


def launch(table: RowTable, a, f64: bool, device, phase: int, Y=None, out: int = 0):
    """One launch over every row of ``table`` (group lasso thresholds ``a``:
    (R,) float64 on ``device``; ``f64``: the tensors' dtype is float64).
    ``phase`` :data:`NORMS`: returns the (2, R) float64 norms (y, s)
    (``||w_r|| = y s``), writes nothing; :data:`MAP`: the rows times their
    factors from those norms ``Y``, in place; :data:`BOTH`: the norms and
    the map in one launch, in place; :data:`SCALE`: the rows times the
    factors ``a`` themselves (GrOWL's), in place.  ``out``: the results
    written that many entries past the rows instead (a tensor of the data's
    strides).  Returns ``Y`` (None but for NORMS, unless given)."""
    import torch

    global launches
    R = table.rows
    if phase == NORMS:
        Y = torch.empty((2, R), dtype=torch.float64, device=device)
    if R == 0:
        return Y
    interpret = device.type != "cuda" or _interpreting_everything()
    block_r, block = (INTERPRET_BLOCK_R, INTERPRET_BLOCK) if interpret else (GPU_BLOCK_R, GPU_BLOCK)
    launches += 1
    run_kernel(kernel, interpret, (triton.cdiv(R, block_r),), device, (table.addr, table.shape, Y if a is None else a, a if Y is None else Y, R, out),
               dict(PHASE=phase, F64=f64, BLOCK_R=block_r, BLOCK=block), num_warps=4)
    return Y


def group_lasso(W, a, check_finite: bool = False, out=None):
    """The group lasso kernel (:data:`proxlib.backends.KERNELS`' contract) on
    the rows of the 2-D float32 or float64 torch tensor ``W``: into ``out``
    (which may be ``W``) or a new tensor; ``a`` one threshold per row or one
    for all (float64).  The rows go through the table as a training step's
    do (row r: ``U = 1, V = m``), so the same rows give the same bits.
    ``check_finite``: :class:`proxlib.backends.NonFiniteInput` (a ValueError)
    before anything is written if W holds NaN or Inf."""
    import math

    import torch

    from . import NonFiniteInput

    G, m = W.shape
    X = torch.empty_like(W) if out is None else out
    if G == 0 or m == 0:
        return X if out is not None else X.copy_(W)
    a = torch.broadcast_to(torch.as_tensor(a, dtype=torch.float64, device=W.device), (G,)).contiguous()
    Y = None
    if check_finite:  # (on W, before X is written: X may be W)
        Y = launch(_rows_table(W), a, W.dtype == torch.float64, W.device, NORMS)
        if not math.isfinite(float(Y.max())):
            raise NonFiniteInput("input contains NaN or Inf")
    src, delta = _source(W, X)
    launch(_rows_table(src), a, W.dtype == torch.float64, W.device, MAP if check_finite else BOTH, Y, delta)
    return X


def _source(W, X) -> tuple:
    """``(src, delta)``: the rows a launch reads and how many entries past
    them it writes X's: W itself where X has W's strides in other memory
    (no copy), else X after a copy of W (in place)."""
    if X is W or X.stride() != W.stride() or X.untyped_storage().data_ptr() == W.untyped_storage().data_ptr():
        if X is not W:
            X.copy_(W)
        return X, 0
    return W, (X.data_ptr() - W.data_ptr()) // W.element_size()


def _rows_table(W) -> RowTable:
    """The table of the rows of a 2-D tensor: row r at ``r s_r``, its entries
    ``j s_c``; kept for the last :data:`KEPT_TABLES` memories, shapes and
    strides (a table is a function of them alone: a public call in a loop on
    the same tensor copies none to the device again)."""
    G, m = W.shape
    return _strided_rows_table(W.data_ptr(), W.element_size(), G, m, *W.stride(), W.device)


#: how many public calls' row tables are kept (:func:`_rows_table`)
KEPT_TABLES = 64


@functools.lru_cache(maxsize=KEPT_TABLES)
def _strided_rows_table(ptr: int, itemsize: int, G: int, m: int, s_r: int, s_c: int, device) -> RowTable:
    return RowTable([_Memory(ptr, itemsize)], [(np.arange(G, dtype=np.int64) * s_r, 1, m, 0, s_c)], device)


class _Memory:
    """A tensor's address and entry size, as :class:`RowTable` reads them."""

    def __init__(self, ptr: int, itemsize: int):
        self.ptr, self.itemsize = ptr, itemsize

    def data_ptr(self) -> int:
        return self.ptr

    def element_size(self) -> int:
        return self.itemsize


def row_norms(W):
    """``(y, s)`` of the rows of the 2-D float32 or float64 torch tensor
    ``W`` (:func:`._stages.scaled_row_norms`' contract: ``||w_r|| = y_r
    s_r``, float64; s None for float32 rows, where it is 1), by the kernel's
    norms: the same bits as a training step's for the same rows."""
    import torch

    G, m = W.shape
    if G == 0 or m == 0:
        y = torch.zeros(G, dtype=torch.float64, device=W.device)
        return y, (None if W.dtype != torch.float64 else torch.ones_like(y))
    Y = launch(_rows_table(W), None, W.dtype == torch.float64, W.device, NORMS)
    return Y[0], (Y[1] if W.dtype == torch.float64 else None)


def scale_rows(W, f, out=None):
    """Row r of ``W`` times ``f_r`` rounded to W's dtype (the torch stages'
    map), by the kernel: into ``out`` (which may be ``W``) or a new tensor."""
    import torch

    X = torch.empty_like(W) if out is None else out
    if not W.numel():
        return X
    f = torch.broadcast_to(torch.as_tensor(f, dtype=torch.float64, device=W.device), (W.shape[0],)).contiguous()
    src, delta = _source(W, X)
    launch(_rows_table(src), f, W.dtype == torch.float64, W.device, SCALE, None, delta)
    return X
