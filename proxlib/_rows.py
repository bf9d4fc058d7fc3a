"""Canonical row layout for the group operators.

A group operator sees a 2-D C-contiguous array whose ROWS are the groups, plus
one non-negative weight per row.  Two inputs map to that layout:

* dense: ``W`` of any rank >= 1 is ``W.reshape(W.shape[0], -1)`` (C order,
  whatever W's memory order); a 1-D ``W`` is one row;
* ragged: a 1-D ``v`` with integer ``groups`` labels.  Entries are gathered by
  label (a stable sort) into a zero-padded ``(n_groups, max_group_size)``
  array.  Padding zeros change none of the operators (they add nothing to any
  norm and never enter an exclusive-lasso support).  Cost: O(n log n) and
  ``n_groups * max_group_size`` scratch.

``restore`` maps the kernel's rows back to the input's shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import _validate as V
from ._dispatch import array_namespace


@dataclass
class Rows:
    rows: Any  # (G, m) C-contiguous, the input's dtype
    sizes: Any  # (G,) float64: number of entries of each group
    labels: Any  # (G,) the group labels (row indices for dense input)
    restore: Callable[[Any], Any]
    ragged: bool = False

    @property
    def n_groups(self) -> int:
        return int(self.rows.shape[0])


def canonical_rows(W, groups=None, *, name: str = "W") -> Rows:
    xp = array_namespace(W)
    if W.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a 0-d array")
    if groups is None:
        # explicit row length: reshape(0, -1) cannot infer it for zero rows
        R = W.reshape(1, -1) if W.ndim == 1 else W.reshape(W.shape[0], math.prod(W.shape[1:]))
        R = xp.ascontiguousarray(R)
        shape = W.shape
        G, m = R.shape
        return Rows(
            rows=R,
            sizes=xp.full(G, float(m)),
            labels=xp.arange(G),
            restore=lambda X: X.reshape(shape),
        )
    return _ragged_rows(W, groups, name, xp)


def _ragged_rows(v, groups, name, xp) -> Rows:
    if v.ndim != 1:
        raise ValueError(f"groups= labels need a 1-D {name}, got shape {v.shape}")
    labels = groups if hasattr(groups, "dtype") else np.asarray(groups)
    if str(labels.dtype) == "bool" or np.dtype(str(labels.dtype)).kind not in "iu":
        raise TypeError(f"groups must hold integer labels, got dtype {labels.dtype}")
    labels = xp.asarray(labels)
    if labels.shape != v.shape:
        raise ValueError(f"groups must have the shape of {name} {v.shape}, got {labels.shape}")
    n = v.shape[0]
    if n and int(labels.min()) < 0:
        raise ValueError(f"groups labels must be >= 0, got {int(labels.min())}")
    order = xp.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    uniq, start, counts = xp.unique(sorted_labels, return_index=True, return_counts=True)
    G = int(uniq.shape[0])
    L = int(counts.max()) if G else 0
    gi = xp.repeat(xp.arange(G), counts)
    pos = xp.arange(n) - start[gi]
    R = xp.zeros((G, L), dtype=v.dtype)
    R[gi, pos] = v[order]

    def restore(X):
        out = xp.empty(n, dtype=X.dtype)
        out[order] = X[gi, pos]
        return out

    return Rows(rows=R, sizes=counts.astype(xp.float64), labels=uniq, restore=restore, ragged=True)


def group_weights(rows: Rows, group_weights, *, name: str = "group_weights", like):
    """Per-row weights c_g (float64, >= 0) for ``rows``.

    ``None``: all ones.  ``"sqrt"``: sqrt of each group's size (number of
    entries, as in the group lasso of Yuan & Lin).  An array: one weight per
    row for dense input; for ragged input, indexed by label (length > max label).
    """
    xp = array_namespace(like)
    G = rows.n_groups
    if group_weights is None:
        return xp.ones(G, dtype=xp.float64)
    if isinstance(group_weights, str):
        if group_weights != "sqrt":
            raise ValueError(f"{name} must be None, 'sqrt' or an array, got {group_weights!r}")
        return xp.sqrt(rows.sizes)
    c = V.as_float_array(group_weights, name)
    c = xp.asarray(c, dtype=xp.float64)
    if c.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {c.shape}")
    if c.size and float(c.min()) < 0:
        raise ValueError(f"{name} must be >= 0, got a minimum of {float(c.min())}")
    if not rows.ragged:
        if c.shape[0] != G:
            raise ValueError(f"{name} needs one entry per row ({G}), got {c.shape[0]}")
        return c
    need = int(rows.labels.max()) + 1 if G else 0
    if c.shape[0] < need:
        raise ValueError(f"{name} is indexed by label and needs length > max label ({need}), got {c.shape[0]}")
    return c[rows.labels]
