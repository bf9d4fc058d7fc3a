"""The split-row solver of proxlib.torch.sharded in one process.

Rows split across ranks (FSDP2's ``Shard(0)`` under the ``"shape"``
grouping) find the exclusive operators' support from all-reduced sums.  Here
two "ranks" are two threads, each holding a column slice of every row, and
the communicator all-reduces their tensors through a barrier: the same
function, the same collectives and their order, without processes.  The
results are checked against exact references on rows as a training step
leaves them (revived tiny entries, where the candidate above the lower bound
decides the support) and on rows that need the search.
"""

from __future__ import annotations

import contextlib
import math
import threading
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import _cvx as R  # noqa: E402
from proxlib.backends import torch_dev  # noqa: E402
from proxlib.torch import sharded  # noqa: E402

#: the routes of the hinted split rows on a CPU shard (torch_dev.CPU_KERNELS)
ROUTES = ["torch", "numba"]

_OPS = {"sum": torch.add, "min": torch.minimum, "max": torch.maximum}


class _ThreadComm:
    """All-reduce between threads: each rank contributes its tensor, all
    receive the reduction (in rank order: the same bits on every rank)."""

    def __init__(self, rank: int, shared: dict, candidates: int = sharded._CANDIDATES):
        self.rank, self.shared = rank, shared
        self.rounds = 0
        self.candidates = candidates  # (as _Comm.candidates: 1 stands for many ranks)

    def all_reduce(self, t, op=dist.ReduceOp.SUM):
        name = {dist.ReduceOp.SUM: "sum", dist.ReduceOp.MIN: "min", dist.ReduceOp.MAX: "max"}[op]
        box, barrier = self.shared["box"], self.shared["barrier"]
        box[self.rank] = t.clone()
        barrier.wait()
        out = box[0]
        for r in range(1, len(box)):
            out = _OPS[name](out, box[r])
        barrier.wait()  # every rank has read before the next round writes
        t.copy_(out)
        self.rounds += 1
        return t

    def all_gather(self, t):
        """Every rank's t, stacked in rank order."""
        box, barrier = self.shared["box"], self.shared["barrier"]
        box[self.rank] = t.clone()
        barrier.wait()
        out = torch.stack(box)
        barrier.wait()
        self.rounds += 1
        return out

    def all_reduce_sum_least(self, t_sum, least, maxes):
        """_Comm.all_reduce_sum_least's collectives: with K = 1 the sum, then
        the maximum; else one all-gather, reduced by
        sharded._reduce_gathered."""
        if least.shape[0] == 1:
            self.all_reduce(t_sum)
            ext = self.all_reduce(torch.cat([-least, maxes]), dist.ReduceOp.MAX)
            least.copy_(-ext[:1])
            maxes.copy_(ext[1:])
        else:
            sharded._reduce_gathered(self.all_gather(torch.cat([t_sum, least, maxes])), t_sum, least, maxes)


def _on_two_ranks(work, candidates: int = sharded._CANDIDATES):
    """``work(rank, comm)`` on two threads joined by :class:`_ThreadComm`
    (taking ``candidates`` least entries per hinted row); each rank's
    result and the number of collectives (the same on both)."""
    shared = {"box": [None, None], "barrier": threading.Barrier(2, timeout=60)}
    out, comms, errors = [None, None], [_ThreadComm(0, shared, candidates), _ThreadComm(1, shared, candidates)], []

    def rank(r):
        try:
            out[r] = work(r, comms[r])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            shared["barrier"].abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    if errors:
        raise errors[0]
    assert comms[0].rounds == comms[1].rounds
    return out, comms[0].rounds


def _part(W: np.ndarray, cut: int, r: int) -> torch.Tensor:
    """Rank r's columns of W (split at ``cut``), laid out as FSDP2's shard
    of a Linear weight gives its "shape" rows: the rows are the columns
    of a C-contiguous array (strides (1, rows)), which the Numba route
    reads (:func:`sharded._split_kernels`; the torch operations take any
    layout)."""
    part = W[:, :cut] if r == 0 else W[:, cut:]
    return torch.from_numpy(np.ascontiguousarray(part.T)).T


@contextlib.contextmanager
def _route(name: str):
    """``torch_dev.CPU_KERNELS`` = ``name`` for the block ("numba": the
    sharded rows' Numba passes, skipped where Numba does not import)."""
    if name == "numba":
        pytest.importorskip("numba")
    saved, torch_dev.CPU_KERNELS = torch_dev.CPU_KERNELS, name
    try:
        yield
    finally:
        torch_dev.CPU_KERNELS = saved


def _split_solve(W: np.ndarray, a: np.ndarray, b: np.ndarray, cut: int):
    """``_group_exclusive_split`` on W's rows split at column ``cut`` between
    two threads; the assembled result and the number of all-reduces."""
    parts, rounds = _on_two_ranks(
        lambda r, comm: sharded._group_exclusive_split(_part(W, cut, r), torch.from_numpy(a), torch.from_numpy(b), comm).numpy())
    return np.concatenate(parts, axis=1), rounds


@st.composite
def _rows(draw):
    """float64 rows of a common scale; on some rows also tiny magnitudes (a
    training step's revived entries) and zeros; b from a training step's to
    large, a from 0 (the exclusive lasso) to half the row norm."""
    G = draw(st.integers(1, 5))
    m = draw(st.integers(2, 24))
    W = np.zeros((G, m))
    for r in range(G):
        revived = draw(st.booleans())
        for i in range(m):
            kind = draw(st.integers(0, 3))
            if kind == 0 or (kind == 1 and not revived):
                continue
            e = draw(st.integers(-60, -20)) if kind == 1 else draw(st.integers(-6, 2))
            W[r, i] = math.ldexp(draw(st.floats(0.5, 1.0)), e) * draw(st.sampled_from([1, -1]))
    b = np.array([math.ldexp(draw(st.floats(1.0, 2.0)), draw(st.sampled_from([-30, -12, -6, -2, 0, 2]))) for _ in range(G)])
    frac = np.array([draw(st.sampled_from([0.0, 0.0, 1e-6, 1e-2, 0.5])) for _ in range(G)])
    a = frac * np.sqrt((W**2).sum(axis=1))
    cut = draw(st.integers(1, m - 1))
    return W, a, b, cut


def _exact(W, a, b):
    out = np.zeros_like(W)
    for r in range(W.shape[0]):
        if a[r] == 0:
            out[r] = R.exact_exclusive_row(W[r], Fraction(float(b[r])))
        else:
            out[r] = R.exact_group_exclusive_ab(W[r], float(a[r]), float(b[r]))
    return out


@given(case=_rows())
def test_split_rows_give_the_exact_prox(case):
    W, a, b, cut = case
    X, _ = _split_solve(W, a, b, cut)
    exact = _exact(W, a, b)
    scale = np.abs(W).max(axis=1, keepdims=True)
    assert np.all(np.abs(X - exact) <= 16 * W.shape[1] * 2.0**-52 * scale + 2 * 2.0**-52 * np.abs(exact))
    np.testing.assert_array_equal(X == 0, exact == 0)


def _training_rows(rng, G, m):
    W = rng.standard_normal((G, m)) / 20
    dead = rng.random(W.shape) < 0.3
    W[dead] = rng.standard_normal(dead.sum()) * 1e-7
    return W


def test_training_state_takes_the_candidate_not_the_search(monkeypatch):
    """Rows as a training step leaves them: the candidate decides every row,
    so the collectives are the row maxima (which also bound the search),
    the first statistics and the candidate's two (its least entry with the
    largest entry outside, then its sums), which are the support's: 4; the
    search from 0 (the candidate switched off) takes more rounds."""
    rng = np.random.default_rng(3)
    W = _training_rows(rng, 8, 300)
    b = np.full(8, 1e-6)
    for a in (np.zeros(8), 0.5 * np.sqrt((W**2).sum(axis=1))):
        (X, rounds), (X_again, rounds_again) = _solve_both_ways(W, a, b, 150)
        exact = _exact(W, a, b)
        assert np.all(np.abs(X - exact) <= 16 * 300 * 2.0**-52 * np.abs(W).max(axis=1, keepdims=True))
        np.testing.assert_array_equal(X == 0, exact == 0)
        assert rounds == 4, rounds
        np.testing.assert_array_equal(X, X_again)  # the support's numbers formed again: the same bits, 2 more all-reduces
        assert rounds_again == 6, rounds_again
    search = sharded._support_split
    monkeypatch.setattr(sharded, "_support_split", lambda Y, a, b, comm, t0=None, ymax=None: search(Y, a, b, comm, ymax=ymax))
    for a in (np.zeros(8), 0.5 * np.sqrt((W**2).sum(axis=1))):
        X, rounds = _split_solve(W, a, b, 150)
        np.testing.assert_array_equal(X == 0, _exact(W, a, b) == 0)
        assert rounds > 4, rounds


def _split_solve_together(cases):
    """``_group_exclusive_split_blocks`` on several tensors' rows (``cases``:
    (W, a, b, cut) each), split between two threads; the results and the
    number of all-reduces."""
    def work(r, comm):
        Xs = sharded._group_exclusive_split_blocks([_part(W, cut, r) for W, _, _, cut in cases], [torch.from_numpy(a) for _, a, _, _ in cases],
                                                   [torch.from_numpy(b) for _, _, b, _ in cases], comm)
        return [X.numpy() for X in Xs]

    parts, rounds = _on_two_ranks(work)
    return [np.concatenate([p0, p1], axis=1) for p0, p1 in zip(*parts)], rounds


@given(first=_rows(), second=_rows(), third=_rows())
def test_several_tensors_solved_together_give_their_own_bits(first, second, third):
    """Three tensors' split rows (other row counts, lengths and cuts) in one
    set of collectives: each tensor's result is the one it has alone, bit
    for bit, and the collectives are those of one tensor (at most the
    largest number of rounds any of them needs alone)."""
    together, rounds = _split_solve_together([first, second, third])
    alone = [_split_solve(W, a, b, cut) for W, a, b, cut in (first, second, third)]
    for X, (Y, _) in zip(together, alone):
        np.testing.assert_array_equal(X, Y)
    assert rounds <= max(r for _, r in alone)


def _solve_both_ways(W, a, b, cut):
    """(the prox, its all-reduces) as the solver takes it, and as it is when
    the support's numbers are formed again from the support (the search's
    way) even where the candidate decided every row."""
    fast = _split_solve(W, a, b, cut)
    search = sharded._support_split
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sharded, "_support_split", lambda *args, **kw: (search(*args, **kw)[0], None))
        slow = _split_solve(W, a, b, cut)
    return fast, slow


@given(case=_rows())
def test_the_candidates_numbers_are_the_supports_bit_for_bit(case):
    """Where the candidate decides every row, the prox that takes the
    support's numbers from the candidate's collectives is the one that
    forms them again from the support, bit for bit (Hypothesis rows: the
    candidate decides all, some or none of them; a training step's rows
    are in test_training_state_takes_the_candidate_not_the_search)."""
    (X, r_fast), (Y, r_slow) = _solve_both_ways(*case)
    np.testing.assert_array_equal(X, Y)
    assert r_fast <= r_slow


def test_a_training_step_of_several_tensors_takes_four_all_reduces():
    """Rows as a training step leaves them in two tensors of other shapes:
    the candidate decides every row of both, in the 4 all-reduces of one."""
    rng = np.random.default_rng(4)
    cases = []
    for G, m in ((8, 300), (5, 120)):
        W = _training_rows(rng, G, m)
        cases.append((W, np.zeros(G), np.full(G, 1e-6), m // 2))
    Xs, rounds = _split_solve_together(cases)
    assert rounds == 4
    for X, (W, a, b, _) in zip(Xs, cases):
        np.testing.assert_array_equal(X == 0, _exact(W, a, b) == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("route", ROUTES)
def test_row_norms_of_several_tensors_in_one_set_of_collectives(dtype, route):
    """The group lasso's row norms of three tensors' split rows together:
    each tensor's norms are the ones it has alone, bit for bit, in the
    collectives of one (one all-reduce for float32, two for float64), on
    both routes (float32 on Numba: the column pass's sums)."""
    rng = np.random.default_rng(6)
    e = 15 if dtype == torch.float32 else 100  # (row scales that the dtype holds, squares included)
    blocks = [rng.standard_normal((G, m)) * 10.0 ** rng.integers(-e, e, size=(G, 1)) for G, m in ((4, 9), (7, 3), (1, 12))]

    def work(r, comm):
        local = [_part(W, W.shape[1] // 2, r).to(dtype) for W in blocks]
        together = sharded._row_norms_split_blocks(local, comm)
        calls = comm.rounds
        return together, [sharded._row_norms_split(R_, comm) for R_ in local], calls

    with _route(route):
        out, _ = _on_two_ranks(work)
    together, alone, calls = out[0]
    assert calls == (1 if dtype == torch.float32 else 2)
    for a, b, W in zip(together, alone, blocks):
        assert torch.equal(a, b)
        np.testing.assert_allclose(a.numpy(), np.linalg.norm(W.astype(np.float32 if dtype == torch.float32 else np.float64).astype(np.float64), axis=1), rtol=1e-15)


@pytest.mark.parametrize("exclusive_only", [True, False])
def test_rows_holding_nan_or_inf_are_returned_as_they_are(exclusive_only):
    """A split row holding NaN or Inf comes back as it is, as from the
    single-device kernels (it zeroed the row, Inf included); the finite rows
    beside it are solved as usual."""
    from proxlib.backends import torch_dev

    W = np.array([[0.5, -1.0, 0.25, 2.0], [1.0, np.inf, -0.5, 0.3], [0.2, -0.4, np.nan, -0.7], [-np.inf, 0.1, 0.2, 0.3]])
    b = np.full(4, 0.5)
    a = np.zeros(4) if exclusive_only else np.full(4, 0.1)
    X, _ = _split_solve(W, a, b, 2)
    Wt, bt = torch.from_numpy(W), torch.from_numpy(b)
    single = (torch_dev.exclusive_lasso(Wt, bt) if exclusive_only else torch_dev.group_exclusive(Wt, torch.from_numpy(a), bt)).numpy()
    np.testing.assert_array_equal(X[1:], W[1:])
    np.testing.assert_array_equal(X, single)


def test_rows_without_the_exclusive_part_keep_their_tiny_entries():
    """Rows with b = 0 (group_weights 0 on a row of the exclusive lasso,
    GroupExclusive(lam, 0)) are c w formed from w itself, as on one device:
    through the row's scaled copy an entry below 2^-1074 times the row's
    power of two became 0 (1e-30 beside 1e300), an identity prox (a = b = 0)
    then changed its input."""
    from proxlib.backends import torch_dev

    W = np.array([[1e300, 1e-30, -1e-310, 3.0], [2.0, 1e-300, 5e-324, -1.0], [0.5, -0.25, 0.0, 1.0]])
    b = np.array([0.0, 0.0, 0.5])
    for a in (np.zeros(3), np.array([1e299, 0.5, 0.1])):
        X, _ = _split_solve(W, a, b, 2)
        single = torch_dev.group_exclusive(torch.from_numpy(W), torch.from_numpy(a), torch.from_numpy(b)).numpy()
        np.testing.assert_array_equal(X, single)
        if not a.any():
            np.testing.assert_array_equal(X[:2], W[:2])  # b = 0, a = 0: the identity


# ------------------------------------------------------------ a training step's hints


def _solve_hinted(cases, hints, candidates: int = sharded._CANDIDATES):
    """``_group_exclusive_split_blocks`` of several tensors' rows (``cases``:
    (W, a, b, cut) each, W's dtype kept) split between two threads, with
    ``hints`` (one list per rank, read and replaced as the solver does),
    taking ``candidates`` least entries per hinted row; the results and
    the number of collectives."""
    def work(r, comm):
        Xs = sharded._group_exclusive_split_blocks([_part(W, cut, r) for W, _, _, cut in cases], [torch.from_numpy(a) for _, a, _, _ in cases],
                                                   [torch.from_numpy(b) for _, _, b, _ in cases], comm, hints[r])
        return [X.numpy() for X in Xs]

    parts, rounds = _on_two_ranks(work, candidates)
    for h0, h1 in zip(*hints):  # (every rank leaves the same hints: they come from all-reduced numbers)
        assert (h0 is None) == (h1 is None) and (h0 is None or torch.equal(h0, h1))
    return [np.concatenate([p0, p1], axis=1) for p0, p1 in zip(*parts)], rounds


def _hinted_rounds(candidates: int = sharded._CANDIDATES) -> int:
    """The collectives of a step that the hints decide: one all-gather
    (sums, least entries, maxima), or with one candidate (a maximum, as on
    more ranks than sharded._GATHER_RANKS) an all-reduce of the sums and
    one of the maxima."""
    return 1 if candidates > 1 else 2


def _close_to_exact(X, W, a, b):
    """X (float32) is the exact prox of float32 rows W rounded once, to the
    float64 solver's error: the same zeros, values within a float32 unit
    and 16 m float64 units of each row's scale."""
    W64 = W.astype(np.float64)
    exact = _exact(W64, a, b)
    scale = np.abs(W64).max(axis=1, keepdims=True)
    tol = 16 * W.shape[1] * 2.0**-52 * scale + 2.0**-24 * np.abs(exact)
    assert np.all(np.abs(X.astype(np.float64) - exact) <= tol)
    np.testing.assert_array_equal(X == 0, exact.astype(np.float32) == 0)


def _phi_at_most_zero(y, t: Fraction, a: float, b: Fraction) -> bool:
    """phi(t) = t - b F(t) (1 - a/sqrt(Q(t)))_+ <= 0 for magnitudes y (Fractions),
    decided exactly (F, Q the sums of (y - t)_+ and its squares)."""
    d = [v - t for v in y if v > t]
    F = sum(d, Fraction(0))
    if a == 0:
        return t <= b * F
    Q = sum((x * x for x in d), Fraction(0))
    if Q == 0 or b * F == 0:
        return t <= 0
    R = 1 - t / (b * F)  # phi(t) <= 0 iff a / sqrt(Q) <= R
    return R >= 0 and Fraction(a) ** 2 <= Q * R * R


def _training_step(rng, X, size=1e-5):
    """X as the next training step finds it: a gradient step of about
    ``size`` on every entry (the zeros revived tiny)."""
    G = rng.standard_normal(X.shape).astype(np.float32)
    return (X + np.where(X == 0, 1e-7, size) * G).astype(np.float32)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("group_part", [False, True])
def test_a_training_step_with_the_last_steps_hints_takes_one_collective(group_part, route):
    """float32 rows of two tensors over three training steps: the first
    step, without hints, takes the all-reduces of the route without them
    (the candidate's 4 for the exclusive lasso; group+exclusive with a
    large a searches) and leaves a hint per row; every later step is
    decided by the hints in their one all-gather (the sums and the least
    entries above them, the maxima), and each is the exact prox.  A step
    that moves the rows far (a gradient step of 1e-3 where tau is about
    1e-4: the threshold moves by more than the hint's margin) takes 3: the
    hints' 1, then the candidate's 2 from the whole row's bound (or above
    the hint's, where it proved itself)."""
    rng = np.random.default_rng(8)
    shapes = ((8, 300), (5, 120), (40, 10))  # (rows of 10: the MLP's 10 x 300 layer under "shape")
    Ws = [_training_rows(rng, G, m).astype(np.float32) for G, m in shapes]
    # (a training step's a: the group part shrinks a row by about 0.1% a
    # step; 30% a step would move tau by as much, beyond the hint's margin)
    a_of = lambda W: (1e-3 * np.sqrt((W.astype(np.float64) ** 2).sum(axis=1))) if group_part else np.zeros(W.shape[0])  # noqa: E731
    bs = [np.full(G, 1e-5) for G, _ in shapes]
    hints = [[None] * 3, [None] * 3]
    for step in range(3):
        cases = [(W, a_of(W), b, W.shape[1] // 2) for W, b in zip(Ws, bs)]
        with _route(route):
            Xs, rounds = _solve_hinted(cases, hints)
        assert rounds == (_split_solve_together(cases)[1] if step == 0 else _hinted_rounds()), (step, rounds)
        assert all(h is not None and bool((h[0] > 0).all()) for h in hints[0])
        for X, (W, a, b, _) in zip(Xs, cases):
            _close_to_exact(X, W, a, b)
        Ws = [_training_step(rng, X) for X in Xs]
    Ws = [_training_step(rng, X, 1e-3) for X in Xs]
    cases = [(W, a_of(W), b, W.shape[1] // 2) for W, b in zip(Ws, bs)]
    with _route(route):
        Xs, rounds = _solve_hinted(cases, hints)
    assert rounds == _hinted_rounds() + 2
    for X, (W, a, b, _) in zip(Xs, cases):
        _close_to_exact(X, W, a, b)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("group_part", [False, True])
@pytest.mark.parametrize("between", [1, 2, 3])
def test_entries_between_the_hint_and_the_new_threshold(between, group_part, route):
    """A training step that leaves ``between`` entries of a row (with a
    tie among them for 2) between its hint and its new threshold: the
    least entry above the hint fails its test, and each of the next of
    the K = 3 least entries is a candidate on the same sums less the
    entries below it.  With up to 2 such entries (a third candidate then
    decides) the step takes the hints' one collective, with 3 the search's
    route too (2 more), and with one candidate (K = 1, as on more ranks
    than sharded._GATHER_RANKS: 2 collectives) 2 more already for one
    entry; every result is the exact prox."""
    rng = np.random.default_rng(31)
    W = _training_rows(rng, 6, 300).astype(np.float32)
    a_of = lambda W: (1e-3 * np.sqrt((W.astype(np.float64) ** 2).sum(axis=1))) if group_part else np.zeros(W.shape[0])  # noqa: E731
    b = np.full(6, 1e-5)
    hints = [[None], [None]]
    with _route(route):
        (X,), _ = _solve_hinted([(W, a_of(W), b, 150)], hints)
    W = _training_step(rng, X)
    fresh = [[None], [None]]
    _solve_hinted([(W, a_of(W), b, 150)], fresh)  # (the new thresholds, from hints of this very step)
    H = float(hints[0][0][0, 2])
    tau = float(fresh[0][0][0, 2]) / (1.0 - 2.0**-8)
    assert 0 < H < tau
    # entries of row 2 off the support before and after (below H, then
    # between H and tau: tau stays), on both ranks' parts
    vals = {1: [0.4], 2: [0.5, 0.5], 3: [0.2, 0.4, 0.6]}[between]
    off = np.flatnonzero(np.abs(W[2]) < H)
    cols = [off[off < 150][0], off[off >= 150][0], off[off < 150][1]][:between]
    for col, f in zip(cols, vals):
        W[2, col] = np.float32(H + (tau - H) * f) * (1.0 if W[2, col] >= 0 else -1.0)
    assert np.all((np.abs(W[2, cols]) > H) & (np.abs(W[2, cols]) < tau))
    cases = [(W, a_of(W), b, 150)]
    for K, want in ((3, _hinted_rounds(3) + (0 if between < 3 else 2)), (1, _hinted_rounds(1) + 2)):
        h = [[hints[r][0].clone()] for r in (0, 1)]
        with _route(route):
            (X,), rounds = _solve_hinted(cases, h, candidates=K)
        assert rounds == want, (K, rounds)
        _close_to_exact(X, W, a_of(W), b)


def _hint_values(draw, y, tau):
    """A hint for a row with magnitudes y and threshold about tau: good, a
    hair above or far off, one of the row's own magnitudes (a tie: "above"
    is strict), or what counts as none (0, negative, NaN, inf)."""
    pick = draw(st.integers(0, 3))
    if pick == 0 or not tau > 0:
        return draw(st.sampled_from([0.0, -1.0, math.nan, math.inf, 1e-300, 1e300]))
    if pick == 1:
        return tau * draw(st.sampled_from([0.5, 0.9, 1.0 - 2.0**-8, 1.0, 1.0 + 2.0**-20, 1.5]))
    if pick == 2 and len(y):
        return float(draw(st.sampled_from(sorted(set(y.tolist())))))
    return draw(st.floats(0.0, 2 * tau, allow_nan=False))


def _reference_values(draw, y, ref):
    """A guess of a row's least support magnitude (where its support sums
    are shifted to): the last call's, moved a little or far (2^40 times:
    the shifted sums then cancel, and must be refused), one of the row's
    magnitudes, or nonsense (0, negative, NaN, inf)."""
    pick = draw(st.integers(0, 2))
    if pick == 0 or not ref > 0:
        return draw(st.sampled_from([0.0, -1.0, math.nan, math.inf]))
    if pick == 1:
        return ref * draw(st.sampled_from([1.0, 1.0 + 2.0**-20, 1.0 - 2.0**-20, 0.5, 2.0, 2.0**40, 2.0**-40]))
    return float(draw(st.sampled_from(sorted(set(y.tolist())))))


@pytest.mark.parametrize("candidates", [1, sharded._CANDIDATES])
@pytest.mark.parametrize("route", ROUTES)
@given(case=_rows(), data=st.data())
def test_hints_never_change_the_support(route, candidates, case, data):
    """float32 rows (a training step's, and rows that need the search) with
    any hints, good, wrong, tied with an entry, or none, and any guesses of
    the support's least entry, taking one or K candidates above each hint
    (ties among them too: Hypothesis draws repeated magnitudes): the prox
    is the exact one (the hints decide the rows, or the route without them
    runs after their collectives), and the hints left for the next call
    are 0 or lower bounds of each row's threshold (phi <= 0 there,
    exactly)."""
    W64, a, b, cut = case
    W = W64.astype(np.float32)
    a = a.astype(np.float32).astype(np.float64)  # (thresholds as a float32 tensor's would be)
    plain, plain_rounds = _solve_hinted([(W, a, b, cut)], [[None], [None]])
    Y = np.abs(W.astype(np.float64))
    guess = [[None], [None]]
    _solve_hinted([(W, a, b, cut)], guess)
    tau = guess[0][0][0].numpy() / (1.0 - 2.0**-8)
    ref = guess[0][0][1].numpy()
    H = torch.tensor([[_hint_values(data.draw, Y[r], float(tau[r])) for r in range(W.shape[0])],
                      [_reference_values(data.draw, Y[r], float(ref[r])) for r in range(W.shape[0])]], dtype=torch.float64)
    hints = [[H.clone()], [H.clone()]]
    with _route(route):
        (X,), rounds = _solve_hinted([(W, a, b, cut)], hints, candidates)
    _close_to_exact(X, W, a, b)
    np.testing.assert_array_equal(X == 0, plain[0] == 0)
    assert rounds == _hinted_rounds(candidates) or rounds <= plain_rounds + _hinted_rounds(candidates)
    left = hints[0][0][0].numpy()
    assert np.all(np.isfinite(hints[0][0].numpy())) and np.all(hints[0][0].numpy() >= 0)
    for r in np.flatnonzero(left > 0):
        y = [Fraction(float(v)) for v in Y[r]]
        assert _phi_at_most_zero(y, Fraction(float(left[r])), float(a[r]), Fraction(float(b[r])))


def test_float64_rows_take_no_hints():
    """A batch holding a float64 tensor takes the route without hints (its
    rows are scaled; the hinted sums are float32's): the collectives of a
    step without them, and no hints left for the next."""
    rng = np.random.default_rng(9)
    W32 = _training_rows(rng, 4, 40).astype(np.float32)
    W64 = _training_rows(rng, 3, 30)
    cases = [(W32, np.zeros(4), np.full(4, 1e-5), 20), (W64, np.zeros(3), np.full(3, 1e-5), 15)]
    hints = [[torch.full((2, 4), 1e-9, dtype=torch.float64), torch.full((2, 3), 1e-9, dtype=torch.float64)] for _ in range(2)]
    Xs, rounds = _solve_hinted(cases, hints)
    assert rounds == 4 and hints[0] == [None, None]
    Ys, _ = _split_solve_together(cases)
    for X, Y_ in zip(Xs, Ys):
        np.testing.assert_array_equal(X, Y_)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("moved", [2.0**40, 2.0**-40, 0.0])
def test_support_sums_shifted_far_are_refused(moved, route):
    """The support sums shifted to a guess R of the least entry far from it
    (2^40 times above: sums of y - R with terms of both signs, which lose y's
    low bits; 2^-40 times, or 0: the move by Y_c - R cancels) are refused,
    and those shifted by the hint, or the route without hints, give the
    exact prox: had the far ones been taken, the thresholds would be off by
    far more than a float32 unit."""
    rng = np.random.default_rng(12)
    W = _training_rows(rng, 8, 300).astype(np.float32)
    W[:, 150:] *= 64  # (a support spread over 6 binades: the low bits of y matter)
    a, b = np.zeros(8), np.full(8, 1e-3)
    hints = [[None], [None]]
    _solve_hinted([(W, a, b, 150)], hints)
    for h in hints:
        h[0] = h[0].clone()
        h[0][1] *= moved
    with _route(route):
        (X,), _ = _solve_hinted([(W, a, b, 150)], hints)
    _close_to_exact(X, W, a, b)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("moved", [1.0, 2.0**-40, 2.0**40])
def test_hinted_support_sums_are_the_supports_to_their_rounding(moved, route):
    """The support sums the hints decide a row with (_hinted_numbers: moved
    from the sums above the hint or from those shifted to R) are those of
    its support, checked exactly: within twice the direct sums' bound,
    (P + 4) units of each.  Rows clustered within a few float32 units of
    their least entry make a move by a far R cancel: refused (R 2^-40 or
    2^40 times the last call's), the move by Y_c - H is taken, or the row
    is left to the route without hints (whose sums are direct)."""
    rng = np.random.default_rng(13)
    W = _training_rows(rng, 6, 64).astype(np.float32)
    cluster = (1.0 + np.arange(64) * 2.0**-23).astype(np.float32)
    W = np.concatenate([W, cluster[None] * np.float32(0.05), rng.permutation(cluster)[None] * np.float32(0.03)])
    G, P = W.shape
    a, b = np.zeros(G), np.full(G, 1e-3)
    hints = [[None], [None]]
    _solve_hinted([(W, a, b, 32)], hints)
    for h in hints:
        h[0] = h[0].clone()
        h[0][1] *= moved

    def work(r, comm):
        Rw = _part(W, 32, r)
        A = sharded._Blocks([Rw.to(torch.float64).abs()])
        on_numba = sharded._split_kernels([Rw])
        assert (on_numba is None) == (route == "torch")
        *_, (sups, Yk, below, Fk, D2, kf) = sharded._hinted_numbers(
            A, torch.from_numpy(a), torch.from_numpy(b), torch.ones(G, dtype=torch.bool), hints[r][0], comm,
            on_numba and (on_numba, [Rw]))
        return Yk.numpy(), Fk.numpy(), D2.numpy(), kf.numpy()

    with _route(route):
        out, _ = _on_two_ranks(work)
    Yk, Fk, D2, kf = out[0]
    eps = 2.0**-52
    for g in range(G):
        y = [Fraction(float(v)) for v in np.abs(W[g].astype(np.float64)) if v >= Yk[g] > 0]
        d = [v - Fraction(float(Yk[g])) for v in y]
        F_x, D_x = sum(d, Fraction(0)), sum((x * x for x in d), Fraction(0))
        assert kf[g] == len(y)
        for got, want in ((Fk[g], F_x), (D2[g], D_x)):
            assert abs(Fraction(float(got)) - want) <= 2 * (P + 4) * eps * want, (g, float(got), float(want))


# ------------------------------------------------------------ the Numba route's passes


@st.composite
def _hinted_block(draw):
    """float32 rows (the columns of a C-contiguous (P, G) array, as a
    shard's "shape" rows) with zeros, ties with their hints, tiny and huge
    magnitudes, Inf and NaN in some rows; per row a hint H and a guess R,
    good or nonsense (0, negative, huge; H also +-inf), as
    sharded._hinted_numbers passes them."""
    P = draw(st.integers(0, 13))
    G = draw(st.integers(1, 6))
    vals = st.sampled_from([0.0, -0.0, 1e-30, -3e-38, 1e-45, 0.25, -0.5, 0.75, 1.0, -3.0e38, 7.0, math.inf, math.nan])
    A = np.array([[draw(vals) for _ in range(G)] for _ in range(P)], dtype=np.float32).reshape(P, G)
    odd = [0.0, -1.0, 1e-30, 0.25, 0.5, 0.75, 3.0, 1e30]
    H = np.array([draw(st.sampled_from(odd + [math.inf, -math.inf])) for _ in range(G)])  # (NaN: made +inf by the caller)
    R = np.array([draw(st.sampled_from(odd)) for _ in range(G)])  # (not finite: made H, or 0, by the caller)
    return A, H, R


def _torch_hinted_stats(A, H, R, K):
    Y = torch.from_numpy(A.T.astype(np.float64)).abs()
    return [t.numpy() for t in sharded._hinted_stats_torch(sharded._Blocks([Y]), torch.from_numpy(H), torch.from_numpy(R), K)]


@given(case=_hinted_block(), data=st.data())
def test_numba_hinted_stats_are_the_torch_operations_stats(case, data):
    """numba_split.hinted_stats against the torch route's statistics
    (sharded._hinted_stats_torch) on the same rows: on every finite row
    the counts and the extremes are the same numbers, and each sum within
    the rounding of either order (P units of the sum of its terms'
    magnitudes, float64), where the torch route's sum is finite; the sums
    of a row holding Inf or NaN are not finite on both routes (such a row
    is returned as it is)."""
    nb = pytest.importorskip("proxlib.backends.numba_split")
    A, H, R = case
    P, G = A.shape
    K = data.draw(st.integers(1, 4))
    stats, least, maxes = np.empty((10, G)), np.empty((K, G)), np.empty((2, G))
    nb.hinted_stats(A, H, R, stats, least, maxes)
    want, want_least, want_maxes = _torch_hinted_stats(A, H, R, K)
    ext, want_ext = np.concatenate([least, maxes]), np.concatenate([want_least, want_maxes])
    y = np.abs(A.astype(np.float64))
    above = y > H
    with np.errstate(invalid="ignore", over="ignore"):
        mags = [y * y, np.where(above, y, 0), above * 1.0, np.where(above, y - H, 0), np.where(above, y - H, 0) ** 2,
                np.full_like(y, 1.0), y, (y > 0) * 1.0, np.where(above, y - R, 0), np.where(above, y - R, 0) ** 2]
    for g in range(G):
        if not np.all(np.isfinite(y[:, g])):
            assert not np.isfinite(stats[0, g]) and not np.isfinite(want[0, g])
            continue
        np.testing.assert_array_equal(ext[:, g], want_ext[:, g])
        np.testing.assert_array_equal(least[:, g], np.sort(np.concatenate([y[:, g][above[:, g]], np.full(K, np.inf)]))[:K])
        for k in (2, 5, 7):
            assert stats[k, g] == want[k, g]
        for k in (0, 1, 3, 4, 6, 8, 9):
            if not np.isfinite(want[k, g]):
                assert not np.isfinite(stats[k, g]), (k, g)
                continue
            bound = (P + 2) * 2.0**-53 * np.abs(mags[k][:, g]).sum()
            assert abs(stats[k, g] - want[k, g]) <= 2 * bound, (k, g, stats[k, g], want[k, g])


@given(case=_hinted_block(), data=st.data())
def test_numba_support_map_is_the_torch_map_bit_for_bit(case, data):
    """numba_split.support_map against sharded._support_map_torch on the same
    rows and per-row numbers, every case (a row not finite, b = 0, beta =
    0, the support {y >= Y_k} with Y_k one of the row's magnitudes or
    another number), float32 out: the same bits, signed zeros included."""
    nb = pytest.importorskip("proxlib.backends.numba_split")
    A, _, _ = case
    P, G = A.shape
    Rw = torch.from_numpy(np.ascontiguousarray(A)).T
    y = np.abs(A.astype(np.float64))
    nums = st.sampled_from([0.0, 1e-30, 0.25, 0.5, 0.75, 1.0, 2.0])
    Yk = torch.tensor([float(data.draw(st.sampled_from(sorted(set(y[:, g][np.isfinite(y[:, g])].tolist())) or [0.5])))
                       if data.draw(st.booleans()) else data.draw(nums) for g in range(G)], dtype=torch.float64)
    e, cs, cw = (torch.tensor([data.draw(nums) for _ in range(G)], dtype=torch.float64) for _ in range(3))
    zero_beta, group_part, fin = (torch.tensor([data.draw(st.booleans()) for _ in range(G)]) for _ in range(3))
    W64 = Rw.to(torch.float64)
    Ys = sharded._Blocks([W64.abs()])
    want = sharded._support_map_torch([Rw], [W64], Ys, [Ys.blocks[0] >= Yk[:, None]], Yk, e, zero_beta, cs, cw, group_part, fin)[0]
    got = sharded._support_map_numba(nb, [Rw], Ys.sizes, Yk, e, zero_beta, cs, cw, group_part, fin)[0]
    assert got.dtype == Rw.dtype and got.stride() == Rw.stride()
    np.testing.assert_array_equal(got.numpy().view(np.int32), want.numpy().view(np.int32))


def test_a_training_step_on_numba_runs_its_passes_not_the_torch_operations(monkeypatch):
    """A float32 training step whose hints decide every row, on the Numba
    route: its statistics and row map are the Numba passes (the torch
    route's functions are not called) and its result is the exact prox."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(21)
    W = _training_rows(rng, 12, 300).astype(np.float32)
    a, b = np.zeros(12), np.full(12, 1e-5)
    hints = [[None], [None]]
    with _route("numba"):
        (X,), _ = _solve_hinted([(W, a, b, 150)], hints)
        W = _training_step(rng, X)

        def refuse(*args, **kwargs):
            raise AssertionError("the torch route ran")

        monkeypatch.setattr(sharded, "_hinted_stats_torch", refuse)
        monkeypatch.setattr(sharded, "_support_map_torch", refuse)
        (X,), rounds = _solve_hinted([(W, a, b, 150)], hints)
    assert rounds == _hinted_rounds()
    _close_to_exact(X, W, a, b)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("cut", [0, 300])
def test_a_rank_holding_no_entries_of_the_rows(route, cut):
    """Uneven shards: one rank holds none of the rows' entries (a shard of 0
    rows of the weight, as FSDP2 leaves where a dimension has fewer rows
    than ranks).  Its statistics are the empty sums and extremes, and
    three float32 training steps with hints give the exact prox."""
    rng = np.random.default_rng(22)
    W = _training_rows(rng, 6, 300).astype(np.float32)
    a, b = np.zeros(6), np.full(6, 1e-5)
    hints = [[None], [None]]
    for _ in range(3):
        with _route(route):
            (X,), _ = _solve_hinted([(W, a, b, cut)], hints)
        _close_to_exact(X, W, a, b)
        W = _training_step(rng, X)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scaling_split_rows_in_place(route, dtype):
    """_scale_local_rows writes each row times its factor into the rows (a
    view of the shard) and bumps their version counter: on Numba each
    product in float64 rounded once (the single-device kernels' and the
    NumPy reference's bits), on torch with the factor in the rows' dtype."""
    rng = np.random.default_rng(23)
    W = rng.standard_normal((7, 11)).astype(np.float32 if dtype == torch.float32 else np.float64)
    f = torch.from_numpy(rng.uniform(0.0, 1.0, 7))
    Rw = _part(W, 11, 0)
    version = Rw._version
    with _route(route):
        nb = sharded._split_kernels([Rw])
        assert (nb is None) == (route == "torch")
        X = sharded._scale_local_rows(Rw, f, nb)
    assert X is Rw and Rw._version > version
    if route == "numba" or dtype == torch.float64:
        want = (W.astype(np.float64) * f.numpy()[:, None]).astype(W.dtype)
    else:
        want = W * f.numpy().astype(np.float32)[:, None]
    np.testing.assert_array_equal(Rw.numpy(), want)
