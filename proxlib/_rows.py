"""Canonical row layout for the group operators (NumPy, CuPy and torch alike).

A group operator sees a 2-D array whose ROWS are the groups, plus one
non-negative weight per row.  Two inputs map to that layout:

* dense: ``W`` of any rank >= 1 is ``W.reshape(W.shape[0], -1)`` (C order,
  whatever W's memory order); a 1-D ``W`` is one row;
* ragged: a 1-D ``v`` with integer ``groups`` labels.  Entries are gathered by
  label (a stable sort) into a zero-padded ``(n_groups, max_group_size)``
  array.  Padding zeros change none of the operators (they add nothing to any
  norm and never enter an exclusive-lasso support).  Cost: O(n log n) and
  ``n_groups * max_group_size`` scratch; the layout is built on the input's
  device (two scalar reads: the number of groups and the largest group).

``restore`` maps the kernel's rows back to the input's shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import _validate as V
from ._dispatch import array_kind, array_namespace, device

__all__: list[str] = []


@dataclass
class Rows:
    rows: Any  # (G, m), the input's dtype (C-contiguous for NumPy and CuPy)
    sizes: Any  # (G,) float64: number of entries of each group
    labels: Any  # (G,) the group labels (row indices for dense input)
    restore: Callable[[Any], Any]
    ragged: bool = False

    @property
    def n_groups(self) -> int:
        return int(self.rows.shape[0])


def canonical_rows(W, groups=None, *, name: str = "W", contiguous: bool = True) -> Rows:
    xp = array_namespace(W)
    if W.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a 0-d array")
    if groups is None:
        # explicit row length: reshape(0, -1) cannot infer it for zero rows
        R = W.reshape(1, -1) if W.ndim == 1 else W.reshape(W.shape[0], math.prod(W.shape[1:]))
        if contiguous and array_kind(W) != "torch":
            R = xp.ascontiguousarray(R)  # torch kernels take any strides
        shape = tuple(W.shape)
        G, m = R.shape
        dev = device(W)
        return Rows(
            rows=R,
            sizes=xp.full(G, float(m), dtype=xp.float64, device=dev),
            labels=xp.arange(G, device=dev),
            restore=lambda X: X.reshape(shape),
        )
    return _ragged_rows(W, groups, name, xp)


def _labels_array(groups):
    """``groups`` as an array: itself when it is one, else NumPy's; an empty
    sequence (``[]``, the labels of an empty W, which NumPy makes float64)
    as int64 labels."""
    if V._is_array(groups):
        return groups
    labels = np.asarray(groups)
    return labels.astype(np.int64) if labels.size == 0 and labels.dtype == np.float64 else labels


def _checked_labels(v, groups, name, xp):
    """``groups`` checked against the 1-D ``v`` (integer labels >= 0 of
    ``v``'s shape), as int64 on ``v``'s library and device."""
    if v.ndim != 1:
        raise ValueError(f"groups= labels need a 1-D {name}, got shape {tuple(v.shape)}")
    V._reject_nested(groups, "groups")
    labels = _labels_array(groups)
    if V.dtype_kind(labels.dtype) not in "iu":
        raise TypeError(f"groups must hold integer labels, got dtype {V.dtype_name(labels.dtype)}")
    wraps = V.dtype_name(labels.dtype) == "uint64"  # labels >= 2^63 become negative int64
    dev = device(v)
    if array_kind(labels) != array_kind(v):
        # to v's library and device as int64: through v's dtype (float32
        # for a half-precision v) labels above 2^24 were rounded, groups merged
        labels = V.like(labels, xp.zeros(0, dtype=xp.int64, device=dev), "groups")
    labels = xp.asarray(labels, dtype=xp.int64, device=dev)
    if tuple(labels.shape) != tuple(v.shape):
        raise ValueError(f"groups must have the shape of {name} {tuple(v.shape)}, got {tuple(labels.shape)}")
    n = v.shape[0]
    if n and int(xp.min(labels)) < 0:
        if wraps:
            raise ValueError("groups labels must be < 2**63 (they are taken as int64); a uint64 label is larger")
        raise ValueError(f"groups labels must be >= 0, got {int(xp.min(labels))}")
    return labels


def check_groups(groups) -> None:
    """``groups`` checked without the data, when a penalty is made: None, or
    1-D integer labels >= 0 (the messages of the prox; their length against
    the data is checked at the prox)."""
    if groups is None:
        return
    V._reject_nested(groups, "groups")
    labels = _labels_array(groups)
    if V.dtype_kind(labels.dtype) not in "iu":
        raise TypeError(f"groups must hold integer labels, got dtype {V.dtype_name(labels.dtype)}")
    if labels.ndim != 1:
        raise ValueError(f"groups must be 1-D (one label per entry of a 1-D W), got shape {tuple(labels.shape)}")
    xp = array_namespace(labels)
    # (the data's stand-in: a broadcast view, no memory of the labels' length)
    stand_in = xp.broadcast_to(xp.zeros(1, dtype=xp.float64, device=device(labels)), (labels.shape[0],))
    _checked_labels(stand_in, labels, "W", xp)


def _group_sizes(labels, xp):
    """For int64 ``labels``: the stable order that sorts them, each sorted
    entry's group index, each group's first sorted position and size."""
    n = labels.shape[0]
    dev = device(labels)
    order = xp.argsort(labels, stable=True)
    sorted_labels = labels[order]
    # group index of each sorted entry, and each group's first position, from
    # the label changes (no repeat with device counts: CuPy 13 rejects those)
    new = xp.ones(n, dtype=xp.int64, device=dev)
    if n:
        new[1:] = xp.astype(sorted_labels[1:] != sorted_labels[:-1], xp.int64)
    gi = xp.cumulative_sum(new) - 1 if n else new
    start = xp.nonzero(new)[0]
    G = int(start.shape[0])
    counts = xp.concat([start[1:], xp.asarray([n], dtype=start.dtype, device=dev)]) - start if G else start
    return order, sorted_labels, gi, start, counts


#: a ragged layout is split by group size (:func:`ragged_parts`) when its
#: padded array would hold more than ``2 n + PADDED_SLACK`` entries
PADDED_SLACK = 1 << 20


def ragged_parts(v, groups, *, name: str = "W"):
    """``None`` when the padded ``(n_groups, max_group_size)`` layout of
    :func:`canonical_rows` costs at most ``2 n + PADDED_SLACK`` entries;
    otherwise ``(labels, parts)``: the checked int64 labels and index arrays
    (into ``v``) that split the entries into whole groups whose sizes lie
    within a factor 2 of each other (sizes in [2^k, 2^(k+1))).  Each part
    padded alone holds at most twice its entries: one group of n/2 entries
    and n/2 singletons padded together held n^2/4 (gigabytes for n = 10^5),
    as parts about n.  The groups are independent, so the prox (and Omega)
    of the whole is that of the parts.  ``groups`` None (no labels): None."""
    if groups is None:
        return None
    n = v.shape[0] if v.ndim == 1 else 0
    if n * n <= 2 * n + PADDED_SLACK:
        return None  # (G * L <= n^2: never split; the labels are checked by canonical_rows)
    xp = array_namespace(v)
    labels = _checked_labels(v, groups, name, xp)
    if int(xp.max(labels)) < 4 * n + PADDED_SLACK:
        # the common case, decided without a sort: a count per label
        by_label = _bincount(labels)
        if int(xp.count_nonzero(by_label)) * int(xp.max(by_label)) <= 2 * n + PADDED_SLACK:
            return None
    order, _, gi, _, counts = _group_sizes(labels, xp)
    G = int(counts.shape[0])
    if G * int(xp.max(counts)) <= 2 * n + PADDED_SLACK:
        return None
    # size class of each group (floor(log2(size)), exact for integers < 2^53), then of each sorted entry
    size_class = xp.astype(xp.floor(xp.log2(xp.astype(counts, xp.float64))), xp.int64)
    entry_class = size_class[gi]
    # the class of the largest label first: a group_weights array too short
    # for it then fails there, with the whole's need (largest label + 1) in
    # its message, as unsplit (the parts are independent: any order is exact)
    classes = sorted({int(c) for c in np.asarray(_host(size_class))})
    last = int(size_class[-1])
    parts = [order[entry_class == k] for k in [last] + [k for k in classes if k != last]]
    return labels, parts


def _bincount(labels):
    """The number of entries of each label 0..max (int64 labels >= 0), on
    their device (NumPy's, CuPy's and torch's bincount; not in the array API)."""
    kind = array_kind(labels)
    if kind == "torch":
        import torch

        return torch.bincount(labels)
    if kind == "cupy":
        import cupy

        return cupy.bincount(labels)
    return np.bincount(labels)


def _host(a):
    """A small array's values on the host (for a Python loop over them)."""
    if array_kind(a) == "torch":
        return a.cpu().numpy()
    if array_kind(a) == "cupy":
        return a.get()
    return a


def _ragged_rows(v, groups, name, xp) -> Rows:
    labels = _checked_labels(v, groups, name, xp)
    n = v.shape[0]
    dev = device(v)
    order, sorted_labels, gi, start, counts = _group_sizes(labels, xp)
    G = int(start.shape[0])
    L = int(xp.max(counts)) if G else 0
    pos = xp.arange(n, device=dev) - start[gi]
    R = xp.zeros((G, L), dtype=v.dtype, device=dev)
    R[gi, pos] = v[order]
    uniq = sorted_labels[start]

    def restore(X):
        out = xp.empty(n, dtype=X.dtype, device=dev)
        out[order] = X[gi, pos]
        return out

    return Rows(rows=R, sizes=xp.astype(counts, xp.float64), labels=uniq, restore=restore, ragged=True)


def group_weights_top(rows: Rows, group_weights) -> float | None:
    """The one weight of every row where the setting alone says it, so also
    the largest of :func:`group_weights`' weights (which are then this
    value): ``None``: 1; ``"sqrt"`` on rows of one size: their size's square
    root, correctly rounded on every backend (torch's float64 sqrt on CPU
    gives 1.414213562373095 for 2, an ulp low, and the thresholds would
    differ from NumPy's).  Else None (other weights: read them)."""
    if group_weights is None:
        return 1.0
    if isinstance(group_weights, str) and group_weights == "sqrt" and not rows.ragged:
        return math.sqrt(rows.rows.shape[1])
    return None


def group_weights(rows: Rows, group_weights, *, name: str = "group_weights", like):
    """Per-row weights c_g (float64, >= 0, on ``like``'s device) for ``rows``.

    ``None``: all ones.  ``"sqrt"``: sqrt of each group's size (number of
    entries, as in the group lasso of Yuan & Lin).  An array: one weight per
    row for dense input; for ragged input, indexed by label (length > max label).
    """
    xp = array_namespace(like)
    dev = device(like)
    G = rows.n_groups
    one = group_weights_top(rows, group_weights)
    if one is not None:  # (None, or "sqrt" on rows of one size)
        return xp.full(G, one, dtype=xp.float64, device=dev)
    if isinstance(group_weights, str):
        if group_weights != "sqrt":
            raise ValueError(f"{name} must be None, 'sqrt' or an array, got {group_weights!r}")
        return xp.sqrt(rows.sizes)  # (ragged rows)
    c = V.as_float_array(group_weights, name)
    cxp = array_namespace(c)
    if c.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(c.shape)}")
    if c.shape[0] and float(cxp.min(c)) < 0:
        raise ValueError(f"{name} must be >= 0, got a minimum of {float(cxp.min(c))}")
    c = V.like(c, xp.zeros(0, dtype=xp.float64, device=dev), name)
    if not rows.ragged:
        if c.shape[0] != G:
            raise ValueError(f"{name} needs one entry per row ({G}), got {c.shape[0]}")
        return c
    need = int(xp.max(rows.labels)) + 1 if G else 0
    if c.shape[0] < need:
        raise ValueError(f"{name} is indexed by label and needs length > max label ({need}), got {c.shape[0]}")
    return c[rows.labels]
