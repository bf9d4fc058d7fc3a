r"""The terms of one proximal step run as batches: group lasso, GrOWL, weighted l1, the exclusive penalties, lp; and every term in a diagonal metric.

On a GPU a training step's prox is launch-bound: each term of a ResNet's
twenty convolutions costs a dozen small launches and as many host-side
operator calls, against a few microseconds of device work (see
``benchmarks/PROFILE_GPU.md``).  Both penalties are the stages of
:mod:`proxlib.backends._stages`, and only the first and the last touch the
tensor:

1. **statistics**, per tensor: the row norms ``(nrm, s)`` of its rows
   (:func:`._stages.scaled_row_norms` with the torch primitives: one
   reduction);
2. **solve**, per batch: the factor of every row of every tensor at once --
   the group lasso's ``(1 - a_r / ||w_r||)_+`` on the concatenated norms and
   thresholds (a handful of launches for the whole step, whatever the number
   of tensors), GrOWL's ``m_r / ||w_r||`` with ``m`` the OWL prox of each
   tensor's norms, solved on the host for every tensor after one copy of all
   the norms (one synchronisation per step instead of one per tensor);
3. **map**, per tensor: each row times its factor, written into the
   parameter (one multiplication, in place: the factors broadcast over the
   parameter where its rows are not a view of it, such as a convolution's
   ``"channel"`` rows).

With ``torch_dev.GROUP_ROWS`` (off by default until it has run on a GPU)
the three stages of every float32 and float64 tensor run in ONE Triton
launch per device and dtype (:mod:`proxlib.backends._triton_multi`), which
reads and writes the tensors where they are through a table of their
rows' addresses and layouts (:func:`multi_layout`, kept with the plans):
no torch operation per tensor (two launches with ``check_finite``, and one
read between them); GrOWL's terms take one launch for the norms, one copy
of them to the host for the OWLs, one launch for the map.

The weighted l1 is a map alone, ``v - clamp(v, -w, w)``: its terms run as
three multi-tensor operations (``torch._foreach_*``) per device and dtype,
whatever the number of tensors.  The exclusive lasso and group+exclusive
are row-wise (a row's result depends on that row alone): the rows of their
terms that share a length are stacked and solved by one call of the
kernel, so its sort, its sums and (group+exclusive) its root search with a
scalar read per round run once for all those tensors; with
``_xp_kernels.EXCLUSIVE_ROWS`` (off by default until it has run on a GPU)
the terms are instead read and written where they are (group+exclusive's
rows up to the Triton sort kernel's ``MAX_M`` entries), through the same
row tables, by one launch per device, dtype and row length
(:func:`proxlib.backends._triton_exclusive.solve_table`): no copy of the
rows in, none back, no torch operation per tensor.  The lp terms with
0 < p < 1 (a Newton loop with a scalar read per four steps) that share p
have their entries concatenated, with their thresholds spread over their
entries, and solved by one loop (:func:`._xp_kernels.lp_solve`, whose
entries never interact: one that stops moving stays put).

In a diagonal metric (``ProximalStep(metric=...)``, e.g. Adam's) every
kernel is a torch computation with one or more host reads per call (a root
search per row for the group penalties, a sort for the exclusive ones, a
Newton loop for lp), so the per-tensor cost is a whole solve: the row
kernels' terms are stacked as the exclusive ones are (rows of one length,
with their metrics and per-row thresholds; each row's root search stops
at its own last step, so a row's result does not depend on its stack), and
the separable kernels' terms (weighted l1, weighted squared l2, lp) are
concatenated, their thresholds spread over their entries.  On CPU
tensors with Numba (``torch_dev.CPU_KERNELS``) every kernel in a metric is
a compiled kernel instead, each term run alone and written straight into its parameter where its data
is a view of it (:func:`_metric_in_place`: no stack, no copy).  Each term is
checked when it joins the batch (:func:`prepare_metric`), so a failed
check writes nothing.

Every number is the one the public function computes for the same tensor:
the same statistics on the same rows, the same elementwise solve (IEEE
division and multiplication are correctly rounded, on the host as on the
device), the same host OWL, the same map, the same thresholds (a weighted
l1's single threshold formed on the host from host copies of its terms, so
that reading it never waits for the device).  So a step equals, bit for bit,
the terms applied one after another (``tests/test_torch_batched.py``).

Used by :class:`proxlib.torch.ProximalStep` for terms on the torch route
(every device but the CPU's Numba kernels); terms on one tensor keep their
order (a term waits for the batch holding its tensor to run first).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from proxlib import _range
from proxlib import _validate as V
from proxlib._dispatch import array_namespace
from proxlib.backends import _stages
from proxlib.backends import _xp_kernels as _k
from proxlib.backends import NonFiniteInput, check_row_norms
from proxlib.backends import torch_dev

from . import _bridge as B

#: the row-wise kernels (each row's result depends on that row alone): their
#: terms' rows are stacked and solved by one call of the kernel
ROW_WISE = ("exclusive_lasso", "group_exclusive")

#: the elementwise kernels whose terms' entries are concatenated and solved
#: by one call (see :func:`_lp`)
CONCATENATED = ("lp",)

#: the kernels whose terms are batched
KINDS = ("group_lasso", "growl", "weighted_l1") + ROW_WISE + CONCATENATED

#: the kernels in a diagonal metric (``ProximalStep(metric=...)``) whose
#: terms are batched: the row-wise ones stacked by row length (see
#: :func:`_metric_rows`), the separable ones concatenated (:func:`_metric_entries`)
METRIC_ROW_WISE = ("group_lasso_metric", "exclusive_lasso_metric", "group_exclusive_metric")
METRIC_SEPARABLE = ("weighted_l1_metric", "weighted_l2sq_metric", "lp_metric")

#: a stack of row-wise terms holds at most this many entries, or one term's
#: (the kernels make several float64 copies of what they solve: a stack may
#: not cost more memory than the largest term alone, or than this)
STACK_MAX = 1 << 22

#: a stack of metric terms on the CPU holds at most this many entries (a
#: member beyond it runs alone): each kernel streams a dozen to hundreds of
#: passes over its float64 working arrays, which stay in the caches for
#: stacks of up to about a megabyte of them; one by one, each tensor's
#: passes run while it is there.  Measured on 8 tensors of n entries (group
#: lasso, weighted l1, lp, group+exclusive in a metric), batched over one by
#: one: 0.2-0.6 at n = 2^10 and 0.7-0.9 at n = 2^14 (stacks of 2^16), but
#: 1.0-2.4 in stacks of 2^17 (two tensors of 2^16; alone under this cap:
#: 1.0).  (On an accelerator a stack holds up to STACK_MAX: a launch costs
#: more than such a pass.)
METRIC_STACK_MAX_CPU = 1 << 16

#: ``False`` runs every term on its own (for comparisons: tests, benchmarks)
ENABLED = True


class Member:
    """One term's share of a batch: its plan and leaf, the thresholds at its
    step, its rows' norms ``(nrm, s)``; ``data``, the rows its kernel reads,
    is kept only where the map needs them (see :func:`_write`)."""

    __slots__ = ("plan", "leaf", "data", "thr", "step", "nrm", "s", "device", "dtype", "wide", "d", "E", "d_min", "layout")

    def __init__(self, plan, leaf, data, thr, step, like):
        self.plan, self.leaf, self.data, self.thr, self.step = plan, leaf, data, thr, step
        self.device, self.dtype = like.device, like.dtype  # (the data's)
        self.wide = like.dtype == torch.float64  # float64 rows: norms with a scale s kept apart
        self.d = self.E = self.d_min = None  # (metric members) the metric, 2^E dividing the objective, d's least entry
        self.layout = None  # (group lasso on torch_dev.GROUP_ROWS's kernel) its rows' layout in the leaf (multi_layout)


def kind_of(plan) -> str:
    """The kernel a plan's batch is named by: its penalty's kernel, or its
    kernel in a diagonal metric."""
    return plan.pen.metric_kernel if plan.metric else plan.pen.kernel


def batched(pen, metric: bool, x: torch.Tensor, inplace: bool) -> bool:
    """Whether a plan of the registry penalty ``pen`` on data like ``x`` (the
    working tensor: its dtype and device) joins a step's batch: one of
    :data:`KINDS` (weighted l1 only written in place: ``inplace``) computed
    by torch operations (not Numba's kernels on a CPU tensor:
    ``torch_dev.CPU_KERNELS``); in a diagonal metric (``metric``), one of
    :data:`METRIC_ROW_WISE` or :data:`METRIC_SEPARABLE`."""
    if metric:  # (the metric kernels are torch operations on every device)
        return pen.metric_kernel in METRIC_ROW_WISE + METRIC_SEPARABLE
    return (pen.kernel in KINDS and torch_dev.runs_torch_ops(pen.kernel, x)
            and (inplace or pen.kernel != "weighted_l1"))


def prepare(plan, leaf: torch.Tensor, step: float):
    """The :class:`Member` of ``plan`` on ``leaf`` at ``step`` with its
    statistics computed, or None where the term runs on its own (thresholds
    beyond the kernels' range: the public function's exact
    transformations).  Rows that are a copy of the parameter (a
    convolution's ``"channel"`` rows) are let go once reduced: a step holds
    one such copy at a time, as the terms one by one do; the row-wise
    kernels' rows that are a copy are formed when their stack is solved."""
    kind = plan.pen.kernel
    layout = multi_layout(plan, leaf) if kind in TABLE_KINDS else None
    if layout is not None:  # read and written in place by one kernel per batch (and row length): no statistics here
        # (on the host: one table of per-row thresholds, _table_thresholds; GrOWL's weights for the host's OWL)
        thr = _host_thresholds(plan, step, leaf)
        if thr is None:
            return None
        m = Member(plan, leaf, None, thr, step, leaf)
        m.layout = layout
        return m
    like = plan.batch_memo.get("copied_rows_like")  # (row-wise plans whose rows are a copy)
    if like is not None:
        thr = plan.thresholds(step, like)
        return None if thr is None else Member(plan, leaf, None, thr, step, like)
    data = plan.data(leaf.detach() if plan.inplace else B.working_tensor(leaf))
    thr = plan.thresholds(step, data)
    if thr is None:
        return None
    m = Member(plan, leaf, data, thr, step, data)
    if kind in ROW_WISE:
        if not B.shares_memory(data, leaf):  # from the next step on, formed when solved; this empty
            # tensor stands for them where only their dtype and device count (the thresholds)
            plan.batch_memo["copied_rows_like"] = data.new_empty(0)
        return m
    if kind == "weighted_l1" or kind in CONCATENATED:
        return m  # no statistics
    m.nrm, m.s = _stages.scaled_row_norms(data, torch_dev.prims)
    if not plan.inplace:
        m.data = None  # a copy (or a float32 copy of half precision): not held until the map
    return m


def prepare_metric(plan, leaf: torch.Tensor, step: float, d: torch.Tensor, check_finite: bool) -> Member:
    """The :class:`Member` of the metric plan ``plan`` on ``leaf`` at
    ``step`` in the metric ``d`` (a tensor of the leaf's shape), checked
    now (with ``check_finite``: the parameter and the metric finite, the
    metric > 0; the division of the objective by 2^E in range): before
    anything of the step's batches is written.  (A metric term run alone,
    :meth:`proxlib.torch.prox._Plan.run`, is a batch of this one member.)  Nothing is copied: the rows and the metric in
    the kernel's layout are formed when the member's stack is solved."""
    if check_finite:  # (the values plan.run checks, in the leaf's layout: the same verdicts)
        V.check_all_finite(leaf.detach(), "the parameter")
        V.check_all_finite(d, "the metric")
        if not bool((d > 0).all()):
            raise ValueError("the metric must be > 0 everywhere")
    memo = plan.batch_memo
    if "like" not in memo:  # the working dtype (half precision: float32) and float64, on the leaf's device
        dtype = leaf.dtype if leaf.dtype in (torch.float32, torch.float64) else torch.float32
        memo["like"] = (leaf.new_empty(0, dtype=dtype), leaf.new_empty(0, dtype=torch.float64))
    like, like64 = memo["like"]
    thr, E = plan.metric_thresholds(step, like64)  # (apply_metric's, on the float64 metric's device)
    m = Member(plan, leaf, None, thr, step, like)
    m.d, m.E = d.detach(), E
    if E != 0:
        m.d_min = float(d.min())
        _range.check_metric_divided(m.d_min, E)
    return m


def run(members: list, check_finite: bool, cache: dict) -> None:
    """Apply every member's prox (all of one kind of :data:`KINDS`, their
    statistics computed by :func:`prepare`; or of :data:`METRIC_ROW_WISE`
    or :data:`METRIC_SEPARABLE`, from :func:`prepare_metric`), under
    no_grad.  ``cache`` keeps what depends only on the thresholds between
    steps, and GrOWL's sorted orders of the norms (the caller's, one per
    :class:`proxlib.torch.ProximalStep`)."""
    with torch.no_grad():
        kind = kind_of(members[0].plan)
        if kind in METRIC_ROW_WISE:
            return _metric_rows(members)
        if kind in METRIC_SEPARABLE:
            return _metric_entries(members)
        if kind in ROW_WISE:  # (the kernel checks the stacked rows before any write)
            return _row_wise(members, check_finite, cache)
        if kind == "lp":
            return _lp(members, check_finite)
        multi = [m for m in members if m.layout is not None]
        members = [m for m in members if m.layout is None] if multi else members
        if check_finite:  # before any write: nothing changes when it raises
            for m in members:
                if m.plan.fused_check:  # the row kernels check the norms they compute, as here
                    check_row_norms(m.nrm, torch)
                else:
                    V.check_all_finite(m.data, "the parameter")
        if multi:  # (checked, when check_finite, before it writes; the other members are checked already)
            (_multi_group_lasso if kind == "group_lasso" else _multi_growl)(multi, check_finite, cache)
            if not members:
                return
        if kind == "weighted_l1":
            return _soft_threshold(members)
        for device in {m.device for m in members}:
            on = [m for m in members if m.device == device]
            f = _group_lasso_factors(on, cache) if kind == "group_lasso" else _growl_factors(on, cache)
            sizes = [m.nrm.shape[0] for m in on]
            # the kernels multiply by the factor in the data's dtype: cast once per dtype
            parts = {dt: torch.split(f.to(dt), sizes) for dt in {m.dtype for m in on}}
            for i, m in enumerate(on):
                _write(m, parts[m.dtype][i])


def _group_lasso_factors(members: list, cache: dict) -> torch.Tensor:
    """The factors (1 - a_r / ||w_r||)_+ of every member's rows, concatenated:
    one solve over the concatenated norms and thresholds
    (:func:`._stages.group_lasso_factor`, elementwise)."""
    if len(members) == 1:
        m = members[0]
        return _stages.group_lasso_factor(m.nrm, m.thr[0], m.s)
    nrm = torch.cat([m.nrm for m in members])
    return _stages.group_lasso_factor(nrm, _thresholds(members, cache), _scales(members))


def _scales(members: list):
    """The members' norm scales s (:func:`._stages.scaled_row_norms`),
    concatenated, or None where no member has float64 rows (s is 1 for the
    others: a / 1, the same bits as no division)."""
    if not any(m.wide for m in members):
        return None
    return torch.cat([m.s if m.s is not None else torch.ones_like(m.nrm) for m in members])


def _kept(cache: dict, key, objects: tuple, make):
    """``cache[key]``'s value while ``objects`` are the very objects it was
    made from (held with it: their ids stay theirs), else ``make()``'s,
    kept."""
    hit = cache.get(key)
    if hit is None or len(hit[0]) != len(objects) or any(x is not y for x, y in zip(hit[0], objects)):
        hit = cache[key] = (objects, make())
    return hit[1]


def _kept_orders(members: list, n: int, cache: dict, key=None) -> np.ndarray:
    """The host OWL's sorted orders of the members' norms (int64, ``n`` in
    all: the same plans have the same rows), kept from step to step while
    the members' plans are the same (each segment starts at -1: none yet),
    under ``key`` (default: the members' device)."""
    return _kept(cache, key or ("growl_orders", members[0].device), tuple(m.plan for m in members),
                 lambda: np.full(n, -1, dtype=np.int64))


def _thresholds(members: list, cache: dict, key=None) -> torch.Tensor:
    """The members' group-lasso thresholds a_r, float64, concatenated (one
    per row of ``m.nrm``; members with a ``layout`` take
    :func:`_table_thresholds`): formed again only when a member's thresholds change (a new step, a new
    plan); kept under ``key`` (default: the members' device)."""
    return _kept(cache, key or ("group_lasso", members[0].device), tuple(m.thr for m in members),
                 lambda: torch.cat([torch.broadcast_to(m.thr[0].to(torch.float64), m.nrm.shape) for m in members]))


def _host_thresholds(plan, step: float, leaf: torch.Tensor):
    """The plan's thresholds at ``step`` as :meth:`proxlib.torch.prox._Plan.thresholds`
    forms them on the leaf's device (:func:`proxlib._range.thresholds_in_range`:
    the scalar part's mantissas rounded once, times the per-row array,
    rounded to the data's dtype), formed on the host instead from host
    copies of the arrays (kept on the plan): the same bits (IEEE products
    and roundings), with no torch operation, so that a learning rate that
    changes at every step (a schedule) costs a step one copy of a table's
    thresholds to the device (:func:`_table_thresholds`) and not a few
    operations per tensor.  None where they are beyond the kernels' range."""
    memo = plan.batch_memo
    if "host_thresholds" not in memo:
        terms = tuple(_range.Threshold(t.scalars, t.array.detach().cpu().numpy() if isinstance(t.array, torch.Tensor) else t.array,
                                       t.degree, t.top) for t in plan.terms)
        like = np.empty(0, dtype=np.float64 if leaf.dtype == torch.float64 else np.float32)
        memo["host_thresholds"] = (_range.AtStep(terms), like)
    at_step, like = memo["host_thresholds"]
    return at_step(step, like)


def _table_thresholds(members: list, j: int, device) -> torch.Tensor:
    """The members' j-th thresholds (host-formed: :func:`_host_thresholds`)
    spread over their rows (``m.layout``'s), float64, concatenated on the
    host and copied to ``device`` once: on CUDA from pinned memory without
    blocking (a copy from pageable memory would wait for the device's queue,
    the training step's kernels, at every step; torch's pinned-memory cache
    keeps the buffer until the copy is done)."""
    parts = [np.broadcast_to(np.asarray(m.thr[j], dtype=np.float64).reshape(-1), (m.layout[0].shape[0],)) for m in members]
    host = torch.from_numpy(np.concatenate(parts))
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def multi_layout(plan, leaf: torch.Tensor):
    """The layout of the plan's rows in ``leaf``
    (:func:`proxlib.backends._triton_multi.row_layout`) where a Triton kernel
    reads and writes them there (:data:`TABLE_KINDS`): the group lasso's and
    GrOWL's under ``torch_dev.GROUP_ROWS`` (:mod:`._triton_multi`), the
    exclusive lasso's, and group+exclusive's rows of at most ``MAX_M``
    entries, under ``_xp_kernels.EXCLUSIVE_ROWS``
    (:func:`proxlib.backends._triton_exclusive.solve_table`), else None: a
    plain float32 or float64 tensor (not a subclass: a sharded tensor's rows
    are not its local memory) without overlapping entries whose rows the
    two-level layout describes.  Kept on the plan, which is rebuilt when the
    leaf's memory, shape or strides change."""
    if leaf.dtype not in (torch.float32, torch.float64) or type(leaf) not in (torch.Tensor, torch.nn.Parameter):
        return None
    switch, module = TABLE_KINDS[plan.pen.kernel]()
    kernels = _k._triton_module(leaf, switch, module)
    if kernels is None or (module == "_triton_exclusive" and (plan.rows_shape is None or plan.rows_shape[1] == 0
                                                              or (plan.pen.kernel == "group_exclusive" and plan.rows_shape[1] > kernels.MAX_M))):
        return None
    memo = plan.batch_memo
    if "multi_layout" not in memo:
        layout = _layout_of_rows(plan, leaf)
        if layout is not None and plan.pen.kernel == "growl" and not torch_dev.solved_on_host(layout[0].shape[0], leaf.device):
            layout = None  # (GrOWL's OWL of this many norms runs on the device, as the public function runs it)
        memo["multi_layout"] = layout
    return memo["multi_layout"]


#: the kernels whose terms a Triton kernel may read and write in place
#: (:func:`multi_layout`): their switch and kernel module
TABLE_KINDS = {
    "group_lasso": lambda: (torch_dev.GROUP_ROWS, "_triton_multi"),
    "growl": lambda: (torch_dev.GROUP_ROWS, "_triton_multi"),
    "exclusive_lasso": lambda: (_k.EXCLUSIVE_ROWS, "_triton_exclusive"),
    "group_exclusive": lambda: (_k.EXCLUSIVE_ROWS, "_triton_exclusive"),
}


def _layout_of_rows(plan, leaf: torch.Tensor):
    """:func:`multi_layout` computed: the plan's rows of the memory offsets
    of the leaf's entries, read off by ``row_layout``."""
    from proxlib.backends import _triton_multi

    if leaf.numel() == 0 or not _non_overlapping(leaf):
        return None  # (entries sharing memory would be written twice)
    offsets = torch.zeros((), dtype=torch.int64)
    for dim, (n, stride) in enumerate(zip(leaf.shape, leaf.stride())):
        shape = [1] * leaf.ndim
        shape[dim] = n
        offsets = offsets + (torch.arange(n, dtype=torch.int64) * stride).reshape(shape)
    rows = plan.data(offsets.expand(leaf.shape))
    return _triton_multi.row_layout(np.ascontiguousarray(rows.numpy())) if rows.ndim == 2 else None


def _non_overlapping(t: torch.Tensor) -> bool:
    """Whether no two entries of ``t`` share memory: its dimensions of more
    than one entry, by increasing stride, each stride at least the span of
    the ones before (a sufficient condition; dense tensors in any memory
    format meet it)."""
    span = 1
    for stride, n in sorted((abs(st), n) for st, n in zip(t.stride(), t.shape) if n > 1):
        if stride < span:
            return False
        span = stride * n
    return True


def _multi_group_lasso(members: list, check_finite: bool, cache: dict) -> None:
    """The group lasso of the members (each with its ``layout``) by
    :mod:`proxlib.backends._triton_multi`: one launch per device and dtype
    (two with ``check_finite``: the norms, one read of their finiteness,
    then the map; nothing is written before every group is checked).  The
    tables (row addresses and layouts) and the thresholds are kept in
    ``cache`` while the members' plans and thresholds are the same."""
    from proxlib.backends import _triton_multi as tm

    solves = []
    for (device, dtype), on in _multi_groups(members).items():
        a = _kept(cache, ("multi_thresholds", device, dtype), tuple(m.thr for m in on), lambda: _table_thresholds(on, 0, device))
        solves.append((_multi_table(on, cache), a, dtype == torch.float64, device))
    norms = [_checked_norms(table, f64, device) if check_finite else None for table, _, f64, device in solves]
    for solve, y in zip(solves, norms):
        tm.launch(*solve, tm.MAP if check_finite else tm.BOTH, y)
    for m in members:
        torch.autograd.graph.increment_version(m.leaf)


def _multi_groups(members: list) -> dict:
    """The members by (device, dtype): one launch each."""
    groups: dict = {}
    for m in members:
        groups.setdefault((m.device, m.dtype), []).append(m)
    return groups


def _multi_table(on: list, cache: dict, length=None):
    """The row table of the members ``on`` (one device and dtype; the
    exclusive penalties': one row ``length``), kept in ``cache`` while their
    plans are the same (a plan holds its tensor's memory, shape and strides:
    :meth:`proxlib.torch.prox._Plan.holds`).  The penalty is in the key: a
    step's batches of two penalties keep their own tables."""
    from proxlib.backends import _triton_multi as tm

    device, dtype = on[0].device, on[0].dtype
    return _kept(cache, ("multi_table", kind_of(on[0].plan), device, dtype, length), tuple(m.plan for m in on),
                 lambda: tm.RowTable([m.leaf for m in on], [m.layout for m in on], device))


def _checked_norms(table, f64: bool, device):
    """The norms (y, s) of the table's rows (:mod:`._triton_multi`, one
    launch), their largest read once (y >= 0, s a finite power of two; NaN
    propagates): :class:`NonFiniteInput` unless every row is finite."""
    from proxlib.backends import _triton_multi as tm

    Y = tm.launch(table, None, f64, device, tm.NORMS)
    if table.rows and not math.isfinite(float(Y.max())):
        raise NonFiniteInput("input contains NaN or Inf")
    return Y


def _multi_growl(members: list, check_finite: bool, cache: dict) -> None:
    """GrOWL of the members (each with its ``layout``) by
    :mod:`proxlib.backends._triton_multi`, per device and dtype: one launch
    for every row's norm, one copy of them to the host, the host's OWL of
    each member's norms (:func:`_growl_factors`' call, the same bits), one
    copy of the factors back and one launch for the map.  With
    ``check_finite``, every group's norms are checked (on the host copy)
    before any is written."""
    from proxlib.backends import _triton_multi as tm

    solved = []
    for (device, dtype), on in _multi_groups(members).items():
        table = _multi_table(on, cache)
        Y = tm.launch(table, None, dtype == torch.float64, device, tm.NORMS).cpu().numpy()
        solved.append((on, table, Y, dtype == torch.float64, device))
    if check_finite and not all(np.isfinite(Y[0]).all() for _, _, Y, _, _ in solved):
        raise NonFiniteInput("input contains NaN or Inf")
    for on, table, Y, wide, device in solved:
        orders = _kept_orders(on, table.rows, cache, ("multi_growl_orders", device, wide))
        f = _host_growl(on, [m.layout[0].shape[0] for m in on], Y[0], Y[1] if wide else None, orders)
        tm.launch(table, torch.from_numpy(f).to(device), wide, device, tm.SCALE)
    for m in members:
        torch.autograd.graph.increment_version(m.leaf)


def _growl_factors(members: list, cache: dict) -> torch.Tensor:
    """The GrOWL factors of every member's rows, concatenated
    (:func:`._stages.growl_factor`, with the host OWL of
    :func:`torch_dev.host_owl`): all solved on the host after one copy of
    every member's norms, in one call (:func:`torch_dev.host_growl_factors`,
    which keeps the sorted order of each member's norms from step to step in
    ``cache``), and copied back at once.  Members on an accelerator with
    more than ``torch_dev.OWL_ON_HOST_MAX`` rows, which the public function
    solves on the device, are solved as it solves them."""
    device = members[0].device
    host = [torch_dev.solved_on_host(m.nrm.shape[0], device) for m in members]
    on_host = [m for m, h in zip(members, host) if h]
    f_host = None
    if on_host:
        nrm = torch.cat([m.nrm for m in on_host]).cpu().numpy()
        s = _scales(on_host)
        f = _host_growl(on_host, [m.nrm.shape[0] for m in on_host], nrm, None if s is None else s.cpu().numpy(),
                        _kept_orders(on_host, nrm.shape[0], cache))
        f_host = torch.from_numpy(f).to(device)
        if all(host):
            return f_host
    parts, offset = [], 0
    for m, h in zip(members, host):
        if h:
            parts.append(f_host[offset:offset + m.nrm.shape[0]])
            offset += m.nrm.shape[0]
        else:
            parts.append(_stages.growl_factor(m.nrm, m.thr[0], torch_dev._owl_vector, m.s if m.wide else None))
    return torch.cat(parts)


def _host_growl(members: list, rows: list, nrm: np.ndarray, s, orders: np.ndarray) -> np.ndarray:
    """GrOWL's factors of the members' rows on the host: ``nrm`` and ``s``
    (None: 1) float64 NumPy vectors of their norms (``rows`` of each member,
    in order), one call for all (:func:`torch_dev.host_growl_factors`, which
    keeps each member's sorted order in ``orders`` from step to step), or
    member by member (:func:`._stages.growl_factor` with the host OWL) where
    it declines: the same bits."""
    starts = np.cumsum([0] + rows)
    w = [_host_weights(m) for m in members]
    f = torch_dev.host_growl_factors(nrm, s, np.concatenate(w), starts, orders)
    if f is None:
        f = np.concatenate([_stages.growl_factor(nrm[a:b], wm, torch_dev.host_owl, s[a:b] if s is not None and m.wide else None)
                            for m, wm, a, b in zip(members, w, starts[:-1], starts[1:])])
    return f


def _row_wise(members: list, check_finite: bool, cache: dict) -> None:
    """The row-wise kernel (exclusive lasso, group+exclusive) once per stack:
    the members' rows of one device, dtype and length stacked in one matrix
    with their per-row thresholds, solved by the public kernel, and each
    member's rows written back as :meth:`proxlib.torch.prox._Plan.run`
    writes them.  A row's result depends on that row alone, so it is the
    same row solved with its tensor's other rows, whatever the stack holds:
    on the CPU the same bits (``tests/test_torch_batched.py``); on a GPU
    a reduction over the rows may be blocked differently for another number
    of rows (rounding).  With ``check_finite`` the kernel checks the whole
    stack before anything is written.  Stacks hold at most
    ``max(STACK_MAX, the largest member)`` entries.  Members with a row
    ``layout`` are solved in place instead (:func:`_row_tables`): checked
    first, written last."""
    tables = [m for m in members if m.layout is not None]
    if tables:
        members = [m for m in members if m.layout is None]
        solves = _row_tables(tables, check_finite, cache)
    buckets: dict = {}
    for m in members:
        # (a threshold that is a Python float, not a tensor, would not stack: such a member solves alone)
        alone = not all(isinstance(t, torch.Tensor) for t in m.thr)
        rows, length = m.plan.rows_shape
        buckets.setdefault((m.device, m.dtype, length, m.plan.fixed, id(m) if alone else None), []).append(m)
    for on in buckets.values():
        for stack in _stacks(on, lambda m: math.prod(m.plan.rows_shape)):
            _solve_stack(stack, check_finite)
    if tables:
        for solve in solves:
            solve()
        for m in tables:
            torch.autograd.graph.increment_version(m.leaf)


def _row_tables(members: list, check_finite: bool, cache: dict) -> list:
    """The exclusive penalties' members with a row ``layout``
    (:func:`multi_layout`) as one in-place launch per device, dtype and row
    length (:func:`proxlib.backends._triton_exclusive.solve_table`: the rows
    read where they are, solved as the stacked kernel solves them, written
    back there), returned as calls to make.  With ``check_finite``, every
    row is checked first (the norms of :mod:`._triton_multi` over the same
    tables, one read of their maximum per table: nothing is written before
    every row is checked).  The tables and the per-row thresholds are kept
    in ``cache`` while the members' plans and thresholds are the same."""
    from proxlib.backends import _triton_exclusive as tx

    kind = kind_of(members[0].plan)
    group = kind == "group_exclusive"
    buckets: dict = {}
    for m in members:  # (the kind in the keys: a step's exclusive and group+exclusive batches keep their own)
        buckets.setdefault((kind, m.device, m.dtype, m.plan.rows_shape[1]), []).append(m)
    solves = []
    for key, on in buckets.items():
        _, device, dtype, length = key
        plans = tuple(m.plan for m in on)
        table = _multi_table(on, cache, length)
        T = _kept(cache, ("row_table_totals",) + key, plans, lambda: torch.empty(table.rows, dtype=torch.float64, device=device))
        thr = [_kept(cache, ("row_table_thresholds", j) + key, tuple(m.thr for m in on), lambda: _table_thresholds(on, j, device))
               for j in range(2 if group else 1)]
        a, b = thr if group else (None, thr[0])
        f64 = dtype == torch.float64
        if check_finite:
            _checked_norms(table, f64, device)
        solves.append(lambda table=table, a=a, b=b, length=length, f64=f64, device=device, T=T:
                      tx.solve_table(table, a, b, length, f64, device, _k._MAX_ROOT_ITER, T))
    return solves


def _stacks(members: list, size, cap: int | None = None):
    """The members, in their order, in consecutive stacks of at most ``cap``
    entries (``size(m)``: a member's; a member beyond it is a stack alone),
    by default ``max(STACK_MAX, the largest member)``."""
    cap = max(STACK_MAX, max(size(m) for m in members)) if cap is None else cap
    stack, total = [], 0
    for m in members:
        n = size(m)
        if stack and total + n > cap:
            yield stack
            stack, total = [], 0
        stack.append(m)
        total += n
    yield stack


def _solve_stack(members: list, check_finite: bool) -> None:
    """One call of the row-wise kernel on the members' stacked rows (one
    member: on its rows as they are), each member's rows written back."""
    plan = members[0].plan
    kw = {"check_finite": check_finite} if plan.fused_check else {}
    data = [m.data if m.data is not None else m.plan.data(B.working_tensor(m.leaf)) for m in members]
    if check_finite and not plan.fused_check:
        for d in data:
            V.check_all_finite(d, "the parameter")
    if len(members) == 1:
        m = members[0]
        parts = [plan.kernel(data[0], *m.thr, *plan.fixed, **kw)]
    else:
        rows = [d.shape[0] for d in data]
        parts = torch.split(plan.kernel(torch.cat(data), *_spread_thresholds(members, rows), *plan.fixed, **kw), rows)
    for m, X in zip(members, parts):
        m.leaf.copy_(m.plan.restore(X))


def _lp(members: list, check_finite: bool) -> None:
    """The lp terms: those with 0 < p < 1 and lam > 0 that share a device and
    p are concatenated (float64 entries, as the kernel reads them) in stacks
    of at most ``max(STACK_MAX, the largest member)`` entries, each member's
    lam and the kernel's constants (tau, beta) of it spread over its entries,
    and solved by one Newton loop (:func:`._xp_kernels.lp_solve`; a single
    member calls the kernel, which makes the same operations); each
    member's part is rounded to its dtype and written back as
    :meth:`proxlib.torch.prox._Plan.run` writes it.  Every operation on an
    entry is the one the kernel makes with that member's lam alone (an
    elementwise array of equal thresholds in place of the number, and the
    loop's extra steps leave a stopped entry where it is), so the result is
    the terms' one by one, bit for bit.  p = 0 or 1 (closed forms) and
    lam = 0 run on their own.  With ``check_finite`` every member is
    checked before anything is written."""
    if check_finite:
        for m in members:
            V.check_all_finite(m.data, "the parameter")
    buckets: dict = {}
    for m in members:
        lam, p = m.thr[0], m.plan.fixed[0]
        alone = not (isinstance(lam, float) and lam > 0 and 0 < p < 1)
        buckets.setdefault((m.device, p, id(m) if alone else None), []).append(m)
    for (device, p, alone), on in buckets.items():
        if alone is not None or len(on) == 1:
            m = on[0]
            m.leaf.copy_(m.plan.restore(m.plan.kernel(m.data, *m.thr, *m.plan.fixed)))
            continue
        for stack in _stacks(on, lambda m: m.data.numel()):
            _lp_stack(stack, p)


def _lp_stack(members: list, p: float) -> None:
    """One Newton loop over the members' concatenated entries (see :func:`_lp`)."""
    device = members[0].device
    sizes = [m.data.numel() for m in members]
    v64 = torch.cat([m.data.reshape(-1).to(torch.float64) for m in members])

    def spread(values):
        return torch.cat([torch.full((n,), c, dtype=torch.float64, device=device) for n, c in zip(sizes, values)])

    lam = [m.thr[0] for m in members]
    tau, beta = zip(*(_range.lp_constants(a, p) for a in lam))
    X = _k.lp_solve(v64, torch.abs(v64), spread(lam), p, spread(tau), spread(beta), array_namespace(v64))
    for m, part in zip(members, torch.split(X, sizes)):
        m.leaf.copy_(m.plan.restore(part.to(m.dtype)))


def _metric_rows(members: list) -> None:
    """The row-wise kernels in a diagonal metric (group lasso, exclusive,
    group+exclusive): as :func:`_row_wise`, the members' rows of one
    device, dtype and length stacked, with their metrics and per-row
    thresholds, and solved by one call of the kernel per stack.  Each
    row's result depends on that row alone, its root search included
    (:func:`proxlib.backends._metric_kernels._root` stops each row at its
    own last step), so on the CPU it is the same bits as the terms one by
    one; on a GPU a reduction over the rows may be blocked differently for
    another number of rows (rounding)."""
    buckets: dict = {}
    for m in members:
        if _metric_in_place(m):
            continue
        rows, length = m.plan.rows_shape
        buckets.setdefault((m.device, m.dtype, length, m.plan.fixed), []).append(m)
    for on in buckets.values():
        for stack in _stacks(on, lambda m: math.prod(m.plan.rows_shape), _metric_stack_max(on[0])):
            _solve_metric_stack(stack, lambda x, m: x.shape[0], lambda x: x)


def _metric_entries(members: list) -> None:
    """The separable kernels in a diagonal metric (weighted l1, weighted
    squared l2, lp): the entries of the members of one device, dtype and
    fixed parameter (lp's p) concatenated, with their metrics and their
    thresholds spread over their entries, and solved by one call per stack
    (every operation is elementwise: the terms' bits one by one).  An lp
    term with lam = 0 (the identity) runs on its own."""
    buckets: dict = {}
    for m in members:
        if _metric_in_place(m):
            continue
        alone = m.plan.pen.metric_kernel == "lp_metric" and not (isinstance(m.thr[0], float) and m.thr[0] > 0)
        buckets.setdefault((m.device, m.dtype, m.plan.fixed, id(m) if alone else None), []).append(m)
    for on in buckets.values():
        for stack in _stacks(on, lambda m: m.leaf.numel(), _metric_stack_max(on[0])):
            _solve_metric_stack(stack, lambda x, m: x.numel(), lambda x: x.reshape(-1))


def _metric_in_place(m: Member) -> bool:
    """Run the member ``m`` on its own, written straight into its
    parameter, where Numba's serial kernel takes it (a CPU tensor, float32
    or float64, whose data -- its entries, or its rows -- is a view of it
    that the kernel writes: ``torch_dev.writes_out``): the separable
    kernels' one pass over the tensor and its metric, the group lasso's,
    exclusive lasso's and group+exclusive's rows one by one, with no copy
    (stacking the terms would copy every entry, its metric and its
    thresholds, and the results back: more than the separable kernels'
    pass).  The same kernel on the
    same values as the stacks (each row or entry alone): the same bits.
    Returns whether it ran."""
    plan = m.plan
    if m.dtype != m.leaf.dtype or torch_dev.runs_torch_ops(plan.pen.metric_kernel, m.leaf):
        return False
    data = plan.data(m.leaf.detach())
    if not (B.shares_memory(data, m.leaf) and torch_dev.writes_out(plan.pen.metric_kernel, data, data)):
        return False
    plan.kernel(data, _metric_operand(m), *m.thr, *plan.fixed, out=data)
    torch.autograd.graph.increment_version(m.leaf)
    return True


def _metric_stack_max(m: Member) -> int:
    """The most entries of a stack of metric terms on the member's device."""
    return METRIC_STACK_MAX_CPU if m.device.type == "cpu" else STACK_MAX


def _solve_metric_stack(members: list, count, flat) -> None:
    """One call of the metric kernel on the members' data and metrics in its
    layout (:meth:`proxlib.torch.prox._Plan.run`'s: rows, or the tensor as
    it is), ``flat``-tened and concatenated, with each threshold spread
    over the member's ``count(data, member)`` rows or entries; each
    member's part written back as ``_Plan.run`` writes it.  One member:
    ``_Plan.run``'s call on its own data."""
    plan = members[0].plan
    data = [m.plan.data(B.working_tensor(m.leaf)) for m in members]
    D = [_metric_operand(m) for m in members]
    if len(members) == 1:
        parts = [plan.kernel(data[0], D[0], *members[0].thr, *plan.fixed)]
    else:
        sizes = [count(x, m) for x, m in zip(data, members)]
        X = plan.kernel(torch.cat([flat(x) for x in data]), torch.cat([flat(x) for x in D]),
                        *_spread_thresholds(members, sizes), *plan.fixed)
        parts = [part.reshape(x.shape) for part, x in zip(torch.split(X, sizes), data)]
    for m, X in zip(members, parts):
        m.leaf.copy_(m.plan.restore(X))


def _metric_operand(m: Member) -> torch.Tensor:
    """The member's metric in its kernel's layout, as the kernel reads it: in
    its own dtype where it is float32 or float64 and the objective is not
    divided (E = 0; the kernels widen it to float64 exactly, and a stack of
    both is concatenated in float64: no float64 copy per tensor), else a
    float64 copy divided by 2^E (:func:`proxlib._range.metric_divided`)."""
    d = m.plan.data(m.d)
    if m.E == 0 and d.dtype in (torch.float32, torch.float64):
        return d
    return _range.metric_divided(d.to(torch.float64), m.E, m.d_min)


def _spread_thresholds(members: list, sizes: list) -> list:
    """Each of the members' thresholds spread over their ``sizes`` (rows, or
    entries) and concatenated, float64: the same value for every row or
    entry as the kernel would broadcast (an array of one value broadcast, an
    array of the member's layout flattened, a number as a one-entry array:
    :func:`_threshold_array`).  Formed at each step (no copy of the
    thresholds outlives the step: a model's worth of float64 for a weighted
    l1 with one threshold per entry)."""
    return [torch.cat([torch.broadcast_to(_threshold_array(m, j), (n,)) for m, n in zip(members, sizes)])
            for j in range(len(members[0].thr))]


def _threshold_array(m: Member, j: int) -> torch.Tensor:
    """The member's j-th threshold as a flat float64 array on its device: an
    array as it is, a number filled into one entry (on the device, no host
    transfer; kept while the thresholds are the same)."""
    t = m.thr[j]
    if isinstance(t, torch.Tensor):
        return t if t.ndim == 1 else t.reshape(-1)  # (a view costs the host a dispatch: none where it is flat)
    memo = m.plan.batch_memo
    hit = memo.get("threshold_arrays")
    if hit is None or hit[0] is not m.thr:
        hit = memo["threshold_arrays"] = (m.thr, {})
    if j not in hit[1]:
        hit[1][j] = torch.full((1,), t, dtype=torch.float64, device=m.device)
    return hit[1][j]


def _soft_threshold(members: list) -> None:
    """The weighted l1 prox of every member in place, v - clamp(v, -w, w) (the
    public kernel's formula, :func:`torch_dev._soft_threshold`), by three
    multi-tensor operations per device and dtype (``torch._foreach_*``: a few
    launches for all the tensors on a GPU) for the members with one
    threshold (read on the host without a synchronisation:
    :func:`_host_threshold`), and three more for those with one threshold per
    entry."""
    groups: dict = {}
    for m in members:
        scalar = m.thr[0].numel() == 1
        groups.setdefault((m.device, m.dtype, scalar), []).append(m)
    for (_, _, scalar), on in groups.items():
        vs = [m.data for m in on]
        if scalar:
            hi = [_host_threshold(m) for m in on]
            lo = [-w for w in hi]
        else:
            hi = [m.thr[0] for m in on]
            lo = [_negated(m) for m in on]
        clamped = torch._foreach_clamp_min(vs, lo)
        torch._foreach_clamp_max_(clamped, hi)
        torch._foreach_sub_(vs, clamped)  # (in place on views of the leaves: their version counters move)


def _host_threshold(m: Member) -> float:
    """The member's single threshold as a Python float, formed on the host as
    the device formed it (:func:`proxlib._range.thresholds_in_range` on the
    penalty's terms kept on the host: the same IEEE operations, the same
    bits), so that reading it never waits for the device; kept while the
    thresholds are the same."""
    memo = m.plan.batch_memo
    cached = memo.get("threshold")
    if cached is None or cached[0] is not m.thr:
        if "host_terms" not in memo:  # (copied once per plan; on the CPU, the terms themselves)
            memo["host_terms"] = tuple(
                _range.Threshold(t.scalars, t.array.detach().cpu() if isinstance(t.array, torch.Tensor) else t.array, t.degree, t.top)
                for t in m.plan.terms
            )
        w = float(_range.thresholds_in_range(memo["host_terms"], m.step, torch.empty(0, dtype=m.dtype))[0].reshape(()))
        cached = memo["threshold"] = (m.thr, w)
    return cached[1]


def _negated(m: Member) -> torch.Tensor:
    """-w of the member's thresholds (one per entry), kept while they are the same."""
    cached = m.plan.batch_memo.get("negated")
    if cached is None or cached[0] is not m.thr:
        cached = m.plan.batch_memo["negated"] = (m.thr, torch.neg(m.thr[0]))
    return cached[1]


def _host_weights(m: Member) -> np.ndarray:
    """The member's OWL weights as the public function hands them to the host
    OWL: float64, contiguous (kept with the thresholds they come from)."""
    w = m.thr[0]
    cached = m.plan.batch_memo.get("host_weights")
    if cached is None or cached[0] is not w:
        host = np.asarray(w, dtype=np.float64) if not isinstance(w, torch.Tensor) else w.detach().to(torch.float64).cpu().numpy()
        cached = m.plan.batch_memo["host_weights"] = (w, np.ascontiguousarray(host))  # (host-formed: _host_thresholds)
    return cached[1]


def _write(m: Member, f: torch.Tensor) -> None:
    """The map stage: each row of the member's leaf times its factor, as
    :meth:`proxlib.torch.prox._Plan.run` writes it: in place on rows that
    are a view of the leaf; on rows that were a copy, the factors broadcast
    over the leaf itself (:func:`._bridge.broadcast_shape`: the same
    products, in place, with no copy back); half precision through its
    float32 rows, formed again here (so that a step never holds more than
    one such copy), and one copy back."""
    plan = m.plan
    if plan.inplace:
        torch_dev.prims.scale_rows(m.data, f, out=m.data)
        torch.autograd.graph.increment_version(m.leaf)
    elif m.leaf.dtype == m.dtype:
        m.leaf.mul_(f.reshape(_broadcast_shape(plan, m.leaf)))
    else:
        rows = plan.data(B.working_tensor(m.leaf))
        m.leaf.copy_(plan.restore(torch_dev.prims.scale_rows(rows, f)))


def _broadcast_shape(plan, leaf: torch.Tensor) -> tuple:
    """:func:`._bridge.broadcast_shape` of the plan's grouping on ``leaf``
    (kept on the plan, which is rebuilt when the leaf's shape changes)."""
    shape = plan.batch_memo.get("broadcast_shape")
    if shape is None:
        shape = plan.batch_memo["broadcast_shape"] = B.broadcast_shape(plan.grouping, leaf.shape)
    return shape
