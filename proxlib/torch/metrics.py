r"""Compression metrics of weight tensors, per layer and in total.

For a weight tensor with N entries, of which ``nnz`` are non-zero and ``U`` are
distinct non-zero values (bitwise equality):

* **sparsity** = (N - nnz) / N, the fraction of zero weights;
* **zero rows**: rows (under a grouping, by default GrOWL's ``"channel"``: input
  neurons / input channels) that are entirely zero;
* **parameter sharing** = nnz / U (1 when no two non-zero weights are equal;
  NaN when there is no non-zero weight);
* **compression** = N / (U + [any zero]): the entries over the distinct values
  that must be stored, zero counting as one value when present (1 for a dense
  tensor of distinct values);
* **FLOP fraction** = (kept filters x kept columns) / (out x in*prod(k)) of the
  layer's matrix product ``W.reshape(out, -1)`` (im2col for a Conv), where a
  filter (row) or column (an input neuron for a Linear, an (in, kh, kw)
  position for a Conv) is kept when it has a non-zero entry.  This is the
  structured saving of Wen et al. (SSL): removed neurons, channels and shapes.
  Tied values and scattered zeros are not counted as FLOP savings.

Totals sum counts over layers (values are shared within a layer only); the
total FLOP fraction weights each layer by its dense FLOPs, measured with a
forward pass when ``example_input`` is given (else by its number of weights,
which is exact for Linear layers).

**Removable across layers** (:func:`model_metrics` with ``example_input``,
when Torch-Pruning is installed): what :func:`proxlib.torch.compact` removes,
given how layers are coupled -- a zero filter counts only if its channel can
go from every layer that produces and reads it, a zero input column only if
every producer of that channel can drop it, biases included:

* ``removable_out``: output neurons / filters of the layer removed;
* ``removable_in``: input neurons / channels removed, or merged by tied rows
  (the layer's stored columns go from ``in`` to ``in - removable_in``);
* ``removable_params``: weight and bias entries removed (a bias that
  compaction adds to a bias-free layer to absorb constants counts negative).

They are ``None`` when not computed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch

import proxlib
from proxlib import _validate as V

from . import _bridge as B

__all__ = ["LayerMetrics", "weight_metrics", "model_metrics", "prunable_layers", "format_metrics"]


@dataclass(frozen=True)
class LayerMetrics:
    """Counts behind the metrics; the metrics are properties."""

    n_weights: int
    n_nonzero: int
    n_unique_nonzero: int
    n_zero_values: int  # 1 if the layer has a zero entry (a total: layers with zeros)
    n_rows: int
    zero_rows: int
    dense_flops: float
    kept_flops: float
    n_bias: int = 0  # bias entries of the layer (0 from weight_metrics)
    removable_out: int | None = None  # across layers, see the module docstring
    removable_in: int | None = None
    removable_params: int | None = None

    @property
    def sparsity(self) -> float:
        return (self.n_weights - self.n_nonzero) / self.n_weights if self.n_weights else 0.0

    @property
    def sharing(self) -> float:
        return self.n_nonzero / self.n_unique_nonzero if self.n_unique_nonzero else float("nan")

    @property
    def n_unique(self) -> int:
        return self.n_unique_nonzero + self.n_zero_values

    @property
    def compression(self) -> float:
        return self.n_weights / self.n_unique if self.n_unique else float("nan")

    @property
    def flop_fraction(self) -> float:
        return self.kept_flops / self.dense_flops if self.dense_flops else 1.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(sparsity=self.sparsity, sharing=self.sharing, compression=self.compression, flop_fraction=self.flop_fraction)
        return d


def weight_metrics(W, grouping: str = "channel", *, dense_flops: float | None = None) -> LayerMetrics:
    """:class:`LayerMetrics` of one weight tensor (torch tensor or NumPy array, >= 2-D).

    ``dense_flops`` (default: the number of weights) scales the FLOP counts.

    >>> import numpy as np
    >>> W = np.array([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0]])   # Linear (out=2, in=3)
    >>> m = weight_metrics(W)
    >>> m.sparsity, m.zero_rows, m.sharing, m.compression, m.flop_fraction
    (0.3333333333333333, 1, 2.0, 2.0, 0.6666666666666666)
    """
    if isinstance(W, torch.Tensor):  # (integer or bool tensors, e.g. masks, as NumPy's are taken)
        W = (B.gathered(W) if W.is_floating_point() else W.detach()).cpu().numpy()
    W = np.asarray(W)
    if W.ndim < 2:
        raise ValueError(f"weight_metrics needs a weight tensor with >= 2 dimensions, got shape {W.shape}")
    flat = W.reshape(-1)
    nz = flat[flat != 0]  # +0.0 and -0.0 are both zero
    R = proxlib.to_rows(W, grouping)
    M = W.reshape(W.shape[0], math.prod(W.shape[1:]))  # (-1 cannot be inferred for an empty layer)
    nzM = M != 0
    kept = int(np.count_nonzero(nzM.any(axis=1))) * int(np.count_nonzero(nzM.any(axis=0)))
    dense = float(flat.size) if dense_flops is None else V.nonnegative(dense_flops, "dense_flops")
    return LayerMetrics(
        n_weights=int(flat.size),
        n_nonzero=int(nz.size),
        n_unique_nonzero=int(np.unique(nz).size),
        n_zero_values=int(nz.size < flat.size),
        n_rows=int(R.shape[0]),
        zero_rows=int(np.count_nonzero(~np.any(R != 0, axis=1))),
        dense_flops=dense,
        kept_flops=dense * kept / M.size if M.size else dense,
    )


_LAYER_TYPES = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def prunable_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The model's Linear and Conv layers by qualified name (in definition order)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _LAYER_TYPES)}


def _dense_flops(model, layers, args: tuple) -> dict[str, float]:
    """Multiply-adds per sample of each layer at full density: weights x output
    positions, summed over the layer's calls, from one forward pass on
    ``args`` (eval mode, under ``no_grad``; every module's train/eval flag is
    restored afterwards); a layer the forward pass does not call costs 0."""
    positions: dict[str, float] = {}
    handles = []
    for n, m in layers.items():
        def hook(mod, inp, out, n=n):
            d = B.channel_dim(mod, out.ndim)  # 0: an unbatched output (no batch dimension)
            # summed: a layer called k times costs k times (the last call alone was counted)
            positions[n] = positions.get(n, 0.0) + out.numel() / out.shape[d] / (out.shape[0] if d > 0 else 1)
        handles.append(m.register_forward_hook(hook))
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(*args)
    finally:
        for h in handles:
            h.remove()
        for m, t in flags:
            m.training = t
    return {n: positions.get(n, 0.0) * m.weight.numel() for n, m in layers.items()}


def model_metrics(
    model: torch.nn.Module, layers=None, *, grouping: str = "channel", example_input=None, removable: bool | None = None
) -> dict[str, LayerMetrics]:
    """Per-layer :class:`LayerMetrics` of the effective weights (after any
    parametrization or pruning mask) and a ``"total"`` entry.

    ``layers``: a dict name -> module or a list of modules (default: every
    Linear / Conv layer).  ``example_input``: a batch to measure each layer's
    dense FLOPs for the total FLOP fraction, and to count what is removable
    across layers (``removable_*`` fields, see the module docstring).
    ``removable``: ``None`` counts it when ``example_input`` is given and
    Torch-Pruning is installed (else leaves ``None``); ``True`` requires it
    (raising if it cannot be counted); ``False`` skips it.
    """
    if layers is None:
        layers = prunable_layers(model)
    elif not isinstance(layers, dict):
        layers = {f"layer{i}": m for i, m in enumerate(layers)}
    flops = _dense_flops(model, layers, (example_input,)) if example_input is not None else None
    rem = _removable(model, layers, example_input, removable)
    out: dict[str, LayerMetrics] = {}
    for n, m in layers.items():
        lm = weight_metrics(m.weight, grouping, dense_flops=None if flops is None else flops[n])
        bias = getattr(m, "bias", None)
        extra = {"n_bias": int(bias.numel()) if isinstance(bias, torch.Tensor) else 0}
        if rem is not None and n in rem:
            extra.update(zip(("removable_out", "removable_in", "removable_params"), rem[n]))
        out[n] = replace(lm, **extra)
    vals = list(out.values())
    # (removable_*: None where not counted, also for a model without layers, whose sums are 0)
    out["total"] = LayerMetrics(**{
        f.name: None if rem is None and f.name.startswith("removable_") else _sum_or_none([getattr(v, f.name) for v in vals])
        for f in fields(LayerMetrics)
    })
    return out


def _sum_or_none(values):
    return None if any(v is None for v in values) else sum(values)


def _removable(model, layers: dict, example_input, removable: bool | None):
    """name -> (removable_out, removable_in, removable_params) of ``layers``, or None."""
    if removable is False or (removable is None and example_input is None):
        return None
    if example_input is None:
        raise ValueError("removable=True needs example_input (the dependency graph is traced on it)")
    from .compaction import CompactionError, _torch_pruning, removable_counts

    try:
        _torch_pruning()
    except ImportError:
        if removable:
            raise
        return None
    try:
        counts = removable_counts(model, example_input)
    except CompactionError as e:
        if removable:
            raise
        warnings.warn(f"removable counts not computed: {e}", RuntimeWarning, stacklevel=3)
        return None
    names = {id(m): n for n, m in model.named_modules()}
    return {n: counts[names[id(m)]] for n, m in layers.items() if names.get(id(m)) in counts}


def format_metrics(metrics: dict[str, LayerMetrics]) -> str:
    """A markdown table of :func:`model_metrics` output (with a "removable"
    column, out / in / params, when those counts are known)."""
    rem = any(m.removable_params is not None for m in metrics.values())
    lines = [
        "| layer | weights | sparsity | zero rows | sharing | compression | FLOP fraction |" + (" removable out/in/params |" if rem else ""),
        "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if rem else ""),
    ]
    for n, m in metrics.items():
        cell = ""
        if rem:
            cell = " - |" if m.removable_params is None else f" {m.removable_out}/{m.removable_in}/{m.removable_params} |"
        lines.append(
            f"| {n} | {m.n_weights} | {100 * m.sparsity:.1f}% | {m.zero_rows}/{m.n_rows} | "
            f"{m.sharing:.2f} | {m.compression:.1f}x | {100 * m.flop_fraction:.1f}% |" + cell
        )
    return "\n".join(lines)
