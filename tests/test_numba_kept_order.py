"""GrOWL's in-place runners keep the order of the row norms from call to call.

A training step's GrOWL sorts the same parameter's row norms at every step,
and they move little between steps: the in-place runners
(``numba_cpu.serial_in_place("growl" | "growl_channels", W)``) keep the
sorted permutation and sort it again from there (``_sort_seeded``: insertion,
O(n + moves), given up for the argsort beyond a budget or at a NaN).  The
result must not depend on it: equal magnitudes get equal values whatever
their order, so every call equals the public function on the same data bit
for bit, however far the data moved since the previous call.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import proxlib

pytestmark = pytest.mark.skipif("numba" not in proxlib.available_backends(), reason="numba does not import here")

if "numba" in proxlib.available_backends():
    from proxlib.backends import numba_cpu as NB


@st.composite
def _seeded_sorts(draw):
    n = draw(st.integers(1, 80))
    values = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5, 1e-300, 1e300]) | st.floats(0, 10), min_size=n, max_size=n))
    a = np.array(values)
    if draw(st.booleans()):
        a[draw(st.integers(0, n - 1))] = np.nan
    start = draw(st.sampled_from(["sorted", "few swaps", "reversed", "random"]))
    order = np.argsort(a, kind="stable") if start != "random" else np.array(draw(st.permutations(range(n))), dtype=np.int64)
    order = np.ascontiguousarray(order, dtype=np.int64)
    if start == "few swaps":
        for _ in range(draw(st.integers(0, 3))):
            i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
            order[i], order[j] = order[j], order[i]
    elif start == "reversed":
        order = order[::-1].copy()
    return a, order


@given(
    st.sampled_from([np.float64, np.float32]),
    st.integers(1, 2048),
    st.sampled_from(["normal", "few values", "ulps apart", "whole range"]),
    st.integers(0, 3),
    st.integers(0, 2**32 - 1),
)
def test_argsort_magnitudes_sorts_with_a_permutation(dtype, n, kind, nans, seed):
    """_argsort_magnitudes (_owl_small's sort: packed keys; float64 keys
    drop low bits, and runs of equal keys are then sorted by the magnitudes)
    gives a permutation that sorts the magnitudes, NaN last: magnitudes
    that agree in all but their last bits (runs of equal keys), ties, zeros,
    subnormals and the whole range."""
    rng = np.random.default_rng(seed)
    if kind == "normal":
        a = np.abs(rng.standard_normal(n))
    elif kind == "few values":
        a = rng.integers(0, 4, n).astype(np.float64)
    elif kind == "ulps apart":
        a = 1.5 + rng.integers(0, 64, n) * float(np.finfo(dtype).eps)
    else:
        a = np.abs(rng.standard_normal(n)) * 2.0 ** rng.integers(-1074 if dtype == np.float64 else -149, 1000 if dtype == np.float64 else 127, n)
    a = a.astype(dtype)
    a[rng.integers(0, n, min(nans, n))] = np.nan
    perm = NB._argsort_magnitudes(a)
    assert sorted(perm.tolist()) == list(range(n))
    s = a[perm]
    k = int(np.sum(~np.isnan(a)))
    assert not np.isnan(s[:k]).any() and np.isnan(s[k:]).all()
    assert np.all(np.diff(s[:k]) >= 0)


@given(_seeded_sorts())
def test_sort_seeded_sorts_or_gives_up_with_a_permutation(problem):
    a, order = problem
    n = a.shape[0]
    start = order.copy()
    moves = sum(int(np.sum(a[start[:i]] > a[start[i]])) for i in range(n))  # the inversions insertion undoes
    done = NB._sort_seeded(a, order)
    assert sorted(order.tolist()) == list(range(n))  # a permutation, whatever happened
    if np.isnan(a).any():
        assert not done
    elif moves <= NB._ORDER_MOVES * n:
        assert done
    if done:
        assert np.all(np.diff(a[order]) >= 0)


def test_sort_seeded_gives_up_beyond_its_budget():
    a = np.arange(100.0)
    assert NB._sort_seeded(a, np.arange(100, dtype=np.int64)[::-1].copy()) is False  # 4950 moves > 400
    order = np.arange(100, dtype=np.int64)
    order[[3, 60]] = order[[60, 3]]
    assert NB._sort_seeded(a, order) is True and np.array_equal(order, np.arange(100))


def _data(draw, shape, dtype):
    kind = draw(st.sampled_from(["gaussian", "ties", "zero rows"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "ties":  # few distinct entries: many tied norms, of either sign
        W = rng.integers(-2, 3, shape) / 2.0
    else:
        W = rng.standard_normal(shape)
        if kind == "zero rows":
            W[rng.random(shape[0]) < 0.3] = 0.0
    return W.astype(dtype), rng


@st.composite
def _runs(draw):
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    layout = draw(st.sampled_from(["rows", "columns", "channels"]))
    G = draw(st.integers(1, 60))
    m = draw(st.integers(1, 5))
    shape = (m, G, draw(st.integers(1, 3))) if layout == "channels" else (G, m)
    W, rng = _data(draw, shape, dtype)
    if layout == "columns":
        W = np.asfortranarray(W)  # the rows are the columns of a C-contiguous matrix
    w = np.sort(rng.uniform(0.0, 2.0, G))[::-1].astype(dtype)
    moves = draw(st.lists(st.sampled_from([0.0, 1e-6, 1e-3, 1.0, "permute", "nan"]), min_size=1, max_size=5))
    return layout, W, w, moves, rng


@given(_runs())
def test_growl_runners_with_kept_order_equal_the_public_function(run):
    layout, W, w, moves, rng = run
    name = "growl_channels" if layout == "channels" else "growl"
    public = NB.growl_channels if layout == "channels" else (lambda X, w: NB.growl(X, w, parallel=False))
    runner = NB.serial_in_place(name, W)
    for move in ["first"] + moves:
        if move == "permute":  # the norms reordered at random: beyond the insertion's budget
            axis = 1 if layout == "channels" else 0
            W[...] = np.take(W, rng.permutation(W.shape[axis]), axis=axis)
        elif move == "nan":  # (check_finite=False: NaN passes through, as in the public function)
            W[(0,) * W.ndim] = np.nan
        elif move != "first":
            W += (rng.standard_normal(W.shape) * move).astype(W.dtype)
        want = public(W.copy(order="K"), w)
        runner((w,), False)
        np.testing.assert_array_equal(W, want)
        np.testing.assert_array_equal(np.signbit(W), np.signbit(want))
        if move == "nan":
            W[np.isnan(W)] = 0.0


_PARALLEL_KERNELS = ["_group_lasso_par", "_row_norms_par", "_rescale_rows_par", "_exclusive_par", "_group_exclusive_par",
                     "_weighted_l1_par", "_weighted_l2sq_par"]


@pytest.mark.parametrize("name", ["group_lasso", "growl", "exclusive_lasso", "group_exclusive", "weighted_l1", "weighted_l2sq"])
def test_serial_in_place_runners_never_start_numba_threads(name, monkeypatch):
    """A training step's runners (serial_in_place) are serial whatever the
    size: inside a torch training loop Numba's threads would compete with
    torch's.  Inputs above the parallel kernels' size threshold, with every
    parallel kernel replaced by one that fails if called; the runner still
    gives the public serial call's result."""
    rng = np.random.default_rng(8)
    W = rng.standard_normal((512, 128)) if not name.startswith("weighted") else rng.standard_normal(1 << 16)
    assert W.size >= NB._PAR_MIN
    G = W.shape[0]
    thr = {
        "group_lasso": (np.full(G, 8.0),),
        "growl": (np.linspace(16.0, 0.0, G),),
        "exclusive_lasso": (np.full(G, 1.0 / 128),),
        "group_exclusive": (np.full(G, 4.0), np.full(G, 1.0 / 128)),
        "weighted_l1": (np.full(G, 0.5),),
        "weighted_l2sq": (np.full(G, 0.5),),
    }[name]
    want = getattr(NB, name)(W, *thr, parallel=False)

    def refuse(*args):
        raise AssertionError("a parallel Numba kernel ran")

    for kernel in _PARALLEL_KERNELS:
        monkeypatch.setattr(NB, kernel, refuse)
    X = W.copy()
    NB.serial_in_place(name, X)(thr, False)
    np.testing.assert_array_equal(X, want)
