r"""GrOWL's tying structure: find it after training, enforce it while retraining.

Stage 1 of the GrOWL two-stage procedure (Zhang et al. 2018) trains with the
GrOWL prox; rows of the first layer (input neurons) whose weights are strongly
correlated end up with equal norms and nearly equal directions.  Stage 2 keeps
only the non-zero rows and ties each cluster of similar rows to one shared row.

Clusters are found among the non-zero rows with the similarity

.. math:: s_{ij} = \frac{\langle w_i, w_j\rangle}{\max(\|w_i\|_2^2, \|w_j\|_2^2)}
          \in [-1, 1]

(1 only for equal rows; it also penalises a difference in norm, unlike the
cosine), by scikit-learn's ``AffinityPropagation`` on the precomputed
similarity with a fixed ``random_state``; ``preference`` (the diagonal) sets
how similar rows must be to share an exemplar: higher gives more, smaller
clusters.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.utils import parametrize

import proxlib
from proxlib import _validate as V

from . import _bridge as B

__all__ = ["Tying", "row_similarity", "find_tying", "TiedRows", "tie_rows"]


def _rows64(W, grouping: str) -> np.ndarray:
    if isinstance(W, torch.Tensor):
        W = B.gathered(W).cpu().numpy()
    R = np.asarray(proxlib.to_rows(np.asarray(W), grouping), dtype=np.float64)
    if not np.isfinite(R).all():
        raise ValueError("W contains NaN or Inf; its rows cannot be clustered")
    return R


def row_similarity(W, grouping: str = "channel") -> np.ndarray:
    r"""Matrix of :math:`s_{ij} = \langle w_i, w_j\rangle / \max(\|w_i\|^2, \|w_j\|^2)`
    over the rows of ``W`` (a tensor or array) under ``grouping``.

    Zero rows have similarity 0 to every row (and 0 on the diagonal).

    >>> import numpy as np
    >>> row_similarity(np.array([[1.0, 2.0], [2.0, 4.0], [0.0, 0.0]]).T, "channel")
    array([[1. , 0.5, 0. ],
           [0.5, 1. , 0. ],
           [0. , 0. , 0. ]])
    """
    return _similarity(_rows64(W, grouping))


def _similarity(R: np.ndarray) -> np.ndarray:
    # s_ij does not change when every row is scaled by one number: a power of
    # two bringing the largest entry into [0.5, 1) is exact (the same values bit
    # for bit) and keeps the squared norms of float64 rows beyond 1e154 from
    # overflowing (NaN) and those below 1e-162 from vanishing (0)
    big = float(np.abs(R).max()) if R.size else 0.0
    if big > 0:
        R = np.ldexp(R, -np.frexp(big)[1])
    n2 = np.einsum("ij,ij->i", R, R)
    den = np.maximum.outer(n2, n2)
    G = R @ R.T
    return np.divide(G, den, out=np.zeros_like(G), where=den > 0)


@dataclass
class Tying:
    """A tying structure over the rows of one weight tensor.

    Attributes
    ----------
    labels : (G,) int64 array
        Cluster of each row, 0..n_clusters-1; -1 for a zero (pruned) row.
    similarity : (k, k) float64 array
        :func:`row_similarity` among the k non-zero rows (in row order).
    nonzero : (k,) int64 array
        Indices of the non-zero rows.
    converged : bool
        Whether AffinityPropagation converged (if not, every non-zero row is
        its own cluster).
    """

    labels: np.ndarray
    similarity: np.ndarray
    nonzero: np.ndarray
    converged: bool

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1 if (self.labels >= 0).any() else 0

    @property
    def n_tied_rows(self) -> int:
        """Non-zero rows that share their values with at least one other row."""
        lab = self.labels[self.labels >= 0]
        counts = np.bincount(lab) if lab.size else np.zeros(0, dtype=np.int64)
        return int(counts[counts > 1].sum())

    def order(self) -> np.ndarray:
        """Indices into ``nonzero`` sorting the rows by cluster (for plots)."""
        return np.argsort(self.labels[self.nonzero], kind="stable")


NOT_CONVERGED = "AffinityPropagation did not converge"  # (the start of find_tying's warning)


_AP_DAMPING_AGAIN = 0.9  # find_tying's last run's damping (at least)
_AP_RUNS = 3  # at most this many AffinityPropagation runs per find_tying (_ap_runs)


def _ap_runs(random_state, damping: float, runs: int) -> list:
    """The (random_state, damping) of find_tying's AffinityPropagation runs,
    in order, as far as they do not converge: as asked, then random_state +
    1, then also damping 0.9 (or the one asked, if higher); the first
    ``runs`` of those, without repeats.  A ``random_state`` that is not an
    integer (None, a ``RandomState``) is passed again as it is: each run
    then draws anew by itself, so none is a repeat."""
    seeded = isinstance(random_state, numbers.Integral)
    again = random_state + 1 if seeded else random_state
    ladder = [(random_state, damping), (again, damping), (again, max(damping, _AP_DAMPING_AGAIN))][:runs]
    return list(dict.fromkeys(ladder)) if seeded else ladder


def find_tying(
    W,
    *,
    grouping: str = "channel",
    preference: float = 0.8,
    damping: float = 0.5,
    max_iter: int = 2000,
    convergence_iter: int = 50,
    random_state: int = 0,
) -> Tying:
    r"""Cluster the non-zero rows of ``W`` by AffinityPropagation on :func:`row_similarity`.

    Parameters
    ----------
    W : tensor or array, at least 2-D (Linear ``(out, in)``, Conv ``(out, in, *k)``)
    grouping : str, default ``"channel"``
        GrOWL's rows: the input neurons of a Linear, the input channels of a Conv.
    preference : float, default 0.8
        The diagonal of the similarity given to AffinityPropagation.  Similar
        rows (s close to 1) join one cluster; with a preference near 1 only
        near-identical rows do.
    damping, max_iter, convergence_iter, random_state
        Passed to ``sklearn.cluster.AffinityPropagation`` (``random_state`` fixed
        for reproducibility).  A short ``convergence_iter`` with heavy damping
        can stop on a worse clustering; the defaults avoid that on the tests'
        small cases.  Where it does not converge, it runs again, as
        scikit-learn advises for oscillations: first with ``random_state +
        1`` (scikit-learn adds noise of about 1e-16 relative to the
        similarities to break their ties, and a draw can leave two sets of
        exemplars equally good, between which its messages oscillate: the
        demo's quick group-lasso layer, 249 rows, oscillated for 2,000
        iterations with ``random_state`` 0 at every damping from 0.5 to 0.9,
        and converged in 78 with 1), then also with ``damping`` 0.9 (the
        demo's GrOWL+l2 layer, 164 rows, oscillated with period between 15
        and 50 iterations at 0.5 and 0.7 whatever the draw, and converged in
        405 at 0.9).  Cost: AffinityPropagation's, O(N^2) time and memory
        per iteration for N non-zero rows, up to ``max_iter`` iterations per
        run, up to three runs where none converges: a layer's few hundred
        rows take well under a second, but 1,024 random rows took 30 s on a
        2-core machine (and did not converge: up to three times that now).

    Returns
    -------
    :class:`Tying` (labels -1 for zero rows).  Exactly zero rows are the ones
    the GrOWL prox removed.  Two non-zero rows (or any number whose
    similarities to each other are all equal) are tied when their similarity
    is >= ``preference`` and left apart otherwise (scikit-learn's rule there,
    without its warning about arbitrary cluster centres).
    """
    from sklearn.cluster import AffinityPropagation
    from sklearn.exceptions import ConvergenceWarning

    preference = V.real_scalar(preference, "preference")
    R = _rows64(W, grouping)
    nonzero = np.flatnonzero(np.any(R != 0, axis=1))
    labels = np.full(R.shape[0], -1, dtype=np.int64)
    S = _similarity(R[nonzero])
    converged = True
    if nonzero.size == 1:
        labels[nonzero] = 0
    elif nonzero.size > 1:
        for state, damp in _ap_runs(random_state, damping, _AP_RUNS):
            ap = AffinityPropagation(
                affinity="precomputed",
                preference=preference,
                damping=damp,
                max_iter=max_iter,
                convergence_iter=convergence_iter,
                random_state=state,
            )
            # without convergence scikit-learn labels every row -1 or, where it
            # found exemplars, returns degenerate labels (dissimilar rows tied)
            # with a ConvergenceWarning: both are "did not converge"
            with warnings.catch_warnings():
                warnings.simplefilter("error", ConvergenceWarning)
                # rows whose similarities to each other are all equal (always so
                # for two rows): scikit-learn skips the iterations, ties them all
                # when that similarity >= preference, else none, and warns that
                # its cluster centres are arbitrary; the labels do not depend on
                # the centres, so the warning is not passed on
                warnings.filterwarnings("ignore", message="All samples have mutually equal similarities", category=UserWarning)
                try:
                    lab = ap.fit(S).labels_
                except ConvergenceWarning:
                    lab = None
            if lab is not None and lab.min() >= 0:
                break
        else:  # AffinityPropagation did not converge
            converged = False
            warnings.warn(f"{NOT_CONVERGED}; leaving every row untied", RuntimeWarning, stacklevel=2)
            lab = np.arange(nonzero.size)
        # renumber clusters 0..k-1 in order of first appearance (deterministic)
        _, first, inv = np.unique(lab, return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first))
        labels[nonzero] = rank[inv]
    return Tying(labels=labels, similarity=S, nonzero=nonzero, converged=converged)


def _check_labels(labels) -> torch.Tensor:
    if isinstance(labels, torch.Tensor):
        lab = labels.detach().cpu()
    else:
        lab = torch.as_tensor(np.asarray(labels))
    if lab.dtype.is_floating_point or lab.dtype.is_complex or lab.dtype == torch.bool:
        raise TypeError(f"labels must be integers (cluster of each row, -1 for a pruned row), got dtype {lab.dtype}")
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(lab.shape)}")
    if lab.numel() and int(lab.min()) < -1:
        raise ValueError(f"labels must be >= -1 (-1 marks a pruned row), got {int(lab.min())}")
    return lab.to(torch.int64)


class TiedRows(torch.nn.Module):
    r"""Parametrization that ties rows: row r of the weight (under ``grouping``)
    becomes the mean of the rows in its cluster; rows labelled -1 become 0.

    .. math:: \tilde w_r = \frac{1}{|C(r)|} \sum_{s \in C(r)} w_s, \qquad \tilde w_r = 0 \text{ if label}_r = -1

    Every row of a cluster holds bit-identical values (one stored row per
    cluster).  Each stored row of a cluster C gets the cluster's averaged
    gradient, :math:`\partial L / \partial w_s = \frac{1}{|C|} \sum_{r \in C}
    \partial L / \partial \tilde w_r` (averaged-gradient tying): under SGD the
    tied value moves by the learning rate times that average, :math:`|C|`
    times less than one parameter shared by the rows would (its gradient is
    the sum); scale the learning rate where the shared-parameter step is
    wanted.  The labels are a buffer, so they are in the module's
    ``state_dict``; a fresh ``TiedRows(n_rows)`` (all rows untied) can be
    registered before ``load_state_dict`` to restore a checkpoint.  The number
    of clusters is kept as a Python int (updated when labels are loaded), so
    ``torch.compile`` traces the forward without a graph break.
    """

    def __init__(self, labels, grouping: str = "channel"):
        super().__init__()
        if isinstance(labels, (int, np.integer)) and not isinstance(labels, bool):
            labels = np.arange(int(labels))
        self.grouping = B.canonical_grouping(grouping)
        self.register_buffer("labels", _check_labels(labels).clone())
        self._update_slots()

    def _update_slots(self) -> None:
        # slot 0 collects the pruned rows (label -1) and is multiplied by 0
        self.n_slots = int(self.labels.max()) + 2 if self.labels.numel() else 1

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "labels"
        if key in state_dict:
            _check_labels(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._update_slots()

    def forward(self, W: torch.Tensor) -> torch.Tensor:
        R = B.rows(W, self.grouping)
        if R.shape[0] != self.labels.shape[0]:
            raise ValueError(f"TiedRows has {self.labels.shape[0]} labels but the weight has {R.shape[0]} rows")
        idx = self.labels.to(W.device) + 1  # a no-op once the module holds it (tie_rows puts it there)
        sums = R.new_zeros((self.n_slots, R.shape[1])).index_add(0, idx, R)
        # counted in integers: a bfloat16 (float16) count stops at 256 (2048)
        counts = idx.new_zeros(self.n_slots).index_add(0, idx, torch.ones_like(idx))
        counts = counts.to(torch.promote_types(R.dtype, torch.float32))
        scale = torch.where(counts > 0, 1.0 / counts.clamp_min(1), 0.0).to(R.dtype)
        scale[0] = 0
        return B.from_rows((sums * scale[:, None])[idx], W.shape, self.grouping)


def tie_rows(module: torch.nn.Module, tying, *, name: str = "weight", grouping: str = "channel") -> TiedRows:
    """Register :class:`TiedRows` on ``module.<name>`` (labels from a :class:`Tying`
    or an array); returns the parametrization.  Create a fresh optimizer after
    this: the optimised leaf is now ``module.parametrizations.<name>.original``.
    """
    B.refuse_sharded(module, name, "tie_rows")
    B.check_conv_layout(module, name, B.canonical_grouping(grouping))
    labels = tying.labels if isinstance(tying, Tying) else tying
    # the labels live beside the weight (numpy labels would make a CPU buffer
    # that index_add refuses on a CUDA weight)
    p = TiedRows(labels, grouping).to(getattr(module, name).device)
    parametrize.register_parametrization(module, name, p)
    return p
