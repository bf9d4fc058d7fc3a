"""Which tensor a proximal step writes to, and the tensors it computes on.

proxlib's core takes torch tensors directly (the ``torch`` backend runs torch
operations on the tensor's own device), so nothing here converts arrays: it
finds the leaf tensor an optimizer updates (a parametrised or pruned weight
has one behind it) and gives the core's row groupings to the adapters.
"""

from __future__ import annotations

import torch
from torch.nn.utils import parametrize

# Row views: proxlib.groupings handles torch tensors (NumPy, CuPy and torch
# share one implementation).
from ..groupings import canonical_grouping  # noqa: F401
from ..groupings import from_rows  # noqa: F401
from ..groupings import to_rows as rows  # noqa: F401

_NATIVE = (torch.float32, torch.float64)


def resolve_leaf(target, name: str = "weight") -> torch.Tensor:
    """The tensor an optimizer updates for ``target``: where a prox must write.

    ``target`` is a tensor (returned as is) or a module whose ``name`` is

    * a parametrised tensor (``torch.nn.utils.parametrize``): the leaf
      ``module.parametrizations[name].original``;
    * a pruned tensor (``torch.nn.utils.prune``): ``module.<name>_orig``;
    * otherwise the parameter ``module.<name>``.

    Raises
    ------
    ValueError
        A parametrization with several originals (``original0``, ...), or a
        tensor computed from others (``torch.nn.utils.weight_norm``'s
        ``weight``): pass the leaf tensor you mean explicitly.
    TypeError
        ``target`` is neither a tensor nor a module with such a parameter.
    """
    if isinstance(target, torch.Tensor):
        return target
    p = getattr(target, "_parameters", {}).get(name) if isinstance(name, str) else None
    if p is not None:
        # a registered parameter under its own name: neither parametrised nor
        # pruned (both move it to another name), so it is the leaf (the
        # common case, answered without the lookups below)
        return p
    if not isinstance(target, torch.nn.Module):
        raise TypeError(f"target must be a torch.nn.Module or a tensor, got {type(target).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"name must be the name of a tensor of the module, got {type(name).__name__}")
    if parametrize.is_parametrized(target, name):
        plist = target.parametrizations[name]
        if not hasattr(plist, "original"):
            raise ValueError(
                f"{name!r} has a parametrization with several original tensors; pass the leaf tensor explicitly"
            )
        return plist.original
    orig = getattr(target, name + "_orig", None)
    if isinstance(orig, torch.nn.Parameter) and hasattr(target, name + "_mask"):
        return orig
    p = getattr(target, name, None)
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{type(target).__name__} has no tensor named {name!r}")
    if p.grad_fn is not None:
        # computed from other tensors by a forward hook (torch.nn.utils.weight_norm,
        # spectral_norm): a prox written into it is overwritten at the next forward
        raise ValueError(
            f"{type(target).__name__}.{name} is computed from other tensors (grad_fn {type(p.grad_fn).__name__}, "
            "e.g. by torch.nn.utils.weight_norm), not a tensor the optimizer updates: a prox written into it "
            "would be lost at the next forward; pass the leaf tensor you mean (e.g. module.weight_v) explicitly"
        )
    return p


def row_dims(grouping: str | None, ndim: int) -> tuple[int, ...]:
    """The dimensions of a weight tensor that index the rows of ``grouping``
    (``None``: ``W.reshape(W.shape[0], -1)``'s rows, i.e. ``"filter"``; a 1-D
    tensor is one row)."""
    if ndim < 2 or grouping == "layer":
        return ()
    if grouping in (None, "filter"):
        return (0,)
    if grouping == "channel":
        return (1,)
    return tuple(range(1, ndim))  # "shape"


def broadcast_shape(grouping: str | None, shape) -> tuple[int, ...]:
    """The shape that one number per row of ``grouping`` takes to broadcast
    over a tensor of ``shape``: its row dimensions (:func:`row_dims`) kept,
    the others 1 (row r of :func:`rows` is the flat index of the kept
    dimensions, in order)."""
    rdims = row_dims(grouping, len(shape))
    return tuple(n if d in rdims else 1 for d, n in enumerate(shape))


def shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` are views of one storage."""
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def channel_dim(layer: torch.nn.Module, ndim: int) -> int:
    """The dimension holding the channels of a Linear/Conv ``layer``'s input
    or output of ``ndim`` dimensions, counted from the front: a Linear's
    last; a Conv's 1, or 0 for an unbatched tensor (one dimension less than
    the weight: no batch dimension)."""
    if isinstance(layer, torch.nn.Linear):
        return ndim - 1
    return 0 if ndim == layer.weight.ndim - 1 else 1


def working_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached; float16/bfloat16 upcast to float32 (the core's dtypes)."""
    t = t.detach()
    if t.dtype in _NATIVE:
        return t
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.to(torch.float32)
    raise TypeError(f"proxlib's proximal steps need a floating-point tensor, got {t.dtype}")


def is_sharded(t) -> bool:
    """Whether ``t`` is a ``DTensor`` (FSDP2, tensor parallel), without importing DTensor."""
    return type(t).__name__ == "DTensor" and hasattr(t, "placements")


def gathered(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached in the core's dtypes, the full tensor of a ``DTensor``
    (one all-gather: for procedures that inspect whole weights, not per step)."""
    if is_sharded(t):
        t = t.full_tensor()
    return working_tensor(t)


def refuse_sharded(module: torch.nn.Module, name: str, what: str) -> None:
    """Raise a clear error when ``module.<name>`` is sharded and ``what`` cannot handle it."""
    t = getattr(module, name, None)
    if is_sharded(t):
        raise NotImplementedError(
            f"{what} on a sharded parameter ({type(module).__name__}.{name} is a DTensor, "
            f"e.g. under FSDP2's fully_shard) is not supported: it registers a parametrization "
            f"on the module; apply it before sharding, or on a gathered copy of the model"
        )


def check_conv_layout(target, name: str, grouping: str | None) -> None:
    """Refuse a grouping whose rows would not be what :mod:`proxlib.groupings`
    says on a convolution's weight: its table assumes ``(out, in, *k)``.  A
    transposed convolution's weight is ``(in, out/groups, *k)`` ("filter"
    would group input channels), and a grouped one's dim 1 counts channels
    within one group ("channel" and "shape" would put channels of different
    groups in one row).  The whole tensor ("layer") is the same in any
    layout."""
    conv = torch.nn.modules.conv._ConvNd
    if grouping in (None, "layer") or name != "weight" or not isinstance(target, conv):
        return
    kind = type(target).__name__
    if target.transposed:
        raise ValueError(
            f"grouping {grouping!r} on a {kind}: its weight is laid out (in, out/groups, *kernel), not the "
            "(out, in, *kernel) that the groupings assume, so the rows would not be its filters, channels or "
            "shapes; use grouping='layer', or give a tensor with its own layout (grouping=None)"
        )
    if target.groups > 1 and grouping != "filter":
        raise ValueError(
            f"grouping {grouping!r} on a {kind} with groups={target.groups}: its weight's dim 1 counts the "
            "input channels of one group, so a row would hold channels of different groups; "
            "use grouping='filter' or 'layer'"
        )
