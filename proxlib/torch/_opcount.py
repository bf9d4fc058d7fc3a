"""Counting the torch operations of some code: how launch-bound code is measured without a GPU.

On a GPU, every torch operation that makes new data is (at least) one kernel
launch, and costs the host several microseconds however small the tensor;
views cost only the host's dispatch.  :class:`OperationCount` counts both, on
any device (CPU tensors included), by intercepting the operations at torch's
dispatcher: the tests bound the operations of a proximal step per tensor
with it, and the benchmarks report them.
"""

from __future__ import annotations

import collections
import sys

from torch.utils._python_dispatch import TorchDispatchMode

#: operations that make no new data (no kernel launch on a device)
VIEWS = frozenset({
    "aten.view.default", "aten.detach.default", "aten.permute.default", "aten.expand.default", "aten._unsafe_view.default",
    "aten.unsqueeze.default", "aten.split_with_sizes.default", "aten.alias.default", "aten.slice.Tensor", "aten.t.default",
    "aten.transpose.int", "aten.split.Tensor", "aten.reshape.default", "aten.squeeze.dim", "aten.as_strided.default",
})


#: proxlib's Triton kernel modules counted here: each counts its launches in
#: ``launches`` and hides its interpreter's torch operations from dispatch modes
TRITON_MODULES = ("proxlib.backends._triton_shrink", "proxlib.backends._triton_exclusive", "proxlib.backends._triton_metric",
                  "proxlib.backends._triton_multi", "proxlib.backends._triton_rows")


def _triton_launches() -> int:
    """Launches of proxlib's Triton kernels so far (modules not imported: none)."""
    return sum(getattr(sys.modules.get(name), "launches", 0) for name in TRITON_MODULES)


class OperationCount(TorchDispatchMode):
    """``with OperationCount() as c: ...`` counts the torch operations run
    inside by name (``c.ops``); ``c.launching`` those that make new data.
    A launch of one of proxlib's Triton kernels counts as one launching
    operation, ``"triton"`` (not the torch operations of Triton's
    interpreter, which runs them on CPU tensors)."""

    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __enter__(self):
        self._triton_start = _triton_launches()
        return super().__enter__()

    def __exit__(self, *exc):
        launched = _triton_launches() - self._triton_start
        if launched:
            self.ops["triton"] += launched
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def launching(self) -> int:
        return sum(k for op, k in self.ops.items() if op not in VIEWS)

    @property
    def total(self) -> int:
        return sum(self.ops.values())
