"""argparse types of the command lines (``python -m proxlib.demo``,
``python -m proxlib.experiments``): a bad number is a usage error naming
its option when the options are read, not a failure after training; and
the strict JSON their ``results.json`` files are written in."""

from __future__ import annotations

import argparse
import json
import math

__all__ = ["positive_int", "nonnegative_int", "positive_float", "nonnegative_float", "in_range", "seed", "finite_float", "write_json"]


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


def _strict(o):
    """``o`` with every float that is not finite (a NaN where a quantity is
    undefined, e.g. the similarity of tied rows when none are tied) as None,
    and NumPy / torch numbers and arrays as Python ones."""
    if isinstance(o, dict):
        return {k: _strict(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_strict(v) for v in o]
    if hasattr(o, "tolist"):  # NumPy scalars and arrays, torch tensors
        return _strict(o.tolist())
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    return o


def write_json(path: str, obj) -> None:
    """Write ``obj`` to ``path`` as standard JSON (RFC 8259: no NaN or
    Infinity tokens, which Python's json writes by default and strict
    readers, e.g. JavaScript's JSON.parse, reject): floats that are not
    finite become null; anything else JSON has no type for, its str."""
    with open(path, "w") as f:
        json.dump(_strict(obj), f, indent=1, allow_nan=False, default=str)
