"""The plans that :func:`proxlib._registry.apply` keeps between public calls
(:class:`proxlib._registry.Plan`, :func:`proxlib._registry._plan_key`).

A kept plan must give the bits of the prox laid out and formed at the call
(the reference below, :func:`proxlib._registry.layout_of` and
:func:`proxlib._range.solve` composed as ``apply`` composed them before it
kept plans), whatever steps and penalties came before on the same shape; it
must follow the backend chosen at the call, keep no input, never be kept
for parameters the caller could change, and stay correct when threads share
it."""

from __future__ import annotations

import math
import sys
import threading
import weakref

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import proxlib
from proxlib import _range
from proxlib import _registry as R
from proxlib._dispatch import backend_for

def _rows(shape) -> int:
    return 1 if len(shape) == 1 else shape[0]


PENALTIES = {  # (lam, mu, the data's shape) -> a penalty whose plans are kept
    "weighted_l1": lambda lam, mu, shape: proxlib.WeightedL1(lam),
    "weighted_l1_array": lambda lam, mu, shape: proxlib.WeightedL1(np.linspace(0.0, lam, math.prod(shape)).reshape(shape)),
    "weighted_l2sq": lambda lam, mu, shape: proxlib.WeightedL2Sq(lam),
    "lp": lambda lam, mu, shape: proxlib.Lp(lam, 0.5),
    "group_lasso": lambda lam, mu, shape: proxlib.GroupLasso(lam),
    "group_lasso_sqrt": lambda lam, mu, shape: proxlib.GroupLasso(lam, group_weights="sqrt"),
    "group_lasso_array": lambda lam, mu, shape: proxlib.GroupLasso(lam, group_weights=np.linspace(0.5, 2.0, _rows(shape))),
    "exclusive_lasso": lambda lam, mu, shape: proxlib.ExclusiveLasso(lam),
    "group_exclusive": lambda lam, mu, shape: proxlib.GroupExclusive(lam, mu),
    "growl": lambda lam, mu, shape: proxlib.GrOWL(np.linspace(lam, 0.0, _rows(shape))),
}


def unplanned(pen, x, step):
    """The prox laid out and its thresholds formed at this call (no plan)."""
    layout = R.layout_of(pen, x)
    kernel = getattr(backend_for(x), pen.kernel)
    kw = {"check_finite": False} if pen.fused_finite_check else {}
    return layout.restore(_range.solve(pen, layout, step, kernel, lambda k, d, t: k(d, *t, *pen.fixed(), **kw)))


steps = st.sampled_from([0.5, 1.0, 3.0, 1e-300, 2.0**-1060, 1e300, 7.0])


@given(
    name=st.sampled_from(sorted(PENALTIES)),
    shape=st.sampled_from([(1,), (7,), (1, 5), (4, 3), (3, 2, 2), (0, 3)]),
    dtype=st.sampled_from(["float32", "float64"]),
    lams=st.lists(st.sampled_from([0.0, 0.3, 2.5, 1e-200, 1e200]), min_size=1, max_size=3),
    step_list=st.lists(steps, min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
    lib=st.sampled_from(["numpy", "torch"]),
)
def test_kept_plans_give_the_bits_of_the_prox_formed_at_the_call(name, shape, dtype, lams, step_list, seed, lib):
    # several penalties and steps on one shape, in turn: each call after the
    # first takes the plan kept for its penalty, at the last step or a new one
    x = (np.random.default_rng(seed).standard_normal(shape) * 3).astype(dtype)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        x = torch.from_numpy(x)
    for lam in lams:
        pen = PENALTIES[name](lam, 0.5, shape)
        assert R._plan_key(pen, x) is not None
        for step in step_list + step_list[:1]:
            got = pen.prox(x, step)
            assert type(got) is type(x) and got.dtype == x.dtype and tuple(got.shape) == tuple(x.shape)
            np.testing.assert_array_equal(np.asarray(got), np.asarray(unplanned(pen, x, step)))


def test_a_kept_plan_takes_the_rows_of_each_call():
    # the same shape, other data: not the layout the plan was made from
    pen = proxlib.ExclusiveLasso(0.7)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((5, 4))
        np.testing.assert_array_equal(pen.prox(x, 0.5), unplanned(pen, x, 0.5))
    x = np.asfortranarray(rng.standard_normal((5, 4)))  # (laid out C-contiguous)
    np.testing.assert_array_equal(pen.prox(x, 0.5), unplanned(pen, np.ascontiguousarray(x), 0.5))


def test_the_plans_key_tells_zero_from_minus_zero_and_ints_from_floats():
    x = np.ones((2, 3))
    keys = {R._plan_key(proxlib.GroupExclusive(0.5, mu), x) for mu in (0.0, -0.0)}
    assert len(keys) == 2
    assert R._plan_key(proxlib.GroupLasso(0.5), x) != R._plan_key(proxlib.GroupLasso(0.5), x.astype(np.float32))
    assert R._plan_key(proxlib.GroupLasso(0.5), x) != R._plan_key(proxlib.GroupLasso(0.5), np.ones((3, 2)))
    assert R._plan_key(proxlib.GroupLasso(0.5), x) != R._plan_key(proxlib.ExclusiveLasso(0.5), x)


def test_kept_plans_take_array_parameters_by_value():
    # an array parameter may change in the caller's hands between calls: it
    # is part of the key by value, and a kept plan holds copies of its own
    x = np.arange(6.0).reshape(2, 3)
    c = np.array([1.0, 2.0])
    assert R._plan_key(proxlib.GroupLasso(0.5, group_weights=c), x) is not None
    first = proxlib.prox_group_lasso(x, 3.0, group_weights=c)
    c[1] = 0.0  # the next call sees the change
    np.testing.assert_array_equal(proxlib.prox_group_lasso(x, 3.0, group_weights=c)[1], x[1])
    # another array holding c's first values takes the first plan, which did
    # not keep c itself: at the first step (its thresholds kept) and at
    # another (formed again from its terms)
    np.testing.assert_array_equal(proxlib.prox_group_lasso(x, 3.0, group_weights=np.array([1.0, 2.0])), first)
    fresh = proxlib.GroupLasso(3.0, group_weights=np.array([1.0, 2.0]))
    np.testing.assert_array_equal(proxlib.prox_group_lasso(x, 3.0, 0.4, group_weights=np.array([1.0, 2.0])),
                                  unplanned(fresh, x, 0.4))
    # at step 1, GrOWL's thresholds are its weights themselves
    w = np.array([3.0, 1.0])
    growl = proxlib.prox_growl(x, w, 1.0)
    w[0] = 1.0
    np.testing.assert_array_equal(proxlib.prox_growl(x, np.array([3.0, 1.0]), 1.0), growl)


def test_no_plan_is_kept_for_groups_labels_or_large_arrays(monkeypatch):
    x = np.arange(6.0)
    assert R._plan_key(proxlib.GroupLasso(0.5, groups=[0, 0, 1, 1, 2, 2]), x) is None
    assert R._plan_key(proxlib.GroupLasso(0.5, groups=np.zeros(6, dtype=np.int64)), x) is None
    monkeypatch.setattr(R, "PLAN_ROWS_KEPT", 4)
    assert R._plan_key(proxlib.WeightedL1(np.full(6, 0.5)), x) is None
    assert R._plan_key(proxlib.WeightedL1(np.full(4, 0.5)), x[:4]) is not None


def test_plans_are_kept_for_numpy_and_cpu_tensors_of_few_rows(monkeypatch):
    torch = pytest.importorskip("torch")
    pen = proxlib.ExclusiveLasso(0.5)
    on_cpu = R._plan_key(pen, torch.ones(2, 3, dtype=torch.float64))
    assert on_cpu is not None and on_cpu != R._plan_key(pen, np.ones((2, 3)))
    assert R._plan_key(pen, torch.ones(2, 3, dtype=torch.float64, device="meta")) is None  # (not on the CPU)
    monkeypatch.setattr(R, "PLAN_ROWS_KEPT", 4)
    assert R._plan_key(pen, np.ones((5, 2))) is None
    assert R._plan_key(pen, np.ones((4, 2))) is not None
    assert R._plan_key(proxlib.WeightedL1(0.5), np.ones((5, 2))) is not None  # (flat: its thresholds are one number)


def test_kept_plans_follow_the_backend_of_the_call(monkeypatch):
    # a plan kept for the default backend is not used inside use_backend:
    # the backend is part of the key, and the kernel is looked up at the call
    from proxlib.backends import numpy_ref

    x = np.random.default_rng(1).standard_normal((3, 4))
    pen = proxlib.GroupLasso(0.4)
    default = pen.prox(x, 0.5)
    pen.prox(x, 0.5)  # (kept)
    calls = []
    real = numpy_ref.group_lasso

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(numpy_ref, "group_lasso", counted)
    with proxlib.use_backend("numpy"):
        np.testing.assert_allclose(pen.prox(x, 0.5), default, rtol=1e-14)
        pen.prox(x, 0.5)
    assert len(calls) == 2
    pen.prox(x, 0.5)
    assert len(calls) == 2


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_a_kept_plan_keeps_no_input(lib):
    pen = proxlib.ExclusiveLasso(0.25, group_weights="sqrt")  # (group weights: the general path, not the one-call lane)
    base = np.random.default_rng(2).standard_normal((6, 5))
    if lib == "torch":
        torch = pytest.importorskip("torch")
        base = torch.from_numpy(base)
    ref = weakref.ref(base)
    R._plans.clear()
    pen.prox(base, 0.5)  # makes and keeps the plan, from this very array
    assert len(R._plans) == 1
    del base
    assert ref() is None


def test_kept_plans_are_bounded(monkeypatch):
    monkeypatch.setattr(R, "PLANS_KEPT", 3)
    R._plans.clear()
    x = np.ones((2, 3))
    for k in range(6):
        proxlib.prox_exclusive_lasso(x, 0.1 * (k + 1), group_weights="sqrt")  # (the general path: plans)
    assert len(R._plans) == 3


def test_threads_sharing_a_kept_plan_get_their_own_steps():
    # one plan, kept for the shape and penalty, called by threads on data and
    # at steps of their own: a call keeps nothing of its own in the plan but
    # the last step and its thresholds, replaced as one pair
    pen = proxlib.GroupExclusive(0.3, 0.5)
    rng = np.random.default_rng(3)
    step_of = [0.1, 0.7, 2.0, 5.0]
    x_of = [rng.standard_normal((8, 16)) for _ in step_of]
    expected = [unplanned(pen, x, s) for x, s in zip(x_of, step_of)]
    pen.prox(x_of[0], 1.0)
    errors = []
    barrier = threading.Barrier(len(step_of))

    def work(i):
        barrier.wait()
        for _ in range(200):
            if not np.array_equal(pen.prox(x_of[i], step_of[i]), expected[i]):
                errors.append(i)
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(step_of))]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # (threads switch between any two bytecodes)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


@pytest.mark.parametrize("groups", [None, [0, 1, 1, 2, 2, 2]], ids=["dense", "ragged"])
def test_a_plan_called_first_on_other_data_lays_that_data_out(groups):
    # a plan takes the layout it was made from only for that very array (the
    # solvers make one from the starting point and call it on other iterates)
    pen = proxlib.ExclusiveLasso(0.6, groups=groups)
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal(6), rng.standard_normal(6)
    plan = R.Plan(pen, a)
    np.testing.assert_array_equal(plan(b, 0.5), pen.prox(b, 0.5))
    np.testing.assert_array_equal(plan(a, 0.5), pen.prox(a, 0.5))


def test_a_plan_of_uneven_groups_lays_each_part_out_once(monkeypatch):
    # groups of very different sizes are solved by size class: a plan made
    # for one call lays each part out when it is made, and its call takes
    # those layouts (no second sort of the labels, no gather)
    from proxlib import _rows

    n = 4000
    groups = np.r_[np.zeros(n // 2, dtype=np.int64), np.arange(1, n // 2 + 1)]
    v = np.random.default_rng(5).standard_normal(n)
    pen = proxlib.GroupLasso(0.3, groups=groups)
    assert R.ragged_parts(v, groups) is not None
    expected = pen.prox(v, 0.7)
    made = []
    real = _rows.canonical_rows
    monkeypatch.setattr(R, "canonical_rows", lambda *a, **k: made.append(1) or real(*a, **k))
    plan = R.Plan(pen, v)
    laid_out = len(made)
    np.testing.assert_array_equal(plan(v, 0.7), expected)
    assert len(made) == laid_out
    np.testing.assert_array_equal(plan(v.copy(), 0.7), expected)  # (other data: the parts' gathers)
    assert len(made) > laid_out


def test_a_penalty_that_is_not_a_dataclass_is_planned_per_call():
    # apply takes any Penalty with a kernel, a layout and its thresholds; the
    # plans' key reads dataclass fields, which such a class has not
    class Scaled(R.Penalty):
        kernel = "group_lasso"
        layout = "rows"
        arg = "W"
        fused_finite_check = True

        def __init__(self, lam):
            self.lam = lam

        def threshold_terms(self, layout):
            return (_range.weighted((self.lam,), layout, 1),)

    x = np.arange(6.0).reshape(2, 3)
    assert R._plan_key(Scaled(0.5), x) is None
    for lam in (0.5, 2.0):
        np.testing.assert_array_equal(R.apply(Scaled(lam), x, 0.7), proxlib.prox_group_lasso(x, lam, 0.7))
