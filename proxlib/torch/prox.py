r"""The proximal step of proximal stochastic gradient, for torch optimizers.

After the optimizer has taken its step ``w <- w - lr * g(w)`` on the smooth loss,
:class:`ProximalStep` replaces every configured tensor ``w`` by

.. math::

    w \leftarrow \operatorname{prox}_{\mathrm{step}\,\Omega}(w)
      = \arg\min_x \tfrac12 \|x - w\|_F^2 + \mathrm{step}\;\Omega(x),
    \qquad \mathrm{step} = \mathrm{lr} \times \mathrm{strength} \times \mathrm{every},

where ``lr`` is the *current* learning rate of the parameter group that holds
``w`` (so learning-rate schedulers change the step), ``every`` the number of
optimizer steps between two proximal steps (1 by default) and ``Omega`` one of
proxlib's penalties evaluated on the rows of ``w`` under a grouping (see
:func:`proxlib.to_rows`).  With plain SGD this is exactly proximal SGD for
``loss + strength * Omega``; with momentum or adaptive optimizers it is the
usual heuristic (the prox uses the group's lr, not a per-coordinate step).
With Adam or AdamW, ``ProximalStep(optimizer, metric="adam")`` takes instead
the prox in the optimizer's own diagonal metric ``d = sqrt(v_hat) + eps``
(:mod:`proxlib.torch.adaptive`),

.. math::

    w \leftarrow \arg\min_x \tfrac12 \sum_i d_i (x_i - w_i)^2 + \mathrm{step}\;\Omega(x),

the proximal step consistent with Adam's preconditioned gradient step.

How it runs.  Everything that does not change between steps is checked and
built once, when a term is added (the grouping against the tensor's shape,
the penalty's weights against the number of rows, the thresholds on the
tensor's device): a step then forms the thresholds at its step as the public
function does (the same bits, and beyond the kernels' range the same exact
transformations: :mod:`proxlib._range`; kept while the step does not change)
and calls proxlib's torch kernel on the parameter itself, in place for the row-norm and
elementwise penalties (the result is written into the parameter's storage:
``data_ptr`` unchanged, the autograd version counter bumped as ``copy_``
does) and through one copy back otherwise (exclusive, group+exclusive, lp,
OWL, groupings whose rows are not a view of the tensor, half precision, any
prox in a metric).  On CUDA and other devices the computation is torch
operations on the parameter's device.  On CPU (float32/float64, the default
``torch_dev.CPU_KERNELS = "auto"``) a term whose rows are a C- or
F-contiguous view of the parameter (every grouping of a Linear weight,
``"filter"``, ``"shape"`` and ``"layer"`` of a convolution, the elementwise
penalties) runs Numba's *serial* kernel in place on the parameter's memory,
prepared once per plan (:func:`proxlib.backends.torch_dev.numba_in_place`):
no copy, no thread pool of its own, so it never competes with torch's
threads; the other CPU terms go through the same kernels with a copy.
Elsewhere (the torch operations) a step's group-lasso, GrOWL, weighted-l1,
exclusive, group+exclusive and lp terms run as batches
(:mod:`proxlib.torch._batched`: the row statistics per tensor, one solve
for all the tensors' rows, GrOWL's OWL on the host after one copy of all
the norms, weighted l1 as multi-tensor operations, the exclusive
penalties' rows stacked by length and solved by one kernel call, lp's
entries concatenated by p and solved by one Newton loop): on the
CPU the same bits as term by term, with a few operations per tensor
instead of 15-380 (on a GPU, each one a launch).  So do the terms of a
step in a metric (every device: the metric kernels are torch operations),
whose root searches, sorts and Newton loops run once per stack of rows of
one length or of separable entries instead of once per tensor.  See
:mod:`proxlib.backends.torch_dev` for what runs where.
The hook is excluded from ``torch.compile`` tracing
(``torch.compiler.disable``): a compiled ``optimizer.step`` runs it eagerly
after a graph break.

For parametrised (``torch.nn.utils.parametrize``) or pruned
(``torch.nn.utils.prune``) weights it acts on the leaf the optimizer updates
(``parametrizations.weight.original`` / ``weight_orig``); a term follows the
module, so a weight parametrised after ``add`` is picked up at the next step.

Several terms on one tensor are applied in the order they were added, each
exactly.  Their composition is the prox of the sum only in special cases
(e.g. group lassos over nested groups applied from the finest to the coarsest,
such as ``"filter"`` then ``"layer"``); otherwise it is a splitting
approximation.
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

import proxlib
from proxlib import _range
from proxlib import _registry as R
from proxlib import _validate as V
from proxlib.backends import torch_dev
from proxlib.groupings import row_maps

from . import _batched
from . import _bridge as B
from . import adaptive

__all__ = ["ProxTerm", "ProximalStep", "growl", "owl", "GroupExclusiveSequential"]


# ---------------------------------------------------------------- penalty helpers


class _Lazy:
    """A penalty whose parameters depend on the size of the tensor.

    ``kind`` names it in term labels (stable across processes, unlike a repr)."""

    def __init__(self, build: Callable[[Any], Any], label: str, kind: str):
        self._build = build
        self._label = label
        self.kind = kind

    def resolve(self, view):
        return self._build(view)

    def __repr__(self) -> str:
        return self._label


def _n_rows(view) -> int:
    """Rows as the core's group operators see them (a 1-D tensor is one row)."""
    return int(view.shape[0]) if view.ndim > 1 else 1


def _built(spec, n: int):
    return spec(n) if callable(spec) else spec


def growl(weights) -> _Lazy:
    r"""GrOWL over the rows of the (grouped) tensor, weights built from the row count.

    ``weights`` is an array of length G (the number of rows) or a *lambda
    builder* ``G -> array``, e.g.
    ``lambda G: proxlib.owl_weights_stairwise(G, 1e-3, 1e-4, G // 2)``.

    .. math:: \Omega(W) = \sum_{i=1}^{G} \lambda_i \|w_{[i]}\|_2

    >>> import proxlib, proxlib.torch as pt
    >>> pen = pt.growl(lambda G: proxlib.owl_weights_oscar(G, 1e-3, 1e-5))
    """
    return _Lazy(lambda V_: proxlib.GrOWL(_built(weights, _n_rows(V_))), f"growl({weights!r})", "GrOWL")


def owl(weights) -> _Lazy:
    r"""OWL over all entries of the (grouped) tensor; ``weights`` an array of
    length n (the number of entries) or a builder ``n -> array``.

    .. math:: \Omega(x) = \sum_{i=1}^{n} \lambda_i |x|_{[i]}
    """
    return _Lazy(lambda V_: proxlib.OWL(_built(weights, math.prod(V_.shape))), f"owl({weights!r})", "OWL")


@dataclass(frozen=True)
class GroupExclusiveSequential:
    r"""The seed thesis' Algorithm 1 for the combined penalty (an APPROXIMATION).

    ``value`` is the combined penalty of :class:`proxlib.GroupExclusive`,

    .. math:: \Omega(W) = \mathrm{lam} \sum_g \big((1-\mu)\|w_g\|_2 + \tfrac{\mu}{2}\|w_g\|_1^2\big),

    but ``prox`` is :func:`proxlib.prox_group_exclusive_sequential` (group prox
    then the thesis' Eq. 8 exclusive step, or the exact exclusive prox with
    ``exclusive_step="exact"``), which is not the prox of that sum.  Provided
    to compare with the exact :class:`proxlib.GroupExclusive`.
    """

    lam: float
    mu: float
    exclusive_step: str = "thesis"

    def value(self, x) -> float:
        return proxlib.GroupExclusive(self.lam, self.mu).value(x)

    def prox(self, v, step=1.0):
        return proxlib.prox_group_exclusive_sequential(v, self.lam, self.mu, step, exclusive_step=self.exclusive_step)


def _check_strength(strength, name: str = "strength") -> float:
    """``strength`` as a float: a finite real number >= 0 (a Python or NumPy
    number, or a one-element array or tensor); a TypeError or ValueError
    naming ``name`` otherwise."""
    return V.nonnegative(strength, name)


def _is_prox_object(pen) -> bool:
    """Whether ``pen`` is a penalty object (an instance with ``prox`` and
    ``value``; a class, whose methods are unbound, is not)."""
    return not isinstance(pen, type) and hasattr(pen, "prox") and hasattr(pen, "value")


# ------------------------------------------------------------------ a compiled term


@dataclass
class _Plan:
    """A term made ready for one leaf tensor: everything but the step.

    ``pen``: the resolved penalty; ``kernel``: the torch kernel (None for a
    penalty outside the registry, which is called through its ``prox``);
    ``terms``: its thresholds before the step (:func:`proxlib._range.terms`,
    float64 on the leaf's device, in the kernel's layout); ``inplace``:
    whether the kernel can write straight into ``data()``, a view of the
    leaf of its dtype; ``metric``: ``kernel`` is the penalty's kernel in a
    diagonal metric (``kernel(data, D, *thresholds, *fixed)``, ``D`` the
    metric in the data's layout, float32 or float64), and :meth:`run` takes the metric."""

    key: tuple
    pen: Any
    kernel: Callable | None
    terms: tuple
    fixed: tuple
    data: Callable[[torch.Tensor], torch.Tensor]
    restore: Callable[[torch.Tensor], torch.Tensor]
    inplace: bool
    fused_check: bool
    grouping: str | None = None
    metric: bool = False
    on_numba: Callable | None = None  # torch_dev.numba_in_place's run, where it applies
    held: tuple | None = None  # the leaf's id (no reference: a plan keeps no replaced tensor alive, and a weak one made torch.utils.swap_tensors refuse it), its data_ptr, shape, strides, dtype, device; the CPU route (see holds)
    batched: bool = False  # runs in a step's batch of row terms (proxlib.torch._batched)
    batch_memo: dict = field(default_factory=dict, repr=False)  # (batched plans) _batched's per-plan constants
    rows_shape: tuple | None = None  # (row penalties) the shape of the rows data() gives
    extent: tuple | None = None  # the leaf's memory (_extent), which a step's batches compare

    def __post_init__(self):
        self.thresholds = _range.AtStep(self.terms)  # the public function's, kept while the step is the same
        self.metric_thresholds = _range.AtStep(self.terms, form=_range.metric_at_step)  # (metric plans) apply_metric's

    def holds(self, leaf: torch.Tensor) -> bool:
        """Whether the plan was built for ``leaf`` as it is now (and so
        :meth:`run_on_numba`, where the plan has it, still writes it): the
        same tensor object with the same memory, shape, strides, dtype and
        device, and the CPU route unchanged.  What comparing
        :func:`_plan_key` decides, in fewer calls: a step asks it for every
        term.  The object is compared by ``id`` (the plan keeps no reference
        to it, not even a weak one, which ``torch.utils.swap_tensors`` refuses:
        ``module.to()`` and ``load_state_dict`` swap parameters so under
        ``torch.__future__.set_swap_module_params_on_conversion``); a new
        tensor at a dead one's id with the same memory, shape, strides and
        dtype is written alike (an in-place runner's views keep that memory
        alive, so it is the same)."""
        h = self.held
        return (h is not None and id(leaf) == h[0] and leaf.data_ptr() == h[1] and leaf.shape == h[2]
                and leaf.stride() == h[3] and leaf.dtype is h[4] and leaf.device == h[5] and torch_dev.CPU_KERNELS == h[6])

    def run(self, leaf: torch.Tensor, step: float, check_finite: bool, d: torch.Tensor | None = None) -> None:
        """``leaf <- prox_{step * pen}(leaf)`` (under no_grad); for a metric
        plan, in the metric ``d`` (a tensor of the leaf's shape, > 0)."""
        if self.metric:
            # a step's batch of this one term (proxlib.torch._batched: as
            # proxlib._registry.apply_metric after its checks, the same layout
            # of data and metric, the same float64 thresholds, the metric
            # kernel for every d, constant ones included)
            _batched.run([_batched.prepare_metric(self, leaf, step, d, check_finite)], check_finite, {})
            return
        if self.kernel is None:  # a penalty object outside the registry
            leaf.copy_(self.restore(self.pen.prox(self.data(B.working_tensor(leaf)), step)))
            return
        data = self.data(leaf if self.inplace else B.working_tensor(leaf))
        kw = {"check_finite": check_finite} if self.fused_check else {}
        if check_finite and not self.fused_check:
            V.check_all_finite(data, "the parameter")
        thr = self.thresholds(step, data)
        if thr is None:  # beyond the kernels' range: the public function's exact transformations, on a copy
            X = _range.solve(self.pen, _range.Data(data), step, self.kernel, lambda k, x, t: k(x, *t, *self.fixed, **kw), self.terms)
            leaf.copy_(self.restore(X))
        elif self.inplace:
            self.kernel(data, *thr, *self.fixed, out=data, **kw)
            torch.autograd.graph.increment_version(leaf)
        else:
            leaf.copy_(self.restore(self.kernel(data, *thr, *self.fixed, **kw)))

    def run_on_numba(self, leaf: torch.Tensor, step: float, check_finite: bool) -> None:
        """What :meth:`run` does, through ``on_numba`` (the caller's choice
        when the plan has one): the serial Numba kernel writes into the
        leaf's memory (no autograd involved, its version bumped)."""
        self.write_on_numba(leaf, step, check_finite)
        torch.autograd.graph.increment_version(leaf)

    def write_on_numba(self, leaf: torch.Tensor, step: float, check_finite: bool) -> None:
        """:meth:`run_on_numba` without bumping the version counter (the
        caller bumps it, e.g. for all of a step's tensors at once)."""
        if check_finite and not self.fused_check:
            V.check_all_finite(leaf.detach(), "the parameter")
        self.on_numba(step, check_finite)

    def value(self, leaf: torch.Tensor) -> float:
        x = B.working_tensor(leaf)
        return float(self.pen.value(x if self.grouping is None else B.rows(x, self.grouping)))


def _build_plan(term: "ProxTerm", leaf: torch.Tensor) -> _Plan:
    key = _plan_key(leaf)
    held = (id(leaf), leaf.data_ptr(), leaf.shape, leaf.stride(), leaf.dtype, leaf.device, torch_dev.CPU_KERNELS)  # (_Plan.holds)
    plan = _plan_of(term, leaf, key, held)
    plan.extent = _extent(leaf)
    return plan


def _plan_of(term: "ProxTerm", leaf: torch.Tensor, key, held) -> _Plan:
    x = B.working_tensor(leaf)  # detached; half precision -> a float32 copy
    native = x.dtype == leaf.dtype
    grouping = term.grouping
    view = x if grouping is None else B.rows(x, grouping)
    pen = term._resolve(view)
    if term.metric:
        _check_metric_penalty(pen)
    if not isinstance(pen, R.Penalty):
        if not _is_prox_object(pen):
            raise TypeError(f"penalty builder returned {pen!r}, which is not a penalty object with prox(v, step) and value(x)")
        return _Plan(key, pen, None, (), (), _view_of(grouping), _restore_of(grouping, leaf.shape), False, False, grouping, held=held)
    if pen.layout != "flat" and pen.groups is not None:
        # (before the layout: for very uneven groups= its padded rows held
        # n_groups x largest-group entries, gigabytes from 10^5, to be refused)
        raise ValueError("groups= labels are not supported on a training term; use a grouping instead")
    layout = R.layout_of(pen, view, contiguous=False)
    terms = _range.terms(pen, layout)  # checks the weights against the rows, once
    if pen.layout == "flat":
        # elementwise maps act on the tensor as it is (thresholds in its shape); OWL needs a vector
        if pen.kernel in ("weighted_l1", "weighted_l2sq"):
            # (one weight too on a 0-d tensor: a (1,) array would broadcast the result, written
            # into the parameter with out=, to shape (1,), resizing the parameter)
            terms = tuple(_range.Threshold(t.scalars, t.array.reshape(view.shape), t.degree, t.top)
                          if t.array is not None and (t.array.shape[0] > 1 or view.ndim == 0) else t for t in terms)
            data = _view_of(grouping)
            restore = _restore_of(grouping, leaf.shape)
            probe = data(leaf.detach())
        else:
            data = lambda t, g=grouping: _view_of(g)(t).reshape(-1)  # noqa: E731
            restore = lambda X, g=grouping, s=tuple(leaf.shape), vs=tuple(view.shape): _restore_of(g, s)(X.reshape(vs))  # noqa: E731
            probe = data(leaf.detach())
    else:
        rows_shape = tuple(layout.data.shape)
        data, restore = _row_maps(grouping, tuple(leaf.shape), rows_shape)
        probe = data(leaf.detach())
    if term.metric:
        return _Plan(key, pen, getattr(torch_dev, pen.metric_kernel), terms, pen.fixed(), data, restore, False, False, grouping, True,
                     held=held, batched=_batched.batched(pen, True, x, False), rows_shape=tuple(probe.shape) if pen.layout != "flat" else None)
    shares = native and B.shares_memory(probe, leaf)
    inplace = shares and pen.kernel in _IN_PLACE
    on_numba = torch_dev.numba_in_place(pen, probe, terms) if shares else None
    if on_numba is None and native and grouping == "channel" and leaf.ndim >= 3:
        # a convolution's channel rows: no 2-D view, but Numba reads them in place
        on_numba = torch_dev.numba_in_place_channels(pen, leaf.detach(), terms)
    return _Plan(key, pen, getattr(torch_dev, pen.kernel), terms, pen.fixed(), data, restore, inplace, pen.fused_finite_check,
                 grouping, False, on_numba, held=held, batched=on_numba is None and _batched.batched(pen, False, x, inplace),
                 rows_shape=tuple(probe.shape) if pen.layout != "flat" else None)


def _zero_groups(plan: _Plan, leaf: torch.Tensor) -> torch.Tensor:
    """Boolean mask in the leaf's shape of the entries of its exactly-zero groups.

    Groups: single entries for the flat penalties (elementwise, OWL); otherwise
    the rows the penalty sees (``grouping`` rows, or ``W.reshape(W.shape[0], -1)``;
    a 1-D tensor is one group)."""
    x = leaf.detach()
    if isinstance(plan.pen, R.Penalty) and plan.pen.layout == "flat":
        return x == 0
    if plan.grouping is not None:
        Rw = B.rows(x, plan.grouping)
        z = (Rw == 0).all(dim=1)
        full = z[:, None].expand(Rw.shape).to(x.dtype)
        return B.from_rows(full, tuple(x.shape), plan.grouping) != 0
    if x.ndim <= 1:
        return (x == 0).all().expand(x.shape).clone()
    z = (x.reshape(x.shape[0], -1) == 0).all(dim=1)
    return z.reshape((-1,) + (1,) * (x.ndim - 1)).expand(x.shape).clone()


def _check_metric_penalty(pen) -> None:
    """Refuse (at add()) a penalty without an exact prox in a non-constant diagonal metric."""
    if not isinstance(pen, R.Penalty):
        raise TypeError(
            f"a proximal step in an optimizer's metric needs one of proxlib's penalties; {pen!r} has only a "
            "Euclidean prox(v, step) (add it to a ProximalStep without metric=)"
        )
    if pen.metric_kernel is None:
        raise ValueError(
            f"{type(pen).__name__} has an exact prox in a diagonal metric only when the metric is constant, "
            "and an adaptive optimizer's metric is not: proxlib has no exact finite algorithm for it. "
            "Use a ProximalStep without metric= for this term (the Euclidean prox with step lr * strength)"
        )


#: torch.optim's scalar (0-d) state entries, left alone by keep_zero (step counts,
#: ASGD's eta and mu, NAdam's mu_product): on a 0-d tensor they have its shape
_SCALAR_STATE = frozenset({"step", "eta", "mu", "mu_product"})

# kernels whose torch implementation writes the result with one map into out=
_IN_PLACE = {"group_lasso", "growl", "weighted_l1", "weighted_l2sq"}


def _view_of(grouping):
    if grouping is None:
        return lambda t: t
    return lambda t: B.rows(t, grouping)


def _row_maps(grouping, shape: tuple, rows_shape: tuple):
    """``(data, restore)`` of a row penalty's plan on a leaf of ``shape``:
    its rows in the kernel's layout (``rows_shape``) and the way back, with
    the grouping's checks and lengths settled once
    (:func:`proxlib.groupings.row_maps`: a step on the torch route forms each
    tensor's rows, and the generic call cost 8-9 us of the host's time per
    tensor; on a GPU the host's time is the step's).  ``None``: the tensor's
    own rows, ``W.reshape(W.shape[0], -1)`` (a vector: one row)."""
    if grouping is None:
        return (lambda t: t.reshape(rows_shape)), (lambda X: X.reshape(shape))
    to, back = row_maps(shape, grouping)
    rows = to(torch.empty(shape, device="meta"))
    reshaped = rows.reshape(rows_shape)
    if rows.shape == reshaped.shape and rows.stride() == reshaped.stride():
        # no reshape where it would give the same view (on the torch route, one
        # operation per tensor and step); a reshape to the same shape may still
        # restride a dimension of length 1, which the plan's rows then keep too
        return to, back
    return (lambda t: to(t).reshape(rows_shape)), back


def _restore_of(grouping, shape):
    if grouping is None:
        return lambda X: X.reshape(shape)
    return lambda X: B.from_rows(X, shape, grouping)


# ------------------------------------------------------------------------ terms


@dataclass(eq=False)  # a term is itself (== compared the targets: a tensor's == raised in terms.remove(term))
class ProxTerm:
    """One penalty on one tensor: ``strength * penalty`` over ``grouping`` rows.

    ``target`` is a tensor or a module (``name`` picks its tensor; the leaf is
    re-resolved at every step, so pruning or parametrising the module later is
    followed).  ``penalty`` is one of proxlib's penalties (``proxlib.GroupLasso``
    ...), or :func:`growl` / :func:`owl` whose weights are built from the
    tensor's size, or any callable ``n_rows -> penalty``, or any object with
    ``prox(v, step)`` and ``value(x)`` (called as it is, at every step).
    ``grouping`` is ``None`` (the tensor as it is: group penalties then take
    ``W.reshape(W.shape[0], -1)``'s rows, the filters) or one of
    :data:`proxlib.GROUPINGS` (refused where a convolution's layout would
    change the rows' meaning: transposed or grouped, see
    :mod:`proxlib.groupings`).

    ``metric=True`` makes the term take its prox in a diagonal metric given
    to :meth:`apply` (the penalty must have an exact one: not OWL or GrOWL,
    not an object outside proxlib's registry, not on a sharded tensor).

    Everything is checked here, before any optimizer step: the target, the
    grouping against the tensor's shape, the penalty's weights against its
    rows (a tensor on the meta device too: its shape is known), the
    strength.  A penalty *class* (``proxlib.GroupLasso`` without its
    arguments) is refused (TypeError naming ``penalty``).

    ``strength`` (and ``label``) may be changed afterwards: the next step
    uses the new strength (checked when assigned, as here); a new label
    must be a str that no other term of the term's :class:`ProximalStep`
    has (its frozen groups follow it).  ``target``, ``penalty``, ``grouping``, ``name``
    and ``metric`` are read-only once the term is made (assigning one raises
    AttributeError): the term's plan is built from them; add a new term
    instead.

    A step or :meth:`value` on a tensor on the meta device (not
    materialised yet) raises a ValueError naming the term; the term follows
    the module, so materialising it (``module.to_empty(device=...)``, then
    loading the weights) before the first step is enough.
    """

    target: Any
    penalty: Any
    grouping: str | None = None
    strength: float = 1.0
    name: str = "weight"
    label: str = ""
    metric: bool = False
    _plan: _Plan | None = field(default=None, init=False, repr=False)
    _group: tuple | None = field(default=None, init=False, repr=False)  # (optimizer, leaf, its group's slot: _group_slot)

    def __setattr__(self, attr: str, value) -> None:
        if self.__dict__.get("_made", False):
            if attr in _READ_ONLY:
                raise AttributeError(
                    f"ProxTerm.{attr} is read-only once the term is made (its plan is built from it); "
                    "add a new term instead (only strength and label may change)"
                )
            if attr == "strength":  # the checks of the constructor's strength
                value = _check_strength(value)
            elif attr == "label":
                self._relabel(value)
        object.__setattr__(self, attr, value)

    def _relabel(self, label) -> None:
        """Check a new ``label`` of the made term: a str and, once the term
        is in a :class:`ProximalStep` (``_owner``), no other term's label
        there (labels key its state_dict, values and frozen masks); its
        frozen mask, if any, moves to the new label."""
        if not isinstance(label, str):
            raise TypeError(f"label must be a str, got {type(label).__name__}")
        owner = self.__dict__.get("_owner")
        step = None if owner is None else owner()
        if step is None or label == self.label or not any(t is self for t in step.terms):  # (no longer, or a copy's)
            return
        if any(t is not self and t.label == label for t in step.terms):
            raise ValueError(f"a term labelled {label!r} exists already in this ProximalStep (labels name the terms in "
                             "state_dict(), values() and the frozen masks)")
        mask = step._frozen.pop(self.label, None)
        if mask is not None:
            step._frozen[label] = mask

    def __post_init__(self):
        leaf = B.resolve_leaf(self.target, self.name)  # a bad target fails here
        if isinstance(leaf, torch.nn.parameter.UninitializedTensorMixin):
            raise ValueError(
                f"the tensor {self.name!r} is not initialised yet (a lazy module's, e.g. torch.nn.LazyLinear's, before "
                "its first forward pass): run the model once on an example input, then add the term"
            )
        if self.grouping is not None:
            self.grouping = B.canonical_grouping(self.grouping)
            B.check_conv_layout(self.target, self.name, self.grouping)
            if leaf.ndim < 2:
                raise ValueError(
                    f"grouping {self.grouping!r} needs a weight tensor with at least 2 dimensions "
                    f"(out, in, ...); {self.name!r} has shape {tuple(leaf.shape)}"
                )
        self.strength = _check_strength(self.strength)
        pen = self.penalty
        if isinstance(pen, type):
            raise TypeError(
                f"penalty must be a penalty object, got the class {pen.__name__} "
                f"(give its arguments: {pen.__name__}(...))"
            )
        if not isinstance(pen, _Lazy):
            if callable(pen) and not hasattr(pen, "prox"):
                self.penalty = _Lazy(lambda view, f=pen: f(_n_rows(view)), repr(pen), "builder")
            elif not _is_prox_object(pen):
                raise TypeError(f"penalty must have prox(v, step) and value(x) or be a builder, got {pen!r}")
        self._ready(leaf)  # weights, thresholds and layout checked now (also on the meta device)
        self._made = True

    @property
    def leaf(self) -> torch.Tensor:
        return B.resolve_leaf(self.target, self.name)

    def plan(self, leaf: torch.Tensor | None = None):
        """The term made ready for its current leaf (rebuilt when the leaf
        changes); a ValueError naming the term if the leaf is on the meta
        device (a step or a value needs its entries)."""
        leaf = self.leaf if leaf is None else leaf
        if leaf.is_meta:
            raise ValueError(
                f"term {self._name()!r}: its tensor {self.name!r} (shape {tuple(leaf.shape)}) is on the meta device, "
                "not materialised: materialise the module (e.g. module.to_empty(device=...), then load its weights) "
                "before a proximal step or value()"
            )
        return self._ready(leaf)

    def _ready(self, leaf: torch.Tensor):
        """:meth:`plan` without the meta check (:meth:`__post_init__` checks
        a meta tensor's shape and weights too)."""
        if self._plan is not None and self._plan.holds(leaf):  # (the key's comparison, in fewer calls)
            return self._plan
        key = _plan_key(leaf)
        if self._plan is None or self._plan.key != key:
            if B.is_sharded(leaf):
                if self.metric:
                    raise ValueError(
                        "proximal steps in an optimizer's metric are not supported on sharded (DTensor) parameters "
                        f"(shape {tuple(leaf.shape)}, placements {tuple(leaf.placements)}); use a ProximalStep without metric="
                    )
                from . import sharded  # torch.distributed's DTensor, loaded only when needed

                self._plan = sharded.build_plan(self, leaf, self._resolve)
            else:
                self._plan = _build_plan(self, leaf)
        return self._plan

    def _name(self) -> str:
        """The term's label, or ``<target class>.<name>`` before it has one."""
        return self.label or f"{type(self.target).__name__}.{self.name}"

    def _resolve(self, view):
        return self.penalty.resolve(view) if isinstance(self.penalty, _Lazy) else self.penalty

    def apply(self, lr: float, *, check_finite: bool = False, metric: torch.Tensor | None = None, _leaf=None) -> None:
        """Replace the leaf by its prox with step ``lr * strength``, in place;
        for a metric term, in the diagonal metric ``metric`` (a tensor of the
        leaf's shape, finite and > 0: checked only with ``check_finite``).
        A step <= 0 leaves the leaf as it is; one that is NaN or Inf (a
        learning rate that is, or a product that overflows) raises a
        ValueError naming the term, before anything is written."""
        step = float(lr) * self.strength
        if not step < math.inf:  # NaN or Inf (the public function refuses such a step too)
            raise _non_finite_step(self._name(), lr, self.strength)
        if step <= 0:
            return
        if self.metric and metric is None:
            raise ValueError("this term takes its prox in a metric: apply() needs metric=")
        leaf = self.leaf if _leaf is None else _leaf  # (ProximalStep passes the leaf it resolved)
        plan = self.plan(leaf)
        if plan.on_numba is not None:  # (no autograd involved: no no_grad context to enter)
            plan.run_on_numba(leaf, step, check_finite)
            return
        with torch.no_grad():
            if self.metric:
                plan.run(leaf, step, check_finite, metric)
            else:  # (also a sharded plan, which takes no metric)
                plan.run(leaf, step, check_finite)

    def value(self) -> float:
        """``strength * Omega(leaf)`` (float64), for logging.  On a sharded
        tensor (FSDP2, DTensor) it gathers the whole tensor: a collective,
        which every rank of its mesh must call."""
        if self.strength == 0:
            return 0.0
        leaf = self.leaf
        plan = self.plan(leaf)
        with torch.no_grad():
            return self.strength * plan.value(leaf)


# ProxTerm's fields its plan is built from (read-only once it is made)
_READ_ONLY = frozenset({"target", "penalty", "grouping", "name", "metric"})

#: a step's metric of a tensor that Adam has not stepped (no state, no gradient): its terms are skipped
_NO_METRIC = object()


def _non_finite_step(name: str, lr, strength) -> ValueError:
    """The error of a term whose step ``lr * strength`` is NaN or Inf (a
    learning rate that is, e.g. from a scheduler, or a product that
    overflows): the prox at such a step would write NaN or zero the tensor."""
    return ValueError(
        f"term {name!r}: the proximal step lr * strength = {float(lr)!r} * {strength!r} is not finite "
        "(the learning rate of the tensor's parameter group, times every, must be a finite number)"
    )


def _plan_key(leaf) -> tuple:
    """What a plan depends on: the leaf, its shape, dtype and device, the CPU
    route (``torch_dev.CPU_KERNELS``) and, unsharded, its memory and strides
    (a plan may hold a view of it: ``param.data = ...`` rebuilds, also a
    transposed square matrix in the same memory)."""
    key = (id(leaf), tuple(leaf.shape), leaf.dtype, leaf.device, torch_dev.CPU_KERNELS)
    if B.is_sharded(leaf):
        return key + (tuple(leaf.placements),)
    return key + (leaf.data_ptr(), leaf.stride())


# ------------------------------------------------------------------ the hook


class ProximalStep:
    r"""Proximal steps on chosen tensors, run after ``optimizer.step()``.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer, optional
        Where each tensor's current ``lr`` is read from (the parameter group
        holding the leaf).  Needed unless ``lr=`` is given to :meth:`step`.
    model : torch.nn.Module, optional
        The model the tensors belong to: terms are then named (in
        :meth:`state_dict`, :meth:`values`) by the parameter's name in it, so
        a checkpoint maps back to the right terms whatever order they are
        added in.  Without it, terms are named by module class and tensor
        name, numbered in the order they were added (the first number no
        term has: one added after another was removed takes that one's).
    every : int, default 1
        Apply the prox once every ``every`` optimizer steps, with step
        ``lr * strength * every`` (the original GrOWL code proxes once per
        epoch this way).
    check_finite : bool, default False
        Raise if a tensor holds NaN or Inf before its prox (one scalar read
        per term; with False non-finite values propagate into the result, as
        they do through the optimizer's own update).  With a metric, also
        the metric (NaN, Inf, or not > 0).  The error (a ValueError) names
        the term (``term '<label>': ...``).  The step is not atomic: terms
        that ran before the one that raises keep their prox (terms batched
        together are checked before any of them is written; the exclusive
        penalties' batches stack by stack).
    metric : None, "adam" or callable, default None
        ``None``: the Euclidean prox with step ``lr * strength``.
        ``"adam"``: the prox in Adam's diagonal metric,
        ``argmin_x 1/2 sum_i d_i (x_i - w_i)^2 + lr * strength * Omega(x)``
        with ``d = sqrt(v_hat) + eps`` read from the optimizer's state
        after its step (``exp_avg_sq``, or ``max_exp_avg_sq`` with amsgrad,
        the step count for the bias correction, ``betas`` and ``eps`` of the
        parameter's group: :func:`proxlib.torch.adaptive.adam_metric`, bit
        for bit the denominator of Adam's update); ``optimizer`` must be a
        ``torch.optim.Adam`` or ``AdamW`` (or a subclass) with ``eps > 0``.
        A tensor that has no Adam state and no gradient (it never had one:
        an unused branch, an expert not routed to yet) is skipped, as Adam
        skips it; one with a gradient but no state (a step before the
        optimizer's first) raises.  A callable ``metric(optimizer, param) -> d`` gives any other
        diagonal metric (a tensor of ``param``'s shape, finite and > 0), e.g.
        ``lambda opt, p: adam_metric(opt, p, assume_adam=True)`` for an
        optimizer with Adam's state and denominator.  With a metric every
        term's penalty needs an exact prox in a non-constant diagonal metric
        (not OWL, GrOWL or penalty objects outside proxlib; ValueError or
        TypeError at :meth:`add`), tensors may not be sharded (DTensor), and
        the prox is the penalty's metric kernel for every ``d``: with a
        constant ``d = delta`` it equals the Euclidean step with strength
        ``strength / delta`` up to rounding.
    keep_zero : bool, default False
        Keep every group that a prox has set exactly to zero at zero from then
        on, with its optimizer state cleared (see :meth:`frozen`).  A term's
        groups are the rows it penalises (``grouping`` rows for the group,
        GrOWL, exclusive and group+exclusive penalties; the rows
        ``W.reshape(W.shape[0], -1)`` without a grouping) and single entries
        for the elementwise penalties and OWL.  Exactly:

        * after every proximal step, each group of the term that is exactly
          zero (every entry ``== 0``) joins the term's frozen set, for good
          (not after a step of the term's that is <= 0, e.g. at a warm-up's
          lr 0 or strength 0: no prox ran, so a zero-initialised row is
          not frozen before it trains);
        * after every optimizer step (when attached; before the prox of that
          step, if one is due), at the start of :meth:`step` and after every
          proximal step, every frozen entry of the tensor is set to 0 and so is the same entry of
          every optimizer state tensor of the tensor's shape
          (``momentum_buffer`` of SGD, ``exp_avg`` / ``exp_avg_sq`` /
          ``max_exp_avg_sq`` of Adam and AdamW, ...; scalar state such as
          ``step`` is left alone).

        So a zeroed input neuron cannot regrow through momentum or a
        gradient step, and the model is evaluated with it at exactly zero
        after every step.  This is the permanent mask of the original GrOWL
        code (rows with norm at most float32 eps masked after each epoch),
        with exact zeros instead of a norm threshold.  The frozen sets are
        in :meth:`state_dict`.  Not supported on sharded (DTensor) tensors.

    Notes
    -----
    A tensor whose gradient is ``None`` at a step (not used by that step's
    forward pass: an unused branch, an expert no sample was routed to) gets
    its Euclidean prox all the same, although the optimizer skipped it:
    its stochastic gradient is zero, and proximal SGD's step is then
    ``w <- prox(w)``, so an unused group shrinks towards zero.  To leave a
    tensor alone for a while, set its term's ``strength`` to 0 (``add``
    returns the term).  With ``metric="adam"`` a tensor that never had a
    gradient is skipped (see ``metric``).

    Examples
    --------
    >>> import torch, proxlib, proxlib.torch as pt
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> prox = pt.ProximalStep(opt, model=model)
    >>> _ = prox.add(model[0], proxlib.GroupLasso(lam=1.0), grouping="channel", strength=0.5)
    >>> handle = prox.attach()           # runs after every opt.step()
    >>> loss = model(torch.randn(16, 8)).pow(2).mean()
    >>> loss.backward(); opt.step()      # SGD step, then the group-lasso prox (step 0.05)
    >>> list(prox.values())
    ['0.weight:GroupLasso[channel]']
    >>> prox.value() > 0                 # 0.5 * sum of input-neuron norms, for logging
    True
    >>> handle.remove()
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        model: torch.nn.Module | None = None,
        every: int = 1,
        check_finite: bool = False,
        keep_zero: bool = False,
        metric: str | Callable | None = None,
    ):
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        every = V.positive_count(every, "every")
        if metric is not None and not callable(metric) and metric != "adam":
            raise ValueError(f"metric must be None, 'adam' or a callable (optimizer, param) -> d, got {metric!r}")
        if metric == "adam":
            if optimizer is None:
                raise ValueError("metric='adam' reads the optimizer's state: pass the Adam or AdamW optimizer")
            _check_adam(optimizer)
        self.metric = metric
        self.optimizer = optimizer
        self.model = model
        self.every = every
        self.check_finite = V.flag(check_finite, "check_finite")
        self.keep_zero = V.flag(keep_zero, "keep_zero")
        self._frozen: dict[str, torch.Tensor] = {}  # label -> bool mask in the leaf's shape (keep_zero)
        self.terms: list[ProxTerm] = []
        self.n_steps = 0  # proximal steps taken
        self.n_optimizer_steps = 0  # optimizer steps seen by the hook
        self._handle = None
        self._batch_cache: dict = {}  # (proxlib.torch._batched) what depends only on the thresholds
        self._prepared = None  # (optimizer, its groups, entries): a plain step's terms on Numba, see _run_prepared

    # -- configuring
    def add(
        self,
        target,
        penalty,
        *,
        grouping: str | None = None,
        strength: float = 1.0,
        name: str = "weight",
        label: str = "",
    ) -> ProxTerm:
        """Add ``strength * penalty`` on ``target`` (a tensor, or ``module.<name>``); see :class:`ProxTerm`.

        Raises (before any optimizer step) on a target that is not a module or
        tensor, a penalty that is not a penalty object or builder (a class:
        ``GroupLasso`` for ``GroupLasso(lam)``; TypeError naming ``penalty``),
        a grouping that does not fit the tensor, weights of the wrong length,
        a strength that is not a finite number >= 0 (a TypeError or
        ValueError naming ``strength``; a tensor of one entry is its number),
        a trainable tensor that is not in the optimizer (when one was given;
        a frozen one, ``requires_grad=False``, may be absent: its steps are
        skipped while it is frozen), or a label already used.
        """
        if isinstance(target, str):
            raise TypeError(f"target must be a torch.nn.Module or a tensor, got the string {target!r}")
        term = ProxTerm(target, penalty, grouping, strength, name, "", self.metric is not None)
        term.label = label or self._default_label(term)
        if any(t.label == term.label for t in self.terms):
            raise ValueError(
                f"a term labelled {term.label!r} exists already; pass label= to tell them apart"
                + ("" if self.model is not None else " (or model= to ProximalStep)")
            )
        group = None if self.optimizer is None else _optimised_group(term.leaf, self.optimizer, term.label)
        if group is not None:
            if self._attached():  # (the hook reads its lr from the group)
                _lr_in(group, term.label, self.optimizer)
            if self.metric == "adam":
                _check_adam_group(group)
        if self.keep_zero and B.is_sharded(term.leaf):
            raise NotImplementedError("keep_zero=True is not supported on sharded (DTensor) parameters")
        self.terms.append(term)
        self._frozen.pop(term.label, None)  # (a removed term's of this label: a new term has no frozen groups)
        object.__setattr__(term, "_owner", weakref.ref(self))  # (a label changed later is checked against the others: ProxTerm._relabel)
        return term

    def _default_label(self, term: ProxTerm) -> str:
        leaf = term.leaf
        pname = None
        if self.model is not None:
            pname = next((n for n, p in self.model.named_parameters() if p is leaf), None)
            if pname is None:
                raise ValueError(f"the tensor of {term.name!r} is not a parameter of the model given to ProximalStep")
        if pname is None:
            t = term.target
            pname = f"{type(t).__name__}.{term.name}" if isinstance(t, torch.nn.Module) else f"tensor{tuple(t.shape)}"
        pen = term.penalty
        pen_name = pen.kind if isinstance(pen, _Lazy) else type(pen).__name__
        base = f"{pname}:{pen_name}" + (f"[{term.grouping}]" if term.grouping else "")
        if self.model is None:
            # the first number no term has (counting them gave a removed term's
            # successor's label again: a ValueError on re-adding it)
            taken = {t.label for t in self.terms}
            k = 0
            while (base if k == 0 else f"{base}#{k}") in taken:
                k += 1
            return base if k == 0 else f"{base}#{k}"
        return base

    # -- running
    def _param_slot(self, term: ProxTerm, leaf: torch.Tensor, optimizer, *, required: bool = True) -> tuple | None:
        """Where the optimizer's group holding ``leaf`` is (:func:`_group_slot`),
        kept on the term while it is current (:func:`_slot_current`: looked
        up again after ``optimizer.load_state_dict``, which replaces the
        groups); a ValueError where no group holds it, or None unless
        ``required``."""
        cached = term._group
        if cached is None or cached[0] is not optimizer or cached[1] is not leaf or not _slot_current(cached[2], optimizer):
            slot = _group_slot(leaf, optimizer)
            if slot is None:
                return _required(slot, leaf, term.label) if required else None
            cached = term._group = (optimizer, leaf, slot)
        return cached[2]

    def _param_group(self, term: ProxTerm, leaf: torch.Tensor, optimizer, *, required: bool = True) -> dict | None:
        """The optimizer's group holding ``leaf`` now (:meth:`_param_slot`)."""
        slot = self._param_slot(term, leaf, optimizer, required=required)
        return None if slot is None else slot[2]

    def _lr_of(self, term: ProxTerm, leaf: torch.Tensor, optimizer) -> float:
        return _float_lr(_lr_in(self._param_group(term, leaf, optimizer), term.label, optimizer))

    def _adam_metrics(self, optimizer, lr: float | None) -> dict:
        """Adam's metric of every tensor a term of this step takes its prox on
        (id(leaf) -> d), formed together (:func:`.adaptive.denominators`: a
        few multi-tensor operations, not three per tensor); a tensor without
        Adam's state yet raises as :meth:`_metric_of` does, naming its term,
        unless it has no gradient either: Adam skipped it, and so does the
        step (its entry is :data:`_NO_METRIC`)."""
        firsts, entries, skipped = {}, [], {}
        for term in self.terms:
            leaf = term.leaf
            if not leaf.requires_grad or id(leaf) in firsts or id(leaf) in skipped:
                continue
            if (lr if lr is not None else self._lr_of(term, leaf, optimizer)) * term.strength > 0:
                state = optimizer.state.get(leaf, {})
                if not state and leaf.grad is None:  # (never had a gradient: Adam has not stepped it)
                    skipped[id(leaf)] = _NO_METRIC
                    continue
                firsts[id(leaf)] = (term, leaf)
                entries.append((self._param_group(term, leaf, optimizer), state))
        try:
            ds = adaptive.denominators(entries)
        except ValueError:
            for term, leaf in firsts.values():
                self._metric_of(term, leaf, optimizer)  # (raises for the first tensor without a state)
            raise
        return {**dict(zip(firsts, ds)), **skipped}

    def _metric_of(self, term: ProxTerm, leaf: torch.Tensor, optimizer) -> torch.Tensor:
        """The metric for ``leaf`` now (Adam's: from its state after the step)."""
        if self.metric == "adam":
            try:
                return adaptive.denominator(self._param_group(term, leaf, optimizer), optimizer.state.get(leaf, {}))
            except ValueError:
                raise ValueError(
                    f"term {term.label!r}: the optimizer has no Adam state for its tensor yet (no step taken on it, "
                    "or it had no gradient): metric='adam' needs the second moment of the step just taken"
                ) from None
        with torch.no_grad():  # (a metric formed from the parameter records no graph)
            d = self.metric(optimizer, leaf)
        if not isinstance(d, torch.Tensor) or tuple(d.shape) != tuple(leaf.shape):
            got = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
            raise ValueError(f"term {term.label!r}: metric(optimizer, param) must return a tensor of shape {tuple(leaf.shape)}, got {got}")
        return d

    def step(self, optimizer: torch.optim.Optimizer | None = None, *, lr: float | None = None, steps: int = 1) -> None:
        """Apply every term once, now: step = lr (of the tensor's group, or ``lr``) * strength * ``steps``.

        ``steps`` (an integer >= 1) is the number of optimizer steps the
        proximal step stands for, as ``every`` for the attached hook: e.g.
        ``steps=n_optimizer_steps % every`` after the last optimizer step of
        a training whose length ``every`` does not divide, so that it ends
        with a proximal step for the steps since the last one
        (:func:`proxlib.torch.two_stage` does).  Terms on tensors with
        ``requires_grad=False`` are skipped (the optimizer skips them too)."""
        steps = V.positive_count(steps, "steps")
        opt = optimizer if optimizer is not None else self.optimizer
        if lr is None and opt is None:
            raise ValueError("step() needs an optimizer (to read each group's lr) or an explicit lr")
        if self.metric is not None:
            if opt is None:
                raise ValueError("step() with a metric needs an optimizer (its state gives the metric)")
            if self.metric == "adam" and opt is not self.optimizer:
                _check_adam(opt)
        if lr is not None:
            lr = V.real_scalar(lr, "lr")
            if lr < 0:
                raise ValueError(f"lr must be >= 0, got {lr}")
        if self.keep_zero:
            self._enforce_frozen(opt)
        self._apply_all(opt, lr, steps)

    def _apply_all(self, opt, lr: float | None, factor: int) -> None:
        """One proximal step of every term (lr ``lr``, or each group's, times
        ``factor``).  With ``check_finite``, its error for a NaN or Inf names
        the term (:meth:`_named_non_finite`)."""
        metrics = {}  # (metric steps) id(leaf) -> the metric of the step
        try:
            if self.metric is None and not self.keep_zero:
                self._apply_plain(opt, lr, factor)
            else:
                self._apply_general(opt, lr, factor, metrics)
        except ValueError as e:
            named = self._named_non_finite(e, metrics) if self.check_finite else None
            if named is None:
                raise
            raise named from e
        self.n_steps += 1

    def _named_non_finite(self, e: ValueError, metrics: dict) -> ValueError | None:
        """The error ``e`` of a step with ``check_finite`` (its message about
        NaN or Inf, or a metric not > 0) again, of the same type, its message
        prefixed by ``term '<label>': `` of the first term, in the terms'
        order, whose tensor holds NaN or Inf or whose metric in ``metrics``
        is not finite and > 0 (a sharded tensor: this rank's shard, or the
        tensor whose check on every rank raised ``e``: its ``leaf``).  None
        where ``e`` is about something else or no term's values are bad.
        Only on the way out of a failed step: a step that passes pays
        nothing."""
        if not any(m in str(e) for m in ("NaN or Inf", "must be > 0")):
            return None
        bad = getattr(e, "leaf", None)  # (a sharded tensor's check: bad on some rank, maybe not this one)
        for term in self.terms:
            leaf = term.leaf
            if leaf.is_meta:
                continue
            d = metrics.get(id(leaf))
            d = None if d is _NO_METRIC else d
            if leaf is bad or not _all_finite(leaf) or (d is not None and not (_all_finite(d) and bool((d > 0).all()))):
                return type(e)(f"term {term.label!r}: {e}")
        return None

    def _apply_general(self, opt, lr: float | None, factor: int, metrics: dict) -> None:
        """The terms' proximal steps in a metric, or with ``keep_zero`` (the
        metrics formed are left in ``metrics``)."""
        # one metric per tensor, shared by its terms (the prox leaves the state alone)
        if self.metric == "adam":
            metrics.update(self._adam_metrics(opt, lr))
        # metric terms join the step's batches (keep_zero freezes each term's zero groups as it runs: one by one)
        batch = None if self.keep_zero else _Batches(self.check_finite, self._batch_cache)
        for term in self.terms:
            leaf = term.leaf
            if not leaf.requires_grad:
                continue
            term_lr = lr if lr is not None else self._lr_of(term, leaf, opt)
            d = None
            if self.metric is not None and term_lr * term.strength > 0:
                d = metrics.get(id(leaf))
                if d is _NO_METRIC:  # (no Adam state nor gradient: skipped, as Adam skips it)
                    continue
                if d is None:
                    d = metrics[id(leaf)] = self._metric_of(term, leaf, opt)
            if batch is not None:
                step = float(term_lr * factor) * term.strength
                if d is not None and step < math.inf and batch.add_metric(term.plan(leaf), leaf, step, d):  # (NaN, Inf: apply raises)
                    continue
                batch.before(leaf)
            term.apply(term_lr * factor, check_finite=self.check_finite, metric=d, _leaf=leaf)
            if self.keep_zero and float(term_lr * factor) * term.strength > 0:  # (a step <= 0 ran no prox: nothing it zeroed)
                self._freeze(term, leaf)
        if batch is not None:
            batch.flush()
        if self.keep_zero:
            self._enforce_frozen(opt)  # the state of the groups frozen just now

    def _apply_plain(self, opt, lr: float | None, factor: int) -> None:
        """The terms' proximal steps without a metric or frozen groups.  A term
        whose plan writes the parameter in place with Numba (the CPU's usual
        case) and still holds it (:meth:`_Plan.holds`) runs it directly, and
        the version counters of those parameters are bumped together at the
        end: after a training step the caches are cold, and each Python call
        on the way (resolving the plan's key, the term's apply) cost several
        microseconds, together as much as a small layer's kernel.  When every
        term ran so, the step is kept (:meth:`_prepare`) and the next one runs
        it with one check per term (:meth:`_run_prepared`).  Terms on the torch
        route whose plan is ``batched`` join the step's batches
        (:class:`_Batches`), run when a later term needs their tensor, or at
        the end (the metric steps batch their terms in :meth:`_apply_all`; the
        ``keep_zero`` steps run every term alone)."""
        written = []
        try:
            start = 0 if self._prepared is None else self._run_prepared(opt, lr, factor, written)
            if start == len(self.terms):
                return
            batch = _Batches(self.check_finite, self._batch_cache)
            held = start == 0  # every term so far ran its Numba plan
            for term in self.terms[start:]:
                leaf = term.leaf
                if not leaf.requires_grad:
                    held = False
                    continue
                term_lr = (lr if lr is not None else self._lr_of(term, leaf, opt)) * factor
                plan = term._plan
                step = float(term_lr) * term.strength
                if 0 < step < math.inf and plan is not None and plan.on_numba is not None and plan.holds(leaf):
                    batch.before(leaf, plan)  # (a batched term on the same tensor, or on memory it shares, comes first)
                    plan.write_on_numba(leaf, step, self.check_finite)
                    written.append(leaf)
                    continue
                held = False
                if 0 < step < math.inf:  # (NaN, Inf: apply raises)
                    plan = term.plan(leaf)
                    if getattr(plan, "batched", False) and batch.add(plan, leaf, step):
                        continue
                batch.before(leaf)
                term.apply(term_lr, check_finite=self.check_finite, _leaf=leaf)
            batch.flush()
            if held:
                self._prepare(opt)
        finally:
            if written:
                torch.autograd.graph.increment_version(written)

    def _prepare(self, opt) -> None:
        """Keep this step's terms for :meth:`_run_prepared` (called after a
        plain step in which every term ran its Numba plan): the optimizer's
        groups as they are (:func:`_groups_now`) and per term its plan, the
        module's parameter dict that must still hold the leaf (None for a
        tensor target) and the optimizer's group of the leaf (its lr).  A
        term whose leaf is found otherwise (parametrised or pruned modules)
        keeps the step on the general path."""
        entries = []
        for term in self.terms:
            plan = term._plan
            leaf = term.target  # (held by the plan: just written)
            params = None
            if not isinstance(leaf, torch.Tensor):
                params = getattr(leaf, "_parameters", None)
                leaf = None if params is None else params.get(term.name)
                if leaf is None or not plan.holds(leaf):
                    return
            # (None: the general path reads the lr, and raises)
            group = None if opt is None else self._param_group(term, leaf, opt, required=False)
            # leaf.detach(): an alias of the leaf (its storage, offset, sizes and
            # strides, which leaf.is_set_to compares in one call, where _Plan.holds
            # makes five); it keeps no more memory alive than the plan's NumPy
            # views do, nor the leaf itself (torch.utils.swap_tensors counts the
            # leaf's own references)
            entries.append((term, params, term.name, plan, group, id(leaf), leaf.detach(), leaf.dtype, plan.on_numba, plan.fused_check))
        self._prepared = (opt, None if opt is None else _groups_now(opt), torch_dev.CPU_KERNELS, tuple(entries))

    def _run_prepared(self, opt, lr: float | None, factor: int, written: list) -> int:
        """The kept step (:meth:`_prepare`): each term's Numba plan on its
        leaf, as the general loop of :meth:`_apply_plain` runs it (the same
        lr, step and write), after one check per step that, when the lr is
        the groups', the optimizer's groups are those it was kept with
        (:func:`_same_groups`: ``optimizer.load_state_dict`` replaces them, and
        the lr is read from the group holding the tensor now), and one check
        per term that nothing it was built from changed: the same term at the
        same place in ``terms``, its plan, the module still holding the leaf,
        the leaf still requiring a gradient and its memory the plan's (what
        :meth:`_Plan.holds` decides: the same object, storage, offset, sizes,
        strides and dtype, and, once per step, the CPU route).  At the
        first term that fails (or a step that is not a number), the kept step
        is dropped and the index returned: the general loop takes over from
        there (nothing after it has run).  Steps <= 0 skip their term, as
        :meth:`ProxTerm.apply` does.  Returns ``len(entries)`` when all ran.
        (After a training step the interpreter's caches are cold: each call
        and attribute here costs about a microsecond, hence one call per check
        where that will do.)"""
        prepared_opt, groups, route, entries = self._prepared
        terms = self.terms
        if (prepared_opt is not opt or len(terms) != len(entries) or torch_dev.CPU_KERNELS != route
                or (lr is None and (groups is None or not _same_groups(opt, groups)))):
            self._prepared = None
            return 0
        check_finite = self.check_finite
        for i, (term, params, name, plan, group, leaf_id, alias, dtype, on_numba, fused_check) in enumerate(entries):
            leaf = term.target if params is None else params.get(name)
            if (leaf is None or id(leaf) != leaf_id or terms[i] is not term or term._plan is not plan or not leaf.requires_grad
                    or not leaf.is_set_to(alias) or leaf.dtype is not dtype or (lr is None and group is None)):
                self._prepared = None
                return i
            group_lr = None if lr is not None else group.get("lr")
            if lr is None and group_lr is None:  # (no lr in the group: the general path raises, naming the term)
                self._prepared = None
                return i
            term_lr = (lr if lr is not None else group_lr if type(group_lr) is float else _float_lr(group_lr)) * factor
            step = float(term_lr) * term.strength
            if 0 < step < math.inf:  # (plan.write_on_numba, inlined)
                if check_finite and not fused_check:
                    V.check_all_finite(alias, "the parameter")
                on_numba(step, check_finite)
                written.append(leaf)
            elif not step <= 0:  # NaN or Inf: the general path raises (ProxTerm.apply)
                self._prepared = None
                return i
        return len(entries)

    # -- keep_zero: frozen groups
    def _freeze(self, term: ProxTerm, leaf: torch.Tensor) -> None:
        """Add the term's groups that are exactly zero now to its frozen set."""
        with torch.no_grad():
            zero = _zero_groups(term.plan(leaf), leaf)
        old = self._frozen.get(term.label)
        self._frozen[term.label] = zero if old is None or old.shape != zero.shape else old.to(zero.device) | zero

    def _enforce_frozen(self, optimizer) -> None:
        """Frozen entries (and their optimizer state) back to exactly 0."""
        if not self._frozen:
            return
        state = getattr(optimizer, "state", {}) if optimizer is not None else {}
        with torch.no_grad():
            for term in self.terms:
                mask = self._frozen.get(term.label)
                if mask is None:
                    continue
                leaf = term.leaf
                if mask.shape != leaf.shape:
                    continue  # the leaf was replaced (e.g. re-parametrised): the old mask does not apply
                if mask.device != leaf.device:  # the model moved (model.cuda()) after the groups froze
                    mask = self._frozen[term.label] = mask.to(leaf.device)
                leaf.masked_fill_(mask, 0)
                for k, v in state.get(leaf, {}).items():
                    # (a 0-d tensor's scalar state has its shape: told apart by name)
                    if isinstance(v, torch.Tensor) and v.shape == leaf.shape and not (leaf.ndim == 0 and k in _SCALAR_STATE):
                        v.masked_fill_(mask, 0)

    def frozen(self) -> dict[str, torch.Tensor]:
        """The frozen entries of each term (``keep_zero=True``), keyed by label:
        boolean masks in the shape of the term's tensor (copies).  Empty
        before the first proximal step or without ``keep_zero``.  Only the
        terms in :attr:`terms` (not one removed from it)."""
        labels = {t.label for t in self.terms}
        return {k: v.clone() for k, v in self._frozen.items() if k in labels}

    @torch.compiler.disable
    def _hook(self, optimizer, args, kwargs) -> None:
        found_inf = getattr(optimizer, "found_inf", None)
        if found_inf is not None and bool(found_inf):
            # a step that torch.amp.GradScaler skipped (inf or NaN gradients) on an optimizer
            # that skips it itself (fused=True: step() runs, with found_inf set): none taken
            return
        self.n_optimizer_steps += 1
        if self.keep_zero:
            self._enforce_frozen(optimizer)
        if self.n_optimizer_steps % self.every == 0:
            self._apply_all(optimizer, None, self.every)

    def attach(self, optimizer: torch.optim.Optimizer | None = None):
        """Run the proximal step after every ``optimizer.step()`` (``register_step_post_hook``).

        Returns the hook handle (``handle.remove()`` detaches it).  Attaching
        again replaces the previous hook (the prox is never applied twice).
        Another ProximalStep attached to the same optimizer with terms on
        the same tensors (e.g. one made again on resuming, the old one not
        detached) would prox them twice per step: a UserWarning names them.
        Raises a ValueError naming the term where a term's tensor is not in
        the optimizer or its parameter group has no ``lr`` (the hook's step
        is each group's lr times the strength; without one, call
        :meth:`step` with ``lr=``).

        An optimizer step that ``torch.amp.GradScaler`` skips (inf or NaN
        gradients) is not an optimizer step here: no proximal step, not
        counted for ``every``.  GradScaler does not call ``step()`` of most
        optimizers then; a fused one (``fused=True``) it calls with
        ``optimizer.found_inf`` set, and the hook reads that flag: one
        scalar read per such step, which for CUDA tensors waits for the
        device (GradScaler itself reads its flag on the host at every step
        of the other optimizers).
        """
        opt = optimizer if optimizer is not None else self.optimizer
        if opt is None:
            raise ValueError("attach() needs an optimizer")
        if self.metric == "adam":
            _check_adam(opt)
        for term in self.terms:
            group = _optimised_group(term.leaf, opt, term.label)  # every trained term's tensor must be optimised
            if group is None:
                continue
            _lr_in(group, term.label, opt)  # (the hook reads each term's lr from its group)
            if self.metric == "adam":
                _check_adam_group(group)
        self.detach()
        _warn_if_attached_elsewhere(self, opt)
        self.optimizer = opt
        self._handle = opt.register_step_post_hook(self._hook)
        return self._handle

    def detach(self) -> None:
        """Remove the hook installed by :meth:`attach` (if any)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _attached(self) -> bool:
        """Whether the hook of :meth:`attach` is still installed: not after
        :meth:`detach`, nor after ``handle.remove()`` on the handle that
        attach returned (torch keeps the hooks in a dict by the handle's id)."""
        handle = self._handle
        if handle is None:
            return False
        hooks = handle.hooks_dict_ref()
        return hooks is not None and handle.id in hooks

    # -- logging
    def value(self) -> float:
        """Total penalty ``sum_terms strength * Omega(tensor)`` at the current weights.

        With sharded tensors (FSDP2, DTensor) this is a collective: every
        rank calls it, e.g. ``v = prox.value()`` on all ranks, then
        ``if rank == 0: log(v)`` (called on one rank only, it waits for the
        others, and the run fails at its next collective)."""
        return float(sum(t.value() for t in self.terms))

    def values(self) -> dict[str, float]:
        """Each term's ``strength * Omega``, keyed by its label (a collective
        with sharded tensors, as :meth:`value`)."""
        return {t.label: t.value() for t in self.terms}

    # -- checkpointing
    def state_dict(self) -> dict:
        """The mutable state: each term's strength (keyed by its label), the step
        counters and, with ``keep_zero``, the frozen masks (``"frozen"``)."""
        state = {
            "n_steps": self.n_steps,
            "n_optimizer_steps": self.n_optimizer_steps,
            "every": self.every,
            "strengths": {t.label: t.strength for t in self.terms},
        }
        if self.keep_zero:
            state["frozen"] = self.frozen()
        where = self._param_indices()
        if where is not None:
            state["params"] = where
        if self.model is None:
            state["shapes"] = {t.label: list(t.leaf.shape) for t in self.terms}
        return state

    def _param_indices(self) -> dict[str, int] | None:
        """Without ``model=``, each term's tensor as the optimizer numbers its
        parameters (label -> index in its ``param_groups``' ``params``, in
        order, as ``torch.optim`` keys its own state), which a checkpoint
        keeps beside the labels: the default labels are then numbered in the
        order the terms were added (``#1``, ...), and :meth:`load_state_dict`
        matches the terms by tensor instead.  None with ``model=`` (labels
        name the parameters) or without an optimizer."""
        if self.model is not None or self.optimizer is None:
            return None
        index = {}
        for p in (p for g in self.optimizer.param_groups for p in g["params"]):
            index.setdefault(id(p), len(index))
        return {t.label: index.get(id(t.leaf), -1) for t in self.terms}

    def _labels_from(self, state: dict) -> dict[str, str]:
        """state label -> this step's label of the same term.

        With ``model=`` the labels name the parameters: by label.  Without
        it, the default labels are numbered in the order the terms were
        added (``#k``), and a term is the one of the same label but for that
        number (its stem) on the same tensor: the tensor's index among the
        optimizer's parameters where ``state`` records it (``"params"``)
        and this step has an optimizer; else the tensor's shape
        (``"shapes"``), where that pairs the terms one to one.  Where
        neither tells apart the terms that the order numbered (terms of one
        stem on different tensors), a ValueError: matched by label they
        could swap strengths and frozen masks between tensors.  Two terms
        of one stem on one tensor are matched by label (which of them is
        which only their order says, on both sides)."""
        labels = {label: label for label in state["strengths"]}
        if self.model is not None:
            return labels
        saved, mine = state.get("params"), self._param_indices()
        if isinstance(saved, dict) and mine is not None:
            def index(label):
                i = saved.get(label)
                return int(i) if isinstance(i, numbers.Integral) else None

            by_index = _match_terms(labels, index, lambda t: mine[t.label], self.terms)
            if by_index is not None:
                return by_index
        numbered = _numbered_stems(self.terms)
        if not numbered or set(labels) != {t.label for t in self.terms}:
            return labels  # (by label: no order to mistake, or terms that differ, which the caller reports)
        shapes = state.get("shapes")
        if isinstance(shapes, dict):
            def shape(label):
                s = shapes.get(label)
                return tuple(int(n) for n in s) if isinstance(s, (list, tuple)) else None

            by_shape = _match_terms(labels, shape, lambda t: tuple(t.leaf.shape), self.terms)
            if by_shape is not None:
                return by_shape
        why = (
            "this ProximalStep has no optimizer, which numbers them (pass it to ProximalStep(), or attach() it, "
            "before load_state_dict)"
            if isinstance(saved, dict)
            else "the state records no tensor that tells them apart (saved without an optimizer)"
        )
        raise ValueError(
            f"cannot tell which saved term is which: the terms labelled {', '.join(f'{x}, {x}#1, ...' for x in numbered)} "
            "are numbered in the order they were added, "
            f"and {why}; give the terms names, ProximalStep(model=...) or add(..., label=...)"
        )

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; the terms must be the same (by label), in any order.

        Without ``model=`` the default labels are numbered in the order the
        terms were added; a state saved so records each term's tensor (its
        index among the optimizer's parameters, and its shape), and the
        terms are matched by tensor, so adding them in another order cannot
        swap strengths or frozen masks between tensors.  Where this
        ProximalStep cannot tell those terms apart (no optimizer yet to
        number the tensors, or a state saved without one, and tensors of
        one shape), a ValueError says so instead of guessing: pass the
        optimizer before loading, or name the terms (``model=`` or
        ``label=``).

        Everything in ``state`` is checked before anything is changed (a
        ValueError or TypeError naming the entry; the ProximalStep is then
        left as it was): each strength a finite number >= 0, the counters
        integers >= 0, ``every`` an integer >= 1 (as the constructor's), the
        frozen masks of known terms in their tensors' shapes, and none of
        them freezing a group unless this ProximalStep has ``keep_zero``."""
        strengths = state["strengths"]
        if not isinstance(strengths, dict):
            raise ValueError("state has no per-term strengths keyed by label (saved by an older proxlib?)")
        rename = self._labels_from(state)
        strengths = {rename[k]: v for k, v in strengths.items()}
        if state.get("frozen") is not None:
            state = {**state, "frozen": {rename.get(k, k): v for k, v in state["frozen"].items()}}
        have = {t.label for t in self.terms}
        unknown, missing = sorted(set(strengths) - have), sorted(have - set(strengths))
        if unknown or missing:
            raise ValueError(f"state and ProximalStep have different terms: unknown in state {unknown}, missing from state {missing}")
        new_strengths = [_check_strength(strengths[t.label], f"strengths[{t.label!r}]") for t in self.terms]
        n_steps = V.count(state["n_steps"], "n_steps")
        n_optimizer_steps = V.count(state.get("n_optimizer_steps", 0), "n_optimizer_steps")
        every = V.positive_count(state.get("every", self.every), "every")
        frozen = state.get("frozen")
        masks = None if frozen is None else self._frozen_masks(frozen, have)
        lost = [] if masks is None or self.keep_zero else sorted(k for k, m in masks.items() if bool(m.any()))
        if lost:
            raise ValueError(
                "state has frozen groups (saved with keep_zero=True), which this ProximalStep (keep_zero=False) would "
                f"not keep at zero: {lost}; make it with keep_zero=True"
            )
        for t, strength in zip(self.terms, new_strengths):
            t.strength = strength
        self.n_steps, self.n_optimizer_steps, self.every = n_steps, n_optimizer_steps, every
        if masks is not None:
            self._frozen = masks

    def _frozen_masks(self, frozen: dict, have: set) -> dict[str, torch.Tensor]:
        """The frozen masks of a state (label -> mask) as :attr:`_frozen`
        holds them: boolean copies on each term's device, checked against
        the terms (``have``: their labels) and their tensors' shapes."""
        unknown = sorted(set(frozen) - have)
        if unknown:
            raise ValueError(f"state has frozen masks for unknown terms {unknown}")
        masks = {}
        for t in self.terms:
            if t.label in frozen:
                m = torch.as_tensor(frozen[t.label], dtype=torch.bool, device=t.leaf.device)
                if m.shape != t.leaf.shape:
                    raise ValueError(f"frozen mask of {t.label!r} has shape {tuple(m.shape)}, the tensor {tuple(t.leaf.shape)}")
                masks[t.label] = m.clone()
        return masks

    def __repr__(self) -> str:
        body = ", ".join(f"{t.label}: {t.strength:g}" for t in self.terms)
        return f"ProximalStep({body})"


def _label_stem(label: str) -> str:
    """A default label without its order number (``#k``, see ProximalStep._default_label)."""
    return re.sub(r"#\d+$", "", label)


def _numbered_stems(terms) -> list[str]:
    """The labels' stems that terms on more than one tensor share: their
    labels' numbers say only the order in which the terms were added."""
    tensors: dict[str, set] = {}
    for t in terms:
        tensors.setdefault(_label_stem(t.label), set()).add(id(t.leaf))
    return sorted(stem for stem, ids in tensors.items() if len(ids) > 1)


def _match_terms(labels, saved_key, my_key, terms) -> dict[str, str] | None:
    """state label -> the label of the term with the same (key, stem), where
    that pairs the state's terms with ``terms`` one to one; else None."""
    by_key = {(my_key(t), _label_stem(t.label)): t.label for t in terms}
    keys = {label: (saved_key(label), _label_stem(label)) for label in labels}
    if len(by_key) < len(terms) or len(set(keys.values())) < len(keys) or not set(keys.values()) <= set(by_key):
        return None
    return {label: by_key[key] for label, key in keys.items()}


class _Batches:
    """A step's pending batches of row terms (:mod:`._batched`), one per
    kind of penalty, run in the terms' order per tensor: a term on a tensor
    that a pending batch holds runs that batch first, and so does a term on
    a tensor whose memory overlaps one a pending batch holds (distinct
    tensors that alias: a batch reads all its tensors before it writes any,
    and the Triton kernels read and write them in one launch)."""

    def __init__(self, check_finite: bool, cache: dict):
        self.check_finite = check_finite
        self.cache = cache
        self.pending: dict[str, list] = {}  # kind -> members
        self.leaves: dict[int, str] = {}  # id(leaf) -> the kind of the batch holding it
        self.extents: dict[int, list] = {}  # the leaves' storage -> (first byte, past the last, kind) of each

    def add(self, plan: _Plan, leaf: torch.Tensor, step: float) -> bool:
        """Queue the term; False where it runs on its own now (see :func:`._batched.prepare`)."""
        if not _batched.ENABLED:
            return False
        self.before(leaf, plan)
        if getattr(plan, "split_rows", None) is not None:  # a sharded term on split rows (proxlib.torch.sharded)
            member = plan.member(leaf, step, self.check_finite)
        else:
            member = _batched.prepare(plan, leaf, step)
        if member is None:
            return False
        self._queue(member, leaf)
        return True

    def add_metric(self, plan: _Plan, leaf: torch.Tensor, step: float, d: torch.Tensor) -> bool:
        """Queue the metric term (checked now: :func:`._batched.prepare_metric`);
        False where it runs on its own now."""
        if not (_batched.ENABLED and plan.batched):
            return False
        self.before(leaf, plan)
        self._queue(_batched.prepare_metric(plan, leaf, step, d, self.check_finite), leaf)
        return True

    def _queue(self, member, leaf: torch.Tensor) -> None:
        kind = getattr(member, "kind", None) or _batched.kind_of(member.plan)
        self.pending.setdefault(kind, []).append(member)
        self.leaves[id(leaf)] = kind
        plan = getattr(member, "plan", None)
        extent = plan.extent if isinstance(plan, _Plan) else None
        if extent is not None:
            self.extents.setdefault(extent[0], []).append((extent[1], extent[2], kind))

    def before(self, leaf: torch.Tensor, plan=None) -> None:
        """Run the batch that holds ``leaf``, and those holding a tensor whose
        memory overlaps it (``plan``: the leaf's, which keeps its extent)."""
        kind = self.leaves.get(id(leaf))
        if kind is not None:
            self._run(kind)
        if self.extents:
            extent = plan.extent if isinstance(plan, _Plan) else _extent(leaf)
            held = None if extent is None else self.extents.get(extent[0])
            if held:  # (tensors on this memory are pending: rare)
                for start, end, kind in list(held):
                    if start < extent[2] and extent[1] < end and kind in self.pending:
                        self._run(kind)

    def flush(self) -> None:
        for kind in list(self.pending):
            self._run(kind)

    def _run(self, kind: str) -> None:
        members = self.pending.pop(kind)
        for m in members:
            del self.leaves[id(m.leaf)]
        for m in members:
            extent = m.plan.extent if isinstance(getattr(m, "plan", None), _Plan) else None
            held = None if extent is None else self.extents.pop(extent[0], None)
            if held:
                kept = [e for e in held if e[2] != kind]
                if kept:
                    self.extents[extent[0]] = kept
        if kind == "split_rows":  # (sharded terms: their plan's collectives)
            members[0].plan.run_together(members)
        else:
            _batched.run(members, self.check_finite, self.cache)


def _extent(leaf: torch.Tensor) -> tuple | None:
    """(storage, first byte, one past the last byte) of a plain tensor's
    entries (kept on its plan, which is rebuilt when the tensor's memory,
    shape or strides change); None for an empty tensor or a subclass (a
    sharded tensor's local memory is its own)."""
    if type(leaf) not in (torch.Tensor, torch.nn.Parameter) or not leaf.numel():
        return None
    span = sum((n - 1) * abs(st) for n, st in zip(leaf.shape, leaf.stride()))
    return leaf.untyped_storage().data_ptr(), leaf.data_ptr(), leaf.data_ptr() + (span + 1) * leaf.element_size()


def _leaf_id(term: ProxTerm) -> int | None:
    """id of the term's tensor now; None where it no longer resolves (a
    module whose tensor was deleted: that term's own step raises, not
    another ProximalStep's attach)."""
    try:
        return id(term.leaf)
    except (TypeError, ValueError):
        return None


def _warn_if_attached_elsewhere(prox: "ProximalStep", opt) -> None:
    """A UserWarning where another ProximalStep's hook on ``opt`` has terms
    on tensors that ``prox`` has terms on: both hooks would run after every
    optimizer step, each applying its prox (torch keeps its step hooks in
    ``optimizer._optimizer_step_post_hooks``)."""
    mine = {id(t.leaf): t.label for t in prox.terms}
    for hook in list(getattr(opt, "_optimizer_step_post_hooks", {}).values()):
        other = getattr(hook, "__self__", None)
        if not isinstance(other, ProximalStep) or other is prox:
            continue
        shared = [mine[i] for i in map(_leaf_id, other.terms) if i in mine]
        if shared:
            warnings.warn(
                f"another ProximalStep is attached to this optimizer with terms on the same tensors ({', '.join(sorted(set(shared)))}): "
                "both run after every optimizer step, proxing those tensors twice; detach it first (other.detach())",
                UserWarning, stacklevel=3,
            )
            return


def _group_slot(leaf: torch.Tensor, optimizer) -> tuple | None:
    """Where the optimizer's parameter group holding ``leaf`` is now:
    ``(optimizer.param_groups, index, group)`` (None if no group holds it)."""
    groups = optimizer.param_groups
    for i, group in enumerate(groups):
        for p in group["params"]:
            if p is leaf:
                return groups, i, group
    return None


def _slot_current(slot: tuple, optimizer) -> bool:
    """Whether ``slot`` (:func:`_group_slot`) is still the optimizer's: the
    same ``param_groups`` list with the same group dict at the same index
    (three identity checks, not a search).  ``optimizer.load_state_dict``
    replaces the list and its dicts, so a slot found before it is not; a
    tensor moved in place from one group's ``params`` to another's is not
    seen (the groups' lists are not searched at every step)."""
    groups, i, group = slot
    return optimizer.param_groups is groups and i < len(groups) and groups[i] is group


def _groups_now(optimizer) -> tuple:
    """The optimizer's ``param_groups`` list and its group dicts as they are
    now (for :func:`_same_groups`)."""
    groups = optimizer.param_groups
    return groups, tuple(groups)


def _same_groups(optimizer, kept: tuple) -> bool:
    """Whether the optimizer's ``param_groups`` are still ``kept``
    (:func:`_groups_now`): the same list holding the same dicts (identity
    checks, one per group)."""
    groups, dicts = kept
    if optimizer.param_groups is not groups or len(groups) != len(dicts):
        return False
    for g, d in zip(groups, dicts):
        if g is not d:
            return False
    return True


def _required(slot: tuple | None, leaf: torch.Tensor, label: str) -> tuple:
    """``slot``; a ValueError naming the term (``label``) where no group holds
    ``leaf`` (``slot`` None)."""
    if slot is None:
        raise ValueError(
            f"term {label!r}: its tensor (shape {tuple(leaf.shape)}) is not in the optimizer's param_groups "
            "(a parameter replaced after add(), e.g. by load_state_dict(assign=True), is another tensor: "
            "give the optimizer the new one; a frozen one unfrozen needs a place in the optimizer too)"
        )
    return slot


def _optimised_group(leaf: torch.Tensor, optimizer, label: str) -> dict | None:
    """The optimizer's parameter group holding ``leaf``; None for a frozen
    tensor (``requires_grad=False``) that no group holds (an optimizer built
    from the trainable parameters alone: the steps skip a frozen tensor, as
    the optimizer does, until it is unfrozen); a ValueError naming the term
    (``label``) for a trainable tensor that no group holds."""
    slot = _group_slot(leaf, optimizer)
    if slot is None and not leaf.requires_grad:
        return None
    return _required(slot, leaf, label)[2]


def _lr_in(group: dict, label: str, optimizer):
    """The ``lr`` of the parameter group holding term ``label``'s tensor; a
    ValueError naming the term where the group has none."""
    if "lr" not in group:
        raise ValueError(
            f"term {label!r}: the {type(optimizer).__name__} parameter group holding its tensor has no 'lr', "
            "which gives the proximal step lr * strength: call step(lr=...) instead of attach(), "
            "or give the group an 'lr'"
        )
    return group["lr"]


def _all_finite(t: torch.Tensor) -> bool:
    """Whether ``t`` (a sharded tensor: this rank's shard) holds no NaN or Inf."""
    t = t.to_local() if B.is_sharded(t) else t
    return bool(torch.isfinite(t.detach()).all())


def _float_lr(lr) -> float:
    """A parameter group's ``lr`` (a number or a tensor) as a float."""
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)


def _check_adam(optimizer) -> None:
    if not isinstance(optimizer, torch.optim.Adam):  # AdamW is a subclass
        raise TypeError(
            f"metric='adam' needs a torch.optim.Adam or AdamW optimizer, got {type(optimizer).__name__} "
            "(for an optimizer with Adam's state and denominator pass "
            "metric=lambda opt, p: proxlib.torch.adaptive.adam_metric(opt, p, assume_adam=True))"
        )
    for group in optimizer.param_groups:
        _check_adam_group(group)


def _check_adam_group(group: dict) -> None:
    eps = group.get("eps")
    if not (isinstance(eps, (numbers.Real, torch.Tensor)) and float(eps) > 0):
        raise ValueError(f"metric='adam' needs eps > 0 in every parameter group (d = sqrt(v_hat) + eps must be > 0), got eps={eps!r}")
