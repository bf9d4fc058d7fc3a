"""Cost of proxlib.torch's proximal step relative to one training step.

    python benchmarks/bench_overhead.py                      # CPU table, then GPU if CUDA is there
    python benchmarks/bench_overhead.py --out benchmarks/OVERHEAD.md
    python benchmarks/bench_overhead.py --quick              # a smoke run (seconds)
    python benchmarks/bench_overhead.py --fsdp               # + the 2-process FSDP2 rows

Nothing is set in the environment (no OMP_WAIT_POLICY, no NUMBA_NUM_THREADS):
this is what a user's own training script gets.  torch uses its default
thread count.

CPU: an MLP 784-300-10 and a LeNet-5 (conv 6@5x5, pool, conv 16@5x5, pool,
120, 84, 10 on 28x28 inputs) at batch 64 and 256, with one penalty on every
weight layer: group lasso and GrOWL over input neurons/channels, weighted l1,
exclusive and group+exclusive over ``"shape"`` groups.  A *training step* is
zero_grad + forward + cross-entropy + backward + SGD(momentum) step; the
*prox step* is ``ProximalStep.step()`` (all terms).  On the CPU the two
are timed in alternation, a prox step after each training step as in
training (so both medians of ``--repeats`` timings, after warm-up, come from
the same minutes of a machine whose speed drifts), and the share is
prox / train.  Targets
(issue 7): <= 5% for group lasso, GrOWL and weighted l1 at batch 64; <= 20%
for exclusive and group+exclusive.  The table is measured twice: on an
otherwise idle machine, and with a second process busy on one core.
Two peers in the same run: the prox step with ``torch_dev.CPU_KERNELS =
"torch"`` (the torch operations, the code that runs on GPUs) instead of the
default route of CPU tensors (Numba's serial kernels), and a floor: one read
and write of every penalised weight (``torch._foreach_mul_(weights, 1.0)``),
also timed right after a training step.  *floor / train* is that pass as a
share of the training step it was paired with: the least any prox step that reads and writes
the weights can cost (the group lasso and GrOWL read them twice, first for
their row norms), against which the targets' shares are to be read.
torch runs that pass on all its threads; *one-thread floor / train* is the
same pass by one thread (``np.multiply`` on the weights' memory), as
Numba's serial kernels run: the least a single-threaded prox step costs.
(On 2026-12-02's 2-core machine it was the lower of the two: 2.7% against
3.4% of the MLP's step at batch 64.)

CPU, a learning-rate schedule: the plain rows at batch 64 with the lr
changed before every training step (multiplied by 1 - 1e-5, as a
per-iteration schedule changes it), so that every prox step forms its
thresholds at a new step.

CPU, Adam's metric: the same models at batch 64 trained with Adam, the
prox in Adam's metric (``metric="adam"``; lp with p = 1/2 added), both CPU
routes (no target: the issue's targets are the plain step's).

GPU (CUDA only): a ResNet-18 for 32x32 inputs (11.2 M parameters, batch 128)
with a prox on every conv weight; target <= 5% of a training step; for the
group lasso and GrOWL also the terms one by one (their batch switched off).

Host cost (CPU; ``--host-only`` alone): the prox step on the torch route over
ResNet-18's 20 convolutions at 1/16 of their widths, batched and one by one,
with the torch operations of each (see :func:`bench_host`).

FSDP2 (``--fsdp``): the MLP sharded over 2 gloo processes on the CPU vs one
process, per penalty: the prox share of the step and the bytes each rank
communicates per prox step (counted by the sharded plans).  Each prox step
is timed right after a training step, as in training (the weights moved,
so the exclusive penalties' hints may not decide every row), after a
barrier (the ranks end a training step apart, and the prox step's first
collective would wait out that gap); until 2026-12-07 the prox steps were
timed back to back, on weights that did not move between them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

import proxlib
import proxlib.torch as pt
from proxlib.backends import torch_dev


def _median_ms(fn, repeats: int, sync=None, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _paired_ms(train_step, prox_step, repeats: int) -> tuple[float, float]:
    """Median times of a training step and of the prox step that follows it,
    taken in alternation (as in training: the prox acts on the weights the
    optimizer just wrote), so that both see the same machine: this VM's
    speed drifts by tens of percent over minutes, which separate timings
    turned into swings of the ratio."""
    for _ in range(5):
        train_step()
        prox_step()
    t_train, t_prox = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        train_step()
        t_train.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        prox_step()
        t_prox.append((time.perf_counter() - t) * 1e3)
    return statistics.median(t_train), statistics.median(t_prox)


def _stair(G):
    return proxlib.owl_weights_stairwise(G, 1e-3, 1e-5, G // 2)


# name -> (penalty builder, grouping): one term of it on every weight layer
PENALTIES = {
    "group lasso (channel)": (lambda: proxlib.GroupLasso(1e-3), "channel"),
    "GrOWL (channel)": (lambda: pt.growl(_stair), "channel"),
    "weighted l1": (lambda: proxlib.WeightedL1(1e-4), None),
    "exclusive (shape)": (lambda: proxlib.ExclusiveLasso(1e-3), "shape"),
    "group+exclusive (shape)": (lambda: proxlib.GroupExclusive(1e-3, 0.5), "shape"),
}
#: penalties only the Adam's-metric rows also take (no target anywhere)
ADAM_ONLY = {"lp, p = 1/2": (lambda: proxlib.Lp(1e-5, 0.5), None)}
TARGETS = {"group lasso (channel)": 5, "GrOWL (channel)": 5, "weighted l1": 5, "exclusive (shape)": 20, "group+exclusive (shape)": 20}

#: the penalties run again with the Triton kernels that are off by default
#: until they have run on a GPU (the group lasso and GrOWL rows of every
#: tensor in one launch, ``torch_dev.GROUP_ROWS``; the exclusive penalties'
#: rows, ``_xp_kernels.EXCLUSIVE_ROWS``; in Adam's metric the row operators,
#: whole, ``_metric_kernels.METRIC_ROWS``)
KERNEL_ROWS = ("group lasso (channel)", "GrOWL (channel)", "exclusive (shape)", "group+exclusive (shape)")
KERNEL_METRIC = ("group lasso (channel)", "exclusive (shape)", "group+exclusive (shape)")
KERNEL_SUFFIX = ", Triton kernel"


@contextlib.contextmanager
def _triton_kernels(mode):
    """The switches of those kernels set to ``mode`` inside (None: left as they are)."""
    from proxlib.backends import _metric_kernels, _xp_kernels

    before = _xp_kernels.EXCLUSIVE_ROWS, _metric_kernels.METRIC_ROWS, torch_dev.GROUP_ROWS
    if mode is not None:
        _xp_kernels.EXCLUSIVE_ROWS = _metric_kernels.METRIC_ROWS = torch_dev.GROUP_ROWS = mode
    try:
        yield
    finally:
        _xp_kernels.EXCLUSIVE_ROWS, _metric_kernels.METRIC_ROWS, torch_dev.GROUP_ROWS = before


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(784, 300), torch.nn.ReLU(), torch.nn.Linear(300, 10))


def lenet5():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(16 * 4 * 4, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(), torch.nn.Linear(84, 10),
    )


MODELS = {"MLP 784-300-10": (mlp, (784,)), "LeNet-5": (lenet5, (1, 28, 28))}


def _weights(net):
    return [m for m in net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


def _model_rows(model_name: str, make, shape, batch: int, repeats: int, adam: bool, schedule: bool = False) -> list[dict]:
    """One model's rows at ``batch``: its training step (SGD with momentum,
    or Adam), the floors, and every penalty's prox step (in Adam's metric
    with ``adam``: GrOWL, which has none there, left out, and ADAM_ONLY's
    added) on both CPU routes, each timed right after a training step;
    with ``schedule``, the lr changed before every training step."""
    torch.manual_seed(0)
    net = make()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3) if adam else torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    X, y = torch.rand(batch, *shape), torch.randint(0, 10, (batch,))

    def train_step():
        if schedule:  # (a per-iteration schedule: the prox step after it is at a new step)
            for group in opt.param_groups:
                group["lr"] *= 1 - 1e-5
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(X), y).backward()
        opt.step()

    params = [layer.weight for layer in _weights(net)]

    def floor():  # one read and write of every penalised weight
        with torch.no_grad():
            torch._foreach_mul_(params, 1.0)

    arrays = [p.detach().numpy() for p in params]  # (views of the weights' memory)

    def floor_one_thread():  # the same, by one thread (as Numba's serial kernels run)
        for a in arrays:
            np.multiply(a, 1.0, out=a)

    # floor / train: the floor's share of the training step it was
    # paired with (not of a penalty row's, timed minutes later)
    t_floor_train, t_floor = _paired_ms(train_step, floor, repeats)
    t_floor1_train, t_floor1 = _paired_ms(train_step, floor_one_thread, repeats)
    rows = []
    for name, (pen, grouping) in {**PENALTIES, **(ADAM_ONLY if adam else {})}.items():
        if adam and name.startswith("GrOWL"):
            continue
        prox = pt.ProximalStep(opt, model=net, metric="adam" if adam else None)
        for layer in _weights(net):
            prox.add(layer, pen(), grouping=grouping)
        t_route = {}
        before = torch_dev.CPU_KERNELS
        try:
            for route in ("torch", "auto"):
                torch_dev.CPU_KERNELS = route
                t_train, t_route[route] = _paired_ms(train_step, prox.step, repeats)
        finally:
            torch_dev.CPU_KERNELS = before  # (the caller's route, not "auto": a test session runs "torch")
        rows.append(
            dict(
                device="cpu", model=f"{model_name}, Adam" if adam else f"{model_name}, lr schedule" if schedule else model_name, batch=batch,
                penalty=f"{name}, Adam's metric" if adam else name, train_ms=t_train,
                prox_ms=t_route["auto"], prox_torch_ms=t_route["torch"], floor_ms=t_floor,
                floor_train_ms=t_floor_train, floor1_ms=t_floor1, floor1_train_ms=t_floor1_train,
            )
        )
    return rows


def bench_cpu(repeats: int, batches=(64, 256)) -> list[dict]:
    return [r for model_name, (make, shape) in MODELS.items() for batch in batches
            for r in _model_rows(model_name, make, shape, batch, repeats, adam=False)]


def bench_cpu_schedule(repeats: int, batch: int = 64) -> list[dict]:
    """The CPU table's rows at ``batch`` with the lr changed at every step."""
    return [r for model_name, (make, shape) in MODELS.items() for r in _model_rows(model_name, make, shape, batch, repeats, adam=False, schedule=True)]


def bench_cpu_adam(repeats: int, batch: int = 64) -> list[dict]:
    """The CPU table's models at ``batch`` trained with Adam and the prox in
    Adam's metric (``ProximalStep(metric="adam")``), every penalty with a
    metric prox (GrOWL has none) and lp with p = 1/2, both CPU routes:
    Numba's kernels (the default: every kernel in a metric compiled) and
    the torch operations (``CPU_KERNELS = "torch"``, the array code
    everywhere).  No issue sets a target here; the rows say what such a
    step costs."""
    return [r for model_name, (make, shape) in MODELS.items() for r in _model_rows(model_name, make, shape, batch, repeats, adam=True)]


class _Block(torch.nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = torch.nn.BatchNorm2d(cout)
        self.c2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = torch.nn.BatchNorm2d(cout)
        self.sc = None
        if stride != 1 or cin != cout:
            self.sc = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False), torch.nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.b1(self.c1(x)))
        out = self.b2(self.c2(out))
        return F.relu(out + (x if self.sc is None else self.sc(x)))


def resnet18(num_classes=10, width: int = 64) -> torch.nn.Module:
    """ResNet-18 for 32x32 inputs (11.2 M parameters; ``width`` the first
    stage's channels, 64, doubled at each of the three others)."""
    layers = [torch.nn.Conv2d(3, width, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(width), torch.nn.ReLU()]
    cin = width
    for cout, stride in ((width, 1), (2 * width, 2), (4 * width, 2), (8 * width, 2)):
        layers += [_Block(cin, cout, stride), _Block(cout, cout, 1)]
        cin = cout
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8 * width, num_classes)]
    return torch.nn.Sequential(*layers)


# ------------------------------------------------------------------ host cost of the torch route

HOST_NOTE = (
    "On a GPU a prox step is launch-bound (`PROFILE_GPU.md`): its cost is the host's work per tensor, which this "
    "section measures on the CPU with the arithmetic made negligible. *Batched*: the step's terms run as batches "
    "(`proxlib/torch/_batched.py`: group lasso and GrOWL as statistics per tensor, one solve for all, one map per "
    "tensor; weighted l1 as three multi-tensor operations; the exclusive penalties' rows stacked by length, one "
    "kernel call per stack); *one by one*: `_batched.ENABLED = False`. Operations: every torch operation of one "
    "step; launching: those that make new data (a kernel launch each on a GPU; the CPU's row sort is NumPy's, "
    "not counted). Group+exclusive and the metric row kernels run their device route (`torch_dev._gathers_rows` "
    "False: no gathering of rows; the metric kernels read once per four root-search steps). In the operation "
    "counts (not the times) group+exclusive's root search is, as on CUDA, one Triton kernel (`_triton_shrink`, "
    "run here by Triton's interpreter, one launching operation; until 2026-12-01 the array code, with a read "
    "per four steps). *Triton kernel* rows: the Triton kernels that are off by default until they have run on "
    "a GPU, in Triton's interpreter (operations counted, no time: the interpreter's is no device's): the "
    "group lasso and GrOWL rows of every tensor in one launch, read and written in place (`torch_dev.GROUP_ROWS`, "
    "`_triton_multi`; GrOWL: its norms in one launch, the host's OWL, its map in one), the "
    "exclusive penalties' rows (`_xp_kernels.EXCLUSIVE_ROWS`: read and written in place through the same row tables, one "
    "launch per dtype and row length; until 2026-12-04 one launch per stack of copied rows) and, in Adam's metric, the "
    "row operators (group lasso, exclusive, group+exclusive), whole, in one kernel (`_metric_kernels.METRIC_ROWS`, "
    "one launch per stack; until 2026-12-04 the group lasso's root search alone). GrOWL's OWL of the row norms runs on "
    "the host, by Numba's kernel as on a GPU machine (until 2026-12-01 this section ran the NumPy reference "
    "there, which `CPU_KERNELS = \"torch\"` selects: 3.3 ms instead of 1.3 ms per step). *In Adam's metric*: "
    "`ProximalStep(Adam, metric=\"adam\")`, "
    "batched: the row kernels' rows stacked by length (7 lengths among the 20 convolutions' \"channel\" rows, "
    "4 among their \"shape\" rows), the weighted l1's entries concatenated; the metric (Adam's denominator) "
    "is formed per tensor in both."
)


@contextlib.contextmanager
def _root_search_as_on_cuda():
    """Group+exclusive's root search as on a CUDA tensor: one Triton kernel
    (``_xp_kernels.ROOT_SEARCH = "triton"``, in Triton's interpreter here,
    one launching operation) where Triton imports, else the array code.
    For the operation counts only: the interpreter's time is no device's."""
    from proxlib.backends import _xp_kernels

    before = _xp_kernels.ROOT_SEARCH
    if importlib.util.find_spec("triton") is not None:
        _xp_kernels.ROOT_SEARCH = "triton"
    try:
        yield
    finally:
        _xp_kernels.ROOT_SEARCH = before


def bench_host(repeats: int, width: int = 4) -> list[dict]:
    """The host's cost of a prox step on the torch route (the code every
    device but the CPU's Numba kernels runs): ResNet-18's 20 convolutions at
    ``width`` channels (4: 1/16 of the real widths, so that the arithmetic is
    negligible and what is timed is the per-tensor work of the host, which
    on a GPU is what bounds the step), on CPU tensors with
    ``torch_dev.CPU_KERNELS = "torch"``, each penalty's terms batched (the
    default) against one by one (``_batched.ENABLED = False``), timed in
    alternation, also in Adam's metric (the metric row kernels on their
    device route); and each one's torch operations per step (launching:
    those that make new data, a kernel launch each on a GPU)."""
    from proxlib.torch import _batched
    from proxlib.torch._opcount import OperationCount

    torch.manual_seed(0)
    net = resnet18(width=width)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(2, 3, 32, 32)).square().mean().backward()
    opt.step()  # (Adam's state: the metric of the metric rows)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    first = {k: v.clone() for k, v in net.state_dict().items()}  # every case starts from these weights
    rows = []
    route, gathers, host_numba = torch_dev.CPU_KERNELS, torch_dev._gathers_rows, torch_dev._host_numba
    torch_dev.CPU_KERNELS = "torch"
    torch_dev._gathers_rows = lambda W: False  # the metric row kernels' device route
    nb = torch_dev._numba_cpu()
    if nb is not None:
        # GrOWL's OWL of the row norms runs on the host; on a GPU machine
        # (CPU_KERNELS "auto") that is Numba's kernel, which CPU_KERNELS =
        # "torch" would have replaced by the NumPy reference (2.5x the step)
        torch_dev._host_numba = lambda: nb
    cases = [(name, pen, grouping, None, None) for name, (pen, grouping) in PENALTIES.items()]
    # (the kernel runs in Triton's interpreter here: its operations are
    # counted, its time is no device's and is not reported)
    cases += [(name + KERNEL_SUFFIX, *PENALTIES[name], None, "triton") for name in KERNEL_ROWS if importlib.util.find_spec("triton")]
    cases += [(f"{name}, Adam's metric", pen, grouping, "adam", None) for name, (pen, grouping) in PENALTIES.items() if not name.startswith("GrOWL")]
    cases += [(f"{name}, Adam's metric" + KERNEL_SUFFIX, *PENALTIES[name], "adam", "triton") for name in KERNEL_METRIC if importlib.util.find_spec("triton")]
    try:
        for name, pen, grouping, metric, rows_by in cases:
            # (the steps shrink the weights, and how many root-search steps,
            # hence operations, a step takes depends on them: each case
            # starts from the same weights, whatever ran before it)
            net.load_state_dict(first)
            prox = pt.ProximalStep(opt, model=net, metric=metric)
            for c in convs:
                prox.add(c, pen(), grouping=grouping)
            row = dict(penalty=name, layers=len(convs), width=width)
            times = {True: [], False: []}
            for enabled in (True, False):
                _batched.ENABLED = enabled
                with _triton_kernels(rows_by):
                    prox.step()
                    with _root_search_as_on_cuda(), OperationCount() as c:
                        prox.step()
                row[f"ops_{enabled}"], row[f"launching_{enabled}"] = c.total, c.launching
            if rows_by is not None:
                rows.append(row)
                continue
            for _ in range(repeats):
                for enabled in (True, False):
                    _batched.ENABLED = enabled
                    t0 = time.perf_counter()
                    prox.step()
                    times[enabled].append(time.perf_counter() - t0)
            row["batched_ms"] = 1e3 * statistics.median(times[True])
            row["single_ms"] = 1e3 * statistics.median(times[False])
            rows.append(row)
    finally:
        _batched.ENABLED = True
        torch_dev.CPU_KERNELS, torch_dev._gathers_rows, torch_dev._host_numba = route, gathers, host_numba
    return rows


def host_table(rows: list[dict]) -> str:
    out = [
        "| penalty (every conv) | convs | step, batched (ms) | step, one by one (ms) | ratio | ops / step, batched (launching) | one by one (launching) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        times = (f"{r['batched_ms']:.2f} | {r['single_ms']:.2f} | {r['single_ms'] / r['batched_ms']:.2f}x" if "batched_ms" in r
                 else "— | — | —")  # (a Triton kernel in the interpreter: no device's time)
        out.append(f"| {r['penalty']} | {r['layers']} | {times} "
                   f"| {r['ops_True']} ({r['launching_True']}) | {r['ops_False']} ({r['launching_False']}) |")
    return "\n".join(out)


def bench_resnet(repeats: int, device: str = "cuda", batch: int = 128, width: int = 64) -> list[dict]:
    if device == "cuda" and not torch.cuda.is_available():
        print("GPU: skipped (no CUDA device)", file=sys.stderr)
        return []
    dev = torch.device(device)
    torch.manual_seed(0)
    net = resnet18(width=width).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    X, y = torch.randn(batch, 3, 32, 32, device=dev), torch.randint(0, 10, (batch,), device=dev)
    sync = torch.cuda.synchronize if device == "cuda" else None
    dev_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"

    def train_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(X), y).backward()
        opt.step()

    t_train = _median_ms(train_step, repeats, sync)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    cases = [(name, pen, grouping, None, None) for name, (pen, grouping) in PENALTIES.items()]
    # the exclusive penalties with their rows by the Triton kernel ("auto": on CUDA tensors)
    cases += [(name + KERNEL_SUFFIX, *PENALTIES[name], None, "auto") for name in KERNEL_ROWS]
    # the prox in Adam's metric, after an Adam step (no exact metric prox for GrOWL)
    cases += [(f"{name}, Adam's metric", pen, grouping, "adam", None) for name, (pen, grouping) in PENALTIES.items() if not name.startswith("GrOWL")]
    cases += [(f"{name}, Adam's metric" + KERNEL_SUFFIX, *PENALTIES[name], "adam", "auto") for name in KERNEL_METRIC]
    adam = torch.optim.Adam(net.parameters(), lr=1e-4)

    def adam_step():
        adam.zero_grad(set_to_none=True)
        F.cross_entropy(net(X), y).backward()
        adam.step()

    t_adam = _median_ms(adam_step, repeats, sync)
    first = {k: v.clone() for k, v in net.state_dict().items()}  # every case starts from these weights
    route = torch_dev.CPU_KERNELS
    if device == "cpu":  # the dry run: CPU tensors through the torch operations CUDA runs (not Numba's kernels)
        torch_dev.CPU_KERNELS = "torch"
    try:
        rows = []
        for name, pen, grouping, metric, rows_by in cases:
            net.load_state_dict(first)  # (the same weights for every case, as in bench_host)
            prox = pt.ProximalStep(adam if metric else opt, model=net, metric=metric)
            for c in convs:
                prox.add(c, pen(), grouping=grouping)
            # (a step in a metric is tens of times longer: fewer timings, the median of them still)
            timed = (lambda f, r=max(1, repeats // 3): _median_ms(f, r, sync, warmup=1)) if metric else (lambda f: _median_ms(f, repeats, sync))
            with _triton_kernels(rows_by):
                prox.step()  # (the kernel's compilation, once per row length)
                t_prox = timed(prox.step)
            model = "ResNet-18 (32x32)" + ("" if width == 64 else f", width {width}") + (", Adam" if metric else "")
            row = dict(device=dev_name, model=model, batch=batch, penalty=name,
                       train_ms=t_adam if metric else t_train, prox_ms=t_prox)
            if any(t.plan().batched for t in prox.terms):  # the same terms one by one (proxlib.torch._batched)
                from proxlib.torch import _batched

                _batched.ENABLED = False
                try:
                    with _triton_kernels(rows_by):
                        row["single_ms"] = timed(prox.step)
                finally:
                    _batched.ENABLED = True
            rows.append(row)
        return rows
    finally:
        torch_dev.CPU_KERNELS = route


# ------------------------------------------------------------------ FSDP2 (2 gloo processes)


def gloo_rank(rank: int, world: int, init_file: str):
    """A worker's start: gloo over the loopback, one torch thread (the ranks
    share this machine's cores), the process group from the file store
    ``init_file``; returns the 1-D device mesh of the ranks."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    return init_device_mesh("cpu", (world,))


def fsdp_mlp(mesh):
    """The MLP 784-300-10 (seed 0) with ``fully_shard`` on each weight's layer
    and on the whole, its SGD with momentum, and its training step on a
    batch of 64: (net, opt, train_step)."""
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    net = mlp()
    for layer in _weights(net):
        fully_shard(layer, mesh=mesh)
    fully_shard(net, mesh=mesh)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    X, y = torch.rand(64, 784), torch.randint(0, 10, (64,))

    def train_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(X), y).backward()
        opt.step()

    return net, opt, train_step


def leave_rank(rank: int, out: str, rows: list) -> None:
    """Rank 0 writes ``rows`` (JSON) to ``out``; then every rank leaves.
    gloo's process group joins its threads in its destructor holding the
    GIL, and can deadlock with a thread still releasing a collective's
    tensors: after a barrier, leave without running destructors (as
    tests/_procs.end_rank does)."""
    import torch.distributed as dist

    if rank == 0:
        with open(out, "w") as f:
            json.dump(rows, f)
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)


def spawn_gloo_ranks(worker, *args) -> list[dict]:
    """``worker(rank, 2, init_file, out, *args)`` on two spawned processes;
    the rows rank 0 left in ``out`` (:func:`leave_rank`)."""
    import torch.multiprocessing as mp

    d = tempfile.mkdtemp()
    out = os.path.join(d, "rows.json")
    mp.spawn(worker, args=(2, os.path.join(d, "init"), out, *args), nprocs=2, join=True)
    with open(out) as f:
        return json.load(f)


def _fsdp_worker(rank, world, init_file, out, repeats):
    import torch.distributed as dist

    mesh = gloo_rank(rank, world, init_file)
    rows = []
    try:
        for name, (pen, grouping) in PENALTIES.items():
            net, opt, train_step = fsdp_mlp(mesh)
            prox = pt.ProximalStep(opt, model=net)
            for layer in _weights(net):
                prox.add(layer, pen(), grouping=grouping)
            t_train = _median_ms(train_step, repeats)
            prox.step()
            before = sum(t._plan.comm.bytes for t in prox.terms)

            def prox_step_timed():
                train_step()
                dist.barrier()
                t = time.perf_counter()
                prox.step()
                return (time.perf_counter() - t) * 1e3

            for _ in range(5):
                prox_step_timed()
            t_prox = statistics.median(prox_step_timed() for _ in range(repeats))
            n = repeats + 5
            per_step = (sum(t._plan.comm.bytes for t in prox.terms) - before) / n
            rows.append(dict(device="cpu, FSDP2 x2 (gloo)", model="MLP 784-300-10", batch=64, penalty=name, train_ms=t_train, prox_ms=t_prox, bytes=per_step))
        leave_rank(rank, out, rows)
    finally:
        dist.destroy_process_group()


def bench_fsdp(repeats: int) -> list[dict]:
    return spawn_gloo_ranks(_fsdp_worker, repeats)


# ------------------------------------------------------------------ report


def table(rows: list[dict]) -> str:
    with_bytes = any("bytes" in r for r in rows)
    with_routes = any("prox_torch_ms" in r for r in rows)
    with_single = any("single_ms" in r for r in rows)
    head = "| device | model | batch | penalty (every layer) | train step (ms) | prox step (ms) | prox / train | target |"
    sep = "|---|---|---:|---|---:|---:|---:|---:|"
    if with_routes:
        head += " torch ops: prox (ms) | floor (ms) | floor / train | one-thread floor / train |"
        sep += "---:|---:|---:|---:|"
    if with_bytes:
        head += " bytes / rank / prox step |"
        sep += "---:|"
    if with_single:
        head += " prox step, terms one by one (ms) |"
        sep += "---:|"
    out = [head, sep]
    for r in rows:
        share = 100 * r["prox_ms"] / r["train_ms"]
        target = TARGETS.get(r["penalty"]) if r["batch"] == 64 or "ResNet" in r["model"] else None
        if "ResNet" in r["model"]:
            target = 5
        mark = "" if target is None else (f"<= {target}% (met)" if share <= target else f"<= {target}% (missed)")
        line = f"| {r['device']} | {r['model']} | {r['batch']} | {r['penalty']} | {r['train_ms']:.3f} | {r['prox_ms']:.3f} | {share:.1f}% | {mark} |"
        if with_routes:
            line += (f" {r['prox_torch_ms']:.3f} | {r['floor_ms']:.3f} | {100 * r['floor_ms'] / r.get('floor_train_ms', r['train_ms']):.1f}% |"
                     if "prox_torch_ms" in r else " | | |")
            line += f" {100 * r['floor1_ms'] / r['floor1_train_ms']:.1f}% |" if "floor1_ms" in r else " |"
        if with_bytes:
            line += f" {r['bytes']:.0f} |" if "bytes" in r else " |"
        if with_single:
            line += f" {r['single_ms']:.3f} |" if "single_ms" in r else " |"
        out.append(line)
    return "\n".join(out)


def _cpu_model() -> str:
    """The CPU's model name where /proc/cpuinfo gives it (the shares move
    with the machine: AMD EPYC Zen 4 and Intel Xeon VMs differed by 1.5x in
    the MLP's), else the architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0]} ({platform.machine()})" if names else platform.processor() or platform.machine()


def _loadavg() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="few repeats, batch 64 only, no busy-core pass")
    p.add_argument("--fsdp", action="store_true", help="also the 2-process FSDP2 rows")
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument("--gpu-only", action="store_true", help="the ResNet-18 section alone (no CPU tables)")
    p.add_argument("--host-only", action="store_true", help="the host-cost section alone (torch route, CPU)")
    p.add_argument("--resnet-device", default="cuda", help="device of the ResNet-18 section (cpu: a dry run of it)")
    p.add_argument("--resnet-batch", type=int, default=128)
    p.add_argument("--resnet-width", type=int, default=64, help="ResNet-18's first-stage channels (a dry run: fewer)")
    p.add_argument("--out", default=None, help="write a markdown report here")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.gpu_only and (a.no_gpu or a.fsdp or a.host_only):
        p.error("--gpu-only runs the ResNet-18 section alone: not with --no-gpu, --fsdp or --host-only")
    repeats = 5 if a.quick else a.repeats
    batches = (64,) if a.quick else (64, 256)
    header = (
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), proxlib {proxlib.__version__}, "
        f"{_cpu_model()}, {os.cpu_count()} cores; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS')}; "
        f"load average before: {_loadavg()}"
    )
    print(header)
    sections = []
    host = [] if a.gpu_only else bench_host(max(5, repeats // 2))
    if host:
        host_section = ("Host cost of the torch route (CPU tensors, ResNet-18's 20 convolutions at 1/16 width)", host_table(host))
        print(host_section[1], flush=True)
    if a.host_only:
        if a.out:
            with open(a.out, "w") as f:
                f.write(f"## {host_section[0]}\n\n`python benchmarks/bench_overhead.py --host-only` on {time.strftime('%Y-%m-%d %H:%M')}; {header}; load after: {_loadavg()}\n\n{host_section[1]}\n")
        return 0
    rows = [] if a.gpu_only else bench_cpu(repeats, batches)
    if rows:
        sections.append(("CPU, otherwise idle machine", rows))
        print(table(rows), flush=True)
    if not a.gpu_only:
        sched = bench_cpu_schedule(repeats)
        sections.append(("CPU, the learning rate changed at every step (otherwise idle machine)", sched))
        print(table(sched), flush=True)
        adam = bench_cpu_adam(max(5, repeats // 4))
        sections.append(("CPU, Adam's metric (otherwise idle machine)", adam))
        print(table(adam), flush=True)
    if not (a.quick or a.gpu_only):
        # (it spins while its parent lives: a run stopped by a signal, which
        # skips the finally below, does not leave it busy on the machine)
        busy = subprocess.Popen([sys.executable, "-c", "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"])
        try:
            time.sleep(1.0)
            rows_busy = bench_cpu(repeats, batches)
        finally:
            busy.kill()
        sections.append(("CPU, a second process busy on one core", rows_busy))
        print(table(rows_busy), flush=True)
    all_rows = [r for _, rs in sections for r in rs]
    if not a.no_gpu:
        gpu = bench_resnet(repeats, a.resnet_device, a.resnet_batch, a.resnet_width)
        if gpu:
            sections.append(("GPU" if a.resnet_device == "cuda" else f"ResNet-18 on {a.resnet_device}", gpu))
            print(table(gpu))
            all_rows += gpu
    if a.fsdp:
        single = [r for r in rows if r["model"] == "MLP 784-300-10" and r["batch"] == 64]
        fsdp = bench_fsdp(max(5, repeats // 4))
        sections.append(("FSDP2: one process (above) vs two gloo processes on the CPU (each prox step timed after a training step and a barrier)", single + fsdp))
        print(table(single + fsdp))
        all_rows += fsdp
    if a.out:
        with open(a.out, "w") as f:
            f.write("# Proximal step vs training step\n\n")
            f.write(f"`python benchmarks/bench_overhead.py {' '.join(argv if argv is not None else sys.argv[1:])}` on {time.strftime('%Y-%m-%d %H:%M')}.\n\n")
            f.write(header + f"; load average after: {_loadavg()}\n\n")
            for title, rs in sections:
                f.write(f"## {title}\n\n{table(rs)}\n\n")
            if host:
                f.write(f"## {host_section[0]}\n\n{HOST_NOTE}\n\n{host_section[1]}\n\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(all_rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
