"""Physical compaction (proxlib.torch.compact): hand-made zero groups and ties on
an MLP, a LeNet-5, a small residual net and a concatenating net; exact removal
counts, hand-checked parameter counts and folded biases, equal outputs, the
checkpoint round trip, the original left untouched, bad input."""

from __future__ import annotations

import copy
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.utils import prune  # noqa: E402

import proxlib  # noqa: E402
import proxlib.torch as pt  # noqa: E402
from proxlib.torch import compaction as C  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is faster and steady on a loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------- models


def _mlp():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        net[0].weight[:, [2, 7]] = 0  # inputs 2 and 7 unused: a feature selection
        net[0].weight[3] = 0  # hidden 3 is the constant relu(0.7) = 0.7: folded into layer 2
        net[0].bias[3] = 0.7
        net[2].weight[:, 5] = 0  # hidden 5 unused by the only layer reading it
        net[2].weight[1] = 0  # a dead ReLU unit: constant 0
        net[2].bias[1] = -0.3
    return net


class LeNet5(nn.Module):
    """conv-BN-ReLU-pool twice, then three Linear layers (28 x 28 input)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


def _randomise_bn(bn, g):
    with torch.no_grad():
        n = bn.num_features
        bn.running_mean.copy_(torch.randn(n, generator=g))
        bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(n, generator=g))
        bn.bias.copy_(torch.randn(n, generator=g))


def _lenet():
    torch.manual_seed(1)
    net = LeNet5()
    g = torch.Generator().manual_seed(1)
    _randomise_bn(net.bn1, g)
    _randomise_bn(net.bn2, g)
    with torch.no_grad():
        net.conv1.weight[[0, 4]] = 0  # zero filters: constants through BN/ReLU/pool, folded into conv2 (no padding)
        net.conv2.weight[3] = 0  # zero filter: 25 constant columns of fc1 after the flatten
        net.fc1.weight[:, 175:200] = 0  # channel 7 unused by fc1: conv2's (non-zero) filter 7 goes
        net.fc1.weight[10:15] = 0  # five zero output neurons, folded into fc2
    return net


class TinyResNet(nn.Module):
    """stem conv-BN-ReLU, one residual block (conv-BN-ReLU-conv-BN + skip), mean pool, Linear."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.a, self.bna = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.b, self.bnb = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        s = F.relu(self.bn0(self.stem(x)))
        h = self.bnb(self.b(F.relu(self.bna(self.a(s)))))
        s = F.relu(s + h)
        return self.fc(s.mean((2, 3)))


def _resnet():
    torch.manual_seed(2)
    net = TinyResNet()
    g = torch.Generator().manual_seed(2)
    for bn in (net.bn0, net.bna, net.bnb):
        _randomise_bn(bn, g)
    with torch.no_grad():
        # stream channel 2: zero in both producers (stem, b); relu(bn0(0)) = 0 feeds the padded conv a,
        # relu(0 + bnb(0)) = 0.5 reaches fc through the mean
        net.stem.weight[2] = 0
        net.b.weight[2] = 0
        net.bn0.running_mean[2], net.bn0.bias[2] = 0.0, -1.0
        net.bnb.running_mean[2], net.bnb.bias[2] = 0.0, 0.5
        # stream channel 5: a zero stem filter, but b still writes channel 5: kept
        net.stem.weight[5] = 0
        # inner channels: a's filter 1 gives relu(bna(0)) = 0.25 > 0 into the zero-padded conv b: kept;
        # a's filter 6 gives a dead ReLU (0): removed
        net.a.weight[[1, 6]] = 0
        net.bna.running_mean[1], net.bna.bias[1] = 0.0, 0.25
        net.bna.running_mean[6], net.bna.bias[6] = 0.0, -2.0
    return net


class CatNet(nn.Module):
    """two branches concatenated along the channels, a conv over both, flatten, Linear."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 5, 1)
        self.c = nn.Conv2d(8, 4, 3)
        self.fc = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        z = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], 1)
        return self.fc(F.relu(self.c(z)).flatten(1))


def _catnet():
    torch.manual_seed(3)
    net = CatNet()
    with torch.no_grad():
        net.b.weight[1] = 0  # constant relu(bias) at concat channel 3 + 1 = 4, folded into c (no padding)
        net.c.weight[:, 0] = 0  # concat channel 0 (a's filter 0) unused
        net.c.weight[2] = 0  # constant channel after relu + flatten: 16 columns of fc
    return net


MODELS = {
    "mlp": (_mlp, lambda: torch.randn(32, 10, generator=torch.Generator().manual_seed(10))),
    "lenet": (_lenet, lambda: torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(11))),
    "resnet": (_resnet, lambda: torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(12))),
    "cat": (_catnet, lambda: torch.randn(8, 2, 6, 6, generator=torch.Generator().manual_seed(13))),
}

# hand-derived shapes of every changed layer: name -> weight shape (inputs as stored)
EXPECTED = {
    "mlp": {"0": (6, 8), "2": (5, 6), "4": (3, 5)},
    "lenet": {"conv1": (4, 1, 5, 5), "bn1": (4,), "conv2": (14, 4, 5, 5), "bn2": (14,), "fc1": (115, 350), "fc2": (84, 115), "fc3": (10, 84)},
    "resnet": {"stem": (7, 3, 3, 3), "bn0": (7,), "a": (7, 7, 3, 3), "bna": (7,), "b": (7, 7, 3, 3), "bnb": (7,), "fc": (4, 7)},
    "cat": {"a": (2, 2, 3, 3), "b": (4, 2, 1, 1), "c": (3, 6, 3, 3), "fc": (2, 48)},
}
# hand-counted parameters after compaction
EXPECTED_PARAMS = {
    "mlp": (6 * 8 + 6) + (5 * 6 + 5) + (3 * 5 + 3),  # 107
    "lenet": (4 * 25 + 4) + 8 + (14 * 4 * 25 + 14) + 28 + (115 * 350 + 115) + (84 * 115 + 84) + (10 * 84 + 10),
    "resnet": 7 * 27 + 14 + 7 * 7 * 9 + 14 + 7 * 7 * 9 + 14 + (4 * 7 + 4),
    "cat": (2 * 18 + 2) + (4 * 2 + 4) + (3 * 6 * 9 + 3) + (2 * 48 + 2),
}


def _layer(model, name):
    m = model.get_submodule(name)
    return m.layer if isinstance(m, nn.Sequential) and "layer" in m._modules else m


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def _snapshot(model, X):
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return sd, [m.training for m in model.modules()], C._forward(model, (X,))


def _assert_untouched(model, snap, X):
    sd, flags, out = snap
    now = model.state_dict()
    assert set(now) == set(sd)
    for k, v in sd.items():
        assert torch.equal(now[k], v), k
    assert [m.training for m in model.modules()] == flags
    assert torch.equal(C._forward(model, (X,)), out)  # still runs, same function


def _close(a, b, rtol=1e-5):
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= rtol * float(b.abs().max())


# ----------------------------------------------------------------- shapes, counts, outputs


@pytest.mark.parametrize("kind", list(MODELS))
def test_compact_removes_exactly_the_hand_made_structures(kind):
    make, data = MODELS[kind]
    net, X = make(), data()
    net.train()  # compact works in eval mode and restores the flags
    snap = _snapshot(net, X)
    small = pt.compact(net, X)
    _assert_untouched(net, snap, X)
    for name, shape in EXPECTED[kind].items():
        assert tuple(_layer(small, name).weight.shape) == shape, name
    assert _n_params(small) == EXPECTED_PARAMS[kind]
    net.eval()
    with torch.no_grad():
        ref = net(X)
        _close(small(X), ref)
        X2 = torch.randn(X.shape, generator=torch.Generator().manual_seed(99))  # unseen inputs too
        _close(small(X2), net(X2))


def test_mlp_feature_selection_and_folded_biases_by_hand():
    net, X = _mlp(), MODELS["mlp"][1]()
    small = pt.compact(net, X)
    sel = small[0].inputs
    assert isinstance(sel, pt.ClusteredInputs) and sel.labels is None
    assert sel.index.tolist() == [0, 1, 3, 4, 5, 6, 8, 9]
    W0, b0, W2, b2, b4 = net[0].weight.detach(), net[0].bias.detach(), net[2].weight.detach(), net[2].bias.detach(), net[4].bias.detach()
    rows0 = [0, 1, 2, 4, 6, 7]  # hidden 3 (constant) and 5 (unused) removed
    assert torch.equal(small[0].layer.weight, W0[rows0][:, sel.index])
    assert torch.equal(small[0].layer.bias, b0[rows0])
    rows2 = [0, 2, 3, 4, 5]
    kappa = F.relu(torch.tensor(0.7))  # hidden 3's constant output
    assert torch.equal(small[2].bias, (b2.double() + W2[:, 3].double() * kappa.double()).float()[rows2])
    assert torch.equal(small[2].weight, W2[rows2][:, rows0])
    assert torch.equal(small[4].bias, b4)  # the dead unit's constant is 0
    counts = pt.removable_counts(net, X)
    assert counts == {"0": (2, 2, 88 - 54), "2": (1, 2, 54 - 35), "4": (0, 1, 21 - 18)}


def test_lenet_fold_through_bn_relu_pool_and_flatten():
    net, X = _lenet(), MODELS["lenet"][1]()
    small = pt.compact(net, X)
    net.eval()
    with torch.no_grad():
        h = net.pool(F.relu(net.bn1(net.conv1(X))))
        z = net.pool(F.relu(net.bn2(net.conv2(h))))
    kappa3 = z[0, 3, 0, 0]  # conv2's zero filter 3: a constant map
    assert torch.all(z[:, 3] == kappa3)
    # conv1's zero filters also fold into conv2's bias; fc1's bias gets 25 columns x kappa3
    W = net.fc1.weight.detach().double()
    expect = net.fc1.bias.detach().double() + W[:, 75:100] @ torch.full((25,), float(kappa3), dtype=torch.float64)
    keep = [i for i in range(120) if not 10 <= i < 15]
    torch.testing.assert_close(small.fc1.bias, expect.float()[keep], rtol=0, atol=0)
    kept_channels = [c for c in range(16) if c not in (3, 7)]
    assert torch.equal(small.bn2.running_mean, net.bn2.running_mean[kept_channels])


def test_residual_coupling_keeps_channels_one_branch_still_writes():
    net, X = _resnet(), MODELS["resnet"][1]()
    counts = pt.removable_counts(net, X)
    # the stem has two zero filters (2 and 5), but only channel 2 is zero in every producer
    assert pt.weight_metrics(net.stem.weight, "filter").zero_rows == 2
    assert counts["stem"][0] == 1 and counts["b"][0] == 1
    # a: filter 6 (dead ReLU) removed, filter 1 (constant 0.25 into a zero-padded conv) kept;
    # a reads the stream, which lost channel 2
    assert counts["a"][:2] == (1, 1)
    assert counts["b"][1] == 1 and counts["fc"][:2] == (0, 1)


def test_concat_maps_each_branch_to_its_slice():
    net, X = _catnet(), MODELS["cat"][1]()
    small = pt.compact(net, X)
    W = net.c.weight.detach()
    kept_in = [1, 2, 3, 5, 6, 7]  # a's channels 1, 2 then b's 0, 2, 3, 4 (3 + index)
    assert torch.equal(small.c.weight, W[[0, 1, 3]][:, kept_in])
    # b's filter 1: relu(bias) at concat channel 4, folded into c's bias (no padding)
    kappa = F.relu(net.b.bias.detach()[1])
    expect = net.c.bias.detach().double() + W[:, 4].double().sum((1, 2)) * kappa.double()
    assert torch.equal(small.c.bias, expect.float()[[0, 1, 3]])


# ----------------------------------------------------------------- ties and parametrizations


def _tied_mlp():
    """GrOWL's stage 2 by hand: both layers' input neurons tied, two pruned rows."""
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))
    pt.tie_rows(net[0], np.array([0, 0, 1, -1, 2, 1, 3, -1, 0, 4]))
    pt.tie_rows(net[2], np.array([0, 1, 0, -1, 2, 2, 1, 3]))
    return net, torch.randn(32, 10, generator=torch.Generator().manual_seed(14))


def test_growl_ties_become_one_column_per_cluster_with_summed_inputs():
    net, X = _tied_mlp()
    snap = _snapshot(net, X)
    small = pt.compact(net, X)
    _assert_untouched(net, snap, X)
    assert C.parametrize.is_parametrized(net[0])  # the original keeps its TiedRows
    first, second = small[0], small[2]
    assert first.inputs.index.tolist() == [0, 1, 2, 4, 5, 6, 8, 9]
    assert first.inputs.labels.tolist() == [0, 0, 1, 2, 1, 3, 0, 4]
    # layer 2's input 3 is a pruned row (label -1): hidden neuron 3 goes from layer 0 too
    assert tuple(first.layer.weight.shape) == (7, 5)
    assert second.inputs.index.tolist() == [0, 1, 2, 3, 4, 5, 6]  # hidden 0, 1, 2, 4, 5, 6, 7
    assert second.inputs.labels.tolist() == [0, 1, 0, 2, 2, 1, 3]
    assert tuple(second.layer.weight.shape) == (3, 4)
    W = net[0].weight.detach()
    assert torch.equal(first.layer.weight, W[[0, 1, 2, 4, 5, 6, 7]][:, [0, 2, 4, 6, 9]])
    assert _n_params(small) == (7 * 5 + 7) + (3 * 4 + 3)
    with torch.no_grad():
        _close(small(X), net.eval()(X))
    counts = pt.removable_counts(net, X)
    assert counts["0"] == (1, 10 - 5, 88 - 42) and counts["2"] == (0, 8 - 4, 27 - 15)


def test_conv_input_channel_ties():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(96, 3))
    pt.tie_rows(net[2], np.array([0, 1, 0, 1]))
    X = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(15))
    small = pt.compact(net, X)
    red = small[2].inputs
    assert red.dim == 1 and red.labels.tolist() == [0, 1, 0, 1] and red.n_clusters == 2
    assert tuple(small[2].layer.weight.shape) == (6, 2, 3, 3)
    with torch.no_grad():
        _close(small(X), net.eval()(X))


def test_unbatched_conv_inputs_are_selected_and_summed_along_their_channels():
    # an unbatched Conv input (C, H, W) has its channels at dim 0: ClusteredInputs(dim=1)
    # selected rows of the image and compact raised CompactionError
    torch.manual_seed(25)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Conv2d(6, 2, 3))
    with torch.no_grad():
        net[0].weight[:, 1] = 0  # input channel 1 unused: a selection
    pt.tie_rows(net[2], np.array([0, 1, 0, 1]))  # a sum of channels 0 + 2 and 1 + 3
    X = torch.randn(3, 9, 9, generator=torch.Generator().manual_seed(26))
    small = pt.compact(net, X)
    assert small[0].inputs.dim == 0 and small[2].inputs.dim == 0 and small.compaction_spec["inputs"]["2"]["dim"] == 0
    assert tuple(small[0].layer.weight.shape) == (4, 2, 3, 3) and tuple(small[2].layer.weight.shape) == (6, 2, 3, 3)
    X2 = torch.randn(3, 9, 9, generator=torch.Generator().manual_seed(27))
    with torch.no_grad():
        _close(small(X2), net.eval()(X2))
    rep = pt.compaction_report(net, small, X, repeats=1)
    assert rep.layers[1].macs == (6 * 4 * 9 * 25, 6 * 2 * 9 * 25 + 4 * 49)  # 4 summed inputs at 7 x 7 positions


def test_affine_scaling_and_prune_masks_are_read_through_the_effective_weight():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    pt.affine_scaling(net[0])
    with torch.no_grad():
        net[0].parametrizations.weight[0].omega[1] = 0  # theta = q * omega: row 1 is zero, q is not
    mask = torch.ones(2, 5)
    mask[:, 3] = 0  # column 3 masked, weight_orig keeps its values
    prune.custom_from_mask(net[2], "weight", mask)
    X = torch.randn(16, 6, generator=torch.Generator().manual_seed(16))
    snap = _snapshot(net, X)
    small = pt.compact(net, X)
    _assert_untouched(net, snap, X)
    assert hasattr(net[2], "weight_mask")
    assert tuple(small[0].weight.shape) == (3, 6) and tuple(small[2].weight.shape) == (2, 3)
    with torch.no_grad():
        _close(small(X), net.eval()(X))


def test_a_spectral_norm_in_training_mode_is_baked_at_its_eval_value():
    # baking the copy in training mode ran one more power iteration of the spectral
    # norm, so its weight was not the one of the eval-mode outputs (CompactionError)
    torch.manual_seed(24)
    last = nn.Linear(8, 3)
    with torch.no_grad():  # singular values 1, 0.95, 0.5: the power iteration converges slowly
        U, _, Vh = torch.linalg.svd(torch.randn(3, 8), full_matrices=False)
        last.weight.copy_(U @ torch.diag(torch.tensor([1.0, 0.95, 0.5])) @ Vh)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), torch.nn.utils.parametrizations.spectral_norm(last))
    with torch.no_grad():
        net[0].weight[2] = 0
    net.train()
    X = torch.randn(16, 6, generator=torch.Generator().manual_seed(25))
    snap = _snapshot(net, X)
    small = pt.compact(net, X)
    _assert_untouched(net, snap, X)
    assert tuple(small[2].weight.shape) == (3, 7)
    with torch.no_grad():
        _close(small(X), net.eval()(X))


def test_groups_that_cannot_be_removed_are_left_and_noted():
    # x + conv(x) with x the model's input: conv's channels are pinned by the input
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return self.c2(x + self.c1(x)).mean((2, 3))

    torch.manual_seed(7)
    net = Skip()
    with torch.no_grad():
        net.c2.weight[:, 0] = 0  # unused by c2, but x's channel 0 still flows into the sum
    X = torch.randn(4, 3, 5, 5)
    small = pt.compact(net, X)
    assert tuple(small.c1.weight.shape) == (3, 3, 1, 1)
    assert any("outside the graph" in n for n in small.compaction_notes)


def test_a_wrong_torch_pruning_mapping_is_caught_and_left_alone():
    # Torch-Pruning 1.6 merges a, b and c into one group with wrong indices when a
    # flatten and a spatial mean are concatenated; the mapping check refuses it
    class CatMean(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 2, 1)
            self.c, self.fc = nn.Conv2d(5, 4, 3), nn.Linear(4 * 4 * 4 + 5, 2)

        def forward(self, x):
            z = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], 1)
            return self.fc(torch.cat([self.c(z).flatten(1), z.mean((2, 3))], 1))

    torch.manual_seed(9)
    net = CatMean()
    with torch.no_grad():
        net.b.weight[1] = 0
        net.c.weight[:, 0] = 0
    X = torch.randn(8, 2, 6, 6, generator=torch.Generator().manual_seed(18))
    small = pt.compact(net, X)
    assert any("Torch-Pruning maps" in n for n in small.compaction_notes)
    with torch.no_grad():
        _close(small(X), net.eval()(X))


def test_a_pixel_shuffle_is_left_alone_not_an_index_error():
    # Torch-Pruning takes PixelShuffle (8 channels -> 2) for an elementwise op and
    # maps the conv's 8 channels to 8 input columns of the next conv, which has 2:
    # compact raised IndexError from inside instead of leaving the group alone
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(), nn.Conv2d(2, 4, 1))
    with torch.no_grad():
        net[0].weight[1] = 0
    X = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(30))
    small = pt.compact(net, X)
    assert tuple(small[0].weight.shape) == (8, 3, 3, 3) and tuple(small[3].weight.shape) == (4, 2, 1, 1)
    assert any("out of its 2" in n for n in small.compaction_notes)
    X2 = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(31))
    with torch.no_grad():
        _close(small(X2), net.eval()(X2))


class _Mixing(nn.Module):
    """Linear, an operation across the hidden channels, Linear."""

    def __init__(self, mix):
        super().__init__()
        self.a, self.b, self.mix = nn.Linear(4, 4), nn.Linear(4, 2), mix

    def forward(self, x):
        return self.b(self.mix(self.a(x)))


MIXES = {
    "amax": lambda z: z - z.amax(-1, keepdim=True),
    "softmax": lambda z: torch.softmax(z, -1),
    "flip": lambda z: z.flip(-1),
}


@pytest.mark.parametrize("mix", list(MIXES))
def test_a_channel_mixed_into_the_others_is_kept(mix):
    # Torch-Pruning takes these operations for elementwise ones: hidden channel 3,
    # unread by b, still changes every channel b reads (through the maximum even
    # though it is never the largest on X: removing it passed the output check)
    torch.manual_seed(21)
    net = _Mixing(MIXES[mix])
    with torch.no_grad():
        net.b.weight[:, 3] = 0
        net.a.bias[3] = -30.0
    X = torch.randn(64, 4, generator=torch.Generator().manual_seed(22))
    small = pt.compact(net, X)
    assert tuple(small.a.weight.shape) == (4, 4) and tuple(small.b.weight.shape) == (2, 4)
    assert any("mixes its channels" in n for n in small.compaction_notes)
    X2 = 20 * torch.randn(64, 4, generator=torch.Generator().manual_seed(23))  # channel 3 now wins the maximum
    with torch.no_grad():
        _close(small(X2), net.eval()(X2))


def test_a_constant_fed_by_the_other_channels_is_kept_on_a_single_sample():
    # a.weight[3] = 0, but cumsum makes channel 3 the sum of all of a's outputs:
    # on a batch of one sample b's input looked constant, the value was folded
    # and the compact model was wrong on every other input (the NaN probe only
    # looked at what channel 3 reaches, not at what reaches it)
    class CumSum(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.a(x).cumsum(-1))

    torch.manual_seed(3)
    net = CumSum()
    with torch.no_grad():
        net.a.weight[3] = 0
    small = pt.compact(net, torch.randn(1, 4, generator=torch.Generator().manual_seed(32)))
    assert tuple(small.a.weight.shape) == (4, 4) and tuple(small.b.weight.shape) == (2, 4)
    assert any("depend on its other channels" in n for n in small.compaction_notes)
    X2 = torch.randn(16, 4, generator=torch.Generator().manual_seed(33))
    with torch.no_grad():
        _close(small(X2), net.eval()(X2))
    # a zero row that nothing else feeds is still folded from a single sample
    mlp = _mlp()
    assert [tuple(p.shape) for p in pt.compact(mlp, MODELS["mlp"][1]()[:1]).parameters()] == [
        tuple(p.shape) for p in pt.compact(mlp, MODELS["mlp"][1]()).parameters()
    ]


def test_compact_under_inference_mode_is_the_same_and_trainable():
    # the graph is autograd's: under torch.inference_mode nothing was traced, so only
    # the feature selection was done ("no Linear/Conv reads it"), with inference tensors
    make, data = MODELS["mlp"]
    net, X = make(), data()
    ref = pt.compact(net, X)
    with torch.inference_mode():
        small = pt.compact(net, X.clone())  # an inference tensor as example_inputs too
    assert [tuple(p.shape) for p in small.parameters()] == [tuple(p.shape) for p in ref.parameters()]
    assert not any(p.is_inference() for p in small.parameters())
    small.train()
    small(X).sum().backward()  # fine-tuning the compact model works
    assert all(p.grad is not None for p in small.parameters())


def test_compacting_a_compact_model_changes_nothing():
    net, X = _tied_mlp()
    small = pt.compact(net, X)
    again = pt.compact(small, X)
    assert [tuple(p.shape) for p in again.parameters()] == [tuple(p.shape) for p in small.parameters()]
    assert again.compaction_spec["modules"] == {} and again.compaction_spec["inputs"] == {}


def test_every_channel_zero_keeps_one():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.zero_()
    X = torch.randn(8, 4, generator=torch.Generator().manual_seed(17))
    small = pt.compact(net, X)
    assert tuple(small[2].weight.shape) == (2, 1)
    with torch.no_grad():
        _close(small(X), net.eval()(X))


# ----------------------------------------------------------------- saving


@pytest.mark.parametrize("kind", list(MODELS))
def test_checkpoint_round_trip_through_a_fresh_instance(kind):
    make, data = MODELS[kind]
    net, X = make(), data()
    small = pt.compact(net, X)
    buf = io.BytesIO()
    torch.save({"spec": small.compaction_spec, "state_dict": small.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)  # weights_only: the spec is plain data
    fresh = {"mlp": lambda: nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)),
             "lenet": LeNet5, "resnet": TinyResNet, "cat": CatNet}[kind]()
    rebuilt = pt.rebuild_compact(fresh, ckpt["spec"])
    rebuilt.load_state_dict(ckpt["state_dict"])  # strict: same keys and shapes
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(X), small(X))


def test_tied_checkpoint_is_smaller_than_the_dense_one_in_proportion():
    net, X = _lenet(), MODELS["lenet"][1]()
    # fc1's first 50 inputs (channels 0 and 1) tied in pairs
    pt.tie_rows(net.fc1, np.concatenate([np.arange(50) // 2, 25 + np.arange(350)]))
    small = pt.compact(net, X)
    assert tuple(small.fc1.layer.weight.shape) == (115, 325)
    assert small.fc1.inputs.labels is not None and small.fc1.inputs.n_clusters == 325
    dense, compact_bytes = C._saved_bytes(net), C._saved_bytes(small)
    t0, t1 = C._tensor_bytes(net, ""), C._tensor_bytes(small, "")
    # the stored tensors: 4 bytes per parameter and running statistic, 8 per index, label and counter
    n_stats = 2 * (4 + 14)
    assert t1 == 4 * (_n_params(small) + n_stats) + 8 * (2 * 350 + 2)
    assert compact_bytes < dense
    # the file is the tensors plus a per-entry overhead comparable to the dense checkpoint's
    extra_entries = len(small.state_dict()) - len(net.state_dict())
    assert compact_bytes - t1 <= dense - t0 + 256 * max(extra_entries, 0) + 512
    assert compact_bytes <= dense * t1 / t0 + 4096


def test_tied_layer_with_nothing_to_remove_keeps_a_plain_layout():
    # TiedRows computes a Linear's weight as the transpose of its tied columns:
    # baked as it is, the compact layer kept that layout (strides (1, out)), and
    # the checkpoint reloaded into a fresh Linear (contiguous) gave other
    # outputs in the last bits (matmul rounds by layout)
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 10))
    pt.tie_rows(net[0], np.arange(784))  # every input its own cluster: nothing tied or pruned
    X = torch.rand(128, 784, generator=torch.Generator().manual_seed(16))
    small = pt.compact(net, X)
    assert not net[0].weight.is_contiguous()  # the parametrized original: the case above
    assert all(p.is_contiguous() for p in small.parameters())
    buf = io.BytesIO()
    torch.save({"spec": small.compaction_spec, "state_dict": small.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)
    rebuilt = pt.rebuild_compact(nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 10)), ckpt["spec"])
    rebuilt.load_state_dict(ckpt["state_dict"])
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(X), small.eval()(X))


# ----------------------------------------------------------------- metrics and report


def test_model_metrics_gains_removable_counts_and_keeps_the_rest():
    net, X = _lenet(), MODELS["lenet"][1]()
    plain = pt.model_metrics(net, example_input=X, removable=False)
    m = pt.model_metrics(net, example_input=X)
    for name in plain:
        for f in ("n_weights", "n_nonzero", "zero_rows", "dense_flops", "kept_flops"):
            assert getattr(m[name], f) == getattr(plain[name], f)
        assert plain[name].removable_params is None
    assert (m["conv1"].removable_out, m["conv1"].removable_in, m["conv1"].removable_params) == (2, 0, 2 * 25 + 2)
    assert (m["conv2"].removable_out, m["conv2"].removable_in) == (2, 2)
    assert m["conv2"].removable_params == 16 * 6 * 25 + 16 - (14 * 4 * 25 + 14)
    assert (m["fc1"].removable_out, m["fc1"].removable_in) == (5, 50)
    assert m["fc1"].n_bias == 120
    assert m["total"].removable_out == 2 + 2 + 5
    assert m["total"].removable_params == sum(m[n].removable_params for n in ("conv1", "conv2", "fc1", "fc2", "fc3"))
    assert "removable" in pt.format_metrics(m) and "removable" not in pt.format_metrics(plain)
    # the removable cell is out/in/params (in/out swapped survived: only "removable" was checked)
    rows = {line.split(" | ")[0][2:]: line for line in pt.format_metrics(m).splitlines()[2:]}
    assert rows["fc1"].endswith(f"| 5/50/{m['fc1'].removable_params} |")
    assert rows["total"].endswith(f"| 9/{m['total'].removable_in}/{m['total'].removable_params} |")
    assert pt.model_metrics(net)["total"].removable_out is None  # no example input: not counted


def test_compaction_report_counts_by_hand():
    net, X = _mlp(), MODELS["mlp"][1]()
    small = pt.compact(net, X)
    rep = pt.compaction_report(net, small, X, repeats=2)
    rows = {r.name: r for r in rep.layers}
    assert [r.name for r in rep.layers] == ["0", "2", "4"]
    assert rows["0"].params == (88, 54) and rows["2"].params == (54, 35) and rows["4"].params == (21, 18)
    assert rows["0"].macs == (80, 48) and rows["2"].macs == (48, 30) and rows["4"].macs == (18, 15)
    assert rep.total.params == (163, 107) and rep.total.macs == (146, 93)
    assert rep.total.bytes == (C._saved_bytes(net), C._saved_bytes(small))
    assert rows["0"].bytes == (88 * 4, 54 * 4 + 8 * 8)  # + the int64 selection index
    assert all(r.latency_ms[0] > 0 and r.latency_ms[1] > 0 for r in rep.layers + [rep.total])
    text = str(rep)
    assert "| total |" in text and "163 -> 107" in text


def test_report_counts_cluster_sums_as_adds():
    torch.manual_seed(8)
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    pt.tie_rows(net[0], np.array([0, 0, 1, 1, 2, -1]))
    X = torch.randn(8, 6)
    small = pt.compact(net, X)
    rep = pt.compaction_report(net, small, X, repeats=1)
    assert rep.layers[0].macs == (24, 4 * 3 + 5)  # 3 stored columns x 4 outputs + 5 summed inputs


# ----------------------------------------------------------------- errors


def test_bad_input_errors():
    net, X = _mlp(), MODELS["mlp"][1]()
    with pytest.raises(TypeError, match="model"):
        pt.compact("net", X)
    with pytest.raises(TypeError, match="example_inputs"):
        pt.compact(net, [1.0, 2.0])
    with pytest.raises(TypeError, match="example_inputs"):
        pt.compact(net, ())
    with pytest.raises(ValueError, match="example_inputs"):
        pt.compact(net, torch.randn(4, 7))
    with pytest.raises(ValueError, match="spec"):
        pt.rebuild_compact(net, {"modules": {}})
    with pytest.raises(ValueError, match="repeats"):
        pt.compaction_report(net, net, X, repeats=0)
    with pytest.raises(ValueError, match="labels"):
        pt.ClusteredInputs(-1, torch.tensor([0, 1]), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="example_input"):
        pt.model_metrics(net, removable=True)
    with pytest.raises(ValueError, match=r"^index must be 1-D, got shape \(2, 1\)$"):
        pt.ClusteredInputs(-1, torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match=r"^labels must have the shape of index \(2,\), got \(3,\)$"):
        pt.ClusteredInputs(-1, torch.tensor([0, 1]), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="^threads must be >= 1, got 0$"):
        pt.compaction_report(net, net, X, repeats=1, threads=0)
    small = pt.compact(net, X)
    fresh = _mlp()
    pt.tie_rows(fresh[0], np.arange(fresh[0].weight.shape[1]))
    with pytest.raises(ValueError, match="^module '0' is parametrized; rebuild from a plain instance$"):
        pt.rebuild_compact(fresh, small.compaction_spec)


def test_model_metrics_of_a_list_of_layers_and_when_removable_counts_fail(monkeypatch):
    """``layers`` as a list names them layer0, layer1, ...; where the
    dependency graph cannot be traced, removable=None warns and leaves the
    removable counts None (the other metrics as without them), and
    removable=True raises."""
    net, X = _mlp(), MODELS["mlp"][1]()
    listed = pt.model_metrics(net, [net[0], net[2]], example_input=X, removable=False)
    named = pt.model_metrics(net, {"layer0": net[0], "layer1": net[2]}, example_input=X, removable=False)
    assert list(listed) == ["layer0", "layer1", "total"] and listed == named

    def untraceable(model, example_inputs):
        raise C.CompactionError("Torch-Pruning could not trace the model: (stand-in)")

    monkeypatch.setattr(C, "removable_counts", untraceable)
    with pytest.warns(RuntimeWarning, match=r"^removable counts not computed: Torch-Pruning could not trace"):
        got = pt.model_metrics(net, [net[0], net[2]], example_input=X)
    assert got == listed and got["total"].removable_out is None
    with pytest.raises(C.CompactionError, match="stand-in"):
        pt.model_metrics(net, [net[0], net[2]], example_input=X, removable=True)


def test_a_model_on_the_meta_device_is_refused_naming_it():
    """A meta model has no values to compact: a ValueError naming the meta
    device, not 'Tensor.item() cannot be called on meta tensors' from inside."""
    with torch.device("meta"):
        net = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))
    for X in (torch.randn(4, 10, device="meta"), torch.randn(4, 10)):
        with pytest.raises(ValueError, match="meta device"):
            pt.compact(net, X)
    with pytest.raises(ValueError, match="meta device"):
        pt.compact(_mlp(), torch.randn(4, 10, device="meta"))


def test_outputs_that_differ_raise(monkeypatch):
    net, X = _mlp(), MODELS["mlp"][1]()
    real = C._constant

    def wrong(m, x, cols):
        v = real(m, x, cols)
        return None if v is None else v + 1.0  # a wrong constant is folded

    monkeypatch.setattr(C, "_constant", wrong)
    with pytest.raises(pt.CompactionError, match="differs"):
        pt.compact(net, X)


# ----------------------------------------------------------------- the example


def test_example_quick_mode_runs(capsys):
    # in-process (torch is already imported): examples/ is not a package
    spec = importlib.util.spec_from_file_location("proxlib_compaction_example", ROOT / "examples" / "compaction.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main(["--quick", "--threads", "1"])
    out = capsys.readouterr().out
    assert out.count("| total |") == 4  # the metrics table and the report, for each network
    assert out.count("outputs identical") == 2


def test_readme_compaction_snippet_runs():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Compaction") :]
    code = section[section.index("```python") + len("```python") : section.index("```", section.index("```python") + 9)]
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert tuple(ns["small"][0].layer.weight.shape) == (4, 10)
    assert torch.equal(ns["rebuilt"].eval()(ns["X"]), ns["small"](ns["X"]))


def test_compact_notes_the_ties_of_shared_parameters_it_holds_apart():
    # one weight held by two Linears (tied weights): the compact model held
    # them as two tensors, which then train apart, and said nothing
    torch.manual_seed(0)

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = torch.nn.Linear(6, 6), torch.nn.Linear(6, 6), torch.nn.Linear(6, 2)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.c(torch.relu(self.b(torch.relu(self.a(x)))))

    net = Tied()
    with torch.no_grad():
        net.a.weight[:, 5] = 0
    small = pt.compact(net, torch.randn(16, 6))
    assert [n for n in small.compaction_notes if "a.weight = b.weight" in n and "separate" in n]
    # without a tie, no such note
    untied = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    with torch.no_grad():
        untied[0].weight[:, 5] = 0
    assert not [n for n in pt.compact(untied, torch.randn(16, 6)).compaction_notes if "shared parameters" in n]


def test_macs_of_clustered_inputs_called_several_times():
    """A ClusteredInputs applied k times in the forward (a shared block) adds
    k times its sums: only its last call was counted (the hook overwrote the
    count, as model_metrics' did for layers)."""
    from proxlib.torch.compaction import _macs

    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.red = pt.ClusteredInputs(-1, torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1]), 2)
            self.lin = torch.nn.Linear(2, 3)

        def forward(self, x):
            return self.lin(self.red(x)) + self.lin(self.red(x))

    macs = _macs(Shared(), (torch.randn(2, 3),))
    assert macs["red"] == 2 * 3 and macs["lin"] == 2 * 6


def test_folded_constants_are_those_of_the_example_size_and_the_docs_say_so():
    # a zero row of phi is relu(1) = 1 per set element; a sum readout makes it N,
    # folded as the N of example_inputs: the compact model is off for other set
    # sizes, which the docs did not say ("the same outputs"); a mean is exact
    class DeepSets(nn.Module):
        def __init__(self, pool):
            super().__init__()
            self.phi, self.rho, self.pool = nn.Linear(3, 6), nn.Linear(6, 2), pool

        def forward(self, x):  # (batch, set size, 3)
            return self.rho(self.pool(F.relu(self.phi(x))))

    torch.manual_seed(2)
    X = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(34))
    X9 = torch.randn(4, 9, 3, generator=torch.Generator().manual_seed(35))
    for pool, exact in ((lambda h: h.sum(1), False), (lambda h: h.mean(1), True)):
        net = DeepSets(pool)
        with torch.no_grad():
            net.phi.weight[2], net.phi.bias[2] = 0, 1.0
        small = pt.compact(net, X)
        assert tuple(small.rho.weight.shape) == (2, 5)
        with torch.no_grad():
            assert torch.allclose(small(X9), net.eval()(X9), rtol=1e-5, atol=1e-6) == exact
    assert "only on inputs of that size" in " ".join(C.__doc__.split())
    assert "exact only for inputs\nof that size" in (ROOT / "README.md").read_text()


def test_compact_keeps_which_parameters_are_frozen():
    """A layer frozen before compaction (requires_grad=False, e.g. a
    fine-tuned backbone) stays frozen in the compact model; the others stay
    trainable."""
    net, X = _lenet(), MODELS["lenet"][1]()
    for p in net.conv1.parameters():
        p.requires_grad_(False)
    small = pt.compact(net, X)
    assert not any(p.requires_grad for p in small.conv1.parameters())
    assert small.conv2.weight.requires_grad and small.conv2.bias.requires_grad and small.bn2.weight.requires_grad


def test_a_compacted_batchnorm_reports_its_new_num_features():
    """A BatchNorm sliced with its channels says so: num_features is the
    size of its new tensors, as in one built at that size (repr, a later
    rebuild_compact from its spec)."""
    small = pt.compact(_lenet(), MODELS["lenet"][1]())
    for m in (small.bn1, small.bn2):
        assert m.num_features == m.weight.numel() == m.running_var.numel()
    assert small.bn2.num_features == 14


def test_compacted_layers_report_their_new_sizes():
    """Sliced Linear and Conv layers' size attributes (in/out_features,
    in/out_channels) are those of their new weights."""
    small = pt.compact(_lenet(), MODELS["lenet"][1]())
    for name, m in small.named_modules():
        if isinstance(m, nn.Linear):
            assert (m.out_features, m.in_features) == tuple(m.weight.shape), name
        elif isinstance(m, nn.Conv2d):
            assert (m.out_channels, m.in_channels) == tuple(m.weight.shape[:2]), name
    assert small.fc1.out_features == 115


class _Outputs(nn.Module):
    """An MLP whose forward returns more than one tensor: its logits with an
    integer tensor and a string (``"tuple"``) or in a dict with an int."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.a, self.b = nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = self.b(torch.relu(self.a(x)))
        return (h, h.argmax(1), "tag") if self.kind == "tuple" else {"logits": h, "classes": 3}


@pytest.mark.parametrize("kind", ["tuple", "dict"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_compact_a_model_with_non_tensor_outputs(kind, dtype):
    """Outputs that are not tensors (a str, an int in a dict) and integer
    tensors: Torch-Pruning's tracing failed on them ('str' object has no
    attribute 'grad_fn'); compact now traces the tensors only, removes the
    zero channels and returns a model whose outputs agree, the non-tensor
    ones equal, at the default tolerance of the dtype (float64's 1e-10)."""
    torch.manual_seed(0)
    net = _Outputs(kind).to(dtype)
    with torch.no_grad():
        net.a.weight[1] = 0
        net.a.bias[1] = 0  # hidden unit 1: always 0, removable
        net.b.weight[:, 3] = 0  # hidden unit 3: unread, removable
    x = torch.randn(16, 6, dtype=dtype)
    small = pt.compact(net, x)
    assert small.a.weight.shape == (3, 6) and small.b.weight.shape == (3, 3)
    with torch.no_grad():
        want, got = net(x), small(x)
    if kind == "tuple":
        assert got[2] == "tag" and torch.equal(got[1], want[1])
        want, got = want[0], got[0]
    else:
        assert got["classes"] == 3
        want, got = want["logits"], got["logits"]
    assert got.dtype == dtype
    tol = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(got, want, rtol=0, atol=tol * float(want.abs().max()))


@pytest.mark.parametrize("zeros, passes", [("none", 4), ("unused", 4 + 2 + 1), ("constant", 4 + 2 * 2 + 1)])
def test_compact_runs_the_forward_passes_its_docstring_counts(zeros, passes):
    """compact's Notes: 4 + g + (1 if g > 0) forward passes, g the NaN
    probes (one per group with removable channels, two where some are
    folded as constants); here two groups, unused or constant channels."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        if zeros == "unused":  # unit 1 of the first hidden layer, unit 2 of the second: no reader
            net[2].weight[:, 1] = 0
            net[4].weight[:, 2] = 0
        elif zeros == "constant":  # zero rows: constants, folded into the next bias
            net[0].weight[1] = 0
            net[2].weight[3] = 0
    count = [0]
    net.register_forward_pre_hook(lambda m, a: count.__setitem__(0, count[0] + 1))  # (copied with the model)
    small = pt.compact(net, torch.randn(8, 6))
    assert count[0] == passes
    assert [m.weight.shape[0] for m in small.modules() if isinstance(m, nn.Linear)] == ([5, 4, 2] if zeros == "none" else [4, 3, 2])


def _compacted_agrees(net, X, X2):
    """compact(net, X), checked: the original untouched, and the outputs
    equal to 1e-10 relative (float64) on X and on the unseen X2."""
    before = {k: v.clone() for k, v in net.state_dict().items()}
    small = pt.compact(net, X)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    with torch.no_grad():
        for inputs in (X, X2):
            want, got = net(inputs), small(inputs)
            assert got.shape == want.shape
            assert float((got - want).abs().max()) <= 1e-10 * max(float(want.abs().max()), 1e-300)
    return small


def _plain_copy(net):
    """A copy of ``net`` without its parametrizations (TiedRows): an instance
    of the architecture, as rebuild_compact takes it."""
    fresh = copy.deepcopy(net)
    for m in fresh.modules():
        if torch.nn.utils.parametrize.is_parametrized(m):
            torch.nn.utils.parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
    return fresh


def _checkpoint_route_agrees(plain, small, X):
    """rebuild_compact on ``plain`` (an instance of the original
    architecture), the compact state loaded: the compact model's outputs
    on X, bit for bit."""
    rebuilt = pt.rebuild_compact(plain, small.compaction_spec)
    rebuilt.load_state_dict(small.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(X), small(X))


@st.composite
def _zeroed_mlps(draw):
    """A float64 MLP of 2-4 Linear layers (widths 1-7) with activations,
    eval-mode BatchNorms (random running statistics) and Dropouts between
    them, some hidden units' rows zeroed (constants: their bias, through the
    activation) or their next layer's columns zeroed (unused), sometimes a
    whole layer's; and the number of unused units of each hidden layer."""
    n_layers = draw(st.integers(2, 4))
    widths = [draw(st.integers(1, 7)) for _ in range(n_layers + 1)]
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    mods, linears = [], []
    for i in range(n_layers):
        lin = nn.Linear(widths[i], widths[i + 1]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g, dtype=torch.float64))
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g, dtype=torch.float64))
        mods.append(lin)
        linears.append(lin)
        if i < n_layers - 1:
            if draw(st.booleans()):
                bn = nn.BatchNorm1d(widths[i + 1]).double()
                with torch.no_grad():
                    bn.running_mean.copy_(torch.randn(widths[i + 1], generator=g, dtype=torch.float64))
                    bn.running_var.copy_(torch.rand(widths[i + 1], generator=g, dtype=torch.float64) + 0.5)
                    bn.weight.copy_(torch.randn(widths[i + 1], generator=g, dtype=torch.float64))
                mods.append(bn)
            mods.append(draw(st.sampled_from([nn.ReLU, nn.Tanh, nn.GELU, nn.Identity]))())
            if draw(st.booleans()):
                mods.append(nn.Dropout(0.3))
    net = nn.Sequential(*mods).eval()
    with torch.no_grad():
        for i in range(n_layers - 1):  # hidden layer i: the output of linears[i], read by linears[i + 1]
            h = widths[i + 1]
            dead = draw(st.lists(st.sampled_from(["unused", "constant", "live"]), min_size=h, max_size=h))
            for j, kind in enumerate(dead):
                if kind == "unused":
                    linears[i + 1].weight[:, j] = 0
                elif kind == "constant":
                    linears[i].weight[j] = 0
    # some layers' input columns tied (TiedRows on "channel" rows: clusters of
    # equal columns, -1 a pruned column), as GrOWL's second stage leaves them
    for lin in linears:
        if draw(st.booleans()):
            n = lin.in_features
            pt.tie_rows(lin, np.array(draw(st.lists(st.integers(-1, max(n - 2, 0)), min_size=n, max_size=n))))
    with torch.no_grad():  # unused: a zero column of the next layer's effective (tied) weight
        unused = [int((linears[i + 1].weight == 0).all(0).sum()) for i in range(n_layers - 1)]
    X = torch.randn(16, widths[0], generator=g, dtype=torch.float64)
    X2 = torch.randn(16, widths[0], generator=g, dtype=torch.float64)
    return net, linears, unused, X, X2


@given(_zeroed_mlps())
def test_compact_random_mlps_equal_the_original_on_unseen_inputs(case):
    """Hypothesis: MLPs with unused and constant hidden units (whole layers
    of them too), BatchNorms, activations, dropouts and tied input columns
    (TiedRows, pruned columns among them): compact returns a
    model whose outputs equal the original's, in float64 to the default
    1e-10 relative, also on inputs it never saw (what is removed is unused
    or constant for every input, not only on example_inputs); every hidden
    layer loses at least its unused units, keeping one, and a tied layer
    keeps at most a column per cluster; the original is untouched; and the
    checkpoint route (rebuild_compact on a plain instance, the compact
    state loaded) gives the compact model's outputs bit for bit."""
    net, linears, unused, X, X2 = case
    small = _compacted_agrees(net, X, X2)
    kept = [m for m in small.modules() if isinstance(m, nn.Linear)]
    assert len(kept) == len(linears)
    for lin, k in zip(linears, kept):  # a tied layer stores one column per cluster of its kept inputs
        if torch.nn.utils.parametrize.is_parametrized(lin):
            labels = lin.parametrizations.weight[0].labels
            assert k.in_features <= max(1, len(set(labels.tolist()) - {-1}))
    for i, n_unused in enumerate(unused):
        width = linears[i].out_features
        assert kept[i].out_features <= max(1, width - n_unused), (i, width, n_unused, kept[i].out_features)
    # the checkpoint route: the skeleton rebuilt from a plain instance of the
    # architecture (no parametrizations), the compact state loaded into it
    _checkpoint_route_agrees(_plain_copy(net), small, X2)


@st.composite
def _zeroed_cnns(draw):
    """A float64 CNN: 2-3 Conv2d layers (1-5 channels, kernel 1-3, padding
    0 or 1), each but the last followed by an optional eval-mode BatchNorm2d
    and an activation, then a flatten and a Linear; some channels' filters
    zeroed (constants) or their next layer's input channels zeroed
    (unused); and the number of unused channels of each conv."""
    n_conv = draw(st.integers(2, 3))
    chans = [draw(st.integers(1, 3))] + [draw(st.integers(1, 5)) for _ in range(n_conv)]
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    mods, convs, size = [], [], 7
    for i in range(n_conv):
        k, pad = draw(st.integers(1, 3)), draw(st.integers(0, 1))
        conv = nn.Conv2d(chans[i], chans[i + 1], k, padding=pad).double()
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, dtype=torch.float64))
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g, dtype=torch.float64))
        mods.append(conv)
        convs.append(conv)
        size = size + 2 * pad - k + 1
        if draw(st.booleans()):
            bn = nn.BatchNorm2d(chans[i + 1]).double()
            with torch.no_grad():
                bn.running_mean.copy_(torch.randn(chans[i + 1], generator=g, dtype=torch.float64))
                bn.running_var.copy_(torch.rand(chans[i + 1], generator=g, dtype=torch.float64) + 0.5)
            mods.append(bn)
        mods.append(draw(st.sampled_from([nn.ReLU, nn.Tanh, nn.Identity]))())
    head = nn.Linear(chans[-1] * size * size, 3).double()
    mods += [nn.Flatten(), head]
    net = nn.Sequential(*mods).eval()
    readers = convs[1:] + [head]
    unused = []
    with torch.no_grad():
        for i, conv in enumerate(convs):
            c = chans[i + 1]
            kinds = draw(st.lists(st.sampled_from(["unused", "constant", "live"]), min_size=c, max_size=c))
            for j, kind in enumerate(kinds):
                if kind == "unused":
                    if readers[i] is head:  # the flatten's columns of channel j
                        head.weight[:, j * size * size:(j + 1) * size * size] = 0
                    else:
                        readers[i].weight[:, j] = 0
                elif kind == "constant":
                    conv.weight[j] = 0
            unused.append(kinds.count("unused"))
    for conv in convs:  # some convolutions' input channels tied (TiedRows on "channel" rows)
        if draw(st.booleans()):
            n = conv.in_channels
            pt.tie_rows(conv, np.array(draw(st.lists(st.integers(-1, max(n - 2, 0)), min_size=n, max_size=n))))
    with torch.no_grad():  # unused: zero in the reader's effective (tied) weight
        unused = [int((r.weight.reshape(r.weight.shape[0], c, -1) == 0).all(2).all(0).sum())
                  for r, c in zip(readers, chans[1:])]
    X = torch.randn(6, chans[0], 7, 7, generator=g, dtype=torch.float64)
    X2 = torch.randn(6, chans[0], 7, 7, generator=g, dtype=torch.float64)
    return net, convs, unused, X, X2


@given(_zeroed_cnns())
def test_compact_random_cnns_equal_the_original_on_unseen_inputs(case):
    """Hypothesis: the property of the MLPs above on convolutional nets
    (zero padding included, where a constant channel's fold would be wrong
    at the borders: such a channel is kept unless its constant is 0), with
    tied input channels and a flatten into the last layer."""
    net, convs, unused, X, X2 = case
    small = _compacted_agrees(net, X, X2)
    kept = [m for m in small.modules() if isinstance(m, nn.Conv2d)]
    assert len(kept) == len(convs)
    for i, n_unused in enumerate(unused):
        assert kept[i].out_channels <= max(1, convs[i].out_channels - n_unused), (i, convs[i].out_channels, n_unused)
    _checkpoint_route_agrees(_plain_copy(net), small, X2)


class _Residual(nn.Module):
    """h + b(act(a(h))), a and b Linear: the sum couples b's outputs with
    the block's input channels (one group for the dependency graph)."""

    def __init__(self, width: int, hidden: int, act: type):
        super().__init__()
        self.a, self.b, self.act = nn.Linear(width, hidden).double(), nn.Linear(hidden, width).double(), act()

    def forward(self, h):
        return h + self.b(self.act(self.a(h)))


class _Branches(nn.Module):
    """cat([act(a(h)), act(b(h))]): the concatenation gives each branch's
    channels their own slots of the next layer's input."""

    def __init__(self, width: int, wa: int, wb: int, act: type):
        super().__init__()
        self.a, self.b, self.act = nn.Linear(width, wa).double(), nn.Linear(width, wb).double(), act()

    def forward(self, h):
        return torch.cat([self.act(self.a(h)), self.act(self.b(h))], dim=1)


@st.composite
def _zeroed_residual_mlps(draw):
    """A stem Linear, 1-3 blocks (residual, or two branches concatenated),
    a head Linear (float64), with random zero rows and columns in every
    Linear (the sum's channels are removable only where every producer and
    reader of them agrees)."""
    width, n_in = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    mods = [nn.Linear(n_in, width).double(), nn.ReLU()]
    for _ in range(draw(st.integers(1, 3))):
        act = draw(st.sampled_from([nn.ReLU, nn.Tanh]))
        if draw(st.booleans()):
            mods.append(_Residual(width, draw(st.integers(1, 4)), act))
        else:
            wa, wb = draw(st.integers(1, 3)), draw(st.integers(1, 3))
            mods.append(_Branches(width, wa, wb, act))
            width = wa + wb
    mods.append(nn.Linear(width, 2).double())
    net = nn.Sequential(*mods).eval()
    with torch.no_grad():
        for lin in (m for m in net.modules() if isinstance(m, nn.Linear)):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g, dtype=torch.float64))
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g, dtype=torch.float64))
            rows = draw(st.lists(st.booleans(), min_size=lin.out_features, max_size=lin.out_features))
            cols = draw(st.lists(st.booleans(), min_size=lin.in_features, max_size=lin.in_features))
            lin.weight[torch.tensor(rows)] = 0
            lin.weight[:, torch.tensor(cols)] = 0
    X = torch.randn(12, n_in, generator=g, dtype=torch.float64)
    X2 = torch.randn(12, n_in, generator=g, dtype=torch.float64)
    return net, X, X2


@given(_zeroed_residual_mlps())
def test_compact_random_residual_mlps_equal_the_original_on_unseen_inputs(case):
    """Hypothesis: residual blocks couple channels across layers, and
    concatenations give branches slots of one input; whatever
    compact removes there, the outputs equal the original's to 1e-10
    relative on unseen inputs too, it never adds a parameter, and the
    checkpoint route gives the compact model's outputs bit for bit."""
    net, X, X2 = case
    small = _compacted_agrees(net, X, X2)
    assert sum(p.numel() for p in small.parameters()) <= sum(p.numel() for p in net.parameters())
    _checkpoint_route_agrees(copy.deepcopy(net), small, X2)
