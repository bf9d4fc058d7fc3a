"""Row views of layer weight tensors: to_rows / from_rows.

What a row is (module table of proxlib.groupings), checked entry by entry
against direct indexing, and exact round trips for Linear (out, in) and Conv
(out, in, *k) weights of any kernel rank, memory order and size (including 0).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import _cvx as R
import proxlib
from proxlib import from_rows, to_rows

pytestmark = pytest.mark.usefixtures("numpy_backend")

ALIASES = {"output": "filter", "row": "filter", "input": "channel", "column": "channel"}

shapes = st.one_of(
    st.tuples(st.integers(0, 5), st.integers(0, 5)),  # Linear (out, in)
    st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(1, 3)),  # Conv1d
    st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)),  # Conv2d
    st.tuples(*[st.integers(1, 3)] * 5),  # Conv3d
)


@st.composite
def weight_tensors(draw):
    shape = draw(shapes)
    W = draw(arrays(np.float64, shape, elements=st.floats(-5, 5, allow_subnormal=False)))
    layout = draw(st.sampled_from(["C", "F", "strided"]))
    if layout == "F":
        W = np.asfortranarray(W)
    elif layout == "strided":
        big = np.zeros(shape[:-1] + (2 * shape[-1],))
        big[..., ::2] = W
        W = big[..., ::2]
    return W


def expected_rows(W, g):
    """Rows built by direct indexing, one row at a time (no reshape tricks)."""
    out, cin = W.shape[:2]
    rest = int(np.prod(W.shape[2:]))
    if g == "filter":
        return np.array([W[o].ravel() for o in range(out)]).reshape(out, cin * rest)
    if g == "channel":
        return np.array([W[:, i].ravel() for i in range(cin)]).reshape(cin, out * rest)
    if g == "layer":
        return W.ravel()[None, :]
    # shape: one row per (in, *k) position, holding that position across all filters
    positions = list(itertools.product(*[range(s) for s in W.shape[1:]]))
    return np.array([[W[(o,) + pos] for o in range(out)] for pos in positions]).reshape(len(positions), out)


@pytest.mark.parametrize("grouping", list(proxlib.GROUPINGS) + list(ALIASES))
@given(weight_tensors())
def test_rows_are_what_the_table_says_and_round_trip(grouping, W):
    W0 = W.copy()
    Rw = to_rows(W, grouping)
    g = ALIASES.get(grouping, grouping)
    np.testing.assert_array_equal(Rw, expected_rows(W, g))
    back = from_rows(Rw, W.shape, grouping)
    assert back.shape == W.shape
    np.testing.assert_array_equal(back, W)
    # from_rows also inverts rows that are NOT views of W (e.g. a prox result)
    R2 = np.ascontiguousarray(Rw) * 2.0
    np.testing.assert_array_equal(from_rows(R2, W.shape, grouping), 2.0 * W)
    np.testing.assert_array_equal(to_rows(from_rows(R2, W.shape, grouping), grouping), R2)
    np.testing.assert_array_equal(W, W0)


@pytest.mark.parametrize("grouping", ["filter", "layer"])
def test_views_on_c_contiguous(grouping):
    W = np.arange(2 * 3 * 4 * 5, dtype=float).reshape(2, 3, 4, 5)
    assert np.shares_memory(to_rows(W, grouping), W)


def test_row_counts():
    W = np.zeros((8, 3, 5, 5))  # Conv2d: 8 filters, 3 input channels, 5x5
    assert to_rows(W, "filter").shape == (8, 75)
    assert to_rows(W, "channel").shape == (3, 200)
    assert to_rows(W, "shape").shape == (75, 8)
    assert to_rows(W, "layer").shape == (1, 600)
    L = np.zeros((10, 4))  # Linear: 10 outputs, 4 inputs
    assert to_rows(L, "channel").shape == (4, 10)  # GrOWL's rows: input neurons
    assert to_rows(L, "shape").shape == (4, 10)


@given(weight_tensors().filter(lambda W: W.size > 0), st.floats(0, 3), R.steps)
def test_group_lasso_over_channels_via_rows(W, lam, step):
    # The intended use: prox over channel groups = from_rows(prox(to_rows)).
    # Reference: each input channel W[:, i] shrunk by (1 - step lam/||W[:, i]||)_+.
    X = from_rows(proxlib.prox_group_lasso(to_rows(W, "channel"), lam, step), W.shape, "channel")
    ref = np.empty_like(W)
    for i in range(W.shape[1]):
        n = np.hypot.reduce(W[:, i].ravel()) if W[:, i].size else 0.0
        ref[:, i] = W[:, i] * (max(1 - step * lam / n, 0.0) if n > 0 else 0.0)
    np.testing.assert_allclose(X, ref, rtol=0, atol=8 * W.size * np.finfo(float).eps * (np.abs(W).max() + step * lam))


def test_validation():
    W = np.zeros((2, 3))
    with pytest.raises(TypeError, match="grouping"):
        to_rows(W, 1)
    with pytest.raises(ValueError, match="grouping"):
        to_rows(W, "kernel")
    with pytest.raises(ValueError, match="grouping"):
        from_rows(W, (2, 3), "bogus")
    with pytest.raises(ValueError, match="2 dimensions"):
        to_rows(np.zeros(3), "filter")
    with pytest.raises(ValueError, match="rows"):
        from_rows(np.zeros((3, 2)), (2, 3), "filter")  # the transpose does not fit
    with pytest.raises(ValueError, match="rows"):
        from_rows(np.zeros((2, 3)), (2, 3), "channel")
