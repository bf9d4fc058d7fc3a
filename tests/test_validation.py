"""Bad input raises ValueError or TypeError with a message naming the argument.

Every public operator is called once with valid arguments (a baseline that must
succeed) and then with one argument replaced by a bad value.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import proxlib

pytestmark = pytest.mark.usefixtures("numpy_backend")

V3 = np.array([3.0, -1.0, 2.0])
W23 = np.array([[3.0, -1.0, 2.0], [0.5, 0.0, -4.0]])
W3 = np.array([0.9, 0.5, 0.1])  # OWL weights for V3

# name -> (function, valid keyword arguments); each takes its array first
OPERATORS = {
    "prox_owl": (proxlib.prox_owl, dict(v=V3, weights=W3, step=1.0)),
    "prox_growl": (proxlib.prox_growl, dict(W=W23, weights=np.array([1.0, 0.5]), step=1.0)),
    "prox_group_lasso": (proxlib.prox_group_lasso, dict(W=W23, lam=0.5, step=1.0)),
    "prox_exclusive_lasso": (proxlib.prox_exclusive_lasso, dict(W=W23, lam=0.5, step=1.0)),
    "prox_group_exclusive": (proxlib.prox_group_exclusive, dict(W=W23, lam=0.5, mu=0.5, step=1.0)),
    "prox_weighted_l1": (proxlib.prox_weighted_l1, dict(v=V3, weights=W3, step=1.0)),
    "prox_weighted_l2sq": (proxlib.prox_weighted_l2sq, dict(v=V3, weights=W3, step=1.0)),
    "prox_lp": (proxlib.prox_lp, dict(v=V3, lam=0.5, p=0.5, step=1.0)),
    "prox_exclusive_lasso_thesis": (proxlib.prox_exclusive_lasso_thesis, dict(W=W23, lam=0.5, step=1.0)),
    "prox_group_exclusive_sequential": (proxlib.prox_group_exclusive_sequential, dict(W=W23, lam=0.5, mu=0.5, step=1.0)),
}
GROUP_OPS = [
    "prox_group_lasso",
    "prox_exclusive_lasso",
    "prox_group_exclusive",
    "prox_exclusive_lasso_thesis",
    "prox_group_exclusive_sequential",
]


def call(name, **override):
    fn, kw = OPERATORS[name]
    return fn(**{**kw, **override})


def array_arg(name):
    return "v" if "v" in OPERATORS[name][1] else "W"


@pytest.mark.parametrize("name", OPERATORS)
def test_baseline_call_succeeds(name):
    x = call(name)
    arr = OPERATORS[name][1][array_arg(name)]
    assert x.shape == arr.shape and x.dtype == np.float64


# --------------------------------------------------------------------------- the input array


BAD_ARRAYS = [
    ("nan", lambda a: np.where(a == a.flat[0], np.nan, a), ValueError),
    ("inf", lambda a: np.where(a == a.flat[0], np.inf, a), ValueError),
    ("-inf", lambda a: np.where(a == a.flat[0], -np.inf, a), ValueError),
    ("complex", lambda a: a.astype(np.complex128), TypeError),
    ("bool", lambda a: a > 0, TypeError),
    ("object", lambda a: a.astype(object), TypeError),
    ("string", lambda a: a.astype(str), TypeError),
    ("longdouble", lambda a: a.astype(np.longdouble), TypeError),
]


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("case,make,exc", BAD_ARRAYS, ids=[c[0] for c in BAD_ARRAYS])
def test_bad_input_array(name, case, make, exc):
    arg = array_arg(name)
    good = OPERATORS[name][1][arg]
    bad = make(good)
    with pytest.raises(exc, match=rf"\b{arg}\b"):
        call(name, **{arg: bad})
    if case.endswith("inf") or case == "nan":
        # with the check switched off the call is allowed (the caller's promise;
        # what non-finite data then produces is unspecified, warnings included)
        with np.errstate(all="ignore"):
            call(name, **{arg: bad, "check_finite": False})


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("metric", [None, "ones"])
def test_check_finite_must_be_a_bool(name, metric):
    # check_finite="no" was truthy, so it checked; None was falsy, so it did
    # not: neither is a bool, each is a TypeError naming check_finite
    arg = array_arg(name)
    kw = {}
    if metric is not None:
        if "thesis" in name or "sequential" in name:
            return  # (no metric argument)
        kw["metric"] = np.ones_like(OPERATORS[name][1][arg])
    for bad in ("no", None, 0, 1.0, np.array(True)):
        with pytest.raises(TypeError, match="check_finite"):
            call(name, check_finite=bad, **kw)
    for ok in (True, False, np.True_, np.False_):
        call(name, check_finite=ok, **kw)


@pytest.mark.parametrize("name", OPERATORS)
def test_object_list_and_bool_scalar_input(name):
    arg = array_arg(name)
    with pytest.raises(TypeError, match=rf"\b{arg}\b"):
        call(name, **{arg: [1.0, None, 2.0]})
    with pytest.raises(TypeError, match=rf"\b{arg}\b"):
        call(name, **{arg: True})


@pytest.mark.parametrize("name", OPERATORS)
def test_float16_input_is_computed_in_float32_and_returned_in_float16(name):
    arg = array_arg(name)
    good = OPERATORS[name][1][arg]
    half = good.astype(np.float16)
    x = call(name, **{arg: half})
    assert x.dtype == np.float16 and x.shape == good.shape
    np.testing.assert_array_equal(x, call(name, **{arg: half.astype(np.float32)}).astype(np.float16))


@pytest.mark.parametrize("name", OPERATORS)
def test_integer_input_is_promoted_to_float64(name):
    arg = array_arg(name)
    good = OPERATORS[name][1][arg]
    x = call(name, **{arg: np.round(good).astype(np.int64)})
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x, call(name, **{arg: np.round(good)}))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", OPERATORS)
def test_non_native_byte_order_is_read_as_native(name, dtype):
    # arrays read from a big-endian file: the same result, in native order
    # (the compiled kernels take native floats only: a TypingError before)
    fn, kw = OPERATORS[name]
    native = {k: (v.astype(dtype) if k == array_arg(name) else v) for k, v in kw.items()}
    swapped = {k: (v.astype(v.dtype.newbyteorder("S")) if isinstance(v, np.ndarray) else v) for k, v in native.items()}
    assert not swapped[array_arg(name)].dtype.isnative
    x = fn(**swapped)
    assert x.dtype == dtype and x.dtype.isnative
    np.testing.assert_array_equal(x, fn(**native))
    if "metric" in fn.__code__.co_varnames and name != "prox_owl" and name != "prox_growl":
        d = np.linspace(0.5, 2.0, native[array_arg(name)].size).reshape(native[array_arg(name)].shape)
        np.testing.assert_array_equal(fn(**swapped, metric=d.astype(d.dtype.newbyteorder("S"))), fn(**native, metric=d))


# --------------------------------------------------------------------------- scalars


BAD_SCALARS = [
    (-1.0, ValueError),
    (np.nan, ValueError),
    (np.inf, ValueError),
    (-np.inf, ValueError),
    (True, TypeError),
    (np.bool_(False), TypeError),
    (1 + 0j, TypeError),
    ("1", TypeError),
    (None, TypeError),
    (np.array([1.0, 2.0]), ValueError),
    (np.array(1.0 + 0j), TypeError),
    (10**400, ValueError),  # a Python int beyond float64 (was an OverflowError that named nothing)
    (-(10**400), ValueError),
]
SCALAR_ARGS = [(name, s) for name in OPERATORS for s in ("step", "lam", "mu", "p") if s in OPERATORS[name][1]]


@pytest.mark.parametrize("name,scalar", SCALAR_ARGS)
@pytest.mark.parametrize("bad,exc", BAD_SCALARS, ids=repr)
def test_bad_scalar(name, scalar, bad, exc):
    with pytest.raises(exc, match=rf"\b{scalar}\b"):
        call(name, **{scalar: bad})


@pytest.mark.parametrize("name", OPERATORS)
@given(st.floats(max_value=0.0) | st.just(-0.0))
def test_step_must_be_positive(name, step):
    with pytest.raises(ValueError, match=r"\bstep\b"):
        call(name, step=step)


@pytest.mark.parametrize("name,scalar", [(n, s) for n, s in SCALAR_ARGS if s in ("mu", "p")])
@given(st.floats(allow_nan=False).filter(lambda t: not 0.0 <= t <= 1.0))
def test_unit_interval_parameters(name, scalar, bad):
    with pytest.raises(ValueError, match=rf"\b{scalar}\b"):
        call(name, **{scalar: bad})


@pytest.mark.parametrize("name,scalar", SCALAR_ARGS)
def test_valid_scalar_types_accepted(name, scalar):
    good = OPERATORS[name][1][scalar]
    ref = call(name)
    for alt in (np.float64(good), np.float32(good), np.array(good), np.array([good])):
        np.testing.assert_array_equal(call(name, **{scalar: alt}), ref)  # 1.0 and 0.5 are exact in float32
    if scalar != "p":
        assert call(name, **{scalar: 1}).dtype == np.float64  # Python int


# --------------------------------------------------------------------------- weights


OWL_LIKE = ["prox_owl", "prox_growl"]


@pytest.mark.parametrize("name", OWL_LIKE)
def test_owl_weights(name):
    w = OPERATORS[name][1]["weights"]
    n = w.size
    bad = {
        "negative": (np.concatenate([w[:-1], [-0.1]]), ValueError),
        "increasing": (w[::-1].copy() + np.arange(n) * 0.01, ValueError),
        "one increase": (np.concatenate([[w[0]], [w[0] + 1e-12], w[2:]]) if n > 2 else np.array([w[0], w[0] + 1e-9]), ValueError),
        "too short": (w[:-1], ValueError),
        "too long": (np.append(w, 0.0), ValueError),
        "2-D": (w[None, :], ValueError),
        "scalar": (w[0], ValueError),
        "nan": (np.where(np.arange(n) == n - 1, np.nan, w), ValueError),
        "inf": (np.where(np.arange(n) == 0, np.inf, w), ValueError),
        "complex": (w.astype(complex), TypeError),
        "bool": (w > 0, TypeError),
        "bool scalar": (True, TypeError),
        "object": (w.astype(object), TypeError),
        "None": (None, TypeError),
    }
    for case, (bw, exc) in bad.items():
        with pytest.raises(exc, match=r"\bweights\b"):
            call(name, weights=bw)
            pytest.fail(f"accepted {case} weights")
    # the messages give the offending position of an increase
    with pytest.raises(ValueError, match=r"non-increasing"):
        call(name, weights=np.sort(w))


@pytest.mark.parametrize("name", ["prox_weighted_l1", "prox_weighted_l2sq"])
def test_elementwise_weights(name):
    bad = {
        "negative": (np.array([1.0, -1.0, 0.0]), ValueError),
        "negative scalar": (-0.5, ValueError),
        "does not broadcast": (np.ones(2), ValueError),
        "too many dims": (np.ones((2, 3)), ValueError),
        "nan": (np.array([1.0, np.nan, 0.0]), ValueError),
        "inf scalar": (np.inf, ValueError),
        "complex": (np.ones(3, dtype=complex), TypeError),
        "bool": (np.ones(3, dtype=bool), TypeError),
        "bool scalar": (True, TypeError),
        "None": (None, TypeError),
        "string": ("1.0", TypeError),
    }
    for case, (bw, exc) in bad.items():
        with pytest.raises(exc, match=r"\bweights\b"):
            call(name, weights=bw)
            pytest.fail(f"accepted {case} weights")


# --------------------------------------------------------------------------- groups


@pytest.mark.parametrize("name", GROUP_OPS)
def test_groups_labels(name):
    bad = {
        "float labels": ([0.0, 1.0, 1.0], TypeError),
        "bool labels": ([True, False, True], TypeError),
        "wrong length": ([0, 1], ValueError),
        "negative": ([0, -1, 1], ValueError),
        "2-D labels": (np.array([[0, 1, 1]]), ValueError),
    }
    for case, (g, exc) in bad.items():
        with pytest.raises(exc, match=r"\bgroups\b"):
            call(name, W=V3, groups=g)
            pytest.fail(f"accepted {case}")
    with pytest.raises(ValueError, match=r"\bgroups\b"):  # labels need a 1-D W
        call(name, groups=np.zeros(W23.shape, dtype=int))
    # uint64 labels beyond int64 (they wrapped: "labels must be >= 0, got -9223372036854775808")
    with pytest.raises(ValueError, match=r"^groups labels must be < 2\*\*63"):
        call(name, W=V3, groups=np.array([0, 2**63, 1], dtype=np.uint64))
    call(name, W=V3, groups=np.array([0, 2**63 - 1, 1], dtype=np.uint64))


@pytest.mark.parametrize("name", GROUP_OPS)
def test_group_weights(name):
    bad_dense = {
        "wrong length": (np.ones(3), ValueError),
        "negative": (np.array([1.0, -1.0]), ValueError),
        "nan": (np.array([1.0, np.nan]), ValueError),
        "2-D": (np.ones((2, 1)), ValueError),
        "unknown string": ("size", ValueError),
        "complex": (np.ones(2, dtype=complex), TypeError),
        "bool": (np.ones(2, dtype=bool), TypeError),
    }
    for case, (gw, exc) in bad_dense.items():
        with pytest.raises(exc, match=r"\bgroup_weights\b"):
            call(name, group_weights=gw)
            pytest.fail(f"accepted {case}")
    # ragged: indexed by label, so it must reach the largest label
    with pytest.raises(ValueError, match=r"\bgroup_weights\b"):
        call(name, W=V3, groups=[0, 5, 5], group_weights=np.ones(5))
    call(name, W=V3, groups=[0, 5, 5], group_weights=np.ones(6))


def test_group_ops_reject_0d():
    for name in GROUP_OPS + ["prox_growl"]:
        with pytest.raises(ValueError, match=r"\bW\b"):
            call(name, W=np.array(1.0), **({"weights": np.ones(1)} if name == "prox_growl" else {}))


def test_sequential_exclusive_step_name():
    with pytest.raises(ValueError, match="exclusive_step"):
        call("prox_group_exclusive_sequential", exclusive_step="approximate")


def test_lp_threshold_validation():
    with pytest.raises(ValueError, match=r"\blam\b"):
        proxlib.lp_threshold(-1.0, 0.5)
    with pytest.raises(ValueError, match=r"\bp\b"):
        proxlib.lp_threshold(1.0, 1.5)
    with pytest.raises(TypeError, match=r"\bp\b"):
        proxlib.lp_threshold(1.0, True)


def test_reweighting_validation():
    theta = np.array([1.0, -2.0])
    for fn in (proxlib.reweight_l1, proxlib.reweight_l2):
        for tau in (0.0, -1.0, np.nan):
            with pytest.raises(ValueError, match=r"\btau\b"):
                fn(theta, tau)
        with pytest.raises(ValueError, match=r"\btheta\b"):
            fn(np.array([np.nan, 1.0]), 0.1)
        with pytest.raises(TypeError, match=r"\btheta\b"):
            fn(np.array([1 + 1j]), 0.1)
    for p in (-0.1, 2.1, np.nan):
        with pytest.raises(ValueError, match=r"\bp\b"):
            proxlib.reweight_focuss(theta, p, 0.1)


def test_inputs_not_modified_when_rejected():
    # a failed call must not have touched the caller's arrays either
    v = V3.copy()
    w = np.array([0.1, 0.5, 0.9])  # increasing: rejected
    with pytest.raises(ValueError):
        proxlib.prox_owl(v, w)
    np.testing.assert_array_equal(v, V3)
    np.testing.assert_array_equal(w, [0.1, 0.5, 0.9])


# --------------------------------------------------------------------------- the contract on good input


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "F", "strided", "reversed"])
def test_every_operator_keeps_type_shape_dtype_and_inputs(name, dtype, layout):
    # Every public operator, every memory layout: a new array of the input's type,
    # shape and dtype (float32 stays float32 with float64 weights), the same
    # values as for a C-contiguous copy, and no argument modified.
    arg = array_arg(name)
    fn, kw = OPERATORS[name]
    rng = np.random.default_rng(7)
    base = rng.normal(size=(4, 3, 2)).astype(dtype)
    if name == "prox_owl":  # one non-increasing weight per entry
        extra = {"weights": np.linspace(1.0, 0.0, base.size)}
    elif name == "prox_growl":  # one per row
        extra = {"weights": np.linspace(1.0, 0.0, base.shape[0])}
    elif "weights" in kw:  # elementwise: weights of v's shape
        extra = {"weights": np.linspace(1.0, 0.0, base.size).reshape(base.shape)}
    else:
        extra = {}
    A = {
        "C": base,
        "F": np.asfortranarray(base),
        "strided": np.repeat(base, 2, axis=1)[:, ::2],
        "reversed": np.flip(np.flip(base, 2).copy(), 2),
    }[layout]
    np.testing.assert_array_equal(A, base)
    snapshot = {k: np.array(v, copy=True) for k, v in extra.items()}
    A0 = A.copy()
    x = fn(**{**kw, **extra, arg: A})
    assert type(x) is np.ndarray and x.shape == A.shape and x.dtype == dtype
    assert not np.shares_memory(x, A)
    np.testing.assert_array_equal(A, A0)
    for k, v in extra.items():
        np.testing.assert_array_equal(v, snapshot[k])
    np.testing.assert_array_equal(x, fn(**{**kw, **extra, arg: np.ascontiguousarray(base)}))


# ---------------------------------------------------- the smaller defects of issue 11


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix itself
def test_numpy_matrix_and_masked_arrays_are_refused_not_mangled():
    M = np.matrix([[3.0, -0.5], [1.0, 2.0]])
    masked = np.ma.masked_array([3.0, -0.5, 1.0], mask=[False, True, False])
    for call in (
        lambda x: proxlib.prox_weighted_l1(x, 1.0),
        lambda x: proxlib.prox_lp(x, 1.0, 0.5),
        lambda x: proxlib.prox_group_lasso(x, 1.0),
        lambda x: proxlib.prox_owl(x, np.ones(x.size)),
    ):
        with pytest.raises(TypeError, match=r"numpy\.matrix"):
            call(M)
        with pytest.raises(TypeError, match="masked array"):
            call(masked)
    with pytest.raises(TypeError, match=r"weights is a masked array"):
        proxlib.prox_weighted_l1(np.ones(3), masked)
    with pytest.raises(TypeError, match=r"theta is a masked array"):
        proxlib.reweight_l1(masked, 0.1)
    # the backends too (a Numba TypingError before): every backend refuses alike
    for name in proxlib.available_backends():
        if name in ("numpy", "numba"):
            with proxlib.use_backend(name), pytest.raises(TypeError, match=r"numpy\.matrix"):
                proxlib.prox_weighted_l2sq(M, 1.0)


def test_mu_schedule_takes_numpy_integers():
    assert proxlib.mu_schedule(np.int64(3)) == [0.0, 0.5, 1.0]
    assert proxlib.mu_schedule(np.int32(1), np.float64(0.25)) == [0.25]
    with pytest.raises(ValueError, match="n_layers"):
        proxlib.mu_schedule(np.int64(0))
    with pytest.raises(ValueError, match="n_layers"):
        proxlib.mu_schedule(3.0)


def test_rows_helpers_name_the_bad_argument():
    with pytest.raises(TypeError, match=r"\bW\b"):
        proxlib.to_rows([[1.0, 2.0], [3.0, 4.0]], "filter")  # a list: AttributeError before
    R = np.ones((3, 4))
    with pytest.raises(TypeError, match=r"\bshape\b"):
        proxlib.from_rows(R, 12, "filter")  # an int for the shape: "not iterable" before
    with pytest.raises(TypeError, match=r"\bshape\b"):
        proxlib.from_rows(R, (3, 4.0), "filter")
    with pytest.raises(TypeError, match=r"\bR\b"):
        proxlib.from_rows(R.tolist(), (3, 4), "filter")
    np.testing.assert_array_equal(proxlib.from_rows(R, (3, 4), "filter"), R)


def test_increasing_weights_message_names_the_first_rise():
    # the message quotes the entries that rise, by their indices
    with pytest.raises(ValueError, match=r"weights\[2\] = 4\.0 > weights\[1\] = 1\.0"):
        proxlib.prox_owl(np.zeros(4), np.array([3.0, 1.0, 4.0, 0.0]))
