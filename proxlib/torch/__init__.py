r"""PyTorch adapters for proxlib: proximal steps after ``optimizer.step()`` and the
seed papers' training procedures.  Importing this module imports torch;
``import proxlib`` alone never does.

Proximal steps
    :class:`ProximalStep` (``add`` terms, ``attach`` to an optimizer as a step
    post hook or call ``step``; ``value`` for logging), :class:`ProxTerm`,
    :func:`growl` / :func:`owl` (weights from a lambda builder),
    :class:`GroupExclusiveSequential` (the thesis' approximation).
Seed procedures
    GrOWL tying: :func:`find_tying`, :func:`row_similarity`, :class:`TiedRows`,
    :func:`tie_rows`, :func:`two_stage`, :func:`growl_two_stage`.
    SSL: :func:`add_ssl`.  Combined group + exclusive: :func:`add_group_exclusive`.
    Affine scaling: :class:`AffineScaling`, :func:`affine_scaling`,
    :func:`reweight`, :class:`AffineScalingSchedule`, :func:`magnitude_prune`,
    :func:`affine_scaling_prune`.
Metrics
    :func:`weight_metrics`, :func:`model_metrics`, :func:`format_metrics`.
Compaction (needs ``torch-pruning``: ``pip install "proxlib[compact]"``)
    :func:`compact`, :func:`rebuild_compact`, :func:`compaction_report`,
    :class:`ClusteredInputs`, :class:`CompactionReport`, :class:`CompactionError`.
Training helpers
    :func:`fit`, :func:`evaluate`; bundled digits: :func:`load_digits`.

Example: proximal SGD with GrOWL on the input neurons of the first layer.

>>> import torch, proxlib, proxlib.torch as pt
>>> _ = torch.manual_seed(0)
>>> net = torch.nn.Sequential(torch.nn.Linear(20, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
>>> opt = torch.optim.SGD(net.parameters(), lr=0.5)
>>> prox = pt.ProximalStep(opt)
>>> stair = lambda G: proxlib.owl_weights_stairwise(G, 0.05, 0.01, G // 2)
>>> _ = prox.add(net[0], pt.growl(stair), grouping="channel")
>>> _ = prox.attach()
>>> X, y = torch.randn(64, 20), torch.randint(0, 3, (64,))
>>> _ = pt.fit(net, X, y, opt, epochs=5, batch_size=16)
>>> pt.weight_metrics(net[0].weight).zero_rows > 0
True
"""

from .compaction import (
    ClusteredInputs,
    CompactionError,
    CompactionReport,
    LayerCost,
    compact,
    compaction_report,
    rebuild_compact,
    removable_counts,
)
from .data import load_digits
from .metrics import LayerMetrics, format_metrics, model_metrics, prunable_layers, weight_metrics
from .prox import GroupExclusiveSequential, ProximalStep, ProxTerm, growl, owl
from .reweighting import (
    AffineScaling,
    AffineScalingSchedule,
    affine_scaling,
    magnitude_prune,
    remove_affine_scaling,
    reweight,
)
from .structured import add_group_exclusive, add_ssl
from .training import (
    AffineScalingResult,
    TwoStageResult,
    affine_scaling_prune,
    evaluate,
    fit,
    growl_two_stage,
    two_stage,
)
from .tying import TiedRows, Tying, find_tying, row_similarity, tie_rows

__all__ = [
    "ProximalStep",
    "ProxTerm",
    "growl",
    "owl",
    "GroupExclusiveSequential",
    "Tying",
    "row_similarity",
    "find_tying",
    "TiedRows",
    "tie_rows",
    "two_stage",
    "growl_two_stage",
    "TwoStageResult",
    "add_ssl",
    "add_group_exclusive",
    "AffineScaling",
    "affine_scaling",
    "reweight",
    "AffineScalingSchedule",
    "magnitude_prune",
    "remove_affine_scaling",
    "affine_scaling_prune",
    "AffineScalingResult",
    "LayerMetrics",
    "weight_metrics",
    "model_metrics",
    "prunable_layers",
    "format_metrics",
    "fit",
    "evaluate",
    "load_digits",
    # compaction
    "compact",
    "rebuild_compact",
    "removable_counts",
    "compaction_report",
    "CompactionReport",
    "LayerCost",
    "ClusteredInputs",
    "CompactionError",
]
