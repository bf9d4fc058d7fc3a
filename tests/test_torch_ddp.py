"""Under DDP the proximal step runs identically on every rank: two gloo
processes on the CPU (loopback only) keep bit-identical parameters."""

from __future__ import annotations

import os
import sys

import _procs
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

STEPS = 4


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    os.environ["PROXLIB_BACKEND"] = "numpy"  # no JIT warm-up in the workers: this test is about DDP
    import proxlib
    import proxlib.torch as pt

    _procs.init_gloo(rank, world, init_file)
    try:
        torch.manual_seed(0)  # same initial model on every rank
        net = torch.nn.Sequential(torch.nn.Linear(20, 12), torch.nn.ReLU(), torch.nn.Linear(12, 4))
        ddp = torch.nn.parallel.DistributedDataParallel(net)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.2, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        prox = pt.ProximalStep(opt)
        prox.add(net[0], pt.growl(lambda G: proxlib.owl_weights_stairwise(G, 1.0, 0.05, G // 2)), grouping="channel")
        prox.add(net[2], proxlib.GroupExclusive(0.2, 0.5), grouping="shape")
        prox.attach()
        g = torch.Generator().manual_seed(100 + rank)  # different data on each rank
        for _ in range(STEPS):
            x, y = torch.randn(16, 20, generator=g), torch.randint(0, 4, (16,), generator=g)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
            sched.step()
        flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        if rank == 0:
            same = all(torch.equal(gathered[0], t) for t in gathered[1:])
            zero_rows = int(pt.weight_metrics(net[0].weight).zero_rows)
            with open(os.path.join(out_dir, "result.txt"), "w") as f:
                f.write(f"{int(same)} {zero_rows} {prox.n_steps}")
        _procs.end_rank()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(sys.platform == "win32", reason="file:// init with gloo is POSIX-only here")
def test_prox_keeps_ddp_ranks_bit_identical(tmp_path):
    _procs.spawn(_worker, (2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, timeout=300)
    same, zero_rows, n_steps = map(int, (tmp_path / "result.txt").read_text().split())
    assert same == 1
    assert n_steps == STEPS
    assert zero_rows > 0  # the prox did act (GrOWL removed input neurons)
