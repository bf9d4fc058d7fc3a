"""Cost of proxlib.torch's proximal step relative to one training step.

    python benchmarks/bench_overhead.py [--threads 2] [--repeats 50] [--json out.json]

CPU: the demo's 784-300-10 MLP (batch 64, 256 and 1024), one prox term on the first
layer (as in the demo) or on both layers.  A "training step" is zero_grad +
forward + cross-entropy + backward + SGD(momentum) step; the prox step is
``ProximalStep.step()`` (read lr, zero-copy view, exact prox, write back in
place).  The "core" column times the same proxlib operator called directly on
a NumPy copy of the rows, so adapter = prox - core is what the torch bridge
adds (row views, the write back).

GPU (only when CUDA and CuPy are available, skipped otherwise): a ResNet-18
sized convnet (11.2 M parameters, CIFAR-sized 32x32 input, batch 128) with a
prox on every conv weight.  Target: prox <= 5% of a training step.

Prints a markdown table; median of ``--repeats`` timings after warm-up.
``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` (as in ``python -m proxlib.demo``):
spinning OpenMP threads of torch otherwise compete with the prox kernels' own
threads; set it to ``ACTIVE`` in the environment to measure that case.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import torch
import torch.nn.functional as F

import proxlib
import proxlib.torch as pt


def _median_ms(fn, repeats: int, sync=None) -> float:
    for _ in range(3):
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


def _stair(G):
    return proxlib.owl_weights_stairwise(G, 0.1, 1e-4, G // 2)


PENALTIES = {
    "group lasso (channel)": (lambda: proxlib.GroupLasso(0.1), "channel", lambda R, s: proxlib.prox_group_lasso(R, 0.1, s)),
    "GrOWL stairwise (channel)": (lambda: pt.growl(_stair), "channel", lambda R, s: proxlib.prox_growl(R, _stair(R.shape[0]), s)),
    "group+exclusive mu=0.5 (shape)": (
        lambda: proxlib.GroupExclusive(0.1, 0.5),
        "shape",
        lambda R, s: proxlib.prox_group_exclusive(R, 0.1, 0.5, s),
    ),
    "weighted l1": (lambda: proxlib.WeightedL1(0.1), None, lambda R, s: proxlib.prox_weighted_l1(R, 0.1, s)),
}


def bench_cpu(repeats: int) -> list[dict]:
    rows = []
    for batch in (64, 256, 1024):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(784, 300), torch.nn.ReLU(), torch.nn.Linear(300, 10))
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        X, y = torch.rand(batch, 784), torch.randint(0, 10, (batch,))

        def train_step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(X), y).backward()
            opt.step()

        t_train = _median_ms(train_step, repeats)
        for name, (make, grouping, core) in PENALTIES.items():
            for where in ("fc1", "fc1+fc2"):
                layers = [net[0]] if where == "fc1" else [net[0], net[2]]
                prox = pt.ProximalStep(opt)
                for layer in layers:
                    prox.add(layer, make(), grouping=grouping)
                t_prox = _median_ms(prox.step, repeats)
                arrays = [l.weight.detach().numpy().copy() for l in layers]

                def core_only():
                    for A in arrays:
                        R = A if grouping is None else proxlib.to_rows(A, grouping)
                        core(R, 1e-3)

                t_core = _median_ms(core_only, repeats)
                rows.append(
                    dict(device="cpu", model="MLP 784-300-10", batch=batch, penalty=name, on=where, train_ms=t_train, prox_ms=t_prox, core_ms=t_core)
                )
    return rows


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


def resnet18(num_classes=10) -> torch.nn.Module:
    """ResNet-18 for 32x32 inputs (11.2 M parameters)."""
    layers = [torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(64), torch.nn.ReLU()]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [_Block(cin, cout, stride), _Block(cout, cout, 1)]
        cin = cout
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(512, num_classes)]
    return torch.nn.Sequential(*layers)


def bench_resnet(repeats: int, device: str = "cuda", batch: int = 128) -> list[dict]:
    if device == "cuda":
        if not torch.cuda.is_available():
            print("GPU: skipped (no CUDA device)")
            return []
        try:
            import cupy  # noqa: F401
        except ImportError:
            print("GPU: skipped (CuPy is not installed)")
            return []
    dev = torch.device(device)
    torch.manual_seed(0)
    net = resnet18().to(dev)
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
    rows = []
    for name in ("group lasso (channel)", "GrOWL stairwise (channel)", "group+exclusive mu=0.5 (shape)"):
        make, grouping, _ = PENALTIES[name]
        prox = pt.ProximalStep(opt)
        for c in convs:
            prox.add(c, make(), grouping=grouping)
        t_prox = _median_ms(prox.step, repeats, sync)
        rows.append(dict(device=dev_name, model="ResNet-18 (32x32)", batch=batch, penalty=name, on=f"all {len(convs)} convs", train_ms=t_train, prox_ms=t_prox, core_ms=float("nan")))
    return rows


def table(rows: list[dict]) -> str:
    out = [
        "| device | model | batch | penalty | on | train step (ms) | prox step (ms) | core prox (ms) | adapter (ms) | prox / train |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        adapter = r["prox_ms"] - r["core_ms"]
        out.append(
            f"| {r['device']} | {r['model']} | {r['batch']} | {r['penalty']} | {r['on']} | {r['train_ms']:.2f} | "
            f"{r['prox_ms']:.2f} | {r['core_ms']:.2f} | {adapter:.2f} | {100 * r['prox_ms'] / r['train_ms']:.0f}% |"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--json", default=None)
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument("--resnet-on-cpu", action="store_true", help="also time the ResNet-18 case on the CPU (slow; checks the script)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(
        f"torch {torch.__version__}, proxlib {proxlib.__version__}, backends {proxlib.available_backends()}, "
        f"{a.threads} CPU thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    rows = bench_cpu(a.repeats)
    if not a.no_gpu:
        rows += bench_resnet(a.repeats, "cuda")
    if a.resnet_on_cpu:
        rows += bench_resnet(max(2, a.repeats // 10), "cpu", batch=32)
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
