r"""Row views of layer weight tensors, with exact inverses.

Group operators act on rows.  These functions put the groups of a Linear
weight ``(out, in)`` or a Conv weight ``(out, in, kh, kw)`` (any conv rank)
into rows and back:

=============  ====================================  ====================  ===============
grouping       a row is                              Linear (out, in)      Conv (out, in, *k)
=============  ====================================  ====================  ===============
``"filter"``   one output neuron / filter            (out, in)             (out, in*prod(k))
``"channel"``  one input neuron / input channel      (in, out)             (in, out*prod(k))
               (GrOWL's rows)
``"shape"``    a fibre across filters at one         (in, out)             (in*prod(k), out)
               (in, kh, kw) position
``"layer"``    the whole tensor                      (1, out*in)           (1, everything)
=============  ====================================  ====================  ===============

The table assumes a weight ``(out, in, *k)``.  A transposed convolution's
weight is ``(in, out/groups, *k)`` and a grouped convolution's dim 1 counts
the channels of one group, so :class:`proxlib.torch.ProxTerm` and
:func:`proxlib.torch.tie_rows` refuse the groupings whose rows would change
meaning there (any but ``"layer"`` on a transposed convolution; ``"channel"``
and ``"shape"`` on a grouped one).

``to_rows`` returns a view whenever the memory layout allows (always for
``"filter"`` and ``"layer"`` on C-contiguous input); otherwise a copy.
``from_rows(to_rows(W, g), W.shape, g)`` equals ``W`` exactly.
"""

from __future__ import annotations

import math

import numpy as np

from ._dispatch import array_namespace

__all__ = ["GROUPINGS", "to_rows", "from_rows"]

GROUPINGS = ("filter", "channel", "shape", "layer")
_ALIASES = {"output": "filter", "input": "channel", "row": "filter", "column": "channel"}


def canonical_grouping(grouping: str) -> str:
    """The grouping's canonical name (aliases resolved); raises on unknown names."""
    if not isinstance(grouping, str):
        raise TypeError(f"grouping must be a string, got {type(grouping).__name__}")
    g = _ALIASES.get(grouping, grouping)
    if g not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS + tuple(_ALIASES)}, got {grouping!r}")
    return g


def _check(grouping: str, shape) -> str:
    g = canonical_grouping(grouping)
    if len(shape) < 2:
        raise ValueError(f"a weight tensor needs at least 2 dimensions (out, in, ...), got shape {tuple(shape)}")
    return g


def _moveaxis(x, source: int, destination: int):
    # torch spells it movedim (called directly: TiedRows' forward stays traceable by torch.compile)
    if hasattr(x, "movedim"):
        return x.movedim(source, destination)
    return array_namespace(x).moveaxis(x, source, destination)


def _array(W, name: str):
    if not (hasattr(W, "shape") and hasattr(W, "reshape") and hasattr(W, "ndim")):
        raise TypeError(f"{name} must be a NumPy, CuPy or torch array, got {type(W).__name__}")
    return W


def _shape(shape) -> tuple:
    if isinstance(shape, (int, np.integer)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"shape must be a tuple of ints (the weight tensor's shape), got {shape!r}")
    out = tuple(shape)
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in out):
        raise TypeError(f"shape must be a tuple of non-negative ints, got {shape!r}")
    return tuple(int(s) for s in out)


def to_rows(W, grouping: str):
    """The rows of ``W`` under ``grouping`` (see the module table).

    ``W`` may be a NumPy, CuPy or torch array (a view when the layout allows)."""
    W = _array(W, "W")
    return _maps(tuple(W.shape), grouping)[0](W)


def from_rows(R, shape, grouping: str):
    """Inverse of :func:`to_rows`: the tensor of ``shape`` whose rows are ``R``."""
    R = _array(R, "R")
    shape = _shape(shape)
    g = _check(grouping, shape)
    out, cin = shape[0], shape[1]
    rest = math.prod(shape[2:])
    expected = {
        "filter": (out, cin * rest),
        "layer": (1, out * cin * rest),
        "channel": (cin, out * rest),
        "shape": (cin * rest, out),
    }[g]
    if tuple(R.shape) != expected:
        raise ValueError(f"rows of shape {tuple(R.shape)} do not fit {g!r} rows of a {shape} tensor {expected}")
    return _maps(shape, g)[1](R)


def row_maps(shape, grouping: str):
    """``(to, back)`` for arrays of ``shape``: ``to(W)`` is ``to_rows(W,
    grouping)`` and ``back(R)`` is ``from_rows(R, shape, grouping)``, with
    the grouping and shape checked and the lengths computed once, here (for
    a caller that maps the same shape again and again, such as a training
    step's parameter: the checks cost as much as the views).  ``back`` does
    not check ``R``'s shape."""
    return _maps(_shape(shape), grouping)


def _maps(shape: tuple, grouping: str):
    """:func:`row_maps` of a tuple ``shape`` (its entries not checked: they
    may be a traced tensor's sizes)."""
    g = _check(grouping, shape)
    out, cin = shape[0], shape[1]
    rest = math.prod(shape[2:])  # explicit lengths: reshape(0, -1) cannot infer them
    if g == "filter":
        return (lambda W: W.reshape(out, cin * rest)), (lambda R: R.reshape(shape))
    if g == "layer":
        return (lambda W: W.reshape(1, out * cin * rest)), (lambda R: R.reshape(shape))
    if g == "channel":
        rows_first = (cin, out) + shape[2:]
        return (lambda W: _moveaxis(W, 1, 0).reshape(cin, out * rest)), (lambda R: _moveaxis(R.reshape(rows_first), 0, 1))
    return (lambda W: W.reshape(out, cin * rest).T), (lambda R: R.T.reshape(shape))  # shape: (in * prod(k), out)
