"""argparse types of the command lines (``python -m proxlib.demo``,
``python -m proxlib.experiments``): a bad number is a usage error naming
its option when the options are read, not a failure after training."""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_int", "nonnegative_int", "positive_float", "nonnegative_float", "in_range", "seed", "finite_float"]


def bounded(convert, what: str, lo=None, hi=None, *, lo_open: bool = False):
    """An argparse type: ``convert`` (int or float), finite, in [lo, hi] (lo
    excluded with ``lo_open``), else a usage error naming the rule (checked
    when the options are read, not after the reference has been trained)."""

    def parse(text: str):
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        ok = math.isfinite(v) and (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or v <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return v

    parse.__name__ = convert.__name__  # argparse's "invalid <name> value" for unparsable text
    return parse


positive_int = bounded(int, "an integer >= 1", 1)
nonnegative_int = bounded(int, "an integer >= 0", 0)
positive_float = bounded(float, "a finite number > 0", 0.0, lo_open=True)
nonnegative_float = bounded(float, "a finite number >= 0", 0.0)
finite_float = bounded(float, "a finite number")
# the seeds reach scikit-learn's random_state (AffinityPropagation), which takes [0, 2**32 - 1] only
seed = bounded(int, "an integer in [0, 2**32 - 1]", 0, 2**32 - 1)


def in_range(lo: float, hi: float):
    """An argparse type: a number in [lo, hi]."""
    return bounded(float, f"a number in [{lo:g}, {hi:g}]", lo, hi)
