r"""Testing helpers for other libraries' proximal operators, with proxlib as the reference.

Two things another library's test suite needs to check its own prox:

* :func:`assert_prox_close` -- passes when ``x`` is ``prox_{step*Omega}(v)`` to
  the precision of the arithmetic, judged by proxlib's solver-free optimality
  certificate (:func:`proxlib.optimality_residual`) and by proxlib's own
  answer; on failure the message gives the residual, the reference answer and
  where the two differ.
* Hypothesis strategies for adversarial inputs of every operator: exact ties,
  zeros and sign-symmetric pairs in the data, plateaus, zeros and spikes in
  the weights, zero rows and tied row norms, ragged groups, extreme scales and
  float32 (:func:`prox_problems`, :func:`float_arrays`,
  :func:`nonincreasing_weights`, :func:`steps`, :func:`penalties`).

Example (pytest + Hypothesis; skglm's SLOPE prox checked against proxlib)::

    from hypothesis import given, settings
    from proxlib.testing import assert_prox_close, prox_problems

    @settings(deadline=None)  # the first prox call loads Numba's kernels (about 1 s)
    @given(prox_problems("owl"))
    def test_my_slope_prox(problem):
        pen, v, step = problem  # OWL's v: 1-D or 2-D (weights per entry)
        x = my_slope_prox(v.ravel(), step * pen.weights).reshape(v.shape)
        assert_prox_close(pen, v, x, step)

``assert_prox_close`` needs only NumPy; the strategies need Hypothesis
(``pip install hypothesis``), imported when a strategy is first built.
"""

from __future__ import annotations

import numpy as np

from . import certificates as _C
from ._dispatch import array_kind, use_backend
from ._registry import OPERATORS, Penalty

__all__ = [
    "assert_prox_close",
    "operator_names",
    "prox_problems",
    "penalties",
    "float_arrays",
    "nonincreasing_weights",
    "steps",
]


# ----------------------------------------------------------------------------- assertion


def _host(a) -> np.ndarray:
    """``a`` on the host as float64 NumPy (exact: every float dtype widens)."""
    return np.asarray(_numpy_in_own_precision(a), dtype=np.float64)


def _numpy_in_own_precision(a) -> np.ndarray:
    """``a`` on the host as NumPy, in its own floating dtype (bfloat16, which
    NumPy lacks, as float32; other dtypes as NumPy keeps them)."""
    if array_kind(a) == "torch":
        import torch  # (loaded already: a is a tensor)

        a = a.detach().cpu()
        return (a.float() if a.dtype == torch.bfloat16 else a).numpy()
    if array_kind(a) == "cupy":
        return a.get()
    return np.asarray(a)


def _same_library(v, x):
    """``v`` and ``x`` as arrays of one library (NumPy, each in its own
    precision, when they differ)."""
    if not hasattr(v, "shape"):
        v = np.asarray(v)
    if not hasattr(x, "shape"):
        x = np.asarray(x)
    if array_kind(v) != array_kind(x):
        return _numpy_in_own_precision(v), _numpy_in_own_precision(x)
    return v, x


def _less_precise(*arrays) -> str:
    """The name of the least precise floating dtype the arrays are stored in."""
    names = [_C._stored_dtype(a) for a in arrays]
    return max(names, key=lambda n: _C._precision(n)[0])


def assert_prox_close(penalty: Penalty, v, x, step=1.0, *, rtol: float | None = None, err_msg: str = "") -> None:
    r"""Assert that ``x`` is ``argmin_z 1/2 ||z - v||^2 + step * penalty(z)``.

    Passes when either

    * the optimality residual of ``x`` (:func:`proxlib.optimality_residual`,
      computed without any prox) is at most ``rtol``, or
    * ``x`` is within ``rtol * max|v|`` (max-abs) of proxlib's own answer
      (which covers a tiny non-zero where the prox is 0, a point where the
      subdifferential jumps).  The data's scale ``max|v|``, not the
      certificate's ``max|v| + step * threshold``: where the thresholds
      dwarf the data that one let any ``x`` between 0 and ``v`` pass.

    Parameters
    ----------
    penalty : a proxlib penalty object, e.g. ``proxlib.OWL(weights)``
    v, x : arrays of one shape (NumPy, CuPy or torch; mixed libraries are
        compared on the host, each in its own precision)
    step : float > 0
    rtol : float, optional
        Scale-free tolerance; default :func:`proxlib.residual_tolerance` for
        the less precise of ``v``'s and ``x``'s dtypes.
    err_msg : str
        Prepended to the failure message.

    Raises
    ------
    AssertionError
        With the residual and its tolerance, the worst block (index, v, x and
        the reference there) and the largest differences from the reference;
        or naming the first NaN / Inf entry of ``x``.
    """
    # the tolerance's precision from the arrays as given (on the host a
    # bfloat16 tensor is float32)
    given = _less_precise(v, x)
    v, x = _same_library(v, x)
    xh = _host(x).reshape(-1) if hasattr(x, "shape") else np.asarray(x, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(xh))
    if bad.size:
        idx = tuple(int(i) for i in np.unravel_index(bad[0], tuple(x.shape)))
        raise AssertionError(
            f"{err_msg + chr(10) if err_msg else ''}x holds {bad.size} NaN or Inf entries (first at {idx}: {xh[bad[0]]!r}) "
            f"for {_describe(penalty)}, step = {step!r}"
        )
    cert = _C.certify(penalty, v, x, step)
    if rtol is not None:
        tol = float(rtol)
    elif given != _less_precise(v, x):
        tol = _C.residual_tolerance(penalty, v, step, dtype=given)
    else:
        tol = cert.tolerance
    if cert.residual <= tol:
        return
    ref = penalty.prox(v, step) if array_kind(v) != "numpy" else _reference_prox(penalty, v, step)
    xh, rh, vh = _host(x).reshape(-1), _host(ref).reshape(-1), _host(v).reshape(-1)
    diff = np.abs(xh - rh)
    max_diff = float(diff.max()) if diff.size else 0.0
    if max_diff <= tol * _data_scale(vh):
        return
    raise AssertionError(_failure_message(penalty, v, x, step, cert, tol, vh, xh, rh, diff, err_msg))


def _data_scale(vh) -> float:
    """max |v| (0 for an empty v): the scale of the prox's entries."""
    return float(np.abs(vh).max()) if vh.size else 0.0


def _reference_prox(penalty, v, step):
    with use_backend("numpy"):  # the reference backend
        return penalty.prox(v, step)


def _failure_message(penalty, v, x, step, cert, tol, vh, xh, rh, diff, err_msg) -> str:
    shape = tuple(v.shape)
    lines = [err_msg] if err_msg else []
    lines.append(f"x is not prox_(step * Omega)(v) for {_describe(penalty)}, step = {step!r}, shape {shape}:")
    lines.append(
        f"  optimality residual {cert.residual:.3e} > tolerance {tol:.3e} "
        f"(violation {cert.distance:.3e} in units of v, scale {cert.scale:.3e})"
    )
    ref_cert = _C.certify(penalty, v, penalty.prox(v, step), step)
    lines.append(f"  proxlib's answer has residual {ref_cert.residual:.3e}")
    w = cert.worst
    if cert.blocks == "rows":
        label = _host(cert.labels)[w] if cert.labels is not None else w
        lines.append(f"  worst group: label {int(label)} (violation {float(_host(cert.violation)[w]):.3e})")
    else:
        idx = np.unravel_index(w, shape) if shape else ()
        lines.append(
            f"  worst entry {tuple(int(i) for i in idx)}: v = {float(vh[w])!r}, x = {float(xh[w])!r}, "
            f"reference = {float(rh[w])!r} (violation {float(_host(cert.violation)[w]):.3e})"
        )
    if diff.size:
        top = np.argsort(-diff, kind="stable")[:5]
        lines.append(f"  max |x - reference| = {diff[top[0]]:.3e}; largest differences (index: v, x, reference):")
        for i in top:
            if diff[i] == 0:
                break
            idx = tuple(int(j) for j in np.unravel_index(i, shape)) if shape else ()
            lines.append(f"    {idx}: {float(vh[i])!r}, {float(xh[i])!r}, {float(rh[i])!r}")
        n_bad = int(np.count_nonzero(diff > tol * _data_scale(vh)))
        lines.append(f"  {n_bad} of {diff.size} entries differ from the reference by more than tolerance * max|v|")
    return "\n".join(lines)


def _describe(penalty) -> str:
    """``Name(field=value, ...)`` of the penalty's public fields (arrays
    shortened, in their own dtype: group labels print as integers)."""
    parts = []
    for k, val in vars(penalty).items():
        if val is None or k.startswith("_"):  # (derived fields, e.g. OWL's _top)
            continue
        if hasattr(val, "shape") and len(getattr(val, "shape", ())) > 0:
            a = _numpy_in_own_precision(val).reshape(-1)
            s = np.array2string(a[:6], precision=4, separator=", ")
            parts.append(f"{k}={s[:-1]}{', ...' if a.size > 6 else ''}] ({a.size})")
        else:
            parts.append(f"{k}={val!r}")
    return f"{type(penalty).__name__}({', '.join(parts)})"


# ----------------------------------------------------------------------------- strategies


def operator_names() -> list[str]:
    """The registry names of every operator (:data:`proxlib.OPERATORS`)."""
    return list(OPERATORS)


def _st():
    try:
        from hypothesis import strategies as st
    except ImportError as exc:  # pragma: no cover - hypothesis is in the test extra
        raise ImportError("proxlib.testing's strategies need Hypothesis: pip install hypothesis") from exc
    return st


# a pool of values mixed into every array so that exact ties, zeros and
# sign-symmetric pairs are common
_POOL = (0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0)


def float_arrays(shape, dtype=np.float64, *, extreme: bool = True):
    """Arrays of ``shape`` (a tuple, or a strategy of tuples) with exact ties,
    zeros, sign-symmetric pairs and plateaus, times one power of two per array
    (2^-60 .. 2^60 for float64, 2^-20 .. 2^20 for float32 when ``extreme``).

    Values are O(1) normal floats before the scaling (no subnormals: the
    absolute spacing there is documented separately in
    :func:`proxlib.residual_tolerance`)."""
    st = _st()
    from hypothesis.extra.numpy import arrays

    dtype = np.dtype(dtype)
    width = 32 if dtype == np.float32 else 64
    el = st.one_of(
        st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=width),
        st.sampled_from(_POOL),
    )
    shapes = shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(shape))
    emax = 20 if dtype == np.float32 else 60

    @st.composite
    def build(draw):
        shp = draw(shapes)
        a = draw(arrays(dtype, shp, elements=el))
        if a.size > 1 and draw(st.booleans()):
            # a plateau: a run of one value (a tied block) somewhere
            flat = a.reshape(-1)
            i, j = sorted(draw(st.lists(st.integers(0, flat.size - 1), min_size=2, max_size=2)))
            flat[i : j + 1] = flat[i] * draw(st.sampled_from([1.0, -1.0]))
        if extreme and draw(st.booleans()):
            a = a * dtype.type(2.0 ** draw(st.integers(-emax, emax)))
        return a

    return build()


def nonincreasing_weights(n: int, hi: float = 3.0):
    """``n`` non-negative, non-increasing weights (float64): plateaus, zeros,
    spikes (one large weight, the rest 0) and constants are common."""
    st = _st()
    w_el = st.one_of(st.floats(0.0, hi, allow_subnormal=False), st.sampled_from([0.0, 1.0, 0.5]))
    generic = st.lists(w_el, min_size=n, max_size=n).map(lambda w: np.array(sorted(w, reverse=True), dtype=np.float64))
    spike = st.floats(0.0, hi, allow_subnormal=False).map(lambda a: np.concatenate([[a], np.zeros(max(n - 1, 0))])[:n])
    const = st.floats(0.0, hi, allow_subnormal=False).map(lambda a: np.full(n, a))
    return st.one_of(generic, spike, const)


def steps():
    """Step sizes: 1, 0.5, 2 and floats in [0.05, 5]."""
    st = _st()
    return st.one_of(st.sampled_from([1.0, 0.5, 2.0]), st.floats(0.05, 5.0, allow_subnormal=False))


def _lams():
    st = _st()
    return st.one_of(st.sampled_from([0.0, 1.0, 0.3]), st.floats(0.0, 3.0, allow_subnormal=False))


def _group_weight_args(G: int):
    st = _st()
    from hypothesis.extra.numpy import arrays

    arr = arrays(np.float64, G, elements=st.one_of(st.floats(0, 2, allow_subnormal=False), st.just(1.0)))
    return st.one_of(st.none(), st.just("sqrt"), arr)


def penalties(name: str, shape: tuple, *, groups=None):
    """A penalty object of operator ``name`` (a key of :data:`proxlib.OPERATORS`)
    for inputs of ``shape``; ``groups``: the ragged labels, if any (row
    operators only)."""
    st = _st()
    from . import penalties as P

    if name not in OPERATORS:
        raise ValueError(f"unknown operator {name!r}; choose from {operator_names()}")
    n = int(np.prod(shape)) if shape else 1
    G = shape[0] if len(shape) > 1 else 1
    if groups is not None:
        G = int(np.max(groups)) + 1 if np.size(groups) else 0
    if name == "owl":
        return nonincreasing_weights(n).map(P.OWL)
    if name == "growl":
        return nonincreasing_weights(shape[0] if len(shape) > 1 else 1).map(P.GrOWL)
    gw = _group_weight_args(G)
    if name == "group_lasso":
        return st.builds(P.GroupLasso, _lams(), st.just(groups), gw)
    if name == "exclusive_lasso":
        return st.builds(P.ExclusiveLasso, _lams(), st.just(groups), gw)
    if name == "group_exclusive":
        mus = st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0.0, 1.0, allow_subnormal=False))
        return st.builds(P.GroupExclusive, _lams(), mus, st.just(groups), gw)
    if name in ("weighted_l1", "weighted_l2sq"):
        from hypothesis.extra.numpy import arrays

        cls = P.WeightedL1 if name == "weighted_l1" else P.WeightedL2Sq
        full = arrays(np.float64, shape, elements=st.one_of(st.floats(0, 3, allow_subnormal=False), st.just(0.0)))
        return st.one_of(_lams(), full).map(cls)
    if name == "lp":
        lam = st.one_of(st.floats(0.01, 3, allow_subnormal=False), st.sampled_from([0.0, 0.5, 1.0]))
        ps = st.one_of(st.sampled_from([0.0, 0.5, 2.0 / 3.0, 1.0]), st.floats(0.0, 1.0, allow_subnormal=False))
        return st.builds(P.Lp, lam, ps)
    raise NotImplementedError(f"no strategy for operator {name!r}")  # pragma: no cover - test_testing checks


def prox_problems(name: str | None = None, dtype=None, *, max_size: int = 12, ragged: bool | None = None):
    """``(penalty, v, step)`` for operator ``name`` (any registered operator when None).

    ``dtype``: ``np.float64``, ``np.float32`` or None for either.  Row
    operators get (G, m) arrays with zero rows and tied row norms, or (when
    ``ragged`` is not False) 1-D arrays with ``groups=`` labels; flat operators
    get 1-D or 2-D arrays.  See :func:`float_arrays` for the data.
    """
    st = _st()
    names = st.sampled_from(operator_names()) if name is None else st.just(name)
    dtypes = st.sampled_from([np.float64, np.float32]) if dtype is None else st.just(np.dtype(dtype).type)

    @st.composite
    def build(draw):
        nm = draw(names)
        dt = draw(dtypes)
        layout = OPERATORS[nm].layout
        groups = None
        if layout == "rows":
            use_ragged = draw(st.booleans()) if ragged is None else ragged
            if use_ragged and nm != "growl":
                n = draw(st.integers(1, max_size))
                pool = draw(st.lists(st.integers(0, 5), min_size=1, max_size=4, unique=True))
                groups = np.array(draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)), dtype=np.int64)
                shape = (n,)
            else:
                G = draw(st.integers(1, max(1, max_size // 3)))
                m = draw(st.integers(1, max(1, min(4, max_size // G))))
                shape = (G, m)
        else:
            shape = draw(st.one_of(st.tuples(st.integers(1, max_size)), st.tuples(st.integers(1, 3), st.integers(1, 4))))
        v = draw(float_arrays(shape, dt))
        if layout == "rows" and groups is None and shape[0] > 1 and draw(st.booleans()):
            i, j = draw(st.integers(0, shape[0] - 1)), draw(st.integers(0, shape[0] - 1))
            v[i] = v.dtype.type(draw(st.sampled_from([0.0, -1.0]))) * v[j]  # a zero row or a tied norm
        pen = draw(penalties(nm, shape, groups=groups))
        return pen, v, draw(steps())

    return build()
