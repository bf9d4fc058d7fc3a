"""Exact proximal steps on sharded parameters: FSDP2 (``fully_shard``) with two
gloo processes on the CPU (world size 2), against a single-process run from
the same initial weights and data.

One spawn runs many cases (process start-up dominates): an MLP and a small
convnet, every penalty under every grouping it supports, SGD with momentum and
Adam, float64 (1e-12 relative) and float32 (1e-5).  Also: replicated
parameters stay bit-identical across ranks; row-norm penalties never
communicate more than O(rows) per step; torch.distributed.checkpoint round
trips the model, the optimizer and the ProximalStep state; the seed
procedures either gather or refuse sharded parameters clearly.
"""

from __future__ import annotations

import json
import os
import sys

import _procs
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

STEPS = 3


def _mlp():
    return torch.nn.Sequential(torch.nn.Linear(12, 9), torch.nn.ReLU(), torch.nn.Linear(9, 5))


def _convnet():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 5, 3), torch.nn.ReLU(), torch.nn.Conv2d(5, 6, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(6 * 2 * 2, 3)
    )


def _data(model_name, dtype):
    g = torch.Generator().manual_seed(7)
    if model_name == "mlp":
        return torch.randn(8, 12, generator=g, dtype=dtype), torch.randint(0, 5, (8,), generator=g)
    return torch.randn(4, 3, 6, 6, generator=g, dtype=dtype), torch.randint(0, 3, (4,), generator=g)


def _cases():
    """(name, model, builder of the terms: (prox, net) -> None)."""
    import proxlib
    import proxlib.torch as pt

    stair = lambda G: proxlib.owl_weights_stairwise(G, 0.4, 0.05, G // 2)  # noqa: E731
    cases = []
    for g in ("filter", "channel", "shape", "layer"):
        cases.append((f"group_lasso/{g}", lambda p, n, g=g: p.add(n[0], proxlib.GroupLasso(0.8), grouping=g, strength=1.0)))
    for g in ("filter", "channel", "shape"):
        cases.append((f"growl/{g}", lambda p, n, g=g: p.add(n[0], pt.growl(stair), grouping=g)))
        cases.append((f"exclusive/{g}", lambda p, n, g=g: p.add(n[0], proxlib.ExclusiveLasso(2.0), grouping=g)))
        cases.append((f"group_exclusive/{g}", lambda p, n, g=g: p.add(n[0], proxlib.GroupExclusive(1.0, 0.6), grouping=g)))
    cases.append(("exclusive/layer", lambda p, n: p.add(n[0], proxlib.ExclusiveLasso(0.05), grouping="layer")))
    cases.append(("group_exclusive/layer", lambda p, n: p.add(n[0], proxlib.GroupExclusive(0.5, 0.02), grouping="layer")))
    cases.append(("weighted_l1", lambda p, n: p.add(n[0], proxlib.WeightedL1(0.3))))
    cases.append(("weighted_l1/array", lambda p, n: p.add(n[0], proxlib.WeightedL1(torch.rand(n[0].weight.shape, generator=torch.Generator().manual_seed(1)).numpy()))))
    cases.append(("weighted_l2sq", lambda p, n: p.add(n[0], proxlib.WeightedL2Sq(0.5))))
    cases.append(("lp", lambda p, n: p.add(n[0], proxlib.Lp(0.02, 0.5))))
    cases.append(("owl", lambda p, n: p.add(n[0], pt.owl(lambda k: proxlib.owl_weights_oscar(k, 0.05, 0.002)))))
    cases.append(("group_lasso/bias", lambda p, n: p.add(n[0], proxlib.GroupLasso(0.5), name="bias")))
    cases.append(("several", lambda p, n: (p.add(n[0], proxlib.GroupLasso(0.3), grouping="channel"), p.add(n[2], pt.growl(stair), grouping="filter"))))
    # terms on two tensors' split rows: one set of collectives for both (sharded.run_split_rows)
    cases.append(("group_lasso/two_tensors", lambda p, n: (p.add(n[0], proxlib.GroupLasso(0.3), grouping="channel"),
                                                            p.add(n[2], proxlib.GroupLasso(0.2), grouping="channel"))))
    cases.append(("norms/two_tensors", lambda p, n: (p.add(n[0], proxlib.GroupLasso(0.3), grouping="channel"),
                                                      p.add(n[2], pt.growl(stair), grouping="channel"))))
    cases.append(("exclusive/two_tensors", lambda p, n: (p.add(n[0], proxlib.ExclusiveLasso(2.0), grouping="shape"),
                                                          p.add(n[2], proxlib.GroupExclusive(1.0, 0.6), grouping="shape"))))
    # the same with each hinted row's least entry alone as its candidate (a
    # maximum, as on more ranks than sharded._GATHER_RANKS; the worker sets it)
    cases.append(("exclusive/one_candidate", lambda p, n: (p.add(n[0], proxlib.ExclusiveLasso(2.0), grouping="shape"),
                                                            p.add(n[2], proxlib.GroupExclusive(1.0, 0.6), grouping="shape"))))
    # thresholds beyond the kernels' range (step * lam beyond float64 for the
    # exclusive lasso's scale-free b: a saturated, tiny but nonzero prox):
    # solved by the public function's exact transformation on every rank
    cases.append(("beyond_range/exclusive", lambda p, n: p.add(n[0], proxlib.ExclusiveLasso(1e300), grouping="channel", strength=1e12)))
    cases.append(("beyond_range/group_exclusive", lambda p, n: p.add(n[0], proxlib.GroupExclusive(1e300, 0.5), grouping="filter", strength=1e12)))
    return cases


def _train(net, opt, model_name, dtype, forward=None):
    X, y = _data(model_name, dtype)
    f = forward or net
    for _ in range(STEPS):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(f(X), y).backward()
        opt.step()


def _make_opt(params, name):
    if name == "adam":
        return torch.optim.Adam(params, lr=0.05)
    return torch.optim.SGD(params, lr=0.2, momentum=0.9)


# float32 runs a subset (every operator once, both ways of sharding rows)
FLOAT32_CASES = {"beyond_range/exclusive", "exclusive/two_tensors", "exclusive/one_candidate", "group_lasso/two_tensors", "norms/two_tensors", "group_lasso/channel", "growl/filter", "exclusive/shape", "group_exclusive/channel", "group_exclusive/filter", "weighted_l1", "lp", "owl"}


def _worker(rank: int, world: int, init_file: str, out_dir: str, dtype_name: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import proxlib.torch as pt
    from proxlib.torch import sharded

    dtype = getattr(torch, dtype_name)
    gather_ranks = sharded._GATHER_RANKS
    _procs.init_gloo(rank, world, init_file)
    mesh = init_device_mesh("cpu", (world,))
    report = {}
    try:
        for model_name, make in (("mlp", _mlp), ("conv", _convnet)):
            for case, configure in _cases():
                if dtype == torch.float32 and case not in FLOAT32_CASES:
                    continue
                opt_names = ("sgd", "adam") if case in ("group_lasso/channel", "growl/filter") else ("sgd",)
                for opt_name in opt_names:
                    key = f"{model_name}/{case}/{opt_name}"
                    # single process reference, same seed and data
                    torch.manual_seed(0)
                    ref = make().to(dtype)
                    init = {k: v.clone() for k, v in ref.state_dict().items()}
                    ropt = _make_opt(ref.parameters(), opt_name)
                    rprox = pt.ProximalStep(ropt, model=ref)
                    configure(rprox, ref)
                    rprox.attach()
                    _train(ref, ropt, model_name, dtype)
                    # sharded
                    net = make().to(dtype)
                    net.load_state_dict(init)
                    for layer in net:
                        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
                            fully_shard(layer, mesh=mesh)
                    fully_shard(net, mesh=mesh)
                    opt = _make_opt(net.parameters(), opt_name)
                    prox = pt.ProximalStep(opt, model=net)
                    configure(prox, net)
                    prox.attach()
                    sharded._GATHER_RANKS = 1 if case.endswith("/one_candidate") else gather_ranks
                    _train(net, opt, model_name, dtype)
                    sharded._GATHER_RANKS = gather_ranks
                    worst = 0.0
                    zeros = 0
                    for (n, p), (_, q) in zip(net.named_parameters(), ref.named_parameters()):
                        full = p.full_tensor().detach()
                        diff = float((full - q.detach()).abs().max()) if full.numel() else 0.0
                        scale = float(q.detach().abs().max()) if q.numel() else 1.0
                        worst = max(worst, diff / max(scale, 1e-300))
                        zeros += int((full == 0).sum())
                    comm_bytes = sum(t._plan.comm.bytes for t in prox.terms)
                    collectives = sum(t._plan.comm.collectives for t in prox.terms)
                    rows = sum(len(t._plan.comm.row_shape) and int(torch.tensor(t._plan.comm.row_shape).prod()) or 1 for t in prox.terms)  # (all the terms)
                    weight_bytes = max(t.leaf.numel() * t.leaf.element_size() for t in prox.terms)
                    report[key] = {"rel": worst, "zeros": zeros, "bytes": comm_bytes, "rows": rows, "weight_bytes": weight_bytes, "steps": prox.n_steps, "collectives": collectives}
        # a Replicate()d parameter stays bit-identical across ranks
        from torch.distributed.tensor import Replicate, distribute_tensor

        import proxlib

        torch.manual_seed(0)
        w = torch.nn.Parameter(distribute_tensor(torch.randn(6, 5, dtype=dtype), mesh, [Replicate()]))
        opt = torch.optim.SGD([w], lr=0.3)
        prox = pt.ProximalStep(opt)
        prox.add(w, proxlib.GroupExclusive(0.6, 0.5), grouping="channel")
        prox.add(w, pt.growl(lambda G: proxlib.owl_weights_oscar(G, 0.3, 0.05)), grouping="filter")
        prox.add(w, pt.owl(lambda k: proxlib.owl_weights_oscar(k, 0.05, 0.002)))  # (gathers nothing: every rank holds the full tensor)
        g = torch.Generator().manual_seed(100)  # Replicate(): the same gradient everywhere
        for _ in range(STEPS):
            w.grad = distribute_tensor(torch.randn(6, 5, generator=g, dtype=dtype), mesh, [Replicate()])
            opt.step()
            prox.step()
        local = w.to_local().detach().contiguous()
        gathered = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(gathered, local)
        report["replicated_bit_identical"] = all(torch.equal(gathered[0], t) for t in gathered[1:])
        report["replicated_bytes"] = sum(t._plan.comm.bytes for t in prox.terms)  # (counted as sent: none were)
        # _Comm.all_reduce_sum_least on rows split across the ranks (a 4 x 6
        # weight's "shape" rows under Shard(0)): each rank's 3 least entries
        # of two rows (+inf where fewer) merged into the 3 least of both,
        # by an all-gather, or the least by a maximum (K = 1); the maxima
        # and the sums as all-reduces
        from torch.distributed.tensor import Shard

        comm = sharded._Comm(distribute_tensor(torch.zeros(4, 6, dtype=dtype), mesh, [Shard(0)]), "shape")
        inf = float("inf")
        mine = [[[1.0, 5.0], [2.0, inf], [7.0, inf]], [[0.5, 3.0], [2.0, 5.0], [inf, inf]]][rank]
        merged = {}
        for K in (3, 1):
            least = torch.tensor(mine[:K], dtype=dtype)
            maxes = torch.tensor([[rank, -rank], [2.0 * rank, 1.0]], dtype=dtype)
            sums = torch.ones(3, 2, dtype=dtype)
            comm.all_reduce_sum_least(sums, least, maxes)
            merged[K] = (least.tolist(), maxes.tolist(), sums.tolist())
        report["least_merged"] = comm.split and merged == {
            3: ([[0.5, 3.0], [1.0, 5.0], [2.0, 5.0]], [[1.0, 0.0], [2.0, 1.0]], [[2.0, 2.0]] * 3),
            1: ([[0.5, 3.0]], [[1.0, 0.0], [2.0, 1.0]], [[2.0, 2.0]] * 3),
        }
        if rank == 0:
            with open(os.path.join(out_dir, f"report_{dtype_name}.json"), "w") as f:
                json.dump(report, f)
        _procs.end_rank()
    finally:
        dist.destroy_process_group()


def _run(tmp_path, dtype_name):
    _procs.spawn(_worker, (2, str(tmp_path / "init"), str(tmp_path), dtype_name), nprocs=2, timeout=600)
    return json.loads((tmp_path / f"report_{dtype_name}.json").read_text())


@pytest.mark.skipif(sys.platform == "win32", reason="file:// init with gloo is POSIX-only here")
@pytest.mark.parametrize("dtype_name,rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_fsdp2_prox_equals_the_single_process_prox(tmp_path, dtype_name, rtol):
    report = _run(tmp_path, dtype_name)
    assert report.pop("replicated_bit_identical") is True
    assert report.pop("replicated_bytes") == 0  # (OWL on a Replicate()d tensor was counted as a gather of it)
    assert report.pop("least_merged") is True
    bad = {k: v["rel"] for k, v in report.items() if not v["rel"] <= rtol}
    assert not bad, bad
    assert all(v["steps"] == STEPS for v in report.values())
    # the penalties did act: structure appeared where the strengths call for it
    for key in ("mlp/group_lasso/channel/sgd", "mlp/exclusive/shape/sgd", "mlp/group_exclusive/channel/sgd", "conv/owl/sgd"):
        assert report[key]["zeros"] > 0, key
    # ... and the saturated exclusive prox keeps each row's largest entry (inf
    # thresholds zeroed them all): the MLP's 9 x 12 weight, 12 "channel" rows
    # (in float32 the saturated values, about 1e-300, round to 0)
    if dtype_name == "float64":
        assert 0 < report["mlp/beyond_range/exclusive/sgd"]["zeros"] <= 9 * 12 - 12
    # the row norms of a step's group-lasso and GrOWL terms on split rows
    # travel together: one all-reduce a step (float32), max then sum (float64)
    for key in ("mlp/group_lasso/two_tensors/sgd", "mlp/norms/two_tensors/sgd", "conv/norms/two_tensors/sgd"):
        assert report[key]["collectives"] == STEPS * (1 if dtype_name == "float32" else 2), (key, report[key]["collectives"])
    # communication per step: O(rows) statistics for the row penalties, never the weight
    for key, v in report.items():
        per_step = v["bytes"] / STEPS
        case = key.split("/")[1]
        if case in ("group_lasso", "growl", "norms"):
            assert per_step <= 24 * v["rows"], (key, per_step)  # max + sum (float64) + a gather of norms
        elif case in ("exclusive", "group_exclusive"):
            assert per_step <= (64 + 4) * 32 * v["rows"], (key, per_step)  # bounded rounds of 4 statistics
        elif case in ("weighted_l1", "weighted_l2sq", "lp"):
            assert per_step == 0, key
        elif case == "owl":
            assert per_step == v["weight_bytes"], key  # OWL couples every entry: one gather, documented


def _checkpoint_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import numpy as np
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard, distribute_tensor

    import proxlib
    import proxlib.torch as pt

    _procs.init_gloo(rank, world, init_file)
    mesh = init_device_mesh("cpu", (world,))
    result = {}
    try:

        def build(seed, strength):
            torch.manual_seed(seed)
            net = _mlp().double()
            fully_shard(net[0], mesh=mesh)
            fully_shard(net, mesh=mesh)
            opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
            prox = pt.ProximalStep(opt, model=net)
            prox.add(net[0], proxlib.GroupLasso(0.8), grouping="channel", strength=strength)
            prox.add(net[2], proxlib.GroupExclusive(0.5, 0.5), grouping="shape", strength=strength)
            prox.attach()
            return net, opt, prox

        net, opt, prox = build(0, 0.7)
        _train(net, opt, "mlp", torch.float64)
        model_sd, optim_sd = get_state_dict(net, opt)
        dcp.save({"model": model_sd, "optim": optim_sd, "prox": prox.state_dict()}, checkpoint_id=os.path.join(out_dir, "ckpt"))
        net2, opt2, prox2 = build(1, 0.1)  # other weights, other strength
        _train(net2, opt2, "mlp", torch.float64)  # optimizer state exists, to be overwritten
        model_sd2, optim_sd2 = get_state_dict(net2, opt2)
        state = {"model": model_sd2, "optim": optim_sd2, "prox": prox2.state_dict()}
        dcp.load(state, checkpoint_id=os.path.join(out_dir, "ckpt"))
        set_state_dict(net2, opt2, model_state_dict=state["model"], optim_state_dict=state["optim"])
        prox2.load_state_dict(state["prox"])
        _train(net, opt, "mlp", torch.float64)
        _train(net2, opt2, "mlp", torch.float64)
        result["same_after_resume"] = all(
            torch.equal(a.full_tensor(), b.full_tensor()) for a, b in zip(net.parameters(), net2.parameters())
        )
        result["strengths"] = [t.strength for t in prox2.terms]
        # the seed procedures: gather where they inspect weights, refuse what they cannot do
        tying = pt.find_tying(net[0].weight, preference=0.5)
        result["tying_rows"] = int(tying.labels.shape[0])
        result["metrics_rows"] = int(pt.weight_metrics(net[0].weight).n_rows)
        result["model_metrics"] = int(pt.model_metrics(net)["total"].n_weights)
        refused = []
        for name, call in (
            ("tie_rows", lambda: pt.tie_rows(net[0], np.arange(12))),
            ("affine_scaling", lambda: pt.affine_scaling(net[0])),
            ("magnitude_prune", lambda: pt.magnitude_prune([net[0]], amount=0.5)),
        ):
            try:
                call()
            except NotImplementedError as e:
                refused.append(name if "sharded" in str(e) and name in str(e) else f"{name}: {e}")
        result["refused"] = refused
        # a penalty builder returning something that is not a penalty: the
        # TypeError an unsharded tensor gets, not "outside proxlib's registry"
        try:
            pt.ProximalStep().add(net[0], lambda G: 3, grouping="channel")
            result["bad_builder"] = "no error"
        except Exception as e:  # noqa: BLE001 - its type is the point
            result["bad_builder"] = f"{type(e).__name__}: {e}"
        # check_finite: a NaN in one rank's shard makes every rank raise, for a
        # kernel that checks its input itself (group lasso) and one that does
        # not (the exclusive lasso, whose rows are split across the ranks):
        # no rank is left waiting in a collective
        raised = []
        for pen, grouping in ((proxlib.ExclusiveLasso(0.5), "shape"), (proxlib.GroupLasso(0.5), "filter")):
            probe = pt.ProximalStep(opt, model=net, check_finite=True)
            probe.add(net[0], pen, grouping=grouping)
            with torch.no_grad():
                if rank == 0:
                    net[0].weight.to_local()[0, 0] = float("nan")
            code = 0
            try:
                probe.step()
            except ValueError as e:
                code = 1 if "NaN" in str(e) else 2
            flags = [torch.zeros(1) for _ in range(world)]
            dist.all_gather(flags, torch.tensor([float(code)]))
            raised.append([int(f.item()) for f in flags])
        result["check_finite_raised"] = raised
        # ... and its error names the term (ProximalStep's doc) on every rank,
        # also on one whose own shard is finite: a term that runs alone (rows
        # partitioned) and one in a step's batch of split rows (the exclusive
        # lasso under "channel" on Shard(0)); it was named only on the rank
        # holding the NaN
        messages = []
        for pen, grouping in ((proxlib.GroupLasso(0.5), "filter"), (proxlib.ExclusiveLasso(0.5), "channel")):
            w = [torch.nn.Parameter(distribute_tensor(torch.ones(4, 3, dtype=torch.float64), mesh, [Shard(0)])) for _ in range(2)]
            prox = pt.ProximalStep(check_finite=True)
            prox.add(w[0], pen, grouping=grouping, label="first")
            prox.add(w[1], pen, grouping=grouping, label="second")
            with torch.no_grad():
                if rank == 0:
                    w[1].to_local()[0, 0] = float("nan")
            try:
                prox.step(lr=0.1)
                messages.append("no error")
            except ValueError as e:
                messages.append(str(e))
        gathered = [None] * world
        dist.all_gather_object(gathered, messages)
        result["check_finite_messages"] = gathered
        # a term applied on its own (ProxTerm.apply: the plan's run, not a
        # step's batch) on rows split across the ranks ("channel" on Shard(0)):
        # the single-process prox of the full tensor (the split rows' norms
        # and sums all-reduced, not each rank's own)
        full = torch.randn(6, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        alone = []
        for pen in (proxlib.GroupLasso(0.5), proxlib.ExclusiveLasso(2.0), proxlib.GroupExclusive(0.5, 0.5)):
            w = torch.nn.Parameter(distribute_tensor(full.clone(), mesh, [Shard(0)]))
            prox = pt.ProximalStep()
            prox.add(w, pen, grouping="channel")
            prox.terms[0].apply(0.3)
            ref = proxlib.from_rows(pen.prox(proxlib.to_rows(full, "channel"), 0.3), tuple(full.shape), "channel")
            alone.append(float((w.full_tensor().detach() - ref).abs().max()))
        result["applied_alone_on_split_rows"] = alone
        if rank == 0:
            with open(os.path.join(out_dir, "checkpoint.json"), "w") as f:
                json.dump(result, f)
        _procs.end_rank()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(sys.platform == "win32", reason="file:// init with gloo is POSIX-only here")
def test_fsdp2_checkpoint_round_trip_and_seed_procedures(tmp_path):
    _procs.spawn(_checkpoint_worker, (2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, timeout=600)
    result = json.loads((tmp_path / "checkpoint.json").read_text())
    assert result["same_after_resume"] is True
    assert result["strengths"] == [0.7, 0.7]
    assert result["tying_rows"] == 12 and result["metrics_rows"] == 12
    assert result["model_metrics"] == 12 * 9 + 9 * 5
    assert result["refused"] == ["tie_rows", "affine_scaling", "magnitude_prune"]
    assert result["bad_builder"].startswith("TypeError: penalty builder returned 3, which is not a penalty object"), result["bad_builder"]
    assert result["check_finite_raised"] == [[1, 1], [1, 1]]  # every rank, both kernels
    assert all(err <= 1e-14 for err in result["applied_alone_on_split_rows"]), result["applied_alone_on_split_rows"]
    for messages in result["check_finite_messages"]:  # (per rank: the partitioned term, the batched split-row term)
        assert len(messages) == 2
        for m in messages:
            assert m.startswith("term 'second': ") and "NaN or Inf" in m, m
