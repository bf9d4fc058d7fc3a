r"""The operators, each declared once, and the one code path that applies them.

Every operator is a :class:`Penalty` subclass (a frozen dataclass of its
parameters) in its family module (``owl.py``, ``group.py``, ``exclusive.py``,
``elementwise.py``), registered in :data:`OPERATORS` with its public
``prox_*`` function.  A penalty declares

* ``kernel``: the backend kernel that solves its prox (every backend exports
  the names in :data:`proxlib.backends.KERNELS`);
* ``layout``: how an input becomes the kernel's canonical array --
  ``"flat"`` (all entries as one vector: the separable penalties and OWL) or
  ``"rows"`` (the groups as rows: see :mod:`proxlib._rows`);
* ``thresholds(layout)``: its parameters as float64 arrays on the input's
  device, *before* the step (they are linear in the step: the kernel gets
  ``step * t`` rounded once to the data's dtype), plus ``fixed`` parameters
  that the step does not scale (lp's exponent);
* ``value(x)``: Omega(x) in float64.

:func:`apply` is then the whole of every public ``prox_*`` function:
validate, lay out, form the thresholds, dispatch to the input's backend,
restore the shape and dtype.  The public functions, the penalty objects, the
torch training step (:mod:`proxlib.torch`), the tests and the benchmarks all
enumerate :data:`OPERATORS`, so adding an operator means one class, one
function and one kernel per backend.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from . import _range
from . import _validate as V
from ._dispatch import array_kind, array_namespace, backend_for, compiling, device, outside_compile
from ._rows import Rows, canonical_rows, check_groups, group_weights_top, ragged_parts
from ._rows import group_weights as _group_weights
from .backends import numba_layout

__all__ = ["Operator", "OPERATORS", "Penalty", "Layout", "Plan", "apply", "apply_metric", "layout_of", "metric_array", "metric_layout"]


@dataclass
class Layout:
    """An input in its kernel's canonical form.

    ``data``: the flat vector or the (G, m) rows; ``shape``: the input's
    shape; ``rows``: the row layout
    (``None`` for flat); ``c``: per-group weights (float64, rows only) and
    ``c_top`` their largest where known without reading them
    (:func:`proxlib._rows.group_weights_top`); ``restore``: maps a kernel
    result back to the input's shape."""

    data: Any
    restore: Callable[[Any], Any]
    shape: tuple
    rows: Rows | None = None
    c: Any = None
    c_top: float | None = None


class Penalty:
    """Base of the penalty objects: ``prox(v, step)`` and ``value(x)``.

    Subclasses are frozen dataclasses whose fields are the parameters, checked
    when the object is made (the messages name the parameter).

    Penalties compare by value: two are equal when they are of the same class
    and their parameters (as stored: the checked, normalised values) are
    equal, an array parameter being equal to an array of the same library,
    device and shape with equal entries (whatever their dtypes), and to
    nothing else (a Python float 0.5 is not the 0-d array 0.5).  So a
    pickled and unpickled penalty equals the original.  The hash is that of
    the class, the scalar parameters and the arrays' shapes (not their
    entries: hashing reads no array, on any device), consistent with
    equality.  An array parameter is a snapshot only where the penalty
    copies it (OWL and GrOWL, by default): changing an array a penalty
    holds changes its equality (and is not supported while it is a dict key).
    """

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return all(_same_parameter(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self))

    def __hash__(self):
        return hash((type(self),) + tuple(_parameter_key(getattr(self, f.name)) for f in dataclasses.fields(self)))

    kernel: ClassVar[str]
    layout: ClassVar[str]  # "flat" or "rows"
    arg: ClassVar[str] = "v"  # the data argument's name in messages
    fused_finite_check: ClassVar[bool] = False  # the kernel checks NaN/Inf itself

    def prox(self, v, step=1.0, *, metric=None, check_finite: bool = True):
        """``argmin_x 1/2 ||x - v||^2 + step * Omega(x)`` (see the matching ``prox_*`` function);
        with ``metric=d``, ``argmin_x 1/2 sum_i d_i (x_i - v_i)^2 + step * Omega(x)``
        (:func:`apply_metric`)."""
        if metric is not None:
            return apply_metric(self, v, step, metric, check_finite=check_finite)
        return apply(self, v, step, check_finite=check_finite)

    def value(self, x) -> float:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    # ------------------------------------------------ certificates (proxlib.certificates)
    def optimality_residual(self, v, x, step=1.0) -> float:
        """Scale-free distance of ``x`` from ``self.prox(v, step)``, without the prox
        (:func:`proxlib.optimality_residual`)."""
        from . import certificates

        return certificates.optimality_residual(self, v, x, step)

    def subdifferential_distance(self, v, x, step=1.0) -> float:
        """Largest violation of ``(v - x)/step in dOmega(x)``, in units of ``v``
        (:func:`proxlib.certificates.subdifferential_distance`)."""
        from . import certificates

        return certificates.subdifferential_distance(self, v, x, step)

    def dual_norm(self, r) -> float:
        """The dual norm of ``r`` (OWL, GrOWL, group lasso, weighted l1; TypeError
        for the others): :func:`proxlib.certificates.dual_norm`."""
        from . import certificates

        return certificates.dual_norm(self, r)

    # ---------------------------------------------------------------- declared per operator
    def thresholds(self, layout: Layout) -> tuple:
        raise NotImplementedError  # pragma: no cover

    def fixed(self) -> tuple:
        return ()

    groups: ClassVar[Any] = None
    group_weights: ClassVar[Any] = None
    # the kernel of the prox in a diagonal metric (KERNELS); None: exact only
    # for a constant metric (OWL, GrOWL), see apply_metric
    metric_kernel: ClassVar[str | None] = None
    # homogeneity of each threshold in the data: 1 (scales like the data),
    # 2 (scale-free), "p" (lp); see proxlib._range
    degrees: ClassVar[tuple] = (1,)


@dataclass(frozen=True)
class Operator:
    """A registry entry: the penalty class, its public function, its kernel."""

    name: str
    penalty: type
    function: Callable

    @property
    def kernel(self) -> str:
        return self.penalty.kernel

    @property
    def layout(self) -> str:
        return self.penalty.layout


OPERATORS: dict[str, Operator] = {}


def register(name: str, penalty: type, function: Callable) -> None:
    """Enter ``penalty`` (a frozen dataclass) and its public function in
    :data:`OPERATORS`, with :class:`Penalty`'s equality and hash in place of
    the dataclass's (which compare arrays with ``==``: "truth value
    ambiguous", and cannot hash them)."""
    penalty.__eq__ = Penalty.__eq__
    penalty.__hash__ = Penalty.__hash__
    OPERATORS[name] = Operator(name, penalty, function)


def _same_parameter(a, b) -> bool:
    """Parameter equality (see :class:`Penalty`)."""
    if not (V._is_array(a) or V._is_array(b)):
        return type(a) is type(b) and bool(a == b)
    if not (V._is_array(a) and V._is_array(b)) or array_kind(a) != array_kind(b):
        return False
    if str(device(a)) != str(device(b)) or tuple(a.shape) != tuple(b.shape):
        return False
    return bool(array_namespace(a).all(a == b))


def _parameter_key(a):
    """What a parameter adds to a penalty's hash: an array's library and
    shape, an unhashable value's type, any other value itself."""
    if V._is_array(a):
        return (array_kind(a), tuple(a.shape))
    try:
        hash(a)
    except TypeError:
        return type(a).__name__
    return a


def frozen_set(obj, *, own_copies: bool = True, **values) -> None:
    """Normalise fields of a frozen dataclass in ``__post_init__`` (every
    penalty's ``__post_init__`` calls it), and check a row penalty's
    ``group_weights`` (:func:`check_group_weights`) and ``groups``
    (:func:`proxlib._rows.check_groups`): every parameter is checked when the
    object is made.  With ``own_copies`` (a penalty's ``copy``, True unless
    a ``prox_*`` function makes it for one call) the penalty keeps its own
    copy of those two when they are arrays or lists."""
    for k, v in values.items():
        object.__setattr__(obj, k, v)
    names = _field_names(type(obj))
    if "group_weights" in names:
        check_group_weights(obj.group_weights)
        if own_copies:
            object.__setattr__(obj, "group_weights", _own_copy(obj.group_weights))
    if "groups" in names:
        check_groups(obj.groups)
        if own_copies:
            object.__setattr__(obj, "groups", _own_copy(obj.groups))


@functools.cache
def _field_names(cls) -> tuple:
    """The names of a dataclass's fields, in order (a penalty class's: every
    ``prox_*`` call makes one, and ``dataclasses.fields`` costs about a
    microsecond)."""
    return tuple(f.name for f in dataclasses.fields(cls))


def _own_copy(a):
    """A penalty's own copy of a mutable parameter (an array or a list), so
    that changing the caller's later changes nothing; anything else as it is."""
    if V._is_array(a):
        return array_namespace(a).asarray(a, copy=True)
    return list(a) if isinstance(a, list) else a


def check_group_weights(group_weights, name: str = "group_weights") -> None:
    """The checks that :func:`proxlib._rows.group_weights` makes at every
    prox (None, ``"sqrt"``, or a 1-D array finite and >= 0; the same
    messages), made by that function itself on as many rows as there are
    weights, so a penalty's ``group_weights`` is checked when it is made.
    Their number against the data's rows or labels is checked at the prox."""
    if group_weights is None or (type(group_weights) is str and group_weights == "sqrt"):
        return  # (nothing to check; the common cases, at every public call)
    V._reject_nested(group_weights, name)
    if isinstance(group_weights, str):
        n, like = 0, None
    else:
        c = group_weights if V._is_array(group_weights) else np.asarray(group_weights, dtype=object)
        n = c.shape[0] if c.ndim == 1 else 0
        like = group_weights if V._is_array(group_weights) else None
    ref = np.zeros(0) if like is None else like
    rows = Rows(rows=np.zeros((n, 0)), sizes=np.zeros(n), labels=np.arange(n), restore=lambda X: X)
    _group_weights(rows, group_weights, name=name, like=ref)


def layout_of(pen: Penalty, x, *, contiguous: bool = True, name: str | None = None) -> Layout:
    """``x`` (already a float32/float64 array) in ``pen``'s kernel layout
    (``name``: the argument named in messages, default the penalty's)."""
    if pen.layout == "flat":
        shape = tuple(x.shape)
        flat = x.reshape(-1)
        if contiguous:
            flat = _contiguous(flat)
        return Layout(data=flat, restore=lambda X: X.reshape(shape), shape=shape)
    rows = canonical_rows(x, pen.groups, name=name or pen.arg, contiguous=contiguous)
    c = _group_weights(rows, pen.group_weights, like=x)
    return Layout(data=rows.rows, restore=rows.restore, shape=tuple(x.shape), rows=rows, c=c,
                  c_top=group_weights_top(rows, pen.group_weights))


def _contiguous(a, columns: bool = False):
    """``a`` as the kernels take it: torch kernels any strides; NumPy and
    CuPy C-contiguous arrays, and with ``columns`` (a backend's
    ``reads_columns``: Numba's serial kernels on a CPU tensor's NumPy view)
    Numba's layout, F-contiguous matrices kept (:func:`proxlib.backends.numba_layout`)."""
    if array_kind(a) == "torch" or a.flags.c_contiguous:
        return a
    if columns:
        return numba_layout(a)
    return array_namespace(a).ascontiguousarray(a)


def apply(pen: Penalty, v, step=1.0, *, check_finite: bool = True):
    """The prox of ``step * pen`` at ``v``: a new array of ``v``'s library,
    device, shape and dtype (half precision is computed in float32, integers
    give float64).

    Validates ``v`` and ``step``, then runs ``pen``'s :class:`Plan` for
    ``v``'s shape and dtype: a kept one where :func:`_plan_key` allows it (a
    NumPy array or CPU tensor of a shape seen before, with the same
    parameters), else one made for this call.  A CPU tensor whose kernel is
    Numba's takes the NumPy path on its NumPy view, with Numba's serial
    kernels (:func:`numba_view`), and gets the result as a tensor: the
    NumPy array's bits (an F-ordered matrix's rows are read as columns, as
    a training step reads them, where the NumPy path copies them).

    Inside a function that torch.compile traces, the whole prox runs eagerly
    after a graph break (its kernels are Numba, SciPy and data-dependent
    loops, which Dynamo cannot trace)."""
    check_finite = V.flag(check_finite, "check_finite")
    if array_kind(v) == "torch":
        if compiling():
            return outside_compile(apply)(pen, v, step, check_finite=check_finite)
        routed = numba_view(pen.kernel, v, [getattr(pen, name) for name in _field_names(type(pen))])
        if routed is not None:  # a CPU tensor whose kernel is Numba's: its NumPy view, run so
            view, tdev = routed
            return tdev.torch.from_numpy(_apply(pen, view, step, check_finite, tdev.SERIAL_NUMBA))
    return _apply(pen, v, step, check_finite, None)


def numba_view(kernel: str, v, params=()):
    """``(view, torch_dev)`` where a public call on the torch tensor ``v``
    runs the NumPy path on its NumPy view ``view`` with Numba's serial
    kernels (:func:`proxlib.backends.torch_dev.numba_view`; their backend
    ``torch_dev.SERIAL_NUMBA``; the result, a new array, back as a tensor on
    its memory by ``torch.from_numpy``), else None: not while torch.compile
    traces, not where another backend is asked for (``use_backend``: its
    error is :func:`backend_for`'s), nor for ``params`` (the penalty's)
    holding torch tensors."""
    backend = backend_for(v)
    view_of = getattr(backend, "numba_view", None)
    if view_of is None or compiling() or any(array_kind(p) == "torch" for p in params):
        return None
    view = view_of(kernel, v)
    return None if view is None else (view, backend)


def one_weight(weights):
    """One weight (a Python float or int, a NumPy float32/float64 scalar) as a
    0-d array (the one-call route's form of it: :func:`in_one_call`),
    anything else as it is."""
    if isinstance(weights, (float, np.float32)):  # (np.float64 is a float)
        return np.array(weights)
    if type(weights) is int and abs(weights) < 2**1023:
        return np.array(float(weights))
    return weights


def scalar_vector(scalars):
    """The scalars as a float64 vector (the one-call route's form of a
    penalty's several scalar parameters) where each is a Python float or int
    (below 2^1023) or a NumPy float32/float64 scalar, else None (the general
    path takes the others: arrays, tensors, what it rejects)."""
    for a in scalars:
        if not (isinstance(a, (float, np.float32)) or (type(a) is int and abs(a) < 2**1023)):  # (np.float64 is a float)
            return None
    return np.array(scalars, dtype=np.float64)


def in_one_call(kernel: str, v, weights, step, check_finite: bool, fits):
    """The public call of ``kernel`` on ``v`` with one array of ``weights``
    by the backend's ``<kernel>_checked`` (Numba's: every check and the
    thresholds step * w in one compiled pass), or None where the general
    path must decide: other arrays (not NumPy float32/float64, native,
    C-contiguous, with ``fits(v, weights)``; a CPU tensor ``v`` goes by its
    NumPy view, :func:`numba_view`, and serial kernels, and so do CPU tensor
    weights beside it, whose general path is the torch route: the same
    bits), a step outside
    [2^-1022, 2^1000], a backend without it, or a check the pass failed (so
    the errors and their messages are the general path's).  Its result is
    the general path's, bit for bit."""
    routed = None
    if array_kind(v) == "torch":  # a CPU tensor on Numba's route: its NumPy view, by the serial kernel
        tensor_weights = array_kind(weights) == "torch"
        routed = numba_view(kernel, v, () if tensor_weights else (weights,))
        v = None if routed is None else routed[0]
        if routed is not None and tensor_weights:  # (CPU tensor weights: their view too; the torch route's bits, tested)
            weights = routed[1].numba_view(kernel, weights)
    if not (type(v) is np.ndarray and type(weights) is np.ndarray
            and v.dtype.char in "fd" and weights.dtype.char in "fd"
            and v.dtype.isnative and weights.dtype.isnative
            and v.flags.c_contiguous and weights.flags.c_contiguous and fits(v, weights)
            and (type(step) is int or isinstance(step, float)) and 2.0**-1022 <= step <= 2.0**1000):
        return None
    name = kernel + "_checked"
    if routed is not None:
        tdev = routed[1]
        X = getattr(tdev.SERIAL_NUMBA, name)(v, weights, float(step), check_finite)
        return None if X is None else tdev.torch.from_numpy(X)
    run = getattr(backend_for(v), name, None)
    return None if run is None else run(v, weights, float(step), check_finite)


def _apply(pen: Penalty, v, step, check_finite: bool, backend):
    """:func:`apply` with the flag checked, on ``backend``'s kernels (None:
    :func:`backend_for` the input's)."""
    out_dtype = V.result_dtype(v)
    x = V.as_float_array(v, pen.arg, check_finite=False)  # (NaN and Inf: the plan checks, in its kernel's pass where it can)
    step = V.positive(step, "step")
    key = _plan_key(pen, x, backend)
    plan = None if key is None else _kept_plan(key)
    made = plan is None
    if made:
        # a plan to keep is made from a copy of the penalty that owns its
        # arrays: the caller's may change after this call
        plan = Plan(pen if key is None else dataclasses.replace(pen), x, backend)
    X = plan(x, step, check_finite)  # (a new plan's first call takes the layout it was made from)
    if made and key is not None:
        _keep_plan(key, plan)  # (kept once called: it holds no input then)
    if out_dtype is not None:
        X = array_namespace(X).astype(X, out_dtype)
    return X


class Plan:
    """``pen.prox(x, step)`` for inputs ``x`` of one shape, dtype, library and
    device, already validated (float32 or float64: :func:`apply` checks and
    converts them), with what depends on those alone done once when the plan
    is made: the map to the kernel's layout, the thresholds before the step
    (:func:`proxlib._range.terms`), and the thresholds at the last step asked
    for (:class:`proxlib._range.AtStep`).

    A call lays out ``x`` (a reshape; for ragged ``groups=``, a gather
    precomputed at the second call), forms the thresholds at ``step`` unless
    the step is the last one, runs the kernel of the backend chosen when the
    plan was made and restores the shape: the arithmetic of the layout
    made at every call (:func:`layout_of`, :func:`proxlib._range.solve`),
    bit for bit.  Its first call, on the very input the plan was made from,
    takes the layout made then.  Groups of very different sizes are solved
    by size class (:func:`proxlib._rows.ragged_parts`), a plan per class.

    :func:`apply` makes one per call, or keeps it (:func:`_plan_key`); the
    solvers make one per problem.  Once called, a plan keeps no input (until
    then, the one it was made from)."""

    def __init__(self, pen: Penalty, like, backend=None):
        self.pen = pen
        self.xp = array_namespace(like)
        self.parts = None
        split = ragged_parts(like, pen.groups, name=pen.arg)
        if split is not None:
            labels, parts = split
            subs = [like[idx] for idx in parts]
            self.parts = [(idx, Plan(replace(pen, groups=labels[idx]), sub, backend)) for idx, sub in zip(parts, subs)]
            self._first = (like, subs)
            return
        self.backend = backend or backend_for(like)  # (a kept plan's key names it)
        self.columns = getattr(self.backend, "reads_columns", False)
        lay = layout_of(pen, like, contiguous=not self.columns)  # (checks the shape against the parameters)
        self.terms = _range.terms(pen, lay)
        self.thresholds = _range.AtStep(self.terms)
        self.fixed = pen.fixed()
        self.restore = lay.restore
        self.rows_shape = tuple(lay.data.shape)
        self.ragged = lay.rows is not None and lay.rows.ragged
        self._gather = None  # (mask, index): see _ragged_rows
        self._first = (like, _contiguous(lay.data, self.columns))

    def __call__(self, x, step: float, check_finite: bool = False):
        """The prox at ``x`` (of the plan's shape, dtype and device) and
        ``step`` (a positive float); ``check_finite``: a ValueError naming the
        argument where ``x`` holds NaN or Inf, found by the kernel's own pass
        where it has a fused check (the penalty's ``fused_finite_check``, or
        the kernel's ``checks_finite``: on the thresholds in range, where the
        kernel runs on ``x`` itself), else by a pass before it."""
        if self.parts is not None:
            first, self._first = self._first, None
            subs = first[1] if first is not None and first[0] is x else [x[idx] for idx, _ in self.parts]
            out = self.xp.empty_like(x)
            for (idx, plan), sub in zip(self.parts, subs):
                out[idx] = plan(sub, step, check_finite)
            return out
        data = self._laid_out(x)
        pen = self.pen
        kernel = getattr(self.backend, pen.kernel)  # (looked up at every call)
        # the thresholds formed as at every call (step times the penalty's
        # scalars first, then its arrays; out of range, the same exact
        # transformations): the same bits; kept while the step is the same
        thr = self.thresholds(step, data)
        # (an elementwise kernel's check is fused only where it runs on the
        # data itself: out of range, lp's runs on the data rescaled, the
        # entries too large to rescale, infinities among them, set aside)
        fused = pen.fused_finite_check or (thr is not None and getattr(kernel, "checks_finite", False))
        if check_finite and not fused:
            V.check_all_finite(data, pen.arg)

        def run(kernel, data, thr):
            if check_finite and fused:
                with V.fused_finite_check(pen.arg):
                    return kernel(data, *thr, *self.fixed, check_finite=True)
            if pen.fused_finite_check:
                return kernel(data, *thr, *self.fixed, check_finite=False)
            return kernel(data, *thr, *self.fixed)

        if thr is None:
            return self.restore(_range.solve(pen, _range.Data(data), step, kernel, run, self.terms))
        return self.restore(run(kernel, data, thr))

    def _laid_out(self, x):
        """``x`` in the kernel's layout (:func:`_contiguous`)."""
        first, self._first = self._first, None
        if first is not None and first[0] is x:
            return first[1]
        if self.ragged:
            data = self._ragged_rows(x)
        else:
            data = x.reshape(self.rows_shape)  # (flat: one dimension)
        return _contiguous(data, self.columns)

    def _ragged_rows(self, x):
        """Ragged ``x`` gathered into the padded rows: the index of each
        entry of the rows (padding: a mask), made at the first call that
        needs it (a plan for one call never does)."""
        xp = self.xp
        if self._gather is None:
            n = x.shape[0]
            # entry index + 1 in the kernel's padded layout (0 = padding);
            # integers: in x's float32, positions above 2^24 were rounded
            pos = canonical_rows(xp.arange(1, n + 1, dtype=xp.int64, device=device(x)), self.pen.groups).rows
            self._gather = (pos > 0, xp.where(pos > 0, pos - 1, 0))
        mask, index = self._gather
        return xp.where(mask, x[index], 0.0)


#: :func:`apply` keeps at most this many plans (the least recently used go first)
PLANS_KEPT = 32
#: and only of row layouts of at most this many rows (a plan holds a few
#: float64 numbers per row: 256 KiB at most, 8 MiB for all)
PLAN_ROWS_KEPT = 1 << 14
_plans: collections.OrderedDict = collections.OrderedDict()
_plans_lock = threading.Lock()


def _plan_key(pen: Penalty, x, backend=None):
    """The key under which :func:`apply` keeps ``pen``'s plan for ``x``, or
    None where it makes one per call.

    Plans are kept for NumPy arrays and CPU torch tensors (on a GPU, a kept
    plan would hold device memory and be used from whatever stream the
    caller is on) of at most :data:`PLAN_ROWS_KEPT` rows, for penalties
    without ``groups`` labels (a ragged layout's map grows with the data).
    The key holds the penalty's class and parameters (its dataclass fields;
    a penalty that is not a dataclass is planned per call) by value: floats by
    their bits (0.0 and -0.0 apart), arrays (NumPy, or CPU tensors, of at
    most :data:`PLAN_ROWS_KEPT` entries: weights, ``group_weights``) by
    their dtype, shape and bytes, so an array the caller changes in place
    is another key, and the kept plan's penalty holds copies of its own
    (:func:`apply`).  It also holds the backend that will run the kernel
    (``PROXLIB_BACKEND``, :func:`proxlib.use_backend`; it tells NumPy from
    torch), the shape and the dtype."""
    if type(x) is not np.ndarray and not (array_kind(x) == "torch" and x.device.type == "cpu"):
        return None
    if pen.layout == "rows" and x.ndim > 1 and x.shape[0] > PLAN_ROWS_KEPT:
        return None
    if pen.groups is not None or not dataclasses.is_dataclass(pen):
        return None  # (a penalty that is not a dataclass: no fields to key it by)
    params = []
    for name in _field_names(type(pen)):
        p = _parameter_value(getattr(pen, name))
        if p is None:
            return None
        params.append(p)
    return (type(pen), tuple(params), (backend or backend_for(x)).__name__, tuple(x.shape), x.dtype)


def _parameter_value(a):
    """A parameter as a hashable value for :func:`_plan_key` (None: one
    that is not kept)."""
    t = type(a)
    if t is float:
        return a.hex()
    if a is None or t is str or t is int or t is bool:
        return (t, a)
    if t is np.ndarray and a.size <= PLAN_ROWS_KEPT:
        return ("numpy", a.dtype.str, a.shape, a.tobytes())
    if array_kind(a) == "torch" and a.device.type == "cpu" and a.numel() <= PLAN_ROWS_KEPT:
        try:
            host = a.detach().numpy()
        except (TypeError, RuntimeError):  # (a dtype NumPy lacks: bfloat16)
            return None
        return ("torch", str(a.dtype), tuple(a.shape), host.tobytes())
    return None


def _kept_plan(key):
    with _plans_lock:
        plan = _plans.get(key)
        if plan is not None:
            _plans.move_to_end(key)
        return plan


def _keep_plan(key, plan) -> None:
    with _plans_lock:
        _plans[key] = plan
        while len(_plans) > PLANS_KEPT:
            _plans.popitem(last=False)


def in_parts(pen: Penalty, x, split, solve):
    """The result for ragged ``x`` assembled from ``solve(sub, idx)`` on each
    part ``idx`` of ``split`` (:func:`proxlib._rows.ragged_parts`), ``sub``
    being ``pen`` on that part's labels (``group_weights`` unchanged: by
    label, or ``"sqrt"`` of the same group sizes)."""
    labels, parts = split
    xp = array_namespace(x)
    out = xp.empty_like(x)
    for idx in parts:
        out[idx] = solve(replace(pen, groups=labels[idx]), idx)
    return out


def value_in_parts(pen: Penalty, x):
    """``pen.value(x)`` summed over the parts of a ragged ``x`` whose groups'
    sizes differ widely (:func:`proxlib._rows.ragged_parts`); None otherwise."""
    split = ragged_parts(x, pen.groups, name="x")
    if split is None:
        return None
    labels, parts = split
    return math.fsum(replace(pen, groups=labels[idx]).value(x[idx]) for idx in parts)


def param_array(a, like, name: str):
    """Parameter ``a`` (a Python float, or an array already checked when the
    penalty was made: a NumPy array or an array of ``like``'s library) as
    float64 on ``like``'s library and device (no copy where it is one)."""
    xp = array_namespace(like)
    return V.like(a, xp.zeros(0, dtype=xp.float64, device=device(like)), name)


def replace(pen: Penalty, **changes) -> Penalty:
    """``pen`` with ``changes``, for the library's own use (a ragged part's
    labels): the arrays in ``changes`` are fresh, so a penalty with a
    ``copy`` option (an InitVar) does not copy them again."""
    if "copy" in getattr(type(pen), "__dataclass_fields__", {}):
        changes.setdefault("copy", False)
    return dataclasses.replace(pen, **changes)


# ---------------------------------------------------------------- diagonal metric


def metric_array(metric, x):
    """The metric ``d`` for data ``x``: float64 on ``x``'s library and device,
    broadcast to ``x``'s shape, checked finite and > 0; with its minimum and
    maximum (Python floats; two reductions, as for the data's finite check)."""
    d = V.as_float_array(metric, "metric", check_finite=False)
    xp = array_namespace(x)
    d = V.like(d, xp.zeros(0, dtype=xp.float64, device=device(x)), "metric")
    if tuple(d.shape) != tuple(x.shape):
        try:
            d = xp.broadcast_to(d, tuple(x.shape))
        except (ValueError, RuntimeError):
            raise ValueError(f"metric of shape {tuple(d.shape)} does not broadcast to the input's shape {tuple(x.shape)}") from None
    if math.prod(d.shape) == 0:
        return d, 1.0, 1.0
    lo, hi = float(xp.min(d)), float(xp.max(d))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("metric contains NaN or Inf")
    if not lo > 0:
        raise ValueError(f"metric must be > 0 everywhere, got a minimum of {lo}")
    return d, lo, hi


def metric_layout(pen: Penalty, d, layout: Layout):
    """The metric ``d`` (of the data's shape) in the kernel layout of ``layout``.

    Ragged groups pad their rows with zeros; the metric gets 1 there (any
    d > 0 would do: padded entries are 0 and stay 0)."""
    if pen.layout == "flat":
        return _contiguous(d.reshape(-1))
    rows = canonical_rows(d, pen.groups, name="metric").rows
    if layout.rows is not None and layout.rows.ragged:
        xp = array_namespace(d)
        real = canonical_rows(xp.ones_like(d), pen.groups, name="metric").rows
        rows = xp.where(real > 0, rows, 1.0)
    return rows


def apply_metric(pen: Penalty, v, step, metric, *, check_finite: bool = True):
    r"""The prox of ``step * pen`` at ``v`` in the diagonal metric ``d = metric``:

    .. math:: \arg\min_x \tfrac12 \sum_i d_i (x_i - v_i)^2 + \mathrm{step}\,\Omega(x),

    ``d`` finite and > 0, of ``v``'s shape (or broadcastable to it; NumPy or
    ``v``'s library), always checked (two reductions).

    * ``d`` constant (every entry equal to delta): the Euclidean prox with
      step ``step / delta`` (:func:`apply`), for every operator;
    * otherwise the operator's metric kernel (``pen.metric_kernel``, exact:
      see :mod:`proxlib.backends._metric_kernels`) on the data and ``d`` in the
      same layout, thresholds ``step * t`` in float64, formed as :func:`apply`
      forms them (beyond 2^1023: the objective divided by a power of two,
      :func:`proxlib._range.metric_at_step`);
    * OWL and GrOWL have no metric kernel: their prox in a non-constant
      diagonal metric is not an isotonic regression on sorted magnitudes (the
      order of the solution is not that of ``d * |v|`` or ``|v|``), so proxlib
      has no exact finite algorithm for it and raises ValueError.

    Under torch.compile it runs eagerly after a graph break, as :func:`apply`.
    """
    check_finite = V.flag(check_finite, "check_finite")
    if array_kind(v) == "torch" and compiling():
        return outside_compile(apply_metric)(pen, v, step, metric, check_finite=check_finite)
    out_dtype = V.result_dtype(v)
    x = V.as_float_array(v, pen.arg, check_finite=check_finite)
    step = V.positive(step, "step")
    d, lo, hi = metric_array(metric, x)
    split = ragged_parts(x, pen.groups, name=pen.arg)
    if split is not None:  # groups of very different sizes: solved by size class
        X = in_parts(pen, x, split, lambda sub, idx: apply_metric(sub, x[idx], step, d[idx], check_finite=False))
        return X if out_dtype is None else array_namespace(X).astype(X, out_dtype)
    if lo == hi:
        with V._errstate_over():
            step_d = step / lo
        if 0 < step_d < math.inf:
            X = apply(pen, x, step_d, check_finite=False)
            return X if out_dtype is None else array_namespace(X).astype(X, out_dtype)
    if pen.metric_kernel is None:
        reason = "the metric is not constant" if lo != hi else f"step / metric = {step} / {lo} is not a positive finite float"
        raise ValueError(
            f"{type(pen).__name__} has an exact prox in a diagonal metric only when the metric is constant "
            f"(it is then the Euclidean prox with step / metric); here {reason} (metric in [{lo}, {hi}])"
        )
    layout = layout_of(pen, x)
    D = metric_layout(pen, d, layout)
    thr, E = _range.metric_at_step(_range.terms(pen, layout), step, D)
    D = _range.metric_divided(D, E, lo)
    X = layout.restore(getattr(backend_for(x), pen.metric_kernel)(layout.data, D, *thr, *pen.fixed()))
    if out_dtype is not None:
        X = array_namespace(X).astype(X, out_dtype)
    return X
