r"""Physical compaction: a smaller network with the same outputs, built from the
zeros and ties that proxlib's structured penalties leave behind.

:func:`compact` returns a **new** model (the original is not modified) in which

1. **Zero output structures are gone, with everything coupled to them.**  The
   channels of a network form coupled groups: an output channel of a Conv /
   output neuron of a Linear, the BatchNorm entries it passes through, the
   channels added to it in residual connections, its slot in a concatenation
   and the input channels / columns (after a flatten: the block of columns) of
   every layer that reads it.  A group channel ``c`` is removed when either

   * every layer reading it has zero columns for it (it is unused); or
   * every layer producing it has an all-zero weight row (a zero filter /
     output neuron), so the channel is a constant :math:`\kappa_c` (the bias,
     through BatchNorm's shift, a ReLU, pooling, additions of such constants)
     and each reading layer can absorb it into its bias:

     .. math:: W x + b = W_{:,\bar c}\, x_{\bar c} + \big(b + W_{:,c}\,\kappa_c\big)

     (for a Conv reader: :math:`b + \kappa_c \sum_{\text{taps}} W_{:,c,\text{taps}}`,
     exact when the Conv does not zero-pad or when :math:`\kappa_c = 0`, e.g.
     a dead ReLU unit; otherwise the channel is kept).

   The constant is read from a forward pass on ``example_inputs`` at each
   reading layer, where it must be bit-for-bit constant over the batch and
   positions (it is whenever the producers' rows are zero and the path to
   the reader is per-channel; a channel that is not constant there is kept).
   It is the constant of inputs of ``example_inputs``' size: where the path
   to a reader sums over positions, tokens or set elements (a sum pooling or
   readout, a zero-padded average pool before a global pool), the compact
   model matches the original only on inputs of that size (a mean pooling
   is exact at any size).
2. **Zero input columns of a first layer** (a Linear / Conv whose input no
   removable layer produces, typically the network's input) become a feature
   selection: a :class:`ClusteredInputs` module in front picks the used inputs
   (``index_select``) and the layer keeps only their columns.
3. **Tied rows** (a :class:`~proxlib.torch.TiedRows` parametrization with
   grouping ``"channel"``: input neurons of a Linear, input channels of a
   Conv; equal labels are bit-identical rows, label -1 a pruned row) are stored
   once per cluster and the inputs are summed per cluster first,

   .. math:: \sum_j W_{:,j}\, x_j = \sum_k w_k \sum_{j \in C_k} x_j,

   so the layer's matrix product has one column per cluster.

Parametrized weights (TiedRows, AffineScaling, any ``torch.nn.utils.parametrize``
chain) and ``torch.nn.utils.prune`` masks are read through their effective
weight.  ``compact`` ends by running both models on ``example_inputs`` in
eval mode and raises :class:`CompactionError` unless every output agrees to
``rtol`` relative to the output's largest magnitude (by default 1e-10 where
every floating output is float64, 1e-5 where they are float32 or float64,
1e-2 otherwise: half precision); the other leaves of the output (integer
tensors, a str in a tuple, an int in a dict) must be equal.

The dependency graph (which channels are coupled, through BatchNorm,
residual additions, concatenations and flattens) is Torch-Pruning's
``DependencyGraph`` (``pip install "proxlib[compact]"``, imported only when a
function here runs).  Its groups are checked before use: a group that reaches
the model's output, passes through a layer other than Linear / ungrouped
Conv / BatchNorm (LayerNorm, grouped or transposed convs, embeddings, a
module called twice, unwrapped parameters ...), meets a tensor the graph does
not track (``x + conv(x)`` with ``x`` the model's input, a product with a
buffer) or whose index mapping is not one-to-one is left untouched (listed in
the result's ``compaction_notes``).  The last check matters: Torch-Pruning
1.6 merges unrelated layers into one group with wrong indices when, e.g., a
flatten and a spatial mean of the same tensor are concatenated.  Torch-Pruning
also takes every operation it does not know for an elementwise one, so
before removing a group's channels they are set to NaN at their producers
in a forward pass on ``example_inputs``: a group is left untouched when the
NaN reaches any other column of its readers or an output of the model (a
softmax, a mean or maximum over the channels, a flip or an index on the
way), since removing such a channel would change the other channels even
where the check on ``example_inputs`` cannot see it; conversely, a constant
channel is kept when the group's other channels, set to NaN, reach it (a
cumulative sum over the channels: on a single sample it looks constant).  The removal itself slices the weights
directly (one pass over the original indices), since the folding and the
ties need the original column of every kept input.  At least one channel of
every group is kept (PyTorch has no zero-channel convolution).  The equality
is that of eval mode (BatchNorm on its running statistics), in which the
compact model is returned.

Saving: the compact model is made of the original's modules with smaller
tensors (and, in front of reduced layers, ``nn.Sequential(inputs=ClusteredInputs,
layer=...)``).  Its ``compaction_spec`` attribute (a small dict of shapes,
JSON- and ``torch.load(weights_only=True)``-safe) rebuilds that skeleton from
a fresh instance of the original architecture with :func:`rebuild_compact`::

    small = pt.compact(net, X[:256])
    torch.save({"spec": small.compaction_spec, "state_dict": small.state_dict()}, "small.pt")
    ckpt = torch.load("small.pt")
    net2 = pt.rebuild_compact(Net(), ckpt["spec"])
    net2.load_state_dict(ckpt["state_dict"])

:func:`compaction_report` measures parameters, stored bytes, MACs and CPU
latency before and after, per layer and in total.
"""

from __future__ import annotations

import copy
import io
import statistics
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn.utils import parametrize, prune

from . import _bridge as B
from .metrics import _dense_flops
from .tying import TiedRows

__all__ = [
    "CompactionError",
    "ClusteredInputs",
    "compact",
    "rebuild_compact",
    "removable_counts",
    "LayerCost",
    "CompactionReport",
    "compaction_report",
]

_CONVS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
_LAYERS = (torch.nn.Linear,) + _CONVS
_SPEC_FORMAT = "proxlib.compact/1"
_SHAPE_ATTRS = ("in_features", "out_features", "in_channels", "out_channels", "num_features")


class CompactionError(RuntimeError):
    """The compacted model does not reproduce the original's outputs (or cannot run)."""


# ------------------------------------------------------------- the input module


class ClusteredInputs(torch.nn.Module):
    r"""Selects and sums the inputs of the layer that follows, along ``dim``.

    .. math:: y_k = \sum_{j\,:\,\mathrm{labels}_j = k} x_{\mathrm{index}_j}, \quad k = 0..n_{\mathrm{clusters}}-1

    With ``labels=None`` it is the selection :math:`y_j = x_{\mathrm{index}_j}`
    (``index_select``).  ``dim`` is -1 in front of a Linear (input neurons), 1
    in front of a Conv (input channels; 0 when :func:`compact` traced it on
    an unbatched input).  ``index`` and ``labels`` are
    buffers (in ``state_dict``).

    >>> import torch
    >>> m = ClusteredInputs(-1, torch.tensor([0, 2, 3]), torch.tensor([0, 1, 0]), 2)
    >>> m(torch.tensor([[1.0, 10.0, 2.0, 3.0]]))
    tensor([[4., 2.]])
    """

    def __init__(self, dim: int, index, labels=None, n_clusters: int | None = None):
        super().__init__()
        index = torch.as_tensor(index, dtype=torch.int64)
        if index.ndim != 1:
            raise ValueError(f"index must be 1-D, got shape {tuple(index.shape)}")
        self.dim = int(dim)
        self.register_buffer("index", index.clone())
        if labels is None:
            self.register_buffer("labels", None)
            self.n_clusters = int(index.numel())
        else:
            labels = torch.as_tensor(labels, dtype=torch.int64)
            if labels.shape != index.shape:
                raise ValueError(f"labels must have the shape of index {tuple(index.shape)}, got {tuple(labels.shape)}")
            k = int(labels.max()) + 1 if labels.numel() else 0
            self.n_clusters = k if n_clusters is None else int(n_clusters)
            if labels.numel() and (int(labels.min()) < 0 or k > self.n_clusters):
                raise ValueError(f"labels must lie in [0, n_clusters={self.n_clusters}), got [{int(labels.min())}, {k - 1}]")
            self.register_buffer("labels", labels.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.index_select(self.dim, self.index)
        if self.labels is None:
            return x
        shape = list(x.shape)
        shape[self.dim] = self.n_clusters
        return x.new_zeros(shape).index_add_(self.dim, self.labels, x)

    def extra_repr(self) -> str:
        kind = "select" if self.labels is None else "sum"
        return f"dim={self.dim}, n_inputs={self.index.numel()}, n_outputs={self.n_clusters}, {kind}"


# ------------------------------------------------------------------ helpers


def _as_args(example_inputs) -> tuple:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and example_inputs and all(isinstance(a, torch.Tensor) for a in example_inputs):
        return tuple(example_inputs)
    raise TypeError(f"example_inputs must be a tensor or a non-empty tuple of tensors (the forward's positional arguments), got {type(example_inputs).__name__}")


def _check_model(model, name: str = "model") -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")


class _eval_mode:
    """Eval mode for the duration, then every module's own ``training`` flag back."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        for m, t in self.flags:
            m.training = t


def _forward(model, args):
    with torch.no_grad(), _eval_mode(model):
        return model(*args)


def _leaves(out) -> list:
    return torch.utils._pytree.tree_flatten(out)[0]


def _default_rtol(outs) -> float:
    dts = {o.dtype for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point()}
    if dts and dts <= {torch.float64}:
        return 1e-10
    if dts and dts <= {torch.float32, torch.float64}:
        return 1e-5
    return 1e-2


def _compare(ref, got, rtol: float | None) -> None:
    r, g = _leaves(ref), _leaves(got)
    if len(r) != len(g):
        raise CompactionError(f"the compacted model returns {len(g)} outputs, the original {len(r)}")
    tol = _default_rtol(r) if rtol is None else float(rtol)
    for i, (a, b) in enumerate(zip(r, g)):
        if not isinstance(a, torch.Tensor):
            if a != b:
                raise CompactionError(f"output {i} differs: {b!r} instead of {a!r}")
            continue
        if not isinstance(b, torch.Tensor) or a.shape != b.shape:
            raise CompactionError(f"output {i} has shape {getattr(b, 'shape', None)} instead of {tuple(a.shape)}")
        if not a.is_floating_point():
            if not torch.equal(a, b):
                raise CompactionError(f"output {i} differs")
            continue
        if a.numel() == 0:
            continue
        scale = float(a.detach().abs().max())
        err = float((b.detach().to(a.dtype) - a.detach()).abs().max())
        if not err <= tol * max(scale, torch.finfo(a.dtype).tiny):
            raise CompactionError(
                f"output {i} differs from the original's by {err:.3g} (largest magnitude {scale:.3g}, allowed {tol:g} relative)"
            )


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy; tensors that ``deepcopy`` refuses (the computed ``weight`` of a
    pruned module is not a graph leaf) are copied detached (they are recomputed
    when the mask is baked)."""
    memo = {}
    for m in model.modules():
        for v in vars(m).values():
            if isinstance(v, torch.Tensor) and not v.is_leaf:
                memo[id(v)] = v.detach().clone()
    return copy.deepcopy(model, memo)


def _bake(model: torch.nn.Module) -> dict:
    """Replace parametrized and pruned tensors by plain parameters holding their
    effective values (in place, on a copy); return the channel tie labels of each
    module with a :class:`TiedRows` on its weight.  The values are those of
    eval mode, which the compaction reproduces (a spectral_norm computed in
    training mode would take one more power iteration)."""
    with _eval_mode(model):
        return _bake_eval(model)


def _bake_eval(model: torch.nn.Module) -> dict:
    ties = {}
    channel = B.canonical_grouping("channel")
    for m in list(model.modules()):
        if parametrize.is_parametrized(m):
            # a deep copy shares the parametrized class with the original, and
            # removing a parametrization deletes its property from that class
            cls = type(m)
            own = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
            m.__class__ = type(cls.__name__, cls.__bases__, own)
            for name in list(m.parametrizations.keys()):
                if name == "weight" and isinstance(m, _LAYERS):
                    for p in m.parametrizations[name]:
                        if isinstance(p, TiedRows) and B.canonical_grouping(getattr(p, "grouping", "channel")) == channel:
                            ties[m] = p.labels.detach().cpu().numpy().astype(np.int64)
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
                value = getattr(m, name)
                if isinstance(value, torch.nn.Parameter) and not value.is_contiguous():
                    # TiedRows gives a Linear the transpose of its tied columns:
                    # a plain layer holds the plain layout (a checkpoint reloads
                    # into contiguous parameters, and matmul rounds by layout)
                    setattr(m, name, _param(value, value))
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(m, hook._tensor_name)
    return ties


def _is_plain_layer(m) -> bool:
    return isinstance(m, torch.nn.Linear) or (isinstance(m, _CONVS) and m.groups == 1 and not m.transposed)


def _in_dim(m, ndim: int) -> int:
    """The dimension of ``m``'s input that holds its input channels, for an
    input of ``ndim`` dimensions (:func:`._bridge.channel_dim`; -1 for a
    Linear, as ClusteredInputs and the compaction spec take it)."""
    return -1 if isinstance(m, torch.nn.Linear) else B.channel_dim(m, ndim)


def _zero_padded(conv) -> bool:
    if conv.padding_mode != "zeros":
        return False
    if isinstance(conv.padding, str):
        return conv.padding == "same" and any(k > 1 for k in conv.kernel_size)
    return any(p > 0 for p in conv.padding)


# ---------------------------------------------------------------------- plan


@dataclass
class _Plan:
    out_remove: dict = field(default_factory=dict)  # Conv/Linear -> set of output rows
    in_remove: dict = field(default_factory=dict)  # Conv/Linear -> set of input columns
    bn_remove: dict = field(default_factory=dict)  # BatchNorm -> set of channels
    fold: dict = field(default_factory=dict)  # Conv/Linear -> float64 bias increment (out,)
    covered: set = field(default_factory=set)  # layers whose inputs some group covers
    traced: list = field(default_factory=list)  # plain layers seen by the graph, in model order
    in_dims: dict = field(default_factory=dict)  # traced layer -> channel dimension of its input
    notes: list = field(default_factory=list)  # groups left untouched, and why


def _torch_pruning():
    try:
        import torch_pruning
    except ImportError as e:
        raise ImportError('compaction needs Torch-Pruning: pip install "proxlib[compact]" (or torch-pruning)') from e
    return torch_pruning


def _trace(model, args):
    """Torch-Pruning's dependency graph of ``model`` and its output tensors."""
    tp = _torch_pruning()

    outputs = []
    dg = tp.DependencyGraph()
    dg.register_customized_layer(ClusteredInputs, tp.ops.CustomizedPruner())
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:  # the graph is read from autograd's
            p.requires_grad_(True)
        with torch.enable_grad():
            dg.build_dependency(
                model,
                example_inputs=args,
                forward_fn=lambda m, a: m(*a),
                # (its tensors only: Torch-Pruning flattens the outputs and reads each one's
                # grad_fn, and failed on a str, and on an int in a dict of outputs)
                output_transform=lambda out: (outputs.append(out), [o for o in _leaves(out) if isinstance(o, torch.Tensor)])[1],
                verbose=False,
            )
    except Exception as e:
        raise CompactionError(f"Torch-Pruning could not trace the model: {type(e).__name__}: {e}") from e
    finally:
        for p, f in flags:
            p.requires_grad_(f)
    out_fns = {o.grad_fn for o in _leaves(outputs[0]) if isinstance(o, torch.Tensor) and o.grad_fn is not None}
    return dg, out_fns


def _capture_inputs(model, layers, args):
    """Each layer's input on ``args`` (eval mode) and how often it was called."""
    seen: dict = {m: [] for m in layers}
    handles = [m.register_forward_pre_hook(lambda mod, a: seen[mod].append(a[0].detach())) for m in layers]
    try:
        _forward(model, args)
    finally:
        for h in handles:
            h.remove()
    return seen


def _plan(model: torch.nn.Module, args: tuple) -> _Plan:
    """What to remove and fold: every coupled group of Torch-Pruning's graph, checked."""
    dg, out_fns = _trace(model, args)
    plan = _Plan()
    layers = [m for m in model.modules() if isinstance(m, _LAYERS) and m in dg.module2node]
    inputs = _capture_inputs(model, layers, args)
    plan.traced = [m for m in layers if _is_plain_layer(m) and len(inputs[m]) == 1]
    plan.in_dims = {m: _in_dim(m, inputs[m][0].ndim) for m in plan.traced}
    names = {m: n for n, m in model.named_modules()}
    base = None  # where the model's outputs are NaN (for _mixes), computed once when needed
    for group in dg.get_all_groups():
        root = group[0].dep.target.module
        label = names.get(root, type(root).__name__)
        items, reason = _classify(dg, group, inputs, out_fns, names)
        plan.covered.update(m for m, _ in items["in"])
        maps = None
        if reason is None:
            maps, reason = _index_maps(items, names)
        if reason is not None:
            plan.notes.append(f"group of {label}: left as is, {reason}")
            continue
        roots = sorted({int(r) for _, it in items["out"] for r in it.root_idxs})
        removable, folds = _removable_channels(roots, items, maps, inputs)
        if removable and len(removable) == len(roots):
            removable = removable[1:]  # keep one channel: no zero-channel layers
            plan.notes.append(f"group of {label}: every channel is removable; one is kept")
        if removable:
            if base is None:
                base = [torch.isnan(o) if isinstance(o, torch.Tensor) and o.is_floating_point() else None for o in _leaves(_forward(model, args))]
            reason = _mixes(model, args, items, maps, removable, names, base)
            if reason is None:
                reason = _inflow(model, args, items, maps, [r for r in removable if folds[r]], names)
            if reason is not None:
                plan.notes.append(f"group of {label}: left as is, {reason}")
                continue
        targets = {"out": plan.out_remove, "in": plan.in_remove, "bn": plan.bn_remove}
        for r in removable:
            for (kind, m), by_root in maps.items():
                targets[kind].setdefault(m, set()).update(by_root.get(r, []))
            for m, d in folds[r].items():
                plan.fold[m] = plan.fold.get(m, 0) + d
    return plan


def _classify(dg, group, inputs, out_fns, names):
    """The group's producers ("out"), readers ("in") and BatchNorms ("bn"), and a
    reason to leave the group alone (None if there is none)."""
    T = _torch_pruning().ops.OPTYPE
    items: dict[str, list] = {"out": [], "in": [], "bn": []}
    reason = None
    for it in group:
        node, m = it.dep.target, it.dep.target.module
        reads = False  # a layer reading the channel: its own output does not matter
        if node.type in (T.CONV, T.LINEAR) and isinstance(m, _LAYERS):
            reads = not dg.is_out_channel_pruning_fn(it.dep.handler)
            items["in" if reads else "out"].append((m, it))
            if not _is_plain_layer(m) or len(inputs.get(m, ())) != 1:
                reason = f"{names.get(m, m)} is a grouped/transposed conv or is called more than once"
        elif node.type == T.BN:
            items["bn"].append((m, it))
        elif node.type not in (T.ELEMENTWISE, T.CONCAT, T.RESHAPE):
            reason = reason or f"it passes through {T(node.type).name} ({node.name})"
        elif node.type != T.RESHAPE and any(f is None for f, _ in getattr(node.grad_fn, "next_functions", ())):
            # e.g. x + conv(x) with x the model's input, or a product with a buffer:
            # the other operand keeps its channels, so none can be removed here
            reason = reason or f"it meets a tensor from outside the graph (an input or a buffer) at {node.name}"
        if node.type == T.OUTPUT or (node.grad_fn in out_fns and not reads):
            reason = "it reaches the model's output"
    if reason is None and not items["in"]:
        reason = "no Linear/Conv reads it"
    return items, reason


def _index_maps(items, names):
    """(kind, module) -> {group channel: [indices in the module]}, checked one-to-one
    (a reader may take several columns per channel, after a flatten)."""
    maps = {}
    for kind, pairs in items.items():
        for m, it in pairs:
            by_root: dict[int, list[int]] = {}
            owner: dict[int, int] = {}
            # e.g. a PixelShuffle, which Torch-Pruning takes for an elementwise operation
            n = m.num_features if kind == "bn" else m.weight.shape[1 if kind == "in" else 0]
            for i, r in zip(it.idxs, it.root_idxs):
                i, r = int(i), int(r)
                if not 0 <= i < n:
                    return None, f"Torch-Pruning maps a channel to {names.get(m, m)}'s index {i}, out of its {n}"
                if owner.setdefault(i, r) != r:
                    return None, f"Torch-Pruning maps {names.get(m, m)}'s index {i} to two channels"
                by_root.setdefault(r, []).append(i)
            if kind != "in" and any(len(v) != 1 for v in by_root.values()):
                return None, f"Torch-Pruning maps one channel to several outputs of {names.get(m, m)}"
            maps[(kind, m)] = by_root
    return maps, None


def _removable_channels(roots, items, maps, inputs):
    """The group channels that can go, and for each the float64 bias increments
    ``W[:, cols] @ kappa`` of its readers (empty for an unused channel)."""
    removable, folds = [], {}
    for r in roots:
        reads = [(m, maps[("in", m)].get(r, [])) for m, _ in items["in"]]
        reads = [(m, cols) for m, cols in reads if cols]
        if all(not bool((m.weight.detach()[:, cols] != 0).any()) for m, cols in reads):
            removable.append(r)  # unused: no reader has a non-zero column for it
            folds[r] = {}
            continue
        rows = [(m, maps[("out", m)].get(r)) for m, _ in items["out"]]
        if not all(row is not None and not bool((m.weight.detach()[row[0]] != 0).any()) for m, row in rows):
            continue  # some producer writes it
        contrib = {}
        for m, cols in reads:
            kappa = _constant(m, inputs[m][0], cols)
            if kappa is None or (isinstance(m, _CONVS) and _zero_padded(m) and bool((kappa != 0).any())):
                break
            Wc = m.weight.detach().to(torch.float64).index_select(1, torch.as_tensor(cols, device=m.weight.device))
            if isinstance(m, _CONVS):
                Wc = Wc.flatten(2).sum(2)
            contrib[m] = Wc @ kappa.to(device=Wc.device, dtype=torch.float64)
        else:
            removable.append(r)
            folds[r] = contrib
    return removable, folds



def _nan_probe(model, args, items, maps, nan_roots, watch_roots, names, *, complement: bool):
    """One forward pass on ``args`` with the channels of the group's roots
    ``nan_roots`` set to NaN at its producers' outputs.  At every reader, the
    input columns of ``watch_roots`` (with ``complement``: all its other
    columns) are checked for a NaN, and its NaN inputs are set back to 0 (a
    NaN goes no further than the group's readers).  Returns (the readers
    that saw one, the model's outputs), or (None, why) when the forward pass
    failed."""
    bad: list[str] = []
    handles = []

    def produce(mod, inp, out, rows):
        return out.index_fill(B.channel_dim(mod, out.ndim), torch.as_tensor(rows, device=out.device), float("nan"))

    def read(mod, a, cols):
        x = a[0]
        isnan = torch.isnan(x)
        d = B.channel_dim(mod, x.ndim)
        if complement:
            watched = torch.ones(x.shape[d], dtype=torch.bool)
            watched[cols] = False
            idx = watched.nonzero().flatten()
        else:
            idx = torch.as_tensor(cols, dtype=torch.long)
        if idx.numel() and bool(isnan.index_select(d, idx.to(x.device)).any()):
            bad.append(names.get(mod, type(mod).__name__))
        return (x.masked_fill(isnan, 0),) + tuple(a[1:])

    try:
        for m, _ in items["out"]:
            rows = sorted(i for r in nan_roots for i in maps[("out", m)].get(r, []))
            if rows:
                handles.append(m.register_forward_hook(lambda mod, i, o, rows=rows: produce(mod, i, o, rows)))
        for m, _ in items["in"]:
            cols = sorted(i for r in watch_roots for i in maps[("in", m)].get(r, []))
            handles.append(m.register_forward_pre_hook(lambda mod, a, cols=cols: read(mod, a, cols)))
        try:
            return bad, _leaves(_forward(model, args))
        except Exception as e:  # noqa: BLE001 (the probe is a check; any failure keeps the group)
            return None, f"{type(e).__name__}: {e}"
    finally:
        for h in handles:
            h.remove()


def _mixes(model, args, items, maps, removable, names, base) -> str | None:
    """Why the group's ``removable`` channels cannot go (None when they can).

    Torch-Pruning takes every operation it does not know (a softmax, a mean
    or a maximum over the channels, a flip, an index) for an elementwise one,
    so a channel that it couples only to its own readers' columns may still
    change the other channels on the way.  Each removable channel is set to
    NaN at its producers' outputs (:func:`_nan_probe`): it may then reach
    only its own columns of the group's readers, and no output of the model.
    """
    rm = set(removable)
    bad, out = _nan_probe(model, args, items, maps, rm, rm, names, complement=True)
    if bad is None:
        return f"a NaN probe of its removable channels failed ({out})"
    if bad:
        return f"an operation mixes its channels on the way to {sorted(set(bad))} (a channel set to NaN reaches other columns)"
    nan_out = {i for i, (o, b) in enumerate(zip(out, base))
               if b is not None and isinstance(o, torch.Tensor) and bool((torch.isnan(o) & ~b).any())}
    if nan_out:
        return f"its channels reach the model's output {sorted(nan_out)} other than through a Linear/Conv"
    return None


def _inflow(model, args, items, maps, folded, names) -> str | None:
    """Why the ``folded`` channels may not be constants (None when they are).

    The reverse of :func:`_mixes`: every other channel of the group is set to
    NaN at its producers, and no reader may see a NaN in a folded channel's
    columns.  Torch-Pruning takes a cumulative sum or a sort over the channels
    for an elementwise operation, and on a single sample the value a Linear
    reads passes the constancy check whatever it depends on.
    """
    if not folded:
        return None
    keep = set(folded)
    others = {r for m, _ in items["out"] for r in maps[("out", m)] if r not in keep}
    bad, why = _nan_probe(model, args, items, maps, others, keep, names, complement=False)
    if bad is None:
        return f"a NaN probe of its other channels failed ({why})"
    if bad:
        return f"its constant channels depend on its other channels on the way to {sorted(set(bad))} (a channel set to NaN reaches them)"
    return None


def _constant(m, x: torch.Tensor, cols) -> torch.Tensor | None:
    """The value of each column ``cols`` of layer ``m``'s input ``x`` if it is the
    same at every sample and position (bitwise), else None."""
    if isinstance(m, torch.nn.Linear):
        X = x.reshape(-1, x.shape[-1])[:, cols]
        v = X[0]
        return v if torch.equal(X, v.expand_as(X)) else None
    if x.ndim != m.weight.ndim:  # an unbatched Conv input
        return None
    X = x[:, cols].transpose(0, 1).reshape(len(cols), -1)
    v = X[:, 0]
    return v if torch.equal(X, v[:, None].expand_as(X)) else None


# -------------------------------------------------------------------- apply


def _keep(n: int, removed) -> torch.Tensor:
    removed = set(removed or ())
    return torch.tensor([i for i in range(n) if i not in removed], dtype=torch.int64)


def _param(value: torch.Tensor, like: torch.Tensor | None) -> torch.nn.Parameter:
    rg = like.requires_grad if like is not None else True
    return torch.nn.Parameter(value.detach().clone().contiguous(), requires_grad=rg)


def _apply_plan(plan: _Plan, keep_cols: dict) -> None:
    """Slice every affected module (original indices) and fold constants into biases.

    ``keep_cols`` receives, for each Linear/Conv, the original indices of its
    kept input columns.
    """
    for m in set(plan.out_remove) | set(plan.in_remove) | set(plan.fold):
        W = m.weight.detach()
        rows = _keep(W.shape[0], plan.out_remove.get(m))
        cols = _keep(W.shape[1], plan.in_remove.get(m))
        keep_cols[m] = cols
        bias = None if m.bias is None else m.bias.detach().to(torch.float64)
        if m in plan.fold and (bias is not None or bool((plan.fold[m] != 0).any())):  # no bias for a zero fold
            bias = plan.fold[m] if bias is None else bias + plan.fold[m]
        new_bias = None if bias is None else bias.to(W.dtype)[rows.to(W.device)]
        m.weight = _param(W.index_select(0, rows.to(W.device)).index_select(1, cols.to(W.device)), m.weight)
        if new_bias is not None:
            m.bias = _param(new_bias, m.bias if m.bias is not None else m.weight)
        if isinstance(m, torch.nn.Linear):
            m.out_features, m.in_features = m.weight.shape[0], m.weight.shape[1]
        else:
            m.out_channels, m.in_channels = m.weight.shape[0], m.weight.shape[1]
    for bn, removed in plan.bn_remove.items():
        keep = _keep(bn.num_features, removed)
        for name in ("weight", "bias"):
            t = getattr(bn, name)
            if t is not None:
                setattr(bn, name, _param(t.detach()[keep.to(t.device)], t))
        for name in ("running_mean", "running_var"):
            t = getattr(bn, name)
            if t is not None:
                setattr(bn, name, t[keep.to(t.device)].clone())
        bn.num_features = int(keep.numel())


def _input_reduction(m, orig_cols: torch.Tensor, labels: np.ndarray | None):
    """Which current input columns of ``m`` to keep and how to cluster them.

    Returns (index, cluster labels or None, representative columns) or None when
    every column is kept on its own.  Columns labelled -1 and all-zero columns
    are dropped; columns sharing a label and bit-identical weights are one
    cluster (stored once).
    """
    W = m.weight.detach()
    n = W.shape[1]
    lab = labels[orig_cols.numpy()] if labels is not None else np.arange(n)
    index, cl, reps, key_of = [], [], [], {}
    for j in range(n):
        col = W[:, j]
        if lab[j] < 0 or not bool((col != 0).any()):
            continue
        key = (int(lab[j]), col.to(torch.float64).cpu().numpy().tobytes())  # exact for every float dtype
        if key not in key_of:
            key_of[key] = len(reps)
            reps.append(j)
        index.append(j)
        cl.append(key_of[key])
    if not index:  # keep one column: no zero-width layers
        index, cl, reps = [0], [0], [0]
    if len(index) == n and len(reps) == n:
        return None
    return index, (None if len(reps) == len(index) else cl), reps


def _reduce_inputs(model, m, name: str, index, cl, reps, dim: int):
    """Wrap ``m`` as ``Sequential(inputs=ClusteredInputs, layer=m)`` with one column per cluster."""
    W = m.weight.detach()
    m.weight = _param(W.index_select(1, torch.as_tensor(reps, device=W.device)), m.weight)
    if isinstance(m, torch.nn.Linear):
        m.in_features = len(reps)
    else:
        m.in_channels = len(reps)
    dev = W.device
    red = ClusteredInputs(dim, torch.tensor(index, device=dev), None if cl is None else torch.tensor(cl, device=dev), len(reps))
    wrapper = torch.nn.Sequential(OrderedDict(inputs=red, layer=m))
    return _replace(model, name, wrapper)


def _replace(model, name: str, new):
    if name == "":
        return new
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
    return model


def _shapes(m) -> dict:
    return {
        "params": {n: (None if t is None else list(t.shape)) for n, t in m._parameters.items()},
        "buffers": {n: (None if t is None else list(t.shape)) for n, t in m._buffers.items()},
        "attrs": {a: int(getattr(m, a)) for a in _SHAPE_ATTRS if isinstance(getattr(m, a, None), int)},
    }


# ---------------------------------------------------------------------- API


def compact(model: torch.nn.Module, example_inputs, *, rtol: float | None = None) -> torch.nn.Module:
    r"""A new, physically smaller model with the same outputs as ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        Not modified (its train/eval flags are restored after the checks).
    example_inputs : tensor or tuple of tensors
        The forward's positional arguments: a representative batch (several
        different samples).  Used to trace the dependency graph, to read the
        constants that are folded, and to check the result.
    rtol : float, optional
        Allowed ``max|y_compact - y| / max|y|`` per floating output tensor
        (default 1e-10 where every floating output is float64, 1e-5 where
        they are float32 or float64, 1e-2 otherwise: half precision).

    Returns
    -------
    torch.nn.Module, in eval mode, with a ``compaction_spec`` attribute (see
    :func:`rebuild_compact`) and a ``compaction_notes`` list (the groups left
    untouched and why, and the ties of shared parameters that the compact
    model holds apart).  See the module docstring for what is removed.

    Raises
    ------
    TypeError
        ``model`` is not a module or ``example_inputs`` not a tensor / tuple of tensors.
    ValueError
        ``model`` cannot run on ``example_inputs``, or either is on the meta device.
    ImportError
        Torch-Pruning is not installed (``pip install "proxlib[compact]"``).
    CompactionError
        The compacted model's outputs differ from the original's.

    Notes
    -----
    Cost: forward passes on ``example_inputs``, 4 + g + (1 if g > 0): the
    original's outputs, Torch-Pruning's trace, one pass recording every
    layer's input, the compact model's outputs, and g NaN probes, one per
    coupled group with removable channels and a second for a group where
    some of them are folded as constants (with one more pass for the
    outputs the probes compare against).  The time thus grows with the
    number of such groups times the cost of one pass (a network of 64
    small convolutions: about 2 s on two CPU cores): a batch of a few
    dozen different samples is enough.

    Examples
    --------
    A Linear-ReLU-Linear network with input 5 unused and hidden neuron 1 a
    constant (its row is zero), so the second layer absorbs ``relu(b_1)``::

        net = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        with torch.no_grad():
            net[0].weight[:, 5] = 0
            net[0].weight[1] = 0
        small = pt.compact(net, torch.randn(16, 6))
        small[0].layer.weight.shape   # (3, 5), after small[0].inputs selects inputs 0..4
        small[2].weight.shape         # (2, 3)
    """
    _check_model(model)
    args = _as_args(example_inputs)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers(), *args)):
        raise ValueError("compact reads the model's values (which weights are zero) and runs it: a model or example_inputs "
                         "on the meta device has none (materialize it first, e.g. to_empty() then load_state_dict)")
    # the dependency graph is autograd's, and the compact model is for further
    # training too: under torch.inference_mode nothing was traced (nothing
    # removed, "no Linear/Conv reads it") and its tensors were inference tensors
    with torch.inference_mode(False):
        args = tuple(a.clone() if a.is_inference() else a for a in args)
        return _compact(model, args, rtol)


def _compact(model: torch.nn.Module, args: tuple, rtol: float | None) -> torch.nn.Module:
    try:
        ref = _forward(model, args)
    except Exception as e:
        raise ValueError(f"model cannot run on example_inputs: {type(e).__name__}: {e}") from e
    _torch_pruning()  # a clear ImportError before any work

    work = _copy(model)
    ties = _bake(work)
    work.eval()
    before = {n: _shapes(m) for n, m in work.named_modules()}
    names = {m: n for n, m in work.named_modules()}
    plan = _plan(work, args)
    keep_cols: dict = {}
    _apply_plan(plan, keep_cols)

    reductions = {}
    for m in plan.traced:
        first = m not in plan.covered
        if not first and m not in ties:
            continue
        cols = keep_cols.get(m, torch.arange(m.weight.shape[1]))
        r = _input_reduction(m, cols, ties.get(m))
        if r is not None:
            reductions[names[m]] = (m, r)
    out = work
    for name, (m, (index, cl, reps)) in reductions.items():
        out = _reduce_inputs(out, m, name, index, cl, reps, plan.in_dims[m])

    spec = {"format": _SPEC_FORMAT, "modules": {}, "inputs": {}}
    for m, name in names.items():
        now = _shapes(m)
        if now != before[name]:
            spec["modules"][name] = now
    for name, (m, (index, cl, reps)) in reductions.items():
        spec["inputs"][name] = {"dim": plan.in_dims[m], "n_inputs": len(index), "n_clusters": len(reps), "summed": cl is not None}
    out.compaction_spec = spec
    out.compaction_notes = list(plan.notes) + _broken_ties(model, out)
    out.eval()
    try:
        got = _forward(out, args)
    except Exception as e:
        raise CompactionError(f"the compacted model cannot run on example_inputs ({type(e).__name__}: {e}); notes: {plan.notes}") from e
    _compare(ref, got, rtol)
    return out


def _shared_parameters(model: torch.nn.Module) -> list[list[str]]:
    """The names of each parameter that more than one module holds."""
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    return [n for n in names.values() if len(n) > 1]


def _broken_ties(model: torch.nn.Module, out: torch.nn.Module) -> list[str]:
    """A note where ``model`` shares parameters between modules (tied
    weights) and the compact model holds fewer such ties: the pruned copies
    are equal where they were one tensor, but train apart."""
    before, after = _shared_parameters(model), _shared_parameters(out)
    if len(after) >= len(before):
        return []
    ties = "; ".join(" = ".join(n) for n in before)
    return [f"shared parameters ({ties}): the compact model holds {len(before) - len(after)} of these ties as separate "
            "tensors (equal where they were one; tie them again before training if they must stay one)"]


def rebuild_compact(model: torch.nn.Module, spec: dict) -> torch.nn.Module:
    """Give a fresh instance of the original architecture the compacted shapes.

    ``model``: a new, unparametrized instance of the class that was compacted
    (its values do not matter); ``spec``: the compact model's
    ``compaction_spec``.  Returns the model to ``load_state_dict`` the compact
    checkpoint into (the same object unless the root itself was wrapped).
    """
    _check_model(model)
    if not isinstance(spec, dict) or spec.get("format") != _SPEC_FORMAT:
        raise ValueError(f"spec must be a compaction_spec dict with format {_SPEC_FORMAT!r}")
    for name, s in spec["modules"].items():
        try:
            m = model.get_submodule(name)
        except AttributeError as e:
            raise ValueError(f"spec names a module {name!r} that the model does not have") from e
        if parametrize.is_parametrized(m):
            raise ValueError(f"module {name!r} is parametrized; rebuild from a plain instance")
        ref = next((t for t in list(m._parameters.values()) + list(m._buffers.values()) if t is not None), None)
        kw = {} if ref is None else {"dtype": ref.dtype, "device": ref.device}
        for pname, shape in s["params"].items():
            old = m._parameters.get(pname)
            setattr(m, pname, None if shape is None else torch.nn.Parameter(torch.empty(shape, **(kw if old is None else {"dtype": old.dtype, "device": old.device}))))
        for bname, shape in s["buffers"].items():
            old = m._buffers.get(bname)
            m._buffers[bname] = None if shape is None else torch.empty(shape, **(kw if old is None else {"dtype": old.dtype, "device": old.device}))
        for a, v in s["attrs"].items():
            setattr(m, a, int(v))
    for name, s in spec["inputs"].items():
        m = model.get_submodule(name) if name else model
        n = int(s["n_inputs"])
        red = ClusteredInputs(int(s["dim"]), torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int64) if s["summed"] else None, int(s["n_clusters"]))
        model = _replace(model, name, torch.nn.Sequential(OrderedDict(inputs=red, layer=m)))
    return model


def removable_counts(model: torch.nn.Module, example_inputs) -> dict[str, tuple[int, int, int]]:
    """For each Linear/Conv of ``model`` (by name): ``(outputs removed, input
    columns removed or merged by ties, parameters removed)`` by :func:`compact`.

    Parameters are weight and bias entries (effective weights); a bias that
    compaction adds to a bias-free layer counts as negative.
    """
    small = compact(model, example_inputs)
    out = {}
    for name, m in model.named_modules():
        if not isinstance(m, _LAYERS) or ".parametrizations." in f".{name}.":
            continue
        c = small.get_submodule(name) if name else small
        if isinstance(c, torch.nn.Sequential) and "layer" in c._modules:
            c = c.layer
        W = m.weight
        n0 = W.numel() + (0 if m.bias is None else m.bias.numel())
        n1 = c.weight.numel() + (0 if c.bias is None else c.bias.numel())
        out[name] = (int(W.shape[0] - c.weight.shape[0]), int(W.shape[1] - c.weight.shape[1]), int(n0 - n1))
    return out


# -------------------------------------------------------------------- report


@dataclass
class LayerCost:
    """One row of :class:`CompactionReport` (``before``/``after`` pairs)."""

    name: str
    kind: str
    params: tuple[int, int]
    bytes: tuple[int, int]
    macs: tuple[float, float]
    latency_ms: tuple[float, float]


@dataclass
class CompactionReport:
    """What :func:`compaction_report` measured.  ``str(report)`` is a markdown table."""

    layers: list[LayerCost]
    total: LayerCost
    batch: int
    repeats: int
    threads: int

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)

    def to_markdown(self) -> str:
        def ratio(a, b):
            return f"{b / a:.3f}" if a else "-"

        lines = [
            f"Compaction (batch {self.batch}, median of {self.repeats} runs, {self.threads} threads; MACs per sample)",
            "",
            "| layer | kind | params | bytes | MACs | latency ms | params after/before |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in self.layers + [self.total]:
            lines.append(
                f"| {r.name} | {r.kind} | {r.params[0]} -> {r.params[1]} | {r.bytes[0]} -> {r.bytes[1]} | "
                f"{r.macs[0]:.0f} -> {r.macs[1]:.0f} | {r.latency_ms[0]:.3f} -> {r.latency_ms[1]:.3f} | {ratio(*r.params)} |"
            )
        return "\n".join(lines)

    __str__ = to_markdown


def _saved_bytes(model) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


def _tensor_bytes(model, prefix: str) -> int:
    sd = model.state_dict()
    p = f"{prefix}." if prefix else ""
    return sum(t.numel() * t.element_size() for k, t in sd.items() if k.startswith(p) and isinstance(t, torch.Tensor))


def _macs(model, args) -> dict:
    """Multiply-adds per sample of each Linear/Conv (weights x output positions)
    and of each :class:`ClusteredInputs` (one add per selected input and position)."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, _LAYERS)}
    out = _dense_flops(model, layers, args)
    positions: dict = {}
    reds = [(n, m) for n, m in model.named_modules() if isinstance(m, ClusteredInputs)]
    handles = []
    for n, m in reds:
        def hook(mod, inp, o, n=n):
            x = inp[0]
            batched = x.ndim > 1 and mod.dim % x.ndim != 0  # an unbatched Conv input has its channels at dim 0
            # summed over the module's calls (as _dense_flops sums a layer's)
            positions[n] = positions.get(n, 0.0) + x.numel() / x.shape[mod.dim] / (x.shape[0] if batched else 1)
        handles.append(m.register_forward_hook(hook))
    try:
        _forward(model, args)
    finally:
        for h in handles:
            h.remove()
    for n, m in reds:
        out[n] = positions.get(n, 0.0) * (m.index.numel() if m.labels is not None else 0)
    return out


def _latency(model, args, repeats: int, names) -> tuple[float, dict]:
    """Median seconds of a whole forward and of each named module's forward."""
    mods = {n: model.get_submodule(n) if n else model for n in names}
    total, per = [], {n: [] for n in mods}
    start: dict = {}
    with torch.no_grad(), _eval_mode(model):
        for _ in range(2):
            model(*args)
        for _ in range(repeats):
            t = time.perf_counter()
            model(*args)
            total.append(time.perf_counter() - t)
        handles = []
        for n, m in mods.items():
            handles.append(m.register_forward_pre_hook(lambda mod, a, n=n: start.__setitem__(n, time.perf_counter())))
            handles.append(m.register_forward_hook(lambda mod, a, o, n=n: per[n].append(time.perf_counter() - start[n])))
        try:
            for _ in range(repeats):
                model(*args)
        finally:
            for h in handles:
                h.remove()
    return statistics.median(total), {n: statistics.median(v) if v else 0.0 for n, v in per.items()}


def compaction_report(
    original: torch.nn.Module, compact: torch.nn.Module, example_inputs, *, repeats: int = 20, threads: int | None = None
) -> CompactionReport:
    """Parameters, stored bytes, MACs and CPU latency of ``original`` and its compacted model.

    * **params**: entries of ``parameters()`` (for a parametrized / pruned layer
      its stored leaves, e.g. ``parametrizations.weight.original``).
    * **bytes**: per layer the tensor bytes of its ``state_dict`` entries (labels,
      masks included); in total the size of ``torch.save(model.state_dict())``.
    * **MACs** per sample: weights x output positions of each Linear / Conv,
      plus one add per summed input of a :class:`ClusteredInputs`.
    * **latency**: median over ``repeats`` forward passes on ``example_inputs``
      in eval mode under ``no_grad`` (per layer: between forward pre/post hooks,
      in a separate set of runs).  The original is timed with its
      parametrizations and masks baked into plain weights, i.e. the dense
      network, not the cost of re-computing parametrizations.  ``threads``
      sets ``torch.set_num_threads`` for the timings (restored afterwards;
      default: the current setting).  On a shared machine one thread gives
      the steadiest figures.

    Rows are the modules holding parameters or buffers in the original, by
    qualified name (a compacted ``name.inputs`` / ``name.layer`` pair is
    reported under ``name``).
    """
    _check_model(original, "original")
    _check_model(compact, "compact")
    args = _as_args(example_inputs)
    if int(repeats) < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    dense = _copy(original)
    _bake(dense)
    rows = [
        n
        for n, m in dense.named_modules()
        if any(True for _ in m.parameters(recurse=False)) or any(t is not None for t in m._buffers.values())
    ]
    small_mods = dict(compact.named_modules())
    small_rows = {n: [s for s in small_mods if s == n or s.startswith(f"{n}.") or n == ""] for n in rows}
    macs0, macs1 = _macs(dense, args), _macs(compact, args)
    saved_threads = torch.get_num_threads()
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))
    try:
        n_threads = torch.get_num_threads()
        lat0, per0 = _latency(dense, args, int(repeats), rows)
        lat1, per1 = _latency(compact, args, int(repeats), [n for n in rows if n in small_mods])
    finally:
        torch.set_num_threads(saved_threads)
    orig_mods = dict(original.named_modules())
    layers = []
    for n in rows:
        m0 = orig_mods[n]
        subs = [small_mods[s] for s in small_rows[n]]
        p1 = sum(sum(p.numel() for p in s.parameters(recurse=False)) for s in subs)
        layers.append(
            LayerCost(
                name=n or "(model)",
                kind=type(dense.get_submodule(n) if n else dense).__name__,
                params=(sum(p.numel() for p in m0.parameters()), p1),
                bytes=(_tensor_bytes(original, n), _tensor_bytes(compact, n) if subs else 0),
                macs=(macs0.get(n, 0.0), sum(macs1.get(s, 0.0) for s in small_rows[n])),
                latency_ms=(1e3 * per0.get(n, 0.0), 1e3 * per1.get(n, 0.0)),
            )
        )
    total = LayerCost(
        name="total",
        kind="",
        params=(sum(p.numel() for p in original.parameters()), sum(p.numel() for p in compact.parameters())),
        bytes=(_saved_bytes(original), _saved_bytes(compact)),
        macs=(sum(macs0.values()), sum(macs1.values())),
        latency_ms=(1e3 * lat0, 1e3 * lat1),
    )
    batch = int(args[0].shape[0]) if args[0].ndim else 1
    return CompactionReport(layers, total, batch, int(repeats), n_threads)
